"""The report of ``find classwise``: predictive power and the stamp of each class."""

from __future__ import annotations

from pathlib import Path

from . import figures
from .html import esc, figure, pct, section, table
from .page import Page, RunFolder, model_line, read_json


def _simplicity_cells(row: dict) -> list[object]:
    simple = row.get("simplicity") or {}  # runs before 0.4 have none
    cells: list[object] = [simple.get("components"), simple.get("boundary_ratio"), simple.get("compressed_bytes")]
    return [*cells, row.get("saliency_overlap")]


def _canvases(sub: Path, row: dict) -> str:
    sens = row.get("canvas_sensitivity")
    if not sens:
        return ""
    text = (
        f"From its {sens['canvases']} most confident images the class's patterns reach {pct(sens['success_min'])} to "
        f"{pct(sens['success_max'])} success; their masks overlap with IoU {sens['mean_pairwise_iou']:.2f} on average "
        f"(random masks of this size: {sens['chance_iou']:.2f}), "
        f"centroids {sens['mean_centroid_distance_px']:.1f} px apart."
    )
    return (
        figure(sub / "canvases.png", "Canvas sensitivity: each canvas and the pattern found from it.")
        + f"<p>{esc(text)}</p>"
    )


def build(run: RunFolder) -> Page:
    path, figs = run.path, run.figures
    data = read_json(path / "classwise.json")
    rows = data["classes"]
    names = [f"{r['target']} {r['name']}" for r in rows]
    bars = figures.success_bars(
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
            "parts",
            "boundary / pixel",
            "compressed bytes",
            "IoU with saliency",
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
                *_simplicity_cells(r),
            ]
            for n, r in zip(names, rows, strict=True)
        ],
    )
    sections = [
        section(
            "classes",
            "Predictive power per class",
            f"<p>{esc(model_line(data.get('model')))}</p>"
            + body
            + figure(bars, "Success with vs without each pattern."),
            f"Each pattern stamped (overwriting pixels) on held-out images of the other classes ({data.get('data')}). "
            "Simplicity (lower is simpler): connected parts of the stamp, its boundary length per pixel and the "
            "compressed size of the stamp on grey. IoU with saliency: overlap of the pattern's pixels with the "
            "top pixels of a gradient x input map of the canvas (1: the same pixels).",
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
            + figure(
                sub / "canvas_mask.png",
                "Canvas, learned mask, the top-k pattern and, beside it, a standard visualisation of the same "
                "canvas (gradient x input, brighter = more salient).",
            )
            + _canvases(sub, r)
            + per
        )
        if len(rows) == 1:
            sections.append(section("class", f"Class {n}", inner))
        else:
            sections.append(
                section(f"class-{r['target']}", f"Class {n}", f"<details><summary>open</summary>{inner}</details>")
            )
    return "patternscope: class-wise patterns", sections
