"""A content key of labelled images: equal for the same images and labels, different when any changes.

For tensors, the bytes of the images and labels; for an :class:`~patternscope.data.bank.ImageBank` of files,
each file's resolved path, size and modification time (not its bytes: a tree of thousands of files is keyed
without reading it), the model input size the bank resizes to, and the labels. Used to reuse finished work on
the same data across runs (the backdoor scan's reference models).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .bank import ImageBank, Images


def images_fingerprint(images: Images, labels: torch.Tensor) -> str:
    """A SHA-256 hex key of ``images`` (N x C x H x W in [0,1], a tensor or a bank of files) and ``labels`` (N)."""
    digest = hashlib.sha256()
    digest.update(f"{tuple(images.shape)}".encode())
    digest.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    if isinstance(images, ImageBank):
        for key in images.file_keys():
            digest.update(key.encode() + b"\n")
        return digest.hexdigest()
    for start in range(0, images.shape[0], 1024):  # bounded memory: one chunk's bytes at a time
        chunk = images[start : start + 1024].detach().to("cpu", torch.float32).contiguous()
        digest.update(chunk.numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes (read in 1 MB blocks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
