# %% [markdown]
# # 03 · The U-Net: the original and the modern one
#
# **What you will learn**
# - the U-Net of Ronneberger 2015, piece by piece: valid 3x3 convolutions, 2x2 max pooling, 2x2
#   up-convolutions, skip connections that are centre-cropped and concatenated, dropout at the
#   end of the contracting path;
# - why the valid convolutions make the output smaller than the input (572 -> 388), which input
#   sizes work, and how **overlap-tile** prediction with mirrored borders segments an image of
#   any size;
# - the paper's **weight map**, which makes the thin background between touching cells
#   expensive to get wrong, built by hand and then fast;
# - weighted cross-entropy, and how many touching nuclei a network keeps apart with and without
#   the weight map;
# - why pixel accuracy lies, and what IoU and Dice say instead;
# - how the U-Net is trained today (same padding, batch norm, Adam, mixed precision) and a
#   3-class variant (background / interior / boundary) for separating instances;
# - how Adam and SGD differ in the first steps, and why four variants that differ in several
#   things at once cannot tell which change helped.
#
# **Papers:** {cite}`ronneberger2015unet`, {cite}`kingma2015adam`, {cite}`ioffe2015batchnorm`

# %%
import inspect
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.measure import label as connected_components
from skimage.segmentation import expand_labels
from torch.utils.data import DataLoader

import course_utils as cu

report = cu.env.check_env()
rng = cu.env.seed_everything(0)

# %% [markdown]
# Sizes come from `cu.pick(fast=..., full=...)`. Fast mode trains tiny networks (base width 8,
# depth 3) for a few dozen steps on a few images, so that the notebook runs in minutes on a CPU;
# full mode trains the paper's width (64) and depth (4) on all training images on a GPU.
#
# Two of the networks of this notebook are *methods* of the course: the weighted U-Net
# (`unet_weighted`) and the 3-class U-Net (`unet_3class`). Each has one **record** in
# `cu.methods`, which holds its network and sizes per mode, its targets, its loss and its
# post-processing; notebook 07b and the course's pretrained models read the same records. We
# read the sizes from there, build every piece by hand below, and check that ours equal the
# record's.

# %%
UNET_WEIGHTED = cu.methods.get("unet_weighted")
UNET_3CLASS = cu.methods.get("unet_3class")
N_TRAIN = cu.pick(fast=8, full=100)  # BBBC039 training images
N_VAL = cu.pick(fast=2, full=50)  # validation images
N_TEST = cu.pick(fast=3, full=48)  # test images for the final scores
DEPTH = UNET_WEIGHTED.config()["depth"]  # number of 2x2 poolings (fast 3; the paper: 4)
BASE = UNET_WEIGHTED.config()["base_channels"]  # channels of the first level (the paper: 64)
PATCH_VALID = UNET_WEIGHTED.patch()  # input patch of the valid U-Net (fast 188)
PATCH_SAME = UNET_3CLASS.patch()  # patch of the same-padded U-Net (fast 128)
TILE_VALID = UNET_WEIGHTED.tiles()["tile_size"]  # prediction tile of the valid U-Net
TILE_SAME, OVERLAP = (UNET_3CLASS.tiles()[k] for k in ("tile_size", "overlap"))
BATCH = cu.pick(fast=4, full=8)
EPOCHS = cu.pick(fast=2, full=30)
PATCHES_PER_EPOCH = cu.pick(fast=96, full=1600)
VAL_PATCHES = cu.pick(fast=8, full=200)
LR = cu.pick(fast=2e-3, full=1e-3)
# A hand-written loop: pick_steps, not pick, so that a dry run of full mode (COURSE_DRYRUN=1)
# cuts it short as fit cuts its own epochs.
OPTIMISER_STEPS = cu.pick_steps(fast=25, full=60)  # the Adam-SGD comparison of section 7
WORKERS = cu.env.dataloader_workers(full=8)  # data-loading processes (weight maps cost CPU)
device = cu.env.get_device()
print(
    f"mode {cu.get_mode()}: {N_TRAIN} train / {N_VAL} val / {N_TEST} test images, depth {DEPTH}, "
    f"base width {BASE}, {EPOCHS} epochs x {PATCHES_PER_EPOCH // BATCH} steps, on {device}"
)

# %% [markdown]
# ## 1 · The original U-Net
# The U-Net (Ronneberger, Fischer and Brox 2015, "U-Net: Convolutional Networks for Biomedical
# Image Segmentation") has a **contracting path** (left side of the "U") and an **expanding
# path** (right side):
#
# - each level applies two unpadded ("valid") 3x3 convolutions with ReLU, so each convolution
#   removes a one-pixel rim: -4 pixels per level;
# - a 2x2 max pooling with stride 2 halves the size and the number of channels doubles
#   (64, 128, 256, 512, 1024);
# - dropout sits at the end of the contracting path (on the 1024-channel bottleneck);
# - on the way up, a 2x2 "up-convolution" (a transposed convolution with stride 2) doubles the
#   size and halves the channels; the feature map of the same level of the contracting path is
#   **centre-cropped** to that size (it is larger, the valid convolutions below it ate more) and
#   **concatenated**; two valid 3x3 convolutions follow;
# - a 1x1 convolution maps the 64 channels to one score per class.
#
# The whole network with the paper's sizes (drawn from `cu.models.unet_output_size`):

# %%
cu.diagrams.unet_diagram(depth=4, input_size=572, base_channels=64, n_classes=2)
plt.show()

# %% [markdown]
# Read it as the data flows: down the left side the maps shrink (572 -> 568 by two valid
# convolutions, halved to 284 by pooling, ...) while the channels double; at the bottom the
# network sees the most context at the coarsest resolution; up the right side, each level
# doubles the size and concatenates the cropped map of the same level on the left, which
# brings back the fine detail that pooling threw away. The output, 388 x 388, is the centre of
# the input.
#
# `cu.models.UNetOriginal` is that network, with each design choice as an argument. Its
# `forward` reads top to bottom:

# %%
print(inspect.getsource(cu.models.UNetOriginal.forward))
print(inspect.getsource(cu.models.unet._valid_double_conv))

# %% [markdown]
# The skip connection needs the centre of the larger encoder map. Here is that crop by hand on
# a small tensor: a 6 x 6 map cropped to its central 2 x 2.

