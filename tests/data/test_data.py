"""Image sources: any file format converted, folders and trees, proxies, bundled photos, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from patternscope.data import (
    BatchStream,
    ImageSet,
    bundled_photos,
    disjoint_eval_set,
    eval_views,
    image_folder,
    jigsaw_images,
    read_image,
    tensor_set,
)
from patternscope.errors import DataError


def test_read_image_converts_every_mode(tmp_path):
    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((10, 12), 128, np.uint8)).save(tmp_path / "grey.png")
    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[..., 3] = 0  # fully transparent: composited on white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(np.full((10, 12), 65535, np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")

    red = read_image(tmp_path / "rgb.png", 3)
    assert red.shape == (3, 10, 12) and red[0].min() == 1.0 and red[1].max() == 0.0
    assert read_image(tmp_path / "grey.png", 3).shape == (3, 10, 12)
    assert read_image(tmp_path / "rgb.png", 1).shape == (1, 10, 12)
    assert torch.allclose(read_image(tmp_path / "rgba.png", 3), torch.ones(3, 10, 12))
    assert torch.allclose(read_image(tmp_path / "deep.png", 1), torch.ones(1, 10, 12))
    assert read_image(tmp_path / "palette.png", 3)[0].min() > 0.9


def test_corrupt_image_is_a_data_error(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot read image"):
        read_image(tmp_path / "broken.png")


def test_image_folder_tree_and_flat(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "tree" / cls / f"{i}.png")
    tree = image_folder(tmp_path / "tree")
    assert len(tree) == 6 and tree.class_names == ["cat", "dog"]
    assert tree.labels().tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "num" / "7").mkdir(parents=True)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "num" / "7" / "a.jpg")
    assert image_folder(tmp_path / "num").labels().tolist() == [7]  # numeric folder names are class indices
    flat = image_folder(tmp_path / "tree" / "cat")
    assert len(flat) == 3 and not flat.has_labels


def test_empty_or_missing_folders_are_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        image_folder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no images found"):
        image_folder(tmp_path / "empty")


def test_eval_views_resize_and_crop():
    image = torch.rand(3, 300, 400)
    assert eval_views(image, (224, 224)).shape == (1, 3, 224, 224)
    ten = eval_views(image, (224, 224), 10)
    assert ten.shape == (10, 3, 224, 224)
    assert torch.equal(ten[5], ten[0].flip(-1))


def test_proxies_are_valid_and_deterministic():
    gen = torch.Generator().manual_seed(0)
    j = jigsaw_images(4, (3, 32, 32), gen)
    assert j.shape == (4, 3, 32, 32) and j.min() >= 0 and j.max() <= 1
    assert len(torch.unique(j[0, 0])) <= 16 * 16  # flat cells
    stream = BatchStream(["jigsaw", "gaussian", "uniform"], (3, 32, 32), seed=1)
    a, b = stream.batch(5, 9), stream.batch(5, 9)
    assert torch.equal(a, b) and a.shape == (9, 3, 32, 32)
    assert not torch.equal(stream.batch(6, 9), a)
    assert not torch.equal(BatchStream(["jigsaw"], (3, 32, 32), seed=2).batch(5, 9)[:3], a[:3])


def test_training_crops_cover_every_image_each_epoch():
    images = torch.stack([torch.full((1, 8, 8), i / 10) for i in range(10)])
    stream = BatchStream([tensor_set(images)], (1, 8, 8), seed=0)
    seen = torch.cat([stream.batch(step, 5) for step in range(2)])
    assert sorted(round(v, 3) for v in seen.mean(dim=(1, 2, 3)).tolist()) == [i / 10 for i in range(10)]


def test_ranks_get_different_shards():
    images = torch.stack([torch.full((1, 8, 8), i / 10) for i in range(10)])
    r0 = BatchStream([tensor_set(images)], (1, 8, 8), seed=0, rank=0, world_size=2).batch(0, 5)
    r1 = BatchStream([tensor_set(images)], (1, 8, 8), seed=0, rank=1, world_size=2).batch(0, 5)
    values = torch.cat([r0, r1]).mean(dim=(1, 2, 3))
    assert len(set(round(v, 3) for v in values.tolist())) == 10


def test_bundled_photos_are_disjoint_and_labelled():
    train, evaluation = bundled_photos("photos"), bundled_photos("photos-eval")
    assert len(train) >= 10 and len(evaluation) == 22 and evaluation.has_labels
    assert not {i.identity() for i in train.items} & {i.identity() for i in evaluation.items}


def test_same_folder_for_search_and_evaluation_is_split(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(10):
        Image.fromarray(np.full((6, 6), i * 20, np.uint8)).save(folder / f"{i}.png")
    train, evaluation = disjoint_eval_set([image_folder(folder), "jigsaw"], image_folder(folder), holdout=0.3)
    ids_train = {i.identity() for i in train[0].items}
    ids_eval = {i.identity() for i in evaluation.items}
    assert len(ids_eval) == 3 and len(ids_train) == 7 and not ids_train & ids_eval
    assert train[1] == "jigsaw"


def test_tensor_sets_check_range():
    with pytest.raises(DataError, match="255"):
        tensor_set(torch.full((2, 1, 4, 4), 200.0))
    with pytest.raises(DataError, match="labels"):
        tensor_set(torch.rand(2, 1, 4, 4), [1])
    s = tensor_set(torch.rand(2, 1, 4, 4), [3, 4])
    assert isinstance(s, ImageSet) and s.labels().tolist() == [3, 4]


def test_zoom_crops_are_valid_and_deterministic():
    photos = bundled_photos("photos")
    stream = BatchStream([photos], (3, 64, 64), seed=0, crop_scale=(0.1, 1.0))
    a = stream.batch(3, 6)
    assert a.shape == (6, 3, 64, 64) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, stream.batch(3, 6))
    plain = BatchStream([photos], (3, 64, 64), seed=0).batch(3, 6)
    assert not torch.equal(a, plain)
    with pytest.raises(DataError, match="crop scale"):
        BatchStream([photos], (3, 64, 64), crop_scale=(0.5, 0.2))
