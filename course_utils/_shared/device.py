"""The one device resolver of the course, a model's device, and the mixed-precision dtype.

Every function of ``course_utils`` that picks a device calls :func:`resolve_device`, so that
``COURSE_DEVICE`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) is honoured everywhere: an explicit
``device`` argument first, then the device of a tensor input, then ``COURSE_DEVICE``, then the
best device present (CUDA, then Apple's MPS, then the CPU). torch is imported on first use.
"""

from __future__ import annotations

import os
from typing import Any

from .validate import is_tensor

ENV_VAR = "COURSE_DEVICE"
_KINDS = ("cpu", "cuda", "mps")


def mps_available() -> bool:
    """``True`` when torch has a working Apple MPS backend."""
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def _parse(value: Any, source: str):
    """``value`` as a ``torch.device`` of a kind that is present, or a clear error."""
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(
            f"{source}={value!r} is not a device; use one of cpu, cuda, cuda:<index>, mps."
        ) from None
    if dev.type not in _KINDS:
        raise ValueError(f"{source}={value!r}: the course runs on cpu, cuda or mps only.")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(f"{source}={value!r} asked for CUDA, but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"{source}={value!r}: this machine has {torch.cuda.device_count()} GPU(s)"
            )
    if dev.type == "mps" and not mps_available():
        raise RuntimeError(f"{source}={value!r} asked for MPS, but MPS is not available")
    return dev


def default_device():
    """``COURSE_DEVICE`` when set, else CUDA, then MPS, then the CPU, as a ``torch.device``.

    Raises ``ValueError`` naming the variable when ``COURSE_DEVICE`` holds no device, and
    ``RuntimeError`` when it names one this machine does not have.
    """
    import torch

    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return _parse(env, ENV_VAR)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: Any = None, like: Any = None):
    """Where to compute: ``device`` if given, else ``like``'s device when it is a tensor, else
    :func:`default_device` (which honours ``COURSE_DEVICE``). Returns a ``torch.device``."""
    import torch

    if device is not None:
        if isinstance(device, torch.device):
            return device
        return _parse(device, "device")
    if like is not None and is_tensor(like):
        return like.device
    return default_device()


def model_device(model: Any):
    """The device of ``model``'s first parameter or buffer; the CPU for a model without any."""
    import torch

    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def native_bf16(device: Any) -> bool:
    """``True`` on GPUs that compute bfloat16 natively (Ampere or newer; ROCm)."""
    import torch

    if torch.version.hip:
        return True
    # torch.cuda.is_bf16_supported() also says True where bfloat16 is only emulated (T4).
    return torch.cuda.get_device_capability(device)[0] >= 8


def amp_dtype(amp: Any, device: Any, *, cpu_bf16: bool = False):
    """The autocast dtype for ``amp`` on ``device`` (a ``torch.device``), or ``None`` for none.

    ``"auto"``: on CUDA, bfloat16 on GPUs with native support (compute capability 8.0,
    Ampere, or newer; ROCm), else float16. bfloat16 has the range of float32 and needs no loss
    scaling; float16 does (``train.fit`` adds a GradScaler for it). Turing GPUs such as the T4
    only *emulate* bfloat16, slowly, so they get float16. On the CPU, ``"auto"`` gives
    bfloat16 only with ``cpu_bf16=True`` (training: ``train.fit``) and a CPU that computes it
    natively (:func:`course_utils.env.cpu_has_bf16`); prediction stays float32 there, except
    in a dry run of full mode (``predict`` asks with ``cpu_bf16`` set there).
    ``"gpu"``: as ``"auto"`` on CUDA, off elsewhere (float32 training on every CPU).
    ``True`` forces it on any device (bfloat16 off CUDA). Shared by ``train.fit`` and
    ``predict.predict_tiled``.
    """
    import torch

    if not (amp is None or isinstance(amp, bool) or amp in ("auto", "gpu", "bf16", "fp16")):
        raise ValueError(f"amp must be 'auto', 'gpu', True, False, 'bf16' or 'fp16', got {amp!r}")
    if amp is False or amp is None:
        return None
    if device.type == "cpu" and amp == "auto":
        from ..env import cpu_has_bf16  # env imports this module

        return torch.bfloat16 if cpu_bf16 and cpu_has_bf16() else None
    cuda = device.type == "cuda"
    if amp in ("auto", "gpu") and not cuda:
        return None
    if amp in (True, "auto", "gpu"):
        amp = "fp16" if cuda and not native_bf16(device) else "bf16"
    return torch.bfloat16 if amp == "bf16" else torch.float16
