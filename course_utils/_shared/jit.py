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

__all__ = ["numba", "one_thread_in_workers", "use_numba"]


def use_numba(device) -> bool:
    """Whether work for ``device`` (a ``torch.device``) runs in the compiled CPU kernels.

    The CPU does; other devices use the tensor code. One switch for every module, so that a
    test can send the CPU down the tensor path too (``monkeypatch.setattr(jit, "use_numba",
    ...)``).
    """
    return device.type == "cpu"


def one_thread_in_workers() -> None:
    """Inside a DataLoader worker, give numba's parallel kernels one thread (no-op elsewhere).

    The workers are the parallelism there (torch gives each one thread for the same reason):
    eight workers whose targets each start a thread per core would fight over the cores. The
    training datasets call it for every item; it costs a lookup once it has been set.
    """
    from torch.utils.data import get_worker_info

    if get_worker_info() is not None and numba.get_num_threads() > 1:
        numba.set_num_threads(1)
