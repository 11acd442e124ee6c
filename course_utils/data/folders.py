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

from .loaders import as_grey, normalize_percentile, read_label_image

__all__ = ["IMAGE_SUFFIXES", "MASK_SUFFIXES", "load_folder"]

#: File types read as images and masks.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")
#: Endings of a mask's name that are dropped before matching it to its image
#: (``cell_01_masks.png`` belongs to ``cell_01.tif``).
MASK_SUFFIXES = ("_masks", "_mask", "_labels", "_label", "_seg", "_cp_masks")


def _files(folder: str | os.PathLike, what: str) -> list[Path]:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"the {what} folder {folder} does not exist (or is not a folder)")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and not p.name.startswith("."))  # fmt: skip
    if not files:
        raise ValueError(f"the {what} folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} file")
    return files


def _stem(path: Path, mask: bool) -> str:
    stem = path.stem
    if mask:
        for ending in MASK_SUFFIXES:
            if stem.lower().endswith(ending):
                return stem[: -len(ending)]
    return stem


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(str(path))
    else:
        with Image.open(path) as im:
            arr = np.asarray(im)
    arr = np.squeeze(arr)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{path} does not hold numbers (dtype {arr.dtype})")
    return as_grey(arr, str(path))


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
        A folder of instance masks (integer ids, 0 = background), one per image, with the same
        file name (an ending ``_masks``, ``_mask``, ``_labels``, ``_label``, ``_seg`` or
        ``_cp_masks`` is allowed: ``a.tif`` and ``a_masks.png`` match).
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
        An empty folder; an image without a mask or a mask without an image (all such names
        are listed); a mask of another shape than its image; an RGB or non-integer mask; an
        image that is not 2-D.

    Introduced in notebook 08.
    """
    image_files = _files(images, "image")
    names = [_stem(p, mask=False) for p in image_files]
    if len(set(names)) != len(names):
        raise ValueError(f"two images in {images} share a name (differing only in type)")
    pixels = [_read_image(p) for p in image_files]
    if normalize:
        pixels = [normalize_percentile(x) for x in pixels]
    pixels = [np.asarray(x, np.float32) for x in pixels]
    if masks is None:
        return pixels, None, names
    mask_files = {_stem(p, mask=True): p for p in _files(masks, "mask")}
    lonely_images = [n for n in names if n not in mask_files]
    lonely_masks = [n for n in mask_files if n not in names]
    if lonely_images or lonely_masks:
        raise ValueError(
            "images and masks do not match by name: "
            + (f"no mask for {lonely_images[:5]}; " if lonely_images else "")
            + (f"no image for {lonely_masks[:5]}" if lonely_masks else "")
            + f" (masks may end in {', '.join(MASK_SUFFIXES)})"
        )
    labels = []
    for name, image in zip(names, pixels):
        lab = read_label_image(mask_files[name])
        if lab.shape != image.shape:
            raise ValueError(f"the mask {mask_files[name]} has shape {lab.shape}, but its image "
                             f"has {image.shape}")  # fmt: skip
        labels.append(lab)
    return pixels, labels, names
