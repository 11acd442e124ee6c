"""Synthetic nuclei and cells: determinism, label invariants, realism knobs."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from course_utils.data import synthetic_cells, synthetic_nuclei


def _assert_valid_labels(labels: np.ndarray) -> None:
    """int32, ids 1..N consecutive, every label one 4-connected component."""
    assert labels.dtype == np.int32
    ids = np.unique(labels)
    ids = ids[ids > 0]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        _, n = ndimage.label(labels[sl] == i)  # default structure: 4-connectivity
        assert n == 1, f"label {i} has {n} pieces"


def _touching_ids(labels: np.ndarray) -> set[int]:
    touching: set[int] = set()
    for a, b in ((labels[1:], labels[:-1]), (labels[:, 1:], labels[:, :-1])):
        edge = (a != b) & (a > 0) & (b > 0)
        touching |= set(a[edge].tolist()) | set(b[edge].tolist())
    return touching


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nuclei_deterministic_and_valid(seed):
    t0 = time.perf_counter()
    image, labels = synthetic_nuclei((256, 256), seed=seed)
    elapsed = time.perf_counter() - t0
    print(f"synthetic_nuclei 256x256 seed {seed}: {elapsed:.3f} s")  # reported, not asserted
    again = synthetic_nuclei((256, 256), seed=seed)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(labels, again[1])
    assert image.dtype == np.float32 and image.shape == labels.shape == (256, 256)
    _assert_valid_labels(labels)
    lo, hi = np.percentile(image, [0.1, 99.9])
    assert -0.1 < lo and hi < 1.3  # roughly in [0, 1]


def test_seeds_differ():
    a, la = synthetic_nuclei(seed=0)
    b, lb = synthetic_nuclei(seed=1)
    assert not np.array_equal(la, lb) and not np.allclose(a, b)


def test_default_count_scales_with_area_and_many_touch():
    _, small = synthetic_nuclei((256, 256), seed=0)
    _, big = synthetic_nuclei((512, 512), seed=0)
    assert 32 <= small.max() <= 38  # 150 * (256 / 512) ** 2 = 37.5
    assert 135 <= big.max() <= 150  # benchmarks rely on ~150 at 512 x 512
    _assert_valid_labels(big)
    assert len(_touching_ids(big)) >= 0.4 * big.max()


def test_size_and_brightness_vary_and_signal_follows_labels():
    clean = dict(blur=0, peak=None, read_noise=0.0, background_variation=0.0)
    image, labels = synthetic_nuclei((256, 256), seed=5, **clean)
    background = image[labels == 0]
    np.testing.assert_allclose(background, 0.08, atol=1e-6)  # flat, noise-free background
    ids = np.arange(1, labels.max() + 1)
    area = ndimage.sum_labels(np.ones_like(labels), labels, ids)
    mean = ndimage.mean(image, labels, ids)
    assert np.all(mean > 0.08 + 0.1)  # every labelled nucleus is visibly bright
    assert area.std() / area.mean() > 0.15
    assert mean.std() / mean.mean() > 0.1


def test_poisson_gaussian_noise_variance():
    # Background only (no nuclei), flat: variance = level / peak + read_noise ** 2.
    opts = dict(blur=0, background_variation=0.0, background=0.2, peak=100.0, read_noise=0.02)
    image, labels = synthetic_nuclei((256, 256), n_nuclei=0, seed=3, **opts)
    assert labels.max() == 0
    expected = 0.2 / 100 + 0.02**2
    assert image.var() == pytest.approx(expected, rel=0.1)
    assert image.mean() == pytest.approx(0.2, abs=0.005)


def test_uneven_background():
    opts = dict(blur=0, peak=None, read_noise=0.0)
    image, _ = synthetic_nuclei((256, 256), n_nuclei=0, seed=4, **opts)
    assert image.max() - image.min() > 0.02  # illumination varies across the field


def test_n_nuclei_and_options_respected():
    _, labels = synthetic_nuclei((256, 256), n_nuclei=5, seed=0)
    assert 1 <= labels.max() <= 5
    _, big = synthetic_nuclei((256, 256), n_nuclei=10, seed=0, radius=(14.0, 16.0))
    _, small = synthetic_nuclei((256, 256), n_nuclei=10, seed=0, radius=(4.0, 5.0))
    assert (big > 0).sum() > 4 * (small > 0).sum()


def test_nuclei_bad_input():
    with pytest.raises(TypeError, match="valid options"):
        synthetic_nuclei(radiuss=(3, 4))
    with pytest.raises(ValueError, match="shape"):
        synthetic_nuclei((256,))
    with pytest.raises(ValueError, match="n_nuclei"):
        synthetic_nuclei(n_nuclei=-1)


@pytest.mark.parametrize("seed", [0, 1])
def test_cells_deterministic_and_valid(seed):
    t0 = time.perf_counter()
    image, labels = synthetic_cells((256, 256), seed=seed)
    print(f"synthetic_cells 256x256 seed {seed}: {time.perf_counter() - t0:.3f} s")
    again = synthetic_cells((256, 256), seed=seed)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(labels, again[1])
    assert image.dtype == np.float32 and image.shape == (2, 256, 256)
    assert labels.shape == (256, 256)
    _assert_valid_labels(labels)
    assert 20 <= labels.max() <= 30
    assert len(_touching_ids(labels)) >= 0.4 * labels.max()


def test_cells_channels_follow_labels():
    image, labels = synthetic_cells((256, 256), seed=2)
    cyto, nuc = image
    inside = labels > 0
    assert cyto[inside].mean() > cyto[~inside].mean() + 0.1
    # Each cell holds a nucleus: its brightest nuclear-channel pixels stand out.
    ids = np.arange(1, labels.max() + 1)
    nuc_peak = ndimage.maximum(ndimage.gaussian_filter(nuc, 1), labels, ids)
    background = np.median(nuc[~inside])
    assert np.mean(nuc_peak > background + 0.15) >= 0.9
    # Nuclei are smaller than cells: less nuclear signal than cell area.
    assert (nuc > background + 0.15).sum() < 0.6 * inside.sum()


# --- synthetic_cells for notebook 10: packed clusters, an even cytoplasm, the nuclei ---------


def test_cells_defaults_are_unchanged_by_the_new_options():
    image, labels = synthetic_cells((96, 112), seed=4)
    again = synthetic_cells((96, 112), seed=4, touching=0.75, cell_contrast=1.0)
    np.testing.assert_array_equal(image, again[0])
    np.testing.assert_array_equal(labels, again[1])


def test_cells_nuclei_lie_inside_their_own_cell():
    image, labels, nuclei = synthetic_cells((256, 256), seed=3, return_nuclei=True)
    assert nuclei.dtype == np.int32 and nuclei.shape == labels.shape
    inside = nuclei > 0
    np.testing.assert_array_equal(nuclei[inside], labels[inside])  # the id of its cell
    assert len(np.unique(nuclei[inside])) >= 0.9 * labels.max()  # nearly every cell has one
    # The nuclear channel is bright on the nuclei.
    assert image[1][inside].mean() > image[1][~inside].mean() + 0.2


def test_cells_contrast_zero_leaves_only_the_nucleus_to_tell_cells_apart():
    kwargs = {"n_cells": 40, "touching": 0.95, "seed": 1, "return_nuclei": True}
    even, labels, nuclei = synthetic_cells((256, 256), cell_contrast=0.0, **kwargs)
    default, labels_1, _ = synthetic_cells((256, 256), **kwargs)
    np.testing.assert_array_equal(labels, labels_1)  # the same cells, another stain
    ids = np.arange(1, labels.max() + 1)
    # Cytoplasm away from borders and nuclei (blur mixes in the neighbours there).
    inner = np.zeros(labels.shape, bool)
    for i in ids:
        inner |= ndimage.binary_erosion(labels == i, iterations=3)
    inner &= nuclei == 0

    def neighbour_difference(image):
        means = np.asarray(ndimage.mean(image[0], np.where(inner, labels, 0), ids))
        pairs = set()
        for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
            edge = (a != b) & (a > 0) & (b > 0)
            pairs |= set(zip(a[edge].tolist(), b[edge].tolist()))
        diffs = [abs(means[i - 1] - means[j - 1]) for i, j in pairs]
        return np.nanmedian(diffs)

    # Touching cells differ in brightness by default, hardly with contrast 0 ...
    assert neighbour_difference(even) < 0.5 * neighbour_difference(default)
    # ... and the nucleus no longer shows as a darker hole in the cytoplasm channel.
    cytoplasm = (labels > 0) & (nuclei == 0)

    def hole(image):
        return image[0][cytoplasm].mean() - image[0][nuclei > 0].mean()

    assert abs(hole(even)) < 0.04 and hole(default) > 0.05


def test_cells_touching_packs_more_cells_into_clusters():
    def touching_fraction(t):
        _, labels = synthetic_cells((256, 256), n_cells=40, seed=5, touching=t)
        return len(_touching_ids(labels)) / labels.max()

    assert touching_fraction(0.95) > touching_fraction(0.0) + 0.3


def test_cells_new_options_refuse_bad_values():
    with pytest.raises(ValueError, match="touching must be <= 1"):
        synthetic_cells(touching=1.5)
    with pytest.raises(ValueError, match="cell_contrast must be >= 0"):
        synthetic_cells(cell_contrast=-0.1)
    with pytest.raises(TypeError, match="cell_contrast must be a real number"):
        synthetic_cells(cell_contrast="none")