# %%
feature_map = torch.arange(36.0).reshape(1, 1, 6, 6)
top, left = (6 - 2) // 2, (6 - 2) // 2
by_hand = feature_map[..., top : top + 2, left : left + 2]
print(by_hand[0, 0])
assert torch.equal(by_hand, cu.models.center_crop(feature_map, (2, 2)))

# %% [markdown]
# With the paper's settings (depth 4, base width 64) the network has about 31 million
# parameters. We follow a 572 x 572 tile through it: on PyTorch's `meta` device, tensors have a
# shape but no data, so this costs nothing.

# %%
paper_unet = cu.models.UNetOriginal(in_channels=1, n_classes=2, depth=4, base_channels=64)
n_paper = cu.models.count_parameters(paper_unet)
paper_unet = paper_unet.to("meta")
trace = []
named_blocks = [(f"encoder level {i + 1}", b) for i, b in enumerate(paper_unet.encoder)]
named_blocks += [("bottleneck", paper_unet.bottleneck)]
named_blocks += [(f"decoder level {4 - i}", b) for i, b in enumerate(paper_unet.decoder)]
named_blocks += [("1x1 head", paper_unet.head)]
for name, block in named_blocks:  # each block notes the shape of its output (deleted below)
    block.register_forward_hook(lambda mod, inp, out, name=name: trace.append((name, out.shape)))
paper_out = paper_unet(torch.zeros(1, 1, 572, 572, device="meta"))
print(f"paper configuration: {n_paper:,} parameters; input (1, 1, 572, 572)")
for name, shape in trace:
    print(f"  {name:18s} -> {tuple(shape)}")
del paper_unet

# %% [markdown]
# ### The output size
# Follow one side of the tile: each level subtracts 4 (two valid convolutions) and then halves
# (pooling, which needs an even size); the bottleneck subtracts 4; each way up doubles
# (up-convolution) and subtracts 4. For 572: 572 - 4 = 568, / 2 = 284, - 4 = 280, / 2 = 140,
# ... down to 28 at the bottleneck, then up to 388.
#
# **Exercise 1.** Write the output size for an input of side `input_size` and `depth` poolings.
# You may assume the size is valid (even before every pooling).
#
# <details><summary>Hint 1</summary>
#
# Three loops, or two and a line: `depth` times "minus 4, then halve"; once "minus 4" (the
# bottleneck); `depth` times "double, then minus 4".
# </details>
#
# <details><summary>Hint 2</summary>
#
# Halve with integer division, `size = (size - 4) // 2`, so that the result stays an int.
# </details>


# %% tags=["solution"]
def my_output_size(input_size, depth=4):
    """Output side of the original U-Net for a square input of side `input_size`."""
    # BEGIN SOLUTION
    size = input_size
    for _ in range(depth):
        size = (size - 4) // 2
    size -= 4
    for _ in range(depth):
        size = 2 * size - 4
    return size
    # END SOLUTION


# Stuck? Run  my_output_size = cu.models.unet_output_size  (the library's version) and go on.


# %% tags=["check"]
cases = [(572, 4), (188, 3), (380, 3), (428, 4), (140, 2)]
cu.checks.check_equal(
    [my_output_size(s, d) for s, d in cases],
    [cu.models.unet_output_size(s, d) for s, d in cases],
    f"my_output_size for (size, depth) in {cases}",
)

# %% [markdown]
# **Predict, then run.** Which of these inputs can the depth-4 U-Net take: 570, 572, 576, 588?
#
# Not every size works: a pooling of an odd size would drop a row, and the skip connections
# would then no longer line up with the pixels they came from. `cu.models.valid_input_sizes`
# lists the sizes for which every pooling sees an even size. For depth 4 they are 16 apart
# (one more pooling doubles the step), and the output is always 184 pixels smaller: a margin of
# 92 pixels on each side is context the network needs but does not segment.

# %%
sizes4 = cu.models.valid_input_sizes(4, min_size=180, max_size=700)
print("depth 4, valid inputs:", sizes4)
print("outputs:              ", [cu.models.unet_output_size(s, 4) for s in sizes4])
sizes_ours = cu.models.valid_input_sizes(DEPTH, min_size=100, max_size=400)
out_valid = cu.models.unet_output_size(PATCH_VALID, DEPTH)
step = sizes_ours[1] - sizes_ours[0]
print(f"depth {DEPTH} (ours): valid inputs {sizes_ours[:8]} ... (every {step})")
print(f"our training patch {PATCH_VALID} -> output {out_valid}")
print("570, 572, 576, 588 valid for depth 4:", [s in sizes4 for s in (570, 572, 576, 588)])

# %% [markdown]
# <details><summary>Answer</summary>
#
# 572 and 588 (16 apart); 570 and 576 are not. 570 - 4 = 566 halves to 283, which is odd, so
# the next pooling fails; 576 gives 286, then 141, odd again.
# </details>
#
# ## 2 · Overlap-tile prediction with mirrored borders
# Because the output is smaller than the input, a large image is segmented tile by tile: the
# output tiles are laid edge to edge, and each one's input tile reaches `margin` pixels further
# on every side. At the image border that context does not exist, so the paper **mirrors** the
# image there. `cu.predict.tile_grid` gives the boxes that `cu.predict.predict_tiled` uses; we
# draw them on a whole BBBC039 image (520 x 696) with our prediction tile.

# %%
test_images, test_labels = cu.data.load_split("bbbc039", "test", n=N_TEST)
image, truth = test_images[0], test_labels[0]
out_tile = cu.models.unet_output_size(TILE_VALID, DEPTH)
tiles = cu.predict.tile_grid(image.shape, TILE_VALID, out_tile)
margin = (TILE_VALID - out_tile) // 2
pad_after = (max(t["input"][2] for t in tiles) - 520, max(t["input"][3] for t in tiles) - 696)
padded = np.pad(image, ((margin, pad_after[0]), (margin, pad_after[1])), mode="reflect")
print(f"tile {TILE_VALID} -> {out_tile}: margin {margin} px, {len(tiles)} tiles")
cu.diagrams.overlap_tile_diagram(image, tiles)
plt.show()

