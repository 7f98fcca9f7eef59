"""Hugging Face ``transformers`` vision models (``"hf:<repo id>"`` or ``"hf:<folder>"``).

The model is the checkpoint's vision backbone, loaded with ``from_pretrained`` from a
``save_pretrained`` folder, the Hugging Face cache, or the Hub. Its forward pass is
rewritten, on the loaded copy only, to take pixels and return one tensor, the model's
own image embedding, passed through an ``Identity`` named :data:`EMBEDDING` so that
``"penultimate"`` reads it exactly; module names stay the model's own. The image
processor's config gives the preprocessing recipe; one skfeat cannot reproduce is
refused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import math
import os
import re
import types
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skfeat._backends._base import Backend, file_fingerprint, seeded_init
from skfeat._backends._download import hub_offline_mode, unreachable
from skfeat._optional import import_optional
from skfeat._preprocess import DataConfig
from skfeat.exceptions import UnknownModelError, WeightsUnavailableError

__all__ = ["EMBEDDING", "HF_PREFIX", "HfBackend", "hf_data_config"]

HF_PREFIX = "hf:"
# The module added to the model whose output is its image embedding: "penultimate".
EMBEDDING = "skfeat_embedding"

# Vision towers of image-text models: the class that holds the image side only.
_TOWERS = {
    "clip": "CLIPVisionModelWithProjection",
    "clip_vision_model": "CLIPVisionModelWithProjection",
    "siglip": "SiglipVisionModel",
    "siglip_vision_model": "SiglipVisionModel",
}
# Tokens before the patch tokens, per model type: (count, whether token 0 is a class token).
_PREFIX_TOKENS: dict[str, Any] = {
    "vit": lambda config: (1, True),
    "vit_msn": lambda config: (1, True),
    "deit": lambda config: (2, True),  # class and distillation tokens
    "beit": lambda config: (1, True),
    "data2vec-vision": lambda config: (1, True),
    "dinov2": lambda config: (1, True),
    "dinov2_with_registers": lambda config: (1 + int(config.num_register_tokens), True),
    "clip_vision_model": lambda config: (1, True),
    "siglip_vision_model": lambda config: (0, False),
}
# Families whose image classifier reads the class token after the final norm: the
# embedding of a checkpoint saved without the base model's pooler.
_CLASS_TOKEN_HEADS = ("vit", "deit")
# Image processors whose recipe is resize, centre crop, rescale, normalise, in that
# order; the Fast variants compute the same.
_PROCESSORS = (
    "BeitImageProcessor",
    "BitImageProcessor",
    "CLIPImageProcessor",
    "ConvNextImageProcessor",
    "DeiTImageProcessor",
    "SiglipImageProcessor",
    "ViTImageProcessor",
)
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL's codes, as HF stores them
# The files from_pretrained reads: configs, weights and their shard indexes.
_MODEL_FILES = re.compile(r".*\.(safetensors|bin)(\.index\.json)?$|(preprocessor_)?config\.json$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _transformers(purpose: str) -> Any:
    return import_optional("transformers", extra="hf", purpose=purpose)


@dataclass(frozen=True)
class _Location:
    """Where ``from_pretrained`` reads a model: a folder, or a Hub id and revision."""

    source: str  # a folder path or a repo id
    revision: str | None
    folder: bool
    local_only: bool
    offline_reason: str = ""  # why the Hub is not used, for messages

    @property
    def from_pretrained(self) -> dict[str, Any]:
        """The keywords every ``from_pretrained`` call takes, beside ``source``."""
        return {"revision": self.revision, "local_files_only": self.local_only}


class HfBackend(Backend):
    """A ``transformers`` vision model: ``"hf:<repo id>[@<revision>]"`` or ``"hf:<folder>"``.

    ``weights="DEFAULT"`` loads the checkpoint's weights; None builds the architecture
    from its config with seeded random weights. The embedding (``"penultimate"``) is
    the model's own: ``image_embeds`` of CLIP's vision model with projection,
    ``pooler_output`` where the model has a pooler with weights in the checkpoint
    (DINOv2: the normed class token; SigLIP: its attention-pool head; BEiT: the normed
    mean of the patch tokens; ConvNeXt, ResNet: the pooled map), and for ViT and DeiT
    checkpoints saved by their image classifier (no pooler weights) the class token
    after the final norm, which that classifier reads.
    """

    source = "hf"

    @property
    def penultimate_module(self) -> str:
        return EMBEDDING

    @property
    def trace_key(self) -> Any:
        return (self.label, self.weights_fingerprint())  # a folder's config may change

    def check(self) -> None:
        """Raise unless the weights tag is valid and the model's config can be read."""
        if self.weights not in ("DEFAULT", None):
            raise UnknownModelError(
                f"weights={self.weights!r} is not valid for Hugging Face models: use "
                "'DEFAULT' (the checkpoint's weights) or None (random init from its config). "
                "For a fine-tuned copy, save it with model.save_pretrained(folder) and pass "
                "model='hf:/path/to/folder'; for a revision, model='hf:<repo id>@<revision>'."
            )
        _model_class(self._config())

    # -- where the files are -----------------------------------------------------------

    def _location(self) -> _Location:
        return _locate(self.name)

    def _config(self) -> Any:
        return _load_config(self._location(), self.label)

    def weights_fingerprint(self) -> str:
        location = self._location()
        if location.folder:
            files = _folder_fingerprint(location.source)
        else:
            files = f"{location.source}@{_commit(location, self.label)}"
        if self.weights is None:
            return f"{super().weights_fingerprint()}|{files}"
        return files

    # -- the network -------------------------------------------------------------------

    def build(self) -> Any:
        config = self._config()
        model_class = _model_class(config)
        kwargs = _init_kwargs(model_class, config)
        return seeded_init(lambda: model_class(config, **kwargs))

    def load_named(self) -> Any:
        import torch

        config = self._config()
        model_class = _model_class(config)
        location = self._location()
        try:
            with _quiet():
                module, info = model_class.from_pretrained(
                    location.source,
                    **location.from_pretrained,
                    **_init_kwargs(model_class, config),
                    dtype=torch.float32,  # skfeat's precision setting casts, not the checkpoint
                    output_loading_info=True,
                )
        except OSError as err:
            raise _unavailable(location, self.label, err) from err
        missing = sorted(info.get("missing_keys") or ())
        mismatched = sorted(str(key) for key in info.get("mismatched_keys") or ())
        if missing or mismatched:
            details = "; ".join(
                f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                for label, keys in (("missing", missing), ("shape mismatch", mismatched))
                if keys
            )
            raise WeightsUnavailableError(
                f"The checkpoint of {self.label!r} does not hold all the weights of "
                f"{model_class.__name__} ({details}); they would be random. Save the model "
                "with save_pretrained from the class that was trained, or pass weights=None "
                "for random init on purpose."
            )
        return module

    def readable(self, module: Any) -> Any:
        return with_embedding(module)

    def data_config(self) -> DataConfig:
        location = self._location()
        stamp = _folder_fingerprint(location.source) if location.folder else None
        config = _processor_recipe(location, self.label, stamp)
        _check_input_size(self._config(), config, self.label)
        return config


