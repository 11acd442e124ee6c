# %% [markdown]
# # 00 · Set-up and data: what a microscopy image is
#
# **What you will learn**
# - how to check that your environment works, and what *fast* and *full* mode mean;
# - what a fluorescence microscopy image is made of: dtype, bit depth, histogram;
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
# The camera writes 16-bit integers (0 to 65535), but the values use only a small part of that
# range: most pixels are dark background, and the nuclei are a few hundred to a few thousand
# counts brighter. A histogram on a log scale shows both populations.

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
# A network trains best on inputs of a similar range from image to image. Dividing by the
# maximum would let one hot pixel decide the scale; instead we map the 1st percentile to 0 and the
# 99.8th to 1 (as StarDist and Cellpose do). Values outside stay outside: we do not clip, so
# that the brightest structures keep their contrast.
#
# **Exercise.** Write the percentile normalisation yourself.


# %% tags=["solution"]
def my_normalize(image, low=1.0, high=99.8, eps=1e-6):
    """Map the `low` percentile of `image` to 0 and the `high` percentile to 1 (float32)."""
    # BEGIN SOLUTION
    lo, hi = np.percentile(image, [low, high])
    return ((image - lo) / (hi - lo + eps)).astype(np.float32)
    # END SOLUTION


# %% tags=["check"]
cu.checks.check_close(
    my_normalize(raw), cu.data.normalize_percentile(raw), "my_normalize(raw)", rtol=1e-4, atol=1e-5
)

# %%
image = cu.data.normalize_percentile(raw)
print(
    f"after normalisation: 1st percentile {np.percentile(image, 1):.3f}, "
    f"99.8th percentile {np.percentile(image, 99.8):.3f}, max {image.max():.2f}"
)

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
# training target. We will use it from notebook 02 on.

# %%
train_images, train_labels = cu.data.load_split("bbbc039", "train", n=N_IMAGES)
patches = cu.data.PatchDataset(train_images, train_labels, patch_size=128, length=8, seed=0)
x, y = patches[0]
print("one patch:", tuple(x.shape), x.dtype, "| its labels:", tuple(y.shape), y.dtype)

# %% [markdown]
# ## Recap
# - Microscopy images are integer camera counts with a small dynamic range used; we normalise
#   them by percentiles, not by their maximum.
# - Instance labels give every nucleus an id; the semantic mask (`labels > 0`) merges touching
#   nuclei, and many nuclei in BBBC039 touch another one.
# - BBBC039 comes through a verified registry; the synthetic generator works offline.
#
# The checks below fail if something in this pipeline is broken.

# %%
assert report["versions"]["torch"] is not None, "torch is missing"
assert raw.shape == (520, 696) and raw.max() > raw.min()
assert 0.0 <= np.percentile(image, 1) <= 0.01 and 0.99 <= np.percentile(image, 99.8) <= 1.01
assert all(t > 10 for t in totals), "every test image should hold more than 10 nuclei"
assert sum(merged) > 0, "BBBC039 has touching nuclei: counting them should find some"
assert syn_labels.max() > 10 and set(np.unique(syn_labels)) == set(range(syn_labels.max() + 1))
assert x.shape == (1, 128, 128) and y.shape == (128, 128)
print("all checks passed")
