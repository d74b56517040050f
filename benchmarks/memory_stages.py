"""Peak memory of the main job and of `patternscope evaluate`, stage by stage (issue 31).

Each command runs as its own process, the way a user runs it. This script samples the resident size
(RSS) of every process of the run every 10 ms and keeps the largest. The stage is read from the run as it
goes: what the command has printed (its progress bars name the stage) and which of its files exist.

- ``main``: ``patternscope find dominant`` (the main job; ``--steps`` shortens the search, the memory
  of one step does not depend on how many follow). Stages: start (imports, model, data), search,
  evaluate, report (layers, figures, report.html).
- ``evaluate``: ``patternscope evaluate`` of a saved pattern on a folder of JPEGs
  (``benchmarks/jpeg_folder.py`` makes 3,000 COCO-size ones). Stages: start, evaluate, report.

    python benchmarks/jpeg_folder.py /tmp/coco/jpegs --count 3000
    python benchmarks/memory_stages.py --jpegs /tmp/coco/jpegs --steps 20
    # the main job with glibc's allocator left alone and every block of 128 KiB or more mapped and unmapped
    python benchmarks/memory_stages.py --jpegs /tmp/coco/jpegs --steps 20 --main-only \
        --env PATTERNSCOPE_NO_MALLOC_TUNING=1 MALLOC_MMAP_THRESHOLD_=131072
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import save, table

STAGE_WORDS = {"dominant": "search", "evaluate": "evaluate"}  # progress-bar labels -> stage
ORDER = ["start", "search", "evaluate", "report"]


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def _tree(pid: int) -> list[int]:
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return out


def run_staged(argv: list[str], out: Path, files: dict[str, str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``argv``; the peak RSS (MiB, largest process) per stage. ``files``: a file of the run folder ->
    the stage that starts once it exists (checked in order)."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    stage = ["start"]
    said: list[str] = []

    def read_stderr() -> None:
        assert proc.stderr is not None
        while chunk := os.read(proc.stderr.fileno(), 4096).decode(errors="replace"):  # what is there, at once
            said.append(chunk)
            text = "".join(said[-2:])  # a label split over two chunks
            for word, name in STAGE_WORDS.items():
                if word in text and ORDER.index(name) > ORDER.index(stage[0]):
                    stage[0] = name

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    peaks: dict[str, float] = {}
    t0 = time.perf_counter()
    while proc.poll() is None:
        for name, next_stage in files.items():
            if (out / name).exists() and ORDER.index(next_stage) > ORDER.index(stage[0]):
                stage[0] = next_stage
        largest = max(_rss_mb(p) for p in _tree(proc.pid))
        peaks[stage[0]] = max(peaks.get(stage[0], 0.0), largest)
        time.sleep(0.01)
    reader.join(timeout=5)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])} ... failed ({proc.returncode}): {''.join(said)[-2000:]}")
    return {"seconds": round(time.perf_counter() - t0, 1), "peaks_mb": {k: round(v) for k, v in peaks.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jpegs", type=Path, required=True, help="a folder of COCO-size JPEGs")
    parser.add_argument("--count", type=int, default=3000, help="JPEGs evaluated (default 3000)")
    parser.add_argument("--steps", type=int, default=300, help="search steps of the main job (default 300)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE", help="environment of the runs")
    parser.add_argument("--main-only", action="store_true", help="skip the evaluate run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    env = dict(os.environ) | dict(item.split("=", 1) for item in args.env)
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cli = [sys.executable, "-m", "patternscope"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "main"
        argv = [*cli, "find", "dominant", "--out", str(run), "--steps", str(args.steps), "--device", "cpu"]
        main_job = run_staged(argv, run, {"pattern.safetensors": "evaluate", "metrics.json": "report"}, env)
        rows.append(
            {
                "job": f"find dominant (main job, {args.steps} steps)",
                **main_job["peaks_mb"],
                "seconds": main_job["seconds"],
            }
        )
        folder = Path(tmp) / "jpegs"
        folder.mkdir()
        if args.main_only:
            args.count = 0
        for f in sorted(args.jpegs.iterdir())[: args.count]:
            (folder / f.name).symlink_to(f)
        ev_out = Path(tmp) / "ev"
        argv = [*cli, "evaluate", "--pattern", str(run), "--data", str(folder), "--device", "cpu", "--out", str(ev_out)]
        if not args.main_only:
            evaluate = run_staged(argv, ev_out, {"metrics.json": "report"}, env)
            seconds = evaluate["seconds"]
            rows.append({"job": f"evaluate ({args.count} JPEGs)", **evaluate["peaks_mb"], "seconds": seconds})
    columns = ["job", "start", "search", "evaluate", "report", "seconds"]
    for row in rows:
        row["peak"] = max(v for k, v in row.items() if k in columns[1:5])
    print(table(rows, [*columns, "peak"]))
    settings = {**vars(args), "jpegs": str(args.jpegs)}
    path = save("memory_stages", {"settings": settings, "results": rows}, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
