"""Dataset registry: every file with its upstream URL and sha256, found in a cache or a mirror.

The registry lives in the repository's ``data/<dataset>/`` folder as small text files
(``MANIFEST.tsv`` and ``split_<split>.txt``); see ``data/README.md``. A file is looked up

1. in the cache ``$COURSE_DATA_CACHE/<dataset>/<relpath>`` (default ``~/.cache/course_utils``);
   a bad file there is ours, so it is deleted and fetched again;
2. in the read-only mirror ``$COURSE_DATA_MIRROR/<dataset>/<relpath>``; a bad file there is
   reported with a warning and left alone;
3. downloaded from its upstream URL into the cache, unless ``COURSE_OFFLINE=1``.

Every file is checked against its size and sha256 before it is returned.

Introduced in notebook 07.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DataUnavailableError",
    "cache_dir",
    "fetch",
    "list_datasets",
    "list_files",
    "mirror_dir",
    "registry_dir",
    "split_names",
]

SPLITS = ("train", "val", "test")
_TIMEOUT_S = 60
# (path, size, mtime_ns) -> sha256 matched: hashing 200 files on every load_split would be slow.
_VERIFIED: dict[tuple[str, int, int], bool] = {}


class DataUnavailableError(FileNotFoundError):
    """A registered file is in neither the cache nor the mirror and cannot be downloaded.
    """


@dataclass(frozen=True)
class FileEntry:
    """One registered file: where it lives in the dataset, its size, checksum and source.
    """

    relpath: str
    size: int
    sha256: str
    url: str


def registry_dir() -> Path:
    """The folder holding ``<dataset>/MANIFEST.tsv``: ``$COURSE_DATA_REGISTRY`` or ``data/``.
    """
    env = os.environ.get("COURSE_DATA_REGISTRY")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def cache_dir() -> Path:
    """The download cache: ``$COURSE_DATA_CACHE`` or ``~/.cache/course_utils``.
    """
    env = os.environ.get("COURSE_DATA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "course_utils"


def mirror_dir() -> Path | None:
    """The read-only mirror ``$COURSE_DATA_MIRROR``, or None when it is not set.
    """
    env = os.environ.get("COURSE_DATA_MIRROR")
    return Path(env).expanduser() if env else None


def list_datasets() -> list[str]:
    """Names of the registered datasets (folders of the registry with a ``MANIFEST.tsv``).
    """
    root = registry_dir()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/MANIFEST.tsv"))


@functools.lru_cache(maxsize=16)
def _read_manifest(path: Path, mtime_ns: int) -> dict[str, FileEntry]:
    """Parse a manifest; ``mtime_ns`` is part of the cache key so an edited file is re-read."""
    entries = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise ValueError(f"{path}:{lineno}: expected 4 tab-separated fields, got {len(parts)}")
        relpath, size, sha, url = parts
        entries[relpath] = FileEntry(relpath, int(size), sha.lower(), url)
    return entries


def _manifest(dataset: str) -> dict[str, FileEntry]:
    path = registry_dir() / str(dataset) / "MANIFEST.tsv"
    if not path.is_file():
        raise ValueError(
            f"unknown dataset {dataset!r}; registered: {list_datasets()} "
            f"(registry folder {registry_dir()})"
        )
    return _read_manifest(path, path.stat().st_mtime_ns)


def list_files(dataset: str) -> list[str]:
    """Relative paths of every registered file of ``dataset``, in manifest order.
    """
    return list(_manifest(dataset))


def split_names(dataset: str, split: str) -> list[str]:
    """The file stems of a published split, in the split file's order.

    Parameters
    ----------
    dataset : str
        A registered dataset, e.g. ``"bbbc039"``.
    split : {"train", "val", "test"}

    Returns
    -------
    list of str
        Names without folder or extension (``images/<name>.tif`` for BBBC039).

    Introduced in notebook 07.
    """
    _manifest(dataset)  # unknown dataset -> ValueError listing the registered ones
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {list(SPLITS)}")
    path = registry_dir() / dataset / f"split_{split}.txt"
    if not path.is_file():
        raise ValueError(f"dataset {dataset!r} has no {split!r} split ({path} is missing)")
    return [s.strip() for s in path.read_text().splitlines() if s.strip()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check(path: Path, entry: FileEntry) -> str | None:
    """None when ``path`` holds the registered bytes, else what is wrong with it."""
    stat = path.stat()
    if stat.st_size != entry.size:
        return f"size {stat.st_size} bytes, expected {entry.size} (truncated or wrong file)"
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        if _sha256(path) != entry.sha256:
            return "sha256 does not match the registry (corrupted or changed file)"
        _VERIFIED[key] = True
    return None


def _download(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest``. Tests replace this function to forbid the network."""
    with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(dest, "wb") as fh:
        shutil.copyfileobj(response, fh)


