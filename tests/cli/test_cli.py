"""The `patternscope` command end to end: run folders, evaluation, listing, and clear user errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import TINY_SPEC

from patternscope.cli import EXIT_USER, main
from patternscope.core.patterns import Pattern

RUN_FILES = {
    "config.json",
    "checkpoint.pt",
    "pattern.safetensors",
    "pattern.json",
    "pattern.png",
    "metrics.json",
    "history.json",
    "history.csv",
    "examples.png",
    "loss.png",
}


def _find(out, tiny_weights, digit_folders, *extra):
    return main(
        [
            "find",
            "dominant",
            "--out",
            str(out),
            "--model",
            TINY_SPEC,
            "--weights",
            str(tiny_weights),
            "--data",
            str(digit_folders["train"]),
            "--eval-data",
            str(digit_folders["test"]),
            "--eps",
            "0.2",
            "--steps",
            "40",
            "--batch-size",
            "32",
            "--device",
            "cpu",
            "--quiet",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_weights, digit_folders):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert _find(out, tiny_weights, digit_folders) == 0
    return out


def test_find_writes_a_complete_run_folder(run_dir):
    assert {p.name for p in run_dir.iterdir()} >= RUN_FILES
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    ev = metrics["evaluation"]
    assert ev["n_images"] == 120 and metrics["eval_data"]["images"] == 120
    assert ev["fooling_ratio"] > 3 * max(ev["random_baselines"]["sign"]["fooling_ratio"], 0.03)
    assert ev["accuracy"]["n_labelled"] == 120  # labels from the ImageFolder tree
    # perceptibility and the layer analysis read a seeded, class-stratified sample (here: every image / 64)
    assert ev["perceptibility"]["n_images"] == 120 and ev["perceptibility"]["sample_stratified"] is True
    layers = json.loads((run_dir / "layers.json").read_text())
    assert layers["n_images"] == 64 and layers["sample"] == {"seed": 0, "n": 64, "of": 120, "stratified": True}
    pattern = Pattern.load(run_dir)
    assert pattern.meta["model"] == TINY_SPEC and pattern.meta["steps"] == 40 and pattern.eps == 0.2
    assert pattern.delta.abs().max() <= 0.2 + 1e-6
    config = json.loads((run_dir / "config.json").read_text())
    assert config["options"]["eps"] == "0.2" and config["options"]["steps"] == 40
    # the loss of every step, also as CSV (step 1 first), for spreadsheets and plotting tools
    loss = json.loads((run_dir / "history.json").read_text())["loss"]
    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0] == "step,loss" and len(lines) == len(loss) + 1 == 41
    assert [float(line.split(",")[1]) for line in lines[1:]] == loss


def test_existing_run_needs_resume_or_overwrite(run_dir, tiny_weights, digit_folders, capsys):
    assert _find(run_dir, tiny_weights, digit_folders) == EXIT_USER
    err = capsys.readouterr().err
    assert "--resume" in err and "Traceback" not in err
    # resuming a finished run is a no-op search that rewrites the same pattern
    before = Pattern.load(run_dir).delta
    assert _find(run_dir, tiny_weights, digit_folders, "--resume") == 0
    assert (Pattern.load(run_dir).delta == before).all()


def test_resume_with_different_options_is_refused(run_dir, tiny_weights, digit_folders, capsys):
    code = main(
        [
            "find",
            "dominant",
            "--out",
            str(run_dir),
            "--model",
            TINY_SPEC,
            "--weights",
            str(tiny_weights),
            "--data",
            str(digit_folders["train"]),
            "--eval-data",
            str(digit_folders["test"]),
            "--eps",
            "0.1",
            "--steps",
            "40",
            "--device",
            "cpu",
            "--quiet",
            "--resume",
        ]
    )
    assert code == EXIT_USER
    assert "eps" in capsys.readouterr().err


def test_evaluate_command(run_dir, tiny_weights, digit_folders, tmp_path, capsys):
    code = main(
        [
            "evaluate",
            "--pattern",
            str(run_dir),
            "--weights",
            str(tiny_weights),
            "--data",
            str(digit_folders["test"]),
            "--json",
        ]
    )
    assert code == 0
    ev = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "metrics.json").read_text())["evaluation"]
    assert ev["fooling_ratio"] == pytest.approx(saved["fooling_ratio"])  # model spec taken from the pattern
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--pattern",
                str(run_dir / "pattern.safetensors"),
                "--model",
                TINY_SPEC,
                "--weights",
                str(tiny_weights),
                "--data",
                str(digit_folders["test"]),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert (out / "metrics.json").exists() and (out / "examples.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eps", "10"], "10/255"),
        (["--eps", "0"], "positive"),
        (["--model", "nonexistent_model"], "unknown model spec"),
        (["--weights", "/no/such/file.pth"], "does not exist"),
        (["--data", "/no/such/folder"], "does not exist"),
        (["--layer", "nonexistent_layer"], "no layer"),
        (["--steps", "0"], "steps"),
    ],
)
def test_user_errors_are_one_line_messages_without_partial_files(
    args, message, tmp_path, tiny_weights, digit_folders, capsys
):
    out = tmp_path / "run"
    base = {
        "--model": TINY_SPEC,
        "--weights": str(tiny_weights),
        "--data": str(digit_folders["train"]),
        "--eval-data": str(digit_folders["test"]),
        "--eps": "0.2",
        "--steps": "3",
    }
    for key, value in zip(args[::2], args[1::2], strict=True):
        base[key] = value
    argv = ["find", "dominant", "--out", str(out), "--device", "cpu", "--quiet"]
    for key, value in base.items():
        argv += [key, value]
    assert main(argv) == EXIT_USER
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and err.startswith("patternscope: error:")
    assert not (out / "pattern.safetensors").exists() and not (out / "metrics.json").exists()


def test_recipe_paper_runs_the_papers_recipe_and_dominance_sets_the_class_term(tmp_path, tiny_weights, digit_folders):
    paper, strong = tmp_path / "paper", tmp_path / "strong"
    assert _find(paper, tiny_weights, digit_folders, "--recipe", "paper", "--steps", "3") == 0
    assert _find(strong, tiny_weights, digit_folders, "--dominance", "2", "--steps", "3") == 0
    meta = json.loads((paper / "pattern.json").read_text())
    assert meta["method"] == "dominant-paper" and meta["settings"]["dominance"] == 0
    meta = json.loads((strong / "pattern.json").read_text())
    assert meta["method"] == "dominant" and meta["settings"]["dominance"] == 2
    assert main(["find", "dominant", "--out", str(tmp_path / "bad"), "--dominance", "-1", "--quiet"]) == EXIT_USER


def test_models_listing(capsys):
    assert main(["models"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["models", "--layers", TINY_SPEC, "--json"]) == 0
    assert "fc" in json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_default_bundled_run_as_a_subprocess(tmp_path):
    """The README's main job, shortened to 2 steps: bundled EfficientNet-Lite0, proxy data, held-out photos."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "patternscope", "find", "dominant", "--out", str(out), "--steps", "2", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    headline = json.loads(proc.stdout)
    assert headline["n_images"] == 22 and 0 <= headline["fooling_ratio"] <= 1
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"]["spec"] == "efficientnet_lite0"
    assert metrics["evaluation"]["accuracy"]["clean"]["top1"] >= 0.8
    assert "photos" in metrics["pattern"]["data"] and "jigsaw" in metrics["pattern"]["data"]


