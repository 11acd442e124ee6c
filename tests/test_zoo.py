"""The model zoo: the committed models load, verify and segment; a missing or damaged file
says how to rebuild it; the training script runs end to end on a tiny budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from course_utils import env, methods, segment, zoo
from course_utils.data import DataUnavailableError, load_split
from course_utils.metrics import matching_dataset

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = zoo.zoo_dir()
#: The generalists (trained on BBBC039, DSB2018 and Kromp), the BBBC039-only models (notebook
#: 08's domain shift) and the whole-cell model (Usiigaci, notebook 10).
GENERALISTS = tuple(methods.NUCLEUS_METHODS)
SINGLE = tuple(f"{m}_bbbc039" for m in methods.NUCLEUS_METHODS)
CELLS = ("cellpose_usiigaci",)


def _method(name: str) -> str:
    return name.removesuffix("_bbbc039").removesuffix("_usiigaci")


@pytest.mark.skipif(not (COMMITTED / "MANIFEST.tsv").exists(), reason="no zoo committed")
def test_every_method_has_a_committed_model_with_a_card():
    cards = zoo.available()
    assert set(cards) == {*GENERALISTS, *SINGLE, *CELLS}
    for name, card in cards.items():
        method = _method(name)
        assert card["method"] == method and card["train_diameter_px"] > 0
        assert {"ap50", "ap75", "f1_50"} <= set(card["test"]) and card["steps"] > 0
        assert zoo.card(name) == card  # verified against the manifest
        if name == method:  # the generalists: a size model, the range they segment as is, and
            # scores on every dataset through segment(diameter=None)
            assert set(card["test_by_dataset"]) == {"bbbc039", "dsb2018", "kromp2020"}
            low, high = card["diameter_range_px"]
            assert low <= card["train_diameter_px"] <= high
            assert len(card["size_model"]["coef"]) == len(card["size_model"]["mean"])
        elif name in CELLS:  # trained and scored on Usiigaci's whole cells alone
            assert "whole cells" in card["data"]["objects"]
            assert set(card["test_by_dataset"]) == set(card["data"]["training"]) == {"usiigaci"}
            assert card["test"]["ap50"] == card["test_by_dataset"]["usiigaci"]["ap50"]
        else:
            assert "BBBC039 only" in card["title"]
    total = sum(p.stat().st_size for p in COMMITTED.iterdir())
    assert total < 40 * 2**20, f"the zoo holds {total / 2**20:.1f} MiB, over 40"


@pytest.mark.skipif(not (COMMITTED / "MANIFEST.tsv").exists(), reason="no zoo committed")
@pytest.mark.parametrize("name", [*GENERALISTS, *SINGLE, *CELLS])
def test_the_card_is_generated_from_the_checkpoint_alone(name, tmp_path):
    # The checkpoint is the model's one home: copied alone, it still gives the whole card, and
    # the committed card and its Markdown are exactly what the writer makes from it.
    method = _method(name)
    alone = tmp_path / f"{name}.pt"
    alone.write_bytes((COMMITTED / f"{name}.pt").read_bytes())
    card = zoo.card_from_checkpoint(alone)
    assert card == json.loads((COMMITTED / f"{name}.json").read_text())
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import zoo_cards
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    zoo_cards.write_card(alone)
    assert alone.with_suffix(".md").read_text() == (COMMITTED / f"{name}.md").read_text()
    model = methods.load_model(alone, method=method)  # no card, no manifest, no record default
    assert model.meta["postprocess"] == card["postprocess"]
    assert model.meta["train_diameter_px"] == card["train_diameter_px"] > 0


@pytest.fixture(scope="module")
def two_test_images():
    try:
        return load_split("bbbc039", "test", n=2)
    except DataUnavailableError as err:
        pytest.skip(f"BBBC039 is not in the mirror or cache: {err}")


# Floors a working model passes with a wide margin; a broken, mismatched or untrained file fails.
FLOORS = {"unet_weighted": 0.5, "unet_3class": 0.6, "cellpose": 0.7, "stardist": 0.6}


@pytest.mark.skipif(not (COMMITTED / "MANIFEST.tsv").exists(), reason="no zoo committed")
@pytest.mark.parametrize("method", list(FLOORS))
def test_each_zoo_model_segments_two_test_images(method, two_test_images):
    images, labels = two_test_images
    model = zoo.load(method)
    assert not model.training
    params = zoo.card(method)["postprocess"]
    preds = [methods.get(method).segment(model, x, **params) for x in images]
    assert all(p.dtype == np.int32 and p.shape == x.shape for p, x in zip(preds, images))
    ap = matching_dataset(labels, preds, 0.5).accuracy
    assert ap > FLOORS[method], f"{method}: AP@0.5 {ap:.3f} on two test images"


@pytest.mark.skipif(not (COMMITTED / "MANIFEST.tsv").exists(), reason="no zoo committed")
@pytest.mark.parametrize("method", methods.NUCLEUS_METHODS)
def test_every_method_name_loads_its_generalist(method, recwarn):
    # The names outside scripts rely on load each method's generalist, without a fallback.
    model = zoo.load(method)
    assert model.meta["method"] == method and "BBBC039 only" not in model.meta["title"]
    assert not [w for w in recwarn.list if "no generalist" in str(w.message)]
    assert zoo.card(method)["title"] == model.meta["title"]
    assert set(model.meta["test_by_dataset"]) == {"bbbc039", "dsb2018", "kromp2020"}


@pytest.mark.skipif(not (COMMITTED / "MANIFEST.tsv").exists(), reason="no zoo committed")
def test_the_whole_cell_model_segments_a_usiigaci_test_image():
    # Through segment(diameter=None), as notebook 10 uses it: whole labels at the image's size.
    try:
        images, labels = load_split("usiigaci", "test", n=1)
    except DataUnavailableError as err:
        pytest.skip(f"Usiigaci is not in the mirror or cache: {err}")
    model = zoo.load("cellpose_usiigaci")
    pred = segment(images[0], "cellpose", model=model, progress=False)
    assert pred.dtype == np.int32 and pred.shape == images[0].shape
    ap = matching_dataset(labels, [pred], 0.5).accuracy
    assert ap > 0.5, f"cellpose_usiigaci: AP@0.5 {ap:.3f} on a Usiigaci test image"


def _fake_zoo(tmp_path, monkeypatch, name: str = "cellpose") -> Path:
    """A zoo of one tiny untrained cellpose model (``name``), written by the script's writer."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import zoo_cards
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    folder = tmp_path / "zoo"
    monkeypatch.setenv("COURSE_ZOO", str(folder))
    model = methods.get("cellpose").build(base_channels=4, depth=2)
    scores = {"ap50": 0.0, "ap75": 0.0, "f1_50": 0.0}
    card = {
        "method": "cellpose",
        "title": "Cellpose-style",
        "budget": "test",
        "architecture": {"network": "CellposeNet", **model.config},
        "data": "none",
        "train_diameter_px": 28.0,
        "steps": 1,
        "wall_time_s": 0.0,
        "device": "cpu",
        "checkpoint": "last.pt",
        "postprocess": {"cellprob_threshold": 0.0},
        "validation": scores,
        "test": scores,
    }
    zoo_cards.write_model(folder, name, model, card)
    zoo_cards.write_index(folder, {"min_distance": 7, "test": scores})
    return folder


