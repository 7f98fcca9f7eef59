"""The ``preprocessing`` parameter: a recipe of the user's, over the source's own.

Two dict forms are accepted, told apart by their keys:

- skfeat's own, with :class:`~skfeat._preprocess.DataConfig`'s field names:
  ``resize_size``, ``crop_size``, ``interpolation``, ``mean``, ``std``, ``crop_mode``,
  ``channel_order``;
- timm's data config, as ``timm.data.resolve_data_config`` returns it: ``input_size``
  ``(3, H, W)``, ``crop_pct``, ``interpolation``, ``mean``, ``std``, ``crop_mode``.

Keys left out keep the source's recipe; a crop size given without a resize size
keeps the source's ratio of crop to resize (timm's ``crop_pct``), as timm does when
only ``input_size`` is overridden. A :class:`DataConfig` (a fitted featurizer's
``data_config_``) is taken as it is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from skfeat._preprocess import DataConfig
from skfeat._validation import did_you_mean, is_int
from skfeat.exceptions import InvalidParameterError

__all__ = [
    "PREPROCESSING_EXPECTED",
    "SKFEAT_KEYS",
    "TIMM_KEYS",
    "check_preprocessing",
    "resolve_preprocessing",
]

SKFEAT_KEYS = (
    "resize_size",
    "crop_size",
    "interpolation",
    "mean",
    "std",
    "crop_mode",
    "channel_order",
)
TIMM_KEYS = ("input_size", "crop_pct", "interpolation", "mean", "std", "crop_mode")
_TIMM_ONLY = frozenset(TIMM_KEYS) - frozenset(SKFEAT_KEYS)
_SKFEAT_ONLY = frozenset(SKFEAT_KEYS) - frozenset(TIMM_KEYS) - {"channel_order"}
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
# What a timm data config leaves out keeps the source's recipe (crop_pct: its ratio).
_OWN_DEFAULTS = ("interpolation", "mean", "std", "crop_mode")
PREPROCESSING_EXPECTED = (
    "None (the model's own recipe), a dict with DataConfig's keys "
    f"{list(SKFEAT_KEYS)}, or a timm data config with keys {list(TIMM_KEYS)}"
)


def _error(owner: str, what: str, fix: str = "") -> InvalidParameterError:
    return InvalidParameterError(f"{owner}: preprocessing {what}{(' ' + fix) if fix else ''}")


def check_preprocessing(value: Any, owner: str) -> None:
    """Check the form of ``preprocessing`` (its keys), without resolving it.

    Raises
    ------
    InvalidParameterError
        For a value that is not None, a dict or a DataConfig, an unknown key (with
        close names), or keys of both forms mixed.
    """
    if value is None or isinstance(value, DataConfig):
        return
    if not isinstance(value, Mapping):
        raise _error(
            owner, f"must be {PREPROCESSING_EXPECTED}, got {type(value).__name__} {value!r}."
        )
    keys = [str(key) for key in value]
    unknown = [key for key in keys if key not in SKFEAT_KEYS and key not in TIMM_KEYS]
    if unknown:
        hint = did_you_mean(unknown[0], [*SKFEAT_KEYS, *TIMM_KEYS], cutoff=0.5)
        raise _error(
            owner,
            f"has unknown key {unknown[0]!r}.{hint} Expected {PREPROCESSING_EXPECTED}. "
            "For a timm model pass timm.data.resolve_data_config(model=model), not its "
            "pretrained_cfg.",
        )
    timm_keys = sorted(_TIMM_ONLY & set(keys))
    skfeat_keys = sorted(_SKFEAT_ONLY & set(keys))
    if timm_keys and skfeat_keys:
        raise _error(
            owner,
            f"mixes timm's keys {timm_keys} with skfeat's {skfeat_keys}.",
            "Give the input size either as input_size=(3, H, W) with crop_pct (timm's "
            "form) or as crop_size with resize_size (skfeat's form).",
        )


def resolve_preprocessing(
    value: Any, source_recipe: Callable[[], DataConfig], owner: str
) -> DataConfig:
    """The recipe that ``preprocessing=value`` asks for.

    Parameters
    ----------
    value : None, dict or DataConfig
        The ``preprocessing`` parameter.
    source_recipe : callable
        Returns the source's own recipe; called only when ``value`` leaves keys out.
    owner : str
        The estimator or function, for messages.

    Returns
    -------
    config : DataConfig

    Raises
    ------
    InvalidParameterError
        For a value that does not describe a recipe skfeat can apply, saying which key
        is wrong and what it should be.

    Examples
    --------
    >>> from skfeat._backends._recipe import resolve_preprocessing
    >>> from skfeat._preprocess import DataConfig
    >>> own = lambda: DataConfig(256, 224)
    >>> resolve_preprocessing({"crop_size": 299}, own, "f").describe()
    'resize short side to 341, centre crop 299, bilinear, RGB'
    >>> timm_cfg = {"input_size": (3, 256, 256), "crop_pct": 1.0, "interpolation": "bicubic"}
    >>> resolve_preprocessing(timm_cfg, own, "f").describe()
    'resize short side to 256, centre crop 256, bicubic, RGB'
    """
    check_preprocessing(value, owner)
    if value is None:
        return source_recipe()
    if isinstance(value, DataConfig):
        return value
    given = dict(value)
    if _TIMM_ONLY & set(given):
        return _from_timm(given, source_recipe, owner)
    return _from_fields(given, source_recipe, owner)


def _side(value: Any, key: str, owner: str) -> int:
    if not is_int(value) or value < 1:
        raise _error(owner, f"{key}={value!r} must be an int >= 1 (pixels).")
    return int(value)


def _from_fields(given: dict[str, Any], source_recipe: Any, owner: str) -> DataConfig:
    fields = dict(given)
    for key in ("resize_size", "crop_size"):
        if key in fields:
            fields[key] = _side(fields[key], key, owner)
    if set(SKFEAT_KEYS) - set(fields):
        own = source_recipe()
        if "crop_size" in fields and "resize_size" not in fields:
            ratio = own.resize_size / own.crop_size  # the source's 1 / crop_pct
            fields["resize_size"] = math.floor(fields["crop_size"] * ratio + 1e-9)
        for key in SKFEAT_KEYS:
            fields.setdefault(key, getattr(own, key))
    return _build(fields, owner)


def _from_timm(given: dict[str, Any], source_recipe: Any, owner: str) -> DataConfig:
    from skfeat._backends._timm import timm_data_config

    config = dict(given)
    size = config.get("input_size")
    if not (isinstance(size, (tuple, list)) and len(size) == 3 and all(is_int(v) for v in size)):
        raise _error(
            owner,
            f"input_size={size!r} must be timm's (channels, height, width), for example "
            "(3, 299, 299).",
        )
    if int(size[0]) != 3:
        raise _error(owner, f"input_size={tuple(size)!r}: skfeat feeds 3-channel RGB images.")
    crop_pct = config.get("crop_pct")
    if crop_pct is not None and not (
        isinstance(crop_pct, (int, float)) and not isinstance(crop_pct, bool) and crop_pct > 0
    ):
        raise _error(owner, f"crop_pct={crop_pct!r} must be a number > 0, such as 0.875.")
    interpolation = config.get("interpolation")
    if interpolation is not None and interpolation not in _INTERPOLATIONS:
        raise _error(
            owner, f"interpolation must be one of {_INTERPOLATIONS}, got {interpolation!r}."
        )
    height, width = int(size[1]), int(size[2])
    crop_mode = config.get("crop_mode") or "center"
    if height != width or crop_mode not in ("center", "squash"):
        raise _error(
            owner,
            f"input_size={tuple(size)!r} with crop_mode={crop_mode!r} is not supported: "
            "skfeat feeds square crops, resized with crop_mode 'center' or 'squash'.",
        )
    needs_own = crop_pct is None or bool(set(_OWN_DEFAULTS) - set(config))
    own = source_recipe() if needs_own else None
    for key in _OWN_DEFAULTS:
        if key not in config and own is not None:
            config[key] = getattr(own, key)
    channel_order = config.pop("channel_order", "RGB")
    try:
        recipe = timm_data_config(config, "preprocessing=")
    except (TypeError, ValueError) as err:
        raise _error(owner, f"{given!r} is not a recipe skfeat can apply: {err}") from err
    fields = {key: getattr(recipe, key) for key in SKFEAT_KEYS}
    fields["channel_order"] = channel_order
    if crop_pct is None and own is not None:  # the source's ratio, without float division
        fields["resize_size"] = math.floor(width * own.resize_size / own.crop_size + 1e-9)
    return _build(fields, owner)


def _build(fields: dict[str, Any], owner: str) -> DataConfig:
    try:
        config = DataConfig(**fields)
    except (TypeError, ValueError) as err:
        raise _error(owner, f"is not a recipe skfeat can apply: {err}") from err
    if config.crop_mode == "center" and config.resize_size < config.crop_size:
        raise _error(
            owner,
            f"resizes the short side to {config.resize_size} but crops {config.crop_size}: "
            "the crop would reach past the image.",
            "Give resize_size >= crop_size (or crop_pct <= 1).",
        )
    return config
