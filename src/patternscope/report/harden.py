"""The report of ``harden``: before and after universal adversarial training; links every search's report."""

from __future__ import annotations

from ..core.patterns import Pattern
from . import figures
from .html import cards, esc, figure, fmt, pct, section, table
from .page import Page, RunFolder, model_line, read_json


def build(run: RunFolder) -> Page:
    path, figs = run.path, run.figures
    data = read_json(path / "harden.json")
    h, rows, rs = data["hardening"], data["methods"], data["random_sign"]
    restarts = data.get("restarts", 1)
    cw = data.get("classwise")
    items = [
        (
            "clean accuracy (held out)",
            f"{pct(h['accuracy_before'])} → {pct(h['accuracy_after'])}",
            "good" if h["accuracy_after"] >= h["accuracy_bound"] else "bad",
        ),
        ("accuracy bound", f"≥ {pct(h['accuracy_bound'])}", ""),
    ]
    dom = next((r for r in rows if r["method"] == "dominant" and r["before"] is not None), None)
    if dom and dom["after"] is not None:
        items.append(
            (
                "fresh dominant pattern fools",
                f"{pct(dom['before'])} → {pct(dom['after'])}",
                "good" if dom["after"] < dom["before"] else "bad",
            )
        )
    others = [r for r in rows if r["method"] != "dominant" and r["before"] is not None and r["after"] is not None]
    if others:
        mean_b = sum(r["before"] for r in others) / len(others)
        mean_a = sum(r["after"] for r in others) / len(others)
        items.append(("baseline UAPs fool (mean)", f"{pct(mean_b)} → {pct(mean_a)}", "good" if mean_a < mean_b else ""))
    items.append(("weights kept", f"epoch {h['chosen_epoch']} of {h['config']['epochs']}", ""))
    sections = [
        section(
            "summary",
            "Summary",
            f"<p>{esc(model_line(data.get('model')))}</p>" + cards(items),
            f"Universal adversarial training on {data['split']['train']} images of {data.get('data')}; every number "
            f"is measured on the {data['split']['held_out']} held-out images. Hardened weights: "
            f"{data.get('hardened_weights')} (load them with --weights).",
        )
    ]
    if rows:
        table_rows = []
        for r in rows:
            ratio = r["after"] / r["before"] if r["before"] and r["after"] is not None else None
            table_rows.append(
                [
                    r["method"],
                    r.get("title") or "",
                    r["before"],
                    r["after"],
                    ratio,
                    r["original_pattern_on_hardened"],
                    " / ".join(fmt(v) for v in r.get("before_restarts", [])),
                    " / ".join(fmt(v) for v in r.get("after_restarts", [])),
                    r.get("error") or "",
                ]
            )
        table_rows.append(["random ±ε noise", "control", rs.get("before"), rs.get("after"), None, None, "", "", ""])
        body = table(
            [
                "method",
                "",
                "before",
                "after",
                "after / before",
                "original's pattern on the hardened model",
                "each restart, before",
                "each restart, after",
                "error",
            ],
            table_rows,
        )
        body += figure(path / "harden.png", "Fooling ratio of the strongest fresh pattern, before and after.")
        sections.append(
            section(
                "methods",
                "Fresh patterns before and after",
                body,
                f"Each method searched afresh on each model ({restarts} seeds, ε = {fmt(data.get('eps'))} "
                f"{data.get('norm')}, {data.get('budget_passes')} passes each); the strongest seed counts. The "
                "original model's strongest pattern is also measured, unchanged, on the hardened model.",
            )
        )
        deltas, labels = [], []
        for r in rows:
            for stage in ("before", "after"):
                seed = r.get(f"{stage}_seed")
                f = path / stage / f"seed_{seed}" / r["method"] / "pattern.safetensors"
                if seed is not None and f.is_file():
                    deltas.append(Pattern.load(f, allow_over_budget=True).delta)
                    labels.append(f"{r['method']} {stage}")
        if deltas:
            strip = figures.pattern_strip(figs / "patterns.png", deltas, labels, "Strongest pattern of each method")
            sections.append(
                section("patterns", "Patterns", figure(strip, "Each method's pattern before and after hardening."))
            )
    epochs = [
        [e["epoch"], e["loss"], e["accuracy"], e["pool_fooling_ratio"], e["within_bound"], e["seconds"]]
        for e in h["history"]
    ]
    sections.append(
        section(
            "training",
            "Hardening, epoch by epoch",
            figure(path / "training.png", "Held-out clean accuracy and the training patterns' fooling ratio.")
            + table(
                ["epoch", "loss", "clean accuracy", "training patterns' fooling ratio", "within bound", "seconds"],
                epochs,
                flagged=[i for i, e in enumerate(h["history"]) if e["epoch"] == h["chosen_epoch"]],
            ),
            "The highlighted epoch's weights were kept: the last epoch within the accuracy bound.",
        )
    )
    if cw:
        cw_rows = [
            [
                f"{r['target']} {r['name']}",
                r["k"],
                pct(r["success_before"]),
                pct(r["success_after"]),
                r["smallest_k_before"],
                r["smallest_k_after"],
            ]
            for r in cw["classes"]
        ]
        sections.append(
            section(
                "classwise",
                "Class-wise patterns before and after",
                figure(path / "classwise_gallery.png", "Class-wise pattern of every class, before (top) and after.")
                + table(
                    ["class", "pattern pixels k", "success before", "success after", "smallest k before", "after"],
                    cw_rows,
                ),
                f"Mean success {pct(cw['mean_success_before'])} before, {pct(cw['mean_success_after'])} after "
                f"({cw['steps']} search steps per class).",
            )
        )
    links = _sub_reports(run)
    if links:
        sections.append(section("runs", "Every search in detail", links, "Each links to its own report."))
    return "patternscope: hardening", sections


def _sub_reports(run: RunFolder) -> str:
    """Write the report of each before/after comparison and class-wise run; links to those written."""
    path = run.path
    folders = sorted(p for stage in ("before", "after") for p in (path / stage).glob("seed_*") if p.is_dir())
    folders += [path / name for name in ("classwise_before", "classwise_after") if (path / name).is_dir()]
    links = []
    for folder in folders:
        written = run.subreport(folder)
        if written is None:
            continue
        rel = folder.relative_to(path).as_posix()
        links.append(f'<li><a href="{esc(rel)}/{esc(written.name)}">{esc(rel)}</a></li>')
    return f"<ul>{''.join(links)}</ul>" if links else ""
