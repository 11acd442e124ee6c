# %% [markdown]
# # 02b · Losses and training a network
#
# This notebook follows notebook 02 (CNN building blocks), whose section 0 is part 1 of the
# training primer (tensors, gradients, modules, one optimiser step). Here the blocks of 02
# become a network that learns to segment nuclei.
#
# **What you will learn**
# - the segmentation losses (MSE, binary and multi-class cross-entropy, soft Dice) and the class
#   imbalance trap;
# - how the building blocks of notebook 02 make a tiny fully convolutional network that segments
#   nuclei, and how to read its training curves;
# - part 2 of the training primer: `DataLoader`, training / validation / test sets and leakage,
#   and what overfitting looks like in the training and validation curves.
#
# Every loss is first written by hand and then **asserted** equal to PyTorch's version: when an
# assert passes, you know exactly what the library does.
#
# **Papers:** {cite}`milletari2016vnet`

# %%
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import course_utils as cu

report = cu.env.check_env()
cu.env.seed_everything(0)

# %% [markdown]
# Sizes come from `cu.pick(fast=..., full=...)`. The losses are small and run on the CPU in both
# modes; the tiny network trains on the best device available.

# %%
N_TRAIN = cu.pick(fast=8, full=100)  # BBBC039 training images for the tiny network
N_VAL = cu.pick(fast=4, full=50)  # validation images
PATCH = cu.pick(fast=64, full=128)  # training patch size (pixels)
PATCHES_PER_EPOCH = cu.pick(fast=192, full=4000)
EPOCHS = cu.pick(fast=5, full=30)
BATCH = 16
OVERFIT_STEPS = 200  # the deliberate overfitting run of section 3: two crops, a few seconds
device = cu.env.get_device()
print(
    f"mode {cu.get_mode()}: {N_TRAIN} train / {N_VAL} val images, {PATCH}px patches, "
    f"{EPOCHS} epochs of {PATCHES_PER_EPOCH} patches, training on {device}"
)

# %% [markdown]
# As in notebook 02, every hand-built loss below is compared with PyTorch through this helper,
# which also records the comparison for the final recap.

# %%
matched = {}


def assert_matches(name, actual, expected, rtol=1e-5, atol=1e-5):
    """Assert that a hand-built result equals PyTorch's (values and shape), and record it."""
    torch.testing.assert_close(
        torch.as_tensor(actual),
        torch.as_tensor(expected),
        rtol=rtol,
        atol=atol,
        check_dtype=False,
    )
    matched[name] = True
    print(f"✓ {name}")


# %% [markdown]
# We work on the BBBC039 training images of notebook 02 (Hoechst-stained nuclei, normalised to
# roughly [0, 1]): the first one, `image`, its instance labels `label`, and the labels of the
# same 128 x 128 crop as in notebook 02.

# %%
train_images, train_labels = cu.data.load_split("bbbc039", "train", n=N_TRAIN)
image, label = train_images[0], train_labels[0]
crop_label = label[200:328, 250:378]
cu.figures.blocks.show_crop(image, top=200, left=250, size=128, name="BBBC039 training image")
plt.show()

# %% [markdown]
# ## 1 · Losses
# A loss compares the network's output with the target, pixel by pixel, and averages.
# - **MSE**, the mean squared error: for regression targets (distances, flows: notebooks 05-06).
# - **Binary cross-entropy** for a foreground probability $p = \sigma(z)$:
#   $-[y \log p + (1 - y) \log(1 - p)]$. Computed from the logit $z$ it simplifies to
#   $\max(z, 0) - z y + \log(1 + e^{-|z|})$, which never takes the log of 0; that is why
#   PyTorch's `BCEWithLogitsLoss` takes logits, and why networks output logits.
# - **Cross-entropy** for C classes: $-\log \mathrm{softmax}(z)_{y} = \log\sum_k e^{z_k} - z_y$.

