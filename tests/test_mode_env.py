"""course_utils.mode (fast/full switch) and course_utils.env (device, seeding, report)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_utils import env, mode
from course_utils._shared import device as shared_device
from course_utils._shared.device import amp_dtype


@pytest.mark.parametrize(
    "value, expected", [("fast", "fast"), ("FULL", "full"), (" fast ", "fast")]
)
def test_mode_from_environment(monkeypatch, value, expected):
    monkeypatch.setenv("COURSE_MODE", value)
    assert mode.get_mode() == expected


def test_auto_mode_follows_cuda(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "auto")
    monkeypatch.setattr(mode, "_cuda_available", lambda: True)
    assert mode.get_mode() == "full"
    monkeypatch.setattr(mode, "_cuda_available", lambda: False)
    assert mode.get_mode() == "fast"
    monkeypatch.delenv("COURSE_MODE")
    assert mode.get_mode() == "fast"


def test_bad_mode_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "turbo")
    with pytest.raises(ValueError, match="COURSE_MODE='turbo'.*fast, full, auto"):
        mode.get_mode()


def test_pick(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "fast")
    assert mode.pick(fast=2, full=100) == 2 and mode.is_fast()
    monkeypatch.setenv("COURSE_MODE", "full")
    assert mode.pick(fast=2, full=100) == 100 and not mode.is_fast()


def test_get_device_cpu_here_and_forced(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    dev = env.get_device()
    if expected:
        assert dev.type == expected
    assert env.get_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert env.get_device() == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_refuses_missing_cuda():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        env.get_device("cuda")


def test_seed_everything_reproduces():
    rng1 = env.seed_everything(3)
    a = (torch.rand(3), np.random.rand(2), rng1.random(2))  # noqa: NPY002
    rng2 = env.seed_everything(3)
    b = (torch.rand(3), np.random.rand(2), rng2.random(2))  # noqa: NPY002
    assert torch.equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])


def test_check_env_reports_and_explains(capsys):
    report = env.check_env(packages=("numpy", "torch", "no_such_package_xyz"))
    out = capsys.readouterr().out
    assert report["versions"]["numpy"] == np.__version__
    assert report["versions"]["no_such_package_xyz"] is None
    assert any("no_such_package_xyz" in p for p in report["problems"])
    assert "device:" in out and "MISSING" in out and report["mode"] in {"fast", "full"}


def test_check_env_explains_cuda_build_without_gpu(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    report = env.check_env(packages=("torch",))
    assert report["device"] in {"cpu", "mps"}
    assert any("no GPU is visible" in p for p in report["problems"])


def test_check_env_explains_broken_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def broken(*args, **kwargs):
        raise RuntimeError("driver too old")

    monkeypatch.setattr(torch, "zeros", broken)
    report = env.check_env(packages=("torch",), verbose=False)
    assert any("driver" in p for p in report["problems"])


def test_dataloader_workers(monkeypatch):
    import multiprocessing

    monkeypatch.setenv("COURSE_MODE", "fast")
    assert env.dataloader_workers(8) == 0
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "fork")
    monkeypatch.setattr(env.os, "cpu_count", lambda: 2)
    assert env.dataloader_workers(8) == 2
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    assert env.dataloader_workers(8) == 0


def test_amp_dtype_off_the_gpu_and_forced():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert amp_dtype("auto", cpu) is None  # prediction: float32 on the CPU unless asked
    assert amp_dtype("gpu", cpu, cpu_bf16=True) is None
    assert amp_dtype("auto", torch.device("mps"), cpu_bf16=True) is None
    assert amp_dtype(False, cuda) is None and amp_dtype(None, cuda) is None
    assert amp_dtype(True, cpu) == torch.bfloat16
    assert amp_dtype("fp16", cpu) == torch.float16
    assert amp_dtype("bf16", cuda) == torch.bfloat16  # a forced dtype is not second-guessed
    for bad in ("fp8", "BF16", "cpu", 1, 0.5):
        with pytest.raises(ValueError, match="amp"):
            amp_dtype(bad, cpu)


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_trains_in_bf16_on_cpus_that_compute_it_natively(monkeypatch, native):
    # Training (cpu_bf16=True, as train.fit asks) gets bfloat16 where the CPU has it natively,
    # never emulated; prediction (the default) stays float32.
    monkeypatch.setattr(env, "cpu_has_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu, cpu_bf16=True) == (torch.bfloat16 if native else None)
    assert amp_dtype("auto", cpu) is None
    assert amp_dtype("gpu", cpu, cpu_bf16=True) is None


@pytest.mark.parametrize(("amp", "expected"), [("auto", torch.bfloat16), ("gpu", None)])
def test_fit_trains_in_bf16_on_a_native_cpu_unless_told_gpu_only(monkeypatch, amp, expected):
    from course_utils import train_steps

    monkeypatch.setattr(env, "cpu_has_bf16", lambda: True)
    options = dict(optimizer=None, lr=1e-3, scheduler=None, channels_last=False, loss_fn=None)
    options.update(metrics={}, grad_clip=None, seed=0, monitor="train_loss")
    run = train_steps.Run(torch.nn.Conv2d(1, 1, 3), device="cpu", amp=amp, **options)
    assert run.amp_dtype == expected
    with run.autocast():  # the step runs in what amp_dtype says
        out = run.model(torch.zeros(1, 1, 8, 8))
    assert out.dtype == (expected or torch.float32)


@pytest.mark.parametrize(
    ("capability", "expected"),
    [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)],
)
def test_amp_auto_on_cuda_picks_bf16_only_where_it_is_native(monkeypatch, capability, expected):
    # A T4 (7.5) emulates bfloat16 and torch.cuda.is_bf16_supported() says True there: it must
    # not decide, or the T4 (Colab) would train in slow emulated bfloat16 instead of float16.
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cuda = torch.device("cuda")
    assert amp_dtype("auto", cuda) == expected
    assert amp_dtype(True, cuda) == expected


def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(shared_device, "mps_available", lambda: True)
    assert env.get_device() == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert env.get_device() == torch.device("mps")
    monkeypatch.setattr(shared_device, "mps_available", lambda: False)
    assert env.get_device() == torch.device("cpu")
    with pytest.raises(RuntimeError, match="MPS is not available"):
        env.get_device("mps")


def test_other_seed_other_numbers():
    env.seed_everything(3)
    a = (torch.rand(3), np.random.rand(2))  # noqa: NPY002
    env.seed_everything(4)
    b = (torch.rand(3), np.random.rand(2))  # noqa: NPY002
    assert not torch.equal(a[0], b[0]) and not np.array_equal(a[1], b[1])


def test_course_device_garbage_names_the_variable(monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", "garbage")
    with pytest.raises(ValueError, match="COURSE_DEVICE='garbage' is not a device"):
        env.get_device()
    report = env.check_env(verbose=False)
    assert report["device"] is None  # not "cpu": nothing can run with this setting
    assert any("COURSE_DEVICE='garbage'" in p for p in report["problems"])
    monkeypatch.setenv("COURSE_DEVICE", "xla")
    with pytest.raises(ValueError, match="cpu, cuda or mps only"):
        env.get_device()


def test_check_env_reports_a_bad_mode_instead_of_raising(monkeypatch):
    monkeypatch.setenv("COURSE_MODE", "garbage")
    report = env.check_env(verbose=False)
    assert report["mode"] == "invalid"
    assert any("COURSE_MODE='garbage'" in p for p in report["problems"])


def test_resolve_device_order(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("COURSE_DEVICE", "cpu")
    assert shared_device.resolve_device() == torch.device("cpu")  # the variable beats CUDA
    assert shared_device.resolve_device(like=torch.zeros(1)) == torch.device("cpu")
    assert shared_device.resolve_device("cpu", like=torch.zeros(1)) == torch.device("cpu")
    monkeypatch.delenv("COURSE_DEVICE")
    assert shared_device.resolve_device() == torch.device("cuda")
    with pytest.raises(ValueError, match="device='nonsense'"):
        shared_device.resolve_device("nonsense")


def test_cpu_model_and_bf16_read_cpuinfo(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nmodel name\t: Some CPU 9000\nflags\t\t: fpu avx512f amx_bf16\n"
    )
    monkeypatch.setattr(env, "CPUINFO", info)
    assert env.cpu_model() == "Some CPU 9000" and env.cpu_has_bf16()
    info.write_text("model name\t: Old CPU\nflags\t\t: fpu sse2 avx2\n")
    assert env.cpu_model() == "Old CPU" and not env.cpu_has_bf16()
    monkeypatch.setattr(env, "CPUINFO", tmp_path / "missing")  # no /proc: platform's answer
    assert isinstance(env.cpu_model(), str) and not env.cpu_has_bf16()


@pytest.mark.parametrize(("dryrun", "expected"), [("1", torch.bfloat16), ("0", torch.float32)])
def test_prediction_runs_in_bf16_on_a_native_cpu_only_in_a_dry_run(monkeypatch, dryrun, expected):
    # A dry run of full mode predicts as the GPU it stands for (bf16 autocast); any other run
    # predicts in float32 on the CPU, as the checks against the reference packages expect.
    from course_utils import predict

    monkeypatch.setattr(env, "cpu_has_bf16", lambda: True)
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.setenv("COURSE_DRYRUN", dryrun)
    seen = []
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    net.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    out = predict.predict_tiled(net, np.ones((40, 40), np.float32), tile_size=32, overlap=8)
    assert seen and set(seen) == {expected}
    assert out.dtype == np.float32  # gathered as float32 either way
    assert predict.network_outputs(net, np.ones((40, 40), np.float32)).dtype == np.float32
    assert seen[-1] == expected  # the whole-image path too
