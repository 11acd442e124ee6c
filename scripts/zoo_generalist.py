"""The generalist zoo's measurements after training: its size model, the diameters at which it
segments an image as it is, and its scores per dataset through ``course_utils.segment``.
Used by ``scripts/train_zoo.py``."""

from __future__ import annotations

import math
import time

import numpy as np

import course_utils as cu

#: Zooms of the validation images (shown at the training diameter) at which segmenting as is
#: and rescaling back are compared, to find the diameters where rescaling does not help.
ZOOMS = (0.35, 0.42, 0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0, 2.4, 2.8)
#: Segmenting as is may lose this much AP@0.5 against rescaling and still count as no worse.
TOLERANCE = 0.005


def fit_sizes(model, data: dict, n_train: int = 160, n_val: int = 48) -> dict:
    """The size model of ``model`` on every k-th training image (``n_train`` of them) and
    ``n_val`` validation images, both shown at the training diameter."""
    images, labels, _ = data["train"]
    step = max(1, len(images) // n_train)
    vstep = max(1, len(data["val"][0]) // n_val)
    return cu.sizing.fit_size_model(
        model,
        images[::step],
        labels[::step],
        val_images=data["val"][0][::vstep],
        val_labels=data["val"][1][::vstep],
    )


def _ap50(labels, preds) -> float:
    return float(cu.metrics.matching_dataset(labels, preds, [0.5])[0].accuracy)


def trusted_range(method: str, model, data: dict, params: dict, n: int = 30) -> tuple:
    """``((low, high) px, table)``: the widest range of zooms around 1 where segmenting the
    zoomed validation images as they are scores within :data:`TOLERANCE` of rescaling them
    back to the training diameter, in pixels of nucleus diameter."""
    record = cu.methods.get(method)
    step = max(1, len(data["val"][0]) // n)
    images, labels = data["val"][0][::step], data["val"][1][::step]
    diameter = float(model.meta["train_diameter_px"])
    table = []
    for zoom in ZOOMS:
        xs = [cu.scale.rescale_image(x, zoom) for x in images]
        ys = [cu.scale.rescale_labels(y, shape=x.shape) for x, y in zip(xs, labels)]
        as_is = [record.segment(model, x, **params) for x in xs]
        back = [
            cu.scale.rescale_labels(
                record.segment(model, cu.scale.rescale_image(x, 1 / zoom), **params), shape=x.shape
            )
            for x in xs
        ]
        table.append({"zoom": zoom, "as_is": _ap50(ys, as_is), "rescaled": _ap50(ys, back)})
    ok = [row["as_is"] >= row["rescaled"] - TOLERANCE for row in table]
    centre = ZOOMS.index(1.0)
    low = high = centre
    while low > 0 and ok[low - 1]:
        low -= 1
    while high < len(ZOOMS) - 1 and ok[high + 1]:
        high += 1
    found = (round(diameter * ZOOMS[low], 1), round(diameter * ZOOMS[high], 1))
    return found, [{k: round(v, 4) for k, v in row.items()} for row in table]


def score_datasets(method: str, model, tests: dict) -> dict:
    """Per test set: pooled AP@0.5, AP@0.75, F1@0.5 of ``segment(image, diameter=None)``, the
    diameters it found against the true medians, and the time it took."""
    found = {}
    for name, (images, labels) in tests.items():
        preds, errors, started = [], [], time.perf_counter()
        for x, y in zip(images, labels):
            pred, used = cu.segment(x, method, model=model, progress=False, return_diameter=True)
            preds.append(pred)
            true = cu.scale.median_diameter(y)
            if math.isfinite(true) and math.isfinite(used):
                errors.append(used / true - 1)
        stats = cu.metrics.matching_dataset(labels, preds, [0.5, 0.75])
        errors = np.abs(errors)
        found[name] = {
            "images": len(images),
            "ap50": round(float(stats[0].accuracy), 4),
            "ap75": round(float(stats[1].accuracy), 4),
            "f1_50": round(float(stats[0].f1), 4),
            "diameter_error_median": round(float(np.median(errors)), 4),
            "diameter_within_10pct": round(float(np.mean(errors <= 0.10)), 4),
            "seconds_per_image": round((time.perf_counter() - started) / len(images), 3),
        }
    return found


#: Zooms of the BBBC039 test images at which the diameter estimate is measured (0.5x-2x).
ESTIMATE_ZOOMS = (0.5, 0.71, 1.0, 1.41, 2.0)


def diameter_accuracy(method: str, model, data: dict, zoomed: str = "bbbc039", n: int = 16) -> dict:
    """How close ``segment(diameter=None)``'s estimate comes to the true median diameter: on
    ``n`` test images of dataset ``zoomed`` at each of :data:`ESTIMATE_ZOOMS`, and on the
    validation images of the other datasets as they are (DSB2018's, for the generalist). Per
    set: the quantiles (5, 25, 50, 75, 95 %) of ``estimate / true - 1`` and the fraction within
    10 %."""
    images, labels = data["test"][zoomed]
    step = max(1, len(images) // n)
    sets = {
        f"{zoomed}_test_zoomed": [
            (cu.scale.rescale_image(x, z), cu.scale.median_diameter(y) * z)
            for x, y in zip(images[::step], labels[::step])
            for z in ESTIMATE_ZOOMS
        ]
    }
    for name, (xs, ys) in data["val_as_is"].items():
        if name != zoomed:  # as they are, not resized
            sets[f"{name}_val"] = [
                (x, cu.scale.median_diameter(y)) for x, y in zip(xs, ys) if y.max()
            ]
    found = {}
    for name, pairs in sets.items():
        errors = []
        for x, true in pairs:
            _, used = cu.segment(x, method, model=model, progress=False, return_diameter=True)
            errors.append(used / true - 1 if math.isfinite(used) else np.inf)
        errors = np.asarray(errors)
        finite = errors[np.isfinite(errors)]
        found[name] = {
            "images": len(pairs),
            "no_estimate": int(len(errors) - len(finite)),
            "quantiles_5_25_50_75_95": [
                round(float(q), 4) for q in np.quantile(finite, [0.05, 0.25, 0.5, 0.75, 0.95])
            ],
            "within_10pct": round(float(np.mean(np.abs(errors) <= 0.10)), 4),
        }
    return found


def baseline_datasets(tests: dict) -> dict:
    """The classical baseline (notebook 01) on each test set."""
    found = {}
    for name, (images, labels) in tests.items():
        preds = [cu.classical.baseline(x) for x in images]
        stats = cu.metrics.matching_dataset(labels, preds, [0.5, 0.75])
        found[name] = {
            "ap50": round(float(stats[0].accuracy), 4),
            "ap75": round(float(stats[1].accuracy), 4),
            "f1_50": round(float(stats[0].f1), 4),
        }
    return found


def baseline(tests: dict, datasets, n: int | None = None) -> dict:
    """The classical baseline (notebook 01, ``cu.classical.BASELINE``) on the nuclei test images:
    BBBC039's as ``test``, every dataset's as ``by_dataset`` when there are several. ``tests``
    without nuclei (the whole-cell run): the first ``n`` test images of each of ``datasets``."""
    if "bbbc039" not in tests:
        tests = {name: cu.data.load_split(name, "test", n=n) for name in datasets}
    by_dataset = baseline_datasets(tests)
    found = {"min_distance": cu.classical.BASELINE["min_distance"], "test": by_dataset["bbbc039"]}
    return {**found, "by_dataset": by_dataset} if len(tests) > 1 else found


def training_counts(data: dict, shares: dict, sources: list[str]) -> dict:
    """Images and nuclei of each training set, with its share of the patches."""
    counts: dict = {}
    for name, labels in zip(sources, data["train"][1]):
        entry = counts.setdefault(name, {"images": 0, "nuclei": 0, "share": shares[name]})
        entry["images"] += 1
        entry["nuclei"] += int(len(np.unique(labels)) - 1)
    return counts
