# %% [markdown]
# # 01 · The classical baseline: threshold, distance transform, watershed
#
# **What you will learn**
# - how to read an intensity histogram and choose a threshold by hand;
# - Otsu's method (Otsu 1979), written from scratch and checked against scikit-image;
# - why connected components of a foreground mask merge touching nuclei, and how to count them;
# - the distance transform, local maxima with a minimum distance, and the marker-based
#   watershed (Beucher & Lantuéjoul 1979), driven by shape or by intensity;
# - how the minimum distance trades merges against splits, and how to choose it on held-out
#   images;
# - the object-level score of this classical pipeline on the BBBC039 test images: the number
#   every deep-learning method in this course has to beat.
#
# **Papers:** {cite}`otsu1979threshold`, {cite}`beucher1979watershed`,
# {cite}`vanderwalt2014skimage`, {cite}`caicedo2019bbbc039`

# %%

import matplotlib.pyplot as plt
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

import course_utils as cu

report = cu.env.check_env()
rng = cu.env.seed_everything(0)

# %% [markdown]
# Sizes come from `cu.pick(fast=..., full=...)`. The parameter search uses validation images;
# the test images are only used for the final score, so that the score is honest.

# %%
N_TEST = cu.pick(fast=6, full=48)  # BBBC039 test images for the final score
N_VAL = cu.pick(fast=4, full=50)  # validation images to choose the minimum distance
N_SYNTHETIC = cu.pick(fast=4, full=8)  # synthetic test images
MIN_DISTANCES = cu.pick(fast=[3, 5, 7, 10, 14, 20], full=[3, 4, 5, 6, 7, 8, 10, 12, 14, 17, 20])
print(f"mode {cu.get_mode()}: {N_TEST} test, {N_VAL} validation, {N_SYNTHETIC} synthetic images")

# %% [markdown]
# ## The data
# BBBC039 (Caicedo et al. 2019, from the Broad Bioimage Benchmark Collection, Ljosa et al. 2012):
# Hoechst-stained U2OS nuclei, with a hand-drawn instance label for every nucleus. Images are
# normalised by percentiles (notebook 00): background near 0, nuclei near 1.

# %%
test_images, test_labels = cu.data.load_split("bbbc039", "test", n=N_TEST)
val_images, val_labels = cu.data.load_split("bbbc039", "val", n=N_VAL)
image, truth = test_images[0], test_labels[0]
print(f"image {image.shape} {image.dtype}, {truth.max()} annotated nuclei")

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
axes[0].imshow(image, cmap="gray", vmin=0, vmax=1)
axes[0].set_title("BBBC039 test image (normalised)")
cu.plot.overlay(image, truth, ax=axes[1], title="ground-truth instance labels")
for ax in axes:
    ax.set_axis_on()
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The histogram and a manual threshold
# Fluorescent nuclei are brighter than the background, so the histogram has two populations: a
# tall peak of background pixels near 0 and a wider bump of nuclear pixels. A *threshold* `t`
# declares every pixel brighter than `t` foreground. Where to put it? Below, three manual choices.
#
# **Predict, then run.** Of the thresholds 0.05, 0.25 and 0.6, which one glues neighbouring
# nuclei together, and which one loses the dim nuclei?

# %%
counts, centers = cu.classical.intensity_histogram(image, nbins=256)
manual = [0.05, 0.25, 0.6]

fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
axes[0].bar(centers, counts, width=centers[1] - centers[0], color="tab:blue")
axes[0].set_yscale("log")
for t, colour in zip(manual, ["tab:orange", "tab:green", "tab:red"]):
    axes[0].axvline(t, color=colour, label=f"t = {t}")
axes[0].legend()
axes[0].set_title("Histogram (log scale)")
axes[0].set_xlabel("normalised intensity")
axes[0].set_ylabel("number of pixels")
for ax, t in zip(axes[1:], manual):
    ax.imshow(image > t, cmap="gray")
    ax.set_title(f"image > {t}: {np.mean(image > t):.1%} foreground")
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
plt.tight_layout()
plt.show()

