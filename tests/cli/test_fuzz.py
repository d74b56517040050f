"""Property-based fuzzing (issue 19) with hypothesis: option values of every command, image files, config files
and pattern files. Each run ends in exit 2 with exactly one ``patternscope: error:`` line, or exit 0 (a documented
skip says so in a ``patternscope: warning:`` line) with a complete result: never a traceback, a hang (every test
has a timeout) or a partial output (no result file after a refusal, no temporary file left behind).

The runs are in-process (``patternscope.cli.main``) on the tiny test model with a few images, so the whole file
takes well under a minute; the examples are derandomised (the same in every CI run). ``PATTERNSCOPE_FUZZ=explore``
draws fresh, and ten times as many, examples; ``PATTERNSCOPE_FUZZ_LOG=FILE`` appends each run's exit code and
message to FILE (how far the examples got). :func:`kinds` lists the kinds of bad input asserted here and in
``test_bad_input.py``.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import uuid
import warnings
import zlib
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_SPEC
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from patternscope.cli import EXIT_OK, EXIT_USER, build_parser, main
from patternscope.cli.parser import command_parsers
from patternscope.core.patterns import Pattern
from patternscope.data.images import decode_image, read_image
from patternscope.errors import DataError

EXPLORE = os.environ.get("PATTERNSCOPE_FUZZ") == "explore"


def fuzz(examples: int) -> settings:
    """Hypothesis settings: ``examples`` derandomised examples (ten times as many, fresh, when exploring)."""
    return settings(
        max_examples=examples * (10 if EXPLORE else 1),
        deadline=None,
        derandomize=not EXPLORE,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# ---------------------------------------------------------------------------------------------------
# Running a command and judging its end


@dataclass
class Outcome:
    argv: list[str]
    code: int
    err: str
    out: str = ""

    def lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run(argv: list[str]) -> Outcome:
    """``patternscope ARGV`` in this process, its stdout dropped and its stderr kept."""
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # every warning, each time (pytest records them: shown as the CLI does)
        code = main([str(a) for a in argv])
    shown = "".join(f"patternscope: warning: {w.message}\n" for w in caught)
    return Outcome([str(a) for a in argv], code, shown + err.getvalue(), out.getvalue())


def judge(outcome: Outcome, out: Path | None = None, result: str | None = None, skips: bool = False) -> None:
    """Exit 2 with one error line (and no ``result`` file in ``out``) or exit 0 with only warnings (and a complete
    ``result``); never a traceback, never a temporary file left in ``out``. ``skips``: an error may follow the
    warnings naming the images skipped on the way (a folder whose every image opens but none decodes)."""
    lines = outcome.lines()
    assert "Traceback" not in outcome.err, outcome
    assert outcome.code in (EXIT_OK, EXIT_USER), outcome
    if outcome.code == EXIT_USER:
        before = [line for line in lines[:-1] if not (skips and line.startswith("patternscope: warning: skipped "))]
        assert not before and lines[-1].startswith("patternscope: error: "), outcome
        if out is not None and result is not None:
            assert not (out / result).exists(), outcome
    else:
        assert all(line.startswith("patternscope: warning: ") for line in lines), outcome
        if out is not None and result is not None:
            json.loads((out / result).read_text())  # complete, readable
    if out is not None and out.is_dir():
        assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")], outcome


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_weights, digits):
    """The tiny model's weights, a flat folder of 16 digits, a labelled tree of 8 per class and a finished
    pattern run; ``scratch`` for the examples' outputs."""
    root = tmp_path_factory.mktemp("fuzz")
    flat, tree = root / "flat", root / "tree"
    flat.mkdir()
    for i in range(16):
        _digit(digits.test_x[i]).save(flat / f"d{i:02d}.png")
    for i in range(80):
        folder = tree / str(int(digits.test_y[i]))
        folder.mkdir(parents=True, exist_ok=True)
        _digit(digits.test_x[i]).save(folder / f"d{i:02d}.png")
    pattern = root / "pattern"
    signs = torch.randint(0, 2, (1, 16, 16), generator=torch.Generator().manual_seed(0)).float() * 2 - 1
    Pattern(signs * 0.2, 0.2, meta={"method": "dominant", "model": TINY_SPEC}).save(pattern)
    scratch = root / "scratch"
    scratch.mkdir()
    return {"weights": tiny_weights, "flat": flat, "tree": tree, "pattern": pattern, "scratch": scratch}


def _digit(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8), mode="L")


def fresh(world) -> Path:
    """A new output path under the scratch folder (not created)."""
    return world["scratch"] / uuid.uuid4().hex


# ---------------------------------------------------------------------------------------------------
# 1. Option values of every command

# each command: a cheap valid command line (tiny model, a few images, one or two steps) and its result file
MODEL = ["--model", TINY_SPEC, "--device", "cpu"]


