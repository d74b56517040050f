"""The input pipeline: the same batches and the same pattern with 0, 1 or 2 worker processes, exact resume
with workers, streamed evaluation equal to the in-memory one, and bad images skipped, never fatal."""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patternscope import find_pattern
from patternscope.core.metrics import evaluate_pattern
from patternscope.core.patterns import Pattern
from patternscope.data import BatchStream, image_folder, tensor_set
from patternscope.data.images import MAX_PIXELS, decode_image
from patternscope.data.loader import eval_batches, step_batches, to_device
from patternscope.errors import DataError


def _photo_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` small JPEG photos of random smooth colour fields (sizes vary), written reproducibly."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        h, w = int(rng.integers(20, 48)), int(rng.integers(20, 48))
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        image.save(root / f"photo_{i:03d}.jpg", quality=int(rng.integers(75, 96)))
    return root


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _photo_folder(tmp_path_factory.mktemp("photos"), 40)


def _huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels (its data is tiny: a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b""))


@pytest.mark.parametrize("workers", [1, 2])
def test_search_batches_are_the_same_with_worker_processes(photos, workers):
    stream = BatchStream([image_folder(photos), "jigsaw"], (3, 24, 24), seed=3, crop_scale=(0.3, 1.0))
    steps = range(5, 11)
    alone = list(step_batches(stream.host_batch, 7, steps, workers=0))
    pooled = list(step_batches(stream.host_batch, 7, steps, workers=workers))
    assert len(alone) == len(pooled) == len(steps)
    for (a, la), (b, lb) in zip(alone, pooled, strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)
    assert not torch.equal(alone[0][0], alone[1][0])  # the steps differ


def test_the_pattern_is_bit_for_bit_the_same_with_0_or_2_workers_and_resume_is_exact(tiny_model, photos, tmp_path):
    settings = {"eps": 0.1, "steps": 12, "batch_size": 6, "progress": False, "checkpoint_every": 3}
    data = [image_folder(photos), "jigsaw"]
    alone = find_pattern(tiny_model, data, workers=0, **settings)
    pooled = find_pattern(tiny_model, data, workers=2, **settings)
    assert torch.equal(alone.pattern.delta, pooled.pattern.delta)
    assert alone.result.history == pooled.result.history
    ckpt = tmp_path / "checkpoint.pt"
    find_pattern(tiny_model, data, workers=2, checkpoint=ckpt, **{**settings, "steps": 7})
    resumed = find_pattern(tiny_model, data, workers=1, checkpoint=ckpt, resume=True, **settings)
    assert resumed.result.resumed_from == 7
    assert torch.equal(resumed.pattern.delta, alone.pattern.delta)


def test_host_batches_are_uint8_and_become_the_same_floats_on_the_device(photos):
    stream = BatchStream([image_folder(photos)], (3, 24, 24), seed=0)
    host, _ = stream.host_batch(2, 5)
    assert host.dtype == torch.uint8
    moved = to_device(host, torch.device("cpu"))
    assert isinstance(moved, torch.Tensor) and moved.dtype == torch.float32
    assert torch.equal(moved, stream.batch(2, 5)) and 0 <= float(moved.min()) <= float(moved.max()) <= 1
    # tensors stay exact floats (not quantised)
    exact = torch.rand(6, 1, 8, 8) * 0.999
    tensor_batch, _ = BatchStream([tensor_set(exact)], (1, 8, 8), seed=0, augment=False).host_batch(0, 6)
    assert tensor_batch.dtype == torch.float32


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_evaluation_equals_the_in_memory_one(tiny_model, photos, workers):
    images = image_folder(photos)
    model_size = (1, 16, 16)
    delta = (torch.rand(model_size, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.15
    pattern = Pattern(delta, 0.15, "linf")
    x, _ = images.eval_tensors(model_size, views=2)
    reference = evaluate_pattern(tiny_model, pattern, x, batch_size=64)
    streamed = evaluate_pattern(tiny_model, pattern, images, views=2, batch_size=8, workers=workers)
    got, want = streamed.to_dict(), reference.to_dict()
    # the streamed run knows its crops come 2 per photo: it adds per-photo intervals
    assert set(got["intervals"]) - set(want["intervals"]) == {"fooling_ratio_per_photo", "agreement_per_photo"}
    for key in ("fooling_ratio_per_photo", "agreement_per_photo"):
        got["intervals"].pop(key)
    # PSNR / SSIM are float sums over batches of another size: equal to rounding
    assert got.pop("perceptibility") == pytest.approx(want.pop("perceptibility"), rel=1e-5)
    assert got == want
    assert torch.equal(streamed.details["perturbed_pred"], reference.details["perturbed_pred"])
    # a handful of examples kept, not the set
    assert streamed.details["images"].shape[0] == 8
    assert torch.equal(streamed.details["images"], x[streamed.details["example_index"]])


def test_evaluation_batches_never_exceed_the_batch_size(photos):
    images = image_folder(photos)
    sizes = [b.images.shape[0] for b in eval_batches(images, (3, 16, 16), views=5, batch_size=12)]
    assert sum(sizes) == 5 * len(images) and max(sizes) <= 12


def _bad_images(folder: Path) -> list[str]:
    """Write one file of each hard kind into ``folder``; return the names that must be skipped."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)).save(folder / "deep16.png")
    Image.fromarray(rgb).convert("P").save(folder / "palette.gif", transparency=0)
    noise = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "whole.jpg", quality=95)
    data = (folder / "whole.jpg").read_bytes()
    (folder / "whole.jpg").unlink()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])  # the header opens, the body does not decode
    (folder / "random.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (folder / "empty.jpg").write_bytes(b"")
    _huge_png(folder / "huge.png", 20000, 20000)
    return ["truncated.jpg", "random.png", "empty.jpg", "huge.png"]


def test_bad_images_among_good_ones_are_skipped_counted_and_never_crash_a_worker(tiny_model, photos, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in sorted(photos.iterdir())[:20]:
        (folder / f.name).write_bytes(f.read_bytes())
    bad = _bad_images(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = image_folder(folder)  # the listing opens headers: random/empty files are skipped here
        pattern = Pattern(torch.zeros(1, 16, 16), 0.1, "linf")
        ev = evaluate_pattern(tiny_model, pattern, images, workers=2, batch_size=8)
    messages = " ".join(str(w.message) for w in caught)
    for name in bad:
        assert name in messages, name
    good = 20 + 3  # CMYK, 16-bit and palette images are converted, not skipped
    assert ev.n_images == good
    assert ev.skipped_images == len(images) - good == 1  # the truncated one, found when decoded
    # the search stream skips them too, deterministically, in worker processes
    stream = BatchStream([images], (1, 16, 16), seed=0)
    a = list(step_batches(stream.host_batch, 8, range(0, 6), workers=2))
    b = list(step_batches(stream.host_batch, 8, range(0, 6), workers=0))
    assert all(torch.equal(x[0], y[0]) for x, y in zip(a, b, strict=True))


def test_decoding_and_resizing_are_exactly_those_of_earlier_releases(photos, tmp_path):
    """Evaluation crops and search crops hold the values 0.1/0.2 computed (PIL decode to float / 255, torch
    antialiased resize, rounded to 0..255 where it cached), so results carry over bit for bit."""
    from patternscope.data.images import eval_views, resize_shorter

    big = tmp_path / "big.png"
    rgb = np.random.default_rng(3).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(big)
    for path in [big, *sorted(photos.iterdir())[:3]]:
        with Image.open(path) as im:
            as_float = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
        images = image_folder(path)
        expected = eval_views(as_float, (64, 64), 5)
        assert images.views(0, (3, 64, 64), 5).dtype == torch.float32
        assert torch.equal(images.views(0, (3, 64, 64), 5), expected)
        cached = (resize_shorter(as_float, 74) * 255.0).round().to(torch.uint8)
        assert torch.equal(decode_image(path, 3, 74), cached)
        fast = decode_image(path, 3, 74, fast=True)
        assert fast.shape == cached.shape and (fast.int() - cached.int()).abs().float().mean() < 1.0


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    _huge_png(path, 30000, 30000)
    assert MAX_PIXELS < 30000 * 30000
    with pytest.raises(DataError, match="decompression-bomb"):
        decode_image(path)


def test_exif_orientation_16_bit_and_cmyk_are_decoded_upright_and_in_range(tmp_path):
    tall = np.zeros((40, 20, 3), dtype=np.uint8)
    tall[:10] = 255  # a white band at the top
    image = Image.fromarray(tall)
    exif = image.getexif()
    exif[0x0112] = 6  # stored rotated: the viewer turns it 90 degrees clockwise
    image.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = decode_image(tmp_path / "rotated.jpg")
    assert upright.shape == (3, 40, 20) and upright[:, :8].float().mean() > 200 and upright[:, 14:].float().mean() < 40
    deep = np.full((10, 10), 65535, dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert int(decode_image(tmp_path / "deep.png", 1).min()) == 255
    Image.fromarray(tall).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert decode_image(tmp_path / "cmyk.jpg").shape == (3, 40, 20)


def test_a_folder_of_only_undecodable_images_is_one_clear_error(tiny_model, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "whole.jpg", quality=95)
    data = (tmp_path / "whole.jpg").read_bytes()
    for i in range(3):  # headers open, bodies do not decode
        (folder / f"t{i}.jpg").write_bytes(data[: len(data) // 2])
    images = image_folder(folder)
    with pytest.warns(UserWarning, match="cannot be decoded"), pytest.raises(DataError, match="can be decoded"):
        evaluate_pattern(tiny_model, Pattern(torch.zeros(1, 16, 16), 0.1, "linf"), images)
    with pytest.raises(DataError, match=r"none of the 3 images .* can be decoded"):
        list(step_batches(BatchStream([images], (1, 16, 16)).host_batch, 4, range(2), workers=1))


def test_epochs_set_the_steps_from_the_data(tiny_model, photos):
    stream = BatchStream([image_folder(photos)], (1, 16, 16))
    assert stream.steps_for_epochs(2, 8) == 10  # 2 x 40 images / 8 per step
    mixed = BatchStream([image_folder(photos), "jigsaw"], (1, 16, 16))
    assert mixed.steps_for_epochs(1, 8) == 10  # 4 photos per step
    outcome = find_pattern(tiny_model, stream, eps=0.1, batch_size=8, epochs=1, progress=False)
    assert outcome.result.steps_done == 5 and outcome.pattern.meta["steps"] == 5
    with pytest.raises(DataError, match="epochs"):
        BatchStream(["jigsaw"], (1, 16, 16)).steps_for_epochs(1, 8)


def test_worker_count_is_checked(tiny_model, photos):
    with pytest.raises(DataError, match="workers"):
        list(step_batches(lambda s, b: torch.zeros(1), 1, range(1), workers=-1))


def test_cli_runs_with_workers_and_epochs(tmp_path, tiny_weights, photos):
    from helpers import TINY_SPEC

    from patternscope.cli import EXIT_OK, EXIT_USER, main

    out = tmp_path / "run"
    argv = ["find", "dominant", "--out", str(out), "--model", TINY_SPEC, "--weights", str(tiny_weights)]
    argv += ["--data", str(photos), "--epochs", "0.5", "--batch-size", "8", "--workers", "2", "--eps", "0.1"]
    assert main([*argv, "--device", "cpu", "--quiet", "--no-report"]) == EXIT_OK
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["search"]["steps_done"] == 2  # 0.5 x 32 search images (8 held out) / 8
    assert metrics["eval_data"]["skipped_images"] == 0
    # the fast decoding is a setting of the run: resuming without it is refused, with it accepted
    fast = tmp_path / "fast"
    head = [a if a != str(out) else str(fast) for a in argv]
    assert main([*head, "--fast-decode", "--device", "cpu", "--quiet", "--no-report"]) == EXIT_OK
    assert json.loads((fast / "config.json").read_text())["options"]["fast_decode"] is True
    assert main([*head, "--resume", "--device", "cpu", "--quiet", "--no-report"]) == EXIT_USER