@functools.lru_cache(maxsize=64)
def _processor_recipe(location: _Location, label: str, stamp: str | None) -> DataConfig:
    """The recipe of the image processor saved with the model, read once per version."""
    transformers = _transformers(f"model={label!r}")
    try:
        with _quiet():
            processor = transformers.AutoImageProcessor.from_pretrained(
                location.source, **location.from_pretrained
            )
    except OSError as err:
        if location.folder:
            raise UnknownModelError(
                f"The folder {location.source!r} has no image processor config "
                f"({type(err).__name__}: {str(err)[:200]}). Save the processor the model "
                "was trained with beside it: AutoImageProcessor.from_pretrained(<the "
                "original repo>).save_pretrained(folder)."
            ) from err
        raise _unavailable(location, label, err) from err
    return hf_data_config(processor, f"the image processor of {label!r}")


def hf_data_config(processor: Any, origin: str) -> DataConfig:
    """An image processor's recipe (resize, centre crop, rescale, normalise) as a DataConfig.

    ``size={"shortest_edge": s}`` resizes the short side to ``s``; ``{"height": h,
    "width": w}`` resizes both sides (timm's ``"squash"``); ConvNeXt's processor resizes
    the short side to ``s / crop_pct`` and crops ``s``, below 384 px. A centre crop
    follows when ``do_center_crop``.

    Raises
    ------
    UnknownModelError
        For a processor class or a setting skfeat does not reproduce (no resize,
        padding, a non-square crop, another rescale factor, a resample filter other
        than nearest, bilinear and bicubic), rather than feeding the model another
        recipe than its own.
    """
    kind = type(processor).__name__.removesuffix("Fast")

    def refuse(what: str) -> UnknownModelError:
        return UnknownModelError(
            f"The preprocessing of {origin} ({kind}) is not supported: {what}. skfeat "
            "reproduces resize, centre crop, rescale by 1/255 and normalise, with the "
            f"processors {', '.join(_PROCESSORS)}."
        )

    if kind not in _PROCESSORS:
        raise refuse("its processor class is not one whose steps skfeat knows")
    if not getattr(processor, "do_resize", True):
        raise refuse("do_resize=False feeds images at their own size")
    if getattr(processor, "do_pad", False):
        raise refuse("do_pad=True pads the images")
    if getattr(processor, "do_flip_channel_order", False):
        raise refuse("do_flip_channel_order=True")
    factor = float(getattr(processor, "rescale_factor", 1 / 255))
    if not getattr(processor, "do_rescale", True) or not math.isclose(factor, 1 / 255):
        raise refuse(f"pixels are rescaled by {factor!r}, not 1/255")
    interpolation = _interpolation(getattr(processor, "resample", 2))
    if interpolation is None:
        raise refuse(f"resample={getattr(processor, 'resample', None)!r}")
    size = _size(getattr(processor, "size", None))
    crop = (
        _size(getattr(processor, "crop_size", None))
        if getattr(processor, "do_center_crop", False)
        else {}
    )
    if crop and crop.get("height") != crop.get("width"):
        raise refuse(f"the crop {crop!r} is not square")
    crop_side = crop.get("height")
    if set(size) == {"shortest_edge"} and kind == "ConvNextImageProcessor":
        side = size["shortest_edge"]
        if crop_side not in (None, side):
            raise refuse(f"a second crop to {crop_side} after the crop to {side}")
        if side < 384:  # ConvNeXt's rule: resize to side / crop_pct, then crop side
            resize = int(side / float(processor.crop_pct))
            return _config(resize, side, interpolation, processor, "center")
        return _config(side, side, interpolation, processor, "squash")
    if set(size) == {"shortest_edge"}:
        if crop_side is None:
            raise refuse("without a centre crop its images are not square")
        return _config(size["shortest_edge"], crop_side, interpolation, processor, "center")
    if set(size) == {"height", "width"}:
        if size["height"] != size["width"]:
            raise refuse(f"it resizes to {size['height']}x{size['width']}, not a square")
        side = size["height"]
        return _config(side, crop_side or side, interpolation, processor, "squash")
    raise refuse(f"size={size!r}")


