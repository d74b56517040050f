"""Backdoor scan and Neural Cleanse on small models trained the same way, with and without a BadNets trigger."""

from __future__ import annotations

import math

import pytest
import torch

from patternscope.analyses.anomaly import anomaly_indices, flag_small
from patternscope.analyses.classwise import other_classes
from patternscope.analyses.neural_cleanse import NeuralCleanseConfig, neural_cleanse, pool_indices
from patternscope.analyses.scan import ScanConfig, format_scan, scan_model
from patternscope.core.predict import predicted_class as predicted
from patternscope.data import stratified_split
from patternscope.errors import DataError, RunDirError

FAST = ScanConfig(steps=200)


@pytest.fixture(scope="module")
def backdoor_scan(backdoored, tmp_path_factory):
    data = backdoored.data
    out = tmp_path_factory.mktemp("scan")
    return scan_model(backdoored.model, data.test_x, data.test_y, config=FAST, out=out), out


def test_scan_flags_the_backdoor_target(backdoored, backdoor_scan):
    report, _ = backdoor_scan
    assert report.flagged == [backdoored.target], format_scan(report)
    assert report.backdoored and "backdoored" in report.verdict and "confidence" in report.verdict
    row = report.rows[backdoored.target]
    assert row.smallest_k <= 12  # the trigger is 9 pixels
    assert row.smallest_k < 0.25 * report.median_k
    d = report.decision
    assert d.mode == "self" and d.top_class == backdoored.target and d.p_value < 0.01 and d.confidence > 0.99
    assert row.evidence == "stamp" and row.verified_stamp > 0.8  # the cut stamp works on the verification half


def test_recovered_trigger_works_on_held_out_images(backdoored, backdoor_scan):
    """Stamped on held-out training-distribution images the scan never searched on, it acts as the trigger."""
    report, _ = backdoor_scan
    t = backdoored.target
    data = backdoored.data
    held_x, _ = other_classes(data.train_x, data.train_y, target=t)  # the scan searched on the test split
    pattern = report.patterns[t]
    success = float((predicted(backdoored.model, pattern.stamp(held_x)) == t).float().mean())
    clean = float((predicted(backdoored.model, held_x) == t).float().mean())
    assert success > 0.9 and clean < 0.05, (success, clean)


def test_scan_flags_nothing_on_a_clean_model(clean_small):
    data = clean_small.data
    report = scan_model(clean_small.model, data.test_x, data.test_y, config=FAST)
    assert report.flagged == [], format_scan(report)
    assert report.verdict.startswith("no backdoor found") and report.decision.p_value > 0.05
    assert len(report.rows) == 10 and all(r.smallest_l2 is not None for r in report.rows)


@pytest.mark.slow
def test_scan_finds_a_blended_trigger_by_its_additive_signal(blended):
    """A blend touches every pixel: the additive pattern expresses it, and the additive signal alone flags the
    target (its score passes the threshold; the stamp may find a few pixels that act on the same features)."""
    data = blended.data
    report = scan_model(blended.model, data.test_x, data.test_y, config=FAST)
    t = blended.target
    assert report.flagged == [t], format_scan(report)
    row = report.rows[t]
    assert report.decision.scores["additive"][t] > report.decision.z_thresholds["additive"]
    assert row.verified_additive > 0.7
    assert row.smallest_l2 == min(r.smallest_l2 for r in report.rows)
    assert report.additive[t].eps == pytest.approx(row.smallest_l2, rel=1e-3)


def test_scan_resumes_finished_classes(backdoored, backdoor_scan):
    report, out = backdoor_scan
    data = backdoored.data
    again = scan_model(backdoored.model, data.test_x, data.test_y, config=FAST, out=out, resume=True)
    assert [r.smallest_k for r in again.rows] == [r.smallest_k for r in report.rows]
    assert again.flagged == report.flagged
    with pytest.raises(RunDirError, match="other settings"):
        scan_model(backdoored.model, data.test_x, data.test_y, config=ScanConfig(steps=50), out=out, resume=True)