# %% [markdown]
# **Why?** Why mirror the image at its border rather than pad it with zeros?
#
# <details><summary>Answer</summary>
#
# Zeros look like a black background: a nucleus cut by the image border would get a fake dark
# edge, and the network, which learned what nuclei look like in real context, would see
# something it never saw in training. Mirroring continues the image's texture and brightness,
# so the margin looks like more of the same image (it is not real context either: a mirrored
# nucleus is a plausible, not a true, neighbour).
# </details>
#
# > **Checkpoint.** Everyone can say why the valid U-Net's output is smaller than its input, and
# > what the margin of a tile is for.
#
# ## 3 · The weight map
# Touching objects are the hard part. In the paper's data, the annotation separates touching
# cells by a thin line of background. In BBBC039 touching nuclei are drawn right next to each
# other, with no gap, so the foreground mask `labels > 0` merges them and a two-class network
# cannot keep them apart whatever it learns. We make the gap: pixels where a nucleus touches
# another nucleus become background (a 2-pixel line).


# %%
def with_gaps(labels):
    """Labels with every pixel that touches another nucleus (8-neighbourhood) set to 0."""
    others_max = ndi.maximum_filter(labels, size=3, mode="nearest")
    as_high = np.where(labels == 0, np.iinfo(labels.dtype).max, labels)  # ignore background
    others_min = ndi.minimum_filter(as_high, size=3, mode="nearest")
    touching = (labels > 0) & ((others_max > labels) | (others_min < labels))
    return np.where(touching, 0, labels)


train_images, train_labels = cu.data.load_split("bbbc039", "train", n=N_TRAIN)
val_images, val_labels = cu.data.load_split("bbbc039", "val", n=N_VAL)
labels_full = train_labels[0]
gapped_full = with_gaps(labels_full)
wy, wx = cu.figures.unet.busiest_window(labels_full, 160)  # a crop with many touching nuclei
crop_image = train_images[0][wy : wy + 160, wx : wx + 160]
crop_labels = labels_full[wy : wy + 160, wx : wx + 160]
crop_gapped = gapped_full[wy : wy + 160, wx : wx + 160]

# %% [markdown]
# The paper's weight map (its eq. 2) is
#
# $$w(x) = w_c(x) + w_0 \exp\left(-\frac{(d_1(x) + d_2(x))^2}{2\sigma^2}\right),$$
#
# where $d_1$, $d_2$ are the distances from a pixel to the nearest and the second-nearest cell,
# so the second term is large only where two cells are close: in the gaps. The paper uses
# $w_0 = 10$ and $\sigma \approx 5$ pixels. Of $w_c$ it says only that it is "the weight map to
# balance the class frequencies", not how to compute it. Two details below are therefore **our
# conventions**, not the paper's definition:
#
# - $w_c = N / (2 N_\text{class})$ for a pixel of a class with $N_\text{class}$ of the image's $N$
#   pixels, so that background and foreground weigh the same in total (other choices, such as
#   weights from the frequencies of the whole training set, are just as defensible);
# - the border term is added on **background** pixels only. Eq. 2 adds it everywhere, which
#   would also raise the weight of the rims of cells near a neighbour (inside cell $i$,
#   $d_1 = 0$ and $d_2$ is the distance to the next cell).
#
# **Exercise 2.** Build the weight map naively: one distance transform of the whole image per
# cell (`ndi.distance_transform_edt(labels != i)` is the distance to cell `i`), keeping the two
# smallest distances at every pixel. Follow our two conventions: class weights
# $N / (2 N_\text{class})$, and the border term on background pixels only; with fewer than two
# cells there is none. The timing cell after the check uses your function.
#
# <details><summary>Hint 1</summary>
#
# Class weights first: `n_bg = np.count_nonzero(labels == 0)`, `n_fg = labels.size - n_bg`, and
# `weights = np.where(labels == 0, n / (2 * n_bg), n / (2 * n_fg))` (guard against a class
# with no pixels).
# </details>
#
# <details><summary>Hint 2</summary>
#
# Keep two arrays `d1 <= d2`, both starting at `np.inf`. For each cell's distance map `d`, the
# new second-nearest is `np.minimum(d2, np.maximum(d1, d))` and the new nearest
# `np.minimum(d1, d)` (update `d2` first). Then add `w0 * np.exp(-((d1 + d2) ** 2) / (2 *
# sigma**2))` where `labels == 0`.
# </details>


# %% tags=["solution"]
def naive_weight_map(labels, w0=10.0, sigma=5.0):
    """U-Net weight map (float32, same shape as `labels`), one distance transform per cell."""
    # BEGIN SOLUTION
    background = labels == 0
    n, n_bg = labels.size, np.count_nonzero(background)
    n_fg = n - n_bg
    w_bg = n / (2 * n_bg) if n_bg else 0.0
    w_fg = n / (2 * n_fg) if n_fg else 0.0
    weights = np.where(background, w_bg, w_fg)
    ids = np.unique(labels[labels > 0])
    if len(ids) >= 2:
        d1 = np.full(labels.shape, np.inf)
        d2 = np.full(labels.shape, np.inf)
        for i in ids:
            d = ndi.distance_transform_edt(labels != i)
            d2 = np.minimum(d2, np.maximum(d1, d))  # the new second-nearest
            d1 = np.minimum(d1, d)
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2))
        weights = weights + np.where(background, border, 0.0)
    return weights.astype(np.float32)
    # END SOLUTION


# Stuck? Run  naive_weight_map = cu.targets.unet_weight_map  (the library's version) and go on.


# %% tags=["check"]
cu.checks.check_close(
    naive_weight_map(crop_gapped),
    cu.targets.unet_weight_map(crop_gapped, w0=10.0, sigma=5.0),
    "naive_weight_map(crop_gapped)",
    rtol=0,
    atol=1e-4,
)

# %% [markdown]
# The naive version computes a distance transform of the whole image for every nucleus.
# `cu.targets.unet_weight_map` computes each one only in the cell's bounding box grown by the
# distance beyond which the border term is below 1e-6, which gives the same numbers. Both on one
# whole training image:

# %%
n_cells = len(np.unique(gapped_full)) - 1
start = time.perf_counter()
w_naive = naive_weight_map(gapped_full)
t_naive = time.perf_counter() - start
start = time.perf_counter()
w_fast = cu.targets.unet_weight_map(gapped_full)
t_fast = time.perf_counter() - start
weight_map_diff = float(np.abs(w_naive - w_fast).max())
print(
    f"{gapped_full.shape} image with {n_cells} nuclei: naive {t_naive:.2f} s, course_utils "
    f"{t_fast:.3f} s ({t_naive / t_fast:.0f}x faster); largest difference {weight_map_diff:.1e}"
)
w_crop = cu.targets.unet_weight_map(crop_gapped)
w_class = cu.targets.unet_weight_map(crop_gapped, w0=0.0)  # the class-balance term alone
cu.figures.unet.show_weight_map(crop_image, crop_labels, crop_gapped, w_class, w_crop)
plt.show()

