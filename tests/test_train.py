"""Tests for course_utils.train: exact resume, seeding, checkpoints, History."""

from __future__ import annotations

import math

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from course_utils.train import History, fit, load_checkpoint

torch.set_num_threads(1)


class NoisyPairs(Dataset):
    """Tiny segmentation pairs with augmentation from all three global RNGs and set_epoch."""

    def __init__(self, n: int = 24, size: int = 12, with_weights: bool = False) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 1, size, size, generator=g)
        self.y = (self.x > 0.3).float()
        self.with_weights = with_weights
        self.epoch = None
        self.epochs_seen: list[int] = []

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.epochs_seen.append(epoch)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        noise = np.random.normal(0.0, 0.1, self.x[i].shape).astype(np.float32)  # noqa: NPY002
        x = self.x[i] + torch.from_numpy(noise) + 0.01 * torch.rand(())
        if self.with_weights:
            # Weight map = sample index, so a test can see which sample reached the loss.
            return x, self.y[i], torch.full_like(self.y[i], float(i))
        return x, self.y[i]


def tiny_net(seed: int = 0, width: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Dropout2d(0.25),
        nn.Conv2d(width, 1, 3, padding=1),
    )


def accuracy(out: torch.Tensor, y: torch.Tensor) -> float:
    return float(((out > 0).float() == y).float().mean())


def loaders(**kw):
    train_ds, val_ds = NoisyPairs(**kw), NoisyPairs(n=8, **kw)
    return (
        DataLoader(train_ds, batch_size=8, shuffle=True),
        DataLoader(val_ds, batch_size=5),
    )


def run(model, ckpt=None, epochs=4, seed=0, **kw):
    train, val = loaders()
    options = dict(
        loss_fn=nn.BCEWithLogitsLoss(),
        lr=1e-2,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5),
        metrics={"acc": accuracy},
        device="cpu",
        progress=False,
    )
    options.update(kw)
    history = fit(model, train, val, epochs=epochs, checkpoint_dir=ckpt, seed=seed, **options)
    return history, train.dataset


def without_time(history: History) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history.records]


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_resume_after_interruption_equals_uninterrupted_run(tmp_path):
    reference = tiny_net()
    h_ref, _ = run(reference, tmp_path / "straight", epochs=4)

    run(tiny_net(), tmp_path / "interrupted", epochs=2)
    resumed = tiny_net(seed=123)  # a fresh object: all state must come from last.pt
    h_res, data = run(resumed, tmp_path / "interrupted", epochs=4)

    assert data.epochs_seen == [2, 3]
    assert_same_state(resumed, reference)
    assert without_time(h_res) == without_time(h_ref)
    assert h_ref["lr"] == pytest.approx([1e-2, 5e-3, 2.5e-3, 1.25e-3])  # scheduler restored


def test_same_seed_same_result_other_seed_differs():
    a, b, c = tiny_net(), tiny_net(), tiny_net()
    h_a, _ = run(a, epochs=2, seed=5)
    h_b, _ = run(b, epochs=2, seed=5)
    h_c, _ = run(c, epochs=2, seed=6)
    assert_same_state(a, b)
    assert without_time(h_a) == without_time(h_b)
    assert h_c["train_loss"] != h_a["train_loss"]


def test_checkpoints_written_and_best_follows_monitor(tmp_path):
    scores = [0.5, 0.9, 0.7, 0.8]  # best at epoch 2 (mode "max"); val_loss would not say so
    train, val = loaders()
    metric = {"score": lambda out, y: scores[train.dataset.epoch]}
    common = dict(loss_fn=nn.BCEWithLogitsLoss(), metrics=metric, device="cpu", progress=False)
    history = fit(
        tiny_net(),
        train,
        val,
        epochs=4,
        checkpoint_dir=tmp_path / "run",
        monitor="score",
        monitor_mode="max",
        **common,
    )
    assert history.best_epoch == 2
    assert history["score"] == pytest.approx(scores)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["best.pt", "last.pt"]

    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert (best["epoch"], last["epoch"]) == (2, 4)
    assert {"model", "optimizer", "scheduler", "scaler", "history", "rng"} <= set(last)
    two_epochs = tiny_net()
    fit(two_epochs, *loaders(), epochs=2, **common)
    for key, value in two_epochs.state_dict().items():
        assert torch.equal(best["model"][key], value), key


