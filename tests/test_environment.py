"""The environment files agree: environment.yml carries the lock's exact pins."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)")
# The list of packages that must be pinned in both files.
REQUIRED = {
    "torch",
    "torchvision",
    "jupyterlab",
    "ipywidgets",
    "matplotlib",
    "scikit-image",
    "albumentations",
    "jupytext",
    "nbval",
    "tqdm",
    "pooch",
    "tifffile",
    "h5py",  # the GoNuclear volumes of notebook 11
}
# The website: its builder, and the MathJax it serves (the pages render maths with no network).
REQUIRED |= {"jupyter-book", "sphinx-mathjax-offline"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _lock() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines():
        if (m := PIN.match(line)) is not None:
            pins[_norm(m[1])] = m[2]
    return pins


def _conda_pins() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    return {_norm(m[1]): m[2] for item in pip_section if (m := PIN.match(item)) is not None}


def test_lock_pins_torch_exactly():
    lock = _lock()
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1"


def test_environment_yml_matches_lock():
    lock, conda = _lock(), _conda_pins()
    disagree = {n: (v, lock.get(n)) for n, v in conda.items() if lock.get(n) != v}
    assert not disagree, f"environment.yml vs constraints.txt (yml, lock): {disagree}"


def test_required_packages_pinned_in_both():
    lock, conda = _lock(), _conda_pins()
    assert REQUIRED - lock.keys() == set(), "missing from constraints.txt"
    assert REQUIRED - conda.keys() == set(), "missing from environment.yml"


def test_installed_versions_match_lock():
    from importlib.metadata import PackageNotFoundError, version

    lock = _lock()
    wrong = {}
    for name in REQUIRED:
        try:
            installed = version(name).split("+")[0]
        except PackageNotFoundError:
            continue
        if installed != lock[name]:
            wrong[name] = (installed, lock[name])
    assert not wrong, f"installed vs locked: {wrong}"


def test_the_website_serves_the_pinned_mathjax():
    """The file mathjax_path names is MathJax 3.2.2, from sphinx-mathjax-offline 0.0.2."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "course_site", ROOT / "docs" / "_ext" / "course_site.py"
    )
    site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site)
    folder = site.mathjax_static_dir() / "mathjax"  # fails, saying so, when it is not installed
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    path = config["sphinx"]["config"]["mathjax_path"]
    assert "://" not in path, f"mathjax_path {path!r} is on the network"
    script = (folder.parent / path).read_text(encoding="utf-8")
    assert 'VERSION="3.2.2"' in script.replace(" ", ""), f"{path} is not MathJax 3.2.2"
    assert (folder / "output" / "chtml" / "fonts" / "woff-v2").is_dir(), "MathJax fonts missing"
