"""Overhead of the search loop: images/s of `run_search` vs a bare forward+backward loop.

Both loops run the same dominant-pattern objective on the same model, batch size and device. The bare
loop cycles through batches made before it starts (distinct tensors, already on the device) and does
nothing else: forward, backward, Adam step, clamp. The search
loop is the real thing: fresh batches (random crops of the bundled photos + jigsaw proxies, built on a
background thread), projection, NaN checks, tqdm, best-window tracking and a checkpoint every 25 steps.
Blocks of each alternate so that machine noise hits both alike; the ratio of medians is reported.

    python benchmarks/overhead.py                      # EfficientNet-Lite0, batch 32, CPU
    python benchmarks/overhead.py --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import save, table

from patternscope import load_model
from patternscope.core.params import AdditiveParam
from patternscope.core.search import SearchConfig, run_search
from patternscope.data import BatchStream, training_sources
from patternscope.methods.dominant import dominant_cosine


def bare_block(model, objective, delta, optimizer, batches, steps, amp):
    device = batches[0].device
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        x = batches[i % len(batches)]
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = objective(x)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            delta.clamp_(-10 / 255, 10 / 255)
    float(loss.detach())
    return steps * batches[0].shape[0] / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="off", choices=("off", "bf16"))
    parser.add_argument("--steps", type=int, default=15, help="steps per block")
    parser.add_argument("--rounds", type=int, default=4, help="alternating (bare, search) block pairs")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/overhead.json)")
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    amp = args.amp == "bf16"
    stream = BatchStream(training_sources(["photos", "jigsaw"]), model.input_size, seed=0)
    stream.batch(0, args.batch_size)  # decode the photos once, as a long search would have

    delta = torch.zeros(model.input_size, device=args.device, requires_grad=True)
    bare_opt = torch.optim.Adam([delta], lr=1e-2, weight_decay=1e-5)
    bare_obj = dominant_cosine(model, delta)
    batches = [stream.batch(1000 + i, args.batch_size).to(args.device) for i in range(args.steps)]

    param = AdditiveParam(model.input_size, 10 / 255, device=args.device)
    objective = dominant_cosine(model, param.delta)
    bare_obj(batches[0]).backward()  # warm-up
    bare, search = [], []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint.pt"
        done = 0
        for _ in range(args.rounds):
            bare.append(bare_block(model, bare_obj, delta, bare_opt, batches, args.steps, amp))
            config = SearchConfig(
                steps=done + args.steps,
                batch_size=args.batch_size,
                lr=1e-2,
                weight_decay=1e-5,
                device=args.device,
                amp="bf16" if amp else False,
                checkpoint_path=ckpt,
                checkpoint_every=25,
                resume=True,
                progress=True,
                desc="search loop",
            )
            result = run_search(param, objective, stream.batch, config)
            done += args.steps
            search.append(result.images_seen / result.seconds)
    ratio = statistics.median(search) / statistics.median(bare)
    rows = [
        {
            "loop": "bare forward+backward",
            "images/s (median)": statistics.median(bare),
            "blocks": ", ".join(f"{v:.1f}" for v in bare),
        },
        {
            "loop": "patternscope search",
            "images/s (median)": statistics.median(search),
            "blocks": ", ".join(f"{v:.1f}" for v in search),
        },
    ]
    print(f"\nmodel {args.model}, batch {args.batch_size} (+1 for δ alone), device {args.device}, amp {args.amp}")
    print(table(rows, ["loop", "images/s (median)", "blocks"]))
    print(f"ratio search / bare = {ratio:.3f} (goal >= 0.95)")
    path = save(
        "overhead" if args.device == "cpu" else f"overhead_{args.device.split(':')[0]}",
        {"settings": vars(args), "bare_images_per_s": bare, "search_images_per_s": search, "ratio": ratio},
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
