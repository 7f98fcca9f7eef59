"""Self-checks of ``image_catalogue``: the files are what they claim, the references are right.

A small Pillow-based loader implementing the catalogue's conventions (EXIF transpose, composite
on white, 16-bit scaling, ...) must reproduce every good case's reference within its ``atol``.
These tests use only numpy and Pillow, never skfeat or torch.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

import image_catalogue
from image_catalogue import (
    BAD_CASES,
    CASES_BY_NAME,
    EXIF_ORIENTATION_TAG,
    GOOD_CASES,
    Case,
    composite_on_white,
    float_to_uint8,
    skip_reason,
    uint16_to_uint8,
    write_folder,
)

try:  # HEIC opens in Pillow only through the pillow-heif opener (skfeat registers it too)
    import pillow_heif
except ImportError:
    pass
else:
    pillow_heif.register_heif_opener()

# Stored format and PIL mode of the non-EXIF file cases.
EXPECTED_FORMAT_AND_MODE = {
    "rgb_jpeg": ("JPEG", "RGB"),
    "progressive_jpeg": ("JPEG", "RGB"),
    "grey_jpeg": ("JPEG", "L"),
    "cmyk_jpeg": ("JPEG", "CMYK"),
    "cmyk_tiff": ("TIFF", "CMYK"),
    "cmyk_black_jpeg": ("JPEG", "CMYK"),
    "ycck_jpeg": ("JPEG", "CMYK"),
    "avif": ("AVIF", "RGB"),
    "heic": ("HEIF", "RGB"),
    "palette_png": ("PNG", "P"),
    "palette_trns_png": ("PNG", "P"),
    "la_png": ("PNG", "LA"),
    "rgba_png": ("PNG", "RGBA"),
    "grey16_png": ("PNG", "I;16"),
    "grey16_tiff": ("TIFF", "I;16"),
    "rgb16_png": ("PNG", "RGB"),  # Pillow keeps the high bytes; the IHDR is checked below
    "bilevel_png": ("PNG", "1"),
    "animated_gif": ("GIF", "P"),
    "animated_webp": ("WEBP", "RGB"),
    "bmp": ("BMP", "RGB"),
    "one_pixel_png": ("PNG", "RGB"),
    "wide_10000x3_png": ("PNG", "RGB"),
    "tall_3x10000_png": ("PNG", "RGB"),
    "png_named_jpg": ("PNG", "RGB"),
    "uppercase_extension": ("PNG", "RGB"),
    "unicode_filename": ("PNG", "RGB"),
    "pathlib_path": ("PNG", "RGB"),
    "png_bytes": ("PNG", "RGB"),
}
EXPECTED_SIZE = {
    "one_pixel_png": (1, 1),
    "wide_10000x3_png": (10_000, 3),
    "tall_3x10000_png": (3, 10_000),
}


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every case made once, keyed by name."""
    cases = GOOD_CASES + BAD_CASES
    made = write_folder(tmp_path_factory.mktemp("catalogue"), cases)
    return {case.name: item for case, item in zip(cases, made, strict=True)}


def _open(item: object) -> Image.Image:
    if isinstance(item, bytes):
        return Image.open(io.BytesIO(item))
    assert isinstance(item, (str, Path)), type(item)
    return Image.open(item)


