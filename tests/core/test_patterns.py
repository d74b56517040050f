"""Patterns: budgets, projection, apply, save/load round trip."""

from __future__ import annotations

import json

import pytest
import torch

from patternscope.core.patterns import Pattern, parse_eps, project
from patternscope.errors import PatternError


def test_parse_eps_accepts_fractions_and_refuses_mistakes():
    assert parse_eps("10/255") == pytest.approx(10 / 255)
    assert parse_eps("0.0392") == pytest.approx(0.0392)
    assert parse_eps(8, "l2") == 8.0
    with pytest.raises(PatternError, match=r"10/255"):
        parse_eps("10")
    with pytest.raises(PatternError, match="positive"):
        parse_eps("0")
    with pytest.raises(PatternError, match="positive"):
        parse_eps("-0.1")
    with pytest.raises(PatternError, match="cannot read"):
        parse_eps("ten")
    with pytest.raises(PatternError, match="norm"):
        parse_eps("0.1", "l1")


def test_projection_linf_and_l2():
    d = torch.tensor([[[0.5, -0.5], [0.01, -0.2]]])
    assert torch.equal(project(d.clone(), 0.1), torch.tensor([[[0.1, -0.1], [0.01, -0.1]]]))
    big = torch.full((3, 4, 4), 1.0)
    out = project(big.clone(), 2.0, "l2")
    assert out.norm().item() == pytest.approx(2.0, rel=1e-6)
    small = torch.full((3, 4, 4), 0.01)
    assert torch.equal(project(small.clone(), 2.0, "l2"), small)


def test_apply_clips_to_valid_images():
    p = Pattern(torch.full((1, 2, 2), 0.3), eps=0.3)
    x = torch.tensor([[[[0.9, 0.1], [0.5, 0.0]]]])
    assert torch.allclose(p.apply(x), torch.tensor([[[[1.0, 0.4], [0.8, 0.3]]]]))
    with pytest.raises(PatternError, match="another input size"):
        p.apply(torch.zeros(1, 3, 2, 2))


def test_save_load_round_trip_is_exact(tmp_path):
    gen = torch.Generator().manual_seed(0)
    delta = (torch.rand(3, 8, 8, generator=gen) * 2 - 1) * 0.04
    p = Pattern(delta, eps=0.04, meta={"method": "dominant", "model": "toy", "steps": 3, "seed": 1})
    p.save(tmp_path, extra_tensors={"delta_best": delta * 0.5})
    assert sorted(f.name for f in tmp_path.iterdir()) == ["pattern.json", "pattern.png", "pattern.safetensors"]
    q = Pattern.load(tmp_path)
    assert torch.equal(q.delta, p.delta)
    assert q.eps == p.eps and q.norm == "linf"
    assert q.meta["method"] == "dominant" and q.meta["seed"] == 1 and "patternscope_version" in q.meta
    meta = json.loads((tmp_path / "pattern.json").read_text())
    assert meta["eps"] == 0.04 and meta["shape"] == [3, 8, 8]
    # the PNG is the rescaled pattern, upscaled to be visible
    from PIL import Image

    with Image.open(tmp_path / "pattern.png") as im:
        assert min(im.size) >= 224


def test_load_refuses_bad_files(tmp_path):
    with pytest.raises(PatternError, match="no pattern"):
        Pattern.load(tmp_path / "missing")
    bad = tmp_path / "pattern.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(PatternError, match="not a readable pattern"):
        Pattern.load(bad)


def test_check_fits_names_the_problem():
    p = Pattern(torch.zeros(3, 224, 224), eps=0.1, meta={"model": "efficientnet_lite0"})
    p.check_fits((3, 224, 224))
    with pytest.raises(PatternError, match="efficientnet_lite0"):
        p.check_fits((1, 16, 16))


