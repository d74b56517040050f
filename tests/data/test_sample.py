"""The one seeded sample of a set's images (``data.labelled.seeded_sample``): class-stratified when labels
are known, in proportion to the classes, never more than the cap, sorted, deterministic for a seed."""

from __future__ import annotations

import torch

from patternscope.data import seeded_sample


def _check(idx: torch.Tensor, n: int, cap: int) -> None:
    assert idx.dtype == torch.long and idx.numel() == min(n, cap)
    assert idx.unique().numel() == idx.numel() and torch.equal(idx, idx.sort().values)
    assert idx.numel() == 0 or (int(idx.min()) >= 0 and int(idx.max()) < n)


def test_a_class_sorted_set_is_sampled_in_proportion_not_by_prefix():
    """The first 512 images of this class-sorted set are all class 0 (as an ImageFolder tree is read); the
    sample of 512 has every class in proportion to its count (600 : 300 : 100)."""
    labels = torch.cat([torch.full((600,), 0), torch.full((300,), 1), torch.full((100,), 2)])
    assert labels[:512].unique().tolist() == [0]  # a prefix would be one class
    idx = seeded_sample(1000, 512, seed=0, labels=labels)
    _check(idx, 1000, 512)
    # quotas 307.2, 153.6 and 51.2: the floors, and the one left over to the largest remainder
    assert torch.bincount(labels[idx], minlength=3).tolist() == [307, 154, 51]
    assert torch.equal(idx, seeded_sample(1000, 512, seed=0, labels=labels))
    assert not torch.equal(idx, seeded_sample(1000, 512, seed=1, labels=labels))
    even = torch.arange(10).repeat_interleave(150)
    counts = torch.bincount(even[seeded_sample(1500, 64, seed=3, labels=even)], minlength=10)
    assert counts.sum() == 64 and counts.min() >= 6 and counts.max() <= 7


def test_without_labels_a_seeded_uniform_sample_and_small_sets_whole():
    idx = seeded_sample(1000, 100, seed=0)
    _check(idx, 1000, 100)
    assert torch.equal(idx, torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:100].sort().values)
    assert seeded_sample(50, 100, seed=0, labels=torch.zeros(50, dtype=torch.long)).tolist() == list(range(50))
    assert seeded_sample(0, 10, seed=0).numel() == 0
    assert seeded_sample(20, 0, seed=0).numel() == 0


def test_balanced_takes_the_classes_in_turn():
    """``balanced=True`` (Neural Cleanse's pool): every class as evenly as its count allows, small ones whole."""
    uneven = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(2000, dtype=torch.long)])
    idx = seeded_sample(2030, 100, seed=0, labels=uneven, balanced=True)
    _check(idx, 2030, 100)
    assert torch.bincount(uneven[idx]).tolist() == [30, 70]
    assert torch.bincount(uneven[seeded_sample(2030, 100, seed=0, labels=uneven)]).tolist() == [1, 99]


def test_the_layer_analysis_reads_a_class_stratified_sample_of_the_evaluation_set(digit_folders):
    """The evaluation's layer analysis reads the sample, not the first 64 images: on the class-sorted digits
    tree (120 images, 10 classes) the first 64 miss classes, the sample has each in proportion."""
    from patternscope.data import image_folder
    from patternscope.runs.evaluation import sampled_images

    tree = image_folder(digit_folders["test"])
    labels = tree.labels()
    assert labels[:64].unique().numel() < 10
    crops, sample = sampled_images(tree, (1, 16, 16), 64, seed=0)
    assert sample == {"seed": 0, "n": 64, "of": 120, "stratified": True}
    idx = seeded_sample(120, 64, seed=0, labels=labels)
    expected = torch.stack([tree.load(int(i), 1) for i in idx])  # 16 x 16 digits: the crop is the image
    assert crops.shape == (64, 1, 16, 16) and torch.equal(crops, expected)
    share = torch.bincount(labels[idx], minlength=10) - torch.bincount(labels, minlength=10) * 64 / 120
    assert share.abs().max() < 1  # every class within one image of its proportion
