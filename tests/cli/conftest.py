"""Fixtures of the command-line tests of labelled commands: an ImageFolder tree of RGB 32x32 PNGs of the test
digits, and the backdoored and clean SmallCNNs' weights files (the models take 1 x 16 x 16)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import save_weights
from PIL import Image


@pytest.fixture(scope="module")
def rgb_tree(digit_data, tmp_path_factory):
    """Clean test digits as 32x32 RGB PNGs, one folder per class (named by index)."""
    root = tmp_path_factory.mktemp("rgb-tree")
    for i, (img, label) in enumerate(zip(digit_data.test_x, digit_data.test_y, strict=True)):
        grey = Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8), mode="L").resize((32, 32))
        folder = root / str(int(label))
        folder.mkdir(exist_ok=True)
        grey.convert("RGB").save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def weights(backdoored, clean_small, tmp_path_factory):
    folder = tmp_path_factory.mktemp("w")
    return {
        "backdoored": save_weights(backdoored.net, folder / "bd.safetensors"),
        "clean": save_weights(clean_small.net, folder / "clean.safetensors"),
    }
