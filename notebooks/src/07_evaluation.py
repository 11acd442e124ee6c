# %% [markdown]
# # 07 · Evaluation: metrics and their pitfalls
#
# **What you will learn**
# - the pixel metrics (accuracy, precision, recall, IoU, Dice) from scratch, the class imbalance
#   trap, and why IoU and Dice always rank one image's predictions the same way;
# - the object metrics: the IoU matrix of true and predicted nuclei built from a sparse overlap
#   table, one-to-one matching at a threshold (optimal or greedy, and when they differ), TP, FP,
#   FN, precision, recall, F1, the mean matched IoU and the panoptic quality;
# - two different scores both called "average precision": the Data Science Bowl 2018's
#   TP / (TP + FP + FN) averaged over IoU thresholds (used by Cellpose and StarDist), and COCO's
#   area under a precision-recall curve of score-ranked detections;
# - why a score averaged over images differs from a score over the pooled objects;
# - the pitfalls listed by *Metrics Reloaded* (Maier-Hein et al. 2024) and Reinke et al. 2024:
#   small objects, touching objects, outlines that are too generous (and intersection over the
#   reference), empty images, label ids with gaps, borders, and checks that a biologist cares
#   about (counts, sizes, merges and splits).
#
# Notebook 07b, the capstone, then puts every method of the course on the same test images and
# scores them with these metrics.
#
# Exercises have hints and a one-line fallback to the library, hidden until you open them; the
# questions marked **Predict, then run** or **Which metric?** have hidden answers: answer first.
#
# **Papers:** {cite}`maierhein2024metricsreloaded`, {cite}`reinke2024pitfalls`,
# {cite}`kirillov2019panoptic`, {cite}`cheng2021boundaryiou`, {cite}`stringer2021cellpose`,
# {cite}`schmidt2018stardist`, {cite}`he2017maskrcnn`

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import directed_hausdorff
from skimage.draw import disk
from skimage.metrics import hausdorff_distance
from skimage.segmentation import expand_labels, find_boundaries, relabel_sequential

import course_utils as cu
from course_utils import detection

report = cu.env.check_env()
rng = cu.env.seed_everything(0)

# %% [markdown]
# Sizes come from `cu.pick(fast=..., full=...)`. Nothing is trained here: every metric scores
# the classical pipeline of notebook 01, the true labels, or small drawn examples, in seconds on
# a CPU.

# %%
N_TEST = cu.pick(fast=4, full=48)  # BBBC039 test images (two are used here)
CURVE_THRESHOLDS = np.round(np.arange(0.1, 0.96, 0.05), 2)  # 0.1, 0.15, ..., 0.95
print(f"mode {cu.get_mode()}: {N_TEST} test images")

# %% [markdown]
# ## 1 · Pixel metrics
# We need a prediction to score. The classical pipeline of notebook 01 (Otsu threshold,
# distance transform, watershed) gives one in a fraction of a second.

# %%
test_images, test_labels = cu.data.load_split("bbbc039", "test", n=N_TEST)
image, truth = test_images[0], test_labels[0]
classical = cu.classical.baseline(image)  # the recipe of notebook 01
panels = {
    f"ground truth: {truth.max()} nuclei": truth,
    f"classical watershed: {classical.max()}": classical,
}
fig = cu.figures.evaluation.show_overlays(image, panels)
plt.show()

# %% [markdown]
# Compare the foreground `truth > 0` with the predicted foreground pixel by pixel: true
# positives (TP, foreground in both), false positives (FP, predicted only), false negatives (FN,
# missed) and true negatives (TN, background in both). Then
#
# | metric | formula | question it answers |
# | --- | --- | --- |
# | accuracy | (TP + TN) / N | which fraction of pixels is right? |
# | precision | TP / (TP + FP) | how much of what I predicted is real? |
# | recall | TP / (TP + FN) | how much of what is real did I find? |
# | IoU (Jaccard) | TP / (TP + FP + FN) | overlap / union |
# | Dice (F1) | 2 TP / (2 TP + FP + FN) | the harmonic mean of precision and recall |
#
# **Exercise 1.** Write them. When a ratio is 0 / 0 (nothing to find and nothing found), return
# 1 if both masks are empty and 0 otherwise, as `cu.metrics.pixel_metrics` does.
#
# <details><summary>Hint 1</summary>
#
# With the boolean masks `t` and `p`: `t & p` is TP, `~t & p` is FP, `t & ~p` is FN;
# `np.count_nonzero` counts them. TN is what is left of `t.size`.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# A small helper `ratio(num, den)` that returns `num / den`, or the "empty" value when
# `den == 0`, keeps the five formulas short.
#
# </details>
#
# <details><summary>Stuck? The library's version in one line</summary>
#
# ```python
# return cu.metrics.pixel_metrics(y_true, y_pred)
# ```
#
# </details>


# %% tags=["solution"]
def my_pixel_metrics(y_true, y_pred):
    """Pixel scores of two masks or label images (nonzero = foreground), as a dict of floats."""
    t, p = np.asarray(y_true) != 0, np.asarray(y_pred) != 0
    # BEGIN SOLUTION
    tp = np.count_nonzero(t & p)
    fp = np.count_nonzero(~t & p)
    fn = np.count_nonzero(t & ~p)
    tn = t.size - tp - fp - fn
    empty = 1.0 if tp + fp + fn == 0 else 0.0

    def ratio(num, den):
        return num / den if den else empty

    return {
        "accuracy": (tp + tn) / t.size,
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
    }
    # END SOLUTION


