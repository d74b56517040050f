"""What several test modules share: the tiny test model's spec string and a headless browser."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TINY_SPEC = f"{Path(__file__).parent / 'tiny_models.py'}:TinyCNN"


def headless_browser():
    """A headless Chromium driven by selenium (skipped without it, except under CI, where it must exist)."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = Service = None
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if webdriver is None or chromium is None or driver is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs selenium and Debian's chromium + chromium-driver (.ci/run installs them)")
        pytest.skip("headless Chromium not installed: apt-get install chromium chromium-driver; pip install selenium")

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1600",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def out_of_place(model):
    """A copy of a Classifier whose modules never work in place (``inplace=False`` wherever there is the
    flag): the reference for what a tap on the original should read."""
    import copy

    from patternscope.core.classifier import Classifier

    net = copy.deepcopy(model.net)
    for module in net.modules():
        if getattr(module, "inplace", False):
            module.inplace = False
    mean, std = model.mean.flatten().tolist(), model.std.flatten().tolist()
    return Classifier(net, mean=mean, std=std, input_size=model.input_size)


# the kit's SmallCNN for 1 x 16 x 16 digits, loaded the way users load their own model: a spec and a state dict
SMALL_SPEC = "patternscope.kit.nets:SmallCNN"
SMALL_KWARGS = '{"size": 16}'


def save_weights(net, path):
    """``net``'s state dict as a safetensors file at ``path``; returns the path."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


def small_model_args(weights_file):
    """The command-line model options of the kit's SmallCNN with ``weights_file``, on the CPU."""
    return ["--model", SMALL_SPEC, "--weights", str(weights_file), "--model-kwargs", SMALL_KWARGS, "--device", "cpu"]
