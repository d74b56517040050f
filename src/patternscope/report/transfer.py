"""The report of ``transfer``: the pattern x model fooling-ratio matrix, with agreement and dominance."""

from __future__ import annotations

from .html import figure, section, table
from .page import Page, RunFolder, read_json


def _with_ci(value: float, ci: list[float] | None) -> str:
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{value:.3f}"


def build(run: RunFolder) -> Page:
    path = run.path
    data = read_json(path / "transfer.json")
    headers = ["pattern", *data["models"]]
    cis = data.get("fooling_ci") or [[None] * len(data["models"]) for _ in data["patterns"]]  # before 0.4: none
    rows = [
        [p, *(_with_ci(v, ci) for v, ci in zip(vals, row_ci, strict=True))]
        for p, vals, row_ci in zip(data["patterns"], data["fooling"], cis, strict=True)
    ]
    rows.append(["random ±ε noise (control)", *data["random_sign"]])
    sections = [
        section(
            "matrix",
            "Fooling ratio of each pattern on each model",
            table(headers, rows)
            + figure(path / "transfer.png", "Fooling-ratio matrix (rows: patterns, columns: models)."),
            f"{data.get('n_images')} images ({data.get('eval_data')}); in brackets the Wilson 95% interval"
            + (
                f" taking the {data['views']} views of each photo as independent (per photo it is wider: "
                "transfer.json's fooling_ci_per_photo)."
                if data.get("views", 1) > 1
                else "."
            ),
        )
    ]
    if data.get("agreement"):  # runs written before 0.3 have no agreement matrix
        agree = [[p, *vals] for p, vals in zip(data["patterns"], data["agreement"], strict=True)]
        dominance = [[p, *vals] for p, vals in zip(data["patterns"], data["dominance_top1"], strict=True)]
        sections.append(
            section(
                "dominance",
                "Does the pattern decide the prediction there?",
                table(headers, agree) + table(headers, dominance),
                "First table: agreement, the share of images whose prediction becomes the pattern's own class "
                "on that model (argmax f(x + δ) = argmax f(δ)). Second: dominance top-1, the share of "
                "perturbed predictions in their most frequent class.",
            )
        )
    return "patternscope: transfer", sections
