"""The report of ``scan``: the verdict, the per-class table and chart, recovered triggers, Neural Cleanse."""

from __future__ import annotations

from ..analyses.scan_decision import class_label
from . import figures
from .html import cards, esc, figure, pct, section, table
from .page import Page, RunFolder, model_line, read_json


def build(run: RunFolder) -> Page:
    path, figs = run.path, run.figures
    data = read_json(path / "scan.json")
    cfg = data["config"]
    rows = data["classes"]
    flagged = set(data["flagged"])
    names = [class_label(r["target"], r["name"]) for r in rows]
    tone = "bad" if data["backdoored"] else "good"
    decision = data.get("decision")
    additive = any(r.get("smallest_l2") is not None for r in rows)
    verdict = f'<p><span class="verdict {tone}">{esc(data["verdict"])}</span></p>'
    verdict += f"<p>{esc(model_line(data.get('model')))}</p>"
    label_of = {r["target"]: class_label(r["target"], r["name"]) for r in rows}
    tiles = [
        ("flagged", ", ".join(f"class {label_of.get(c, c)}" for c in sorted(flagged)) or "none", tone),
        ("median smallest stamp", f"{data['median_k']:g} px of {data['pixels']}", ""),
        ("scan time", f"{data['seconds']:.1f} s", ""),
    ]
    if decision:
        tiles[1:1] = [
            ("p-value (clean null)", f"{decision['p_value']:.3g}", tone),
            ("mode", f"{decision['mode']}, {len(rows)} classes", ""),
        ]
    verdict += cards(tiles)
    flagged_rows = [i for i, r in enumerate(rows) if r["flagged"]]
    if decision:
        chart = figures.scan_chart(
            figs / "scan_chart.png",
            names,
            [r["smallest_k"] for r in rows],
            [r.get("score") for r in rows],
            flagged_rows,
            float(data["median_k"]),
            float(decision["threshold"]),
            score_label="class score (−log10 p)",
            smallest_l2=[r.get("smallest_l2") for r in rows] if additive else None,
        )
    else:
        chart = figures.scan_chart(
            figs / "scan_chart.png",
            names,
            [r["smallest_k"] for r in rows],
            [r["anomaly_index"] for r in rows],
            flagged_rows,
            float(data["median_k"]),
            float(cfg["threshold"]),
            k_limit=float(cfg["max_ratio"]) * float(data["median_k"]),
        )
    head = [
        "class",
        f"k at {cfg['top_k']:g}",
        "success there",
        "clean rate",
        f"smallest k for {pct(cfg['success'])}",
        "verified",
    ]
    if additive:
        head += ["smallest L2", "L∞ there", "verified"]
    head += ["anomaly index", "score", "flagged"]
    body_rows = []
    for n, r in zip(names, rows, strict=True):
        line = [n, r["k_fixed"], pct(r["success_fixed"]), pct(r["clean_rate"]), r["smallest_k"]]
        line.append(_pct(r, "verified_stamp"))
        if additive:
            line += [_num(r.get("smallest_l2")), _num(r.get("linf_at_smallest")), _pct(r, "verified_additive")]
        flag = f"yes ({r['evidence']})" if r["flagged"] and r.get("evidence") else r["flagged"]
        line += ["∞ (MAD 0)" if r["anomaly_index"] is None else r["anomaly_index"], _num(r.get("score")), flag]
        body_rows.append(line)
    body = table(head, body_rows, flagged=flagged_rows)
    if decision:
        typical = (
            "its ratio to the same class in the reference clean models"
            if decision["mode"] == "reference"
            else "its size"
        )
        rule = (
            f"Each class is scored on {' and '.join(decision['signals'])} by how far {typical} lies below the "
            "model's other classes (log scale, in units of their spread); each class's p-value is the chance that "
            "the most extreme class of a clean model with as many classes scores as high; the score is −log10 p, "
            f"and classes with p ≤ {decision['fpr']:g} are flagged (score at least {decision['threshold']:.2f}). "
            "'Verified' is the "
            "attack success of the cut pattern on held-out images that did not choose its size."
        )
        basis = decision.get("basis")
        if basis:
            facts = [
                ["null", basis["null"]],
                ["spread from", basis["spread_from"]],
                ["assumes", basis["assumes"]],
                ["checked on", basis["checked"]],
            ]
            facts += [["outside the promise", note] for note in basis["outside"]] or [["outside the promise", "no"]]
            verdict += "<h3>What this verdict rests on</h3>" + table(["", ""], facts)
    else:
        rule = (
            "A class is flagged when its smallest pattern is an outlier "
            f"(MAD anomaly index of log k > {cfg['threshold']:g}) "
            f"and at most {cfg['max_ratio']:g} of the median."
        )
    sections = [
        section("verdict", "Verdict", verdict, f"{rule} Data: {data.get('data')}."),
        section(
            "classes",
            "Per class",
            figure(chart, "Smallest pattern and anomaly index per class (flagged in red).") + body,
        ),
        section(
            "gallery", "Gallery", figure(path / "gallery.png", "Learned mask and smallest pattern of every class.")
        ),
    ]
    for t in sorted(flagged):
        row = next(r for r in rows if r["target"] == t)
        evidence = (
            f"Verified attack success on held-out images: stamp {_pct(row, 'verified_stamp')}"
            + (f", additive {_pct(row, 'verified_additive')}" if row.get("verified_additive") is not None else "")
            + ". "
        )
        parts = figure(path / f"trigger_class{t}.png", "The recovered trigger, its colours and its mask.") + figure(
            path / f"trigger_class{t}_examples.png", "Stamped on held-out images of other classes."
        )
        if (path / f"additive_class{t}_examples.png").is_file():
            parts += figure(
                path / f"additive_class{t}_examples.png",
                "The smallest additive pattern (shown scaled, grey is zero) added to held-out images of other classes.",
            )
        sections.append(
            section(
                f"trigger-{t}",
                f"Recovered trigger of class {label_of.get(t, t)}",
                parts,
                evidence + "Use it as a trigger: classes/NNN/pattern.safetensors (stamp) and "
                "classes/NNN/additive/pattern.safetensors (additive) load with patternscope's API.",
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


def _pct(row: dict, key: str) -> str:
    value = row.get(key)
    return "-" if value is None else pct(value)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