# %% [markdown]
# <details><summary>Answer</summary>
#
# 0.05 is too low: it takes the noise and the faint halo around nuclei, and glues neighbours
# together. 0.6 is too high: it loses the dim nuclei and shrinks the others. 0.25 is close to
# what we want. A good threshold depends on the image, so we want a rule that reads it from
# the histogram of each image.
# </details>
#
# ## Otsu's method
# Otsu (1979) tries every cut of the histogram into a dark class 0 and a bright class 1 and keeps
# the one that makes the two classes most distinct. With `p` the histogram normalised to sum 1,
# for a cut after bin `k`:
#
# $$w_0 = \sum_{i \le k} p_i,\quad w_1 = \sum_{i > k} p_i,\quad
#   \mu_0 = \frac{\sum_{i \le k} p_i c_i}{w_0},\quad \mu_1 = \frac{\sum_{i > k} p_i c_i}{w_1},
#   \qquad \sigma_B^2(k) = w_0\, w_1\, (\mu_0 - \mu_1)^2,$$
#
# where `c_i` is the centre of bin `i`. Maximising this *between-class variance* is the same as
# minimising the variance within the two classes, because their sum is the total variance, which
# does not depend on `k`. The threshold is the centre of the last bin of class 0.
#
# **Exercise.** Compute $\sigma_B^2(k)$ for every cut `k = 0, ..., n - 2` (a cut after the last
# bin would leave class 1 empty). The plot after the check uses your function.
#
# <details><summary>Hint 1</summary>
#
# `np.cumsum` gives all the partial sums at once: with `p = counts / counts.sum()`,
# `np.cumsum(p)[:-1]` is $w_0$ for every cut, and $w_1 = 1 - w_0$.
# </details>
#
# <details><summary>Hint 2</summary>
#
# `np.cumsum(p * centers)[:-1]` is the numerator of $\mu_0$; the numerator of $\mu_1$ is the
# total `np.sum(p * centers)` minus it. Empty classes give 0 / 0: compute inside
# `with np.errstate(divide="ignore", invalid="ignore"):` and return `np.nan_to_num(variance)`.
# </details>
#
# <details><summary>Hint 3 (the answer, if you are stuck)</summary>
#
# ```python
# p = counts / counts.sum()
# w0 = np.cumsum(p)[:-1]
# w1 = 1.0 - w0
# mass0 = np.cumsum(p * centers)[:-1]
# with np.errstate(divide="ignore", invalid="ignore"):
#     variance = w0 * w1 * (mass0 / w0 - (np.sum(p * centers) - mass0) / w1) ** 2
# return np.nan_to_num(variance)
# ```
# </details>


# %% tags=["solution"]
def between_class_variance(counts, centers):
    """Otsu's between-class variance for a cut after each bin k = 0 .. n-2 (float64, (n-1,))."""
    # BEGIN SOLUTION
    p = counts / counts.sum()
    w0 = np.cumsum(p)[:-1]
    w1 = 1.0 - w0
    mass0 = np.cumsum(p * centers)[:-1]
    total = np.sum(p * centers)
    with np.errstate(divide="ignore", invalid="ignore"):  # empty classes give 0/0
        mu0 = mass0 / w0
        mu1 = (total - mass0) / w1
        variance = w0 * w1 * (mu0 - mu1) ** 2
    return np.nan_to_num(variance)
    # END SOLUTION


# Stuck? Open Hint 3 above and paste it into the TODO: the plot below uses this function.


def my_otsu(image, nbins=256):
    """Otsu threshold of a float image: centre of the bin after which the best cut lies."""
    counts, centers = cu.classical.intensity_histogram(image, nbins)
    return float(centers[np.argmax(between_class_variance(counts, centers))])


# %% tags=["check"]
variance = between_class_variance(counts, centers)
cu.checks.check_equal(np.shape(variance), (len(counts) - 1,), "the shape of your variance")
for i, img in enumerate(test_images[:3]):
    cu.checks.check_close(
        my_otsu(img), threshold_otsu(img), f"my_otsu(test image {i})", rtol=1e-5, atol=1e-6
    )
cu.checks.check_close(
    my_otsu(image), cu.classical.otsu_threshold(image), "my_otsu vs cu.classical.otsu_threshold"
)

# %% [markdown]
# Your function agrees with `skimage.filters.threshold_otsu` and with the course's
# `cu.classical.otsu_threshold`, which we use from now on. The curve shows why the choice is
# stable: the maximum is broad and sits in the valley between the two populations.
#
# **Why?** Otsu's method needs no parameter here. When would it fail? Think of an image with
# one small nucleus in a large empty field, or of nuclei of two very different brightnesses.

