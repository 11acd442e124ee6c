"""Volumes: the synthetic stacks, the GoNuclear crops, 3-D targets, crops, prediction, baseline."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from course_utils import volumes as vol
from course_utils.data import (
    DataUnavailableError,
    load_volumes,
    read_h5_volume,
    synthetic_nuclei_3d,
)
from course_utils.models.unet3d import StarDist3DNet, UNet3D, memory_per_sample, pooling_plan
from course_utils.targets import rays_golden_spiral
from course_utils.volumes.baseline import watershed_3d
from course_utils.volumes.patches import VolumePatches
from course_utils.volumes.predict import classes_to_labels_3d, predict_volume
from course_utils.volumes.targets import boundary_classes_3d, edt_prob_3d, stardist3d_targets


def _ball(shape=(20, 30, 30), centre=(10, 15, 15), radius=6, anisotropy=1.0):
    zz, yy, xx = np.indices(shape)
    r2 = ((zz - centre[0]) * anisotropy) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2
    return (r2 <= radius**2).astype(np.int32)


@pytest.fixture(scope="module")
def go_nuclear():
    try:
        return load_volumes("go_nuclear", "test")
    except DataUnavailableError as err:
        pytest.skip(f"GoNuclear is not in the mirror or cache: {err}")


# --- data -----------------------------------------------------------------------------------


def test_synthetic_stack_is_seeded_anisotropic_and_crowded():
    image, labels = synthetic_nuclei_3d((24, 64, 64), seed=3)
    again, _ = synthetic_nuclei_3d((24, 64, 64), seed=3)
    np.testing.assert_array_equal(image, again)
    assert image.dtype == np.float32 and labels.dtype == np.int32 and image.shape == (24, 64, 64)
    assert labels.max() >= 3 and set(np.unique(labels)) == set(range(labels.max() + 1))
    # nuclei are round in physical space: fewer planes deep than pixels wide (anisotropy 2.2)
    zs, ys, _ = np.nonzero(labels == np.bincount(labels.ravel())[1:].argmax() + 1)
    assert np.ptp(zs) < 0.8 * np.ptp(ys)
    # touching nuclei exist: some object voxel has a face neighbour of another object
    a, b = labels[:, :, 1:], labels[:, :, :-1]
    assert np.any((a > 0) & (b > 0) & (a != b))
    assert image[labels > 0].mean() > 1.5 * image[labels == 0].mean()


def test_synthetic_stack_refuses_bad_options():
    with pytest.raises(ValueError, match="Z, Y, X"):
        synthetic_nuclei_3d((64, 64))
    with pytest.raises(ValueError, match="anisotropy"):
        synthetic_nuclei_3d(anisotropy=0.5)
    with pytest.raises(TypeError, match="unknown option"):
        synthetic_nuclei_3d(radious=3)


def test_go_nuclear_crops_with_voxel_size(go_nuclear):
    images, labels, voxels = go_nuclear
    assert len(images) == 1 and images[0].shape == (100, 100, 100)
    assert labels[0].max() == 54 and labels[0].dtype == np.int32
    z, y, x = voxels[0]
    assert 2.1 < z / y < 2.3 and y == x


def test_read_h5_volume_errors(tmp_path):
    h5py = pytest.importorskip("h5py")
    with pytest.raises(FileNotFoundError):
        read_h5_volume(tmp_path / "none.h5")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5"):
        read_h5_volume(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["raw"] = np.zeros((4, 5, 6), np.uint8)
        f["label"] = np.zeros((4, 5, 5), np.uint8)
        f["flat"] = np.zeros((5, 6), np.uint8)
        f["float"] = np.zeros((4, 5, 6), np.float32)
    with pytest.raises(ValueError, match="holds"):
        read_h5_volume(tmp_path / "a.h5", raw="image")
    with pytest.raises(ValueError, match="differ"):
        read_h5_volume(tmp_path / "a.h5")
    with pytest.raises(ValueError, match="Z, Y, X"):
        read_h5_volume(tmp_path / "a.h5", raw="flat", label=None)
    with pytest.raises(ValueError, match="integer ids"):
        read_h5_volume(tmp_path / "a.h5", label="float")
    image, labels, voxel = read_h5_volume(tmp_path / "a.h5", label=None)
    assert image.shape == (4, 5, 6) and labels is None and voxel is None


def test_load_volumes_synthetic_and_errors():
    images, labels, voxels = load_volumes("synthetic3d", "val")
    assert len(images) == 2 and images[0].shape == labels[0].shape == (40, 96, 96)
    assert voxels[0] == (0.28, 0.127, 0.127)
    with pytest.raises(ValueError, match="unknown volume dataset"):
        load_volumes("bbbc039", "test")
    with pytest.raises(ValueError, match="unknown split"):
        load_volumes("synthetic3d", "all")


# --- targets --------------------------------------------------------------------------------


def test_boundary_classes_3d_marks_faces_between_objects_not_the_volume_faces():
    labels = np.zeros((6, 6, 8), np.int32)
    labels[:, :, :4], labels[:, :, 4:6] = 1, 2
    classes = boundary_classes_3d(labels)
    assert (classes[:, :, 3] == 2).all() and (classes[:, :, 4] == 2).all()
    assert (classes[:, :, 0] == 1).all()  # the volume's face is not a boundary
    assert (classes[:, :, 6:] == 0).all()


def test_edt_prob_3d_is_one_at_the_centre_and_honours_anisotropy():
    ball = _ball()
    prob = edt_prob_3d(ball)
    assert prob.max() == 1 and prob[10, 15, 15] == 1 and prob[ball == 0].max() == 0
    # a nucleus round in physical space, sampled every 3 pixels along z: one plane off the
    # centre is as far inside it as 3 pixels off in-plane, once the anisotropy is honoured
    flat = _ball(radius=9, anisotropy=3.0)
    right = edt_prob_3d(flat, (3.0, 1.0, 1.0))
    assert abs(right[11, 15, 15] - right[10, 15, 18]) < 0.05
    wrong = edt_prob_3d(flat)
    assert wrong[11, 15, 15] < wrong[10, 15, 18] - 0.2
    with pytest.raises(ValueError, match="anisotropy"):
        edt_prob_3d(ball, (1.0, 1.0))


@pytest.mark.reference
@pytest.mark.parametrize("anisotropy", [None, (2.2, 1.0, 1.0)])
def test_edt_prob_3d_equals_stardist(anisotropy):
    utils = pytest.importorskip("stardist.utils")
    data = pytest.importorskip("stardist.data")
    _, labels = data.test_image_nuclei_3d(return_mask=True)
    np.testing.assert_allclose(
        edt_prob_3d(labels, anisotropy), utils.edt_prob(labels, anisotropy=anisotropy), atol=1e-6
    )


def test_stardist3d_targets_layout():
    rays = rays_golden_spiral(16, (2.0, 1.0, 1.0))
    prob, dist = stardist3d_targets(_ball(), rays, (2.0, 1.0, 1.0))
    assert prob.shape == (1, 20, 30, 30) and dist.shape == (16, 20, 30, 30)
    assert dist.dtype == np.float32 and dist[:, 10, 15, 15].min() > 3


# --- crops ----------------------------------------------------------------------------------


def test_volume_patches_are_seeded_and_carry_targets():
    image, labels = synthetic_nuclei_3d((16, 32, 32), seed=1)
    ds = VolumePatches([image], [labels], (8, 16, 16), lambda y: (boundary_classes_3d(y),), n=4)
    x, y = ds[2]
    assert x.shape == (1, 8, 16, 16) and x.dtype == torch.float32
    assert y.shape == (8, 16, 16) and y.dtype == torch.int64
    torch.testing.assert_close(ds[2][0], x)
    ds.set_epoch(1)
    assert not torch.equal(ds[2][0], x)


def test_volume_patches_refuse_bad_volumes():
    image, labels = synthetic_nuclei_3d((16, 32, 32), seed=1)
    targets = lambda y: (y,)  # noqa: E731
    with pytest.raises(ValueError, match="smaller than the patch"):
        VolumePatches([image], [labels], (32, 16, 16), targets)
    with pytest.raises(ValueError, match="must be"):
        VolumePatches([image], [labels[0]], (8, 16, 16), targets)
    bad = image.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        VolumePatches([bad], [labels], (8, 16, 16), targets)
    with pytest.raises(ValueError, match="square"):
        VolumePatches([image], [labels], (8, 16, 8), targets)


# --- networks -------------------------------------------------------------------------------


def test_pooling_plan_pools_z_once_voxels_are_near_cubes():
    assert pooling_plan(2.2, 3) == [(1, 2, 2), (2, 2, 2), (2, 2, 2)]
    assert pooling_plan(1.0, 2) == [(2, 2, 2), (2, 2, 2)]
    assert pooling_plan(5.0, 3) == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]
    with pytest.raises(ValueError):
        pooling_plan(0.5, 2)


def test_unet3d_shapes_and_divisor_errors():
    net = UNet3D(1, 3, 4, pooling_plan(2.2, 2))
    assert net.divisor() == (2, 4, 4)
    assert net(torch.zeros(1, 1, 4, 8, 8)).shape == (1, 3, 4, 8, 8)
    with pytest.raises(ValueError, match="divisible"):
        net(torch.zeros(1, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.zeros(1, 2, 4, 8, 8))
    sd = StarDist3DNet(1, 8, 4, pooling_plan(2.2, 2))
    prob, dist = sd(torch.zeros(2, 1, 4, 8, 8))
    assert prob.shape == (2, 1, 4, 8, 8) and dist.shape == (2, 8, 4, 8, 8) and dist.min() >= 0


def test_memory_per_sample_grows_with_the_cube_of_the_patch():
    plan = pooling_plan(1.0, 2)
    small = memory_per_sample((16, 16, 16), 16, plan)
    assert memory_per_sample((32, 32, 32), 16, plan) == 8 * small
    assert small == 4 * 16**3 * (14 * 16 + 14 * 32 // 8 + 6 * 64 // 64)


def test_predict_volume_tiles_agree_with_one_pass():
    torch.manual_seed(0)
    # three 3x3x3 convolutions see 3 voxels away: the 4-voxel margins hide every seam (a
    # network with group norm would not agree exactly: its statistics are the tile's)
    net = torch.nn.Sequential(
        *[torch.nn.Conv3d(1 if k == 0 else 3, 3, 3, padding=1) for k in range(3)]
    )
    image = np.random.default_rng(0).random((6, 40, 40), dtype=np.float32)
    whole = predict_volume(net, image, tile=(6, 40, 40), margin=(0, 0, 0))
    tiled = predict_volume(net, image, tile=(6, 24, 24), margin=(0, 4, 4))
    assert whole.shape == (3, 6, 40, 40)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)
    unet = UNet3D(1, 3, 4, [(1, 2, 2)])
    assert predict_volume(unet, image, tile=(6, 24, 24), margin=(0, 4, 4)).shape == (3, 6, 40, 40)
    sd = StarDist3DNet(1, 8, 4, [(1, 2, 2)]).eval()
    prob, dist = predict_volume(sd, image[:, :30, :30], tile=(6, 32, 32), margin=(0, 4, 4))
    assert prob.shape == (1, 6, 30, 30) and dist.shape == (8, 6, 30, 30)
    with pytest.raises(ValueError, match="twice its margin"):
        predict_volume(net, image, tile=(6, 8, 8), margin=(0, 4, 4))


def test_classes_to_labels_3d_separates_touching_interiors():
    labels = np.zeros((6, 10, 20), np.int32)
    labels[1:5, 2:8, 2:9], labels[1:5, 2:8, 9:17] = 1, 2
    scores = np.eye(3)[boundary_classes_3d(labels)].transpose(3, 0, 1, 2)
    out = classes_to_labels_3d(scores, min_size=1)
    assert out.max() == 2 and out[3, 5, 4] != out[3, 5, 14]
    with pytest.raises(ValueError, match="3, Z, Y, X"):
        classes_to_labels_3d(scores[:2])


# --- baseline -------------------------------------------------------------------------------


def test_watershed_3d_splits_two_touching_balls():
    a = _ball((20, 40, 60), (10, 20, 20), 9)
    b = _ball((20, 40, 60), (10, 20, 36), 9)
    image = ((a | b) * 1.0 + 0.05).astype(np.float32)
    labels = watershed_3d(image, 1.0, sigma=1.0, min_distance=6)
    assert labels.max() == 2 and labels[10, 20, 18] != labels[10, 20, 38]
    with pytest.raises(ValueError, match="Z, Y, X"):
        watershed_3d(image[0])
    with pytest.raises(ValueError, match="NaN"):
        watershed_3d(np.full((8, 8, 8), np.nan))


# --- figures --------------------------------------------------------------------------------


def test_orthogonal_views_titles_aspect_and_errors():
    from course_utils.figures import volumes as fv

    image, labels = synthetic_nuclei_3d((16, 32, 32), seed=2)
    fig = fv.orthogonal_views(image, labels, anisotropy=2.2, centre=(8, 10, 12))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["XY (z = 8)", "XZ (y = 10)", "YZ (x = 12)"]
    assert fig.axes[1].get_aspect() == 2.2 and fig.axes[0].get_ylabel() == "y (voxels)"
    with pytest.raises(ValueError, match="differ"):
        fv.orthogonal_views(image, labels[:4])
    with pytest.raises(ValueError, match="Z, Y, X"):
        fv.orthogonal_views(image[0])
    fig = fv.rays_on_sphere({"isotropic": rays_golden_spiral(16)})
    assert fig.axes[0].get_title() == "isotropic: 16 rays"
    with pytest.raises(ValueError, match="shape"):
        fv.rays_on_sphere({"bad": np.zeros((4, 2))})


# --- a 2-D network on a stack ---------------------------------------------------------------


class _Coordinates(torch.nn.Module):
    """Outputs (row index, column index, +5 logit) per pixel: where each plane's axes go."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b, _, h, w = x.shape
        rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w)
        cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w)
        return torch.stack([rows, cols, torch.full((h, w), 5.0)])[None].expand(b, 3, h, w)


