# %% [markdown]
# # 08 · Your own images: scale, generalisation, fine-tuning, and a one-call segmenter
#
# <!-- constants: 2.0 0.25 -->
# **What you will learn**
# - the course's **model zoo**: networks the course trained itself, with model cards
#   that say how (data, steps, time, scores, the nucleus size they were trained at);
# - what happens on **other people's images** (nuclei in tissue sections, Kromp et al. 2020):
#   the scores drop, and why (scale, intensity, texture, crowding);
# - **scale**: a network knows objects of the sizes it was trained on. We resize test images
#   from 0.25x to 4x and watch the scores, estimate the nucleus diameter of an image *without
#   labels*, and rescale to the training size, as Cellpose does with its "diameter";
# - **normalisation**: what the percentile choice does to a new kind of image;
# - **fine-tuning**: start from the pretrained model and train on one, two, three annotated
#   images, against training from scratch on the same images and against re-estimating the
#   batch-norm statistics alone; then the human-in-the-loop idea of Cellpose 2.0: correct the
#   worst objects only, retrain, and count what each correction buys;
# - which **generalist models** to try first on your images, what each needs, and how they
#   relate to the course's zoo;
# - how to point the course at **a folder of your own images**, and `cu.segment(image)`, the one
#   call that does all of the above.
#
# **Papers:** {cite}`kromp2020nuclei`, {cite}`stringer2021cellpose`,
# {cite}`pachitariu2022cellpose2`, {cite}`schmidt2018stardist`, {cite}`caicedo2019bbbc039`

# %%
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import tifffile
import torch
from skimage.segmentation import clear_border
from tqdm.auto import tqdm

import course_utils as cu
from course_utils import uncertainty

report = cu.env.check_env()
rng = cu.env.seed_everything(0)

# %% [markdown]
# Sizes come from `cu.pick(fast=..., full=...)`. Fast mode works on crops and trains for a few
# dozen steps on the CPU (a few minutes in all); full mode uses every test image, all methods
# and real fine-tuning runs (a GPU helps: the README's course map gives the time). The scale
# experiment works on crops in both modes: at 4x a whole image would have 16 times the pixels.

# %%
SHOWN = cu.pick(fast=["cellpose", "stardist"], full=list(cu.methods.NUCLEUS_METHODS))
N_BBBC = cu.pick(fast=2, full=48)  # BBBC039 test images
CROP = cu.pick(fast=192, full=256)  # side of the crops of the scale experiment
FACTORS = cu.pick(fast=[0.25, 0.5, 1.0, 2.0, 4.0], full=[0.25, 0.35, 0.5, 0.7, 1, 1.4, 2, 2.8, 4])
# factors outside the zoo's training zoom (0.5x to 2x): where the diameter is estimated
ESTIMATE_FACTORS = cu.pick(fast=[0.25, 4.0], full=[0.25, 0.35, 2.8, 4])
KROMP_SIDE = cu.pick(fast=512, full=None)  # Kromp test images: their central crop (None: all)
# Every fine-tuning run of this notebook: the same optimiser steps (20 fast, 600 full), patches
# per step and patch side, from the course's table of training budgets.
TUNE = cu.methods.budget("kromp")  # "kromp-fast" or "kromp-full": one home for budgets
TUNE_STEPS = TUNE.steps(n_images=1)  # patches per epoch are fixed: any image count gives it
N_TUNED = cu.pick(fast=[1, 3], full=[1, 2, 3])  # annotated Kromp images to fine-tune on
CORRECTIONS = cu.pick(fast=[0, 20], full=[0, 10, 25, 50, 100, 200])  # human-in-the-loop
device = cu.env.get_device()
print(
    f"mode {cu.get_mode()}: methods {SHOWN}, scale factors {FACTORS}, "
    f"{TUNE_STEPS} fine-tuning steps per run, on {device}"
)

# %% [markdown]
# ## 1 · The course's model zoo
# Users of Cellpose and StarDist rarely train from zero: they start from a pretrained model. The
# course has its own, trained by `make zoo` (the script `scripts/train_zoo.py`) through the same
# method records as notebooks 03-07b, with random zoom (0.5x-2x), gamma, contrast, noise and
# blur. It holds two families. The **generalists** (`cellpose`, `stardist`, ...: what
# `cu.segment` uses) learned from three datasets: BBBC039, the fluorescence images of the 2018
# Data Science Bowl (many labs and magnifications; {cite}`caicedo2019dsb`) and Kromp's tissue
# sections. The
# models named `..._bbbc039` learned from the 100 BBBC039 training images alone: one cell line,
# one microscope. This notebook starts with those, to see what happens to a model on images
# unlike its training ones; section 7 comes back to the generalists. (The zoo also holds a
# whole-cell model, notebook 10b.) Each model has a **card**: how it was trained and how well it
# does. Read them before trusting a model.

# %%
cards = {m: c for m, c in cu.zoo.available().items() if not m.endswith("_usiigaci")}  # nuclei
pd.DataFrame(
    {
        m: {
            "trained on": "BBBC039 only" if m.endswith("_bbbc039") else "3 datasets",
            "network": c["architecture"]["network"],
            "trained at (px)": c["train_diameter_px"],
            "steps": c["steps"],
            "minutes": round(c["wall_time_s"] / 60),
            "device": c["device"],
            "BBBC039 test AP@0.5": c["test"]["ap50"],
            "AP@0.75": c["test"]["ap75"],
        }
        for m, c in cards.items()
    }
).T

# %% [markdown]
# `train_diameter_px` is the median nucleus diameter of the training images: about 28 pixels for
# the BBBC039-only models (the generalists saw every training image rescaled to 24 px). Keep
# that number in mind. A model's thresholds (Cellpose's `cellprob_threshold`, StarDist's
# `prob_thresh` and `nms_thresh`) were chosen on the validation images and are in its card too.

# %%
ZOO = {m: f"{m}_bbbc039" for m in SHOWN}  # sections 1-6: the models trained on BBBC039 alone
zoo = {m: cu.zoo.load(name).to(device) for m, name in ZOO.items()}
options = {m: cards[name]["postprocess"] for m, name in ZOO.items()}
TRAINED_AT = cards[ZOO["cellpose"]]["train_diameter_px"]


