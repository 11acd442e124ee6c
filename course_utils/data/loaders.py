"""One loader for real and synthetic data: ``load_split`` and percentile normalisation.

Real datasets (BBBC039, Kromp 2020, Usiigaci) are read through the registry; see
``data/README.md`` for their splits, licences and citations.

``load_split("bbbc039", "train")`` reads the registered BBBC039 files through ``fetch`` (cache,
mirror, download); ``load_split("synthetic", "train")`` generates touching nuclei and needs no
files at all. Both return the same thing: a list of float32 images and a list of int32 labels.

Introduced in notebook 00.
"""

from __future__ import annotations

import functools
import struct
import zlib
from pathlib import Path

import numpy as np

from .._shared.validate import check_finite, check_int
from . import dsb2018
from .registry import SPLITS, fetch, split_names
from .synthetic import synthetic_cells, synthetic_nuclei

__all__ = [
    "DATASETS",
    "as_grey",
    "load_split",
    "normalize_percentile",
    "read_bbbc039_mask",
    "read_image",
    "read_label_image",
]

DATASETS = ("bbbc039", "dsb2018", "kromp2020", "usiigaci", "synthetic", "synthetic_cells")
SYNTHETIC_SHAPE = (256, 256)
SYNTHETIC_SIZES = {"train": 24, "val": 8, "test": 8}


# What tifffile and PIL raise on an empty, truncated or corrupt file (PIL's
# UnidentifiedImageError is an OSError; tifffile's TiffFileError a ValueError).
_READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error)


def _read_pixels(path: Path, *, tiff: bool) -> np.ndarray:
    """The array stored in ``path`` (tifffile or PIL), or a ValueError naming the file."""
    try:
        if tiff:
            import tifffile

            return tifffile.imread(str(path))
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise  # not a damaged file: the plain error says what is wrong
    except _READ_ERRORS as err:
        size = path.stat().st_size if path.is_file() else 0
        raise ValueError(
            f"{path} cannot be read (corrupt, empty or truncated file, {size} bytes: {err}). "
            "Re-export it from the program that made it, or remove it."
        ) from err


def read_image(path: str | Path) -> np.ndarray:
    """Read a TIFF (or PNG) image as stored (e.g. uint16 (H, W) for BBBC039).

    A file that cannot be read (corrupt, empty or truncated) raises ``ValueError`` naming it.

    Introduced in notebook 07.
    """
    path = Path(path)
    return _read_pixels(path, tiff=path.suffix.lower() != ".png")


def read_bbbc039_mask(path: str | Path) -> np.ndarray:
    """Read a BBBC039 mask PNG into instance labels.

    The masks colour nuclei so that touching ones differ in channel 0; an instance is a
    4-connected region of equal value there.

    Parameters
    ----------
    path : str or Path
        A ``masks/<name>.png`` file (RGBA or grey).

    Returns
    -------
    np.ndarray, int32, shape (H, W)
        0 = background, nuclei 1..N consecutive (all zeros for an empty mask).

    Introduced in notebook 07.
    """
    from PIL import Image
    from skimage.measure import label

    with Image.open(path) as im:
        mask = np.asarray(im)
    channel = mask[..., 0] if mask.ndim == 3 else mask
    return label(channel, background=0, connectivity=1).astype(np.int32)


def normalize_percentile(
    image: np.ndarray,
    low: float = 1.0,
    high: float = 99.8,
    *,
    axis: int | tuple[int, ...] | None = None,
    clip: bool = False,
    eps: float = 1e-6,
) -> np.ndarray:
    """Map the ``low`` and ``high`` percentiles of an image to 0 and 1.

    Robust to a few very bright or dark pixels, unlike min-max scaling, so images from
    different acquisitions end up on a comparable scale.

    Parameters
    ----------
    image : array_like, any real dtype, any shape
        NaN or infinite values are refused (one of them would make the whole result NaN).
    low, high : float
        Percentiles, ``0 <= low < high <= 100``.
    axis : int or tuple of int, optional
        Axes over which the percentiles are taken; e.g. ``axis=(1, 2)`` normalises each channel
        of a (C, H, W) image on its own. None: over the whole array.
    clip : bool
        Clip the result to [0, 1].
    eps : float
        Added to the denominator so a constant image does not divide by zero.

    Returns
    -------
    np.ndarray, float32, same shape as ``image``
        ``(image - p_low) / (p_high - p_low + eps)``.

    Introduced in notebook 00.
    """
    x = np.asarray(image)
    if x.dtype.kind not in "biuf":
        raise TypeError(f"image must be a real-valued array, got dtype {x.dtype}")
    if x.size == 0:
        raise ValueError("image is empty")
    check_finite(x, "image")
    if not 0 <= low < high <= 100:
        raise ValueError(f"need 0 <= low < high <= 100, got low={low}, high={high}")
    x = x.astype(np.float32, copy=False)
    lo, hi = np.percentile(x, [low, high], axis=axis, keepdims=True)
    return _rescale(x, lo, hi, clip=clip, eps=eps)


