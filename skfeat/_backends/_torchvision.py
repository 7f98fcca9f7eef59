"""torchvision classification models, with their weights enums and recipes."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from skfeat._backends._base import (
    OFFLINE_HINT,
    Backend,
    is_weights_path,
    seeded_init,
)
from skfeat._backends._download import torch_hub_source, unreachable
from skfeat._optional import import_torchvision
from skfeat._preprocess import DataConfig
from skfeat.exceptions import UnknownModelError, WeightsUnavailableError

__all__ = ["TorchvisionBackend", "list_torchvision_models"]

# The builder option that sets the input size, for the models that fix it when built.
_SIZE_OPTIONS = {
    "vit_": lambda side: {"image_size": side},
    "maxvit_": lambda side: {"input_size": (side, side)},
}


def list_torchvision_models() -> list[str]:
    """Names of torchvision's image classification models."""
    torchvision = import_torchvision()

    return sorted(torchvision.models.list_models(module=torchvision.models))


class TorchvisionBackend(Backend):
    """A torchvision classifier such as ``"resnet50"``.

    ``weights`` is ``"DEFAULT"``, an enum member name (``"IMAGENET1K_V1"`` or
    ``"ResNet50_Weights.IMAGENET1K_V1"``), a state_dict path, or None for random init.
    Preprocessing follows the enum's ``transforms()``; for a file or random init it
    follows the model's default weights.
    """

    source = "torchvision"

    @property
    def label(self) -> str:
        return self.name  # as users write it: "resnet50"

    def _weights_enum(self) -> Any:
        from torchvision.models import get_model_weights

        return get_model_weights(self.name)

    def weights_member(self) -> Any:
        """The weights enum member named by ``weights``, or None for files and random init."""
        if self.weights is None or is_weights_path(self.weights):
            return None
        enum = self._weights_enum()
        tag = str(self.weights).split(".")[-1]
        if tag not in enum.__members__:
            choices = sorted(enum.__members__)
            raise UnknownModelError(
                f"weights={self.weights!r} is not a weights tag of torchvision model "
                f"{self.name!r}. Expected one of {choices}, a path to a state_dict file, "
                "or None for random init."
            )
        return enum[tag]

    def build(self, **options: Any) -> Any:
        from torchvision.models import get_model

        return seeded_init(lambda: get_model(self.name, weights=None, **options))

    def tracing_module(self, device: str, side: int | None = None) -> Any:
        # torchvision's ViT and MaxViT fix their input size when built; others take any.
        option = next((v for k, v in _SIZE_OPTIONS.items() if self.name.startswith(k)), None)
        if side is None or option is None:
            return super().tracing_module(device, side)
        import torch

        with torch.device(device):
            return self.build(**option(side))

    def load_named(self) -> Any:
        member = self.weights_member()
        source = torch_hub_source(member.url)
        if source.cached is None:  # torch.hub would download, with no timeout
            reason = unreachable(source.url)
            if reason is not None:
                host = urlparse(source.url).netloc
                raise WeightsUnavailableError(
                    f"Could not download the weights {member} for torchvision model "
                    f"{self.name!r}: the machine seems offline ({host} did not answer: "
                    f"{reason}), and they are not in the local cache {source.cache_dir!r}. "
                    f"{OFFLINE_HINT}"
                )
        try:
            state = member.get_state_dict(progress=False, check_hash=True)
        except Exception as err:
            raise WeightsUnavailableError(
                f"Could not download the weights {member} for torchvision model "
                f"{self.name!r} ({type(err).__name__}: {err}). The machine may be offline. "
                f"{OFFLINE_HINT}"
            ) from err
        module = self.build()
        module.load_state_dict(state)
        return module

    def data_config(self) -> DataConfig:
        member = self.weights_member() or self._weights_enum().DEFAULT
        transforms = member.transforms()
        return DataConfig(
            resize_size=int(transforms.resize_size[0]),
            crop_size=int(transforms.crop_size[0]),
            interpolation=transforms.interpolation.value,
            mean=tuple(transforms.mean),
            std=tuple(transforms.std),
        )

    def weights_fingerprint(self) -> str:
        member = self.weights_member()
        return str(member) if member is not None else super().weights_fingerprint()
