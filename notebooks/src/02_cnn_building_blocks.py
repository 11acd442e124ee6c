# %% [markdown]
# # 02 · CNN building blocks, built by hand
#
# **What you will learn**
# - what a 2D convolution computes, written with loops and as one matrix product (unfold), and
#   why deep learning's "convolution" is really a cross-correlation;
# - how padding, stride, dilation and channels change the output, and the output-size formula;
# - the **receptive field** of a stack of layers: computed with a formula, then measured with the
#   gradient of one output pixel;
# - batch normalisation (training vs evaluation statistics), layer and group normalisation;
# - activations and their gradients, and which output activation a segmentation network needs;
# - pooling, upsampling, transposed convolution (and its checkerboard), residual blocks, dropout;
# - the segmentation losses (MSE, binary and multi-class cross-entropy, soft Dice) and the class
#   imbalance trap;
# - how these pieces make a tiny fully convolutional network that segments nuclei.
#
# Every piece is first written by hand and then **asserted** equal to PyTorch's version: when an
# assert passes, you know exactly what the library does.
#
# **Papers:** {cite}`dumoulin2016convarithmetic`, {cite}`luo2016erf`, {cite}`ioffe2015batchnorm`,
# {cite}`he2016resnet`, {cite}`srivastava2014dropout`, {cite}`odena2016checkerboard`,
# {cite}`milletari2016vnet`

# %%
import matplotlib.pyplot as plt
import numpy as np
import scipy.ndimage as ndi
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import course_utils as cu

report = cu.env.check_env()
rng = cu.env.seed_everything(0)

# %% [markdown]
# Sizes come from `cu.pick(fast=..., full=...)`. The building blocks run on the CPU in both
# modes (they are small); only the tiny network at the end trains on the best device available.

# %%
N_TRAIN = cu.pick(fast=8, full=100)  # BBBC039 training images for the tiny network
N_VAL = cu.pick(fast=4, full=50)  # validation images
PATCH = cu.pick(fast=64, full=128)  # training patch size (pixels)
PATCHES_PER_EPOCH = cu.pick(fast=192, full=4000)
EPOCHS = cu.pick(fast=5, full=30)
BATCH = 16
device = cu.env.get_device()
print(
    f"mode {cu.get_mode()}: {N_TRAIN} train / {N_VAL} val images, {PATCH}px patches, "
    f"{EPOCHS} epochs of {PATCHES_PER_EPOCH} patches, training on {device}"
)

# %% [markdown]
# Every hand-built block below is compared with PyTorch through this helper, which also records
# the comparison for the final recap.

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
# We work on a real image: a BBBC039 field of view of Hoechst-stained nuclei (normalised to
# roughly [0, 1], see notebook 00), and a 128 x 128 crop of it.

# %%
train_images, train_labels = cu.data.load_split("bbbc039", "train", n=N_TRAIN)
image, label = train_images[0], train_labels[0]
crop = image[200:328, 250:378]
crop_label = label[200:328, 250:378]
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
axes[0].add_patch(plt.Rectangle((250, 200), 128, 128, fill=False, color="tab:orange", lw=2))
axes[0].set_title(f"BBBC039 training image {image.shape}")
axes[1].imshow(crop, cmap="gray", vmin=0, vmax=1)
axes[1].set_title("the 128 x 128 crop used below")
for ax in axes:
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 1 · Convolution
# A convolutional layer slides a small kernel `w` (say 3 x 3) over the image and, at every
# position, takes the weighted sum of the pixels under it:
#
# $$\text{out}[i, j] = \sum_{u, v} w[u, v]\; x[i + u,\, j + v].$$
#
# The same few weights are used at every position (*weight sharing*), so a pattern is detected
# wherever it appears (*translation equivariance*), with far fewer parameters than a dense layer.
#
# **Exercise 1.** Write this sum with two loops over the output pixels. Without padding, the
# kernel must fit inside the image, so the output is `(H - kh + 1, W - kw + 1)` ("valid").


# %% tags=["solution"]
def conv2d_loops(x, w):
    """Valid 2D cross-correlation of `x` (H, W) with kernel `w` (kh, kw), as F.conv2d computes."""
    kh, kw = w.shape
    out = np.zeros((x.shape[0] - kh + 1, x.shape[1] - kw + 1), dtype=np.float32)
    # BEGIN SOLUTION
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = np.sum(x[i : i + kh, j : j + kw] * w)
    # END SOLUTION
    return out


# %% tags=["check"]
small = crop[:32, :32]
w_random = rng.standard_normal((3, 5)).astype(np.float32)  # not square, so rows/cols can't swap
reference = F.conv2d(torch.from_numpy(small)[None, None], torch.from_numpy(w_random)[None, None])
cu.checks.check_close(conv2d_loops(small, w_random), reference[0, 0], "conv2d_loops", atol=1e-5)

# %%
assert_matches("conv2d with loops", conv2d_loops(small, w_random), reference[0, 0])

# %% [markdown]
# ### Convolution or cross-correlation?
# In signal processing a *convolution* flips the kernel first: $\sum w[u, v]\, x[i - u, j - v]$.
# What deep learning libraries call convolution (and what we wrote) is the *cross-correlation*.
# For a learned kernel the difference does not matter: the network simply learns the flipped
# kernel. It matters when you copy a kernel from a textbook: the Sobel kernel below is
# antisymmetric, so the true convolution gives the same edges with the opposite sign.

