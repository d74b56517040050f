"""`patternscope evaluate` at scale: peak memory (RSS) and images/s on 1,000 and 20,000 COCO-size JPEGs,
and the streamed metrics checked against an in-memory, small-batch reference on a subset.

Each evaluation runs as its own process, the way a user runs it (`patternscope evaluate ... --workers N`),
and its peak RSS comes from the operating system (`wait4`). The size runs use a light 224 x 224 network
(`benchmarks/scale_models.py`) so that 20,000 images take a minute, not an hour, on 2 cores: they
measure the pipeline and memory. The throughput run uses EfficientNet-Lite0 on 1,000 images and
compares with the model's bare forward rate divided by the forward passes per image (clean, pattern,
two random baselines: 4).

    python benchmarks/jpeg_folder.py /tmp/coco/jpegs --count 20000
    python benchmarks/evaluate_scale.py /tmp/coco/jpegs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import save, table

from patternscope import load_model
from patternscope.core.metrics import evaluate_pattern
from patternscope.core.patterns import Pattern
from patternscope.data import ImageSet, image_folder

HERE = Path(__file__).parent
LIGHT = f"{HERE / 'scale_models.py'}:Light224"


def subset_folder(source: Path, count: int, root: Path) -> Path:
    """A folder of links to the first ``count`` files of ``source``."""
    folder = root / f"first_{count}"
    folder.mkdir()
    for f in sorted(source.iterdir())[:count]:
        (folder / f.name).symlink_to(f)
    return folder


def _tree_memory_mb(pid: int) -> tuple[float, float]:
    """(resident MiB of ``pid`` itself, proportional-set MiB of ``pid`` and all its descendants): PSS
    splits shared pages between the processes, so forked workers are not counted twice."""
    own, total, stack = 0.0, 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as f:
                fields = {line.split(":")[0]: line.split()[1] for line in f if ":" in line}
            total += int(fields.get("Pss", 0)) / 1024
            if p == pid:
                own = int(fields.get("Rss", 0)) / 1024
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError, PermissionError):
            continue
    return own, total


def run_measured(argv: list[str]) -> dict:
    """Run ``argv`` as its own process: its wall time, peak memory (sampled every 0.2 s) and stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_main, peak_tree = 0.0, 0.0
    while True:  # sample the main process and the whole tree (main + workers) every 0.2 s
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        own, tree = _tree_memory_mb(proc.pid)
        peak_main, peak_tree = max(peak_main, own), max(peak_tree, tree)
        time.sleep(0.2)
    seconds = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()  # type: ignore[union-attr]
    if status != 0:
        raise SystemExit(f"{' '.join(argv[:5])} ... failed ({status}): {err[-2000:]}")
    # ru_maxrss of a waited child is the larger of its own peak and its largest child's (a worker)
    return {
        "seconds": seconds,
        "peak_rss_mb": peak_main,
        "peak_any_process_mb": usage.ru_maxrss / 1024,
        "peak_tree_mb": peak_tree,
        "stdout": out,
    }


def run_evaluate(pattern: Path, folder: Path, model: list[str], workers: int, batch: int) -> dict:
    """One `patternscope evaluate` process: its wall time, peak RSS and JSON output."""
    argv = [sys.executable, "-m", "patternscope", "evaluate", "--pattern", str(pattern), *model]
    argv += ["--data", str(folder), "--workers", str(workers), "--batch-size", str(batch), "--device", "cpu"]
    argv += ["--json", "--quiet"]
    run = run_measured(argv)
    run["result"] = json.loads(run.pop("stdout"))
    return run


