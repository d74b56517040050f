"""PSP-UAP (pseudo-semantic prior, CVPR 2025): the data-free record among universal perturbations.

No images at all. Each step draws a prior image z (:func:`prior_image`): a Gaussian image around
mid-grey whose spread grows over the run, or a jigsaw of flat random colours (median-filtered) whose grid
gets finer; z gets random flips, a small rotation and scale, and sometimes a blur. The *pseudo-semantic
samples* are random resized crops (scale 0.08-1) of δ + z, resized back to the input size and detached,
so they carry δ's own structure as content; δ is then added to each again. Light per-sample transforms
(a small rotation, an intensity scaling, a 2 x 2 block shuffle) apply to the clean sample and the
perturbed one alike. The loss excites the first ``layer_share`` of the conv layers::

    minimise  - sum over layers l of  log( ½ || w ⊙ A_l(T(s + δ)) ||² + 1e-12 )

where s are the samples, T the transforms and w_i = sqrt(1 / (T_KL² · KL(p(s_i) || p(s_i + δ)))) with
p the temperature-``temperature`` softmax (detached, normalised to mean 1): samples δ does not yet move
weigh more. δ starts from U(-ε, ε); Adam with ``lr`` (pixel units; 0.1 as published, so each step can
cross the ball and the search works near its corners); δ is halved when more than ``saturation`` of it
sits at ±ε and that share stopped changing (as GD-UAP). Every random draw is a pure function of
(seed, step), so a resumed search is exact.

Example (``model`` is any :class:`~patternscope.core.classifier.Classifier`, e.g.
``ps.load_model("efficientnet_lite0")``; the tests run this example on a tiny model)::

    >>> import patternscope as ps
    >>> outcome = ps.find_pattern(model, method="psp-uap", budget=320, progress=False)  # no data at all
    >>> outcome.pattern.meta["method"], round(outcome.pattern.eps * 255)
    ('psp-uap', 10)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..core.classifier import Classifier
from ..core.objectives import Objective
from ..errors import PatternError
from .feature_fool import rescaling_param
from .recipe import Recipe, UAPConfig

PRIORS = ("gaussian", "jigsaw")


@dataclass
class PSPConfig(UAPConfig):
    """PSP-UAP settings (see the module docstring).

    Args:
        prior: ``gaussian`` or ``jigsaw`` prior images.
        spread_start, spread_end: the standard deviation of the Gaussian prior around 0.5 ([0,1] pixel
            units) at the first and the last step, grown linearly in between.
        cells_start, cells_end: jigsaw cells per side at the first and the last step.
        crop_min: the smallest crop of δ + z, as a share of its area (0.08).
        temperature: the softmax temperature of the sample weights (3-5 published).
        layer_share: the first share of the conv layers whose activations are excited (0.55-1.0 published,
            per model).
        rotation: the largest rotation, in degrees, of the per-sample transforms (and of z).
        intensity_low, intensity_high: the range of the per-sample intensity scaling.
        saturation: δ is halved when more than this share sits at ±ε and stopped changing.
    """

    init: str = "uniform"
    lr: float = 0.1
    batch_size: int = 32
    prior: str = "gaussian"
    spread_start: float = 0.05
    spread_end: float = 0.25
    cells_start: int = 2
    cells_end: int = 16
    crop_min: float = 0.08
    temperature: float = 4.0
    layer_share: float = 0.7
    rotation: float = 10.0
    intensity_low: float = 0.8
    intensity_high: float = 1.2
    saturation: float = 0.5

    def validate(self) -> PSPConfig:
        super().validate()
        if self.prior not in PRIORS:
            raise PatternError(f"prior must be one of {', '.join(PRIORS)}, got {self.prior!r}")
        if not 0 < self.spread_start <= self.spread_end <= 1:
            raise PatternError(
                f"spread must satisfy 0 < spread_start <= spread_end <= 1, got {self.spread_start}, {self.spread_end}"
            )
        if not 1 <= self.cells_start <= self.cells_end:
            raise PatternError(
                f"cells must satisfy 1 <= cells_start <= cells_end, got {self.cells_start}, {self.cells_end}"
            )
        if not 0 < self.crop_min <= 1:
            raise PatternError(f"crop_min must be in (0, 1], got {self.crop_min}")
        if self.temperature <= 0:
            raise PatternError(f"temperature must be positive, got {self.temperature}")
        if not 0 < self.layer_share <= 1:
            raise PatternError(f"layer_share must be in (0, 1], got {self.layer_share}")
        if not 0 < self.intensity_low <= self.intensity_high:
            raise PatternError(
                f"intensity must satisfy 0 < intensity_low <= intensity_high, got "
                f"{self.intensity_low}, {self.intensity_high}"
            )
        if not 0 < self.saturation <= 1 or self.rotation < 0:
            raise PatternError("saturation must be in (0, 1] and rotation >= 0")
        return self


def _generator(seed: int, step: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + stream)


def _progress(step: int, steps: int) -> float:
    return min(1.0, step / max(1, steps - 1))


def _rotate_scale(x: torch.Tensor, angles: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Each image of ``x`` (N x C x H x W) rotated by ``angles`` (radians) and zoomed by ``scales``,
    bilinear, edges reflected."""
    cos, sin = torch.cos(angles) / scales, torch.sin(angles) / scales
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _median3(x: torch.Tensor) -> torch.Tensor:
    """A 3 x 3 median filter (N x C x H x W), edges replicated."""
    n, c, h, w = x.shape
    patches = F.unfold(F.pad(x, (1, 1, 1, 1), mode="replicate").reshape(n * c, 1, h + 2, w + 2), 3)
    return patches.median(dim=1).values.reshape(n, c, h, w)