def _pil_to_rgb(image: Image.Image) -> np.ndarray:
    """Reference loader for PIL images: upright, composited on white, 16 bits scaled."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I;16"):
        return np.repeat(uint16_to_uint8(np.asarray(image))[..., np.newaxis], 3, axis=-1)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        return composite_on_white(np.asarray(image.convert("RGBA")))
    return np.asarray(image.convert("RGB"))


def _array_to_rgb(pixels: np.ndarray) -> np.ndarray:
    """Reference loader for arrays."""
    if pixels.dtype.kind == "f":
        pixels = float_to_uint8(pixels)
    elif pixels.dtype == np.uint16:
        pixels = uint16_to_uint8(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., np.newaxis]
    if pixels.shape[-1] == 1:
        return np.repeat(pixels, 3, axis=-1)
    if pixels.shape[-1] == 4:
        return composite_on_white(pixels)
    return pixels


def _load(item: object) -> np.ndarray:
    if isinstance(item, np.ndarray):
        return _array_to_rgb(item)
    if isinstance(item, Image.Image):
        return _pil_to_rgb(item)
    with _open(item) as image:
        return _pil_to_rgb(image)


def _ids(cases: list[Case]) -> list[str]:
    return [case.name for case in cases]


def test_catalogue_covers_the_required_cases() -> None:
    required = {
        *(f"exif_orientation_{k}_{fmt}" for k in range(2, 9) for fmt in ("png", "jpeg")),
        "cmyk_jpeg",
        "cmyk_tiff",
        "palette_png",
        "palette_trns_png",
        "la_png",
        "rgba_png",
        "grey16_png",
        "grey16_tiff",
        "bilevel_png",
        "grey_jpeg",
        "animated_gif",
        "bmp",
        "one_pixel_png",
        "wide_10000x3_png",
        "tall_3x10000_png",
        "float32_array",
        "float64_array",
        "uint16_array",
        "grey_uint8_array",
        "single_channel_array",
        "rgba_uint8_array",
        "pil_image_rgb",
        "png_bytes",
        "missing_file",
        "directory",
        "no_read_permission",
        "empty_file",
        "truncated_jpeg",
        "truncated_png",
        "text_as_jpg",
        "html_as_jpg",
        "random_bytes_as_png",
        "decompression_bomb_png",
        "nan_array",
        "out_of_range_float_array",
        "complex_array",
        "negative_int64_array",
        "rank1_array",
        "rank5_array",
        "two_channel_array",
        "five_channel_array",
        "none_item",
        "int_item",
    }
    assert required <= set(CASES_BY_NAME)
    assert all(case.kind == "good" for case in GOOD_CASES)
    assert all(case.kind == "bad" for case in BAD_CASES)


@pytest.mark.parametrize("case", GOOD_CASES, ids=_ids(GOOD_CASES))
def test_reference_is_fresh_uint8_rgb(case: Case) -> None:
    reference = case.reference()
    assert reference.dtype == np.uint8
    assert reference.ndim == 3 and reference.shape[2] == 3
    assert min(reference.shape[:2]) >= 1
    reference[...] = 0  # must not leak into the next call
    assert case.reference().any()


@pytest.mark.parametrize("case", GOOD_CASES, ids=_ids(GOOD_CASES))
def test_item_has_declared_type(case: Case, items: dict[str, object]) -> None:
    item = items[case.name]
    expected_types = {
        "path": (str, Path),
        "bytes": bytes,
        "pil": Image.Image,
        "array": np.ndarray,
    }[case.input_type]
    assert isinstance(item, expected_types)
    if case.input_type == "path":
        assert Path(item).is_file()


@pytest.mark.parametrize("orientation", range(2, 9))
@pytest.mark.parametrize("file_format", ["png", "jpeg"])
def test_exif_case_carries_orientation_tag(
    orientation: int, file_format: str, items: dict[str, object]
) -> None:
    name = f"exif_orientation_{orientation}_{file_format}"
    with _open(items[name]) as image:
        assert image.format == file_format.upper()
        assert image.getexif()[EXIF_ORIENTATION_TAG] == orientation
        upright_height, upright_width, _ = CASES_BY_NAME[name].reference().shape
        # Orientations 5-8 (transposes and quarter turns) store width and height swapped.
        swapped = orientation >= 5
        assert image.size == (
            (upright_height, upright_width) if swapped else (upright_width, upright_height)
        )


@pytest.mark.parametrize(
    ("name", "file_format", "mode"),
    [(name, *expected) for name, expected in EXPECTED_FORMAT_AND_MODE.items()],
)
def test_file_opens_with_intended_format_and_mode(
    name: str, file_format: str, mode: str, items: dict[str, object]
) -> None:
    if name not in CASES_BY_NAME:
        pytest.skip(f"{name} is not in this catalogue (e.g. no WebP support)")
    with _open(items[name]) as image:
        assert (image.format, image.mode) == (file_format, mode)
        if name in EXPECTED_SIZE:
            assert image.size == EXPECTED_SIZE[name]
        if name.startswith("animated"):
            assert image.n_frames == 3


def test_ycck_jpeg_says_ycck_and_cmyk_jpegs_say_plain_cmyk(items: dict[str, object]) -> None:
    with _open(items["ycck_jpeg"]) as image:
        assert image.info["adobe_transform"] == 2
    with _open(items["cmyk_black_jpeg"]) as image:
        assert image.info["adobe_transform"] == 0
        assert np.asarray(image)[..., 3].max() > 100  # the K channel carries the ramp


def test_rgb16_png_is_16_bit() -> None:
    data = image_catalogue._rgb16_png()
    bit_depth, colour_type = data[24], data[25]  # right after the IHDR width and height
    assert (bit_depth, colour_type) == (16, 2)


def test_palette_trns_png_has_partial_transparency(items: dict[str, object]) -> None:
    with _open(items["palette_trns_png"]) as image:
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
    assert {0, 64, 128, 255} <= set(np.unique(alpha).tolist())


@pytest.mark.parametrize("case", GOOD_CASES, ids=_ids(GOOD_CASES))
def test_pillow_reference_loader_matches_reference(case: Case, items: dict[str, object]) -> None:
    decoded = _load(items[case.name])
    reference = case.reference()
    assert decoded.shape == reference.shape
    assert np.abs(decoded.astype(np.int64) - reference).max() <= case.atol


@pytest.mark.parametrize("orientation", range(2, 9))
def test_exif_jpeg_reference_is_close_to_the_upright_source(orientation: int) -> None:
    reference = CASES_BY_NAME[f"exif_orientation_{orientation}_jpeg"].reference()
    source = image_catalogue._smooth_rgb()
    assert np.abs(reference.astype(np.int64) - source).mean() < 2


def test_composite_on_white_matches_float_formula() -> None:
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, size=(32, 32, 4), dtype=np.uint8)
    rgb, alpha = rgba[..., :3] / 255.0, rgba[..., 3:] / 255.0
    expected = np.rint((rgb * alpha + (1 - alpha)) * 255)
    assert np.array_equal(composite_on_white(rgba), expected.astype(np.uint8))


def test_uint16_scaling_is_rounded_not_clipped() -> None:
    values = np.array([0, 128, 129, 256, 32896, 65535], dtype=np.uint16)
    assert uint16_to_uint8(values).tolist() == [0, 0, 1, 1, 128, 255]
    assert np.array_equal(uint16_to_uint8(values), np.rint(values / 257).astype(np.uint8))


@pytest.mark.parametrize("n_bytes", [0, 5, 1024, 3000, 4096, 10_000])
def test_zlib_stream_of_zeros_inflates_to_zeros(n_bytes: int) -> None:
    stream = image_catalogue._zlib_stream_of_zeros(n_bytes, block_size=1024)
    assert zlib.decompress(stream) == bytes(n_bytes)  # also checks the Adler-32 trailer


def test_decompression_bomb_is_small_valid_and_huge(items: dict[str, object]) -> None:
    path = Path(items["decompression_bomb_png"])
    data = path.read_bytes()
    assert len(data) < 1_000_000
    width, height = struct.unpack(">II", data[16:24])
    assert width * height > 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    # The pixel data really is complete: inflate it in bounded chunks.
    idat_length = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    inflater = zlib.decompressobj()
    remaining = data[41 : 41 + idat_length]
    n_inflated = 0
    while remaining:
        n_inflated += len(inflater.decompress(remaining, 1 << 24))
        remaining = inflater.unconsumed_tail
    assert inflater.eof
    assert n_inflated == height * (1 + (width + 7) // 8)


def test_truncated_files_open_but_fail_to_load(items: dict[str, object]) -> None:
    for name in ("truncated_jpeg", "truncated_png"):
        with Image.open(items[name]) as image:
            with pytest.raises(OSError, match="truncated"):
                image.load()


FILE_BAD_CASES = [case for case in BAD_CASES if case.input_type == "path"]


@pytest.mark.parametrize("case", FILE_BAD_CASES, ids=_ids(FILE_BAD_CASES))
def test_bad_files_are_rejected_by_pillow(case: Case, items: dict[str, object]) -> None:
    reason = skip_reason(case)
    if reason:
        pytest.skip(reason)
    with pytest.raises((OSError, ValueError, SyntaxError, Image.DecompressionBombError)):
        with Image.open(items[case.name]) as image:
            image.load()


def test_bad_arrays_have_the_claimed_defect(items: dict[str, object]) -> None:
    assert np.isnan(items["nan_array"]).any()
    assert items["out_of_range_float_array"].max() > 1
    assert np.iscomplexobj(items["complex_array"])
    assert items["negative_int64_array"].dtype == np.int64
    assert items["negative_int64_array"].min() < 0
    assert items["rank1_array"].ndim == 1
    assert items["rank5_array"].ndim == 5
    assert items["two_channel_array"].shape[2] == 2
    assert items["five_channel_array"].shape[2] == 5
    assert items["empty_array"].size == 0
    assert items["none_item"] is None
    assert items["int_item"] == 42


def test_permission_case_declares_root_skip() -> None:
    case = CASES_BY_NAME["no_read_permission"]
    assert case.skip_if_root
    assert all(not other.skip_if_root for other in GOOD_CASES + BAD_CASES if other is not case)


def test_make_is_repeatable_in_the_same_folder(tmp_path: Path) -> None:
    first = write_folder(tmp_path, BAD_CASES)
    second = write_folder(tmp_path, BAD_CASES)  # e.g. rewrites the chmod 000 file
    assert [type(item) for item in first] == [type(item) for item in second]
    assert Path(first[0]).name == "missing_file.jpg" and not Path(first[0]).exists()
