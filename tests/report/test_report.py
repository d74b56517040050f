"""report.html for every run, the `report` command, and config files (read, resolved, rerun).

The last test opens real reports in headless Chromium (Debian's chromium + chromium-driver, which
.ci/run installs) and checks the page as a person would get it: every image decoded, tables there,
no console errors, no script.
"""

from __future__ import annotations

import json
import re

import pytest
from helpers import TINY_SPEC, headless_browser

from patternscope.cli import EXIT_OK, EXIT_USER, main
from patternscope.core.patterns import Pattern
from patternscope.data import write_image_tree

HOSTILE = "<img src=x onerror=alert(1)>"  # a class folder name that must never become markup
SPEC = "patternscope.kit.nets:SmallCNN"


def _find_args(out, tiny_weights, digit_folders, *extra):
    return [
        "find", "dominant", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights),
        "--data", str(digit_folders["train"]), "--eval-data", str(digit_folders["test"]),
        "--eps", "0.2", "--steps", "30", "--batch-size", "32", "--device", "cpu", "--quiet", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def find_run(tmp_path_factory, tiny_weights, digit_folders):
    out = tmp_path_factory.mktemp("report") / "find"
    assert main(_find_args(out, tiny_weights, digit_folders)) == EXIT_OK
    return out


@pytest.fixture(scope="module")
def scan_run(tmp_path_factory, backdoored, digit_data):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("scan-report")
    weights = root / "bd.safetensors"
    save_file({k: v.contiguous() for k, v in backdoored.net.state_dict().items()}, str(weights))
    names = tuple(HOSTILE if i == 3 else f'digit "{i}" & co' for i in range(10))
    tree = write_image_tree(root / "tree", digit_data.test_x, digit_data.test_y, names)
    out = root / "scan"
    args = ["scan", "--out", str(out), "--data", str(tree), "--model", SPEC, "--weights", str(weights)]
    args += ["--model-kwargs", '{"size": 16}', "--device", "cpu", "--steps", "300", "--quiet"]
    assert main(args) == EXIT_OK
    return out


def test_find_report_has_every_part(find_run):
    html = (find_run / "report.html").read_text()
    anchors = ("summary", "pattern", "examples", "perceptibility", "layers", "dominance", "search", "metrics")
    for anchor in (*anchors, "settings"):
        assert f'id="{anchor}"' in html
    for name in ("pattern_views.png", "class_histogram.png", "search_loss.png"):
        assert (find_run / "report_figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (find_run / "layers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PSNR of x+δ vs x" in html and "dB" in html and "SSIM" in html
    # self-contained: every image embedded (pattern, examples, layers, histogram, loss), nothing fetched
    sources = re.findall(r'<img src="([^"]*)"', html)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in html and "http://" not in html and "https://" not in html
    metrics = json.loads((find_run / "metrics.json").read_text())
    assert f"{100 * metrics['evaluation']['fooling_ratio']:.1f}%" in html


def test_find_report_tiles_carry_their_interval(find_run):
    """The summary tiles show each ratio with its Wilson 95% interval (issue 32), e.g. '68.2% [47, 84]'."""
    html = (find_run / "report.html").read_text()
    ev = json.loads((find_run / "metrics.json").read_text())["evaluation"]
    low, high = ev["intervals"]["fooling_ratio"]
    assert f"{100 * ev['fooling_ratio']:.1f}% [{100 * low:.0f}, {100 * high:.0f}]" in html
    low, high = ev["intervals"]["agreement"]
    assert f"{100 * ev['agreement']:.1f}% [{100 * low:.0f}, {100 * high:.0f}]" in html


def test_scan_report_escapes_user_strings(scan_run):
    html = (scan_run / "report.html").read_text()
    scan = json.loads((scan_run / "scan.json").read_text())
    assert scan["flagged"] == [3] and scan["classes"][3]["name"] == HOSTILE
    assert HOSTILE not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "digit &quot;0&quot; &amp; co" in html
    assert 'id="trigger-3"' in html and "backdoor" in html
    assert (scan_run / "report_figures" / "scan_chart.png").is_file()


def test_report_command_rebuilds_and_refuses_what_is_not_a_run(find_run, tmp_path, capsys):
    (find_run / "report.html").unlink()
    assert main(["report", str(find_run), "--quiet"]) == EXIT_OK
    assert (find_run / "report.html").is_file()
    assert main(["report", str(tmp_path)]) == EXIT_USER
    assert "holds no patternscope results" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text('{"evaluation": {}}')
    assert main(["report", str(broken)]) == EXIT_USER
    assert "damaged or incomplete" in capsys.readouterr().err
    assert not (broken / "report.html").exists()


def test_config_toml_reruns_the_same_run(find_run, tmp_path):
    saved = (find_run / "config.toml").read_text()
    assert 'command = "find dominant"' in saved and "steps = 30" in saved and "resume" not in saved
    again = tmp_path / "again"
    argv = ["find", "--config", str(find_run / "config.toml"), "--out", str(again), "--quiet", "--no-report"]
    assert main(argv) == EXIT_OK  # `find` alone: the method comes from the file
    assert not (again / "report.html").exists()
    assert Pattern.load(again).delta.equal(Pattern.load(find_run).delta)
    strip = lambda text: [line for line in text.splitlines() if not line.startswith("out =")]  # noqa: E731
    assert strip((again / "config.toml").read_text()) == strip(saved)


def test_yaml_config_and_command_line_wins(find_run, tmp_path):
    import tomllib

    import yaml

    options = tomllib.loads((find_run / "config.toml").read_text())
    options.update(steps=12, out=str(tmp_path / "from-yaml"))
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(options))
    assert main(["find", "dominant", "--config", str(config), "--steps", "7", "--quiet"]) == EXIT_OK
    assert Pattern.load(tmp_path / "from-yaml").meta["steps"] == 7
    assert "steps = 7" in (tmp_path / "from-yaml" / "config.toml").read_text()


