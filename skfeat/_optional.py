"""Late imports of optional dependencies, failing with the pip command to run."""

from __future__ import annotations

import importlib
from types import ModuleType

from skfeat.exceptions import MissingDependencyError

__all__ = ["import_optional", "import_torchvision", "importable"]

_CPU_WHEELS = "https://download.pytorch.org/whl/cpu"


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


def import_torchvision() -> ModuleType:
    """Import torchvision, or raise an error naming a torch build it does not match.

    A torchvision built for another torch (pip's pick of a CUDA torchvision beside a
    CPU torch when the CPU wheel index is unreachable) fails on import with
    ``RuntimeError: operator torchvision::nms does not exist``.

    Raises
    ------
    MissingDependencyError
        When torchvision and torch come from different builds: names both versions
        and the ``pip install`` of a matching pair.
    """
    try:
        return importlib.import_module("torchvision")
    except RuntimeError as err:
        if "torchvision::" not in str(err):
            raise
        import torch

        raise MissingDependencyError(
            f"torchvision {_installed_version('torchvision')} does not match torch "
            f"{torch.__version__}: importing it failed with {str(err).strip()!r}. The two "
            "come from different builds (for example a CUDA torchvision beside a CPU "
            "torch, which pip picks when the CPU wheel index is unreachable). Install a "
            f"matching pair: {_matching_pair(torch.__version__)} (for a GPU, the index of "
            "your CUDA version, such as .../whl/cu128)."
        ) from err


def _installed_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "(version unknown)"


def _matching_pair(torch_version: str) -> str:
    """The pip command for torch and its torchvision (torch 2.N goes with 0.(N + 15))."""
    release = torch_version.split("+")[0]
    parts = release.split(".")
    if len(parts) >= 2 and parts[0] == "2" and parts[1].isdigit():
        vision = f"0.{int(parts[1]) + 15}.*"
    else:
        vision = "<the release made for it>"
    return f"pip install torch=={release} torchvision=={vision} --index-url {_CPU_WHEELS}"


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