# %%
pred, target = torch.randn(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
assert_matches("MSE", ((pred - target) ** 2).mean(), F.mse_loss(pred, target))

z = 2 * torch.randn(2, 1, 16, 16)
y = (torch.rand(2, 1, 16, 16) > 0.7).float()
prob = torch.sigmoid(z)
naive_bce = -(y * torch.log(prob) + (1 - y) * torch.log(1 - prob)).mean()
stable_bce = (z.clamp(min=0) - z * y + torch.log1p(torch.exp(-z.abs()))).mean()
torch_bce = F.binary_cross_entropy_with_logits(z, y)
assert_matches("binary cross-entropy from logits", stable_bce, torch_bce)
torch_bce_prob = F.binary_cross_entropy(prob, y)
assert_matches("binary cross-entropy from probabilities", naive_bce, torch_bce_prob, 1e-4, 1e-4)
far = torch.tensor([-120.0])
naive_far = (-torch.log(torch.sigmoid(far))).item()
stable_far = F.binary_cross_entropy_with_logits(far, torch.ones(1)).item()
print(f"a confident mistake (logit -120, target 1): naive log(sigmoid) gives {naive_far},")
print(f"the stable form gives {stable_far}")

logits = torch.randn(2, 3, 16, 16)
classes = torch.randint(0, 3, (2, 16, 16))
ce = (torch.logsumexp(logits, dim=1) - logits.gather(1, classes[:, None])[:, 0]).mean()
assert_matches("multi-class cross-entropy", ce, F.cross_entropy(logits, classes))

# %% [markdown]
# ### Soft Dice
# The **Dice coefficient** of a predicted mask $P$ and a true mask $G$ is
# $2|P \cap G| / (|P| + |G|)$: 1 for a perfect overlap, 0 for none. It ignores the true
# negatives, so it is not fooled by a large background. Milletari et al. 2016 (V-Net) made it a
# loss by replacing the masks with probabilities $p$: the **soft Dice loss**
#
# $$1 - \frac{2 \sum p\,g + \epsilon}{\sum p + \sum g + \epsilon}$$
#
# (Milletari used squares in the denominator; the plain sums are the common choice today).
# The small $\epsilon$ keeps it defined when both masks are empty.
#
# **Exercise 1.** Write the soft Dice loss from logits `(N, 1, H, W)` and a 0/1 target of the
# same shape: sigmoid, the sums over each image, the loss per image, then the mean over the batch.
# The tiny network of section 2 trains with it.
#
# <details><summary>Hint 1</summary>
#
# `p = torch.sigmoid(logits)`. The sums run over every axis but the batch axis:
# `dims = (1, 2, 3)`, and `(p * target).sum(dims)` has shape `(N,)`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `dice = (2 * intersection + eps) / (p.sum(dims) + target.sum(dims) + eps)`, one value per
# image; the loss is `(1 - dice).mean()`.
# </details>
#
# <details><summary>Hint 3 (the answer, if you are stuck: paste it into the TODO)</summary>
#
# ```python
# p = torch.sigmoid(logits)
# dims = tuple(range(1, p.ndim))
# dice = (2 * (p * target).sum(dims) + eps) / (p.sum(dims) + target.sum(dims) + eps)
# return (1 - dice).mean()
# ```
# </details>


# %% tags=["solution"]
def soft_dice_loss(logits, target, eps=1.0):
    """Soft Dice loss (a scalar tensor) of logits (N, 1, H, W) against a 0/1 target, same shape."""
    # BEGIN SOLUTION
    p = torch.sigmoid(logits)
    dims = tuple(range(1, p.ndim))
    intersection = (p * target).sum(dims)
    dice = (2 * intersection + eps) / (p.sum(dims) + target.sum(dims) + eps)
    return (1 - dice).mean()
    # END SOLUTION


# Stuck? Open Hint 3 above and paste it into the TODO: section 2 trains with this loss.


# %% tags=["check"]
g = torch.from_numpy(crop_label > 0).float()[None, None]
hard_pred = torch.roll(g, shifts=3, dims=-1)  # the truth, shifted 3 pixels
big = 50.0  # logits so large that the sigmoid is 0 or 1: the soft Dice becomes the hard one
expected = 1 - cu.metrics.pixel_metrics(g[0, 0].numpy() > 0, hard_pred[0, 0].numpy() > 0)["dice"]
hard_loss = soft_dice_loss(big * (2 * hard_pred - 1), g, eps=0.0)
what = "soft Dice loss of a hard prediction (eps = 0) = 1 - Dice"
cu.checks.check_close(hard_loss, expected, what, atol=1e-5)
perfect_loss = soft_dice_loss(big * (2 * g - 1), g)
cu.checks.check_close(perfect_loss, 0.0, "loss of a perfect prediction", atol=1e-5)
batch = torch.cat([big * (2 * g - 1), -big * torch.ones_like(g)])  # perfect, then empty
batch_loss = soft_dice_loss(batch, torch.cat([g, g]))
mean_loss = (0 + 1 - 1 / (g.sum() + 1)) / 2
cu.checks.check_close(batch_loss, mean_loss, "mean over the images of a batch", atol=1e-5)

# %%
assert_matches("soft Dice on hard masks = 1 - Dice (cu.metrics.pixel_metrics)", hard_loss, expected)

# %% [markdown]
# ### The class imbalance trap
# Nuclei cover a small part of a BBBC039 image. A network that predicts "background" everywhere
# is right on most pixels: its **pixel accuracy is high, and its Dice is 0**. The table below
# scores three predictions of one image: empty (every pixel confidently background), a
# constant probability equal to the foreground fraction, and the truth itself.
#
# **Predict, then run.** Which of the three has the highest pixel accuracy after the perfect
# one? Which has the lower binary cross-entropy (BCE): the empty or the constant prediction?

# %%
truth = label > 0
empty = np.zeros_like(truth)
constant_logit = float(np.log(truth.mean() / (1 - truth.mean())))  # predicts p = fg fraction
y_full = torch.from_numpy(truth).float()[None, None]
predictions = {
    "empty prediction": (empty, torch.full_like(y_full, -10.0)),
    "constant p = foreground fraction": (empty, torch.full_like(y_full, constant_logit)),
    "perfect prediction": (truth, 20 * (2 * y_full - 1)),
}
print(f"foreground fraction of this image: {truth.mean():.1%}\n")
print(f"{'prediction':35s} {'accuracy':>9s} {'Dice':>6s} {'BCE':>7s} {'soft Dice loss':>15s}")
for name, (mask, z_full) in predictions.items():
    scores = cu.metrics.pixel_metrics(truth, mask)
    bce = F.binary_cross_entropy_with_logits(z_full, y_full).item()
    dice_loss = soft_dice_loss(z_full, y_full).item()
    print(
        f"{name:35s} {scores['accuracy']:9.3f} {scores['dice']:6.3f} {bce:7.3f} {dice_loss:15.3f}"
    )
empty_scores = cu.metrics.pixel_metrics(truth, empty)
assert empty_scores["accuracy"] > 0.75 and empty_scores["dice"] < 0.01

# %% [markdown]
# <details><summary>Answer</summary>
#
# Both wrong predictions have an accuracy of about 0.8 (the background fraction) and a Dice of 0.
# The BCE tells them apart: the confident empty prediction pays a lot for every nucleus pixel
# (about 1.95), the hedging constant far less (about 0.49).
# </details>
#
# So the empty prediction is **not** a minimum of the cross-entropy that training could get
# stuck in: the constant prediction is already better, and gradient descent moves away from
# both. The real trap is a *phase*. Early in training, the cheapest improvement is to move every
# pixel towards the frequent class, so a fresh network first predicts background everywhere:
# the probabilities of nuclei rise, but stay below 0.5 for a while, and Dice and IoU stay at 0.
# You will see it in notebook 03: the U-Net trained with plain cross-entropy ends its first
# fast-mode epoch with a validation IoU of 0. Weighting the rare class (03's weight map) or
# adding a Dice term, which looks only at the foreground, shortens that phase. And it is why we
# report Dice or IoU, never accuracy alone.
#
# > **Checkpoint.** Exercise 1 passes. Ask: which output channel, activation and loss would you
# > use to segment nuclei into background, interior and boundary?

# %% [markdown]
# ## 2 · A tiny fully convolutional network for nuclei
# Now we put the blocks of notebook 02 together: two conv-BN-ReLU layers, a 2 x 2 max pool, two
# more at half resolution, nearest upsampling, a conv, and a 1 x 1 conv to **one** output channel
# (a logit: nucleus or not). It has no dense layer, so it takes images of any size (divisible by
# 2): a *fully convolutional* network. It is a U-Net (Ronneberger 2015) without the skip
# connections and with one level instead of four; notebook 03 builds the real one.


# %%
def conv_bn_relu(c_in, c_out, batch_norm=True):
    if not batch_norm:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU())
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


