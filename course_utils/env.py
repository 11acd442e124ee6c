"""Device selection, seeding and an environment report for the top of every notebook.

Introduced in notebook 00.
"""

from __future__ import annotations

import importlib
import os
import platform
import random
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._shared.device import resolve_device
from .mode import get_mode

DEFAULT_PACKAGES = ("numpy", "scipy", "skimage", "matplotlib", "torch", "torchvision")
CPUINFO = Path("/proc/cpuinfo")


def _cpuinfo() -> str:
    try:
        return CPUINFO.read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows: what the zoo's
    cards and the benchmarks record as the machine."""
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX flags in
    ``/proc/cpuinfo``); ``False`` where that file cannot be read. ``train.fit`` trains in
    bfloat16 there.

    Introduced in notebook 03.
    """
    flags = _cpuinfo()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def get_device(prefer: str | None = None):
    """Pick the best available torch device: ``cuda``, then ``mps``, then ``cpu``.

    Parameters
    ----------
    prefer : str, optional
        Force a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``). The environment
        variable ``COURSE_DEVICE`` does the same without code changes; every function of
        ``course_utils`` that picks a device honours it.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If ``prefer`` or ``COURSE_DEVICE`` is not a device name (the message names which).
    RuntimeError
        If the preferred device is not available, with the reason.

    Introduced in notebook 02b.
    """
    return resolve_device(prefer or None)


def seed_everything(seed: int = 0, deterministic: bool = True) -> np.random.Generator:
    """Seed Python, NumPy and torch, and return a NumPy generator seeded the same way.

    With ``deterministic=True`` torch is asked for deterministic algorithms where it has them
    (``warn_only``, so that a GPU op without one does not stop a notebook).

    Introduced in notebook 00.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (seeding the legacy global state is the point)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return np.random.default_rng(seed)


def _version(name: str) -> str | None:
    try:
        module = importlib.import_module(name)
    except Exception:  # a broken install must not stop the report
        return None
    return str(getattr(module, "__version__", "?"))


def _torch_problems(torch) -> list[str]:
    problems = []
    cuda_build = torch.version.cuda
    if not torch.cuda.is_available():
        if cuda_build and torch.cuda.device_count() == 0:
            problems.append(
                f"torch is a CUDA {cuda_build} build but no GPU is visible: running on the CPU "
                "(fine for fast mode; for full mode use a machine with an NVIDIA GPU)."
            )
        return problems
    try:
        torch.zeros(1, device="cuda")
    except Exception as err:  # old driver, broken install
        problems.append(
            f"a GPU is visible but CUDA fails to start ({err}); the NVIDIA driver may be older "
            f"than this CUDA {cuda_build} build needs. Update the driver or install a torch "
            "build for an older CUDA."
        )
    return problems


def check_env(packages: Sequence[str] = DEFAULT_PACKAGES, verbose: bool = True) -> dict:
    """Print what this notebook runs on, and explain problems instead of crashing.

    Parameters
    ----------
    packages : sequence of str
        Import names whose versions to report; a missing one is reported, not raised.
    verbose : bool
        Print the report (``True``) or only return it.

    Returns
    -------
    dict
        ``python``, ``platform``, ``mode`` (``"invalid"`` when ``COURSE_MODE`` is not a mode),
        ``device`` (``None`` when none can be used, e.g. ``COURSE_DEVICE`` names no device),
        ``gpu`` (name or ``None``),
        ``gpu_memory_gb``, ``versions`` (name -> version or ``None``) and ``problems``
        (list of human-readable strings; empty when all is well).

    Introduced in notebook 00.
    """
    versions = {name: _version(name) for name in packages}
    problems = [
        f"package {name!r} is missing: run the README set-up command (make setup)."
        for name, v in versions.items()
        if v is None
    ]
    try:
        mode = get_mode()
    except ValueError as err:  # a report must not crash on the very thing it should report
        mode = "invalid"
        problems.append(str(err))
    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "mode": mode,
        "device": None,
        "gpu": None,
        "gpu_memory_gb": None,
        "versions": versions,
        "problems": problems,
    }
    if versions.get("torch") is not None:
        import torch

        problems.extend(_torch_problems(torch))
        try:
            report["device"] = str(get_device())
        except (RuntimeError, ValueError) as err:  # e.g. COURSE_DEVICE=garbage
            problems.append(str(err))
        if torch.cuda.is_available() and not problems:
            props = torch.cuda.get_device_properties(0)
            report["gpu"] = props.name
            report["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
    if verbose:
        _print_report(report)
    return report


def _print_report(report: dict) -> None:
    print(f"Python {report['python']} on {report['platform']}")
    print(f"mode: {report['mode']}   (set COURSE_MODE=fast|full|auto to change)")
    gpu = report["gpu"]
    extra = f" ({gpu}, {report['gpu_memory_gb']} GiB)" if gpu else ""
    print(f"device: {report['device'] or 'none (see below)'}{extra}")
    print("versions: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in report["versions"].items()))
    for problem in report["problems"]:
        print(f"  ! {problem}")


def dataloader_workers(full: int = 4) -> int:
    """Number of DataLoader worker processes: 0 in fast mode, up to ``full`` in full mode.

    Workers prepare patches while the GPU trains. They are used only where processes start by
    ``fork`` (Linux): with ``spawn`` (macOS, Windows) a function defined in a notebook cannot be
    sent to a worker, so the data is prepared in the main process there. Never more than the
    machine's cores.

    Introduced in notebook 03.
    """
    import multiprocessing

    if get_mode() == "fast" or multiprocessing.get_start_method(allow_none=False) != "fork":
        return 0
    return max(0, min(int(full), os.cpu_count() or 1))