# %%
t_otsu = cu.classical.otsu_threshold(image)
fig, ax = plt.subplots(figsize=(8, 3.8))
ax.plot(centers[:-1], variance, color="tab:purple", label="between-class variance")
ax.axvline(t_otsu, color="black", linestyle="--", label=f"Otsu threshold {t_otsu:.3f}")
ax2 = ax.twinx()
ax2.bar(centers, counts, width=centers[1] - centers[0], color="tab:blue", alpha=0.3)
ax2.set_yscale("log")
ax2.set_ylabel("number of pixels (log, blue bars)")
ax.set_title("Otsu's criterion over all cuts")
ax.set_xlabel("threshold (normalised intensity)")
ax.set_ylabel("between-class variance")
ax.legend(loc="center right")
plt.tight_layout()
plt.show()

# %% [markdown]
# <details><summary>Answer</summary>
#
# Otsu's criterion $w_0 w_1 (\mu_0 - \mu_1)^2$ favours cuts into two classes of comparable
# weight. With one small nucleus in a large field, the nucleus weighs almost nothing and the
# best cut can fall inside the noisy background peak. With dim and bright nuclei, the best
# two-class cut may separate the bright nuclei from everything else and lose the dim ones
# (`skimage.filters.threshold_multiotsu` cuts into three or more classes). Look at the
# histogram before you trust a threshold.
# </details>

# %% [markdown]
# ## Connected components, and the touching-nuclei problem
# The foreground mask (smoothed a little first, with holes filled and specks removed) is cut into
# *connected components*: groups of foreground pixels that touch. Each component becomes one
# object. Nuclei that touch form one component, and one object where the truth has two or more.

# %%
mask = cu.classical.foreground_mask(image, "otsu", smooth_sigma=1.0, min_size=30)
components, n_components = ndi.label(mask)
print(f"{n_components} connected components for {truth.max()} annotated nuclei")

# %% [markdown]
# **Exercise.** Count the true nuclei that end up merged. Assign each true nucleus to the
# component covering more than half of its pixels (if there is one); a nucleus is *merged* when
# its component also has another true nucleus assigned to it. (The cells after the check use
# the library's `cu.classical.merge_split_counts`, so you can go on before yours passes.)
#
# <details><summary>Hint 1</summary>
#
# Loop over the true ids `1 .. truth.max()`. `components[truth == nucleus]` are the component
# ids under one nucleus; `np.bincount(...).argmax()` is the most frequent one.
# </details>
#
# <details><summary>Hint 2</summary>
#
# Keep the component only if it is not background (id > 0) and covers more than half of the
# nucleus. Collect these "owners" in a list; `np.bincount(owners)` counts the nuclei per
# component, and the merged nuclei are those in components with a count of 2 or more.
# </details>


# %% tags=["solution"]
def count_merged(truth, components):
    """Number of true nuclei whose (majority) component holds another true nucleus too."""
    # BEGIN SOLUTION
    owners = []
    for nucleus in range(1, truth.max() + 1):
        inside = components[truth == nucleus]
        if inside.size == 0:
            continue
        best = np.bincount(inside).argmax()
        if best > 0 and 2 * np.count_nonzero(inside == best) > inside.size:
            owners.append(best)
    nuclei_per_component = np.bincount(owners)
    return int(nuclei_per_component[nuclei_per_component >= 2].sum())
    # END SOLUTION


# Stuck? Run  count_merged = lambda t, c: cu.classical.merge_split_counts(t, c)["merged"]


# %% tags=["check"]
expected = cu.classical.merge_split_counts(truth, components)["merged"]
cu.checks.check_equal(count_merged(truth, components), expected, "count_merged(truth, components)")

# %%
cc_counts = cu.classical.merge_split_counts(truth, components)
print(
    f"connected components merge {cc_counts['merged']} of {cc_counts['n_true']} nuclei "
    f"({cc_counts['merged'] / cc_counts['n_true']:.0%}) into shared objects"
)
# look at a crop around the largest component: most likely several touching nuclei
largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
cy, cx = ndi.center_of_mass(components == largest)
y0 = int(np.clip(cy - 96, 0, image.shape[0] - 192))
x0 = int(np.clip(cx - 96, 0, image.shape[1] - 192))
crop = np.s_[y0 : y0 + 192, x0 : x0 + 192]
fig = cu.plot.show_grid(
    [image[crop], truth[crop], components[crop]],
    titles=["image (crop)", "ground truth", "connected components: touching nuclei merge"],
    ncols=3,
    figsize=(13, 4.6),
)
plt.show()