def test_load_verifies_and_rebuilds(tmp_path, monkeypatch):
    _fake_zoo(tmp_path, monkeypatch)
    assert set(zoo.available()) == {"cellpose"}
    model = zoo.load("cellpose")
    assert not model.training and model.config["base_channels"] == 4
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in model.parameters())


def test_a_method_without_a_generalist_falls_back_loudly(tmp_path, monkeypatch):
    _fake_zoo(tmp_path, monkeypatch, name="cellpose_bbbc039")
    with pytest.warns(UserWarning, match=r"no generalist cellpose model.*using cellpose_bbbc039"):
        model = zoo.load("cellpose")
    assert model.config["base_channels"] == 4
    assert zoo.load("cellpose_bbbc039").config == model.config
    with pytest.raises(zoo.ZooError, match=r"stardist.pt is not in the zoo manifest.*make zoo"):
        zoo.load("stardist")  # neither a generalist nor a stand-in: the rebuild command
    with pytest.raises(zoo.ZooError, match=r"--data bbbc039 --methods stardist"):
        zoo.load("stardist_bbbc039")


def test_a_missing_zoo_file_names_it_and_the_command(tmp_path, monkeypatch):
    folder = _fake_zoo(tmp_path, monkeypatch)
    (folder / "cellpose.pt").unlink()
    with pytest.raises(zoo.ZooError, match=r"cellpose.pt is missing.*make zoo"):
        zoo.load("cellpose")
    with pytest.raises(zoo.ZooError, match="not in the zoo manifest"):
        zoo.load("stardist")


