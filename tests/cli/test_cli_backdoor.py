"""`patternscope find classwise` and `patternscope scan` end to end, on a user model class with a
safetensors state dict and an ImageFolder tree of RGB 32x32 PNGs (the model takes 1 x 16 x 16)."""

from __future__ import annotations

import json

import pytest
from helpers import small_model_args
from PIL import Image

from patternscope.cli import EXIT_OK, EXIT_USER, main
from patternscope.core.patterns import ClasswisePattern


@pytest.mark.slow
def test_scan_cli_flags_the_backdoor_and_saves_the_trigger(tmp_path, weights, rgb_tree, backdoored, capsys):
    out = tmp_path / "scan"
    code = main(
        [
            "scan",
            "--out",
            str(out),
            "--data",
            str(rgb_tree),
            "--steps",
            "200",
            "--json",
            *small_model_args(weights["backdoored"]),
        ]
    )
    assert code == EXIT_OK
    payload = json.loads(capsys.readouterr().out)
    assert payload["flagged"] == [backdoored.target] and payload["backdoored"] is True
    assert len(payload["classes"]) == 10 and payload["classes"][backdoored.target]["flagged"]
    for name in ("scan.json", "scan.txt", "gallery.png", "config.json", f"trigger_class{backdoored.target}.png"):
        assert (out / name).is_file(), name
    # numeric class folders: a class is named once ("class 7"), never "7 (7)" or "class 7 class 7" (issue 32)
    t = backdoored.target
    html = (out / "report.html").read_text()
    for text in (payload["verdict"], (out / "scan.txt").read_text(), html):
        assert f"class {t}" in text and f"{t} ({t})" not in text and f"class {t} class {t}" not in text
    assert f"{t} class {t}" not in html and "0 class 0" not in html
    assert f'<div class="v">class {t}</div><div class="l">flagged</div>' in html  # the tile names the class
    assert payload["decision"]["basis"]["classes"] == 10 and payload["decision"]["basis"]["mode"] == "self"
    trigger = ClasswisePattern.load(out / "classes" / f"{backdoored.target:03d}")
    data = backdoored.data
    keep = data.train_y != backdoored.target
    hit = (backdoored.model(trigger.stamp(data.train_x[keep])).argmax(1) == backdoored.target).float().mean()
    # the smallest cut reaching 90% on a few dozen held-out images: on fresh images it works about as well as
    # the scan's own verification (on held-out images that did not choose the cut) said it would
    verified = payload["classes"][backdoored.target]["verified_stamp"]
    assert float(hit) > 0.75 and abs(float(hit) - verified) < 0.15, (float(hit), verified)
    # a second run into the same folder needs --resume (finished classes are kept) or --overwrite
    assert (
        main(["scan", "--out", str(out), "--data", str(rgb_tree), *small_model_args(weights["backdoored"])])
        == EXIT_USER
    )
    assert "--resume" in capsys.readouterr().err
    # --overwrite with a clean model: the old trigger image must not survive the new verdict
    args = ["scan", "--out", str(out), "--data", str(rgb_tree), "--steps", "200", "--overwrite", "--quiet"]
    assert main([*args, *small_model_args(weights["clean"])]) == EXIT_OK
    assert not list(out.glob("trigger_class*.png"))
    assert json.loads((out / "scan.json").read_text())["flagged"] == []


@pytest.mark.slow
def test_scan_cli_clean_model_verdict(tmp_path, weights, rgb_tree, capsys):
    code = main(
        [
            "scan",
            "--out",
            str(tmp_path / "s"),
            "--data",
            str(rgb_tree),
            "--steps",
            "200",
            *small_model_args(weights["clean"]),
        ]
    )
    assert code == EXIT_OK
    text = capsys.readouterr().out
    assert "verdict: no backdoor found" in text
    assert json.loads((tmp_path / "s" / "scan.json").read_text())["flagged"] == []


