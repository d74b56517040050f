"""Measure a pattern: fooling ratio, accuracy, dominance ratios, agreement, random-noise baselines.

All metrics are computed on clip(x + δ, 0, 1), a valid image. Definitions (Ye et al. 2021, plus ours):

- **fooling ratio**: share of images with argmax f(x + δ) != argmax f(x) (no labels needed);
- **accuracy** top-1/3/5, clean and perturbed, when labels exist; **attack success** top-1/3/5 (the
  authors'): of the correctly classified images (clean top-1), the share whose label leaves the perturbed
  top-k; and our variant ``attack_success_clean_topk``: of the images whose label is in the clean top-k;
- **dominance ratio** (top-k): share of all predictions that fall in the k most frequent predicted
  classes, for perturbed and clean predictions, and whether δ's own class argmax f(δ) is among them;
- **agreement** (ours): share of images with argmax f(x + δ) == argmax f(δ);
- **random baselines**: the fooling ratio of random noise of the same norm (uniform in the ball, and
  ±eps signs for L∞), reported next to every fooling ratio.
- **perceptibility**: PSNR and SSIM of clip(x + δ) vs x, δ's L∞ and L2 norms, the share of δ at the
  budget and of x + δ clipped (:mod:`~patternscope.core.perceptibility`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from ..data.bank import Images, take
from ..data.image_set import ImageSet
from ..data.labelled import seeded_sample
from ..data.loader import default_workers, eval_batches, to_device
from ..errors import DataError
from ..runtime import release_free_memory
from .classifier import Classifier
from .models import on_device
from .patterns import Pattern
from .perceptibility import MAX_IMAGES, PerceptibilityMeter, perceptibility
from .predict import Predictions, forward_images, predict

TOPK = (1, 3, 5)


# ---------------------------------------------------------------------------------------------------
# Pure functions on predictions (easy to check by hand)


def fooling_ratio(clean_pred: torch.Tensor, perturbed_pred: torch.Tensor) -> float:
    """Share of images whose predicted class changed."""
    if clean_pred.numel() == 0:
        return float("nan")
    return float((clean_pred != perturbed_pred).float().mean())


def topk_accuracy(topk: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of labelled images (label >= 0) whose label is among the first ``k`` columns of ``topk``."""
    mask = labels >= 0
    if not mask.any():
        return float("nan")
    hits = (topk[mask, :k] == labels[mask, None]).any(dim=1)
    return float(hits.float().mean())