def _blur(x: torch.Tensor) -> torch.Tensor:
    kernel = torch.tensor([1.0, 2.0, 1.0])
    k2 = (kernel[:, None] * kernel[None, :] / 16).to(x.dtype)
    c = x.shape[1]
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2.expand(c, 1, 3, 3).contiguous(), groups=c)


def prior_image(config: PSPConfig, size: Sequence[int], step: int, steps: int) -> torch.Tensor:
    """The prior z of ``step`` (1 x C x H x W in [0,1]): Gaussian or jigsaw, its spread or grid grown by
    ``step / steps``, then flipped, rotated, scaled and maybe blurred; a pure function of (seed, step)."""
    c, h, w = (int(v) for v in size)
    gen = _generator(config.seed, step, 0)
    t = _progress(step, steps)
    if config.prior == "gaussian":
        sigma = config.spread_start + t * (config.spread_end - config.spread_start)
        z = 0.5 + sigma * torch.randn(1, c, h, w, generator=gen)
    else:
        cells = round(config.cells_start + t * (config.cells_end - config.cells_start))
        colours = torch.rand(1, c, cells, cells, generator=gen)
        z = _median3(F.interpolate(colours, size=(h, w), mode="nearest"))
    if bool(torch.rand(1, generator=gen) < 0.5):
        z = z.flip(-1)
    if bool(torch.rand(1, generator=gen) < 0.5):
        z = z.flip(-2)
    angle = (torch.rand(1, generator=gen) * 2 - 1) * math.radians(config.rotation)
    scale = 0.8 + 0.4 * torch.rand(1, generator=gen)
    z = _rotate_scale(z, angle, scale)
    if bool(torch.rand(1, generator=gen) < 0.5):
        z = _blur(z)
    return z.clamp(0, 1)


def _crop_boxes(n: int, h: int, w: int, crop_min: float, gen: torch.Generator) -> list[tuple[int, int, int, int]]:
    """``n`` random (top, left, height, width) crops with an area of ``crop_min``-1 of the image and an
    aspect ratio in 3/4-4/3 (log-uniform)."""
    boxes = []
    for _ in range(n):
        area = h * w * (crop_min + (1 - crop_min) * float(torch.rand(1, generator=gen)))
        ratio = math.exp(math.log(3 / 4) + math.log(16 / 9) * float(torch.rand(1, generator=gen)))
        ch = max(1, min(h, round(math.sqrt(area / ratio))))
        cw = max(1, min(w, round(math.sqrt(area * ratio))))
        top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
        boxes.append((top, left, ch, cw))
    return boxes


def _block_shuffle(x: torch.Tensor, orders: torch.Tensor) -> torch.Tensor:
    """Each image's four 2 x 2 blocks (quadrants) in the order ``orders[i]`` (a permutation of 0..3)."""
    n, c, h, w = x.shape
    hh, hw = h // 2, w // 2
    core = x[:, :, : 2 * hh, : 2 * hw]
    blocks = core.reshape(n, c, 2, hh, 2, hw).permute(0, 2, 4, 1, 3, 5).reshape(n, 4, c, hh, hw)
    shuffled = blocks[torch.arange(n, device=x.device)[:, None], orders]
    out = shuffled.reshape(n, 2, 2, c, hh, hw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, 2 * hh, 2 * hw)
    if (2 * hh, 2 * hw) == (h, w):
        return out
    return torch.cat([torch.cat([out, x[:, :, : 2 * hh, 2 * hw :]], 3), x[:, :, 2 * hh :, :]], 2)