@pytest.mark.parametrize(
    ("text", "suffix", "argv", "message"),
    [
        ('command = "find dominant"\nstepz = 3\n', ".toml", [], "did you mean 'steps'"),
        ('command = "find dominant"\n', ".toml", ["compare"], "config for 'find dominant', not for 'compare'"),
        ("steps = 3\n", ".toml", [], "names no command"),
        ('command = "find dominant"\nsteps = [3\n', ".toml", [], "not valid TOML"),
        ('command = "find dominant"\nresume = "yes"\n', ".toml", [], "not an option"),
        ('command = "find dominant"\nclip-during-search = "yes"\n', ".toml", [], "write true or false"),
        ("command: scan\nsteps: [1, 2]\n", ".yaml", [], "must be a single value"),
        ("steps = 3\n", ".ini", ["scan"], "use a .toml, .yaml or .yml file"),
    ],
)
def test_bad_config_files_are_explained(tmp_path, capsys, text, suffix, argv, message):
    config = tmp_path / f"run{suffix}"
    config.write_text(text)
    assert main([*argv, "--config", str(config)]) == EXIT_USER
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert main(["--config", str(tmp_path / "missing.toml")]) == EXIT_USER
    assert "does not exist" in capsys.readouterr().err


def test_reports_render_in_headless_chromium(find_run, scan_run, tmp_path):
    from PIL import Image

    browser = headless_browser()
    try:
        for run in (find_run, scan_run):
            html = (run / "report.html").read_text()
            browser.get((run / "report.html").as_uri())
            page = browser.execute_script(
                "return {images: Array.from(document.images).map(i => [i.complete, i.naturalWidth]),"
                " tables: document.querySelectorAll('table').length, scripts: document.scripts.length,"
                " sections: document.querySelectorAll('section').length, title: document.title}"
            )
            assert page["title"].startswith("patternscope")
            assert len(page["images"]) == html.count("<img ") >= 2
            assert all(done and width > 0 for done, width in page["images"]), page["images"]
            assert page["tables"] >= 2 and page["sections"] >= 4 and page["scripts"] == 0
            errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
            assert not errors, errors
            shot = tmp_path / f"{run.name}.png"
            assert browser.save_screenshot(str(shot))
            with Image.open(shot) as image:
                assert image.size[0] >= 1000 and len(image.convert("L").getcolors(256) or []) > 10
    finally:
        browser.quit()
