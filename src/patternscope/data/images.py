"""Single images: decode any file (as uint8 for the input pipeline, or float in [0,1]), convert channels,
resize, crop evaluation views."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

# PIL refuses images over twice this many pixels (DecompressionBombError) and warns above it; we refuse
# above it, so a 20000 x 20000 image is one clear skip, never an out-of-memory kill.
MAX_PIXELS = 89_478_485
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
CROP_FRACTION = 0.875  # evaluation: resize the shorter side to size / 0.875, then centre crop


def read_image(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Read an image file as a C x H x W float tensor in [0,1] with ``channels`` channels (1 or 3).

    Grey, RGBA (composited on white), palette, CMYK and 16-bit images are converted (RGB -> grey with
    luma weights), EXIF orientation is applied, animated or multi-page files give their first frame.
    Raises :class:`DataError` for unreadable, corrupt or oversized files (over :data:`MAX_PIXELS`: a
    decompression-bomb guard, checked before decoding).
    """
    return _read(path, channels)[0]


def _read(path: str | Path, channels: int) -> tuple[torch.Tensor, bool]:
    """:func:`read_image`, and whether its values are already multiples of 1/255 (an 8-bit file not
    mixed down from RGB to grey)."""
    with _opened(path) as im:
        im = _oriented(im)
        deep = im.mode in _DEEP_MODES
        array = _pil_to_array(im)
    mixed = array.shape[-1] == 3 and channels == 1
    return to_channels(array.permute(2, 0, 1).contiguous(), channels), not (deep or mixed)


def read_image_levels(path: str | Path, channels: int = 3) -> torch.Tensor:
    """:func:`read_image` rounded to 256 levels, as every release's evaluation saw a file (the rounding is
    skipped where the values are already on those levels: an 8-bit file)."""
    image, on_levels = _read(path, channels)
    return image if on_levels else to_uint8(image).float() / 255.0


def decode_image(
    path: str | Path, channels: int = 3, shorter: int | None = None, *, fast: bool = False
) -> torch.Tensor:
    """Decode an image file as a C x H x W **uint8** tensor (the input pipeline's host format).

    With ``shorter`` the shorter side is resized to that many pixels. By default exactly as
    :func:`read_image` then :func:`resize_shorter` (torch, bilinear, antialiased, on floats) rounded to
    0..255: the values every earlier release searched on. ``fast=True`` resizes in PIL on uint8 and
    lets JPEGs decode at a reduced DCT scale when that still leaves ``shorter`` pixels
    (``Image.draft``): about 1.7x the images per second, values within a level or two of the exact path.
    Raises :class:`DataError` as :func:`read_image` does.
    """
    if not fast:
        image, _ = _read(path, channels)
        return to_uint8(resize_shorter(image, shorter) if shorter is not None else image)
    with _opened(path, draft_shorter=shorter) as im:
        im = _to_8bit(_oriented(im), channels)
        if shorter is not None:
            w, h = im.size
            s = shorter / min(w, h)
            size = (max(shorter, round(w * s)), max(shorter, round(h * s)))
            if size != (w, h):
                im = im.resize(size, Image.Resampling.BILINEAR)
        array = np.asarray(im, dtype=np.uint8).copy()
    tensor = torch.from_numpy(array)
    return (tensor[None] if tensor.ndim == 2 else tensor.permute(2, 0, 1)).contiguous()


@contextlib.contextmanager
def _opened(path: str | Path, draft_shorter: int | None = None) -> Iterator[Image.Image]:
    """``path`` opened and decoded by PIL, with every failure (and an oversized image) as a DataError."""
    try:
        with warnings.catch_warnings():  # PIL's own warning above MAX_PIXELS: refused below, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as im:
            if im.width * im.height > MAX_PIXELS:
                raise DataError(
                    f"image {str(path)!r} is {im.width} x {im.height} pixels, over the {MAX_PIXELS:,}-pixel limit "
                    "(a decompression-bomb guard)"
                )
            if draft_shorter is not None and im.format == "JPEG":
                scale = draft_shorter / min(im.width, im.height)
                im.draft(im.mode, (math.ceil(im.width * scale), math.ceil(im.height * scale)))
            im.load()
            yield im
    except DataError:
        raise
    except Image.DecompressionBombError:
        raise DataError(
            f"image {str(path)!r} is over the {MAX_PIXELS:,}-pixel limit (a decompression-bomb guard)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {str(path)!r}: {exc}") from None


def _oriented(im: Image.Image) -> Image.Image:
    """``im`` turned upright by its EXIF orientation tag (photos from cameras and phones)."""
    try:
        orientation = im.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block must not lose the image
        return im
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        from PIL import ImageOps

        return ImageOps.exif_transpose(im)
    return im


