"""The dry run of full mode: the switch, what it caps, what it measures, and its script."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import course_utils as cu
from course_utils import dryrun, mode
from course_utils.checks import ExerciseError, check_result
from course_utils.methods import budget, train_method
from course_utils.train import checkpoint_dir, fit

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def dry(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.setenv("COURSE_DRYRUN", "1")


def counting_loader(n: int, batch: int = 2) -> tuple[DataLoader, list]:
    """A loader of ``n`` samples that records which samples were drawn."""
    seen: list[int] = []

    class Data(TensorDataset):
        def __getitem__(self, i):
            seen.append(i)
            return super().__getitem__(i)

    data = Data(torch.randn(n, 1, 8, 8), torch.rand(n, 1, 8, 8).round())
    return DataLoader(data, batch_size=batch), seen


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


def test_the_switch_reads_yes_and_no_and_needs_full_mode(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "full")
    for value, expected in [("1", True), ("yes", True), ("0", False), ("", False)]:
        monkeypatch.setenv("COURSE_DRYRUN", value)
        assert mode.is_dryrun() is expected
    monkeypatch.setenv("COURSE_DRYRUN", "maybe")
    with pytest.raises(ValueError, match="COURSE_DRYRUN='maybe' is not a yes/no"):
        mode.is_dryrun()
    monkeypatch.setenv("COURSE_DRYRUN", "1")
    monkeypatch.setenv("COURSE_MODE", "fast")
    with pytest.raises(ValueError, match="set COURSE_MODE=full"):
        mode.is_dryrun()


def test_pick_steps_caps_training_lengths_only_in_a_dry_run(monkeypatch, dry):
    assert cu.pick_steps(fast=5, full=60) == mode.DRYRUN_STEPS
    assert cu.pick_steps(fast=5, full=1) == 1  # never longer than full mode
    assert cu.pick(fast=5, full=60) == 60  # sizes stay full-size
    monkeypatch.setenv("COURSE_DRYRUN", "0")
    assert cu.pick_steps(fast=5, full=60) == 60
    monkeypatch.setenv("COURSE_MODE", "fast")
    assert cu.pick_steps(fast=5, full=60) == 5


def test_checkpoints_of_a_dry_run_have_a_folder_and_a_mode_of_their_own(dry, tmp_path):
    assert checkpoint_dir("unet", root=tmp_path) == tmp_path / "full-dryrun" / "unet"
    fit(
        net(),
        counting_loader(8)[0],
        loss_fn=nn.BCEWithLogitsLoss(),
        epochs=1,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    meta = torch.load(tmp_path / "last.pt", weights_only=False)["meta"]
    assert meta["mode"] == "full-dryrun"


def test_fit_caps_epochs_and_batches_and_logs_the_full_run(dry, monkeypatch, tmp_path):
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("COURSE_TRAINING_LOG", str(log))
    train, seen = counting_loader(40)
    val, _ = counting_loader(10)
    history = fit(net(), train, val, loss_fn=nn.BCEWithLogitsLoss(), epochs=30, progress=False)
    assert len(history.records) == mode.DRYRUN_STEPS
    # The profiled batch, then DRYRUN_STEPS batches of 2 samples in each of DRYRUN_STEPS epochs.
    assert len(seen) == 2 + mode.DRYRUN_STEPS * mode.DRYRUN_STEPS * 2
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["epochs"] == 30 and record["batches_per_epoch"] == 20
    assert record["val_batches_per_epoch"] == 5 and record["batch_shape"] == [2, 1, 8, 8]
    assert record["seconds_per_step"] > 0 and record["network"] == "Sequential"


def test_outside_a_dry_run_fit_trains_everything_and_logs_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.delenv("COURSE_TRAINING_LOG", raising=False)
    train, seen = counting_loader(12)
    history = fit(net(), train, loss_fn=nn.BCEWithLogitsLoss(), epochs=3, progress=False)
    assert len(history.records) == 3 and len(seen) == 36  # no profiled batch: nothing logged
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("COURSE_TRAINING_LOG", str(log))
    fit(net(), train, loss_fn=nn.BCEWithLogitsLoss(), epochs=3, progress=False)
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["steps_run"] == 18 and record["epochs"] == 3 and record["device"] == "cpu"
    assert record["data_seconds_per_step"] > 0 and record["train_seconds"] > 0
    assert record["cuda_peak_bytes"] is None and record["flops"] > 0


def test_a_budget_keeps_the_full_run_and_fit_logs_it(dry, monkeypatch, tmp_path):
    # The budget is the full one; fit trains DRYRUN_STEPS epochs and logs the full run's
    # epochs, which the GPU estimate multiplies (a capped budget would log 2 of 30 epochs).
    assert budget("zoo-gpu").epochs == 100 and budget("full", epochs=1).epochs == 1
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("COURSE_TRAINING_LOG", str(log))
    images = [np.random.default_rng(i).random((64, 64), dtype=np.float32) for i in range(2)]
    labels = [np.pad(np.ones((20, 20), np.int32), 22) for _ in range(2)]
    _, history = train_method(
        "unet_3class",
        images,
        labels,
        budget="full",
        patches_per_epoch=8,
        batch_size=4,
        patch_size=32,
        config={"base_channels": 4},
        progress=False,
    )
    assert budget("full", "unet_3class").epochs == 30
    assert len(history.records) == mode.DRYRUN_STEPS
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["epochs"] == 30 and record["batches_per_epoch"] == 2


def test_profile_counts_the_flops_and_activations_of_a_convolution():
    conv = nn.Conv2d(1, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 1, 16, 16)
    profile = dryrun.profile_step(conv, x, None, [], lambda out, y: out.square().mean())
    forward = 2 * 2 * 4 * 16 * 16 * 9  # 2 FLOPs a multiply-add, per output value and tap
    assert profile["forward_flops"] == forward
    # Backward: the weights' gradient only (x needs none), as many FLOPs as forward.
    assert profile["flops"] == 2 * forward
    # Kept for backward: the input (for the weight gradient) and the output (for square).
    assert profile["activation_bytes"] == (2 * 16 * 16 + 2 * 4 * 16 * 16) * 4
    assert profile["parameters"] == 36 and profile["parameter_bytes"] == 144
    assert conv.weight.grad is None  # the profiled step leaves no gradient behind
    norm = nn.BatchNorm2d(1)
    dryrun.profile_step(norm, x, None, [], lambda out, y: out.sum())
    assert norm.running_mean.item() == 0 and norm.num_batches_tracked.item() == 0
    assert (
        dryrun.training_memory(profile, batch_bytes=10)
        == 4 * 144 + profile["activation_bytes"] + 10
    )


def test_log_run_writes_only_when_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("COURSE_TRAINING_LOG", raising=False)
    assert dryrun.log_run({"a": 1}) is None
    monkeypatch.setenv("COURSE_TRAINING_LOG", str(tmp_path / "sub" / "log.jsonl"))
    dryrun.log_run({"a": 1})
    dryrun.log_run({"a": 2})
    lines = (tmp_path / "sub" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["a"] for line in lines] == [1, 2]


def test_check_result_asserts_except_in_a_dry_run(monkeypatch, dry, capsys):
    assert check_result(False, "the trained model beats the baseline") is False
    assert "not checked in a dry run" in capsys.readouterr().out
    monkeypatch.setenv("COURSE_DRYRUN", "0")
    with pytest.raises(ExerciseError, match="the trained model beats the baseline"):
        check_result(False, "the trained model beats the baseline")
    assert check_result([True, True], "both hold") is True
    with pytest.raises(ExerciseError, match="not yet checked"):
        check_result(None, "a claim")


def load_script():
    spec = importlib.util.spec_from_file_location("dryrun_script", ROOT / "scripts/dryrun.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_estimate_swaps_cpu_network_time_for_gpu_flops():
    script = load_script()
    run = {
        "epochs": 10,
        "batches_per_epoch": 100,
        "val_batches_per_epoch": 5,
        "flops": 3e12,
        "forward_flops": 1e12,
        "seconds_per_step": 2.0,
        "seconds": 9.0,
        "train_seconds": 15.0,
        "parameter_bytes": 1e6,
        "activation_bytes": 2e9,
        "batch_bytes": 1e6,
    }
    clock = {"inference_seconds": 20.0, "inference_calls": 4}
    est = script.estimate([run, clock], seconds=60.0, mfu=0.5, peak_flops=1e15)
    flops = 1000 * 3e12 + 50 * 1e12
    predicting = 20.0 * 3e12 / 2.0  # this CPU's rate in the run's own steps
    assert est["training_pflop"] == pytest.approx(flops / 1e15)
    # 60 s of dry run, of which 15 s training and 20 s predicting here: 25 s stay as they ran.
    assert est["gpu_min_estimate"] == pytest.approx((25 + (flops + predicting) / 5e14) / 60)
    assert est["full_training_cpu_h"] == pytest.approx(2000 / 3600)
    assert est["inference_cpu_min"] == pytest.approx(20 / 60)
    assert est["gpu_training_gib"] == pytest.approx((4e6 + 2e9 + 1e6) / 2**30)
    assert est["fits_16gb_gpu"] and est["training_runs"] == 1 and est["data_bound_min"] == 0
    # A loader slower than the GPU: each step waits for its batch.
    slow = {**run, "data_seconds_per_step": 4.0 * script.DATA_WORKERS}
    waited = script.estimate([slow], seconds=60.0, mfu=0.5, peak_flops=1e15)["data_bound_min"]
    assert waited == pytest.approx(1000 * (4.0 - 3e12 / 5e14) / 60)
    empty = script.estimate([], seconds=30.0, mfu=0.5, peak_flops=1e15)
    assert empty["gpu_min_estimate"] == 0.5 and empty["gpu_training_gib"] == 0


def test_the_cpu_rate_falls_back_on_the_throughput_benchmark():
    script = load_script()
    assert script.cpu_flop_rate([{"flops": 4e12, "seconds_per_step": 2.0}]) == 2e12
    fp32, bf16 = script.cpu_flop_rate([], bf16=False), script.cpu_flop_rate([], bf16=True)
    assert 1e9 < fp32 < bf16 < 1e13  # the committed rows of this CPU: bf16 is the faster


def test_the_inference_clock_times_forward_passes_without_gradients(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_TRAINING_LOG", str(tmp_path / "log.jsonl"))
    model = net()
    clock = dryrun.InferenceClock()
    try:
        model(torch.randn(1, 1, 8, 8))  # with gradients: training, not counted
        with torch.no_grad():
            model(torch.randn(1, 1, 8, 8))  # one outermost call (nested modules inside)
        with torch.inference_mode():
            model(torch.randn(1, 1, 8, 8))
    finally:
        record = clock.close()
    assert record["inference_calls"] == 2 and record["inference_seconds"] > 0
    with torch.no_grad():
        model(torch.randn(1, 1, 8, 8))  # the hooks are gone
    assert clock.calls == 2
    assert json.loads((tmp_path / "log.jsonl").read_text())["inference_calls"] == 2


def test_the_readme_columns_are_written_from_the_rows(tmp_path):
    script = load_script()
    readme = tmp_path / "README.md"
    readme.write_text(
        "| notebook | topic | papers | fast | dry | gpu |\n"
        "| `03_unet` | U-Net | Ronneberger 2015 | 42 s | old | old |\n"
        "| `04_aug` | aug | Simard 2003 | 23 s | old | old |\n"
    )
    rows = [
        {
            "notebook": "03_unet",
            "dryrun_min": 4.24,
            "peak_gib": 3.01,
            "gpu_min_estimate": 6.6,
            "training_runs": 2,
            "gpu_training_gib": 5.55,
            "error": None,
        },
        {"notebook": "04_aug", "error": "AssertionError"},
    ]
    script.write_readme(rows, readme)
    lines = readme.read_text().splitlines()
    assert lines[1].endswith("| 42 s | 4.2 min, 3.0 GiB | ~7 min (estimate), training 5.5 GiB |")
    assert lines[2].endswith("| 23 s | fails in the dry run | - |")
    assert lines[0].endswith("| dry | gpu |")
    # A fast run fills the fast column alone.
    fast = [
        {"notebook": "03_unet", "seconds": 37.4, "error": None},
        {"notebook": "04_aug", "error": "x"},
    ]
    script.write_readme(fast, readme, fast=True)
    lines = readme.read_text().splitlines()
    assert lines[1] == (
        "| `03_unet` | U-Net | Ronneberger 2015 | 37 s | 4.2 min, 3.0 GiB "
        "| ~7 min (estimate), training 5.5 GiB |"
    )
    assert lines[2].endswith("| fails in fast mode | fails in the dry run | - |")


def test_the_instructors_run_times_are_written_from_the_rows(tmp_path):
    # The instructors' table takes the fast run's times and the dry run's GPU estimates; a
    # notebook missing from the rows keeps what the table said.
    script = load_script()
    kit = tmp_path / "instructors.md"
    head = "| notebook | run, fast | run, full | teaching time | exercises |\n"
    kit.write_text(
        head
        + "| [03 · The U-Net](../notebooks/03_unet.ipynb) | 42 s | old | 90 min | 3 |\n"
        + "| [04 · Aug](../notebooks/04_aug.ipynb) | 23 s | old | 70 min | 2 |\n"
        + "| [05 · Flows](../notebooks/05_flows.ipynb) | 60 s | old | 80 min | 4 |\n"
    )
    fast = [
        {"notebook": "03_unet", "seconds": 123.4, "error": None},
        {"notebook": "04_aug", "seconds": 9.0, "error": "AssertionError"},
    ]
    script.write_instructors(fast, kit, fast=True)
    dry = [{"notebook": "03_unet", "gpu_min_estimate": 20.9, "error": None}]
    script.write_instructors(dry, kit)
    lines = kit.read_text().splitlines()
    assert lines[0] == head.strip()
    assert lines[1] == (
        "| [03 · The U-Net](../notebooks/03_unet.ipynb) | 2 min 3 s "
        "| ~21 min on an H100 (estimate) | 90 min | 3 |"
    )
    assert (
        lines[2]
        == "| [04 · Aug](../notebooks/04_aug.ipynb) | fails in fast mode | old | 70 min | 2 |"
    )
    assert lines[3].endswith("| 60 s | old | 80 min | 4 |")
    assert [script.clock_time(s) for s in (0.4, 59.6, 60, 3599)] == [
        "0 s",
        "1 min 0 s",
        "1 min 0 s",
        "59 min 59 s",
    ]


def data_mirror() -> Path | None:
    """The BBBC039 mirror the notebooks read (tests never download)."""
    root = os.environ.get("COURSE_DATA_MIRROR")
    return Path(root) if root and (Path(root) / "bbbc039").is_dir() else None


# The cheapest notebooks of the dry run, kept working here; `make dryrun` runs every notebook
# (hours on 2 cores: see the README's course map). The fast run times what CI runs.
@pytest.mark.skipif(data_mirror() is None, reason="no BBBC039 mirror (COURSE_DATA_MIRROR)")
@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("00_setup_and_data", "dryrun"),
        ("02_cnn_building_blocks", "dryrun"),
        ("00_setup_and_data", "fast"),
    ],
)
def test_cheap_notebooks_run_in_the_dry_run_and_in_fast_mode(name, mode, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "JUPYTER_PATH": str(ROOT / ".venv/share/jupyter")}
    command = [sys.executable, str(ROOT / "scripts/dryrun.py"), "--one"]
    command += [str(ROOT / "notebooks" / f"{name}.ipynb"), "--out", str(tmp_path)]
    command += ["--fast"] if mode == "fast" else []
    child = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["error"] is None, result["error"]
    assert result["seconds"] > 0 and result["peak_rss_bytes"] > 0
    executed = (tmp_path / f"{name}.ipynb").read_text()
    if name == "00_setup_and_data":  # it prints the mode it ran in
        assert f"mode = {'fast' if mode == 'fast' else 'full'}" in executed
