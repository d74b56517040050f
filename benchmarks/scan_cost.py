"""What a scan costs, through the command line as a user runs it: self mode, reference mode with 2 clean reference
models (a first run scans them into the reference cache; a second run reuses them), and Neural Cleanse beside it.

Models are Fashion-MNIST SmallCNNs of the dev zoo (benchmarks/_zoo.py, trained once and cached), saved as
safetensors; the data is a 3,000-image labelled ImageFolder tree of Fashion-MNIST test images written once.
Run it with nothing else running (the times are wall-clock on this machine).

    python benchmarks/scan_cost.py            # 3 suspect models: self, reference cold, reference warm, NC
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _common import save, table
from _zoo import DEFENDER, ModelSpec, dataset, trained, zoo

from patternscope.cli import main as cli
from patternscope.data import write_image_tree

SPEC = "patternscope.kit.nets:SmallCNN"


def weights_file(spec: ModelSpec, folder: Path) -> Path:
    from safetensors.torch import save_file

    model, _ = trained(spec, dataset("fashion-mnist"))
    path = folder / f"{spec.name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.net.state_dict().items()}, str(path))
    return path


def timed(args: list[str]) -> float:
    t0 = time.perf_counter()
    code = cli([*args, "--quiet"])
    if code != 0:
        raise SystemExit(f"patternscope {' '.join(args)} exited {code}")
    return round(time.perf_counter() - t0, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    specs = [e["spec"] for e in zoo() if e["spec"].arch == "smallcnn"]
    suspects = [s for s in specs if s.trigger is not None][: args.models]
    references = [s for s in specs if s.trigger is None][:2]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = dataset("fashion-mnist")
        tree = write_image_tree(root / "tree", data.test_x[DEFENDER], data.test_y[DEFENDER], data.class_names)
        refs = [str(weights_file(s, root)) for s in references]
        cache = root / "cache"
        for spec in suspects:
            w = weights_file(spec, root)
            base = ["scan", "--data", str(tree), "--model", SPEC, "--weights", str(w), "--device", "cpu"]
            row: dict[str, Any] = {"model": spec.name}
            row["self s"] = timed([*base, "--out", str(root / f"{spec.name}-self")])
            ref_args = ["--reference", ",".join(refs), "--reference-cache", str(cache)]
            cold = not cache.exists()
            row["reference s"] = timed([*base, "--out", str(root / f"{spec.name}-ref"), *ref_args])
            row["references"] = "scanned" if cold else "reused"
            row["reference again s"] = timed([*base, "--out", str(root / f"{spec.name}-ref2"), *ref_args])
            row["self + NC s"] = timed([*base, "--out", str(root / f"{spec.name}-nc"), "--neural-cleanse"])
            scan = json.loads((root / f"{spec.name}-nc" / "scan.json").read_text())
            row["scan part s"] = round(scan["seconds"], 1)
            row["NC part s"] = round(scan["neural_cleanse"]["seconds"], 1)
            rows.append(row)
            print(row, flush=True)
    total = {k: round(sum(r[k] for r in rows), 1) for k in rows[0] if k.endswith(" s")}
    ratio = round(total["scan part s"] / total["NC part s"], 3)
    print(table(rows, list(rows[0])))
    print(f"scan / Neural Cleanse time: {ratio}")
    path = save(
        "scan_cost",
        {"models": rows, "total": total, "ratio_scan_over_nc": ratio, "data": "Fashion-MNIST test 0-2999 as PNGs"},
        args.out,
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
