"""Input gradients of a frozen model with less of autograd's memory, to the bit.

A pattern search back-propagates into the input only: the model's weights are frozen. Autograd still
keeps what the weight gradients would need: every convolution saves its input and every batch norm its
input, though the gradient of a convolution with respect to its input reads only the weights, and that of
an inference-mode batch norm only its running statistics. Over EfficientNet-Lite0 at 224 x 224 those inputs
are 1.8 of the 2.7 GB a batch of 33 saves.

:func:`lean_backward` is a context manager around the forward pass (the backward may run outside it).
For a convolution, or a batch norm in inference mode, whose weights need no gradient, it keeps only the
size and strides of the input: the backward is handed an uninitialised tensor of that layout, which its
kernel does not read. Everything else is kept as autograd keeps it. The backward runs the same kernels on
the same gradients, so the gradients are identical to the bit (``tests/core/test_lean_backward.py`` checks
that on several architectures, with the placeholders filled with NaN).

Measured on Lite0, batch 33, 2 threads (``benchmarks/memory_stages.py`` for the whole run): peak 3.0 GB
instead of 3.6-4.0 GB, 4% more time a step. A one-byte mask in place of each ReLU6 input was tried and
dropped: no lower peak (the backward's own working tensors set it), 60% more time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_CONVS = {torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d, F.conv3d}
_NORMS = {F.batch_norm, torch.batch_norm}


@dataclass(frozen=True)
class _Layout:
    """A saved input the backward does not read: its layout only."""

    size: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    def tensor(self) -> torch.Tensor:
        return torch.empty_strided(self.size, self.stride, dtype=self.dtype, device=self.device)


class _Saving(threading.local):
    """What the operation now running on this thread lets the pack hook drop."""

    def __init__(self) -> None:
        self.layouts: tuple[torch.Size, ...] = ()  # shapes of inputs kept as layouts only
        self.keep_not: torch.Size | None = None  # a shape that must be kept (the weight's)


_SAVING = _Saving()


def _no_grad_needed(*tensors: Any) -> bool:
    return all(not (isinstance(t, torch.Tensor) and t.requires_grad) for t in tensors)


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any = None) -> Any:
    return args[index] if len(args) > index else kwargs.get(name, default)


def _plan(func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """What ``func`` called with these arguments may save lean (None: nothing, save as autograd does)."""
    if func in _CONVS:
        x, weight, bias = (_arg(args, kwargs, i, n) for i, n in enumerate(("input", "weight", "bias")))
        tensors = isinstance(x, torch.Tensor) and isinstance(weight, torch.Tensor)
        if tensors and x.shape != weight.shape and _no_grad_needed(weight, bias):
            return {"layouts": (x.shape,), "keep_not": weight.shape}
    elif func in _NORMS:
        x, weight, bias = _arg(args, kwargs, 0, "input"), _arg(args, kwargs, 3, "weight"), _arg(args, kwargs, 4, "bias")
        training = _arg(args, kwargs, 5, "training", False)
        if isinstance(x, torch.Tensor) and x.dim() > 1 and not training and _no_grad_needed(weight, bias):
            return {"layouts": (x.shape,)}
    return None


class _Marking(TorchFunctionMode):
    """Tells the pack hook which operation is saving its tensors (on this thread)."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        plan = _plan(func, args, kwargs) if torch.is_grad_enabled() else None
        if plan is None:
            return func(*args, **kwargs)
        before = (_SAVING.layouts, _SAVING.keep_not)
        _SAVING.layouts, _SAVING.keep_not = plan.get("layouts", ()), plan.get("keep_not")
        try:
            return func(*args, **kwargs)
        finally:
            _SAVING.layouts, _SAVING.keep_not = before


def _pack(t: torch.Tensor) -> Any:
    if not t.is_floating_point():
        return t
    if _SAVING.layouts and t.shape in _SAVING.layouts and t.shape != _SAVING.keep_not:
        return _Layout(tuple(t.shape), tuple(t.stride()), t.dtype, t.device)
    return t


def _unpack(saved: Any) -> torch.Tensor:
    return saved.tensor() if isinstance(saved, _Layout) else saved


@contextmanager
def lean_backward(enabled: bool = True) -> Iterator[None]:
    """Within this context, convolutions and inference-mode batch norms whose weights need no gradient
    keep only the layout of their input for the backward (see the module docstring); layers whose weights
    do need one are saved as usual, so every gradient stays computable and exact. ``enabled=False``: a
    plain context. Not for ``torch.func`` transforms (they refuse saved-tensor hooks)."""
    if not enabled:
        yield
        return
    with _Marking(), torch.autograd.graph.saved_tensors_hooks(_pack, _unpack):
        yield
