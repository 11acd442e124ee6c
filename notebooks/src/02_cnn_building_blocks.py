# %% [markdown]
# # 02 · CNN building blocks, built by hand
#
# **What you will learn**
# - a training primer: tensors, gradients by autograd, `nn.Module`, an optimiser step and the
#   learning rate; later, `DataLoader`, training / validation / test sets and leakage, and what
#   overfitting looks like in the training and validation curves;
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
# - how these pieces make a tiny fully convolutional network that segments nuclei, and how to
#   read its training curves.
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
OVERFIT_STEPS = 200  # the deliberate overfitting run of section 8: two crops, a few seconds
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
# ## 0 · A training primer: tensors, gradients, modules and one step
# **Why first?** A network is a function with many adjustable numbers, its *parameters* (for
# example the weights of its kernels). *Training* nudges them, step by step, so that the
# network's output on examples gets closer to the target we give. PyTorch provides four tools
# for that, and every notebook from here on uses them:
#
# 1. **tensors**: arrays like numpy's, which can also live on a GPU and remember how they were
#    computed;
# 2. **autograd**: computes the gradient of one number (the *loss*, how wrong we are) with
#    respect to every parameter;
# 3. **modules** (`nn.Module`): hold parameters and compute an output from an input;
# 4. **optimisers**: move every parameter a small step against its gradient.
#
# ### Tensors
# PyTorch wants images as tensors of shape `(N, C, H, W)`: a batch of `N` images with `C`
# channels each. Our grey crop is one image with one channel.

# %%
t = torch.from_numpy(crop)[None, None]  # numpy (H, W) -> tensor (1, 1, H, W), no copy
print(f"tensor of shape {tuple(t.shape)}, dtype {t.dtype}, on {t.device}")
print(f"mean brightness {t.mean().item():.3f}; back to numpy: {type(t[0, 0].numpy()).__name__}")

# %% [markdown]
# ### Gradients by autograd
# A tensor made with `requires_grad=True` records every operation done with it. `.backward()`
# on a result walks back through that record (the chain rule) and stores d result / d tensor
# in the tensor's `.grad`.
#
# **Predict, then run.** For $L(w) = (3w - 12)^2$ at $w = 2$, what is $dL/dw$? If we move $w$
# by $-0.01\, dL/dw$, does $L$ go up or down?

# %%
w = torch.tensor(2.0, requires_grad=True)
loss = (3 * w - 12) ** 2
loss.backward()
print(f"L = {loss.item():.1f}, dL/dw = {w.grad.item():.1f}")
with torch.no_grad():  # the step itself is not part of the function we differentiate
    w -= 0.01 * w.grad
print(f"one step against the gradient: w = {w.item():.2f}, L = {((3 * w - 12) ** 2).item():.1f}")

# %% [markdown]
# <details><summary>Answer</summary>
#
# $dL/dw = 2\,(3w - 12) \cdot 3 = -36$ at $w = 2$. The gradient is negative, so a larger $w$
# lowers $L$: the step moves $w$ to 2.36 and $L$ falls from 36 to about 24. That is all
# *gradient descent* does, for millions of parameters at once.
# </details>
#
# ### A module, a loss, an optimiser: the training loop
# An `nn.Module` holds parameters, and calling it computes its output. The smallest useful one
# is a single 3 x 3 convolution (section 1 explains what it computes). We show it examples,
# random images and the same images filtered by an edge kernel, and let it find that kernel.
# The loop is four lines, and it is the same in every training of this course.

# %%
edge_kernel = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])  # the Sobel kernel (section 1)
examples = torch.rand(8, 1, 32, 32, generator=torch.Generator().manual_seed(0))  # 8 images
targets = F.conv2d(examples, edge_kernel[None, None], padding=1)  # the outputs we want


def train_one_kernel(lr, steps=100):
    """Fit a fresh 3x3 convolution to (examples, targets) with SGD: (layer, losses)."""
    torch.manual_seed(0)
    layer = nn.Conv2d(1, 1, kernel_size=3, padding=1, bias=False)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(layer(examples), targets)  # 1. forward: how wrong are we?
        optimizer.zero_grad()  # 2. clear the gradients of the previous step
        loss.backward()  # 3. autograd: d loss / d every parameter
        optimizer.step()  # 4. move every parameter a little against its gradient
        losses.append(loss.item())
    return layer, losses


print(nn.Conv2d(1, 1, kernel_size=3, padding=1, bias=False))
print("its parameters:", [tuple(p.shape) for p in nn.Conv2d(1, 1, 3, bias=False).parameters()])

# %% [markdown]
# **Predict, then run.** The learning rate `lr` is the size of the steps. We train once with
# `lr = 0.3` and once with `lr = 1.0`. Which one finds the kernel faster?

# %%
fig, ax = plt.subplots(figsize=(7, 3.6))
for lr in (0.3, 1.0):
    layer, losses = train_one_kernel(lr)
    print(f"lr {lr}: loss {losses[0]:.3f} at the start, {losses[-1]:.3g} after 100 steps")
    ax.plot(np.arange(1, 101), losses, label=f"lr = {lr}")
    if lr == 0.3:
        learned = layer.weight.detach()[0, 0]
