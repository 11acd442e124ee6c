"""Smoke tests of the benchmark scripts: they run, and what they write is right (never timed).

``train_throughput.py --quick`` trains tiny versions of the four methods' networks (their
``course_utils.methods`` records) on the CPU and writes its JSON; the FLOP count it reports is
checked against a count by hand of the convolutions. ``_common.write_results`` writes the one
schema, and ``make_results.py`` renders a folder of fake results files, in the schema and not.

The scripts import ``_common`` from their own folder, which ``python benchmarks/x.py`` puts
first on ``sys.path``; loaded here from their paths, they find it through ``_bench_on_path``
(pytest's ``pythonpath`` setting in ``pyproject.toml`` does the same for the other tests).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCHEMA_KEYS = ("benchmark", "title", "device", "date", "versions", "machine", "settings", "rows")
METHOD_NAMES = ("unet_weighted", "unet_3class", "cellpose", "stardist")
QUICK = {"depth": 2, "base_channels": 8}  # what train_throughput.py --quick overrides


@pytest.fixture(autouse=True)
def _bench_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("throughput")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COURSE_DEVICE": "cpu"}
    # One DataLoader worker: targets computed in a forked process must work too.
    cmd = [sys.executable, str(BENCH / "train_throughput.py"), "--quick", "--workers", "1"]
    cmd += ["--out", str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "images_per_s" in done.stdout  # the printed table
    return json.loads((out / "train_throughput_cpu.json").read_text())


def test_quick_throughput_json_follows_the_schema(quick_report):
    assert set(quick_report) == {*SCHEMA_KEYS, "extra_tables"}
    assert quick_report["benchmark"] == "train_throughput"
    assert quick_report["device"] == "cpu"
    assert quick_report["versions"]["torch"]
    rows = quick_report["rows"]
    assert {(r["model"], r["config"]) for r in rows} == {
        (m, c) for m in METHOD_NAMES for c in ("fp32", "bf16+cl")
    }
    for row in rows:
        assert row["images_per_s"] > 0 and row["tflops"] > 0
        assert row["mfu"] is None  # no peak is known for a CPU
        assert row["fit_default"] == (row["config"] == "fp32")  # fit: no autocast on the CPU
        # backward = grad of inputs + of weights ~ 2x forward; the first layer has no input grad
        assert 2.5 < row["gflop_step"] / row["gflop_fwd"] <= 3.0 + 1e-9
    pipeline = quick_report["extra_tables"]["input pipeline, fit's default setting"]
    assert [p["model"] for p in pipeline] == list(METHOD_NAMES)
    for p in pipeline:
        assert p["data_ms"] > 0 and p["loop_ms"] > 0 and p["fit_img_s"] > 0
        assert p["gpu_idle"] is None


def _conv_flops_by_hand(model, x) -> float:
    """2 x multiply-adds of every convolution in one forward pass, from the layer shapes."""
    import torch
    from torch import nn

    total = []

    def hook(module, inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, nn.ConvTranspose2d):  # every input pixel meets the whole kernel
            pixels, c_in = inputs[0].shape[-2] * inputs[0].shape[-1], module.in_channels
            total.append(2 * c_in * module.out_channels * k * pixels)
        else:
            pixels, c_in = output.shape[-2] * output.shape[-1], module.in_channels
            total.append(2 * c_in // module.groups * module.out_channels * k * pixels)

    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(x)
    return float(sum(total))


def test_quick_throughput_flops_match_a_count_by_hand(quick_report):
    import torch

    from course_utils import methods

    assert quick_report["settings"]["overrides"] == QUICK
    for name in ("unet_weighted", "unet_3class"):  # conv-only networks: the counter sees convs
        row = next(r for r in quick_report["rows"] if r["model"] == name)
        model = methods.get(name).build(mode="full", **QUICK)
        x = torch.zeros(1, 1, row["size"], row["size"])
        assert row["gflop_fwd"] * 1e9 == pytest.approx(_conv_flops_by_hand(model, x), rel=1e-6)


def test_peak_table_and_sizes():
    tt = _load("train_throughput")
    assert tt.peak_tflops("NVIDIA H100 80GB HBM3")["label"] == "H100 SXM"
    assert tt.peak_tflops("NVIDIA H100 PCIe")["bf16"] == pytest.approx(756.5)
    assert tt.peak_tflops("NVIDIA H200")["label"] == "H200 SXM"
    assert tt.peak_tflops("NVIDIA A100-SXM4-80GB")["label"] == "A100"
    assert tt.peak_tflops("NVIDIA GeForce RTX 4090") is None
    from course_utils.models import unet_output_size

    assert tt.MODELS == METHOD_NAMES
    assert tt.patch_size("unet_weighted", 512, quick=False) == 508  # 508 -> 324 output
    assert unet_output_size(508) == 324
    assert tt.patch_size("unet_3class", 501, quick=False) == 496  # multiple of 2**4, nearest
    assert tt.patch_size("stardist", 501, quick=False) == 496  # of grid 2 x 2**3
    assert tt.patch_size("stardist", 64, quick=True) == 64  # quick: 2 x 2**2


def test_write_results_writes_the_schema_and_merges(tmp_path):
    common = _load("_common")
    head = common.header(
        "demo",
        "A demo",
        "gpu-x",
        settings={"repeats": 3},
        packages=("torch",),
        versions={"cuda": "1.0"},
        accelerator="GPU X",
    )
    assert tuple(head) == SCHEMA_KEYS[:-1]
    assert head["versions"]["python"] and head["versions"]["cuda"] == "1.0"
    assert "torch" in head["versions"] and head["machine"].endswith(" CPUs; GPU X")
    assert head["settings"]["repeats"] == 3 and "OMP_NUM_THREADS" in head["settings"]["env"]
    rows = [{"model": "a", "batch": 1, "v": 1.0}, {"model": "b", "batch": 1, "v": 2.0}]
    path = common.write_results(head, rows, extra_tables={"t": rows}, out_dir=tmp_path)
    assert path == tmp_path / "demo_gpu-x.json"
    written = json.loads(path.read_text())
    assert list(written) == [*SCHEMA_KEYS, "extra_tables"] and written["rows"] == rows
    again = [{"model": "b", "batch": 1, "v": 3.0}]
    common.write_results(
        head, again, extra_tables={"t": again}, out_dir=tmp_path, merge_on=("model", "batch")
    )
    merged = json.loads(path.read_text())
    assert [r["v"] for r in merged["rows"]] == [1.0, 3.0]
    assert [r["v"] for r in merged["extra_tables"]["t"]] == [1.0, 3.0]
    assert merged["settings"]["merged_with_run_of"] == head["date"]
    with pytest.raises(ValueError, match="header keys"):
        common.write_results({**head, "rows": []}, rows, out_dir=tmp_path)


def test_committed_results_follow_the_schema():
    for path in sorted((BENCH / "results").glob("*.json")):
        data = json.loads(path.read_text())
        assert set(data) - {"extra_tables"} == set(SCHEMA_KEYS), path.name
        assert path.name == f"{data['benchmark']}_{data['device']}.json"
        assert data["rows"] and all(isinstance(r, dict) for r in data["rows"]), path.name


def _write(folder: Path, name: str, payload) -> None:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    (folder / name).write_text(text)


def test_make_results_renders_the_schema_and_names_unreadable_files(tmp_path):
    _write(
        tmp_path,
        "train_throughput_nvidia-h100-80gb-hbm3.json",
        {
            "benchmark": "train_throughput",
            "title": "Training throughput",
            "device": "nvidia-h100-80gb-hbm3",
            "date": "2030-01-02T03:04:05",
            "versions": {"torch": "9.9"},
            "machine": "NVIDIA H100 80GB HBM3",
            "settings": {"batch": [8]},
            "rows": [
                {
                    "model": "unet_weighted",
                    "size": 508,
                    "batch": 8,
                    "config": "bf16+cl",
                    "fit_default": True,
                    "images_per_s": 1234.5678,
                    "tflops": 412.345,
                    "mfu": 0.41678,
                    "extra": "not shown",
                }
            ],
            "extra_tables": {"input pipeline": [{"model": "unet_weighted", "gpu_idle": 0.125}]},
        },
    )
    _write(
        tmp_path,
        "flows_cpu.json",
        {
            "benchmark": "flows",
            "title": "Flows",
            "device": "cpu",
            "date": "2030-01-01",
            "versions": {"numpy": "3.0"},
            "machine": "Some CPU, 2 CPUs",
            "settings": {"threads": 2, "timing": "median"},
            "note": "outside the schema",
            "rows": [{"ratio": 4.0, "reference_s": 2.0, "ours_s": 0.5, "size": [512, 512]}],
        },
    )
    _write(
        tmp_path,
        "matching_cpu.json",
        {  # the old layout: no longer read
            "benchmark": "matching",
            "environment": {"date": "2030-01-01", "cpu": "Some CPU"},
            "results": [{"ours_ms": 1.0}],
        },
    )
    _write(
        tmp_path,
        "weightmap_cpu.json",
        {
            "benchmark": "weightmap",
            "title": "W",
            "device": "cpu",
            "date": "2030-01-01",
            "versions": {},
            "machine": "M",
            "settings": [],
            "rows": [1, 2],
        },
    )
    _write(tmp_path, "stardist_cpu.json", "{not json")
    out = tmp_path / "RESULTS.md"
    _load("make_results").main(["--results-dir", str(tmp_path), "--out", str(out)])
    text = out.read_text()
    assert "## train_throughput on nvidia-h100-80gb-hbm3" in text
    assert "| model | size | batch | config | fit_default | images_per_s | tflops | mfu |" in text
    assert "| unet_weighted | 508 | 8 | bf16+cl | yes | 1235 | 412.3 | 0.4168 |" in text
    assert "not shown" not in text.split("## flows")[0]  # the throughput table: fixed columns
    assert "| unet_weighted | 0.125 |" in text  # extra tables rendered as they are
    flows = text[text.index("## flows on cpu") :]
    assert "**Flows**" in flows and "2030-01-01" in flows and "numpy=3.0" in flows
    assert "- machine: Some CPU, 2 CPUs" in flows and "  - threads: 2" in flows
    assert "not shown (outside the schema): note" in flows
    assert "| size | ours_s | reference_s | ratio |" in flows  # the schema's column order
    assert "| 512x512 | 0.5 | 2 | 4 |" in flows
    missing = text[text.index("## Missing") : text.index("## train_throughput")]
    assert "not run at all: stardist, matching, weightmap" in missing
    assert "no GPU run yet (CPU only): flows" in missing
    assert "`stardist_cpu.json` (not JSON" in missing
    assert (
        "`matching_cpu.json` (missing schema keys: title, device, date, versions, machine, "
        "settings, rows)"
    ) in missing
    assert "`weightmap_cpu.json` (wrong type: settings, rows)" in missing
    assert "train_throughput" not in missing
    assert "## matching" not in text and "## weightmap" not in text


def test_segment_benchmark_ratios_and_image():
    bench = _load("bench_segment")
    rows = [
        {"method": "cellpose", "diameter": "given", "megapixels": m, "s_per_mp": s, "peak_mb": p}
        for m, s, p in ((16.8, 4.0, 1400), (0.25, 8.0, 1100), (4.2, 5.0, 1200))
    ]
    ratios = bench._ratios(rows)
    assert ratios == [
        {
            "method": "cellpose",
            "diameter": "given",
            "largest_over_smallest": 0.5,
            "max_peak_mb": 1400,
        }
    ]
    image, diameter = bench._image(1100)  # tiled from 1024^2, cropped
    assert image.shape == (1100, 1100) and 24 < diameter < 34  # about the zoo's 28 px


@pytest.mark.reference
def test_stardist3d_benchmark_runs_and_agrees_with_stardist():
    pytest.importorskip("stardist.geometry")
    cmd = [sys.executable, str(BENCH / "bench_stardist3d.py"), "--quick"]
    done = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "max_diff_voxels" in done.stdout and "test volume" in done.stdout


@pytest.mark.reference
def test_stardist3d_post_benchmark_runs_and_agrees_with_stardist():
    pytest.importorskip("stardist.geometry")
    cmd = [sys.executable, str(BENCH / "bench_stardist3d_post.py"), "--quick"]
    done = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for step in ("polyhedra->labels", "nms"):
        assert step in done.stdout
    assert "agreement" in done.stdout and "same_kept" in done.stdout


@pytest.mark.reference
def test_flows3d_benchmark_runs_and_agrees_with_cellpose():
    pytest.importorskip("cellpose.dynamics")
    pytest.importorskip("stardist.matching")
    cmd = [sys.executable, str(BENCH / "bench_flows3d.py"), "--quick", "--threads", "1"]
    done = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for step in ("labels->flows", "flows->masks", "stitching"):
        assert step in done.stdout
    assert "agreement" in done.stdout and "test volume" in done.stdout


def test_tile_labels_fills_the_square_and_keeps_ids_apart():
    common = _load("_common")
    a = np.zeros((3, 4), np.int32)
    a[0, 0], a[2, 3] = 1, 2
    b = np.full((2, 3), 5, np.int32)
    tile = common.tile_labels([a, b, a, b, a], 6)
    assert tile.shape == (6, 6) and tile.dtype == np.int32
    # Row 1: a (ids 1, 2), then b cut to 2 columns (id 5 + 2); row 2 starts under a's 3 rows.
    assert tile[0, 0] == 1 and tile[2, 3] == 2 and (tile[:2, 4:] == 7).all()
    assert tile[3, 0] == 7 + 1 and (tile[3:5, 4:6] == 7 + 2 + 5).all()
    objects = [np.unique(t[t > 0]) for t in (tile[:3, :4], tile[:2, 4:], tile[3:, :4])]
    assert len(np.unique(np.concatenate(objects))) == sum(map(len, objects))  # no id shared
    with pytest.raises(ValueError, match="do not fill"):
        common.tile_labels([a], 6)


@pytest.mark.reference
def test_stardist_benchmark_runs_and_agrees_with_stardist():
    # The script exits non-zero when our outputs and stardist's disagree.
    pytest.importorskip("stardist.geometry")
    cmd = [sys.executable, str(BENCH / "bench_stardist.py"), "--quick"]
    done = subprocess.run(cmd, cwd=BENCH, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "star_dist" in done.stdout and "polygons_to_label" in done.stdout
