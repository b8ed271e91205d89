"""The elpv split: stratified, deterministic, disjoint, and written atomically as an ImageFolder."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from timm_dropres.datasets import (
    CLASS_NAMES, MARKER, elpv_available, elpv_image_folder, probability_to_class, stratified_split,
    write_split_tree,
)

# class sizes of elpv itself (1508, 295, 106, 715), scaled down to keep the tests fast
SYNTHETIC_COUNTS = (151, 30, 11, 72)


@pytest.fixture
def labels() -> np.ndarray:
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(SYNTHETIC_COUNTS)])
    return np.random.default_rng(123).permutation(labels)


@pytest.fixture
def images(labels) -> np.ndarray:
    # each image's pixels hold its index (mod 256), so a written file can be traced to its source
    return np.broadcast_to((np.arange(len(labels)) % 256).astype(np.uint8)[:, None, None], (len(labels), 8, 8)).copy()


@pytest.mark.parametrize('val_fraction', [0.25, 0.1, 0.5])
def test_split_is_stratified_disjoint_and_complete(labels, val_fraction):
    train, val = stratified_split(labels, val_fraction, seed=0)
    assert np.intersect1d(train, val).size == 0
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    for c, n in enumerate(SYNTHETIC_COUNTS):
        assert (labels[val] == c).sum() == round(n * val_fraction)
        assert (labels[train] == c).sum() == n - round(n * val_fraction)


def test_split_is_deterministic_per_seed(labels):
    first = stratified_split(labels, 0.25, seed=7)
    again = stratified_split(labels, 0.25, seed=7)
    other = stratified_split(labels, 0.25, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[1], other[1])


@pytest.mark.parametrize('bad', [0, 1, -0.1, 1.5, float('nan'), '0.25', True])
def test_split_rejects_bad_fraction(labels, bad):
    with pytest.raises(ValueError, match='val_fraction must be a number in \\(0, 1\\)'):
        stratified_split(labels, bad, seed=0)


def test_split_rejects_fraction_that_empties_a_class():
    labels = np.array([0] * 20 + [1] * 2)
    with pytest.raises(ValueError, match="class 1 \\(2 images\\)"):
        stratified_split(labels, 0.1, seed=0)


def test_probability_to_class():
    assert probability_to_class(np.array([0.0, 1 / 3, 2 / 3, 1.0, 0.3333333333])).tolist() == [0, 1, 2, 3, 1]
    with pytest.raises(ValueError, match='must be 0, 1/3, 2/3 or 1'):
        probability_to_class(np.array([0.5]))


def _files(root: Path) -> dict:
    return {split: {c: sorted(p.name for p in (root / split / c).iterdir()) for c in CLASS_NAMES}
            for split in ('train', 'val')}


def test_written_tree_matches_split_and_is_reused(tmp_path, images, labels):
    from PIL import Image

    root = write_split_tree(tmp_path / 'elpv', images, labels, 0.25, seed=0)
    train, val = stratified_split(labels, 0.25, seed=0)
    files = _files(root)
    for split, idx in (('train', train), ('val', val)):
        for c, name in enumerate(CLASS_NAMES):
            assert files[split][name] == sorted(f'cell{i + 1:04d}.png' for i in idx if labels[i] == c)
    one = val[0]
    path = root / 'val' / CLASS_NAMES[labels[one]] / f'cell{one + 1:04d}.png'
    assert np.array_equal(np.asarray(Image.open(path)), images[one])
    marker = json.loads((root / MARKER).read_text())
    assert marker['counts']['val'] == {n: round(k * 0.25) for n, k in zip(CLASS_NAMES, SYNTHETIC_COUNTS)}
    # no temporary folder left beside it
    assert [p.name for p in tmp_path.iterdir()] == ['elpv']

    # a complete tree with the same parameters is reused untouched; other parameters are refused
    mtime = path.stat().st_mtime_ns
    assert write_split_tree(root, images[::-1], labels, 0.25, seed=0) == root
    assert path.stat().st_mtime_ns == mtime
    assert np.array_equal(np.asarray(Image.open(path)), images[one])
    with pytest.raises(FileExistsError, match="made with .*'seed': 0.*not .*'seed': 1"):
        write_split_tree(root, images, labels, 0.25, seed=1)


def test_interrupted_write_leaves_nothing(tmp_path, images, labels):
    broken = images.astype(object)
    broken[len(broken) // 2] = None  # PIL cannot save this one: the write fails half-way
    with pytest.raises(Exception):
        write_split_tree(tmp_path / 'elpv', broken, labels, 0.25, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_existing_folder_without_marker_is_not_overwritten(tmp_path, images, labels):
    (tmp_path / 'mine').mkdir()
    (tmp_path / 'mine' / 'keep.txt').write_text('user data')
    with pytest.raises(FileExistsError, match='not a complete elpv tree'):
        write_split_tree(tmp_path / 'mine', images, labels, 0.25, seed=0)
    assert (tmp_path / 'mine' / 'keep.txt').read_text() == 'user data'


@pytest.mark.skipif(not elpv_available(), reason='elpv-dataset not installed (pip install "timm-dropres[bench]")')
def test_real_elpv_labels_split():
    """The real label file: 2,624 cells in the four classes; the default split keeps each class's share."""
    from elpv_dataset.utils import load_dataset

    _, probs, _ = load_dataset()
    labels = probability_to_class(probs)
    assert np.bincount(labels).tolist() == [1508, 295, 106, 715]
    train, val = stratified_split(labels, 0.25, seed=0)
    assert np.bincount(labels[val]).tolist() == [377, 74, 26, 179]
    assert len(train) + len(val) == 2624


@pytest.mark.parametrize('kwargs, match', [
    ({'val_fraction': 1.0}, 'val_fraction must be'), ({'seed': 0.5}, 'seed must be an int')])
def test_image_folder_rejects_bad_arguments_before_writing(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        elpv_image_folder(tmp_path / 'elpv', **kwargs)
    assert list(tmp_path.iterdir()) == []
