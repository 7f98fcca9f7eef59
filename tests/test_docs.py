"""The documentation: gallery scripts are well formed, the API page lists every public
name, and the Sphinx site builds without a warning (slow: it runs every example)."""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import skfeat

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
GALLERY_SCRIPTS = sorted(EXAMPLES.glob("plot_*.py"))
# Built from the sources; copying them into a build would make the build depend on them.
GENERATED = ("_build", "generated", "auto_examples", "sg_execution_times.rst")


def test_gallery_has_scripts_and_a_header():
    assert len(GALLERY_SCRIPTS) >= 3
    header = (EXAMPLES / "README.rst").read_text(encoding="utf-8")
    assert re.search(r"^Examples\n=+$", header, flags=re.MULTILINE)


@pytest.mark.parametrize("script", GALLERY_SCRIPTS, ids=lambda path: path.name)
def test_gallery_script_is_python_with_a_title(script):
    tree = ast.parse(script.read_text(encoding="utf-8"), filename=str(script))
    docstring = ast.get_docstring(tree, clean=False)
    assert docstring, f"{script.name} must start with a docstring holding its title"
    lines = docstring.strip("\n").splitlines()
    assert len(lines) >= 2, f"{script.name}: the docstring needs a title and an underline"
    title, underline = lines[0], lines[1]
    assert title.strip(), f"{script.name}: empty title"
    assert re.fullmatch(r"=+", underline) and len(underline) >= len(title), (
        f"{script.name}: the title {title!r} must be underlined with at least as many '='"
    )


def _public_names() -> list[str]:
    names = [name for name in skfeat.__all__ if name not in ("__version__", "exceptions")]
    names += skfeat.exceptions.__all__
    for info in pkgutil.iter_modules(skfeat.__path__):  # public submodules: skfeat.dask...
        if not info.name.startswith("_") and info.name != "exceptions":
            try:
                module = importlib.import_module(f"skfeat.{info.name}")
            except ImportError:  # an extra that is not installed
                continue
            names += module.__all__
    return names


@pytest.mark.parametrize("name", _public_names())
def test_api_page_lists_every_public_name(name):
    api = (DOCS / "api.rst").read_text(encoding="utf-8")
    listed = re.findall(r"^   (\w+)$", api, flags=re.MULTILINE)  # autosummary entries
    assert name in listed, f"{name} is public but missing from docs/api.rst"


PAGES_WITH_DOCTESTS = sorted(
    page
    for page in DOCS.rglob("*.rst")
    if page.relative_to(DOCS).parts[0] not in GENERATED
    and ">>> " in page.read_text(encoding="utf-8")
)


def test_pages_with_doctests_are_found():
    assert DOCS / "user_guide" / "layers_and_pooling.rst" in PAGES_WITH_DOCTESTS


@pytest.mark.parametrize("page", PAGES_WITH_DOCTESTS, ids=lambda path: path.name)
def test_doctests_in_pages_pass(page, capsys):
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    failed, attempted = doctest.testfile(
        str(page), module_relative=False, optionflags=flags, encoding="utf-8"
    )
    assert attempted > 0
    assert failed == 0, capsys.readouterr().out


def _missing_doc_tools() -> list[str]:
    tools = ("sphinx", "numpydoc", "sphinx_gallery", "pydata_sphinx_theme", "matplotlib")
    return [tool for tool in tools if importlib.util.find_spec(tool) is None]


@pytest.mark.slow
@pytest.mark.skipif(
    bool(_missing_doc_tools()),
    reason=f'needs the docs extra (pip install ".[docs]"); missing {_missing_doc_tools()}',
)
def test_docs_build_without_warnings(tmp_path):
    # Build from a copy, so the sources stay free of generated files.
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns(*GENERATED))
    shutil.copytree(EXAMPLES, tmp_path / "examples")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg",
        "HF_HUB_OFFLINE": "1",
    }
    env.pop("SKFEAT_DOCS_INTERSPHINX", None)  # offline: no inventories to fetch
    html = tmp_path / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html"]
    result = subprocess.run(
        [*command, "-d", str(tmp_path / "doctrees"), str(source), str(html)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    log = result.stdout[-5000:] + result.stderr[-10000:]
    assert result.returncode == 0, log
    for script in GALLERY_SCRIPTS:  # each example ran and got its page
        assert (html / "auto_examples" / f"{script.stem}.html").is_file(), script.name
    assert (html / "generated" / "skfeat.PretrainedCNNFeaturizer.html").is_file()
    page = (html / "auto_examples" / "plot_01_quickstart.html").read_text(encoding="utf-8")
    assert "held-out accuracy" in page  # the example's output is in the page


def test_install_page_lists_every_extra_with_its_size():
    tomllib = pytest.importorskip("tomllib")
    with open(ROOT / "pyproject.toml", "rb") as handle:
        extras = tomllib.load(handle)["project"]["optional-dependencies"]
    page = (DOCS / "install.rst").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^``([\w-]+)``\s+(\d+ MB)\s", page, flags=re.MULTILINE))
    assert sorted(rows) == sorted(extras), "docs/install.rst's table of extras is out of date"