# %% tags=["check"]
blank = np.zeros_like(truth)
for name, (a, b) in {
    "truth vs classical": (truth, classical),
    "truth vs empty": (truth, blank),
    "empty vs empty": (blank, blank),
}.items():
    mine, library = my_pixel_metrics(a, b), cu.metrics.pixel_metrics(a, b)
    cu.checks.check_close(
        [mine[k] for k in library], list(library.values()), f"my_pixel_metrics, {name}"
    )

# %% [markdown]
# ### The class imbalance trap
# **Predict, then run.** A "segmentation" that predicts *nothing at all*: what is its pixel
# accuracy on this image, roughly? Its Dice? And on a crop with few nuclei?

# %%
counts = [
    (np.count_nonzero(truth[y : y + 128, x : x + 128]), y, x)
    for y in range(0, 392, 32)
    for x in range(0, 568, 32)
]
_, cy, cx = min(c for c in counts if c[0] > 0)  # the 128 x 128 window with the least nucleus
sparse_crop = np.s_[cy : cy + 128, cx : cx + 128]
rows = {}
for name, (t, p) in {
    "classical, whole image": (truth, classical),
    "empty prediction, whole image": (truth, blank),
    "empty prediction, sparse crop": (truth[sparse_crop], blank[sparse_crop]),
}.items():
    rows[name] = {"foreground %": 100 * np.mean(t > 0), **cu.metrics.pixel_metrics(t, p)}
imbalance = pd.DataFrame(rows).T
for key in ("whole image", "sparse crop"):
    accuracy = imbalance.loc[f"empty prediction, {key}", "accuracy"]
    cu.glue(f"empty_accuracy_{key.split()[-1]}", accuracy, ".2f")
imbalance.round(3)

# %% [markdown]
# <details><summary>Answer</summary>
#
# The empty prediction is right on every background pixel, so its accuracy equals the
# background fraction: {glue:text}`empty_accuracy_image` on this whole image,
# {glue:text}`empty_accuracy_crop` on the sparse crop, and the closer to 1 the fewer nuclei
# an image holds. IoU and Dice, which ignore the true negatives, are 0. Accuracy is not a
# segmentation metric: it rewards finding nothing wherever the background dominates.
#
# </details>

# %% [markdown]
# ### IoU and Dice carry the same information
# With $I$ = TP and $U$ = TP + FP + FN: Dice $= 2I / (I + U) = 2\,\mathrm{IoU} / (1 +
# \mathrm{IoU})$, an increasing function. So on one image they always rank two predictions the
# same way; Dice is simply larger (except at 0 and 1). Averaged over images they can differ
# in ranking, because the function is not linear. We check the formula on predictions of
# varying quality: the classical result with several minimum distances, and the truth eroded
# or dilated.

# %%
variants = {
    f"classical md={md}": cu.classical.segment_classical(image, min_distance=md)
    for md in (3, 7, 15)
}
for k in (1, 3, 6):
    variants[f"truth eroded {k}"] = ndi.binary_erosion(truth > 0, iterations=k)
    variants[f"truth dilated {k}"] = ndi.binary_dilation(truth > 0, iterations=k)
scores = {name: cu.metrics.pixel_metrics(truth, pred) for name, pred in variants.items()}
fig = cu.figures.evaluation.show_dice_vs_iou(scores)
plt.show()
dice_rule_error = max(abs(s["dice"] - 2 * s["iou"] / (1 + s["iou"])) for s in scores.values())
print(f"largest deviation from the formula: {dice_rule_error:.1e}")

# %% [markdown]
# ## 2 · Object metrics
# Pixel metrics do not see instances: two touching nuclei merged into one object have a
# perfect pixel Dice. Object metrics first decide which predicted nucleus corresponds to which
# true nucleus, by their **intersection over union** (IoU), then count.
#
# ### The IoU matrix from a sparse overlap table
# A test image holds over a hundred nuclei on each side: more than ten thousand pairs, nearly all of
# which do not touch. A loop over the pairs would be slow; instead we read the pairs from the
# pixels. Every pixel carries a pair (true id, predicted id). Counting how often each pair
# occurs gives the intersections; the areas are the counts of each id alone; then
# IoU = intersection / (area_true + area_pred - intersection). Only pairs that overlap ever
# appear: a **sparse** table.
#
# **Exercise 2.** Build the IoU matrix this way, without a loop over objects:
# 1. map the ids of each image to 0, 1, 2, ... with `np.unique(..., return_inverse=True)`
#    (the ids may have gaps; id 0, the background, comes first when present);
# 2. combine the two indices of every pixel into one number, `t * n_pred + p`, and count the
#    distinct numbers with `np.unique(..., return_counts=True)`: these are the overlapping
#    pairs and their intersections (`np.divmod` splits a number back into `(t, p)`);
# 3. the areas are `np.bincount` of each index;
# 4. fill a dense `(n_true, n_pred)` matrix and drop the background row and column.
#
# The rest of the notebook uses your matrix.
#
# <details><summary>Hint 1</summary>
#
# `t_ids, t = np.unique(y_true, return_inverse=True)` gives the sorted ids and, for every
# pixel, the index of its id in `t_ids` (flatten it with `.ravel()`). Do the same for `y_pred`.
# With `n_pred = len(p_ids)`, the number `t * n_pred + p` is different for every pair.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# After `pairs, intersection = np.unique(t * n_pred + p, return_counts=True)` and
# `rows, cols = np.divmod(pairs, n_pred)`, the IoU of each pair is
# `intersection / (area_t[rows] + area_p[cols] - intersection)`. Fill
# `iou[rows, cols]` of a zero matrix; drop row 0 only if `t_ids[0] == 0` (same for columns).
#
# </details>
#
# <details><summary>Stuck? The library's version in one line</summary>
#
# ```python
# return cu.metrics.iou_matrix(y_true, y_pred)
# ```
#
# </details>


