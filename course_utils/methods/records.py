"""The records of the methods: :class:`Method` and :data:`METHODS`.

See :mod:`course_utils.methods` for what a record holds and who reads it (the table there).
Besides the four nucleus methods of notebooks 03-06, ``"affinities"`` (notebook 10) is the
grouping family: a U-Net predicts the foreground and the affinities of each pixel to its
neighbours (``targets.affinity_targets``), and a grouping step joins the pixels they connect
(``postprocess.affinities_to_labels``).

Adding a method means adding one record to :data:`METHODS`.

Introduced in notebook 03.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import losses
from .._shared.frozen import frozen
from ..mode import get_mode
from ..models import NETWORKS, build_network
from ..predict import network_outputs
from ..targets import (
    AFFINITY_OFFSETS,
    affinity_targets,
    cellpose_targets,
    stardist_targets,
    unet_2class_targets,
    unet_3class_targets,
)
from . import outputs

__all__ = ["METHODS", "NUCLEUS_METHODS", "Method", "get"]

#: Network arguments that fix what the outputs mean: a network with other values cannot be
#: read by the record's post-processing.
_OUTPUT_ARGS = ("out_channels", "n_classes")


@dataclass(frozen=True)
class Method:
    """The recipe of one method (see the table of :mod:`course_utils.methods`).

    Attributes
    ----------
    name, title : str
        Key in :data:`METHODS` (``"cellpose"``) and a name for tables ("Cellpose-style").
    notebook : str
        The notebook that builds the method by hand (``"05"``).
    network : str
        Class name in ``course_utils.models.NETWORKS``.
    configs : mapping of mode to mapping
        Constructor arguments of the network in ``"fast"`` and ``"full"`` mode.
    targets : callable
        ``targets(labels, **{k: config[k] for k in target_args}) -> tuple of arrays``, the
        training targets of an (h, w) label patch (``course_utils.targets``).
    target_args : tuple of str
        Network arguments the targets depend on (StarDist: ``n_rays``, ``grid``).
    loss : callable
        ``loss(output, *targets) -> scalar tensor`` (``course_utils.losses``).
    to_labels : callable
        ``to_labels(outputs, shape, grid, **postprocess) -> int32 (H, W)`` from the raw
        outputs of :func:`course_utils.predict.network_outputs`.
    postprocess : mapping
        Default keyword arguments of ``to_labels`` (the thresholds).
    predict : mapping of mode to mapping
        Keyword arguments of ``network_outputs`` (tiles) per mode.
    patch_size : mapping of mode to int
        Training patch side per mode (a valid input size for ``UNetOriginal``).
    checkpoint : str
        Folder name under ``checkpoint_dir`` where the method's notebook saves its model.
    prepare : callable or None
        ``prepare(model, labels)``: set up a fresh network from the training labels before
        training (StarDist starts its distance head at the typical distance).
    tuning : mapping of str to sequence
        The values of each post-processing option to try on validation images
        (``course_utils.methods.tune_postprocess``).
    """

    name: str
    title: str
    notebook: str
    network: str
    configs: Mapping[str, Mapping[str, Any]]
    targets: Callable[..., Any]
    loss: Callable[..., torch.Tensor]
    to_labels: Callable[..., np.ndarray]
    checkpoint: str
    patch_size: Mapping[str, int]
    predict: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    postprocess: Mapping[str, Any] = field(default_factory=dict)
    target_args: tuple[str, ...] = ()
    prepare: Callable[[nn.Module, Sequence[np.ndarray]], None] | None = None
    tuning: Mapping[str, tuple] = field(default_factory=dict)

    def config(self, mode: str | None = None, **overrides: Any) -> dict[str, Any]:
        """Constructor arguments in ``mode`` (default: the current one), updated by
        ``overrides`` (e.g. ``in_channels=2``)."""
        config = {**self.configs[mode or get_mode()], **overrides}
        known = inspect.signature(NETWORKS[self.network]).parameters
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ValueError(f"{self.name}: {unknown} are not arguments of {self.network}")
        return config

    def patch(self, mode: str | None = None) -> int:
        """Training patch side (pixels) in ``mode`` (default: the current one)."""
        return int(self.patch_size[mode or get_mode()])

    def tiles(self, mode: str | None = None) -> dict[str, Any]:
        """Keyword arguments of ``network_outputs`` (``tile_size``, ``overlap``) in ``mode``
        (default: the current one); a new dict each call."""
        return dict(self.predict.get(mode or get_mode(), {}))

    def build(self, *, seed: int = 0, mode: str | None = None, **overrides: Any) -> nn.Module:
        """A fresh network (weights drawn after ``torch.manual_seed(seed)``)."""
        torch.manual_seed(seed)
        return build_network(self.network, self.config(mode, **overrides))

    def check_network(self, model: Any, name: str = "model") -> nn.Module:
        """``model`` itself when it is a network of this method, else a clear error.

        The network's class must be the record's, its outputs the record's (``out_channels`` /
        ``n_classes``), and a checkpoint's method (``model.meta["method"]``, set by
        :func:`~course_utils.methods.load_model`) this one: a network trained for another
        method would be read with the wrong post-processing and give silent nonsense.
        """
        if isinstance(model, str):
            raise TypeError(
                f"{name} must be a network, got the string {model!r}: load one with "
                f"course_utils.zoo.load({model!r}) or course_utils.methods.load_model(path)"
            )
        if not isinstance(model, nn.Module):
            what = "a state dict" if isinstance(model, Mapping) else type(model).__name__
            raise TypeError(
                f"{name} must be a network (torch.nn.Module), got {what}: rebuild it with "
                "course_utils.methods.load_model(path) or course_utils.zoo.load(name)"
            )
        kind = type(model).__name__
        meta = getattr(model, "meta", None) or {}
        trained_for = meta.get("method") if isinstance(meta, Mapping) else None
        output_args = {k: v for k, v in self.configs["fast"].items() if k in _OUTPUT_ARGS}
        config = getattr(model, "config", {}) or {}
        wrong = [f"{k}={config.get(k)!r}" for k, v in output_args.items() if config.get(k) != v]
        if kind != self.network or wrong or trained_for not in (None, self.name):
            found = f"a {trained_for} network" if trained_for else f"a {kind}"
            found += f" ({', '.join(wrong)})" if wrong and kind == self.network else ""
            raise ValueError(
                f"{name} is {found}, but method {self.name!r} needs a {self.network} trained "
                f"for {self.name}: pass the method the network was trained for"
                + (f" (method={trained_for!r})" if trained_for in METHODS else "")
                + f", or a {self.name} network (course_utils.zoo.load({self.name!r}))"
            )
        return model

    def target_fn(self, config: Mapping[str, Any] | None = None) -> Callable[[np.ndarray], Any]:
        """``labels -> targets`` for a network with ``config`` (default: this mode's); a
        ``functools.partial`` of a module-level function, so DataLoader workers can pickle it."""
        config = self.config() if config is None else config
        return partial(self.targets, **{k: config[k] for k in self.target_args})

    def outputs_to_labels(
        self, outputs: Any, shape: tuple[int, int], *, grid: int = 1, **options: Any
    ) -> np.ndarray:
        """Instance labels (int32 ``shape``) from raw outputs, with the record's defaults for
        the options not given."""
        unknown = set(options) - set(self.postprocess)
        if unknown:
            raise TypeError(
                f"{self.name} has no post-processing option {sorted(unknown)}; "
                f"it has {sorted(self.postprocess)}"
            )
        return self.to_labels(outputs, shape, grid, **{**self.postprocess, **options})

    def segment(
        self,
        model: nn.Module,
        image: Any,
        *,
        device: Any = None,
        tile_size: Any = "default",
        overlap: int | None = None,
        **options: Any,
    ) -> np.ndarray:
        """Instance labels (int32 (H, W)) of a normalised (H, W) or (C, H, W) image: the network
        (tiled as ``predict`` says, unless ``tile_size``/``overlap`` are given), then
        :meth:`outputs_to_labels` with ``options`` over the record's defaults."""
        tiles = self.tiles()
        if tile_size != "default":
            tiles["tile_size"] = tile_size
        if overlap is not None:
            tiles["overlap"] = overlap
        out = network_outputs(model, image, device=device, **tiles)
        grid = int(getattr(model, "grid", 1))
        return self.outputs_to_labels(out, np.shape(image)[-2:], grid=grid, **options)


METHODS: Mapping[str, Method] = frozen(
    {
        "unet_weighted": Method(
            name="unet_weighted",
            title="U-Net 2-class + weight map",
            notebook="03",
            network="UNetOriginal",
            configs=frozen(
                {
                    "fast": {"depth": 3, "base_channels": 8},
                    "full": {"depth": 4, "base_channels": 64},
                }
            ),
            targets=unet_2class_targets,
            loss=losses.unet_weighted_loss,
            to_labels=outputs.foreground_labels,
            predict=frozen({"fast": {"tile_size": 380}, "full": {"tile_size": 572}}),
            patch_size=frozen({"fast": 188, "full": 428}),
            checkpoint="03_unet_weighted",
        ),
        "unet_3class": Method(
            name="unet_3class",
            title="U-Net 3-class",
            notebook="03",
            network="UNet",
            configs=frozen(
                {
                    "fast": {"out_channels": 3, "depth": 3, "base_channels": 8},
                    "full": {"out_channels": 3, "depth": 4, "base_channels": 64},
                }
            ),
            targets=unet_3class_targets,
            loss=losses.unet_3class_loss,
            to_labels=outputs.class_labels,
            postprocess=frozen({"expand": 2}),
            tuning=frozen({"expand": (1, 2, 3)}),
            predict=frozen(
                {
                    "fast": {"tile_size": 256, "overlap": 32},
                    "full": {"tile_size": 512, "overlap": 64},
                }
            ),
            patch_size=frozen({"fast": 128, "full": 256}),
            checkpoint="03_unet_3class",
        ),
        "cellpose": Method(
            name="cellpose",
            title="Cellpose-style",
            notebook="05",
            network="CellposeNet",
            configs=frozen(
                {
                    "fast": {"in_channels": 1, "base_channels": 8, "depth": 3},
                    "full": {"in_channels": 1, "base_channels": 32, "depth": 3},
                }
            ),
            targets=cellpose_targets,
            loss=losses.cellpose_loss,
            to_labels=outputs.flow_labels,
            postprocess=frozen(
                {"cellprob_threshold": 0.0, "flow_threshold": 0.4, "min_size": 15, "niter": 200}
            ),
            tuning=frozen(
                {"cellprob_threshold": (-1.0, -0.5, 0.0, 0.5, 1.0), "flow_threshold": (0.4, 0.6)}
            ),
            predict=frozen(
                {
                    "fast": {"tile_size": 256, "overlap": 64},
                    "full": {"tile_size": 256, "overlap": 64},
                }
            ),
            patch_size=frozen({"fast": 128, "full": 256}),
            checkpoint="05_cellpose",
        ),
        "stardist": Method(
            name="stardist",
            title="StarDist-style",
            notebook="06",
            network="StarDistNet",
            configs=frozen(
                {
                    "fast": {
                        "in_channels": 1,
                        "n_rays": 32,
                        "base_channels": 16,
                        "depth": 3,
                        "grid": 2,
                    },
                    "full": {
                        "in_channels": 1,
                        "n_rays": 32,
                        "base_channels": 32,
                        "depth": 3,
                        "grid": 2,
                    },
                }
            ),
            targets=stardist_targets,
            target_args=("n_rays", "grid"),
            loss=losses.stardist_loss,
            to_labels=outputs.polygon_labels,
            postprocess=frozen({"prob_thresh": 0.5, "nms_thresh": 0.4}),
            tuning=frozen(
                {"prob_thresh": (0.3, 0.4, 0.5, 0.6, 0.7), "nms_thresh": (0.3, 0.4, 0.5)}
            ),
            predict=frozen({"fast": {"tile_size": None}, "full": {"tile_size": None}}),
            patch_size=frozen({"fast": 128, "full": 256}),
            checkpoint="06_stardist",
            prepare=outputs.start_distances,
        ),
        "affinities": Method(
            name="affinities",
            title="Affinities + grouping",
            notebook="10",
            network="UNet",
            configs=frozen(
                {
                    "fast": {
                        "in_channels": 1,
                        "out_channels": 1 + len(AFFINITY_OFFSETS),
                        "depth": 3,
                        "base_channels": 8,
                    },
                    "full": {
                        "in_channels": 1,
                        "out_channels": 1 + len(AFFINITY_OFFSETS),
                        "depth": 4,
                        "base_channels": 32,
                    },
                }
            ),
            targets=affinity_targets,
            loss=losses.affinity_loss,
            to_labels=outputs.affinity_labels,
            postprocess=frozen(
                {
                    "threshold": 0.5,
                    "foreground_threshold": 0.5,
                    "method": "watershed",
                    "seed_threshold": 0.9,
                    "min_size": 15,
                }
            ),
            tuning=frozen(
                {
                    "method": ("watershed", "components"),
                    "threshold": (0.3, 0.5, 0.7),
                    "seed_threshold": (0.8, 0.9, 0.95),
                }
            ),
            predict=frozen(
                {
                    "fast": {"tile_size": 512, "overlap": 64},
                    "full": {"tile_size": 512, "overlap": 64},
                }
            ),
            patch_size=frozen({"fast": 128, "full": 256}),
            checkpoint="10_affinities",
        ),
    }
)


#: The four nucleus methods of notebooks 03, 05 and 06, in the course's order: the model zoo has
#: one model of each, notebook 07b compares them (:data:`METHODS` holds more records).
NUCLEUS_METHODS = ("unet_weighted", "unet_3class", "cellpose", "stardist")


def get(method: str | Method) -> Method:
    """The record of ``method`` (a name of :data:`METHODS`, or a record, returned as is).

    Introduced in notebook 03.
    """
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        volumes = " (3-D methods: course_utils.volumes.VOLUME_METHODS)"
        raise ValueError(f"method must be one of {tuple(METHODS)}{volumes}, got {method!r}.")
    return METHODS[method]