def _config(
    resize: int, crop: int, interpolation: str, processor: Any, crop_mode: str
) -> DataConfig:
    if crop > resize:
        raise UnknownModelError(
            f"The image processor crops {crop} px from images resized to {resize} px, which "
            "pads them; skfeat does not reproduce that."
        )
    if getattr(processor, "do_normalize", True):
        mean, std = _triple(processor.image_mean), _triple(processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return DataConfig(resize, crop, interpolation, mean, std, crop_mode=crop_mode)


def _triple(values: Any) -> tuple[float, float, float]:
    floats = [float(v) for v in (values if isinstance(values, (list, tuple)) else [values])]
    if len(floats) == 1:
        floats *= 3
    red, green, blue = floats  # an image processor gives one value or one per channel
    return red, green, blue


def _size(size: Any) -> dict[str, int]:
    """The set entries of an HF size (a dict or a ``SizeDict``)."""
    if size is None:
        return {}
    if isinstance(size, int):
        return {"height": size, "width": size}
    items = size.items() if isinstance(size, Mapping) else vars(size).items()
    return {key: int(value) for key, value in items if value is not None}


def _interpolation(resample: Any) -> str | None:
    code = getattr(resample, "value", resample)
    if isinstance(code, str):  # a torchvision InterpolationMode
        return code if code in _RESAMPLE.values() else None
    return _RESAMPLE.get(int(code)) if code is not None else "bilinear"


def _check_input_size(config: Any, data: DataConfig, label: str) -> None:
    """A model with fixed position embeddings takes its config's image size only."""
    image_size = getattr(config, "image_size", None)
    model_class = _model_class(config)
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0] if len(set(image_size)) == 1 else None
    fixed = "interpolate_pos_encoding" in inspect.signature(model_class.forward).parameters
    if fixed and isinstance(image_size, int) and image_size != data.crop_size:
        raise UnknownModelError(
            f"The image processor of {label!r} crops {data.crop_size} px, but the model takes "
            f"{image_size} px (config.image_size); transformers itself refuses that input. "
            "Save a processor whose crop size matches the model."
        )