# %%
sobel_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float32)
true_conv = scipy.signal.convolve2d(small, sobel_x, mode="valid")
torch_flipped = F.conv2d(
    torch.from_numpy(small)[None, None], torch.from_numpy(sobel_x[::-1, ::-1].copy())[None, None]
)
assert_matches("true convolution = F.conv2d with flipped kernel", true_conv, torch_flipped[0, 0])
print(
    "Sobel: convolution = -1 x cross-correlation:",
    np.allclose(true_conv, -conv2d_loops(small, sobel_x), atol=1e-5),
)

# %% [markdown]
# ### Padding, stride, dilation: the output-size formula
# - **Padding** `p` adds `p` zero pixels on every side. *Valid* (p = 0) shrinks the image by
#   `k - 1`; *same* (p = (k - 1) / 2 for odd k) keeps its size. The original U-Net
#   (Ronneberger 2015) used valid convolutions, so its output is smaller than its input
#   (notebook 03).
# - **Stride** `s` moves the kernel `s` pixels at a time: the output is about `s` times smaller.
# - **Dilation** `d` spreads the kernel taps `d` pixels apart: a 3 x 3 kernel with d = 2 covers
#   5 x 5 pixels with 9 weights.

# %%
grid = np.zeros((3, 9, 9))
grid[0, 3:6, 3:6] = 1  # 3x3 kernel
grid[1, 2:7:2, 2:7:2] = 1  # 3x3 kernel, dilation 2
grid[2, 3:6, 1:4] += 1  # stride 2: two neighbouring output pixels, 2 pixels apart
grid[2, 3:6, 3:6] += 2
titles = ["3x3 kernel", "3x3, dilation 2 (covers 5x5)", "stride 2: two outputs (overlap yellow)"]
fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, g, title in zip(axes, grid, titles):
    ax.imshow(g, cmap="viridis", vmin=0, vmax=3)
    ax.set_xticks(np.arange(-0.5, 9), minor=True)
    ax.set_yticks(np.arange(-0.5, 9), minor=True)
    ax.grid(which="minor", color="w", lw=0.5)
    ax.set_title(title)
    ax.set_xlabel("input x")
    ax.set_ylabel("input y")
plt.tight_layout()
plt.show()

# %% [markdown]
# **Exercise 2.** The kernel covers `d (k - 1) + 1` pixels; on a padded input of `n + 2p`
# pixels it fits at `n + 2p - d (k - 1)` positions, of which we keep every `s`-th. Write the
# number of output pixels along one axis.


