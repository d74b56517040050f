"""The ``patternscope`` command: a thin layer over the Python API.

Exit codes: 0 success; 2 a user mistake (bad option, spec, file or data; the message says what to
fix); 130 interrupted with Ctrl-C (a checkpoint is saved; rerun with ``--resume``); 1 an unexpected
internal error (a bug: please report it with the traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, TypeVar

from ._version import __version__
from .compare import DEFAULT_BUDGET, MethodFailed
from .data import BUNDLED_NAMES, PROXY_NAMES
from .errors import PatternscopeError
from .methods import METHODS
from .models import BUNDLED, DEFAULT_MODEL
from .runs import FindOptions
from .search import SearchInterrupted

EXIT_OK, EXIT_INTERNAL, EXIT_USER, EXIT_INTERRUPTED = 0, 1, 2, 130
T = TypeVar("T")
DISTRIBUTED_COMMANDS = ("find dominant", "compare", "scan")  # what `torchrun -m patternscope` runs
_F = FindOptions()  # the defaults of `find dominant`, shown in --help
METHOD_NAMES = list(METHODS)

DATA_HELP = (
    "a folder of images, an ImageFolder tree (one sub-folder per class), an image file, "
    f"a bundled set ({', '.join(BUNDLED_NAMES)}) or a generated proxy ({', '.join(PROXY_NAMES)})"
)


def _add_model_options(p: argparse.ArgumentParser, default: str | None = DEFAULT_MODEL) -> None:
    p.add_argument(
        "--model",
        default=default,
        metavar="SPEC",
        help=f"model spec: {', '.join(BUNDLED)}, torchvision:NAME, timm:NAME, module.path:Attr or "
        f"file.py:Attr (default: {default or 'the model the pattern was made for'})",
    )
    p.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="state dict to load (.safetensors or .pth, read with weights_only); 'none' for random "
        "weights; default: the model's own pretrained weights from the local cache",
    )
    p.add_argument(
        "--model-kwargs",
        default=None,
        metavar="JSON",
        help="keyword arguments for a user model class or factory, as JSON, e.g. '{\"classes\": 10}'",
    )
    p.add_argument(
        "--input-size",
        default=None,
        metavar="C,H,W",
        help="the model's input size in pixels, e.g. 1,28,28 (default: the model's own input_size, else 3,224,224)",
    )
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N (default auto)")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow weights files that need full unpickling (can run arbitrary code)",
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="let torchvision/timm download missing pretrained weights (off: nothing is downloaded)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patternscope",
        description="Find, measure and save the input-space patterns that dominate an image classifier. "
        "Pixel space is [0,1]; eps is L-inf in that space.",
        epilog="Exit codes: 0 ok, 2 user error (message says what to fix), 130 interrupted (resume with "
        "--resume), 1 internal error (or a method of a comparison failed; the others' results are saved).",
    )
    parser.add_argument("--version", action="version", version=f"patternscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    find = sub.add_parser("find", help="search a pattern for a model")
    methods = find.add_subparsers(dest="method", required=True, metavar="METHOD")
    dom = methods.add_parser(
        "dominant",
        help="dominant pattern (Ye et al. 2021): a universal, label-free perturbation",
        description="Search a dominant pattern: a small universal δ such that f(x+δ) is decided by δ. "
        "Writes pattern.safetensors/.json/.png, metrics.json, examples.png into --out.",
    )
    dom.add_argument("--out", required=True, metavar="DIR", help="run folder to write (created if missing)")
    _add_model_options(dom)
    dom.add_argument(
        "--data",
        action="append",
        metavar="SOURCE",
        help=f"search data, repeatable to mix sources: {DATA_HELP} (default: photos and jigsaw)",
    )
    dom.add_argument(
        "--eval-data",
        metavar="SOURCE",
        help="held-out evaluation images (default: photos-eval, or a split of your --data folder)",
    )
    dom.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of the --data folder held out for evaluation when --eval-data is not given (0.2)",
    )
    dom.add_argument(
        "--crop-scale",
        metavar="MIN,MAX",
        help="zoom augmentation for image sources: each crop covers MIN..MAX of the image area "
        "(e.g. 0.1,1); default: the paper's fixed-scale crops",
    )
    dom.add_argument(
        "--eval-views",
        type=int,
        default=1,
        choices=(1, 2, 5, 10),
        help="evaluation crops per image: 1 centre, 2 +mirror, 5 centre+corners, 10 both (default 1)",
    )
    dom.add_argument("--eps", default=_F.eps, help=f"L-inf budget in [0,1] pixel units (default {_F.eps})")
    dom.add_argument("--norm", default=_F.norm, choices=("linf", "l2"), help=f"budget norm (default {_F.norm})")
    dom.add_argument("--steps", type=int, default=_F.steps, help=f"search steps (default {_F.steps})")
    dom.add_argument("--batch-size", type=int, default=_F.batch_size, help=f"images per step (default {_F.batch_size})")
    dom.add_argument("--lr", type=float, default=_F.lr, help=f"Adam learning rate (default {_F.lr:g})")
    dom.add_argument(
        "--weight-decay", type=float, default=_F.weight_decay, help=f"Adam weight decay (default {_F.weight_decay:g})"
    )
    dom.add_argument(
        "--layer",
        default="logits",
        help="feature layer g: logits (default), a layer name, or NAME:in for a layer's input "
        "(list names with `patternscope models --layers SPEC`)",
    )
    dom.add_argument("--loss", default="cos", choices=("cos", "kl"), help="1 - cosine (default) or KL")
    dom.add_argument(
        "--clip-during-search",
        action="store_true",
        help="clip x+δ to [0,1] during the search (the paper does not; evaluation always clips)",
    )
    dom.add_argument(
        "--keep", default="last", choices=("last", "best"), help="save the last δ (default) or the best window's δ"
    )
    dom.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop early after this many 10-step windows without improvement (default: never)",
    )
    dom.add_argument("--seed", type=int, default=_F.seed, help=f"seed for batches and augmentation (default {_F.seed})")
    dom.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"), help="mixed precision (default off)")
    dom.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions on GPUs)")
    dom.add_argument(
        "--checkpoint-every",
        type=int,
        default=_F.checkpoint_every,
        help=f"steps between checkpoints (default {_F.checkpoint_every})",
    )
    dom.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    dom.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _add_output_flags(dom)
    _add_run_flags(dom)

    cw = _add_classwise_parser(methods)
    sc = _add_scan_parser(sub)

    ev = sub.add_parser(
        "evaluate",
        help="measure a saved pattern on a model and images",
        description="Measure a saved pattern: fooling ratio, dominance, agreement, accuracy, random-noise baselines.",
    )
    ev.add_argument("--pattern", required=True, metavar="RUN", help="a run folder or a pattern.safetensors file")
    _add_model_options(ev, default=None)
    ev.add_argument(
        "--data",
        required=True,
        metavar="SOURCE",
        help=f"evaluation images: a folder, an ImageFolder tree, an image file or {BUNDLED_NAMES[1]}",
    )
    ev.add_argument("--eval-views", type=int, default=1, choices=(1, 2, 5, 10), help="crops per image (default 1)")
    ev.add_argument("--batch-size", type=int, default=64, help="evaluation batch size (default 64)")
    ev.add_argument("--seed", type=int, default=0, help="seed of the random-noise baselines (default 0)")
    ev.add_argument("--out", metavar="DIR", help="also write metrics.json and examples.png here")
    ev.add_argument("--overwrite", action="store_true", help="replace metrics already in --out")
    _add_output_flags(ev)
    _add_run_flags(ev)

    cmp = sub.add_parser(
        "compare",
        help="run several pattern methods side by side with the same data, eps, seed and budget",
        description="Run pattern methods side by side on one model with the same eps, search data, seed and "
        "compute budget (passes: images through forward and backward), evaluate each on the same held-out "
        "images, and write compare.json, compare.png and one sub-folder per method into --out.",
    )
    cmp.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if missing)")
    cmp.add_argument(
        "--methods",
        default=",".join(METHOD_NAMES),
        help=f"comma-separated methods (default all: {','.join(METHOD_NAMES)})",
    )
    _add_model_options(cmp)
    cmp.add_argument(
        "--data",
        action="append",
        metavar="SOURCE",
        help=f"search data shared by every method that uses data: {DATA_HELP} (default: photos and jigsaw)",
    )
    cmp.add_argument(
        "--paper-data",
        action="store_true",
        help="give each method its own paper's data instead (jigsaw for cos-uap, photos for df-uap, ...)",
    )
    cmp.add_argument("--eval-data", metavar="SOURCE", help="held-out evaluation images (default: photos-eval)")
    cmp.add_argument("--holdout", type=float, default=0.2, help="share of a --data folder held out (0.2)")
    cmp.add_argument("--eps", default="10/255", help="L-inf budget in [0,1] pixel units (default 10/255)")
    cmp.add_argument("--norm", default="linf", choices=("linf", "l2"), help="budget norm (default linf)")
    cmp.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET,
        help=f"passes per method: images through forward and backward, forward-only images count 1/3 "
        f"(default {DEFAULT_BUDGET})",
    )
    cmp.add_argument("--seed", type=int, default=0, help="seed shared by every method (default 0)")
    cmp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="a method setting, repeatable: e.g. sgd-uap.beta=9, dominant.lr=0.03, gd-uap.prior=range",
    )
    cmp.add_argument("--amp", default="off", choices=("off", "bf16", "fp16"), help="mixed precision (default off)")
    cmp.add_argument("--channels-last", action="store_true", help="NHWC memory layout (faster convolutions on GPUs)")
    cmp.add_argument("--eval-views", type=int, default=1, choices=(1, 2, 5, 10), help="crops per image (default 1)")
    cmp.add_argument("--resume", action="store_true", help="keep finished methods, continue an interrupted one")
    cmp.add_argument("--overwrite", action="store_true", help="replace a comparison already in --out")
    _add_output_flags(cmp)
    _add_run_flags(cmp)

    tr = sub.add_parser(
        "transfer",
        help="fooling-ratio matrix of saved patterns on several models",
        description="Measure saved patterns (run folders or pattern files) on several models: a fooling-ratio "
        "matrix (pattern x model) with random-noise controls, as transfer.json and transfer.png.",
    )
    tr.add_argument("--patterns", nargs="+", required=True, metavar="RUN", help="run folders or pattern files")
    tr.add_argument(
        "--models",
        nargs="+",
        required=True,
        metavar="SPEC",
        help="model specs to measure them on, each optionally SPEC@WEIGHTS_FILE",
    )
    tr.add_argument("--data", default="photos-eval", metavar="SOURCE", help="evaluation images (default photos-eval)")
    tr.add_argument("--out", metavar="DIR", help="write transfer.json and transfer.png here")
    tr.add_argument(
        "--model-kwargs", default=None, metavar="JSON", help="keyword arguments for user model classes, as JSON"
    )
    tr.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    tr.add_argument("--eval-views", type=int, default=1, choices=(1, 2, 5, 10), help="crops per image (default 1)")
    tr.add_argument("--seed", type=int, default=0, help="seed of the random-noise control (default 0)")
    tr.add_argument("--trust-pickle", action="store_true", help="allow weights files that need full unpickling")
    tr.add_argument("--allow-download", action="store_true", help="let torchvision/timm download missing weights")
    _add_output_flags(tr)
    _add_run_flags(tr)

    models = sub.add_parser(
        "models",
        help="list the models that can be loaded",
        description="List loadable models (bundled; with --all also torchvision and timm).",
    )
    models.add_argument("--all", action="store_true", help="include every torchvision and timm architecture")
    models.add_argument("--filter", metavar="PATTERN", help="only specs matching this (wildcards allowed)")
    models.add_argument("--layers", metavar="SPEC", help="list the layer names of this model for --layer")
    models.add_argument("--weights", default=None, metavar="FILE", help="weights for --layers (default: its own)")
    _add_output_flags(models)

    ds = sub.add_parser(
        "downstream",
        help="does a backbone's pattern fool a model fine-tuned from it on another task?",
        description="Freeze the backbone (--model), train a new head on labelled task images (or load a fine-tuned "
        "downstream model), then measure the backbone's unchanged pattern on it, next to random noise of the same "
        "budget and a pattern searched on the downstream model itself. Writes downstream.json, downstream.png, "
        "downstream_model.safetensors and own/ into --out.",
    )
    ds.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if missing)")
    _add_model_options(ds)
    ds.add_argument(
        "--backbone", dest="model", metavar="SPEC", help="the backbone (same as --model; default efficientnet_lite0)"
    )
    ds.add_argument("--task-data", required=True, metavar="SOURCE", help=f"the downstream task's {LABELLED_HELP}")
    ds.add_argument(
        "--pattern", required=True, metavar="RUN", help="a run folder or pattern file found on the backbone"
    )
    ds.add_argument(
        "--head", default="linear", choices=("linear", "last-block"), help="what is trained (default linear)"
    )
    ds.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    ds.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate (default 0.01)")
    ds.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    ds.add_argument("--holdout", type=float, default=0.3, help="share of each task class held out (default 0.3)")
    ds.add_argument(
        "--own-steps", type=int, default=100, help="steps of the downstream model's own pattern search (0: skip)"
    )
    ds.add_argument(
        "--finetuned", metavar="FILE", help="a fine-tuned downstream state dict to load instead of training"
    )
    ds.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    ds.add_argument("--overwrite", action="store_true", help="replace a downstream run already in --out")
    _add_output_flags(ds)
    _add_run_flags(ds)

    hd = sub.add_parser(
        "harden",
        help="fine-tune a model against its own universal patterns, and measure it before and after",
        description="Universal adversarial training (Shafahi et al. 2020): on every batch a few steps make a universal "
        "pattern raise the model's loss, then one model step learns to classify clean and patterned images. Keeps "
        "the last epoch whose held-out clean accuracy is within --max-accuracy-drop of the original. Searches every "
        "--methods pattern afresh before and after, and class-wise patterns of every class before and after. Writes "
        "hardened.safetensors (load it with --weights), harden.json, harden.png, training.png, before/, after/, "
        "classwise_before/ and classwise_after/ into --out.",
    )
    hd.add_argument("--out", required=True, metavar="DIR", help="folder to write (created if missing)")
    _add_model_options(hd)
    hd.add_argument("--data", required=True, metavar="SOURCE", help=LABELLED_HELP)
    hd.add_argument("--eps", default="10/255", help="budget of the training patterns (default 10/255)")
    hd.add_argument("--norm", default="linf", choices=("linf", "l2"), help="budget norm (default linf)")
    hd.add_argument("--epochs", type=int, default=20, help="passes over the training images (default 20)")
    hd.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the model (default 0.001)")
    hd.add_argument("--batch-size", type=int, default=64, help="images per step (default 64)")
    hd.add_argument("--delta-steps", type=int, default=3, help="pattern ascent steps per batch (default 3)")
    hd.add_argument("--delta-step", type=float, default=None, help="size of one pattern step (default eps/4)")
    hd.add_argument("--pool", type=int, default=4, help="universal patterns trained in turn (default 4)")
    hd.add_argument(
        "--clean-weight", type=float, default=0.5, help="weight of the clean images' loss, in [0,1) (default 0.5)"
    )
    hd.add_argument(
        "--loss-clamp", type=float, default=None, help="cap on each image's loss in the pattern step (default none)"
    )
    hd.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.02,
        help="largest allowed fall of held-out clean accuracy, absolute (default 0.02)",
    )
    hd.add_argument("--holdout", type=float, default=0.3, help="share of each class held out (default 0.3)")
    hd.add_argument(
        "--methods",
        default=",".join(METHOD_NAMES),
        help="methods searched before and after, comma-separated ('' for none; default all)",
    )
    hd.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET, help=f"passes per method search (default {DEFAULT_BUDGET})"
    )
    hd.add_argument(
        "--restarts",
        type=int,
        default=2,
        help="searches per method and model, seeds --seed, --seed+1, ...; the strongest counts (default 2)",
    )
    hd.add_argument(
        "--objective",
        default="mixed",
        choices=("ce", "dominant", "mixed"),
        help="what the training patterns maximise: the model's cross-entropy, the dominant-pattern objective, "
        "or both in turn (default mixed)",
    )
    hd.add_argument("--no-classwise", dest="classwise", action="store_false", help="skip the class-wise galleries")
    hd.add_argument("--classwise-steps", type=int, default=300, help="steps per class-wise pattern (default 300)")
    hd.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    hd.add_argument(
        "--checkpoint-every", type=int, default=50, help="batches between hardening checkpoints (default 50)"
    )
    hd.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    hd.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _add_output_flags(hd)
    _add_run_flags(hd)

    rep = sub.add_parser(
        "report",
        help="write report.html for a finished run folder",
        description="Write a self-contained report.html (figures embedded, also saved as PNG in report_figures/) "
        "for a run folder written by find, evaluate --out, compare, transfer --out or scan.",
    )
    rep.add_argument("run", metavar="RUN_DIR", help="the run folder")
    _add_output_flags(rep)
    parser.run_parsers = {  # type: ignore[attr-defined]
        "find dominant": dom,
        "find classwise": cw,
        "scan": sc,
        "evaluate": ev,
        "compare": cmp,
        "transfer": tr,
        "downstream": ds,
        "harden": hd,
    }
    return parser


LABELLED_HELP = (
    "labelled images: an ImageFolder tree (one sub-folder per class; any size or channel count, resized "
    "whole to the model's input) or a built-in set: digits, fashion-mnist (its test split)"
)


def _add_classwise_parser(methods: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .classwise_runs import ClasswiseOptions

    d = ClasswiseOptions()
    cw = methods.add_parser(
        "classwise",
        help="class-wise pattern (Zhao et al. 2021): a small stamp that makes the model predict a class",
        description="Search the class-wise pattern of one class (--class N) or of every class (--all-classes): "
        "a mask over a canvas image of the class, blended into images of other classes; the top-k mask pixels "
        "of the canvas are the pattern. Reports its attack success on held-out images of other classes, per "
        "source class, next to the rate without it. Writes pattern.*, examples.png, canvas_mask.png, "
        "classwise.json (and gallery.png with --all-classes) into --out.",
    )
    cw.add_argument("--out", required=True, metavar="DIR", help="run folder to write (created if missing)")
    _add_model_options(cw)
    cw.add_argument("--data", required=True, metavar="SOURCE", help=LABELLED_HELP)
    which = cw.add_mutually_exclusive_group(required=True)
    which.add_argument("--class", dest="target", type=int, metavar="N", help="the target class index")
    which.add_argument("--all-classes", action="store_true", help="every class, and a gallery of all patterns")
    cw.add_argument("--canvas", metavar="IMAGE", help="canvas image of the class (default: its most confident image)")
    cw.add_argument(
        "--holdout", type=float, default=d.holdout, help=f"share of each class held out (default {d.holdout})"
    )
    cw.add_argument(
        "--max-search-images",
        type=int,
        default=d.max_search_images,
        help=f"cap on search images of other classes (default {d.max_search_images}, as the paper)",
    )
    cw.add_argument("--steps", type=int, default=None, help="search steps (default: --epochs over the search images)")
    cw.add_argument(
        "--epochs", type=float, default=d.epochs, help=f"passes over the search images (default {d.epochs:g})"
    )
    cw.add_argument(
        "--max-steps", type=int, default=d.max_steps, help=f"cap on steps from --epochs (default {d.max_steps})"
    )
    cw.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    cw.add_argument("--lr", type=float, default=d.lr, help=f"signed step on the mask (default {d.lr})")
    cw.add_argument("--alpha", type=float, default=d.alpha, help=f"weight of the cross-entropy (default {d.alpha})")
    cw.add_argument(
        "--top-k",
        type=float,
        default=d.top_k,
        help=f"pattern size: a share of the pixels if < 1, else a pixel count (default {d.top_k})",
    )
    cw.add_argument("--learn-canvas", action="store_true", help="also learn the canvas colours (as the scan does)")
    cw.add_argument("--success", type=float, default=d.success, help=f"success rate for 'min k' (default {d.success})")
    cw.add_argument("--seed", type=int, default=d.seed, help=f"seed for the split and batches (default {d.seed})")
    cw.add_argument("--resume", action="store_true", help="keep finished classes, continue the rest")
    cw.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _add_output_flags(cw)
    _add_run_flags(cw)
    return cw


def _add_scan_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .scan import ScanConfig

    d = ScanConfig()
    sc = sub.add_parser(
        "scan",
        help="scan a model for backdoors with class-wise patterns",
        description="Find every class's class-wise pattern (learned canvas), the smallest number of pixels that "
        "reaches --success on held-out images of other classes, and flag classes that need anomalously few "
        "(MAD anomaly index > --threshold in log space and at most --max-ratio of the median). Writes scan.json, "
        "scan.txt, gallery.png, the recovered trigger of each flagged class and classes/NNN/ into --out.",
    )
    sc.add_argument("--out", required=True, metavar="DIR", help="run folder to write (created if missing)")
    _add_model_options(sc)
    sc.add_argument("--data", required=True, metavar="SOURCE", help=f"clean {LABELLED_HELP}")
    sc.add_argument("--classes", metavar="LIST", help="only these classes, comma-separated (default all)")
    sc.add_argument("--steps", type=int, default=d.steps, help=f"search steps per class (default {d.steps})")
    sc.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    sc.add_argument("--success", type=float, default=d.success, help=f"target attack success (default {d.success})")
    sc.add_argument("--top-k", type=float, default=d.top_k, help=f"fixed pattern size column (default {d.top_k})")
    sc.add_argument("--threshold", type=float, default=d.threshold, help=f"MAD anomaly index (default {d.threshold})")
    sc.add_argument(
        "--max-ratio", type=float, default=d.max_ratio, help=f"flag only below this share of median k ({d.max_ratio})"
    )
    sc.add_argument("--holdout", type=float, default=d.holdout, help=f"share of each class held out ({d.holdout})")
    sc.add_argument(
        "--natural-canvas", action="store_true", help="keep the canvas colours fixed (the paper's method; weaker)"
    )
    sc.add_argument("--seed", type=int, default=d.seed, help=f"seed for the split and batches (default {d.seed})")
    sc.add_argument("--neural-cleanse", action="store_true", help="also run Neural Cleanse on the same data")
    sc.add_argument("--nc-seeds", type=int, default=3, help="Neural Cleanse runs averaged per class (default 3)")
    sc.add_argument("--nc-max-epochs", type=int, default=60, help="Neural Cleanse epoch cap per run (default 60)")
    sc.add_argument("--resume", action="store_true", help="keep finished classes, continue the rest")
    sc.add_argument("--overwrite", action="store_true", help="replace a scan already in --out")
    _add_output_flags(sc)
    _add_run_flags(sc)
    return sc


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="FILE",
        help="read options from a TOML or YAML file (a run's config.toml works); command-line options win",
    )
    p.add_argument("--no-report", action="store_true", help="do not write report.html into the output folder")


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout")


def _options_from(args: argparse.Namespace, options: type[T], **given: Any) -> T:
    """A command's options dataclass from the parsed arguments of the same names (None: the dataclass
    default), with ``given`` values (parsed or built by the handler) taking precedence."""
    names = {f.name for f in fields(options)}  # type: ignore[arg-type]
    values = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return options(**{**values, **given})


def _cmd_find_dominant(args: argparse.Namespace) -> int:
    from .runs import FindOptions, find_dominant_run, format_evaluation

    opts = _options_from(args, FindOptions)
    summary = find_dominant_run(opts, progress=not (args.quiet or args.json), log=_log(args))
    if summary is None:  # a torchrun rank other than 0: rank 0 reports
        return EXIT_OK
    if args.json:
        print(json.dumps(summary.headline(), indent=2))
    elif not args.quiet:
        print(format_evaluation(summary.evaluation))
        print(f"run folder: {summary.out}")
    return EXIT_OK


def _cmd_find_classwise(args: argparse.Namespace) -> int:
    from .classwise_runs import ClasswiseOptions, find_classwise_run, format_classwise

    opts = _options_from(args, ClasswiseOptions)
    summary = find_classwise_run(opts, progress=not (args.quiet or args.json), log=_log(args))
    if args.json:
        print(json.dumps({"out": str(summary.out), "classes": summary.rows}, indent=2))
    elif not args.quiet:
        print(format_classwise(summary))
        print(f"run folder: {summary.out}")
    return EXIT_OK


def _parse_classes(text: str | None) -> list[int] | None:
    from .errors import DataError

    if not text:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise DataError(f"--classes must be comma-separated class indices, got {text!r}") from None


def _cmd_scan(args: argparse.Namespace) -> int:
    from .classwise_runs import ScanOptions, format_scan, scan_run
    from .scan import ScanConfig

    config = ScanConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        success=args.success,
        top_k=args.top_k,
        threshold=args.threshold,
        max_ratio=args.max_ratio,
        holdout=args.holdout,
        learn_canvas=not args.natural_canvas,
        seed=args.seed,
    )
    opts = _options_from(args, ScanOptions, classes=_parse_classes(args.classes), config=config)
    summary = scan_run(opts, progress=not (args.quiet or args.json), log=_log(args))
    if summary is None:  # a torchrun rank other than 0: rank 0 reports
        return EXIT_OK
    if args.json:
        payload = json.loads((summary.out / "scan.json").read_text())
        print(json.dumps(payload, indent=2))
    elif not args.quiet:
        print(format_scan(summary.report))
        for t in summary.report.flagged:
            print(f"recovered trigger of class {t}: {summary.out / f'trigger_class{t}.png'}")
        print(f"run folder: {summary.out}")
    return EXIT_OK


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .runs import evaluate_run, format_evaluation

    result = evaluate_run(
        args.pattern,
        args.data,
        model_spec=args.model,
        weights=args.weights,
        model_kwargs=args.model_kwargs,
        input_size=args.input_size,
        out=args.out,
        device=args.device,
        views=args.eval_views,
        batch_size=args.batch_size,
        seed=args.seed,
        trust_pickle=args.trust_pickle,
        allow_download=args.allow_download,
        overwrite=args.overwrite,
    )
    ev = getattr(result, "evaluation", result)
    if args.json:
        print(json.dumps(ev.to_dict(), indent=2))
    elif not args.quiet:
        print(format_evaluation(ev))
    return EXIT_OK


def _log(args: argparse.Namespace) -> Callable[[str], None]:
    if args.quiet or args.json:
        return lambda _msg: None
    return lambda msg: print(msg, file=sys.stderr)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .compare import CompareOptions, compare_methods, format_comparison, parse_setting

    settings: dict[str, dict[str, object]] = {}
    for text in args.set:
        method, key, value = parse_setting(text)
        settings.setdefault(method, {})[key] = value
    opts = CompareOptions(
        out=args.out,
        methods=[m.strip() for m in args.methods.split(",") if m.strip()],
        model=args.model,
        weights=args.weights,
        model_kwargs=args.model_kwargs,
        input_size=args.input_size,
        data=args.data,
        paper_data=args.paper_data,
        eval_data=args.eval_data,
        holdout=args.holdout,
        eps=args.eps,
        norm=args.norm,
        budget=args.budget,
        seed=args.seed,
        settings=settings,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        eval_views=args.eval_views,
        resume=args.resume,
        overwrite=args.overwrite,
        trust_pickle=args.trust_pickle,
        allow_download=args.allow_download,
    )
    result = compare_methods(opts, progress=not (args.quiet or args.json), log=_log(args))
    if result is None:  # a torchrun rank other than 0: rank 0 reports
        return EXIT_OK
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        print(format_comparison(result))
        print(f"folder: {result.out}")
    return EXIT_OK


def _cmd_transfer(args: argparse.Namespace) -> int:
    from .compare import format_transfer, transfer_matrix

    result = transfer_matrix(
        args.patterns,
        args.models,
        args.data,
        out=args.out,
        device=args.device,
        views=args.eval_views,
        seed=args.seed,
        model_kwargs=args.model_kwargs,
        trust_pickle=args.trust_pickle,
        allow_download=args.allow_download,
        log=_log(args),
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif not args.quiet:
        print(format_transfer(result))
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import list_models, load_model

    if args.layers:
        model = load_model(args.layers, args.weights)
        names = model.layer_names()
        print(json.dumps(names) if args.json else "\n".join(names))
        return EXIT_OK
    rows = list_models(args.filter, include_hubs=args.all)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return EXIT_OK
    width = max((len(r.spec) for r in rows), default=10) + 2
    for r in rows:
        print(f"{r.spec:<{width}}{r.source:<13}{r.weights}")
    if not args.all:
        print(
            "\n--all lists every torchvision:NAME and timm:NAME; your own model: module.path:Attr "
            "or file.py:Attr with --weights FILE"
        )
    return EXIT_OK


def _cmd_downstream(args: argparse.Namespace) -> int:
    from .downstream_runs import DownstreamOptions, downstream_run, format_downstream

    opts = _options_from(args, DownstreamOptions)
    summary = downstream_run(opts, progress=not (args.quiet or args.json), log=_log(args))
    if args.json:
        print(json.dumps(summary.payload, indent=2))
    elif not args.quiet:
        print(format_downstream(summary))
    return EXIT_OK


def _cmd_harden(args: argparse.Namespace) -> int:
    from .harden_runs import HardenOptions, format_harden, harden_run

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    opts = _options_from(args, HardenOptions, methods=methods)
    summary = harden_run(opts, progress=not (args.quiet or args.json), log=_log(args))
    if args.json:
        print(json.dumps(summary.payload, indent=2))
    elif not args.quiet:
        print(format_harden(summary))
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    path = write_report(args.run)
    if args.json:
        print(json.dumps({"report": str(path)}))
    elif not args.quiet:
        print(f"report: {path}")
    return EXIT_OK


def _command_words(argv: list[str]) -> list[str]:
    words = []
    for token in argv[:2]:
        if token.startswith("-"):
            break
        words.append(token)
        if token != "find":
            break
    return words


def _with_config(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``argv`` with the options of a ``--config FILE`` spliced in after the command words."""
    from .run_config import ConfigError, config_argv, load_config

    where = [i for i, t in enumerate(argv) if t == "--config" or t.startswith("--config=")]
    if not where:
        return argv
    if len(where) > 1:
        raise ConfigError("--config given more than once")
    i = where[0]
    if argv[i] == "--config":
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file name")
        path, rest = argv[i + 1], argv[:i] + argv[i + 2 :]
    else:
        path, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1 :]
    options = dict(load_config(path))
    file_command = options.pop("command", None)
    words = _command_words(rest)
    registry: dict[str, argparse.ArgumentParser] = parser.run_parsers  # type: ignore[attr-defined]
    if file_command is not None and not isinstance(file_command, str):
        raise ConfigError(f"{path}: 'command' must be a string such as \"find dominant\"")
    if not words or words == ["find"]:
        if file_command is None:
            raise ConfigError(
                f'{path} names no command: add command = "find dominant" (or scan, compare, ...) to it, '
                "or give the command: patternscope find dominant --config FILE"
            )
        if words == ["find"] and not file_command.startswith("find "):
            raise ConfigError(f"{path} is a config for {file_command!r}, not for 'find'")
        words_given = len(words)
        words = file_command.split()
        rest = words + rest[words_given:]
    command = " ".join(words)
    if file_command is not None and file_command != command:
        raise ConfigError(f"{path} is a config for {file_command!r}, not for {command!r}")
    if command not in registry:
        raise ConfigError(f"--config works with {', '.join(registry)}; not with {command!r}")
    given = rest[len(words) :]
    return [*words, *config_argv(registry[command], options, given, path), *given]