# %% [markdown]
# > **Checkpoint.** Both exercises pass (`✓ my_otsu ...`, `✓ count_merged ...`), and everyone can
# > say why connected components merge touching nuclei, and roughly how many they merge here.
#
# ## Distance transform and markers
# A nucleus is roughly convex: it is thick in the middle and thin where it touches a neighbour.
# The *Euclidean distance transform* gives every foreground pixel its distance to the nearest
# background pixel; two touching nuclei become two hills with a saddle between them. The hill
# tops, *local maxima* at least `min_distance` pixels apart, are our guesses for the nuclei
# centres: the **markers**.

# %%
distance = ndi.distance_transform_edt(mask)
peaks = peak_local_max(distance, min_distance=7, labels=components, exclude_border=False)
print(f"{len(peaks)} markers for {n_components} components")

fig, axes = plt.subplots(1, 2, figsize=(11, 5))
axes[0].imshow(mask[crop], cmap="gray")
axes[0].set_title("foreground mask (Otsu)")
im = axes[1].imshow(distance[crop], cmap="magma")
local = peaks - [y0, x0]
inside = np.all((local >= 0) & (local < 192), axis=1)
axes[1].plot(local[inside, 1], local[inside, 0], "c+", markersize=12, mew=2, label="markers")
axes[1].set_title("distance transform and its local maxima")
axes[1].legend(loc="lower right")
fig.colorbar(im, ax=axes[1], label="distance to background (pixels)")
for ax in axes:
    ax.set_xlabel("x (pixels, crop)")
    ax.set_ylabel("y (pixels, crop)")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The marker-based watershed
# Think of an image as a landscape and flood it from the markers: each marker's basin grows
# until it meets another basin, and the meeting line is the cut (Beucher & Lantuéjoul 1979; we use
# scikit-image's implementation, `skimage.segmentation.watershed`). Which landscape?
#
# - **shape-based**: the negative distance transform; basins meet at the necks of the mask;
# - **intensity-based**: the negative smoothed intensity; basins meet along the dim line
#   between two bright nuclei, which works when nuclei are brighter in the middle.
#
# Flooding is restricted to the foreground mask, so the watershed only *splits* components.

# %%
seeds = np.zeros(mask.shape, dtype=bool)
seeds[tuple(peaks.T)] = True
markers, n_markers = ndi.label(seeds)
by_shape = watershed(-distance, markers, mask=mask)
# the library does the same for both landscapes; here the intensity-based one
by_intensity = cu.classical.segment_classical(image, method="intensity", min_distance=7)
print(f"{n_markers} markers -> shape-based watershed: {by_shape.max()} objects")

# %%
rows = []
for name, seg in [("components", components), ("shape", by_shape), ("intensity", by_intensity)]:
    c = cu.classical.merge_split_counts(truth, seg)
    rows.append(f"{name}: {c['n_pred']} objects\n{c['merged']} merged, {c['split']} split")
fig = cu.plot.show_grid(
    [components[crop], by_shape[crop], by_intensity[crop]],
    titles=rows,
    ncols=3,
    figsize=(13, 5),
)
plt.show()

# %% [markdown]
# The watershed separates most touching pairs that connected components merged. It also makes the
# opposite mistake: an elongated or irregular nucleus has two distance maxima and is *split*.
# Both mistakes depend on `min_distance`.
#
# ## The minimum distance: merges against splits
# A small `min_distance` keeps many maxima (more splits); a large one keeps few (more merges).
# We measure both, and the F1 score of object matching at IoU 0.5 (an object counts as found when
# it overlaps a true nucleus with intersection over union at least 0.5; notebook 07 explains the
# metric). We choose on the **validation** images, not on the test images.
#
# **Predict, then run.** As `min_distance` grows from 3 to 20 pixels, which error grows: merges
# or splits? Where do you expect the best F1: near 3, near 20, or in between? (BBBC039 nuclei
# are about 16 to 35 pixels across.)

# %%
sweep = {"shape": [], "intensity": []}
for method, scores in sweep.items():
    for md in MIN_DISTANCES:
        preds = [
            cu.classical.segment_classical(x, method=method, min_distance=md) for x in val_images
        ]
        c = [cu.classical.merge_split_counts(y, p) for y, p in zip(val_labels, preds)]
        f1 = cu.metrics.matching_dataset(val_labels, preds, thresh=0.5).f1
        scores.append((sum(x["merged"] for x in c), sum(x["split"] for x in c), f1))
