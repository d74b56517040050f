"""The report of ``find dominant`` and ``evaluate --out``: one additive pattern and its measurements."""

from __future__ import annotations

from pathlib import Path

from ..core.metrics import wilson_interval
from ..core.patterns import Pattern
from . import figures
from .html import cards, esc, figure, key_values, pct, pct_interval, section, table
from .page import Page, RunFolder, Section, model_line, read_json


def dominant_sections(path: Path, figs: Path, prefix: str = "", show_model: bool = False) -> list[Section]:
    metrics = read_json(path / "metrics.json")
    ev = metrics["evaluation"]
    out = []
    rnd = ev.get("random_baselines", {})
    sign = rnd.get("sign", {}).get("fooling_ratio")
    fr = ev["fooling_ratio"]
    ci = ev.get("intervals") or {}  # runs before 0.3 have no intervals
    n = ev["n_images"]
    items = [
        (
            "fooling ratio (predictions changed), 95% interval",
            pct_interval(fr, ci.get("fooling_ratio")),
            "bad" if sign is not None and fr > 3 * max(sign, 0.01) else "",
        ),
        (
            "random ±ε noise, same budget",
            pct_interval(sign, wilson_interval(sign, n) if sign is not None else None),
            "",
        ),
        ("dominance: share in the top class", pct(ev["dominance"]["top1"]["perturbed"]), ""),
        (f"agree with f(δ) = {ev['pattern_class_name']}", pct_interval(ev["agreement"], ci.get("agreement")), ""),
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
        pattern = Pattern.load(pattern_file, allow_over_budget=True)  # shown as it is; metrics say if over
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
    seen = ev.get("perceptibility") or {}
    if seen:  # runs before 0.4 have none
        out.append(section(f"{prefix}perceptibility", "How visible it is", perceptibility_body(seen, metrics)))
    layers = read_json(path / "layers.json")
    if layers.get("blocks"):
        out.append(section(f"{prefix}layers", "Where the pattern takes over", layers_body(layers, path / "layers.png")))
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
    n_all, n_conf = ev["n_images"], ev["n_confident"]
    n_views = (metrics.get("eval_data") or {}).get("views") or 1
    labels = {
        "fooling_ratio": f"fooling ratio (n={n_all}, views taken as independent)",
        "fooling_ratio_confident": f"fooling ratio, confident (n={n_conf})",
        "agreement": f"agreement (n={n_all})",
        "agreement_confident": f"agreement, confident (n={n_conf})",
        "fooling_ratio_per_photo": f"fooling ratio, per photo (n={n_all // n_views} photos, views as one draw)",
        "agreement_per_photo": f"agreement, per photo (n={n_all // n_views} photos)",
    }
    for key, (low, high) in (ev.get("intervals") or {}).items():  # runs before 0.3 have no intervals
        rows.append([f"{labels.get(key, key)}: Wilson 95% interval", f"{pct(low)} to {pct(high)}"])
    if acc:
        rows += [[f"accuracy {k} clean", v] for k, v in acc["clean"].items()]
        rows += [[f"accuracy {k} with pattern", v] for k, v in acc["perturbed"].items()]
        rows.append(["attack success on correctly classified", acc["attack_success_on_correct"]])
        n_correct = acc.get("n_correct")
        for k, v in (acc.get("attack_success") or {}).items():
            rows.append([f"attack success {k}: correct at top-1, label left the perturbed {k} (n={n_correct})", v])
        n_topk = acc.get("n_correct_topk") or {}
        for k, v in (acc.get("attack_success_clean_topk") or {}).items():  # runs before issue 28 have none
            rows.append([f"attack success {k}, ours: label in the clean {k}, left it (n={n_topk.get(k)})", v])
    extra = {k: v for k, v in metrics.items() if k in ("model", "pattern", "eval_data", "search")}
    out.append(section(f"{prefix}metrics", "All metrics", table(["metric", "value"], rows) + key_values(extra)))
    return out


def perceptibility_body(seen: dict, metrics: dict) -> str:
    """Cards and a table of PSNR, SSIM, norms and saturation (``metrics.json``'s ``perceptibility``)."""
    eps = (metrics.get("pattern") or {}).get("eps")
    items = []
    if "psnr_db" in seen:
        items += [
            ("PSNR of x+δ vs x", f"{seen['psnr_db']:.1f} dB", ""),
            ("SSIM of x+δ vs x", f"{seen['ssim']:.3f}", ""),
        ]
    items.append(("L∞ norm (/255)", f"{seen['linf'] * 255:.2f}" + (f" of {eps * 255:.2f}" if eps else ""), ""))
    items.append(("L2 norm (pixel units)", f"{seen['l2']:.2f}", ""))
    rows = [[k.replace("_", " "), v] for k, v in seen.items()]
    note = (
        f"PSNR and SSIM on {sample_text(seen.get('n_images', 0), 'evaluation crops', seen, 'sample_')} "
        "(torchmetrics; data range 1). "
        "Saturated share: values of δ at the budget; clipped share: values of x+δ cut to [0,1]."
    )
    return cards(items) + table(["measure", "value"], rows) + f"<p>{esc(note)}</p>"


def sample_text(n: int, what: str, record: dict, prefix: str = "") -> str:
    """``n`` ``what`` and how they were drawn from the set (``record``'s ``seed``, ``stratified`` and ``of``
    under ``prefix``); a run from before issue 28 has no record: it read the first ``n``."""
    if f"{prefix}seed" not in record:
        return f"the first {n} {what}"
    kind = "a class-stratified" if record.get(f"{prefix}stratified") else "a"
    of, seed = record.get(f"{prefix}of"), record[f"{prefix}seed"]
    return f"{n} {what} of {kind} sample of the {of} images (seed {seed})"


def layers_body(layers: dict, png: Path) -> str:
    """The layer-takeover figure and a one-line summary per curve (``layers.json``)."""
    lines = []
    for c in layers["curves"]:
        where = c["takeover"]
        text = f"from block {where} on" if where else "at no block"
        lines.append([c["name"], text, c["follows_delta"][-1], c["follows_x"][-1]])
    caption = (
        "Solid: cos(g(x+δ), g(δ)), the features follow the pattern; dashed: cos(g(x+δ), g(x)), they follow "
        f"the image; per block, mean over {sample_text(layers['n_images'], 'images', layers.get('sample') or {})}. "
        "The shaded block: where the pattern takes over."
    )
    body = figure(png, caption) if png.is_file() else ""
    headers = ["perturbation", "features follow δ more than x", "logits: follows δ", "logits: follows x"]
    return body + table(headers, lines)


def build(run: RunFolder) -> Page:
    path, figs = run.path, run.figures
    metrics = read_json(path / "metrics.json")
    method = (metrics.get("pattern") or {}).get("method") or "pattern"
    sections = dominant_sections(path, figs, show_model=True)
    return f"patternscope: {method} pattern", sections
