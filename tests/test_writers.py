"""``skfeat extract``'s writers under faults: full disks, kills, odd progress folders.

The featurizer is replaced by a stand-in that computes each row from its path, so these
tests exercise the writers and the resume logic without loading a model. A run that
must die (killed at a chosen point, or meeting a full disk on a small tmpfs) runs in a
forked child, so a signal ends the child and shows here as a failure, not as a crash of
pytest. The same kills with the real console script and a real model are in
``test_cli.py`` (slow).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from skfeat._cli import _extract_job, _writers, main

N_IMAGES = 30
N_FEATURES = 64
CHUNK = 8  # 4 chunks: 8, 8, 8, 6 rows
N_CHUNKS = 4
ARGS = ["--weights", "none", "-q", "--chunk-size", str(CHUNK)]
SUFFIXES = [".npy", ".csv", ".parquet"]
WRITER_CLASSES = (_writers.NpyWriter, _writers.CsvWriter, _writers.ParquetWriter)


def standin_row(path: str) -> np.ndarray:
    """A float32 row that depends only on the path: signs, magnitudes 1e-6..1e3."""
    seed = int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    scale = 10.0 ** rng.integers(-6, 4, N_FEATURES)
    return (rng.standard_normal(N_FEATURES) * scale).astype(np.float32)


@pytest.fixture(autouse=True)
def standin_featurizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The featurizer's fit, transform and names, computed from the paths alone."""
    from skfeat import PretrainedCNNFeaturizer

    def fit(self: PretrainedCNNFeaturizer, X: object, y: object = None) -> object:
        self.n_features_out_ = N_FEATURES
        return self

    def transform(self: PretrainedCNNFeaturizer, X: list[str]) -> np.ndarray:
        return np.stack([standin_row(str(path)) for path in X])

    def names(self: PretrainedCNNFeaturizer, input_features: object = None) -> np.ndarray:
        return np.asarray([f"f{j:03d}" for j in range(N_FEATURES)], dtype=object)

    monkeypatch.setattr(PretrainedCNNFeaturizer, "fit", fit)
    monkeypatch.setattr(PretrainedCNNFeaturizer, "transform", transform)
    monkeypatch.setattr(PretrainedCNNFeaturizer, "get_feature_names_out", names)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A folder of image files; the stand-in never opens them."""
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(N_IMAGES):
        (root / f"img{i:02d}.png").touch()
    return root


def run_main(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    status = main([str(arg) for arg in args])
    return status, capsys.readouterr().err


def extract(capsys: pytest.CaptureFixture[str], photos: Path, out: Path, *extra: str) -> str:
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, *extra)
    assert status == 0, err
    return err


def one_error(err: str) -> str:
    """The one error line, the last one written; no traceback."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("skfeat: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


def outputs(out: Path) -> dict[str, bytes]:
    """The bytes of every file a run into ``out`` leaves beside it."""
    files = {out.name: out.read_bytes()}
    if out.suffix == ".npy":
        listing = _writers.paths_file_for(out)
        files[listing.name] = listing.read_bytes()
    return files


def assert_same_files(out: Path, reference: Path) -> None:
    got, expected = outputs(out), outputs(reference)
    assert [got[name.replace("reference", "out")] for name in expected] == list(expected.values())
    assert not _extract_job.workdir_for(out).exists()


@pytest.fixture
def reference(capsys: pytest.CaptureFixture[str], photos: Path) -> Callable[[str], Path]:
    """An uninterrupted run for a suffix, in a folder of its own."""

    def make(suffix: str) -> Path:
        folder = photos.parent / "uninterrupted"
        folder.mkdir(exist_ok=True)
        out = folder / f"reference{suffix}"
        extract(capsys, photos, out)
        return out

    return make


# -- a run in a forked child -----------------------------------------------------------------


