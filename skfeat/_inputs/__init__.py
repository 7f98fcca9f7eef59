"""From ``X`` to a list of items, and from one item to an upright RGB uint8 array."""

from __future__ import annotations

from skfeat._inputs._decoding import *  # noqa: F403
from skfeat._inputs._decoding import __all__  # noqa: F401
