"""The longer figures of the notebooks, one module per chapter's topic.

A notebook teaches an idea in a few lines and calls a figure from here to show it, so that a
student reads the idea, not the plotting code. Each module is named after its topic
(``figures.stardist``, ``figures.evaluation``, ...) and loads on first use:
``cu.figures.stardist.show_rays(...)``. Every figure returns the matplotlib ``Figure`` (or
``Axes``) it drew, with a title and labelled axes.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

__all__ = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'course_utils.figures' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