def tiny_fcn(width=16, batch_norm=True):
    return nn.Sequential(
        conv_bn_relu(1, width, batch_norm),
        conv_bn_relu(width, width, batch_norm),
        nn.MaxPool2d(2),
        conv_bn_relu(width, 2 * width, batch_norm),
        conv_bn_relu(2 * width, 2 * width, batch_norm),
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv_bn_relu(2 * width, width, batch_norm),
        nn.Conv2d(width, 1, 1),
    )


torch.manual_seed(0)
model = tiny_fcn()
rf = cu.models.receptive_field(model)
n_params = sum(p.numel() for p in model.parameters())
print(f"{n_params:,} parameters; receptive field {rf.size} x {rf.size} px")

# %% [markdown]
# BBBC039 nuclei are about 16 to 35 pixels across (median 29). A field of 16 pixels sees part of
# one nucleus: enough to tell a bright nucleus from the dark background by local brightness and
# texture, not enough to see where one nucleus ends and the next begins. The U-Net of notebook
# 03 pools more often. Its contracting path (the "original U-Net encoder" of notebook 02,
# section 2) sees:

# %%
conv3, pool2 = (3, 1, 0, 1), (2, 2, 0, 1)  # (kernel, stride, padding, dilation), as in 02
for depth, where in ((3, "fast mode"), (4, "full mode, as in the paper")):
    encoder = [conv3, conv3, pool2] * depth + [conv3, conv3]
    field = cu.models.receptive_field([("conv", *layer) for layer in encoder])
    print(f"depth {depth} ({where}): the bottleneck sees {field.size} x {field.size} px")