ax.set(yscale="log", xlabel="step", ylabel="MSE loss (log scale)", title="Learning one kernel")
ax.legend()
plt.show()
print("learned kernel (lr 0.3):\n", learned.numpy().round(3))
assert_matches("a conv layer learns the edge kernel from examples", learned, edge_kernel, atol=0.02)

# %% [markdown]
# <details><summary>Answer</summary>
#
# `lr = 0.3` finds the kernel: the loss falls by five orders of magnitude. `lr = 1.0` is too
# large: each step jumps past the minimum, further than where it started, and the loss explodes
# to infinity (then NaN, "not a number"). When a training loss becomes NaN, lower the learning
# rate first.
# </details>
#
# **Why?** What would go wrong without `optimizer.zero_grad()`?
#
# <details><summary>Answer</summary>
#
# `.backward()` *adds* the new gradient to `.grad`. Without clearing it, every step would use
# the sum of all the gradients so far, and the steps would grow and grow.
# </details>
#
# Part 2 of this primer (data loaders, training and validation curves, overfitting) comes in
# section 7, where we train a real network.
#
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
#
# <details><summary>Hint 1</summary>
#
# `out[i, j]` uses the window `x[i : i + kh, j : j + kw]`, which has the kernel's shape.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Multiply the window by `w` element by element and add everything up: `np.sum(window * w)`.
# </details>


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


# Stuck? Run  conv2d_loops = torch_conv2d  (PyTorch's answer, defined in the next cell).


# %% tags=["check"]
def torch_conv2d(x, w):
    """PyTorch's valid cross-correlation of x (H, W) with w (kh, kw), as numpy."""
    return F.conv2d(torch.as_tensor(x)[None, None], torch.as_tensor(w)[None, None])[0, 0].numpy()


small = crop[:32, :32]
w_random = rng.standard_normal((3, 5)).astype(np.float32)  # not square, so rows/cols can't swap
reference = torch_conv2d(small, w_random)
cu.checks.check_close(conv2d_loops(small, w_random), reference, "conv2d_loops", atol=1e-5)

# %%
assert_matches("conv2d with loops", conv2d_loops(small, w_random), reference)

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
# number of output pixels along one axis. The convolution of the next section uses it.
#
# <details><summary>Hint 1</summary>
#
# With stride 1 the answer is the number of positions, `n + 2p - d (k - 1)`. With stride `s`
# we keep positions 0, s, 2s, ...: how many of them fit?
# </details>
#
# <details><summary>Hint 2</summary>
#
# `m` positions keep `(m - 1) // s + 1` of them (the first, and one per full stride after it).
# </details>