# %% [markdown]
# **Predict, then run.** $w_0 = 10$. How many times more than an ordinary background pixel (one
# far from any nucleus) does a gap pixel weigh: about 10, less, or more?

# %%
w_balance = cu.targets.unet_weight_map(gapped_full, w0=0.0)  # w_c alone, on the whole image
ordinary = float(np.median(w_balance[gapped_full == 0]))  # w_c of a background pixel
nucleus = float(np.median(w_balance[gapped_full > 0]))  # w_c of a nucleus pixel
gap = (labels_full > 0) & (gapped_full == 0)  # the pixels that with_gaps made background
gap_ratio = w_fast[gap] / ordinary
print(
    f"w_c: background {ordinary:.2f}, nucleus {nucleus:.2f}; gap pixels: median w "
    f"{np.median(w_fast[gap]):.2f}"
)
print(
    f"a gap pixel weighs {np.median(gap_ratio):.1f} x an ordinary background pixel "
    f"(10% to 90% of the gap pixels: {np.percentile(gap_ratio, 10):.1f} to "
    f"{np.percentile(gap_ratio, 90):.1f})"
)

# %% [markdown]
# <details><summary>Answer</summary>
#
# More. A gap pixel is background, so it gets the background's $w_c$ *plus* the border term,
# which is close to $w_0 = 10$ because $d_1 + d_2$ is only a few pixels in a 2-pixel gap. An
# ordinary background pixel gets $w_c$ alone, and since most pixels are background, $w_c$ is
# below 1 there (and above 1 on nuclei). The ratio is about 10 divided by a number below 1.
# </details>
#
# ## 4 · Weighted cross-entropy
# The network gives two scores (logits) per pixel; softmax turns them into probabilities
# $p_k(x)$, and the cross-entropy of a pixel is $-\log p_{\ell(x)}(x)$, with $\ell(x)$ its true
# class. The paper weights each pixel's term by $w(x)$; we average over pixels.
#
# **Exercise 3.** Write the weighted cross-entropy with `F.log_softmax` and `gather`. The modern
# U-Net of section 7 trains with your function.
#
# <details><summary>Hint 1</summary>
#
# `F.log_softmax(logits, dim=1)` gives $\log p_k(x)$ for every class $k$: shape `(B, C, H, W)`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `log_p.gather(1, target[:, None])` picks, at every pixel, the class given by `target`: shape
# `(B, 1, H, W)`. Drop the class axis with `.squeeze(1)`, negate, multiply by `weight`, and
# take the mean.
# </details>


# %% tags=["solution"]
def weighted_cross_entropy(logits, target, weight):
    """Mean of weight * cross-entropy over pixels.

    logits (B, C, H, W) float, target (B, H, W) int64 class ids, weight (B, H, W) float.
    """
    # BEGIN SOLUTION
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, target[:, None]).squeeze(1)
    return (weight * nll).mean()
    # END SOLUTION


# Stuck? Run  weighted_cross_entropy = cu.losses.unet_weighted_loss  (the library's) and go on.


# %% tags=["check"]
gen = torch.Generator().manual_seed(0)
logits_t = torch.randn(2, 3, 5, 7, generator=gen)
target_t = torch.randint(0, 3, (2, 5, 7), generator=gen)
weight_t = torch.rand(2, 5, 7, generator=gen) * 10
reference = (weight_t * F.cross_entropy(logits_t, target_t, reduction="none")).mean()
cu.checks.check_close(
    weighted_cross_entropy(logits_t, target_t, weight_t), reference, "weighted_cross_entropy"
)

# %% [markdown]
# > **Checkpoint.** Exercises 1 to 3 pass. Ask: which pixels does the weight map make
# > expensive, and why does the class balance matter when most pixels are background?
#
# ### Training data and losses
# `cu.data.PatchDataset` cuts random patches and turns their labels into targets: here the
# foreground-with-gaps mask and its weight map (computed on the whole input patch, so that the
# distances see the context). The valid U-Net predicts only the centre of its input, so the loss
# crops the targets to the output with `center_crop`.
#
# `cu.train.fit` saves checkpoints in `checkpoints/<mode>/<name>/`. Running a training cell again
# resumes from them (a finished run is loaded, not repeated); delete that folder to retrain.


# %%
def targets_2class(labels):
    """(foreground with gaps, int64) and its weight map (float32), both (h, w)."""
    gapped = with_gaps(labels)
    return (gapped > 0).astype(np.int64), cu.targets.unet_weight_map(gapped)


def crop_to(target, out):
    return cu.models.center_crop(target, tuple(out.shape[-2:]))


def plain_loss(out, y, *extra):
    return F.cross_entropy(out, crop_to(y, out))


def weighted_loss(out, y, weight):
    return weighted_cross_entropy(out, crop_to(y, out), crop_to(weight, out))


def foreground_iou(out, y):
    """Validation metric: IoU of the predicted foreground (any class > 0) with the target's."""
    truth, pred = crop_to(y, out) > 0, out.argmax(1) > 0
    return float((truth & pred).sum() / (truth | pred).sum().clamp(min=1))


def train(name, model, patch, target_fn, loss_fn, amp, method=None):
    """Train with Adam and a cosine schedule; checkpoints in checkpoints/<mode>/<name>, which
    say which method (if any) and data they hold."""
    cu.env.seed_everything(0)
    train_set = cu.data.PatchDataset(
        train_images, train_labels, patch, length=PATCHES_PER_EPOCH, target_fn=target_fn, seed=0
    )
    val_set = cu.data.PatchDataset(
        val_images, val_labels, patch, length=VAL_PATCHES, target_fn=target_fn, seed=1
    )
    options = {"batch_size": BATCH, "num_workers": WORKERS, "pin_memory": device.type == "cuda"}
    return cu.train.fit(
        model,
        DataLoader(train_set, shuffle=True, **options),
        DataLoader(val_set, **options),
        loss_fn=loss_fn,
        epochs=EPOCHS,
        lr=LR,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, EPOCHS),
        metrics={"iou": foreground_iou},
        amp=amp,
        device=device,
        seed=0,
        checkpoint_dir=cu.train.checkpoint_dir(name),
        meta={"method": method, "data": f"bbbc039 train, {N_TRAIN} images"},
    )


