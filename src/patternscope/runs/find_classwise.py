"""``patternscope find classwise``: its declaration and its text (the run itself is
:func:`~patternscope.runs.classwise_run.find_classwise_run`)."""

from __future__ import annotations

from ..report import classwise as classwise_report
from .classwise_run import ClasswiseOptions, ClasswiseSummary, find_classwise_run
from .command import Command, indented_json
from .labelled import LABELLED_RUN_FILES, LABELLED_STALE


def format_classwise(summary: ClasswiseSummary) -> str:
    """One line per class: pattern size, success, clean rate and the smallest k."""
    head = f"{'class':<18} {'k':>5} {'success':>8} {'clean':>6} {'min k':>6} {'parts':>5} {'edge/px':>7} {'~sal':>5}"
    lines = [head, "-" * len(head)]
    for r in summary.rows:
        simple = r.get("simplicity") or {}  # rows resumed from before 0.4 have none
        lines.append(
            f"{(str(r['target']) + ' ' + r['name'])[:18]:<18} {r['k']:>5} {r['success']:>8.1%} "
            f"{r['clean_rate']:>6.1%} {r['smallest_k']:>6} {simple.get('components', float('nan')):>5.0f} "
            f"{simple.get('boundary_ratio', float('nan')):>7.2f} {r.get('saliency_overlap', float('nan')):>5.2f}"
        )
    lines.append("parts: connected parts of the stamp; edge/px: boundary per pixel; ~sal: IoU with the saliency map")
    for r in summary.rows:
        sens = r.get("canvas_sensitivity")
        if sens:
            lines.append(
                f"class {r['target']}: {sens['canvases']} canvases, success {sens['success_min']:.1%}-"
                f"{sens['success_max']:.1%}, mask IoU {sens['mean_pairwise_iou']:.2f} "
                f"(chance {sens['chance_iou']:.2f}), "
                f"centroids {sens['mean_centroid_distance_px']:.1f} px apart"
            )
    return "\n".join(lines)


COMMAND = Command(
    name="find classwise",
    summary="class-wise pattern (Zhao et al. 2021): a small stamp that makes the model predict a class",
    description="Search the class-wise pattern of one class (--class N) or of every class (--all-classes): "
    "a mask over a canvas image of the class, blended into images of other classes; the top-k mask pixels "
    "of the canvas are the pattern. Reports its attack success on held-out images of other classes, per "
    "source class, next to the rate without it. Writes pattern.*, examples.png, canvas_mask.png, "
    "classwise.json (and gallery.png with --all-classes) into --out.",
    options=ClasswiseOptions,
    run=find_classwise_run,
    text=lambda summary: f"{format_classwise(summary)}\nrun folder: {summary.out}",
    json=indented_json(lambda summary: {"out": str(summary.out), "classes": summary.rows}),
    report=classwise_report.build,
    result_file="classwise.json",
    files=LABELLED_RUN_FILES,
    stale=LABELLED_STALE,
)