def predict(method, image, model=None, **extra):
    """Labels of a normalised image with a zoo model (or `model`), at the image's own scale."""
    record = cu.methods.get(method)
    return record.segment(model or zoo[method], image, **{**options[method], **extra})


def ap50(truths, preds):
    return cu.metrics.matching_dataset(list(truths), list(preds), 0.5).accuracy


# %% [markdown]
# ## 2 · Other people's images
# The second dataset: nuclei in DAPI-stained tissue sections of ganglioneuroblastoma (Kromp et
# al. 2020), 914 x 1225 pixels, about 350 nuclei per image. We split its five labelled images
# into three to fine-tune on and two to test on (`cu.data.load_split("kromp2020", ...)`,
# documented in `data/README.md`).
#
# **Predict, then run.** The zoo models score about nine in ten on BBBC039 (their cards). What
# do you expect on these images, and which difference between the datasets matters most?

# %%
kromp_train, kromp_train_labels = cu.data.load_split("kromp2020", "train")
kromp_test, kromp_test_labels = cu.data.load_split("kromp2020", "test")


def central(x, side=KROMP_SIDE):
    """The central side x side window of an image (all of it when side is None)."""
    if side is None:
        return x
    top, left = ((n - side) // 2 for n in x.shape[:2])
    return x[top : top + side, left : left + side]


kromp_test, kromp_test_labels = (
    [central(x) for x in kromp_test],
    [central(y) for y in kromp_test_labels],
)
bbbc_test, bbbc_test_labels = cu.data.load_split("bbbc039", "test", n=N_BBBC)
kromp_d = cu.scale.median_diameter(kromp_test_labels)  # shown, never used to rescale
kromp_train_d = cu.scale.median_diameter(kromp_train_labels)  # what fine_tune measures
inside = np.concatenate([x[y > 0] for x, y in zip(kromp_test, kromp_test_labels)])
outside = np.concatenate([x[y == 0] for x, y in zip(kromp_test, kromp_test_labels)])
cu.glue("kromp_nuclei", np.median(inside), ".2f")
cu.glue("kromp_background", np.median(outside), ".2f")
bbbc_d = cu.scale.median_diameter(bbbc_test_labels)
cu.glue("kromp_d", kromp_d, ".0f")
cu.glue("bbbc_d", bbbc_d, ".0f")
fig, axes = plt.subplots(1, 2, figsize=(12, 5))
cu.plot.overlay(
    bbbc_test[0][:200, :200],
    bbbc_test_labels[0][:200, :200],
    ax=axes[0],
    title=f"BBBC039 test: median nucleus diameter {bbbc_d:.0f} px",
)
cu.plot.overlay(
    kromp_test[0][:200, :200],
    kromp_test_labels[0][:200, :200],
    ax=axes[1],
    title=f"Kromp 2020 test: median nucleus diameter {kromp_d:.0f} px",
)
plt.show()

# %%
shift, kromp_preds = {}, {}
for method in tqdm(SHOWN, desc="zoo models"):
    kromp_preds[method] = [predict(method, x) for x in kromp_test]
    shift[method] = {
        "BBBC039 test": ap50(bbbc_test_labels, [predict(method, x) for x in bbbc_test]),
        "Kromp test, as it is": ap50(kromp_test_labels, kromp_preds[method]),
    }
kromp_preds["classical (01)"] = [cu.classical.baseline(x) for x in kromp_test]
shift["classical (01)"] = {
    "BBBC039 test": ap50(bbbc_test_labels, [cu.classical.baseline(x) for x in bbbc_test]),
    "Kromp test, as it is": ap50(kromp_test_labels, kromp_preds["classical (01)"]),
}
shift_table = pd.DataFrame(shift).T
shift_table["drop"] = shift_table["BBBC039 test"] - shift_table["Kromp test, as it is"]
for row, key in [
    ("cellpose", "cellpose"),
    ("stardist", "stardist"),
    ("classical (01)", "classical"),
]:
    cu.glue(f"kromp_{key}", shift_table.loc[row, "Kromp test, as it is"])
cu.glue("kromp_drop", shift_table.loc["cellpose", "drop"], ".2f")
# The baseline's lead over the Cellpose-style model, with a paired bootstrap interval over the
# test images (notebook 07b): how much of it could be the luck of these images?
counts = {m: uncertainty.image_counts(kromp_test_labels, p) for m, p in kromp_preds.items()}
lead = uncertainty.bootstrap_difference(counts["classical (01)"], counts["cellpose"], "ap")
cu.glue("baseline_lead", f"{lead.estimate:+.2f} [{lead.low:+.2f}, {lead.high:+.2f}]")
cu.glue("kromp_n_test", len(kromp_test), "d")
settled = lead.low > 0 or lead.high < 0
verdicts = ("includes 0: these images alone do not settle it", "excludes 0: these images settle it")
cu.glue("lead_verdict", verdicts[settled])
print(f"classical minus Cellpose-style on Kromp, AP@0.5: {lead}")
shift_table.round(3)

# %% [markdown]
# <details><summary>Answer</summary>
#
# Every method loses, the classical baseline too, but the networks lose more: on these images
# the untrained baseline ({glue:text}`kromp_classical`) scores above both zoo models
# ({glue:text}`kromp_cellpose` and {glue:text}`kromp_stardist`). Its lead over the
# Cellpose-style model is {glue:text}`baseline_lead` (95% paired bootstrap interval over the
# {glue:text}`kromp_n_test` test images, crude with so few). The interval
# {glue:text}`lead_verdict`. Several things differ: the
# **scale** (nuclei of about {glue:text}`kromp_d` instead of {glue:text}`bbbc_d` pixels), the
# **intensities** (8-bit images of another microscope; after the same normalisation the
# background is dark, median {glue:text}`kromp_background`, the nuclei at
# {glue:text}`kromp_nuclei`), the **texture** inside nuclei and the **crowding** of a tissue
# section, and one that no image statistic shows: what the annotators chose to outline (the
# window below). The next sections test the first two, which need no new labels.
# </details>
#
# Where do they fail? The 160 x 160 window where the Cellpose-style model errs most, with both
# models' outlines:


# %%
def worst_window(truth, pred, size=160):
    """(y, x) of the size x size window with the most unmatched objects at IoU 0.5."""
    iou, t_ids, p_ids = cu.metrics.iou_matrix(truth, pred, return_ids=True)
    missed = np.isin(truth, t_ids[iou.max(axis=1, initial=0) < 0.5]) & (truth > 0)
    extra = np.isin(pred, p_ids[iou.max(axis=0, initial=0) < 0.5]) & (pred > 0)
    errors = missed | extra
    return max(
        (errors[y : y + size, x : x + size].sum(), y, x)
        for y in range(0, truth.shape[0] - size, 40)
        for x in range(0, truth.shape[1] - size, 40)
    )[1:]


fig, axes = plt.subplots(1, 1 + len(SHOWN), figsize=(5 * (1 + len(SHOWN)), 5))
pred0 = {m: predict(m, kromp_test[0]) for m in SHOWN}
y, x = worst_window(kromp_test_labels[0], pred0[SHOWN[0]])
win = np.s_[y : y + 160, x : x + 160]
cu.plot.overlay(kromp_test[0][win], kromp_test_labels[0][win], ax=axes[0], title="ground truth")
for ax, m in zip(axes[1:], SHOWN):
    cu.plot.overlay(kromp_test[0][win], pred0[m][win], ax=ax, title=f"zoo {m}, as it is")
fig.suptitle(f"Kromp test image 0, window y={y}, x={x}: where the zoo models fail")
plt.show()

# %% [markdown]
# Look at the grey, out-of-focus nuclei: the annotators of this dataset left them out, and both
# zoo models outline them. Those false positives are a difference of **convention**, not of
# skill, and no rescaling or normalisation removes them; only examples of the convention
# (annotated images of this dataset, section 5) can teach it.

# %% [markdown]
# ## 3 · Scale
# A convolutional network sees a nucleus through its **receptive field** (notebook 02) and has
# learned edges, curvatures and textures at the sizes it was trained on. The zoo models saw
# BBBC039's nuclei (a median of 28 px, most of them between half and one and a half times that)
# zoomed by 0.5x to 2x. Outside that range they meet shapes they have never seen: a 7-pixel
# nucleus is a blob, a 112-pixel one is larger than anything in training. Is it also larger
# than what one output pixel of the network can see?


# %%
# The receptive field of one output pixel: the input pixels whose change can change it,
# measured with a gradient (a residual network is not a plain stack for cu.models.receptive_field).
def field(net, side):
    """Rows of a side x side probe that reach the centre pixel's cell probability."""
    probe = torch.zeros(1, 1, side, side, requires_grad=True, device=device)
    net(probe)[0, 2, side // 2, side // 2].backward()
    rows = np.flatnonzero(probe.grad[0, 0].abs().sum(1).cpu().numpy() > 0)
    return int(rows[-1] - rows[0] + 1)


arch = {k: v for k, v in cards[ZOO["cellpose"]]["architecture"].items() if k != "network"}
no_style = cu.methods.get("cellpose").build(seed=0, **{**arch, "style": False}).to(device)
fields = {"zoo network, 256 px probe": field(zoo["cellpose"], 256)}
fields["same network without style, 512 px probe"] = field(no_style, 512)
cu.glue("field_zoo", fields["zoo network, 256 px probe"], "d")
cu.glue("field_no_style", fields["same network without style, 512 px probe"], "d")
print(fields, f"(nuclei of {TRAINED_AT} px)")

# %% [markdown]
# The zoo network's field ({glue:text}`field_zoo` px) is the whole probe: its *style* (notebook
# 05), an average over the whole image, is added at every level of the decoder, so every output
# pixel depends on every input pixel. Without the style its convolutions alone reach at least
# {glue:text}`field_no_style` px. Either way a 112-pixel nucleus fits in the field: what fails
# at 4x is not what the network can see but what it has learned.
#
# A controlled experiment: the same BBBC039 test crops, resized by a factor from a quarter to 4
# (labels by nearest neighbour, so the truth is nearly exact), segmented as they are.
#
# **Predict, then run.** Will the curve of AP against the scale factor be symmetric around 1?

# %%
crops = [(x[:CROP, :CROP], y[:CROP, :CROP]) for x, y in zip(bbbc_test, bbbc_test_labels)]


def resized(factor):
    """The crops and their labels resized by `factor`."""
    out = [(cu.scale.rescale_image(x, factor), y) for x, y in crops]
    return [(x, cu.scale.rescale_labels(y, shape=x.shape)) for x, y in out]


scale_ap = {m: [] for m in [*SHOWN, "classical (01)"]}
for f in tqdm(FACTORS, desc="scale factors"):
    data = resized(f)
    truths = [y for _, y in data]
    for m in SHOWN:
        scale_ap[m].append(ap50(truths, [predict(m, x) for x, _ in data]))
    md = max(2, round(cu.classical.BASELINE["min_distance"] * f))  # scaled with the nuclei
    scale_ap["classical (01)"].append(
        ap50(truths, [cu.classical.baseline(x, min_distance=md) for x, _ in data])
    )

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
for m, values in scale_ap.items():
    ax.plot(FACTORS, values, "o-", label=m)
ax.set_xscale("log", base=2)
ax.set_xticks(FACTORS, [f"{f:g}x\n({TRAINED_AT * f:.0f} px)" for f in FACTORS])
ax.axvspan(0.5, 2.0, color="grey", alpha=0.12, label="zoom range seen in training")
ax.set(
    xlabel="scale factor (nucleus diameter)",
    ylabel="AP@0.5",
    ylim=(0, 1),
    title="Zoo models on BBBC039 test crops resized, segmented as they are",
)
ax.legend(fontsize=8)
plt.show()
band = [k for k, f in enumerate(FACTORS) if 0.5 <= f <= 2]  # the zoom range of training
for m in SHOWN:
    ap = np.array(scale_ap[m])
    cu.glue(f"scale_{m}_band", f"{ap[band].min():.2f}-{ap[band].max():.2f}")
    cu.glue(f"scale_{m}_small", ap[FACTORS.index(0.25)], ".2f")
    cu.glue(f"scale_{m}_large", ap[FACTORS.index(4)], ".2f")
small, large = FACTORS.index(0.25), FACTORS.index(4)
worse = {m: "4x" if scale_ap[m][large] < scale_ap[m][small] else "0.25x" for m in SHOWN}
cu.glue("worse_end", ", ".join(f"{m} {end}" for m, end in worse.items()))

# %% [markdown]
# <details><summary>Answer</summary>
#
# No. The worse end in this run, model by model: {glue:text}`worse_end`. For the Cellpose- and
# StarDist-style networks it is 4x; read the numbers rather than the shape you expected.
# Inside the grey band, the zoom range of training, the scores range over
# {glue:text}`scale_cellpose_band` (Cellpose-style) and {glue:text}`scale_stardist_band`
# (StarDist-style): on a few small crops a handful of nuclei
# moves a score by several points, so differences inside the band say little (full mode uses
# a crop of each of the 48 test images). At both ends the networks fall below the band:
# {glue:text}`scale_cellpose_small` and {glue:text}`scale_stardist_small` at a quarter of the
# size, {glue:text}`scale_cellpose_large` and {glue:text}`scale_stardist_large` at 4x. The two
# ends fail for different reasons.
# Enlarged nuclei are bigger than anything seen in training, yet all their information is still
# in the image: resizing it back can recover the score (below). Shrunk nuclei have lost pixels:
# enlarging them brings them to a familiar size but cannot restore the lost detail. The
# classical curve is not a fair rival at the ends: its `min_distance` was scaled with the
# factor, that is, it was given the true scale, which the networks are not. That is why you
# should know your pixel size, and why generalist models are trained with zooms.
# </details>
#
# ### Estimating the nucleus diameter without labels
# If an image's nuclei are `d` pixels across, resizing it by `28 / d` brings them to the
# training size. We rarely know `d` for a new image, but the model can tell us: segment the
# image, measure what it finds, and trust the pass whose objects are closest to the training
# size. `cu.estimate_diameter` segments the image at 0.5x, 1x and 2x, keeps the pass whose
# median object is nearest to 28 px, and refines with one more pass at the scale this first
# estimate suggests. (Cellpose first predicts the diameter with a small regression from the
# network's *style vector*, notebook 05, then refines it with one segmentation pass: the
# generalists of section 7 do the same.)
#
# **Exercise 1.** The size of an object: write the median equivalent-circle diameter
# `2 * sqrt(area / pi)` of the objects of a label image (0 is background).
#
# <details><summary>Hint 1</summary>
#
# `np.unique(labels[labels > 0], return_counts=True)` gives the ids and, with
# `return_counts`, how many pixels each has: its area.
#
# </details>
#
# <details><summary>Hint 2</summary>
#
# A disk of area `A` has the diameter `2 * np.sqrt(A / np.pi)`: apply it to the whole
# array of areas at once, then take `np.median` and return it as a `float`.
#
# </details>


# %% tags=["solution"]
def median_equivalent_diameter(labels):
    """Median of 2 * sqrt(area / pi) over the objects of an integer (H, W) label image."""
    # BEGIN SOLUTION
    _, areas = np.unique(labels[labels > 0], return_counts=True)
    return float(np.median(2 * np.sqrt(areas / np.pi)))
    # END SOLUTION


# Stuck? Run  median_equivalent_diameter = cu.scale.median_diameter  (the library's version)
# and go on.


# %% tags=["check"]
cu.checks.check_close(
    median_equivalent_diameter(kromp_test_labels[0]),
    cu.scale.median_diameter(kromp_test_labels[0]),
    "median_equivalent_diameter(kromp_test_labels[0])",
)

# %%
estimates = []
for f in tqdm(ESTIMATE_FACTORS, desc="estimating diameters"):
    for x, y in resized(f):
        # measured like the estimate: nuclei cut by the crop's border do not count
        estimates.append(
            {
                "factor": f,
                "true (px)": cu.scale.median_diameter(clear_border(y)),
                "estimated (px)": cu.estimate_diameter(x, "cellpose", model=zoo["cellpose"]),
            }
        )
estimates = pd.DataFrame(estimates)
estimates["error %"] = 100 * (estimates["estimated (px)"] / estimates["true (px)"] - 1)
close = estimates["error %"].abs() < 25  # False where there is no estimate (NaN)
cu.glue("estimate_within", f"{close.sum()} of {len(estimates)}")
cu.glue("estimate_none", int(estimates["estimated (px)"].isna().sum()), "d")
estimates.groupby("factor").agg(
    crops=("error %", "size"),
    **{
        "median |error| %": ("error %", lambda e: e.abs().median()),
        "within 25 %": ("error %", lambda e: int((e.abs() < 25).sum())),
        "no estimate": ("estimated (px)", lambda d: int(d.isna().sum())),
    },
).round(1)

# %% [markdown]
# The estimate lands within 25% of the true median diameter on {glue:text}`estimate_within`
# crops. Crops without an estimate (here {glue:text}`estimate_none`) are those where no pass
# found three whole nuclei: `estimate_diameter` returns `nan`, and `segment` warns and segments
# the image as it is. Look at the full table, `estimates`: at which factors are the misses?

# %% [markdown]
# With the estimate, resize each image so that its nuclei have the training diameter, segment,
# and bring the labels back to the image's size: that is `cu.segment(image, diameter=None)`.
# We try it where the curve above fell, at scales outside the zoom range of training: inside
# that range the models cope as they are (that is what the zoom augmentation bought), and
# resampling has a cost (it blurs, and small nuclei lose pixels). The generalists of section 7
# record the range of diameters they segment as they are, and `cu.segment` rescales their input
# only outside it.

# %%
rescaled_ap = {}
for f in tqdm(ESTIMATE_FACTORS, desc="segment with the estimated diameter"):
    data = resized(f)
    found = estimates.loc[estimates["factor"] == f, "estimated (px)"]  # the same as diameter=None
    found = [d if np.isfinite(d) else None for d in found]  # no estimate: segment decides
    rescaled_ap[f] = ap50(
        [y for _, y in data],
        [cu.segment(x, "cellpose", d, model=zoo["cellpose"]) for (x, _), d in zip(data, found)],
    )
compare = pd.DataFrame(
    {
        "as it is": {f: scale_ap["cellpose"][FACTORS.index(f)] for f in ESTIMATE_FACTORS},
        "rescaled to the estimated diameter": rescaled_ap,
    }
).rename_axis("scale factor")
for f, key in ((0.25, "small"), (4, "large")):
    row = compare.loc[f]
    cu.glue(f"rescue_{key}", f"{row['as it is']:.2f} to {row.iloc[1]:.2f}")
compare.round(3)

# %% [markdown]
# Rescaling to the estimated diameter moved the Cellpose-style model from
# {glue:text}`rescue_small` at a quarter of the size and from {glue:text}`rescue_large` at 4x:
# in this run both ends reach the same score, so the detail lost by shrinking does not show
# here; the enlarged images gain the most.
#
# ## 4 · Normalisation
# <!-- constants: 99.8 -->
# All zoo models were trained on images whose 1st and 99.8th percentiles were mapped to 0 and
# 1. A new modality needs the same treatment, and the percentiles can matter: a few saturated
# or hot pixels can squash everything else. We try four choices on the raw 8-bit file of a
# Kromp image, and a fifth: min-max after one **hot pixel** (a defective camera pixel, here a
# hundred times as bright as the brightest nucleus, as 16-bit cameras make them).

# %%
raw = central(
    tifffile.imread(cu.data.fetch("kromp2020", "images/Ganglioneuroblastoma_3.tif"))[..., 0]
)  # the raw 8-bit file of Kromp test image 0 (same crop)
hot = raw.astype(np.float32)
hot[0, 0] = 100 * float(raw.max())  # one hot pixel
choices = {
    "1 / 99.8 (the course)": (raw, 1, 99.8),
    "1 / 99 (Cellpose)": (raw, 1, 99),
    "0 / 100 (min-max)": (raw, 0, 100),
    "10 / 99.9": (raw, 10, 99.9),
    "min-max, one hot pixel": (hot, 0, 100),
}
norm_ap = {}
fig, axes = plt.subplots(1, len(choices), figsize=(4 * len(choices), 3.4))
for ax, (name, (image, lo, hi)) in zip(axes, choices.items()):
    x = cu.data.normalize_percentile(image, lo, hi)
    norm_ap[name] = ap50(kromp_test_labels[:1], [predict("cellpose", x)])
    ax.hist(x.ravel(), bins=100, range=(-0.5, 1.5), color="tab:blue")
    ax.set(
        title=f"{name}: AP@0.5 {norm_ap[name]:.2f}", xlabel="normalised intensity", ylabel="pixels"
    )
fig.suptitle("Kromp test image 0 (raw 8-bit) under five normalisations, zoo Cellpose-style")
plt.tight_layout()
plt.show()
plain = [v for k, v in norm_ap.items() if "hot" not in k]
cu.glue("norm_low", min(plain), ".2f")
cu.glue("norm_high", max(plain), ".2f")
cu.glue("norm_hot", norm_ap["min-max, one hot pixel"], ".2f")
cu.glue("raw_max", int(raw.max()), "d")
cu.glue("raw_p998", np.percentile(raw, 99.8), ".0f")

# %% [markdown]
# <!-- constants: 99.8 -->
# **Why?** The first four hardly differ (AP {glue:text}`norm_low` to {glue:text}`norm_high`):
# the file is 8-bit and clean, its maximum ({glue:text}`raw_max`) not far above its 99.8th
# percentile ({glue:text}`raw_p998`), so min-max and percentiles map it almost alike. One hot
# pixel changes that: min-max lets it set the range, every nucleus falls to a hundredth of its
# brightness, and the AP drops to {glue:text}`norm_hot`. The percentiles would have ignored
# it. Normalise new images as the training images were, with percentiles.
#
# ## 5 · Fine-tuning on a few annotated images
# If a pretrained model is close, a few annotated images of *your* data may be enough to adapt
# it: training continues from the pretrained weights, with a small learning rate, so that the
# network keeps what it knows and learns what is new. `cu.fine_tune` does it through the
# method's record: the same targets and loss, the images first resized so that their nuclei
# have the training diameter (measured on the labels you give). We compare, on the two Kromp
# test images: the zoo model as it is, and rescaled; fine-tuned on 1 (and 2, 3) Kromp images;
# the same network trained **from scratch** on the same images for the same steps; and a
# control that trains nothing but lets every batch-norm layer re-estimate its statistics on
# the Kromp images (`cu.fine_tuning.recalibrate_batchnorm`), which tells how much of
# fine-tuning is only new intensity statistics. Every test image is rescaled with the median
# nucleus diameter of the *training* labels, as `fine_tune` measured it: no test label is used.
#
# **Predict, then run.** Which wins with one annotated image, fine-tuning or training from
# scratch? And with three?


# %% tags=["remove-stderr"]
def tune(n, start):
    """A Cellpose-style network trained on the first n Kromp images, from the zoo or scratch."""
    arch = cards[ZOO["cellpose"]]["architecture"]
    model = (
        cu.zoo.load(ZOO["cellpose"])  # a fresh copy: fine-tuning changes it
        if start == "zoo"
        else cu.methods.get("cellpose").build(
            seed=0, **{k: v for k, v in arch.items() if k != "network"}
        )
    )
    tuned, _ = cu.fine_tune(
        "cellpose",
        kromp_train[:n],
        kromp_train_labels[:n],
        model=model,
        budget=TUNE,
        lr=TUNE.lr if start == "zoo" else 3e-3,
        progress=False,
        device=device,
    )
    return tuned


def kromp_ap(model):
    """AP@0.5 on the Kromp test images, rescaled as fine_tune rescaled the training images."""
    return ap50(
        kromp_test_labels,
        [cu.segment(x, "cellpose", diameter=kromp_train_d, model=model) for x in kromp_test],
    )


def batchnorm_only(n):
    """The zoo network with its batch-norm statistics re-estimated on n Kromp images."""
    return cu.fine_tuning.recalibrate_batchnorm(
        "cellpose", kromp_train[:n], kromp_train_labels[:n], model=zoo["cellpose"]
    )


tuning = {
    "zoo, as it is": {n: shift["cellpose"]["Kromp test, as it is"] for n in N_TUNED},
    "zoo, rescaled (no training)": {n: kromp_ap(zoo["cellpose"]) for n in N_TUNED},
}
tuning["fine-tuned from the zoo"] = {n: kromp_ap(tune(n, "zoo")) for n in tqdm(N_TUNED)}
tuning["from scratch"] = {n: kromp_ap(tune(n, "scratch")) for n in N_TUNED}
tuning["batch-norm statistics only"] = {n: kromp_ap(batchnorm_only(n)) for n in N_TUNED}
tuning_table = pd.DataFrame(tuning).rename_axis("annotated Kromp images")
tuning_table.round(3)

# %%
fig, ax = plt.subplots(figsize=(7, 4))
for name, values in tuning.items():
    ax.plot(list(values), list(values.values()), "o-" if len(values) > 1 else "s", label=name)
ax.set(
    xlabel="annotated Kromp images",
    ylabel="AP@0.5 on the Kromp test images",
    ylim=(0, 1),
    xticks=N_TUNED,
    title=f"Fine-tuning: {TUNE_STEPS} steps per run",
)
ax.legend(fontsize=8)
plt.show()
first, last = N_TUNED[0], N_TUNED[-1]
for key, row in [("ft", "fine-tuned from the zoo"), ("scratch", "from scratch")]:
    cu.glue(f"{key}_first", tuning[row][first], ".2f")
    cu.glue(f"{key}_last", tuning[row][last], ".2f")
rescaled_zoo = tuning["zoo, rescaled (no training)"][last]
cu.glue("zoo_asis", tuning["zoo, as it is"][last], ".2f")
cu.glue("zoo_rescaled", rescaled_zoo, ".2f")
cu.glue("bn_gain", tuning["batch-norm statistics only"][last] - rescaled_zoo, "+.2f")
cu.glue("ft_gain", tuning["fine-tuned from the zoo"][last] - rescaled_zoo, "+.2f")
cu.glue("n_last", last, "d")
cu.glue("tune_steps", TUNE_STEPS, "d")

# %% [markdown]
# <details><summary>Answer</summary>
#
# With {glue:text}`tune_steps` steps, fine-tuning reaches {glue:text}`ft_first` with one
# annotated image and {glue:text}`ft_last` with {glue:text}`n_last`; from scratch, the same
# images and steps (at a larger learning rate, 3e-3, as a fresh network needs) give
# {glue:text}`scratch_first` and {glue:text}`scratch_last`. A network that
# starts from random weights has not yet learned what a nucleus is (a warning above, in
# Jupyter, says its flow check dropped every mask: its flows are still noise); the
# pretrained one only has to adjust. With a budget of minutes, fine-tuning wins by far; whether
# a long training from scratch catches up is a question for full mode. Compare one image with
# several at the same steps: with this few steps, the step budget limits the run more than the
# images do.
#
# Rescaling alone (no training) moved the zoo from {glue:text}`zoo_asis` to
# {glue:text}`zoo_rescaled`: that part was scale. Re-estimating only the batch-norm statistics
# moved it by {glue:text}`bn_gain`, where fine-tuning moved it by {glue:text}`ft_gain`: the
# rest is learned weights, among them the annotators' convention of section 2.
# </details>
#
# **Which layers, which learning rate?** A small learning rate (here 5e-4, a sixth of the zoo's)
# keeps the network near what it knew. With very few images, freezing the contracting path
# (`cu.fine_tune(..., freeze="encoder")`) keeps its general features and trains the decoder,
# which decides where outlines go; with more images, training everything adapts more.
#
# <!-- constants: 2.0 -->
# ### Human in the loop (Cellpose 2.0)
# Annotating a whole tissue image takes hours. Cellpose 2.0 (Pachitariu & Stringer 2022)
# proposes: let the model segment, correct only what is wrong, retrain, repeat. We simulate the
# correction: start from the zoo model's prediction on the first training image (its central
# crop in fast mode), replace the `k` worst-segmented nuclei (lowest IoU with their true
# outline) by their true outline, and fine-tune on that image. How much does each correction
# buy?
#
# ![The loop: a pretrained model segments your images; you correct its worst objects; the
# corrections fine-tune it; a few fully annotated images measure every
# round](figures/08_human_in_the_loop.svg)


# %%
def corrected(image, truth, k):
    """The zoo's prediction on `image`, with the k worst true nuclei drawn in correctly."""
    pred = cu.segment(image, "cellpose", diameter=kromp_train_d, model=zoo["cellpose"])
    iou, t_ids, p_ids = cu.metrics.iou_matrix(truth, pred, return_ids=True)
    worst = t_ids[np.argsort(iou.max(axis=1, initial=0))[:k]]  # segmented worst
    touched = p_ids[(iou[np.isin(t_ids, worst)] > 0).any(axis=0)]  # predictions on them
    fixed = np.where(np.isin(pred, touched), 0, pred)  # the annotator erases those ...
    # ... and draws the true outlines (new ids, above every predicted one)
    return np.where(np.isin(truth, worst), truth + int(pred.max()), fixed).astype(np.int32)


loop = {}
loop_image, loop_truth = central(kromp_train[0]), central(kromp_train_labels[0])
for k in tqdm(CORRECTIONS, desc="corrections"):
    labels_k = corrected(loop_image, loop_truth, k)
    model, _ = cu.fine_tune(
        "cellpose",
        [loop_image],
        [labels_k],
        model=cu.zoo.load(ZOO["cellpose"]),  # the model whose prediction was corrected
        budget=TUNE,
        progress=False,
        device=device,
    )
    loop[k] = kromp_ap(model)
cu.glue("loop_none", loop[0], ".2f")
cu.glue("loop_most", loop[CORRECTIONS[-1]], ".2f")
cu.glue("loop_k", CORRECTIONS[-1], "d")
pd.Series(loop, name="Kromp test AP@0.5").rename_axis("nuclei corrected").round(3)

# %% [markdown]
# <!-- constants: 2.0 -->
# Correcting a few dozen of the worst nuclei, out of about 350 in a whole image, is minutes of work
# rather than hours; here {glue:text}`loop_k` corrections moved the score from
# {glue:text}`loop_none` (retraining on the uncorrected prediction: the model learns its own
# output back, mistakes included) to {glue:text}`loop_most`. The simulation is cruder than Cellpose
# 2.0's loop, where the annotator corrects *every* error of an image before moving to the next one:
# here the other errors stay in the training labels.
#
# ## 6 · Your own folder
# `cu.data.load_folder(images, masks)` reads every 2-D TIFF or PNG of a folder, and instance
# masks from another folder matched by file name (`a.tif` and `a_masks.png` match), with a
# clear error for unmatched names, other shapes, RGB or non-integer masks and empty folders; it
# never writes into them. Here we make such a folder from two Kromp images, as you would from
# your microscope's export:

# %%
with tempfile.TemporaryDirectory() as tmp:
    folder = Path(tmp)
    for k in range(2):
        (folder / "images").mkdir(exist_ok=True)
        (folder / "masks").mkdir(exist_ok=True)
        tifffile.imwrite(
            folder / "images" / f"section_{k}.tif",
            (np.clip(kromp_test[k], 0, 1) * 255).astype(np.uint8),  # 8-bit, as a camera writes
        )
        tifffile.imwrite(folder / "masks" / f"section_{k}_masks.tif", kromp_test_labels[k])
    mine, my_labels, names = cu.data.load_folder(folder / "images", folder / "masks")
print(names, [x.shape for x in mine], [int(y.max()) for y in my_labels])

# %% [markdown]
# ## 7 · One call: `cu.segment`
# Everything above in one function, for your images:
#
# ```python
# labels = cu.segment(image)                       # Cellpose-style zoo model, diameter estimated
# labels = cu.segment(image, "stardist", diameter=20)   # StarDist-style, nuclei of 20 px
# labels = cu.segment(image, model=my_fine_tuned_model)
# ```
#
# It takes a 2-D image of any numeric type, normalises it, estimates the nucleus diameter when
# none is given, rescales only when that diameter lies outside the range the model segments as
# it is, predicts tile by tile, applies the model's tuned thresholds, and returns int32 labels
# at the input's size (0 = background). Its default models are the zoo's **generalists**,
# trained on BBBC039, DSB2018 and Kromp's three training images together. They estimate the
# diameter from one pass over the image's central 256 x 256 window (a *size model* on the
# network's style, as Cellpose does, `cu.sizing`) and check the estimate against the nuclei
# they then find. Below, the same
# calls with the BBBC039-only models (the scale passes of section 3) and with the generalists.

# %%
goal = {}
for m in SHOWN:
    for family, name in (("BBBC039 only", ZOO[m]), ("generalist", m)):
        net = zoo[m] if name == ZOO[m] else cu.zoo.load(name).to(device)
        row = {
            "BBBC039 test (card)": cu.zoo.card(name)["test"]["ap50"],
            "Kromp test": ap50(
                kromp_test_labels, [cu.segment(x, m, model=net) for x in kromp_test]
            ),
        }
        for f in (0.5, 2.0):
            data = resized(f)
            row[f"BBBC039 crops x{f}"] = ap50(
                [y for _, y in data], [cu.segment(x, m, model=net) for x, _ in data]
            )
        goal[f"{m}, {family}"] = row
goal_table = pd.DataFrame(goal).T
goal_table.round(3)

# %% [markdown]
# <!-- constants: 0.10 -->
# The goal for a model you can hand to a colleague: on nuclei images from other sources and
# scales, within 0.10 AP of its own test score. Read the table against it: no model here meets
# it on Kromp yet. And Kromp is not new to the generalists: they were trained on its three
# training images, so their Kromp column measures a dataset they know. They score higher on
# the Kromp test images than the models that only know BBBC039, with no fine-tuning by you. The
# breadth costs little on BBBC039 itself (compare the first column); on the BBBC039 crops
# zoomed 0.5x or 2x, read for yourself which family holds better.
#
# ### The generalists to try first
# The course's zoo is a teaching model: small, trained on a CPU in about an hour per model on
# three public datasets, every step of it readable in these notebooks. The field's generalists
# were trained on far more images, and they are what to try first on your own data. What each
# needs:
#
# - **Cellpose** `cyto3` and `nuclei` {cite}`stringer2021cellpose`, {cite}`stringer2025cellpose3`:
#   cells and nuclei in many modalities. `pip install "cellpose<4"` (version 4 ships only
#   Cellpose-SAM); the weights download on first use; give a diameter or let its size model
#   estimate it; a CPU works, a GPU is faster. The flows of notebook 05, and of the zoo's
#   `cellpose`.
# - **Cellpose-SAM** {cite}`pachitariu2025cellposesam`: the same package (version 4), flows
#   decoded from a large transformer encoder; robust to size and noise; a GPU in practice.
# - **StarDist** `2D_versatile_fluo` (trained on DSB2018 images) and `2D_versatile_he` (H&E)
#   {cite}`schmidt2018stardist`: nuclei. `pip install stardist` and TensorFlow; the weights
#   download; a CPU is fine. The rays and NMS of notebooks 06 and 06b.
# - **Mesmer** {cite}`greenwald2021mesmer` (DeepCell): whole cells and nuclei in tissue, from a
#   nuclear and a membrane channel (notebook 10's two channels); the weights download with a
#   (free) DeepCell access token.
# - **Segment Anything** {cite}`kirillov2023sam`: any object in natural images, from prompts
#   (points, boxes) or an automatic grid of them; a GPU; not trained on microscopy.
# - **micro-SAM** {cite}`archit2025microsam`: Segment Anything fine-tuned on light and electron
#   microscopy, with a napari plugin for prompts and corrections (the human in the loop of
#   section 5); the weights download; a GPU helps.
#
# Whichever you use, the lessons of this notebook hold: read its card, check its scale,
# normalise as it was trained, measure it on a few images you annotated, and fine-tune when it
# falls short: what is left then (texture, crowding, your annotators' convention) only your
# examples teach.
#
# ## Recap
# <!-- constants: 2.0 -->
# - A pretrained model comes with a card: what it was trained on, at which nucleus size, and
#   its scores. Read it. Compare it with an untrained baseline: on Kromp's tissue sections the
#   classical baseline ({glue:text}`kromp_classical`) beat the BBBC039-only zoo models.
# - On other people's images scores drop ({glue:text}`kromp_drop` for the Cellpose-style model
#   on Kromp). Scale explains part of it: rescaling to the training diameter moved it from
#   {glue:text}`zoo_asis` to {glue:text}`zoo_rescaled` (Kromp's nuclei lie inside the zoom range
#   of training: little to gain). Far from the training size it matters: from
#   {glue:text}`rescue_small` at a quarter of the size, from {glue:text}`rescue_large` at 4x.
# - Normalise new images as the training images were (percentiles, not min and max: one hot
#   pixel took the AP to {glue:text}`norm_hot`).
# - A few annotated images fine-tune a pretrained model far better than they train a new one in
#   the same steps; re-estimating the batch-norm statistics alone does not explain it;
#   correcting only the worst objects (Cellpose 2.0) buys a gain for minutes of work
#   ({glue:text}`loop_none` to {glue:text}`loop_most` here).
# - `cu.data.load_folder` reads your images and masks; `cu.segment(image)` does it all; the
#   field's generalists (above) are what to try first.
#
# The checks below fail when the lesson breaks.

# %%
assert median_equivalent_diameter(kromp_test_labels[0]) == cu.scale.median_diameter(
    kromp_test_labels[0]
)
# The zoo models lose on other images (domain shift), and more than a few points.
assert all(shift_table.loc[m, "drop"] > 0.02 for m in SHOWN), shift_table
# Rescaling to the estimated diameter helps on resized images, where the scale is wrong.
for f in ESTIMATE_FACTORS:
    print(
        f"x{f}: AP {compare.loc[f, 'as it is']:.3f} as it is, "
        f"{compare.loc[f, 'rescaled to the estimated diameter']:.3f} rescaled"
    )
assert compare["rescaled to the estimated diameter"].mean() > compare["as it is"].mean() + 0.05
assert close.mean() >= 0.85, estimates  # the diameter estimate holds on most crops
assert (estimates.groupby("factor")["error %"].apply(lambda e: e.abs().median()) < 15).all()
# Fine-tuning on the most annotated images beats the zoo as it is and training from scratch.
n = N_TUNED[-1]
fine, scratch = tuning["fine-tuned from the zoo"][n], tuning["from scratch"][n]
print(
    f"{n} images: fine-tuned {fine:.3f}, from scratch {scratch:.3f}, "
    f"zoo {tuning['zoo, as it is'][n]:.3f}"
)
# Claims about trained results: a dry run of full mode (COURSE_DRYRUN=1) reports them unchecked.
cu.checks.check_result(
    fine > tuning["zoo, as it is"][n] + 0.03 and fine > scratch + 0.1,
    "fine-tuning beats the zoo as it is and training from scratch",
)
# The text's claims: the baseline beats both zoo models on Kromp; the networks fall outside the
# zoom range at both ends; the field is the probe; a hot pixel ruins min-max and nothing else
# matters on this clean file; scratch loses at every image count; fine-tuning is more than
# batch-norm statistics; the corrections buy something.
kromp_col = shift_table["Kromp test, as it is"]
assert kromp_col["classical (01)"] > max(kromp_col[m] for m in SHOWN), shift_table
for m in SHOWN:
    ap = np.array(scale_ap[m])
    assert max(ap[FACTORS.index(0.25)], ap[FACTORS.index(4)]) < ap[band].min(), (m, ap)
assert fields["zoo network, 256 px probe"] == 256
assert fields["same network without style, 512 px probe"] > 4 * TRAINED_AT
assert max(plain) - min(plain) < 0.05 and norm_ap["min-max, one hot pixel"] < min(plain) - 0.2
fine_all, scratch_all = tuning["fine-tuned from the zoo"], tuning["from scratch"]
cu.checks.check_result(
    all(fine_all[k] > scratch_all[k] + 0.1 for k in N_TUNED), "scratch loses at every count"
)
bn_only = tuning["batch-norm statistics only"][n] - rescaled_zoo
cu.checks.check_result(bn_only < (fine - rescaled_zoo) / 2, "batch norm is a small part of it")
assert cu.get_mode() == "full" or fine_all[n] < fine_all[N_TUNED[0]] + 0.05  # the step budget
cu.checks.check_result(loop[CORRECTIONS[-1]] > loop[0], "the corrections buy something")
for m in ("cellpose", "stardist"):  # "for the Cellpose- and StarDist-style networks, 4x"
    assert scale_ap[m][FACTORS.index(4)] < scale_ap[m][FACTORS.index(0.25)], scale_ap
assert (compare.iloc[:, 1] > compare["as it is"]).all(), compare  # both ends gain
assert tuning["zoo, rescaled (no training)"][n] > tuning["zoo, as it is"][n], tuning
drops = shift_table["drop"]
assert all(drops[m] > drops["classical (01)"] for m in SHOWN), shift_table  # networks lose more
assert len(mine) == 2 and all(len(np.unique(y)) > 30 for y in my_labels)
# The generalists, trained on three datasets, beat the BBBC039-only models on Kromp's tissue.
for m in SHOWN:
    gain = (
        goal_table.loc[f"{m}, generalist", "Kromp test"]
        - goal_table.loc[f"{m}, BBBC039 only", "Kromp test"]
    )
    assert gain > 0.05, (m, gain)
    # ... and give up little of BBBC039 for it (the cards' test scores).
    cost = cu.zoo.card(ZOO[m])["test"]["ap50"] - cu.zoo.card(m)["test"]["ap50"]
    assert cost < 0.02, (m, cost)
print("all checks passed")
