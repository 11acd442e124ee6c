"""History: the records of a training run, its best epoch and its views."""

from __future__ import annotations

import math

import pytest

from course_utils.history import History


def test_history_records_best_and_views():
    records = [
        {"epoch": 1, "train_loss": 1.0, "val_loss": 0.9, "dice": 0.2},
        {"epoch": 2, "train_loss": 0.8, "val_loss": math.nan, "dice": 0.6},
        {"epoch": 3, "train_loss": 0.7, "val_loss": 0.5, "dice": 0.4},
    ]
    assert History("val_loss", "min", records).best_epoch == 3  # NaN never counts as best
    history = History("dice", "max", records)
    assert history.best_epoch == 2 and history.last["epoch"] == 3
    assert history.as_dict()["dice"] == [0.2, 0.6, 0.4]
    assert list(history.to_frame().index) == [1, 2, 3]
    assert "best epoch 2" in repr(history) and "<table>" in history._repr_html_()
    assert History().best_epoch is None and History().last is None
    with pytest.raises(ValueError, match="mode"):
        History("dice", "largest")
    with pytest.raises(KeyError, match="iou"):
        history["iou"]
