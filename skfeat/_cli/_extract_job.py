"""``skfeat extract``: images to a feature file, in chunks, resumable.

The images are featurized a chunk at a time, so memory stays flat however many there
are. Progress lives in a folder beside the output (``<OUT>.partial/``) holding the
partial data and ``state.json``: which chunks are done and a fingerprint of the inputs
and options. ``--resume`` continues from the last finished chunk when the fingerprint
matches. At the end the finished file is built in the folder, the state records it as
built, the file is renamed into place and the folder removed, ``state.json`` last: a run
stopped at any point resumes to the same file, and the output never exists half written.
A full disk is one :class:`CommandError` that says how much space is needed.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skfeat._cli._common import CommandError, decode_failures, image_error, note, warn
from skfeat._cli._writers import (
    FORMATS,
    Writer,
    format_size,
    make_writer,
    out_of_space_errno,
    paths_file_for,
)
from skfeat._progress import job_bar, write

__all__ = ["ExtractOptions", "ExtractReport", "check_output", "run_extract", "workdir_for"]

_STATE = "state.json"
_STATE_VERSION = 1
_LISTED_FAILURES = 10


@dataclass
class ExtractOptions:
    """The featurizer parameters and run options of one ``skfeat extract``.

    ``featurizer`` holds only the parameters given on the command line: the others
    keep :class:`~skfeat.PretrainedCNNFeaturizer`'s own defaults.
    """

    featurizer: dict[str, Any] = field(default_factory=dict)
    chunk_size: int = 1024
    list_column: bool = False
    resume: bool = False
    overwrite: bool = False


@dataclass
class ExtractReport:
    """What a run wrote."""

    output: Path
    n_rows: int
    n_features: int
    chunks_resumed: int
    failed: list[int] = field(default_factory=list)


def workdir_for(output: Path) -> Path:
    """The folder beside ``output`` that holds an unfinished run."""
    return output.with_name(output.name + ".partial")


def build_featurizer(options: ExtractOptions) -> Any:
    """The unfitted :class:`~skfeat.PretrainedCNNFeaturizer` of these options."""
    from skfeat import PretrainedCNNFeaturizer

    return PretrainedCNNFeaturizer(**options.featurizer)


def describe_run(featurizer: Any) -> dict[str, Any]:
    """What produced the features, as stored beside them (Parquet metadata)."""
    import skfeat

    params = featurizer.get_params()
    weights = params["weights"]
    return {
        "model": str(params["model"]),
        "weights": None if weights is None else str(weights),
        "layer": params["layer"],
        "pooling": str(params["pooling"]),
        "normalize": params["normalize"],
        "precision": params["precision"],
        "runtime": params["runtime"],
        "decoder": params["decoder"],
        "on_error": params["on_error"],
        "skfeat_version": skfeat.__version__,
    }


def _fingerprint_parts(
    paths: list[str], featurizer: Any, fmt: str, options: ExtractOptions
) -> dict[str, Any]:
    """What must not change between a run and its resumption, as short strings.

    Every featurizer parameter the features depend on is part of it (the parameter
    table says which: :func:`skfeat._params.result_params`).
    """
    import skfeat
    from skfeat._params import result_params

    params = result_params(featurizer.get_params())
    digest = hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()
    names = hashlib.sha256("\n".join(featurizer.get_feature_names_out()).encode()).hexdigest()
    return {
        "inputs": f"{len(paths)} paths, sha256 {digest[:16]}",
        **{name: _described(name, value) for name, value in params.items()},
        "features": f"{featurizer.n_features_out_} columns, sha256 {names[:16]}",
        "format": fmt,
        "list_column": str(options.list_column),
        "chunk_size": str(options.chunk_size),
        "skfeat": skfeat.__version__,
    }


def _described(name: str, value: Any) -> str:
    """A parameter as the fingerprint keeps it; a weights or model file also by size and time."""
    if name in ("weights", "model") and isinstance(value, (str, os.PathLike)):
        if os.path.isfile(value):  # a weights or model file: also its size and time
            stat = os.stat(value)
            return f"{os.path.abspath(value)} ({stat.st_size} bytes, mtime {stat.st_mtime_ns})"
    if isinstance(value, dict):  # a recipe, whatever the order of its keys
        return json.dumps(value, sort_keys=True)
    return str(value)


def _load_state(workdir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((workdir / _STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _save_state(workdir: Path, state: dict[str, Any]) -> None:
    temporary = workdir / (_STATE + ".tmp")
    try:
        temporary.write_text(json.dumps(state, indent=1, sort_keys=True), encoding="utf-8")
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk leaves no half-written state behind
        raise
    os.replace(temporary, workdir / _STATE)  # a reader never sees half a state


def _check_workdir(workdir: Path) -> None:
    """Refuse a progress folder that is not a real folder this process can write to.

    Nothing is ever written or deleted through a symbolic link.
    """
    if workdir.is_symlink():
        raise CommandError(
            f"{str(workdir)!r} is a symbolic link (to {os.readlink(workdir)!r}), where skfeat "
            "keeps the progress of a run in a folder of its own; it never writes or deletes "
            "through a link. Remove the link (what it points to is left as it is) or write OUT "
            "somewhere else."
        )
    if workdir.exists() and not workdir.is_dir():
        raise CommandError(
            f"{str(workdir)!r} is in the way: it is not a folder, and skfeat keeps the progress "
            "of a run in a folder of that name. Move it away or write OUT somewhere else."
        )
    if workdir.is_dir() and not os.access(workdir, os.W_OK | os.X_OK):
        raise CommandError(
            f"the folder {str(workdir)!r}, which holds the progress of a run, is not writable. "
            "Make it writable to continue the run, or delete it to start over."
        )


def _prepare_workdir(
    output: Path, parts: dict[str, Any], options: ExtractOptions
) -> tuple[Path, dict[str, Any]]:
    workdir = workdir_for(output)
    _check_workdir(workdir)
    if workdir.is_dir() and not any(workdir.iterdir()):
        workdir.rmdir()  # records nothing: left by a run stopped as it began or as it ended
    fresh = {"version": _STATE_VERSION, "fingerprint": parts, "chunks_done": 0, "failed": []}
    if workdir.exists():
        state = _load_state(workdir)
        if not options.resume:
            raise CommandError(
                f"an unfinished run left {str(workdir)!r}. Rerun with --resume to continue "
                "it, or delete that folder to start over."
            )
        if state is None or state.get("version") != _STATE_VERSION:
            note(f"No usable progress in {str(workdir)!r}; starting from the beginning.")
            try:
                _remove_workdir(workdir)
            except OSError as error:
                raise CommandError(
                    f"cannot remove {str(workdir)!r} to start over ({error}). Delete it, "
                    "then run again."
                ) from error
        else:
            changed = [k for k in parts if state["fingerprint"].get(k) != parts[k]]
            if changed:
                details = "; ".join(
                    f"{k}: was {state['fingerprint'].get(k)!r}, now {parts[k]!r}" for k in changed
                )
                raise CommandError(
                    f"cannot resume into {str(output)!r}: the inputs or options changed "
                    f"({details}). Use the same SRC and options, or delete "
                    f"{str(workdir)!r} to start over."
                )
            return workdir, state
    elif options.resume:
        note("Nothing to resume; starting from the beginning.")
    try:
        workdir.mkdir()
    except OSError as error:
        if out_of_space_errno(error) is not None:
            raise
        raise CommandError(
            f"cannot create the folder {str(workdir)!r} for the progress of the run "
            f"({error.strerror or error}). Write OUT to a folder you can write to."
        ) from error
    _save_state(workdir, fresh)
    return workdir, fresh


def _remove_workdir(workdir: Path) -> None:
    """Remove the progress folder, ``state.json`` last, never following a link.

    A run stopped while the folder is being removed still finds its state there.
    """
    if workdir.is_symlink():  # swapped for a link since the run began
        raise OSError(errno.ELOOP, "a symbolic link, not removed", str(workdir))
    for entry in workdir.iterdir():
        if entry.name == _STATE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            os.unlink(entry)
    if (workdir / _STATE).exists():
        os.unlink(workdir / _STATE)
    workdir.rmdir()


def _moved_into_place(output: Path) -> bool:
    """Whether a run into ``output`` was stopped after its file was renamed into place."""
    workdir = workdir_for(output)
    if workdir.is_symlink() or not workdir.is_dir():
        return False
    state = _load_state(workdir) or {}
    built = state.get("finished")
    return isinstance(built, str) and not (workdir / built).exists()


def _left_complete(output: Path) -> bool:
    """Whether ``output`` is there with no progress beside it: a run that finished.

    A run stopped after removing ``state.json`` but before its folder leaves that
    folder empty.
    """
    workdir = workdir_for(output)
    if not output.is_file() or workdir.is_symlink():
        return False
    return not workdir.exists() or (workdir.is_dir() and not any(workdir.iterdir()))


def _already_complete(
    output: Path, fmt: str, paths: list[str], names: list[str], n_chunks: int
) -> ExtractReport:
    """``--resume`` on a finished run: check that the file is this run's, and say so."""
    try:
        written_paths, width, columns = _written(output, fmt)
    except Exception as error:  # unreadable: it cannot be shown to be this run's
        differs = f"cannot be read ({type(error).__name__}: {error})"
    else:
        differs = ""
        if written_paths != paths:
            differs = f"holds {len(written_paths)} rows of other images"
        elif width != len(names) or columns not in (None, names):
            differs = f"holds {width} other features"
    if differs:
        raise CommandError(
            f"{str(output)!r} exists, with no unfinished run beside it to resume, but it is "
            f"not this run's output: it {differs}. Pass --overwrite to replace it, or write "
            "OUT somewhere else."
        )
    workdir = workdir_for(output)
    if workdir.is_dir():
        workdir.rmdir()  # the empty folder of a run stopped as it ended
    note(
        f"{str(output)!r} is complete already: {len(paths)} rows x {len(names)} features, "
        "of the images and features of this run. Nothing to resume."
    )
    return ExtractReport(output, len(paths), len(names), n_chunks)


