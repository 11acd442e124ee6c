# %% [markdown]
# # 00 · Set-up and data: what a microscopy image is
#
# **What you will learn**
# - how to check that your environment works, and what *fast* and *full* mode mean;
# - what a fluorescence microscopy image is made of: the file's dtype, the camera's bit depth,
#   saturation, the histogram;
# - why we normalise images with percentiles before a network sees them;
# - the two datasets of this course: **BBBC039** (real nuclei) and a **synthetic** generator;
# - the difference between a *semantic* mask and *instance* labels, and why touching nuclei are
#   the central problem of this course.
#
# **Papers:** {cite}`caicedo2019bbbc039`, {cite}`ljosa2012bbbc`

# %% [markdown]
# ## The environment
# Every notebook starts with the same check. It prints the library versions, the device (a CUDA
# GPU, Apple's MPS, or the CPU) and the *mode*. In **fast** mode the notebooks use a few small
# images and a few training steps so that they run in minutes on a laptop; in **full** mode they
# run the real experiments. The switch is one environment variable, `COURSE_MODE`
# (`fast`, `full` or `auto`, which picks `full` when a CUDA GPU is present).

# %%
import matplotlib.pyplot as plt
import numpy as np

import course_utils as cu

report = cu.env.check_env()
rng = cu.env.seed_everything(0)

# %% [markdown]
# Sizes in every notebook come from `cu.pick(fast=..., full=...)`, never from constants scattered
# through the code. Here: how many images of each split we look at.

# %%
N_IMAGES = cu.pick(fast=4, full=48)
print(f"mode = {cu.get_mode()}, looking at {N_IMAGES} test images")

# %% [markdown]
# ## A real fluorescence image: BBBC039
# BBBC039 (Caicedo et al. 2019, from the Broad Bioimage Benchmark Collection, Ljosa et al. 2012)
# holds 200 fields of view of U2OS cells whose nuclei are stained with Hoechst, each with a
# hand-drawn instance mask. The files come from the course's data registry: a list of files with
# their sha256 sums, read from a local mirror or cache, and downloaded only when neither has them.
# We first read the **raw** pixel values, without normalisation.

# %%
raw_images, labels = cu.data.load_split("bbbc039", "test", n=N_IMAGES, normalize=False)
raw = raw_images[0]
print("shape:", raw.shape, " dtype on disk: uint16 -> here", raw.dtype)
print(f"min {raw.min():.0f}, max {raw.max():.0f}, median {np.median(raw):.0f}")

# %% [markdown]
# ### The file's dtype is not the camera's bit depth
# Two numbers describe pixel values, and they are easy to confuse:
#
# - the **container dtype**: how the file stores each pixel. BBBC039's TIFF files use `uint16`,
#   an unsigned 16-bit integer that can hold 0 to 65535 (`load_split` then converts to
#   `float32`, which is what networks compute with);
# - the **bit depth** of the acquisition: how many distinct values the camera's
#   analogue-to-digital converter can produce. A 12-bit camera writes 0 to 2^12 - 1 = 4095.
#
# Cameras of 10, 12 or 14 bits are common, while image files and libraries work with 8- or
# 16-bit integers, so such images travel in 16-bit files whose top bits are always zero.
#
# **Predict, then run.** The files could hold values up to 65535. Before you run the next cell,
# guess the largest value in any of the 48 test images. Then: why would several images share
# exactly the same maximum?

# %%
all_raw, _ = cu.data.load_split("bbbc039", "test", normalize=False)  # the whole test split
maxima = np.array([x.max() for x in all_raw])
CEILING = 2**12 - 1  # the largest value a 12-bit camera can write
print(f"uint16 holds 0 to {np.iinfo(np.uint16).max}; a 12-bit camera writes 0 to {CEILING}")
print(f"maxima of the {len(all_raw)} test images: {maxima.min():.0f} to {maxima.max():.0f}")
print(f"bits needed for the largest value: {int(np.ceil(np.log2(maxima.max() + 1)))}")
saturated = np.flatnonzero(maxima >= CEILING)
for i in saturated:
    n_top = int((all_raw[i] >= CEILING).sum())
    print(f"  test image {i:2d}: {n_top:3d} pixels at {CEILING} ({n_top / all_raw[i].size:.3%})")

