"""Browser check of the built website: every page loads offline, with its figures and its maths.

Runs after the site is built (``make test`` builds it from the notebooks it executed; ``make
course`` builds it too). Skipped, with the reason, when Chromium or the built site is missing.
Every request that would leave the machine is blocked and fails the page: the site must work
with no network. Every formula must be typeset by MathJax: a page fails when a formula is left
as raw TeX (``\\(I\\)``, ``$$``), when MathJax reports a TeX error, or when MathJax never ran.
Screenshots of the home page and one chapter go to ``_build/screenshots/``.

``COURSE_BOOK=<folder>`` checks another book (its ``_toc.yml`` and ``_build/html``), e.g. a
small one made to try a change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BOOK = Path(os.environ.get("COURSE_BOOK", ROOT)).resolve()
SITE = BOOK / "_build" / "html"
SHOTS = BOOK / "_build" / "screenshots"
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
LOCAL = ("file:", "data:", "blob:", "about:")
MATHJAX = "_static/mathjax/tex-mml-chtml.js"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found (Debian package 'chromium')"),
    pytest.mark.skipif(
        not (SITE / "index.html").exists(), reason="website not built: run `make course`"
    ),
]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [chapter["file"] for chapter in part.get("chapters", [])]
    return files


CHAPTERS = _toc_files() if (BOOK / "_toc.yml").exists() else []

# Run in the page once it has loaded. MathJax 3 is loaded with `defer`, so by the load event it
# has either run (and `MathJax.startup.promise` settles when the page is typeset) or failed.
# Sphinx writes every formula as an element of class `math`, holding `\(...\)` or `\[...\]`;
# MathJax replaces that text by an <mjx-container>. Raw TeX left in the prose (outside code and
# typeset maths) is maths that MathJax never saw: a formula inside raw HTML, say.
INSPECT = r"""async () => {
    const startup = window.MathJax && window.MathJax.startup;
    let mathjax = null;
    if (startup && startup.promise) {
        await startup.promise;
        mathjax = window.MathJax.version || "?";
    }
    // A TeX error becomes an <merror>; an undefined macro, red text (MathJax's noundefined).
    const texErrors = () => {
        const found = [];
        if (!mathjax) return found;
        for (const item of window.MathJax.startup.document.math) {
            item.root.walkTree(node => {
                if (node.isKind("merror")) {
                    found.push(`${node.attributes.get("data-mjx-error")} in ${item.math}`);
                } else if (node.isKind("mtext") && node.attributes.get("mathcolor") === "red"
                           && node.getText().startsWith("\\")) {
                    found.push(`undefined ${node.getText()} in ${item.math}`);
                }
            });
        }
        return found;
    };
    const maths = Array.from(document.querySelectorAll(".math"));
    const prose = (document.querySelector("main") || document.body).cloneNode(true);
    prose.querySelectorAll("pre, code, script, style, textarea, mjx-container")
        .forEach(e => e.remove());
    const tex = /\\\(|\\\)|\\\[|\\\]|\$\$|\\begin\{|\$[^$\n]{0,200}[\\^_{}][^$\n]{0,200}\$/g;
    return {
        title: document.title,
        figures: document.querySelectorAll(".cell_output img").length,
        broken: Array.from(document.images)
            .filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src),
        text: document.body.innerText.length,
        mathjax: mathjax,
        maths: maths.length,
        unrendered: maths.filter(m => !m.querySelector("mjx-container"))
            .map(m => m.textContent.trim().slice(0, 60)),
        tex_errors: texErrors(),
        raw_tex: (prose.textContent.match(tex) || []).slice(0, 5),
    };
}"""


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield browser
        browser.close()


def _inspect(browser, url: str, screenshot: str | None = None) -> dict:
    """Load one page with the network blocked; what it shows, and what it tried to fetch."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    failed: list[str] = []
    network: list[str] = []
    page.route(lambda u: not u.startswith(LOCAL), lambda route: route.abort())
    page.on("request", lambda r: network.append(r.url) if not r.url.startswith(LOCAL) else None)
    page.on("requestfailed", lambda r: failed.append(r.url) if r.url.startswith("file:") else None)
    page.goto(url, wait_until="load")
    result = page.evaluate(INSPECT)
    if screenshot:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / screenshot), full_page=False)
    page.close()
    result["failed"], result["network"] = failed, network
    return result


