# %% [markdown]
# # 02 · CNN building blocks, built by hand
#
# **What you will learn**
# - a training primer: tensors, gradients by autograd, `nn.Module`, an optimiser step and the
#   learning rate;
# - what a 2D convolution computes, written with loops and as one matrix product (unfold), and
#   why deep learning's "convolution" is really a cross-correlation;
# - how padding, stride, dilation and channels change the output, and the output-size formula;
# - the **receptive field** of a stack of layers: computed with a formula, then measured with the
#   gradient of one output pixel;
# - batch normalisation (training vs evaluation statistics), layer and group normalisation;
# - activations and their gradients, and which output activation a segmentation network needs;
# - pooling, upsampling, transposed convolution (and its checkerboard), residual blocks, dropout.
#
# Every piece is first written by hand and then **asserted** equal to PyTorch's version: when an
# assert passes, you know exactly what the library does. Notebook 02b continues with the losses
# and puts these pieces together into a tiny network that learns to segment nuclei.
#
# **Papers:** {cite}`dumoulin2016convarithmetic`, {cite}`luo2016erf`, {cite}`ioffe2015batchnorm`,
# {cite}`he2016resnet`, {cite}`srivastava2014dropout`, {cite}`odena2016checkerboard`

# %%
import itertools

import matplotlib.pyplot as plt
import numpy as np
import scipy.ndimage as ndi
import scipy.signal
import torch
import torch.nn.functional as F
from torch import nn

import course_utils as cu

report = cu.env.check_env()
rng = cu.env.seed_everything(0)

# %% [markdown]
# The building blocks are small: they run on the CPU, with the same sizes in fast and full mode,
# so this notebook has no `cu.pick` settings (notebook 02b, which trains a network, has them).
#
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
train_images, _ = cu.data.load_split("bbbc039", "train", n=1)  # the first training image
image = train_images[0]
crop = image[200:328, 250:378]
cu.figures.blocks.show_crop(image, top=200, left=250, size=128, name="BBBC039 training image")
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
runs = {lr: train_one_kernel(lr) for lr in (0.3, 1.0)}  # lr -> (layer, losses)
lr_curves = {f"lr = {lr}": losses for lr, (_, losses) in runs.items()}
for name, losses in lr_curves.items():
    print(f"{name}: loss {losses[0]:.3f} at the start, {losses[-1]:.3g} after 100 steps")
cu.figures.blocks.show_learning_curves(lr_curves, "Learning one kernel", "MSE loss (log scale)")
plt.show()
learned = runs[0.3][0].weight.detach()[0, 0]
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
# notebook 02b, where we train a real network.
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
torch_flipped = torch_conv2d(small, sobel_x[::-1, ::-1].copy())  # F.conv2d, kernel flipped
assert_matches("true convolution = F.conv2d with flipped kernel", true_conv, torch_flipped)
opposite = np.allclose(true_conv, -conv2d_loops(small, sobel_x), atol=1e-5)
print("Sobel: convolution = -1 x cross-correlation:", opposite)

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
cu.figures.blocks.show_kernel_footprints()
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


