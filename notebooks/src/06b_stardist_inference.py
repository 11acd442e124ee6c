# %% [markdown]
# # 06b · StarDist: from predictions to nuclei
#
# This chapter follows notebook 06, which described nuclei by radial distances and an object
# probability, built StarDist's network and loss, and trained it. Here the network's outputs
# become nuclei, and we ask what limits the scores.
#
# **What you will learn**
# - prediction: thresholding, **non-maximum suppression** of overlapping polygons, rendering them
#   into a label image, and tuning both thresholds on the validation images;
# - the scores on the BBBC039 test images, next to what perfect outputs reach, and what really
#   limits them at strict IoU thresholds: the method, a convention or the training;
# - the 3-D version of StarDist (Weigert 2020).
#
# Nothing is trained here: the network is the one notebook 06 saved, if you ran it in this
# mode, otherwise the course's pretrained StarDist-style model (section "The network" says
# which one ran). The questions marked **Predict** or **Why?** have their answer hidden:
# answer them first, on paper or with a neighbour.
#
# **Papers:** {cite}`schmidt2018stardist`, {cite}`weigert2020stardist3d`

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import ndimage as ndi
from tqdm.auto import tqdm

import course_utils as cu

report = cu.env.check_env()

# %% [markdown]
# Sizes come from `cu.pick(fast=..., full=...)`: fast mode scores a few validation and test
# images on the CPU, full mode all of them. The method's record, `cu.methods.get("stardist")`,
# holds the prediction recipe that we rebuild by hand and compare with.

# %%
STARDIST = cu.methods.get("stardist")
N_VAL = cu.pick(fast=3, full=50)  # validation images for the threshold search
N_TEST = cu.pick(fast=4, full=48)  # test images for the final scores
PROB_GRID = cu.pick(
    fast=[0.4, 0.5, 0.6, 0.7], full=[round(p, 2) for p in np.arange(0.3, 0.8, 0.05)]
)
NMS_GRID = cu.pick(fast=[0.3, 0.4, 0.5], full=[0.3, 0.4, 0.5])
IOU_THRESHOLDS = [0.5, 0.6, 0.7, 0.8, 0.9]
device = cu.env.get_device()
print(f"mode {cu.get_mode()}: {N_VAL} validation / {N_TEST} test images, on {device}")

val_images, val_labels = cu.data.load_split("bbbc039", "val", n=N_VAL)
test_images, test_labels = cu.data.load_split("bbbc039", "test", n=N_TEST)

# %% [markdown]
# ## The network
# `cu.methods.load_notebook_model("stardist")` rebuilds the network that notebook 06 trained,
# from the checkpoint it saved in this mode (the file names the network's class and arguments),
# and returns `None` when there is none. Then we use the course's pretrained StarDist-style
# model, `cu.zoo.load("stardist")`: the same record in its larger size (32 base channels),
# trained for thousands of steps with generalist augmentation on the training images of three
# datasets (BBBC039, the DSB2018 images of many labs, Kromp's tissue sections): the zoo's
# *generalist*, which notebook 08 takes to other people's images.
# Its model card (`cu.zoo.card("stardist")`, also in `model.meta`) says how it was trained
# and which thresholds it was tuned to. We load the pretrained model in any case: section 2
# scores it next to notebook 06's network.

# %%
ZOO_CARD = cu.zoo.card("stardist")  # how it was trained, its thresholds and scores
zoo_model = cu.zoo.load("stardist").to(device)
ZOO_OPTIONS = dict(zoo_model.meta["postprocess"])  # prob_thresh and nms_thresh
print(
    f"zoo model: {ZOO_CARD['architecture']['network']} {zoo_model.config}, "
    f"{ZOO_CARD['steps']} steps in {ZOO_CARD['wall_time_s'] / 60:.0f} min on "
    f"{ZOO_CARD['device']}; thresholds {ZOO_OPTIONS}"
)
trained = cu.methods.load_notebook_model("stardist")
if trained is not None:
    model, NAME = trained.to(device).eval(), "notebook 06"
    about = f"{trained.meta.get('data', '?')}, mode {trained.meta.get('mode', '?')}"
    print(f"the network of this notebook: notebook 06's checkpoint ({about}), {model.config}")