def _visit(browser, name: str, screenshot: str | None = None) -> dict:
    return _inspect(browser, (SITE / f"{name}.html").as_uri(), screenshot)


def maths_problems(result: dict) -> list[str]:
    """What is wrong with a page's maths, in words (empty when every formula is typeset)."""
    shown = lambda items: " | ".join(items[:3]) + (" | ..." if len(items) > 3 else "")
    problems = []
    if result["maths"] and result["mathjax"] is None:
        problems.append(f"MathJax did not run ({result['maths']} formulas on the page)")
    if result["unrendered"]:
        problems.append(
            f"{len(result['unrendered'])} formulas left as raw TeX: " + shown(result["unrendered"])
        )
    if result["tex_errors"]:
        problems.append("TeX errors: " + shown(result["tex_errors"]))
    if result["raw_tex"]:
        problems.append("raw TeX in the text, never typeset: " + shown(result["raw_tex"]))
    return problems


def test_every_toc_page_was_built():
    missing = [name for name in CHAPTERS if not (SITE / f"{name}.html").exists()]
    assert not missing, f"pages in _toc.yml without HTML: {missing}"


@pytest.mark.parametrize("name", CHAPTERS)
def test_page_loads_offline_with_its_figures_and_maths(browser, name):
    result = _visit(browser, name)
    problems = []
    if result["text"] <= 200:
        problems.append("page is (nearly) empty")
    if result["network"]:
        problems.append(f"requests to the network: {result['network'][:5]}")
    if result["failed"]:
        problems.append(f"local assets failed to load: {result['failed']}")
    if result["broken"]:
        problems.append(f"broken images: {result['broken']}")
    if name.startswith("notebooks/") and result["figures"] == 0:
        problems.append("no figure among the cell outputs")
    problems += maths_problems(result)
    assert not problems, f"{name}: " + "; ".join(problems)


def test_the_site_serves_its_own_mathjax():
    assert (SITE / MATHJAX).is_file(), f"{MATHJAX} is not in the built site"
    pages = [SITE / f"{name}.html" for name in CHAPTERS]
    with_maths = [p for p in pages if p.exists() and 'class="math' in p.read_text()]
    assert with_maths, "no page has maths: the maths check above checked nothing"
    for page in with_maths:
        html = page.read_text()
        assert "mathjax/tex-mml-chtml.js" in html, f"{page.name}: does not load the local MathJax"


def _page(tmp_path: Path, body: str, script: str) -> str:
    """A page shaped like Sphinx's: MathJax's settings, its script, maths in a MyST section."""
    path = tmp_path / "page.html"
    path.write_text(
        "<!DOCTYPE html><html><head>"
        '<script>window.MathJax = {"options": {"processHtmlClass": '
        '"tex2jax_process|mathjax_process|math|output_area"}}</script>'
        f'<script defer src="{script}"></script></head><body><main>'
        f'<section class="tex2jax_ignore mathjax_ignore">{body}</section></main></body></html>'
    )
    return path.as_uri()


