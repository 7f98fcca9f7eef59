"""Cache keys: what an image is, and what computed its features; each input changes them."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

from skfeat._cache._keys import (
    CACHE_FORMAT,
    bytes_key,
    compute_signature,
    content_key,
    namespace_key,
)
from skfeat._runtime import RunSettings


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, (8, 10, 3), dtype=np.uint8)


def test_signature_of_the_defaults_is_pinned():
    assert compute_signature() == f"precision=fp32;gem_p=3;format={CACHE_FORMAT}"
    defaults = RunSettings(torch.device("cpu"), "fp32", 8, 1)
    assert compute_signature() == compute_signature(**defaults.signature())


def test_signature_changes_with_each_input_and_only_then():
    def signature(**changes):
        return compute_signature(
            **RunSettings(torch.device("cpu"), batch_size=8, n_threads=1, **changes).signature()
        )

    base = signature(precision="fp32")
    changed = {
        "precision": signature(precision="bf16"),
        "runtime": signature(precision="fp32", runtime="openvino"),
        "decoder": signature(precision="fp32", decoder="simplejpeg"),
    }
    assert signature(precision="fp32", on_error="nan", progress=True) == base
    assert changed["precision"] == "precision=bf16;gem_p=3;format=2"
    assert changed["runtime"].endswith(";runtime=openvino")
    assert changed["decoder"].endswith(";decoder=simplejpeg")
    assert len({base, *changed.values()}) == 4


def test_namespace_changes_with_model_recipe_or_signature_and_only_then():
    base = namespace_key("tv:resnet18:DEFAULT", "recipe-a", "sig-a")
    assert base == namespace_key("tv:resnet18:DEFAULT", "recipe-a", "sig-a")
    assert len(base) == 20 and int(base, 16) >= 0  # a folder name: 20 hex digits
    others = {
        namespace_key("tv:resnet50:DEFAULT", "recipe-a", "sig-a"),
        namespace_key("tv:resnet18:DEFAULT", "recipe-b", "sig-a"),
        namespace_key("tv:resnet18:DEFAULT", "recipe-a", "sig-b"),
    }
    assert base not in others and len(others) == 3
    # The parts are separated: moving text from one part to the next is another key.
    assert namespace_key("ab", "c", "d") != namespace_key("a", "bc", "d")


def test_a_file_and_its_bytes_share_a_key_whatever_the_path(tmp_path, pixels):
    data = _png(pixels)
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(data)
    second.write_bytes(data)
    assert content_key(str(first)) == content_key(second) == content_key(data) == bytes_key(data)
    assert content_key(bytearray(data)) == content_key(memoryview(data)) == bytes_key(data)


def test_a_changed_file_gets_a_new_key(tmp_path, pixels):
    path = tmp_path / "a.png"
    path.write_bytes(_png(pixels))
    before = content_key(path)
    changed = pixels.copy()
    changed[0, 0, 0] ^= 1
    path.write_bytes(_png(changed))
    os.utime(path, ns=(1, 1))  # even with the old times forged away
    assert content_key(path) != before


def test_array_keys_follow_values_dtype_and_shape(pixels):
    key = content_key(pixels)
    assert key == content_key(pixels.copy())
    assert key == content_key(np.asfortranarray(pixels))  # memory order is not content
    changed = pixels.copy()
    changed[3, 4, 1] ^= 1
    assert content_key(changed) != key
    assert content_key(pixels.astype(np.uint16)) != key
    assert content_key(pixels.reshape(10, 8, 3)) != key
    assert content_key(pixels) != bytes_key(pixels.tobytes())  # an array is not bytes


def test_pil_keys_follow_pixels_mode_and_orientation(pixels):
    image = Image.fromarray(pixels)
    key = content_key(image)
    assert key == content_key(Image.fromarray(pixels.copy()))
    assert content_key(image.convert("RGBA")) != key
    exif = Image.Exif()
    exif[0x0112] = 6  # decoding turns it upright: another image
    upright = Image.open(io.BytesIO(_save_jpeg_with_exif(pixels, None)))
    turned = Image.open(io.BytesIO(_save_jpeg_with_exif(pixels, exif)))
    assert content_key(turned) != content_key(upright)
    assert content_key(image) != content_key(pixels)  # a PIL image is not its array


def _save_jpeg_with_exif(pixels: np.ndarray, exif) -> bytes:
    buffer = io.BytesIO()
    options = {} if exif is None else {"exif": exif.tobytes()}
    Image.fromarray(pixels).save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def test_what_cannot_be_read_has_no_key(tmp_path):
    assert content_key(tmp_path / "missing.png") is None
    assert content_key(tmp_path) is None  # a folder
    assert content_key(None) is None
    assert content_key(3.5) is None