def train_record(record, model, patch, amp):
    """Train with a method's targets and loss, into its checkpoint folder."""
    return train(record.checkpoint, model, patch, record.target_fn(), record.loss, amp, record.name)


x_patch, y_patch, w_patch = cu.data.PatchDataset(
    train_images, train_labels, PATCH_VALID, target_fn=targets_2class
)[0]
out_patch = torch.randn(1, 2, out_valid, out_valid, generator=torch.Generator().manual_seed(0))
print(
    f"one item: image {tuple(x_patch.shape)}, target {tuple(y_patch.shape)} "
    f"{y_patch.dtype}, weights {tuple(w_patch.shape)}; the network predicts the central "
    f"{out_valid} x {out_valid}"
)

# %% [markdown]
# Our targets and loss are the recipe of the method `unet_weighted`: the record's target
# function and loss must give the same numbers (on this patch, and on a random output).

# %%
label_patch = train_labels[0][:PATCH_VALID, :PATCH_VALID]
record_y, record_w = UNET_WEIGHTED.targets(label_patch)
hand_y, hand_w = targets_2class(label_patch)
hand_loss = weighted_loss(out_patch, y_patch[None], w_patch[None])
record_loss = UNET_WEIGHTED.loss(out_patch, y_patch[None], w_patch[None])
recipe_checks = {
    "with_gaps = cu.targets.with_gaps": np.array_equal(
        with_gaps(labels_full), cu.targets.with_gaps(labels_full)
    ),
    "targets_2class = record targets": np.array_equal(hand_y, record_y)
    and np.allclose(hand_w, record_w),
    "weighted_loss = record loss": abs(hand_loss.item() - record_loss.item()) < 1e-5,
}
print(recipe_checks, f"(loss {hand_loss.item():.5f} by hand, {record_loss.item():.5f} record)")

# %% [markdown]
# ### Training the original U-Net, without and then with the weight map
# Both runs use the same seed, data and number of steps. The paper trained with stochastic
# gradient descent, momentum 0.99 and one large tile per batch; to compare architectures and
# targets rather than optimisers, every network in this notebook is trained with Adam
# (Kingma & Ba 2015), which is less sensitive to the learning rate and gets far in a short run
# like ours (section 7 shows the difference). `fit` shows a progress bar per epoch.
#
# **Predict, then run.** The first run uses plain cross-entropy, with no weight map; about 80%
# of the pixels are background. Watch the `iou` column (the validation IoU of the predicted
# foreground) after the first epoch: what do you expect? And for the second run, whose weight
# map balances the two classes?

# %%
histories, models = {}, {}
torch.manual_seed(0)
models["original"] = cu.models.UNetOriginal(depth=DEPTH, base_channels=BASE)
histories["original"] = train(
    "03_unet_original", models["original"], PATCH_VALID, targets_2class, plain_loss, amp=False
)
# The method's record builds the same network (same seed, same weights) and trains it with
# the record's targets and loss, which equal ours (checked above).
models["original + weight map"] = UNET_WEIGHTED.build(seed=0)
histories["original + weight map"] = train_record(
    UNET_WEIGHTED, models["original + weight map"], PATCH_VALID, amp=False
)
histories["original + weight map"].plot()
plt.show()
first_iou = {name: histories[name]["iou"][0] for name in histories}
print("validation IoU after the first epoch:", {k: round(v, 3) for k, v in first_iou.items()})

# %% [markdown]
# <details><summary>Answer</summary>
#
# In fast mode, the plain cross-entropy run ends its first epoch with a validation IoU of 0,
# although its validation loss has already fallen: it predicts **background everywhere**. This is
# the early all-background phase of notebook 02b's "class imbalance trap": the quickest way to
# lower the loss is to push every pixel towards the frequent class, and the foreground
# probabilities, though rising, are still below 0.5. One epoch later it has left that phase.
# The second run is identical except for its loss: the weight map gives the foreground half of
# the total weight (its class balance), and this run finds the nuclei from the first epoch on.
# (In full mode an epoch is far longer: the phase may end within the first epoch, and then the
# `iou` column does not show it.)
# </details>
#
# ### Predicting whole test images, tile by tile
# `predict_tiled` mirrors the border and lays the output tiles edge to edge. We check that it
# does what the figure of section 2 shows: the same tiles, assembled by hand, give the same
# numbers (in float32 and one tile at a time, so that a GPU computes both the same way).


# %%
def probabilities(model, img, valid):
    """Softmax of the tiled prediction, (C, H, W) float32."""
    tile, overlap = (TILE_VALID, 0) if valid else (TILE_SAME, OVERLAP)
    logits = cu.predict.predict_tiled(model, img, tile_size=tile, overlap=overlap, device=device)
    return torch.softmax(torch.from_numpy(logits), dim=0).numpy()


model = models["original + weight map"].eval()
tiled = cu.predict.predict_tiled(
    model, image, tile_size=TILE_VALID, batch_size=1, amp=False, device=device
)
by_hand = np.zeros_like(tiled)
with torch.no_grad():
    for t in tiles:
        y0, x0, y1, x1 = (v + m for v, m in zip(t["input"], (margin, margin, margin, margin)))
        window = torch.from_numpy(padded[None, None, y0:y1, x0:x1].copy()).to(device)
        oy0, ox0, oy1, ox1 = t["output"]
        by_hand[:, oy0:oy1, ox0:ox1] = model(window)[0, :, : oy1 - oy0, : ox1 - ox0].cpu()
tiled_prob = torch.softmax(torch.from_numpy(tiled), 0).numpy()
tiled_diff = float(np.abs(tiled_prob - torch.softmax(torch.from_numpy(by_hand), 0).numpy()).max())
print(f"predict_tiled vs tiles by hand: largest probability difference {tiled_diff:.1e}")

# %% [markdown]
# Is it the same as one pass over the whole (mirror-padded) image? Almost, not exactly. The
# valid U-Net is shift-equivariant only for shifts by a multiple of $2^{\text{depth}}$ pixels (the
# pooling grid), and an output tile (292 pixels here in fast mode, 388 in full mode as in the
# paper) is not such a multiple: the next tile sees a pooling grid shifted by 4 pixels. The
# paper's rule (an even size before every pooling) makes the tiles fit together, not identical
# to a whole-image pass.

