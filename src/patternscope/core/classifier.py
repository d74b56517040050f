"""The classifier wrapper every search and measurement runs on.

A :class:`Classifier` takes images in [0,1] pixel space (N x C x H x W) and applies the model's own
normalisation inside, so a perturbation's budget is always measured in pixel space. It is in eval mode
with frozen parameters, counts the images it runs (the *pass* budget of comparisons), and can tap any
layer's output (or input) by name for feature-space objectives.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ModelSpecError

_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish)

# A forward-only image costs about a third of a forward+backward one (backward ~ two forwards).
FORWARD_ONLY_COST = 1 / 3


class PassCounter:
    """Counts images through a model: with gradients (forward+backward) and forward-only.

    The budget unit of comparisons is the *pass*: one image through forward and backward; a
    forward-only image counts :data:`FORWARD_ONLY_COST` of a pass.
    """

    def __init__(self) -> None:
        self.grad = 0
        self.forward_only = 0

    def count(self, x: torch.Tensor) -> None:
        if torch.is_grad_enabled() and x.requires_grad:
            self.grad += int(x.shape[0])
        else:
            self.forward_only += int(x.shape[0])

    def cost(self) -> float:
        """Passes so far (forward+backward images plus a third of the forward-only ones)."""
        return self.grad + FORWARD_ONLY_COST * self.forward_only


def _first(value: Any) -> Any:
    """A hook's value: the first element of a tuple or list (a module's inputs, a multi-output module)."""
    return value[0] if isinstance(value, (tuple, list)) else value


class _Captured(Exception):
    """Raised inside a forward hook to stop the forward pass once a tapped layer has run."""


class Classifier(nn.Module):
    """An image classifier on [0,1] inputs with its normalisation inside; eval mode, frozen.

    Args:
        net: the underlying network, taking normalised inputs and returning logits (N x classes).
        mean: per-channel mean subtracted inside ``forward`` (pixel space [0,1]).
        std: per-channel standard deviation divided by inside ``forward``.
        input_size: (C, H, W) the model expects.
        class_names: optional names for the output classes, for reports.
        spec: the spec string the model was loaded from (recorded in pattern metadata).
    """

    mean: torch.Tensor
    std: torch.Tensor
    input_size: tuple[int, int, int]

    def __init__(
        self,
        net: nn.Module,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        input_size: tuple[int, int, int],
        class_names: Sequence[str] | None = None,
        spec: str = "custom",
        weights: str | None = None,
    ) -> None:
        super().__init__()
        channels = input_size[0]
        if len(mean) not in (1, channels) or len(std) not in (1, channels):
            raise ModelSpecError(
                f"mean/std have {len(mean)}/{len(std)} values but the model takes {channels} channels; "
                f"give one value or {channels}"
            )
        if any(s <= 0 for s in std):
            raise ModelSpecError(f"std must be positive, got {tuple(std)}")
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = (int(input_size[0]), int(input_size[1]), int(input_size[2]))
        self.spec = spec
        self.weights = weights
        self._class_names = list(class_names) if class_names is not None else None
        self._num_classes: int | None = None
        self.passes = PassCounter()
        self._copied_taps: set[str] = set()  # taps whose values a later in-place op overwrites (copied when read)
        self.channels_last = False
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def use_channels_last(self, enabled: bool = True) -> Classifier:
        """Run the network in channels-last memory layout (NHWC: faster convolutions with cuDNN and
        tensor cores, the same results up to float rounding); inputs are converted in ``forward``."""
        self.channels_last = enabled
        fmt = torch.channels_last if enabled else torch.contiguous_format
        self.net.to(memory_format=fmt)
        return self

    # -- basic properties -------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def num_classes(self) -> int:
        """Number of output classes (found with one forward pass on a black image, then cached)."""
        if self._num_classes is None:
            with torch.no_grad():
                out = self(torch.zeros(1, *self.input_size, device=self.device))
            self._num_classes = int(out.shape[-1])
        return self._num_classes

    def adopt_class_names(self, names: Sequence[str]) -> bool:
        """Use ``names`` in reports when the model has no class names of its own and they name every class;
        returns whether they were taken."""
        if self._class_names is None and len(names) == self.num_classes:
            self._class_names = list(names)
            return True
        return False

    @property
    def class_names(self) -> list[str]:
        """Class names for reports; ``class 7`` style names when the model has none."""
        n = self.num_classes
        if self._class_names is not None and len(self._class_names) == n:
            return self._class_names
        return [f"class {i}" for i in range(n)]

    def train(self, mode: bool = True) -> Classifier:
        """Always stays in eval mode: patterns are searched and measured on the deployed model."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images ``x`` in [0,1], shape N x C x H x W."""
        self.passes.count(x)
        z = (x - self.mean) / self.std
        if self.channels_last:
            z = z.contiguous(memory_format=torch.channels_last)
        return self.net(z)

    # -- feature taps --------------------------------------------------------------------------------
    def layer_names(self) -> list[str]:
        """Names of the network's submodules that :meth:`features` can tap (``logits`` for the output)."""
        return ["logits"] + [name for name, _ in self.net.named_modules() if name]

    def features(self, x: torch.Tensor, layer: str | None = None) -> torch.Tensor:
        """Activations of ``layer`` for images ``x`` in [0,1].

        ``layer`` is ``None`` or ``"logits"`` for the output, a submodule name such as ``blocks.5``
        for that module's output, or ``name:in`` for its input (``classifier:in`` is the pooled
        penultimate feature vector of most torchvision/timm models). The forward pass stops at the tap.
        """
        if layer in (None, "", "logits"):
            return self(x)
        return self._tapped_forward(x, layer)

    def features_and_logits(self, x: torch.Tensor, layer: str | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The activations of ``layer`` (as :meth:`features`, the first call's) and the logits, from one whole
        forward; the activations are as the layer produced them, whatever in-place op follows it."""
        if layer in (None, "", "logits"):
            logits = self(x)
            return logits, logits
        records, logits = self._recorded_forward(x, [layer])
        if not records:
            raise ModelSpecError(f"layer {layer!r} was not used in the forward pass; choose another layer")
        return records[0][1], logits

    def _tapped_forward(self, x: torch.Tensor, layer: str) -> torch.Tensor:
        """The first activation read at ``layer``'s tap during a forward of ``x``; the forward stops there (so
        nothing after the tap can overwrite it). An input tap is read before its module runs (an in-place
        module would overwrite it)."""
        module, where = self._tap(layer)
        captured: list[Any] = []

        def keep(value: Any) -> None:
            captured.append(_first(value))
            raise _Captured

        if where == "in":
            handle = module.register_forward_pre_hook(lambda _mod, inputs: keep(inputs[0]))
        else:
            handle = module.register_forward_hook(lambda _mod, _inputs, output: keep(output))
        try:
            self(x)
        except _Captured:
            pass
        finally:
            handle.remove()
        if not captured:
            raise ModelSpecError(f"layer {layer!r} was not used in the forward pass; choose another layer")
        return captured[0]

    def activations(self, x: torch.Tensor, layers: Sequence[str]) -> list[Any]:
        """Outputs of every call of the named submodules (in call order) during one forward of ``x``, as each
        module produced them (see :meth:`layer_outputs`)."""
        return [value for _tap, value in self._recorded_forward(x, layers)[0]]

    def layer_outputs(self, x: torch.Tensor, layers: Sequence[str]) -> tuple[dict[str, list[Any]], torch.Tensor]:
        """Every call's output of each named submodule (``name`` or ``name:in`` for its input) during one whole
        forward of ``x``, and the logits.

        The values are what each module produced (or received), even where an in-place op later in the forward
        overwrites that memory: a ``ReLU(inplace=True)`` after a conv or batch norm, ResNet's ``out += identity``.
        """
        records, logits = self._recorded_forward(x, layers)
        outputs: dict[str, list[Any]] = {name: [] for name in layers}
        for tap, value in records:
            outputs[tap].append(value)
        return outputs, logits

    def _recorded_forward(self, x: torch.Tensor, taps: Sequence[str]) -> tuple[list[tuple[str, Any]], torch.Tensor]:
        """One whole forward of ``x``: (tap, value) for every value read at the taps, in call order, and the logits.

        Values are kept by reference (no copy) unless a later in-place op overwrote them: the tensor's version
        counter tells, and then the tap is remembered and the forward runs again with that tap's values copied
        as they are read (every later forward copies them at once; the discarded forward is not counted).
        """
        found = [(tap, *self._tap(tap)) for tap in taps]
        records: list[tuple[str, Any, int | None]] = []

        def keep(tap: str, value: Any) -> None:
            value = _first(value)
            version = None
            if isinstance(value, torch.Tensor):
                if tap in self._copied_taps or value.is_inference():
                    value = value.clone()
                else:
                    version = value._version
            records.append((tap, value, version))

        handles = []
        for tap, module, where in found:
            if where == "in":
                handles.append(module.register_forward_pre_hook(lambda _m, inputs, tap=tap: keep(tap, inputs[0])))
            else:
                handles.append(module.register_forward_hook(lambda _m, _i, output, tap=tap: keep(tap, output)))
        counts = (self.passes.grad, self.passes.forward_only)
        try:
            logits = self(x)
        finally:
            for handle in handles:
                handle.remove()
        overwritten = {tap for tap, value, version in records if version is not None and value._version != version}
        if overwritten:
            self._copied_taps |= overwritten
            self.passes.grad, self.passes.forward_only = counts
            return self._recorded_forward(x, taps)
        return [(tap, value) for tap, value, _version in records], logits

    def conv_layers(self) -> list[str]:
        """The layers that data-free objectives (FFF, GD-UAP) read: the conv layers' activations.

        The names of the network's activation modules (ReLU, ReLU6, SiLU, GELU, ...) when it has any,
        which is where the papers read "the output of each convolution layer"; otherwise the
        ``nn.Conv2d`` modules themselves.
        """
        acts = [name for name, m in self.net.named_modules() if name and isinstance(m, _ACTIVATIONS)]
        if acts:
            return acts
        convs = [name for name, m in self.net.named_modules() if name and isinstance(m, nn.Conv2d)]
        if not convs:
            raise ModelSpecError("the model has no activation or Conv2d modules for a data-free objective")
        return convs

    def check_layer(self, layer: str | None) -> None:
        """Raise :class:`ModelSpecError` now if ``layer`` cannot be tapped (before any slow work)."""
        if layer not in (None, "", "logits"):
            self._tap(layer)

    def _tap(self, layer: str) -> tuple[nn.Module, str]:
        """The module behind a tap name and which side of it to read (``in`` or ``out``)."""
        name, _, where = layer.partition(":")
        if where not in ("", "out", "in"):
            raise ModelSpecError(f"layer {layer!r}: the suffix must be ':in' or ':out'")
        return self._submodule(name), where or "out"

    def _submodule(self, name: str) -> nn.Module:
        modules = dict(self.net.named_modules())
        if name not in modules or not name:
            close = [n for n in modules if n and (name in n or n in name)][:8]
            hint = f" Close names: {', '.join(close)}." if close else ""
            raise ModelSpecError(
                f"the model has no layer {name!r}.{hint} List them with `patternscope models --layers SPEC`."
            )
        return modules[name]

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: spec, weights, input size, classes, normalisation."""
        return {
            "spec": self.spec,
            "weights": self.weights,
            "input_size": list(self.input_size),
            "num_classes": self.num_classes,
            "mean": [round(v, 6) for v in self.mean.flatten().tolist()],
            "std": [round(v, 6) for v in self.std.flatten().tolist()],
        }
