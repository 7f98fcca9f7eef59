"""What every command shares: the error type, stderr messages, and unreadable images.

An unreadable image is reported from the facts skfeat gives about it, never from its
message text or from the values of its row: an :class:`~skfeat.exceptions.ImageDecodeError`
carries ``index``, ``source`` and ``cause``, and the
:class:`~skfeat.exceptions.ImageDecodeWarning` of a call carries every failure in
``errors``.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from skfeat._progress import write
from skfeat.exceptions import ImageDecodeError, ImageDecodeWarning, SkfeatError

__all__ = ["CommandError", "decode_failures", "image_error", "note", "warn"]

_ON_ERROR_HINT = (
    "Pass --on-error nan to keep going with a NaN row for each unreadable image, "
    "or find them all first with skfeat check SRC."
)


class CommandError(SkfeatError):
    """A command cannot run as asked; the message says why and what to do instead."""


def note(message: str) -> None:
    """A status line on stderr, so stdout stays clean for tables and data.

    Above the job's progress bar when one is open (:func:`skfeat._progress.write`).
    """
    write(message)


def warn(message: str) -> None:
    """A warning line on stderr, prefixed like argparse's errors."""
    print(f"skfeat: warning: {message}", file=sys.stderr, flush=True)


def image_error(error: ImageDecodeError, offset: int = 0) -> CommandError:
    """An unreadable image as the command line says it: its row among all the inputs
    (``offset`` plus its index in the call), and the flag that keeps going past it.
    """
    index = offset + (error.index or 0)
    cause = " ".join(str(error.cause).split()).rstrip(".")
    return CommandError(f"Could not read image {index} ({error.source}): {cause}. {_ON_ERROR_HINT}")


@contextmanager
def decode_failures() -> Iterator[list[ImageDecodeError]]:
    """Collect the images that failed in the calls inside, from their warnings.

    The list is filled when the block ends, with the ``errors`` of each
    :class:`~skfeat.exceptions.ImageDecodeWarning`, whatever the warning filters say;
    that warning is not shown (the command reports failures itself). Any other warning
    is passed on as it was emitted.
    """
    failures: list[ImageDecodeError] = []
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as recorded:
            warnings.simplefilter("always", ImageDecodeWarning)
            caught = recorded
            yield failures
    finally:  # also when the block raises: its other warnings are still shown
        for record in caught:
            if isinstance(record.message, ImageDecodeWarning):
                failures.extend(record.message.errors)
            else:
                warnings.warn_explicit(
                    record.message,
                    record.category,
                    record.filename,
                    record.lineno,
                    source=record.source,
                )