def _in_topk(topk: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per image: labelled (label >= 0) and the label among the first ``k`` columns of ``topk``."""
    return (labels >= 0) & (topk[:, :k] == labels[:, None]).any(dim=1)


def topk_attack_success(clean_topk: torch.Tensor, perturbed_topk: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Attack success top-``k`` as the authors count it: of the labelled images whose clean top-1 is the
    label, the share whose label is no longer in the perturbed top ``k`` (one denominator for every k, so
    the value falls as k grows; NaN when no image is classified correctly)."""
    correct = _in_topk(clean_topk, labels, 1)
    if not correct.any():
        return float("nan")
    return float((~_in_topk(perturbed_topk[correct], labels[correct], k)).float().mean())


def topk_attack_success_clean_topk(
    clean_topk: torch.Tensor, perturbed_topk: torch.Tensor, labels: torch.Tensor, k: int
) -> float:
    """Our variant of :func:`topk_attack_success` (not the authors'): of the images whose label is in the
    clean top ``k``, the share whose label is no longer in the perturbed top ``k`` (NaN when there are none)."""
    hit = _in_topk(clean_topk, labels, k)
    if not hit.any():
        return float("nan")
    return float((~_in_topk(perturbed_topk[hit], labels[hit], k)).float().mean())


def top_classes(pred: torch.Tensor, k: int) -> list[int]:
    """The ``k`` most frequent classes in ``pred`` (ties broken by the smaller class index)."""
    counts = Counter(pred.tolist())
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def dominance_ratio(pred: torch.Tensor, k: int) -> float:
    """Share of predictions that fall in the ``k`` most frequent predicted classes."""
    if pred.numel() == 0:
        return float("nan")
    classes = torch.tensor(top_classes(pred, k), dtype=pred.dtype)
    return float(torch.isin(pred, classes).float().mean())


def agreement(perturbed_pred: torch.Tensor, pattern_class: int) -> float:
    """Share of perturbed predictions equal to the pattern's own class argmax f(δ)."""
    if perturbed_pred.numel() == 0:
        return float("nan")
    return float((perturbed_pred == pattern_class).float().mean())


@torch.no_grad()
def pattern_class(model: Classifier, delta: torch.Tensor) -> int:
    """The pattern's own class on ``model``: argmax f(δ), δ (C x H x W) fed alone."""
    return int(model(delta[None].to(model.device)).argmax(1).item())


def wilson_interval(share: float, n: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval [low, high] of a proportion ``share`` observed on ``n`` images (95% for
    z = 1.96; both ends in [0,1]; [0, 1] when there are no images). It treats the images as independent
    draws: several crops of one photo are not, so with ``--eval-views`` > 1 it is narrower than the truth."""
    if n <= 0 or share != share:
        return [0.0, 1.0]
    z2 = z * z
    centre = (share + z2 / (2 * n)) / (1 + z2 / n)
    half = z * ((share * (1 - share) / n + z2 / (4 * n * n)) ** 0.5) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


# ---------------------------------------------------------------------------------------------------
# Random baselines


def random_like(pattern: Pattern, kind: str, seed: int = 0) -> torch.Tensor:
    """Random noise of the pattern's norm and budget: ``uniform`` in the ball, or ``sign`` (±eps, L∞;
    for L2 a random ±1 pattern scaled to norm eps). eps is the larger of the declared budget and the
    pattern's measured norm, so a pattern over its budget is compared with noise as large as it is."""
    gen = torch.Generator().manual_seed(seed)
    shape = pattern.shape
    eps = max(pattern.eps, pattern.size())
    if kind == "uniform":
        if pattern.norm == "linf":
            return (torch.rand(shape, generator=gen) * 2 - 1) * eps
        direction = torch.randn(shape, generator=gen)
        return direction / direction.norm() * eps
    if kind == "sign":
        signs = torch.randint(0, 2, shape, generator=gen).float() * 2 - 1
        return signs * eps if pattern.norm == "linf" else signs / signs.norm() * eps
    raise ValueError(f"kind must be uniform or sign, got {kind!r}")


# ---------------------------------------------------------------------------------------------------
# The full evaluation


@dataclass
class Evaluation:
    """Every metric of one pattern on one image set (JSON-ready through :meth:`to_dict`).

    ``details`` (not in the JSON) holds per-crop predictions (small: a few numbers per crop) and a
    handful of example crops (``images``, at the crop indices ``example_index``) for figures.
    """

    n_images: int
    fooling_ratio: float
    confidence_threshold: float
    n_confident: int
    fooling_ratio_confident: float
    pattern_class: int
    pattern_class_name: str
    agreement: float
    agreement_confident: float
    dominance: dict[str, dict[str, Any]]
    accuracy: dict[str, Any] | None
    random_baselines: dict[str, dict[str, float]]
    top_classes: dict[str, list[dict[str, Any]]]
    pattern_norm: float
    skipped_images: int = 0
    skipped_names: list[str] = field(default_factory=list)
    intervals: dict[str, list[float]] = field(default_factory=dict)
    perceptibility: dict[str, Any] = field(default_factory=dict)
    details: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("details")
        return out


@dataclass
class Collected:
    """Predictions of the same images under several additive deltas (``None``: clean), gathered batch
    by batch by :func:`stream_predictions` into buffers allocated once (so a long stream does not
    fragment the heap), with the labels, a few example crops and the skipped images."""

    top5: dict[str, torch.Tensor]
    confidence: dict[str, torch.Tensor]
    label_buffer: torch.Tensor
    count: int = 0
    examples: list[torch.Tensor] = field(default_factory=list)
    example_index: list[int] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    meter: PerceptibilityMeter | None = None

    @classmethod
    def empty(cls, names: Sequence[str], capacity: int, k: int) -> Collected:
        return cls(
            {n: torch.empty(capacity, k, dtype=torch.long) for n in names},
            {n: torch.empty(capacity) for n in names},
            torch.empty(capacity, dtype=torch.long),
        )

    def predictions(self, name: str) -> Predictions:
        return Predictions(self.top5[name][: self.count], self.confidence[name][: self.count])

    @property
    def labels(self) -> torch.Tensor:
        return self.label_buffer[: self.count]


def stream_predictions(
    model: Classifier,
    images: ImageSet | Images,
    deltas: dict[str, torch.Tensor | None],
    labels: Sequence[int] | torch.Tensor | None = None,
    *,
    batch_size: int = 64,
    views: int = 1,
    workers: int | None = None,
    examples: int = 0,
    progress: bool = False,
    desc: str = "evaluate",
    perceive: str | None = None,
    sample_seed: int = 0,
) -> Collected:
    """Predictions of ``model`` on clip(x + delta, 0, 1) for every named delta (``None``: x itself), the
    images read once and streamed: memory is O(batch_size x workers) plus a few numbers per crop
    (about 50 bytes per crop and delta).

    ``images``: an ImageSet (``views`` crops per image, decoded by ``workers`` processes; undecodable
    images skipped with a warning) or an N x C x H x W tensor in [0,1] with optional ``labels``.
    ``examples``: crops kept (spread evenly) for figures. ``perceive``: the name of a delta whose
    perceptibility (PSNR, SSIM, clipped share) is measured on every view of a sample of the images drawn with
    ``sample_seed`` (:func:`perceived_images`; ``Collected.meter``). Raises :class:`DataError` when no image
    decodes.
    """
    from tqdm.auto import tqdm

    expected = len(images) * views if isinstance(images, ImageSet) else int(images.shape[0])
    wanted = set(_example_order(expected, examples).tolist())
    got = Collected.empty(list(deltas), expected, min(5, model.num_classes))
    measured = None
    if perceive is not None:
        measured, sample = perceived_images(images, labels, views, sample_seed)
        got.meter = PerceptibilityMeter(sample=sample)
    bar = tqdm(total=expected, unit="image", desc=desc, disable=not progress, dynamic_ncols=True, leave=False)
    try:
        for host, y, index, skipped in _host_batches(images, labels, model, views, batch_size, workers):
            got.skipped.extend(skipped)
            bar.update(host.shape[0] + len(skipped) * views)
            n = host.shape[0]
            if n == 0:
                continue
            x = to_device(host, model.device)
            assert isinstance(x, torch.Tensor)
            done = slice(got.count, got.count + n)
            for name, delta in deltas.items():
                pred = predict(model, x, forward_images(model, batch_size), delta)
                got.top5[name][done] = pred.top5
                got.confidence[name][done] = pred.confidence
                release_free_memory()  # each forward pass's blocks, before the next pass or SSIM's are made
            got.label_buffer[done] = y
            if got.meter is not None and perceive is not None and measured is not None:
                perceived, keep = deltas[perceive], measured[index].to(x.device)
                if perceived is not None and bool(keep.any()):
                    got.meter.update(x[keep], perceived)
                    release_free_memory()  # SSIM's windows, before the next batch's forward passes
            for j in range(n):
                if got.count + j in wanted:
                    got.examples.append(x[j].float().cpu().clone())  # not a view that keeps the batch
                    got.example_index.append(got.count + j)
            got.count += n
    finally:
        bar.close()
    if got.count == 0:
        what = images.description if isinstance(images, ImageSet) else "the image tensor"
        raise DataError(f"none of the {len(images)} images in {what} can be decoded")
    return got


def evaluate_pattern(
    model: Classifier,
    pattern: Pattern,
    images: ImageSet | Images,
    *,
    labels: Sequence[int] | torch.Tensor | None = None,
    batch_size: int = 64,
    views: int = 1,
    confidence: float = 0.5,
    baselines: Sequence[str] = ("uniform", "sign"),
    seed: int = 0,
    device: str | torch.device | None = None,
    workers: int | None = None,
    examples: int = 8,
    progress: bool = False,
) -> Evaluation:
    """Measure ``pattern`` on ``images`` (an ImageSet, or an N x C x H x W tensor in [0,1]).

    The images are streamed (:func:`stream_predictions`): each batch of crops is read once and measured
    clean, with the pattern and with each random baseline, so memory stays O(batch_size x workers) for
    any number of images. Images that cannot be decoded are skipped with a warning and counted
    (``skipped_images``).

    ``labels`` (N, -1 where unknown) add accuracy and attack success for tensors; an ImageSet brings its
    own. ``views`` takes several deterministic crops per image (ImageSet only). ``confidence`` sets the
    subset "classified with confidence > threshold" reported beside the overall fooling ratio.
    ``baselines`` are the random noises measured beside it (``uniform``, ``sign``), drawn with ``seed``.
    ``device``: where to measure (default: the model's device; the model is moved there). ``workers``:
    input-pipeline worker processes (default: :func:`~patternscope.data.loader.default_workers`).
    ``examples``: crops kept for figures (spread evenly over the set). ``progress``: a progress bar.
    """
    model = on_device(model, device)
    pattern.check_fits(model.input_size)
    deltas: dict[str, torch.Tensor | None] = {"clean": None, "perturbed": pattern.delta}
    deltas.update({kind: random_like(pattern, kind, seed) for kind in baselines})
    got = stream_predictions(
        model,
        images,
        deltas,
        labels,
        batch_size=batch_size,
        views=views,
        workers=workers,
        examples=examples,
        progress=progress,
        perceive="perturbed",
        sample_seed=seed,
    )
    return _summarise(model, pattern, got, confidence, baselines, views)


def perceived_images(
    images: ImageSet | Images, labels: Sequence[int] | torch.Tensor | None, views: int, seed: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Which images the perceptibility is measured on (a boolean mask over the images, every view of each
    chosen one) and how they were drawn: a seeded sample of at most :data:`MAX_IMAGES` crops
    (:func:`~patternscope.data.seeded_sample`), class-stratified when any label is known, never a prefix."""
    n = len(images) if isinstance(images, ImageSet) else int(images.shape[0])
    known = images.labels() if isinstance(images, ImageSet) else labels
    y = torch.as_tensor(known, dtype=torch.long) if known is not None else None
    stratified = y is not None and y.numel() == n and bool((y >= 0).any())
    chosen = seeded_sample(n, max(1, MAX_IMAGES // max(1, views)), seed, y if stratified else None)
    mask = torch.zeros(n, dtype=torch.bool)
    mask[chosen] = True
    return mask, {"seed": seed, "stratified": stratified, "of": n * max(1, views)}  # of: crops, as n counts


def _host_batches(
    images: ImageSet | Images,
    labels: Sequence[int] | torch.Tensor | None,
    model: Classifier,
    views: int,
    batch_size: int,
    workers: int | None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]]:
    """(crops, labels, the image index of each crop, names of skipped images) for each batch of ``images``,
    streamed from files."""
    if isinstance(images, ImageSet):
        n_workers = default_workers(model.device) if workers is None else workers
        for b in eval_batches(
            images, model.input_size, views=views, batch_size=batch_size, workers=n_workers, device=model.device
        ):
            yield b.images, b.labels, b.image_index, b.skipped
        return
    y = torch.as_tensor(labels, dtype=torch.long) if labels is not None else torch.full((images.shape[0],), -1)
    if y.shape[0] != images.shape[0]:
        raise DataError(f"{y.shape[0]} labels for {images.shape[0]} images")
    for start in range(0, images.shape[0], batch_size):
        stop = min(start + batch_size, images.shape[0])
        yield take(images, slice(start, stop)), y[start:stop], torch.arange(start, stop), []


def _example_order(count: int, n: int = 8) -> torch.Tensor:
    """Up to ``n`` crop indices spread evenly over ``count`` crops (deterministic)."""
    if count <= 0 or n <= 0:
        return torch.empty(0, dtype=torch.long)
    return torch.arange(0, count, max(1, count // n))[:n]


def _summarise(
    model: Classifier, pattern: Pattern, got: Collected, confidence: float, baselines: Sequence[str], views: int = 1
) -> Evaluation:
    clean = got.predictions("clean")
    pert = got.predictions("perturbed")
    y = got.labels
    own = pattern_class(model, pattern.delta)
    names = model.class_names
    confident = clean.confidence > confidence
    dominance = _dominance(clean, pert, own)
    accuracy = _accuracy(clean, pert, y)
    random = _random_baselines(got, clean, confident, baselines)
    example_images = torch.stack(got.examples) if got.examples else torch.empty(0, *model.input_size)
    n, n_confident = int(clean.top1.shape[0]), int(confident.sum())
    fooled = fooling_ratio(clean.top1, pert.top1)
    fooled_confident = fooling_ratio(clean.top1[confident], pert.top1[confident])
    agree, agree_confident = agreement(pert.top1, own), agreement(pert.top1[confident], own)
    intervals = {
        "fooling_ratio": wilson_interval(fooled, n),
        "fooling_ratio_confident": wilson_interval(fooled_confident, n_confident),
        "agreement": wilson_interval(agree, n),
        "agreement_confident": wilson_interval(agree_confident, n_confident),
    }
    if views > 1:  # crops of one photo are correlated: the interval as if each photo were one draw
        photos = max(1, n // views)
        intervals["fooling_ratio_per_photo"] = wilson_interval(fooled, photos)
        intervals["agreement_per_photo"] = wilson_interval(agree, photos)
    return Evaluation(
        n_images=n,
        fooling_ratio=fooled,
        confidence_threshold=confidence,
        n_confident=n_confident,
        fooling_ratio_confident=fooled_confident,
        pattern_class=int(own),
        pattern_class_name=names[own],
        agreement=agree,
        agreement_confident=agree_confident,
        dominance=dominance,
        accuracy=accuracy,
        random_baselines=random,
        top_classes={"clean": _histogram(clean.top1, names), "perturbed": _histogram(pert.top1, names)},
        pattern_norm=pattern.size(),
        skipped_images=len(got.skipped),
        skipped_names=got.skipped[:20],
        intervals=intervals,
        perceptibility=perceptibility(pattern.delta, pattern.eps, pattern.norm, got.meter),
        details={
            "images": example_images,
            "example_index": torch.tensor(got.example_index, dtype=torch.long),
            "labels": y,
            "clean_pred": clean.top1,
            "clean_conf": clean.confidence,
            "perturbed_pred": pert.top1,
            "perturbed_conf": pert.confidence,
        },
    )


def _dominance(clean: Predictions, pert: Predictions, own: int) -> dict[str, dict[str, Any]]:
    """Top-k dominance ratios of the perturbed and clean predictions, and whether class ``own`` is in the top k."""
    dominance: dict[str, dict[str, Any]] = {}
    for k in TOPK:
        dominance[f"top{k}"] = {
            "perturbed": dominance_ratio(pert.top1, k),
            "clean": dominance_ratio(clean.top1, k),
            "pattern_class_in_top": own in top_classes(pert.top1, k),
        }
    return dominance


def _accuracy(clean: Predictions, pert: Predictions, y: torch.Tensor) -> dict[str, Any] | None:
    """Accuracy and attack success, clean and perturbed, on the labelled images (label >= 0); None without any."""
    if not (y >= 0).any():
        return None
    correct = clean.top1 == y
    return {
        "n_labelled": int((y >= 0).sum()),
        "clean": {f"top{k}": topk_accuracy(clean.top5, y, k) for k in TOPK},
        "perturbed": {f"top{k}": topk_accuracy(pert.top5, y, k) for k in TOPK},
        "attack_success_on_correct": fooling_ratio(clean.top1[correct], pert.top1[correct]),
        "n_correct": int(correct.sum()),
        "attack_success": {f"top{k}": topk_attack_success(clean.top5, pert.top5, y, k) for k in TOPK},
        "attack_success_clean_topk": {
            f"top{k}": topk_attack_success_clean_topk(clean.top5, pert.top5, y, k) for k in TOPK
        },
        "n_correct_topk": {f"top{k}": int(_in_topk(clean.top5, y, k).sum()) for k in TOPK},
    }


def _random_baselines(
    got: Collected, clean: Predictions, confident: torch.Tensor, baselines: Sequence[str]
) -> dict[str, dict[str, float]]:
    """The fooling ratio of each random baseline noise, overall and on the ``confident`` images."""
    random: dict[str, dict[str, float]] = {}
    for kind in baselines:
        noise = got.predictions(kind)
        random[kind] = {
            "fooling_ratio": fooling_ratio(clean.top1, noise.top1),
            "fooling_ratio_confident": fooling_ratio(clean.top1[confident], noise.top1[confident]),
        }
    return random


def _histogram(pred: torch.Tensor, names: Sequence[str]) -> list[dict[str, Any]]:
    """The 10 most predicted classes (most first, ties by class) with their names and counts."""
    counts = Counter(pred.tolist())
    return [
        {"class": c, "name": names[c], "count": n}
        for c, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    ]
