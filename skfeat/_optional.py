"""Late imports of optional dependencies, failing with the pip command to run."""

from __future__ import annotations

import importlib
from types import ModuleType

from skfeat.exceptions import MissingDependencyError

__all__ = ["import_optional", "importable"]


def import_optional(name: str, extra: str, purpose: str) -> ModuleType:
    """Import ``name`` or raise :class:`MissingDependencyError` naming the extra.

    Parameters
    ----------
    name : str
        Importable module name, for example ``"timm"``.
    extra : str
        The skfeat extra that installs it, for example ``"timm"``.
    purpose : str
        What needs it, for the message (``"model='timm:resnet18'"``).

    Returns
    -------
    module : ModuleType
        The imported module.

    Examples
    --------
    >>> import_optional("json", extra="none", purpose="this example").__name__
    'json'
    """
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise MissingDependencyError(
            f"{purpose} needs the optional dependency {name!r}, which is not installed. "
            f'Install it with: pip install "skfeat[{extra}]"'
        ) from err


def importable(name: str) -> bool:
    """Whether ``name`` imports here: what an ``"auto"`` choice picks an extra by.

    A build that fails on import for another reason than a missing module (a binary
    built against another numpy: ``ValueError: numpy.dtype size changed``) counts as
    absent.

    Examples
    --------
    >>> importable("json"), importable("no_such_module_here")
    (True, False)
    """
    try:
        importlib.import_module(name)
    except (ImportError, ValueError):
        return False
    return True