# %% tags=["solution"]
def conv_output_size(n, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution or pooling along one axis of length `n` (an int)."""
    # BEGIN SOLUTION
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    # END SOLUTION


# %% tags=["check"]
cases = [
    (n, k, s, p, d)
    for n in (7, 8, 32)
    for k in (1, 2, 3, 5)
    for s in (1, 2, 3)
    for p in (0, 1, 2)
    for d in (1, 2)
    if n + 2 * p >= d * (k - 1) + 1
]
ours = [conv_output_size(n, k, s, p, d) for n, k, s, p, d in cases]
theirs = [
    F.conv2d(
        torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p, dilation=d
    ).shape[-1]
    for n, k, s, p, d in cases
]
cu.checks.check_equal(np.array(ours), np.array(theirs), f"conv_output_size on {len(cases)} cases")

# %%
assert_matches("output-size formula", ours, theirs)
for name, kwargs in [
    ("valid", {}),
    ("same", {"padding": 1}),
    ("stride 2", {"stride": 2}),
    ("dilation 2", {"dilation": 2, "padding": 2}),
]:
    print(f"3x3 conv, {name:10s}: 128 -> {conv_output_size(128, 3, **kwargs)}")

# %% [markdown]
# ### Many channels, and convolution as one matrix product
# A real layer maps `C_in` input channels to `C_out` output channels: each output channel has
# one `k x k` kernel *per input channel* and sums over all of them, so the weight has shape
# `(C_out, C_in, k, k)`. GPUs do not loop over positions. They cut every `k x k x C_in` patch out
# of the input into a column (`F.unfold`, also called *im2col*), and then one matrix product with
# the weights, reshaped to `(C_out, C_in k k)`, computes all outputs at once.


# %%
def conv2d_unfold(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """Convolution of x (N, C_in, H, W) with weight (C_out, C_in, kh, kw) as unfold + matmul."""
    n, _, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
    out = weight.reshape(c_out, -1) @ cols  # (C_out, C_in kh kw) @ (N, C_in kh kw, L)
    if bias is not None:
        out = out + bias[:, None]
    h_out = conv_output_size(h, kh, stride, padding, dilation)
    w_out = conv_output_size(w, kw, stride, padding, dilation)
    return out.reshape(n, c_out, h_out, w_out)


x = torch.randn(2, 3, 20, 24)
conv = nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=2, dilation=2)
with torch.no_grad():
    ours = conv2d_unfold(x, conv.weight, conv.bias, stride=2, padding=2, dilation=2)
    assert_matches("conv2d as unfold + matmul (3 -> 8 channels, stride, dilation)", ours, conv(x))
n_params = sum(p.numel() for p in conv.parameters())
print(f"parameters: 8 x 3 x 3 x 3 weights + 8 biases = {8 * 3 * 3 * 3 + 8} = {n_params}")

# %% [markdown]
# ### Classic filters are fixed kernels
# Before deep learning, image processing used hand-designed kernels; the first layer of a trained
# CNN learns kernels that look much like them. Applied to our nuclei with `padding="same"`:
# Sobel kernels respond to vertical and horizontal edges, the Laplacian to blobs and outlines,
# and box or Gaussian kernels blur (they average the noise away). Note the false edges along
# the border of the crop: "same" padding adds zeros there, and the image is not zero.

# %%
gauss_1d = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
kernels = {
    "Sobel x (vertical edges)": sobel_x,
    "Sobel y (horizontal edges)": sobel_x.T.copy(),
    "Laplacian (blobs, outlines)": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
    "box blur 5x5": np.full((5, 5), 1 / 25, np.float32),
    "Gaussian blur (sigma 1.5)": (np.outer(gauss_1d, gauss_1d) / gauss_1d.sum() ** 2).astype(
        np.float32
    ),
}
stack = torch.from_numpy(np.stack(list(kernels.values())[:3]))[:, None]  # 3 kernels, 1 layer
crop_t = torch.from_numpy(crop)[None, None]
edges = F.conv2d(crop_t, stack, padding="same")[0]  # one conv layer with 3 output channels
blurred = [
    F.conv2d(crop_t, torch.from_numpy(k)[None, None], padding="same")[0, 0]
    for k in list(kernels.values())[3:]
]
assert_matches(
    "Sobel via F.conv2d = scipy.ndimage.correlate",
    edges[0],
    ndi.correlate(crop, sobel_x, mode="constant"),
)
fig, axes = plt.subplots(2, 3, figsize=(12, 8))
panels = [("input crop", crop), *zip(kernels, [*edges, *blurred])]
for ax, (title, img) in zip(axes.ravel(), panels):
    if "blur" in title or title == "input crop":
        ax.imshow(img, cmap="gray")
    else:  # signed responses: white = 0, red = positive, blue = negative
        limit = float(img.abs().max())
        ax.imshow(img, cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_title(title)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2 · The receptive field
# An output pixel of a CNN sees only a window of the input: its **receptive field**. One 3 x 3
# convolution sees 3 x 3 pixels; two of them see 5 x 5; a 2 x 2 pooling in between doubles the
# step of everything after it. Along one axis, three numbers describe the field: its `size`,
# the `jump` (distance in input pixels between the fields of neighbouring output pixels, the
# product of the strides so far) and `start` (the input coordinate of the centre of output
# pixel 0's field). A layer with kernel `k`, stride `s`, padding `p` and dilation `d` updates
# them as
#
# $$k' = d(k - 1) + 1,\quad \text{size} \mathrel{+}= (k' - 1)\,\text{jump},\quad
# \text{start} \mathrel{+}= \left(\tfrac{k' - 1}{2} - p\right)\text{jump},\quad
# \text{jump} \mathrel{\times}= s.$$
#
# For segmentation this number matters: to decide whether a pixel lies on the border between two
# touching nuclei, the network must see both nuclei, i.e. a field of several nucleus diameters.
#
# **Exercise 3.** Implement the recurrence for a list of `(kernel, stride, padding, dilation)`
# layers (a pooling layer is one too).


# %% tags=["solution"]
def my_receptive_field(layers):
    """(size, jump, start) of a stack of (kernel, stride, padding, dilation) layers."""
    size, jump, start = 1, 1, 0.0
    # BEGIN SOLUTION
    for k, s, p, d in layers:
        k_eff = d * (k - 1) + 1
        size += (k_eff - 1) * jump
        start += ((k_eff - 1) / 2 - p) * jump
        jump *= s
    # END SOLUTION
    return size, jump, start


# %% tags=["check"]
conv3, same3, pool2 = (3, 1, 0, 1), (3, 1, 1, 1), (2, 2, 0, 1)
cu.checks.check_equal(my_receptive_field([conv3, conv3])[0], 5, "size of two 3x3 convs")
cu.checks.check_equal(
    my_receptive_field([conv3, pool2, conv3])[0], 8, "size of conv 3x3, pool 2x2, conv 3x3"
)
stacks = {
    "two 3x3 convs": [conv3, conv3],
    "conv pool conv": [conv3, pool2, conv3],
    "padded, strided and dilated": [same3, (3, 2, 1, 1), (3, 1, 2, 2), pool2, (5, 1, 0, 3)],
    "original U-Net encoder": [conv3, conv3, pool2] * 4 + [conv3, conv3],
}
for name, layers in stacks.items():
    library = cu.models.receptive_field([("conv", *layer) for layer in layers])
    cu.checks.check_equal(
        my_receptive_field(layers),
        (library.size, library.jump, library.start),
        f"(size, jump, start) of {name}",
    )

# %%
for name, layers in stacks.items():
    library = cu.models.receptive_field([("conv", *layer) for layer in layers])
    assert_matches(
        f"receptive field of {name}",
        my_receptive_field(layers),
        (library.size, library.jump, library.start),
    )
    print(f"   {name}: {library}")

# %% [markdown]
# ### Measuring it: the gradient of one output pixel
# The receptive field is exactly the set of input pixels on which the output pixel depends, so
# the gradient of that one output pixel with respect to the input is non-zero there and zero
# elsewhere. To see the whole *theoretical* field we set all weights to 1 (so that no two paths
# cancel) and use average pooling (max pooling sends the gradient to one pixel per window only,
# which depends on the input). The measured field matches the formula.


# %%
def as_module(layers, channels=1):
    """An nn.Sequential of convs (and average pools for kernel-2 stride-2 layers), weights 1."""
    modules = []
    for k, s, p, d in layers:
        if (k, s, p, d) == pool2:
            modules.append(nn.AvgPool2d(2))
        else:
            modules.append(nn.Conv2d(channels, channels, k, stride=s, padding=p, dilation=d))
    net = nn.Sequential(*modules)
    for param in net.parameters():
        nn.init.ones_(param) if param.ndim > 1 else nn.init.zeros_(param)
    return net


def gradient_of_one_output(net, n_in, row, col):
    """|d out[row, col] / d input| for a (1, 1, n_in, n_in) input, as a numpy (n_in, n_in)."""
    x = torch.rand(1, net[0].in_channels, n_in, n_in, requires_grad=True)
    net(x)[0, 0, row, col].backward()
    return x.grad[0].abs().sum(0).numpy()


layers = stacks["padded, strided and dilated"]
size, jump, start = my_receptive_field(layers)
net = as_module(layers)
out_size = net(torch.zeros(1, 1, 96, 96)).shape[-1]
i = out_size // 2  # an output pixel far from the borders
grad = gradient_of_one_output(net, 96, i, i)
rows = np.flatnonzero(grad.sum(1))
assert_matches("measured receptive field size (gradient) = formula", rows[-1] - rows[0] + 1, size)
assert_matches("measured centre = start + i * jump", (rows[0] + rows[-1]) / 2, start + i * jump)

# %% [markdown]
# ### The *effective* receptive field
# With trained or random weights, not all pixels in the field count equally. Luo et al. 2016
# (*Understanding the effective receptive field*) showed that the gradient falls off like a
# Gaussian from the centre, so the *effective* field is much smaller than the theoretical one,
# and it grows only like the square root of the depth. Here: ten 3 x 3 conv + ReLU layers with
# random weights, the gradient averaged over 20 random networks.

# %%
deep = [same3] * 10
size_deep = my_receptive_field(deep)[0]
erf = np.zeros((64, 64))
for seed in range(20):
    torch.manual_seed(seed)
    modules = []
    for _ in deep:
        modules += [nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()]
    erf += gradient_of_one_output(nn.Sequential(*modules), 64, 32, 32)
theory = gradient_of_one_output(as_module(deep, channels=8), 64, 32, 32) > 0
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
axes[0].imshow(theory, cmap="gray")
axes[0].set_title(f"theoretical field: {size_deep} x {size_deep}")
axes[1].imshow(erf, cmap="magma")
axes[1].set_title("effective field: mean |gradient|, random weights")
for ax in axes[:2]:
    ax.set_xlabel("input x")
    ax.set_ylabel("input y")
axes[2].plot(erf[32] / erf[32].max(), label="effective (random weights)")
axes[2].plot(theory[32], label="theoretical")
axes[2].set_title("profile through the centre")
axes[2].set_xlabel("input x")
axes[2].set_ylabel("relative gradient")
axes[2].legend()
plt.tight_layout()
plt.show()
half = erf[32] / erf[32].max() > 0.5
print(f"theoretical size {size_deep} px, effective (gradient > half of its peak) {half.sum()} px")

# %% [markdown]
# The library has the same computation as `cu.models.receptive_field`. It also takes
# `nn.Module`s directly, including upsampling and transposed convolutions (section 5). A 2x
# upsampling halves the jump, so this small encoder-decoder ends with a jump of 1 again: one
# output pixel per input pixel, as a segmentation network needs.

# %%
encoder_decoder = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(8, 8, 3, padding=1),
    nn.ReLU(),
    nn.Upsample(scale_factor=2, mode="nearest"),
    nn.Conv2d(8, 1, 3, padding=1),
)
print(cu.models.receptive_field(encoder_decoder))

# %% [markdown]
# ## 3 · Normalisation
# ### Batch normalisation
# Batch normalisation (Ioffe & Szegedy 2015) standardises every channel with the mean and
# variance of the current batch (over the batch and both spatial axes), then rescales it with a
# learned `gamma` and shifts it with a learned `beta`:
# $y = \gamma\,(x - \mu) / \sqrt{\sigma^2 + \epsilon} + \beta$. It makes deep networks train
# faster and with larger learning rates.
#
# At **evaluation** time there may be one image only, and the prediction must not depend on
# what else is in the batch, so it uses *running* averages of the training statistics instead:
# `running = (1 - momentum) * running + momentum * batch_statistic`. PyTorch stores the unbiased
# variance (divided by `n - 1`) in the running average, but normalises a training batch with the
# biased one (divided by `n`).
#
# **Exercise 4.** Write the forward pass for a `(N, C, H, W)` tensor, updating the running
# statistics in place in training mode.


# %% tags=["solution"]
def batchnorm_forward(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Batch norm of x (N, C, H, W); gamma, beta, running_mean, running_var have shape (C,)."""
    # BEGIN SOLUTION
    if training:
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        n = x.numel() // x.shape[1]
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
    else:
        mean, var = running_mean, running_var
    x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + eps)
    return gamma[None, :, None, None] * x_hat + beta[None, :, None, None]
    # END SOLUTION


