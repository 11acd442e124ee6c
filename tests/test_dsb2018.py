"""DSB2018: the gzip manifest, the seeded split, merging one mask file per nucleus, the cache of
merged labels, and weighted patch sampling over datasets of different sizes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from course_utils.data import (
    PatchDataset,
    dsb2018,
    list_datasets,
    list_files,
    load_split,
    loaders,
    read_image,
    registry,
    split_names,
)

SHARED = Path("/work/shared/data/dsb2018")
needs_mirror = pytest.mark.skipif(not SHARED.is_dir(), reason="no shared DSB2018 mirror")


def test_registered_from_a_gzip_manifest():
    assert "dsb2018" in list_datasets()
    assert (registry.registry_dir() / "dsb2018" / "MANIFEST.tsv.gz").is_file()
    files = list_files("dsb2018")
    assert len(files) == 16_937 and len(dsb2018.image_ids()) == 438
    entry = registry._entry("dsb2018", files[0])
    assert entry.url.startswith("https://raw.githubusercontent.com/") and len(entry.sha256) == 64
    assert sum(len(dsb2018.mask_files(i)) for i in dsb2018.image_ids()) == 16_937 - 438
    with pytest.raises(ValueError, match="not a registered DSB2018 image id"):
        dsb2018.mask_files("nope")


@needs_mirror
def test_registry_matches_the_mirror_manifest():
    mirror = (SHARED / "MANIFEST.tsv").read_text().splitlines()[1:]  # its first line: a header
    ours = gzip.decompress((registry.registry_dir() / "dsb2018" / "MANIFEST.tsv.gz").read_bytes())
    ours_lines = [s for s in ours.decode().splitlines() if not s.startswith("#")]
    assert ours_lines == mirror


def test_split_files_are_the_documented_seeded_split():
    split = dsb2018.make_split(dsb2018.image_ids())
    assert {k: len(v) for k, v in split.items()} == {"train": 306, "val": 66, "test": 66}
    for name, ids in split.items():
        assert split_names("dsb2018", name) == ids
    everything = [i for ids in split.values() for i in ids]
    assert sorted(everything) == dsb2018.image_ids()  # disjoint, and nothing left out
    other = dsb2018.make_split(dsb2018.image_ids(), seed=1)
    assert other["test"] != split["test"]  # the seed decides


def test_merge_masks_keeps_the_first_claim():
    a = np.zeros((4, 5), np.uint8)
    a[:2, :3] = 255
    b = np.zeros((4, 5), np.uint8)
    b[1:3, 2:4] = 255
    labels = dsb2018.merge_masks([a, np.stack([b] * 4, axis=-1)], (4, 5))
    assert labels.dtype == np.int32
    assert labels[1, 2] == 1 and labels[2, 3] == 2 and labels[3, 0] == 0
    with pytest.raises(ValueError, match="mask 2 is empty"):
        dsb2018.merge_masks([a, np.zeros_like(a)], (4, 5))
    with pytest.raises(ValueError, match="mask 1 has shape"):
        dsb2018.merge_masks([a], (5, 5))


@pytest.fixture
def dsb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(SHARED.parent))
    monkeypatch.setenv("COURSE_DATA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    monkeypatch.setattr(loaders, "_PAIRS", {})
    return tmp_path / "cache" / "dsb2018" / "merged"


@needs_mirror
def test_load_split_merges_and_caches(dsb_env, monkeypatch):
    images, labels = load_split("dsb2018", "test", n=2, normalize=False)
    first = split_names("dsb2018", "test")[0]
    masks = [read_image(SHARED / rel) for rel in dsb2018.mask_files(first)]
    np.testing.assert_array_equal(labels[0], dsb2018.merge_masks(masks, images[0].shape))
    assert labels[0].max() == len(masks) == len(np.unique(labels[0])) - 1
    assert images[0].ndim == 2 and 0 <= images[0].min() and images[0].max() <= 255
    assert sorted(p.stem for p in dsb_env.glob("*.npz")) == split_names("dsb2018", "test")[:2]

    # A second read uses the merged labels: no mask file is opened.
    monkeypatch.setattr(loaders, "_PAIRS", {})
    real_fetch = dsb2018.fetch

    def images_only(dataset, rel, **kw):
        assert "/masks/" not in rel, "a mask file was read again"
        return real_fetch(dataset, rel, **kw)

    monkeypatch.setattr(dsb2018, "fetch", images_only)
    _, again = load_split("dsb2018", "test", n=2, normalize=False)
    np.testing.assert_array_equal(again[1], labels[1])

    # A damaged cache file is merged again (and replaced), never trusted.
    monkeypatch.setattr(dsb2018, "fetch", real_fetch)
    monkeypatch.setattr(loaders, "_PAIRS", {})
    (dsb_env / f"{first}.npz").write_bytes(b"not a zip")
    _, repaired = load_split("dsb2018", "test", n=1, normalize=False)
    np.testing.assert_array_equal(repaired[0], labels[0])
    with np.load(dsb_env / f"{first}.npz") as found:
        assert found["labels"].shape == labels[0].shape


def test_weighted_patches_follow_the_weights():
    images = [np.full((32, 32), k, np.float32) for k in range(3)]
    labels = [np.ones((32, 32), np.int32)] * 3
    ds = PatchDataset(images, labels, 16, length=300, weights=[0, 1, 3])
    drawn = np.array([int(ds[i][0][0, 0, 0]) for i in range(300)])
    assert set(drawn) == {1, 2} and 0.65 < np.mean(drawn == 2) < 0.85
    again = PatchDataset(images, labels, 16, length=300, weights=[0, 1, 3])
    assert all(int(again[i][0][0, 0, 0]) == drawn[i] for i in range(20))
    for bad, match in (([1, 2], "one number per image"), ([1, -1, 1], "non-negative")):
        with pytest.raises(ValueError, match=match):
            PatchDataset(images, labels, 16, weights=bad)
    with pytest.raises(ValueError, match="not all zero"):
        PatchDataset(images, labels, 16, weights=[0, 0, 0])