# %% tags=["solution"]
def my_iou_matrix(y_true, y_pred):
    """IoU of every true object (rows, increasing id) with every predicted one (columns)."""
    # BEGIN SOLUTION
    t_ids, t = np.unique(y_true, return_inverse=True)
    p_ids, p = np.unique(y_pred, return_inverse=True)
    t, p = t.ravel(), p.ravel()
    pairs, intersection = np.unique(t * len(p_ids) + p, return_counts=True)
    rows, cols = np.divmod(pairs, len(p_ids))
    area_t, area_p = np.bincount(t), np.bincount(p)
    iou = np.zeros((len(t_ids), len(p_ids)))
    iou[rows, cols] = intersection / (area_t[rows] + area_p[cols] - intersection)
    return iou[int(t_ids[0] == 0) :, int(p_ids[0] == 0) :]
    # END SOLUTION


# %% tags=["check"]
cu.checks.check_close(
    my_iou_matrix(truth, classical), cu.metrics.iou_matrix(truth, classical), "my_iou_matrix"
)
gappy = np.where(truth > 0, 7 * truth + 1000, 0)  # ids 1007, 1014, ...: not consecutive
cu.checks.check_close(
    my_iou_matrix(gappy, classical),
    cu.metrics.iou_matrix(gappy, classical),
    "my_iou_matrix with ids that have gaps",
)
cu.checks.check_close(
    my_iou_matrix(blank, classical),
    cu.metrics.iou_matrix(blank, classical),
    "my_iou_matrix with an empty truth",
)

# %%
iou = my_iou_matrix(truth, classical)
iou_matches_library = np.allclose(iou, cu.metrics.iou_matrix(truth, classical))
print(
    f"IoU matrix {iou.shape}: {np.count_nonzero(iou)} overlapping pairs of {iou.size} "
    f"({np.count_nonzero(iou) / iou.size:.2%}); best IoU per true nucleus: median "
    f"{np.median(iou.max(axis=1)):.3f}"
)

# %% [markdown]
# ### Matching at a threshold
# A true and a predicted nucleus **match** when their IoU is at least a threshold $\tau$, and
# each object matches at most one other. Matched pairs are true positives; unmatched predictions
# are false positives, unmatched true nuclei false negatives.
#
# <!-- constants: 0.5 -->
# For $\tau > 0.5$ the matching is unique: IoU > 0.5 means that the overlap is more than half
# of the union, so more than half of each object, and two disjoint predictions cannot both
# cover more than half of one nucleus. Below 0.5, one object can have several candidates, and
# the choice matters:
# - **greedy**: take the pair with the highest IoU, remove both objects, repeat;
# - **optimal**: the assignment with the most matches (then the highest total IoU), found with
#   the Hungarian algorithm, as StarDist does (`cu.metrics.matching`, the default).
#
# **Exercise 3.** Write the greedy matching on the IoU matrix. It returns the IoUs of the
# matched pairs; their number is TP. The candidate pairs (IoU at least the threshold) and
# their order (highest IoU first) are given; walk through them and keep a pair when neither
# of its objects is taken yet. The scores below are computed from your matches.
#
# <details><summary>Hint 1</summary>
#
# `for r, c in zip(rows[order], cols[order]):` visits the pairs from the best down. Two sets,
# `used_rows` and `used_cols`, remember the objects already matched.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# Inside the loop: `if r not in used_rows and c not in used_cols:` add `r` and `c` to the sets
# and append `iou[r, c]` to `kept`.
#
# </details>
#
# <details><summary>Stuck? The library's version in one line</summary>
#
# `cu.detection.greedy_matching` returns the rows and columns of the kept pairs:
#
# ```python
# return iou[cu.detection.greedy_matching(iou, thresh)]
# ```
#
# </details>


# %% tags=["solution"]
def my_greedy_matches(iou, thresh):
    """IoUs (1-D array) of the pairs that greedy matching keeps at threshold `thresh`."""
    rows, cols = np.nonzero(iou >= thresh)
    order = np.argsort(-iou[rows, cols], kind="stable")
    used_rows, used_cols, kept = set(), set(), []
    # BEGIN SOLUTION
    for r, c in zip(rows[order], cols[order]):
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            kept.append(iou[r, c])
    # END SOLUTION
    return np.array(kept)


# %% tags=["check"]
for tau in (0.1, 0.3, 0.5, 0.75, 0.9):
    reference = cu.metrics.matching(truth, classical, tau, greedy=True)
    cu.checks.check_equal(
        len(my_greedy_matches(iou, tau)), reference.tp, f"number of greedy matches at {tau}"
    )

# %% [markdown]
# Greedy and optimal matching differ when a greedy choice takes the only candidate of another
# object. Here are two touching true nuclei A and B (as strips) and two predictions: P, shifted
# over the border, and Q, a sliver of A. At $\tau = 0.25$ greedy takes A-P first (IoU 0.47);
# B's only candidate P is then gone, and so is Q's only candidate A. Optimal matching pairs
# A-Q and B-P instead: two matches.

# %%
toy_true = np.zeros((10, 24), np.int32)
toy_true[:, 0:10], toy_true[:, 10:20] = 1, 2  # A, B
toy_pred = np.zeros_like(toy_true)
toy_pred[:, 3:15], toy_pred[:, 0:3] = 1, 2  # P, Q
print(np.round(cu.metrics.iou_matrix(toy_true, toy_pred), 3), "(rows A, B; columns P, Q)")
greedy_toy = cu.metrics.matching(toy_true, toy_pred, 0.25, greedy=True)
optimal_toy = cu.metrics.matching(toy_true, toy_pred, 0.25)
print(f"greedy: TP {greedy_toy.tp}, optimal: TP {optimal_toy.tp}")

