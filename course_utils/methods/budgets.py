"""Training budgets by name: how long and how hard each training run of the course trains.

One table, :data:`BUDGETS`, holds every budget the course trains with: the mode's budgets
(``"fast"``, ``"full"``: notebook 07b trains missing models with them, and
:func:`~course_utils.methods.train_method` uses them when given no budget), the lessons'
(``"sparse-fast"``/``"sparse-full"``: notebook 09; ``"cells-fast"``/``"cells-full"``: notebooks
10 and 10b; ``"kromp-fast"``/``"kromp-full"``: notebook 08's fine-tuning on Kromp), a user's
fine-tuning (``"fine-tune"``, the default of ``course_utils.fine_tune``) and the model zoo's
(``"zoo-cpu"``: about 30 minutes a model on 2 CPU cores; ``"zoo-gpu"``: the full-mode networks).
Each name maps a run (a method's name, or a notebook's name for a run) to a :class:`Budget`;
``"*"`` is the budget of any other run.

Introduced in notebook 07b.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .._shared.validate import check_int, check_real
from ..mode import get_mode

__all__ = ["BUDGETS", "SCHEDULES", "Budget", "budget"]

#: The learning-rate schedules a budget may name (``_shared.schedules.lr_schedule``).
SCHEDULES = ("cosine", "onecycle", "constant")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long and how hard one training run trains.

    Attributes
    ----------
    epochs : int
        Epochs; each ends with validation and a checkpoint.
    batch_size : int
        Patches per optimiser step (the global batch under torchrun).
    lr : float
        (Peak) learning rate of Adam.
    schedule : str
        ``"cosine"`` over the epochs, ``"onecycle"`` (warm-up then annealing, per batch) or
        ``"constant"``.
    patches_per_epoch : int or None
        Random patches an epoch; ``None``: ``patches_per_image`` per training image.
    patches_per_image : int
        See ``patches_per_epoch``.
    patch_size : int or None
        Side of the square training patches (pixels); ``None``: the method record's for the mode.
    config : mapping
        Network arguments over the record's (the zoo trains wider networks than fast mode).
    """

    epochs: int
    batch_size: int = 4
    lr: float = 2e-3
    schedule: str = "cosine"
    patches_per_epoch: int | None = None
    patches_per_image: int = 8
    patch_size: int | None = None
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_real(self.lr, "lr", minimum=0)
        check_int(self.patches_per_image, "patches_per_image", minimum=1)
        for name in ("patches_per_epoch", "patch_size"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, minimum=1)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        object.__setattr__(self, "config", MappingProxyType(dict(self.config)))

    def patches(self, n_images: int) -> int:
        """Patches an epoch for ``n_images`` training images."""
        return self.patches_per_epoch or self.patches_per_image * n_images

    def steps(self, n_images: int) -> int:
        """Optimiser steps of the whole run for ``n_images`` training images."""
        return self.epochs * -(-self.patches(n_images) // self.batch_size)

    def replace(self, **changes: Any) -> Budget:
        """A copy with ``changes`` (those given as ``None`` are left as they are)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for a checkpoint's ``meta`` or a model card."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {**values, "config": dict(self.config)}


def _same(runs: tuple[str, ...], value: Budget) -> dict[str, Budget]:
    return dict.fromkeys(runs, value)


def _zoo_cpu(patches: int, patch: int, lr: float = 3e-3, config: Mapping | None = None) -> Budget:
    """30 one-cycle epochs of batches of 8 with a network of depth 3 and 16 base channels."""
    config = config or {"depth": 3, "base_channels": 16}
    return Budget(30, 8, lr, "onecycle", patches, patch_size=patch, config=config)


BUDGETS: Mapping[str, Mapping[str, Budget]] = MappingProxyType(
    {
        # Notebook 07 (and train_method without a budget). A few dozen steps in fast mode need a
        # large learning rate; StarDist needs the one-cycle schedule to learn its distances.
        "fast": {
            "*": Budget(4, batch_size=4, lr=1e-2, patches_per_epoch=96),
            "stardist": Budget(
                2, batch_size=4, lr=6e-3, schedule="onecycle", patches_per_epoch=500
            ),
        },
        "full": {
            "*": Budget(30, batch_size=8, lr=1e-3, patches_per_epoch=1600),
            "cellpose": Budget(60, batch_size=8, lr=1e-3, patches_per_epoch=1600),
            "stardist": Budget(
                60, batch_size=8, lr=3e-3, schedule="onecycle", patches_per_epoch=2000
            ),
        },
        # Notebook 09: sparse annotations.
        "sparse-fast": {
            "*": Budget(2, batch_size=8, lr=1e-2, patches_per_epoch=256, patch_size=64),
            "stardist": Budget(
                2, batch_size=8, lr=6e-3, schedule="onecycle", patches_per_epoch=1536, patch_size=64
            ),
        },
        "sparse-full": {
            "*": Budget(20, batch_size=16, lr=1e-3, patches_per_epoch=1600, patch_size=256),
            "stardist": Budget(
                20,
                batch_size=16,
                lr=3e-3,
                schedule="onecycle",
                patches_per_epoch=1600,
                patch_size=256,
            ),
        },
        # Notebook 10: whole cells (one-cycle; full mode 5,000-10,000 steps, ~20 min a network).
        "cells-fast": {
            "*": Budget(12, batch_size=4, lr=1e-2, schedule="onecycle", patches_per_epoch=32),
            "synthetic": Budget(
                4, batch_size=8, lr=1e-2, schedule="onecycle", patches_per_epoch=64
            ),
            "joint": Budget(8, batch_size=8, lr=1e-2, schedule="onecycle", patches_per_epoch=64),
            "stardist": Budget(
                2, batch_size=4, lr=6e-3, schedule="onecycle", patches_per_epoch=160
            ),
        },
        "cells-full": {
            "*": Budget(100, batch_size=16, lr=2e-3, schedule="onecycle", patches_per_epoch=1600),
            **_same(
                ("synthetic", "joint"),
                Budget(40, batch_size=16, lr=2e-3, schedule="onecycle", patches_per_epoch=1600),
            ),
            "stardist": Budget(
                100, batch_size=16, lr=3e-3, schedule="onecycle", patches_per_epoch=1600
            ),
        },
        # Notebook 11: volumes, batches of 2 crops (fast: 40 steps; full: 4,000).
        "volumes-fast": {
            "*": Budget(1, batch_size=2, lr=3e-3, schedule="onecycle", patches_per_epoch=80)
        },
        "volumes-full": {
            "*": Budget(10, batch_size=2, lr=3e-3, schedule="onecycle", patches_per_epoch=800)
        },
        # A user's fine-tuning: a small learning rate, so that a pretrained network moves little.
        "fine-tune": {"*": Budget(10, batch_size=8, lr=5e-4, patches_per_image=32)},
        # Notebook 08: fine-tuning on Kromp, the same optimiser steps for every run (20 / 600).
        "kromp-fast": {"*": Budget(2, batch_size=4, lr=5e-4, patches_per_epoch=40, patch_size=128)},
        "kromp-full": {
            "*": Budget(2, batch_size=8, lr=5e-4, patches_per_epoch=2400, patch_size=256)
        },
        # The model zoo (scripts/train_zoo.py): about 30 minutes a model on 2 CPU cores.
        "zoo-cpu": {
            "unet_weighted": _zoo_cpu(1600, 188, lr=2e-3),
            "unet_3class": _zoo_cpu(1920, 128),
            "cellpose": _zoo_cpu(880, 128),
            "stardist": _zoo_cpu(1440, 128, config={"base_channels": 32, "depth": 3, "grid": 2}),
            # The whole-cell model (Usiigaci, notebook 10): one level deeper, for cells that
            # stretch over three times their 30 px diameter; 20 epochs of its 40 images.
            "cellpose_cells": _zoo_cpu(880, 128, config={"depth": 4, "base_channels": 16}).replace(
                epochs=20
            ),
        },
        # The zoo's full-mode networks on a GPU (patch: the record's full-mode one).
        "zoo-gpu": {
            "*": Budget(100, batch_size=16, lr=1e-3, schedule="onecycle", patches_per_epoch=3200),
            # The whole-cell model: one level deeper, as on the CPU (cells three diameters long).
            "cellpose_cells": Budget(
                100, 16, 1e-3, "onecycle", patches_per_epoch=3200, config={"depth": 4}
            ),
        },
    }
)


def budget(
    name: str | Budget | None = None, run: str = "*", *, mode: str | None = None, **changes: Any
) -> Budget:
    """The budget ``name`` of ``run`` (a method's name, or a named run of a notebook).

    ``name``: a key of :data:`BUDGETS`; a name without its mode (``"sparse"``) means the current
    mode's (``"sparse-fast"``); ``None`` is the mode itself (``"fast"`` or ``"full"``); a
    :class:`Budget` is taken as it is. A run without an entry of its own gets the ``"*"`` one.
    ``changes`` replace fields (``epochs=3``; ``None`` values are ignored). A dry run of full
    mode (:mod:`course_utils.mode`) gets the full budget: ``train.fit`` cuts the training short
    and logs the full run's length for the estimates.
    Raises ``KeyError`` naming the budgets there are.

    Introduced in notebook 07b.
    """
    if isinstance(name, Budget):
        return name.replace(**changes)
    mode = mode or get_mode()
    key = name or mode
    if key not in BUDGETS and f"{key}-{mode}" in BUDGETS:
        key = f"{key}-{mode}"
    if key not in BUDGETS:
        raise KeyError(f"no training budget {name!r}; there are {sorted(BUDGETS)}")
    runs = BUDGETS[key]
    if run not in runs and "*" not in runs:
        raise KeyError(f"budget {key!r} has no entry for {run!r}: it has {sorted(runs)}")
    return runs.get(run, runs.get("*")).replace(**changes)
