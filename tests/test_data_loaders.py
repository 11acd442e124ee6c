"""Loaders: normalisation, mask reading, load_split (synthetic and BBBC039), PatchDataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.measure import label as sk_label

from course_utils.data import (
    DataUnavailableError,
    PatchDataset,
    fetch,
    load_split,
    loaders,
    normalize_percentile,
    read_bbbc039_mask,
    split_names,
)
from course_utils.data import augment as aug

SHARED = Path("/work/shared/data")
needs_mirror = pytest.mark.skipif(
    not (SHARED / "bbbc039").is_dir(), reason="no shared BBBC039 mirror"
)


# --- normalize_percentile -------------------------------------------------------------------


def test_normalize_percentile_matches_numpy():
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 100.0, size=(40, 50)).astype(np.uint16)
    lo, hi = np.percentile(image.astype(np.float64), [2, 98])
    out = normalize_percentile(image, 2, 98)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, (image - lo) / (hi - lo + 1e-6), rtol=1e-5, atol=1e-5)
    clipped = normalize_percentile(image, 2, 98, clip=True)
    assert clipped.min() == 0 and clipped.max() == 1


def test_normalize_percentile_per_channel_and_constant():
    image = np.stack([np.linspace(0, 1, 100), np.linspace(0, 1000, 100)]).reshape(2, 10, 10)
    out = normalize_percentile(image, 0, 100, axis=(1, 2))
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    assert np.isclose(out.max(), 1, atol=1e-4)
    flat = normalize_percentile(np.full((5, 5), 7.0))
    assert np.all(np.isfinite(flat)) and np.all(flat == 0)


def test_normalize_percentile_bad_input():
    with pytest.raises(ValueError, match="low"):
        normalize_percentile(np.ones((3, 3)), 50, 10)
    with pytest.raises(ValueError, match="empty"):
        normalize_percentile(np.ones((0, 3)))
    with pytest.raises(TypeError, match="dtype"):
        normalize_percentile(np.ones((3, 3), dtype=complex))


# --- read_bbbc039_mask ----------------------------------------------------------------------


def test_read_mask_components_of_equal_value(tmp_path):
    mask = np.zeros((12, 16, 4), np.uint8)
    mask[..., 3] = 255
    mask[1:5, 1:5, 0] = 10  # two touching nuclei: different values
    mask[1:5, 5:9, 0] = 20
    mask[8:11, 1:4, 0] = 10  # same value as the first but separate: another nucleus
    mask[6, 12, 0] = 30  # diagonal neighbours of equal value are not 4-connected
    mask[7, 13, 0] = 30
    path = tmp_path / "m.png"
    Image.fromarray(mask).save(path)
    labels = read_bbbc039_mask(path)
    assert labels.dtype == np.int32 and labels.shape == (12, 16)
    assert labels.max() == 5
    np.testing.assert_array_equal(labels, sk_label(mask[..., 0], background=0, connectivity=1))
    Image.fromarray(np.zeros((6, 6, 4), np.uint8)).save(tmp_path / "empty.png")
    empty = read_bbbc039_mask(tmp_path / "empty.png")
    assert empty.dtype == np.int32 and empty.max() == 0


# --- load_split: synthetic ------------------------------------------------------------------


def test_synthetic_splits():
    sizes = {s: len(load_split("synthetic", s)[0]) for s in ("train", "val", "test")}
    assert sizes == {"train": 24, "val": 8, "test": 8}
    images, labels = load_split("synthetic", "val", n=3)
    assert len(images) == len(labels) == 3
    for image, lab in zip(images, labels):
        assert image.dtype == np.float32 and image.shape == (256, 256)
        assert lab.dtype == np.int32 and lab.shape == (256, 256) and lab.max() > 0
    # Deterministic, n takes a prefix, splits and seeds differ.
    full, _ = load_split("synthetic", "val")
    np.testing.assert_array_equal(images[2], full[2])
    test, _ = load_split("synthetic", "test", n=1)
    other_seed, _ = load_split("synthetic", "val", n=1, seed=1)
    assert not np.allclose(images[0], test[0]) and not np.allclose(images[0], other_seed[0])


def test_synthetic_normalisation_and_fresh_arrays():
    raw, labels = load_split("synthetic", "train", n=2, normalize=False)
    norm, _ = load_split("synthetic", "train", n=2)
    np.testing.assert_allclose(norm[1], normalize_percentile(raw[1]), atol=1e-6)
    raw[0][:] = -5
    labels[0][:] = 0
    again_raw, again_labels = load_split("synthetic", "train", n=1, normalize=False)
    assert again_raw[0].min() > -1 and again_labels[0].max() > 0


def test_synthetic_cells_split():
    images, labels = load_split("synthetic_cells", "train", n=2)
    assert images[0].shape == (2, 256, 256) and labels[0].shape == (256, 256)
    raw, _ = load_split("synthetic_cells", "train", n=1, normalize=False)
    np.testing.assert_allclose(
        images[0], normalize_percentile(raw[0], axis=(1, 2)), atol=1e-6
    )  # each channel on its own


def test_load_split_bad_arguments():
    with pytest.raises(ValueError, match="synthetic_cells"):
        load_split("bbbc038", "train")
    with pytest.raises(ValueError, match="'val'"):
        load_split("synthetic", "validation")
    with pytest.raises(ValueError, match="n must"):
        load_split("synthetic", "train", n=-1)


# --- load_split: BBBC039 --------------------------------------------------------------------


@pytest.fixture
def mirror_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(SHARED))
    monkeypatch.setenv("COURSE_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_OFFLINE", "1")


@needs_mirror
def test_bbbc039_through_the_mirror(mirror_env, monkeypatch):
    raw, labels = load_split("bbbc039", "test", n=3, normalize=False)
    names = split_names("bbbc039", "test")[:3]
    for image, lab, name in zip(raw, labels, names):
        assert image.shape == lab.shape == (520, 696)
        assert image.dtype == np.float32 and lab.dtype == np.int32
        assert 10 < lab.max() == len(np.unique(lab)) - 1  # consecutive ids, many nuclei
        mask = np.asarray(Image.open(fetch("bbbc039", f"masks/{name}.png")))
        np.testing.assert_array_equal(lab, sk_label(mask[..., 0], background=0, connectivity=1))
    images, _ = load_split("bbbc039", "test", n=3)
    np.testing.assert_allclose(images[0], normalize_percentile(raw[0]), atol=1e-6)
    with pytest.raises(ValueError, match="only 48"):
        load_split("bbbc039", "test", n=49)

    # Memoised: a repeat call reads nothing from disk.
    def no_fetch(*args, **kwargs):
        raise AssertionError("fetched again")

    monkeypatch.setattr(loaders, "fetch", no_fetch)
    again, _ = load_split("bbbc039", "test", n=3)
    np.testing.assert_array_equal(again[2], images[2])


@needs_mirror
def test_bbbc039_empty_mask(mirror_env, monkeypatch):
    # The one empty mask of the published splits (two more are in no split).
    empty = [n for n in split_names("bbbc039", "train") if n.startswith("IXMtest_L10_s6_")]
    assert len(empty) == 1
    monkeypatch.setattr(loaders, "split_names", lambda dataset, split: empty)
    images, labels = load_split("bbbc039", "train")
    assert labels[0].dtype == np.int32 and labels[0].shape == (520, 696)
    assert labels[0].max() == 0
    assert np.all(np.isfinite(images[0]))


def test_bbbc039_offline_without_mirror(tmp_path, monkeypatch):
    monkeypatch.delenv("COURSE_DATA_MIRROR", raising=False)
    monkeypatch.setenv("COURSE_DATA_CACHE", str(tmp_path))
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    monkeypatch.setattr(loaders, "_PAIRS", {})
    with pytest.raises(DataUnavailableError, match='load_split\\("synthetic"'):
        load_split("bbbc039", "val", n=1)


# --- PatchDataset ---------------------------------------------------------------------------


def _position_images(n=3, shape=(40, 50), channels=None):
    """Images whose pixel values encode (image, row, column), and block labels."""
    images, labels = [], []
    for k in range(n):
        rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
        image = (k * 10000 + rows * 100 + cols).astype(np.float32)
        if channels:
            image = np.stack([image + c * 1e6 for c in range(channels)])
        images.append(image)
        labels.append((rows // 10 * 10 + cols // 10 + 1).astype(np.int32))
    return images, labels


def test_patch_shapes_and_crop_alignment():
    images, labels = _position_images()
    ds = PatchDataset(images, labels, (16, 24), length=12, seed=3)
    assert len(ds) == 12
    for i in range(12):
        x, y = ds[i]
        assert x.dtype == torch.float32 and x.shape == (1, 16, 24)
        assert y.dtype == torch.int64 and y.shape == (16, 24)
        k, top, left = (
            int(x[0, 0, 0]) // 10000,
            int(x[0, 0, 0]) % 10000 // 100,
            int(x[0, 0, 0]) % 100,
        )
        assert k == i % 3
        np.testing.assert_array_equal(x[0].numpy(), images[k][top : top + 16, left : left + 24])
        np.testing.assert_array_equal(y.numpy(), labels[k][top : top + 16, left : left + 24])
    multi, mlab = _position_images(channels=2)
    x, _ = PatchDataset(multi, mlab, 8)[0]
    assert x.shape == (2, 8, 8)


def test_patch_determinism_and_epochs():
    images, labels = load_split("synthetic", "train", n=2)
    a = PatchDataset(images, labels, 32, length=6, seed=1)
    b = PatchDataset(images, labels, 32, length=6, seed=1)
    later = [b[i][0] for i in (5, 2, 0)]  # order of access does not matter
    for i, x in zip((5, 2, 0), later):
        assert torch.equal(a[i][0], x)
    before = a[4][0]
    a.set_epoch(1)
    assert not torch.equal(a[4][0], before)
    a.set_epoch(0)
    assert torch.equal(a[4][0], before)
    assert not torch.equal(PatchDataset(images, labels, 32, length=6, seed=2)[4][0], before)


def test_augment_applies_to_both_and_target_after_augment():
    images, labels = _position_images()
    plain = PatchDataset(images, labels, 16, length=4)
    seen = []

    def flip(image, lab, rng):
        assert isinstance(rng, np.random.Generator)
        return image[..., ::-1], lab[..., ::-1]

    def target(lab):
        seen.append(lab.copy())
        return (lab > 0).astype(np.float32), lab * 2

    ds = PatchDataset(images, labels, 16, length=4, augment=flip, target_fn=target)
    for i in range(4):
        x0, y0 = plain[i]
        x, fg, twice = ds[i]
        assert torch.equal(x, x0.flip(-1))
        np.testing.assert_array_equal(seen[-1], y0.flip(-1).numpy())
        assert fg.dtype == torch.float32 and torch.equal(twice, y0.flip(-1).int() * 2)


def test_random_augment_is_reproducible_and_stored_data_untouched():
    images, labels = load_split("synthetic", "train", n=1)
    stored = images[0].copy()

    def noisy_in_place(image, lab, rng):
        image += rng.normal(0, 1, image.shape).astype(np.float32)
        return image, lab

    ds = PatchDataset(images, labels, 32, length=3, augment=noisy_in_place)
    assert torch.equal(ds[1][0], ds[1][0])
    np.testing.assert_array_equal(images[0], stored)
    np.testing.assert_array_equal(ds.images[0][0], stored)


def test_small_images_are_mirror_padded_with_new_ids():
    image = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    lab = np.zeros((20, 30), np.int32)
    lab[:6, :6] = 1  # touches the top-left corner: mirrored copies appear in the margins
    lab[10:15, 20:30] = 2
    ds = PatchDataset([image], [lab], (32, 40))
    x, y = ds[0]  # the padded image is exactly the patch size: one possible crop
    np.testing.assert_array_equal(x[0].numpy(), np.pad(image, ((6, 6), (5, 5)), mode="reflect"))
    np.testing.assert_array_equal(y[6:26, 5:35].numpy(), lab)
    margin_ids = set(np.unique(y.numpy())) - {0, 1, 2}
    assert margin_ids and margin_ids.isdisjoint({1, 2})
    assert torch.equal(y > 0, torch.from_numpy(np.pad(lab, ((6, 6), (5, 5)), "reflect") > 0))


def test_patch_dataset_validation():
    images, labels = _position_images(n=2)
    with pytest.raises(ValueError, match="2 images but 1"):
        PatchDataset(images, labels[:1], 8)
    with pytest.raises(ValueError, match="shape"):
        PatchDataset(images, [labels[0], labels[1][:, :-1]], 8)
    with pytest.raises(TypeError, match="integer"):
        PatchDataset(images, [lab.astype(float) for lab in labels], 8)
    with pytest.raises(ValueError, match="negative"):
        PatchDataset(images, [-labels[0], labels[1]], 8)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        PatchDataset([images[0][None, None]], [labels[0]], 8)
    multi, _ = _position_images(n=1, channels=2)
    with pytest.raises(ValueError, match="channels"):
        PatchDataset([images[0], multi[0]], labels, 8)
    with pytest.raises(ValueError, match="patch_size"):
        PatchDataset(images, labels, (8, 0))
    with pytest.raises(ValueError, match="length"):
        PatchDataset(images, labels, 8, length=0)
    with pytest.raises(ValueError, match="empty"):
        PatchDataset([], [], 8)
    with pytest.raises(IndexError):
        PatchDataset(images, labels, 8, length=2)[2]
    bad = PatchDataset(images, labels, 8, augment=lambda x, y, rng: (x, y[:-1]))
    with pytest.raises(ValueError, match="augment returned"):
        bad[0]


# --- PatchDataset with sparse labels (-1 = unknown) and crops that hold objects ---------------


def _sparse_blocks(shape=(40, 50)):
    """Block labels with one block kept, background beside it, and the rest unknown (-1)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    labels = np.full(shape, -1, np.int32)
    labels[12:20, 22:30] = 7
    labels[10:22, 30:34] = 0
    return (rows * 100 + cols).astype(np.float32), labels


