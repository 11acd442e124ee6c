"""course_utils: the companion library of the course on deep learning for microscopy segmentation.

The modules follow the flow of data, and each imports only from those to its left::

    data -> targets -> models -> losses -> train / predict -> postprocess -> metrics
         -> methods (one record per method) -> zoo -> segmentation -> fine_tuning  (plot beside)

``volumes`` carries targets, training crops, tiled prediction and a baseline to (Z, Y, X)
stacks (notebook 11). ``mode`` (fast vs full) and ``env`` (device, seeding, environment report)
sit under all of them.
Submodules load on first use, so ``import course_utils as cu`` is cheap and ``cu.metrics`` works.
"""

from __future__ import annotations

import importlib
from typing import Any

from .mode import get_mode, is_dryrun, is_fast, pick, pick_steps

__version__ = "0.1.0"

_SUBMODULES = (
    "blockwise",
    "checks",
    "classical",
    "data",
    "diameter",
    "diagrams",
    "distributed",
    "dryrun",
    "env",
    "figures",
    "fine_tuning",
    "history",
    "losses",
    "methods",
    "metrics",
    "mode",
    "overlap",
    "prose",
    "models",
    "plot",
    "postprocess",
    "predict",
    "scale",
    "segmentation",
    "sizing",
    "targets",
    "train",
    "volumes",
    "zoo",
)

#: The calls a user needs on their own images, at the top level: ``course_utils.segment(image)``.
_TOP_LEVEL = {
    "segment": "segmentation",
    "fine_tune": "fine_tuning",
    "estimate_diameter": "segmentation",
    "glue": "prose",
}

__all__ = ["get_mode", "is_dryrun", "is_fast", "pick", "pick_steps", *_TOP_LEVEL, *_SUBMODULES]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _TOP_LEVEL:
        return getattr(importlib.import_module(f".{_TOP_LEVEL[name]}", __name__), name)
    raise AttributeError(f"module 'course_utils' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES) | set(_TOP_LEVEL))
