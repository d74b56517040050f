"""``find dominant --keep best`` saves the best window's pattern (it crashed: the best δ and δ shared memory,
which safetensors refuses)."""

from __future__ import annotations

import torch
from helpers import TINY_SPEC
from safetensors.torch import load_file

from patternscope.cli import main


def test_keep_best_saves_the_best_windows_pattern(tmp_path, tiny_weights, digit_folders):
    out = tmp_path / "best"
    argv = ["find", "dominant", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    argv += ["--data", str(digit_folders["train"]), "--eval-data", str(digit_folders["test"]), "--eps", "0.2"]
    assert main([*argv, "--steps", "12", "--keep", "best", "--device", "cpu", "--quiet"]) == 0
    tensors = load_file(out / "pattern.safetensors")
    assert torch.equal(tensors["delta"], tensors["delta_best"])
    assert float(tensors["delta"].abs().max()) <= 0.2 + 1e-6
