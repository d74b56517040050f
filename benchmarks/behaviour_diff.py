"""Behaviour-comparison harness: prove that a refactor changes no behaviour of the ``patternscope`` command.

``run`` executes a fixed list of 22 command lines (every command of ``patternscope --help``, plus ``--json``,
``--config`` reruns, ``--resume``, a bad input and non-default methods and recipes) against the code in
``--src`` (put first on ``PYTHONPATH``, so the code of another checkout can be run, e.g. a baseline exported
with ``git archive``), each in its own folder ``OUT/NN_name`` (the working directory of the command, so its
relative ``--out`` lands there), and records ``invocation.json`` (argv, exit code, stdout, stderr) beside the
outputs. Every input (a tiny CNN's source, its trained weights, small image folders) is generated first,
deterministically (fixed seeds, one thread, no download: scikit-learn's bundled 8x8 digits), into ``OUT/inputs``;
the generation does not use patternscope, so both sides of a comparison get the same bytes. ``diff`` compares
two ``run`` outputs and exits 1 when anything differs.

Run it from the repository root with the project's virtual environment, on one thread::

    git archive HEAD | tar -x -C /tmp/base                      # the baseline's code
    OMP_NUM_THREADS=1 python benchmarks/behaviour_diff.py run --src /tmp/base/src --out /tmp/bd/base
    OMP_NUM_THREADS=1 python benchmarks/behaviour_diff.py run --src src --out /tmp/bd/new
    python benchmarks/behaviour_diff.py diff /tmp/bd/base /tmp/bd/new

``run --only NAME[,NAME]`` reruns some invocations into an existing output (those whose setup copies an earlier
invocation's folder need that one there). The whole list takes about 2.5 minutes on one CPU thread. The
invocations (``INVOCATIONS``, one line each in ``run``'s output; ``OUT/NN_name/invocation.json`` holds the argv)::

    01 find dominant (user model file, flat folder + labelled tree)   12 evaluate PATTERN_FILE --out, 2 views
    02 find dominant --json, kl loss on a hidden layer, l2, patience  13 compare 4 methods, --set
    03 find dominant --recipe paper --prior-share                      14 compare 4 other methods, --json
    04 find dominant --resume of a finished run (copy of 01)           15 transfer 2 patterns x 2 models
    05 --config 01's config.toml --out NEW                             16 models
    06 find classwise --class 2 --canvases 2                           17 models --layers --json
    07 find classwise --all-classes on built-in digits, --json         18 downstream
    08 scan of a backdoored model, --json                              19 harden
    09 scan --reference (clean weights, cache in the folder)           20 experiment settings (built-in digits)
    10 scan --rule mad --neural-cleanse --natural-canvas               21 report RUN --json (copy of 01)
    11 evaluate RUN --json                                             22 bad input (unreadable images): exit 2

What ``diff`` compares, per invocation folder: the set of files (``.patternscope.lock`` files ignored); the exit
code and argv; stdout and stderr (as JSON when they are JSON, else as text after masking, with tqdm's progress
bars removed: how often a bar is redrawn depends on the time); every ``.json`` file after dropping the ignored
keys and masking its strings; ``.toml``/``.csv``/``.txt``/``.md``/``.html`` files after masking (in
``report.html`` also the table cells of ignored values: the ``seconds`` column of a comparison, the value of a
``search.seconds`` row; every other number, and the embedded figures, are compared); ``.safetensors`` files
byte-equal, else their tensor data byte-equal and their headers equal after dropping ignored keys (the pattern
metadata carries ``run_id`` and ``created``); ``.pt`` files byte-equal, else loaded (``weights_only``) and
compared value by value, tensors bit for bit (a checkpoint never has the same bytes twice: ``torch.save`` names
the archive's inner folder after the random temporary file it writes first); other files (PNG) byte-equal.

Ignored JSON keys (dropped at any depth; also safetensors metadata, ``.pt`` dictionaries and report.html table
labels), chosen from the data (of these, the outputs hold ``run_id``, ``created``, ``patternscope_version``,
``seconds``, ``search_seconds``): ``run_id`` (a random uuid4 per run), ``seconds``, ``time``, ``elapsed``,
``wall``, ``duration``, ``throughput``, keys ending in ``_s``/``_seconds``/``_sec``/``_per_second``/
``_per_sec``/``_throughput``, ``created``, ``date``, ``timestamp``, ``started``, ``finished``,
``patternscope_version``, ``version``, ``torch``, ``python``, ``platform``, ``host``, ``hostname``, ``pid``
(:data:`IGNORED_KEYS`, :func:`ignored_key`). Results named like rates (``clean_rate``, ``poison_rate``) are
compared.

Masked in all text (stdout, stderr, text files, JSON strings): the absolute paths of each side's output folder
and ``--src`` (``<OUT>``, ``<SRC>``); 32-hex-digit tokens (``<HEX32>``: run ids, and the reference-scan cache key,
which hashes the images' absolute paths and modification times; also in file names); ISO dates and times
(``<DATE>``); durations such as ``10.2 s`` (``<T>``; the scan report's time card); the patternscope version.
Nothing else differs between two runs of the same code (checked: two runs of one checkout compare equal).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INPUTS = "inputs"
RECORD = "invocation.json"
MANIFEST = "manifest.json"
LOCK_NAMES = {".patternscope.lock"}

# ---------------------------------------------------------------------------------------------------
# Inputs: a tiny CNN (a user model file), its weights and small image folders, all made here

MODEL_SOURCE = '''"""A 2-conv CNN for 1 x 16 x 16 digits (10 classes), written by benchmarks/behaviour_diff.py."""

import torch
from torch import nn


class TinyCNN(nn.Module):
    input_size = (1, 16, 16)
    mean = (0.5,)
    std = (0.5,)

    def __init__(self, channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc = nn.Linear(32 * 4 * 4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))
'''

MODEL = "../inputs/tiny_model.py:TinyCNN"
CLEAN = "../inputs/clean.safetensors"
BACKDOOR = "../inputs/backdoor.safetensors"
OTHER = "../inputs/other.safetensors"
TRAIN = "../inputs/train"  # flat folder of 16 x 16 grey PNGs
TREE = "../inputs/tree"  # ImageFolder tree of 32 x 32 RGB PNGs, 10 classes
BROKEN = "../inputs/broken"  # one .png that is not an image
BACKDOOR_TARGET = 3


def make_inputs(folder: Path) -> dict[str, str]:
    """Write the inputs into ``folder`` (same bytes every time) and return their sha256 by relative path."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny_model.py").write_text(MODEL_SOURCE, encoding="utf-8")
    namespace: dict[str, Any] = {}
    exec(compile(MODEL_SOURCE, "tiny_model.py", "exec"), namespace)
    tiny_cnn = namespace["TinyCNN"]

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    train_x, train_y, test_x, test_y = x[:1400], y[:1400], x[1400:], y[1400:]

    def train(images: torch.Tensor, labels: torch.Tensor, seed: int, epochs: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        net = tiny_cnn()
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _epoch in range(epochs):
            order = torch.randperm(len(labels))
            for i in range(0, len(order), 64):
                idx = order[i : i + 64]
                loss = F.cross_entropy(net((images[idx] - 0.5) / 0.5), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        return {k: v.detach().contiguous() for k, v in net.state_dict().items()}

    save_file(train(train_x, train_y, seed=0, epochs=5), str(folder / "clean.safetensors"))
    save_file(train(train_x, train_y, seed=1, epochs=2), str(folder / "other.safetensors"))
    # BadNets: a white 3 x 3 patch in the bottom-right corner on 10% of the images, relabelled to the target
    g = torch.Generator().manual_seed(2)
    poisoned = torch.randperm(len(train_y), generator=g)[: len(train_y) // 10]
    bad_x, bad_y = train_x.clone(), train_y.clone()
    bad_x[poisoned, :, -3:, -3:] = 1.0
    bad_y[poisoned] = BACKDOOR_TARGET
    save_file(train(bad_x, bad_y, seed=2, epochs=5), str(folder / "backdoor.safetensors"))

    def grey(img: torch.Tensor) -> Image.Image:
        return Image.fromarray((img[0].numpy() * 255).round().astype(np.uint8), mode="L")

    flat = folder / "train"
    flat.mkdir(exist_ok=True)
    for i in range(96):
        grey(train_x[i]).save(flat / f"img_{i:03d}.png")
    tree = folder / "tree"
    counts = [0] * 10
    for i in range(len(test_y)):
        label = int(test_y[i])
        if counts[label] >= 12:
            continue
        counts[label] += 1
        (tree / str(label)).mkdir(parents=True, exist_ok=True)
        grey(test_x[i]).resize((32, 32), Image.Resampling.BILINEAR).convert("RGB").save(
            tree / str(label) / f"{i:03d}.png"
        )
    broken = folder / "broken"  # a folder whose only image is not an image
    broken.mkdir(exist_ok=True)
    (broken / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---------------------------------------------------------------------------------------------------
# The invocations


def copy_from(source: str, target: str, drop: tuple[str, ...] = ()) -> Callable[[Path], None]:
    """A setup step: copy ``../source`` (a folder or file, relative to the out folder) to ``target``."""

    def setup(cwd: Path) -> None:
        src = cwd.parent / source
        dst = cwd / target
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*LOCK_NAMES))
            for name in drop:
                (dst / name).unlink(missing_ok=True)
        else:
            shutil.copy2(src, dst)

    return setup


@dataclass
class Invocation:
    name: str
    argv: list[str]
    setup: Callable[[Path], None] | None = None
    expect: int = 0  # the exit code this invocation should have (run says when it has another)
    note: str = ""
    env: dict[str, str] = field(default_factory=dict)


def cli(*parts: str | list[str]) -> list[str]:
    """A command line from strings (split at spaces; no argument here holds one) and lists (taken as they are)."""
    argv: list[str] = []
    for part in parts:
        argv += part.split() if isinstance(part, str) else part
    return argv


TINY = cli(f"--model {MODEL} --weights {CLEAN} --device cpu")
BAD_MODEL = cli(f"--model {MODEL} --weights {BACKDOOR} --device cpu")
FIND = cli("find dominant --out run", TINY, f"--data {TRAIN} --eval-data {TREE} --eps 0.2 --steps 30")
FIND += cli("--batch-size 16 --checkpoint-every 10")
RUN01 = "../01_find_dominant/run"

INVOCATIONS = [
    Invocation("find_dominant", FIND, note="find dominant: a user model file, a flat folder, a labelled tree"),
    Invocation(
        "find_dominant_json",
        cli(FIND, "--loss kl --layer features.3 --patience 1 --seed 1 --norm l2 --eps 1.5 --lr 0.05 --json"),
        note="--json; kl loss on a hidden layer, l2 budget, --patience, seed 1",
    ),
    Invocation(
        "find_dominant_paper",
        cli(FIND, "--recipe paper --steps 12 --prior-share 0.25 --quiet"),
        note="--recipe paper with a PSP-UAP prior stage",
    ),
    Invocation(
        "find_dominant_resume",
        cli(FIND, "--resume"),
        setup=copy_from("01_find_dominant/run", "run"),
        note="--resume of a finished run (a copy of 01's folder)",
    ),
    Invocation(
        "find_dominant_config",
        cli("--config config.toml --out rerun --quiet"),
        setup=copy_from("01_find_dominant/run/config.toml", "config.toml"),
        note="--config FILE: rerun from 01's config.toml into a new folder",
    ),
    Invocation(
        "find_classwise",
        cli("find classwise --out cw", TINY, f"--data {TREE} --class 2 --steps 60 --batch-size 16 --top-k 0.15")
        + cli("--canvases 2 --quiet"),
        note="find classwise: one class, canvas sensitivity",
    ),
    Invocation(
        "find_classwise_all",
        cli("find classwise --out all", TINY, "--data digits --all-classes --steps 8 --max-search-images 16")
        + cli("--learn-canvas --json"),
        note="find classwise --all-classes on the built-in digits, --json",
    ),
    Invocation(
        "scan",
        cli("scan --out scan", BAD_MODEL, f"--data {TREE} --steps 150 --additive-steps 50 --batch-size 16 --json"),
        note="scan a backdoored model (calibrated rule, additive signal), --json",
    ),
    Invocation(
        "scan_reference",
        cli("scan --out scan", BAD_MODEL, f"--data {TREE} --steps 20 --classes 1,3,5 --reference {CLEAN}")
        + cli("--reference-cache refcache --no-additive --quiet"),
        note="scan in reference mode against the clean weights (its reference scan cached in the folder)",
    ),
    Invocation(
        "scan_mad_neural_cleanse",
        cli("scan --out scan", BAD_MODEL, f"--data {TREE} --steps 20 --classes 2,3,4 --rule mad --no-additive")
        + cli("--neural-cleanse --nc-seeds 1 --nc-max-epochs 1 --natural-canvas --quiet"),
        note="scan --rule mad with Neural Cleanse beside it, natural canvas",
    ),
    Invocation(
        "evaluate_json",
        cli(f"evaluate --pattern {RUN01} --weights {CLEAN} --device cpu --data {TREE} --json"),
        note="evaluate a run folder's pattern (the model spec read from the pattern), --json",
    ),
    Invocation(
        "evaluate_out",
        cli("evaluate --pattern ../03_find_dominant_paper/run/pattern.safetensors", TINY, f"--data {TREE}")
        + cli("--eval-views 2 --out eval --quiet"),
        note="evaluate a pattern file with --out, 2 views",
    ),
    Invocation(
        "compare",
        cli("compare --out cmp", TINY, f"--data {TRAIN} --eval-data {TREE} --eps 0.2 --budget 132")
        + cli("--methods dominant,sgd-uap,fff,cos-uap --set sgd-uap.lr=0.02 --quiet"),
        note="compare 4 methods side by side, one setting changed with --set",
    ),
    Invocation(
        "compare_paper_json",
        cli("compare --out cmp", TINY, f"--data {TRAIN} --eval-data {TREE} --eps 0.2 --budget 99")
        + cli("--methods dominant-paper,gd-uap,df-uap,psp-uap --json"),
        note="compare the 4 other methods, --json",
    ),
    Invocation(
        "transfer",
        cli(f"transfer --patterns {RUN01} ../03_find_dominant_paper/run --models {MODEL}@{CLEAN} {MODEL}@{OTHER}")
        + cli(f"--data {TREE} --out tr --device cpu --quiet"),
        note="transfer: 2 patterns x 2 models",
    ),
    Invocation("models", cli("models"), note="models listing (text)"),
    Invocation(
        "models_layers_json",
        cli(f"models --layers {MODEL} --weights {CLEAN} --json"),
        note="models --layers of the user model, --json",
    ),
    Invocation(
        "downstream",
        cli(f"downstream --out ds --backbone {MODEL} --weights {CLEAN} --device cpu --task-data {TREE}")
        + cli(f"--pattern {RUN01} --epochs 1 --own-steps 10 --batch-size 16 --quiet"),
        note="downstream: a head trained on the tree; the backbone's pattern and its own",
    ),
    Invocation(
        "harden",
        cli("harden --out hd", TINY, f"--data {TREE} --eps 0.2 --epochs 1 --batch-size 16 --delta-steps 2 --pool 2")
        + cli("--methods dominant --budget 66 --restarts 1 --classwise-steps 5 --max-accuracy-drop 0.5 --quiet"),
        note="harden: one method measured before and after, class-wise galleries",
    ),
    Invocation(
        "experiment_settings",
        cli("experiment settings --out exp --data digits --train-images 100 --epochs 1 --search-images 20")
        + cli("--classwise-epochs 0.1 --quiet"),
        note="experiment settings on the built-in digits",
    ),
    Invocation(
        "report",
        cli("report run --json"),
        setup=copy_from("01_find_dominant/run", "run", drop=("report.html",)),
        note="report for a copy of 01's run folder (its report.html removed first), --json",
    ),
    Invocation(
        "bad_input",
        cli("find dominant --out run", TINY, f"--data {BROKEN} --eval-data {TREE} --eps 0.2 --steps 5"),
        expect=2,
        note="bad input (a folder whose only image is unreadable): exit 2, one error line, no run folder left",
    ),
]
assert len(INVOCATIONS) == 22 and len({i.name for i in INVOCATIONS}) == 22


def folder_name(index: int, inv: Invocation) -> str:
    return f"{index + 1:02d}_{inv.name}"


# ---------------------------------------------------------------------------------------------------
# run


def src_version(src: Path) -> str | None:
    """The version string in ``SRC/patternscope/_version.py`` (read as text, nothing imported)."""
    path = src / "patternscope" / "_version.py"
    if not path.is_file():
        return None
    found = re.search(r"__version__\s*=\s*['\"]([^'\"]+)['\"]", path.read_text(encoding="utf-8"))
    return found.group(1) if found else None


def invocation_env(src: Path, cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "PYTHONPATH")}
    env.update(
        PYTHONPATH=str(src),
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        CUDA_VISIBLE_DEVICES="",  # the commands without --device (experiment settings) run on the CPU too
        PYTHONHASHSEED="0",
        COLUMNS="100",  # argparse wraps help and usage lines at the terminal width
        PATTERNSCOPE_CACHE=str(cwd / "cache"),  # reference scans are cached inside the invocation's folder
    )
    return env


def decode(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8", errors="replace")
    return data or ""


def run_one(index: int, inv: Invocation, out: Path, src: Path, timeout: float) -> dict[str, Any]:
    cwd = out / folder_name(index, inv)
    if cwd.exists():
        shutil.rmtree(cwd)
    cwd.mkdir(parents=True)
    if inv.setup is not None:
        try:
            inv.setup(cwd)
        except FileNotFoundError as exc:
            raise SystemExit(
                f"behaviour_diff: error: {inv.name} copies {exc.filename}: run that invocation first"
            ) from None
    argv = [sys.executable, "-m", "patternscope", *inv.argv]
    env = invocation_env(src, cwd)
    start = time.perf_counter()
    try:
        # bytes, decoded here: text=True would turn tqdm's carriage returns into newlines
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=timeout, check=False)
        code, stdout, stderr = proc.returncode, decode(proc.stdout), decode(proc.stderr)
    except subprocess.TimeoutExpired as exc:
        code, stdout, stderr = -9, decode(exc.stdout), decode(exc.stderr) + "\n<timed out>"
    seconds = time.perf_counter() - start
    record = {
        "name": inv.name,
        "note": inv.note,
        "argv": ["patternscope", *inv.argv],
        "exit_code": code,
        "stdout": stdout,
        "stderr": stderr,
        "seconds": round(seconds, 2),
        "env": {k: env[k] for k in ("PYTHONPATH", "OMP_NUM_THREADS", "PATTERNSCOPE_CACHE", "COLUMNS")},
    }
    (cwd / RECORD).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return record


def cmd_run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    src, out = Path(args.src).resolve(), Path(args.out).resolve()
    if not (src / "patternscope" / "__init__.py").is_file():
        print(f"behaviour_diff: error: {src} holds no patternscope package", file=sys.stderr)
        return 2
    names = [inv.name for inv in INVOCATIONS]
    only = [n for n in args.only.split(",") if n] if args.only else None
    if only is not None and (unknown := sorted(set(only) - set(names))):
        print(f"behaviour_diff: error: unknown invocations {unknown}; known: {names}", file=sys.stderr)
        return 2
    if only is None and out.exists() and any(out.iterdir()):
        if not args.overwrite:
            print(f"behaviour_diff: error: {out} is not empty (use --overwrite or another --out)", file=sys.stderr)
            return 2
        for child in out.iterdir():  # only what a run writes
            if child.name in (INPUTS, MANIFEST) or re.fullmatch(r"\d\d_\w+", child.name):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    probe = "import patternscope, sys; sys.stdout.write(patternscope.__file__)"
    env = invocation_env(src, out)
    imported = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False)
    if not Path(imported.stdout or "/").resolve().is_relative_to(src):  # e.g. an editable install's import hook
        print(
            f"behaviour_diff: error: patternscope is imported from {imported.stdout or '?'}, not {src}", file=sys.stderr
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    manifest_path = out / MANIFEST
    if (out / INPUTS).is_dir() and manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    else:
        print("inputs ...", flush=True)
        manifest = {"inputs": make_inputs(out / INPUTS)}
    manifest.update(
        src=str(src),
        out=str(out),
        patternscope_version=src_version(src),
        python=sys.version.split()[0],
        torch=torch.__version__,
        invocations=[folder_name(i, inv) for i, inv in enumerate(INVOCATIONS)],
    )
    codes = manifest.setdefault("exit_codes", {})
    for index, inv in enumerate(INVOCATIONS):
        if only is not None and inv.name not in only:
            continue
        record = run_one(index, inv, out, src, args.timeout)
        codes[folder_name(index, inv)] = record["exit_code"]
        unexpected = f"  (expected {inv.expect})" if record["exit_code"] != inv.expect else ""
        line = f"{folder_name(index, inv):28s} exit {record['exit_code']:3d}  {record['seconds']:6.1f} s{unexpected}"
        print(line, flush=True)
    manifest["seconds"] = round(time.perf_counter() - start, 1)
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    print(f"done in {manifest['seconds']:.1f} s: {out}")
    return 0


# ---------------------------------------------------------------------------------------------------
# diff

HEX32 = re.compile(r"(?<![0-9a-f])[0-9a-f]{32}(?![0-9a-f])")  # run ids (uuid4 hex), reference-cache keys
IGNORED_KEYS = {
    "run_id",
    "seconds",
    "time",
    "elapsed",
    "wall",
    "created",
    "date",
    "timestamp",
    "started",
    "finished",
    "patternscope_version",
    "version",
    "torch",
    "python",
    "platform",
    "host",
    "hostname",
    "pid",
    "throughput",
    "duration",
}
TIMING_SUFFIXES = ("_s", "_seconds", "_sec", "_per_second", "_per_sec", "_throughput")


def ignored_key(key: object) -> bool:
    """Whether a JSON key holds a timing, a speed, a version or a random id (dropped before comparing). Suffixes
    only: ``clean_rate``, ``poison_rate`` or ``per_source_class`` are results and are compared."""
    if not isinstance(key, str):
        return False
    k = key.lower()
    return k in IGNORED_KEYS or k.endswith(TIMING_SUFFIXES)


class Masker:
    """Masks what differs between two runs of the same code in a text: paths, run ids, durations, dates."""

    def __init__(self, roots: dict[str, str], version: str | None) -> None:
        self.roots = sorted(((p, tag) for p, tag in roots.items() if p), key=lambda pt: -len(pt[0]))
        self.version = version

    PATTERNS = (
        (HEX32, "<HEX32>"),
        (re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?"), "<DATE>"),
        (re.compile(r"\[\d+:\d\d(:\d\d)?(<[\d:?]+)?(, *[^\]\n]*)?\]"), "[<T>]"),  # tqdm
        (re.compile(r"\b\d+(\.\d+)?\s?(s|ms|sec|seconds|min|h)\b(?!\w)"), "<T>"),
        (re.compile(r"\b\d+:\d\d:\d\d\b"), "<T>"),
        (re.compile(r"\d+(\.\d+)?\s?(it|img|images|steps|s)/s\b"), "<RATE>"),
    )

    def __call__(self, text: str) -> str:
        for path, tag in self.roots:
            text = text.replace(path, tag)
        for pattern, tag in self.PATTERNS:
            text = pattern.sub(tag, text)
        if self.version:
            text = text.replace(self.version, "<VERSION>")
        return text


TABLE = re.compile(r"<table\b.*?</table>", re.S)
ROW = re.compile(r"<tr\b[^>]*>.*?</tr>", re.S)
CELL = re.compile(r"(<t[hd]\b[^>]*>)(.*?)(</t[hd]>)", re.S)
TAG = re.compile(r"<[^>]*>")


def timing_label(text: str) -> bool:
    """Whether a table header or a ``dotted.key`` row label names an ignored value (e.g. ``search.seconds``)."""
    last = TAG.sub("", text).strip().split(".")[-1]
    return bool(last) and ignored_key(last.replace(" ", "_"))


def mask_html_tables(html: str) -> str:
    """report.html with the cells of ignored values masked: the columns under an ignored header (compare's
    ``seconds``) and the value of a two-cell row whose label is an ignored key (``search.seconds``)."""

    def table(match: re.Match[str]) -> str:
        columns: set[int] = set()

        def row(found: re.Match[str]) -> str:
            cells = list(CELL.finditer(found.group(0)))
            if not cells:
                return found.group(0)
            if cells[0].group(1).startswith("<th"):
                columns.update(i for i, c in enumerate(cells) if timing_label(c.group(2)))
                return found.group(0)
            masked = set(columns)
            if len(cells) == 2 and timing_label(cells[0].group(2)):
                masked.add(1)
            text = found.group(0)
            for i in sorted(masked, reverse=True):
                if i < len(cells):
                    text = text[: cells[i].start(2)] + "<T>" + text[cells[i].end(2) :]
            return text

        return ROW.sub(row, match.group(0))

    return TABLE.sub(table, html)


PROGRESS = re.compile(r"\d+%\||\[\d+:\d\d(:\d\d)?[<,\]]")  # a tqdm bar: "47%|" or "[00:01<00:02, ..."


def without_progress(text: str) -> str:
    """``text`` without tqdm's progress bars (how often a bar is redrawn depends on the time; the log lines stay):
    each line's carriage-return segments that are bars or blank are dropped, and lines left empty by that."""
    lines = []
    for line in text.split("\n"):
        segments = line.split("\r")
        if len(segments) == 1:
            lines.append(line)
            continue
        kept = "".join(seg for seg in segments if seg.strip() and not PROGRESS.search(seg))
        if kept:
            lines.append(kept.lstrip())
    return "\n".join(lines)


def normalise(value: Any, mask: Masker) -> Any:
    """A JSON value with ignored keys dropped (at every depth) and its strings masked."""
    if isinstance(value, dict):
        return {k: normalise(v, mask) for k, v in value.items() if not ignored_key(k)}
    if isinstance(value, list | tuple):
        return [normalise(v, mask) for v in value]
    if isinstance(value, str):
        return mask(value)
    return value


def first_difference(a: Any, b: Any, where: str = "") -> str | None:
    """Where two normalised JSON values first differ (a JSON path and both values), or None."""
    if type(a) is not type(b) and not (isinstance(a, int | float) and isinstance(b, int | float)):
        return f"{where or '.'}: {short(a)} != {short(b)}"
    if isinstance(a, dict):
        if list(a) != list(b):
            missing, extra = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            if missing or extra:
                return f"{where or '.'}: keys only in A {missing}, only in B {extra}"
            return f"{where or '.'}: key order differs"
        for k in a:
            found = first_difference(a[k], b[k], f"{where}.{k}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where or '.'}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    if a != b and not (a != a and b != b):  # NaN equals NaN here
        return f"{where or '.'}: {short(a)} != {short(b)}"
    return None


def short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def text_difference(a: str, b: str) -> str | None:
    if a == b:
        return None
    la, lb = a.splitlines(), b.splitlines()
    for i, (x, y) in enumerate(zip(la, lb, strict=False)):
        if x != y:
            at = next((j for j, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
            lo = max(0, at - 30)
            return f"line {i + 1} col {at + 1}: {short(x[lo : at + 50])} != {short(y[lo : at + 50])}"
    return f"{len(la)} lines != {len(lb)}" if len(la) != len(lb) else "line endings differ"


def read_safetensors(path: Path) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.get("__metadata__")
    if isinstance(meta, dict):  # metadata values are strings, often JSON themselves
        parsed = {}
        for k, v in meta.items():
            try:
                parsed[k] = json.loads(v)
            except (TypeError, ValueError):
                parsed[k] = v
        header["__metadata__"] = parsed
    return header, raw[8 + n :]


def compare_safetensors(a: Path, b: Path, mask_a: Masker, mask_b: Masker) -> str | None:
    if a.read_bytes() == b.read_bytes():
        return None
    (ha, da), (hb, db) = read_safetensors(a), read_safetensors(b)
    if da != db:
        return "tensor bytes differ"
    return first_difference(normalise(ha, mask_a), normalise(hb, mask_b), "header")


def compare_pt(a: Path, b: Path, mask_a: Masker, mask_b: Masker) -> str | None:
    if a.read_bytes() == b.read_bytes():
        return None
    import torch

    va, vb = (torch.load(p, map_location="cpu", weights_only=True) for p in (a, b))
    return pt_difference(va, vb, mask_a, mask_b, "")


def pt_difference(a: Any, b: Any, mask_a: Masker, mask_b: Masker, where: str) -> str | None:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{where}: tensor vs {type(b).__name__}"
        if a.dtype != b.dtype or a.shape != b.shape:
            return f"{where}: {a.dtype}{list(a.shape)} != {b.dtype}{list(b.shape)}"
        same = a.reshape(-1).contiguous().view(torch.uint8).equal(b.reshape(-1).contiguous().view(torch.uint8))
        return None if same else f"{where}: tensor values differ"
    if isinstance(a, dict) and isinstance(b, dict):
        ka = [k for k in a if not ignored_key(k)]
        kb = [k for k in b if not ignored_key(k)]
        if ka != kb:
            return f"{where}: keys {short([str(k) for k in ka])} != {short([str(k) for k in kb])}"
        for k in ka:
            found = pt_difference(a[k], b[k], mask_a, mask_b, f"{where}.{k}")
            if found:
                return found
        return None
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return f"{where}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = pt_difference(x, y, mask_a, mask_b, f"{where}[{i}]")
            if found:
                return found
        return None
    if isinstance(a, str) and isinstance(b, str):
        return None if mask_a(a) == mask_b(b) else f"{where}: {short(a)} != {short(b)}"
    try:
        equal = bool(a == b) or (a != a and b != b)
    except Exception:  # e.g. numpy arrays
        equal = repr(a) == repr(b)
    return None if equal else f"{where}: {short(repr(a))} != {short(repr(b))}"


TEXT_SUFFIXES = {".toml", ".csv", ".txt", ".html", ".md", ".yaml", ".yml", ".log", ".tsv"}


def compare_file(a: Path, b: Path, mask_a: Masker, mask_b: Masker) -> str | None:
    suffix = a.suffix.lower()
    if a.name == RECORD:
        ra, rb = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
        if ra["exit_code"] != rb["exit_code"]:
            return f"exit code {ra['exit_code']} != {rb['exit_code']}"
        if ra["argv"] != rb["argv"]:
            return f"argv {short(ra['argv'])} != {short(rb['argv'])}"
        for stream in ("stdout", "stderr"):
            try:  # --json output: compared as JSON (ignored keys dropped)
                ja, jb = json.loads(ra[stream]), json.loads(rb[stream])
            except ValueError:
                found = text_difference(mask_a(without_progress(ra[stream])), mask_b(without_progress(rb[stream])))
            else:
                found = first_difference(normalise(ja, mask_a), normalise(jb, mask_b))
            if found:
                return f"{stream} {found}"
        return None
    if suffix == ".json":
        try:
            ja, jb = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
        except ValueError:
            return text_difference(mask_a(a.read_text(errors="replace")), mask_b(b.read_text(errors="replace")))
        return first_difference(normalise(ja, mask_a), normalise(jb, mask_b))
    if suffix in TEXT_SUFFIXES:
        ta, tb = (p.read_text(encoding="utf-8", errors="replace") for p in (a, b))
        if suffix == ".html":
            ta, tb = mask_html_tables(ta), mask_html_tables(tb)
        return text_difference(mask_a(ta), mask_b(tb))
    if suffix == ".safetensors":
        return compare_safetensors(a, b, mask_a, mask_b)
    if suffix in (".pt", ".pth"):
        return compare_pt(a, b, mask_a, mask_b)
    return None if a.read_bytes() == b.read_bytes() else "bytes differ"


def listing(folder: Path) -> dict[str, str]:
    """The files under ``folder`` by their masked relative path (32-hex-digit names, e.g. reference-cache keys,
    masked) to their real relative path; lock files left out."""
    found: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name not in LOCK_NAMES and "__pycache__" not in p.parts:
            rel = str(p.relative_to(folder))
            key = HEX32.sub("<HEX32>", rel)
            while key in found:
                key += "+"
            found[key] = rel
    return found


def masker_for(root: Path) -> tuple[Masker, dict[str, Any]]:
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    out, src = manifest.get("out", str(root.resolve())), manifest.get("src", "")
    roots = {out: "<OUT>", str(Path(out).resolve()): "<OUT>", src: "<SRC>"}
    if src:
        roots[str(Path(src).resolve())] = "<SRC>"
    return Masker(roots, manifest.get("patternscope_version")), manifest


def cmd_diff(args: argparse.Namespace) -> int:
    a_root, b_root = Path(args.a), Path(args.b)
    for root in (a_root, b_root):
        if not root.is_dir():
            print(f"behaviour_diff: error: {root} is not a folder", file=sys.stderr)
            return 2
    mask_a, man_a = masker_for(a_root)
    mask_b, man_b = masker_for(b_root)
    differing = 0
    if man_a.get("inputs") != man_b.get("inputs"):
        print("inputs: differ (the generated inputs are not the same bytes: outputs cannot be compared)")
        differing += 1
    else:
        print(f"inputs: same ({len(man_a.get('inputs') or {})} files)")
    folders = sorted(
        {
            p.name
            for root in (a_root, b_root)
            for p in root.iterdir()
            if p.is_dir() and re.fullmatch(r"\d\d_\w+", p.name)
        }
    )
    for name in folders:
        fa, fb = a_root / name, b_root / name
        if not fa.is_dir() or not fb.is_dir():
            print(f"{name}: differs: only in {'A' if fa.is_dir() else 'B'}")
            differing += 1
            continue
        la, lb = listing(fa), listing(fb)
        problems = []
        if set(la) != set(lb):
            only_a, only_b = sorted(set(la) - set(lb)), sorted(set(lb) - set(la))
            problems.append(f"files only in A {only_a[:5]}, only in B {only_b[:5]}")
        for rel in sorted(set(la) & set(lb), key=lambda r: (r != RECORD, r)):
            try:
                found = compare_file(fa / la[rel], fb / lb[rel], mask_a, mask_b)
            except Exception as exc:  # an unreadable or malformed file: a difference, not a crash of the diff
                found = f"cannot compare ({type(exc).__name__}: {exc})"
            if found:
                problems.append(f"{rel}: {found}")
        if problems:
            differing += 1
            more = f" (+{len(problems) - args.show} more)" if len(problems) > args.show else ""
            print(f"{name}: differs: " + "; ".join(problems[: args.show]) + more)
        else:
            print(f"{name}: same ({len(la)} files)")
    total = len(folders)
    if differing:
        print(f"summary: {differing} of {total} invocations (and inputs) differ")
        return 1
    print(f"summary: all {total} invocations the same")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="behaviour_diff.py")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the invocations against --src into --out")
    run.add_argument("--src", required=True, help="folder holding the patternscope package (put on PYTHONPATH)")
    run.add_argument("--out", required=True, help="output folder (inputs, manifest.json, one folder per invocation)")
    run.add_argument("--only", help="comma-separated invocation names to (re)run into an existing --out")
    run.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in --out")
    run.add_argument("--timeout", type=float, default=300, help="seconds per invocation (default 300)")
    diff = sub.add_parser("diff", help="compare two run outputs; exit 1 when anything differs")
    diff.add_argument("a")
    diff.add_argument("b")
    diff.add_argument("--show", type=int, default=3, help="differences shown per invocation (default 3)")
    args = parser.parse_args(argv)
    return cmd_run(args) if args.command == "run" else cmd_diff(args)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
