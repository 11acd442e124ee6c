"""Writing into a user's folder: say clearly when it cannot be written, before work is lost.

A read-only folder or a full disk otherwise surfaces as a raw ``OSError`` from a temporary
file, or as a torch-internal ``RuntimeError`` (``enforce fail at inline_container.cc``) after
an epoch of training. Standard library only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["check_writable", "unwritable_error"]


def unwritable_error(directory: Path, err: BaseException, name: str | None = None) -> OSError:
    """The error for a checkpoint folder that cannot be written (read-only, full, gone)."""
    usage = shutil.disk_usage(directory) if directory.exists() else None
    full = usage is not None and usage.free < 64 * 2**20
    reason = "the disk is full" if full else "the folder is read-only or the disk is full"
    what = f"{name} into " if name else "into "
    return OSError(
        f"cannot write {what}the checkpoint folder {directory}: {reason} "
        f"({getattr(err, 'strerror', None) or str(err).splitlines()[0][:120]}). Free some space "
        "or give fit another checkpoint_dir; the checkpoints already there are untouched."
    )


def check_writable(directory: Path) -> None:
    """Write and delete a small file in ``directory``, so that a read-only folder or a full disk
    is reported before training starts rather than after its first epoch."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check.") as fh:
            fh.write(b"\0" * 65536)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        raise unwritable_error(directory, err) from None
