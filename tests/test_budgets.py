"""Training budgets: one table, one accessor, and the one training entry point that reads it."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch

import course_utils as cu
from course_utils.data import synthetic_nuclei
from course_utils.methods import BUDGETS, METHODS, Budget, budget, train_method

ROOT = Path(__file__).resolve().parents[1]
#: Named runs of notebook 10 that are not methods (their networks come from a record).
NAMED_RUNS = {"*", "synthetic", "joint"}


def test_a_name_without_its_mode_means_the_current_modes(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "full")
    assert budget("sparse", "stardist") == BUDGETS["sparse-full"]["stardist"]
    assert budget(None, "cellpose") == BUDGETS["full"]["cellpose"]
    monkeypatch.setenv("COURSE_MODE", "fast")
    assert budget("sparse", "stardist") == BUDGETS["sparse-fast"]["stardist"]
    assert budget(mode="full") == BUDGETS["full"]["*"]


def test_a_run_without_an_entry_gets_the_default_and_changes_replace_fields():
    assert budget("fast", "affinities") == BUDGETS["fast"]["*"]
    changed = budget("fast", "stardist", epochs=7, lr=None)
    assert changed.epochs == 7 and changed.lr == BUDGETS["fast"]["stardist"].lr
    mine = Budget(3, batch_size=2)
    assert budget(mine) is not mine and budget(mine) == mine and budget(mine, epochs=1).epochs == 1


def test_unknown_names_and_runs_are_named_in_the_error():
    with pytest.raises(KeyError, match="zoo-cpu"):
        budget("zoo-tpu")
    with pytest.raises(KeyError, match="affinities"):
        budget("zoo-cpu", "affinities")


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 2, "schedule": "linear"}, "schedule"),
        ({"epochs": 2, "batch_size": 0}, "batch_size"),
        ({"epochs": 2, "patch_size": -4}, "patch_size"),
    ],
)
def test_a_bad_budget_is_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        Budget(**fields)


def test_steps_and_patches_count_what_a_run_does():
    assert Budget(3, batch_size=4, patches_per_image=8).patches(5) == 40
    assert Budget(3, batch_size=4, patches_per_image=8).steps(5) == 30
    assert Budget(2, batch_size=8, patches_per_epoch=20).steps(100) == 6  # 20 / 8 -> 3 a epoch


def test_every_entry_is_for_a_method_or_a_named_run_and_its_config_builds():
    for name, runs in BUDGETS.items():
        for run, plan in runs.items():
            method = run.removesuffix("_cells")  # "<method>_cells": the zoo's whole-cell run
            assert method in METHODS or run in NAMED_RUNS, (name, run)
            assert isinstance(plan, Budget)
            if method in METHODS and plan.config:
                METHODS[method].config("fast", **plan.config)  # raises on an unknown argument
    as_dict = budget("zoo-cpu", "stardist").as_dict()
    assert as_dict["config"] == {"base_channels": 32, "depth": 3, "grid": 2}
    assert isinstance(as_dict["config"], dict)


def test_the_zoo_script_and_fine_tune_read_the_table():
    spec = importlib.util.spec_from_file_location("train_zoo", ROOT / "scripts" / "train_zoo.py")
    text = spec.origin and Path(spec.origin).read_text()
    assert 'cu.methods.budget(\n        f"zoo-{args.budget}"' in text
    assert "BUDGETS = {" not in text  # no second table
    default = inspect.signature(cu.fine_tune).parameters["budget"].default
    assert default == "fine-tune" and "fine-tune" in BUDGETS


def _data(n=2, size=64):
    pairs = [synthetic_nuclei((size, size), n_nuclei=6, seed=i) for i in range(n)]
    return [img.astype(np.float32) for img, _ in pairs], [lab for _, lab in pairs]


def test_train_method_records_its_budget_and_fine_tuning_keeps_the_start_facts(tmp_path):
    images, labels = _data()
    plan = Budget(1, batch_size=2, patches_per_epoch=4, patch_size=32)
    model, history = train_method(
        "unet_3class", images, labels, budget=plan, config={"depth": 2}, progress=False
    )
    assert len(history) == 1 and model.meta["budget"]["patch_size"] == 32
    model.meta["postprocess"] = {"expand": 3}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    tuned, _ = train_method(
        "unet_3class",
        images,
        labels,
        start=model,
        freeze="encoder",
        budget=plan,
        meta={"data": "mine"},
        progress=False,
    )
    assert tuned is model and tuned.meta["postprocess"] == {"expand": 3}
    assert tuned.meta["data"] == "mine" and "train_diameter_px" in tuned.meta
    encoder = tuple(model.ENCODER)
    for n, p in tuned.named_parameters():
        assert torch.equal(p, before[n]) == n.startswith(encoder), n
        assert p.requires_grad  # unfrozen again after training


def test_train_method_refuses_a_start_network_of_another_method():
    images, labels = _data(1)
    other = METHODS["cellpose"].build(mode="fast")
    with pytest.raises(ValueError, match="unet_3class"):
        train_method("unet_3class", images, labels, start=other, budget=Budget(1))
    mine = METHODS["unet_3class"].build(mode="fast")
    with pytest.raises(ValueError, match="fresh network"):
        train_method("unet_3class", images, labels, start=mine, config={"depth": 2})
