"""Bad input, table-driven: every user mistake ends with one line naming the problem and the fix, exit
code 2, no traceback, and no file left in the output folder. Odd but valid input is converted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import TINY_SPEC
from PIL import Image

from patternscope.cli import EXIT_OK, EXIT_USER, main
from patternscope.core.patterns import Pattern

NETS = """
import torch
from torch import nn

class NoSize(nn.Module):  # takes 1 x 16 x 16 but does not say so
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(256, 10)
    def forward(self, x):
        return self.fc(x.flatten(1))

class NaNNet(nn.Module):  # every output is NaN
    input_size = (1, 16, 16)
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(256, 10)
    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory, tiny_net, digit_folders, run_dir_other_size, odd_patterns):
    """Every kind of bad file, made once."""
    root = tmp_path_factory.mktemp("bad-input")
    (root / "nets.py").write_text(NETS)
    (root / "corrupt.safetensors").write_bytes(bytes(range(256)) * 8)
    from safetensors.torch import save_file

    from patternscope.kit import SmallCNN

    save_file({k: v.contiguous() for k, v in SmallCNN(size=16).state_dict().items()}, str(root / "other.safetensors"))
    torch.save(tiny_net, root / "full_model.pth")
    (root / "empty").mkdir()
    garbage = root / "garbage"
    garbage.mkdir()
    for i in range(3):
        (garbage / f"img{i}.png").write_bytes(b"not an image at all")
    (root / "a_file").write_text("x")
    (root / "bad.toml").write_text('command = "find dominant"\nbatch-sise = 8\n')
    return {
        "root": root,
        "nets": root / "nets.py",
        "corrupt": root / "corrupt.safetensors",
        "other": root / "other.safetensors",
        "pickled": root / "full_model.pth",
        "empty": root / "empty",
        "garbage": garbage,
        "a_file": root / "a_file",
        "bad_toml": root / "bad.toml",
        "small_pattern": run_dir_other_size,
        **odd_patterns,
    }


@pytest.fixture(scope="module")
def run_dir_other_size(tmp_path_factory):
    """A saved pattern for 1 x 8 x 8 inputs (the test model takes 1 x 16 x 16)."""
    folder = tmp_path_factory.mktemp("small-pattern")
    Pattern(torch.zeros(1, 8, 8), 0.1).save(folder)
    return folder


