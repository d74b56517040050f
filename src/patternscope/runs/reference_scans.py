"""Reference clean models for ``scan --reference``: each one's finished scan is kept in a cache and reused
by every later run on the same data with the same settings.

A reference given as a weights file is scanned once into ``<cache>/<key>/`` (resumable class by class, so
an interrupted reference scan continues where it stopped, in this run or the next) and read back afterwards;
a reference given as a finished scan folder is read as it is. The key is a SHA-256 of what the per-class
values depend on: the weights file's bytes, the model spec and keyword arguments, the images and labels
(:func:`~patternscope.data.fingerprint.images_fingerprint`) and the scan settings that change per-class
values (not the verdict's: ``rule``, ``fpr``, ``null``, the MAD rule's ``threshold`` and ``max_ratio``).

The cache is ``$PATTERNSCOPE_CACHE/reference-scans`` (default ``~/.cache/patternscope/reference-scans``), or
``--reference-cache DIR``. Two runs sharing a reference take turns on it (the folder's run lock).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..analyses.scan import ScanConfig, combine_references, scan_model, scan_reference, signal_caps
from ..core.atomic import write_json
from ..core.models import resolve_device
from ..core.run_id import forget_run_id, new_run_id, set_run_id
from ..data.fingerprint import file_sha256, images_fingerprint
from ..data.labelled import LabelledImages
from ..errors import DataError, RunDirError
from .lock import lock_run_dir, release_run_lock
from .options import load_options_model, parse_model_kwargs
from .report_pages import one_run_id

# settings a reference scan may differ in: the verdict's (not its per-class values), and the seed of its split
FREE_IN_REFERENCES = {"rule", "fpr", "null", "threshold", "max_ratio", "seed"}
CACHE_ENV = "PATTERNSCOPE_CACHE"


def default_cache() -> Path:
    """``$PATTERNSCOPE_CACHE/reference-scans``, else ``~/.cache/patternscope/reference-scans``."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "patternscope") / "reference-scans"


def value_settings(config: ScanConfig) -> dict[str, Any]:
    """The scan settings the per-class values depend on (a reference must match the scan in these)."""
    return {k: v for k, v in asdict(config).items() if k not in FREE_IN_REFERENCES}


def reference_key(weights: Path, opts: Any, config: ScanConfig, data_key: str) -> str:
    """The cache key of scanning ``weights`` (in ``opts.model``) on data ``data_key`` with ``config``."""
    what = {
        "weights": file_sha256(weights),
        "model": opts.model,
        "model_kwargs": opts.model_kwargs,
        "data": data_key,
        "settings": value_settings(config),
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


@dataclass
class ReferenceRecord:
    """Where one reference's per-class values came from, for ``scan.json``."""

    item: str
    source: str  # "scan folder", "cache" (reused) or "scanned" (this run, into the cache)
    folder: str
    seconds: float


def reference_values(
    opts: Any,
    config: ScanConfig,
    data: LabelledImages,
    log: Callable[[str], None],
    progress: bool,
    cache: Path | None = None,
) -> tuple[dict[str, list[float]] | None, list[ReferenceRecord]]:
    """The per-class signals of ``opts.reference`` clean models, combined (the smallest per class), and where
    each came from. Items were checked by :func:`check_references` before the run folder was made."""
    import time

    if not opts.reference:
        return None, []
    root = cache or default_cache()
    found, records = [], []
    data_key: str | None = None
    for item in opts.reference:
        path = Path(item)
        t0 = time.perf_counter()
        if path.is_dir():
            found.append(read_reference_scan(path / "scan.json", config, item))
            records.append(ReferenceRecord(item, "scan folder", str(path), 0.0))
            log(f"reference {item}: read its finished scan")
            continue
        if data_key is None:
            data_key = images_fingerprint(data.images, data.labels)
        folder = root / reference_key(path, opts, config, data_key)
        values, source = _cached_scan(item, folder, opts, config, data, log, progress)
        found.append(values)
        records.append(ReferenceRecord(item, source, str(folder), round(time.perf_counter() - t0, 2)))
    needed = set(config.signals)
    for i, ref in enumerate(found):
        if not needed <= set(ref):
            raise DataError(f"reference {opts.reference[i]!r} has no {sorted(needed - set(ref))} signal")
    return combine_references(found, signal_caps(data.images.shape[1:])), records


def _cached_scan(
    item: str,
    folder: Path,
    opts: Any,
    config: ScanConfig,
    data: LabelledImages,
    log: Callable[[str], None],
    progress: bool,
) -> tuple[dict[str, list[float]], str]:
    """The per-class values of the weights file ``item`` from its cache folder, and whether they were read
    (``cache``: finished by an earlier run, or by another run while this one waited for the folder's lock) or
    made now (``scanned``: resumable class by class)."""
    if (folder / "scan.json").is_file():
        log(f"reference {item}: reusing its finished scan from {folder}")
        return read_reference_scan(folder / "scan.json", config, item), "cache"
    folder.mkdir(parents=True, exist_ok=True)
    taken = lock_run_dir(folder)
    try:
        if (folder / "scan.json").is_file():
            log(f"reference {item}: reusing the scan another run finished in {folder}")
            return read_reference_scan(folder / "scan.json", config, item), "cache"
        # the cached scan is a run of its own: its id (kept when an interrupted one is continued) on its files
        set_run_id(folder, _existing_run_id(folder) or new_run_id())
        ref_opts = replace(opts, weights=item)
        model = load_options_model(ref_opts, resolve_device(opts.device), parse_model_kwargs(opts.model_kwargs))
        log(f"reference {item}: scanning it once with the same settings into {folder} (kept for later runs)")
        report = scan_model(
            model,
            data.images,
            data.labels,
            config=config,
            out=folder,
            resume=True,
            progress=progress,
            decide_verdict=False,
        )
        write_json(folder / "scan.json", {**report.to_dict(), "reference_of": str(Path(item).resolve())})
        return scan_reference(report), "scanned"
    finally:
        forget_run_id(folder)
        if taken:
            release_run_lock(folder)


def _existing_run_id(folder: Path) -> str | None:
    """The run id of an interrupted reference scan's finished classes, or None (none finished, or no id)."""
    try:
        return one_run_id(folder)
    except RunDirError:  # mixed ids (a damaged cache entry): start a fresh id for what is written now
        return None


def read_reference_scan(path: Path, config: ScanConfig, item: str) -> dict[str, list[float]]:
    """A finished scan's per-class values, refused when its settings differ from ``config`` in any setting the
    values depend on."""
    saved = json.loads(path.read_text())
    mine = value_settings(config)
    theirs = {k: saved.get("config", {}).get(k) for k in mine}
    if theirs != mine:
        diff = {k: (theirs[k], v) for k, v in mine.items() if theirs[k] != v}
        raise DataError(f"reference scan {item!r} was made with other settings {diff} (reference, now)")
    return scan_reference(saved)


def check_references(opts: Any, config: ScanConfig) -> None:
    """Refuse ``--reference`` items that are neither a weights file nor a finished scan folder (before any
    folder is touched)."""
    if not opts.reference:
        return
    if config.rule != "calibrated":
        raise DataError("--reference needs --rule calibrated (the mad rule has no reference mode)")
    for item in opts.reference:
        path = Path(item)
        if path.is_dir() and not (path / "scan.json").is_file():
            raise DataError(f"reference {item!r} is a folder without scan.json (not a finished scan)")
        if not path.exists():
            raise DataError(f"reference {item!r} is neither a weights file nor a finished scan folder")