# %%
# The smallest valid input that holds the image and its margins (extra mirroring at the end).
whole_in = [
    cu.models.valid_input_sizes(DEPTH, n + 2 * margin, n + 2 * margin + 2**DEPTH)[0]
    for n in image.shape
]
whole_pad = np.pad(
    image, [(margin, s - n - margin) for s, n in zip(whole_in, image.shape)], mode="reflect"
)
with torch.no_grad():
    whole = model(torch.from_numpy(whole_pad)[None, None].to(device))[0, :, :520, :696].cpu()
whole_prob = torch.softmax(whole, 0).numpy()
phase_diff = float(np.abs(whole_prob - tiled_prob).max())
phase_flips = float((whole_prob.argmax(0) != tiled_prob.argmax(0)).mean())
print(
    f"whole image {tuple(whole_pad.shape)} in one pass vs tiles: largest probability difference "
    f"{phase_diff:.3f}, class changed on {phase_flips:.3%} of the pixels"
)

# %% [markdown]
# ## 5 · How many touching nuclei stay apart?
# Instances are the connected components of the predicted foreground. A true nucleus counts as
# found when a predicted object overlaps it with IoU >= 0.5 (one-to-one at that threshold). We
# count the **touching** nuclei (those that share a connected component of the true foreground
# with another nucleus) that are found: each of them was kept apart from its neighbour.


# %%
def touching_ids(labels):
    """Ids of the nuclei that share a foreground component with another nucleus."""
    components = connected_components(labels > 0, connectivity=1)
    pairs = np.unique(np.stack([labels[labels > 0], components[labels > 0]]), axis=1)
    per_component = np.bincount(pairs[1])
    return set(pairs[0][per_component[pairs[1]] > 1].tolist())


def found_ids(truth, pred):
    """Ids of the true nuclei matched by a predicted object with IoU >= 0.5."""
    iou, true_ids, _ = cu.metrics.iou_matrix(truth, pred, return_ids=True)
    return set(true_ids[iou.max(axis=1) >= 0.5].tolist()) if iou.size else set()


def instances_2class(prob):
    return connected_components(prob.argmax(0) == 1, connectivity=1).astype(np.int32)


def instances_3class(prob):
    """Interior components, grown back over the predicted boundary."""
    classes = prob.argmax(0)
    seeds = connected_components(classes == 1, connectivity=1)
    return np.where(classes > 0, expand_labels(seeds, distance=2), 0).astype(np.int32)


def evaluate(model, valid, to_instances):
    """Pixel scores, F1 at IoU 0.5 and touching nuclei kept apart, over the test images."""
    preds = [to_instances(probabilities(model, img, valid)) for img in test_images]
    pixel = [cu.metrics.pixel_metrics(t > 0, p > 0) for t, p in zip(test_labels, preds)]
    touching = [touching_ids(t) for t in test_labels]
    apart = sum(len(s & found_ids(t, p)) for s, t, p in zip(touching, test_labels, preds))
    scores = {k: float(np.mean([m[k] for m in pixel])) for k in ("accuracy", "iou", "dice")}
    scores["f1@0.5"] = cu.metrics.matching_dataset(test_labels, preds, 0.5).f1
    scores["touching apart"] = apart
    return scores, preds


oracle = [connected_components(with_gaps(t) > 0, connectivity=1) for t in test_labels]
n_touching = sum(len(touching_ids(t)) for t in test_labels)
oracle_apart = sum(len(touching_ids(t) & found_ids(t, o)) for t, o in zip(test_labels, oracle))
print(
    f"{n_touching} of {sum(int(t.max()) for t in test_labels)} test nuclei touch another one; "
    f"a perfect prediction of the gap target keeps {oracle_apart} of them apart"
)
results, predictions = {}, {}
for name in ("original", "original + weight map"):
    results[name], predictions[name] = evaluate(models[name], True, instances_2class)
print(pd.DataFrame.from_dict(results, orient="index").round(3))
# Our instances are the record's post-processing (notebook 07b uses the record).
prob_0 = probabilities(models["original + weight map"], test_images[0], True)
recipe_checks["instances_2class = record"] = np.array_equal(
    instances_2class(prob_0), UNET_WEIGHTED.outputs_to_labels(prob_0, prob_0.shape[1:])
)

# %% [markdown]
# With the weight map, missing a gap pixel costs many times more than missing an ordinary
# background pixel (the ratio we measured in section 3), while the pixel scores barely notice
# a 2-pixel gap. Compare the "touching apart" counts of the two runs: after only a few dozen
# steps (fast mode) a difference of a few nuclei is within the noise of training; the longer
# full-mode runs tell more.
#
# ## 6 · Pixel accuracy lies
# Most pixels of a fluorescence image are background. A "network" that predicts background
# everywhere is right on most pixels, yet finds nothing. IoU (TP / (TP + FP + FN)) and Dice
# (2 TP / (2 TP + FP + FN)) ignore the true negatives, so they cannot be inflated that way. They
# are tied to each other: Dice = 2 IoU / (1 + IoU), so they rank predictions of one image the
# same way.

# %%
nothing = [cu.metrics.pixel_metrics(t > 0, np.zeros_like(t)) for t in test_labels]
keys = ("accuracy", "iou", "dice")
rows = {"predict background everywhere": {k: np.mean([m[k] for m in nothing]) for k in keys}}
rows.update({name: {k: results[name][k] for k in keys} for name in results})
print(pd.DataFrame(rows).T.round(3))
dice_from_iou = [
    cu.metrics.pixel_metrics(t > 0, p > 0) for t, p in zip(test_labels, predictions["original"])
]
dice_rule_holds = all(np.isclose(m["dice"], 2 * m["iou"] / (1 + m["iou"])) for m in dice_from_iou)
print("Dice = 2 IoU / (1 + IoU) on every image:", dice_rule_holds)

