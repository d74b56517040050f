"""Hardening (universal adversarial training) on the tiny digits CNN: fresh patterns fool far less
afterwards while clean accuracy stays within the bound; exact resume; the `harden` command and its report."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY_SPEC

from patternscope import evaluate_pattern, find_pattern, load_model, tensor_set
from patternscope.analyses.hardening import HardenConfig, harden_model
from patternscope.cli import EXIT_OK, EXIT_USER, main
from patternscope.core.search import SearchInterrupted
from patternscope.data import write_image_tree
from patternscope.errors import HardeningError, PatternError

EPS = 0.2  # the digits budget used throughout the tests (see test_dominant.py)


def _strongest(model, method, digits, seeds=(0, 1)):
    """The highest held-out fooling ratio of ``method`` over a few search seeds (a search is local)."""
    ratios = []
    for seed in seeds:
        found = find_pattern(
            model, [tensor_set(digits.train_x)], method=method, eps=EPS, steps=100, seed=seed, progress=False
        )
        ratios.append(
            evaluate_pattern(model, found.pattern, digits.test_x, labels=digits.test_y, baselines=()).fooling_ratio
        )
    return max(ratios)


@pytest.fixture(scope="module")
def hardened(tiny_model, digits):
    config = HardenConfig(eps=EPS, epochs=20, max_accuracy_drop=0.02)
    x, y = digits.train_x, digits.train_y
    return harden_model(
        tiny_model, x, y, held_images=digits.test_x, held_labels=digits.test_y, config=config, progress=False
    )


def test_fresh_patterns_fool_far_less_and_accuracy_stays_within_the_bound(hardened, tiny_model, digits):
    assert hardened.accuracy_after >= hardened.accuracy_before - 0.02
    with torch.no_grad():  # the kept weights are what the result says: measured again from scratch
        acc = (hardened.model(digits.test_x).argmax(1) == digits.test_y).float().mean().item()
    assert acc == pytest.approx(hardened.accuracy_after, abs=1e-6)
    for method in ("dominant", "sgd-uap"):
        before, after = _strongest(tiny_model, method, digits), _strongest(hardened.model, method, digits)
        assert before > 0.5, f"{method}: the original model should be easy to fool ({before:.3f})"
        assert after < 0.6 * before, f"{method}: fooling ratio {before:.3f} -> {after:.3f}"


def test_the_original_model_is_left_unchanged(hardened, tiny_model, tiny_net):
    for (name, a), b in zip(tiny_model.net.state_dict().items(), tiny_net.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in hardened.model.parameters())
    changed = [not torch.equal(a, b) for a, b in zip(hardened.model.parameters(), tiny_model.parameters(), strict=True)]
    assert any(changed)
    assert hardened.chosen_epoch == max(h.epoch for h in hardened.history if h.within_bound)


def test_an_impossible_bound_is_a_clear_error(tiny_model, digits):
    config = HardenConfig(eps=EPS, epochs=1, lr=1.0, max_accuracy_drop=0.0)
    with pytest.raises(HardeningError, match="no epoch kept held-out clean accuracy within"):
        harden_model(
            tiny_model,
            digits.train_x,
            digits.train_y,
            held_images=digits.test_x,
            held_labels=digits.test_y,
            config=config,
            progress=False,
        )


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"clean_weight": 1.0}, "clean-weight"),
        ({"pool": 0}, "pool must be >= 1"),
        ({"objective": "kl"}, "objective must be one of"),
        ({"eps": 2.0}, "larger than the whole"),
        ({"max_accuracy_drop": -0.1}, "max-accuracy-drop"),
    ],
)
def test_bad_settings_are_refused(overrides, words):
    with pytest.raises(PatternError, match=words):
        HardenConfig(**overrides)


def test_interrupted_hardening_resumes_to_the_same_weights(tiny_model, digits, tmp_path):
    x, y = digits.train_x[:320], digits.train_y[:320]
    config = HardenConfig(eps=EPS, epochs=3, batch_size=32, max_accuracy_drop=1.0)
    whole = harden_model(
        tiny_model, x, y, held_images=digits.test_x, held_labels=digits.test_y, config=config, progress=False
    )

    calls = {"n": 0}

    def interrupt(_module, _inputs, _output):  # Ctrl-C in the middle of the second epoch's pattern step
        calls["n"] += 1
        if calls["n"] == 70:
            raise KeyboardInterrupt

    handle = tiny_model.net.register_forward_hook(interrupt)
    ckpt = tmp_path / "harden.pt"
    try:
        with pytest.raises(SearchInterrupted):
            harden_model(
                tiny_model,
                x,
                y,
                held_images=digits.test_x,
                held_labels=digits.test_y,
                config=config,
                checkpoint=ckpt,
                checkpoint_every=4,
                progress=False,
            )
    finally:
        handle.remove()
    assert ckpt.is_file()
    resumed = harden_model(
        tiny_model,
        x,
        y,
        held_images=digits.test_x,
        held_labels=digits.test_y,
        config=config,
        checkpoint=ckpt,
        resume=True,
        progress=False,
    )
    assert resumed.resumed_from is not None
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(whole.patterns, resumed.patterns)
    assert [h.loss for h in whole.history] == pytest.approx([h.loss for h in resumed.history], rel=1e-6)
    with pytest.raises(HardeningError, match="other settings"):
        harden_model(
            tiny_model,
            x,
            y,
            held_images=digits.test_x,
            held_labels=digits.test_y,
            config=HardenConfig(eps=0.1, epochs=3),
            checkpoint=ckpt,
            resume=True,
            progress=False,
        )


# ---------------------------------------------------------------------------------------------------
# the command


@pytest.fixture(scope="module")
def harden_dir(tmp_path_factory, tiny_weights, digits):
    root = tmp_path_factory.mktemp("harden")
    tree = write_image_tree(root / "tree", digits.test_x, digits.test_y)
    out = root / "run"
    argv = [
        "harden", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights), "--data", str(tree),
        "--eps", str(EPS), "--epochs", "12", "--batch-size", "32", "--methods", "dominant,sgd-uap",
        "--budget", "1600", "--restarts", "1", "--classwise-steps", "40", "--device", "cpu", "--quiet",
    ]  # fmt: skip
    assert main(argv) == EXIT_OK
    return out, argv, tree


@pytest.mark.slow
def test_harden_command_writes_weights_results_and_report(harden_dir, digits):
    out, _argv, tree = harden_dir
    data = json.loads((out / "harden.json").read_text())
    h = data["hardening"]
    assert h["accuracy_after"] >= h["accuracy_bound"] == pytest.approx(h["accuracy_before"] - 0.02)
    rows = {r["method"]: r for r in data["methods"]}
    assert set(rows) == {"dominant", "sgd-uap"}
    assert rows["sgd-uap"]["after"] < rows["sgd-uap"]["before"]
    assert all(r["original_pattern_on_hardened"] is not None and r["error"] is None for r in rows.values())
    assert len(data["classwise"]["classes"]) == 10
    for name in ("harden.png", "training.png", "classwise_gallery.png", "hardened.safetensors", "report.html"):
        assert (out / name).is_file(), name
    assert not (out / "harden_checkpoint.pt").exists()
    # the saved weights load with --weights and give the accuracy the run reports on its held-out split
    from patternscope.data import open_labelled, stratified_split, take

    model = load_model(TINY_SPEC, str(out / "hardened.safetensors"))
    labelled = open_labelled(str(tree), model.input_size)
    _, held = stratified_split(labelled.labels, 0.3, 0)
    with torch.no_grad():
        acc = (model(take(labelled.images, held)).argmax(1) == labelled.labels[held]).float().mean().item()
    assert acc == pytest.approx(h["accuracy_after"], abs=1e-6)
    html = (out / "report.html").read_text()
    for anchor in ("summary", "methods", "patterns", "training", "classwise", "runs", "settings"):
        assert f'id="{anchor}"' in html, anchor
    assert (out / "before" / "seed_0" / "report.html").is_file() and "before/seed_0/report.html" in html


@pytest.mark.slow
def test_harden_command_resumes_a_finished_run_and_guards_it(harden_dir, capsys):
    out, argv, _tree = harden_dir
    before = (out / "harden.json").read_text()
    weights = (out / "hardened.safetensors").read_bytes()
    assert main([*argv, "--resume", "--no-report"]) == EXIT_OK
    assert json.loads((out / "harden.json").read_text())["methods"] == json.loads(before)["methods"]
    assert (out / "hardened.safetensors").read_bytes() == weights
    capsys.readouterr()
    assert main(argv) == EXIT_USER
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.slow
def test_harden_report_renders_in_headless_chromium(harden_dir):
    from helpers import headless_browser as _browser

    out = harden_dir[0]
    browser = _browser()
    try:
        browser.get((out / "report.html").as_uri())
        page = browser.execute_script(
            "return {images: Array.from(document.images).map(i => [i.complete, i.naturalWidth]),"
            " tables: document.querySelectorAll('table').length, scripts: document.scripts.length}"
        )
        assert len(page["images"]) >= 4 and all(done and width > 0 for done, width in page["images"])
        assert page["tables"] >= 3 and page["scripts"] == 0
        assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        browser.quit()


@pytest.mark.slow
def test_harden_config_file_says_what_it_means(harden_dir):
    from patternscope.cli import build_parser
    from patternscope.cli.config_files import config_argv, resolved_options
    from patternscope.cli.parser import command_parsers

    text = (harden_dir[0] / "config.toml").read_text()
    assert 'command = "harden"' in text and "no-classwise = false" in text and 'objective = "mixed"' in text
    parser = build_parser()
    sub = command_parsers(parser)["harden"]
    for extra, given in (([], False), (["--no-classwise"], True)):  # an off-flag is written as "given"
        args = parser.parse_args(["harden", "--out", "o", "--data", "d", *extra])
        values = resolved_options(sub, args)
        assert values["no-classwise"] is given
        again = parser.parse_args(["harden", *config_argv(sub, values, [], "f")])
        assert again.classwise is args.classwise
