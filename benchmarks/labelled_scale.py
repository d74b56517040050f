"""The labelled commands at scale: peak memory (RSS) and wall time of `patternscope find classwise` on
ImageFolder trees of 1,000 and 8,000 COCO-size JPEGs, with the image cache off and at its default, beside
the memory the whole set takes as tensors (what every release up to 0.2 held before it started).

The tree spreads the JPEGs over 10 class folders (links); the model is the light 224 x 224 network of
`benchmarks/scale_models.py` with 10 random-weight classes, so the run measures reading and memory, not
the network. Each run is its own process; its peak RSS is sampled from /proc. The found pattern must be
the same with any cache size (checked).

    python benchmarks/jpeg_folder.py /tmp/coco/jpegs --count 8000
    python benchmarks/labelled_scale.py /tmp/coco/jpegs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import save, table
from evaluate_scale import run_measured

HERE = Path(__file__).parent
MODEL = ["--model", f"{HERE / 'scale_models.py'}:Light224", "--model-kwargs", '{"classes": 10}', "--weights", "none"]
EAGER = """
import sys
from patternscope.data import image_folder
from patternscope.data.labelled import labelled_images
images, labels = labelled_images(image_folder(sys.argv[1]), (3, 224, 224))
print(images.shape[0])
"""


def class_tree(source: Path, count: int, root: Path, classes: int = 10) -> Path:
    """An ImageFolder tree of links to the first ``count`` files of ``source``, image i in class i % classes."""
    tree = root / f"tree_{count}"
    for i, f in enumerate(sorted(source.iterdir())[:count]):
        folder = tree / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f.name).symlink_to(f)
    return tree


def run_classwise(tree: Path, out: Path, cache_mb: float, steps: int) -> dict:
    argv = [sys.executable, "-m", "patternscope", "find", "classwise", "--out", str(out), *MODEL]
    argv += ["--data", str(tree), "--class", "1", "--steps", str(steps), "--cache-mb", f"{cache_mb:g}"]
    argv += ["--device", "cpu", "--quiet"]
    run = run_measured(argv)
    run.pop("stdout")
    row = json.loads((out / "classwise.json").read_text())["classes"][0]
    run["pattern"] = {k: row[k] for k in ("k", "success", "clean_rate", "smallest_k")}
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a folder of at least 8,000 JPEGs (benchmarks/jpeg_folder.py)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 8000])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for n in args.sizes:
            tree = class_tree(Path(args.folder), n, root)
            eager = run_measured([sys.executable, "-c", EAGER, str(tree)])
            rows.append({"images": n, "mode": "whole set as tensors (0.2)", "peak_rss_mb": eager["peak_rss_mb"]})
            rows[-1]["seconds"] = eager["seconds"]
            found = []
            for cache in (0.0, 2048.0):
                run = run_classwise(tree, root / f"run_{n}_{cache:g}", cache, args.steps)
                found.append(run["pattern"])
                rows.append({"images": n, "mode": f"find classwise, --cache-mb {cache:g}", **run})
                peak, seconds = run["peak_rss_mb"], run["seconds"]
                print(f"{n} images, cache {cache:g} MB: {peak:.0f} MB, {seconds:.0f} s", flush=True)
            if found[0] != found[1]:
                raise SystemExit(f"the cache changed the result: {found}")
    first = {r["mode"]: r["peak_rss_mb"] for r in rows if r["images"] == args.sizes[0]}
    for r in rows:
        r["growth_vs_first"] = r["peak_rss_mb"] / first[r["mode"]]
    print(table(rows, ["images", "mode", "peak_rss_mb", "growth_vs_first", "seconds"]))
    save("labelled_scale", {"sizes": args.sizes, "steps": args.steps, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
