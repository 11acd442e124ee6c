"""Your own images: read a folder of 2-D images, and of instance masks matched by file name.

``load_folder("my_images/", "my_masks/")`` returns what ``load_split`` returns for the course's
datasets, so every tool of the course (training, fine-tuning, scoring) works on your data. The
folders are only read, never written to.

Introduced in notebook 08.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._shared.validate import check_finite, refuse_binary_masks
from .loaders import as_grey, normalize_percentile, read_image, read_label_image

__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIXES", "load_folder"]

#: File types read as images and masks.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
#: Endings of a mask's name that are dropped before matching it to its image
#: (``cell_01_masks.png`` belongs to ``cell_01.tif``), tried longest first.
MASK_SUFFIXES = ("_masks", "_mask", "_labels", "_label", "_seg", "_cp_masks")
# Longest first, so that Cellpose's ``cell_01_cp_masks.png`` loses ``_cp_masks``, not ``_masks``.
_LONGEST_FIRST = tuple(sorted(MASK_SUFFIXES, key=len, reverse=True))
_TWO_FOLDERS_HINT = (
    "end each mask's name in a mask suffix (a.tif and a_masks.png) or put the masks in a "
    "second folder"
)


def _files(folder: str | os.PathLike, what: str) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"the {what} folder {folder} does not exist (or is not a folder)")
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"the {what} folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} file")
    return files


def _has_mask_suffix(stem: str) -> bool:
    return stem.lower().endswith(MASK_SUFFIXES)


def _split_one_folder(files: list[Path], folder: str | os.PathLike) -> tuple[list, list]:
    """Images and masks of one folder: a mask's name ends in a mask suffix, an image's not."""
    by_stem: dict[str, list[Path]] = {}
    for path in files:
        by_stem.setdefault(path.stem, []).append(path)
    for same in by_stem.values():
        if len(same) > 1:
            raise ValueError(
                f"images and masks are in one folder ({folder}), where {same[0].name} and "
                f"{same[1].name} share a name: an image and its mask cannot be told apart by "
                f"file type alone. {_TWO_FOLDERS_HINT.capitalize()}."
            )
    masks = [p for p in files if _has_mask_suffix(p.stem)]
    images = [p for p in files if not _has_mask_suffix(p.stem)]
    if not masks or not images:
        found = "no file name ends" if not masks else "every file name ends"
        raise ValueError(
            f"images and masks are in one folder ({folder}), but {found} in a mask suffix "
            f"({', '.join(MASK_SUFFIXES)}): {_TWO_FOLDERS_HINT}."
        )
    return images, masks


def _owner(stem: str, names: set[str]) -> str | None:
    """The image a mask belongs to: the same name first, then the name less its suffix."""
    if stem in names:
        return stem
    for ending in _LONGEST_FIRST:
        if stem.lower().endswith(ending) and stem[: -len(ending)] in names:
            return stem[: -len(ending)]
    return None


def _match(names: list[str], mask_files: list[Path]) -> dict[str, Path]:
    """Each image name's mask file; a missing, extra or second mask raises ``ValueError``."""
    known = set(names)
    found: dict[str, list[Path]] = {}
    lonely_masks = []
    for path in mask_files:
        owner = _owner(path.stem, known)
        if owner is None:
            lonely_masks.append(path.name)
        else:
            found.setdefault(owner, []).append(path)
    for name, paths in found.items():
        if len(paths) > 1:
            raise ValueError(
                f"the image {name!r} has {len(paths)} masks: "
                + " and ".join(str(p) for p in paths)
                + ". Keep one of them (move the others out of the folder)."
            )
    lonely_images = [n for n in names if n not in found]
    if lonely_images or lonely_masks:
        raise ValueError(
            "images and masks do not match by name: "
            + (f"no mask for {lonely_images[:5]}; " if lonely_images else "")
            + (f"no image for the masks {lonely_masks[:5]}" if lonely_masks else "")
            + f" (masks may end in {', '.join(MASK_SUFFIXES)})"
        )
    return {name: paths[0] for name, paths in found.items()}


def _read_image(path: Path) -> np.ndarray:
    arr = np.squeeze(read_image(path))
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{path} does not hold numbers (dtype {arr.dtype})")
    check_finite(arr, str(path))
    return as_grey(arr, str(path))


def _read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    labels = read_label_image(path)
    if labels.shape != shape:
        raise ValueError(f"the mask {path} has shape {labels.shape}, but its image has {shape}")
    refuse_binary_masks(labels, str(path))
    return labels


def load_folder(
    images: str | os.PathLike,
    masks: str | os.PathLike | None = None,
    *,
    normalize: bool = True,
) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[str]]:
    """Read every 2-D image of a folder, and the instance masks of another, matched by name.

    Parameters
    ----------
    images : path
        A folder of ``.tif``/``.tiff``/``.png`` images, 2-D (grey) or RGB with equal channels;
        hidden files and other types are ignored.
    masks : path, optional
        A folder of instance masks (integer ids, 0 = background), one per image. A mask
        belongs to the image of the same file name (``a.tif`` and ``a.png``); failing that, to
        the image named like it less an ending ``_cp_masks``, ``_labels``, ``_masks``,
        ``_label``, ``_mask`` or ``_seg``, tried longest first (``a_masks.png`` and
        ``a_cp_masks.png`` belong to ``a.tif``; ``a_seg.png`` to ``a_seg.tif`` if there is one,
        else to ``a.tif``). It may be the ``images`` folder itself: the files whose name ends
        in one of those endings are then the masks, the others the images.
    normalize : bool
        ``normalize_percentile`` each image (1st and 99.8th percentiles to 0 and 1), as the
        course's models expect; otherwise the raw values as float32.

    Returns
    -------
    images : list of numpy.ndarray, float32, (H, W)
    labels : list of numpy.ndarray, int32, (H, W), or None without ``masks``
    names : list of str
        The file stems, in sorted order.

    Raises
    ------
    FileNotFoundError
        A folder does not exist.
    ValueError
        An empty folder; two images of one name; an image without a mask or a mask without an
        image (all such names are listed); two masks for one image (both are named); in one
        folder, no mask name with a mask ending, or an image and a mask of the same name; a
        file that cannot be read (corrupt, empty or truncated: re-export or remove it); an
        image with NaN or infinite values; an image that is not 2-D; a mask of another shape
        than its image; an RGB or non-integer mask; a binary mask (0/1 or 0/255, one id for
        many objects: label it with ``skimage.measure.label``). Each message names the file.
    TypeError
        An image that does not hold numbers.

    Introduced in notebook 08.
    """
    image_files = _files(images, "image")
    mask_files = None
    if masks is not None:
        if Path(images).expanduser().resolve() == Path(masks).expanduser().resolve():
            image_files, mask_files = _split_one_folder(image_files, images)
        else:
            mask_files = _files(masks, "mask")
    names = [p.stem for p in image_files]
    if len(set(names)) != len(names):
        twins = [p.name for p in image_files if names.count(p.stem) > 1]
        raise ValueError(f"images in {images} share a name (differing only in type): {twins}")
    mask_of = None if mask_files is None else _match(names, mask_files)
    pixels = [_read_image(p) for p in image_files]
    if normalize:
        pixels = [normalize_percentile(x) for x in pixels]
    pixels = [np.asarray(x, np.float32) for x in pixels]
    if mask_of is None:
        return pixels, None, names
    labels = [_read_mask(mask_of[name], image.shape) for name, image in zip(names, pixels)]
    return pixels, labels, names