def test_mismatched_checkpoint_raises_and_leaves_file(tmp_path):
    run(tiny_net(width=4), tmp_path, epochs=1)
    before = (tmp_path / "last.pt").read_bytes()
    other = tiny_net(width=8)
    weights = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(ValueError, match="does not fit this model"):
        run(other, tmp_path, epochs=2)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert_same_state(other, _with_state(tiny_net(width=8), weights))


def _with_state(model: nn.Module, state: dict) -> nn.Module:
    model.load_state_dict(state)
    return model


def test_resume_false_refuses_to_overwrite(tmp_path):
    run(tiny_net(), tmp_path, epochs=1)
    with pytest.raises(FileExistsError, match="resume=False"):
        run(tiny_net(), tmp_path, epochs=2, resume=False)


def test_finished_run_returns_stored_history_without_training(tmp_path):
    trained = tiny_net()
    history, _ = run(trained, tmp_path, epochs=2)

    def must_not_train(*args):
        raise AssertionError("fit trained although last.pt already holds the epochs")

    again = tiny_net(seed=7)
    h2, _ = run(again, tmp_path, epochs=2, loss_fn=must_not_train)
    assert without_time(h2) == without_time(history)
    assert_same_state(again, trained)


def test_loss_fn_receives_extra_batch_items():
    seen = []

    def weighted_bce(out, y, w):
        seen.append(w.detach().clone())
        return (
            nn.functional.binary_cross_entropy_with_logits(out, y, reduction="none") * 0 * w
        ).mean()

    train, _ = loaders(with_weights=True)
    model = tiny_net()
    params = [p.detach().clone() for p in model.parameters()]
    fit(model, train, loss_fn=weighted_bce, epochs=1, device="cpu", progress=False)
    indices = sorted(int(v) for w in seen for v in w[:, 0, 0, 0])
    assert indices == list(range(len(train.dataset)))
    # A zero loss gives zero gradients, and Adam then leaves the weights alone.
    for before, after in zip(params, model.parameters(), strict=True):
        assert torch.equal(before, after)


def test_history_plot_returns_labelled_figure():
    history, _ = run(tiny_net(), epochs=2)
    fig = history.plot()
    assert isinstance(fig, matplotlib.figure.Figure)
    loss_ax, acc_ax = fig.axes[:2]
    assert (loss_ax.get_xlabel(), loss_ax.get_ylabel()) == ("epoch", "loss")
    assert (acc_ax.get_xlabel(), acc_ax.get_ylabel()) == ("epoch", "acc")
    labels = loss_ax.get_legend_handles_labels()[1]
    assert {"train loss", "val loss"} <= set(labels)
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"seed": -1}, ValueError, "seed"),
        ({"monitor": "dice"}, ValueError, "monitor"),
        ({"amp": "fp8"}, ValueError, "amp"),
        ({"channels_last": "yes"}, ValueError, "channels_last"),
        ({"loss_fn": lambda out, y: (out - y) ** 2}, ValueError, "scalar"),
        ({"loss_fn": lambda out, y: (out * math.nan).mean()}, FloatingPointError, "nan"),
        (
            {
                "scheduler": torch.optim.lr_scheduler.StepLR(
                    torch.optim.SGD([nn.Parameter(torch.ones(1))]), 1
                )
            },
            ValueError,
            "another optimizer",
        ),  # noqa: E501
    ],
)
def test_bad_arguments_raise_clearly(kwargs, error, match):
    with pytest.raises(error, match=match):
        run(tiny_net(), **{"epochs": 1, **kwargs})


def test_loader_must_yield_pairs():
    bad = [{"x": torch.zeros(2, 1, 4, 4)}]
    with pytest.raises(TypeError, match=r"\(x, y\)"):
        fit(tiny_net(), bad, loss_fn=nn.MSELoss(), epochs=1, device="cpu", progress=False)