def test_patch_dataset_keeps_unknown_through_crops_padding_and_augment():
    image, labels = _sparse_blocks()
    ds = PatchDataset([image], [labels], (16, 24), length=20, unknown=True, seed=0)
    for i in range(20):
        x, y = ds[i]
        top, left = divmod(int(x[0, 0, 0].item()), 100)
        np.testing.assert_array_equal(y.numpy(), labels[top : top + 16, left : left + 24])
    small = PatchDataset([image[8:24, 18:34]], [labels[8:24, 18:34]], (24, 28), unknown=True)
    _, y = small[0]
    expected = np.pad(labels[8:24, 18:34], ((4, 4), (6, 6)), mode="reflect")
    np.testing.assert_array_equal(y.numpy() == -1, expected == -1)  # mirrored as unknown
    np.testing.assert_array_equal(y.numpy() == 0, expected == 0)
    assert set(np.unique(y.numpy()[expected == 7]).tolist()) >= {7} and y.min() == -1
    rotate = aug.random_rotation((45, 45), mode="constant")
    _, y = PatchDataset([image], [labels], 24, unknown=True, augment=rotate)[0]
    assert y[0, 0] == -1 and y[-1, -1] == -1  # from outside the crop: unknown, not background


def test_patch_dataset_with_unknown_on_dense_labels_changes_nothing():
    images, labels = _position_images(n=2)
    pipeline = aug.compose(aug.flip_rot90, aug.random_rotation(30))
    plain = PatchDataset(images, labels, 16, length=6, augment=pipeline, seed=4)
    sparse = PatchDataset(images, labels, 16, length=6, augment=pipeline, seed=4, unknown=True)
    for i in range(6):
        for a, b in zip(plain[i], sparse[i]):
            assert torch.equal(a, b)


