"""The paper's schedule, timed on a slice and projected: 10 epochs of a COCO-size folder at batch 32
(the authors: COCO's 118,287 images, about 37,000 steps, 1.2 million image passes).

Runs the dominant search loop on the folder (batches as `find dominant --data FOLDER --epochs E` draws
them), stops after `--slice` steps, and projects the whole schedule from the steady-state rate (the
steps after the first 5).

    python benchmarks/paper_schedule.py /tmp/coco/jpegs                      # CPU, 2 cores: ~2 minutes
    python benchmarks/paper_schedule.py /tmp/coco/jpegs --device cuda --amp bf16 --channels-last --workers 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import torch
from _common import save, table

from patternscope import load_model
from patternscope.core.params import AdditiveParam
from patternscope.core.search import SearchConfig, StopSearch, run_search
from patternscope.data import BatchStream, image_folder
from patternscope.data.loader import default_workers
from patternscope.methods.dominant import dominant_cosine

COCO_TRAIN = 118_287


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--epochs", type=float, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--slice", type=int, default=40, help="steps timed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default=None, choices=(None, "bf16"))
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    model = load_model("efficientnet_lite0", device=args.device)
    if args.channels_last:
        model.use_channels_last()
    images = image_folder(args.folder)
    stream = BatchStream([images], model.input_size, seed=0)
    steps_folder = stream.steps_for_epochs(args.epochs, args.batch_size)
    steps_coco = -(-int(args.epochs * COCO_TRAIN) // args.batch_size)
    marks: dict[int, float] = {}

    def on_step(step: int, _loss: float) -> None:
        if step in (5, args.slice):
            marks[step] = time.perf_counter()
        if step >= args.slice:
            raise StopSearch

    param = AdditiveParam(model.input_size, 10 / 255, device=torch.device(args.device))
    workers = default_workers(args.device) if args.workers is None else args.workers
    config = SearchConfig(
        steps=steps_folder,
        batch_size=args.batch_size,
        device=args.device,
        amp=args.amp or False,
        progress=False,
        workers=workers,
    )
    objective = dominant_cosine(model, param.delta)
    run_search(param, objective, stream.host_images, config, on_step=on_step)
    rate = (args.slice - 5) * args.batch_size / (marks[args.slice] - marks[5])
    passes = steps_coco * args.batch_size
    row = {
        "device": args.device,
        "amp": args.amp or "off",
        "workers": workers,
        "images_per_s": round(rate, 1),
        "steps_10_epochs_coco": steps_coco,
        "hours_projected": round(passes / rate / 3600, 2),
    }
    print(table([row], list(row)))
    path = save(
        "paper_schedule" if args.device == "cpu" else f"paper_schedule_{args.device.split(':')[0]}",
        {**row, "folder_images": len(images), "steps_on_this_folder": steps_folder, "slice_steps": args.slice},
        args.out,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