# %% tags=["solution"]
def conv_output_size(n, kernel, stride=1, padding=0, dilation=1):
    """Output length of a convolution or pooling along one axis of length `n` (an int)."""
    # BEGIN SOLUTION
    return (n + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    # END SOLUTION


# Stuck? Run  conv_output_size = torch_output_size  (PyTorch's answer, defined in the next cell).


# %% tags=["check"]
def torch_output_size(n, kernel, stride=1, padding=0, dilation=1):
    """The output length PyTorch's convolution gives: the reference for your formula."""
    x, w = torch.zeros(1, 1, n), torch.zeros(1, 1, kernel)
    return F.conv1d(x, w, stride=stride, padding=padding, dilation=dilation).shape[-1]


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
theirs = [torch_output_size(n, k, s, p, d) for n, k, s, p, d in cases]
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

# %%
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
# > **Checkpoint.** Exercises 1 and 2 pass, and everyone can say what a 3 x 3 convolution with
# > padding 1 and stride 2 does to a 128 x 128 image (and why its output is 64 x 64).
#
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
# layers (a pooling layer is one too). The next cells use it.
#
# <details><summary>Hint 1</summary>
#
# One loop over the layers, `for k, s, p, d in layers:`, and the four update lines of the
# formula in that order: `k_eff` first, `jump` last (the size and start use the old jump).
# </details>
#
# <details><summary>Hint 2</summary>
#
# `size += (k_eff - 1) * jump` and `start += ((k_eff - 1) / 2 - p) * jump`, then
# `jump *= s`.
# </details>


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


# Stuck? Run  my_receptive_field = library_receptive_field  (defined in the next cell).


# %% tags=["check"]
def library_receptive_field(layers):
    """(size, jump, start) from the course library, cu.models.receptive_field."""
    field = cu.models.receptive_field([("conv", *layer) for layer in layers])
    return field.size, field.jump, field.start


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
    cu.checks.check_equal(
        my_receptive_field(layers), library_receptive_field(layers), f"(size, jump, start): {name}"
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
#
# <details><summary>Hint 1</summary>
#
# The statistics are per channel: `x.mean(dim=(0, 2, 3))` and
# `x.var(dim=(0, 2, 3), unbiased=False)` have shape `(C,)`. Reshape them (and `gamma`, `beta`)
# to `(1, C, 1, 1)` with `[None, :, None, None]` so that they broadcast over `x`.
# </details>
#
# <details><summary>Hint 2</summary>
#
# In place: `running_mean.mul_(1 - momentum).add_(momentum * mean)`. For the running variance,
# use the unbiased one: multiply the biased variance by `n / (n - 1)`, with `n` the number of
# values per channel, `x.numel() // x.shape[1]`.
# </details>


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


# Stuck? Run  batchnorm_forward = torch_batchnorm  (PyTorch's version, defined in the next cell).


# %% tags=["check"]
def torch_batchnorm(x, gamma, beta, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """PyTorch's batch norm with the arguments of batchnorm_forward."""
    return F.batch_norm(x, running_mean, running_var, gamma, beta, training, momentum, eps)


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
# > **Checkpoint.** Exercises 3 and 4 pass. Ask: why must you call `model.eval()` before
# > predicting with a network that has batch norm?
#
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
# The tiny network of section 7 trains with it.
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


# Stuck? Open Hint 3 above and paste it into the TODO: section 7 trains with this loss.


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
    print(
        f"{name:35s} {scores['accuracy']:9.3f} {scores['dice']:6.3f} {bce:7.3f} "
        f"{soft_dice_loss(z_full, y_full).item():15.3f}"
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
# > **Checkpoint.** Exercise 5 passes. Ask: which output channel, activation and loss would you
# > use to segment nuclei into background, interior and boundary?

# %% [markdown]
# ## 7 · A tiny fully convolutional network for nuclei
# Now we put the blocks together: two conv-BN-ReLU layers, a 2 x 2 max pool, two more at half
# resolution, nearest upsampling, a conv, and a 1 x 1 conv to **one** output channel (a logit:
# nucleus or not). It has no dense layer, so it takes images of any size (divisible by 2): a
# *fully convolutional* network. It is a U-Net (Ronneberger 2015) without the skip connections
# and with one level instead of four; notebook 03 builds the real one.


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
print(
    f"{sum(p.numel() for p in model.parameters()):,} parameters; receptive field "
    f"{rf.size} x {rf.size} px"
)

# %% [markdown]
# BBBC039 nuclei are about 16 to 35 pixels across (median 29). A field of 16 pixels sees part of
# one nucleus: enough to tell a bright nucleus from the dark background by local brightness and
# texture, not enough to see where one nucleus ends and the next begins. The U-Net of notebook
# 03 pools more often. Its contracting path (section 2's "original U-Net encoder") sees:

# %%
for depth, where in ((3, "fast mode"), (4, "full mode, as in the paper")):
    encoder = [conv3, conv3, pool2] * depth + [conv3, conv3]
    field = cu.models.receptive_field([("conv", *layer) for layer in encoder])
    print(f"depth {depth} ({where}): the bottleneck sees {field.size} x {field.size} px")

# %% [markdown]
# So "the U-Net's bottleneck sees 140 pixels" holds for the paper's depth 4 (notebook 03's full
# mode); the depth-3 U-Net of fast mode sees 68, a little more than two nuclei. (An output
# pixel of the whole network sees more, as the decoder's convolutions add to the field.)
#
# ## 8 · Training a network (primer, part 2)
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
tiny_loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(*overfit_sets["training (2 crops)"]), batch_size=2, shuffle=True
)
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
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for name, curve in curves.items():
    axes[0].plot(steps_measured, curve["loss"], marker=".", label=name)
    axes[1].plot(steps_measured, curve["dice"], marker=".", label=name)
axes[0].set(title="Loss (BCE)", xlabel="training step", ylabel="loss", yscale="log")
axes[1].set(title="Dice of the thresholded prediction", xlabel="training step", ylabel="Dice")
axes[1].legend(loc="lower right")
plt.tight_layout()
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
# - Training is a loop: forward, loss, `zero_grad`, `backward` (autograd), `step`. Too large a
#   learning rate makes the loss explode.
# - Training, validation and test sets answer different questions; choices are made on the
#   validation set only, and overlapping sets (leakage) hide overfitting. Overfitting shows as a
#   validation loss that rises while the training loss keeps falling.
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
#   (Milletari 2016) trains for it directly. The empty prediction is no minimum of the
#   cross-entropy, but class imbalance gives an early all-background phase (notebook 03).
#
# The asserts below fail if a hand-built block stops matching PyTorch or the tiny network stops
# learning.

# %%
print(f"{len(matched)} hand-built blocks matched PyTorch:")
for name in matched:
    print("  ✓", name)
assert len(matched) >= 30 and all(matched.values())
train_curve, honest, leaky = (curves[name]["loss"] for name in curves)
assert train_curve[-1] < 0.01, "the overfitting run should learn its two crops by heart"
assert honest[-1] > 2 * min(honest), "the validation loss should rise again while overfitting"
assert leaky[-1] < honest[-1], "the leaky validation should look better than the honest one"
MIN_DICE = 0.90  # measured 0.974 in fast mode (CPU); full mode trains longer on more images
print(f"tiny FCN validation Dice {np.mean(val_dice):.3f} (minimum {MIN_DICE})")
assert np.mean(val_dice) > MIN_DICE, "the tiny FCN did not learn to segment nuclei"
