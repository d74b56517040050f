"""The report of ``experiment settings``: the three settings side by side, their patterns and simplicity."""

from __future__ import annotations

from .html import esc, figure, pct, section, table
from .page import Page, RunFolder, read_json


def build(run: RunFolder) -> Page:
    path = run.path
    data = read_json(path / "settings.json")
    simple = data["simplicity"]
    measures = data["measures"]
    rows = [
        [
            s["name"],
            pct(s["accuracy"]),
            pct(s["pgd_accuracy"]),
            pct(s["trigger_success"]),
            pct(s["mean_pattern_success"]),
            *[simple[s["name"]][m]["mean"] for m in measures],
            s["mean_saliency_overlap"],
        ]
        for s in data["settings"]
    ]
    headers = ["setting", "accuracy", "PGD accuracy", "trigger success", "mean pattern success"]
    headers += [f"{m.replace('_', ' ')} (mean)" for m in measures] + ["IoU with saliency"]
    config = data.get("config", {})
    note = (
        f"{esc(str(data.get('data')))}: {config.get('train_images')} training images, {config.get('epochs')} epochs "
        f"per model; PGD radius {config.get('adv_eps')}; backdoor: a {config.get('trigger_size')} px white patch "
        f"to class {config.get('target')}. Simplicity measures: lower is simpler."
    )
    sections = [
        section("settings", "Three settings side by side", table(headers, rows), note),
        section(
            "simplicity",
            "Simplicity",
            figure(path / "simplicity.png", "Each measure's mean over classes, relative to the first setting."),
        ),
        section(
            "gallery",
            "Patterns",
            figure(path / "gallery.png", "Every class's pattern in each setting, with its attack success.")
            + figure(path / "saliency.png", "A standard visualisation of the same canvases: gradient x input."),
        ),
    ]
    per_class = []
    for s in data["settings"]:
        for r in s["classes"]:
            per_class.append([s["name"], r["name"], r["k"], pct(r["success"]), *[r["simplicity"][m] for m in measures]])
    sections.append(
        section(
            "classes",
            "Per class",
            table(["setting", "class", "k", "success", *[m.replace("_", " ") for m in measures]], per_class),
        )
    )
    return "patternscope: class-wise patterns in three settings", sections
