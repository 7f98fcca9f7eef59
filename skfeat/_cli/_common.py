"""What every command shares: the error type and stderr messages."""

from __future__ import annotations

import sys

from skfeat.exceptions import SkfeatError

__all__ = ["CommandError", "note", "warn"]


class CommandError(SkfeatError):
    """A command cannot run as asked; the message says why and what to do instead."""


def note(message: str) -> None:
    """A status line on stderr, so stdout stays clean for tables and data."""
    sys.stdout.flush()  # keep the order of stdout and stderr lines when both are piped
    print(message, file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A warning line on stderr, prefixed like argparse's errors."""
    print(f"skfeat: warning: {message}", file=sys.stderr, flush=True)