def run_in_child(args: list[object], log: Path, prepare: Callable[[], None] | None = None) -> int:
    """``main(args)`` in a forked child: its exit status, or ``-signal`` when a signal ended it.

    ``prepare`` runs in the child first (to install a kill point). Its stdout and stderr go
    to ``log``.
    """
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    sys.stdout.flush()
    sys.stderr.flush()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # forking a threaded process
        pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 70
        try:
            stream = open(log, "w", buffering=1, encoding="utf-8")
            sys.stdout = sys.stderr = stream
            if prepare is not None:
                prepare()
            status = main([str(arg) for arg in args])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stderr.flush()
            os._exit(status)
    deadline = time.monotonic() + 120
    while True:
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(wait_status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the child ran for 2 minutes; its output: {log.read_text()}")
        time.sleep(0.005)


def kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after(owner: object, name: str, when: Callable[..., bool]) -> None:
    """Kill the process as soon as ``owner.name(...)`` returns, when ``when(...)`` holds."""
    original = getattr(owner, name)

    def hooked(*args: object, **kwargs: object) -> object:
        result = original(*args, **kwargs)
        if when(*args, **kwargs):
            kill_self()
        return result

    setattr(owner, name, hooked)


def tear(workdir: Path, suffix: str, index: int, start: int, n_rows: int) -> None:
    """Leave chunk ``index`` on disk as a write cut off half way would."""
    if suffix == ".npy":
        with (workdir / "result.npy").open("r+b") as handle:
            np.lib.format.read_magic(handle)
            np.lib.format.read_array_header_1_0(handle)
            row_bytes = 4 * N_FEATURES
            handle.seek(handle.tell() + start * row_bytes + n_rows * row_bytes // 2)
            handle.write(b"\xff" * (n_rows * row_bytes // 2))
    elif suffix == ".csv":
        target = workdir / "result.csv"
        recorded = json.loads((workdir / "state.json").read_text()).get("csv_bytes", 0)
        os.truncate(target, (recorded + target.stat().st_size) // 2)
    else:
        part = workdir / f"chunk-{index:06d}.parquet"
        data = part.read_bytes()
        part.unlink()
        (workdir / f"chunk-{index:06d}.tmp").write_bytes(data[: len(data) // 2])


def kill_point(point: str, out: Path) -> Callable[[], None]:
    """What the child installs to die by SIGKILL at ``point`` of a run into ``out``."""
    workdir = _extract_job.workdir_for(out)

    def install() -> None:
        if point == "chunk written, state not saved":
            for cls in WRITER_CLASSES:
                after(cls, "write", lambda self, index, *a: index == 1)
        elif point == "state saved":
            after(_extract_job, "_save_state", lambda w, state: state["chunks_done"] == 2)
        elif point == "chunk cut off mid-write":
            for cls in WRITER_CLASSES:
                original = cls.write

                def torn(self, index, start, features, original=original):  # type: ignore[no-untyped-def]
                    result = original(self, index, start, features)
                    if index == 2:
                        tear(workdir, out.suffix, index, start, len(features))
                        kill_self()
                    return result

                cls.write = torn  # type: ignore[method-assign]
        elif point == "file built":
            for cls in WRITER_CLASSES:
                after(cls, "finish", lambda *a: True)
        elif point in ("paths file moved", "file moved", "folder half removed", "folder emptied"):
            target = _writers.paths_file_for(out) if point == "paths file moved" else out
            replace, unlink = os.replace, os.unlink
            moved = []

            def hooked_replace(src: object, dst: object, **kwargs: object) -> None:
                replace(src, dst, **kwargs)
                if Path(str(dst)) == target:
                    if point in ("file moved", "paths file moved"):
                        kill_self()
                    moved.append(True)

            def hooked_unlink(path: object, **kwargs: object) -> None:
                unlink(path, **kwargs)
                state_left = (workdir / "state.json").exists()
                if moved and state_left == (point == "folder half removed"):
                    kill_self()

            os.replace = hooked_replace  # type: ignore[assignment]
            os.unlink = os.remove = hooked_unlink  # type: ignore[assignment]
        else:
            raise AssertionError(point)

    return install


KILL_POINTS = [
    "chunk written, state not saved",
    "state saved",
    "chunk cut off mid-write",
    "file built",
    "file moved",
]
KILL_CASES = [(suffix, point) for suffix in SUFFIXES for point in KILL_POINTS]
KILL_CASES += [(".npy", "paths file moved"), (".parquet", "folder half removed")]


@pytest.mark.parametrize(("suffix", "point"), KILL_CASES)
def test_killed_run_resumes_to_the_same_bytes(capsys, photos, reference, suffix, point):
    """SIGKILL at each point of a run, then --resume: the file of an uninterrupted run."""
    expected = reference(suffix)
    out = photos.parent / f"out{suffix}"
    log = photos.parent / "child.log"
    args = ["extract", photos, "-o", out, *ARGS]
    status = run_in_child(args, log, kill_point(point, out))
    assert status == -signal.SIGKILL, f"the run was not killed: {log.read_text()}"
    moved = point in ("file moved", "folder half removed")
    assert out.exists() == moved  # never a file that looks finished before it is
    if moved:
        assert outputs(out)[out.name] == outputs(expected)[expected.name]

    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, "--resume")
    assert status == 0, err
    assert_same_files(out, expected)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_killed_as_the_folder_is_emptied(capsys, photos, reference, suffix):
    """The last moment of a run: the file is complete, its folder empty and harmless."""
    expected = reference(suffix)
    out = photos.parent / f"out{suffix}"
    log = photos.parent / "child.log"
    status = run_in_child(
        ["extract", photos, "-o", out, *ARGS], log, kill_point("folder emptied", out)
    )
    assert status == -signal.SIGKILL, f"the run was not killed: {log.read_text()}"
    workdir = _extract_job.workdir_for(out)
    assert workdir.is_dir() and not any(workdir.iterdir())
    assert outputs(out) == {
        name.replace("reference", "out"): data for name, data in outputs(expected).items()
    }
    # The file holds this run's paths and features: --resume says the run is complete,
    # tidies the empty folder and exits 0, and the file is kept as it is.
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, "--resume")
    assert status == 0, err
    assert "is complete already" in err
    assert not workdir.exists()
    assert_same_files(out, expected)
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, "--overwrite")
    assert status == 0, err  # the empty folder is no unfinished run
    assert_same_files(out, expected)


def test_a_finished_run_is_not_redone_on_resume(capsys, photos, reference):
    """Killed after the rename: --resume only tidies up, computing nothing again."""
    expected = reference(".csv")
    out = photos.parent / "out.csv"
    status = run_in_child(
        ["extract", photos, "-o", out, *ARGS], photos.parent / "log", kill_point("file moved", out)
    )
    assert status == -signal.SIGKILL
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1  # without --resume the leftover folder is pointed out
    assert "exists already; pass --overwrite" in one_error(err)

    from skfeat import PretrainedCNNFeaturizer

    calls = []
    original = PretrainedCNNFeaturizer.transform
    PretrainedCNNFeaturizer.transform = lambda self, X: calls.append(X) or original(self, X)
    try:
        status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, "--resume")
    finally:
        PretrainedCNNFeaturizer.transform = original
    assert status == 0, err
    assert calls == []
    assert f"Resuming: {N_CHUNKS} of {N_CHUNKS} chunks were done already." in err
    assert_same_files(out, expected)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_missing_partial_data_is_refused_not_resumed(capsys, photos, suffix):
    """A folder that records done chunks but lost their data: an error, never zeros."""
    out = photos.parent / f"out{suffix}"
    status = run_in_child(
        ["extract", photos, "-o", out, *ARGS],
        photos.parent / "log",
        kill_point("state saved", out),
    )
    assert status == -signal.SIGKILL
    workdir = _extract_job.workdir_for(out)
    name = "chunk-000001.parquet" if suffix == ".parquet" else f"result{suffix}"
    (workdir / name).unlink()
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, "--resume")
    assert status == 1
    message = one_error(err)
    assert f"the partial file {str(workdir / name)!r} is missing or damaged" in message
    assert f"Delete {str(workdir)!r} and run again to start over." in message
    assert not out.exists()


# -- full disks: injected errors (run everywhere) ----------------------------------------------


@pytest.fixture
def fault() -> Iterator[pytest.MonkeyPatch]:
    """A monkeypatch of its own for the fault, undone before the resume."""
    patch = pytest.MonkeyPatch()
    try:
        yield patch
    finally:
        patch.undo()


def disk_full(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fail_at_call(n: int, original: Callable[..., object], error: OSError) -> Callable[..., object]:
    """``original``, except that call number ``n`` (from 1) raises ``error``."""
    calls = []

    def wrapper(*args: object, **kwargs: object) -> object:
        calls.append(None)
        if len(calls) == n:
            raise error
        return original(*args, **kwargs)

    return wrapper


def full_disk_message(out: Path, done: int, needs: str, code: int = errno.ENOSPC) -> str:
    """The pattern of the one error a full disk gives."""
    full = "the disk quota is full" if code == errno.EDQUOT else "the disk is full"
    workdir = _extract_job.workdir_for(out)
    return (
        re.escape(f"skfeat: error: {full}: cannot write {str(out)!r} ({os.strerror(code)}). ")
        + f"It needs {needs}"
        + (r"; [0-9.]+ \w+( \([0-9,]+ bytes\))? are free there" if code == errno.ENOSPC else "")
        + re.escape(
            ". Free some space, then rerun the same command with --resume to continue: "
            f"{done} of {N_CHUNKS} chunks are done and kept in {str(workdir)!r}."
        )
    )


def assert_full_disk_then_resume(
    capsys: pytest.CaptureFixture[str],
    photos: Path,
    out: Path,
    expected: Path,
    err: str,
    pattern: str,
    fault: pytest.MonkeyPatch,
) -> None:
    """One error matching ``pattern``, no output file; with the fault gone, --resume."""
    assert re.fullmatch(pattern, one_error(err)), err
    assert not out.exists() and not _writers.paths_file_for(out).exists()
    fault.undo()
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, "--resume")
    assert status == 0, err
    assert_same_files(out, expected)


def npy_sizes(photos: Path) -> tuple[int, int]:
    """The bytes of the ``.npy`` of the stand-in run, and of its list of paths."""
    header = _writers._npy_header((N_IMAGES, N_FEATURES), np.dtype(np.float32))
    listing = sum(len(str(path)) + 1 for path in sorted(photos.iterdir()))
    return len(header) + 4 * N_IMAGES * N_FEATURES, listing


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no os.posix_fallocate")
def test_npy_space_is_reserved_first(capsys, photos, reference, fault):
    expected = reference(".npy")
    out = photos.parent / "out.npy"
    fault.setattr(os, "posix_fallocate", disk_full)
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1
    array, listing = npy_sizes(photos)
    needs = re.escape(f"{_writers.format_size(array + listing)} in all")
    pattern = full_disk_message(out, 0, needs)
    assert_full_disk_then_resume(capsys, photos, out, expected, err, pattern, fault)


def test_npy_without_reservation_meets_a_full_disk_as_an_error(capsys, photos, reference, fault):
    """Where the file system cannot reserve, ordinary writes report the full disk."""
    expected = reference(".npy")
    out = photos.parent / "out.npy"

    def unsupported(*args: object) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    fault.setattr(os, "posix_fallocate", unsupported, raising=False)
    pwrite = os.pwrite
    # The header is write 1, chunk k is write k + 2: chunk 3 of 4 fails.
    fault.setattr(os, "pwrite", fail_at_call(4, pwrite, OSError(errno.ENOSPC, "full")))
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1
    pattern = full_disk_message(out, 2, r"[0-9.]+ KiB \([0-9,]+ bytes\) more")
    assert_full_disk_then_resume(capsys, photos, out, expected, err, pattern, fault)


def test_npy_paths_file_on_a_full_disk(capsys, photos, reference, fault):
    expected = reference(".npy")
    out = photos.parent / "out.npy"
    listing = _extract_job.workdir_for(out) / "result.paths.txt"
    write = os.write

    def full_for_the_listing(fd: int, data: bytes) -> int:
        if listing.exists() and os.path.samestat(os.fstat(fd), listing.stat()):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return write(fd, data)

    fault.setattr(os, "write", full_for_the_listing)
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1
    needs = re.escape(f"{_writers.format_size(npy_sizes(photos)[1])} more")
    assert listing.stat().st_size == 0  # cut back, not left half written
    pattern = full_disk_message(out, 0, needs)
    assert_full_disk_then_resume(capsys, photos, out, expected, err, pattern, fault)


def test_csv_chunk_on_a_full_disk(capsys, photos, reference, fault):
    expected = reference(".csv")
    out = photos.parent / "out.csv"
    target = _extract_job.workdir_for(out) / "result.csv"
    pwrite = os.pwrite
    sizes = []

    def half_then_full(fd: int, data: bytes, offset: int) -> int:
        if len(sizes) == 2:  # chunk 3: half of it lands, then the disk is full
            sizes.append(pwrite(fd, data[: len(data) // 2], offset))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        sizes.append(pwrite(fd, data, offset))
        return sizes[-1]

    fault.setattr(os, "pwrite", half_then_full)
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1
    state = json.loads((target.parent / "state.json").read_text())
    assert target.stat().st_size == state["csv_bytes"]  # the cut-off chunk is dropped
    pattern = full_disk_message(out, 2, r"about [0-9.]+ KiB \([0-9,]+ bytes\) more")
    assert_full_disk_then_resume(capsys, photos, out, expected, err, pattern, fault)


def test_state_on_a_full_disk(capsys, photos, reference, fault):
    expected = reference(".csv")
    out = photos.parent / "out.csv"
    save = _extract_job._save_state
    fault.setattr(_extract_job, "_save_state", fail_at_call(3, save, OSError(errno.ENOSPC, "full")))
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1
    pattern = full_disk_message(out, 1, r"about [0-9.]+ KiB \([0-9,]+ bytes\) more")
    assert_full_disk_then_resume(capsys, photos, out, expected, err, pattern, fault)


def arrow_full() -> OSError:
    """What pyarrow raises on a full disk (seen on a full tmpfs)."""
    return OSError(28, "Error writing bytes to file. Detail: [errno 28] No space left on device")


def arrow_quota() -> OSError:
    """The same over quota, as a pyarrow error that carries the errno only in its text."""
    return OSError("Error writing bytes to file. Detail: [errno 122] Disk quota exceeded")


def test_parquet_part_on_a_full_disk(capsys, photos, reference, fault):
    import pyarrow.parquet as pq

    expected = reference(".parquet")
    out = photos.parent / "out.parquet"
    write_table = pq.write_table

    def half_then_full(table: object, where: object, **kwargs: object) -> None:
        if "chunk-000001" in str(where):
            Path(str(where)).write_bytes(b"PAR1 half a part")
            raise arrow_full()
        write_table(table, where, **kwargs)

    fault.setattr(pq, "write_table", half_then_full)
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1
    workdir = _extract_job.workdir_for(out)
    assert sorted(p.name for p in workdir.iterdir()) == ["chunk-000000.parquet", "state.json"]
    pattern = full_disk_message(out, 1, r"about [0-9.]+ KiB \([0-9,]+ bytes\) more")
    assert_full_disk_then_resume(capsys, photos, out, expected, err, pattern, fault)


def test_parquet_assembly_over_quota(capsys, photos, reference, fault):
    import pyarrow.parquet as pq

    expected = reference(".parquet")
    out = photos.parent / "out.parquet"
    write_table = pq.ParquetWriter.write_table
    assembled = []

    def over_quota_at_the_third_part(
        self: pq.ParquetWriter, table: object, **kwargs: object
    ) -> None:
        if Path(str(self.where)).name == "result.parquet":
            assembled.append(table)
            if len(assembled) == 3:
                raise arrow_quota()
        write_table(self, table, **kwargs)

    fault.setattr(pq.ParquetWriter, "write_table", over_quota_at_the_third_part)
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1
    workdir = _extract_job.workdir_for(out)
    assert not (workdir / "result.parquet").exists()  # the half-built file is removed
    pattern = full_disk_message(
        out, N_CHUNKS, r"about [0-9.]+ KiB \([0-9,]+ bytes\) more", code=errno.EDQUOT
    )
    assert_full_disk_then_resume(capsys, photos, out, expected, err, pattern, fault)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), errno.ENOSPC),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), errno.EDQUOT),
        (arrow_full(), errno.ENOSPC),
        (arrow_quota(), errno.EDQUOT),
        (OSError(errno.EIO, "Input/output error"), None),
        (OSError("Detail: [errno 5] Input/output error"), None),
        (ValueError("row 28 is bad"), None),
    ],
)
def test_out_of_space_errno(error, expected):
    assert _writers.out_of_space_errno(error) == expected
    try:
        try:
            raise error
        except Exception as cause:
            raise RuntimeError("while writing") from cause
    except RuntimeError as wrapped:
        assert _writers.out_of_space_errno(wrapped) == expected