def _rescale(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, clip: bool, eps: float):
    out = x.astype(np.float32)  # a copy; then in place: one image-sized array, not three
    out -= lo.astype(np.float32)
    out /= (hi - lo + eps).astype(np.float32)
    if clip:
        np.clip(out, 0, 1, out=out)
    return out.astype(np.float32, copy=False)


# Percentiles of the images load_split has normalised: sorting is most of the cost of a repeat
# call, and notebooks call load_split again and again.
_BOUNDS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _normalized(key: tuple, image: np.ndarray, axis: tuple[int, ...] | None) -> np.ndarray:
    if key not in _BOUNDS:
        x = image.astype(np.float32)
        _BOUNDS[key] = tuple(np.percentile(x, [1.0, 99.8], axis=axis, keepdims=True))
    return _rescale(image, *_BOUNDS[key], clip=False, eps=1e-6)


def read_label_image(path: str | Path) -> np.ndarray:
    """Read an instance label image (TIFF or PNG of integer ids, 0 = background) as int32.

    Ids are kept as they are (touching objects must already have different ids); an RGB file
    or one with more than 2**31 - 1 ids is refused, since colours are not ids, and so is a
    file that cannot be read (corrupt, empty or truncated), by name.
    """
    path = Path(path)
    arr = _read_pixels(path, tiff=path.suffix.lower() in (".tif", ".tiff"))
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{path} is not a 2-D integer label image (shape {arr.shape}, dtype {arr.dtype})"
        )
    if arr.size and int(arr.max()) > np.iinfo(np.int32).max:
        raise ValueError(f"{path} has ids above 2**31 - 1")
    return arr.astype(np.int32)