def test_the_maths_check_fails_on_broken_maths(browser, tmp_path):
    """The check above can fail: MathJax from the network, a TeX error, maths left in raw HTML."""
    local = (SITE / MATHJAX).as_uri()
    good = '<p>The intensity <span class="math notranslate nohighlight">\\(I\\)</span>.</p>'
    result = _inspect(browser, _page(tmp_path, good, local))
    assert maths_problems(result) == [] and result["mathjax"].startswith("3.")

    cdn = _inspect(browser, _page(tmp_path, good, "https://cdn.jsdelivr.net/npm/mathjax@3/x.js"))
    assert cdn["network"] and cdn["unrendered"] == ["\\(I\\)"]
    assert maths_problems(cdn)[0].startswith("MathJax did not run")

    bad = (
        '<p><span class="math notranslate nohighlight">\\(\\notamacro{x}\\)</span>'
        '<span class="math notranslate nohighlight">\\(x^2^3\\)</span></p>'
        "<details><summary>Answer</summary>the loss is $w_c(x) + w_0$</details>"
    )
    problems = maths_problems(_inspect(browser, _page(tmp_path, bad, local)))
    errors = next(p for p in problems if p.startswith("TeX errors"))
    assert "undefined \\notamacro" in errors and "Double exponent" in errors, problems
    assert any("raw TeX in the text" in p for p in problems), problems


def test_launch_buttons_follow_the_repository_setting():
    config = yaml.safe_load((BOOK / "_config.yml").read_text())
    url = ((config.get("repository") or {}).get("url") or "").strip()
    notebooks = [SITE / f"{n}.html" for n in CHAPTERS if n.startswith("notebooks/")]
    for page in (p for p in notebooks if p.exists()):
        html = page.read_text()
        if not url:
            for link in ("colab.research.google.com", "mybinder.org", "source-repository-button"):
                assert link not in html, f"{page.name}: {link} without repository.url"
        else:
            assert f'{url}"' in html or f"{url}/" in html, f"{page.name}: no link to {url}"
            if url.startswith("https://github.com/"):
                assert "colab.research.google.com/github/" in html, f"{page.name}: no Colab"


def test_screenshots(browser):
    chapter = next(name for name in CHAPTERS if name.startswith("notebooks/"))
    _visit(browser, CHAPTERS[0], screenshot="home.png")
    _visit(browser, chapter, screenshot="chapter.png")
    for shot in ("home.png", "chapter.png"):
        assert (SHOTS / shot).stat().st_size > 10_000, f"{shot} looks empty"


GLUED = """() => ({
    pasted: Array.from(document.querySelectorAll(".pasted-text")).map(e => e.textContent),
    raw: (document.querySelector("main") || document.body).innerText.includes("{glue"),
    comment: (document.querySelector("main") || document.body).innerText.includes("constants:"),
})"""


def _glued_chapters() -> list[tuple[str, int]]:
    """(page, number of glued numbers in its source) of every chapter that glues numbers."""
    rows = []
    for name in CHAPTERS:
        source = BOOK / "notebooks" / "src" / f"{Path(name).name}.py"
        if name.startswith("notebooks/") and source.exists():
            count = source.read_text(encoding="utf-8").count("{glue:text}`")
            if count:
                rows.append((name, count))
    return rows


@pytest.mark.parametrize(("name", "count"), _glued_chapters())
def test_the_numbers_in_the_prose_are_those_of_the_run(browser, name, count):
    """Every {glue:text} role of a chapter shows its value from the executed notebook: no role
    left as raw text, none empty, and no comment that declares the text's constants."""
    page = browser.new_page()
    page.route(lambda u: not u.startswith(LOCAL), lambda route: route.abort())
    page.goto((SITE / f"{name}.html").as_uri(), wait_until="load")
    result = page.evaluate(GLUED)
    page.close()
    assert not result["raw"], f"{name}: a glue role is shown as raw text"
    assert not result["comment"], f"{name}: a constants comment is shown on the page"
    assert len(result["pasted"]) == count, (name, len(result["pasted"]), count)
    assert all(text.strip() for text in result["pasted"]), result["pasted"]


def test_the_glued_chapters_are_checked():
    assert len(_glued_chapters()) >= 6, "07-10b glue their numbers: the check above lost them"