# %% tags=["check"]
torch.manual_seed(0)
bn = nn.BatchNorm2d(4)
nn.init.normal_(bn.weight)
nn.init.normal_(bn.bias)
my_mean, my_var = torch.zeros(4), torch.ones(4)
with torch.no_grad():
    for step in range(3):  # three training batches, not centred at 0
        xb = 3 * torch.randn(8, 4, 10, 10) + torch.arange(4.0)[None, :, None, None]
        ours = batchnorm_forward(xb, bn.weight, bn.bias, my_mean, my_var, training=True)
        theirs = bn.train()(xb)
        cu.checks.check_close(ours, theirs, f"training-mode output, batch {step}", atol=1e-4)
    cu.checks.check_close(my_mean, bn.running_mean, "running mean", atol=1e-5)
    cu.checks.check_close(my_var, bn.running_var, "running variance", atol=1e-5)
    x_eval = torch.randn(1, 4, 10, 10)
    ours_eval = batchnorm_forward(x_eval, bn.weight, bn.bias, my_mean, my_var, training=False)
    theirs_eval = bn.eval()(x_eval)
    cu.checks.check_close(ours_eval, theirs_eval, "evaluation-mode output", atol=1e-4)

# %%
assert_matches("batch norm, training mode", ours, theirs, atol=1e-4)
assert_matches(
    "batch norm, running statistics",
    torch.cat([my_mean, my_var]),
    torch.cat([bn.running_mean, bn.running_var]),
)
assert_matches("batch norm, evaluation mode", ours_eval, theirs_eval, atol=1e-4)
with torch.no_grad():
    train_out = bn.train()(x_eval)  # normalised with its own statistics (and updates running)