# %% [markdown]
# So "the U-Net's bottleneck sees 140 pixels" holds for the paper's depth 4 (notebook 03's full
# mode); the depth-3 U-Net of fast mode sees 68, a little more than two nuclei. (An output
# pixel of the whole network sees more, as the decoder's convolutions add to the field.)
#
# ## 3 · Training a network (primer, part 2)
# ### Training, validation and test sets, and leakage
# **Why three sets?** A network can learn its training images by heart, so its score on them
# says little. We keep three groups of images apart:
#
# - the **training** set: the network's weights are fitted on it;
# - the **validation** set: used for every *choice*: when to stop, which learning rate, which
#   `min_distance` (notebook 01), which network;
# - the **test** set: looked at once, at the end, to report the score on new images.
#
# Every choice made by looking at a set makes that set's score optimistic, so the test set must
# stay out of all of them. BBBC039 comes with a published split, which `load_split` follows
# (100 / 50 / 48 images). **Leakage** is information from the validation or test images reaching
# the training or the choices: the same image, or overlapping crops of one image, in two sets;
# fields of view of one well or one slide on both sides when the question is how the method does
# on a new experiment; normalisation statistics computed over all images; a model picked by its
# test score. Each makes the score look better than it will be on new data.
#
# ### Dataset and DataLoader
# A `Dataset` returns one example by index: here `cu.data.PatchDataset`, a random
# `PATCH x PATCH` crop of a training image, with the target `labels > 0` (nucleus or
# background) as a `(1, H, W)` float mask. A `DataLoader` groups examples into batches,
# reshuffles them every epoch (one pass over the dataset) and can prepare them in parallel.