def test_space_needed_before_anything_is_written(tmp_path):
    """Before a row: the exact size (.npy), an upper bound (CSV), a lower bound (Parquet)."""
    paths = [f"img{i}.png" for i in range(N_IMAGES)]
    names = [f"f{j}" for j in range(N_FEATURES)]
    needed = {}
    for fmt in ("npy", "csv", "parquet"):
        writer = _writers.make_writer(fmt, tmp_path, paths, names, {}, {"list_column": False})
        needed[fmt] = writer.space_needed(0)
    header = len(_writers._npy_header((N_IMAGES, N_FEATURES), np.dtype(np.float32)))
    listing = sum(len(path) + 1 for path in paths)
    assert needed["npy"] == (header + 4 * N_IMAGES * N_FEATURES + listing, "{} in all")
    assert needed["csv"][1] == "up to {} more" and needed["csv"][0] > 16 * N_IMAGES * N_FEATURES
    assert needed["parquet"][1] == "at least {} more"
    assert needed["parquet"][0] >= 2 * 4 * N_IMAGES * N_FEATURES  # the parts, then the file


def test_format_size():
    assert _writers.format_size(0) == "0 bytes"
    assert _writers.format_size(1023) == "1023 bytes"
    assert _writers.format_size(1024) == "1.0 KiB (1,024 bytes)"
    assert _writers.format_size(5 * 2**30 + 2**29) == "5.5 GiB (5,905,580,032 bytes)"


