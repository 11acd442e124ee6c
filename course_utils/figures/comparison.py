"""Figures that compare methods' scores: AP curves, bootstrap intervals, precision-recall
curves, counts and sizes.

The notebook computes the scores; these functions only draw them. Methods are *rows*
(``"classical"``, ``"zoo_cellpose"``, ...): ``names`` maps a row to its legend text and
``colours`` to its colour (default: the row itself and matplotlib's colour cycle).

Introduced in notebook 07.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from ..detection import DetectionCurve
from ..uncertainty import Interval


def _styles(
    rows: Sequence[str], names: Mapping[str, str] | None, colours: Mapping[str, Any] | None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Legend text and colour of every row: the given ones, else the row and the colour cycle."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = {row: (names or {}).get(row, row) for row in rows}
    colours = {row: (colours or {}).get(row, cycle[k % len(cycle)]) for k, row in enumerate(rows)}
    return names, colours


def _curve(values: Any, n: int, name: str) -> np.ndarray:
    """``values`` as a 1-D float array of length ``n``, or a ValueError naming it."""
    values = np.asarray(values, dtype=float)
    if values.shape != (n,):
        raise ValueError(f"{name} must have one value per threshold ({n}), got {values.shape}.")
    return values


def show_ap_curves(
    thresholds: Any,
    curves: Mapping[str, Any],
    ceilings: Mapping[str, Any] | None = None,
    *,
    names: Mapping[str, str] | None = None,
    colours: Mapping[str, Any] | None = None,
    dashed: Collection[str] = (),
    title: str = "AP on the test images",
) -> Figure:
    """AP = TP / (TP + FP + FN) against the IoU threshold, one line per row (and a panel of
    ceilings). The thresholds of "AP 0.5:0.95" are shaded.

    Parameters
    ----------
    thresholds : np.ndarray, float, (n,)
        The IoU thresholds.
    curves, ceilings : dict of str to np.ndarray, float, (n,)
        Row -> its AP at each threshold: of the predictions (first panel), and of the method's
        post-processing applied to perfect outputs (second panel, when given).
    names, colours : dict, optional
        Row -> legend text, row -> colour.
    dashed : collection of str
        Rows drawn dashed (the pretrained models).
    title : str
        Title of the first panel.

    Returns
    -------
    Figure

    Introduced in notebook 07.
    """
    thresholds = np.asarray(thresholds, dtype=float)
    panels = [curves] if ceilings is None else [curves, ceilings]
    names, colours = _styles([row for p in panels for row in p], names, colours)
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(7 * n, 5), sharey=True, squeeze=False)
    for k, (ax, panel) in enumerate(zip(axes[0], panels)):
        for row, ap in panel.items():
            style = "s--" if k else ("--" if row in dashed else "o-")  # ceilings: squares
            ap = _curve(ap, len(thresholds), f"the AP of {row!r}")
            ax.plot(thresholds, ap, style, ms=4, color=colours[row], label=names[row])
        ax.axvspan(0.5, 0.95, color="tab:green", alpha=0.1, label="thresholds of 'AP 0.5:0.95'")
        ax.set(xlabel="IoU threshold τ", ylabel="AP = TP / (TP + FP + FN)", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    axes[0, 0].set_title(title)
    if ceilings is not None:
        axes[0, 1].set_title("Ceiling: perfect network outputs, same post-processing")
    fig.tight_layout()
    return fig


def show_intervals(
    intervals: Mapping[str, Mapping[str, Interval]],
    columns: Sequence[str],
    *,
    names: Mapping[str, str] | None = None,
    colours: Mapping[str, Any] | None = None,
    hollow: Collection[str] = (),
) -> Figure:
    """Each row's score (dot) and bootstrap interval (bar), one panel per score.

    Parameters
    ----------
    intervals : dict of str to dict of str to Interval
        Row -> score name -> its ``uncertainty.Interval``.
    columns : sequence of str
        The scores to draw, one panel each.
    names, colours : dict, optional
        Row -> axis label, row -> colour.
    hollow : collection of str
        Rows whose dot is drawn hollow (the pretrained models).

    Returns
    -------
    Figure

    Introduced in notebook 07b.
    """
    rows = list(intervals)
    if not rows or not columns or any(set(columns) - set(iv) for iv in intervals.values()):
        raise ValueError(f"every row needs an interval for each of the columns {list(columns)}.")
    names, colours = _styles(rows, names, colours)
    n = len(columns)
    fig, axes = plt.subplots(1, n, figsize=(7 * n, 4.5), sharey=True, squeeze=False)
    for ax, col in zip(axes[0], columns):
        for y, row in enumerate(rows):
            iv = intervals[row][col]
            ax.plot([iv.low, iv.high], [y, y], "-", color=colours[row], lw=3)
            ax.plot(iv.estimate, y, "o", color=colours[row], mfc="w" if row in hollow else None)
        ax.set(xlabel=col, title=f"{col}: estimate and 95% interval")
        ax.grid(alpha=0.3)
    axes[0, 0].set_yticks(range(len(rows)), [names[r] for r in rows])
    axes[0, 0].set_ylabel("method")
    axes[0, 0].invert_yaxis()  # the first row on top (the axes share it)
    fig.tight_layout()
    return fig


def show_pr_curves(
    curves: Mapping[tuple[str, str], DetectionCurve],
    *,
    names: Mapping[str, str] | None = None,
    colours: Mapping[str, Any] | None = None,
    solid: str = "tuned",
) -> Figure:
    """Precision against recall of score-ranked detections, one line per (row, setting).

    Parameters
    ----------
    curves : dict of (str, str) to DetectionCurve
        (row, setting) -> its ``detection.detection_curve``.
    names, colours : dict, optional
        Row -> legend text, row -> colour.
    solid : str
        The setting drawn with solid lines; the others are dotted.

    Returns
    -------
    Figure

    Introduced in notebook 07b.
    """
    if not curves or any(not isinstance(c, DetectionCurve) for c in curves.values()):
        raise ValueError("curves must map (row, setting) pairs to DetectionCurves.")
    names, colours = _styles(list(dict.fromkeys(row for row, _ in curves)), names, colours)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (row, setting), c in curves.items():
        label = f"{names[row]}, {setting} threshold (COCO AP {c.ap:.2f})"
        style = "-" if setting == solid else ":"
        ax.plot(c.recall, c.precision, style, color=colours[row], label=label)
    title = f"Precision-recall of score-ranked detections (IoU {c.thresh:g})"
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.legend(fontsize=7, loc="lower left")
    return fig


def show_counts_sizes(
    truths: Sequence[Any],
    predictions: Mapping[str, Sequence[Any]],
    *,
    names: Mapping[str, str] | None = None,
    colours: Mapping[str, Any] | None = None,
) -> Figure:
    """Histograms of the object areas, and the predicted against the true count per image.

    Parameters
    ----------
    truths : list of np.ndarray, int, (H, W)
        The true label images.
    predictions : dict of str to list of np.ndarray, int, (H, W)
        Row -> its label images, in the order of ``truths``.
    names, colours : dict, optional
        Row -> legend text, row -> colour.

    Returns
    -------
    Figure

    Introduced in notebook 07b.
    """
    if not truths or any(len(p) != len(truths) for p in predictions.values()):
        raise ValueError(f"every row needs one prediction per true image ({len(truths)}).")
    names, colours = _styles(list(predictions), names, colours)
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.5))
    true_areas = np.concatenate([np.bincount(np.ravel(t))[1:] for t in truths])
    true_areas = true_areas[true_areas > 0]
    bins = np.linspace(0, np.quantile(true_areas, 0.995) * 1.3, 40)
    axes[0].hist(true_areas, bins=bins, color="lightgray", label="truth")
    true_counts = [len(np.unique(t)) - 1 for t in truths]
    for row, preds in predictions.items():
        areas = np.concatenate([np.bincount(np.ravel(p))[1:] for p in preds])
        style = {"color": colours[row], "label": names[row]}
        axes[0].hist(areas[areas > 0], bins=bins, histtype="step", lw=1.5, **style)
        axes[1].plot(true_counts, [len(np.unique(p)) - 1 for p in preds], "o", **style)
    lim = [0, max(true_counts) * 1.5]
    axes[1].plot(lim, lim, "k--", lw=1, label="perfect count")
    axes[0].set(xlabel="object area (pixels)", ylabel="number of objects")
    axes[1].set(xlabel="true number of nuclei in the image", ylabel="predicted number of objects")
    axes[0].set_title("Size distribution on the test images")
    axes[1].set_title("Counts per test image")
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
