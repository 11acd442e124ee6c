"""The course website's own Sphinx extension (``_config.yml``: ``sphinx.local_extensions``).

Three things that plain Jupyter Book settings cannot say:

- **Maths without network.** MathJax 3 is served with the site: the files of the PyPI package
  ``sphinx-mathjax-offline`` (byte for byte the ``es5/`` build of the npm package
  ``mathjax@3.2.2``; pinned in ``requirements/constraints.txt``) are copied into
  ``_build/html/_static/mathjax/``, and ``mathjax_path`` in ``_config.yml`` points there.
  A ``mathjax_path`` on the network, or one that names no file of that copy, is a build warning
  (an error under ``--warningiserror``).
- **Launch buttons that work.** ``repository.url`` in ``_config.yml`` is the one setting behind
  every link to the repository. Empty (the default), the pages get no repository button and no
  launch button. Set to a GitHub or GitLab repository (``https://github.com/OWNER/NAME``), they
  get a repository button and the launch buttons of ``launch_buttons`` (Colab needs GitHub).
  ``scripts/build_notebooks.py`` reads the same setting for the notebooks' set-up cell, through
  :func:`repository`.
- **No widgets on the pages.** The notebooks' ``tqdm.auto`` progress bars are ipywidgets in
  JupyterLab, and a notebook executed by the book build saves their state. myst-nb would put that
  state in the page with require.js and the widget manager from CDNs (``nb_ipywidgets_js``). The
  site serves no widget scripts (``nb_ipywidgets_js: {}`` in ``_config.yml``), shows each widget
  by its text form (``nb_mime_priority_overrides``: the bar as text), and this extension drops
  the saved widget state, so that no page carries it, whichever command executed the notebooks.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import NamedTuple

MATHJAX_PACKAGE = "sphinx-mathjax-offline"
# The files' folder inside that package; it holds one folder, mathjax/, copied as _static/mathjax.
MATHJAX_FOLDER = "sphinx-mathjax-offline/static"
URL = re.compile(r"https://(?P<host>github\.com|gitlab\.com)/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+)")


class Repository(NamedTuple):
    """The course repository, as set in ``_config.yml`` (``repository.url`` and ``.branch``)."""

    url: str
    branch: str
    host: str


def repository(config: dict) -> Repository | None:
    """The repository that ``_config.yml`` names, or None when ``repository.url`` is empty.

    Parameters
    ----------
    config : dict
        ``_config.yml`` as read by ``yaml.safe_load`` (only its ``repository`` part is read).

    Raises
    ------
    ValueError
        When the URL is set but is not ``https://github.com/OWNER/NAME`` (or GitLab's).
    """
    settings = config.get("repository") or {}
    url = (settings.get("url") or "").strip()
    if not url:
        return None
    match = URL.fullmatch(url)
    if match is None or match["name"].endswith(".git"):
        raise ValueError(
            f"repository.url in _config.yml is {url!r}: write it as "
            "https://github.com/OWNER/NAME (or https://gitlab.com/OWNER/NAME), without '.git' "
            "or a trailing '/', or leave it empty for no launch buttons"
        )
    return Repository(url, str(settings.get("branch") or "main"), match["host"])


def mathjax_static_dir() -> Path:
    """The installed folder whose ``mathjax/`` subfolder becomes ``_static/mathjax/``."""
    from sphinx.errors import ExtensionError

    try:
        folder = Path(str(metadata.distribution(MATHJAX_PACKAGE).locate_file(MATHJAX_FOLDER)))
    except metadata.PackageNotFoundError:
        folder = None
    if folder is None or not (folder / "mathjax").is_dir():
        raise ExtensionError(
            f"MathJax for the website is missing: the package {MATHJAX_PACKAGE} (pinned in "
            "requirements/constraints.txt) is not installed. Run `make setup`."
        )
    return folder


def _serve_mathjax(app, config) -> None:
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    static = mathjax_static_dir()
    config.html_static_path.append(str(static))
    path = config.mathjax_path
    if "://" in path or path.startswith("//"):
        logger.warning(
            f"mathjax_path is {path!r}, on the network: pages would show raw TeX offline. "
            "Point it at the local copy, e.g. mathjax/tex-mml-chtml.js"
        )
    elif not (static / path).is_file():
        logger.warning(
            f"mathjax_path {path!r} names no file of the MathJax copy in {static} "
            "(it is relative to _static/, e.g. mathjax/tex-mml-chtml.js)"
        )


def _repository_buttons(app, config) -> None:
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    options = config.html_theme_options
    settings = {
        "url": options.get("repository_url", ""),
        "branch": options.get("repository_branch"),
    }
    try:
        repo = repository({"repository": settings})
    except ValueError as err:
        logger.warning(str(err))
        repo = None
    launch = dict(options.get("launch_buttons") or {})
    if repo is None:
        # The theme builds its launch links from the repository URL: without one, none.
        options["repository_url"] = ""
        options["launch_buttons"] = {}
        options["use_repository_button"] = False
        return
    if repo.host != "github.com":
        launch.pop("colab_url", None)  # Colab opens notebooks from GitHub only
    options["launch_buttons"] = launch
    options["use_repository_button"] = True


def _drop_widget_state(app, env) -> None:
    """Forget the widget state (and any widget script) that myst-nb noted for the pages.

    myst-nb notes, per notebook, ``js_files['ipywidgets_state']`` (the saved state, inlined in the
    page) and ``js_files['ipywidgets_<i>']`` (the scripts of ``nb_ipywidgets_js``). Runs after
    every read, cached documents included, before the pages are written.
    """
    for data in getattr(env, "nb_metadata", {}).values():
        scripts = data.get("js_files") or {}
        for key in [k for k in scripts if k.startswith("ipywidgets_")]:
            del scripts[key]


def setup(app):
    app.connect("config-inited", _serve_mathjax)
    app.connect("config-inited", _repository_buttons)
    app.connect("env-updated", _drop_widget_state)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