# -- the model's classes and forward ---------------------------------------------------


def _model_class(config: Any) -> Any:
    """The ``transformers`` class for the vision backbone of ``config``."""
    transformers = _transformers("a Hugging Face model")
    model_type = getattr(config, "model_type", "")
    tower = _TOWERS.get(model_type)
    if tower == "CLIPVisionModelWithProjection" and "CLIPVisionModel" in (
        getattr(config, "architectures", None) or ()
    ):
        tower = "CLIPVisionModel"  # saved without the projection
    if tower is not None:
        return getattr(transformers, tower)
    try:
        model_class = transformers.AutoModel._model_mapping[type(config)]
    except KeyError:
        model_class = None
    if model_class is None or getattr(model_class, "main_input_name", "") != "pixel_values":
        raise UnknownModelError(
            f"The Hugging Face model type {model_type!r} is not a vision backbone that takes "
            "pixel_values (for image-text models skfeat serves CLIP and SigLIP). Pass a vision "
            "model such as 'hf:facebook/dinov2-small'."
        )
    if model_type == "vit_mae":
        raise UnknownModelError(
            "ViT-MAE drops a random 75% of the patches in every forward pass; its features "
            "are not deterministic. Use its encoder weights in a ViT: 'hf:<repo>' of a ViT."
        )
    return model_class


def _init_kwargs(model_class: Any, config: Any) -> dict[str, Any]:
    """Build the base model with a pooler only where the checkpoint's class has one.

    A checkpoint saved by ``ViTForImageClassification`` has no pooler weights; built
    with one, ``ViTModel`` would fill it with random numbers.
    """
    if "add_pooling_layer" not in inspect.signature(model_class.__init__).parameters:
        return {}
    return {"add_pooling_layer": _checkpoint_has_pooler(config)}


def _checkpoint_has_pooler(config: Any) -> bool:
    import torch

    transformers = _transformers("a Hugging Face model")
    saved = getattr(transformers, (getattr(config, "architectures", None) or [""])[0], None)
    if saved is None or not isinstance(saved, type):
        return True  # saved by the base model (or an unknown class): its default
    with torch.device("meta"), _quiet():
        instance = saved(config)
    base = getattr(instance, getattr(instance, "base_model_prefix", ""), instance)
    return getattr(base, "pooler", None) is not None


