"""A user's own ``torch.nn.Module``."""

from __future__ import annotations

import copy
import hashlib
import weakref
from typing import Any

from skfeat._backends._base import Backend, is_weights_path
from skfeat._backends._timm import PRE_LOGITS, is_timm_model, timm_data_config, with_pre_logits
from skfeat._optional import import_optional
from skfeat._preprocess import DataConfig
from skfeat.exceptions import UnknownModelError

__all__ = ["ModuleBackend"]

# module -> (stamp of its tensors, fingerprint): hashing every weight is skipped
# while no tensor was replaced or changed in place (torch counts in-place writes).
_FINGERPRINTS: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], str]] = (
    weakref.WeakKeyDictionary()
)


class ModuleBackend(Backend):
    """Any ``torch.nn.Module`` taking ``(N, 3, H, W)`` float images.

    ``weights="DEFAULT"`` keeps the module's own weights; a path loads a state_dict
    into a copy; None is not allowed (the module is already initialised). The user's
    module is never modified: skfeat works on a copy.

    Images get the module's timm data config when it has a ``pretrained_cfg`` (or
    ``default_cfg``) with an ``input_size``, as timm models do; otherwise the ImageNet
    recipe (resize 256, centre crop 224, ImageNet mean and std). The estimator's
    ``preprocessing`` replaces either. A timm model (its forward pass timm's own)
    gets timm's pre-logits as ``"penultimate"``, as ``"timm:"`` names do.
    """

    source = "module"

    def __init__(self, module: Any, weights: Any) -> None:
        super().__init__(type(module).__name__, weights)
        self.module = module

    def check(self) -> None:
        if self.weights != "DEFAULT" and not is_weights_path(self.weights):
            raise UnknownModelError(
                f"weights={self.weights!r} is not valid when model is a torch.nn.Module: use "
                "'DEFAULT' to keep the module's own weights, or a path to a state_dict file."
            )

    @property
    def trace_key(self) -> None:
        return None  # the user may change the module between fits

    @property
    def owner(self) -> Any:
        return self.module

    @property
    def penultimate_module(self) -> str | None:
        return PRE_LOGITS if is_timm_model(self.module) else None

    def readable(self, module: Any) -> Any:
        return with_pre_logits(module) if is_timm_model(module) else module

    def tracing_module(self, device: str, side: int | None = None) -> Any:
        if side is not None:
            return None
        return self.readable(copy.deepcopy(self.module).to(device))

    def weights_fingerprint(self) -> str:
        if is_weights_path(self.weights):
            return super().weights_fingerprint()
        state = self.module.state_dict(keep_vars=True)
        stamp = tuple(
            (name, id(tensor), tensor.data_ptr(), tensor._version) for name, tensor in state.items()
        )
        known = _FINGERPRINTS.get(self.module)
        if known is not None and known[0] == stamp:
            return known[1]
        digest = hashlib.sha256()
        for name, tensor in state.items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        fingerprint = f"module-{digest.hexdigest()[:16]}"
        _FINGERPRINTS[self.module] = (stamp, fingerprint)
        return fingerprint

    def build(self) -> Any:
        return copy.deepcopy(self.module)

    def load_named(self) -> Any:
        return self.build()  # weights="DEFAULT": the module's own

    def data_config(self) -> DataConfig:
        cfg = getattr(self.module, "pretrained_cfg", None) or getattr(
            self.module, "default_cfg", None
        )
        if isinstance(cfg, dict) and cfg.get("input_size"):
            import_optional("timm", extra="timm", purpose="a module with a pretrained_cfg")
            from timm.data import resolve_data_config

            config = resolve_data_config(pretrained_cfg=dict(cfg))
            side = _fixed_input_side(self.module)
            if side is not None:  # built for another size than its pretrained_cfg says
                config["input_size"] = (3, side, side)
            return timm_data_config(config, f"the module's pretrained_cfg ({self.name})")
        return DataConfig(resize_size=256, crop_size=224, interpolation="bilinear")


def _fixed_input_side(module: Any) -> int | None:
    """The one input side a timm ViT-style module takes (``patch_embed.img_size``), if fixed."""
    patch_embed = getattr(module, "patch_embed", None)
    size = getattr(patch_embed, "img_size", None)
    if getattr(module, "dynamic_img_size", False) or getattr(patch_embed, "dynamic_img_pad", False):
        return None
    if isinstance(size, (tuple, list)) and len(size) == 2 and size[0] == size[1]:
        return int(size[0])
    return None
