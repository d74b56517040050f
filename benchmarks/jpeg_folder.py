"""A reproducible folder of COCO-size JPEGs made from the bundled photos: random crops and scales,
colour jitter, sizes around 640 x 480 (landscape and portrait), JPEG quality 75-95.

    python benchmarks/jpeg_folder.py OUT_DIR --count 5000 [--seed 0]

Image ``i`` depends only on (seed, i), so a folder can be grown or checked file by file; existing files
are kept. Two processes share the work.
"""

from __future__ import annotations

import argparse
import multiprocessing
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from patternscope.data.photos import bundled_photos


def _sources() -> list[Path]:
    items = bundled_photos("photos").items + bundled_photos("photos-eval").items
    return [Path(i.source) for i in items if isinstance(i.source, Path)]


def make_one(args: tuple[Path, list[Path], int, int]) -> None:
    out, sources, seed, index = args
    path = out / f"img_{index:06d}.jpg"
    if path.exists():
        return
    rng = np.random.default_rng([seed, index])
    with Image.open(sources[int(rng.integers(len(sources)))]) as im:
        photo = im.convert("RGB")
    w, h = photo.size
    share = float(rng.uniform(0.3, 1.0))
    cw, ch = max(16, int(w * share)), max(16, int(h * share))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    long_side = int(rng.integers(500, 641))
    short_side = int(rng.integers(360, 481))
    size = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
    image = photo.crop((left, top, left + cw, top + ch)).resize(size, Image.Resampling.BICUBIC)
    image = ImageEnhance.Color(image).enhance(float(rng.uniform(0.6, 1.4)))
    image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.7, 1.3)))
    image = ImageEnhance.Contrast(image).enhance(float(rng.uniform(0.7, 1.3)))
    tmp = path.with_suffix(".tmp")
    image.save(tmp, format="JPEG", quality=int(rng.integers(75, 96)))
    tmp.replace(path)


def make_folder(out: str | Path, count: int, seed: int = 0, processes: int = 2) -> Path:
    """Write ``count`` JPEGs into ``out`` (kept if already there); returns the folder."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    sources = _sources()
    jobs = [(folder, sources, seed, i) for i in range(count)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for _ in pool.imap_unordered(make_one, jobs, chunksize=64):
            pass
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_folder(args.out, args.count, args.seed)
    print(f"{args.count} JPEGs in {args.out}")


if __name__ == "__main__":
    main()
