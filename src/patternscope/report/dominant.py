"""The report of ``find dominant`` and ``evaluate --out``: one additive pattern and its measurements."""

from __future__ import annotations

from pathlib import Path

from ..core.patterns import Pattern
from . import figures
from .html import cards, esc, figure, key_values, pct, section, table
from .page import Page, RunFolder, Section, model_line, read_json


def dominant_sections(path: Path, figs: Path, prefix: str = "", show_model: bool = False) -> list[Section]:
    metrics = read_json(path / "metrics.json")
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
            (f"<p>{esc(model_line(metrics.get('model')))}</p>" if show_model else "") + cards(items),
            f"Measured on {ev['n_images']} held-out images ({metrics.get('eval_data', {}).get('description', '')}).",
        )
    )
    body = ""
    pattern_file = path / "pattern.safetensors"
    if pattern_file.is_file():
        pattern = Pattern.load(pattern_file)
        name = pattern.meta.get("title") or pattern.meta.get("method") or "pattern"
        views = figures.pattern_views(figs / f"{prefix}pattern_views.png", pattern.delta, pattern.eps, str(name))
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
    hist = figures.class_histogram(
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
    history = read_json(path / "history.json").get("loss") or []
    if history:
        curve = figures.loss_curve(figs / f"{prefix}search_loss.png", history, "pattern search loss (lower is better)")
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
    for key, label in (("fooling_ratio", "fooling ratio"), ("agreement", "agreement")):
        low, high = ev.get("intervals", {}).get(key, (None, None))  # runs before 0.3 have no intervals
        if low is not None:
            rows.append([f"{label}: Wilson 95% interval (views taken as independent)", f"{pct(low)} to {pct(high)}"])
    if acc:
        rows += [[f"accuracy {k} clean", v] for k, v in acc["clean"].items()]
        rows += [[f"accuracy {k} with pattern", v] for k, v in acc["perturbed"].items()]
        rows.append(["attack success on correctly classified", acc["attack_success_on_correct"]])
    extra = {k: v for k, v in metrics.items() if k in ("model", "pattern", "eval_data", "search")}
    out.append(section(f"{prefix}metrics", "All metrics", table(["metric", "value"], rows) + key_values(extra)))
    return out


def build(run: RunFolder) -> Page:
    path, figs = run.path, run.figures
    metrics = read_json(path / "metrics.json")
    method = (metrics.get("pattern") or {}).get("method") or "pattern"
    sections = dominant_sections(path, figs, show_model=True)
    return f"patternscope: {method} pattern", sections