# %%
def foreground(labels):
    return (labels > 0).astype(np.float32)[None]


def dice_metric(logits, target):
    """Hard Dice of the thresholded prediction over the whole batch (a float)."""
    pred = (logits > 0).float()
    return ((2 * (pred * target).sum() + 1e-6) / (pred.sum() + target.sum() + 1e-6)).item()


val_images, val_labels = cu.data.load_split("bbbc039", "val", n=N_VAL)
train_set = cu.data.PatchDataset(
    train_images, train_labels, PATCH, length=PATCHES_PER_EPOCH, target_fn=foreground, seed=0
)
val_set = cu.data.PatchDataset(
    val_images, val_labels, PATCH, length=PATCHES_PER_EPOCH // 4, target_fn=foreground, seed=1
)
train_loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=True)
val_loader = torch.utils.data.DataLoader(val_set, batch_size=BATCH)
x, y = train_set[0]
xb, yb = next(iter(train_loader))
print(f"one example: image {tuple(x.shape)}, target {tuple(y.shape)} {y.dtype}")
print(f"a batch: images {tuple(xb.shape)}, targets {tuple(yb.shape)}; {len(train_loader)} an epoch")

# %% [markdown]
# ### A deliberate overfitting run
# What does *overfitting* look like? We make it happen on purpose: a fresh tiny FCN (without
# batch norm, which regularises a little and would slow the effect down) trains for 200 steps
# on only **two 32 x 32 crops** of one training image, a handful of nuclei. Every 10 steps we
# measure three losses:
#
# - **training**: the two crops it learns from;
# - **validation**: 16 crops of a validation image it never sees;
# - **leaky validation**: the two training crops shifted by 4 pixels. They look like new crops,
#   but they hold mostly pixels the network trained on: the mistake of cutting validation
#   patches from the training images.
#
# **Predict, then run.** Sketch the three loss curves over the 200 steps before you run the
# next two cells. Which ones keep falling?


# %%
def fixed_crops(img, lab, size, n, seed, shift=0):
    """n (size x size) crops at positions fixed by `seed`, moved by `shift` (<= 4) pixels."""
    r = np.random.default_rng(seed)
    corners = [
        (r.integers(img.shape[0] - size - 4), r.integers(img.shape[1] - size - 4)) for _ in range(n)
    ]
    window = [np.s_[y + shift : y + shift + size, x + shift : x + shift + size] for y, x in corners]
    xs = torch.from_numpy(np.stack([img[w] for w in window]))[:, None]
    return xs, torch.from_numpy(np.stack([lab[w] > 0 for w in window]).astype(np.float32))[:, None]


overfit_sets = {
    "training (2 crops)": fixed_crops(image, label, 32, 2, seed=0),
    "validation (16 crops, another image)": fixed_crops(val_images[0], val_labels[0], 64, 16, 1),
    "leaky validation (training crops, shifted)": fixed_crops(image, label, 32, 2, 0, shift=4),
}
tiny_set = torch.utils.data.TensorDataset(*overfit_sets["training (2 crops)"])
tiny_loader = torch.utils.data.DataLoader(tiny_set, batch_size=2, shuffle=True)
torch.manual_seed(0)
overfit_model = tiny_fcn(batch_norm=False)
overfit_optimizer = torch.optim.Adam(overfit_model.parameters(), lr=1e-2)
curves = {name: {"loss": [], "dice": []} for name in overfit_sets}
for step in range(OVERFIT_STEPS + 1):
    if step % 10 == 0:  # measure, without learning from it
        with torch.no_grad():
            for name, (xs, ys) in overfit_sets.items():
                logits = overfit_model(xs)
                curves[name]["loss"].append(F.binary_cross_entropy_with_logits(logits, ys).item())
                curves[name]["dice"].append(dice_metric(logits, ys))
    for xs, ys in tiny_loader:  # one batch: both crops
        loss = F.binary_cross_entropy_with_logits(overfit_model(xs), ys)
        overfit_optimizer.zero_grad()
        loss.backward()
        overfit_optimizer.step()