def with_embedding(model: Any) -> Any:
    """Rewrite ``model``'s forward to take pixels and return its image embedding.

    The embedding passes through an ``Identity`` named :data:`EMBEDDING`; a model with
    none returns ``last_hidden_state``. Models with fixed position embeddings are asked
    to interpolate them at other input sizes than their config's (tracing runs there).
    The prefix tokens the model type defines are declared as ``num_prefix_tokens`` and
    ``has_class_token``, which layout inference reads.
    """
    from torch import nn

    if hasattr(model, EMBEDDING):
        return model
    config = model.config
    model.add_module(EMBEDDING, nn.Identity())
    declared = _PREFIX_TOKENS.get(config.model_type)
    if declared is not None:
        model.num_prefix_tokens, model.has_class_token = declared(config)
    forward = type(model).forward
    interpolates = "interpolate_pos_encoding" in inspect.signature(forward).parameters
    image_size = getattr(config, "image_size", None)
    native = tuple(image_size) if isinstance(image_size, (list, tuple)) else (image_size,) * 2
    architectures = getattr(config, "architectures", None) or [""]
    class_token_head = config.model_type in _CLASS_TOKEN_HEADS and architectures[0].endswith(
        "ForImageClassification"
    )

    def embedded(self: Any, pixel_values: Any) -> Any:
        kwargs = {}
        if interpolates and tuple(pixel_values.shape[-2:]) != native:
            kwargs["interpolate_pos_encoding"] = True
        output = forward(self, pixel_values=pixel_values, **kwargs)
        embedding = getattr(output, "image_embeds", None)
        if embedding is None:
            embedding = getattr(output, "pooler_output", None)
        if embedding is None and class_token_head:
            embedding = output.last_hidden_state[:, 0]
        if embedding is None:
            return output.last_hidden_state
        if embedding.ndim == 4:  # ResNet's pooled (N, C, 1, 1)
            embedding = embedding.flatten(1)
        return getattr(self, EMBEDDING)(embedding)

    model.forward = types.MethodType(embedded, model)
    return model


# -- locating files, offline -----------------------------------------------------------


def parse_name(name: str) -> tuple[str, str | None, bool]:
    """``(source, revision, is_folder)`` for the text after ``hf:``.

    An existing folder is a folder; a path-like name (absolute, ``./``, ``~``, more than
    one ``/``) that is not a folder is an error; anything else is a Hub id, with an
    optional ``@revision``.
    """
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        return expanded, None, True
    path_like = name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name
    if os.path.isabs(expanded) or path_like:  # a Hub id is "<org>/<name>"
        raise UnknownModelError(
            f"The folder {name!r} in model='hf:{name}' does not exist. Pass the folder that "
            "model.save_pretrained(folder) wrote, or a Hugging Face id such as "
            "'hf:facebook/dinov2-small'."
        )
    repo_id, _, revision = name.partition("@")
    try:
        from huggingface_hub.utils import validate_repo_id

        validate_repo_id(repo_id)
    except Exception as err:
        raise UnknownModelError(
            f"{repo_id!r} in model='hf:{name}' is neither an existing folder nor a valid "
            f"Hugging Face id ({err}). Expected 'hf:<org>/<name>', 'hf:<org>/<name>@<revision>' "
            "or 'hf:/path/to/folder'."
        ) from err
    return repo_id, revision or None, False


def _locate(name: str) -> _Location:
    """Where to load ``name`` from; ``HF_HUB_OFFLINE`` is read at every call."""
    source, revision, folder = parse_name(name)
    if folder:
        return _Location(source, None, folder=True, local_only=True)
    if hub_offline_mode():
        return _Location(source, revision, False, True, "HF_HUB_OFFLINE is set")
    reason = _hub_unreachable(source, revision)
    if reason is not None:
        why = f"the Hugging Face Hub did not answer ({reason})"
        return _Location(source, revision, False, True, why)
    return _Location(source, revision, False, False)


