"""The model's memory layout in the commands: NHWC on the CPU unless --no-channels-last (measured faster for
the search there), NHWC elsewhere only with --channels-last, and never for commands without the option."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import torch

from patternscope.runs.compare import CompareOptions
from patternscope.runs.find_dominant import FindOptions
from patternscope.runs.options import uses_channels_last

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_the_cpu_uses_nhwc_unless_told_not_to_and_other_devices_only_when_asked():
    for options in (FindOptions(out="x"), CompareOptions(out="x")):
        assert uses_channels_last(options, CPU)
        assert not uses_channels_last(replace(options, no_channels_last=True), CPU)
        assert not uses_channels_last(options, CUDA)
        assert uses_channels_last(replace(options, channels_last=True), CUDA)
    assert not uses_channels_last(SimpleNamespace(model="efficientnet_lite0"), CPU)  # a command without the option
