"""The report of ``scan``: the verdict, the per-class table and chart, recovered triggers, Neural Cleanse."""

from __future__ import annotations

from . import figures
from .html import cards, esc, figure, pct, section, table
from .page import Page, RunFolder, model_line, read_json


def build(run: RunFolder) -> Page:
    path, figs = run.path, run.figures
    data = read_json(path / "scan.json")
    cfg = data["config"]
    rows = data["classes"]
    flagged = set(data["flagged"])
    names = [f"{r['target']} {r['name']}" for r in rows]
    tone = "bad" if data["backdoored"] else "good"
    verdict = f'<p><span class="verdict {tone}">{esc(data["verdict"])}</span></p>'
    verdict += f"<p>{esc(model_line(data.get('model')))}</p>"
    verdict += cards(
        [
            ("classes flagged", ", ".join(str(c) for c in sorted(flagged)) or "none", tone),
            ("median smallest pattern", f"{data['median_k']:g} px of {data['pixels']}", ""),
            ("scan time", f"{data['seconds']:.1f} s", ""),
        ]
    )
    chart = figures.scan_chart(
        figs / "scan_chart.png",
        names,
        [r["smallest_k"] for r in rows],
        [r["anomaly_index"] for r in rows],
        [i for i, r in enumerate(rows) if r["flagged"]],
        float(data["median_k"]),
        float(cfg["max_ratio"]),
        float(cfg["threshold"]),
    )
    body = table(
        [
            "class",
            f"k at {cfg['top_k']:g}",
            "success there",
            "clean rate",
            f"smallest k for {pct(cfg['success'])}",
            "anomaly index",
            "flagged",
        ],
        [
            [
                n,
                r["k_fixed"],
                pct(r["success_fixed"]),
                pct(r["clean_rate"]),
                r["smallest_k"],
                "∞ (MAD 0)" if r["anomaly_index"] is None else r["anomaly_index"],
                r["flagged"],
            ]
            for n, r in zip(names, rows, strict=True)
        ],
        flagged=[i for i, r in enumerate(rows) if r["flagged"]],
    )
    sections = [
        section(
            "verdict",
            "Verdict",
            verdict,
            "A class is flagged when its smallest pattern is an outlier "
            f"(MAD anomaly index of log k > {cfg['threshold']:g}) "
            f"and at most {cfg['max_ratio']:g} of the median. Data: {data.get('data')}.",
        ),
        section(
            "classes",
            "Per class",
            figure(chart, "Smallest pattern and anomaly index per class (flagged in red).") + body,
        ),
        section(
            "gallery", "Gallery", figure(path / "gallery.png", "Learned mask and smallest pattern of every class.")
        ),
    ]
    name_of = {r["target"]: n for r, n in zip(rows, names, strict=True)}
    for t in sorted(flagged):
        sections.append(
            section(
                f"trigger-{t}",
                f"Recovered trigger of class {name_of.get(t, t)}",
                figure(path / f"trigger_class{t}.png", "The recovered trigger, its colours and its mask.")
                + figure(path / f"trigger_class{t}_examples.png", "Stamped on held-out images of other classes."),
                "Use it as a trigger: stamp pattern.safetensors from classes/ on images with patternscope's API.",
            )
        )
    nc = data.get("neural_cleanse")
    if nc:
        nc_rows = [
            [n, nc["l1"][i], nc["anomaly_index"][i], i in nc["flagged"]]
            for i, n in enumerate(names)
            if i < len(nc["l1"])
        ]
        sections.append(
            section(
                "neural-cleanse",
                "Neural Cleanse (baseline)",
                table(
                    ["class", "mask L1 (mean over seeds)", "anomaly index", "flagged"],
                    nc_rows,
                    flagged=[i for i, r in enumerate(nc_rows) if r[3]],
                )
                + f'<p class="note">{nc.get("diverged_runs", 0)} diverged runs dropped; '
                f"{nc.get('seconds', 0):.1f} s.</p>",
            )
        )
    return "patternscope: backdoor scan", sections