else:
    model, NAME = zoo_model, "zoo model"
    print("the network of this notebook: the zoo model (notebook 06 saved none in this mode)")
N_RAYS, GRID = model.config["n_rays"], model.grid  # 32 rays on a grid of 2, as in notebook 06

# %% [markdown]
# The results below name the network by where it comes from: "notebook 06" or "zoo model".
# Every hand-built step is compared with `course_utils` and recorded here for the final recap.

# %%
verified = {}

# %% [markdown]
# ## 1 · From predictions to nuclei
# Prediction runs the network once on the whole image (reflect-padded to a multiple of
# `grid x 2**depth`, the padding cut off again) and then:
#
# 1. keeps the pixels whose probability exceeds `prob_thresh`: each proposes its polygon
#    (except those closer than `b = 2` output pixels to the image border; section 2 shows
#    what that costs);
# 2. sorts the candidates by probability and runs **greedy NMS**: the best polygon is kept, every
#    candidate that overlaps it by more than `nms_thresh` (intersection over the smaller area) is
#    deleted, and so on down the list;
# 3. paints the surviving polygons into a label image, the least probable first, so that the
#    most confident polygon owns the pixels where two overlap (`cu.postprocess.polygons_to_label`).
#
# `predict_stardist` below is the exact recipe; the record `cu.methods.get("stardist")`, which
# notebook 07b uses, holds the same one (checked in section 2).


