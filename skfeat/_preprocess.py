"""The weights' own preprocessing recipe, and how it is applied.

A :class:`DataConfig` travels with the weights (torchvision ``Weights.transforms()``,
timm ``pretrained_cfg``), so features match what the network was trained on:
resize (the short side, or both sides: timm's ``crop_mode``), centre-crop, scale to
[0, 1], order the channels (RGB, or BGR for Caffe-style weights), normalise with mean
and std.
Resizing runs on uint8 tensors (fast, antialiased); normalising runs per batch on
the device.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np
    import torch

__all__ = [
    "CHANNEL_ORDERS",
    "CROP_MODES",
    "DRAFT_FACTOR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DataConfig",
    "draft_min_side",
    "normalize_batch",
    "resize_and_crop",
    "stack_images",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic")
# timm's names: "center" keeps the aspect ratio (short side resized, then cropped);
# "squash" resizes both sides to resize_size, then crops.
CROP_MODES = ("center", "squash")
CHANNEL_ORDERS = ("RGB", "BGR")
# JPEGs may be decoded at 1/2, 1/4 or 1/8 scale as long as the short side stays at least
# DRAFT_FACTOR times the resize target, so the antialiased resize that follows still
# shrinks by >= 3x and its filter, not libjpeg's DCT scaling, shapes the result.
# Measured (docs/benchmarks.md): factor 2 kept 16 of 24 large photos at cosine >= 0.999,
# factor 3 kept 22 of 24 (median 0.99998), factor 4 no better than 3.
DRAFT_FACTOR = 3
_LONG_SIDE_LIMIT = 4  # in crops: longer resized images are cut to the crop's window first


@dataclass(frozen=True)
class DataConfig:
    """How one backbone wants its images.

    Parameters
    ----------
    resize_size : int
        With ``crop_mode="center"``, the length of the short side after resizing (the
        aspect ratio is kept); with ``"squash"``, the length of both sides.
    crop_size : int
        Side of the square centre crop fed to the network.
    interpolation : {"bilinear", "bicubic", "nearest"}
        Resampling filter (antialiased when downscaling).
    mean, std : tuple of float
        Per-channel normalisation, applied to pixels scaled to [0, 1], in the order
        of ``channel_order``.
    crop_mode : {"center", "squash"}, default="center"
        timm's names: ``"center"`` resizes the short side and keeps the aspect ratio;
        ``"squash"`` resizes the image to ``resize_size`` x ``resize_size`` (the
        aspect ratio changes, nothing is cut when the crop is as large).
    channel_order : {"RGB", "BGR"}, default="RGB"
        The order of the channels the network takes (``"BGR"`` for Caffe-style
        weights, such as Keras's ResNet50).

    Examples
    --------
    >>> from skfeat._preprocess import DataConfig
    >>> DataConfig(256, 224, "bicubic", (0.5,) * 3, (0.5,) * 3).crop_size
    224
    >>> DataConfig(224, 224, crop_mode="squash").describe()
    'squash to 224x224, centre crop 224, bilinear, RGB'
    """

    resize_size: int
    crop_size: int
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_mode: str = "center"
    channel_order: str = "RGB"

    def __post_init__(self) -> None:
        for name, choices in (
            ("interpolation", _INTERPOLATIONS),
            ("crop_mode", CROP_MODES),
            ("channel_order", CHANNEL_ORDERS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}.")
        for name in ("resize_size", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) != 3:
                raise ValueError(f"{name} must have 3 values (one per channel), got {values!r}.")
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:
            raise ValueError(f"std must be positive, got {self.std!r}.")

    def describe(self) -> str:
        """One line for messages and listings."""
        resize = (
            f"resize short side to {self.resize_size}"
            if self.crop_mode == "center"
            else f"squash to {self.resize_size}x{self.resize_size}"
        )
        return f"{resize}, centre crop {self.crop_size}, {self.interpolation}, {self.channel_order}"

    def fingerprint(self) -> str:
        """A short stable hash of the recipe, for cache keys.

        Fields at their defaults that older recipes did not have are left out, so a
        recipe that does not use them keeps the fingerprint it always had.
        """
        fields = asdict(self)
        for name, default in (("crop_mode", "center"), ("channel_order", "RGB")):
            if fields[name] == default:
                del fields[name]
        payload = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def draft_min_side(config: DataConfig) -> int:
    """The smallest short side a JPEG may be decoded at (``Image.draft``) for ``config``.

    The rule: decode at the largest DCT scale (1/2, 1/4, 1/8) that keeps the short
    side >= ``DRAFT_FACTOR * resize_size`` (3 x 256 = 768 px for most ImageNet
    weights), so only photos of 1536 px and more on the short side are affected, and
    the antialiased resize after it still shrinks them by 3x or more. Measured with
    EfficientNet-Lite0's real weights against full decode: the bundled flower photos
    are unaffected (cosine 1.0); on 24 generated photos of 1024-4000 px, 22 keep
    cosine >= 0.999 (median 0.99998); the other two stay >= 0.94, where even two
    standard resize implementations (Pillow vs torchvision, full decode) disagree far
    more (cosine 0.76). On those 24 photos decode got 1.7 times faster on average
    (2.4 times with a factor of 2, which kept only 16 of 24 at cosine >= 0.999).

    Examples
    --------
    >>> from skfeat._preprocess import DataConfig, draft_min_side
    >>> draft_min_side(DataConfig(256, 224))
    768
    """
    return DRAFT_FACTOR * config.resize_size


def resize_and_crop(rgb: np.ndarray, config: DataConfig) -> torch.Tensor:
    """Resize the short side and centre-crop one ``(H, W, 3)`` uint8 image.

    Returns a ``(3, crop, crop)`` uint8 tensor laid out in memory as the image is,
    height, width, channels (a view of the resized image): :func:`stack_images`
    makes a batch of them with one plain copy, where a per-image ``contiguous()``
    would transpose each one first.
    """
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    squash = config.crop_mode == "squash"
    window = None if squash else _long_image_window(rgb.shape[0], rgb.shape[1], config)
    if window is not None:  # extreme aspect ratio: drop what the crop would discard
        rgb = rgb[window.rows, window.columns]
    if not rgb.flags.writeable:
        rgb = rgb.copy()  # torch refuses to wrap read-only memory
    image = torch.from_numpy(rgb).permute(2, 0, 1)
    interpolation = InterpolationMode(config.interpolation)
    if squash:
        size = [config.resize_size, config.resize_size]
    else:
        size = [config.resize_size] if window is None else list(window.size)
    image = F.resize(image, size, interpolation=interpolation, antialias=True)
    crop = config.crop_size
    if window is None:
        image = F.center_crop(image, [crop, crop])
    else:
        image = image[:, window.top : window.top + crop, window.left : window.left + crop]
    return image


def stack_images(images: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack ``(3, H, W)`` uint8 images into an ``(N, 3, H, W)`` channels-last batch.

    The batch is stored height, width, channels per image (``torch.channels_last``),
    the layout :func:`resize_and_crop` leaves its images in, the torch runtime runs
    convolutions in, and the OpenVINO graph takes (``batch.permute(0, 2, 3, 1)`` is
    contiguous). Any input strides give the same values.

    Examples
    --------
    >>> import torch
    >>> from skfeat._preprocess import stack_images
    >>> batch = stack_images([torch.zeros(3, 4, 5, dtype=torch.uint8)] * 2)
    >>> tuple(batch.shape), batch.is_contiguous(memory_format=torch.channels_last)
    ((2, 3, 4, 5), True)
    """
    import numpy as np
    import torch

    # numpy copies on the calling thread: a torch copy would start an OpenMP team, and
    # on a machine busy with decoding it waits for its threads to be scheduled.
    views = [image.permute(1, 2, 0).numpy() for image in images]
    pixels = np.empty((len(views), *views[0].shape), dtype=views[0].dtype)  # (N, H, W, C)
    np.stack(views, out=pixels)  # into a C-ordered array: stack alone keeps input strides
    return torch.from_numpy(pixels).permute(0, 3, 1, 2)


class _Window(NamedTuple):
    rows: slice
    columns: slice
    size: tuple[int, int]  # resized (height, width)
    top: int
    left: int


def _long_image_window(height: int, width: int, config: DataConfig) -> _Window | None:
    """For a very long image, the part of it that the centre crop keeps.

    Resizing a 3x10000 image so that its short side is 256 would make it 256x853333
    (650 MB, seconds) only to keep a 224-pixel square. When the resized long side would
    pass ``_LONG_SIDE_LIMIT`` crops, the source is cut first to the crop's span plus a
    margin wider than the resampling filter, centred on the middle, and resized at the
    full resize's scale (to within a few parts per million) with the crop placed where
    the full resize puts it; the result matches the full resize up to rounding.
    Ordinary photos (resized long side under 4 crops) never take this path.
    """
    short, long = min(height, width), max(height, width)
    crop = config.crop_size
    full_long = int(config.resize_size * long / short)  # torchvision's resized long side
    if full_long <= _LONG_SIDE_LIMIT * crop:
        return None
    ratio = long / full_long  # source pixels per resized pixel
    margin = math.ceil(2.0 * max(ratio, 1.0)) + 2  # resampling filter support, in source px
    first = math.ceil(crop * ratio) + 2 * margin
    first += (long - first) % 2  # same parity as ``long``: centred on the exact middle

    def resized(kept: int) -> int:  # nearest size with the parity of ``full_long``
        size = round(kept / ratio)
        return size + (size - full_long) % 2

    candidates = [k for k in range(first, first + 64, 2) if k <= long and resized(k) >= crop]
    if not candidates:
        return None
    kept = min(candidates, key=lambda k: abs(k / resized(k) - ratio))
    kept_long = resized(kept)
    full_left = round((full_long - crop) / 2.0)  # as torchvision's centre crop
    left = full_left - (full_long - kept_long) // 2  # the same offset from the middle
    start = (long - kept) // 2
    short_top = round((config.resize_size - crop) / 2.0)
    window = slice(start, start + kept)
    if height <= width:
        return _Window(slice(None), window, (config.resize_size, kept_long), short_top, left)
    return _Window(window, slice(None), (kept_long, config.resize_size), left, short_top)


def normalize_batch(batch: torch.Tensor, config: DataConfig, dtype: torch.dtype) -> torch.Tensor:
    """Scale a uint8 RGB ``(N, 3, H, W)`` batch to [0, 1], order and normalise, on its device."""
    import torch

    if config.channel_order == "BGR":
        batch = batch.flip(1)
    mean = torch.tensor(config.mean, device=batch.device).view(1, 3, 1, 1) * 255.0
    inv_std = 1.0 / (torch.tensor(config.std, device=batch.device).view(1, 3, 1, 1) * 255.0)
    # (x / 255 - mean) / std, folded into one subtract and one multiply.
    return ((batch.float() - mean) * inv_std).to(dtype)