grid = itertools.product((7, 8, 32), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2), (1, 2))  # n k s p d
cases = [(n, k, s, p, d) for n, k, s, p, d in grid if n + 2 * p >= d * (k - 1) + 1]
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
gauss_1d = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2).astype(np.float32)
kernels = {
    "Sobel x (vertical edges)": sobel_x,
    "Sobel y (horizontal edges)": sobel_x.T.copy(),
    "Laplacian (blobs, outlines)": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32),
    "box blur 5x5": np.full((5, 5), 1 / 25, np.float32),
    "Gaussian blur (sigma 1.5)": np.outer(gauss_1d, gauss_1d) / gauss_1d.sum() ** 2,
}
stack = torch.from_numpy(np.stack(list(kernels.values())[:3]))[:, None]  # 3 kernels, 1 layer
crop_t = torch.from_numpy(crop)[None, None]
edges = F.conv2d(crop_t, stack, padding="same")[0]  # one conv layer with 3 output channels
blur_kernels = list(kernels.values())[3:]
blurred = [
    F.conv2d(crop_t, torch.from_numpy(k)[None, None], padding="same")[0, 0] for k in blur_kernels
]
sobel_scipy = ndi.correlate(crop, sobel_x, mode="constant")
assert_matches("Sobel via F.conv2d = scipy.ndimage.correlate", edges[0], sobel_scipy)
cu.figures.blocks.show_filter_responses(crop, dict(zip(kernels, [*edges, *blurred])))
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
conv_pool_conv = my_receptive_field([conv3, pool2, conv3])[0]
cu.checks.check_equal(conv_pool_conv, 8, "size of conv 3x3, pool 2x2, conv 3x3")
stacks = {
    "two 3x3 convs": [conv3, conv3],
    "conv pool conv": [conv3, pool2, conv3],
    "padded, strided and dilated": [same3, (3, 2, 1, 1), (3, 1, 2, 2), pool2, (5, 1, 0, 3)],
    "original U-Net encoder": [conv3, conv3, pool2] * 4 + [conv3, conv3],
}
for name, layers in stacks.items():
    ours, library = my_receptive_field(layers), library_receptive_field(layers)
    cu.checks.check_equal(ours, library, f"(size, jump, start): {name}")

# %%
for name, layers in stacks.items():
    library = cu.models.receptive_field([("conv", *layer) for layer in layers])
    ours = my_receptive_field(layers)
    assert_matches(f"receptive field of {name}", ours, (library.size, library.jump, library.start))
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
cu.figures.blocks.show_effective_field(theory, erf)
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
running = torch.cat([bn.running_mean, bn.running_var])
assert_matches("batch norm, running statistics", torch.cat([my_mean, my_var]), running)
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
activation_curves = {}  # name: (f(z), f'(z) by autograd), for the figure
for name, (f, derivative) in activations.items():
    (autograd,) = torch.autograd.grad(f(z).sum(), z)
    assert_matches(f"derivative of {name}", derivative(z.detach()), autograd)
    activation_curves[name] = (f(z), autograd)
cu.figures.blocks.show_activations(z, activation_curves)
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
jacobian = torch.autograd.functional.jacobian(lambda t: torch.softmax(t, 0), v)
assert_matches("softmax Jacobian diag(s) - s s^T", torch.diag(s) - torch.outer(s, s), jacobian)
two = torch.randn(2, 2, 8, 8)
as_sigmoid = torch.sigmoid(two[:, 1] - two[:, 0])
assert_matches("2-class softmax = sigmoid of the logit difference", softmax(two)[:, 1], as_sigmoid)

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
assert_matches("nearest upsampling by repetition", nearest, F.interpolate(x, scale_factor=2))
bilinear = bilinear_matrix(6, 2) @ x @ bilinear_matrix(7, 2).T
torch_bilinear = F.interpolate(x, scale_factor=2, mode="bilinear")
assert_matches("bilinear upsampling as two matrices", bilinear, torch_bilinear)

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
theirs = F.conv_transpose2d(x[None, None], w[None, None], stride=2)[0, 0]
assert_matches("transposed convolution by stamping", conv_transpose2d_stamps(x, w, 2), theirs)

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
upsampled = F.interpolate(flat[None, None], scale_factor=2)  # nearest, 16 x 16
variants = {
    "transposed conv, kernel 3, stride 2": conv_transpose2d_stamps(flat, torch.ones(3, 3), 2),
    "transposed conv, kernel 4, stride 2": conv_transpose2d_stamps(flat, torch.ones(4, 4), 2),
    "nearest upsampling + 3x3 conv": F.conv2d(upsampled, torch.ones(1, 1, 3, 3))[0, 0],
}
cu.figures.blocks.show_checkerboards(variants, margin=3)  # the interiors, away from the borders
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
# ## Recap
# - Training is a loop: forward, loss, `zero_grad`, `backward` (autograd), `step`. Too large a
#   learning rate makes the loss explode.
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
#
# The asserts below fail if a hand-built block stops matching PyTorch. Next, notebook 02b: the
# losses, and a tiny network trained from these blocks.

# %%
print(f"{len(matched)} hand-built blocks matched PyTorch:")
for name in matched:
    print("  ✓", name)
assert len(matched) >= 26 and all(matched.values())
