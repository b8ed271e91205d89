"""The elpv solar-cell data set as a timm-readable ImageFolder tree with a fixed stratified split.

elpv-dataset (PyPI, Apache-2.0) ships 2,624 grayscale 300x300 electroluminescence images of solar
cells, each with a defect probability in {0, 1/3, 2/3, 1}. timm's `create_dataset` reads any
ImageFolder, so the images are written once as `root/{train,val}/{class}/cellNNNN.png`: the study
then uses timm's own data pipeline, and a user's own ImageFolder drops in for it unchanged.

The split is stratified (every class keeps the same val fraction; the smallest class has 106
images) and fixed by a seed, so every run and every seed of a study sees the same images. The tree
is written to a temporary folder beside `root` and renamed into place, so an interrupted run
leaves nothing half-written; a complete tree is reused.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np

CLASS_NAMES = ('defect_0of3', 'defect_1of3', 'defect_2of3', 'defect_3of3')
"""Folder names of the four defect-probability classes; sorted order is probability order, which
is the class-index order timm's ImageFolder reader assigns (sorted folder names)."""

SPLITS = ('train', 'val')
MARKER = 'elpv_split.json'
"""Written last into a complete tree: the split parameters and image counts it was made with."""


def elpv_available() -> bool:
    """Whether the optional `elpv-dataset` package (`pip install timm-dropres[bench]`) is installed."""
    return importlib.util.find_spec('elpv_dataset') is not None


def default_root(val_fraction: float = 0.25, seed: int = 0) -> Path:
    """The cache folder for one split: $XDG_CACHE_HOME (or ~/.cache)/timm_dropres/elpv/<split>."""
    cache = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(cache) / 'timm_dropres' / 'elpv' / f'val{val_fraction:g}_seed{seed}'


def probability_to_class(probs: np.ndarray) -> np.ndarray:
    """Class index 0..3 from elpv's defect probabilities 0, 1/3, 2/3, 1."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.rint(probs * 3)
    if probs.size and (np.abs(probs * 3 - labels).max() > 1e-6 or labels.min() < 0 or labels.max() > 3):
        raise ValueError(f'elpv defect probabilities must be 0, 1/3, 2/3 or 1, got {np.unique(probs)}')
    return labels.astype(np.int64)


def _check_fraction(val_fraction: float) -> None:
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
            or not math.isfinite(val_fraction) or not 0 < val_fraction < 1:
        raise ValueError(f'val_fraction must be a number in (0, 1), got {val_fraction!r}')


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with `round(n_c * val_fraction)` images of every class c in val.

    Deterministic for a given `seed`, disjoint, covering every index; both index arrays sorted.
    Every class keeps at least one image on each side, so per-class recall is defined on val.
    """
    _check_fraction(val_fraction)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        n_val = int(round(len(members) * val_fraction))
        if n_val < 1 or n_val >= len(members):
            raise ValueError(
                f'val_fraction={val_fraction} leaves class {c.item()!r} ({len(members)} images) with an empty '
                f'train or val side; choose a val_fraction that keeps both non-empty')
        val.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val)) if val else np.array([], dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx)
    return train_idx, val_idx


def elpv_image_folder(root: str | Path | None = None, val_fraction: float = 0.25, seed: int = 0) -> Path:
    """Write elpv as `root/{train,val}/{class}/cellNNNN.png` once; return `root`.

    Args:
        root: where the tree goes; default `default_root(val_fraction, seed)` in the user cache.
        val_fraction: share of every class held out for validation, in (0, 1).
        seed: fixes which images are held out (independent of any training seed).

    A complete tree written with the same parameters is reused as it is. A `root` that exists with
    other content is never overwritten: choose another root (or remove it yourself).
    """
    _check_fraction(val_fraction)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f'seed must be an int, got {seed!r}')
    if not elpv_available():
        raise ModuleNotFoundError(
            'the elpv data set needs the optional package elpv-dataset: pip install "timm-dropres[bench]"')
    from elpv_dataset.utils import load_dataset

    root = Path(root) if root is not None else default_root(val_fraction, seed)
    if root.exists():
        return _check_existing(root, _split_params(val_fraction, seed))
    images, probs, _ = load_dataset()
    return write_split_tree(root, images, probability_to_class(probs), val_fraction, seed)


def write_split_tree(root: str | Path, images: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int) -> Path:
    """Write `images` (N, H, W) uint8 with class indices `labels` as the split ImageFolder at `root`.

    Atomic: the tree is built in a temporary folder beside `root`, the marker written last, then
    renamed to `root`. If another process completed the same tree first, theirs is kept. An existing
    `root` is reused if it is a complete tree of the same split, and refused (FileExistsError) otherwise.
    """
    root = Path(root)
    wanted = _split_params(val_fraction, seed)
    if root.exists():
        return _check_existing(root, wanted)
    split_indices = dict(zip(SPLITS, stratified_split(labels, val_fraction, seed)))
    counts = {split: {CLASS_NAMES[c]: int((labels[idx] == c).sum()) for c in range(len(CLASS_NAMES))}
              for split, idx in split_indices.items()}

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f'.{root.name}.', dir=root.parent))
    try:
        _write_tree(tmp, images, labels, split_indices)
        (tmp / MARKER).write_text(json.dumps({**wanted, 'counts': counts}, indent=2))
        try:
            tmp.rename(root)  # atomic on one file system
        except OSError:
            if not root.exists():
                raise
            shutil.rmtree(tmp)
            return _check_existing(root, wanted)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _split_params(val_fraction: float, seed: int) -> dict:
    return {'dataset': 'elpv', 'val_fraction': val_fraction, 'seed': seed}


def _write_tree(tmp: Path, images: np.ndarray, labels: np.ndarray, split_indices: dict) -> None:
    from PIL import Image

    for split, indices in split_indices.items():
        for name in CLASS_NAMES:
            (tmp / split / name).mkdir(parents=True)
        for i in indices:
            # elpv's own files are images/cell0001.png ... in label-file order
            Image.fromarray(images[i]).save(
                tmp / split / CLASS_NAMES[labels[i]] / f'cell{i + 1:04d}.png', compress_level=1)


def _check_existing(root: Path, wanted: dict) -> Path:
    marker = root / MARKER
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise FileExistsError(
            f'root={str(root)!r} exists but is not a complete elpv tree (no readable {MARKER}); '
            f'pass another root or remove it') from None
    made_with = {k: found.get(k) for k in wanted}
    if made_with != wanted:
        raise FileExistsError(
            f'root={str(root)!r} holds an elpv split made with {made_with}, not {wanted}; pass another root')
    return root
