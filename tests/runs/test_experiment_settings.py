"""`experiment settings` on digits with a short schedule: three real models, every class's pattern, files
and report; the adversarially trained model is the robust one and the backdoor implants."""

from __future__ import annotations

import json

import pytest

from patternscope.cli import EXIT_USER, main

FAST = ["--data", "digits", "--train-images", "1400", "--epochs", "4", "--search-images", "400"]
FAST += ["--classwise-epochs", "2", "--trigger-size", "3", "--quiet"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("settings") / "run"
    assert main(["experiment", "settings", "--out", str(out), *FAST]) == 0
    return out


def test_three_settings_with_every_class(run):
    data = json.loads((run / "settings.json").read_text())
    settings = {s["name"]: s for s in data["settings"]}
    assert list(settings) == ["natural", "backdoored", "adversarial"]
    for s in settings.values():
        assert len(s["classes"]) == 10
        assert all(r["k"] == 12 and 0 <= r["success"] <= 1 for r in s["classes"])  # 5% of 16 x 16, floored
        assert all(set(r["simplicity"]) == set(data["measures"]) for r in s["classes"])
    # the settings are what they say: PGD training buys robustness, poisoning implants the trigger
    assert settings["adversarial"]["pgd_accuracy"] > settings["natural"]["pgd_accuracy"] + 0.05
    assert settings["backdoored"]["trigger_success"] > settings["natural"]["trigger_success"] + 0.3
    assert set(data["simplicity"]) == set(settings)


def test_files_and_report(run):
    for name in ("gallery.png", "saliency.png", "simplicity.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (run / "report.html").read_text()
    for anchor in ("settings", "simplicity", "gallery", "classes"):
        assert f'id="{anchor}"' in html
    assert "IoU with saliency" in html


def test_bad_options_are_refused_before_any_folder(tmp_path, capsys):
    out = tmp_path / "never"
    assert main(["experiment", "settings", "--out", str(out), *FAST, "--adv-eps", "8"]) == EXIT_USER
    assert main(["experiment", "settings", "--out", str(out), *FAST, "--target", "12"]) == EXIT_USER
    err = capsys.readouterr().err
    assert "adv_eps" in err and "--target 12" in err and "Traceback" not in err
    assert not out.exists()