best_md = {m: MIN_DISTANCES[int(np.argmax([s[2] for s in sc]))] for m, sc in sweep.items()}
print("best min_distance on the validation images:", best_md)

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for method, style in [("shape", "-"), ("intensity", "--")]:
    merged, split, f1 = np.array(sweep[method]).T
    axes[0].plot(MIN_DISTANCES, merged, "o" + style, color="tab:red", label=f"merged ({method})")
    axes[0].plot(MIN_DISTANCES, split, "s" + style, color="tab:blue", label=f"split ({method})")
    axes[1].plot(MIN_DISTANCES, f1, "o" + style, label=method)
axes[0].set_title("Errors on the validation images")
axes[0].set_xlabel("min_distance (pixels)")
axes[0].set_ylabel("number of true nuclei")
axes[0].legend()
axes[1].set_title("F1 at IoU 0.5 on the validation images")
axes[1].set_xlabel("min_distance (pixels)")
axes[1].set_ylabel("F1")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# <details><summary>Answer</summary>
#
# Splits fall and merges rise. A small `min_distance` keeps every bump of the distance
# transform, so an elongated or irregular nucleus gets two markers (a split); a large one
# keeps only maxima far apart, so two touching nuclei, whose centres are about one diameter
# apart, can share one marker (a merge). F1 is best in between, near the nucleus radius.
# Near its top the curve is flat: a few validation images give a noisy choice (on all 50
# validation images the best is 10, see below).
# </details>
#
# > **Checkpoint.** Discuss the sweep: which `min_distance` would you choose, and why on the
# > validation images? Then try the sliders below.
#
# ## Try it yourself: threshold and minimum distance
# In a live Jupyter session the cell below shows sliders (ipywidgets) to move the threshold and
# `min_distance` and see merges and splits appear; on the website it draws the chosen values.


# %%
def show_segmentation(threshold=0.0, min_distance=7, method="shape"):
    """Segment the first test image with these parameters and draw it next to the truth."""
    t = threshold if threshold > 0 else "otsu"
    seg = cu.classical.segment_classical(
        image, threshold=t, min_distance=min_distance, method=method
    )
    c = cu.classical.merge_split_counts(truth, seg)
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    cu.plot.overlay(image[crop], truth[crop], ax=axes[0], title="ground truth (crop)")
    title = (
        f"t = {t if isinstance(t, str) else round(t, 2)}, min_distance = {min_distance}\n"
        f"whole image: {c['merged']} merged, {c['split']} split"
    )
    cu.plot.overlay(image[crop], seg[crop], ax=axes[1], title=title)
    fig.suptitle(f"{method}-based watershed on the first test image")
    plt.tight_layout()
    plt.show()


# %%
from ipywidgets import FloatSlider, IntSlider

# Sliders in a live notebook; one static figure with these defaults in CI and on the website.
cu.plot.interactive(
    show_segmentation,
    threshold=FloatSlider(0.0, min=0.0, max=1.0, step=0.02, description="t (0=Otsu)"),
    min_distance=IntSlider(best_md["shape"], min=1, max=30),
    method=["shape", "intensity"],
)

# %% [markdown]
# ## The same pipeline on synthetic nuclei
# The synthetic nuclei of the course are smaller (radius 6 to 11 pixels) than BBBC039's. The
# minimum distance chosen for BBBC039 is then too large: parameters tuned on one dataset do not
# carry over. This is a weakness a network can avoid by learning from examples.
#
# **Predict, then run.** Which will score better on the synthetic nuclei, `min_distance` 5 or
# the value chosen on BBBC039, and which error will the worse one make, merges or splits?

# %%
syn_images, syn_labels = cu.data.load_split("synthetic", "test", n=N_SYNTHETIC)
syn_f1 = {}
for md in sorted({best_md["shape"], 5}):
    preds = [cu.classical.segment_classical(x, min_distance=md) for x in syn_images]
    syn_f1[md] = cu.metrics.matching_dataset(syn_labels, preds, thresh=0.5).f1
    c = [cu.classical.merge_split_counts(y, p) for y, p in zip(syn_labels, preds)]
    print(
        f"synthetic, min_distance={md:2d}: F1 at IoU 0.5 = {syn_f1[md]:.3f}, "
        f"{sum(x['merged'] for x in c)} merged, {sum(x['split'] for x in c)} split"
    )

# %% [markdown]
# <details><summary>Answer</summary>
#
# `min_distance` 5. The BBBC039 value is larger than the radius of most synthetic nuclei, so two
# touching ones often get one marker: it merges.
# </details>