difference = (train_out - theirs_eval).abs().mean()
print(f"one image, train vs eval mode: mean |difference| = {difference:.3f} (forget model.eval()")
print("and the predictions depend on the batch)")

# %% [markdown]
# ### Layer and group normalisation, in one line each
# Batch norm needs batches of a decent size; with the batch of 1 or 2 large images common in
# microscopy its statistics are noisy. **Layer norm** normalises each sample over all its
# channels and pixels; **group norm** over groups of channels (instance norm is group norm with
# one channel per group). Neither depends on the batch, so training and evaluation agree.

# %%
x = torch.randn(2, 6, 8, 8)
dims = (1, 2, 3)
layer_norm = (x - x.mean(dims, True)) / (x.var(dims, unbiased=False, keepdim=True) + 1e-5).sqrt()
g = x.reshape(2, 3, -1)  # 3 groups of 2 channels, each flattened
group_norm = (g - g.mean(-1, True)) / (g.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt()
group_norm = group_norm.reshape(x.shape)
assert_matches("layer norm in one line", layer_norm, F.layer_norm(x, x.shape[1:]), atol=1e-4)
assert_matches("group norm in one line", group_norm, F.group_norm(x, 3), atol=1e-4)

# %% [markdown]
# ## 4 · Activations and their gradients
# Without a non-linearity between them, stacked convolutions collapse into one convolution.
# The common choices, with the derivatives backpropagation multiplies by:
# - **ReLU** `max(0, x)`, derivative 1 for x > 0 and 0 otherwise: cheap, no saturation for
#   positive inputs, but a unit that is always negative stops learning ("dead ReLU");
# - **leaky ReLU** `x if x > 0 else a x`: a small slope `a` keeps the gradient alive;
# - **sigmoid** `1 / (1 + exp(-x))`, derivative `s (1 - s)`, at most 0.25: it saturates, so it
#   is used for *outputs* (a probability), not between layers.
#
# We check the hand-written derivatives against autograd.

# %%
z = torch.linspace(-5, 5, 201, requires_grad=True)
activations = {
    "ReLU": (F.relu, lambda v: (v > 0).float()),
    "leaky ReLU (a = 0.1)": (
        lambda v: F.leaky_relu(v, 0.1),
        lambda v: torch.where(v > 0, 1.0, 0.1),
    ),
    "sigmoid": (torch.sigmoid, lambda v: torch.sigmoid(v) * (1 - torch.sigmoid(v))),
}
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
for ax, (name, (f, derivative)) in zip(axes, activations.items()):
    (autograd,) = torch.autograd.grad(f(z).sum(), z)
    assert_matches(f"derivative of {name}", derivative(z.detach()), autograd)
    ax.plot(z.detach(), f(z).detach(), label="f(x)")
    ax.plot(z.detach(), autograd, "--", label="f'(x) (autograd)")
    ax.set_title(name)
    ax.set_xlabel("x")
    ax.set_ylabel("value")
    ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Softmax, and the output activation of a segmentation network
# **Softmax** turns `C` scores (*logits*) into `C` probabilities that sum to 1:
# $s_c = e^{z_c} / \sum_k e^{z_k}$. Subtracting the maximum logit first changes nothing
# mathematically and avoids overflow. Its Jacobian is $\mathrm{diag}(s) - s s^\top$.
#
# The output of a segmentation network depends on the question:
# - **binary** (nucleus or background): **1** output channel, a sigmoid, threshold 0.5
#   (logit 0), binary cross-entropy;
# - **multi-class**, each pixel in exactly one class (background / nucleus interior / boundary,
#   notebook 03): **C** channels, a softmax over the channel axis, argmax, cross-entropy;
# - (several labels per pixel that may overlap: C channels, each with its own sigmoid.)
#
# A 2-class softmax is a sigmoid in disguise: $\mathrm{softmax}(a, b)_2 = \sigma(b - a)$.


# %%
def softmax(logits, dim=1):
    """Softmax along `dim`, stabilised by subtracting the maximum."""
    e = torch.exp(logits - logits.amax(dim, keepdim=True))
    return e / e.sum(dim, keepdim=True)


logits = 20 * torch.randn(2, 3, 8, 8)  # (N, C, H, W) with large logits: naive exp overflows
assert_matches("softmax over channels", softmax(logits), torch.softmax(logits, dim=1))
v = torch.randn(4)
s = softmax(v, dim=0)
assert_matches(
    "softmax Jacobian diag(s) - s s^T",
    torch.diag(s) - torch.outer(s, s),
    torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0), v),
)
two = torch.randn(2, 2, 8, 8)
assert_matches(
    "2-class softmax = sigmoid of the logit difference",
    softmax(two)[:, 1],
    torch.sigmoid(two[:, 1] - two[:, 0]),
)

# %% [markdown]
# ## 5 · Pooling, upsampling, transposed convolution, residual blocks, dropout
# ### Pooling
# A segmentation network first shrinks the image to see more context (the *encoder*), then
# grows it back to full resolution (the *decoder*). 2 x 2 **max pooling** keeps the largest
# value of every 2 x 2 block (its gradient goes to that one pixel only); **average pooling**
# keeps the mean. Both are a reshape away.

