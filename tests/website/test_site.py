"""Browser check of the built website: every chapter loads in headless Chromium with its figures.

Runs after the site is built (``make test`` builds it from the notebooks it executed; ``make
course`` builds it too). Skipped, with the reason, when Chromium or the built site is missing.
Screenshots of the home page and one chapter go to ``_build/screenshots/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
SHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
# The machine may have no network: keep Chromium from calling home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (Debian package 'chromium')"),
    pytest.mark.skipif(
        not (SITE / "index.html").exists(), reason="website not built: run `make course`"
    ),
]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return files


CHAPTERS = _toc_files()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def _visit(browser, name: str, screenshot: str | None = None) -> dict:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith("file:") else None)
    page.goto((SITE / f"{name}.html").as_uri(), wait_until="load")
    result = page.evaluate(
        """() => ({
            title: document.title,
            figures: document.querySelectorAll(".cell_output img").length,
            broken: Array.from(document.images)
                .filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
            text: document.body.innerText.length,
        })"""
    )
    if screenshot:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / screenshot), full_page=False)
    page.close()
    result["failed"] = failed
    return result


def test_every_toc_page_was_built():
    missing = [name for name in CHAPTERS if not (SITE / f"{name}.html").exists()]
    assert not missing, f"pages in _toc.yml without HTML: {missing}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_page_loads_with_its_figures(browser, name):
    result = _visit(browser, name)
    assert result["text"] > 200, f"{name}: page is (nearly) empty"
    assert not result["failed"], f"{name}: local assets failed to load: {result['failed']}"
    assert not result["broken"], f"{name}: broken images: {result['broken']}"
    if name.startswith("notebooks/"):
        assert result["figures"] > 0, f"{name}: no figure among the cell outputs"


def test_screenshots(browser):
    chapter = next(name for name in CHAPTERS if name.startswith("notebooks/"))
    _visit(browser, "intro", screenshot="home.png")
    _visit(browser, chapter, screenshot="chapter.png")
    for shot in ("home.png", "chapter.png"):
        assert (SHOTS / shot).stat().st_size > 10_000, f"{shot} looks empty"
