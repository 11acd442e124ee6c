"""Dataset registry: cache, mirror, verification, offline errors; never the network."""

from __future__ import annotations

import hashlib
import os
import urllib.error
from pathlib import Path

import pytest

from course_utils.data import DataUnavailableError, fetch, list_files, registry, split_names

FILES = {"images/a.bin": b"alpha" * 100, "images/b.bin": b"bravo-bytes" * 37}
SHARED = Path("/work/shared/data/bbbc039")


def _write_registry(root: Path, files: dict[str, bytes], urls: dict[str, str] | None = None):
    lines = ["# toy dataset", "# relpath\tbytes\tsha256\turl"]
    for rel, data in files.items():
        url = (urls or {}).get(rel, f"https://example.invalid/toy/{rel}")
        lines.append(f"{rel}\t{len(data)}\t{hashlib.sha256(data).hexdigest()}\t{url}")
    (root / "toy").mkdir(parents=True)
    (root / "toy" / "MANIFEST.tsv").write_text("\n".join(lines) + "\n")
    (root / "toy" / "split_train.txt").write_text("b\na\n")


def _put(folder: Path, rel: str, data: bytes) -> Path:
    path = folder / "toy" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A toy registry, empty cache and mirror folders; the downloader fails the test."""
    dirs = {name: tmp_path / name for name in ("registry", "cache", "mirror")}
    for d in dirs.values():
        d.mkdir()
    _write_registry(dirs["registry"], FILES)
    monkeypatch.setenv("COURSE_DATA_REGISTRY", str(dirs["registry"]))
    monkeypatch.setenv("COURSE_DATA_CACHE", str(dirs["cache"]))
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(dirs["mirror"]))
    monkeypatch.setenv("COURSE_OFFLINE", "1")

    def no_network(url, dest):
        pytest.fail(f"tried to download {url}")

    monkeypatch.setattr(registry, "_download", no_network)
    return dirs


def test_listing(env):
    assert list_files("toy") == list(FILES)
    entries = registry.manifest("toy")
    assert list(entries) == list(FILES) and registry.manifest("toy") is entries  # read once
    assert all(e.relpath == name and len(e.sha256) == 64 for name, e in entries.items())
    assert split_names("toy", "train") == ["b", "a"]  # the split file's order
    with pytest.raises(ValueError, match="toy"):
        list_files("nope")
    with pytest.raises(ValueError, match="train"):
        split_names("toy", "holdout")
    with pytest.raises(ValueError, match="no 'val' split"):
        split_names("toy", "val")
    with pytest.raises(ValueError, match="not a registered file"):
        fetch("toy", "images/c.bin")


def test_fetch_from_mirror_and_cache_first(env):
    mirrored = _put(env["mirror"], "images/a.bin", FILES["images/a.bin"])
    assert fetch("toy", "images/a.bin") == mirrored
    cached = _put(env["cache"], "images/a.bin", FILES["images/a.bin"])
    assert fetch("toy", "images/a.bin") == cached


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_bad_cache_file_is_replaced_from_mirror(env, damage):
    data = FILES["images/a.bin"]
    bad = data[:-1] + b"!" if damage == "corrupt" else data[:-10]
    cached = _put(env["cache"], "images/a.bin", bad)
    mirrored = _put(env["mirror"], "images/a.bin", data)
    with pytest.warns(UserWarning, match="moved aside to a.bin.corrupt"):
        path = fetch("toy", "images/a.bin")
    assert path == mirrored and path.read_bytes() == data
    assert not cached.exists()  # out of the way, but kept: it may be a user's edit
    assert cached.with_name("a.bin.corrupt").read_bytes() == bad


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_bad_mirror_file_is_reported_and_left_alone(env, damage):
    data = FILES["images/b.bin"]
    bad = b"X" + data[1:] if damage == "corrupt" else data[: len(data) // 2]
    mirrored = _put(env["mirror"], "images/b.bin", bad)
    mtime = mirrored.stat().st_mtime_ns
    with pytest.warns(UserWarning, match="left as is"):
        with pytest.raises(DataUnavailableError, match="bad") as err:
            fetch("toy", "images/b.bin")
    assert "synthetic" in str(err.value)
    assert mirrored.read_bytes() == bad and mirrored.stat().st_mtime_ns == mtime


def test_offline_without_mirror_names_the_synthetic_alternative(env, monkeypatch):
    monkeypatch.delenv("COURSE_DATA_MIRROR")
    with pytest.raises(DataUnavailableError) as err:
        fetch("toy", "images/a.bin")
    message = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert 'load_split("synthetic"' in message
    assert "COURSE_DATA_MIRROR" in message and "images/a.bin" in message


def test_download_false_wins_over_online(env, monkeypatch):
    monkeypatch.delenv("COURSE_OFFLINE")
    with pytest.raises(DataUnavailableError, match="download=False"):
        fetch("toy", "images/a.bin", download=False)


def test_download_from_file_url_is_verified_and_atomic(tmp_path, monkeypatch):
    upstream = tmp_path / "upstream"
    good = _put(upstream, "images/a.bin", FILES["images/a.bin"])
    wrong = _put(upstream, "images/b.bin", b"not the registered bytes")
    urls = {"images/a.bin": good.as_uri(), "images/b.bin": wrong.as_uri()}
    _write_registry(tmp_path / "registry", FILES, urls)
    cache = tmp_path / "cache"
    monkeypatch.setenv("COURSE_DATA_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("COURSE_DATA_CACHE", str(cache))
    monkeypatch.delenv("COURSE_DATA_MIRROR", raising=False)
    monkeypatch.setenv("COURSE_OFFLINE", "1")  # an explicit download=True still downloads
    path = fetch("toy", "images/a.bin", download=True)
    assert path == cache / "toy" / "images" / "a.bin"
    assert path.read_bytes() == FILES["images/a.bin"]
    with pytest.raises(DataUnavailableError, match="bad"):
        fetch("toy", "images/b.bin", download=True)
    left = sorted(p.name for p in (cache / "toy" / "images").iterdir())
    assert left == ["a.bin"]  # no half-written or unverified file stays behind


def test_download_default_follows_course_offline(env, monkeypatch):
    calls = []

    def fake(url, dest):
        calls.append(url)
        Path(dest).write_bytes(FILES["images/b.bin"])

    monkeypatch.setattr(registry, "_download", fake)
    monkeypatch.delenv("COURSE_OFFLINE")
    path = fetch("toy", "images/b.bin")
    assert calls == ["https://example.invalid/toy/images/b.bin"]
    assert path.parent.parent.parent == env["cache"]


def test_network_failure_becomes_data_unavailable(env, monkeypatch):
    def down(url, dest):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(registry, "_download", down)
    with pytest.raises(DataUnavailableError, match="no route to host") as err:
        fetch("toy", "images/a.bin", download=True)
    assert "synthetic" in str(err.value)
    assert not any(p.is_file() for p in env["cache"].rglob("*"))


def test_checksum_is_memoised_by_size_and_mtime(env, monkeypatch):
    mirrored = _put(env["mirror"], "images/a.bin", FILES["images/a.bin"])
    calls = []
    real = registry._sha256
    monkeypatch.setattr(registry, "_sha256", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        fetch("toy", "images/a.bin")
    assert len(calls) == 1
    # Same size, other bytes, new mtime: hashed again and caught.
    mirrored.write_bytes(b"x" * len(FILES["images/a.bin"]))
    os.utime(mirrored, ns=(mirrored.stat().st_atime_ns, mirrored.stat().st_mtime_ns + 10**9))
    with pytest.warns(UserWarning), pytest.raises(DataUnavailableError):
        fetch("toy", "images/a.bin")
    assert len(calls) == 2


def test_bbbc039_registry_is_complete():
    files = list_files("bbbc039")
    assert len(files) == 400
    images = {f[len("images/") : -len(".tif")] for f in files if f.startswith("images/")}
    masks = {f[len("masks/") : -len(".png")] for f in files if f.startswith("masks/")}
    assert len(images) == 200 and images == masks
    splits = {s: split_names("bbbc039", s) for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [100, 50, 48]
    names = [n for v in splits.values() for n in v]
    assert len(set(names)) == len(names) == 198 and set(names) <= images
    assert all(registry._entry("bbbc039", f).url.startswith("https://") for f in files)


@pytest.mark.skipif(not SHARED.is_dir(), reason="no shared BBBC039 mirror")
def test_bbbc039_registry_matches_the_mirror_manifest():
    here = Path(registry.registry_dir()) / "bbbc039"
    for name in ("MANIFEST.tsv", "split_train.txt", "split_val.txt", "split_test.txt"):
        assert (here / name).read_bytes() == (SHARED / name).read_bytes()
