"""Sphinx configuration of the skfeat documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html`` from the
repository root (needs ``python -m pip install ".[docs]"``). The build runs every gallery
example in ``examples/`` offline, on CPU.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document the source tree, installed or not

# The gallery runs offline: without this, timm retries the Hugging Face Hub for a minute.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Gallery examples that run ``python -m skfeat`` find this source tree, installed or not.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
)

import skfeat  # noqa: E402

project = "skfeat"
author = "skfeat developers"
copyright = "skfeat developers"
release = skfeat.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]
try:  # Markdown pages (benchmarks.md); the build still works without it
    import myst_parser  # noqa: F401
except ImportError:
    source_suffix = {".rst": "restructuredtext"}
else:
    extensions.append("myst_parser")
    source_suffix = {".rst": "restructuredtext", ".md": "markdown"}

templates_path = ["_templates"]
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
root_doc = "index"
default_role = "literal"

# -- API reference ------------------------------------------------------------------------
autosummary_generate = True
autodoc_typehints = "none"  # the numpydoc Parameters section says it better
autodoc_default_options = {"members": True, "inherited-members": False}
numpydoc_show_class_members = False  # the class template lists the methods once
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
toc_object_entries_show_parents = "hide"  # "fit()" in the page's table of contents

# -- Cross-links to other projects ---------------------------------------------------------
# Fetching the inventories needs the network, so they are opt-in: set
# SKFEAT_DOCS_INTERSPHINX=1 for a published build. Offline builds stay warning-free.
if os.environ.get("SKFEAT_DOCS_INTERSPHINX") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "sklearn": ("https://scikit-learn.org/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "pandas": ("https://pandas.pydata.org/docs", None),
    }
else:
    intersphinx_mapping = {}

# -- Gallery ----------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"plot_",
    "within_subsection_order": "FileNameSortKey",
    "doc_module": ("skfeat",),
    "backreferences_dir": "generated/backreferences",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "capture_repr": ("_repr_html_", "__repr__"),
    "abort_on_example_error": False,  # report every failing example, then fail the build
}

# -- HTML -------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"skfeat {release}"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "install": [], "cli": [], "benchmarks": []}
html_static_path = ["_static"]
html_css_files = ["skfeat.css"]  # a wider article: code, outputs and tables fit
html_show_sourcelink = True


def _link_scale_out(app, docname, source):
    """List docs/scale_out.rst at the end of the user guide's toctree when it exists.

    That page is written beside the others; linking it this way keeps the build free of
    warnings both before and after it lands.
    """
    if docname == "user_guide/index" and (DOCS / "scale_out.rst").is_file():
        source[0] = source[0].rstrip("\n") + "\n   /scale_out\n"


def _write_cli_help(app) -> None:
    """Write the ``--help`` of the ``skfeat`` command and its subcommands for cli.rst."""
    import contextlib
    import io

    from skfeat._cli import build_parser

    folder = DOCS / "generated" / "cli"
    folder.mkdir(parents=True, exist_ok=True)
    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "88"  # argparse wraps to the terminal width; fix it
    try:
        for command in CLI_COMMANDS:
            text = io.StringIO()
            with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
                build_parser().parse_args([*command.split(), "--help"])
            (folder / f"{command or 'skfeat'}.txt").write_text(text.getvalue(), "utf-8")
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns


CLI_COMMANDS = ["", "demo", "extract", "layers", "models", "check", "info"]


def setup(app):
    app.connect("builder-inited", _write_cli_help)
    app.connect("source-read", _link_scale_out)