# %% [markdown]
# <details><summary>Answer</summary>
#
# The largest value is 4095 = 2^12 - 1, not anything near 65535: BBBC039 is **12-bit data in
# 16-bit files**. Six images stop at exactly 4095 because that is the camera's ceiling: those
# pixels are **saturated**. The true brightness there was at least 4095, and we cannot know how
# much more. The other images stay below it (their maxima start around 1100).
# </details>
#
# ### Saturation
# A saturated pixel has lost information: a saturated nucleus has a flat top, its texture is
# gone, and its total intensity (a measure of DNA content, for example) is underestimated. For
# *segmentation* a few saturated pixels do little harm, because the nucleus is still bright;
# for *measuring intensities* they matter. In BBBC039 saturation is rare: a few to a few dozen
# pixels per image, in small, very bright nuclei (condensed chromatin, as in dividing or dying
# cells). When you acquire images yourself, check that the histogram stops short of the ceiling
# (most acquisition software can colour saturated pixels). Below, the maxima of all test images,
# and the saturated pixels (red) of the image that has the most.

# %% tags=["hide-input"]
worst = saturated[np.argmax([(all_raw[i] >= CEILING).sum() for i in saturated])]
at_top = all_raw[worst] >= CEILING
cy, cx = np.argwhere(at_top).mean(axis=0).astype(int)
zoom = np.s_[max(cy - 64, 0) : cy + 64, max(cx - 64, 0) : cx + 64]
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
axes[0].hist(maxima, bins=24, color="tab:blue")
axes[0].axvline(CEILING, color="tab:red", ls="--", label="4095 = 2^12 - 1: the camera's ceiling")
axes[0].set(
    title=f"Largest value of each of the {len(all_raw)} test images",
    xlabel="largest value (camera counts)",
    ylabel="number of images",
)
axes[0].legend(loc="upper left")
axes[1].imshow(all_raw[worst][zoom], cmap="gray")
axes[1].imshow(np.ma.masked_where(~at_top[zoom], at_top[zoom]), cmap="autumn", alpha=0.9)
axes[1].set(
    title=f"test image {worst}: saturated pixels in red",
    xlabel="x (pixels, crop)",
    ylabel="y (pixels, crop)",
)
plt.tight_layout()
plt.show()

