"""The report of ``audit``: the verdict table first (one plain sentence per finding, the numbers of
``audit.json``), then each part with its figures, and links to the parts' own reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .html import esc, figure, fmt, pct, pct_interval, section, table
from .page import Page, RunFolder, model_line, read_json


def build(run: RunFolder) -> Page:
    path = run.path
    data = read_json(path / "audit.json")
    level = data["level"]
    sections = [
        section(
            "verdict",
            "What this model lets through",
            f"<p>{esc(model_line(data.get('model')))}</p>"
            + table(["finding", "what was measured"], [[r["finding"], r["text"]] for r in data["verdict"]])
            + _gate(data),
            f"Level {level['name']}: {level['budget']:g} passes per pattern search, "
            + (f"{level['scan_steps']} scan steps per class, " if data.get("backdoor") else "")
            + f"{level['eval_views']} crop(s) per image; measured on {data['data']}. Intervals: Wilson 95%.",
        ),
        _patterns(path, data),
    ]
    if data.get("transfer"):
        sections.append(_transfer(data["transfer"]))
    if data.get("backdoor"):
        sections.append(_backdoor(path, data["backdoor"]))
    if data.get("classes"):
        sections.append(_classes(path, data["classes"]))
    links = _sub_reports(run)
    if links:
        sections.append(section("parts", "Each part in detail", links, "Each links to its own report."))
    return "patternscope: audit", sections


def _gate(data: dict[str, Any]) -> str:
    gate = data.get("fail_on") or {}
    if not gate.get("terms"):
        return ""
    held = ", ".join(gate["failed"]) or "none"
    return f"<p>--fail-on {esc(', '.join(gate['terms']))}: holds: <strong>{esc(held)}</strong></p>"


def _patterns(path: Path, data: dict[str, Any]) -> tuple[str, str, str]:
    p = data["patterns"]
    rows = []
    for label, row in (("dominant pattern", p["dominant"]), ("baseline", p.get("baseline"))):
        if row is None:
            continue
        rows.append(
            [
                f"{label} ({row['method']})",
                pct_interval(row["fooling_ratio"], row.get("fooling_ci")),
                pct_interval(row["agreement"], row.get("agreement_ci")),
                pct(row["dominance_top1"]),
                fmt(row.get("psnr_db"), 1),
                fmt(row.get("ssim")),
                round(row["passes"]) if row.get("passes") is not None else None,
            ]
        )
    rows.append(["random ±ε noise", pct(p["random_sign_fooling_ratio"]), "", "", "", "", ""])
    body = table(["pattern", "fooling", "agreement", "dominance top-1", "PSNR dB", "SSIM", "passes"], rows)
    body += figure(path / "patterns" / "compare.png", "Fooling ratio of each pattern beside random noise.")
    body += figure(path / "patterns" / "dominant" / "examples.png", "The dominant pattern on held-out images.")
    return section(
        "patterns",
        "Universal patterns",
        body,
        f"Searched label-free at ε = {fmt(p['eps'], 4)} ({p['norm']}), {p['budget_passes']:g} passes each, and "
        f"measured on {p['n_images']} crops. Agreement: the prediction becomes the pattern's own class.",
    )


def _transfer(t: dict[str, Any]) -> tuple[str, str, str]:
    rows = []
    for i, name in enumerate(t["patterns"]):
        rows.append([name, *(pct_interval(v, ci) for v, ci in zip(t["fooling"][i], t["fooling_ci"][i], strict=True))])
    rows.append(["random ±ε noise", *(pct(v) for v in t["random_sign"])])
    return section(
        "transfer",
        "On other models",
        table(["pattern", *t["models"]], rows),
        f"Both patterns, unchanged, on each --also model ({t['n_images']} crops).",
    )


def _backdoor(path: Path, b: dict[str, Any]) -> tuple[str, str, str]:
    basis = b.get("basis") or {}
    facts = [[k.replace("_", " "), _text(v)] for k, v in basis.items() if v not in ({}, [], None)]
    body = f"<p><strong>{esc(b['verdict'])}</strong></p>" + table(["what the verdict rests on", ""], facts)
    for t, trigger in sorted(b.get("triggers", {}).items(), key=lambda kv: int(kv[0])):
        body += figure(path / "scan" / trigger["image"], f"Recovered trigger of class {t}: {trigger['k']} pixels.")
        body += figure(
            path / "scan" / f"trigger_class{t}_examples.png", f"Class {t}'s trigger stamped on held-out images."
        )
    return section(
        "backdoor",
        "Backdoor scan",
        body,
        f"Every class's smallest class-wise and additive patterns, against a null for {b['classes']} classes at a "
        f"false-positive rate of {fmt(b.get('fpr'))} per model.",
    )


def _text(value: Any) -> str:
    """A basis entry as text: lists joined, mappings as ``key: value`` pairs."""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(map(str, value))
    return str(value)


def _classes(path: Path, c: dict[str, Any]) -> tuple[str, str, str]:
    rows = [["least robust", e["class"], e["name"], e["k"], fmt(e.get("verified"))] for e in c["least_robust"]]
    rows += [["most robust", e["class"], e["name"], e["k"], fmt(e.get("verified"))] for e in c["most_robust"]]
    body = table(["", "class", "name", "pattern pixels k", "verified success"], rows)
    body += figure(path / c["gallery"], "Every class's smallest class-wise pattern (top: its learned mask).")
    return section(
        "classes",
        "What each class keys on",
        body,
        f"The smallest stamp (of {c['pixels']} pixels) that makes images of other classes this class: small is easy "
        "to reach (least robust), large is hard.",
    )


def _sub_reports(run: RunFolder) -> str:
    links = []
    for name in ("patterns", "scan"):
        folder = run.path / name
        if not folder.is_dir():
            continue
        written = run.subreport(folder)
        if written is not None:
            links.append(f'<li><a href="{esc(name)}/{esc(written.name)}">{esc(name)}</a></li>')
    return f"<ul>{''.join(links)}</ul>" if links else ""
