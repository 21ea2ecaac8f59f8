"""Sphinx configuration of the torch_geometric_erwin documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``. Pages
are Markdown (MyST) or reStructuredText; the API reference is generated from
the docstrings. Figures are drawn at build time by ``docs/figures.py`` with the
package's own :func:`torch_geometric_erwin.utils.plot_ball_tree`. Markdown
notes that other parts of the project keep in ``docs/`` (deviations,
benchmarks, datasets, ...) and that :file:`index.md` does not list are added to
a "More notes" table of contents, so every page is reachable without this file
knowing about it.
"""
import importlib.util
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import torch_geometric_erwin  # noqa: E402

project = "torch_geometric_erwin"
author = "torch_geometric_erwin contributors"
copyright = "2026, " + author
release = version = torch_geometric_erwin.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated/**/*.md", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3
# Notes written by other parts of the project start at any heading level.
suppress_warnings = ["myst.header"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# PyG-style "Shapes:" sections render as their own rubric.
napoleon_custom_sections = ["Shapes"]

html_theme = "alabaster"
html_title = f"torch_geometric_erwin {release}"
html_static_path = []

TOCTREE = re.compile(r"```\{toctree\}(.*?)```", re.S)


def listed_documents(index_text):
    """Document names that the toctrees of ``index.md`` list."""
    names = set()
    for block in TOCTREE.findall(index_text):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith(":"):
                names.add(line.split("<")[-1].rstrip(">").strip())
    return names


def unlisted_documents(srcdir):
    """Markdown/rst pages under ``srcdir`` that ``index.md`` does not list."""
    with open(os.path.join(srcdir, "index.md"), encoding="utf-8") as handle:
        listed = listed_documents(handle.read()) | {"index"}
    found = []
    for folder, subfolders, files in os.walk(srcdir):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(("_", ".")))
        for name in sorted(files):
            stem, suffix = os.path.splitext(name)
            if suffix in source_suffix:
                document = os.path.relpath(os.path.join(folder, stem), srcdir).replace(os.sep, "/")
                if document not in listed:
                    found.append(document)
    return found


def append_more_notes(app, docname, source):
    if docname != "index":
        return
    extra = unlisted_documents(app.srcdir)
    if extra:
        source[0] += "\n\n```{toctree}\n:caption: More notes\n:maxdepth: 1\n\n" + "\n".join(extra) + "\n```\n"


def draw_figures(app):
    spec = importlib.util.spec_from_file_location("erwin_docs_figures", os.path.join(HERE, "figures.py"))
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    figures.draw_all(os.path.join(HERE, "_generated"))


def setup(app):
    app.connect("builder-inited", draw_figures)
    app.connect("source-read", append_more_notes)
    return {"parallel_read_safe": True}