def test_scan_refuses_bad_labels(backdoored):
    x = backdoored.data.test_x[:40]
    with pytest.raises(DataError, match="out of range"):
        scan_model(backdoored.model, x, torch.full((40,), 12), config=FAST)
    with pytest.raises(DataError, match="labelled images"):
        scan_model(backdoored.model, x, torch.zeros(39, dtype=torch.long), config=FAST)


def test_stratified_split_holds_out_each_class():
    labels = torch.arange(100) % 5
    search, held = stratified_split(labels, 0.3, seed=0)
    assert len(set(search.tolist()) & set(held.tolist())) == 0 and len(search) + len(held) == 100
    assert all(int((labels[held] == c).sum()) == 6 for c in range(5))


def test_anomaly_index_is_nc_mad():
    values = [10.0, 11.0, 9.0, 10.5, 9.5, 1.0]
    index = anomaly_indices(values)
    # median 9.75; |dev| = .25 1.25 .75 .75 .25 8.75 -> MAD 0.75
    assert index[-1] == pytest.approx((1.0 - 9.75) / (1.4826 * 0.75))
    assert flag_small(values) == [False] * 5 + [True]
    assert anomaly_indices([2.0, 2.0, 2.0]) == [0.0, 0.0, 0.0]
    assert math.isinf(anomaly_indices([2.0, 2.0, 1.0])[-1])


NC_FAST = NeuralCleanseConfig(images=256, max_epochs=25, seeds=2)


@pytest.mark.slow
def test_neural_cleanse_flags_the_backdoor(backdoored):
    data = backdoored.data
    search, _ = stratified_split(data.test_y, 0.3, 0)
    report = neural_cleanse(backdoored.model, data.test_x[search], config=NC_FAST)
    assert backdoored.target in report.flagged, report.l1
    assert report.l1[backdoored.target] == min(report.l1)
    assert report.diverged_runs == 0 and len(report.l1_per_seed[0]) == 2


class NaNNet(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 3) + x.mean() * 0
        return out + float("nan")


def test_neural_cleanse_survives_nan_outputs():
    from patternscope.core.classifier import Classifier

    model = Classifier(NaNNet(), mean=(0.0,), std=(1.0,), input_size=(1, 8, 8))
    report = neural_cleanse(
        model, torch.rand(16, 1, 8, 8), config=NeuralCleanseConfig(images=16, max_epochs=2, seeds=2)
    )
    assert report.diverged_runs == 6
    assert report.flagged == [] and all(v == 64 for v in report.l1)


def test_neural_cleanse_pool_is_class_stratified_not_the_first_classes():
    """A class-sorted set (as an ImageFolder tree is read) of 10 classes x 150: the 1,000 images Neural
    Cleanse uses cover every class (100 each), not the first 7; seeded, sorted, no repeats."""
    labels = torch.arange(10).repeat_interleave(150)
    idx = pool_indices(1500, 1000, labels, seed=0)
    counts = torch.bincount(labels[idx], minlength=10)
    assert idx.numel() == 1000 and idx.unique().numel() == 1000 and torch.equal(idx, idx.sort().values)
    assert counts.tolist() == [100] * 10
    assert torch.equal(idx, pool_indices(1500, 1000, labels, seed=0))
    assert not torch.equal(idx, pool_indices(1500, 1000, labels, seed=1))
    uneven = torch.cat([torch.zeros(30, dtype=torch.long), torch.ones(2000, dtype=torch.long)])
    assert torch.bincount(uneven[pool_indices(2030, 100, uneven)]).tolist() == [30, 70]  # small classes whole
    assert pool_indices(50, 1000, labels[:50]).tolist() == list(range(50))  # fewer images than the cap: all
    unlabelled = pool_indices(1500, 1000, None, seed=0)
    assert unlabelled.numel() == 1000 and torch.bincount(labels[unlabelled]).min() > 60
