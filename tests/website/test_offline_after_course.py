"""The website stays offline when `make course` built it: no widget state, no widget scripts.

`make course` executes the notebooks during the book build, and the executed notebooks keep the
state of their ``tqdm.auto`` progress bars (ipywidgets). With that state, myst-nb would put
require.js and the widget manager from CDNs into the page (``nb_ipywidgets_js``). `make test`
builds the site from the notebooks that nbval executed, which keep no widget state, so the
browser check of ``test_site.py`` never meets such a page. Here a tiny book with the course's
settings (``_config.yml``, the extension in ``docs/_ext``) and one notebook that runs a
``tqdm.auto`` loop is built by ``jupyter-book build``, executing the notebook as `make course`
does; its page must load nothing from outside the site, carry no widget state, show the bar as
text, and load in Chromium with every off-site request blocked.

Another test reads every page of the real ``_build/html`` (when built) for scripts,
stylesheets and other loaded assets whose address leaves the site.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
import test_site as site
import yaml

ROOT = site.ROOT
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# Attributes through which a page loads something (links to other sites, <a href>, are fine).
LOADS = {
    "script": ("src",),
    "img": ("src", "srcset"),
    "iframe": ("src",),
    "audio": ("src",),
    "video": ("src", "poster"),
    "source": ("src", "srcset"),
    "track": ("src",),
    "embed": ("src",),
    "object": ("data",),
}
LINK_RELS = {"stylesheet", "icon", "preload", "modulepreload", "prefetch", "preconnect", "manifest"}
# Outside the site: a scheme with an authority (https://, file://), protocol-relative (//host)
# or an absolute path (/x, the root of the file system when the page is opened from disk).
OFF_SITE = re.compile(r"^\s*(?:[a-zA-Z][a-zA-Z0-9+.-]*:)?/")
BAR = "from tqdm.auto import tqdm\n\nfor _ in tqdm(range(3), desc='steps'):\n    pass"


class _Assets(HTMLParser):
    """The addresses a page loads, and the types of its inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.loads: list[str] = []
        self.script_types: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = {name: value or "" for name, value in attrs}
        names = LOADS.get(tag, ())
        if tag == "link" and LINK_RELS & set(attrs.get("rel", "").lower().split()):
            names = ("href",)
        for name in names:
            if name in attrs:
                value = attrs[name]
                urls = [u.split()[0] for u in value.split(",") if u.strip()]
                self.loads += urls if name == "srcset" else [value]
        if tag == "script":
            self.script_types.append(attrs.get("type", ""))


def _assets(html: str) -> _Assets:
    parser = _Assets()
    parser.feed(html)
    return parser


def off_site(html: str) -> list[str]:
    """The addresses of a page's scripts, stylesheets and other assets that leave the site."""
    return [url for url in _assets(html).loads if OFF_SITE.match(url)]


def _book_config() -> dict:
    """The course's ``_config.yml``, for a book in another folder, executing every notebook."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["title"] = "Tiny book"
    config["exclude_patterns"] = ["_build"]
    config["execute"]["execute_notebooks"] = "force"
    config["bibtex_bibfiles"] = [str(ROOT / f) for f in config.get("bibtex_bibfiles", [])]
    extensions = config["sphinx"].get("local_extensions") or {}
    config["sphinx"]["local_extensions"] = {k: str(ROOT / v) for k, v in extensions.items()}
    return config


@pytest.fixture(scope="module")
def tiny_book(tmp_path_factory) -> Path:
    """A book of one notebook with a tqdm.auto loop, built as `make course` builds the site."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    if not jupyter_book.exists():
        pytest.skip(f"jupyter-book not installed beside {sys.executable}: run `make setup`")
    book = tmp_path_factory.mktemp("book")
    (book / "_config.yml").write_text(yaml.safe_dump(_book_config()))
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n  - file: bars\n")
    (book / "index.md").write_text("# Tiny book\n\nOne notebook with a progress bar.\n")
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    notebook.cells = [nbformat.v4.new_markdown_cell("# Bars"), nbformat.v4.new_code_cell(BAR)]
    nbformat.write(notebook, book / "bars.ipynb")
    # The kernels of .venv, as the Makefile sets it, whatever the user installed elsewhere.
    env = dict(os.environ, JUPYTER_PATH=str(Path(sys.prefix) / "share" / "jupyter"))
    done = subprocess.run(
        [str(jupyter_book), "build", str(book), "--warningiserror", "--keep-going"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, f"the tiny book did not build:\n{done.stdout[-3000:]}"
    return book


def test_the_executed_notebook_saved_widget_state(tiny_book):
    """The case this file is about: the bar is a widget, and its state is in the notebook."""
    executed = nbformat.read(tiny_book / "_build" / "jupyter_execute" / "bars.ipynb", 4)
    views = [
        output["data"][WIDGET_VIEW]["model_id"]
        for cell in executed.cells
        for output in cell.get("outputs", [])
        if WIDGET_VIEW in output.get("data", {})
    ]
    state = executed.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    assert views, "the tqdm.auto bar was no widget: is ipywidgets installed?"
    assert set(views) <= set(state), "the executed notebook kept no state of its widgets"


def test_the_page_has_no_widget_state_and_nothing_off_site(tiny_book):
    html = (tiny_book / "_build" / "html" / "bars.html").read_text()
    assert off_site(html) == [], "the page loads assets from outside the site"
    widget_scripts = [t for t in _assets(html).script_types if "jupyter.widget" in t]
    assert widget_scripts == [], "the page carries widget state or widget views"
    assert re.search(r"steps:\s+\d+%\|.*\| \d/3", html), "the bar is not shown as text"


@pytest.fixture(scope="module")
def browser():
    if site.CHROMIUM is None:
        pytest.skip("Chromium not found (Debian package 'chromium')")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=site.CHROMIUM, headless=True, args=site.FLAGS)
        yield browser
        browser.close()


def test_the_page_loads_offline(browser, tiny_book):
    result = site._inspect(browser, (tiny_book / "_build" / "html" / "bars.html").as_uri())
    assert result["network"] == [], f"requests to the network: {result['network'][:5]}"
    assert result["failed"] == [], f"local assets failed to load: {result['failed']}"
    assert result["text"] > 100, "the page is (nearly) empty"


def test_the_off_site_check_sees_what_myst_nb_adds():
    """The check above can fail: myst-nb's widget scripts from CDNs, and other such assets."""
    page = (
        '<script src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js">'
        '</script><script src="//cdn.example.org/x.js"></script>'
        '<link rel="stylesheet" href="http://example.org/a.css">'
        '<link href="/_static/b.css" rel="stylesheet">'
        '<img srcset="a.png 1x, https://x.org/b.png 2x">'
        '<script src="_static/local.js"></script><link rel="stylesheet" href="_static/c.css">'
        '<a href="https://example.org/">a link</a><img src="data:image/png;base64,AAAA">'
    )
    assert off_site(page) == [
        "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js",
        "//cdn.example.org/x.js",
        "http://example.org/a.css",
        "/_static/b.css",
        "https://x.org/b.png",
    ]


@pytest.mark.skipif(
    not (site.SITE / "index.html").exists(), reason="website not built: run `make course`"
)
def test_no_page_of_the_site_loads_anything_off_site():
    pages = sorted(site.SITE.rglob("*.html"))
    found = {}
    for page in pages:
        urls = off_site(page.read_text(encoding="utf-8", errors="replace"))
        if urls:
            found[str(page.relative_to(site.SITE))] = urls[:3]
    assert not found, "pages that load assets from outside _build/html: " + json.dumps(found)