# %%
x = torch.randn(2, 3, 8, 10)
blocks = x.reshape(2, 3, 4, 2, 5, 2)  # (N, C, H/2, 2, W/2, 2)
assert_matches("2x2 max pooling by reshape", blocks.amax((3, 5)), F.max_pool2d(x, 2))
assert_matches("2x2 average pooling by reshape", blocks.mean((3, 5)), F.avg_pool2d(x, 2))

# %% [markdown]
# ### Upsampling
# **Nearest** upsampling repeats every pixel; **bilinear** interpolates between the four nearest
# pixels. Bilinear interpolation is linear in the image, so along each axis it is a matrix:
# with PyTorch's default (`align_corners=False`) output pixel `i` samples input coordinate
# `(i + 0.5) / scale - 0.5`, clamped at 0, and mixes the two pixels around it. The 2D result is
# `M_h @ x @ M_w^T`.


# %%
def bilinear_matrix(n_in, scale):
    """(n_in * scale, n_in) matrix of 1D bilinear interpolation, align_corners=False."""
    src = ((torch.arange(n_in * scale) + 0.5) / scale - 0.5).clamp(min=0)
    left = src.floor().long()
    right = (left + 1).clamp(max=n_in - 1)
    frac = src - left
    m = torch.zeros(n_in * scale, n_in)
    rows = torch.arange(n_in * scale)
    m.index_put_((rows, left), 1 - frac, accumulate=True)
    m.index_put_((rows, right), frac, accumulate=True)
    return m


x = torch.randn(1, 1, 6, 7)
nearest = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
assert_matches(
    "nearest upsampling by repetition", nearest, F.interpolate(x, scale_factor=2, mode="nearest")
)
bilinear = bilinear_matrix(6, 2) @ x @ bilinear_matrix(7, 2).T
assert_matches(
    "bilinear upsampling as two matrices",
    bilinear,
    F.interpolate(x, scale_factor=2, mode="bilinear"),
)

# %% [markdown]
# ### Transposed convolution and its checkerboard
# A **transposed convolution** is a learned upsampling: every input pixel *stamps* a copy of the
# kernel, scaled by its value, onto the output, at positions `stride` pixels apart, and the
# overlapping stamps add up. (Its name: it computes the transpose of a strided convolution's
# matrix.)


# %%
def conv_transpose2d_stamps(x, w, stride):
    """Transposed convolution of x (H, W) with kernel w (k, k), no padding: stamp and add."""
    k = w.shape[0]
    out = torch.zeros((x.shape[0] - 1) * stride + k, (x.shape[1] - 1) * stride + k)
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            out[i * stride : i * stride + k, j * stride : j * stride + k] += x[i, j] * w
    return out


x, w = torch.randn(5, 6), torch.randn(3, 3)
assert_matches(
    "transposed convolution by stamping",
    conv_transpose2d_stamps(x, w, 2),
    F.conv_transpose2d(x[None, None], w[None, None], stride=2)[0, 0],
)

# %% [markdown]
# When the kernel size is not a multiple of the stride, the stamps overlap unevenly: with a
# 3 x 3 kernel and stride 2, some output pixels get one contribution, some two and some four.
# Even on a constant image the output is a **checkerboard** (Odena et al. 2016, *Deconvolution
# and checkerboard artifacts*). A kernel of 4 with stride 2 overlaps evenly (learned weights can
# still make a fainter pattern), and so does the fix Odena et al. recommend: upsample (nearest or
# bilinear), then convolve. The receptive field
# sees it too: output pixels of the 3/2 transposed convolution read one *or* two input pixels.

# %%
flat = torch.ones(8, 8)
variants = {
    "transposed conv, kernel 3, stride 2": conv_transpose2d_stamps(flat, torch.ones(3, 3), 2),
    "transposed conv, kernel 4, stride 2": conv_transpose2d_stamps(flat, torch.ones(4, 4), 2),
    "nearest upsampling + 3x3 conv": F.conv2d(
        F.interpolate(flat[None, None], scale_factor=2), torch.ones(1, 1, 3, 3)
    )[0, 0],
}
fig, axes = plt.subplots(1, 3, figsize=(13, 4))
for ax, (title, out) in zip(axes, variants.items()):
    inner = out[3:-3, 3:-3]  # away from the borders
    im = ax.imshow(inner, cmap="viridis")
    ax.set_title(f"{title}\ninterior values {sorted(set(inner.unique().tolist()))}")
    ax.set_xlabel("output x")
    ax.set_ylabel("output y")
    plt.colorbar(im, ax=ax, fraction=0.046)
plt.suptitle("Upsampling a constant image: uneven overlap makes a checkerboard")
plt.tight_layout()
plt.show()
for k in (3, 4):
    rf = cu.models.receptive_field([nn.ConvTranspose2d(1, 1, k, stride=2, padding=1)])
    print(f"kernel {k}, stride 2: output pixels read between {rf.size_min} and {rf.size} inputs")

# %% [markdown]
# ### Residual blocks
# He et al. 2016 (*Deep residual learning*, ResNet) add the input of a block to its output:
# `y = relu(x + F(x))`. The block only has to learn a *correction* to the identity, and the
# gradient reaches early layers through the identity path undiminished, which makes very deep
# networks trainable. Setting the last normalisation's `gamma` to 0 makes a fresh block start as
# the identity.


