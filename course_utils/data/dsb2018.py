"""DSB2018: fluorescence nuclei from many labs, one binary mask file per nucleus.

The fluorescence images of the 2018 Data Science Bowl's stage 1 training set (BBBC038v1,
Caicedo et al. 2019; CC0) with the community's mask fixes: 438 dark-background images of
nuclei from many laboratories, cell types, stains and magnifications (256 x 256 to
1040 x 1388), about 16,500 nuclei. Upstream, each nucleus is its own binary PNG; this module
merges them into one instance label image (a pixel claimed by two masks keeps the first,
in file-name order, as the upstream tools do) and keeps the result in the cache, so the 16,500
small files are read once.

The split is the course's own (there is no published one): the image ids in sorted order,
permuted by ``numpy.random.default_rng(SEED)``; the first 15% are the test split, the next 15%
the validation split, the rest the training split (:func:`make_split`; the files
``data/dsb2018/split_<split>.txt`` hold the result, and a test checks that they still do).
Images of one experiment look alike, and a random split puts some of them on both sides: the
test split measures images like the training ones, not a new laboratory.

Introduced in notebook 08.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .registry import cache_dir, fetch, manifest

__all__ = ["SEED", "image_ids", "load_pairs", "make_split", "merge_masks", "mask_files"]

DATASET = "dsb2018"
SEED = 2018
#: Fractions of the images in the test and validation splits; the rest is the training split.
FRACTIONS = {"test": 0.15, "val": 0.15}
#: A progress bar when at least this many images must be read from their mask files.
PROGRESS_IMAGES = 10


def _parts(relpath: str) -> tuple[str, str, str] | None:
    """``(image id, "images" or "masks", file stem)`` of a manifest path, else None."""
    parts = relpath.split("/")
    if len(parts) != 4 or parts[0] != "stage1_train" or not parts[3].endswith(".png"):
        return None
    return parts[1], parts[2], parts[3][: -len(".png")]


_INDEX: dict[int, dict[str, list[str]]] = {}


def _index() -> dict[str, list[str]]:
    """Image id -> its mask files (sorted), built once per manifest read."""
    entries = manifest(DATASET)
    if id(entries) not in _INDEX:
        index: dict[str, list[str]] = {}
        for rel in entries:
            p = _parts(rel)
            if p is not None:
                masks = index.setdefault(p[0], [])
                if p[1] == "masks":
                    masks.append(rel)
        _INDEX.clear()
        _INDEX[id(entries)] = {k: sorted(v) for k, v in index.items()}
    return _INDEX[id(entries)]


def image_ids() -> list[str]:
    """The ids of the registered images (the folder names of ``stage1_train``), sorted."""
    return sorted(_index())


def make_split(ids: Iterable[str], seed: int = SEED) -> dict[str, list[str]]:
    """The course's seeded split of ``ids``: ``{"train": [...], "val": [...], "test": [...]}``,
    each sorted. Sorted ids permuted by ``default_rng(seed)``; test first, then validation."""
    ordered = sorted(set(ids))
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_test = round(FRACTIONS["test"] * len(ordered))
    n_val = round(FRACTIONS["val"] * len(ordered))
    parts = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }
    return {name: sorted(ordered[i] for i in idx) for name, idx in parts.items()}


def mask_files(image_id: str) -> list[str]:
    """Manifest paths of the nucleus masks of one image, in file-name order."""
    index = _index()
    if image_id not in index:
        raise ValueError(f"{image_id!r} is not a registered DSB2018 image id")
    return list(index[image_id])


def merge_masks(masks: Iterable[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """One int32 (H, W) label image from binary (H, W) masks, ids 1..N in order; a pixel in two
    masks keeps the first one's id. A mask of another shape, or an empty one, is an error."""
    labels = np.zeros(shape, np.int32)
    for index, mask in enumerate(masks, start=1):
        if mask.ndim == 3:  # a grey mask stored with colour channels
            mask = mask[..., 0]
        if mask.shape != tuple(shape):
            raise ValueError(f"mask {index} has shape {mask.shape}, the image {tuple(shape)}")
        inside = (mask > 0) & (labels == 0)
        if not inside.any():
            raise ValueError(f"mask {index} is empty (or wholly inside earlier masks)")
        labels[inside] = index
    return labels


def _key(files: list[str]) -> str:
    """A digest of the masks' registered checksums: a cached merge is used only while it is
    the merge of exactly these files."""
    entries = manifest(DATASET)
    joined = "\n".join(f"{rel}\t{entries[rel].sha256}" for rel in files)
    return hashlib.sha256(joined.encode()).hexdigest()


def _cached_labels(path: Path, key: str) -> np.ndarray | None:
    try:
        with np.load(path) as found:
            if str(found["key"]) == key:
                return found["labels"].astype(np.int32)
    except (OSError, KeyError, ValueError, EOFError):
        pass  # missing or unreadable: merged again, and replaced
    return None


def _store(path: Path, labels: np.ndarray, key: str) -> None:
    """Keep a merge in the cache (a new file renamed into place); a read-only cache is fine."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.{os.getpid()}.part.npz")
        np.savez_compressed(part, labels=labels.astype(np.uint16), key=np.array(key))
        os.replace(part, path)
    except OSError as err:
        warnings.warn(f"DSB2018: merged labels not cached ({err})", stacklevel=3)


def merged_labels(image_id: str, shape: tuple[int, int], download: bool | None) -> np.ndarray:
    """The instance labels of one image: from the cache, else merged from its mask files."""
    from .loaders import read_image  # loaders imports this module

    files = mask_files(image_id)
    key = _key(files)
    path = cache_dir() / DATASET / "merged" / f"{image_id}.npz"
    found = _cached_labels(path, key)
    if found is not None and found.shape == tuple(shape):
        return found
    masks = (read_image(fetch(DATASET, rel, download=download)) for rel in files)
    labels = merge_masks(masks, shape)
    _store(path, labels, key)
    return labels


def load_pairs(ids: list[str], download: bool | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Raw (image, labels) of the given ids: the image as stored (8-bit grey; RGBA files with
    equal channels give one), labels int32. Every file is verified against the registry; a
    progress bar runs while mask files are read, and an interrupted first read resumes: files
    already in the cache or the mirror are not fetched again."""
    from .loaders import as_grey, read_image

    pairs = []
    slow = len(ids) >= PROGRESS_IMAGES
    for image_id in tqdm(ids, desc="DSB2018", unit="image", disable=not slow, leave=False):
        path = fetch(DATASET, f"stage1_train/{image_id}/images/{image_id}.png", download=download)
        image = as_grey(read_image(path), str(path))
        pairs.append((image, merged_labels(image_id, image.shape, download)))
    return pairs