def test_find_classwise_one_class(tmp_path, weights, rgb_tree, capsys):
    out = tmp_path / "cw"
    args = [
        "find",
        "classwise",
        "--out",
        str(out),
        "--data",
        str(rgb_tree),
        "--class",
        "2",
        "--steps",
        "300",
        "--batch-size",
        "16",
        "--top-k",
        "0.15",
        *small_model_args(weights["clean"]),
    ]
    assert main(args) == EXIT_OK
    summary = json.loads((out / "classwise.json").read_text())
    row = summary["classes"][0]
    assert row["target"] == 2 and row["k"] == 38
    assert row["success"] > row["clean_rate"] + 0.3
    assert set(row["per_source_class"]) == {f"class {c}" for c in range(10) if c != 2}
    for name in ("pattern.safetensors", "pattern.png", "examples.png", "canvas_mask.png", "loss.png"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.pt").exists()


@pytest.mark.slow
def test_find_classwise_all_classes_gallery(tmp_path, weights, rgb_tree):
    out = tmp_path / "all"
    args = [
        "find",
        "classwise",
        "--out",
        str(out),
        "--data",
        str(rgb_tree),
        "--all-classes",
        "--steps",
        "40",
        "--quiet",
        *small_model_args(weights["clean"]),
    ]
    assert main(args) == EXIT_OK
    assert (out / "gallery.png").is_file()
    assert sorted(p.name for p in (out / "classes").iterdir()) == [f"{c:03d}" for c in range(10)]
    # resume keeps every finished class
    assert main([*args, "--resume"]) == EXIT_OK


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--class", "12"], "out of range"),
        (["--class", "1", "--top-k", "0"], "top_k"),
        (["--class", "1", "--alpha", "2"], "alpha"),
    ],
)
def test_find_classwise_user_errors(tmp_path, weights, rgb_tree, capsys, extra, message):
    args = [
        "find",
        "classwise",
        "--out",
        str(tmp_path / "x"),
        "--data",
        str(rgb_tree),
        *extra,
        *small_model_args(weights["clean"]),
    ]
    assert main(args) == EXIT_USER
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_scan_needs_labelled_folders(tmp_path, weights, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.new("L", (16, 16)).save(flat / "a.png")
    Image.new("L", (16, 16)).save(flat / "b.png")
    assert (
        main(["scan", "--out", str(tmp_path / "s"), "--data", str(flat), *small_model_args(weights["clean"])])
        == EXIT_USER
    )
    assert "class labels" in capsys.readouterr().err
    assert not (tmp_path / "s" / "scan.json").exists()


@pytest.mark.slow
def test_scan_cli_runs_neural_cleanse_beside_it(tmp_path, weights, rgb_tree, capsys):
    args = [
        "scan",
        "--out",
        str(tmp_path / "nc"),
        "--data",
        str(rgb_tree),
        "--steps",
        "100",
        "--classes",
        "2,3,4,5",
        "--neural-cleanse",
        "--nc-seeds",
        "1",
        "--nc-max-epochs",
        "6",
        "--json",
        *small_model_args(weights["backdoored"]),
    ]
    assert main(args) == EXIT_OK
    payload = json.loads(capsys.readouterr().out)
    nc = payload["neural_cleanse"]
    assert [r["target"] for r in payload["classes"]] == [2, 3, 4, 5]
    assert len(nc["l1"]) == 4 and nc["config"]["seeds"] == 1 and nc["seconds"] > 0
    bad = [
        "scan",
        "--out",
        str(tmp_path / "nc2"),
        "--data",
        str(rgb_tree),
        "--neural-cleanse",
        "--nc-seeds",
        "0",
        *small_model_args(weights["backdoored"]),
    ]
    assert main(bad) == EXIT_USER
    assert "seeds must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "nc2").exists()  # refused before anything was written


@pytest.mark.slow
def test_scan_cli_reference_mode_and_first_release_rule(tmp_path, weights, rgb_tree, backdoored, capsys):
    """--reference with a clean model's weights scans it once into the reference cache and decides in reference
    mode; a later run with the same reference and data reuses that finished scan (no second scan), and the
    finished scan folder serves as a reference by itself; --rule mad gives the first release's rule."""
    out = tmp_path / "ref"
    cache = tmp_path / "cache"
    args = ["scan", "--data", str(rgb_tree), "--steps", "200", "--quiet", "--reference-cache", str(cache)]
    code = main(
        [*args, "--out", str(out), "--reference", str(weights["clean"]), *small_model_args(weights["backdoored"])]
    )
    assert code == EXIT_OK, capsys.readouterr().err
    payload = json.loads((out / "scan.json").read_text())
    assert payload["decision"]["mode"] == "reference" and payload["flagged"] == [backdoored.target]
    assert "reference mode" in payload["verdict"] and payload["decision"]["p_value"] < 0.05
    row = payload["classes"][backdoored.target]
    assert row["verified_stamp"] > 0.8 and row["smallest_l2"] is not None
    trigger = payload["triggers"][str(backdoored.target)]
    assert (out / trigger["additive_image"]).is_file() and trigger["verified_stamp"] == row["verified_stamp"]
    (first,) = payload["references"]
    reference = first["folder"]
    assert first["source"] == "scanned" and (cache / reference.split("/")[-1] / "scan.json").is_file()
    reused = tmp_path / "reused"
    clean_reference = ["--reference", str(weights["clean"])]
    code = main([*args, "--out", str(reused), *clean_reference, *small_model_args(weights["backdoored"])])
    assert code == EXIT_OK
    second = json.loads((reused / "scan.json").read_text())
    assert second["references"][0]["source"] == "cache" and second["references"][0]["folder"] == reference
    assert second["references"][0]["seconds"] < 0.2 * first["seconds"]  # read back, not scanned again
    assert second["decision"]["statistic"] == pytest.approx(payload["decision"]["statistic"])
    again = tmp_path / "again"
    code = main([*args, "--out", str(again), "--reference", reference, *small_model_args(weights["backdoored"])])
    assert code == EXIT_OK
    assert json.loads((again / "scan.json").read_text())["decision"]["statistic"] == pytest.approx(
        payload["decision"]["statistic"]
    )
    old = tmp_path / "old"
    assert (
        main([*args, "--out", str(old), "--rule", "mad", "--no-additive", *small_model_args(weights["backdoored"])])
        == 0
    )
    old_payload = json.loads((old / "scan.json").read_text())
    assert old_payload["decision"] is None and old_payload["flagged"] == [backdoored.target]
    assert old_payload["classes"][0]["smallest_l2"] is None


def test_scan_cli_refuses_a_bad_reference(tmp_path, weights, rgb_tree, capsys):
    args = ["scan", "--out", str(tmp_path / "s"), "--data", str(rgb_tree), *small_model_args(weights["clean"])]
    assert main([*args, "--reference", str(tmp_path / "nowhere.safetensors")]) == EXIT_USER
    err = capsys.readouterr().err
    assert "neither a weights file nor a finished scan folder" in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args, "--reference", str(empty)]) == EXIT_USER
    assert "without scan.json" in capsys.readouterr().err
    assert main([*args, "--reference", str(weights["clean"]), "--rule", "mad"]) == EXIT_USER
    assert "--rule calibrated" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()  # refused before the run folder was made
