"""Hardening benchmark: universal adversarial training of a Fashion-MNIST SmallCNN, measured before/after.

A SmallCNN is trained on 20,000 Fashion-MNIST training images (2 epochs, as make_badnets_model.py
--clean), then ``patternscope harden`` runs on the 10,000 test images (70% to harden on, 30% held
out): every pattern method is searched afresh on the original and on the hardened model (the
strongest of ``--restarts`` seeds counts), and class-wise patterns of every class are found on both.
Prints the table and writes results/harden_fashion.json; the run folder (report.html) is kept.

    python benchmarks/harden_fashion.py                 # about 9 minutes on one CPU core
    python benchmarks/harden_fashion.py --quick         # 3 methods, 1 restart, 5 epochs: a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _common import save, table
from safetensors.torch import save_file

from patternscope.data import load_fashion_mnist
from patternscope.kit import SmallCNN, TrainConfig, accuracy, train_classifier
from patternscope.methods import METHODS
from patternscope.runs.harden import HardenOptions, harden_run
from patternscope.runs.registry import write_report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="runs/bench_harden", help="folder for the model and the run")
    parser.add_argument("--eps", default="0.15", help="L∞ budget of every pattern (default 0.15, about 38/255)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None, help="JSON file (default results/harden_fashion.json)")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    data = load_fashion_mnist()
    torch.manual_seed(0)
    net = train_classifier(SmallCNN(), data.train_x[:20000], data.train_y[:20000], TrainConfig(epochs=2, seed=0))
    weights = work / "smallcnn_fmnist.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    train_seconds = time.perf_counter() - start
    print(f"SmallCNN: test accuracy {accuracy(net, data.test_x, data.test_y):.3f} ({train_seconds:.0f} s)")
    methods = ["dominant", "sgd-uap", "fff"] if args.quick else list(METHODS)
    opts = HardenOptions(
        out=str(work / "run"),
        model="patternscope.kit.nets:SmallCNN",
        weights=str(weights),
        data="fashion-mnist",
        eps=args.eps,
        epochs=5 if args.quick else args.epochs,
        restarts=1 if args.quick else args.restarts,
        methods=methods,
        classwise_steps=100 if args.quick else 300,
        device="cpu",
        overwrite=True,
    )
    t0 = time.perf_counter()
    summary = harden_run(opts, progress=False, log=lambda m: print(m, flush=True))
    run_seconds = time.perf_counter() - t0
    write_report(summary.out)
    p = summary.payload
    h = p["hardening"]
    rows = []
    for r in p["methods"]:
        rows.append(
            {
                "method": r["method"],
                "before": r["before"],
                "after": r["after"],
                "after/before": r["after"] / r["before"] if r["before"] else float("nan"),
                "old pattern on hardened": r["original_pattern_on_hardened"],
            }
        )
    rows.append({"method": "random ±ε", "before": p["random_sign"]["before"], "after": p["random_sign"]["after"]})
    print()
    print(
        f"clean accuracy (3,000 held-out test images): {h['accuracy_before']:.3f} -> {h['accuracy_after']:.3f} "
        f"(bound {h['accuracy_bound']:.3f}, epoch {h['chosen_epoch']} kept); hardening {h['seconds']:.0f} s"
    )
    print(table(rows, ["method", "before", "after", "after/before", "old pattern on hardened"]))
    cw = p.get("classwise")
    if cw:
        print(f"class-wise patterns: mean success {cw['mean_success_before']:.3f} -> {cw['mean_success_after']:.3f}")
    print(f"whole run {run_seconds:.0f} s; report: {summary.out / 'report.html'}")
    path = save(
        "harden_fashion",
        {
            "settings": {
                "eps": args.eps,
                "epochs": opts.epochs,
                "restarts": opts.restarts,
                "methods": methods,
                "budget_passes": opts.budget,
                "quick": args.quick,
            },
            "accuracy": {k: h[k] for k in ("accuracy_before", "accuracy_after", "accuracy_bound", "chosen_epoch")},
            "rows": rows,
            "classwise": {k: cw[k] for k in ("mean_success_before", "mean_success_after")} if cw else None,
            "seconds": {
                "train_model": round(train_seconds, 1),
                "hardening": h["seconds"],
                "run": round(run_seconds, 1),
            },
        },
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
