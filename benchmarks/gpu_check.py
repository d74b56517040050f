"""One GPU check, at most 8 minutes: how fast the search loop runs against a bare forward+backward loop,
how fast the input pipeline feeds it (CPU workers, GPU JPEG decode), and a 5,000-step dominant search
with its held-out metrics. Prints a table per part and writes one JSON.

    python benchmarks/gpu_check.py                     # on a CUDA machine (writes results/gpu_check.json)
    python benchmarks/gpu_check.py --device cpu --quick   # a dry run of every part, tiny sizes

Parts (each skipped with a note when the time left is short):
1. loop vs bare: EfficientNet-Lite0, the dominant objective, batch 32 and 256, fp32 / bf16 /
   bf16 + channels-last / bf16 + channels-last + torch.compile. The bare loop reuses batches already
   on the GPU; the search loop is `run_search` on fresh batches from a folder of COCO-size JPEGs
   decoded by worker processes. Reported: images/s of each and their ratio.
2. pipeline: 224 crops/s from the JPEG folder with 0/4/8/all-but-one CPU workers, and with
   `torchvision.io.decode_jpeg(device="cuda")` batched decode plus resize and crop on the GPU (exact
   and fast CPU decoding both).
3. search: 5,000 steps of the default dominant recipe (bundled photos + jigsaw, batch 32) in bf16 +
   channels-last, evaluated on photos-eval with 10 views (220 crops); and the paper's schedule
   (1.2 million image passes) projected from the measured loop rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import save, table
from input_pipeline import pipeline_rate
from jpeg_folder import make_folder

from patternscope import find_pattern, load_model
from patternscope.core.metrics import evaluate_pattern
from patternscope.core.params import AdditiveParam
from patternscope.core.search import SearchConfig, run_search
from patternscope.data import BatchStream, ImageSet, bundled_photos, image_folder
from patternscope.data.loader import available_cpus
from patternscope.methods.dominant import dominant_cosine

START = time.perf_counter()


def left(limit: float) -> float:
    return limit - (time.perf_counter() - START)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prepared_model(device: str, channels_last: bool, compiled: bool) -> Any:
    model = load_model("efficientnet_lite0", device=device)
    if channels_last:
        model.use_channels_last()
    if compiled:
        model.net = torch.compile(model.net)
    return model


def bare_rate(model: Any, device: str, batch: int, steps: int, amp: bool) -> float:
    param = AdditiveParam(model.input_size, 10 / 255, device=torch.device(device))
    objective = dominant_cosine(model, param.delta)
    optimizer = torch.optim.Adam([param.delta], lr=0.01)
    batches = [torch.rand(batch, *model.input_size, device=device) for _ in range(4)]
    dev = torch.device(device).type
    rate = 0.0
    for n in (3, steps):  # warm-up (and compilation), then timed
        sync(device)
        t0 = time.perf_counter()
        for i in range(n):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
                loss = objective(batches[i % 4])
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                param.delta.clamp_(-10 / 255, 10 / 255)
        sync(device)
        rate = n * batch / (time.perf_counter() - t0)
    return rate


def loop_rate(model: Any, images: ImageSet, device: str, batch: int, steps: int, amp: bool, workers: int) -> float:
    param = AdditiveParam(model.input_size, 10 / 255, device=torch.device(device))
    objective = dominant_cosine(model, param.delta)
    stream = BatchStream([images], model.input_size, seed=0)
    marks: dict[int, float] = {}
    warm = 5

    def on_step(step: int, _loss: float) -> None:
        if step in (warm, steps):
            sync(device)
            marks[step] = time.perf_counter()

    config = SearchConfig(
        steps=steps,
        batch_size=batch,
        device=device,
        amp="bf16" if amp else False,
        progress=False,
        workers=workers,
        window=10**9,
    )
    run_search(param, objective, stream.host_images, config, on_step=on_step)
    return (steps - warm) * batch / (marks[steps] - marks[warm])


def gpu_decode_rate(files: list[Path], batch: int, steps: int, device: str) -> float:
    """Batched nvJPEG decode, then resize (shorter side 256) and a random 224 crop, all on the GPU."""
    import torch.nn.functional as F
    from torchvision.io import decode_jpeg, read_file

    def one_batch(i: int) -> torch.Tensor:
        data = [read_file(str(files[(i * batch + j) % len(files)])) for j in range(batch)]
        decoded = decode_jpeg(data, device=device)
        out = []
        for img in decoded:
            h, w = img.shape[-2:]
            s = 256 / min(h, w)
            img = F.interpolate(img[None].float(), size=(round(h * s), round(w * s)), mode="bilinear", antialias=True)
            out.append(img[0, :, :224, :224])
        return torch.stack(out)

    one_batch(0)
    sync(device)
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        one_batch(i)
    sync(device)
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that every part runs")
    parser.add_argument("--limit", type=float, default=470.0, help="seconds for the whole check")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    device, quick = args.device, args.quick
    cuda = device.startswith("cuda")
    cpus = available_cpus()
    workers = 2 if quick else max(1, min(8, cpus - 1))
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu", "cpus": cpus}
    print(f"device {report['device']}, {cpus} cpus, pipeline workers {workers}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        n_files = 200 if quick else 5000
        folder = make_folder(Path(tmp) / "jpegs", n_files, processes=max(1, min(16, cpus)))
        jpegs = image_folder(folder)
        print(f"made {n_files} JPEGs at {time.perf_counter() - START:.0f} s", flush=True)

        # 1. loop vs bare
        settings = [(32, False, False, False), (256, False, False, False), (256, True, False, False)]
        settings += [(256, True, True, False), (256, True, True, True)]
        if quick:
            settings = [(8, False, False, False), (8, True, True, False)]
        rows = []
        for batch, amp, cl, compiled in settings:
            if left(args.limit) < 200:
                rows.append({"batch": batch, "note": "skipped: time"})
                continue
            try:
                model = prepared_model(device, cl, compiled)
                steps = 6 if quick else (60 if batch == 32 else 30)
                bare = bare_rate(model, device, batch, steps, amp)
                loop = loop_rate(model, jpegs, device, batch, steps + 5, amp, workers)
                row = {"batch": batch, "bf16": amp, "channels_last": cl, "compile": compiled}
                row |= {"bare_img_s": round(bare, 1), "loop_img_s": round(loop, 1), "ratio": round(loop / bare, 3)}
            except Exception as exc:  # a failing setting (e.g. compile) must not lose the others
                row = {"batch": batch, "bf16": amp, "channels_last": cl, "compile": compiled, "note": repr(exc)[:200]}
            rows.append(row)
            print(row, flush=True)
        report["loop_vs_bare"] = rows
        print(table(rows, ["batch", "bf16", "channels_last", "compile", "bare_img_s", "loop_img_s", "ratio"]))

        # 2. pipeline
        pipe = []
        for fast in (False, True):
            cache_free = ImageSet(jpegs.items, "jpegs", cache_limit_mb=0, fast_decode=fast)
            for w in [0, 4, 8, cpus - 1] if not quick else [0, 2]:
                if left(args.limit) < 150 or w < 0:
                    continue
                rate = pipeline_rate(cache_free, w, 40 if not quick else 4, 64 if not quick else 8, device)
                decode = "fast" if fast else "exact"
                pipe.append({"source": f"CPU, {w} workers, {decode} decode", "crops_per_s": round(rate, 1)})
                print(pipe[-1], flush=True)
        if cuda and left(args.limit) > 140:
            try:
                rate = gpu_decode_rate(sorted(folder.iterdir()), 128, 20, device)
                pipe.append({"source": "GPU decode_jpeg + resize/crop", "crops_per_s": round(rate, 1)})
            except Exception as exc:
                pipe.append({"source": "GPU decode_jpeg", "note": repr(exc)[:200]})
            print(pipe[-1], flush=True)
        report["pipeline"] = pipe
        print(table(pipe, ["source", "crops_per_s"]))

        # 3. a 5,000-step search and its held-out metrics
        steps = 20 if quick else 5000
        if left(args.limit) > (30 if quick else 120):
            model = prepared_model(device, cuda, False)
            t0 = time.perf_counter()
            outcome = find_pattern(
                model, ["photos", "jigsaw"], steps=steps, amp="bf16" if cuda else False, progress=False, workers=workers
            )
            seconds = time.perf_counter() - t0
            ev = evaluate_pattern(model, outcome.pattern, bundled_photos("photos-eval"), views=10)
            report["search"] = {
                "steps": outcome.result.steps_done,
                "batch_size": 32,
                "seconds": round(seconds, 1),
                "images_per_s": round(outcome.result.steps_done * 32 / seconds, 1),
                "eval_views": ev.n_images,
                "fooling_ratio": round(ev.fooling_ratio, 3),
                "fooling_ratio_confident": round(ev.fooling_ratio_confident, 3),
                "agreement": round(ev.agreement, 3),
                "random_sign": round(ev.random_baselines["sign"]["fooling_ratio"], 3),
            }
            print(report["search"], flush=True)
        else:
            report["search"] = {"note": "skipped: time"}
        best = max((r.get("loop_img_s", 0.0) for r in rows), default=0.0)
        if best:
            report["paper_schedule_minutes_projected"] = round(1.2e6 / best / 60, 1)
            print(f"paper schedule (1.2 M image passes) at {best:.0f} img/s: {1.2e6 / best / 60:.1f} min")
    report["seconds"] = round(time.perf_counter() - START, 1)
    path = save("gpu_check" if cuda else "gpu_check_cpu_dry_run", report, args.out)
    print(f"wrote {path} in {report['seconds']} s")


if __name__ == "__main__":
    main()