def _base(command: str, world, out: Path) -> list[str]:
    w = ["--weights", str(world["weights"])]
    flat, tree, pattern = str(world["flat"]), str(world["tree"]), str(world["pattern"])
    small = ["--steps", "2", "--batch-size", "8"]
    lines = {
        "find dominant": ["find", "dominant", "--out", out, *MODEL, *w, "--data", flat, "--eval-data", flat, *small],
        "find classwise": ["find", "classwise", "--out", out, *MODEL, *w, "--data", tree, "--class", "1", *small],
        "scan": [
            "scan",
            "--out",
            out,
            *MODEL,
            *w,
            "--data",
            tree,
            "--classes",
            "0,1,2",
            "--additive-steps",
            "2",
            *small,
        ],
        "evaluate": ["evaluate", "--pattern", pattern, *MODEL, *w, "--data", flat, "--out", out],
        "compare": ["compare", "--out", out, *MODEL, *w, "--data", flat, "--eval-data", flat, "--budget", "40"],
        "transfer": [
            "transfer",
            "--patterns",
            pattern,
            "--models",
            f"{TINY_SPEC}@{w[1]}",
            "--data",
            flat,
            "--out",
            out,
        ],
        "models": ["models", "--filter", "tiny"],
        "downstream": [
            "downstream",
            "--out",
            out,
            "--backbone",
            TINY_SPEC,
            *w,
            "--task-data",
            tree,
            "--pattern",
            pattern,
        ],
        "harden": [
            "harden",
            "--out",
            out,
            *MODEL,
            *w,
            "--data",
            tree,
            "--methods",
            "",
            "--no-classwise",
            "--epochs",
            "1",
        ],
        "experiment settings": ["experiment", "settings", "--out", out, "--data", "digits", "--train-images", "100"],
    }
    extra = {
        "find dominant": ["--eps", "0.2"],
        "compare": ["--eps", "0.2", "--methods", "dominant"],
        "transfer": ["--device", "cpu"],
        "downstream": ["--device", "cpu", "--epochs", "1", "--own-steps", "0", "--batch-size", "8"],
        "harden": ["--eps", "0.2", "--batch-size", "8", "--delta-steps", "1", "--pool", "2"],
        "experiment settings": ["--epochs", "1", "--search-images", "20", "--classwise-epochs", "0.1"],
    }
    return [*lines[command], *extra.get(command, [])]


RESULT = {
    "find dominant": "metrics.json",
    "find classwise": "classwise.json",
    "scan": "scan.json",
    "evaluate": "metrics.json",
    "compare": "compare.json",
    "transfer": "transfer.json",
    "downstream": "downstream.json",
    "harden": "harden.json",
    "experiment settings": "settings.json",
}
# options naming files, folders, models or JSON: the bad-input table and the fuzzers below cover those
NOT_VALUES = {"--out", "--model", "--weights", "--data", "--eval-data", "--pattern", "--patterns", "--models"}
NOT_VALUES |= {"--task-data", "--backbone", "--finetuned", "--canvas", "--reference", "--config", "--model-kwargs"}
# options that set how much work a run does, with the most a fuzzed value may ask for (a huge valid value is a
# long run, not a bad input)
WORK = {"--steps": 3, "--epochs": 2, "--max-steps": 3, "--budget": 80, "--additive-steps": 3, "--nc-seeds": 1}
WORK |= {"--nc-max-epochs": 1, "--own-steps": 3, "--restarts": 1, "--classwise-steps": 3, "--delta-steps": 2}
WORK |= {"--pool": 3, "--train-images": 120, "--search-images": 30, "--classwise-epochs": 0.3, "--patience": 3}
WORK |= {"--max-search-images": 16, "--canvases": 3, "--checkpoint-every": 3, "--workers": 0, "--batch-size": 16}
WORK |= {"--trigger-size": 15, "--eval-views": 10, "--cache-mb": 64}

SPECIAL = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e309", "-1e309", "-1", "0", "-0", "0.5", "-0.5"]
SPECIAL += ["1e-320", "", " ", "\t", "1,5", "0x10", "1_000", "١٢", "１２", "½", "∞", "10/255", "3,224", "🙂"]
SPECIAL += ["\u202e7", "é", "cuda:99", "none", "all", "-", "--", "=", "a" * 300, "-1e300", "1e3"]
HUGE = [str(2**63), str(-(2**63) - 1), str(10**30), "1e300", str(2**31), str(2**64)]


def values(option: str) -> st.SearchStrategy[str]:
    """Bad and odd values for ``option`` (special numbers and texts, integers and floats of any size, unicode),
    and small plausible ones (so the fuzzed runs also go past the checks)."""
    numbers = st.integers(-(2**70), 2**70).map(str) | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
    small = st.integers(-2, 12).map(str) | st.floats(-0.5, 1.5).map(lambda v: f"{v:.3g}")
    pool = st.sampled_from(SPECIAL + HUGE) | numbers | text | small
    if option in WORK:
        cap = WORK[option]
        pool = pool.filter(lambda v: not _above(v, cap))
    return pool


def _above(text: str, limit: float) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isnan(value) or value > limit


def _value_options(command: str) -> list[str]:
    parser = command_parsers(build_parser())[command]
    found = []
    for action in parser._actions:
        if not action.option_strings or action.nargs == 0:
            continue
        flag = next(o for o in action.option_strings if o.startswith("--"))
        if flag not in NOT_VALUES:
            found.append(flag)
    return found


COMMANDS = [*RESULT, "models"]


def _tail(command: str) -> list[str]:
    """``--json`` (no progress bars or log lines: stderr holds only warnings and errors), ``--no-report``."""
    return ["--json", "--no-report"] if command in RESULT else ["--json"]


