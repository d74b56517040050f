"""``patternscope scan``: its declaration and its text (the scan itself is
:func:`~patternscope.runs.scan_run.scan_run`)."""

from __future__ import annotations

import json

from ..analyses.scan import format_scan
from ..report import scan as scan_report
from .command import Command
from .labelled import LABELLED_RUN_FILES, LABELLED_STALE
from .scan_run import ScanOptions, ScanSummary, scan_run


def format_scan_run(summary: ScanSummary) -> str:
    """The scan's table and verdict, where each flagged class's recovered trigger is, and the folder."""
    lines = [format_scan(summary.report)]
    lines += [
        f"recovered trigger of class {t}: {summary.out / f'trigger_class{t}.png'}" for t in summary.report.flagged
    ]
    lines.append(f"run folder: {summary.out}")
    return "\n".join(lines)


COMMAND = Command(
    name="scan",
    summary="scan a model for backdoors with class-wise and additive patterns",
    description="For every class, find the smallest class-wise stamp (pixels) and the smallest additive pattern "
    "(L2 norm) that reach --success on held-out images of other classes, verify both on other held-out images, "
    "and flag classes whose patterns are anomalously small: the model's statistic against a null fitted on clean "
    "models, at --fpr (with --reference, each class against the same class in clean reference models; "
    "--rule mad: the first release's rule). Writes scan.json, scan.txt, gallery.png, the recovered trigger of "
    "each flagged class and classes/NNN/ into --out.",
    options=ScanOptions,
    run=scan_run,
    text=format_scan_run,
    json=lambda summary: json.dumps(json.loads((summary.out / "scan.json").read_text()), indent=2),
    report=scan_report.build,
    result_file="scan.json",
    files=LABELLED_RUN_FILES,
    stale=LABELLED_STALE,
    settings_files=("config.json", "config.toml", "scan_config.json"),
    torchrun="class-parallel",
)
