"""Building blocks of a self-contained HTML page: escaped text, tables, embedded PNG figures.

Every string that may come from a user (class names, paths, specs) goes through :func:`esc`. Images
are embedded as ``data:`` URIs, so one ``.html`` file holds everything; no script, no network.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2f4d;color:#fff;padding:18px 28px}
header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#c9d4e6;font-size:13px;word-break:break-all}
nav{padding:8px 28px;background:#e8ecf2;font-size:13px}
nav a{margin-right:14px;color:#1d2f4d}
main{padding:8px 28px 40px;max-width:1200px}
section{background:#fff;border:1px solid #dde2ea;border-radius:6px;padding:14px 18px;margin:16px 0}
h2{font-size:17px;margin:0 0 10px}
h3{font-size:14px;margin:14px 0 6px}
p.note{color:#4a5568;font-size:13px;margin:4px 0 10px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #dde2ea;border-radius:6px;padding:8px 12px;min-width:130px;background:#fafbfc}
.card .v{font-size:20px;font-weight:600}
.card .l{font-size:12px;color:#4a5568}
.card.bad .v{color:#b03a2e}
.card.good .v{color:#1e7b4a}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #dde2ea;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.flag td{background:#fdecea}
figure{margin:8px 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#4a5568}
details{margin:8px 0}
summary{cursor:pointer;font-weight:600;font-size:14px}
.verdict{font-size:18px;font-weight:600;padding:8px 12px;border-radius:6px;display:inline-block}
.verdict.bad{background:#fdecea;color:#b03a2e}
.verdict.good{background:#e6f4ea;color:#1e7b4a}
code{background:#eef1f6;padding:1px 4px;border-radius:3px}
"""


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML elements and attribute values."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number or value for a table cell (floats rounded; NaN as 'n/a'); escaped."""
    if isinstance(value, bool) or value is None:
        return esc("-" if value is None else ("yes" if value else "no"))
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else esc(f"{value:.{digits}f}")
    return esc(value)


def pct(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%"


def pct_interval(value: float | None, interval: Sequence[float] | None) -> str:
    """A share with its 95% interval in whole percent, e.g. ``68.2% [47, 84]`` (the share alone without one)."""
    if interval is None or value is None or (isinstance(value, float) and math.isnan(value)):
        return pct(value)
    return f"{pct(value)} [{100 * interval[0]:.0f}, {100 * interval[1]:.0f}]"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], flagged: Iterable[int] = ()) -> str:
    """A table; cells are escaped (numbers right-aligned); rows whose index is in ``flagged`` are marked."""
    marked = set(flagged)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{fmt(c)}</td>'
            if isinstance(c, int | float) and not isinstance(c, bool)
            else f"<td>{fmt(c)}</td>"
            for c in row
        )
        body.append(f'<tr class="flag">{cells}</tr>' if i in marked else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def flatten(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as ``(dotted.key, value)`` pairs (lists of scalars kept as one value)."""
    if isinstance(data, dict):
        out: list[tuple[str, Any]] = []
        for k, v in data.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        return [(prefix, f"{len(data)} entries")]
    if isinstance(data, list):
        return [(prefix, ", ".join(str(v) for v in data))]
    return [(prefix, data)]


def key_values(data: dict[str, Any]) -> str:
    return table(["setting", "value"], flatten(data))


def figure(path: Path, caption: str, alt: str | None = None) -> str:
    """An embedded PNG (``data:`` URI) with a caption; a note instead if the file is missing."""
    if not path.is_file():
        return f'<p class="note">({esc(path.name)} is missing from the run folder)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt or caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


def cards(items: Iterable[tuple[str, str, str]]) -> str:
    """Headline numbers: ``(label, value, tone)`` with tone '', 'good' or 'bad'."""
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card {esc(tone)}"><div class="v">{esc(v)}</div><div class="l">{esc(label)}</div></div>'
            for label, v, tone in items
        )
        + "</div>"
    )


def section(anchor: str, title: str, body: str, note: str = "") -> tuple[str, str, str]:
    return (
        anchor,
        title,
        f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>'
        + (f'<p class="note">{esc(note)}</p>' if note else "")
        + body
        + "</section>",
    )


def page(title: str, subtitle: Sequence[str], sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: header, a table of contents, the sections."""
    nav = "".join(f'<a href="#{esc(a)}">{esc(t)}</a>' for a, t, _ in sections)
    sub = "".join(f"<p>{esc(s)}</p>" for s in subtitle)
    body = "".join(s for _, _, s in sections)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>"
        f"<body><header><h1>{esc(title)}</h1>{sub}</header><nav>{nav}</nav><main>{body}</main></body></html>\n"
    )
