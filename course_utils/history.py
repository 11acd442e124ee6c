"""``History``: the per-epoch records of a training run, as returned by ``train.fit``.

Introduced in notebook 02b.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

#: Columns of a record that say when and how, not how well (left out of plots and summaries).
BOOKKEEPING = ("epoch", "lr", "seconds")


class History:
    """Per-epoch records of a training run, as returned by :func:`fit`.

    A record is a dict: ``epoch`` (1-based), ``train_loss``, with validation ``val_loss`` and
    one key per metric, ``lr`` (used during that epoch) and ``seconds``. ``history[3]`` is a
    record, ``history["val_loss"]`` a column; ``monitor``/``mode`` (``"min"`` or ``"max"``)
    decide :attr:`best_epoch`.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min", records=None) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.records: list[dict[str, Any]] = [dict(r) for r in (records or [])]

    def append(self, record: Mapping[str, Any]) -> None:
        self.records.append(dict(record))

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | str):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"no column {key!r}; the history has {self.keys()}")
            return [r.get(key) for r in self.records]
        return self.records[key]

    def keys(self) -> list[str]:
        """Column names, in first-seen order."""
        return list(dict.fromkeys(k for r in self.records for k in r))

    @property
    def last(self) -> dict[str, Any] | None:
        """The last record (``None`` when empty)."""
        return self.records[-1] if self.records else None

    @property
    def best(self) -> dict[str, Any] | None:
        """The record with the best finite ``monitor`` value; the earliest one on ties."""
        scored = [r for r in self.records if _is_finite(r.get(self.monitor))]
        pick = min if self.mode == "min" else max
        return pick(scored, key=lambda r: r[self.monitor]) if scored else None

    @property
    def best_epoch(self) -> int | None:
        return None if self.best is None else int(self.best["epoch"])

    def as_dict(self) -> dict[str, list]:
        """Columns as ``{name: [value per epoch]}``."""
        return {k: self[k] for k in self.keys()}

    def to_frame(self):
        """The records as a ``pandas.DataFrame`` indexed by epoch."""
        import pandas as pd

        return pd.DataFrame(self.records).set_index("epoch")

    def plot(self, figsize: tuple[float, float] | None = None):
        """Losses in one panel and each metric in its own, against the epoch; best epoch dashed.

        Returns a ``matplotlib.figure.Figure`` with titled, labelled axes.
        """
        import matplotlib.pyplot as plt

        if not self.records:
            raise ValueError("nothing to plot: the history has no epochs yet")
        metrics = [k for k in self.keys() if k not in (*BOOKKEEPING, "train_loss", "val_loss")]
        n = 1 + len(metrics)
        ncols, nrows = min(n, 3), math.ceil(n / 3)
        size = figsize or (4.5 * ncols, 3.4 * nrows)
        fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False)
        axes, epochs = axes.ravel(), self["epoch"]
        for key in ("train_loss", "val_loss"):
            if key in self.keys():
                axes[0].plot(epochs, self[key], marker="o", label=key.replace("_", " "))
        axes[0].set(title="Loss", xlabel="epoch", ylabel="loss")
        for ax, name in zip(axes[1:], metrics, strict=False):
            ax.plot(epochs, self[name], marker="o", color="tab:green", label=name)
            ax.set(title=name, xlabel="epoch", ylabel=name)
        for ax in axes[n:]:
            ax.set_visible(False)
        for ax in axes[:n]:
            if self.best_epoch is not None:
                ax.axvline(self.best_epoch, color="grey", ls="--", label=f"best ({self.monitor})")
            ax.legend(fontsize="small")
        fig.tight_layout()
        return fig

    def __repr__(self) -> str:
        best = self.best
        if best is None:
            return f"History({len(self)} epochs)"
        value = format_value(best[self.monitor])
        return f"History({len(self)} epochs, best epoch {best['epoch']}: {self.monitor}={value})"

    def _repr_html_(self) -> str:
        keys, best = self.keys(), self.best_epoch
        rows = "".join(
            f"<tr{' style=font-weight:bold' if r.get('epoch') == best else ''}>"
            + "".join(f"<td>{format_value(r.get(k))}</td>" for k in keys)
            + "</tr>"
            for r in self.records
        )
        head = "".join(f"<th>{k}</th>" for k in keys)
        return f"<table><caption>{self!r}</caption><tr>{head}</tr>{rows}</table>"


def format_value(value: Any) -> str:
    """A record's value for printing: floats with 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
