"""The preprocessing recipe: crop modes, channel order, checks and its fingerprint."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from skfeat._backends._timm import timm_data_config
from skfeat._preprocess import DataConfig, normalize_batch, resize_and_crop
from skfeat.exceptions import UnknownModelError


def _photo(height=180, width=320):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "nearest"])
def test_squash_resizes_both_sides_then_crops_as_torchvision(interpolation):
    config = DataConfig(160, 144, interpolation, crop_mode="squash")
    rgb = _photo()
    mode = v2.InterpolationMode(interpolation)
    expected = v2.functional.center_crop(
        v2.functional.resize(
            torch.from_numpy(rgb).permute(2, 0, 1), [160, 160], interpolation=mode, antialias=True
        ),
        [144, 144],
    )
    result = resize_and_crop(rgb, config)
    assert torch.equal(result, expected)


def test_squash_keeps_the_whole_image_where_center_cuts_it():
    rgb = _photo(100, 300)
    rgb[:, :50] = 255  # a white band on the left, cut by a centre crop
    center = resize_and_crop(rgb, DataConfig(64, 64))
    squash = resize_and_crop(rgb, DataConfig(64, 64, crop_mode="squash"))
    assert center[:, :, :5].float().mean() < 200
    assert squash[:, :, :5].float().mean() > 250


def test_squash_of_a_very_long_image_is_the_plain_resize():
    rgb = _photo(8, 2000)
    config = DataConfig(32, 32, crop_mode="squash")
    expected = v2.functional.resize(
        torch.from_numpy(rgb).permute(2, 0, 1), [32, 32], antialias=True
    )
    assert torch.equal(resize_and_crop(rgb, config), expected)


def test_bgr_models_get_the_channels_reversed_and_their_own_mean():
    batch = torch.from_numpy(_photo(4, 4)).permute(2, 0, 1)[None]
    caffe = DataConfig(4, 4, mean=(0.4, 0.45, 0.5), std=(1 / 255,) * 3, channel_order="BGR")
    result = normalize_batch(batch, caffe, torch.float32)
    bgr = batch.flip(1).float()
    expected = bgr - torch.tensor([0.4, 0.45, 0.5]).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-4)
    rgb = normalize_batch(batch, DataConfig(4, 4, mean=(0.4, 0.45, 0.5)), torch.float32)
    assert not torch.allclose(rgb[:, 0], result[:, 0])


def test_fingerprint_of_a_recipe_without_the_new_fields_is_unchanged():
    config = DataConfig(256, 224, "bicubic")
    before = {
        "resize_size": 256,
        "crop_size": 224,
        "interpolation": "bicubic",
        "mean": list(config.mean),
        "std": list(config.std),
    }
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert config.fingerprint() == digest
    others = {
        DataConfig(256, 224, "bicubic", crop_mode="squash").fingerprint(),
        DataConfig(256, 224, "bicubic", channel_order="BGR").fingerprint(),
        digest,
    }
    assert len(others) == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"crop_mode": "border"}, r"crop_mode must be one of \('center', 'squash'\), got 'border'"),
        ({"channel_order": "rgb"}, r"channel_order must be one of \('RGB', 'BGR'\)"),
        ({"interpolation": "lanczos"}, r"interpolation must be one of"),
        ({"mean": (0.5, 0.5)}, r"mean must have 3 values"),
        ({"std": (0.5, 0.0, 0.5)}, r"std must be positive"),
        ({"resize_size": 0}, r"resize_size must be an int >= 1, got 0"),
        ({"crop_size": 22.5}, r"crop_size must be an int >= 1, got 22.5"),
    ],
)
def test_recipes_are_checked(kwargs, match):
    params = {"resize_size": 256, "crop_size": 224, **kwargs}
    with pytest.raises(ValueError, match=match):
        DataConfig(**params)


def test_timm_squash_models_get_their_own_crop_mode():
    pytest.importorskip("timm")
    from skfeat._backends import resolve_backend

    backend = resolve_backend("timm:convnext_tiny.fb_in22k_ft_in1k_384", None)
    config = backend.data_config()
    assert (config.crop_mode, config.resize_size, config.crop_size) == ("squash", 384, 384)
    assert config.interpolation == "bicubic"


@pytest.mark.parametrize(
    ("timm_config", "match"),
    [
        ({"input_size": (3, 224, 320)}, r"input_size=\(3, 224, 320\), crop_mode='center'"),
        ({"input_size": (3, 224, 224), "crop_mode": "border"}, r"crop_mode='border'"),
    ],
)
def test_timm_recipes_skfeat_cannot_reproduce_are_refused(timm_config, match):
    base = {"mean": (0.5,) * 3, "std": (0.5,) * 3, "crop_pct": 1.0, **timm_config}
    with pytest.raises(UnknownModelError, match=match):
        timm_data_config(base, "timm model 'x'")