def as_grey(image: np.ndarray, name: str = "image") -> np.ndarray:
    """A 2-D image from a grey one, or from an RGB(A) file whose colour channels are equal
    (as Kromp 2020's DAPI images are); other colour images are refused."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        rgb = image[..., :3]
        if (rgb == rgb[..., :1]).all():
            return rgb[..., 0]
        raise ValueError(
            f"{name} is a colour image (H, W, {image.shape[-1]}) whose channels "
            "differ: convert it to one channel first"
        )
    raise ValueError(f"{name} must be a 2-D image, got shape {image.shape}")


#: Registered datasets read by ``load_split``: image and label paths (from a file stem) and the
#: label reader. BBBC039's masks colour touching nuclei; the others store ids directly.
_REAL = {
    "bbbc039": ("images/{}.tif", "masks/{}.png", read_bbbc039_mask),
    "kromp2020": ("images/{}.tif", "labels/{}.tif", read_label_image),
    "usiigaci": ("images/{}.tif", "labels/{}.png", read_label_image),
    "dsb2018": None,  # one mask file per nucleus: course_utils.data.dsb2018 merges them
}
# (dataset, stem) -> raw (image, int32 labels); notebooks call load_split again and again.
_PAIRS: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}


def _real_pairs(dataset: str, names: list[str], download: bool | None) -> list[tuple]:
    """Raw pairs of the named fields of view, read once and kept in memory (read-only)."""
    missing = [stem for stem in names if (dataset, stem) not in _PAIRS]
    if dataset == "dsb2018":
        for stem, (image, labels) in zip(missing, dsb2018.load_pairs(missing, download)):
            image.flags.writeable = False
            labels.flags.writeable = False
            _PAIRS[dataset, stem] = (image, labels)
        return [_PAIRS[dataset, stem] for stem in names]
    image_at, labels_at, read_labels = _REAL[dataset]
    # Locate (and verify) every file before reading any, so a missing one fails fast.
    paths = [
        (
            fetch(dataset, image_at.format(s), download=download),
            fetch(dataset, labels_at.format(s), download=download),
        )
        for s in missing
    ]
    for stem, (image_path, mask_path) in zip(missing, paths):
        image = as_grey(read_image(image_path), str(image_path))
        labels = read_labels(mask_path)
        image.flags.writeable = False  # shared by every caller: nobody may change it in place
        labels.flags.writeable = False
        _PAIRS[dataset, stem] = (image, labels)
    return [_PAIRS[dataset, stem] for stem in names]


def _synthetic_seed(seed: int, split: str, index: int) -> int:
    """Distinct, reproducible seeds per (seed, split, index); splits never share images."""
    entropy = (int(seed), SPLITS.index(split), int(index))
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


@functools.lru_cache(maxsize=512)
def _synthetic_pair(name: str, split: str, index: int, seed: int):
    make = synthetic_nuclei if name == "synthetic" else synthetic_cells
    image, labels = make(SYNTHETIC_SHAPE, seed=_synthetic_seed(seed, split, index))
    image.flags.writeable = False
    labels.flags.writeable = False
    return image, labels


def _count(n: int | None, available: int | None, name: str, split: str) -> int:
    if n is None:
        return available if available is not None else SYNTHETIC_SIZES[split]
    n = check_int(n, "n", minimum=0)
    if available is not None and n > available:
        raise ValueError(f"n={n} but the {name!r} {split!r} split has only {available} images")
    return int(n)


def load_split(
    name: str,
    split: str,
    *,
    n: int | None = None,
    normalize: bool = True,
    download: bool | None = None,
    seed: int = 0,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images and instance labels of one split of a real or synthetic dataset.

    Parameters
    ----------
    name : {"bbbc039", "dsb2018", "kromp2020", "usiigaci", "synthetic", "synthetic_cells"}
        ``"bbbc039"``: the registered BBBC039 nuclei (520 x 696) through the cache/mirror.
        ``"dsb2018"``: fluorescence nuclei from many labs (DSB2018 stage 1, Caicedo 2019;
        256 x 256 to 1040 x 1388): the course's seeded split 306 / 66 / 66
        (:mod:`course_utils.data.dsb2018`), labels merged from one mask file per nucleus.
        ``"kromp2020"``: DAPI nuclei in tissue sections (Kromp 2020; 914 x 1225, ~300-400
        nuclei each): ``"train"`` 3 images (to fine-tune on), ``"test"`` 2.
        ``"usiigaci"``: phase-contrast NIH/3T3 fibroblasts with whole-cell labels (Tsai 2019;
        1022 x 1024): ``"train"`` 40, ``"val"`` 5 (both from the authors' training list),
        ``"test"`` 5 (the authors' validation list).
        ``"synthetic"``: ``synthetic_nuclei`` images, 256 x 256, no files needed.
        ``"synthetic_cells"``: ``synthetic_cells`` two-channel images, 256 x 256.
    split : {"train", "val", "test"}
    n : int, optional
        Take the first ``n`` images of the split (in the split file's order). Default: all
        (BBBC039 100/50/48; DSB2018 306/66/66; Kromp 3/-/2; Usiigaci 40/5/5; synthetic
        24/8/8). Synthetic splits can be made longer than that; their i-th image depends
        only on (seed, split, i).
    normalize : bool
        Apply ``normalize_percentile`` (per channel for ``synthetic_cells``); otherwise the raw
        values are only cast to float32.
    download : bool, optional
        Passed to ``fetch`` (None: download unless ``COURSE_OFFLINE=1``). Ignored for synthetic.
    seed : int
        Seed of the synthetic splits (each split and image gets its own stream). Ignored for
        BBBC039.

    Returns
    -------
    images : list of np.ndarray, float32, shape (H, W) or (2, H, W) for ``synthetic_cells``
    labels : list of np.ndarray, int32, shape (H, W)
        0 = background, instances 1..N. Fresh arrays: changing them does not change later calls.

    Raises
    ------
    ValueError
        Unknown name or split (the message lists the choices), or ``n`` too large.
    DataUnavailableError
        A BBBC039 file is not available (the message names the synthetic alternative).

    Introduced in notebook 00.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    if name in _REAL:
        names = split_names(name, split)
        names = names[: _count(n, len(names), name, split)]
        pairs = _real_pairs(name, names, download)
        keys = [(name, stem) for stem in names]
    else:
        count = _count(n, None, name, split)
        pairs = [_synthetic_pair(name, split, i, int(seed)) for i in range(count)]
        keys = [(name, split, i, int(seed)) for i in range(count)]
    axis = (-2, -1) if name == "synthetic_cells" else None
    images = [
        _normalized(k, x, axis) if normalize else np.array(x, np.float32)
        for k, (x, _) in zip(keys, pairs)
    ]
    # Copies: the memoised arrays are shared and read-only.
    labels = [np.array(lab, dtype=np.int32) for _, lab in pairs]
    return images, labels