# %% [markdown]
# ## The baseline score on the BBBC039 test images
# The whole pipeline is one function of the course library, so that notebook 07b can compare it
# with the networks:
#
# ```python
# cu.classical.segment_classical(image, threshold="otsu", min_distance=10, method="shape",
#                                smooth_sigma=1.0, min_size=30)  # -> int32 labels
# cu.classical.baseline(image)  # the same, with the course's tuned settings
# ```
#
# The sweep above used a few validation images, so its choice is noisy. On all 50 validation
# images the best minimum distance is 10 (F1 0.874; 12 and 14 are within 0.01): that is the
# course's **classical baseline**, `cu.classical.BASELINE`, which every later notebook compares
# with (`cu.classical.baseline(image)`). We check that it is as good as the sweep's choice on
# our validation images, then score it on the test images it has never seen.
#
# **Why?** We score the test images anyway: why not choose `min_distance` on them directly?
#
# <details><summary>Answer</summary>
#
# A choice made by looking at the test images fits their peculiarities, so their score would be
# optimistic: it would no longer tell how the method does on images it has never seen. The
# test images are looked at once, at the end, with every choice already made. Notebook 02b
# returns to this: training, validation and test sets, and *leakage* between them.
# </details>

# %%
print("the course's baseline recipe:", cu.classical.BASELINE)
md = cu.classical.BASELINE["min_distance"]
baseline_val_f1 = cu.metrics.matching_dataset(
    val_labels, [cu.classical.baseline(x) for x in val_images], thresh=0.5
).f1
best_val_f1 = max(s[2] for s in sweep["shape"])
print(f"validation F1: baseline {baseline_val_f1:.3f}, best of the sweep {best_val_f1:.3f}")
test_preds = [cu.classical.baseline(x) for x in test_images]
test_cc = [ndi.label(cu.classical.foreground_mask(x, min_size=30))[0] for x in test_images]
classical_scores = cu.metrics.matching_dataset(test_labels, test_preds, thresh=0.5)
cc_scores = cu.metrics.matching_dataset(test_labels, test_cc, thresh=0.5)
ap = cu.metrics.average_precision(test_labels, test_preds, thresholds=[0.5, 0.75, 0.9])
print(f"classical pipeline (min_distance={md}) on {len(test_images)} test images:")
print(classical_scores)
print(f"connected components only: F1 at IoU 0.5 = {cc_scores.f1:.3f}")
print("AP (TP / (TP + FP + FN)) at IoU 0.5, 0.75, 0.9:", np.round(ap, 3))

# %%
fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
cu.plot.overlay(test_images[1], test_labels[1], ax=axes[0], title="test image 1: ground truth")
cu.plot.overlay(test_images[1], test_preds[1], ax=axes[1], title="test image 1: classical pipeline")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## Recap
# - The histogram of a fluorescence image has a background peak and a nuclear bump; Otsu's
#   threshold maximises the between-class variance and needs no parameter.
# - Connected components of the mask merge touching nuclei; we counted how many.
# - The distance transform turns touching nuclei into hills; its maxima, at least `min_distance`
#   apart, seed a marker-based watershed that splits them. On BBBC039 the shape-based version
#   scored better than the intensity-based one in our sweep.
# - `min_distance` trades merges against splits and depends on the nucleus size: chosen on
#   validation images, it does not transfer to smaller nuclei.
# - `cu.classical.segment_classical` is the baseline; its F1 at IoU 0.5 on the test images is
#   printed above. The networks of the next notebooks have to beat it; notebook 07b compares
#   them all with the same matching function.
#
# The checks below fail if the pipeline breaks.

# %%
assert np.isclose(my_otsu(image), threshold_otsu(image), rtol=1e-6)
assert np.isclose(cu.classical.otsu_threshold(image), threshold_otsu(image), rtol=1e-6)
assert cc_counts["merged"] > 0, "connected components should merge some touching nuclei"
assert classical_scores.f1 > 0.85, f"classical F1 {classical_scores.f1:.3f} is below 0.85"
assert classical_scores.f1 > cc_scores.f1 + 0.03, "the watershed should beat connected components"
assert 5 <= best_md["shape"] <= 20, f"unexpected best min_distance {best_md['shape']}"
assert baseline_val_f1 > best_val_f1 - 0.03, "the course's baseline should be near the best"
assert syn_f1[5] > 0.7, f"synthetic F1 at min_distance 5 is {syn_f1[5]:.3f}"
print(f"all checks passed: classical F1 at IoU 0.5 = {classical_scores.f1:.3f}")
