"""Score a method's network on labelled images, and tune its post-processing on them.

The network runs once per image; only the post-processing is repeated for each combination
of options, as notebooks 06 and 07 do by hand and the model zoo does for every model.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from torch import nn
from tqdm.auto import tqdm

from ..metrics import matching_dataset
from ..predict import network_outputs
from .records import Method, get

__all__ = ["evaluate", "outputs_of", "score", "tune_postprocess"]

#: Where a method's network outputs the logit of its object probability (notebooks 05, 06).
PROB_CHANNEL = {"cellpose": 2, "stardist": 0}


def outputs_of(
    method: str | Method,
    model: nn.Module,
    images: Sequence[np.ndarray],
    *,
    device: Any = None,
    progress: bool = False,
) -> list[np.ndarray]:
    """Raw network outputs of every image, tiled as the record says for this mode."""
    record = get(method)
    tiles = record.tiles()
    return [
        network_outputs(model, x, device=device, **tiles)
        for x in tqdm(images, desc="network", disable=not progress, leave=False)
    ]


def _scores(truth: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> dict[str, float]:
    stats = matching_dataset(list(truth), list(preds), [0.5, 0.75])
    return {"ap50": stats[0].accuracy, "ap75": stats[1].accuracy, "f1_50": stats[0].f1}


def score(
    method: str | Method,
    model: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    outputs: Sequence[np.ndarray] | None = None,
    device: Any = None,
    **options: Any,
) -> dict[str, float]:
    """Pooled scores of ``model`` on ``images`` against ``labels``: ``ap50`` and ``ap75``
    (TP / (TP + FP + FN) at IoU 0.5 and 0.75, summed over the images) and ``f1_50``.

    ``options`` override the record's post-processing defaults; ``outputs`` (from
    :func:`outputs_of`) skips the network.
    """
    record = get(method)
    if len(images) != len(labels) or not len(images):
        raise ValueError(
            f"need as many label images as images, got {len(images)} and {len(labels)}"
        )
    outs = outputs if outputs is not None else outputs_of(record, model, images, device=device)
    grid = int(getattr(model, "grid", 1))
    preds = [
        record.outputs_to_labels(o, np.shape(x)[-2:], grid=grid, **options)
        for o, x in zip(outs, images)
    ]
    return _scores(labels, preds)


def evaluate(
    method: str | Method,
    model: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    device: Any = None,
) -> tuple[list[np.ndarray], dict[str, float]]:
    """Labels of ``images`` with the record's post-processing, and what they score.

    Returns ``(predictions, scores)``: int32 label images, one per image, and the pooled scores
    at IoU 0.5 against ``labels``: ``ap50``, ``f1_50``, ``fp`` and ``fn``. For the methods of
    :data:`PROB_CHANNEL` also ``background_prob``, the mean object probability the network
    gives the pixels that are background in ``labels`` (a network never shown background calls
    it "object", notebook 09).

    Introduced in notebook 09.
    """
    record = get(method)
    if len(images) != len(labels) or not len(images):
        raise ValueError(
            f"need as many label images as images, got {len(images)} and {len(labels)}"
        )
    outs = outputs_of(record, model, images, device=device)
    grid = int(getattr(model, "grid", 1))
    preds = [record.outputs_to_labels(o, np.shape(x)[-2:], grid=grid) for o, x in zip(outs, images)]
    stats = matching_dataset(list(labels), preds, 0.5)
    scores = {"ap50": stats.accuracy, "f1_50": stats.f1, "fp": stats.fp, "fn": stats.fn}
    if record.name in PROB_CHANNEL:
        logits = [o[PROB_CHANNEL[record.name]] for o in outs]
        on_background = [lg[np.asarray(y)[::grid, ::grid] == 0] for lg, y in zip(logits, labels)]
        scores["background_prob"] = float(expit(np.concatenate(on_background)).mean())
    return preds, scores


def tune_postprocess(
    method: str | Method,
    model: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    *,
    grid: Mapping[str, Sequence] | None = None,
    key: str = "ap50",
    device: Any = None,
    progress: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The post-processing options that maximise ``key`` on these (validation) images.

    Tries every combination of ``grid`` (default: the record's ``tuning``). Returns
    ``(best options, table)``: the table has one row per combination with its scores; ties go
    to the first combination (the grids list the record's defaults early).

    Introduced in notebook 07b.
    """
    record = get(method)
    grid = dict(record.tuning if grid is None else grid)
    outs = outputs_of(record, model, images, device=device, progress=progress)
    names = list(grid)
    table = []
    for values in tqdm(
        list(itertools.product(*(grid[n] for n in names))) or [()],
        desc="post-processing",
        disable=not progress,
        leave=False,
    ):
        options = dict(zip(names, values))
        table.append({**options, **score(record, model, images, labels, outputs=outs, **options)})
    best = max(table, key=lambda row: row[key])
    return {n: best[n] for n in names}, table
