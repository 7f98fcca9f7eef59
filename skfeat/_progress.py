"""Progress bars: one per transform, or one for a job of several transforms.

A transform with ``progress=True`` shows a bar of its images. A job that runs many
transforms, such as ``skfeat extract``'s chunks, opens one bar for all its images with
:func:`job_bar`; the transforms inside it advance that bar instead of starting their
own, so its rate and time left are the whole job's.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["job_bar", "transform_bar", "write"]

_JOB: ContextVar[Any] = ContextVar("skfeat_job_bar", default=None)
_SMOOTHING = 0.1  # the rate mostly from recent batches: decoding speed varies


def _tqdm(**options: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(unit="img", desc="skfeat", smoothing=_SMOOTHING, **options)


@contextmanager
def transform_bar(total: int, enabled: bool) -> Iterator[Any]:
    """The bar one transform advances: the job's if one is open, else its own, or None."""
    if not enabled:
        yield None
        return
    job = _JOB.get()
    if job is not None:
        yield job
        return
    bar = _tqdm(total=total)
    try:
        yield bar
    finally:
        bar.close()


@contextmanager
def job_bar(total: int, done: int = 0, enabled: bool = True) -> Iterator[Any]:
    """One bar over ``total`` images, ``done`` of them before it opened (a resumed run).

    Transforms run inside the ``with`` block advance it; the job moves it to each
    chunk's end itself (``bar.update(stop - bar.n)``), for the images a cache served.
    """
    if not enabled:
        yield None
        return
    bar = _tqdm(total=total, initial=done)
    token = _JOB.set(bar)
    try:
        yield bar
    finally:
        _JOB.reset(token)
        bar.close()


def write(message: str) -> None:
    """A status line on stderr, above the job's bar when one is open."""
    job = _JOB.get()
    if job is None:
        sys.stdout.flush()  # keep the order of stdout and stderr lines when both are piped
        print(message, file=sys.stderr, flush=True)
    else:
        job.write(message, file=sys.stderr)
