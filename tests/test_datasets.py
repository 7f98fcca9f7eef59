"""Tests of the bundled flower sample and its loader, :mod:`skfeat._datasets`."""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skfeat._datasets import load_flowers_sample

CLASSES = ["daisy", "dandelion", "rose", "sunflower", "tulip"]
PER_CLASS = 30


@pytest.fixture(scope="module")
def data():
    return load_flowers_sample()


def _relative(path: str) -> str:
    """``<class>/<file>`` of a bundled image path."""
    p = Path(path)
    return f"{p.parent.name}/{p.name}"


def _attribution_lines(attribution: str) -> list[str]:
    text = Path(attribution).read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_fields_and_types(data):
    assert isinstance(data.paths, list)
    assert all(isinstance(p, str) for p in data.paths)
    assert isinstance(data.target, np.ndarray)
    assert data.target.dtype == np.int64
    assert data.target.shape == (len(data.paths),)
    assert data.target_names == CLASSES
    assert isinstance(data.attribution, str)
    assert Path(data.attribution).is_file()
    assert "frame" not in data
    assert "CC BY 2.0" in data.DESCR


def test_counts_per_class(data):
    assert len(data.paths) == len(CLASSES) * PER_CLASS
    assert np.bincount(data.target, minlength=len(CLASSES)).tolist() == [PER_CLASS] * len(CLASSES)
    assert Counter(Path(p).parent.name for p in data.paths) == dict.fromkeys(CLASSES, PER_CLASS)


def test_paths_absolute_unique_and_sorted(data):
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in data.paths)
    assert len(set(data.paths)) == len(data.paths)
    keys = [(Path(p).parent.name, Path(p).name) for p in data.paths]
    assert keys == sorted(keys)


def test_target_matches_folder(data):
    for path, label in zip(data.paths, data.target, strict=True):
        assert data.target_names[label] == Path(path).parent.name


def test_images_are_128px_rgb_jpeg(data):
    for path in data.paths:
        with Image.open(path) as im:
            assert im.format == "JPEG", path
            assert im.mode == "RGB", path
            assert im.size == (128, 128), path
            im.load()  # the whole file decodes


def test_attribution_covers_exactly_the_bundled_files(data):
    text = Path(data.attribution).read_text(encoding="utf-8")
    assert "https://creativecommons.org/licenses/by/2.0/" in text
    lines = _attribution_lines(data.attribution)
    named = [line.split(" ", 1)[0] for line in lines]
    assert len(named) == len(set(named)), "a file has more than one attribution line"
    assert sorted(named) == sorted(_relative(p) for p in data.paths)
    for line in lines:
        assert " CC-BY " in line and "https://www.flickr.com/photos/" in line, line


def test_no_stray_files_in_data_dir(data):
    root = Path(data.attribution).parent
    bundled = {Path(p).resolve() for p in data.paths}
    extra = {
        f.relative_to(root).as_posix()
        for f in root.rglob("*")
        if f.is_file() and f.resolve() not in bundled
    }
    assert extra == {"ATTRIBUTION.txt", "README.md"}


def test_repeated_calls_are_equal_and_independent(data):
    again = load_flowers_sample()
    assert again.paths == data.paths
    np.testing.assert_array_equal(again.target, data.target)
    again.paths.append("x")
    again.target_names.append("y")
    assert load_flowers_sample().paths == data.paths
    assert load_flowers_sample().target_names == CLASSES


def test_as_frame(data):
    pd = pytest.importorskip("pandas")
    bunch = load_flowers_sample(as_frame=True)
    frame = bunch.frame
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == ["path", "label"]
    assert len(frame) == len(data.paths)
    assert frame["path"].tolist() == data.paths
    assert frame["label"].tolist() == [data.target_names[i] for i in data.target]
    assert bunch.paths == data.paths


def test_as_frame_without_pandas_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes ``import pandas`` fail
    with pytest.raises(ImportError, match=r'pip install "skfeat\[pandas\]"'):
        load_flowers_sample(as_frame=True)


def test_module_imports_only_stdlib_and_numpy():
    """Importing the module must stay cheap: no torch, sklearn or pandas at import time."""
    import skfeat._datasets as mod

    tree = ast.parse(Path(mod.__file__).read_text(encoding="utf-8"))
    roots = set()
    for node in tree.body:  # module level only; ``if TYPE_CHECKING:`` blocks are skipped
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"__future__", "numpy"}
    assert roots <= allowed, roots - allowed