@pytest.mark.timeout(240)
@pytest.mark.parametrize("command", COMMANDS)
def test_option_values_of_every_command(command, world):
    options = _value_options(command)
    assert options, command

    @fuzz(30)
    @given(data=st.data())
    def one(data):
        out = fresh(world)
        picks = data.draw(st.lists(st.sampled_from(options), min_size=1, max_size=2, unique=True), label="options")
        argv = [*_base(command, world, out), *_tail(command)]
        for option in picks:
            argv.append(f"{option}={data.draw(values(option), label=option)}")  # = : "-1e3" is a value
        judge(run(argv), out, RESULT.get(command))
        shutil.rmtree(out, ignore_errors=True)

    one()


# kinds of option value no number option takes: each refused in one line by every command, before any work
NEVER_NUMBERS = {
    "NaN": "nan",
    "infinity": "inf",
    "negative infinity": "-inf",
    "overflowing float": "1e309",
    "integer beyond 64 bits": str(2**64),
    "empty string": "",
    "whitespace": " \t",
    "unicode text": "ε≈½",
    "emoji": "🙂",
    "a budget written as a fraction": "10/255",
    "a list": "1,5",
    "right-to-left override": "\u202e7",
}


def _number_options(command: str, kind: str | None = None) -> list[str]:
    """The command's first int option and its first float option (of ``kind`` only, when given)."""
    parser = command_parsers(build_parser())[command]
    found = [a for a in parser._actions if getattr(a.type, "__name__", "") in ("int", "float") and not a.choices]
    by_kind = {k: [a.option_strings[-1] for a in found if a.type.__name__ == k][:1] for k in ("int", "float")}
    return by_kind[kind] if kind else by_kind["int"] + by_kind["float"]


@pytest.mark.parametrize("command", [c for c in COMMANDS if _number_options(c)])
def test_values_no_number_option_takes_are_one_line(command, world):
    for option in _number_options(command):
        for kind, value in NEVER_NUMBERS.items():
            out = fresh(world)
            if kind == "integer beyond 64 bits" and option not in _number_options(command, "int"):
                continue  # a float option takes 1.8e19
            outcome = run([*_base(command, world, out), *_tail(command), f"{option}={value}"])
            judge(outcome, out, RESULT.get(command))
            assert outcome.code == EXIT_USER and option in outcome.err, (kind, outcome)


def test_the_base_command_lines_are_valid(world):
    for command in COMMANDS:
        out = fresh(world)
        outcome = run([*_base(command, world, out), *_tail(command)])
        assert outcome.code == EXIT_OK, outcome
        judge(outcome, out, RESULT.get(command))


# ---------------------------------------------------------------------------------------------------
# 2. Image files through `evaluate --data FOLDER` and `find dominant --data FOLDER --steps 1`


def _encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _png_header(width: int, height: int, bit_depth: int = 8) -> bytes:
    """A PNG that declares ``width`` x ``height`` grey pixels but holds (almost) none: a decompression bomb's
    header (nothing is decoded before the size is refused)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _halves(size=(32, 16)) -> Image.Image:
    """White left half, black right half (RGB)."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[:, : size[0] // 2] = 255
    return Image.fromarray(array)


def _animated_gif() -> bytes:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    return _encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff() -> bytes:
    pages = [Image.new("L", (16, 16), value) for value in (200, 20)]
    return _encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown turned 90° clockwise
    return _encoded(_halves(), "JPEG", quality=95, exif=exif.tobytes())


def _palette_with_transparency() -> bytes:
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 8, 16))  # left half red, right half index 0: transparent
    return _encoded(image, "PNG", transparency=0)


def _sixteen_bit() -> bytes:
    return _encoded(Image.fromarray(np.full((16, 16), 32768, np.uint16)), "PNG")


