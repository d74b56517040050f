"""The report of ``find classwise``: predictive power and the stamp of each class."""

from __future__ import annotations

from . import figures
from .html import esc, figure, pct, section, table
from .page import Page, RunFolder, model_line, read_json


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
            f"<p>{esc(model_line(data.get('model')))}</p>"
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
