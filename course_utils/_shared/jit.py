"""numba, set up once for the course's parallel kernels.

numba's default threading layer on Linux is GNU OpenMP, the same runtime torch uses. After a
parallel kernel has run, that layer (a) resets the OpenMP thread count torch shares (so
``OMP_NUM_THREADS=1`` no longer holds for torch) and (b) makes forked DataLoader workers abort
("fork() called from a process already using GNU OpenMP"). The ``workqueue`` layer has neither
problem; it is not safe for concurrent calls from several threads, which the course never makes.
``NUMBA_THREADING_LAYER`` set by the user still wins.
"""

from __future__ import annotations

import os

import numba

if "NUMBA_THREADING_LAYER" not in os.environ:
    numba.config.THREADING_LAYER = "workqueue"

__all__ = ["numba", "use_numba"]


def use_numba(device) -> bool:
    """Whether work for ``device`` (a ``torch.device``) runs in the compiled CPU kernels.

    The CPU does; other devices use the tensor code. One switch for every module, so that a
    test can send the CPU down the tensor path too (``monkeypatch.setattr(jit, "use_numba",
    ...)``).
    """
    return device.type == "cpu"
