"""Class-wise patterns in the paper's three settings, on real Fashion-MNIST: a clean model, a BadNets
backdoored model and a PGD adversarially trained model (same architecture, data and seed), with every
pattern's attack success, simplicity and overlap with a saliency map of its canvas.

This is ``patternscope experiment settings --data fashion-mnist`` with its defaults (the paper's class-wise
settings: natural canvas, mask 0.5 at the start, signed steps 0.02, batch 4, 5 epochs over 1,800 search images
of other classes, top 5% = 39 pixels), run into a scratch folder; it writes
benchmarks/results/classwise_settings.json and docs/figures/classwise_settings.png (the gallery).

    python benchmarks/classwise_settings.py        # about 15 min on one CPU core; needs dataset-fashion-mnist
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import RESULTS, save

from patternscope.runs.experiment_settings import SettingsOptions, format_settings, settings_run

FIGURE = Path(__file__).parent.parent / "docs" / "figures" / "classwise_settings.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-images", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--figure", default=str(FIGURE))
    parser.add_argument("--out", default=str(RESULTS / "classwise_settings.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        opts = SettingsOptions(out=str(Path(tmp) / "run"), train_images=args.train_images, epochs=args.epochs)
        summary = settings_run(opts, progress=False, log=lambda m: print(m, file=sys.stderr, flush=True))
        shutil.copyfile(summary.out / "gallery.png", args.figure)
        print(format_settings(summary))
    path = save("classwise_settings", summary.payload, args.out)
    print(f"wrote {path} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