LEVEL = 1.01 / 255  # the fast decoding path rounds 16-bit and float images to 8 bits
_PHOTO = _encoded(Image.new("RGB", (24, 24), (10, 200, 30)), "PNG")
# kind -> (file name, its bytes, what reading it must give: "refused" or a check of the C x H x W RGB tensor)
IMAGE_KINDS = {
    "0-byte file": ("empty.png", b"", "refused"),
    "text with an image suffix": ("notes.jpg", b"not an image, just text\n" * 10, "refused"),
    "truncated PNG": ("cut.png", _encoded(_halves((64, 64)), "PNG")[:90], "refused"),
    "truncated JPEG": ("cut.jpg", _encoded(_halves((64, 64)), "JPEG")[:200], "refused"),
    "truncated WebP": ("cut.webp", _encoded(_halves((64, 64)), "WEBP")[:40], "refused"),
    "20000x20000 PNG header (decompression bomb)": ("bomb.png", _png_header(20000, 20000), "refused"),
    "10000x10000 PNG header (over the pixel limit, under PIL's own refusal)": (
        "big.png",
        _png_header(10000, 10000),
        "refused",
    ),
    "1x1 image": (
        "dot.png",
        _encoded(Image.new("RGB", (1, 1), (255, 0, 0)), "PNG"),
        lambda t: t.shape == (3, 1, 1) and t[0, 0, 0] == 1,
    ),
    "animated GIF (first frame)": ("anim.gif", _animated_gif(), lambda t: t[0].mean() > 0.9 and t[2].mean() < 0.1),
    "multi-page TIFF (first page)": (
        "pages.tif",
        _multipage_tiff(),
        lambda t: abs(float(t.mean()) - 200 / 255) < LEVEL,
    ),
    "EXIF orientation 6 (turned upright)": (
        "phone.jpg",
        _exif_rotated(),
        lambda t: t.shape == (3, 32, 16) and t[:, :16].mean() > 0.9 and t[:, 16:].mean() < 0.1,
    ),
    "CMYK JPEG": (
        "cmyk.jpg",
        _encoded(Image.new("CMYK", (16, 16), (255, 0, 0, 0)), "JPEG", quality=100),
        lambda t: t[0].mean() < 0.1 and t[1:].mean() > 0.9,
    ),
    "16-bit PNG": ("deep.png", _sixteen_bit(), lambda t: abs(float(t.mean()) - 32768 / 65535) < LEVEL),
    "palette PNG with transparency (on white)": (
        "pal.png",
        _palette_with_transparency(),
        lambda t: t[:, :, :8].mean(0).sub(torch.tensor(1 / 3)).abs().max() < LEVEL and t[:, :, 8:].min() == 1,
    ),
    "grey + alpha PNG": ("la.png", _encoded(Image.new("LA", (16, 16), (0, 0)), "PNG"), lambda t: t.min() == 1),
    "1-bit PNG": ("bits.png", _encoded(Image.new("1", (16, 16), 1), "PNG"), lambda t: t.min() == 1),
    "float TIFF": (
        "float.tif",
        _encoded(Image.fromarray(np.full((16, 16), 0.25, np.float32)), "TIFF"),
        lambda t: abs(float(t.mean()) - 0.25) < LEVEL,
    ),
    "PNG named .jpg": ("png.jpg", _PHOTO, lambda t: abs(float(t[1].mean()) - 200 / 255) < LEVEL),
    "extreme aspect ratio 2000x1": (
        "line.png",
        _encoded(Image.new("L", (2000, 1), 128), "PNG"),
        lambda t: t.shape == (3, 1, 2000),
    ),
}


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_each_kind_of_image_file_is_read_right_or_refused(kind, tmp_path):
    name, data, expect = IMAGE_KINDS[kind]
    path = tmp_path / name
    path.write_bytes(data)
    for fast in (False, True):
        if expect == "refused":
            with pytest.raises(DataError, match=name.replace(".", r"\.")):
                decode_image(path, 3, fast=fast)
            continue
        image = read_image(path, 3) if not fast else decode_image(path, 3, fast=True).float() / 255
        assert expect(image), (kind, fast, image)


def _image_commands(world, data: Path, out: Path) -> list[tuple[list[str], Path | None, str | None]]:
    w = ["--weights", str(world["weights"])]
    evaluate = ["evaluate", "--pattern", str(world["pattern"]), *MODEL, *w, "--data", data, "--json"]
    find = ["find", "dominant", "--out", out, *MODEL, *w, "--data", data, "--eval-data", world["flat"], "--eps", "0.2"]
    find += ["--steps", "1", "--batch-size", "4", "--json", "--no-report"]
    return [(evaluate, None, None), (find, out, "metrics.json")]


@pytest.mark.timeout(180)
def test_every_kind_of_image_file_alone_through_the_commands(world, tmp_path):
    """Alone in a folder, a file that cannot be used ends the run in one error line naming it (evaluation and
    search); one that decodes is measured (the search on each is in the next test)."""
    for kind, (name, data, expect) in IMAGE_KINDS.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / name).write_bytes(data)
        commands = _image_commands(world, folder, fresh(world))
        for argv, out, result in commands if expect == "refused" else commands[:1]:
            outcome = run(argv)
            judge(outcome, out, result, skips=True)
            assert outcome.code == (EXIT_USER if expect == "refused" else EXIT_OK), (kind, outcome)
            assert expect != "refused" or name in outcome.err, (kind, outcome)