@functools.lru_cache(maxsize=64)
def _hub_unreachable(repo_id: str, revision: str | None) -> str | None:
    """Why the Hub cannot serve ``repo_id`` now; it is probed once per process, briefly."""
    from huggingface_hub import hf_hub_url

    return unreachable(hf_hub_url(repo_id, "config.json", revision=revision))


def _load_config(location: _Location, label: str) -> Any:
    # A folder's files may be rewritten: its config is read again when they change.
    stamp = _folder_fingerprint(location.source) if location.folder else None
    return _cached_config(location, label, stamp)


@functools.lru_cache(maxsize=64)
def _cached_config(location: _Location, label: str, stamp: str | None) -> Any:
    transformers = _transformers(f"model={label!r}")
    try:
        with _quiet():
            config = transformers.AutoConfig.from_pretrained(
                location.source, **location.from_pretrained
            )
    except OSError as err:
        raise _unavailable(location, label, err) from err
    except ValueError as err:  # a model type this transformers does not know
        raise UnknownModelError(
            f"transformers {transformers.__version__} cannot read the config of {label!r}: "
            f"{err}. Upgrade transformers, or pass a model it supports."
        ) from err
    tower = _TOWERS.get(config.model_type)
    if tower is not None and hasattr(config, "vision_config"):
        config = getattr(transformers, tower).config_class.from_pretrained(
            location.source, **location.from_pretrained
        )
    return config


def _unavailable(location: _Location, label: str, err: Exception) -> WeightsUnavailableError:
    from huggingface_hub import constants

    cause = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    if location.folder:
        return WeightsUnavailableError(
            f"Cannot load {label!r} from its folder ({cause}). Pass the folder that "
            "model.save_pretrained(folder) wrote, with its config.json and weights."
        )
    why = location.offline_reason or "the download failed"
    return WeightsUnavailableError(
        f"Could not load the Hugging Face model {location.source!r}: {why}, and it is not in "
        f"the local cache {str(constants.HF_HUB_CACHE)!r} ({cause}). Download it once where "
        f"the Hub can be reached (hf download {location.source}) and set "
        "HF_HUB_OFFLINE=1, or pass a local folder: model.save_pretrained(folder) and "
        "model='hf:/path/to/folder'."
    )


def _commit(location: _Location, label: str) -> str:
    """The commit of the cached snapshot the model is read from."""
    if location.revision is not None and _COMMIT.match(location.revision):
        return location.revision
    from huggingface_hub import try_to_load_from_cache

    _load_config(location, label)  # downloads it when online
    path = try_to_load_from_cache(location.source, "config.json", revision=location.revision)
    if isinstance(path, str) and Path(path).parent.parent.name == "snapshots":
        return Path(path).parent.name
    raise WeightsUnavailableError(
        f"Cannot tell which commit of {location.source!r} the cache holds, so cached features "
        "could not be keyed by it. Pass model='hf:<repo id>@<commit>' or a local folder."
    )


def _folder_fingerprint(folder: str) -> str:
    """Hash of the configs and weight files of a ``save_pretrained`` folder.

    The files are hashed again only when one of them changes size or modification time.
    """
    entries = sorted(
        (entry.name, entry.stat().st_size, entry.stat().st_mtime_ns)
        for entry in os.scandir(folder)
        if _MODEL_FILES.match(entry.name)
    )
    if "config.json" not in [name for name, *_ in entries]:
        raise WeightsUnavailableError(
            f"The folder {folder!r} has no config.json. Pass the folder that "
            "model.save_pretrained(folder) wrote."
        )
    return _hash_files(folder, tuple(entries))


@functools.lru_cache(maxsize=64)
def _hash_files(folder: str, entries: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, *_ in entries:
        digest.update(name.encode())
        digest.update(file_fingerprint(os.path.join(folder, name)).encode())
    return f"folder-{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Hold back transformers' load reports and progress bars: skfeat checks the keys."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    bars = logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
