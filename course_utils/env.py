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

import numpy as np

from .mode import get_mode

DEFAULT_PACKAGES = ("numpy", "scipy", "skimage", "matplotlib", "torch", "torchvision")


def get_device(prefer: str | None = None):
    """Pick the best available torch device: ``cuda``, then ``mps``, then ``cpu``.

    Parameters
    ----------
    prefer : str, optional
        Force a device (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``). The environment
        variable ``COURSE_DEVICE`` does the same without code changes.

    Returns
    -------
    torch.device

    Raises
    ------
    RuntimeError
        If the preferred device is not available, with the reason.

    Introduced in notebook 00.
    """
    import torch

    prefer = prefer or os.environ.get("COURSE_DEVICE") or None
    if prefer is not None:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {prefer!r} asked for, but CUDA is not available")
        if dev.type == "mps" and not _mps_available():
            raise RuntimeError(f"device {prefer!r} asked for, but MPS is not available")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _amp_dtype(amp, device):
    """The autocast dtype for ``amp`` on ``device`` (a ``torch.device``), or None for none.

    ``"auto"``: on CUDA only; bfloat16 on GPUs with native support (compute capability 8.0,
    Ampere, or newer; ROCm), else float16. bfloat16 has the range of float32 and needs no loss
    scaling; float16 does (``train.fit`` adds a GradScaler for it). Turing GPUs such as the T4
    only *emulate* bfloat16, slowly, so they get float16. ``True`` forces it on any device
    (bfloat16 off CUDA). Shared by ``train.fit`` and ``predict.predict_tiled``.
    """
    import torch

    if not (amp is None or isinstance(amp, bool) or amp in ("auto", "bf16", "fp16")):
        raise ValueError(f"amp must be 'auto', True, False, 'bf16' or 'fp16', got {amp!r}")
    cuda = device.type == "cuda"
    if amp is False or amp is None or (amp == "auto" and not cuda):
        return None
    if amp is True or amp == "auto":
        amp = "fp16" if cuda and not _native_bf16(device) else "bf16"
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _native_bf16(device) -> bool:
    import torch

    if torch.version.hip:
        return True
    # torch.cuda.is_bf16_supported() also says True where bfloat16 is only emulated (T4).
    return torch.cuda.get_device_capability(device)[0] >= 8


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
        ``python``, ``platform``, ``mode``, ``device``, ``gpu`` (name or ``None``),
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
    report = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "mode": get_mode(),
        "device": "cpu",
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
        except RuntimeError as err:
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
    print(f"device: {report['device']}{extra}")
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