# %% [markdown]
# The optimal matching by hand: SciPy's `linear_sum_assignment` minimises a total cost. A pair
# above the threshold costs -1 (a match), minus a small bonus for its IoU (to prefer the
# better of equally many matches); pairs below cost 0, and are dropped afterwards.

# %%
toy_iou = cu.metrics.iou_matrix(toy_true, toy_pred)
cost = np.where(toy_iou >= 0.25, -1 - toy_iou / (2 * min(toy_iou.shape)), 0.0)
r, c = linear_sum_assignment(cost)
optimal_by_hand = int(np.sum(toy_iou[r, c] >= 0.25))
print("optimal matches by hand:", optimal_by_hand)

# %% [markdown]
# > **Instructor checkpoint.** Everything after this point is built on the IoU matrix and the
# > matching. Check that every student has Exercises 2 and 3 passing (or the fallback line in
# > place), and ask one question to the room: "why can greedy matching find *fewer* matches
# > than optimal matching, but never more?" (Optimal maximises the number of matches; greedy
# > is one particular matching, so it cannot exceed the maximum.)
#
# ### From the counts to the scores
# With TP, FP and FN at a threshold:
# - precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2 TP / (2 TP + FP + FN);
# - **"average precision" as the 2018 Data Science Bowl defined it** (DSB 2018, a competition
#   on nucleus segmentation, Caicedo et al. 2019), and as Cellpose (Stringer et al. 2021) and
#   StarDist (Schmidt et al. 2018) report it: at a threshold $\tau$,
#   AP$_\tau$ = TP / (TP + FP + FN), the object-level IoU (Jaccard) of the matching. The DSB
#   score of an image is its mean over $\tau$ = 0.5, 0.55, ..., 0.95 (in numpy,
#   <!-- constants: 0.5 0.55 0.95 0.75 0.9 -->
#   `np.arange(0.5, 1, 0.05)`), and the competition's score the mean of that over the images.
#   Papers also give it at single thresholds (0.5, 0.75, 0.9). Despite the name it is *not*
#   the area under a precision-recall curve: that is COCO's AP, below;
# - the **mean matched IoU**: how well the matched nuclei are outlined;
# - the **panoptic quality** of Kirillov et al. 2019: PQ = (sum of matched IoUs) /
#   (TP + FP/2 + FN/2) = mean matched IoU x F1 (segmentation quality x recognition quality).
#
# We compute them from our greedy matches at 0.5 (where greedy = optimal in practice) and
# compare with `cu.metrics.matching`.
# <!-- constants: 0.5 -->

# %%
kept = my_greedy_matches(iou, 0.5)
tp = len(kept)
fp, fn = iou.shape[1] - tp, iou.shape[0] - tp
by_hand = {
    "precision": tp / (tp + fp),
    "recall": tp / (tp + fn),
    "f1": 2 * tp / (2 * tp + fp + fn),
    "accuracy": tp / (tp + fp + fn),  # the "AP" of Cellpose and StarDist
    "mean_matched_score": kept.mean(),
    "panoptic_quality": kept.sum() / (tp + fp / 2 + fn / 2),
}
library = cu.metrics.matching(truth, classical, 0.5)
library_pairs = detection.greedy_matching(iou, 0.5)  # the library's greedy matching
assert np.allclose(np.sort(kept), np.sort(iou[library_pairs]))
print(library)
scores_match_library = all(np.isclose(v, getattr(library, k)) for k, v in by_hand.items())
print("by hand = library:", scores_match_library)
assert np.isclose(library.panoptic_quality, library.mean_matched_score * library.f1)

# %% [markdown]
# AP at every threshold from 0.1 to 0.95: the curve falls slowly while the threshold only asks
# "is it the same nucleus?", then steeply once it asks for pixel-exact outlines (0.8 and up),
# on which even careful annotators rarely agree to the pixel.
# <!-- constants: 0.1 0.95 0.8 -->

# %%
curve = cu.metrics.average_precision(truth, classical, CURVE_THRESHOLDS)
ap_summary = cu.metrics.average_precision(truth, classical)  # 0.5, 0.55, ..., 0.95
title = f"Classical watershed on one test image (AP 0.5:0.95 = {ap_summary.mean():.3f})"
fig = cu.figures.comparison.show_ap_curves(CURVE_THRESHOLDS, {"classical": curve}, title=title)
plt.show()

# %% [markdown]
# ### COCO's average precision: a worked contrast
# Object detection benchmarks (COCO, on which Mask R-CNN reports its scores) use another
# "average precision". There, every predicted object carries a **confidence score**, and the
# score measures how well the *ranking* separates real objects from false ones:
#
# 1. in each image, visit the predictions from the most to the least confident; each one is a
#    TP when a still unmatched true object overlaps it with IoU $\ge \tau$, else a FP;
# 2. pool all predictions and sort them by confidence; after the $k$ most confident ones,
#    precision = TP$_k$ / $k$ and recall = TP$_k$ / (number of true objects): a
#    **precision-recall curve**;
# 3. replace each precision by the best precision at the same or a higher recall (the curve's
#    upper envelope), read it at the 101 recalls 0, 0.01, ..., 1 (0 beyond the highest recall
#    reached), and average. COCO's headline "AP" averages this again over
#    $\tau$ = 0.5, 0.55, ..., 0.95.
#    <!-- constants: 0.01 0.5 0.55 0.95 -->
#
# By hand, on a toy image: four true nuclei (squares) and five scored predictions, two of
# which match nothing.


