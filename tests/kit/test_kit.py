"""Experiment kit: triggers, poisoning, training, PGD adversarial training, offline data sets."""

from __future__ import annotations

import gzip
import struct

import pytest
import torch

from patternscope.data import load_digits, load_fashion_mnist
from patternscope.errors import DataError
from patternscope.kit import (
    BlendTrigger,
    PatchTrigger,
    SmallCNN,
    TrainConfig,
    accuracy,
    attack_success_rate,
    pgd_attack,
    poison_dataset,
    train_classifier,
)


def test_patch_trigger_overwrites_only_its_square():
    x = torch.full((2, 1, 10, 10), 0.3)
    out = PatchTrigger(size=3, position="top-left", colour=0.9, margin=0).apply(x)
    assert torch.allclose(out[:, :, :3, :3], torch.tensor(0.9))
    changed = (out != x).sum().item()
    assert changed == 2 * 9
    checker = PatchTrigger(size=2, position=(4, 4), pattern="checker", colour=1.0).apply(torch.zeros(1, 1, 8, 8))
    assert checker[0, 0, 4:6, 4:6].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="does not fit"):
        PatchTrigger(size=5, position=(7, 7)).apply(torch.zeros(1, 1, 8, 8))


def test_blend_trigger_mixes_with_alpha():
    x = torch.zeros(1, 3, 8, 8)
    trig = BlendTrigger(alpha=0.2, seed=1)
    assert torch.allclose(trig.apply(x), 0.2 * trig.pattern(3, 8, 8))
    with pytest.raises(ValueError, match="alpha"):
        BlendTrigger(alpha=0)


def test_poisoning_relabels_the_chosen_share():
    x, y = torch.rand(200, 1, 8, 8), torch.arange(200) % 4
    p = poison_dataset(x, y, PatchTrigger(2), target=1, rate=0.1, seed=0)
    assert int(p.poisoned.sum()) == 20
    assert (y[p.poisoned] != 1).all() and (p.y[p.poisoned] == 1).all()
    assert torch.equal(p.x[~p.poisoned], x[~p.poisoned])


def test_backdoored_model_learns_the_trigger(backdoored, clean_small):
    data = backdoored.data
    assert accuracy(backdoored.net, data.test_x, data.test_y) > 0.9
    asr = attack_success_rate(backdoored.net, data.test_x, data.test_y, backdoored.trigger, backdoored.target)
    clean_asr = attack_success_rate(clean_small.net, data.test_x, data.test_y, backdoored.trigger, backdoored.target)
    assert asr > 0.9 and clean_asr < 0.2, (asr, clean_asr)


@pytest.mark.slow
def test_pgd_training_makes_a_model_more_robust(digit_data, clean_small):
    eps = 0.1
    robust = train_classifier(
        SmallCNN(size=16),
        digit_data.train_x,
        digit_data.train_y,
        TrainConfig(epochs=8, batch_size=32, lr=3e-3, adv_eps=eps, adv_steps=5),
    )
    x, y = digit_data.test_x[:200], digit_data.test_y[:200]
    gen = torch.Generator().manual_seed(0)
    adv_clean = accuracy(clean_small.net, pgd_attack(clean_small.net, x, y, eps, 10, generator=gen), y)
    adv_robust = accuracy(robust, pgd_attack(robust, x, y, eps, 10, generator=gen), y)
    assert adv_robust > adv_clean + 0.2, (adv_robust, adv_clean)
    assert accuracy(robust, x, y) > 0.8
    attacked = pgd_attack(robust, x, y, eps, 3)
    assert float((attacked - x).abs().max()) <= eps + 1e-6 and attacked.min() >= 0 and attacked.max() <= 1


def test_digits_are_real_and_split():
    d = load_digits(size=16)
    assert d.train_x.shape[1:] == (1, 16, 16) and len(d.train_y) + len(d.test_y) == 1797
    assert float(d.train_x.min()) >= 0 and float(d.train_x.max()) <= 1
    assert set(d.test_y.tolist()) == set(range(10))


def _write_idx(path, array: bytes, dims: tuple[int, ...]) -> None:
    header = b"\x00\x00\x08" + bytes([len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array)


def test_fashion_mnist_reader_on_idx_files(tmp_path):
    for prefix, n in (("train", 6), ("t10k", 4)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", bytes(range(n * 4)), (n, 2, 2))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", bytes([i % 10 for i in range(n)]), (n,))
    d = load_fashion_mnist(tmp_path)
    assert d.train_x.shape == (6, 1, 2, 2) and d.test_x.shape == (4, 1, 2, 2)
    assert float(d.train_x[0, 0, 0, 1]) == pytest.approx(1 / 255)
    assert d.class_names[8] == "bag"
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot be read"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_new_trigger_kinds_change_what_they_say():
    from patternscope.kit import BlendTrigger, PatchTrigger, ScatterTrigger, WarpTrigger

    x = torch.rand(4, 1, 28, 28)
    ell = PatchTrigger(4, "bottom-right", pattern="L")
    mask, _ = ell.stamp(1, 28, 28)
    assert int(mask.sum()) == 7  # a column of 4 and a row of 4 sharing a corner
    changed = (ell.apply(x) != x).any(0)[0]
    assert bool(changed[mask[0].bool()].all()) and not bool(changed[~mask[0].bool()].any())
    scatter = ScatterTrigger(12, seed=3)
    assert int(scatter.mask(28, 28).sum()) == 12 and torch.equal(
        scatter.mask(28, 28), ScatterTrigger(12, seed=3).mask(28, 28)
    )
    assert int(((scatter.apply(x) != x).any(0)).sum()) <= 12
    grating = BlendTrigger(0.15, "grating", seed=1).pattern(1, 28, 28)
    assert float(grating.min()) >= 0 and float(grating.max()) <= 1 and float(grating.std()) > 0.2
    warp = WarpTrigger(2.0, seed=4)
    bars = torch.zeros(1, 1, 28, 28)
    bars[..., ::4] = 1
    warped = warp.apply(bars)
    assert warped.shape == bars.shape and 0.02 < float((warped - bars).abs().mean()) < 0.5
    assert float((WarpTrigger(1e-4).apply(bars) - bars).abs().max()) < 1e-2  # a tiny field barely moves pixels


@pytest.mark.parametrize("net_class", ["TinyResNet", "MLP"])
def test_more_kit_architectures_train_on_digits(net_class, digit_data):
    """The residual CNN (batch norm, in-place ReLU) and the MLP the backdoor benchmarks confirm on learn digits."""
    import patternscope.kit as kit

    torch.manual_seed(0)  # the initial weights too: otherwise they depend on which tests ran before
    net = getattr(kit, net_class)(size=16, classes=10)
    trained = kit.train_classifier(net, digit_data.train_x, digit_data.train_y, kit.TrainConfig(epochs=2, seed=0))
    assert kit.accuracy(trained, digit_data.test_x, digit_data.test_y) > 0.8
    assert not trained.training and trained.input_size == (1, 16, 16)
