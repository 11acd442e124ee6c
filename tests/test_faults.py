"""Fault suite: files and training runs. No user file is ever lost or overwritten, and every
bad file gets an error that names it.

- the data cache and mirror (registry): bad, truncated, missing files; the cache that is the
  mirror; a read-only cache; ``COURSE_OFFLINE`` spellings;
- checkpoints: a user's file with a temporary-looking name, two runs into one folder,
  truncated, foreign and silently damaged files, a checkpoint folder that is a file;
- a training run killed with SIGKILL at random moments: the checkpoints always load, and the
  run resumes to the end.

Input faults (shapes, dtypes, NaNs, huge ids) are in ``test_faults_inputs.py``. Nothing here
touches the network.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from course_utils.checkpoint import CheckpointError, read_checkpoint, training_lock
from course_utils.data import DataUnavailableError, fetch, registry
from course_utils.methods import load_model
from course_utils.train import fit, load_checkpoint

DATA = b"registered bytes " * 40


# --- the data cache and mirror ----------------------------------------------------------------


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """A toy registry of one file; empty cache and mirror; downloads fail the test."""
    root = tmp_path / "registry" / "toy"
    root.mkdir(parents=True)
    sha = hashlib.sha256(DATA).hexdigest()
    (root / "MANIFEST.tsv").write_text(f"masks/a.png\t{len(DATA)}\t{sha}\thttps://x.invalid/a\n")
    cache, mirror = tmp_path / "cache", tmp_path / "mirror"
    monkeypatch.setenv("COURSE_DATA_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("COURSE_DATA_CACHE", str(cache))
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(mirror))
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    monkeypatch.setattr(registry, "_download", lambda url, dest: pytest.fail("network"))
    return cache / "toy" / "masks" / "a.png", mirror / "toy" / "masks" / "a.png"


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_a_cache_that_is_the_mirror_is_refused_and_its_file_kept(folders, monkeypatch):
    _, mirrored = folders
    _put(mirrored, b"edited by hand")  # a bad copy in the one folder used as both
    monkeypatch.setenv("COURSE_DATA_CACHE", os.environ["COURSE_DATA_MIRROR"])
    with pytest.raises(ValueError, match="overlap"):
        fetch("toy", "masks/a.png")
    assert mirrored.read_bytes() == b"edited by hand"


def test_a_user_edited_cache_file_is_moved_aside_not_deleted(folders):
    cached, mirrored = folders
    _put(cached, b"my corrected mask")
    _put(mirrored, DATA)
    with pytest.warns(UserWarning, match="moved aside"):
        assert fetch("toy", "masks/a.png") == mirrored
    assert cached.with_name("a.png.corrupt").read_bytes() == b"my corrected mask"
    _put(cached, b"edited again")  # a second bad copy does not replace the first one aside
    with pytest.warns(UserWarning, match="a.png.corrupt.2"):
        fetch("toy", "masks/a.png")
    assert cached.with_name("a.png.corrupt").read_bytes() == b"my corrected mask"


def test_offline_with_a_bad_cache_file_keeps_it(folders, monkeypatch):
    cached, _ = folders
    monkeypatch.delenv("COURSE_DATA_MIRROR")
    _put(cached, DATA[:-5])  # truncated
    with pytest.raises(DataUnavailableError, match="kept"):
        fetch("toy", "masks/a.png")
    assert cached.read_bytes() == DATA[:-5]  # nothing replaced it, so nothing took it away


@pytest.mark.parametrize("works", [True, False])
def test_a_download_replaces_a_bad_cache_file_only_once_verified(folders, monkeypatch, works):
    cached, _ = folders
    _put(cached, b"bad")

    def fake(url, dest):
        if not works:
            raise ConnectionError("no route to host")
        Path(dest).write_bytes(DATA)

    monkeypatch.setattr(registry, "_download", fake)
    if works:
        with pytest.warns(UserWarning, match="moved aside"):
            assert fetch("toy", "masks/a.png", download=True).read_bytes() == DATA
        assert cached.with_name("a.png.corrupt").read_bytes() == b"bad"
    else:
        with pytest.raises(DataUnavailableError, match="no route to host"):
            fetch("toy", "masks/a.png", download=True)
        assert cached.read_bytes() == b"bad"
    assert not [p for p in cached.parent.iterdir() if "download" in p.name]


def test_a_download_with_the_wrong_bytes_is_not_kept(folders, monkeypatch):
    cached, _ = folders
    monkeypatch.setattr(registry, "_download", lambda url, dest: Path(dest).write_bytes(b"x"))
    with pytest.raises(DataUnavailableError, match="bad"):
        fetch("toy", "masks/a.png", download=True)
    assert not cached.parent.exists() or not list(cached.parent.iterdir())


def _read_only(monkeypatch, folder: Path):
    """Make writes under ``folder`` fail as on a read-only file system (root ignores chmod)."""
    real_replace, real_mkdir = os.replace, Path.mkdir

    def replace(src, dst, *args, **kwargs):
        if str(src).startswith(str(folder)):
            raise OSError(errno.EROFS, "Read-only file system", str(src))
        return real_replace(src, dst, *args, **kwargs)

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(folder)) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(Path, "mkdir", mkdir)


def test_a_read_only_cache_still_serves_the_mirror(folders, monkeypatch):
    cached, mirrored = folders
    _put(cached, b"stale")
    _put(mirrored, DATA)
    _read_only(monkeypatch, cached.parents[2])
    with pytest.warns(UserWarning, match="could not be moved aside"):
        assert fetch("toy", "masks/a.png") == mirrored
    assert cached.read_bytes() == b"stale"


def test_a_read_only_cache_that_must_download_says_so(folders, monkeypatch):
    cached, _ = folders
    monkeypatch.delenv("COURSE_DATA_MIRROR")
    monkeypatch.setattr(registry, "_download", lambda url, dest: Path(dest).write_bytes(DATA))
    _read_only(monkeypatch, cached.parents[2])
    with pytest.raises(DataUnavailableError, match="not writable.*COURSE_DATA_CACHE"):
        fetch("toy", "masks/a.png", download=True)


@pytest.mark.parametrize("value", ["1", "true", "True", "yes", "ON"])
def test_course_offline_spellings_forbid_downloads(folders, monkeypatch, value):
    monkeypatch.setenv("COURSE_OFFLINE", value)
    with pytest.raises(DataUnavailableError, match="not available offline"):
        fetch("toy", "masks/a.png")


@pytest.mark.parametrize("value", ["0", "false", "no", "off", ""])
def test_course_offline_spellings_allow_downloads(folders, monkeypatch, value):
    monkeypatch.setenv("COURSE_OFFLINE", value)
    monkeypatch.setattr(registry, "_download", lambda url, dest: Path(dest).write_bytes(DATA))
    assert fetch("toy", "masks/a.png").read_bytes() == DATA


def test_course_offline_garbage_is_refused(folders, monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "sometimes")
    with pytest.raises(ValueError, match="COURSE_OFFLINE='sometimes'"):
        fetch("toy", "masks/a.png")


# --- checkpoints ------------------------------------------------------------------------------


def _tiny_run(folder: Path, epochs: int = 2, **options):
    torch.manual_seed(0)
    net = nn.Conv2d(1, 1, 3, padding=1)
    data = [(torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)) for _ in range(3)]
    history = fit(
        net,
        data,
        loss_fn=nn.functional.mse_loss,
        epochs=epochs,
        checkpoint_dir=folder,
        progress=False,
        **options,
    )
    return net, history


def test_a_user_file_named_like_a_temporary_file_survives(tmp_path):
    _put(tmp_path / "last.pt.tmp", b"my notes")
    _put(tmp_path / ".last.pt.tmp", b"more notes")
    _tiny_run(tmp_path)
    assert (tmp_path / "last.pt.tmp").read_bytes() == b"my notes"
    assert (tmp_path / ".last.pt.tmp").read_bytes() == b"more notes"
    assert {p.name for p in tmp_path.iterdir()} == {
        "last.pt",
        "best.pt",
        "last.pt.tmp",
        ".last.pt.tmp",
    }


def test_a_second_run_into_a_busy_folder_is_refused(tmp_path):
    with training_lock(tmp_path):  # another run holds the folder
        with pytest.raises(RuntimeError, match="another training run"):
            _tiny_run(tmp_path)
    assert not (tmp_path / "last.pt").exists()
    _tiny_run(tmp_path)  # once it is free, a run goes ahead


def test_two_processes_into_one_folder(tmp_path):
    """A real second process trains into the folder; this one is refused, then resumes."""
    script = textwrap.dedent(f"""
        import time, torch
        from torch import nn
        from course_utils.train import fit
        torch.manual_seed(0)
        slow = lambda out, y: (time.sleep(0.2), nn.functional.mse_loss(out, y))[1]
        data = [(torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)) for _ in range(3)]
        fit(nn.Conv2d(1, 1, 3, padding=1), data, loss_fn=slow, epochs=6,
            checkpoint_dir={str(tmp_path)!r}, progress=False)
    """)
    other = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not (tmp_path / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.1)
        with pytest.raises(RuntimeError, match="another training run"):
            _tiny_run(tmp_path, epochs=6)
    finally:
        assert other.wait(timeout=120) == 0
    _, history = _tiny_run(tmp_path, epochs=6)  # the finished run: nothing left to train
    assert len(history) == 6


def test_a_truncated_checkpoint_names_the_file(tmp_path):
    net, _ = _tiny_run(tmp_path)
    data = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(net, tmp_path / "last.pt")
    assert str(tmp_path / "last.pt") in str(err.value) and "weights_only" not in str(err.value)
    with pytest.raises(CheckpointError, match="last.pt"):  # fit refuses to resume from it
        _tiny_run(tmp_path, epochs=3)


@pytest.mark.parametrize("content", ["text", "pickle", "tensor"])
def test_a_foreign_file_names_the_file(tmp_path, content):
    path = tmp_path / "best.pt"
    if content == "text":
        path.write_text("not a checkpoint")
    elif content == "pickle":
        torch.save({"epochs": 3, "notes": ["a", "b"]}, path)
    else:
        torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="best.pt") as err:
        load_checkpoint(nn.Conv2d(1, 1, 3), path)
    assert "weights_only" not in str(err.value)
    with pytest.raises(CheckpointError, match="best.pt"):
        load_model(path)


def test_a_byte_flipped_inside_a_weight_is_caught(tmp_path):
    net = nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        net.weight.fill_(1.2345)  # a pattern that can be found in the file
    loader = [(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))]
    fit(
        net,
        loader,
        loss_fn=lambda out, y: (out * 0).sum(),
        epochs=1,
        checkpoint_dir=tmp_path,
        progress=False,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0),
    )
    path = tmp_path / "last.pt"
    data = bytearray(path.read_bytes())
    at = bytes(data).find(np.full(9, 1.2345, np.float32).tobytes())
    assert at > 0
    data[at + 5] ^= 0x10  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="do not match their checksum"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(nn.Conv2d(1, 1, 3, padding=1), path)


def test_a_checkpoint_folder_that_is_a_file_is_named(tmp_path):
    _put(tmp_path / "runs", b"a file of the user's")
    with pytest.raises(NotADirectoryError, match="runs is a file"):
        _tiny_run(tmp_path / "runs")
    assert (tmp_path / "runs").read_bytes() == b"a file of the user's"


# --- a training run killed at random moments --------------------------------------------------

KILLED_RUN = """
import sys, time, torch
from torch import nn
from course_utils.train import fit
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 3, padding=1))
data = [(torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)) for _ in range(4)]
slow = lambda out, y: (time.sleep(0.01), nn.functional.mse_loss(out, y))[1]
fit(net, data, loss_fn=slow, epochs=int(sys.argv[2]), checkpoint_dir=sys.argv[1],
    progress=False, seed=0)
