"""The report of ``compare``: every method side by side, and each method's pattern in detail."""

from __future__ import annotations

from ..core.patterns import Pattern
from . import figures
from .dominant import dominant_sections
from .html import esc, figure, pct, section, table
from .page import Page, RunFolder, model_line, read_json


def _interval(ci: list[float] | None) -> str:
    return f"{ci[0]:.1%} to {ci[1]:.1%}" if ci else ""


def build(run: RunFolder) -> Page:
    path, figs = run.path, run.figures
    data = read_json(path / "compare.json")
    rows = data["rows"]
    eps = data.get("eps")
    headers = [
        "method",
        "fooling ratio",
        "95% interval",
        "per photo",
        "confident",
        "dominance top-1",
        "agreement",
        "agreement interval",
        "PSNR dB",
        "SSIM",
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
                _interval(r.get("fooling_ci")),
                _interval(r.get("fooling_ci_per_photo")),
                r.get("fooling_ratio_confident"),
                r.get("dominance_top1"),
                r.get("agreement"),
                _interval(r.get("agreement_ci")),
                r.get("psnr_db"),
                r.get("ssim"),
                r.get("pattern_class"),
                r.get("passes"),
                r.get("seconds"),
                r.get("error") or "",
            ]
            for r in rows
        ],
    )
    body += (
        f'<p class="note">random ±ε noise: fooling ratio {pct(data.get("random_sign_fooling_ratio"))}. '
        "Intervals: Wilson 95%, taking the evaluation views as independent (crops of one photo are not, so "
        "the true uncertainty is wider); 'per photo' counts each photo once (its views as one draw), "
        "the conservative bound. PSNR and SSIM: patterned vs clean images.</p>"
    )
    sections = [
        section(
            "table",
            "Methods side by side",
            f"<p>{esc(model_line(data.get('model')))}</p>" + body,
            f"Same ε = {eps}, same search data, seed {data.get('seed')} and budget of {data.get('budget_passes')} "
            f"passes per method; evaluated on {data.get('n_images')} held-out images ({data.get('eval_data')}).",
        ),
        section("bars", "Fooling ratio per method", figure(path / "compare.png", "Fooling ratio per method.")),
    ]
    deltas, labels = [], []
    for r in rows:
        f = path / r["method"] / "pattern.safetensors"
        if f.is_file():
            deltas.append(Pattern.load(f, allow_over_budget=True).delta)
            labels.append(r["method"])
    if deltas:
        strip = figures.pattern_strip(
            figs / "patterns.png", deltas, labels, "Each method's pattern (rescaled by its own max |δ|)"
        )
        sections.append(section("patterns", "Patterns", figure(strip, "Patterns of every method, side by side.")))
    details = ""
    for r in rows:
        sub = path / r["method"]
        if not (sub / "metrics.json").is_file():
            continue
        parts = dominant_sections(sub, figs, prefix=f"{r['method']}-")
        inner = "".join(s.replace("<section", "<div").replace("</section>", "</div>") for _, _, s in parts[1:4])
        details += f"<details><summary>{esc(r['method'])}: {esc(r.get('title', ''))}</summary>{inner}</details>"
    if details:
        sections.append(section("methods", "Each method in detail", details, "Click a method to open it."))
    return "patternscope: comparison", sections