def _download_verified(entry: FileEntry, target: Path) -> None:
    """Download into a temporary file beside ``target``, check it, then rename atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            _download(entry.url, tmp)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise DataUnavailableError(
                f"downloading {entry.url} failed: {err}. Check the network, or set "
                "COURSE_DATA_MIRROR to a folder that holds the data, or use the synthetic "
                'data: load_split("synthetic", ...).'
            ) from err
        problem = _check(tmp, entry)
        if problem:
            raise DataUnavailableError(f"downloaded {entry.url} but the file is bad: {problem}")
        os.replace(tmp, target)  # atomic: readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)


def _offline() -> bool:
    return os.environ.get("COURSE_OFFLINE", "").strip() == "1"


def _entry(dataset: str, relpath: str) -> FileEntry:
    entries = _manifest(dataset)
    rel = str(relpath).replace(os.sep, "/")
    if rel not in entries:
        raise ValueError(
            f"{relpath!r} is not a registered file of {dataset!r} "
            f"(see list_files({dataset!r}); e.g. {next(iter(entries), None)!r})"
        )
    return entries[rel]


def fetch(dataset: str, relpath: str, *, download: bool | None = None) -> Path:
    """Path of a verified copy of one registered file, downloading it only when needed.

    Parameters
    ----------
    dataset : str
        A registered dataset, e.g. ``"bbbc039"``.
    relpath : str
        The file's path inside the dataset, as in ``list_files(dataset)``,
        e.g. ``"images/IXMtest_A02_s1_w1051DAA7C-7042-435F-99F0-1E847D9B42CB.tif"``.
    download : bool, optional
        True: download when neither the cache nor the mirror has a good copy. False: never
        download. None (default): download unless the environment sets ``COURSE_OFFLINE=1``.

    Returns
    -------
    pathlib.Path
        A file in the cache or the mirror whose size and sha256 match the registry.

    Raises
    ------
    ValueError
        Unknown dataset or file.
    DataUnavailableError
        No good copy and no download allowed, or the download failed. The message says how to
        set the mirror and names the synthetic alternative.

    Introduced in notebook 07.
    """
    entry = _entry(dataset, relpath)
    cached = cache_dir() / dataset / entry.relpath
    if cached.is_file():
        problem = _check(cached, entry)
        if problem is None:
            return cached
        warnings.warn(f"cached {cached} is bad ({problem}); deleting it", stacklevel=2)
        cached.unlink()
    notes = []
    mirror = mirror_dir()
    if mirror is not None:
        mirrored = mirror / dataset / entry.relpath
        if mirrored.is_file():
            problem = _check(mirrored, entry)
            if problem is None:
                return mirrored
            notes.append(f"the mirror's copy {mirrored} is bad ({problem}); it was left as is")
            warnings.warn(notes[-1], stacklevel=2)
    if download is None:
        download = not _offline()
    if not download:
        raise DataUnavailableError(_unavailable_message(dataset, entry, notes))
    _download_verified(entry, cached)
    return cached


def _unavailable_message(dataset: str, entry: FileEntry, notes: list[str]) -> str:
    mirror = os.environ.get("COURSE_DATA_MIRROR")
    where = f"COURSE_DATA_MIRROR={mirror}" if mirror else "COURSE_DATA_MIRROR is not set"
    reason = "COURSE_OFFLINE=1" if _offline() else "download=False"
    lines = [
        f"{dataset}/{entry.relpath} is not available offline ({reason}): "
        f"not in the cache {cache_dir()} and not in the mirror ({where}).",
        *notes,
        f"Set COURSE_DATA_MIRROR to a folder holding {dataset}/{entry.relpath}, allow the "
        "download (unset COURSE_OFFLINE), or use the synthetic data instead: "
        'load_split("synthetic", ...).',
    ]
    return "\n".join(lines)
