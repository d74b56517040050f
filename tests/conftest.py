"""Shared fixtures: real small data (scikit-learn's 8x8 digits, upsampled) and a tiny CNN trained on it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from helpers import TINY_SPEC
from tiny_models import TinyCNN

from patternscope.core.classifier import Classifier


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Caches the library keeps across runs (finished reference scans) go to a temporary folder, never the
    user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PATTERNSCOPE_CACHE", str(tmp_path_factory.mktemp("patternscope-cache")))
    yield
    mp.undo()


@dataclass
class Digits:
    train_x: torch.Tensor  # N x 1 x 16 x 16 in [0,1]
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


@pytest.fixture(scope="session")
def digits() -> Digits:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return Digits(x[:1400], y[:1400], x[1400:], y[1400:])


@contextmanager
def one_thread() -> Iterator[None]:
    """Train fixtures on one thread: multi-threaded reductions change the last bits of the weights with
    the number of cores, and a test's margin should not depend on the machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_net(digits: Digits) -> TinyCNN:
    with one_thread():
        return _train_tiny(digits)


def _train_tiny(digits: Digits) -> TinyCNN:
    torch.manual_seed(0)
    net = TinyCNN()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _epoch in range(6):
        perm = torch.randperm(len(digits.train_y))
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(net((digits.train_x[idx] - 0.5) / 0.5), digits.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    return net


@pytest.fixture(scope="session")
def tiny_model(tiny_net: TinyCNN, digits: Digits) -> Classifier:
    model = Classifier(tiny_net, mean=(0.5,), std=(0.5,), input_size=(1, 16, 16), spec=TINY_SPEC)
    with torch.no_grad():
        acc = (model(digits.test_x).argmax(1) == digits.test_y).float().mean().item()
    assert acc > 0.9, f"tiny model trained badly: test accuracy {acc:.3f}"
    return model


@pytest.fixture(scope="session")
def tiny_weights(tiny_net: TinyCNN, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_net.state_dict().items()}, str(path))
    return path


def save_digit_images(folder: Path, images: torch.Tensor, labels: torch.Tensor | None, tree: bool) -> Path:
    """Write digits as 8-bit PNGs: flat, or one sub-folder per class."""
    for i, img in enumerate(images):
        array = (img[0].numpy() * 255).round().astype(np.uint8)
        target = folder / str(int(labels[i])) if tree and labels is not None else folder
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array, mode="L").save(target / f"img_{i:04d}.png")
    return folder


@pytest.fixture(scope="session")
def digit_folders(digits: Digits, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("digits")
    train = save_digit_images(root / "train", digits.train_x[:256], None, tree=False)
    test = save_digit_images(root / "test", digits.test_x[:120], digits.test_y[:120], tree=True)
    return {"train": train, "test": test}


# ---------------------------------------------------------------------------------------------------
# Backdoor experiments: SmallCNNs trained the same way on digits, clean and with a BadNets trigger

BACKDOOR_TARGET = 3
BLEND_TARGET = 6


@dataclass
class BackdoorCase:
    model: Classifier
    net: torch.nn.Module
    trigger: object
    target: int | None
    data: object  # patternscope.datasets.LabelledData


def _train_small(data: object, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.nn.Module:
    from patternscope.kit import SmallCNN, TrainConfig, train_classifier

    torch.manual_seed(seed)
    with one_thread():
        return train_classifier(SmallCNN(size=16), x, y, TrainConfig(epochs=12, batch_size=32, lr=3e-3, seed=seed))


@pytest.fixture(scope="session")
def digit_data() -> object:
    from patternscope.data import load_digits

    return load_digits(size=16)


@pytest.fixture(scope="session")
def backdoored(digit_data: object) -> BackdoorCase:
    from patternscope.kit import PatchTrigger, poison_dataset

    trigger = PatchTrigger(size=3, position="bottom-right", colour=1.0)
    poisoned = poison_dataset(digit_data.train_x, digit_data.train_y, trigger, BACKDOOR_TARGET, rate=0.1, seed=0)
    net = _train_small(digit_data, poisoned.x, poisoned.y, seed=0)
    model = Classifier(net, mean=(0.0,), std=(1.0,), input_size=(1, 16, 16), spec="SmallCNN-badnets")
    return BackdoorCase(model, net, trigger, BACKDOOR_TARGET, digit_data)


@pytest.fixture(scope="session")
def clean_small(digit_data: object) -> BackdoorCase:
    net = _train_small(digit_data, digit_data.train_x, digit_data.train_y, seed=0)
    model = Classifier(net, mean=(0.0,), std=(1.0,), input_size=(1, 16, 16), spec="SmallCNN-clean")
    return BackdoorCase(model, net, None, None, digit_data)


@pytest.fixture(scope="session")
def blended(digit_data: object) -> BackdoorCase:
    """A digits CNN backdoored with a blended noise trigger (alpha 0.2): every pixel changes a little."""
    from patternscope.kit import BlendTrigger, poison_dataset

    trigger = BlendTrigger(0.2, "noise", seed=5)
    poisoned = poison_dataset(digit_data.train_x, digit_data.train_y, trigger, BLEND_TARGET, rate=0.1, seed=1)
    net = _train_small(digit_data, poisoned.x, poisoned.y, seed=1)
    model = Classifier(net, mean=(0.0,), std=(1.0,), input_size=(1, 16, 16), spec="SmallCNN-blend")
    return BackdoorCase(model, net, trigger, BLEND_TARGET, digit_data)
