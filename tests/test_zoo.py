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

from course_utils import methods, zoo
from course_utils.data import DataUnavailableError, load_split
from course_utils.metrics import matching_dataset

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = zoo.zoo_dir()


@pytest.mark.skipif(not (COMMITTED / "MANIFEST.tsv").exists(), reason="no zoo committed")
def test_every_method_has_a_committed_model_with_a_card():
    cards = zoo.available()
    assert set(cards) == set(methods.NUCLEUS_METHODS)
    for method, card in cards.items():
        assert card["method"] == method and card["train_diameter_px"] > 0
        assert {"ap50", "ap75", "f1_50"} <= set(card["test"]) and card["steps"] > 0
        assert zoo.card(method) == card  # verified against the manifest
    total = sum(p.stat().st_size for p in COMMITTED.iterdir())
    assert total < 40 * 2**20, f"the zoo holds {total / 2**20:.1f} MiB, over 40"


@pytest.mark.skipif(not (COMMITTED / "MANIFEST.tsv").exists(), reason="no zoo committed")
@pytest.mark.parametrize("method", methods.NUCLEUS_METHODS)
def test_the_card_is_generated_from_the_checkpoint_alone(method, tmp_path):
    # The checkpoint is the model's one home: copied alone, it still gives the whole card, and
    # the committed card and its Markdown are exactly what the writer makes from it.
    alone = tmp_path / f"{method}.pt"
    alone.write_bytes((COMMITTED / f"{method}.pt").read_bytes())
    card = zoo.card_from_checkpoint(alone)
    assert card == json.loads((COMMITTED / f"{method}.json").read_text())
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import zoo_cards
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    zoo_cards.write_card(alone)
    assert alone.with_suffix(".md").read_text() == (COMMITTED / f"{method}.md").read_text()
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


def _fake_zoo(tmp_path, monkeypatch) -> Path:
    """A zoo of one tiny untrained cellpose model, written by the script's own writer."""
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
    zoo_cards.write_model(folder, "cellpose", model, card)
    zoo_cards.write_index(folder, {"min_distance": 7, "test": scores})
    return folder


def test_load_verifies_and_rebuilds(tmp_path, monkeypatch):
    _fake_zoo(tmp_path, monkeypatch)
    assert set(zoo.available()) == {"cellpose"}
    model = zoo.load("cellpose")
    assert not model.training and model.config["base_channels"] == 4
    assert all(p.dtype.is_floating_point and p.dtype.itemsize == 4 for p in model.parameters())


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
    if not os.environ.get("COURSE_DATA_MIRROR"):
        pytest.skip("needs the BBBC039 mirror")
    out = tmp_path / "zoo"
    cmd = [
        sys.executable,
        str(ROOT / "scripts" / "train_zoo.py"),
        "--methods",
        "stardist",
        "--n-train",
        "2",
        "--n-val",
        "1",
        "--n-test",
        "1",
        "--epochs",
        "1",
        "--patches",
        "8",
        "--out",
        str(out),
        "--checkpoints",
        str(tmp_path / "ck"),
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    card = json.loads((out / "stardist.json").read_text())
    assert card["command"].startswith("python scripts/train_zoo.py --methods stardist")
    assert card["train_diameter_px"] > 10 and card["steps"] == 1
    assert "random_affine(scale=(0.5, 2.0)" in card["augmentation"]
    manifest = (out / "MANIFEST.tsv").read_text()
    assert "stardist.pt\t" in manifest and "stardist.json\t" in manifest
    assert "classical watershed" in (out / "README.md").read_text()
    meta = methods.read_meta(out / "stardist.pt")
    assert meta["postprocess"] == card["postprocess"] and meta["network"] == "StarDistNet"
