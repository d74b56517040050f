"""A network's blocks: which modules make up "the last block before the head" of any classifier.

A *block* is a module with its own ``forward`` (not a container: ``nn.Sequential``, ``nn.ModuleList``,
``nn.ModuleDict`` and their subclasses are opened) that holds two or more convolution or linear layers: a
ResNet's BasicBlock/Bottleneck, an EfficientNet's MBConv, a transformer block (a conv + norm + activation
module is a layer, not a block). :func:`last_block` picks, before the head in definition order:

1. the last such block; when it ends in a stack of blocks itself (a module whose children are two or more
   blocks of one class, the last of which holds the block's last weighted layer: a torchvision ViT's
   ``encoder.layers``, a ConvNeXt stage's ``blocks``, a RegNet stage), the last block of that stack, and so
   on down (ResNet-18: ``layer4.1``; EfficientNet: the last
   MBConv of the blocks stack, ``blocks.6.0``; timm ViT: ``blocks.11``);
2. in a network without blocks (VGG, small CNNs), the last convolution with the layers after it in the same
   parent up to the next convolution or linear layer (its norm, activation, pooling; VGG-11:
   ``features.18``-``features.20``); without any convolution, the last linear layer before the head, with
   the layers after it likewise.

Layers between that block and the head (an EfficientNet's 1 x 1 ``conv_head``, VGG's hidden linear layers)
are not part of it.
"""

from __future__ import annotations

from torch import nn

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_LAYERS = (*_CONVS, nn.Linear)


def _weighted(module: nn.Module) -> int:
    """How many convolution and linear layers ``module`` holds (itself included)."""
    return sum(isinstance(m, _LAYERS) for m in module.modules())


def is_block(module: nn.Module) -> bool:
    """A module with its own forward (not a container) holding two or more convolution or linear layers."""
    return not isinstance(module, CONTAINERS) and _weighted(module) >= 2


def _units(net: nn.Module, head: str) -> list[tuple[str, nn.Module]]:
    """The modules before ``head`` in definition order, containers and the head's ancestors opened."""
    units: list[tuple[str, nn.Module]] = []

    def walk(module: nn.Module, prefix: str) -> bool:
        for name, child in module.named_children():
            full = prefix + name
            if full == head:
                return True
            if isinstance(child, CONTAINERS) or head.startswith(full + "."):
                if walk(child, full + "."):
                    return True
            else:
                units.append((full, child))
        return False

    walk(net, "")
    return units


def _innermost(name: str, block: nn.Module) -> str:
    """The last block of the stack of blocks that ends ``block`` (recursively), or ``name`` itself: a stack
    ends it when its last block holds the last convolution or linear layer of ``block``."""
    weighted = [sub for sub, m in block.named_modules() if isinstance(m, _LAYERS)]
    stacks = []
    for sub, module in block.named_modules():
        children = list(module.named_children())
        if len(children) >= 2 and all(is_block(c) and type(c) is type(children[0][1]) for _, c in children):
            last = f"{sub}.{children[-1][0]}" if sub else children[-1][0]
            if weighted[-1].startswith(last + "."):
                stacks.append(last)
    if not stacks:
        return name
    inner = stacks[-1]
    return _innermost(f"{name}.{inner}", block.get_submodule(inner))


def last_block(net: nn.Module, head: str) -> list[str]:
    """The names of the modules that make up the last block of ``net`` before the module named ``head`` (see
    the module docstring); empty when there is none (the head is the only weighted layer)."""
    units = _units(net, head)
    blocks = [(name, m) for name, m in units if is_block(m)]
    if blocks:
        return [_innermost(*blocks[-1])]
    leaves = [(n, m) for name, unit in units for n, m in _leaves(name, unit)]
    convs = [i for i, (_, m) in enumerate(leaves) if isinstance(m, _CONVS)]
    linears = [i for i, (_, m) in enumerate(leaves) if isinstance(m, nn.Linear)]
    start = convs[-1] if convs else linears[-1] if linears else None
    if start is None:
        return []
    parent = leaves[start][0].rpartition(".")[0]
    group = [leaves[start][0]]
    for name, module in leaves[start + 1 :]:
        if name.rpartition(".")[0] != parent or _weighted(module):
            break
        group.append(name)
    return group


def _leaves(name: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules without children inside ``module`` (itself when it has none), with their full names."""
    return [(f"{name}.{sub}" if sub else name, m) for sub, m in module.named_modules() if not any(m.children())]


__all__ = ["CONTAINERS", "is_block", "last_block"]