def test_load_checkpoint_file_directory_and_plain_state_dict(tmp_path):
    trained = tiny_net()
    run(trained, tmp_path / "run", epochs=2)
    fresh = tiny_net(seed=3)
    state = load_checkpoint(fresh, tmp_path / "run" / "last.pt")
    assert state["epoch"] == 2
    assert_same_state(fresh, trained)
    assert load_checkpoint(tiny_net(seed=4), tmp_path / "run")["epoch"] in (1, 2)  # best.pt
    torch.save(trained.state_dict(), tmp_path / "plain.pt")
    plain = tiny_net(seed=5)
    load_checkpoint(plain, tmp_path / "plain.pt")
    assert_same_state(plain, trained)
    with pytest.raises(ValueError, match="does not fit"):
        load_checkpoint(tiny_net(width=6), tmp_path / "plain.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(plain, tmp_path / "missing.pt")


def test_schedulers_plateau_gets_monitored_value_and_one_cycle_steps_per_batch():
    train, val = loaders()

    def lrs(scores, factory, monitor="score"):
        metric = {"score": lambda out, y: scores[train.dataset.epoch]}
        history = fit(
            tiny_net(),
            train,
            val,
            loss_fn=nn.BCEWithLogitsLoss(),
            epochs=len(scores),
            lr=1e-2,
            scheduler=factory,
            metrics=metric,
            monitor=monitor,
            monitor_mode="max",
            device="cpu",
            progress=False,
        )
        return history["lr"]

    plateau = lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(opt, "max", 0.5, 0)  # noqa: E731
    assert lrs([0.1, 0.2, 0.3], plateau) == pytest.approx([1e-2] * 3)
    assert lrs([0.3, 0.2, 0.1], plateau) == pytest.approx([1e-2, 1e-2, 5e-3])

    steps = len(train) * 2
    one_cycle = lambda opt: torch.optim.lr_scheduler.OneCycleLR(opt, 0.05, total_steps=steps)  # noqa: E731
    expected_opt = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=1e-2)
    expected = one_cycle(expected_opt)
    for _ in range(len(train)):
        expected_opt.step()
        expected.step()
    assert lrs([0.1, 0.2], one_cycle)[1] == pytest.approx(expected_opt.param_groups[0]["lr"])


def test_without_validation_monitors_train_loss(tmp_path):
    train, _ = loaders()
    history = fit(
        tiny_net(),
        train,
        loss_fn=nn.BCEWithLogitsLoss(),
        epochs=2,
        device="cpu",
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert history.monitor == "train_loss" and "val_loss" not in history.keys()
    assert (tmp_path / "best.pt").exists()


def test_progress_bar_and_summary_line(capsys):
    run(tiny_net(), epochs=1, progress=True)
    out = capsys.readouterr()
    assert "epoch 1/1" in out.out and "train_loss" in out.out and "acc" in out.out
    assert "loss=" in out.err  # the running loss in the tqdm bar


def test_mixed_precision_and_channels_last_on_cpu_stay_close():
    base, _ = run(tiny_net(), epochs=2)
    for options in ({"amp": "bf16"}, {"amp": "fp16"}, {"channels_last": True}):
        other, _ = run(tiny_net(), epochs=2, **options)
        assert other["train_loss"] == pytest.approx(base["train_loss"], rel=0.05), options


def test_checkpoint_dir_depends_on_mode(monkeypatch, tmp_path):
    from course_utils.train import checkpoint_dir

    monkeypatch.setenv("COURSE_MODE", "fast")
    assert checkpoint_dir("unet", root=tmp_path) == tmp_path / "fast" / "unet"
    monkeypatch.setenv("COURSE_MODE", "full")
    monkeypatch.setenv("COURSE_CHECKPOINTS", str(tmp_path / "ck"))
    assert checkpoint_dir("unet") == tmp_path / "ck" / "full" / "unet"
    with pytest.raises(ValueError, match="plain folder name"):
        checkpoint_dir("../escape")


@pytest.mark.parametrize(("amp", "scaled"), [("fp16", True), ("bf16", False), (False, False)])
def test_grad_scaler_only_with_float16(tmp_path, amp, scaled):
    # bfloat16 has the range of float32: scaling its loss would only cost time.
    run(tiny_net(), tmp_path, epochs=1, amp=amp)
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert bool(state["scaler"]) == scaled


def test_metrics_get_float32_also_for_tuple_outputs_under_bf16():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.a(x), self.b(x)

    seen = []

    def metric(out, y):
        seen.append(tuple(o.dtype for o in out))
        return 0.0

    def loss_fn(out, y):
        return nn.functional.binary_cross_entropy_with_logits(out[0].float(), y)

    train, val = loaders()
    fit(
        TwoHeads(),
        train,
        val,
        loss_fn=loss_fn,
        metrics={"m": metric},
        epochs=1,
        amp="bf16",
        device="cpu",
        progress=False,
    )
    assert seen and all(dtypes == (torch.float32, torch.float32) for dtypes in seen)


def test_cuda_rng_states_restored_for_the_gpus_present(monkeypatch):
    # A checkpoint written on a two-GPU machine, resumed on a one-GPU machine.
    from course_utils import checkpoint

    state = {**checkpoint.rng_state(), "cuda": ["state of gpu 0", "state of gpu 1"]}
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: seen.append(list(states)))
    checkpoint.set_rng_state(state)
    assert seen == [["state of gpu 0"]]