# %%
def predict_maps(model, image):
    """Probability (H/g, W/g) and distances (H/g, W/g, n_rays), float32 numpy, of a normalised
    image (H, W) float32 (as `cu.data.load_split` returns it)."""
    multiple = model.grid * 2**model.depth
    h, w = image.shape
    padded = np.pad(image, ((0, -h % multiple), (0, -w % multiple)), mode="reflect")
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        logits, dist = model(torch.from_numpy(padded)[None, None].to(device))
    hg, wg = -(-h // model.grid), -(-w // model.grid)  # ceil: the output pixels of the image
    prob = torch.sigmoid(logits[0, 0, :hg, :wg].float()).cpu().numpy()
    dist = dist[0, :, :hg, :wg].float().permute(1, 2, 0).cpu().numpy()
    return prob, np.ascontiguousarray(dist)


def maps_to_labels(prob, dist, shape, prob_thresh, nms_thresh, grid, b=2):
    """Instance labels (int32, `shape`) from the predicted maps: threshold, NMS, render.
    Candidates closer than `b` output pixels to the image border are ignored (StarDist's
    default, 2)."""
    points, scores, dists = cu.postprocess.non_maximum_suppression(
        dist, prob, prob_thresh=prob_thresh, nms_thresh=nms_thresh, b=b, grid=(grid, grid)
    )
    return cu.postprocess.polygons_to_label(dists, points, shape, prob=scores)


def predict_stardist(model, image, prob_thresh, nms_thresh):
    """Instance labels (H, W) int32 of a normalised image (H, W) float32."""
    prob, dist = predict_maps(model, image)
    return maps_to_labels(prob, dist, image.shape, prob_thresh, nms_thresh, model.grid)


# %% [markdown]
# The three steps on a validation image, with the thresholds 0.5 and 0.4 for now:

# %%
val_maps = [predict_maps(model, img) for img in tqdm(val_images, desc="validation images")]
prob, dist = val_maps[0]
points, scores, dists = cu.postprocess.non_maximum_suppression(
    dist, prob, prob_thresh=0.5, nms_thresh=0.4, grid=(GRID, GRID)
)
labels_pred = cu.postprocess.polygons_to_label(dists, points, val_images[0].shape, prob=scores)
cu.figures.stardist_results.show_prediction_steps(
    val_images[0], prob, points, dists, labels_pred, grid=GRID, prob_thresh=0.5
)
plt.show()

# %% [markdown]
# **Why?** Every pixel above the threshold proposes a polygon, yet each nucleus ends up with
# one, drawn from near its centre. Why does the centre's polygon win the NMS, and not that of
# a pixel near the nucleus's border?
#
# <details><summary>Answer</summary>
#
# The NMS visits the candidates by decreasing probability, and the network learned to give
# central pixels the highest probability (its target, `edt_prob`, is the normalised distance
# to the background: notebook 06, section 4). The central polygon is visited first and kept.
# The poorer polygons of the border pixels lie mostly inside it, so their intersection with it
# is a large part of *their* (smaller) area, and they are deleted.
#
# </details>

# %% [markdown]
# ### Tuning the two thresholds
# Too low a `prob_thresh` lets border pixels propose poor polygons; too high a one loses faint
# nuclei. Too low an `nms_thresh` deletes touching nuclei; too high a one keeps duplicates. We
# pick both on the **validation** images by a small grid search, maximising the average
# precision at IoU 0.5 (the test images stay untouched until the end). The network ran once per
# image; only the cheap post-processing is repeated.

# %%
search = np.zeros((len(PROB_GRID), len(NMS_GRID)))
for a, pt in enumerate(tqdm(PROB_GRID, desc="prob_thresh")):
    for b, nt in enumerate(NMS_GRID):
        preds = [
            maps_to_labels(p, d, img.shape, pt, nt, GRID)
            for (p, d), img in zip(val_maps, val_images)
        ]
        search[a, b] = cu.metrics.matching_dataset(val_labels, preds, 0.5).accuracy
a, b = np.unravel_index(np.argmax(search), search.shape)
PROB_THRESH, NMS_THRESH = float(PROB_GRID[a]), float(NMS_GRID[b])
print(
    f"best on {N_VAL} validation images: prob_thresh {PROB_THRESH}, nms_thresh {NMS_THRESH}, "
    f"AP@0.5 {search[a, b]:.3f}; the zoo card's (BBBC039 + DSB2018 validation): {ZOO_OPTIONS}"
)
cu.figures.stardist_results.show_threshold_search(search, PROB_GRID, NMS_GRID)
plt.show()

# %% [markdown]
# **Why?** The scores we report are those on the test images. Why not tune the thresholds
# there, where they count?
#
# <details><summary>Answer</summary>
#
# Thresholds tuned on the test images are fitted to them: the score would be measured on the
# images used to choose it, and would promise more than the method gives on new images (the
# leakage of notebook 02b). Every choice (thresholds, checkpoint, distance weight) is made on
# validation images; the test images are used once, at the end.
#
# </details>

# %% [markdown]
# Move the sliders to see both thresholds at work on the first validation image (in the static
# website and in CI, the figure shows the tuned values).


# %%
def show_thresholds(prob_thresh=PROB_THRESH, nms_thresh=NMS_THRESH):
    pred = maps_to_labels(*val_maps[0], val_images[0].shape, prob_thresh, nms_thresh, GRID)
    cu.figures.stardist_results.show_threshold_choice(
        val_images[0], val_labels[0], pred, prob_thresh, nms_thresh
    )
    plt.show()


from ipywidgets import FloatSlider

cu.plot.interactive(
    show_thresholds,
    prob_thresh=FloatSlider(PROB_THRESH, min=0.05, max=0.95, step=0.05, description="prob"),
    nms_thresh=FloatSlider(NMS_THRESH, min=0.05, max=0.95, step=0.05, description="nms"),
)

# %% [markdown]
# ## 2 · Results on the test images
# Finally the held-out test images, with the tuned thresholds. Next to the network we score
# up to two references:
#
# - **the course's pretrained StarDist-style model** (when the network is notebook 06's; when
#   notebook 06 saved none, it *is* the network), with the thresholds of its card, which were
#   tuned on the whole validation split; its card, printed above, says how long it trained;
# - **the true labels** sent through the same pipeline (`star_dist` and `edt_prob` on the grid,
#   NMS, rendering): what a perfect network could reach with `n_rays` rays on this grid.

# %%
test_maps = [predict_maps(model, img) for img in tqdm(test_images, desc=NAME)]
if model is zoo_model:
    zoo_maps = test_maps
else:
    zoo_maps = [predict_maps(zoo_model, img) for img in tqdm(test_images, desc="zoo model")]


def round_trip(labels, grid=GRID, b=2):
    """labels -> (edt_prob, star_dist) on the grid -> NMS -> labels: the pipeline's upper bound."""
    prob = cu.targets.edt_prob(labels)[::grid, ::grid]
    dist = cu.targets.star_dist(labels, N_RAYS, grid=(grid, grid))
    return maps_to_labels(prob, dist, labels.shape, 0.5, 0.4, grid, b=b)


shapes = [img.shape for img in test_images]
curves = {
    NAME: [
        maps_to_labels(p, d, sh, PROB_THRESH, NMS_THRESH, GRID)
        for (p, d), sh in zip(test_maps, shapes)
    ]
}
if NAME != "zoo model":
    curves["zoo model"] = [
        maps_to_labels(
            p, d, sh, ZOO_OPTIONS["prob_thresh"], ZOO_OPTIONS["nms_thresh"], zoo_model.grid
        )
        for (p, d), sh in zip(zoo_maps, shapes)
    ]
curves["true polygons"] = [round_trip(lab) for lab in test_labels]
test_preds = curves[NAME]
test_stats = {
    k: cu.metrics.matching_dataset(test_labels, v, IOU_THRESHOLDS) for k, v in curves.items()
}
strict = pd.DataFrame(
    {k: [s.accuracy for s in v] for k, v in test_stats.items()},
    index=pd.Index(IOU_THRESHOLDS, name="IoU threshold"),
)
print(test_stats[NAME][0])
test_f1, test_ap = test_stats[NAME][0].f1, test_stats[NAME][0].accuracy
zoo_f1 = test_stats["zoo model"][0].f1
strict.round(3)


# %%
cu.figures.stardist_results.show_strict_iou(
    strict.to_dict("list"),
    IOU_THRESHOLDS,
    test_images[0],
    test_labels[0],
    {name: curves[name][0] for name in curves if name != "true polygons"},
    n_images=len(test_images),
)
plt.show()

# %% [markdown]
# The checkpoint's network and the record's recipe agree: our prediction equals what
# `cu.methods.get("stardist").segment` (notebook 07b's way to predict) returns.

# %%
first_pred = predict_stardist(model, test_images[0], PROB_THRESH, NMS_THRESH)
verified["predict_stardist = the record's segment"] = np.array_equal(
    first_pred,
    STARDIST.segment(model, test_images[0], prob_thresh=PROB_THRESH, nms_thresh=NMS_THRESH),
) and np.array_equal(first_pred, test_preds[0])

# %% [markdown]
# ### Why does the model fall at strict IoU thresholds?
# The true polygons lose little between IoU 0.5 and 0.9: 32-ray polygons describe BBBC039's
# nuclei well (notebook 06, section 3). The network falls much more, and a briefly trained
# one (notebook 06's) more steeply than the pretrained one. So the polygon representation is
# not what limits the network. Two questions:
#
# **Predict.** (1) Even the true polygons miss about 5% of the nuclei at IoU 0.5, where a
# round trip on the full grid (`grid=1`) misses almost none. Which nuclei do they miss? Look
# at where a grid of 2 and StarDist's NMS could lose a nucleus. (2) How precise must the rays
# be for an IoU of 0.9?
#
# Run the next two cells, then open the answer.

# %%
curves["true polygons, no border band"] = [round_trip(lab, b=0) for lab in test_labels]
border_band = cu.metrics.matching_dataset(
    test_labels, curves["true polygons, no border band"], IOU_THRESHOLDS
)
strict["true polygons, no border band"] = [s.accuracy for s in border_band]


def touches_border(labels):
    """Ids (1-D int array) of the objects that touch the image border."""
    edge = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.setdiff1d(np.unique(edge), [0])


missed_by_true = [
    np.setdiff1d(lab[lab > 0], lab[(lab > 0) & (pred > 0)])
    for lab, pred in zip(test_labels, curves["true polygons"])
]
n_missed = sum(len(m) for m in missed_by_true)
n_on_border = sum(
    len(np.intersect1d(m, touches_border(lab))) for m, lab in zip(missed_by_true, test_labels)
)
print(
    f"true polygons on grid {GRID}: {n_missed} nuclei without any polygon, {n_on_border} of "
    f"them touch the image border"
)
strict.round(3)

# %% [markdown]
# The second question needs the rays. For every nucleus that does not touch the border, the
# network's distances at the output pixel nearest its centre against the true distances from
# that pixel: their mean absolute error, and the mean true ray length (the nucleus's radius).
# The centre is the most central pixel, the maximum of the object probability (as in notebook
# 06).


# %%
def object_centres(labels):
    """(N, 2) int: the most central pixel (row, col) of each object 1..N (max of edt_prob)."""
    ids = np.arange(1, labels.max() + 1)
    centres = ndi.maximum_position(cu.targets.edt_prob(labels), labels, ids)
    return np.array(centres, dtype=int).reshape(-1, 2)


def centre_rays(maps, labels, true_dists, grid):
    """Per nucleus away from the border: (mean |predicted - true| ray, true mean ray, predicted
    mean ray), in pixels, at the output pixel nearest its most central pixel."""
    rows = []
    for (_, dist), lab, true in zip(maps, labels, true_dists):
        cut = set(touches_border(lab).tolist())
        at = (object_centres(lab) // grid) * grid  # the output pixel's position in the image
        for i, (r, c) in enumerate(at, start=1):
            if lab[r, c] == i and i not in cut:
                pred = dist[r // grid, c // grid]
                rows.append((np.abs(pred - true[r, c]).mean(), true[r, c].mean(), pred.mean()))
    return np.array(rows)


true_dists = [cu.targets.star_dist(lab, N_RAYS) for lab in test_labels]
ray_errors = {NAME: centre_rays(test_maps, test_labels, true_dists, GRID)}
if NAME != "zoo model":
    ray_errors["zoo model"] = centre_rays(zoo_maps, test_labels, true_dists, zoo_model.grid)
radius = float(np.median(ray_errors[NAME][:, 1]))
budget = radius * (1 - np.sqrt(0.9))  # every ray this much short: IoU (1 - d / r)^2 = 0.9
for name, r in ray_errors.items():
    print(
        f"{name:13s}: mean ray error {r[:, 0].mean():.2f} px over {len(r)} nuclei; "
        f"{np.mean(r[:, 0] < budget):.0%} of nuclei within the 0.9-IoU budget of {budget:.2f} px"
    )
cu.figures.stardist_results.show_ray_errors(ray_errors, budget)
plt.show()

# %% [markdown]
# <details><summary>Answer</summary>
#
# (1) Nuclei cut by the image border. The object probability (`edt_prob`) does not count the
# image border as background, so a cut nucleus is most "central" right at the border; and
# StarDist's NMS ignores candidates closer than `b = 2` *output* pixels to the border, which on
# a grid of 2 is a band of 4 image pixels (2 on the full grid). A nucleus cut so that its
# probability peaks inside that band proposes no polygon at all. Without the band (`b=0`) the
# true polygons find nearly every nucleus. The band is StarDist's default, meant to keep out
# candidates at the very edge, where the network sees padding instead of image; its cost is a
# few per cent of the nuclei, mostly slivers of nuclei that lie mostly outside the image.
#
# (2) A polygon whose every ray is $\delta$ too short has IoU $(1 - \delta / r)^2$ with the
# nucleus; for 0.9 at a radius of about 15 pixels, $\delta$ must stay below about 0.8 pixels,
# on every ray (errors of both signs on different rays cost even more). A nucleus whose rays
# miss that budget at its centre can hardly pass IoU 0.9, so the share of nuclei within the
# budget (printed above) caps the network's AP@0.9. Even the pretrained model misses the budget
# on some nuclei. The network trained briefly in notebook 06 misses it on most: a few hundred
# steps teach it *where* nuclei are, not their outline to a pixel. Its distance head started at
# the mean ray length (13 pixels), and small nuclei get rays that are too long (right panel,
# when it ran): the pretrained model's too, so that part is not only a matter of training (the
# closing checks count both). The grid adds to it: the network sees and predicts at
# half resolution, so a ray must be read from features of 2 x 2 pixels. The pretrained model
# (the same record with twice fast mode's channels, trained for thousands of steps instead of
# hundreds, on the same grid) is much closer: most of the fall is training, not the method.
#
# </details>
#
# **Small nuclei.** Notebook 07b finds that the StarDist-style model trained there recalls only
# a small fraction of the smallest tenth of the nuclei (well under a fifth in fast mode). The
# same two causes, measured here on the test images:

# %%
areas = np.concatenate([np.bincount(lab.ravel())[1:] for lab in test_labels])
SMALL = float(np.quantile(areas[areas > 0], 0.1))  # the smallest tenth, as in notebook 07b


def small_recall(truths, preds, limit=SMALL):
    """(recall at IoU 0.5 of the true nuclei below `limit` pixels, their number, how many touch
    the border)."""
    found = total = on_border = 0
    for t, p in zip(truths, preds):
        iou, ids, _ = cu.metrics.iou_matrix(t, p, return_ids=True)
        small = np.bincount(t.ravel())[ids] < limit
        total += int(small.sum())
        on_border += int(np.isin(ids[small], touches_border(t)).sum())
        found += int((iou[small].max(axis=1, initial=0) >= 0.5).sum())
    return found / max(total, 1), total, on_border


small = {name: small_recall(test_labels, preds)[0] for name, preds in curves.items()}
_, n_small, n_small_border = small_recall(test_labels, test_preds)
print(f"{n_small} nuclei below {SMALL:.0f} pixels, {n_small_border} of them cut by the border")
print("recall of the small nuclei:", {k: round(v, 2) for k, v in small.items()})

# %% [markdown]
# About half of the "small" nuclei are slivers cut by the image border: the border band loses
# them even with perfect outputs. Most of the others are genuinely tiny (a radius of 3-6
# pixels), covered by a handful of output pixels on the grid of 2, whose probability a
# network often keeps below the threshold (a briefly trained one more often), and whose rays it
# tends to overestimate. Small-object recall is where a longer training and a finer grid
# (`grid=1`) pay off most.
#
# > **Instructor checkpoint.** Ask: "the network scores well at IoU 0.5 and far lower at 0.9;
# > is StarDist bad at outlines?" The expected answer separates the method (the true polygons
# > barely fall), the post-processing convention (the border band) and the training (notebook
# > 06's briefly trained network against the pretrained model). This habit of asking *which
# > part* limits a score is the point of section 2.

# %% [markdown]
# ## 3 · StarDist in 3-D
# Weigert 2020 extended StarDist to volumes: each voxel predicts distances along rays spread
# evenly over the sphere (a golden spiral, `cu.targets.rays_golden_spiral`), and the shape is
# a **star-convex polyhedron** whose vertices are the ray ends, joined into triangles. The rest
# carries over: a probability per voxel, NMS on polyhedron overlap (far costlier than in 2-D),
# rendering into a label volume. Microscopy volumes are usually anisotropic (the z step is larger
# than the pixel size); StarDist 3D accounts for it in the rays and the grid.
#
# We check the 3-D distances on a synthetic ellipsoid, where the exact answer is known: from a
# point $p$ inside the ellipsoid with centre $c$ and semi-axes $a$, the ray $p + t u$ leaves it
# where $\sum_i ((p_i - c_i + t u_i) / a_i)^2 = 1$, a quadratic equation in $t$.

# %%
shape_3d, centre_3d, axes_3d = (40, 48, 56), np.array([20, 24, 28]), np.array([8.0, 12.0, 18.0])
grid_zyx = np.indices(shape_3d)
inside = (((grid_zyx - centre_3d[:, None, None, None]) / axes_3d[:, None, None, None]) ** 2).sum(0)
volume = (inside <= 1).astype(np.int32)
rays = cu.targets.rays_golden_spiral(96)  # as stardist.Rays_GoldenSpiral(96)
dist_3d = cu.targets.star_distances_3d(volume, rays)  # (Z, Y, X, 96), as star_dist3D


def ellipsoid_exit(point, rays, centre, semi_axes):
    """Exact distance from `point` along each unit ray (n, 3) to the ellipsoid's surface."""
    q, u = (point - centre) / semi_axes, rays / semi_axes
    a, b, c = (u * u).sum(1), 2 * (q * u).sum(1), (q * q).sum() - 1
    return (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)


points_3d = {"centre": centre_3d, "off-centre": centre_3d + np.array([3, -5, 8])}
exact_3d = {
    name: ellipsoid_exit(p, rays.astype(float), centre_3d, axes_3d) for name, p in points_3d.items()
}
errors_3d = {name: np.abs(dist_3d[tuple(p)] - exact_3d[name]) for name, p in points_3d.items()}
for name, e in errors_3d.items():
    print(f"from the {name}: error mean {e.mean():.2f}, max {e.max():.2f} voxels")
cu.figures.stardist_results.show_3d_rays(points_3d, exact_3d, dist_3d, rays)
plt.show()

# %% [markdown]
# The measured distances come in steps of one voxel, hence the staircase around the diagonal. They
# run to the first voxel *outside* the nucleus, as stardist computes them, so they lie on average
# about half a voxel beyond the exact surface, from the centre as from an off-centre voxel (the
# 2-D `star_dist` of notebook 06 subtracts that half voxel; stardist's 3-D code does not, and a
# network trained on these targets is read with the same convention).

# %% [markdown]
# ## Recap
# - Prediction: threshold the probability, sort, greedy polygon NMS (intersection over the
#   *smaller* area: more aggressive than IoU), render. Both thresholds are tuned on validation
#   images, never on the test images.
# - At strict IoU thresholds, what limits a network is the precision of its rays (an IoU of 0.9
#   needs errors below a pixel), not the polygons; the pretrained model against notebook 06's
#   briefly trained one shows how far training goes. Even perfect outputs lose the nuclei cut
#   by the image border to the border band of the NMS, on a grid of 2 a band of 4 pixels.
# - In 3-D the polygons become polyhedra with rays spread over the sphere (Weigert 2020).
#
# > **Instructor checkpoint (end of notebook).** Students should be able to explain, without
# > notes: what each of the two thresholds trades off, and which of "method, convention,
# > training" limits a score at IoU 0.9. Notebook 07b compares StarDist with the other methods
# > of the course.
#
# The asserts below fail if the hand-built prediction stops matching the record's, the pipeline
# stops reproducing true labels, the explanation of section 2 stops holding, the network does
# not find the nuclei, or the pretrained model is not the one its card describes.

# %%
print(f"network: {NAME}; hand-built steps that matched course_utils ({len(verified)}):")
for name in verified:
    print("  ✓", name)
assert verified and all(verified.values()), verified

round_trip_f1 = cu.metrics.matching(test_labels[0], round_trip(test_labels[0], grid=1)).f1
print(f"round trip labels -> star_dist -> NMS -> labels: F1@0.5 {round_trip_f1:.3f} (min 0.95)")
assert round_trip_f1 >= 0.95, "the StarDist pipeline no longer reproduces true labels"

error_3d = np.concatenate(list(errors_3d.values()))
print(
    f"3-D distances vs the exact ellipsoid: mean error {error_3d.mean():.2f} voxels (max 0.75), "
    f"largest {error_3d.max():.2f} (max 2)"
)
assert error_3d.mean() < 0.75 and error_3d.max() < 2
# ... and they run to the first voxel outside: on average about half a voxel beyond the surface.
beyond = np.mean([dist_3d[tuple(p)] - exact_3d[name] for name, p in points_3d.items()])
print(f"on average {beyond:.2f} voxels beyond the exact surface (between 0.25 and 0.75)")
assert 0.25 < beyond < 0.75

# %%
# The explanation of section 2 holds: the border band costs the true polygons nuclei, the true
# polygons barely fall between IoU 0.5 and 0.9 while the network falls further, and the
# pretrained model's rays are more precise than those of notebook 06's briefly trained network.
band_ap = strict.loc[0.5, "true polygons, no border band"]
print(
    f"true polygons AP@0.5: {strict.loc[0.5, 'true polygons']:.3f} with the border band, "
    f"{band_ap:.3f} without"
)
# Nearly every nucleus the true polygons miss touches the image border (a share: the dry run of
# full mode, 48 images, missed 204 with 194 on the border; fast mode 21 with 20).
assert band_ap > strict.loc[0.5, "true polygons"] + 0.02 and n_on_border >= 0.9 * n_missed
fall = strict.loc[0.5] - strict.loc[0.9]
print(f"AP@0.5 - AP@0.9: {fall.round(3).to_dict()}")
assert fall["true polygons"] < 0.05
# Claims about a trained network: a dry run of full mode (COURSE_DRYRUN=1) reports them unchecked.
cu.checks.check_result(fall[NAME] > fall["true polygons"] + 0.1, f"{NAME} falls further")
ray_error = {k: float(r[:, 0].mean()) for k, r in ray_errors.items()}
print(f"mean ray error (px): {ray_error}; AP@0.9: {strict.loc[0.9].round(3).to_dict()}")
within = {k: float(np.mean(r[:, 0] < budget)) for k, r in ray_errors.items()}
print(f"share of nuclei within the 0.9-IoU budget: {within}")
assert all(strict.loc[0.9, k] <= within[k] + 0.05 for k in within) and within["zoo model"] < 0.95
if NAME != "zoo model":
    cu.checks.check_result(ray_error["zoo model"] < ray_error[NAME], "the zoo's rays are closer")
    cu.checks.check_result(
        strict.loc[0.9, "zoo model"] > strict.loc[0.9, NAME], "the zoo model wins at IoU 0.9"
    )
assert n_small_border >= n_small / 3
cu.checks.check_result(small[NAME] < small["true polygons"], "small nuclei cost the network")
# Small nuclei get rays that are too long (the right panel of the ray errors).
tiny = ray_errors[NAME][:, 1] < 5  # a mean true ray under 5 pixels, away from the border
too_long = float(np.mean(ray_errors[NAME][tiny, 2] > ray_errors[NAME][tiny, 1]))
print(f"{tiny.sum()} nuclei with a mean ray under 5 px: rays too long on {too_long:.0%}")
cu.checks.check_result(too_long > 0.5, "the network's rays are too long on small nuclei")
tiny_zoo = ray_errors["zoo model"][:, 1] < 5  # ... and the pretrained model's, too
too_long_zoo = float(
    np.mean(ray_errors["zoo model"][tiny_zoo, 2] > ray_errors["zoo model"][tiny_zoo, 1])
)
print(f"zoo model: rays too long on {too_long_zoo:.0%} of the same small nuclei")
assert too_long_zoo > 0.5

# The zoo model scores what its card says it does (a broken or mismatched file would not).
print(
    f"zoo model: test F1@0.5 {zoo_f1:.3f} (min 0.8); card (all 48 test images) {ZOO_CARD['test']}"
)
assert zoo_f1 > 0.8, "the zoo's StarDist model does not find the nuclei: rebuild it (make zoo)"

# Measured in fast mode on the CPU, 4 test images: notebook 06's network F1 0.877, AP 0.781;
# the zoo model F1 0.953, AP 0.909 (its card, on all 48 test images: F1 0.947, AP 0.899).
MIN_TEST_F1, MIN_TEST_AP = 0.75, 0.6
print(f"test F1@0.5 {test_f1:.3f} (min {MIN_TEST_F1}), AP@0.5 {test_ap:.3f} (min {MIN_TEST_AP})")
cu.checks.check_result(test_f1 > MIN_TEST_F1 and test_ap > MIN_TEST_AP, "the network finds nuclei")
