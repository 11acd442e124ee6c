"""Shared fixtures. Tests never download: COURSE_OFFLINE=1 for the whole session."""

from __future__ import annotations

import os
import sys

import matplotlib
import pytest

os.environ["COURSE_OFFLINE"] = "1"
os.environ.setdefault("COURSE_MODE", "fast")
# Agg for the tests in this process only: an environment variable would reach the notebook
# kernels that nbval starts and silence their inline figures.
matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    """Every test's figures are closed after it (pyplot is not imported for tests without any)."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def bbbc039_labels():
    """Four BBBC039 test-split instance label images (int32, 520x696), or skip when unavailable."""
    from course_utils.data import DataUnavailableError, load_split

    try:
        _, labels = load_split("bbbc039", "test", n=4, normalize=False)
    except DataUnavailableError as err:
        pytest.skip(f"BBBC039 is not in the mirror or cache: {err}")
    return labels


@pytest.fixture(scope="session")
def bbbc039_pairs():
    """Four BBBC039 test-split (image float32 normalised, labels int32) pairs, or skip."""
    from course_utils.data import DataUnavailableError, load_split

    try:
        images, labels = load_split("bbbc039", "test", n=4)
    except DataUnavailableError as err:
        pytest.skip(f"BBBC039 is not in the mirror or cache: {err}")
    return images, labels
