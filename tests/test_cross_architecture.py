"""Every command's core path on the papers' architectures and a transformer, loaded as users load them
(``load_model`` with ``--weights none`` and ``--model-kwargs``): torchvision ResNet-18 and VGG-11, timm
ViT-Tiny (patch 8), random weights, 32 x 32 inputs, 3 classes.

What broke on these and is checked here: taps on modules followed by an in-place op read the module's own
output; ``--head last-block`` trains the right block; the layer analysis names transformer blocks; each path
ends with a finite pattern within its budget. The searches take 2-3 steps on 24 noise images: the point is
the path, not the pattern. VGG-11's 128M parameters make its hardening slow (marked so)."""

from __future__ import annotations

import pytest
import torch
from helpers import out_of_place

from patternscope.analyses.classwise import ClasswiseConfig, find_classwise_pattern
from patternscope.analyses.downstream import DownstreamConfig, build_downstream, measure_downstream, train_downstream
from patternscope.analyses.hardening import HardenConfig, harden_model
from patternscope.analyses.layers import analyze_layers
from patternscope.analyses.scan import ScanConfig, scan_model
from patternscope.core.classifier import Classifier
from patternscope.core.models import load_model
from patternscope.core.patterns import Pattern, top_k_count
from patternscope.methods import DominantConfig, find_pattern

EPS = 8 / 255
SIZE = (3, 32, 32)
ARCHS = {
    "resnet18": ("torchvision:resnet18", {"num_classes": 3}),
    "vgg11": ("torchvision:vgg11", {"num_classes": 3}),
    "vit": ("timm:vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "num_classes": 3}),
}
# a module whose output an in-place op overwrites later in the forward (ViT: none does; its first MLP layer)
OVERWRITTEN = {"resnet18": "layer1.0.bn2", "vgg11": "features.16", "vit": "blocks.0.mlp.fc1"}
LAST_BLOCK = {"resnet18": ["layer4.1"], "vgg11": ["features.18", "features.19", "features.20"], "vit": ["blocks.11"]}
BLOCKS = {
    "resnet18": ["conv1", "bn1", "relu", "maxpool"]
    + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)]
    + ["avgpool", "logits"],
    "vgg11": [f"features.{i}" for i in range(21)]
    + ["avgpool"]
    + [f"classifier.{i}" for i in (0, 1, 3, 4)]
    + ["logits"],
    "vit": ["patch_embed"] + [f"blocks.{i}" for i in range(12)] + ["norm", "logits"],
}


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request: pytest.FixtureRequest) -> tuple[str, Classifier]:
    """Each architecture built once for the module (tests are grouped by it)."""
    spec, kwargs = ARCHS[request.param]
    torch.manual_seed(0)
    model = load_model(spec, "none", input_size=SIZE, model_kwargs=kwargs)
    assert model.num_classes == 3 and model.input_size == SIZE
    return request.param, model


@pytest.fixture(scope="module")
def reference(arch: tuple[str, Classifier]) -> Classifier:
    """The same network with every in-place module out of place."""
    return out_of_place(arch[1])


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    """24 noise images in [0,1], 8 of each class."""
    gen = torch.Generator().manual_seed(0)
    return torch.rand(24, *SIZE, generator=gen), torch.arange(24) % 3


@pytest.fixture(scope="module")
def dominant(arch: tuple[str, Classifier], data: tuple[torch.Tensor, torch.Tensor]) -> Pattern:
    _, model = arch
    found = find_pattern(model, data[0], DominantConfig(eps=EPS, steps=3, batch_size=4), progress=False)
    return found.pattern


def _within(pattern: Pattern) -> bool:
    d = pattern.delta
    size = d.abs().max() if pattern.norm == "linf" else d.norm()
    return bool(torch.isfinite(d).all()) and float(size) <= pattern.eps * (1 + 1e-4) + 1e-6


def test_taps_read_the_module_output_before_in_place_ops(arch, reference, data):
    name, model = arch
    x = data[0][:2]
    with torch.no_grad():
        got, logits = model.features_and_logits(x, OVERWRITTEN[name])
        want, want_logits = reference.features_and_logits(x, OVERWRITTEN[name])
    assert torch.allclose(got, want, atol=1e-5) and torch.allclose(logits, want_logits, atol=1e-5)
    assert got.min() < 0  # pre-activation: a ReLU(inplace=True) would have left no negative value


def test_find_dominant(arch, dominant):
    assert dominant.shape == SIZE and _within(dominant) and dominant.delta.abs().max() > 0


def test_find_dominant_on_a_feature_layer(arch, data):
    name, model = arch
    config = DominantConfig(eps=EPS, steps=2, batch_size=4, layer=OVERWRITTEN[name])  # dominance > 0: one forward
    assert _within(find_pattern(model, data[0], config, progress=False).pattern)


def test_find_classwise(arch, data):
    _, model = arch
    x, y = data
    found = find_classwise_pattern(
        model, x[y != 1], target=1, canvas=x[y == 1][0], config=ClasswiseConfig(steps=3), progress=False
    )
    p = found.pattern
    assert p.k == top_k_count(0.05, SIZE[1] * SIZE[2]) and set(p.mask.unique().tolist()) <= {0.0, 1.0}
    assert torch.isfinite(p.soft_mask).all() and p.colours.min() >= 0 and p.colours.max() <= 1