# %%
def squares(boxes, shape=(30, 110)):
    """Labels (int32): id k + 1 on the square of side 10 whose top-left corner is boxes[k]."""
    out = np.zeros(shape, np.int32)
    for k, (top, left) in enumerate(boxes):
        out[top : top + 10, left : left + 10] = k + 1
    return out


toy_truth = squares([(0, 0), (0, 30), (0, 60), (0, 90)])  # true nuclei A, B, C, D
toy_scored = squares([(0, 0), (20, 15), (0, 31), (0, 62), (20, 45)])  # on A, -, B, C, -
toy_scores = np.array([0.95, 0.9, 0.8, 0.6, 0.3])  # the confidence of predictions 1..5
is_tp = np.array([True, False, True, True, False])  # by construction, in the order of scores
tp_k = np.cumsum(is_tp)
by_hand = pd.DataFrame(
    {"score": toy_scores, "TP?": is_tp, "precision": tp_k / np.arange(1, 6), "recall": tp_k / 4}
)
by_hand["envelope"] = np.maximum.accumulate(by_hand["precision"].to_numpy()[::-1])[::-1]
recall_levels = np.linspace(0, 1, 101)
first = np.searchsorted(by_hand["recall"].to_numpy(), recall_levels, side="left")
read = np.where(first < 5, by_hand["envelope"].to_numpy()[np.minimum(first, 4)], 0.0)
coco_by_hand = read.mean()
coco_library = detection.detection_ap(toy_truth, toy_scored, toy_scores, thresh=0.5)
dsb_toy = cu.metrics.matching(toy_truth, toy_scored, 0.5).accuracy
print(by_hand.round(3).to_string())
print(
    f"COCO AP@0.5 by hand {coco_by_hand:.4f}, detection.detection_ap {coco_library:.4f}; "
    f"DSB-style AP@0.5 = TP / (TP + FP + FN) = {dsb_toy:.3f}"
)
coco_matches = bool(np.isclose(coco_by_hand, coco_library))
assert coco_matches
cu.glue("toy_coco_ap", coco_library)

# %% [markdown]
# By hand: recall levels 0 to 0.25 (26 of them) read precision 1, levels 0.26 to 0.75 (50) read
# the envelope 0.75, and the 25 levels above 0.75 are never reached: AP = (26 + 50 x 0.75) / 101
# = {glue:text}`toy_coco_ap`.
# <!-- constants: 0.25 0.26 0.75 0.3 -->
#
# **Predict, then run.** We delete the least confident prediction (the false positive at 0.3).
# What happens to COCO's AP, and to the DSB-style AP?

# %%
toy_pruned = np.where(toy_scored == 5, 0, toy_scored)
coco_pruned = detection.detection_ap(toy_truth, toy_pruned, toy_scores)
dsb_pruned = cu.metrics.matching(toy_truth, toy_pruned, 0.5).accuracy
print(f"COCO AP@0.5 {cu.glue('toy_coco_pruned', coco_pruned)}, DSB-style AP@0.5 {dsb_pruned:.3f}")
cu.glue("toy_dsb", dsb_toy, ".1f")
cu.glue("toy_dsb_pruned", dsb_pruned, ".1f")

# %% [markdown]
# <details><summary>Answer</summary>
#
# COCO's AP does not change ({glue:text}`toy_coco_pruned`): the false positive came last in
# the ranking, after every true positive, so it only lowered the precision at a recall the
# envelope already reads from a better point. The DSB-style AP rises from {glue:text}`toy_dsb`
# to {glue:text}`toy_dsb_pruned`: it scores one operating point, the predictions you actually
# hand over, and every false positive counts. COCO's AP asks "does the
# confidence rank real nuclei first?"; the DSB's asks "how good is this segmentation?". For a
# biologist, who uses one segmentation and no ranking, the second is usually the question.
#
# </details>

# %% [markdown]
# ### One score for many images: per image or pooled?
# Over a test set there are two ways to summarise:
# - **pooled** (StarDist's `matching_dataset`, the default here): add TP, FP and FN over all
#   images, then compute the ratio. Every *nucleus* counts the same;
# - **per image** (as Cellpose's papers average AP): the ratio of each image, then the mean.
#   Every *image* counts the same.
#
# They differ when images differ in size or difficulty. Example: the whole test image (many
# nuclei, segmented well) and a 128 x 128 crop of another one (11 nuclei), on which the
# prediction is shifted by 12 pixels, so that almost nothing matches.
#
# **Predict, then run.** Which summary will be lower, the pooled F1 or the mean of the two
# per-image F1s? By a little or by a lot?

# %%
crop2 = np.s_[48:176, 32:160]  # 11 nuclei
shifted = np.roll(test_labels[1][crop2], 12, axis=1)
pair_true = [truth, test_labels[1][crop2]]
pair_pred = [classical, shifted]
per_image = [cu.metrics.matching(t, p, 0.5) for t, p in zip(pair_true, pair_pred)]
pooled = cu.metrics.matching_dataset(pair_true, pair_pred, 0.5)
image_mean = cu.metrics.matching_dataset(pair_true, pair_pred, 0.5, by_image=True)
for k, m in enumerate(per_image):
    print(f"image {k}: TP {m.tp:3d} FP {m.fp:3d} FN {m.fn:3d} -> F1 {m.f1:.3f}")
print(f"pooled:   TP {pooled.tp:3d} FP {pooled.fp:3d} FN {pooled.fn:3d} -> F1 {pooled.f1:.3f}")
print(f"per image: F1 ({per_image[0].f1:.3f} + {per_image[1].f1:.3f}) / 2 = {image_mean.f1:.3f}")