# -- full disks: a real small tmpfs -------------------------------------------------------------


class SmallDisk:
    """A tmpfs mounted at ``path``, for the length of one test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.mounted = False

    def mount(self, size: int, *options: str) -> Path:
        if not sys.platform.startswith("linux") or shutil.which("mount") is None:
            pytest.skip("needs Linux and mount")
        self.path.mkdir(exist_ok=True)
        flags = ",".join([f"size={size}", *options])
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", flags, "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        self.mounted = True
        return self.path

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=True)
            self.mounted = False


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk")
    try:
        yield disk
    finally:
        disk.unmount()


def parquet_part_bytes(photos: Path, scratch: Path) -> int:
    """The bytes the parts of the stand-in run take, written as the run writes them."""
    scratch.mkdir()
    paths = sorted(str(path) for path in photos.iterdir())
    names = [f"f{j:03d}" for j in range(N_FEATURES)]
    writer = _writers.make_writer("parquet", scratch, paths, names, {}, {"list_column": False})
    features = np.stack([standin_row(path) for path in paths])
    for index, start in enumerate(range(0, N_IMAGES, CHUNK)):
        writer.write(index, start, features[start : start + CHUNK])
    return sum(-(-path.stat().st_size // 4096) * 4096 for path in scratch.iterdir())


@pytest.mark.parametrize("case", ["npy", "csv", "parquet chunks", "parquet assembly"])
def test_full_tmpfs_is_one_error_and_resume_finishes(
    capsys, photos, reference, small_disk, monkeypatch, case
):
    """A real full disk, in a child: one error (not SIGBUS), then --resume once there is room."""
    suffix = "." + case.split()[0]
    if suffix == ".npy":  # room for the state and the list of paths, not for the array
        monkeypatch.setattr(sys.modules[__name__], "N_FEATURES", 1024)
    expected = reference(suffix)
    size = {".npy": 32 * 1024, ".csv": 16 * 1024, ".parquet": 32 * 1024}[suffix]
    if case == "parquet assembly":  # room for every part, not for the file built from them
        parts = parquet_part_bytes(photos, photos.parent / "scratch")
        size = parts + 3 * 4096 + expected.stat().st_size // 2
    disk = small_disk.mount(size)
    out = disk / f"out{suffix}"
    log = photos.parent / "child.log"
    status = run_in_child(["extract", photos, "-o", out, *ARGS], log)
    err = log.read_text()
    assert status == 1, f"exit status {status}: {err}"
    message = one_error(err)
    done = int(re.search(r"(\d) of 4 chunks are done", message).group(1))
    needs = {
        "npy": re.escape(f"{_writers.format_size(sum(npy_sizes(photos)))} in all"),
        "csv": r"about [0-9.]+ KiB \([0-9,]+ bytes\) more",
        "parquet chunks": r"about [0-9.]+ KiB \([0-9,]+ bytes\) more",
        "parquet assembly": r"about [0-9.]+ KiB \([0-9,]+ bytes\) more",
    }[case]
    assert re.fullmatch(full_disk_message(out, done, needs), message), message
    assert done == {"npy": 0, "parquet assembly": N_CHUNKS}.get(case, done)
    if case in ("csv", "parquet chunks"):
        assert 0 < done < N_CHUNKS
    assert not out.exists() and not _writers.paths_file_for(out).exists()
    assert not list(_extract_job.workdir_for(out).glob("*.tmp"))

    small_disk.resize(4 * 2**20)
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, "--resume")
    assert status == 0, err
    assert_same_files(out, expected)


# -- the progress folder ----------------------------------------------------------------------


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("target", ["a folder with progress", "nothing"])
def test_symlinked_progress_folder_is_refused(capsys, photos, resume, target):
    out = photos.parent / "out.npy"
    workdir = _extract_job.workdir_for(out)
    elsewhere = photos.parent / "elsewhere"
    if target == "a folder with progress":
        elsewhere.mkdir()
        (elsewhere / "state.json").write_text("{}")
    workdir.symlink_to(elsewhere)
    status, err = run_main(
        capsys, "extract", photos, "-o", out, *ARGS, *(["--resume"] if resume else [])
    )
    assert status == 1
    assert one_error(err) == (
        f"skfeat: error: {str(workdir)!r} is a symbolic link (to {str(elsewhere)!r}), where "
        "skfeat keeps the progress of a run in a folder of its own; it never writes or deletes "
        "through a link. Remove the link (what it points to is left as it is) or write OUT "
        "somewhere else."
    )
    assert workdir.is_symlink() and not out.exists()
    if target == "a folder with progress":
        assert [p.name for p in elsewhere.iterdir()] == ["state.json"]
    else:
        assert not elsewhere.exists()


@pytest.mark.parametrize("resume", [False, True])
def test_a_file_named_like_the_progress_folder_is_refused(capsys, photos, resume):
    out = photos.parent / "out.csv"
    workdir = _extract_job.workdir_for(out)
    workdir.write_text("keep me")
    status, err = run_main(
        capsys, "extract", photos, "-o", out, *ARGS, *(["--resume"] if resume else [])
    )
    assert status == 1
    assert one_error(err) == (
        f"skfeat: error: {str(workdir)!r} is in the way: it is not a folder, and skfeat keeps "
        "the progress of a run in a folder of that name. Move it away or write OUT somewhere else."
    )
    assert workdir.read_text() == "keep me"


def test_read_only_output_folder_is_refused(capsys, photos, small_disk):
    folder = small_disk.mount(64 * 1024, "ro")
    status, err = run_main(capsys, "extract", photos, "-o", folder / "out.parquet", *ARGS)
    assert status == 1
    assert one_error(err) == (
        f"skfeat: error: cannot write in the output folder {str(folder)!r}; write OUT to a "
        "folder you can write to."
    )


def test_unwritable_progress_folder_is_refused(capsys, photos, monkeypatch):
    out = photos.parent / "out.npy"
    workdir = _extract_job.workdir_for(out)
    workdir.mkdir()
    access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode, **kw: Path(path) != workdir and access(path, mode, **kw)
    )
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS, "--resume")
    assert status == 1
    assert one_error(err) == (
        f"skfeat: error: the folder {str(workdir)!r}, which holds the progress of a run, is not "
        "writable. Make it writable to continue the run, or delete it to start over."
    )


def test_progress_folder_that_cannot_be_created(capsys, photos, monkeypatch):
    out = photos.parent / "out.npy"
    workdir = _extract_job.workdir_for(out)
    mkdir = Path.mkdir

    def denied(self: Path, *args: object, **kwargs: object) -> None:
        if self == workdir:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", denied)
    status, err = run_main(capsys, "extract", photos, "-o", out, *ARGS)
    assert status == 1
    assert one_error(err) == (
        f"skfeat: error: cannot create the folder {str(workdir)!r} for the progress of the run "
        "(Permission denied). Write OUT to a folder you can write to."
    )


# -- the .npy file itself ------------------------------------------------------------------------


def test_npy_bytes_are_numpy_save_without_a_memory_map(tmp_path, monkeypatch):
    """Chunks written in any order, one twice: the bytes of numpy.save; no memory map."""

    def no_map(*args: object, **kwargs: object) -> None:
        raise AssertionError("a memory map was opened")

    monkeypatch.setattr(np, "memmap", no_map)
    monkeypatch.setattr(np.lib.format, "open_memmap", no_map)
    paths = [f"img{i}.png" for i in range(N_IMAGES)]
    features = np.stack([standin_row(path) for path in paths])
    writer = _writers.make_writer(
        "npy", tmp_path, paths, [f"f{j}" for j in range(N_FEATURES)], {}, {}
    )
    writer.start({"chunks_done": 0})
    starts = list(range(0, N_IMAGES, CHUNK))
    for index in [2, 0, 3, 1, 2]:
        start = starts[index]
        writer.write(index, start, features[start : start + CHUNK])
    writer.finish(len(starts))
    np.save(tmp_path / "saved.npy", features)
    assert (tmp_path / "result.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()
    assert (tmp_path / "result.paths.txt").read_text().splitlines() == paths
