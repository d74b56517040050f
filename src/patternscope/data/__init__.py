"""Image sources for search and measurement, all in [0,1] pixel space (N x C x H x W).

- :mod:`~patternscope.data.images`: read one image file, convert channels, resize, evaluation crops;
- :mod:`~patternscope.data.image_set`: :class:`ImageSet` (files or tensors, optional labels),
  :func:`image_folder`, :func:`tensor_set`;
- :mod:`~patternscope.data.photos`: the bundled natural photos (``photos``, ``photos-eval``);
- :mod:`~patternscope.data.proxies`: data-free proxies (``jigsaw``, ``gaussian``, ``uniform``);
- :mod:`~patternscope.data.stream`: :class:`BatchStream`, batches as a pure function of (seed, step);
- :mod:`~patternscope.data.sources`: resolving ``--data`` specs, disjoint evaluation sets;
- :mod:`~patternscope.data.datasets`: scikit-learn digits and Fashion-MNIST, offline;
- :mod:`~patternscope.data.labelled`: labelled sets sized for a model, stratified splits, seeded samples;
- :mod:`~patternscope.data.bank`: :class:`ImageBank`, labelled files read on demand and indexed like a tensor.
"""

from .bank import ImageBank, Images, image_set_of, take
from .datasets import LabelledData, load_dataset, load_digits, load_fashion_mnist, write_image_tree
from .image_set import ImageItem, ImageSet, image_folder, tensor_set
from .images import eval_views, read_image, resize_to, to_channels
from .labelled import BUILTIN_LABELLED, LabelledImages, open_labelled, seeded_sample, stratified_split
from .photos import BUNDLED_NAMES, bundled_photos
from .proxies import PROXY_NAMES, jigsaw_images, noise_images
from .sources import disjoint_eval_set, open_images, training_sources
from .stream import BatchStream, check_crop_scale, epoch_batches

__all__ = [
    "BUILTIN_LABELLED",
    "BUNDLED_NAMES",
    "PROXY_NAMES",
    "BatchStream",
    "ImageBank",
    "ImageItem",
    "ImageSet",
    "Images",
    "LabelledData",
    "LabelledImages",
    "bundled_photos",
    "check_crop_scale",
    "disjoint_eval_set",
    "epoch_batches",
    "eval_views",
    "image_folder",
    "image_set_of",
    "jigsaw_images",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "noise_images",
    "open_images",
    "open_labelled",
    "read_image",
    "resize_to",
    "seeded_sample",
    "stratified_split",
    "take",
    "tensor_set",
    "to_channels",
    "training_sources",
    "write_image_tree",
]