# %% tags=["hide-input"]
steps_measured = np.arange(0, OVERFIT_STEPS + 1, 10)
cu.figures.blocks.show_overfitting(steps_measured, curves)
plt.show()
for name, curve in curves.items():
    low = int(np.argmin(curve["loss"]))
    print(
        f"{name:43s} loss: lowest {curve['loss'][low]:.4f} (step {steps_measured[low]:3d}), "
        f"last {curve['loss'][-1]:.4f} | last Dice {curve['dice'][-1]:.3f}"
    )

# %% [markdown]
# <details><summary>Answer</summary>
#
# The training loss falls towards 0: the network learns its two crops by heart. The validation
# loss falls for a few dozen steps, while the network learns what nuclei look like in general,
# then **rises**: from then on it learns details of its two crops that do not hold elsewhere,
# and it becomes over-confident, which the cross-entropy punishes at every pixel it gets wrong.
# The gap between the two curves is overfitting; the best moment to stop is near the lowest
# validation loss. Meanwhile the validation Dice barely moves: a loss and a metric can tell
# different stories, so look at both. The leaky validation scores far better than the honest
# one (a lower loss, a higher Dice) and rises much less: it hides most of the overfitting, and
# it would make this network look better than it is on new images.
# </details>
#
# > **Checkpoint.** Everyone can read the plot: where is the overfitting, where would you stop,
# > and why is the leaky validation misleading?
#
# ### Training for real
# The network we keep trains on many random patches of the training images, with the loss binary
# cross-entropy plus our soft Dice loss (against the imbalance trap). First, the training loop
# written out, for one pass over the patches: forward, loss, backward, step.


# %%
def loss_fn(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)


model = model.to(device)
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
model.train()
losses = []
for x, y in tqdm(train_loader, desc="hand-written loop, one epoch"):
    x, y = x.to(device), y.to(device)
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
print(f"loss: first batch {losses[0]:.3f}, last batch {losses[-1]:.3f}")

# %% [markdown]
# The same loop, with validation after every epoch, a history, checkpoints and mixed precision
# (on a GPU, and on CPUs that compute bfloat16 natively) is `cu.train.fit`. We continue
# training the same model with it.

# %%
history = cu.train.fit(
    model,
    train_loader,
    val_loader,
    loss_fn=loss_fn,
    epochs=EPOCHS,
    optimizer=optimizer,
    metrics={"dice": dice_metric},
    device=device,
    seed=0,
)
history.plot()
plt.show()

# %% [markdown]
# **Why?** Here the validation loss is *below* the training loss in every epoch. The network
# never learns from the validation patches: how can it do better on them? Think about when and
# how each of the two numbers is computed, then run the next cell.

# %%
model.eval()
with torch.no_grad():
    again = np.mean([loss_fn(model(x.to(device)), y.to(device)).item() for x, y in train_loader])
print(
    f"last epoch: training loss {history['train_loss'][-1]:.3f} (the mean over the epoch), "
    f"validation loss {history['val_loss'][-1]:.3f}\n"
    f"training patches again, with the final weights in evaluation mode: {again:.3f}"
)

# %% [markdown]
# <details><summary>Answer</summary>
#
# Two reasons. **When and how:** the training loss of an epoch is the mean over its batches,
# measured *while* the network learns (its early batches were scored by a worse network) and in
# training mode; the validation loss is measured after the epoch, with the final weights, in
# evaluation mode (batch norm with its running statistics). Scoring the training patches again
# the same way removes that part of the gap: the last number printed. **What:** the rest of
# the gap says that these validation patches are easier than the training ones. With a few
# images per set the two sets differ, for example in how many nucleus pixels a patch holds
# (the soft Dice term of a patch is large when it holds few). A validation loss below the
# training loss is no sign of leakage by itself.
# </details>
#
# The network is fully convolutional, so we apply it to whole validation images and score the
# thresholded probability with the pixel Dice.