def test_plane_outputs_batches_and_crops_the_padding():
    planes = np.zeros((5, 20, 36), np.float32)
    out = vol.plane_outputs(_Coordinates(), planes, batch=2)
    assert out.shape == (5, 3, 20, 36) and out[3, 0, 19, 0] == 19 and out[0, 1, 0, 35] == 35
    with pytest.raises(ValueError, match="Z, Y, X"):
        vol.plane_outputs(_Coordinates(), planes[0])


def test_cellpose_three_views_puts_every_flow_component_on_its_axis(monkeypatch):
    seen = {}

    def fake_masks(flows, prob, **kwargs):
        seen["flows"], seen["prob"] = flows, prob
        return np.zeros(prob.shape, np.int32)

    monkeypatch.setattr(vol.planes, "flows_to_masks_3d", fake_masks)
    out = vol.cellpose_three_views(_Coordinates(), np.zeros((4, 6, 8), np.float32), 2.0)
    flows = seen["flows"]
    assert out.shape == (4, 6, 8) and flows.shape == (3, 8, 6, 8)
    z, y, x = np.indices(flows.shape[1:])
    np.testing.assert_array_equal(flows, np.stack([z, y, x]).astype(np.float32))
    assert np.all(seen["prob"] == 5)


def test_segment_planes_numbers_each_plane_from_one():
    import course_utils as cu

    labels = np.zeros((3, 32, 32), np.int32)
    labels[:, 4:12, 4:12], labels[:, 18:28, 18:28] = 1, 2
    net = cu.models.CellposeNet(1, 8, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = vol.segment_planes(cu.methods.get("cellpose"), net, labels.astype(np.float32))
    assert len(caught) <= 1  # at most one warning for the whole stack
    assert out.shape == (3, 32, 32) and out.dtype == np.int32
    assert all(set(np.unique(p)) == set(range(p.max() + 1)) for p in out)


def test_go_nuclear_missing_names_the_synthetic_stacks(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_MIRROR", str(tmp_path / "no-mirror"))
    monkeypatch.setenv("COURSE_DATA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataUnavailableError, match="synthetic3d"):
        load_volumes("go_nuclear", "train")


def test_load_pretrained_checks_the_file(tmp_path):
    from course_utils.volumes.pretrained import PRETRAINED, load_pretrained

    with pytest.raises(FileNotFoundError, match="train_volume_model"):
        load_pretrained(tmp_path / "none.pt")
    net = StarDist3DNet(1, 8, 4, [(1, 2, 2)])
    meta = {
        "network": "StarDist3DNet",
        "network_args": dict(net.config),
        "n_rays": 8,
        "anisotropy": [2.2, 1.0, 1.0],
    }
    path = tmp_path / f"{PRETRAINED}.pt"
    torch.save({"model": net.state_dict(), "meta": meta}, path)
    import hashlib

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / "MANIFEST.tsv").write_text(f"{path.name}\t{digest}\n")
    loaded, rays, read = load_pretrained(path)
    assert rays.shape == (8, 3) and read["n_rays"] == 8 and not loaded.training
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ValueError, match="sha256"):
        load_pretrained(path)
