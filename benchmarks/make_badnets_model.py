"""Train the BadNets model the README's scan gallery shows, and save its weights (safetensors).

A SmallCNN on 20,000 Fashion-MNIST training images (Debian's dataset-fashion-mnist), 5% of them
stamped with a 4x4 white patch in the bottom-right corner and relabelled "trouser" (class 1), 2
epochs. Prints clean accuracy and the trigger's attack success on the 10,000 test images.

    python benchmarks/make_badnets_model.py runs/fmnist_badnets.safetensors
    patternscope scan --model patternscope.kit.nets:SmallCNN --weights runs/fmnist_badnets.safetensors \\
        --data fashion-mnist --out runs/scan_badnets
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from safetensors.torch import save_file

from patternscope.data import load_fashion_mnist
from patternscope.kit import (
    PatchTrigger,
    SmallCNN,
    TrainConfig,
    accuracy,
    attack_success_rate,
    poison_dataset,
    train_classifier,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="weights file to write (.safetensors)")
    parser.add_argument("--clean", action="store_true", help="train the same model without poisoning")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data = load_fashion_mnist()
    trigger = PatchTrigger(4, "bottom-right")
    x, y = data.train_x[:20000], data.train_y[:20000]
    if not args.clean:
        poisoned = poison_dataset(x, y, trigger, 1, 0.05, seed=args.seed)
        x, y = poisoned.x, poisoned.y
    net = train_classifier(SmallCNN(), x, y, TrainConfig(epochs=2, seed=args.seed))
    acc = accuracy(net, data.test_x, data.test_y)
    asr = attack_success_rate(net, data.test_x, data.test_y, trigger, 1)
    print(f"clean accuracy {acc:.3f}; trigger -> trouser on other classes' test images {asr:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