def _written(output: Path, fmt: str) -> tuple[list[str], int, list[str] | None]:
    """The paths, the width and the feature names (None for ``.npy``) of a finished output."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(output)
        listed = (schema.metadata or {}).get(b"skfeat.feature_names")
        columns = json.loads(listed) if listed is not None else schema.names[1:]
        written = pq.read_table(output, columns=["path"]).column("path").to_pylist()
        return written, len(columns), columns
    if fmt == "csv":
        with output.open(newline="", encoding="utf-8") as file:
            rows = csv.reader(file)
            header = next(rows, [])
            return [row[0] for row in rows], len(header) - 1, header[1:]
    array = np.load(output, mmap_mode="r")
    listing = paths_file_for(output).read_text(encoding="utf-8").splitlines()
    if array.ndim != 2 or array.shape[0] != len(listing):
        raise ValueError(f"an array of shape {array.shape} for {len(listing)} paths")
    return listing, int(array.shape[1]), None


def _move_into_place(moves: list[tuple[Path, Path]], workdir: Path) -> None:
    for built, destination in moves:
        if built.exists():
            os.replace(built, destination)
        elif not destination.exists():  # a stopped run has moved it, or it was deleted
            raise CommandError(
                f"{str(workdir)!r} records a finished run, but neither it nor "
                f"{str(destination)!r} holds the file {built.name!r}. Delete {str(workdir)!r} "
                "and run again to start over."
            )


@contextmanager
def _out_of_space_is_one_error(
    output: Path, writer: Writer, n_chunks: int, chunk_size: int
) -> Iterator[None]:
    """Turn a full disk, whatever raised it, into one :class:`CommandError`."""
    try:
        yield
    except Exception as error:
        code = out_of_space_errno(error)
        if code is None:
            raise
        message = _out_of_space_message(code, output, writer, n_chunks, chunk_size)
        raise CommandError(message) from error


def _out_of_space_message(
    code: int, output: Path, writer: Writer, n_chunks: int, chunk_size: int
) -> str:
    workdir = workdir_for(output)
    state = _load_state(workdir) if workdir.is_dir() and not workdir.is_symlink() else None
    done = int((state or {}).get("chunks_done", 0))
    full = "the disk quota is full" if code == errno.EDQUOT else "the disk is full"
    text = f"{full}: cannot write {str(output)!r} ({os.strerror(code)})"
    try:
        needed, phrase = writer.space_needed(min(done * chunk_size, len(writer.paths)))
        text += f". It needs {phrase.format(format_size(needed))}"
        if code == errno.ENOSPC:
            text += f"; {format_size(shutil.disk_usage(workdir.parent).free)} are free there"
    except OSError:
        pass  # the sizes are a help; the message stands without them
    return (
        f"{text}. Free some space, then rerun the same command with --resume to continue: "
        f"{done} of {n_chunks} chunks are done and kept in {str(workdir)!r}."
    )


def check_output(output: Path, options: ExtractOptions) -> str:
    """Fail early on an output the run could not write; return its format."""
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        raise CommandError(
            f"cannot tell the format of {str(output)!r} from its extension; "
            "use .parquet, .npy or .csv."
        )
    if not output.parent.is_dir():
        raise CommandError(f"the output folder {str(output.parent)!r} does not exist.")
    if not os.access(output.parent, os.W_OK | os.X_OK):
        raise CommandError(
            f"cannot write in the output folder {str(output.parent)!r}; write OUT to a folder "
            "you can write to."
        )
    # Only the tidying up is left, or nothing at all: run_extract checks the file.
    finished = options.resume and (_moved_into_place(output) or _left_complete(output))
    if output.exists() and not options.overwrite and not finished:
        raise CommandError(f"{str(output)!r} exists already; pass --overwrite to replace it.")
    if options.chunk_size < 1:
        raise CommandError(f"--chunk-size must be >= 1, got {options.chunk_size}.")
    _check_workdir(workdir_for(output))
    return fmt


def run_extract(paths: list[str], output: Path, options: ExtractOptions) -> ExtractReport:
    """Featurize ``paths`` into ``output``, chunk by chunk; see the module docstring."""
    fmt = check_output(output, options)
    if fmt == "parquet":
        from skfeat._optional import import_optional

        import_optional("pyarrow", extra="parquet", purpose="writing Parquet")

    featurizer = build_featurizer(options).fit(paths)
    metadata = describe_run(featurizer)
    names = [str(name) for name in featurizer.get_feature_names_out()]
    parts = _fingerprint_parts(paths, featurizer, fmt, options)
    n_images = len(paths)
    starts = range(0, n_images, options.chunk_size)
    n_chunks = len(starts)
    writer = make_writer(
        fmt, workdir_for(output), paths, names, metadata, {"list_column": options.list_column}
    )

    def out_of_space_is_one_error() -> Any:
        return _out_of_space_is_one_error(output, writer, n_chunks, options.chunk_size)

    if options.resume and not options.overwrite and _left_complete(output):
        return _already_complete(output, fmt, paths, names, n_chunks)
    with out_of_space_is_one_error():
        workdir, state = _prepare_workdir(output, parts, options)
        if not state.get("finished"):
            writer.start(state)
    resumed = int(state["chunks_done"])
    if resumed:
        note(f"Resuming: {resumed} of {n_chunks} chunks were done already.")
    on_error = featurizer.get_params()["on_error"]
    started = time.perf_counter()
    done_images = 0
    done_before = min(resumed * options.chunk_size, n_images)
    # One bar for the whole run: the chunks' transforms advance it, and its rate and
    # time left are the run's, not the chunk's.
    with job_bar(n_images, done_before, enabled=featurizer.get_params()["progress"]) as bar:
        for index in range(resumed, n_chunks):
            start = starts[index]
            stop = min(start + options.chunk_size, n_images)
            if n_chunks > 1:
                write(f"Chunk {index + 1}/{n_chunks}: images {start + 1}-{stop} of {n_images}")
            try:
                # Failed images are reported once, at the end, with their paths.
                with decode_failures() as failures:
                    features = featurizer.transform(paths[start:stop])
            except BaseException as error:
                if index > 0:
                    write(
                        f"{index} of {n_chunks} chunks are saved; rerun with --resume to continue."
                    )
                wrapped = _in_chunk(error, start, stop) if isinstance(error, Exception) else error
                if wrapped is error:
                    raise
                raise wrapped from error
            failed = [start + int(failure.index or 0) for failure in failures]
            with out_of_space_is_one_error():
                extra = writer.write(index, start, features)
                state.update(extra)
                state["failed"] = [*state["failed"], *failed]
                state["chunks_done"] = index + 1
                _save_state(workdir, state)
            done_images += stop - start
            if bar is not None:
                bar.update(stop - bar.n)  # images a cache served did not pass the engine
    elapsed = time.perf_counter() - started

    with out_of_space_is_one_error():
        if not state.get("finished"):
            writer.finish(n_chunks)
            state["finished"] = writer.result.name  # built: from here on, only renames
            _save_state(workdir, state)
        _move_into_place(writer.moves(output), workdir)
    try:
        _remove_workdir(workdir)
    except OSError as error:
        warn(f"{str(output)!r} is complete, but {str(workdir)!r} is left ({error}); delete it.")

    rate = f", {done_images / elapsed:.1f} images/s" if done_images and elapsed > 0 else ""
    note(
        f"Wrote {n_images} rows x {len(names)} features to {str(output)!r} "
        f"in {elapsed:.1f} s{rate}."
    )
    report = ExtractReport(output, n_images, len(names), resumed, list(state["failed"]))
    _report_failures(report, paths, on_error)
    return report


def _in_chunk(error: Exception, start: int, stop: int) -> Exception:
    """The error as this command line says it, image rows counted over all inputs."""
    from skfeat.exceptions import ImageDecodeError, SkfeatError

    if isinstance(error, ImageDecodeError) and error.index is not None:
        return image_error(error, offset=start)
    if not isinstance(error, SkfeatError | OSError | ValueError | ImportError):
        return error
    message = " ".join(str(error).split())
    if start > 0:
        message += f" (in rows {start}-{stop - 1})"
    return CommandError(message)


def _report_failures(report: ExtractReport, paths: list[str], on_error: str | None) -> None:
    if not report.failed:
        return
    fill = "NaN" if on_error == "nan" else "zeros"
    warn(
        f"{len(report.failed)} of {report.n_rows} images could not be read; their rows "
        f"are {fill} in {str(report.output)!r}:"
    )
    listed = report.failed[:_LISTED_FAILURES]
    reasons = _reasons([paths[row] for row in listed])
    for row, reason in zip(listed, reasons, strict=True):
        warn(f"  row {row}: {paths[row]}" + (f": {reason}" if reason else ""))
    if len(report.failed) > _LISTED_FAILURES:
        warn(f"  ... and {len(report.failed) - _LISTED_FAILURES} more (rows all {fill}).")


def _reasons(paths: list[str]) -> list[str | None]:
    """Why each image cannot be read, from :func:`skfeat.check_images`."""
    from skfeat import check_images

    return [row["error"] for row in check_images(paths, as_frame=False)]