@pytest.fixture(scope="module")
def odd_patterns(tmp_path_factory):
    """Patterns for the 1 x 16 x 16 test model that are not what they claim: values scaled 5x (50/255) with
    metadata that still says 10/255, and one value changed after saving (the checksum no longer fits)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("odd-patterns")
    signs = torch.randint(0, 2, (1, 16, 16), generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    Pattern(signs * 50 / 255, 10 / 255, meta={"method": "dominant"}).save(root / "scaled")
    Pattern(signs * 10 / 255, 10 / 255, meta={"method": "dominant"}).save(root / "tampered")
    path = root / "tampered" / "pattern.safetensors"
    with safe_open(str(path), framework="pt") as fh:
        delta, meta = fh.get_tensor("delta"), fh.metadata()
    delta[0, 5, 5] = -delta[0, 5, 5]
    save_file({"delta": delta}, str(path), metadata=meta)
    return {"scaled_pattern": root / "scaled", "tampered_pattern": path}


def _evaluate(out, f, w, d, pattern):
    head = ["evaluate", "--pattern", str(f[pattern]), "--model", TINY_SPEC, "--weights", str(w)]
    return [*head, "--data", str(d["test"]), "--out", str(out), "--quiet"]


def _find(out, f, w, d, **over):
    base = {
        "--model": TINY_SPEC,
        "--weights": str(w),
        "--data": str(d["train"]),
        "--eval-data": str(d["test"]),
        "--eps": "0.2",
        "--steps": "3",
    }
    base.update({k: str(v) for k, v in over.items()})
    argv = ["find", "dominant", "--out", str(out), "--device", "cpu", "--quiet"]
    for key, value in base.items():
        argv += [key, value]
    return argv


def _classwise(out, f, w, d, *extra):
    head = ["find", "classwise", "--out", str(out), "--model", TINY_SPEC, "--weights", str(w)]
    return [*head, "--data", str(d["test"]), "--device", "cpu", "--quiet", *extra]


def _harden(out, f, w, d, *extra):
    head = ["harden", "--out", str(out), "--model", TINY_SPEC, "--weights", str(w), "--methods", ""]
    return [*head, "--data", str(d["test"]), "--device", "cpu", "--quiet", *extra]


# (kind, argv builder, words the message must contain)
CASES = [
    ("unknown model spec", lambda o, f, w, d: _find(o, f, w, d, **{"--model": "no_such_net"}), "unknown model spec"),
    ("weights file missing", lambda o, f, w, d: _find(o, f, w, d, **{"--weights": "/no/w.pth"}), "does not exist"),
    ("weights file corrupt", lambda o, f, w, d: _find(o, f, w, d, **{"--weights": f["corrupt"]}), "safetensors"),
    (
        "weights of another architecture",
        lambda o, f, w, d: _find(o, f, w, d, **{"--weights": f["other"]}),
        "do not fit this architecture",
    ),
    ("pickled full model", lambda o, f, w, d: _find(o, f, w, d, **{"--weights": f["pickled"]}), "--trust-pickle"),
    ("empty image folder", lambda o, f, w, d: _find(o, f, w, d, **{"--data": f["empty"]}), "no images found"),
    ("only corrupt images", lambda o, f, w, d: _find(o, f, w, d, **{"--data": f["garbage"]}), "can be read"),
    ("data path missing", lambda o, f, w, d: _find(o, f, w, d, **{"--data": "/no/such/dir"}), "does not exist"),
    (
        "wrong input size",
        lambda o, f, w, d: _find(o, f, w, d, **{"--model": f"{f['nets']}:NoSize", "--weights": "none"}),
        "--input-size",
    ),
    ("malformed --input-size", lambda o, f, w, d: _find(o, f, w, d, **{"--input-size": "3,224"}), "C,H,W"),
    ("eps zero", lambda o, f, w, d: _find(o, f, w, d, **{"--eps": "0"}), "positive"),
    ("eps above 1", lambda o, f, w, d: _find(o, f, w, d, **{"--eps": "1.5"}), "0-255 units"),
    ("eps in 0-255 units", lambda o, f, w, d: _find(o, f, w, d, **{"--eps": "10"}), "10/255"),
    (
        "NaN model outputs",
        lambda o, f, w, d: _find(o, f, w, d, **{"--model": f"{f['nets']}:NaNNet", "--weights": "none"}),
        "non-finite loss",
    ),
    ("class index out of range", lambda o, f, w, d: _classwise(o, f, w, d, "--class", "12"), "out of range"),
    (
        "batch larger than the data",
        lambda o, f, w, d: _classwise(o, f, w, d, "--class", "1", "--batch-size", "100000"),
        "larger than the",
    ),
    (
        "pattern for another input size",
        lambda o, f, w, d: [
            *["evaluate", "--pattern", str(f["small_pattern"]), "--model", TINY_SPEC, "--weights", str(w)],
            *["--data", str(d["test"]), "--out", str(o), "--quiet"],
        ],
        "(1, 8, 8)",
    ),
    ("bad --model-kwargs", lambda o, f, w, d: _find(o, f, w, d, **{"--model-kwargs": "{size: 16"}), "JSON"),
    ("unknown layer", lambda o, f, w, d: _find(o, f, w, d, **{"--layer": "nope"}), "no layer"),
    ("output path is a file", lambda o, f, w, d: _find(f["a_file"], f, w, d), "is a file"),
    ("unwritable output folder", lambda o, f, w, d: _find("/proc/patternscope-run", f, w, d), "cannot write"),
    ("hardening weight out of range", lambda o, f, w, d: _harden(o, f, w, d, "--clean-weight", "1.5"), "clean-weight"),
    (
        "hardening batch larger than the data",
        lambda o, f, w, d: _harden(o, f, w, d, "--batch-size", "100000"),
        "larger than the",
    ),
    (
        "negative image cache",
        lambda o, f, w, d: _classwise(o, f, w, d, "--class", "1", "--cache-mb", "-1"),
        "--cache-mb",
    ),
    ("pattern over its declared budget", lambda o, f, w, d: _evaluate(o, f, w, d, "scaled_pattern"), "50.0/255"),
    (
        "pattern changed after it was saved",
        lambda o, f, w, d: _evaluate(o, f, w, d, "tampered_pattern"),
        "changed after it was saved",
    ),
    (
        "config with a misspelt option",
        lambda o, f, w, d: ["--config", str(f["bad_toml"]), "--out", str(o)],
        "batch-size",
    ),
]


@pytest.mark.parametrize(("kind", "build", "words"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_and_leaves_nothing(
    kind, build, words, files, tiny_weights, digit_folders, tmp_path, capsys
):
    out = tmp_path / "run"
    assert main(build(out, files, tiny_weights, digit_folders)) == EXIT_USER, kind
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("patternscope: error: "), captured.err
    assert words in lines[0] and "Traceback" not in captured.err
    assert not (out.exists() and any(p.is_file() for p in out.rglob("*"))), sorted(out.rglob("*"))


def test_at_least_fifteen_kinds():
    assert len(CASES) >= 15


def test_a_labelled_file_that_fails_to_decode_mid_run_is_named(tmp_path, tiny_weights, digit_folders, capsys):
    import shutil

    tree = shutil.copytree(digit_folders["test"], tmp_path / "tree")
    broken = sorted(tree.rglob("*.png"))[-1]
    broken.write_bytes(broken.read_bytes()[:60])  # its header opens, its pixels do not: found when it is read
    argv = _classwise(tmp_path / "run", None, tiny_weights, {"test": tree}, "--class", "1", "--steps", "2")
    assert main(argv) == EXIT_USER
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and broken.name in lines[0] and "Traceback" not in err, err


def test_resume_with_another_model_is_refused(tmp_path, tiny_weights, digit_folders, files, capsys):
    out = tmp_path / "run"
    assert main(_find(out, files, tiny_weights, digit_folders)) == EXIT_OK
    again = _find(out, files, tiny_weights, digit_folders, **{"--model": f"{files['nets']}:NoSize"})
    assert main([*again, "--input-size", "1,16,16", "--weights", "none", "--resume"]) == EXIT_USER
    err = capsys.readouterr().err
    assert "other options" in err and "model" in err and "Traceback" not in err
    assert Pattern.load(out).meta["model"] == TINY_SPEC  # the finished run is untouched


def test_grey_rgba_and_16_bit_images_are_converted_and_unreadable_ones_skipped(
    tmp_path, tiny_weights, digit_folders, files
):
    folder = tmp_path / "mixed"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 24), dtype=np.uint8), mode="L").save(folder / "grey.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 4), dtype=np.uint8), mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 65535, (40, 32), dtype=np.uint16)).save(folder / "deep.png")
    (folder / "broken.png").write_bytes(b"truncated")
    out = tmp_path / "run"
    argv = [a for a in _find(out, files, tiny_weights, digit_folders, **{"--data": folder}) if a != "--quiet"]
    with pytest.warns(UserWarning, match=r"skipped unreadable image file .broken\.png"):
        assert main([*argv, "--no-report"]) == EXIT_OK
    assert json.loads((out / "metrics.json").read_text())["evaluation"]["n_images"] > 0


def test_disk_full_is_reported_before_the_search(tmp_path, tiny_weights, digit_folders, files, monkeypatch, capsys):
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=10 * 2**20))
    out = tmp_path / "run"
    assert main(_find(out, files, tiny_weights, digit_folders)) == EXIT_USER
    assert "MiB free" in capsys.readouterr().err
    assert not any(p.is_file() for p in out.rglob("*"))
