"""Every JSON file a run writes is strict JSON: no ``Infinity``/``NaN`` tokens that other readers reject."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from patternscope.core.atomic import write_json


def _strict_load(text: str):
    def refuse(token: str):
        raise ValueError(f"non-JSON constant {token}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_are_written_as_null(tmp_path):
    data = {
        "anomaly_index": [math.inf, -math.inf, 1.5],
        "mad": math.nan,
        "tensor": torch.tensor([0.5, float("inf")]),
        "array": np.array([np.nan, 2.0], dtype=np.float32),
        "scalar": np.float32(0.25),
        "path": tmp_path,
        3: True,
    }
    path = write_json(tmp_path / "scan.json", data)
    loaded = _strict_load(path.read_text())
    assert loaded["anomaly_index"] == [None, None, 1.5] and loaded["mad"] is None
    assert loaded["tensor"] == [0.5, None] and loaded["array"] == [None, 2.0] and loaded["scalar"] == 0.25
    assert loaded["path"] == str(tmp_path) and loaded["3"] is True


def test_unserialisable_values_leave_no_file(tmp_path):
    with pytest.raises(TypeError, match="cannot serialise object"):
        write_json(tmp_path / "bad.json", {"x": object()})
    assert not (tmp_path / "bad.json").exists()
