"""Input pipeline throughput: 224 x 224 training crops per second from a folder of COCO-size JPEGs, for
0 (one background thread), 1 and 2 worker processes, with the exact decode (torch resize, the values of
every release) and the fast one (`fast_decode`: PIL resize, JPEG draft), beside the model's bare
forward+backward images/s.

The pipeline alone: `BatchStream.host_batch` (decode with PIL, shorter side to 256, random crop and
flips, uint8) through `step_batches`, one epoch's walk over the first `--images` files, no decoded-image
cache (each image is decoded once per epoch, as in a real epoch over COCO). The first 3 batches (worker
start-up) are not timed. The model column is a bare loop over ready-made batches (forward, backward of
the dominant objective, Adam step), the rate the pipeline has to feed.

    python benchmarks/jpeg_folder.py /tmp/coco/jpegs --count 5000
    python benchmarks/input_pipeline.py /tmp/coco/jpegs          # CPU
    python benchmarks/input_pipeline.py /tmp/coco/jpegs --device cuda --workers 0 1 2 4 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import save, table

from patternscope import load_model
from patternscope.core.params import AdditiveParam
from patternscope.data import BatchStream, ImageSet, image_folder
from patternscope.data.loader import available_cpus, step_batches
from patternscope.methods.dominant import dominant_cosine


def pipeline_rate(images: ImageSet, workers: int, steps: int, batch: int, device: str) -> float:
    """224 crops/s of the pipeline alone (after 3 untimed batches), each batch copied to ``device``."""
    stream = BatchStream([images], (3, 224, 224), seed=0)
    it = step_batches(stream.host_images, batch, range(steps + 3), workers=workers, device=device)
    for _ in range(3):
        next(it)
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it).to(device, non_blocking=True)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    it.close()
    return steps * batch / seconds


def model_rate(spec: str, device: str, batch: int, steps: int, amp: bool) -> float:
    model = load_model(spec, device=device)
    param = AdditiveParam(model.input_size, 10 / 255, device=torch.device(device))
    objective = dominant_cosine(model, param.delta)
    optimizer = torch.optim.Adam([param.delta], lr=0.01)
    x = torch.rand(batch, *model.input_size, device=device)
    rate = 0.0
    for warm in (True, False):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(2 if warm else steps):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=amp):
                loss = objective(x)
            loss.backward()
            optimizer.step()
        float(loss.detach())
        rate = (2 if warm else steps) * batch / (time.perf_counter() - t0)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a folder of JPEGs (benchmarks/jpeg_folder.py makes one)")
    parser.add_argument("--images", type=int, default=5000, help="files of the folder used (default 5000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40, help="timed batches per setting")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast for the model column")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    listing_start = time.perf_counter()
    folder = image_folder(args.folder)
    listing = time.perf_counter() - listing_start
    exact = ImageSet(folder.items[: args.images], f"{args.images} JPEGs", cache_limit_mb=0)
    fast = ImageSet(folder.items[: args.images], f"{args.images} JPEGs", cache_limit_mb=0, fast_decode=True)
    # the model first, on an idle machine (no worker processes yet)
    model = model_rate(args.model, args.device, args.batch_size, 10 if args.device == "cpu" else 30, args.amp)
    rows = []
    for decode, images in (("exact", exact), ("fast", fast)):
        for workers in args.workers:
            rate = pipeline_rate(images, workers, args.steps, args.batch_size, args.device)
            rows.append({"decode": decode, "workers": workers, "crops_per_s": round(rate, 1)})
            print(f"{decode}, workers {workers}: {rate:.1f} crops/s", flush=True)
    for r in rows:
        base = next((x["crops_per_s"] for x in rows if x["workers"] == 1 and x["decode"] == r["decode"]), None)
        r["vs_1_worker"] = round(r["crops_per_s"] / base, 3) if base else None
    print(table(rows, ["decode", "workers", "crops_per_s", "vs_1_worker"]))
    print(f"{args.model} bare forward+backward at batch {args.batch_size}: {model:.1f} images/s")
    print(f"listing {len(folder)} files: {listing:.2f} s; cpus available: {available_cpus()}")
    path = save(
        "input_pipeline" if args.device == "cpu" else f"input_pipeline_{args.device.split(':')[0]}",
        {
            "folder_files": len(folder),
            "images_used": args.images,
            "listing_seconds": round(listing, 3),
            "batch_size": args.batch_size,
            "rows": rows,
            "model": args.model,
            "model_forward_backward_images_per_s": round(model, 1),
            "amp": args.amp,
        },
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