class _Transforms:
    """One draw of the light per-sample transforms, applied the same way to clean and perturbed samples."""

    def __init__(self, config: PSPConfig, n: int, gen: torch.Generator, device: torch.device) -> None:
        self.angles = ((torch.rand(n, generator=gen) * 2 - 1) * math.radians(config.rotation)).to(device)
        lo, hi = config.intensity_low, config.intensity_high
        self.gains = (lo + (hi - lo) * torch.rand(n, generator=gen)).to(device)
        self.shuffle = (torch.rand(n, generator=gen) < 0.5).to(device)
        self.orders = torch.stack([torch.randperm(4, generator=gen) for _ in range(n)]).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _rotate_scale(x, self.angles.to(x.dtype), torch.ones_like(self.angles, dtype=x.dtype))
        x = x * self.gains.to(x.dtype)[:, None, None, None]
        shuffled = _block_shuffle(x, self.orders)
        return torch.where(self.shuffle[:, None, None, None], shuffled, x)


def _layers(model: Classifier, share: float) -> list[str]:
    layers = model.conv_layers()
    return layers[: max(1, math.ceil(share * len(layers)))]


def psp_objective(model: Classifier, delta: torch.Tensor, config: PSPConfig) -> Objective:
    """The PSP-UAP loss of one step; its batch is ``(z, step)`` from :func:`psp_batches`."""
    layers = _layers(model, config.layer_share)
    t_kl = config.temperature

    def fn(batch: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
        z, step = batch
        gen = _generator(config.seed, int(step.reshape(-1)[0]), 1)
        h, w = z.shape[-2:]
        base = (delta.detach() + z[0]).clamp(0, 1)
        crops = [
            F.interpolate(base[None, :, top : top + ch, left : left + cw], size=(h, w), mode="bilinear")
            for top, left, ch, cw in _crop_boxes(config.batch_size, h, w, config.crop_min, gen)
        ]
        samples = torch.cat(crops).clamp(0, 1)
        transform = _Transforms(config, config.batch_size, gen, delta.device)
        perturbed = transform(samples + delta)
        with torch.no_grad():
            clean_p = F.log_softmax(model(transform(samples)).float() / t_kl, dim=1)
            pert_p = F.log_softmax(model(perturbed.detach()).float() / t_kl, dim=1)
            kl = (clean_p.exp() * (clean_p - pert_p)).sum(1).clamp(min=1e-12)
            weights = torch.sqrt(1 / (t_kl**2 * kl))
            weights = weights / weights.mean()
        total = torch.zeros((), device=delta.device)
        for act in model.activations(perturbed, layers):
            # weights broadcast over every other axis: no flatten, so an NHWC activation is never copied
            energy = (weights.reshape(-1, *[1] * (act.dim() - 1)) * act.float()).pow(2).sum() / 2
            total = total + torch.log(energy + 1e-12)
        return -total

    return Objective(fn, f"psp[{config.prior},{len(layers)} layers]")


def psp_batches(config: PSPConfig, input_size: Sequence[int]) -> Callable[[int, int], tuple[torch.Tensor, ...]]:
    """The batch of each step: its prior image z (1 x C x H x W) and the step (for the crops' draws)."""

    def batch(step: int, _size: int) -> tuple[torch.Tensor, ...]:
        return prior_image(config, input_size, step, config.steps), torch.tensor([step])

    return batch


def step_cost(batch_size: int) -> float:
    """Passes per step: two forward-only passes of the batch for the weights (a third each), one forward and
    backward for the loss."""
    return batch_size * 5 / 3


RECIPE = Recipe(
    name="psp-uap",
    title="PSP-UAP (pseudo-semantic prior, 2025)",
    config=PSPConfig,
    objective=psp_objective,
    default_data=(),
    step_cost=lambda c: step_cost(c.batch_size),
    uses_data=lambda _c: False,
    param=rescaling_param("saturation"),
    own_batches=psp_batches,
)