# %% [markdown]
# <details><summary>Answer</summary>
#
# The pooled F1 drops a little (the 11 nuclei of the crop are few among 140); the per-image
# mean halves, because the crop weighs as much as the whole image. Neither is wrong: say which
# one you report, and report both when images differ a lot.
#
# </details>
#
# The capstone (notebook 07b) pools, as StarDist does.
#
# ## 3 · Pitfalls
# *Metrics Reloaded* (Maier-Hein et al. 2024) recommends choosing metrics from the properties of
# the problem, and Reinke et al. 2024 catalogue how common metrics mislead. Five that matter
# for nuclei:
#
# ### Small objects
# A one-pixel error is a large fraction of a small object. A disk shifted by one pixel keeps a
# <!-- constants: 0.5 -->
# high IoU when it is large, and falls towards the 0.5 threshold when it is small: the same
# annotation uncertainty turns small nuclei into "misses".

# %%
radii = np.arange(2, 21)
shift_iou = []
for radius in radii:
    a = np.zeros((64, 64), bool)
    a[disk((32, 32), radius)] = True
    b = np.roll(a, 1, axis=1)
    shift_iou.append(np.count_nonzero(a & b) / np.count_nonzero(a | b))
shift_iou = np.array(shift_iou)
areas = np.bincount(truth.ravel())[1:]
fig = cu.figures.evaluation.show_small_objects(radii, shift_iou, areas)
plt.show()

# %% [markdown]
# ### Touching objects
# Merge the touching true nuclei (those that share an edge) into one object each: the pixel
# metrics do not change at all, the object metrics drop. Use object metrics whenever
# instances matter.

# %%
merged = truth.copy()
pairs = set()
for here, there in ((truth[:, :-1], truth[:, 1:]), (truth[:-1], truth[1:])):  # right, down
    touch = (here > 0) & (there > 0) & (here != there)
    pairs |= set(zip(here[touch].tolist(), there[touch].tolist()))
for a, b in sorted(pairs):
    merged[merged == merged[truth == b][0]] = merged[truth == a][0]  # b's group joins a's
merge_pixels = cu.metrics.pixel_metrics(truth, merged)
merge_objects = cu.metrics.matching(truth, merged, 0.5)
print(
    f"{truth.max()} nuclei -> {len(np.unique(merged)) - 1} objects after merging touching "
    f"ones: pixel Dice {merge_pixels['dice']:.3f}, object F1 {merge_objects.f1:.3f}"
)

# %% [markdown]
# ### Outlines that are too generous: intersection over the reference
# The IoU punishes a prediction that is too large as much as one that is too small. Often the
# question is only "was this nucleus found?" (to count nuclei, or to measure their intensity
# from a mask that may include a rim of background). **Intersection over the reference**, the
# fraction of the *true* nucleus that the prediction covers, answers it:
# $\text{IoT} = |T \cap P| / |T|$ (`cu.metrics.matching(..., criterion="iot")`; "t" for true).
# Its mirror, intersection over the prediction (`"iop"`), forgives outlines that are too tight.
#
# **Predict, then run.** We grow every true nucleus by 2 to 8 pixels (the outlines too
# generous, as after a low threshold on a blurred image) or shrink it. Which F1 holds up, the
# one at IoU $\ge$ 0.5 or the one at IoT $\ge$ 0.5? And for the merged nuclei of the cell above?


# %%
def shrink(labels, k):
    """Each object shrunk by k pixels (its boundary pixels removed k times)."""
    out = labels.copy()
    for _ in range(k):
        out[find_boundaries(out, mode="inner")] = 0
    return out


outline_variants = {f"{k} px too generous": expand_labels(truth, k) for k in (2, 4, 6, 8)}
outline_variants |= {f"{k} px too tight": shrink(truth, k) for k in (2, 4)}
outline_variants["touching nuclei merged"] = merged
iot_rows = {
    name: {
        f"F1, {c} >= 0.5": cu.metrics.matching(truth, pred, 0.5, criterion=c).f1
        for c in ("iou", "iot", "iop")
    }
    for name, pred in outline_variants.items()
}
iot_table = pd.DataFrame(iot_rows).T
iot_table.round(3)

# %% [markdown]
# <details><summary>Answer</summary>
#
# IoT holds up for every generous outline: the grown prediction still covers the whole
# nucleus. The IoU criterion drops them once the growth is a sizeable part of the radius,
# <!-- constants: 0.25 -->
# small nuclei first (growing a nucleus of radius 5 by 5 pixels quadruples its area: IoU
# 0.25); at 8 pixels it loses most nuclei of this image. Too tight outlines are the mirror
# case, forgiven by IoP and not by IoT. Merged nuclei stay errors under every criterion: a
# merged object covers both nuclei (IoT 1 for each), but the matching is one-to-one, so only
# one of them is found.
# IoT is no excuse for sloppy outlines either: a prediction covering the whole image has IoT 1
# with the nucleus it is matched to. Report it *beside* an outline score (matched IoU, boundary
# IoU), never instead of one.
#
# </details>
#
# ### Empty images
# BBBC039 contains one field of view without a single annotated nucleus (in the training split).
# There, TP = FP = FN = 0 for a perfect prediction: precision, recall and F1 are 0 / 0.
# `cu.metrics.matching` returns 0 for them (as StarDist), so a per-image mean punishes a
# perfect answer; pixel metrics call it 1. A pooled score handles it naturally: the image
# adds nothing when the prediction is empty and adds false positives when it is not. What does
# the classical pipeline find in an image with no nuclei?