def test_patch_dataset_unknown_is_explicit():
    image, labels = _sparse_blocks()
    with pytest.raises(ValueError, match="negative"):
        PatchDataset([image], [labels], 8)
    with pytest.raises(ValueError, match="below -1"):
        PatchDataset([image], [labels - 1], 8, unknown=True)
    with pytest.raises(TypeError, match="unknown"):
        PatchDataset([image], [labels], 8, unknown="yes")
    huge = np.where(labels > 0, np.int64(2**40), labels.astype(np.int64))
    _, y = PatchDataset([image], [huge], (40, 50), unknown=True)[0]
    np.testing.assert_array_equal(y.numpy(), np.where(labels > 0, 1, labels))


def test_object_crops_always_hold_an_object_and_are_reproducible():
    image, labels = _sparse_blocks((60, 80))
    ds = PatchDataset([image], [labels], 16, length=1000, unknown=True, crop="objects", seed=2)
    corners = set()
    for i in range(1000):
        x, y = ds[i]
        assert (y > 0).any()
        corners.add(int(x[0, 0, 0].item()))
    again = PatchDataset([image], [labels], 16, length=1000, unknown=True, crop="objects", seed=2)
    assert all(torch.equal(a, b) for a, b in zip(ds[5], again[5]))
    # A slow reference: the corners whose 16 x 16 crop holds a pixel of the block; 1000 draws
    # from its 460 corners miss about 11% of them.
    valid = {
        r * 100 + c
        for r in range(60 - 15)
        for c in range(80 - 15)
        if (labels[r : r + 16, c : c + 16] > 0).any()
    }
    assert corners <= valid and len(corners) > 0.8 * len(valid)
    empty = PatchDataset([image], [np.zeros_like(labels)], 16, length=3, crop="objects")
    assert empty[0][0].shape == (1, 16, 16)  # no object: uniform crops
    with pytest.raises(ValueError, match="crop"):
        PatchDataset([image], [labels], 8, unknown=True, crop="centre")
