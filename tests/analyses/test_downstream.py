"""Downstream attack: a pattern found on a backbone fools a model fine-tuned from it on another task."""

from __future__ import annotations

import json

import pytest
import torch

from patternscope.analyses.downstream import DownstreamConfig, build_downstream, measure_downstream, train_downstream
from patternscope.cli import EXIT_OK, EXIT_USER, main
from patternscope.methods import find_dominant_pattern


@pytest.fixture(scope="module")
def backbone_pattern(tiny_model, digits):
    return find_dominant_pattern(tiny_model, digits.train_x[:256], eps=0.2, steps=60, progress=False).pattern


@pytest.mark.parametrize("head", ["linear", "last-block"])
def test_backbone_pattern_fools_a_model_trained_for_another_task(head, tiny_model, digits, backbone_pattern):
    # the downstream task: digit mod 5 (5 classes), a new head on the digit backbone
    y, yt = digits.train_y % 5, digits.test_y % 5
    config = DownstreamConfig(head=head, epochs=20 if head == "linear" else 8)
    model = build_downstream(tiny_model, 5, config)
    report = train_downstream(model, digits.train_x, y, test_images=digits.test_x, test_labels=yt, config=config)
    assert report.test_accuracy > 0.8
    # linear: the backbone is frozen; last-block: the last block before the head (here the second conv, its
    # ReLU and pool) is trained, and nothing before it
    same = torch.equal(model.net.features[3].weight, tiny_model.net.features[3].weight)
    assert same == (head == "linear")
    assert torch.equal(model.net.features[0].weight, tiny_model.net.features[0].weight)
    result = measure_downstream(model, backbone_pattern, digits.test_x, yt)
    # measured here (linear head): 0.18 of the predictions changed vs 0.08 for random noise of the budget
    assert result.transferred >= max(2 * result.random_sign, 0.1), result
    assert result.accuracy_transferred < result.accuracy_clean - 0.05


def test_downstream_cli_trains_saves_and_reloads(tmp_path, tiny_weights, digits, capsys):
    from helpers import TINY_SPEC

    from patternscope.core.patterns import Pattern
    from patternscope.data import write_image_tree

    tree = write_image_tree(tmp_path / "parity", digits.test_x, digits.test_y % 2, ("even", "odd"))
    run = tmp_path / "find"
    find = ["find", "dominant", "--out", str(run), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    find += ["--data", str(tree), "--eps", "0.2", "--steps", "60", "--device", "cpu", "--quiet", "--no-report"]
    assert main(find) == EXIT_OK
    common = ["--backbone", TINY_SPEC, "--weights", str(tiny_weights), "--task-data", str(tree)]
    common += ["--pattern", str(run), "--device", "cpu", "--epochs", "20"]
    out = tmp_path / "ds"
    assert main(["downstream", "--out", str(out), *common, "--own-steps", "40", "--json", "--tensorboard"]) == EXIT_OK
    first = json.loads(capsys.readouterr().out)["result"]
    assert first["transferred"] > 2 * first["random_sign"] and first["own"] is not None
    assert (out / "report.html").is_file() and (out / "own" / "pattern.safetensors").is_file()
    reader = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = reader.EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("own/loss")] == list(range(1, 41))  # the own search, step by step
    # a fine-tuned downstream model loaded instead of trained gives the same numbers
    again = tmp_path / "ds2"
    argv = ["downstream", "--out", str(again), *common, "--own-steps", "0", "--quiet"]
    assert main([*argv, "--finetuned", str(out / "downstream_model.safetensors")]) == EXIT_OK
    second = json.loads((again / "downstream.json").read_text())["result"]
    assert second["transferred"] == pytest.approx(first["transferred"]) and second["own"] is None
    # --overwrite starts again: the earlier run's own pattern does not survive a run without one
    assert main(["downstream", "--out", str(out), *common, "--own-steps", "0", "--quiet"]) == EXIT_USER
    assert "--overwrite" in capsys.readouterr().err
    assert main(["downstream", "--out", str(out), *common, "--own-steps", "0", "--overwrite", "--quiet"]) == EXIT_OK
    assert not (out / "own").exists()
    # a pattern for another input size is refused before any training
    Pattern(torch.zeros(3, 8, 8), 0.1).save(tmp_path / "small")
    bad = ["downstream", "--out", str(tmp_path / "bad"), *common, "--quiet"]
    bad[bad.index("--pattern") + 1] = str(tmp_path / "small")
    assert main(bad) == EXIT_USER
    assert "(3, 8, 8)" in capsys.readouterr().err


def test_augmentation_flips_and_shifts_within_the_image(digits):
    from patternscope.analyses.downstream import augment_batch

    x = digits.train_x[:64]
    a = augment_batch(x, torch.Generator().manual_seed(1))
    b = augment_batch(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    changed = (a - x).flatten(1).abs().amax(1) > 0
    assert 0.5 < changed.float().mean() <= 1  # most images are moved or mirrored, not all the same way
    # pixels are moved, not invented: the mean intensity of a crop stays close to the image's
    assert (a.mean((1, 2, 3)) - x.mean((1, 2, 3))).abs().max() < 0.1


def test_the_authors_schedule_trains_and_decays_the_rate(tiny_model, digits):
    from patternscope.analyses.downstream import PAPER_SCHEDULE

    config = DownstreamConfig(**PAPER_SCHEDULE)
    model = build_downstream(tiny_model, 5, config)
    report = train_downstream(
        model,
        digits.train_x,
        digits.train_y % 5,
        test_images=digits.test_x,
        test_labels=digits.test_y % 5,
        config=config,
    )
    assert len(report.history) == 20 and report.test_accuracy > 0.7
    with pytest.raises(Exception, match="gamma"):
        DownstreamConfig(gamma=0)


def test_recipe_paper_keeps_the_options_given(tmp_path):
    from patternscope.runs.downstream import DownstreamOptions, downstream_config

    paper = downstream_config(DownstreamOptions(out=str(tmp_path), recipe="paper"))
    assert (paper.epochs, paper.lr, paper.batch_size, paper.milestones, paper.augment) == (
        20,
        1e-3,
        32,
        (4, 8, 12, 16),
        True,
    )
    assert downstream_config(DownstreamOptions(out=str(tmp_path), recipe="paper", epochs=5)).epochs == 5
    assert downstream_config(DownstreamOptions(out=str(tmp_path))).milestones == ()
