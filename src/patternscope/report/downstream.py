"""The report of ``downstream``: a backbone's pattern on a model fine-tuned from it."""

from __future__ import annotations

from .html import cards, esc, figure, pct, section, table
from .page import Page, RunFolder, model_line, read_json


def build(run: RunFolder) -> Page:
    path = run.path
    data = read_json(path / "downstream.json")
    r, t, task = data["result"], data["training"], data["task"]
    rows = [
        ["the backbone's pattern, unchanged", r["transferred"]],
        ["random ±ε noise (same budget)", r["random_sign"]],
        ["random uniform noise (same budget)", r["random_uniform"]],
    ]
    if r.get("own") is not None:
        rows.append(["a pattern searched on the downstream model", r["own"]])
    body = cards(
        [
            ("fooling ratio of the backbone's pattern", pct(r["transferred"]), "bad"),
            ("random ±ε noise", pct(r["random_sign"]), ""),
            (
                "task accuracy clean → with pattern",
                f"{pct(r['accuracy_clean'])} → {pct(r['accuracy_transferred'])}",
                "",
            ),
        ]
    )
    body += table(["pattern on the downstream model", "fooling ratio"], rows)
    body += figure(path / "downstream.png", "Fooling ratio on the downstream model's held-out task images.")
    train = table(
        ["", "value"],
        [
            ["head", data["config"]["head"]],
            ["task", f"{task['data']}: {task['classes']} classes"],
            ["train / test images", f"{task['train_images']} / {task['test_images']}"],
            ["train accuracy", t["train_accuracy"]],
            ["test accuracy", t["test_accuracy"]],
            ["fine-tuned model loaded", data.get("finetuned") or "no (trained here)"],
        ],
    )
    return "patternscope: downstream attack", [
        section(
            "result",
            "Does the backbone's pattern fool the downstream model?",
            f"<p>{esc(model_line(data.get('backbone')))}</p>" + body,
            f"Pattern {data['pattern'].get('path')} (ε = {data.get('eps')}), never changed after the backbone search.",
        ),
        section("training", "The downstream model", train),
    ]
