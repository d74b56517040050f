"""The report of ``transfer``: the pattern x model fooling-ratio matrix."""

from __future__ import annotations

from .html import figure, section, table
from .page import Page, RunFolder, read_json


def build(run: RunFolder) -> Page:
    path = run.path
    data = read_json(path / "transfer.json")
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
