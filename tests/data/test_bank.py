"""ImageBank: labelled files read on demand, indexed like a tensor, with the exact pixels of an eager load;
and the labelled analyses give the same results on a bank as on a tensor while reading a batch at a time."""

from __future__ import annotations

import pickle

import pytest
import torch

from patternscope.analyses.classwise import best_canvases, choose_canvas
from patternscope.analyses.downstream import DownstreamConfig, build_downstream, train_downstream
from patternscope.analyses.scan import ScanConfig, scan_model
from patternscope.core.predict import class_probabilities
from patternscope.data import bank as bank_module
from patternscope.data import image_folder, write_image_tree
from patternscope.data.bank import ImageBank, take
from patternscope.data.labelled import labelled_images, open_labelled
from patternscope.errors import DataError


@pytest.fixture(scope="module")
def tree(digit_data, tmp_path_factory):
    # 200 test digits as 16 x 16 grey PNGs, one folder per class
    return write_image_tree(tmp_path_factory.mktemp("bank") / "tree", digit_data.test_x[:200], digit_data.test_y[:200])


@pytest.mark.parametrize("size", [(1, 16, 16), (3, 20, 24)])
def test_a_bank_reads_the_pixels_of_an_eager_load(tree, size):
    eager, labels = labelled_images(image_folder(tree), size)
    data = open_labelled(str(tree), size)
    assert isinstance(data.images, ImageBank)
    assert data.images.shape == eager.shape and len(data.images) == len(eager) and data.images.ndim == 4
    assert torch.equal(data.labels, labels)
    assert torch.equal(data.images.load(), eager)


def test_a_bank_indexes_like_a_tensor(tree):
    eager, labels = labelled_images(image_folder(tree), (1, 16, 16))
    bank = open_labelled(str(tree), (1, 16, 16)).images
    mask = labels % 3 == 0
    index = torch.tensor([5, 0, 199, 5])
    assert torch.equal(bank[7], eager[7]) and torch.equal(bank[-1], eager[-1])
    assert torch.equal(bank[torch.tensor(11)], eager[11])
    bank[7].fill_(1.0)  # an image handed out is a copy: changing it leaves the cache alone
    assert torch.equal(bank[7], eager[7])
    for key in (slice(3, 40, 4), index, mask, [2, 1]):
        view = bank[key]
        assert isinstance(view, ImageBank)  # a view reads nothing until loaded
        assert torch.equal(take(bank, key), eager[key])
    # views of views keep their positions in the files
    assert torch.equal(take(bank[mask][10:20], torch.tensor([0, 9])), eager[mask][10:20][torch.tensor([0, 9])])
    assert torch.equal(bank[mask].indices, torch.nonzero(mask).flatten())
    assert torch.equal(take(eager, index), eager[index])  # take is plain indexing on a tensor
    with pytest.raises(IndexError, match="integers or a boolean mask"):
        bank[torch.tensor([0.5])]
    with pytest.raises(IndexError, match="does not fit"):
        bank[mask[:10]]


def test_the_cache_stays_within_its_budget(tree):
    one_image = 16 * 16 * 4
    source = image_folder(tree)
    bank = ImageBank(source, (1, 16, 16), cache_mb=10 * one_image / 2**20)
    first = bank.load()
    assert bank.cached_bytes == 10 * one_image  # filled to the budget, then no more
    assert source.cache_limit_mb == 0  # the set's own cache of decoded originals is off
    none = ImageBank(image_folder(tree), (1, 16, 16), cache_mb=0)
    assert torch.equal(none.load(), first) and none.cached_bytes == 0
    assert torch.equal(bank.load(), first)  # served partly from the cache, partly decoded again
    with pytest.raises(DataError, match=">= 0 MB"):
        ImageBank(source, (1, 16, 16), cache_mb=-1)


def test_a_pickled_bank_carries_its_files_not_its_cache(tree):
    bank = open_labelled(str(tree), (1, 16, 16)).images[10:30]
    expected = bank.load()
    copy = pickle.loads(pickle.dumps(bank))
    assert copy.cached_bytes == 0 and torch.equal(copy.load(), expected)


def test_a_file_that_fails_to_decode_is_named(tmp_path, digit_data):
    root = write_image_tree(tmp_path / "tree", digit_data.test_x[:30], digit_data.test_y[:30])
    broken = sorted(root.rglob("*.png"))[-1]
    broken.write_bytes(broken.read_bytes()[:60])  # the header still opens; the pixels do not
    bank = open_labelled(str(root), (1, 16, 16)).images
    assert bank[0].shape == (1, 16, 16)
    with pytest.raises(DataError, match=broken.name):
        bank.load()


def test_best_canvases_picks_what_choose_canvas_picks(clean_small, digit_data):
    model = clean_small.model
    x = digit_data.test_x[:150]
    # scrambled labels: some classes have no image the model agrees with, one has no image at all
    labels = torch.remainder(digit_data.test_y[:150] * 7 + torch.arange(150) % 3, 9)
    probs = class_probabilities(model, x)
    expected = [choose_canvas(model, x, labels, target=t, probs=probs) for t in range(model.num_classes)]
    assert best_canvases(model, x, labels, batch_size=32).tolist() == expected
    assert choose_canvas(model, x, labels, target=4) == expected[4]  # streamed when no softmax is given
    assert not (labels == 9).any() and expected[9] == int(probs[:, 9].argmax())


def test_labelled_analyses_read_files_a_batch_at_a_time(backdoored, tree, monkeypatch):
    model = backdoored.model
    eager, labels = labelled_images(image_folder(tree), model.input_size)
    sizes: list[int] = []
    many = bank_module._Store.many

    def counted(self, indices):
        sizes.append(len(indices))
        return many(self, indices)

    monkeypatch.setattr(bank_module._Store, "many", counted)
    bank = open_labelled(str(tree), model.input_size, cache_mb=0).images
    config = ScanConfig(steps=40, batch_size=32, max_search_images=120, max_eval_images=60)
    on_tensor = scan_model(model, eager, labels, config=config, classes=[1, backdoored.target], progress=False)
    on_bank = scan_model(model, bank, labels, config=config, classes=[1, backdoored.target], progress=False)
    assert [r.smallest_k for r in on_bank.rows] == [r.smallest_k for r in on_tensor.rows]
    assert [r.canvas_index for r in on_bank.rows] == [r.canvas_index for r in on_tensor.rows]
    assert torch.equal(on_bank.patterns[1].soft_mask, on_tensor.patterns[1].soft_mask)
    assert sizes and max(sizes) <= 256  # never the whole set: a search batch or a prediction batch

    config = DownstreamConfig(head="linear", epochs=3)
    trained = []
    for images in (eager, bank):
        down = build_downstream(model, 2, config)
        trained.append(
            train_downstream(
                down,
                images,
                labels % 2,
                test_images=images[:50],
                test_labels=labels[:50] % 2,
                config=config,
                progress=False,
            )
        )
    assert trained[0].history == trained[1].history and trained[0].test_accuracy == trained[1].test_accuracy


def test_a_bank_feeds_a_pattern_search_like_its_tensor(tiny_model, tree):
    from patternscope.methods import find_pattern

    eager, _ = labelled_images(image_folder(tree), tiny_model.input_size)
    bank = open_labelled(str(tree), tiny_model.input_size).images
    on_bank, on_tensor = (
        find_pattern(tiny_model, x, eps=0.2, steps=8, progress=False) for x in (bank[:150], eager[:150])
    )
    assert on_bank.pattern.delta.abs().max() > 0
    assert torch.equal(on_bank.pattern.delta, on_tensor.pattern.delta)  # the same images, the same pattern
