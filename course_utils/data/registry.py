"""Dataset registry: every file with its upstream URL and sha256, found in a cache or a mirror.

The registry lives in the repository's ``data/<dataset>/`` folder as small text files
(``MANIFEST.tsv`` and ``split_<split>.txt``); see ``data/README.md``. A file is looked up

1. in the cache ``$COURSE_DATA_CACHE/<dataset>/<relpath>`` (default ``~/.cache/course_utils``);
2. in the read-only mirror ``$COURSE_DATA_MIRROR/<dataset>/<relpath>``, read where it is;
3. downloaded from its upstream URL into the cache with ``pooch`` (a temporary file, checked
   against the sha256, then renamed into place), unless ``COURSE_OFFLINE`` says no.

Every file is checked against its size and sha256 before it is returned. What the cache may
and may not touch (the rules of ``fetch``): no file is ever deleted or overwritten until a
verified replacement is in hand; a cache file that fails its check is then moved aside to
``<name>.corrupt`` (never deleted, since it may be a user's edit) with a warning; the mirror
is never written to; a cache folder that is the mirror is refused; a read-only cache is fine
as long as nothing needs downloading.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DataUnavailableError",
    "FileEntry",
    "cache_dir",
    "fetch",
    "list_datasets",
    "list_files",
    "manifest",
    "mirror_dir",
    "registry_dir",
    "split_names",
]

SPLITS = ("train", "val", "test")
#: A dataset's manifest, plain or gzip-compressed (DSB2018 lists 16,937 files: 8 MB plain).
MANIFESTS = ("MANIFEST.tsv", "MANIFEST.tsv.gz")
_TIMEOUT_S = 60
_YES, _NO = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")
# (path, size, mtime_ns) -> sha256 matched: hashing 200 files on every load_split would be slow.
_VERIFIED: dict[tuple[str, int, int], bool] = {}


class DataUnavailableError(FileNotFoundError):
    """A registered file is in neither the cache nor the mirror and cannot be downloaded."""


@dataclass(frozen=True)
class FileEntry:
    """One registered file: where it lives in the dataset, its size, checksum and source."""

    relpath: str
    size: int
    sha256: str
    url: str


def registry_dir() -> Path:
    """The folder holding ``<dataset>/MANIFEST.tsv``: ``$COURSE_DATA_REGISTRY`` or ``data/``."""
    env = os.environ.get("COURSE_DATA_REGISTRY")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "data"


def cache_dir() -> Path:
    """The download cache: ``$COURSE_DATA_CACHE`` or ``~/.cache/course_utils``."""
    env = os.environ.get("COURSE_DATA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "course_utils"


def mirror_dir() -> Path | None:
    """The read-only mirror ``$COURSE_DATA_MIRROR``, or None when it is not set."""
    env = os.environ.get("COURSE_DATA_MIRROR")
    return Path(env).expanduser() if env else None


def list_datasets() -> list[str]:
    """Names of the registered datasets (folders of the registry with a ``MANIFEST.tsv``)."""
    root = registry_dir()
    if not root.is_dir():
        return []
    return sorted({p.parent.name for name in MANIFESTS for p in root.glob(f"*/{name}")})


@functools.lru_cache(maxsize=16)
def _read_manifest(path: Path, mtime_ns: int) -> dict[str, FileEntry]:
    """Parse a manifest; ``mtime_ns`` is part of the cache key so an edited file is re-read."""
    entries = {}
    if path.suffix == ".gz":
        import gzip

        text = gzip.decompress(path.read_bytes()).decode()
    else:
        text = path.read_text()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 4:
            raise ValueError(f"{path}:{lineno}: expected 4 tab-separated fields, got {len(parts)}")
        relpath, size, sha, url = parts
        entries[relpath] = FileEntry(relpath, int(size), sha.lower(), url)
    return entries


def _manifest(dataset: str) -> dict[str, FileEntry]:
    folder = registry_dir() / str(dataset)
    path = next((folder / n for n in MANIFESTS if (folder / n).is_file()), folder / MANIFESTS[0])
    if not path.is_file():
        raise ValueError(
            f"unknown dataset {dataset!r}; registered: {list_datasets()} "
            f"(registry folder {registry_dir()})"
        )
    return _read_manifest(path, path.stat().st_mtime_ns)


def manifest(dataset: str) -> dict[str, FileEntry]:
    """Every registered file of ``dataset``: relative path -> :class:`FileEntry` (size,
    sha256, upstream URL), in manifest order; read once per version of the manifest file (the
    same dict until it changes)."""
    return _manifest(dataset)


def list_files(dataset: str) -> list[str]:
    """Relative paths of every registered file of ``dataset``, in manifest order."""
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
    import pooch

    return pooch.file_hash(str(path), alg="sha256")


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
    """Fetch ``url`` into ``dest`` (pooch's downloader; ``file://`` URLs are copied).

    The network step alone: tests replace this function to forbid the network.
    """
    if url.startswith("file://"):
        shutil.copyfile(urllib.parse.unquote(urllib.parse.urlparse(url).path), dest)
        return
    import pooch

    pooch.HTTPDownloader(progressbar=True, timeout=_TIMEOUT_S)(url, str(dest), None)


def _move_aside(path: Path, why: str) -> None:
    """Rename a bad cache file to ``<name>.corrupt`` (``.corrupt.2``, ... if taken); warn."""
    for k in range(1, 1000):
        aside = path.with_name(path.name + (".corrupt" if k == 1 else f".corrupt.{k}"))
        if not aside.exists():
            break
    try:
        os.replace(path, aside)
    except OSError as err:  # a read-only cache: the file stays, and is not used
        warnings.warn(
            f"{path} is bad ({why}) and could not be moved aside ({err}); it is "
            "left as it is and not used",
            stacklevel=3,
        )
        return
    warnings.warn(
        f"{path} is bad ({why}): moved aside to {aside.name} (not deleted); a "
        "verified copy is used instead",
        stacklevel=3,
    )


def _failed(entry: FileEntry, err: BaseException) -> DataUnavailableError:
    return DataUnavailableError(
        f"downloading {entry.url} failed: {err}. Check the network, or set "
        "COURSE_DATA_MIRROR to a folder that holds the data, or use the synthetic "
        'data: load_split("synthetic", ...).'
    )


def _download_verified(entry: FileEntry, target: Path, bad_cache: str | None) -> None:
    """Download with pooch into a new file beside ``target`` (verified against the sha256),
    then put it in place; a bad file at ``target`` is moved aside only after that."""
    import pooch

    part = f".{target.name}.download"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        pooch.retrieve(
            entry.url,
            known_hash=f"sha256:{entry.sha256}",
            fname=part,
            path=target.parent,
            downloader=lambda url, output, _: _download(url, Path(output)),
        )
    except OSError as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise _failed(entry, err) from err  # network errors are OSErrors too
        raise DataUnavailableError(
            f"the cache folder {target.parent} is not writable ({err.strerror}), so "
            f"{entry.relpath} cannot be downloaded into it: set COURSE_DATA_CACHE to a "
            "writable folder, or COURSE_DATA_MIRROR to a folder that holds the data."
        ) from None
    except ValueError as err:  # pooch: the hash of the download does not match
        raise DataUnavailableError(f"downloaded {entry.url} but the file is bad: {err}") from None
    except Exception as err:  # HTTP and other errors, whatever the library
        raise _failed(entry, err) from err
    downloaded = target.parent / part
    problem = _check(downloaded, entry)
    if problem:  # pooch checked the hash; the size is checked here too
        downloaded.unlink()
        raise DataUnavailableError(f"downloaded {entry.url} but the file is bad: {problem}")
    if bad_cache is not None and target.exists():
        _move_aside(target, bad_cache)
    os.replace(downloaded, target)  # atomic: readers never see a half-written file


def _offline() -> bool:
    """``COURSE_OFFLINE``: 1/true/yes/on forbid downloads; unset, empty, 0/false/no/off allow."""
    raw = os.environ.get("COURSE_OFFLINE", "").strip().lower()
    if raw in _YES:
        return True
    if raw in _NO:
        return False
    raise ValueError(
        f"COURSE_OFFLINE={os.environ['COURSE_OFFLINE']!r} is neither yes nor no: use 1, true, "
        "yes or on to forbid downloads, and 0, false, no, off (or unset it) to allow them."
    )


def _entry(dataset: str, relpath: str) -> FileEntry:
    entries = _manifest(dataset)
    rel = str(relpath).replace(os.sep, "/")
    if rel not in entries:
        raise ValueError(
            f"{relpath!r} is not a registered file of {dataset!r} "
            f"(see list_files({dataset!r}); e.g. {next(iter(entries), None)!r})"
        )
    return entries[rel]


def _check_folders(mirror: Path | None) -> None:
    """Refuse a cache that is the mirror, or inside it, or holds it: the cache is written to
    (downloads, files moved aside) and the mirror never is."""
    if mirror is None:
        return
    cache, mirror = cache_dir().resolve(), mirror.resolve()
    if cache == mirror or cache.is_relative_to(mirror) or mirror.is_relative_to(cache):
        raise ValueError(
            f"COURSE_DATA_CACHE ({cache}) and COURSE_DATA_MIRROR ({mirror}) overlap: the cache "
            "is written to and the mirror must never be. Point COURSE_DATA_CACHE elsewhere."
        )


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
        download. None (default): download unless ``COURSE_OFFLINE`` is 1, true, yes or on.

    Returns
    -------
    pathlib.Path
        A file in the cache or the mirror whose size and sha256 match the registry.

    Raises
    ------
    ValueError
        Unknown dataset or file; a cache folder that overlaps the mirror; a ``COURSE_OFFLINE``
        that is neither yes nor no.
    DataUnavailableError
        No good copy and no download allowed, the download failed, or the cache is read-only
        when a download is needed. The message says how to set the mirror and names the
        synthetic alternative.

    Notes
    -----
    No file is deleted or overwritten unless a verified copy replaces it; a bad cache file is
    moved aside to ``<name>.corrupt`` (with a warning) once a good copy is found, and left in
    place otherwise. The mirror is only read.

    Introduced in notebook 07.
    """
    entry = _entry(dataset, relpath)
    mirror = mirror_dir()
    _check_folders(mirror)
    cached = cache_dir() / dataset / entry.relpath
    bad_cache = _check(cached, entry) if cached.is_file() else None
    if cached.is_file() and bad_cache is None:
        return cached
    notes = [] if bad_cache is None else [f"the cached {cached} is bad ({bad_cache}); kept"]
    if mirror is not None:
        mirrored = mirror / dataset / entry.relpath
        if mirrored.is_file():
            problem = _check(mirrored, entry)
            if problem is None:
                if bad_cache is not None:
                    _move_aside(cached, bad_cache)
                return mirrored
            notes.append(f"the mirror's copy {mirrored} is bad ({problem}); it was left as is")
            warnings.warn(notes[-1], stacklevel=2)
    if download is None:
        download = not _offline()
    if not download:
        raise DataUnavailableError(_unavailable_message(dataset, entry, notes))
    _download_verified(entry, cached, bad_cache)
    return cached


def _unavailable_message(dataset: str, entry: FileEntry, notes: list[str]) -> str:
    mirror = os.environ.get("COURSE_DATA_MIRROR")
    where = f"COURSE_DATA_MIRROR={mirror}" if mirror else "COURSE_DATA_MIRROR is not set"
    offline = os.environ.get("COURSE_OFFLINE")
    reason = f"COURSE_OFFLINE={offline}" if _offline() else "download=False"
    lines = [
        f"{dataset}/{entry.relpath} is not available offline ({reason}): "
        f"not in the cache {cache_dir()} and not in the mirror ({where}).",
        *notes,
        f"Set COURSE_DATA_MIRROR to a folder holding {dataset}/{entry.relpath}, allow the "
        "download (unset COURSE_OFFLINE), or use the synthetic data instead: "
        'load_split("synthetic", ...).',
    ]
    return "\n".join(lines)