def test_a_damaged_zoo_file_is_refused(tmp_path, monkeypatch):
    folder = _fake_zoo(tmp_path, monkeypatch)
    data = bytearray((folder / "cellpose.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "cellpose.pt").write_bytes(bytes(data))
    with pytest.raises(zoo.ZooError, match=r"does not match its manifest.*rebuild"):
        zoo.load("cellpose")


def test_the_training_script_runs_end_to_end(tmp_path):
    # The generalist path: three datasets, the size model, the trusted range, the scores per
    # dataset through segment(diameter=None) and the diameter estimates, all in the card.
    if not os.environ.get("COURSE_DATA_MIRROR"):
        pytest.skip("needs the data mirror")
    out = tmp_path / "zoo"
    tiny = ["--n-train", "2", "--n-val", "1", "--n-test", "1", "--epochs", "1", "--patches", "8"]
    cmd = [sys.executable, str(ROOT / "scripts" / "train_zoo.py"), "--methods", "unet_3class"]
    cmd += [*tiny, "--out", str(out), "--checkpoints", str(tmp_path / "ck")]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    card = json.loads((out / "unet_3class.json").read_text())
    assert card["command"].startswith("python scripts/train_zoo.py --methods unet_3class")
    assert card["train_diameter_px"] == 24.0 and card["steps"] == 1
    # The card names the precision fit trained in (its own default: bfloat16 on such CPUs).
    assert card["mixed_precision"] == ("bf16" if env.cpu_has_bf16() else "off")
    assert "random_affine(scale=(0.5, 2.0)" in card["augmentation"]
    assert set(card["data"]["training"]) == {"bbbc039", "dsb2018", "kromp2020"}
    assert set(card["test_by_dataset"]) == {"bbbc039", "dsb2018", "kromp2020"}
    assert set(card["diameter_estimates"]) == {"bbbc039_test_zoomed", "dsb2018_val"}
    assert card["diameter_estimates"]["bbbc039_test_zoomed"]["images"] == 5  # 1 image, 5 zooms
    low, high = card["diameter_range_px"]
    assert low <= 24.0 <= high
    manifest = (out / "MANIFEST.tsv").read_text()
    assert "unet_3class.pt\t" in manifest and "unet_3class.json\t" in manifest
    index = (out / "README.md").read_text()
    assert "classical watershed" in index and "## The generalists on each dataset" in index
    meta = methods.read_meta(out / "unet_3class.pt")
    assert meta["postprocess"] == card["postprocess"] and meta["network"] == "UNet"
    assert meta["size_model"] == card["size_model"]


def test_the_training_script_trains_a_whole_cell_model(tmp_path):
    # --data usiigaci: one dataset of whole cells, shown at the cell diameter asked for, scored
    # on its own test split; the index lists it apart from the nuclei models, beside their
    # baseline.
    if not os.environ.get("COURSE_DATA_MIRROR"):
        pytest.skip("needs the data mirror")
    out = tmp_path / "zoo"
    tiny = ["--n-train", "2", "--n-val", "1", "--n-test", "1", "--epochs", "1", "--patches", "8"]
    tiny[1] = "4"  # the size model needs windows of four images
    cmd = [sys.executable, str(ROOT / "scripts" / "train_zoo.py"), "--data", "usiigaci"]
    cmd += ["--methods", "unet_3class", *tiny, "--out", str(out), "--checkpoints", str(tmp_path)]
    cmd += ["--cell-diameter", "36", "--patch", "96"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    card = json.loads((out / "unet_3class_usiigaci.json").read_text())
    assert card["train_diameter_px"] == pytest.approx(36.0, abs=0.5)  # labels resized to 36 px
    assert card["data"]["shown_at_diameter_px"] == 36.0 and card["patch"] == 96
    assert "scale=(0.7, 1.4)" in card["augmentation"]
    assert "whole cells" in card["data"]["objects"] and set(card["data"]["training"]) == {
        "usiigaci"
    }
    assert set(card["test_by_dataset"]) == {"usiigaci"}
    assert set(card["diameter_estimates"]) == {"usiigaci_test_zoomed"}
    index = (out / "README.md").read_text()
    assert "## Whole cells" in index and "`unet_3class_usiigaci`" in index
    assert "classical watershed" in index and "## The generalists on each dataset" not in index


BAD = ["0", "-3", "nan", "inf"]  # not a positive, finite number


@pytest.mark.parametrize(
    "options, message",
    [
        *[(["--data", "usiigaci", "--cell-diameter", v], "must be a positive") for v in BAD],
        (["--data", "usiigaci", "--patch", "0"], "must be a positive"),
        (["--data", "usiigaci", "--patch", "-64"], "must be a positive"),
        (["--cell-diameter", "40"], "applies to the whole-cell run"),
    ],
)
def test_the_training_script_refuses_options_that_cannot_apply(options, message):
    # Refused while reading the command line, before any data is read or trained on.
    cmd = [sys.executable, str(ROOT / "scripts" / "train_zoo.py"), *options]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.skipif(not (COMMITTED / "README.md").exists(), reason="no zoo committed")
def test_the_project_readme_quotes_the_zoo_index(tmp_path):
    # The README's per-dataset scores are the index's, generated from the cards: never typed.
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import zoo_cards
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert zoo_cards.sync_readme(readme, COMMITTED / "README.md"), "README lost its markers"
    assert readme.read_text() == (ROOT / "README.md").read_text(), (
        "README.md's zoo table differs from models/README.md: run python scripts/zoo_cards.py"
    )
    table = zoo_cards.by_dataset_table((COMMITTED / "README.md").read_text())
    assert "`cellpose`" in table and "`stardist`" in table