def test_layer_analysis_names_blocks_and_reads_their_own_outputs(arch, reference, data, dominant):
    name, model = arch
    patterns = {"dominant": dominant, "noise": torch.full(SIZE, EPS)}
    got = analyze_layers(model, patterns, data[0][:4], batch_size=2)
    assert got.blocks == BLOCKS[name]
    want = analyze_layers(reference, patterns, data[0][:4], batch_size=2)
    for a, b in zip(got.curves, want.curves, strict=True):
        assert a.follows_delta == pytest.approx(b.follows_delta, abs=1e-5)
        assert a.follows_x == pytest.approx(b.follows_x, abs=1e-5)
        assert all(-1 - 1e-6 <= v <= 1 + 1e-6 for v in a.follows_delta + a.follows_x)


def test_downstream_last_block(arch, data, dominant):
    name, model = arch
    config = DownstreamConfig(head="last-block", epochs=1, batch_size=8)
    x, y = data
    ds = build_downstream(model, 2, config)
    assert ds.block_names == LAST_BLOCK[name]
    blocks = [ds.net.get_submodule(b) for b in (ds.head_name, *LAST_BLOCK[name])]
    assert sum(p.numel() for m in ds.trainable for p in m.parameters()) == sum(
        p.numel() for m in blocks for p in m.parameters()
    )
    train_downstream(ds, x, y % 2, test_images=x, test_labels=y % 2, config=config, progress=False)
    result = measure_downstream(ds, dominant, x, y % 2)
    values = [result.transferred, result.random_sign, result.random_uniform, result.accuracy_clean]
    assert all(0 <= v <= 1 for v in values) and result.n_images == len(x)


def _check_scan(model: Classifier, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    config = ScanConfig(steps=2, batch_size=4, additive_steps=2, max_eval_images=6)
    report = scan_model(model, *data, config=config, progress=False)
    assert [r.target for r in report.rows] == [0, 1, 2] and report.verdict
    for t, p in report.patterns.items():
        assert p.target == t and 1 <= p.k <= SIZE[1] * SIZE[2] and torch.isfinite(p.colours).all()
    assert len(report.additive) == 3 and all(_within(p) for p in report.additive.values())


def _check_harden(model: Classifier, data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = data
    config = HardenConfig(eps=EPS, epochs=1, batch_size=12, delta_steps=1, pool=1, max_accuracy_drop=1.0)
    result = harden_model(model, x, y, held_images=x[:12], held_labels=y[:12], config=config, progress=False)
    assert torch.isfinite(result.patterns).all() and result.patterns.abs().max() <= EPS * (1 + 1e-4)
    assert all(torch.isfinite(p).all() for p in result.model.parameters())
    assert 0 <= result.accuracy_after <= 1 and not any(p.requires_grad for p in result.model.parameters())


# VGG-11 reads its 411 MB first linear layer on every forward (about 30 ms a call on one core): the scan's
# hundred small forwards and hardening's fine-tuning of 128M parameters are in the slow lane
SLOW_ON_VGG = "in the slow lane on VGG-11: test_vgg11_scan_and_harden"


@pytest.mark.parametrize("path", [_check_scan, _check_harden], ids=["scan", "harden"])
def test_scan_and_harden(arch, data, path):
    name, model = arch
    if name == "vgg11":
        pytest.skip(SLOW_ON_VGG)
    path(model, data)


@pytest.mark.slow
def test_vgg11_scan_and_harden(data):
    spec, kwargs = ARCHS["vgg11"]
    torch.manual_seed(0)
    model = load_model(spec, "none", input_size=SIZE, model_kwargs=kwargs)
    _check_scan(model, data)
    _check_harden(model, data)


@pytest.mark.slow
def test_audit_on_a_vit_checkpoint(tmp_path):
    """`patternscope audit` on a timm ViT-Tiny given as a local checkpoint (random weights): every part runs,
    the patterns stay within the budget, and the scan covers every class."""
    import json

    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file

    from patternscope.cli import EXIT_OK, main

    spec, kwargs = ARCHS["vit"]
    torch.manual_seed(0)
    net = load_model(spec, "none", input_size=SIZE, model_kwargs=kwargs).net
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    rng = np.random.default_rng(0)
    for i in range(90):  # 30 noise images per class
        folder = tmp_path / "tree" / str(i % 3)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    out = tmp_path / "audit"
    argv = ["audit", "--out", str(out), "--model", spec, "--weights", str(weights), "--input-size", "3,32,32"]
    argv += ["--model-kwargs", json.dumps(kwargs), "--device", "cpu", "--data", str(tmp_path / "tree"), "--labels"]
    assert main([*argv, "--level", "quick", "--eps", "8/255", "--search-data", "jigsaw", "--quiet"]) == EXIT_OK
    audit = json.loads((out / "audit.json").read_text())
    assert audit["patterns"]["dominant"] is not None and audit["backdoor"]["classes"] == 3
    for method in ("dominant", "psp-uap"):
        assert _within(Pattern.load(out / "patterns" / method))
    assert (out / "report.html").is_file()