def bare_forward_rate(spec: str, batch: int, steps: int = 8) -> float:
    model = load_model(spec, device="cpu")
    x = torch.rand(batch, *model.input_size)
    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(steps):
            model(x)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a folder of at least 20,000 JPEGs (benchmarks/jpeg_folder.py)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="efficientnet_lite0", help="the throughput run's model")
    parser.add_argument("--throughput-images", type=int, default=1000)
    parser.add_argument("--reference-images", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    source = Path(args.folder)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gen = torch.Generator().manual_seed(0)
        light_pattern = root / "light"
        Pattern((torch.rand(3, 224, 224, generator=gen) * 2 - 1) * 10 / 255, 10 / 255, "linf").save(light_pattern)
        light = ["--model", LIGHT, "--weights", "none", "--input-size", "3,224,224"]
        rows = []
        for count in args.sizes:
            folder = subset_folder(source, count, root)
            run = run_evaluate(light_pattern, folder, light, args.workers, args.batch_size)
            rows.append(
                {
                    "images": count,
                    "model": "Light224",
                    "peak_rss_mb": round(run["peak_rss_mb"], 1),
                    "peak_any_process_mb": round(run["peak_any_process_mb"], 1),
                    "peak_with_workers_pss_mb": round(run["peak_tree_mb"], 1),
                    "seconds": round(run["seconds"], 1),
                    "images_per_s": round(count / run["seconds"], 1),
                    "n_images_measured": run["result"]["n_images"],
                }
            )
            print(rows[-1], flush=True)

        # throughput with a real network, against its bare forward rate
        count = args.throughput_images
        folder = root / f"first_{count}" if (root / f"first_{count}").exists() else subset_folder(source, count, root)
        real_pattern = root / "real"
        model = load_model(args.model, device="cpu")
        Pattern((torch.rand(model.input_size, generator=gen) * 2 - 1) * 10 / 255, 10 / 255, "linf").save(real_pattern)
        bare = bare_forward_rate(args.model, args.batch_size)
        run = run_evaluate(real_pattern, folder, ["--model", args.model], args.workers, args.batch_size)
        passes = 4  # clean, pattern, uniform and sign baselines
        rate = count / run["seconds"]
        rows.append(
            {
                "images": count,
                "model": args.model,
                "peak_rss_mb": round(run["peak_rss_mb"], 1),
                "peak_any_process_mb": round(run["peak_any_process_mb"], 1),
                "peak_with_workers_pss_mb": round(run["peak_tree_mb"], 1),
                "seconds": round(run["seconds"], 1),
                "images_per_s": round(rate, 2),
                "n_images_measured": run["result"]["n_images"],
            }
        )
        throughput = {
            "bare_forward_images_per_s": round(bare, 1),
            "passes_per_image": passes,
            "evaluate_images_per_s": round(rate, 2),
            "ratio_to_bare_over_passes": round(rate / (bare / passes), 3),
            "note": "seconds include the process start and model load",
        }
        print(throughput, flush=True)

        # streamed (batch 64, workers) vs in-memory small-batch reference, on a subset
        subset = image_folder(folder)
        subset = ImageSet(subset.items[: args.reference_images], "reference subset")
        pattern = Pattern.load(real_pattern)
        streamed = evaluate_pattern(model, pattern, subset, batch_size=64, workers=args.workers).to_dict()
        x, _ = subset.eval_tensors(model.input_size)
        reference = evaluate_pattern(model, pattern, x, batch_size=8).to_dict()
        same = streamed == reference
        print(f"streamed metrics == in-memory reference on {args.reference_images} images: {same}")

    small, large = rows[0], rows[len(args.sizes) - 1]
    growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
    tree_growth = large["peak_with_workers_pss_mb"] / small["peak_with_workers_pss_mb"] - 1
    print(
        table(
            rows,
            [
                "images",
                "model",
                "peak_rss_mb",
                "peak_any_process_mb",
                "peak_with_workers_pss_mb",
                "seconds",
                "images_per_s",
            ],
        )
    )
    print(
        f"peak RSS growth {small['images']} -> {large['images']} images: {growth:+.1%} (main process), "
        f"{tree_growth:+.1%} (main + workers, PSS)"
    )
    path = save(
        "evaluate_scale",
        {
            "rows": rows,
            "rss_growth": round(growth, 4),
            "tree_pss_growth": round(tree_growth, 4),
            "throughput": throughput,
            "reference_images": args.reference_images,
            "streamed_equals_reference": same,
            "workers": args.workers,
            "batch_size": args.batch_size,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