# %% [markdown]
# ## 7 · Adapting to today's standards
# The U-Net most people train today differs from the paper in a few ways:
#
# - **same padding**: each 3x3 convolution pads by one pixel, so the output has the input's
#   size, no crop is needed in the skips, and any size divisible by $2^{\text{depth}}$ works.
#   Pixels near a tile edge then see zeros instead of context, so tiles overlap and each keeps
#   its centre (`predict_tiled` with `overlap`);
# - **batch normalisation** (Ioffe & Szegedy 2015) after each convolution: training is stable
#   at larger learning rates and needs no careful initialisation;
# - **Adam** (Kingma & Ba 2015) rather than SGD with high momentum (used for all runs here;
#   the cells below compare the two);
# - **mixed precision**: `fit(amp="auto")` runs the forward pass in bfloat16 (or float16 with
#   loss scaling) on a GPU, about twice as fast, with float32 weights; also on CPUs that compute
#   bfloat16 natively (1.3-1.6x faster here; off on CPUs that would only emulate it).
#
# `cu.models.UNet` has these as arguments (normalisation, residual blocks, upsampling mode).
#
# ### Adam or SGD?
# SGD moves every parameter by `lr` x its gradient; *momentum* 0.99, as in the paper, adds up
# the past steps, so a consistent direction speeds up over about 1 / (1 - 0.99) = 100 steps.
# Adam divides each parameter's step by a running estimate of the size of its gradient, so
# every parameter moves by about `lr` per step, whatever the scale of its gradient. A cheap
# experiment: the same network, from the same starting weights, takes a few steps on the same
# batch (two training patches), once with Adam and twice with SGD.
#
# **Predict, then run.** Which curve falls fastest in the first steps? Do the SGD curves catch
# up within these steps?

