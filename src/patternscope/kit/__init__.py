"""Experiment kit: small CNNs, a trainer, PGD adversarial training and data poisoning (BadNets, blended).

What the class-wise pattern and backdoor-scan experiments need to build their three settings (natural,
backdoored, adversarially trained) on real data; useful on its own for making test models.
"""

from .nets import MLP, LeNet5, SmallCNN, TinyResNet
from .poison import (
    BlendTrigger,
    PatchTrigger,
    PoisonedData,
    ScatterTrigger,
    Trigger,
    WarpTrigger,
    attack_success_rate,
    poison_dataset,
)
from .train import TrainConfig, accuracy, pgd_attack, train_classifier

__all__ = [
    "MLP",
    "BlendTrigger",
    "LeNet5",
    "PatchTrigger",
    "PoisonedData",
    "ScatterTrigger",
    "SmallCNN",
    "TinyResNet",
    "TrainConfig",
    "Trigger",
    "WarpTrigger",
    "accuracy",
    "attack_success_rate",
    "pgd_attack",
    "poison_dataset",
    "train_classifier",
]