@pytest.mark.timeout(120)
def test_every_kind_of_image_file_beside_good_images_is_skipped_with_a_warning_or_used(world, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, data, _expect in IMAGE_KINDS.values():
        (folder / name).write_bytes(data)
    for good in sorted(world["flat"].iterdir())[:4]:
        shutil.copy(good, folder / good.name)
    argv, out, result = _image_commands(world, folder, fresh(world))[0]  # evaluate: reads every image
    outcome = run(argv)
    judge(outcome, out, result)
    assert outcome.code == EXIT_OK, outcome
    refused = [name for name, _data, expect in IMAGE_KINDS.values() if expect == "refused"]
    warned = [line for line in outcome.lines() if line.startswith("patternscope: warning: skipped ")]
    assert sorted(name for name in refused if any(repr(name) in line for line in warned)) == sorted(refused), warned
    assert len(warned) == len(refused), warned  # each named once; nothing that decodes is skipped
    assert json.loads(outcome.out)["n_images"] == 4 + len(IMAGE_KINDS) - len(refused)  # the others all measured
    argv, out, result = _image_commands(world, folder, fresh(world))[1]  # find dominant: searches on them
    outcome = run(argv)
    judge(outcome, out, result)
    assert outcome.code == EXIT_OK, outcome


@fuzz(25)
@given(blob=st.binary(max_size=600), suffix=st.sampled_from([".png", ".jpg", ".webp", ".gif", ".tif", ".bmp"]))
def test_random_bytes_and_cut_images_are_refused_or_read(world, blob, suffix):
    folder = fresh(world)
    folder.mkdir()
    (folder / f"x{suffix}").write_bytes(blob)
    (folder / f"cut{suffix}").write_bytes(_PHOTO[: len(blob) % len(_PHOTO)])
    for argv, out, result in _image_commands(world, folder, fresh(world)):
        judge(run(argv), out, result, skips=True)
    shutil.rmtree(folder)


# ---------------------------------------------------------------------------------------------------
# 3. Config files: `patternscope --config FILE`


def _config_base(world) -> dict[str, object]:
    """A valid, cheap `find dominant` config."""
    return {
        "command": "find dominant",
        "model": TINY_SPEC,
        "weights": str(world["weights"]),
        "device": "cpu",
        "data": [str(world["flat"])],
        "eval-data": str(world["flat"]),
        "eps": "0.2",
        "steps": 1,
        "batch-size": 4,
    }


def _toml(values: dict[str, object]) -> str:
    from patternscope.cli.config_files import to_toml

    return to_toml(values)


def _yaml(values: dict[str, object]) -> str:
    import yaml

    return yaml.safe_dump(values, allow_unicode=True)


def _without(values: dict[str, object], *keys: str) -> dict[str, object]:
    return {k: v for k, v in values.items() if k not in keys}


# nine levels of nine aliases each: 9**9 strings if anything expanded them
_LAUGHS = (
    "steps: [&a [x, x, x, x, x, x, x, x, x], "
    + ", ".join(
        f"&{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]\n"
)
# kind -> (file name, its text (str or bytes) made from the valid base config, words the error holds, command words
# given before --config)
CONFIG_KINDS = {
    "malformed TOML": ("bad.toml", lambda b: _toml(b) + 'steps = "unclosed\n', "not valid TOML", []),
    "malformed YAML (its multi-line message in one line)": (
        "bad.yaml",
        lambda b: "steps: 1\n  - a\n b: [",
        "not valid YAML",
        [],
    ),
    "duplicate key in TOML": ("dup.toml", lambda b: _toml(b) + "steps = 2\n", "not valid TOML", []),
    "list for a single value": ("list.toml", lambda b: _toml({**b, "steps": [1, 2]}), "single value", []),
    "table for a single value": (
        "table.toml",
        lambda b: _toml(_without(b, "steps")) + "[steps]\nx = 1\n",
        "single value",
        [],
    ),
    "text for an on/off option": ("flag.toml", lambda b: _toml({**b, "fast-decode": "yes"}), "true or false", []),
    "text for a number": ("text.toml", lambda b: _toml({**b, "steps": "many"}), "invalid int value", []),
    "NaN for a number": ("nan.toml", lambda b: _toml({**b, "lr": float("nan")}), "finite", []),
    "integer beyond 64 bits": ("huge.toml", lambda b: _toml({**b, "batch-size": 10**20}), "out of range", []),
    "unknown key": ("unknown.toml", lambda b: _toml({**b, "zzz-no-such-thing": 1}), "not an option", []),
    "an option of this invocation (resume)": (
        "resume.toml",
        lambda b: _toml({**b, "resume": True}),
        "not an option",
        [],
    ),
    "command not a string": ("cmd.toml", lambda b: _toml({**b, "command": 5}), "must be a string", []),
    "command of another kind": ("other.toml", lambda b: _toml(b), "not for", ["scan"]),
    "no command": ("nocmd.toml", lambda b: _toml(_without(b, "command")), "names no command", []),
    "empty file": ("empty.toml", lambda b: "", "names no command", []),
    "not UTF-8": ("latin.toml", lambda b: _toml(b).encode() + b"# caf\xe9\n", "cannot be read", []),
    "YAML list at the top": ("list.yaml", lambda b: "- steps\n- 1\n", "option = value pairs", []),
    "YAML python tag": (
        "tag.yaml",
        lambda b: "steps: !!python/object/apply:os.system ['true']\n",
        "not valid YAML",
        [],
    ),
    "YAML aliases (a billion laughs)": (
        "laughs.yaml",
        lambda b: _yaml(_without(b, "steps")) + _LAUGHS + "steps: *i\n",
        "single value",
        [],
    ),
    "YAML list holding itself": (
        "self.yaml",
        lambda b: _yaml(_without(b, "steps")) + "steps: &s [*s]\n",
        "single value",
        [],
    ),
    "deeply nested TOML array": (
        "deep.toml",
        lambda b: _toml(b) + "lr = " + "[" * 5000 + "]" * 5000 + "\n",
        "too deeply",
        [],
    ),
    "deeply nested YAML": (
        "deep.yaml",
        lambda b: _yaml(b) + "lr: " + "[" * 5000 + "]" * 5000 + "\n",
        "config file",
        [],
    ),
    "unsupported suffix": ("config.json", lambda b: json.dumps(b), "use a .toml", []),
    "NUL in a path": ("nul.toml", lambda b: _toml({**b, "eval-data": "a\x00b"}), "NUL", []),
    "NUL in the output folder": ("nulout.yaml", lambda b: _yaml({**b, "out": "r\x00n"}), "NUL", []),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", CONFIG_KINDS)
def test_each_kind_of_bad_config_file_is_one_line(kind, world, tmp_path):
    name, make, words, before = CONFIG_KINDS[kind]
    text = make(_config_base(world))
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = fresh(world)
    tail = [] if kind == "NUL in the output folder" else ["--out", out]
    outcome = run([*before, "--config", path, *tail, "--json", "--no-report"])
    judge(outcome, out, "metrics.json")
    assert outcome.code == EXIT_USER and words in outcome.err, (kind, outcome)


def test_a_config_folder_instead_of_a_file_is_one_line(world):
    judge(run(["--config", world["flat"], "--out", fresh(world)]))


_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@pytest.mark.timeout(120)
@fuzz(30)
@given(data=st.data(), suffix=st.sampled_from([".toml", ".yaml"]))
def test_configs_with_fuzzed_keys_and_values(world, data, suffix):
    """A valid config with some of its options replaced by values of any type (and unknown keys beside them),
    written as YAML or as TOML; or random text."""
    import yaml

    base = _config_base(world)
    keys = st.sampled_from([*_value_options("find dominant"), "fast-decode", "steps", "zz"]).map(
        lambda k: k.lstrip("-")
    )
    changed = data.draw(st.dictionaries(keys, _JSONISH, min_size=1, max_size=3), label="changed")
    values = {**base, **changed}
    folder = fresh(world)
    folder.mkdir()
    path = folder / f"c{suffix}"
    if data.draw(st.booleans(), label="random text"):
        path.write_text(data.draw(st.text(max_size=80), label="text"), encoding="utf-8", errors="surrogatepass")
    elif suffix == ".yaml":
        path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    else:
        try:
            path.write_text(_toml(values), encoding="utf-8")
        except (TypeError, ValueError):  # to_toml writes flat files only: a nested table stays YAML
            path = path.with_suffix(".yaml")
            path.write_text(yaml.safe_dump(values, allow_unicode=True), encoding="utf-8")
    out = folder / "run"
    judge(run(["--config", path, "--out", out, "--json", "--no-report"]), out, "metrics.json")
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# 4. Pattern files through `evaluate --pattern`: refused, or measured when they are what they claim

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.bool]


def _safetensors(tensors: dict[str, torch.Tensor], meta: object) -> bytes:
    from safetensors.torch import save

    text = meta if isinstance(meta, str) else json.dumps(meta)
    return save(tensors, metadata={"patternscope": text})


def _raw(header: bytes, body: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + body


_GOOD = {"format": "patternscope.pattern/1", "kind": "additive", "eps": 0.2, "norm": "linf", "shape": [1, 16, 16]}
_DELTA = torch.full((1, 16, 16), 0.1)
# kind -> the file's bytes, refused (with words the message holds) or measured
PATTERN_KINDS = {
    "0-byte file": (b"", "not a readable"),
    "8 bytes only": (struct.pack("<Q", 10), "not a readable"),
    "header length 2**63": (struct.pack("<Q", 2**63) + b"{}", "not a readable"),
    "header longer than the file": (struct.pack("<Q", 4000) + b'{"a": 1}', "not a readable"),
    "header not JSON": (_raw(b"{not json"), "not a readable"),
    "header a JSON list": (_raw(b"[1, 2]"), "not a readable"),
    "tensor of unknown dtype": (
        _raw(b'{"delta": {"dtype": "Q9", "shape": [1], "data_offsets": [0, 4]}}', b"0000"),
        "not a readable",
    ),
    "tensor offsets beyond the file": (
        _raw(b'{"delta": {"dtype": "F32", "shape": [1, 16, 16], "data_offsets": [0, 1024]}}', b"00"),
        "not a readable",
    ),
    "metadata not JSON": (_safetensors({"delta": _DELTA}, "{"), "not a readable"),
    "metadata a JSON list": (_safetensors({"delta": _DELTA}, [1]), "not a readable"),
    "no delta tensor": (_safetensors({"mask": _DELTA}, _GOOD), "no tensor 'delta'"),
    "integer values": (_safetensors({"delta": torch.zeros(1, 16, 16, dtype=torch.int8)}, _GOOD), "floating-point"),
    "no eps": (_safetensors({"delta": _DELTA}, {"kind": "additive"}), "not an additive"),
    "eps not a number": (_safetensors({"delta": _DELTA}, {**_GOOD, "eps": "wide"}), "unreadable budget"),
    "eps NaN": (_safetensors({"delta": _DELTA}, {**_GOOD, "eps": "nan"}), "must be positive"),
    "eps negative": (_safetensors({"delta": _DELTA}, {**_GOOD, "eps": -0.1}), "must be positive"),
    "eps a list": (_safetensors({"delta": _DELTA}, {**_GOOD, "eps": [0.1]}), "unreadable budget"),
    "unknown norm": (_safetensors({"delta": _DELTA}, {**_GOOD, "norm": "l7"}), "norm must be"),
    "a class-wise pattern": (_safetensors({"delta": _DELTA}, {**_GOOD, "kind": "classwise"}), "not an additive"),
    "one dimension": (_safetensors({"delta": torch.zeros(16)}, _GOOD), "C x H x W"),
    "four dimensions": (_safetensors({"delta": torch.zeros(1, 1, 16, 16)}, _GOOD), "C x H x W"),
    "a zero-size dimension": (_safetensors({"delta": torch.zeros(1, 0, 16)}, _GOOD), "C x H x W"),
    "another input size": (_safetensors({"delta": torch.zeros(3, 16, 16)}, _GOOD), "(3, 16, 16)"),
    "NaN values": (_safetensors({"delta": torch.full((1, 16, 16), float("nan"))}, _GOOD), "non-finite"),
    "infinite values": (_safetensors({"delta": torch.full((1, 16, 16), float("inf"))}, _GOOD), "non-finite"),
    "over its declared budget": (_safetensors({"delta": _DELTA * 5}, _GOOD), "declares a budget"),
    "float16 values within budget": (_safetensors({"delta": _DELTA.half()}, _GOOD), None),
    "float64 values within budget": (_safetensors({"delta": _DELTA.double()}, _GOOD), None),
}


@pytest.mark.parametrize("kind", PATTERN_KINDS)
def test_each_kind_of_pattern_file_is_refused_in_one_line_or_measured(kind, world, tmp_path):
    data, words = PATTERN_KINDS[kind]
    path = tmp_path / "p.safetensors"
    path.write_bytes(data)
    argv = ["evaluate", "--pattern", path, *MODEL, "--weights", world["weights"], "--data", world["flat"], "--json"]
    out = fresh(world)
    outcome = run([*argv, "--out", out, "--no-report"])
    judge(outcome, out, "metrics.json")
    if words is None:
        assert outcome.code == EXIT_OK, (kind, outcome)
    else:
        assert outcome.code == EXIT_USER and words in outcome.err, (kind, outcome)


@pytest.mark.timeout(120)
@fuzz(40)
@given(data=st.data())
def test_fuzzed_pattern_files_are_refused_or_are_what_they_claim(world, data):
    """Any dtype, shape, values and metadata: `evaluate` measures the file only when it is a finite, C x H x W
    floating-point pattern of the model's size within the budget it declares (or refuses it in one line)."""
    shape = data.draw(st.sampled_from([(1, 16, 16), (1, 16, 16), (3, 16, 16), (1, 8, 8), (16,), (1, 0, 16)]))
    dtype = data.draw(st.sampled_from(DTYPES), label="dtype")
    scale = data.draw(st.sampled_from([0.0, 0.05, 0.1999, 0.2, 0.2001, 0.3, 1.0, 50.0, float("nan"), float("inf")]))
    delta = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * scale
    delta = delta.to(dtype)
    eps = data.draw(st.sampled_from([0.2, 0.2, "0.2", 0, -1, "nan", "inf", 1e-9, "x", None]), label="eps")
    meta = {**_GOOD, "eps": eps} if eps is not None else {k: v for k, v in _GOOD.items() if k != "eps"}
    if data.draw(st.booleans(), label="checksum"):
        from patternscope.core.patterns import tensor_checksum

        meta["sha256"] = tensor_checksum({"delta": delta})
        if data.draw(st.booleans(), label="tampered"):
            meta["sha256"] = "0" * 64
    folder = fresh(world)
    folder.mkdir()
    path = folder / "p.safetensors"
    path.write_bytes(_safetensors({"delta": delta}, meta))
    argv = ["evaluate", "--pattern", path, *MODEL, "--weights", world["weights"], "--data", world["flat"], "--json"]
    outcome = run(argv)
    judge(outcome)
    values = delta.float()
    honest = (
        dtype.is_floating_point
        and shape == (1, 16, 16)
        and meta.get("sha256", "") != "0" * 64
        and isinstance(eps, float | int | str)
        and _number(eps) > 0
        and bool(torch.isfinite(values).all())
        and float(values.abs().max()) <= _number(eps) * (1 + 1e-3) + 1e-4
    )
    assert outcome.code == (EXIT_OK if honest else EXIT_USER), (shape, dtype, scale, eps, meta.get("sha256"), outcome)
    shutil.rmtree(folder, ignore_errors=True)


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")
    return number if math.isfinite(number) else float("nan")


@fuzz(25)
@given(blob=st.binary(max_size=300), length=st.integers(0, 2**64 - 1))
def test_random_pattern_file_bytes_are_one_line(world, blob, length):
    folder = fresh(world)
    folder.mkdir()
    (folder / "a.safetensors").write_bytes(blob)
    (folder / "b.safetensors").write_bytes(struct.pack("<Q", length) + blob)
    for name in ("a", "b"):
        argv = ["evaluate", "--pattern", folder / f"{name}.safetensors", *MODEL, "--data", world["flat"], "--json"]
        outcome = run([*argv, "--weights", world["weights"]])
        judge(outcome)
        assert outcome.code == EXIT_USER, outcome
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# 5. Run folders through `patternscope report`: damaged result files


@pytest.fixture(scope="module")
def finished_run(world) -> Path:
    out = world["scratch"].parent / "finished"
    assert run([*_base("find dominant", world, out), "--json"]).code == EXIT_OK
    return out


REPORT_KINDS = {
    "not a folder": lambda run_dir: run_dir / "metrics.json",
    "a folder without results": lambda run_dir: run_dir / "report_figures",
    "a missing folder": lambda run_dir: run_dir / "nowhere",
}


@pytest.mark.parametrize("kind", REPORT_KINDS)
def test_report_of_something_else_than_a_run_folder_is_one_line(kind, finished_run):
    outcome = run(["report", REPORT_KINDS[kind](finished_run)])
    judge(outcome)
    assert outcome.code == EXIT_USER, outcome


@pytest.mark.timeout(120)
@fuzz(25)
@given(data=st.data())
def test_reports_of_folders_with_damaged_result_files(finished_run, world, data):
    """A result file of a finished run replaced by random bytes or by JSON of another shape: the report is written
    (the damage does not matter to it) or refused in one line."""
    folder = fresh(world)
    shutil.copytree(finished_run, folder)
    name = data.draw(st.sampled_from(sorted(p.name for p in folder.glob("*.json"))), label="file")
    content = data.draw(
        st.binary(max_size=200) | _JSONISH.map(lambda v: json.dumps(v).encode()) | st.just(b""), label="content"
    )
    (folder / name).write_bytes(content)
    outcome = run(["report", folder])
    judge(outcome)
    assert outcome.code == EXIT_USER or (folder / "report.html").is_file(), outcome
    shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# 6. The same in real processes (the exit code, argparse's and the warnings' own output), under a timeout


@pytest.mark.slow
def test_bad_input_in_a_real_process_is_one_line_and_exit_2(world, tmp_path):
    import subprocess
    import sys

    (tmp_path / "bomb").mkdir()
    (tmp_path / "bomb" / "big.png").write_bytes(_png_header(10000, 10000))
    (tmp_path / "bad.yaml").write_text("command: find dominant\nsteps: 1\n  - a\n b: [")
    w = ["--weights", str(world["weights"])]
    cases = {
        "an image over the pixel limit": [
            "evaluate",
            "--pattern",
            world["pattern"],
            *MODEL,
            *w,
            "--data",
            tmp_path / "bomb",
        ],
        "malformed YAML": ["--config", tmp_path / "bad.yaml", "--out", tmp_path / "run"],
        "a value argparse refuses": ["find", "dominant", "--out", tmp_path / "run", "--steps", "nan"],
        "an unknown option": ["find", "dominant", "--out", tmp_path / "run", "--stpes", "1"],
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for kind, argv in cases.items():
        done = subprocess.run(
            [sys.executable, "-m", "patternscope", *map(str, argv)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == EXIT_USER, (kind, done.stderr)
        assert len(lines) == 1 and lines[0].startswith("patternscope: error: "), (kind, done.stderr)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------
# How many kinds of bad input the CI tables and these fuzzers assert (issue 19's target: at least 40)

# the hypothesis fuzzers, each a kind of its own beside the tables' kinds
FUZZERS = {
    "option values of every command (bad and odd numbers and texts, any size, unicode)": COMMANDS,
    "random bytes and cut images in an image folder": [".png", ".jpg", ".webp", ".gif", ".tif", ".bmp"],
    "configs with fuzzed keys and values of any type, as TOML or YAML, or random text": [".toml", ".yaml"],
    "pattern files of any dtype, shape, values, budget and checksum": DTYPES,
    "random pattern file bytes, with and without a safetensors header length": ["evaluate"],
    "run folders with a damaged result file": ["report"],
}


def _bad_input_table() -> list[tuple]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bad_input_table", Path(__file__).parent / "test_bad_input.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CASES


def kinds() -> dict[str, list[str]]:
    """Every kind of bad input asserted, by table (the test_bad_input table, and this file's)."""
    refused_images = [k for k, (_n, _d, expect) in IMAGE_KINDS.items() if expect == "refused"]
    odd_images = [k for k in IMAGE_KINDS if k not in refused_images]
    return {
        "test_bad_input.CASES": [case[0] for case in _bad_input_table()],
        "values no number option takes": list(NEVER_NUMBERS),
        "image files refused": refused_images,
        "odd image files read right": odd_images,
        "config files": list(CONFIG_KINDS),
        "pattern files": list(PATTERN_KINDS),
        "report targets": list(REPORT_KINDS),
        "fuzzers": list(FUZZERS),
    }


def test_at_least_forty_kinds_of_bad_input_are_asserted():
    found = kinds()
    assert all(len(table) == len(set(table)) for table in found.values())
    every = {f"{name}: {kind}" for name, table in found.items() for kind in table}  # "0-byte file" is two kinds
    assert len(every) >= 40, {name: len(table) for name, table in found.items()}


if os.environ.get("PATTERNSCOPE_FUZZ_LOG"):  # how far the examples got: exit codes and first error words
    _run = run

    def run(argv: list[str]) -> Outcome:  # type: ignore[no-redef]
        outcome = _run(argv)
        with open(os.environ["PATTERNSCOPE_FUZZ_LOG"], "a") as fh:
            fh.write(f"{outcome.code} {argv[:2]} {' | '.join(outcome.lines())[:150]!r}\n")
        return outcome