def test_outputs_get_ordinary_file_permissions(tmp_path):
    import os
    import stat

    Pattern(torch.zeros(1, 4, 4), eps=0.1).save(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    mode = stat.S_IMODE((tmp_path / "pattern.json").stat().st_mode)
    assert mode == 0o666 & ~mask


def test_top_k_count_matches_the_class_wise_authors_sizes():
    from patternscope.core.patterns import top_k_count

    assert top_k_count(0.05, 32 * 32) == 50  # 51.2: the authors' 50
    assert top_k_count(0.05, 224 * 224) == 2500  # 2508.8: the authors' 2,500
    assert top_k_count(0.05, 28 * 28) == 39  # 39.2, below 50: rounded down only
    assert top_k_count(0.05, 64 * 64) == 200 and top_k_count(0.001, 100) == 1
    assert top_k_count(30, 784) == 30 and top_k_count(5000, 784) == 784


def test_equal_mask_values_are_ranked_by_the_tie_key_not_raster_order(tmp_path):
    from patternscope.core.patterns import ClasswisePattern, ranking, top_k_mask

    soft = torch.tensor([[[1.0, 1.0, 0.2], [1.0, 0.0, 1.0]]])  # four pixels tie at 1
    key = torch.tensor([[[0.1, 0.5, 9.0], [0.3, 9.0, 0.9]]])
    assert ranking(soft.flatten()).tolist()[:4] == [0, 1, 3, 5]  # no key: index order
    assert ranking(soft.flatten(), key.flatten()).tolist() == [5, 1, 3, 0, 2, 4]
    assert top_k_mask(soft, 2, key).flatten().tolist() == [0, 1, 0, 0, 0, 1]
    pattern = ClasswisePattern(0, top_k_mask(soft, 2, key), torch.rand(1, 2, 3), soft, {}, key)
    assert pattern.with_k(3).mask.flatten().tolist() == [0, 1, 0, 1, 0, 1]
    pattern.save(tmp_path)
    loaded = ClasswisePattern.load(tmp_path)
    assert torch.equal(loaded.tie_key, key) and torch.equal(loaded.with_k(2).mask, pattern.with_k(2).mask)


# ---------------------------------------------------------------------------------------------------
# Patterns that are what they claim (issue 19): a checksum of the tensors, and the budget measured on load

EPS = 10 / 255


def _signs(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1


def _resave(path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write ``tensors`` with the metadata ``meta`` as a patternscope file, bypassing :meth:`Pattern.save`."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={"patternscope": json.dumps(meta)})


def _stored(path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        names = list(fh.keys())
        return {k: fh.get_tensor(k) for k in names}, json.loads(fh.metadata()["patternscope"])


def test_a_saved_pattern_records_the_checksum_of_its_tensors(tmp_path):
    from patternscope.core.patterns import tensor_checksum

    delta = _signs((1, 8, 8)) * EPS
    Pattern(delta, EPS).save(tmp_path, extra_tensors={"delta_best": delta * 0.5})
    tensors, meta = _stored(tmp_path / "pattern.safetensors")
    assert len(meta["sha256"]) == 64 and meta["sha256"] == tensor_checksum(tensors)
    assert json.loads((tmp_path / "pattern.json").read_text())["sha256"] == meta["sha256"]
    loaded = Pattern.load(tmp_path)
    assert "sha256" not in loaded.meta and not loaded.over_budget  # a file property, not carried over
    loaded.save(tmp_path / "again")  # saved again: a fresh checksum, and it loads
    assert torch.equal(Pattern.load(tmp_path / "again").delta, delta)


def test_a_tampered_tensor_is_refused_by_its_checksum(tmp_path):
    Pattern(_signs((1, 8, 8)) * EPS, EPS).save(tmp_path)
    tensors, meta = _stored(tmp_path / "pattern.safetensors")
    tensors["delta"][0, 3, 3] = -tensors["delta"][0, 3, 3]  # one value changed, still within the budget
    _resave(tmp_path / "pattern.safetensors", tensors, meta)
    with pytest.raises(PatternError, match=r"pattern\.safetensors' was changed after it was saved: checksum"):
        Pattern.load(tmp_path)
    with pytest.raises(PatternError, match="changed after it was saved"):
        Pattern.load(tmp_path, allow_over_budget=True)  # no flag overrides a checksum


def test_a_file_without_a_checksum_loads_as_before(tmp_path):
    delta = _signs((1, 8, 8)) * EPS
    Pattern(delta, EPS, meta={"method": "dominant"}).save(tmp_path)
    tensors, meta = _stored(tmp_path / "pattern.safetensors")
    del meta["sha256"]  # as saved by 0.2 and earlier
    _resave(tmp_path / "pattern.safetensors", tensors, meta)
    loaded = Pattern.load(tmp_path)
    assert torch.equal(loaded.delta, delta) and loaded.meta["method"] == "dominant"


@pytest.mark.parametrize("with_checksum", [True, False], ids=["checksummed", "old-file"])
def test_a_pattern_over_its_declared_budget_is_refused_unless_allowed(tmp_path, with_checksum):
    delta = _signs((1, 8, 8)) * EPS * 5  # about 50/255, the metadata still says 10/255
    Pattern(delta, EPS).save(tmp_path)
    if not with_checksum:
        tensors, meta = _stored(tmp_path / "pattern.safetensors")
        del meta["sha256"]
        _resave(tmp_path / "pattern.safetensors", tensors, meta)
    with pytest.raises(PatternError) as caught:
        Pattern.load(tmp_path)
    message = str(caught.value)
    assert "pattern.safetensors' has L∞ 50.0/255 but declares a budget of 10.0/255" in message
    assert "--allow-over-budget" in message and "\n" not in message
    allowed = Pattern.load(tmp_path, allow_over_budget=True)
    assert allowed.over_budget and allowed.eps == pytest.approx(EPS)
    assert allowed.measured_linf == pytest.approx(5 * EPS) and allowed.measured_l2 == pytest.approx(5 * EPS * 8)
    assert allowed.budget_text() == "L∞ 50.0/255 but declares a budget of 10.0/255"


def test_the_budget_check_allows_float_rounding_and_checks_l2(tmp_path):
    from patternscope.core.patterns import BUDGET_ATOL, BUDGET_RTOL

    Pattern(_signs((1, 8, 8)) * (EPS + BUDGET_ATOL / 2), EPS).save(tmp_path / "rounding")
    assert not Pattern.load(tmp_path / "rounding").over_budget
    direction = _signs((3, 4, 4))
    Pattern(direction / direction.norm() * 2.0, 2.0, "l2").save(tmp_path / "l2")  # at the budget: fine
    assert not Pattern.load(tmp_path / "l2").over_budget
    Pattern(direction / direction.norm() * 2.0 * (1 + 3 * BUDGET_RTOL), 2.0, "l2").save(tmp_path / "l2-over")
    with pytest.raises(PatternError, match=r"has L2 norm 2\.006 but declares an L2 budget of 2;"):
        Pattern.load(tmp_path / "l2-over")


def test_non_finite_values_and_unreadable_budgets_are_refused(tmp_path):
    delta = torch.zeros(1, 4, 4)
    delta[0, 1, 1] = float("nan")
    Pattern(delta, EPS).save(tmp_path / "nan")
    with pytest.raises(PatternError, match="non-finite"):
        Pattern.load(tmp_path / "nan", allow_over_budget=True)
    Pattern(torch.zeros(1, 4, 4), EPS).save(tmp_path / "eps")
    tensors, meta = _stored(tmp_path / "eps" / "pattern.safetensors")
    for bad in ("ten", -1, None):
        _resave(tmp_path / "eps" / "pattern.safetensors", tensors, {**meta, "eps": bad})
        with pytest.raises(PatternError, match="declares"):
            Pattern.load(tmp_path / "eps")
