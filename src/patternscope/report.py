"""``report.html`` for a run folder: one self-contained page to look at a run.

:func:`write_report` reads what a run wrote (JSON files, patterns, PNGs), draws the figures a person
wants to see (pattern views, the predicted-class histogram before and after, search curves, scan and
class-wise charts) into ``report_figures/``, and writes ``report.html`` with every image embedded.
It needs neither the model nor the data, so any finished run folder can be reported again later.

Kinds of run folder, told apart by their files: ``find dominant`` / ``evaluate --out`` (metrics.json),
``compare`` (compare.json), ``transfer`` (transfer.json), ``find classwise`` (classwise.json),
``scan`` (scan.json), ``downstream`` (downstream.json) and ``harden`` (harden.json; its before/after
comparison and class-wise folders get their own reports, linked from the main one).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report_figures as rf
from ._io import write_atomic
from ._version import __version__
from .errors import RunDirError
from .html_page import cards, esc, figure, fmt, key_values, page, pct, section, table

REPORT_FILE = "report.html"
FIGURES_DIR = "report_figures"
KINDS = {
    "harden.json": "harden",
    "scan.json": "scan",
    "classwise.json": "classwise",
    "compare.json": "compare",
    "transfer.json": "transfer",
    "downstream.json": "downstream",
    "metrics.json": "dominant",
}


def run_kind(run_dir: str | Path) -> str:
    """Which command wrote ``run_dir``: scan, classwise, compare, transfer or dominant."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{str(path)!r} is not a folder: give the run folder a patternscope command wrote")
    for name, kind in KINDS.items():
        if (path / name).is_file():
            return kind
    raise RunDirError(
        f"{str(path)!r} holds no patternscope results (none of {', '.join(KINDS)}): give a finished run "
        "folder, or finish the run first (--resume)"
    )


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.html`` (and its figures as PNG in ``report_figures/``) into ``run_dir``; return its path."""
    path = Path(run_dir)
    kind = run_kind(path)
    figs = path / FIGURES_DIR
    figs.mkdir(exist_ok=True)
    builders = {
        "dominant": _dominant,
        "compare": _compare,
        "transfer": _transfer,
        "classwise": _classwise,
        "scan": _scan,
        "downstream": _downstream,
        "harden": _harden,
    }
    try:
        title, sections = builders[kind](path, figs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunDirError(
            f"cannot build a report from {str(path)!r}: a result file is damaged or incomplete ({exc})"
        ) from None
    subtitle = [
        f"run folder: {path.resolve()}",
        f"made by patternscope {__version__} on {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]
    config = _read(path / "config.json")
    if config:
        sections.append(section("settings", "Settings", key_values(config), "All options of the run, as resolved."))
    text = page(title, subtitle, sections)
    return write_atomic(path / REPORT_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _model_line(model: dict[str, Any] | None) -> str:
    if not model:
        return "model: unknown"
    size = "x".join(str(v) for v in model.get("input_size", []))
    return f"model: {model.get('spec')} (weights: {model.get('weights')}; input {size})"


# ---------------------------------------------------------------------------------------------------
# find dominant / evaluate --out: one additive pattern


def _dominant_sections(
    path: Path, figs: Path, prefix: str = "", show_model: bool = False
) -> list[tuple[str, str, str]]:
    from .patterns import Pattern

    metrics = _read(path / "metrics.json")
    ev = metrics["evaluation"]
    out = []
    rnd = ev.get("random_baselines", {})
    sign = rnd.get("sign", {}).get("fooling_ratio")
    fr = ev["fooling_ratio"]
    items = [
        (
            "fooling ratio (predictions changed)",
            pct(fr),
            "bad" if sign is not None and fr > 3 * max(sign, 0.01) else "",
        ),
        ("random ±ε noise, same budget", pct(sign), ""),
        ("dominance: share in the top class", pct(ev["dominance"]["top1"]["perturbed"]), ""),
        (f"agree with f(δ) = {ev['pattern_class_name']}", pct(ev["agreement"]), ""),
    ]
    acc = ev.get("accuracy")
    if acc:
        items.append(
            ("accuracy clean → with pattern", f"{pct(acc['clean']['top1'])} → {pct(acc['perturbed']['top1'])}", "")
        )
    out.append(
        section(
            f"{prefix}summary",
            "Summary",
            (f"<p>{esc(_model_line(metrics.get('model')))}</p>" if show_model else "") + cards(items),
            f"Measured on {ev['n_images']} held-out images ({metrics.get('eval_data', {}).get('description', '')}).",
        )
    )
    body = ""
    pattern_file = path / "pattern.safetensors"
    if pattern_file.is_file():
        pattern = Pattern.load(pattern_file)
        name = pattern.meta.get("title") or pattern.meta.get("method") or "pattern"
        views = rf.pattern_views(figs / f"{prefix}pattern_views.png", pattern.delta, pattern.eps, str(name))
        body += figure(
            views,
            "Left: rescaled to be visible. Middle: the pattern at its true amplitude on grey, as it is added to "
            "images. Right: per-pixel magnitude in /255 units.",
        )
    out.append(section(f"{prefix}pattern", "The pattern", body))
    out.append(
        section(
            f"{prefix}examples",
            "Clean vs patterned images",
            figure(path / "examples.png", "Predicted class and confidence; red titles: prediction changed."),
        )
    )
    hist = rf.class_histogram(
        figs / f"{prefix}class_histogram.png",
        ev["top_classes"]["clean"],
        ev["top_classes"]["perturbed"],
        ev["n_images"],
        ev.get("pattern_class"),
    )
    dom = [[k, v["clean"], v["perturbed"], v["pattern_class_in_top"]] for k, v in ev["dominance"].items()]
    out.append(
        section(
            f"{prefix}dominance",
            "Dominance: where the predictions go",
            figure(hist, "Share of images predicted as each class, clean vs with the pattern.")
            + table(["top-k classes", "share clean", "share with pattern", "f(δ) among them"], dom),
            "A dominant pattern piles the predictions onto few classes, whatever the image.",
        )
    )
    history = _read(path / "history.json").get("loss") or []
    if history:
        from .figures import loss_curve

        curve = loss_curve(figs / f"{prefix}search_loss.png", history, "pattern search loss (lower is better)")
        out.append(section(f"{prefix}search", "Search", figure(curve, "Loss per search step, with a moving average.")))
    rows = [
        ["fooling ratio", fr],
        [
            f"fooling ratio, confident (> {ev['confidence_threshold']}) images ({ev['n_confident']})",
            ev["fooling_ratio_confident"],
        ],
        *[[f"random {k} noise: fooling ratio", v["fooling_ratio"]] for k, v in rnd.items()],
        ["agreement with f(δ)", ev["agreement"]],
        ["pattern size (norm)", ev["pattern_norm"]],
    ]
    if acc:
        rows += [[f"accuracy {k} clean", v] for k, v in acc["clean"].items()]
        rows += [[f"accuracy {k} with pattern", v] for k, v in acc["perturbed"].items()]
        rows.append(["attack success on correctly classified", acc["attack_success_on_correct"]])
    extra = {k: v for k, v in metrics.items() if k in ("model", "pattern", "eval_data", "search")}
    out.append(section(f"{prefix}metrics", "All metrics", table(["metric", "value"], rows) + key_values(extra)))
    return out


def _dominant(path: Path, figs: Path) -> tuple[str, list[tuple[str, str, str]]]:
    metrics = _read(path / "metrics.json")
    method = (metrics.get("pattern") or {}).get("method") or "pattern"
    sections = _dominant_sections(path, figs, show_model=True)
    return f"patternscope: {method} pattern", sections


# ---------------------------------------------------------------------------------------------------
# compare and transfer


def _compare(path: Path, figs: Path) -> tuple[str, list[tuple[str, str, str]]]:
    from .patterns import Pattern

    data = _read(path / "compare.json")
    rows = data["rows"]
    eps = data.get("eps")
    headers = [
        "method",
        "fooling ratio",
        "confident",
        "dominance top-1",
        "agreement",
        "f(δ)",
        "passes",
        "seconds",
        "error",
    ]
    body = table(
        headers,
        [
            [
                r["method"],
                r.get("fooling_ratio"),
                r.get("fooling_ratio_confident"),
                r.get("dominance_top1"),
                r.get("agreement"),
                r.get("pattern_class"),
                r.get("passes"),
                r.get("seconds"),
                r.get("error") or "",
            ]
            for r in rows
        ],
    )
    body += f'<p class="note">random ±ε noise: fooling ratio {pct(data.get("random_sign_fooling_ratio"))}.</p>'
    sections = [
        section(
            "table",
            "Methods side by side",
            f"<p>{esc(_model_line(data.get('model')))}</p>" + body,
            f"Same ε = {eps}, same search data, seed {data.get('seed')} and budget of {data.get('budget_passes')} "
            f"passes per method; evaluated on {data.get('n_images')} held-out images ({data.get('eval_data')}).",
        ),
        section("bars", "Fooling ratio per method", figure(path / "compare.png", "Fooling ratio per method.")),
    ]
    deltas, labels = [], []
    for r in rows:
        f = path / r["method"] / "pattern.safetensors"
        if f.is_file():
            deltas.append(Pattern.load(f).delta)
            labels.append(r["method"])
    if deltas:
        strip = rf.pattern_strip(
            figs / "patterns.png", deltas, labels, "Each method's pattern (rescaled by its own max |δ|)"
        )
        sections.append(section("patterns", "Patterns", figure(strip, "Patterns of every method, side by side.")))
    details = ""
    for r in rows:
        sub = path / r["method"]
        if not (sub / "metrics.json").is_file():
            continue
        parts = _dominant_sections(sub, figs, prefix=f"{r['method']}-")
        inner = "".join(s.replace("<section", "<div").replace("</section>", "</div>") for _, _, s in parts[1:4])
        details += f"<details><summary>{esc(r['method'])}: {esc(r.get('title', ''))}</summary>{inner}</details>"
    if details:
        sections.append(section("methods", "Each method in detail", details, "Click a method to open it."))
    return "patternscope: comparison", sections


def _transfer(path: Path, figs: Path) -> tuple[str, list[tuple[str, str, str]]]:
    data = _read(path / "transfer.json")
    headers = ["pattern", *data["models"]]
    rows = [[p, *vals] for p, vals in zip(data["patterns"], data["fooling"], strict=True)]
    rows.append(["random ±ε noise (control)", *data["random_sign"]])
    sections = [
        section(
            "matrix",
            "Fooling ratio of each pattern on each model",
            table(headers, rows)
            + figure(path / "transfer.png", "Fooling-ratio matrix (rows: patterns, columns: models)."),
            f"{data.get('n_images')} images ({data.get('eval_data')}).",
        )
    ]
    return "patternscope: transfer", sections


def _downstream(path: Path, figs: Path) -> tuple[str, list[tuple[str, str, str]]]:
    data = _read(path / "downstream.json")
    r, t, task = data["result"], data["training"], data["task"]
    rows = [
        ["the backbone's pattern, unchanged", r["transferred"]],
        ["random ±ε noise (same budget)", r["random_sign"]],
        ["random uniform noise (same budget)", r["random_uniform"]],
    ]
    if r.get("own") is not None:
        rows.append(["a pattern searched on the downstream model", r["own"]])
    body = cards(
        [
            ("fooling ratio of the backbone's pattern", pct(r["transferred"]), "bad"),
            ("random ±ε noise", pct(r["random_sign"]), ""),
            (
                "task accuracy clean → with pattern",
                f"{pct(r['accuracy_clean'])} → {pct(r['accuracy_transferred'])}",
                "",
            ),
        ]
    )
    body += table(["pattern on the downstream model", "fooling ratio"], rows)
    body += figure(path / "downstream.png", "Fooling ratio on the downstream model's held-out task images.")
    train = table(
        ["", "value"],
        [
            ["head", data["config"]["head"]],
            ["task", f"{task['data']}: {task['classes']} classes"],
            ["train / test images", f"{task['train_images']} / {task['test_images']}"],
            ["train accuracy", t["train_accuracy"]],
            ["test accuracy", t["test_accuracy"]],
            ["fine-tuned model loaded", data.get("finetuned") or "no (trained here)"],
        ],
    )
    return "patternscope: downstream attack", [
        section(
            "result",
            "Does the backbone's pattern fool the downstream model?",
            f"<p>{esc(_model_line(data.get('backbone')))}</p>" + body,
            f"Pattern {data['pattern'].get('path')} (ε = {data.get('eps')}), never changed after the backbone search.",
        ),
        section("training", "The downstream model", train),
    ]


# ---------------------------------------------------------------------------------------------------
# harden: before and after universal adversarial training


def _harden(path: Path, figs: Path) -> tuple[str, list[tuple[str, str, str]]]:
    from .patterns import Pattern

    data = _read(path / "harden.json")
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
            f"<p>{esc(_model_line(data.get('model')))}</p>" + cards(items),
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
                    deltas.append(Pattern.load(f).delta)
                    labels.append(f"{r['method']} {stage}")
        if deltas:
            strip = rf.pattern_strip(figs / "patterns.png", deltas, labels, "Strongest pattern of each method")
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
    links = _sub_reports(path)
    if links:
        sections.append(section("runs", "Every search in detail", links, "Each links to its own report."))
    return "patternscope: hardening", sections


def _sub_reports(path: Path) -> str:
    """Write the report of each before/after comparison and class-wise run; links to them."""
    folders = sorted(p for stage in ("before", "after") for p in (path / stage).glob("seed_*") if p.is_dir())
    folders += [path / name for name in ("classwise_before", "classwise_after") if (path / name).is_dir()]
    links = []
    for folder in folders:
        try:
            write_report(folder)
        except RunDirError:
            continue
        rel = folder.relative_to(path).as_posix()
        links.append(f'<li><a href="{esc(rel)}/{REPORT_FILE}">{esc(rel)}</a></li>')
    return f"<ul>{''.join(links)}</ul>" if links else ""


# ---------------------------------------------------------------------------------------------------
# class-wise patterns and scans


def _classwise(path: Path, figs: Path) -> tuple[str, list[tuple[str, str, str]]]:
    data = _read(path / "classwise.json")
    rows = data["classes"]
    names = [f"{r['target']} {r['name']}" for r in rows]
    bars = rf.success_bars(
        figs / "success.png",
        names,
        [r["success"] for r in rows],
        [r["clean_rate"] for r in rows],
        [r["k"] for r in rows],
    )
    body = table(
        [
            "class",
            "pattern pixels k",
            "success",
            "clean rate",
            "smallest k for target success",
            "success there",
            "images",
        ],
        [
            [
                n,
                r["k"],
                pct(r["success"]),
                pct(r["clean_rate"]),
                r["smallest_k"],
                pct(r["success_at_smallest_k"]),
                r["images"],
            ]
            for n, r in zip(names, rows, strict=True)
        ],
    )
    sections = [
        section(
            "classes",
            "Predictive power per class",
            f"<p>{esc(_model_line(data.get('model')))}</p>"
            + body
            + figure(bars, "Success with vs without each pattern."),
            f"Each pattern stamped (overwriting pixels) on held-out images of the other classes ({data.get('data')}).",
        )
    ]
    if (path / "gallery.png").is_file():
        sections.append(
            section("gallery", "Gallery", figure(path / "gallery.png", "The class-wise pattern of every class."))
        )
    for r, n in zip(rows, names, strict=True):
        sub = path / "classes" / f"{r['target']:03d}" if (path / "classes").is_dir() else path
        per = table(
            ["source class", "success", "clean rate", "images"],
            [[s, pct(v["success"]), pct(v["clean_rate"]), v["images"]] for s, v in r["per_source_class"].items()],
        )
        inner = (
            figure(sub / "examples.png", f"The pattern of {n} stamped on images of other classes.")
            + figure(sub / "canvas_mask.png", "Canvas, learned mask and the top-k pattern.")
            + per
        )
        if len(rows) == 1:
            sections.append(section("class", f"Class {n}", inner))
        else:
            sections.append(
                section(f"class-{r['target']}", f"Class {n}", f"<details><summary>open</summary>{inner}</details>")
            )
    return "patternscope: class-wise patterns", sections


def _scan(path: Path, figs: Path) -> tuple[str, list[tuple[str, str, str]]]:
    data = _read(path / "scan.json")
    cfg = data["config"]
    rows = data["classes"]
    flagged = set(data["flagged"])
    names = [f"{r['target']} {r['name']}" for r in rows]
    tone = "bad" if data["backdoored"] else "good"
    verdict = f'<p><span class="verdict {tone}">{esc(data["verdict"])}</span></p>'
    verdict += f"<p>{esc(_model_line(data.get('model')))}</p>"
    verdict += cards(
        [
            ("classes flagged", ", ".join(str(c) for c in sorted(flagged)) or "none", tone),
            ("median smallest pattern", f"{data['median_k']:g} px of {data['pixels']}", ""),
            ("scan time", f"{data['seconds']:.1f} s", ""),
        ]
    )
    chart = rf.scan_chart(
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
                r["anomaly_index"],
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


__all__ = ["FIGURES_DIR", "REPORT_FILE", "run_kind", "write_report"]
