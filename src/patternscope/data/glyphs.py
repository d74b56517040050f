"""``glyphs``: a generated labelled set of 26 letters (A-Z; up to 36 classes with the digits 0-9 after them)
rendered from the fonts that ship with matplotlib.

Each image is one capital letter (or digit) in white on black (1 x ``size`` x ``size``, [0,1]), like MNIST: a random
font of the ~20 text fonts in matplotlib's ``mpl-data/fonts/ttf`` (DejaVu Sans / Serif / Mono, STIX and
Computer Modern, in their regular, bold and italic cuts), a random affine transform (rotation, scale,
shear, shift), a random stroke weight (thinned or thickened), ink intensity and pixel noise. The set is
a pure function of its seed and sizes: nothing is downloaded or stored, and the same call gives the same
tensors on every machine with the same matplotlib fonts.

It gives the backdoor benchmarks a second real-looking data set with more than 10 classes, with look-alike
classes as Fashion-MNIST has them (shirt, T-shirt, pullover, coat): O/Q/D/C/G, I/J/L/T, E/F, P/R/B, U/V, and
with the digits also O/0, I/1, S/5, B/8, Z/2.
"""

from __future__ import annotations

import string
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..errors import DataError

GLYPH_CLASSES = tuple(string.ascii_uppercase + string.digits)  # the first ``classes`` of these
_RENDER = 64  # glyphs are drawn at this size, transformed, then downsampled (anti-aliased)
_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
)


def font_dir() -> Path:
    """matplotlib's folder of bundled TrueType fonts."""
    import matplotlib

    return Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf"


@lru_cache(maxsize=2)
def glyph_masters(classes: int = 26) -> torch.Tensor:
    """Every (font, letter) drawn once, centred, at 64 x 64: fonts x ``classes`` x 64 x 64 in [0,1]."""
    folder = font_dir()
    fonts = [folder / name for name in _FONTS if (folder / name).is_file()]
    if len(fonts) < 4:
        raise DataError(f"the glyphs data set needs matplotlib's bundled fonts; found {len(fonts)} in {folder}")
    masters = np.zeros((len(fonts), classes, _RENDER, _RENDER), dtype=np.float32)
    for f, path in enumerate(fonts):
        font = ImageFont.truetype(str(path), size=44)
        for c, letter in enumerate(GLYPH_CLASSES[:classes]):
            canvas = Image.new("L", (_RENDER * 2, _RENDER * 2), 0)
            ImageDraw.Draw(canvas).text((_RENDER // 2, _RENDER // 2), letter, fill=255, font=font)
            box = canvas.getbbox()
            if box is None:
                raise DataError(f"font {path.name} draws nothing for {letter!r}")
            glyph = canvas.crop(box)
            out = Image.new("L", (_RENDER, _RENDER), 0)
            out.paste(glyph, ((_RENDER - glyph.width) // 2, (_RENDER - glyph.height) // 2))
            masters[f, c] = np.asarray(out, dtype=np.float32) / 255.0
    return torch.from_numpy(masters)


def render_glyphs(n: int, seed: int, size: int = 28, classes: int = 26) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random letter images (n x 1 x ``size`` x ``size``, [0,1]) and their labels (balanced, shuffled)."""
    if not 2 <= classes <= len(GLYPH_CLASSES):
        raise DataError(f"glyphs has 2 to {len(GLYPH_CLASSES)} classes, got {classes}")
    if n < 1 or size < 8:
        raise DataError(f"need n >= 1 images of size >= 8, got n={n}, size={size}")
    masters = glyph_masters(classes)
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    labels = labels[torch.randperm(n, generator=gen)]
    fonts = torch.randint(0, masters.shape[0], (n,), generator=gen)
    images = torch.empty(n, 1, size, size)
    for start in range(0, n, 2048):
        stop = min(n, start + 2048)
        images[start:stop] = _transformed(masters[fonts[start:stop], labels[start:stop]][:, None], size, gen)
    return images, labels


def _transformed(glyphs: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random affine, stroke weight, ink and noise on a batch of 64 x 64 glyphs, downsampled to ``size``."""
    b = glyphs.shape[0]

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    angle = uniform(-0.25, 0.25)  # radians, about +-14 degrees
    scale = uniform(0.85, 1.2)  # > 1 shrinks the glyph (grid coordinates are divided by the zoom)
    shear = uniform(-0.25, 0.25)
    shift = torch.stack((uniform(-0.12, 0.12), uniform(-0.12, 0.12)), 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1] = scale * cos, scale * (-sin + shear * cos)
    theta[:, 1, 0], theta[:, 1, 1] = scale * sin, scale * (cos + shear * sin)
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, [b, 1, _RENDER, _RENDER], align_corners=False)
    x = F.grid_sample(glyphs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    weight = torch.randint(0, 3, (b,), generator=gen)  # 0 thinner, 1 as drawn, 2 bolder
    bolder = F.max_pool2d(x, 5, stride=1, padding=2)
    thinner = -F.max_pool2d(-x, 3, stride=1, padding=1)
    x = torch.where((weight == 2)[:, None, None, None], bolder, x)
    x = torch.where((weight == 0)[:, None, None, None], thinner, x)
    x = F.interpolate(x, size=(size, size), mode="area")
    ink = uniform(0.7, 1.0)[:, None, None, None]
    noise = torch.randn(x.shape, generator=gen) * uniform(0.0, 0.08)[:, None, None, None]
    return (x * ink + noise).clamp(0, 1)


def glyph_split(
    train: int, test: int, size: int = 28, classes: int = 26, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y): train and test sets drawn with different seeds from one distribution."""
    if min(train, test) < classes:
        raise DataError(f"glyphs needs at least one image per class: train={train}, test={test}, classes={classes}")
    tx, ty = render_glyphs(train, seed=2 * seed + 1, size=size, classes=classes)
    ex, ey = render_glyphs(test, seed=2 * seed + 2, size=size, classes=classes)
    return tx, ty, ex, ey