# %%
class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input, then ReLU (He 2016); channels unchanged."""

    def __init__(self, channels):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        correction = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(x + correction)


block = ResidualBlock(8)
nn.init.zeros_(block.bn2.weight)
x = torch.rand(2, 8, 16, 16)  # non-negative, like the output of a previous ReLU
assert_matches("a residual block with gamma = 0 is the identity", block(x), x)

# %% [markdown]
# How much gradient reaches the input of 20 conv + ReLU layers (PyTorch's default initialisation,
# no normalisation), with and without skip connections:


# %%
def input_gradient_norm(residual, depth=20, seed=0):
    torch.manual_seed(seed)
    convs = [nn.Conv2d(8, 8, 3, padding=1) for _ in range(depth)]
    x = torch.randn(1, 8, 16, 16, requires_grad=True)
    h = x
    for conv in convs:
        h = h + F.relu(conv(h)) if residual else F.relu(conv(h))
    h.sum().backward()
    return x.grad.norm().item()


plain, residual = input_gradient_norm(False), input_gradient_norm(True)
print(f"|d output / d input|: plain {plain:.2e}, residual {residual:.2e}")
# Without normalisation the residual sums also grow layer after layer: one more reason why the
# blocks above include batch norm.
assert residual > 100 * plain, "the skip connections should carry far more gradient"

# %% [markdown]
# ### Dropout
# Dropout (Srivastava et al. 2014) zeroes each activation with probability `p` during training
# and scales the survivors by `1 / (1 - p)`, so that the expected value is unchanged; the network
# cannot rely on any single unit. In evaluation mode it does nothing. (PyTorch draws the mask
# with `bernoulli_(1 - p)`, so with the same seed our mask is PyTorch's.)

# %%
p = 0.3
x = torch.randn(4, 16, 16)
torch.manual_seed(1)
keep = torch.empty_like(x).bernoulli_(1 - p)
hand = x * keep / (1 - p)
torch.manual_seed(1)
dropout = nn.Dropout(p)
assert_matches("dropout in training mode", hand, dropout.train()(x))
assert_matches("dropout in evaluation mode is the identity", x, dropout.eval()(x))
print(
    f"fraction zeroed {(hand == 0).float().mean():.3f} (p = {p}); "
    f"mean of 10^6 ones after dropout: {F.dropout(torch.ones(10**6), p).mean():.4f}"
)

# %% [markdown]
# ## 6 · Losses
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
assert_matches(
    "binary cross-entropy from logits", stable_bce, F.binary_cross_entropy_with_logits(z, y)
)
assert_matches(
    "binary cross-entropy from probabilities",
    naive_bce,
    F.binary_cross_entropy(prob, y),
    atol=1e-4,
    rtol=1e-4,
)
far = torch.tensor([-120.0])
print(
    "a confident mistake (logit -120, target 1): naive log(sigmoid) gives",
    (-torch.log(torch.sigmoid(far))).item(),
    "; the stable form gives",
    F.binary_cross_entropy_with_logits(far, torch.ones(1)).item(),
)

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
# **Exercise 5.** Write the soft Dice loss from logits `(N, 1, H, W)` and a 0/1 target of the
# same shape: sigmoid, the sums over each image, the loss per image, then the mean over the batch.


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


# %% tags=["check"]
g = torch.from_numpy(crop_label > 0).float()[None, None]
hard_pred = torch.roll(g, shifts=3, dims=-1)  # the truth, shifted 3 pixels
big = 50.0  # logits so large that the sigmoid is 0 or 1: the soft Dice becomes the hard one
expected = 1 - cu.metrics.pixel_metrics(g[0, 0].numpy() > 0, hard_pred[0, 0].numpy() > 0)["dice"]
cu.checks.check_close(
    soft_dice_loss(big * (2 * hard_pred - 1), g, eps=0.0),
    expected,
    "soft Dice loss of a hard prediction (eps = 0) = 1 - Dice",
    atol=1e-5,
)
cu.checks.check_close(
    soft_dice_loss(big * (2 * g - 1), g), 0.0, "loss of a perfect prediction", atol=1e-5
)
batch = torch.cat([big * (2 * g - 1), -big * torch.ones_like(g)])  # perfect, then empty
cu.checks.check_close(
    soft_dice_loss(batch, torch.cat([g, g])),
    (0 + 1 - 1 / (g.sum() + 1)) / 2,
    "mean over the images of a batch",
    atol=1e-5,
)

# %%
assert_matches(
    "soft Dice on hard masks = 1 - Dice (cu.metrics.pixel_metrics)",
    soft_dice_loss(big * (2 * hard_pred - 1), g, eps=0.0),
    expected,
)

# %% [markdown]
# ### The class imbalance trap
# Nuclei cover a small part of a BBBC039 image. A network that predicts "background" everywhere
# is right on most pixels: its **pixel accuracy is high, and its Dice is 0**. With plain
# cross-entropy, such an empty prediction is a comfortable local minimum early in training.
# This is why we report Dice (or IoU) rather than accuracy, and why segmentation losses often add
# a Dice term or weight the rare class (notebook 03).

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
    print(
        f"{name:35s} {scores['accuracy']:9.3f} {scores['dice']:6.3f} {bce:7.3f} "
        f"{soft_dice_loss(z_full, y_full).item():15.3f}"
    )
empty_scores = cu.metrics.pixel_metrics(truth, empty)
assert empty_scores["accuracy"] > 0.75 and empty_scores["dice"] < 0.01

# %% [markdown]
# ## 7 · A tiny fully convolutional network for nuclei
# Now we put the blocks together: two conv-BN-ReLU layers, a 2 x 2 max pool, two more at half
# resolution, nearest upsampling, a conv, and a 1 x 1 conv to **one** output channel (a logit:
# nucleus or not). It has no dense layer, so it takes images of any size (divisible by 2): a
# *fully convolutional* network. It is a U-Net (Ronneberger 2015) without the skip connections
# and with one level instead of four; notebook 03 builds the real one.


# %%
def conv_bn_relu(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


def tiny_fcn(width=16):
    return nn.Sequential(
        conv_bn_relu(1, width),
        conv_bn_relu(width, width),
        nn.MaxPool2d(2),
        conv_bn_relu(width, 2 * width),
        conv_bn_relu(2 * width, 2 * width),
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv_bn_relu(2 * width, width),
        nn.Conv2d(width, 1, 1),
    )


torch.manual_seed(0)
model = tiny_fcn()
rf = cu.models.receptive_field(model)
print(
    f"{sum(p.numel() for p in model.parameters()):,} parameters; receptive field "
    f"{rf.size} x {rf.size} px"
)

# %% [markdown]
# BBBC039 nuclei are about 16 to 35 pixels across (median 29). A field of 16 pixels sees part of
# one nucleus: enough to tell a bright nucleus from the dark background by local brightness and
# texture, not enough to see where one nucleus ends and the next begins. The U-Net of notebook 03
# pools four times and sees 140 pixels or more.

# %% [markdown]
# Training data: random `PATCH x PATCH` patches of the training images, with the target
# `labels > 0` (nucleus or background) as a `(1, H, W)` float mask. The loss is binary
# cross-entropy plus our soft Dice loss (against the imbalance trap). First, the training loop
# written out, for one pass over the patches: forward, loss, backward, step.


# %%
def foreground(labels):
    return (labels > 0).astype(np.float32)[None]


val_images, val_labels = cu.data.load_split("bbbc039", "val", n=N_VAL)
train_set = cu.data.PatchDataset(
    train_images, train_labels, PATCH, length=PATCHES_PER_EPOCH, target_fn=foreground, seed=0
)
val_set = cu.data.PatchDataset(
    val_images, val_labels, PATCH, length=PATCHES_PER_EPOCH // 4, target_fn=foreground, seed=1
)
train_loader = torch.utils.data.DataLoader(train_set, batch_size=BATCH, shuffle=True)
val_loader = torch.utils.data.DataLoader(val_set, batch_size=BATCH)


def loss_fn(logits, target):
    return F.binary_cross_entropy_with_logits(logits, target) + soft_dice_loss(logits, target)


def dice_metric(logits, target):
    """Hard Dice of the thresholded prediction over the whole batch (a float)."""
    pred = (logits > 0).float()
    return ((2 * (pred * target).sum() + 1e-6) / (pred.sum() + target.sum() + 1e-6)).item()


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
# The same loop, with validation after every epoch, a history, checkpoints and mixed precision on
# a GPU, is `cu.train.fit`. We continue training the same model with it.

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
prob = torch.sigmoid(logit).numpy()
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
panels = [
    ("validation image", img[:h, :w], "gray"),
    ("true foreground", lab[:h, :w] > 0, "gray"),
    (f"predicted probability (Dice {val_dice[-1]:.3f})", prob, "magma"),
]
for ax, (title, shown, cmap) in zip(axes, panels):
    ax.imshow(shown, cmap=cmap, vmin=0, vmax=1)
    ax.set_title(title)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ### What the network computes: feature maps
# A *forward hook* records the output of a layer as the data passes through. The first block's
# channels resemble the fixed filters of section 1: smoothed brightness (nuclei bright, or
# inverted: background bright) and edges on one side of a nucleus. At half resolution, after
# three more convolutions, the channels respond to whole nuclei, their rims or the background.

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
fig, axes = plt.subplots(2, 8, figsize=(16, 4.6))
for row, (i, name) in enumerate(
    [(0, "conv block 1\n(full resolution)"), (4, "conv block 4\n(half)")]
):
    for c, ax in enumerate(axes[row]):
        ax.imshow(features[i][0, c].cpu(), cmap="viridis")
        ax.set_title(f"channel {c}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[row, 0].set_ylabel(name)
fig.suptitle("Feature maps (after ReLU) of the trained tiny FCN on a 128 x 128 validation crop")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Recap
# - A convolution is a weighted sum over a sliding window (a cross-correlation); padding, stride
#   and dilation set the output size `(n + 2p - d(k - 1) - 1) // s + 1`; GPUs compute it as one
#   matrix product.
# - The receptive field grows by `(k - 1) x jump` per layer and the jump multiplies by the stride;
#   the gradient of one output pixel shows it, and the *effective* field (Luo 2016) is smaller.
# - Batch norm uses batch statistics in training and running averages in evaluation
#   (Ioffe & Szegedy 2015): call `model.eval()` before predicting.
# - Binary segmentation: one logit channel, sigmoid, BCE; multi-class: C channels, softmax, CE.
# - Transposed convolutions with a kernel that is not a multiple of the stride make
#   checkerboards (Odena 2016); residual connections (He 2016) carry the gradient; dropout
#   (Srivastava 2014) acts only in training.
# - Accuracy is a trap on imbalanced masks; Dice measures the overlap, and the soft Dice loss
#   (Milletari 2016) trains for it directly.
#
# The asserts below fail if a hand-built block stops matching PyTorch or the tiny network stops
# learning.

# %%
print(f"{len(matched)} hand-built blocks matched PyTorch:")
for name in matched:
    print("  ✓", name)
assert len(matched) >= 30 and all(matched.values())
MIN_DICE = 0.90  # measured 0.974 in fast mode (CPU); full mode trains longer on more images
print(f"tiny FCN validation Dice {np.mean(val_dice):.3f} (minimum {MIN_DICE})")
assert np.mean(val_dice) > MIN_DICE, "the tiny FCN did not learn to segment nuclei"