# %%
empty_name = cu.data.split_names("bbbc039", "train")[72]
empty_truth = cu.data.read_bbbc039_mask(cu.data.fetch("bbbc039", f"masks/{empty_name}.png"))
empty_image = cu.data.normalize_percentile(
    cu.data.read_image(cu.data.fetch("bbbc039", f"images/{empty_name}.tif"))
)
empty_pred = cu.classical.baseline(empty_image)
perfect_on_empty = cu.metrics.matching(empty_truth, np.zeros_like(empty_truth), 0.5)
print(f"{empty_truth.max()} true nuclei; the classical pipeline finds {empty_pred.max()} objects")
print(
    f"a perfect (empty) prediction: F1 {perfect_on_empty.f1}, pixel Dice "
    f"{cu.metrics.pixel_metrics(empty_truth, empty_truth)['dice']}"
)
panels = {
    "a BBBC039 image with no annotated nucleus": None,
    "classical: objects in the noise": empty_pred,
}
fig = cu.figures.evaluation.show_overlays(empty_image, panels)
plt.show()

# %% [markdown]
# Otsu's threshold always splits the histogram in two, even when only background is there: a
# method must be tested on empty images too, with their false positives counted.
#
# ### Label ids that are not consecutive
# Ids are names, not counts. After cropping, filtering or merging, the ids have gaps, and
# `labels.max()` no longer counts the objects. Code that sizes arrays by the largest id (for
# instance a dense `bincount` of `t * n + p` with `n = labels.max() + 1`) wastes memory or
# overflows with ids like 10⁹. Count the unique ids, or relabel first
# (`skimage.segmentation.relabel_sequential`). The course's metrics use the sparse table and
# accept any ids.

# %%
crop_ids = truth[:200, :200]
print(f"crop: labels.max() = {crop_ids.max()}, but {len(np.unique(crop_ids)) - 1} nuclei")
relabelled, _, _ = relabel_sequential(crop_ids)
huge = np.where(crop_ids > 0, crop_ids.astype(np.int64) + 10**12, 0)  # ids above a trillion
same_score = cu.metrics.matching(crop_ids, huge, 0.5).f1 == 1.0
print(
    f"after relabel_sequential: max = {relabelled.max()}; ids near 10^12 give F1 = 1: {same_score}"
)

# %% [markdown]
# ### When borders matter: boundary IoU and the Hausdorff distance
# The IoU of a large object hardly changes when its outline is wrong by a pixel or two all
# around, or when a chunk is bitten off. **Boundary IoU** (Cheng et al. 2021) computes the IoU
# only on the pixels within `d` pixels of each contour, so outline errors weigh fully. The
# **Hausdorff distance** reports the worst local error, looked for in both directions: the
# *directed* distance from contour A to contour B is the largest distance from a point of A to
# its nearest point of B, and the Hausdorff distance is the **larger of the two directed
# distances**, A to B and B to A. One direction alone can miss an error: a prediction that is a
# small piece of its nucleus lies close to the nucleus's outline everywhere (small distance
# from the prediction to the truth), while much of that outline is far from the prediction.
# Two predictions of the same nucleus, with about the same number of wrong pixels:


# %%
def boundary_band(mask, d):
    """Pixels of `mask` within `d` pixels of its contour (inside the mask)."""
    return mask & (ndi.distance_transform_edt(mask) <= d)


def boundary_iou(a, b, d=2):
    band_a, band_b = boundary_band(a, d), boundary_band(b, d)
    return np.count_nonzero(band_a & band_b) / max(np.count_nonzero(band_a | band_b), 1)


blob = np.zeros((80, 80), bool)
blob[disk((40, 40), 25)] = True
eroded = ndi.binary_erosion(blob, iterations=1)
lost = np.count_nonzero(blob) - np.count_nonzero(eroded)


def disk_mask(centre, radius, shape=(80, 80)):
    mask = np.zeros(shape, bool)
    mask[disk(centre, radius, shape=shape)] = True
    return mask


bite_sizes = {r: np.count_nonzero(blob & disk_mask((15, 40), r)) for r in range(1, 25)}
bite_radius = min(bite_sizes, key=lambda r: abs(bite_sizes[r] - lost))
bitten = blob & ~disk_mask((15, 40), bite_radius)  # a disk bitten out of the top edge
fig = cu.figures.evaluation.show_masks(
    blob,
    {"truth": blob, "thinner": eroded, "bitten": bitten},
    title="One nucleus and two predictions (yellow: both, teal: missed by the prediction)",
)
plt.show()

# %%
border_rows = {}
for name, pred in {"1 pixel thinner all around": eroded, "a bite off the top": bitten}.items():
    border_rows[name] = {
        "wrong pixels": np.count_nonzero(blob ^ pred),
        "IoU": cu.metrics.pixel_metrics(blob, pred)["iou"],
        "boundary IoU (d=2)": boundary_iou(blob, pred),
        "Hausdorff (px)": hausdorff_distance(
            find_boundaries(blob, mode="inner"), find_boundaries(pred, mode="inner")
        ),
    }
    contour_t = np.argwhere(find_boundaries(blob, mode="inner"))
    contour_p = np.argwhere(find_boundaries(pred, mode="inner"))
    border_rows[name]["truth -> pred (px)"] = directed_hausdorff(contour_t, contour_p)[0]
    border_rows[name]["pred -> truth (px)"] = directed_hausdorff(contour_p, contour_t)[0]
hausdorff_is_the_max = all(
    np.isclose(r["Hausdorff (px)"], max(r["truth -> pred (px)"], r["pred -> truth (px)"]))
    for r in border_rows.values()
)
pd.DataFrame(border_rows).T.round(3)