def test_help_lists_every_option():
    proc = subprocess.run(
        [sys.executable, "-m", "patternscope", "find", "dominant", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    for option in (
        "--model",
        "--weights",
        "--data",
        "--eval-data",
        "--eps",
        "--steps",
        "--batch-size",
        "--layer",
        "--device",
        "--seed",
        "--resume",
        "--out",
    ):
        assert option in proc.stdout


def test_pattern_for_another_input_size_is_refused(run_dir, capsys):
    code = main(
        [
            "evaluate",
            "--pattern",
            str(run_dir),
            "--model",
            "torchvision:resnet18",
            "--weights",
            "none",
            "--data",
            "photos-eval",
            "--quiet",
        ]
    )
    assert code == EXIT_USER
    err = capsys.readouterr().err
    assert "(1, 16, 16)" in err and "(3, 224, 224)" in err and "Traceback" not in err


def test_bad_model_kwargs_and_crop_scale(tmp_path, tiny_weights, digit_folders, capsys):
    argv = [
        "find",
        "dominant",
        "--out",
        str(tmp_path / "r"),
        "--model",
        TINY_SPEC,
        "--weights",
        str(tiny_weights),
        "--data",
        str(digit_folders["train"]),
        "--steps",
        "1",
        "--quiet",
    ]
    assert main([*argv, "--model-kwargs", "{classes: 10"]) == EXIT_USER
    assert "not valid JSON" in capsys.readouterr().err
    assert main([*argv, "--crop-scale", "0.5"]) == EXIT_USER
    assert "MIN,MAX" in capsys.readouterr().err
