"""Data for the course: synthetic generators, the dataset registry, loaders and patches.

- ``synthetic_nuclei``, ``synthetic_cells``: images with exact labels, no files needed.
- ``synthetic_nuclei_3d``, ``load_volumes``, ``read_h5_volume``: (Z, Y, X) stacks with their
  voxel size (synthetic, or the GoNuclear crops; notebook 11).
- ``fetch``, ``list_files``, ``split_names``: registered files (URL + sha256) found in the cache
  ``COURSE_DATA_CACHE``, the mirror ``COURSE_DATA_MIRROR``, or downloaded unless
  ``COURSE_OFFLINE=1``; ``DataUnavailableError`` when none of these works.
- ``load_split``: one API for BBBC039, Kromp 2020, Usiigaci and the synthetic sets;
  ``normalize_percentile``; ``load_folder`` for a folder of your own images and masks.
- ``PatchDataset``: random training crops as a torch Dataset (torch is imported on first use).
- ``augment``: augmentations ``(image, labels, rng) -> (image, labels)`` for ``PatchDataset``
  (flips, rotation, affine, elastic, intensity, noise, blur, ``compose``); notebook 04.

Introduced in notebook 00.
"""

from __future__ import annotations

from typing import Any

from . import augment, dsb2018
from .folders import load_folder
from .loaders import load_split, normalize_percentile, read_bbbc039_mask, read_image
from .registry import (
    DataUnavailableError,
    cache_dir,
    fetch,
    list_datasets,
    list_files,
    mirror_dir,
    split_names,
)
from .stacks import load_volumes, read_h5_volume, synthetic_nuclei_3d
from .synthetic import synthetic_cells, synthetic_nuclei

__all__ = [
    "DataUnavailableError",
    "PatchDataset",
    "augment",
    "cache_dir",
    "dsb2018",
    "fetch",
    "list_datasets",
    "list_files",
    "load_folder",
    "load_split",
    "load_volumes",
    "mirror_dir",
    "normalize_percentile",
    "read_bbbc039_mask",
    "read_h5_volume",
    "read_image",
    "split_names",
    "synthetic_cells",
    "synthetic_nuclei",
    "synthetic_nuclei_3d",
]


def __getattr__(name: str) -> Any:
    # torch takes a second or two to import; only PatchDataset needs it.
    if name == "PatchDataset":
        from .patches import PatchDataset

        return PatchDataset
    raise AttributeError(f"module 'course_utils.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | {"PatchDataset"})