# %%
batch = cu.data.PatchDataset(
    train_images, train_labels, PATCH_VALID, length=2, target_fn=targets_2class, seed=0
)
x_b, y_b, w_b = (torch.stack(t).to(device) for t in zip(*[batch[i] for i in range(2)]))
optimisers = {
    f"Adam, lr {LR:g}": lambda p: torch.optim.Adam(p, lr=LR),
    "SGD, momentum 0.99, lr 1e-2": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.99),
    "SGD, momentum 0.99, lr 1e-3": lambda p: torch.optim.SGD(p, lr=1e-3, momentum=0.99),
}
optimiser_curves = {}
for name, make in optimisers.items():
    net = UNET_WEIGHTED.build(seed=0).to(device)  # the same starting weights for each
    optimizer = make(net.parameters())
    optimiser_curves[name] = []
    for _ in range(OPTIMISER_STEPS):
        loss = weighted_loss(net(x_b), y_b, w_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        optimiser_curves[name].append(loss.item())
    print(f"{name:28s} loss {optimiser_curves[name][0]:.3f} -> {optimiser_curves[name][-1]:.3f}")
del net
title = f"{OPTIMISER_STEPS} steps on one batch, same start"
cu.figures.unet.plot_curves(optimiser_curves, title=title, ylabel="weighted cross-entropy")
plt.show()

# %% [markdown]
# <details><summary>Answer</summary>
#
# Adam falls from the first steps. SGD with `lr = 1e-3` barely moves; with `lr = 1e-2` it starts
# slowly, while its momentum builds up, then speeds up (here it nearly catches up within these
# steps; with momentum 0.99 it can also overshoot, and its curve oscillate). SGD can train
# a U-Net very well (the paper did, for hours), but its learning rate has to suit the network
# and the loss, while Adam's default range works for most. For short runs like ours, Adam is
# the safer choice. This is one batch and a few steps: it shows the early speed, not which
# optimiser gives the better network after a long training.
# </details>
#
# A further change is the **target**. Instead of a foreground mask with thin gaps, three
# classes: background, cell interior and cell **boundary** (`cu.targets.boundary_classes`). The
# boundary class marks the rim of every cell, not only the contacts, so it is far more frequent
# than the gap pixels and is trained here without a weight map; instances are the connected
# components of the interior, grown back over the boundary. Whether it keeps more touching
# nuclei apart than the weighted two-class network depends on the training time: compare them
# in the table below.

# %%
boundary_crop = cu.targets.boundary_classes(crop_labels)
cu.figures.unet.show_three_classes(crop_image, crop_labels, boundary_crop)
plt.show()


# %%
def target_3class(labels):
    return cu.targets.boundary_classes(labels).astype(np.int64)


torch.manual_seed(0)
models["modern"] = cu.models.UNet(out_channels=2, depth=DEPTH, base_channels=BASE, norm="batch")
histories["modern"] = train(
    "03_unet_modern", models["modern"], PATCH_SAME, targets_2class, weighted_loss, amp="auto"
)

# %%
hand_3 = target_3class(labels_full)
out_3 = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
y_3 = torch.from_numpy(hand_3[None, :64, :64])
recipe_checks["target_3class = record targets"] = np.array_equal(
    hand_3, UNET_3CLASS.targets(labels_full)
)
recipe_checks["plain_loss = record loss"] = (
    abs(plain_loss(out_3, y_3).item() - UNET_3CLASS.loss(out_3, y_3).item()) < 1e-6
)
torch.manual_seed(0)
models["modern 3-class"] = cu.models.UNet(out_channels=3, depth=DEPTH, base_channels=BASE)
recipe_checks["3-class network = record network"] = (
    models["modern 3-class"].config == UNET_3CLASS.build(seed=0).config
)
histories["modern 3-class"] = train_record(
    UNET_3CLASS, models["modern 3-class"], PATCH_SAME, amp="auto"
)
results["modern"], predictions["modern"] = evaluate(models["modern"], False, instances_2class)
results["modern 3-class"], predictions["modern 3-class"] = evaluate(
    models["modern 3-class"], False, instances_3class
)
print(pd.DataFrame.from_dict(results, orient="index").round(3))
prob_3 = probabilities(models["modern 3-class"], test_images[0], False)
recipe_checks["instances_3class = record"] = np.array_equal(
    instances_3class(prob_3), UNET_3CLASS.outputs_to_labels(prob_3, prob_3.shape[1:])
)
print(recipe_checks)

# %% [markdown]
# ### The four networks side by side
# Parameters, seconds per epoch (on this machine: they depend on the device and the patch size),
# and the scores on the test images. "Touching apart" counts the touching nuclei found with
# IoU >= 0.5.
#
# **Careful: the rows differ in several things at once.** "original" and "original + weight
# map" differ only in the loss: a fair comparison of the weight map. "modern" differs from
# "original + weight map" in padding, normalisation, **patch size** (it trains on smaller
# patches, so it sees fewer pixels per step), tile overlap at prediction and, on a GPU, mixed
# precision; "modern 3-class" differs from "modern" in target, loss and post-processing. If one
# of them scores better, this table cannot say which change did it. To attribute an effect to
# one change, change one thing at a time (an *ablation*), with several seeds. The column
# "changed" lists what differs from the row above.

# %%
# One column per setting, one entry per variant, in this order:
variants = ["original", "original + weight map", "modern", "modern 3-class"]
changed = ["-", "loss", "padding, norm, patch, tiling, AMP", "target, loss, post-processing"]
amp_used = device.type == "cuda" or (device.type == "cpu" and cu.env.cpu_has_bf16())
table = pd.DataFrame(
    {
        "changed": changed,  # what differs from the row above
        "padding": ["valid", "valid", "same", "same"],
        "norm": ["none", "none", "batch", "batch"],
        "target": ["foreground + gaps", "foreground + gaps", "foreground + gaps", "3 classes"],
        "loss": ["CE", "weighted CE", "weighted CE", "CE"],
        "optimiser": "Adam",
        "mixed precision": [False, False, amp_used, amp_used],
        "parameters": [cu.models.count_parameters(models[name]) for name in variants],
        "patch": [PATCH_VALID, PATCH_VALID, PATCH_SAME, PATCH_SAME],
        "s / epoch": [float(np.mean(histories[name]["seconds"])) for name in variants],
        "pixel IoU": [results[name]["iou"] for name in variants],
        "Dice": [results[name]["dice"] for name in variants],
        "F1 @ IoU 0.5": [results[name]["f1@0.5"] for name in variants],
        "touching apart": [f"{results[n]['touching apart']} / {n_touching}" for n in variants],
    },
    index=pd.Index(variants, name="variant"),
)
table.round(3)

# %% [markdown]
# **Which U-Net would you deploy?** Look at the table (and the figure below), then decide, and
# say what evidence you would want before you trust that decision.
#
# <details><summary>Answer</summary>
#
# On this evidence, none yet. In fast mode each network trained for a few dozen steps and is
# scored on three test images: a difference of a few nuclei is within the noise of training
# (another seed would reorder the rows). The rows differ in several things at once. And the
# choice must not be made on the **test** images: choosing by the test score makes it
# optimistic (notebook 02b's leakage). Choose on validation images, with full-mode training and
# a few seeds, then score the chosen network once on the test set. Notebook 07b compares the
# U-Nets with the other methods of the course on the whole test set.
# </details>
#
# > **Checkpoint.** Discuss the table: which comparisons are fair, and what would you change to
# > find out whether the 3-class target helps?

# %%
y0, x0 = cu.figures.unet.busiest_window(truth, 200)  # the most crowded part of test image 0
first = {name: predictions[name][0] for name in results}  # labels of the first test image
title = (
    f"First test image, y {y0}-{y0 + 200}, x {x0}-{x0 + 200}: one colour per nucleus "
    "(scores over all test images)"
)
# F1 and the touching nuclei kept apart (from `results`) go in the titles
cu.figures.unet.compare_predictions(
    image, truth, first, results, n_touching=n_touching, window=(y0, x0, 200), suptitle=title
)
plt.show()

# %% [markdown]
# ## Recap
# - The original U-Net (Ronneberger 2015): valid 3x3 convolutions, 2x2 max pooling, 2x2
#   up-convolutions, centre-cropped and concatenated skips, dropout at the bottleneck. Its output
#   is smaller than its input (572 -> 388), and only some input sizes are valid.
# - Overlap-tile prediction with mirrored borders segments images of any size; tiles give the
#   whole-image answer only up to the pooling grid.
# - The weight map $w = w_c + w_0 \exp(-(d_1 + d_2)^2 / 2\sigma^2)$ makes the gaps between
#   touching cells count; computing each distance transform only near its cell gives the same
#   map much faster.
# - Pixel accuracy rewards predicting background; IoU and Dice do not.
# - The weight map's class balance $N / (2 N_\text{class})$ and its border term on background
#   only are conventions (eq. 2 leaves them open); a gap pixel weighs many times an ordinary
#   background pixel, as we measured.
# - With plain cross-entropy, class imbalance gives an early all-background phase (validation
#   IoU 0 after the first fast-mode epoch); the class balance avoids it.
# - Today's U-Net: same padding, batch norm (Ioffe & Szegedy 2015), Adam (Kingma & Ba 2015,
#   faster than SGD in the first steps, and less sensitive to its learning rate), mixed
#   precision; a 3-class target (background / interior / boundary) is another way to separate
#   touching instances, with no weight map.
# - Our four variants differ in several things at once: to know which change helps, change one
#   at a time, with several seeds, and choose on validation images.
# - Separating touching nuclei is what the pixel scores do not measure: count the instances.
#
# The checks below fail if a piece of this pipeline breaks. The fast-mode score bounds are what
# the fast mode reaches on a CPU with these seeds, minus a safety margin; the full-mode bounds
# are set well below what a full training should reach.

# %%
IOU_MIN, F1_MIN = cu.pick(fast=(0.8, 0.6), full=(0.85, 0.65))
assert my_output_size(572, 4) == cu.models.unet_output_size(572, 4) == 388
assert 572 in cu.models.valid_input_sizes(4) and 571 not in cu.models.valid_input_sizes(4)
assert 30e6 < n_paper < 32e6, n_paper
assert tuple(paper_out.shape) == (1, 2, 388, 388)
assert weight_map_diff < 1e-4, weight_map_diff
assert 5 < np.median(gap_ratio) < 30, np.median(gap_ratio)  # the text says "many times"
adam_last, _, slow_sgd_last = (curve[-1] for curve in optimiser_curves.values())
# Claims about trained results: a dry run of full mode (COURSE_DRYRUN=1) reports them unchecked.
cu.checks.check_result(adam_last < slow_sgd_last, "Adam is ahead of SGD at lr 1e-3")
assert tiled_diff < 1e-4, tiled_diff
assert phase_flips < 0.03, phase_flips
assert oracle_apart >= 0.9 * n_touching, (oracle_apart, n_touching)
assert rows["predict background everywhere"]["accuracy"] > 0.7  # high, although it finds nothing
assert all(m["iou"] == 0.0 for m in nothing)
assert dice_rule_holds
assert all(recipe_checks.values()), recipe_checks  # the hand-built pieces are the records'
for name, scores in results.items():
    cu.checks.check_result(scores["iou"] >= IOU_MIN, f"{name}: IoU at least {IOU_MIN}")
    cu.checks.check_result(scores["f1@0.5"] >= F1_MIN, f"{name}: F1@0.5 at least {F1_MIN}")
    assert scores["touching apart"] <= n_touching, (name, scores)
    cu.checks.check_result(scores["touching apart"] > 0, f"{name} separates touching nuclei")
print("all checks passed")
