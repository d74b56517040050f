"""``patternscope compare``: its declaration and its text (the comparison from options into a run folder is
:func:`~patternscope.runs.compare_run.compare_methods`; the settings, rows and result are
:mod:`patternscope.analyses.comparison`'s)."""

from __future__ import annotations

from ..analyses.comparison import (
    Comparison,
)
from ..report import compare as compare_report
from .command import Command, indented_json
from .compare_run import (
    CompareOptions,
    compare_methods,
)

# ---------------------------------------------------------------------------------------------------
# patternscope compare


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{value:{width}.{digits}f}" if value is not None else f"{'-':>{width}}"


def format_comparison(comparison: Comparison) -> str:
    """The comparison as a plain-text table (ratios to the dominant pattern when it was run)."""
    ref = next((r.fooling_ratio for r in comparison.rows if r.method == "dominant" and r.fooling_ratio), None)
    head = (
        f"{'method':<9} {'setting':<14} {'fool':>6} {'95% CI':>13} {'conf.':>6} {'dom@1':>6} {'agree':>6} "
        f"{'vs dom':>6} {'PSNR':>5} {'SSIM':>5} {'passes':>7} {'time s':>7}  data"
    )
    lines = [head, "-" * len(head)]
    for r in comparison.rows:
        if r.error:
            lines.append(f"{r.method:<9} FAILED: {r.error}")
            continue
        ratio = f"{(r.fooling_ratio or 0.0) / ref:6.2f}" if ref else f"{'-':>6}"
        ci = f"[{r.fooling_ci[0]:.3f},{r.fooling_ci[1]:.3f}]" if r.fooling_ci else "-"
        lines.append(
            f"{r.method:<9} {r.setting:<14} {r.fooling_ratio:6.3f} {ci:>13} {r.fooling_ratio_confident:6.3f} "
            f"{r.dominance_top1:6.3f} {r.agreement:6.3f} {ratio} {_num(r.psnr_db, 5, 1)} {_num(r.ssim, 5, 3)} "
            f"{r.passes or 0:7.0f} {r.seconds or 0:7.1f}  {r.data}"
        )
    lines.append(
        f"random ±eps: fooling {comparison.random_sign:.3f} (confident {comparison.random_sign_confident:.3f}); "
        f"{comparison.n_images} images of {comparison.eval_data}; CI: Wilson 95%, views taken as independent"
    )
    photo = [r for r in comparison.rows if r.fooling_ci_per_photo]
    if photo:
        lines.append(
            "per photo (its views as one draw): "
            + ", ".join(f"{r.method} [{c[0]:.3f},{c[1]:.3f}]" for r in photo if (c := r.fooling_ci_per_photo))
        )
    return "\n".join(lines)


COMMAND = Command(
    name="compare",
    summary="run several pattern methods side by side with the same data, eps, seed and budget",
    description="Run pattern methods side by side on one model with the same eps, search data, seed and "
    "compute budget (passes: images through forward and backward), evaluate each on the same held-out "
    "images, and write compare.json, compare.png and one sub-folder per method into --out.",
    options=CompareOptions,
    run=compare_methods,
    text=lambda comparison: f"{format_comparison(comparison)}\nfolder: {comparison.out}",
    json=indented_json(lambda comparison: comparison.to_dict()),
    report=compare_report.build,
    result_file="compare.json",
    files=("compare.json", "config.json"),
    torchrun="data-parallel",
)
