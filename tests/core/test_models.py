"""Loading models from specs, weights files (safely), normalisation inside, feature taps."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_SPEC
from tiny_models import TinyCNN

from patternscope.core.classifier import Classifier
from patternscope.core.models import list_models, load_model, load_state_dict_file
from patternscope.errors import ModelSpecError, WeightsError


@pytest.fixture(scope="module")
def effnet():
    return load_model("efficientnet_lite0")


def _photo(name):
    from patternscope.data import bundled_photos, eval_views

    photos = bundled_photos("photos-eval")
    index = next(i for i, item in enumerate(photos.items) if item.name == name)
    return eval_views(photos.load(index, 3), (224, 224))


@pytest.mark.slow
def test_bundled_effnet_predicts_chelsea_and_coffee(effnet):
    assert effnet.input_size == (3, 224, 224) and effnet.num_classes == 1000
    with torch.no_grad():
        cat = effnet(_photo("chelsea")).softmax(1)[0]
        coffee = effnet(_photo("coffee")).softmax(1)[0]
    # chelsea is ImageNet 285 (Egyptian cat); tiger cat (282) is its close neighbour
    assert cat.argmax().item() in (282, 285) and 285 in cat.topk(5).indices.tolist()
    assert coffee.argmax().item() == 967 and coffee.max() > 0.5
    assert effnet.class_names[967] == "espresso"


@pytest.mark.slow
def test_bundled_effnet_accuracy_on_labelled_photos(effnet):
    from patternscope.data import bundled_photos

    x, y = bundled_photos("photos-eval").eval_tensors(effnet.input_size)
    with torch.no_grad():
        acc = (effnet(x).argmax(1) == y).float().mean().item()
    assert acc >= 0.8  # 0.86 measured: real weights, the right architecture and normalisation (x-0.5)/0.5


@pytest.mark.slow
def test_effnet_feature_taps(effnet):
    x = torch.rand(2, 3, 224, 224)
    assert effnet.features(x, "classifier:in").shape == (2, 1280)
    assert effnet.features(x, "blocks.2").shape[:2] == (2, 40)
    assert torch.allclose(effnet.features(x, "logits"), effnet(x))
    assert "classifier" in effnet.layer_names()


def test_normalisation_happens_inside(tiny_net):
    model = Classifier(tiny_net, mean=(0.5,), std=(0.25,), input_size=(1, 16, 16))
    x = torch.rand(4, 1, 16, 16)
    assert torch.allclose(model(x), tiny_net((x - 0.5) / 0.25))
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training


def test_user_model_from_file_spec_with_safetensors(tiny_weights, tiny_model):
    model = load_model(TINY_SPEC, str(tiny_weights))
    assert model.input_size == (1, 16, 16)  # read from the class attribute
    x = torch.rand(3, 1, 16, 16)
    assert torch.allclose(model(x), tiny_model(x), atol=1e-6)


def test_pth_state_dicts_are_unwrapped(tiny_net, tiny_model, tmp_path):
    wrapped = {"state_dict": {f"module.{k}": v for k, v in tiny_net.state_dict().items()}, "epoch": 3}
    path = tmp_path / "ckpt.pth"
    torch.save(wrapped, path)
    model = load_model(TINY_SPEC, str(path))
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(model(x), tiny_model(x), atol=1e-6)


def test_pickled_full_model_is_refused_unless_trusted(tiny_net, tmp_path):
    path = tmp_path / "full.pt"
    torch.save(tiny_net, path)
    with pytest.raises(WeightsError, match="trust-pickle"):
        load_model(TINY_SPEC, str(path))
    assert load_model(TINY_SPEC, str(path), trust_pickle=True).num_classes == 10


def test_bad_weights_files_give_clear_errors(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_state_dict_file(tmp_path / "nope.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00\x01 definitely not a zip")
    with pytest.raises(WeightsError, match="corrupt"):
        load_state_dict_file(corrupt)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"xx")
    with pytest.raises(WeightsError, match="safetensors"):
        load_state_dict_file(bad_st)
    other = tmp_path / "other.pth"
    torch.save(TinyCNN(classes=7).state_dict(), other)
    with pytest.raises(WeightsError, match="wrong shape"):
        load_model(TINY_SPEC, str(other))


def test_unknown_specs_give_clear_errors():
    with pytest.raises(ModelSpecError, match="unknown model spec"):
        load_model("resnet9000")
    with pytest.raises(ModelSpecError, match="torchvision has no model"):
        load_model("torchvision:resnet9000")
    with pytest.raises(ModelSpecError, match="timm has no model"):
        load_model("timm:not_a_model_xyz")
    with pytest.raises(ModelSpecError, match="cannot import"):
        load_model("no_such_package_xyz.models:Net")
    with pytest.raises(ModelSpecError, match="no attribute"):
        load_model(TINY_SPEC.replace("TinyCNN", "Missing"))


def test_hub_models_never_download_by_default(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ModelSpecError, match="allow-download"):
        load_model("torchvision:resnet18")
    model = load_model("torchvision:resnet18", "none")  # random weights, no download
    assert model.num_classes == 1000 and model.class_names[0] == "tench"
    assert model.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])


def test_hub_models_take_model_kwargs():
    resnet = load_model("torchvision:resnet18", "none", input_size=(3, 32, 32), model_kwargs={"num_classes": 4})
    assert resnet.num_classes == 4 and resnet.class_names == [f"class {i}" for i in range(4)]
    # timm's img_size is the input size (its pretrained_cfg still says 224)
    vit = load_model(
        "timm:vit_tiny_patch16_224", "none", model_kwargs={"img_size": 32, "patch_size": 8, "num_classes": 3}
    )
    assert vit.input_size == (3, 32, 32) and vit.num_classes == 3
    with pytest.raises(ModelSpecError, match="model-kwargs") as err:
        load_model("torchvision:resnet18", "none", model_kwargs={"num_clases": 4})
    assert "num_clases" in str(err.value) and "\n" not in str(err.value)


def test_unknown_layer_lists_close_names(tiny_model):
    with pytest.raises(ModelSpecError, match="no layer"):
        tiny_model.features(torch.rand(1, 1, 16, 16), "featurez")
    assert tiny_model.features(torch.rand(2, 1, 16, 16), "fc:in").shape == (2, 512)
    assert tiny_model.features(torch.rand(2, 1, 16, 16), "features.0").shape == (2, 16, 16, 16)


def test_list_models_includes_the_bundled_default():
    rows = list_models()
    assert rows[0].spec == "efficientnet_lite0" and rows[0].weights == "installed"
