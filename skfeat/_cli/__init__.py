"""The ``skfeat`` command line: ``extract``, ``layers``, ``models``, ``check`` and ``demo``.

The commands are thin adapters on the public API. Heavy imports (torch, pandas,
matplotlib) happen inside the command that needs them, so ``skfeat --help`` is instant.
"""

from __future__ import annotations

from skfeat._cli._main import build_parser, main

__all__ = ["build_parser", "main"]