print("done")
"""


def test_sigkill_at_random_moments_never_breaks_the_checkpoints(tmp_path):
    epochs, rng = 40, np.random.default_rng(0)
    script = tmp_path / "run.py"
    script.write_text(KILLED_RUN)
    folder = tmp_path / "ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done_before = 0
    for _ in range(4):
        child = subprocess.Popen([sys.executable, str(script), str(folder), str(epochs)], env=env)
        deadline = time.time() + 60
        while not (folder / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.05)  # torch takes seconds to import: kill during training
        time.sleep(float(rng.uniform(0.05, 0.8)))
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        for name in ("last.pt", "best.pt"):
            state = read_checkpoint(folder / name)  # loads, and its checksum holds
            assert state["meta"]["weights_sha256"]
        done = read_checkpoint(folder / "last.pt")["epoch"]
        assert done >= done_before  # a resumed run never goes back
        done_before = done
    finished = subprocess.run(
        [sys.executable, str(script), str(folder), str(epochs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert finished.returncode == 0 and "done" in finished.stdout, finished.stderr[-2000:]
    records = read_checkpoint(folder / "last.pt")["history"]["records"]
    assert [r["epoch"] for r in records] == list(range(1, epochs + 1))
    assert sorted(p.name for p in folder.iterdir()) == ["best.pt", "last.pt"]  # no stale temp