def _to_8bit(im: Image.Image, channels: int) -> Image.Image:
    """``im`` as an 8-bit ``L`` (channels 1) or ``RGB`` (channels 3) image; luma weights for RGB -> grey."""
    deep = _deep_values(im)
    if deep is not None:
        im = Image.fromarray(np.rint(deep * 255.0).astype(np.uint8), mode="L")
    im = _flatten_alpha(im)
    if channels == 1:
        return im if im.mode == "L" else im.convert("L")
    if channels == 3:
        return im if im.mode == "RGB" else im.convert("RGB")
    raise DataError(f"cannot convert an image to {channels} channels (use 1 or 3)")


_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def _deep_values(im: Image.Image) -> np.ndarray | None:
    """H x W float32 in [0,1] for a 16-bit, 32-bit integer or float image (None for other modes): 16-bit
    and integer values above 255 over 65535, others over 255; floats over their maximum when above 1."""
    if im.mode not in _DEEP_MODES:
        return None
    a = np.asarray(im, dtype=np.float32)
    if im.mode == "F":
        top = float(a.max()) if a.max() > 1 else 1.0
    else:
        top = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
    return np.clip(a / top, 0, 1)


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """An image with transparency composited on white (as RGB); others unchanged."""
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0,1] (any float dtype) as uint8 0..255, rounded to the nearest level."""
    return images.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _pil_to_array(im: Image.Image) -> torch.Tensor:
    """H x W x C float32 in [0,1] for any PIL mode (8-bit values divided by 255, as in every release)."""
    deep = _deep_values(im)
    if deep is not None:
        return torch.from_numpy(deep[..., None])
    im = _flatten_alpha(im)
    if im.mode == "1":
        im = im.convert("L")
    elif im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    t = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).float() / 255.0
    return t[..., None] if t.ndim == 2 else t


def to_channels(image: torch.Tensor, channels: int) -> torch.Tensor:
    """Convert a C x H x W image to ``channels`` channels (grey <-> RGB; luma weights for RGB -> grey)."""
    c = image.shape[0]
    if c == channels:
        return image
    if channels == 1 and c == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype).view(3, 1, 1)
        return (image * weights).sum(0, keepdim=True)
    if c == 1:
        return image.expand(channels, -1, -1).contiguous()
    raise DataError(f"cannot convert a {c}-channel image to {channels} channels")


def resize_shorter(image: torch.Tensor, shorter: int) -> torch.Tensor:
    """Resize so that the shorter side is ``shorter`` pixels (bilinear, antialiased)."""
    _, h, w = image.shape
    scale = shorter / min(h, w)
    size = (max(shorter, round(h * scale)), max(shorter, round(w * scale)))
    if size == (h, w):
        return image
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    return out.clamp_(0, 1)


def eval_views(image: torch.Tensor, size: tuple[int, int], views: int = 1) -> torch.Tensor:
    """Deterministic evaluation crops (V x C x H x W): resize shorter side to size/0.875, then crop.

    ``views``: 1 centre; 2 centre + its mirror; 5 centre + four corners; 10 those five and mirrors.
    """
    check_views(views)
    return crop_views(resize_shorter(image, math.ceil(max(size) / CROP_FRACTION)), size, views)


EVAL_VIEWS = (1, 2, 5, 10)  # evaluation crops per image: centre, + mirror, centre + corners, both


def check_views(views: int) -> None:
    if views not in EVAL_VIEWS:
        raise DataError(f"eval views must be 1, 2, 5 or 10, got {views}")


def crop_views(base: torch.Tensor, size: tuple[int, int], views: int = 1) -> torch.Tensor:
    """The evaluation crops of an already resized image (any dtype): see :func:`eval_views`."""
    check_views(views)
    h, w = size
    _, bh, bw = base.shape
    tops = [(bh - h) // 2, 0, 0, bh - h, bh - h]
    lefts = [(bw - w) // 2, 0, bw - w, 0, bw - w]
    positions = [0] if views in (1, 2) else [0, 1, 2, 3, 4]
    crops = [base[:, tops[i] : tops[i] + h, lefts[i] : lefts[i] + w] for i in positions]
    if views in (2, 10):
        crops = crops + [c.flip(-1) for c in crops]
    return torch.stack(crops)


def resize_to(images: torch.Tensor, input_size: Sequence[int]) -> torch.Tensor:
    """Images (N x C' x H' x W') converted to the model's channels and resized (bilinear, whole image)."""
    c, h, w = (int(v) for v in input_size)
    if images.shape[1] != c:
        images = torch.stack([to_channels(img, c) for img in images])
    if tuple(images.shape[-2:]) != (h, w):
        images = F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return images.clamp(0, 1)