# %% [markdown]
# Same IoU, opposite verdicts: boundary IoU finds the outline that is one pixel off *all
# around* much worse than the local bite (most of its 2-pixel band is wrong), while the
# Hausdorff distance sees only the bite, 9 pixels deep. Here both directed distances agree
# (the bottom of the bite is 9 pixels from the true outline, and the top of the true outline 9
# pixels from the bitten one); the small piece of a nucleus described above is a case where
# they do not. Which one to report depends on the
# question: the average accuracy of the outlines (boundary IoU, or the mean contour
# distance), or the worst local error (Hausdorff, often its 95th percentile to tame outliers).

# %% [markdown]
# ### What a biologist asks
# A segmentation is usually a means to count nuclei, measure their size or their intensity.
# Check those directly: the number of objects per image and the distribution of their areas,
# compared with the truth. A method can reach a good F1 and still shift the size distribution
# (outlines systematically too tight), or miss exactly the small, dividing nuclei that an
# experiment is about. Two error classes matter most for counts: a **merge** (two true nuclei
# in one predicted object: at IoU 0.5 one FN when the object still matches one of them, one FP
# and two FN when it matches neither) and a **split** (one nucleus cut
# into pieces: one or two FP and at most one FN), which `cu.classical.merge_split_counts`
# counts. The capstone (notebook 07b) reports the count error, merges and splits, and the
# recall of small nuclei, and plots the size distributions.
#
# <!-- constants: 0.5 0.75 0.9 0.95 0.3 -->
# **Which metric?** For each study, which score of this notebook would you look at first, and
# which one could mislead?
# 1. A proliferation assay: the number of nuclei per well, before and after a drug.
# 2. Nuclear size and shape (area, elongation) as a readout of a mutation.
# 3. Mitoses: small, bright, condensed nuclei that make up 2% of all nuclei.
# 4. A method paper that wants to be compared with Cellpose and StarDist.
#
# <details><summary>Answer</summary>
#
# 1. The **count error** per image, and merges and splits (they move the count in opposite
#    directions and can cancel out: check both); detection at a lenient criterion (F1 at IoU
#    0.5, or IoT). Pixel Dice would mislead: merged nuclei have a perfect Dice.
# 2. Outline quality of the matched nuclei: **matched IoU**, **boundary IoU**, the Hausdorff
#    distance, and the size distribution against the truth; F1 at IoU 0.5 would mislead, as
#    it accepts outlines that are off by a few pixels all around.
# 3. The **recall of that small class** (here: of the smallest tenth), with its interval: an
#    overall F1 of 0.95 can hide a recall of 0.3 on 2% of the nuclei.
# 4. The DSB-style AP at 0.5, 0.75, 0.9 and averaged over 0.5:0.95, pooled or per image (say
#    which), on a standard test split, with intervals; COCO AP only if the method scores its
#    detections.
#
# </details>
#
# > **Instructor checkpoint.** Collect answers to the four studies before opening the answer:
# > students often pick "accuracy" or a single F1 for all four. The point to land: the question
# > chooses the metric, not the other way round (*Metrics Reloaded*'s message).

# %% [markdown]
# ## Recap
# - Pixel accuracy is dominated by the background; IoU and Dice are tied by
#   Dice = 2 IoU / (1 + IoU).
# <!-- constants: 0.5 -->
# - Object metrics match nuclei one-to-one at an IoU threshold; above 0.5 the match is unique,
#   below it the optimal assignment can find more matches than greedy. The IoU matrix comes
#   from a sparse table of overlapping pairs, without a loop over pairs. Intersection over the
#   reference asks only whether each nucleus was found.
# - Two "APs": the DSB 2018's TP / (TP + FP + FN), at a threshold or averaged over IoU
#   0.5:0.95 (Cellpose, StarDist), scores one segmentation; COCO's area under the
#   precision-recall curve of score-ranked detections scores a ranking. Panoptic quality
#   (Kirillov et al. 2019) = mean matched IoU x F1. Pooled and per-image averages answer
#   different questions.
# - Pitfalls (Maier-Hein et al. 2024, Reinke et al. 2024): small objects, merged touching
#   objects invisible to pixel metrics, empty images (0 / 0), ids with gaps; boundary IoU
#   (Cheng et al. 2021) and the Hausdorff distance (the larger of the two directed distances)
#   for outlines; counts, sizes, merges and splits for biology.
#
# Notebook 07b uses these metrics to compare every method of the course on the same test
# images, with a bootstrap interval for every score.
#
# The checks below fail if a metric breaks.

# %%
assert iou_matches_library and scores_match_library and coco_matches
assert dice_rule_error < 1e-12
assert greedy_toy.tp == 1 and optimal_toy.tp == optimal_by_hand == 2
assert imbalance.loc["empty prediction, whole image", "accuracy"] > 0.7
# the worked COCO example: deleting the last-ranked false positive leaves COCO's AP as it was
# and raises the DSB-style AP (the answer's claims)
assert np.isclose(coco_pruned, coco_library) and dsb_pruned > dsb_toy
assert imbalance.loc["empty prediction, whole image", "dice"] == 0.0
assert pooled.f1 > image_mean.f1 + 0.2, (pooled.f1, image_mean.f1)
assert shift_iou[0] < 0.6 < 0.9 < shift_iou[-1]
assert merge_pixels["dice"] == 1.0 and merge_objects.f1 < 0.95
assert iot_table.loc["8 px too generous", "F1, iot >= 0.5"] > 0.95
assert iot_table.loc["8 px too generous", "F1, iou >= 0.5"] < 0.5
assert empty_truth.max() == 0 and perfect_on_empty.f1 == 0.0
assert same_score and hausdorff_is_the_max
assert (
    border_rows["a bite off the top"]["Hausdorff (px)"]
    > 3 * border_rows["1 pixel thinner all around"]["Hausdorff (px)"]
)
print("metric checks passed")