def _finish_run(parser: argparse.ArgumentParser, args: argparse.Namespace, interrupted: bool = False) -> None:
    """After a run: write config.toml (all options resolved) and report.html into its output folder."""
    from pathlib import Path

    from ._io import write_atomic
    from .run_config import CONFIG_FILE, resolved_options, to_toml

    command = args.command if args.command != "find" else f"find {args.method}"
    sub = parser.run_parsers.get(command)  # type: ignore[attr-defined]
    out = getattr(args, "out", None)
    if sub is None or not out or not Path(out).is_dir():
        return
    values = {"command": command, **resolved_options(sub, args)}
    text = to_toml(values, f"patternscope {__version__}: rerun with  patternscope --config THIS_FILE --out NEW_DIR")
    write_atomic(Path(out) / CONFIG_FILE, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    if interrupted or args.no_report:
        return
    from .report import write_report

    try:
        path = write_report(out)
    except (PatternscopeError, OSError) as exc:  # the run's results are safe; only the page is missing
        print(
            f"patternscope: warning: report.html not written ({exc}); try: patternscope report {out}", file=sys.stderr
        )
        return
    if not (args.quiet or args.json):
        print(f"report: {path}", file=sys.stderr)


def _finish_quietly(parser: argparse.ArgumentParser, args: argparse.Namespace, interrupted: bool = False) -> None:
    """:func:`_finish_run` after a failed or interrupted run: what can be written is, errors are not raised."""
    with contextlib.suppress(PatternscopeError, OSError):
        _finish_run(parser, args, interrupted)


SETTINGS_FILES = {"config.json", "config.toml", "scan_config.json"}


def _files_under(folder: str | None) -> set[str] | None:
    """Every path under ``folder`` (None when it does not exist)."""
    from pathlib import Path

    if not folder or not Path(folder).is_dir():
        return None
    return {str(p) for p in Path(folder).rglob("*")}


def _remove_settings_only(folder: str | None, before: set[str] | None) -> None:
    """After a user error: if the run wrote nothing but its settings, remove them (no half-run is left);
    results and checkpoints (e.g. the last good one before a divergence) are always kept."""
    from pathlib import Path

    if not folder or int(os.environ.get("RANK", "0")) != 0 or not Path(folder).is_dir():
        return
    root = Path(folder)
    new = [p for p in root.rglob("*") if str(p) not in (before or set())]
    new_files = [p for p in new if p.is_file()]
    if any(p.name not in SETTINGS_FILES for p in new_files):
        return
    for p in new_files:
        p.unlink(missing_ok=True)
    for d in sorted((p for p in new if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            d.rmdir()
    if before is None:
        with contextlib.suppress(OSError):
            root.rmdir()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``patternscope`` command; returns the exit code."""
    parser = build_parser()
    tokens = list(sys.argv[1:] if argv is None else argv)
    try:
        tokens = _with_config(parser, tokens)
    except PatternscopeError as exc:
        print(f"patternscope: error: {exc}", file=sys.stderr)
        return EXIT_USER
    args = parser.parse_args(tokens)
    from . import distributed

    if distributed.launched_by_torchrun():
        command = args.command if args.command != "find" else f"find {args.method}"
        if command not in DISTRIBUTED_COMMANDS:
            print(
                f"patternscope: error: {command!r} does not run under torchrun; run it as one process "
                f"(torchrun runs: {', '.join(DISTRIBUTED_COMMANDS)})",
                file=sys.stderr,
            )
            return EXIT_USER
        if int(os.environ.get("RANK", "0")) != 0:  # rank 0 prints and writes; the others work quietly
            args.quiet, args.json, args.no_report = True, False, True
    if getattr(args, "quiet", False):
        warnings.simplefilter("ignore")
    else:
        warnings.formatwarning = lambda msg, cat, *a, **k: f"patternscope: warning: {msg}\n"
    handlers = {
        "find": lambda a: _cmd_find_classwise(a) if a.method == "classwise" else _cmd_find_dominant(a),
        "scan": _cmd_scan,
        "evaluate": _cmd_evaluate,
        "compare": _cmd_compare,
        "transfer": _cmd_transfer,
        "models": _cmd_models,
        "report": _cmd_report,
        "downstream": _cmd_downstream,
        "harden": _cmd_harden,
    }
    out_dir = getattr(args, "out", None)
    before = _files_under(out_dir)
    try:
        code = handlers[args.command](args)
        if int(os.environ.get("RANK", "0")) == 0:
            _finish_run(parser, args)
        return code
    except MethodFailed as exc:  # a method crashed: not the user's mistake, but the others finished
        print(f"patternscope: error: {exc}", file=sys.stderr)
        _finish_quietly(parser, args)
        return EXIT_INTERNAL
    except PatternscopeError as exc:
        print(f"patternscope: error: {exc}", file=sys.stderr)
        _remove_settings_only(out_dir, before)
        return EXIT_USER
    except SearchInterrupted as exc:
        _finish_quietly(parser, args, interrupted=True)
        print(f"patternscope: {exc}. Run the same command with --resume to continue.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("patternscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into `head` and friends: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    finally:
        distributed.shutdown()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
