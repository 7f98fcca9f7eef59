"""Running a backbone over many images: settings, the model registry and the engine.

What the rest of skfeat uses is imported from here; the modules behind it are:

- :mod:`~skfeat._runtime._settings`: device, precision, batch size and threads of one
  call, resolved once (:func:`resolve_settings`).
- :mod:`~skfeat._runtime._precision`: which precision is fast and faithful where.
- :mod:`~skfeat._runtime._registry`: each backbone loaded once per process, tuned once.
- :mod:`~skfeat._runtime._fuse`: BatchNorm folded into the convolution before it.
- :mod:`~skfeat._runtime._engine`: a run plan over many images, streamed in batches.

Each name is imported on first use (PEP 562), so importing the settings (for
``n_jobs``) does not import the engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from skfeat._runtime._engine import Failure, featurize
    from skfeat._runtime._precision import PRECISIONS
    from skfeat._runtime._settings import RunSettings, resolve_n_threads, resolve_settings

__all__ = [
    "PRECISIONS",
    "Failure",
    "RunSettings",
    "featurize",
    "resolve_n_threads",
    "resolve_settings",
]

# Name -> the module that defines it.
_FACE = {
    "Failure": "skfeat._runtime._engine",
    "PRECISIONS": "skfeat._runtime._precision",
    "RunSettings": "skfeat._runtime._settings",
    "featurize": "skfeat._runtime._engine",
    "resolve_n_threads": "skfeat._runtime._settings",
    "resolve_settings": "skfeat._runtime._settings",
}


def __getattr__(name: str) -> object:
    if name in _FACE:  # read from its module each time, so a patched module is seen
        return getattr(importlib.import_module(_FACE[name]), name)
    raise AttributeError(f"module 'skfeat._runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