# %% [markdown]
# Back to our first image: its values use only part of the 12-bit range. Most pixels are dark
# background, and the nuclei are a few hundred to a few thousand counts brighter. A histogram on
# a log scale shows both populations.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].imshow(raw, cmap="gray")
axes[0].set_title("BBBC039 raw image (auto contrast)")
axes[0].set_xlabel("x (pixels)")
axes[0].set_ylabel("y (pixels)")
axes[1].hist(raw.ravel(), bins=256, log=True, color="tab:blue")
axes[1].set_title("Histogram of raw intensities")
axes[1].set_xlabel("intensity (camera counts)")
axes[1].set_ylabel("number of pixels (log scale)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Percentile normalisation
# **Why?** A network trains best on inputs of a similar range from image to image, whatever the
# exposure time or the lamp did that day. Dividing by the container's maximum (65535) would
# squeeze these images into [0, 0.06]; dividing by each image's maximum would let one hot or
# saturated pixel decide the scale. Instead we map a low percentile to 0 and a high one to 1,
# which ignores the few most extreme pixels. We use the 1st and the 99.8th percentile, the
# values of StarDist's example notebooks (`normalize(x, 1, 99.8)`); Cellpose normalises to the
# 1st and the 99th. Values outside stay outside: we do not clip, so that the brightest
# structures keep their contrast.
#
# **Exercise.** Write the percentile normalisation yourself. (The rest of the notebook uses the
# library's `cu.data.normalize_percentile`, so you can go on even before your version passes.)
#
# <details><summary>Hint 1</summary>
#
# `np.percentile(image, [low, high])` returns both values at once.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Subtract the low value, then divide by (high - low); add `eps` to the denominator so that a
# flat image does not divide by zero; finish with `.astype(np.float32)`.
# </details>


# %% tags=["solution"]
def my_normalize(image, low=1.0, high=99.8, eps=1e-6):
    """Map the `low` percentile of `image` to 0 and the `high` percentile to 1 (float32)."""
    # BEGIN SOLUTION
    lo, hi = np.percentile(image, [low, high])
    return ((image - lo) / (hi - lo + eps)).astype(np.float32)
    # END SOLUTION


# Stuck? Run  my_normalize = cu.data.normalize_percentile  (the library's version) and go on.


# %% tags=["check"]
cu.checks.check_close(
    my_normalize(raw), cu.data.normalize_percentile(raw), "my_normalize(raw)", rtol=1e-4, atol=1e-5
)

# %% [markdown]
# **Predict, then run.** After normalisation, the 99.8th percentile is 1. Is the largest value
# of the normalised image 1 too?

# %%
image = cu.data.normalize_percentile(raw)
print(
    f"after normalisation: 1st percentile {np.percentile(image, 1):.3f}, "
    f"99.8th percentile {np.percentile(image, 99.8):.3f}, max {image.max():.2f}"
)

# %% [markdown]
# <details><summary>Answer</summary>
#
# No: 0.2% of the pixels lie above the 99.8th percentile, and we do not clip them, so the
# brightest nucleus reaches about 2. That is intended: the network still sees which nuclei are
# brighter. The saturated pixels of the previous section are far fewer than these 0.2%, so they
# do not move the percentiles: one more reason to prefer percentiles to the maximum.
# </details>
#
# > **Checkpoint.** Everyone has `✓ my_normalize(raw) matches` and can say, in one sentence
# > each, what 12-bit data in a 16-bit file means and why we normalise by percentiles.

# %% [markdown]
# ## Instance labels versus a semantic mask
# The annotation is an **instance label image**: an integer array where 0 is background and every
# nucleus has its own id 1, 2, 3, ... A **semantic mask** only says *foreground or background*:
# it is `labels > 0`. Two nuclei that touch are one blob in the semantic mask. Separating them is
# what the rest of this course is about.

# %%
lab = labels[0]
semantic = lab > 0
print(f"{lab.max()} nuclei, foreground fraction {semantic.mean():.1%}")
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
axes[0].set_title("normalised image")
axes[1].imshow(semantic, cmap="gray")
axes[1].set_title("semantic mask: labels > 0")
cu.plot.overlay(image, lab, ax=axes[2], title="instance labels (one colour per nucleus)")
for ax in axes:
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### How many nuclei touch?
# If we take the connected components of the semantic mask, touching nuclei merge into one
# component. Counting how many true nuclei share a component with another nucleus measures the
# problem.
#
# **Predict, then run.** Look at the instance labels above. What fraction of the nuclei touch
# another nucleus: 1 in 100, 1 in 20, or 1 in 4?

# %%
from skimage.measure import label as connected_components


def count_merged(instance_labels):
    """Number of nuclei that share a connected component of the foreground with another one."""
    components = connected_components(instance_labels > 0, connectivity=1)
    ids = instance_labels[instance_labels > 0]
    comps = components[instance_labels > 0]
    pairs = np.unique(np.stack([ids, comps]), axis=1)  # (nucleus id, component) pairs
    nuclei_per_component = np.bincount(pairs[1])
    return int((nuclei_per_component[pairs[1]] > 1).sum())


merged = [count_merged(lab_i) for lab_i in labels]
totals = [int(lab_i.max()) for lab_i in labels]
for m, t in zip(merged, totals):
    print(f"{m:4d} of {t:4d} nuclei touch another nucleus")

# %% [markdown]
# <details><summary>Answer</summary>
#
# Between about 1 in 10 and 1 in 4, depending on how crowded the field is. Any method that
# only separates nuclei from background (a threshold, a two-class network) merges each touching
# group into one object: up to a quarter of the nuclei would be counted wrongly.
# </details>

# %% [markdown]
# ## Synthetic nuclei: data that needs no download
# The course also ships a generator of fluorescence-like nuclei: elliptical blobs in touching
# clusters, with varying size and brightness, blur, an uneven background and Poisson-Gaussian
# camera noise. It is deterministic by seed, so every student sees the same images, and it works
# with no network at all. Here are one real and two synthetic images side by side.

# %%
syn_image, syn_labels = cu.data.synthetic_nuclei((256, 256), seed=1)
cells_image, cells_labels = cu.data.synthetic_cells((256, 256), seed=2)
fig = cu.plot.show_grid(
    [image[:256, :256], syn_image, cells_image[0], lab[:256, :256], syn_labels, cells_labels],
    titles=[
        "BBBC039 crop",
        "synthetic nuclei",
        "synthetic cells (cytoplasm)",
        "BBBC039 labels",
        "synthetic nuclei labels",
        "synthetic whole-cell labels",
    ],
    ncols=3,
    suptitle="Real and synthetic data",
)
plt.show()

# %% [markdown]
# The generator is deterministic: the same seed gives the same image, bit for bit.

# %% tags=["nbval-check-output"]
again, again_labels = cu.data.synthetic_nuclei((256, 256), seed=1)
print(
    "same image:",
    np.array_equal(again, syn_image),
    "| same labels:",
    np.array_equal(again_labels, syn_labels),
    "| dtypes:",
    again.dtype,
    again_labels.dtype,
)
# > same image: True | same labels: True | dtypes: float32 int32

# %% [markdown]
# ## Patches for training
# Networks train on random crops (*patches*) of the images. `cu.data.PatchDataset` cuts them,
# applies an optional augmentation to image and labels together, and turns the labels into the
# training target. We will use it from notebook 02b on.

# %%
train_images, train_labels = cu.data.load_split("bbbc039", "train", n=N_IMAGES)
patches = cu.data.PatchDataset(train_images, train_labels, patch_size=128, length=8, seed=0)
x, y = patches[0]
print("one patch:", tuple(x.shape), x.dtype, "| its labels:", tuple(y.shape), y.dtype)

# %% [markdown]
# ## Recap
# - Microscopy images are integer camera counts. BBBC039 is 12-bit data (0 to 4095) in uint16
#   files: the container dtype is not the bit depth. Pixels at the ceiling are saturated, and
#   their true value is lost.
# - We normalise by percentiles (1 and 99.8 as in StarDist's examples; Cellpose uses 1 and 99),
#   not by the maximum, and without clipping.
# - Instance labels give every nucleus an id; the semantic mask (`labels > 0`) merges touching
#   nuclei, and many nuclei in BBBC039 touch another one.
# - BBBC039 comes through a verified registry; the synthetic generator works offline.
#
# The checks below fail if something in this pipeline is broken.

# %%
assert report["versions"]["torch"] is not None, "torch is missing"
assert raw.shape == (520, 696) and raw.max() > raw.min()
assert maxima.max() == CEILING and len(saturated) > 0, "BBBC039 test images are 12-bit"
assert 0.0 <= np.percentile(image, 1) <= 0.01 and 0.99 <= np.percentile(image, 99.8) <= 1.01
assert all(t > 10 for t in totals), "every test image should hold more than 10 nuclei"
assert sum(merged) > 0, "BBBC039 has touching nuclei: counting them should find some"
assert syn_labels.max() > 10 and set(np.unique(syn_labels)) == set(range(syn_labels.max() + 1))
assert x.shape == (1, 128, 128) and y.shape == (128, 128)
print("all checks passed")