# %%
model.eval()
val_dice = []
with torch.no_grad():
    for img, lab in zip(val_images, val_labels):
        h, w = (s - s % 2 for s in img.shape)  # the pooling needs even sizes
        logit = model(torch.from_numpy(img[:h, :w])[None, None].to(device))[0, 0].cpu()
        val_dice.append(cu.metrics.pixel_metrics(lab[:h, :w] > 0, logit.numpy() > 0)["dice"])
print(
    f"validation Dice on {len(val_dice)} full images: {np.mean(val_dice):.3f} "
    f"(per image: {', '.join(f'{d:.3f}' for d in val_dice)})"
)
titles = ["validation image", "true foreground", f"predicted probability (Dice {val_dice[-1]:.3f})"]
prob = torch.sigmoid(logit).numpy()
cu.plot.show_grid([img[:h, :w], lab[:h, :w] > 0, prob], titles, ncols=3, figsize=(15, 4.5))
plt.show()

# %% [markdown]
# ### What the network computes: feature maps
# A *forward hook* records the output of a layer as the data passes through. The first block's
# channels resemble the fixed filters of notebook 02, section 1: smoothed brightness (nuclei
# bright, or inverted: background bright) and edges on one side of a nucleus. At half
# resolution, after three more convolutions, the channels respond to whole nuclei, their rims or
# the background.

# %%
features = {}
hooks = [
    model[i].register_forward_hook(lambda mod, inp, out, i=i: features.__setitem__(i, out))
    for i in (0, 4)
]
with torch.no_grad():
    model(torch.from_numpy(img[:128, :128].copy())[None, None].to(device))
for hook in hooks:
    hook.remove()
maps = {"conv block 1\n(full resolution)": features[0][0], "conv block 4\n(half)": features[4][0]}
title = "Feature maps (after ReLU) of the trained tiny FCN on a 128 x 128 validation crop"
cu.figures.blocks.show_feature_maps(maps, n_channels=8, title=title)
plt.show()

# %% [markdown]
# ## Recap
# - Networks output logits: the binary cross-entropy and the cross-entropy take them, and their
#   stable forms never take the log of 0.
# - Accuracy is a trap on imbalanced masks; Dice measures the overlap, and the soft Dice loss
#   (Milletari 2016) trains for it directly. The empty prediction is no minimum of the
#   cross-entropy, but class imbalance gives an early all-background phase (notebook 03).
# - A fully convolutional network (no dense layer) takes images of any size; its receptive field
#   says how much of a nucleus and its neighbours each output pixel sees.
# - Training, validation and test sets answer different questions; choices are made on the
#   validation set only, and overlapping sets (leakage) hide overfitting. Overfitting shows as a
#   validation loss that rises while the training loss keeps falling.
#
# The asserts below fail if a hand-built loss stops matching PyTorch, the overfitting run stops
# showing overfitting, or the tiny network stops learning.

# %%
print(f"{len(matched)} hand-built losses matched PyTorch:")
for name in matched:
    print("  ✓", name)
assert len(matched) >= 5 and all(matched.values())
train_curve, honest, leaky = (curves[name]["loss"] for name in curves)
assert train_curve[-1] < 0.01, "the overfitting run should learn its two crops by heart"
assert honest[-1] > 2 * min(honest), "the validation loss should rise again while overfitting"
assert leaky[-1] < honest[-1], "the leaky validation should look better than the honest one"
MIN_DICE = 0.90  # measured 0.974 in fast mode (CPU); full mode trains longer on more images
print(f"tiny FCN validation Dice {np.mean(val_dice):.3f} (minimum {MIN_DICE})")
# A claim about a trained result: a dry run of full mode (COURSE_DRYRUN=1) reports it unchecked.
cu.checks.check_result(np.mean(val_dice) > MIN_DICE, "the tiny FCN learned to segment nuclei")
