"""Decoding: every odd-but-valid image gives its upright RGB pixels, every bad one a clear cause."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from skfeat import PretrainedCNNFeaturizer
from skfeat._inputs import ImageHeader, as_items, decode
from skfeat._preprocess import DataConfig, resize_and_crop
from skfeat.exceptions import ImageDecodeError, InvalidInputError

from image_catalogue import BAD_CASES, CASES_BY_NAME, GOOD_CASES, skip_reason, write_folder

RUNNABLE_BAD_CASES = [case for case in BAD_CASES if skip_reason(case) is None]


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Every catalogue case made once, keyed by name."""
    cases = GOOD_CASES + RUNNABLE_BAD_CASES
    items = write_folder(tmp_path_factory.mktemp("catalogue"), cases)
    return {case.name: item for case, item in zip(cases, items, strict=True)}


# -- good images: pixels ------------------------------------------------------------------


@pytest.mark.parametrize("case", GOOD_CASES, ids=[case.name for case in GOOD_CASES])
def test_good_case_decodes_to_its_reference(case, made):
    decoded = decode(made[case.name], 0)
    reference = case.reference()
    assert decoded.dtype == np.uint8
    assert decoded.flags.c_contiguous
    assert decoded.shape == reference.shape
    assert np.abs(decoded.astype(np.int64) - reference).max() <= case.atol


@pytest.mark.parametrize(
    "name", ["grey16_png", "grey16_tiff", "uint16_array", "exif_orientation_6_png", "cmyk_tiff"]
)
def test_lossless_cases_are_exact(name, made):
    """16-bit data is scaled by round(v / 257) exactly (65535 -> 255, 32896 -> 128)."""
    np.testing.assert_array_equal(decode(made[name], 0), CASES_BY_NAME[name].reference())


def test_sixteen_bit_is_scaled_not_clipped(made):
    first_row = decode(made["grey16_png"], 0)[0, :6, 0]
    # source values 0, 1, 128, 256, 32896, 65535
    np.testing.assert_array_equal(first_row, [0, 0, 0, 1, 128, 255])


def test_callers_pil_image_is_neither_drafted_nor_closed(tmp_path, sample_photos):
    path = tmp_path / "big.jpg"
    Image.fromarray(sample_photos[0]).save(path, quality=90)  # 640x427
    with Image.open(path) as image:
        drafted = decode(path, 0, min_side=100)
        mine = decode(image, 0, min_side=100)
        assert image.size == (640, 427)
        assert mine.shape == (427, 640, 3)
        assert image.getpixel((0, 0)) is not None  # still open
    assert min(drafted.shape[:2]) >= 100
    assert drafted.shape[:2] == (107, 160)  # libjpeg's 1/4 scale: the smallest >= 100


def test_header_is_filled_even_when_decoding_fails(made):
    header = ImageHeader()
    with pytest.raises(ImageDecodeError):
        decode(made["truncated_jpeg"], 0, header=header)
    assert (header.format, header.mode, header.width, header.height) == ("JPEG", "RGB", 64, 64)
    upright = ImageHeader()
    decode(made["exif_orientation_6_png"], 0, header=upright)
    assert (upright.width, upright.height) == (64, 48)  # stored 48x64, turned upright


# -- good images: features ----------------------------------------------------------------

# EXIF, CMYK, 16-bit and palette cases: features of the file equal those of the correctly
# converted reference pixels (exactly where decoding is lossless).
FEATURE_CASES = [
    *[f"exif_orientation_{k}_png" for k in range(2, 9)],
    *[f"exif_orientation_{k}_jpeg" for k in (3, 6, 8)],
    "cmyk_tiff",
    "cmyk_jpeg",
    "cmyk_black_jpeg",
    "ycck_jpeg",
    "grey16_png",
    "grey16_tiff",
    "rgb16_png",
    "uint16_array",
    "palette_png",
    "palette_trns_png",
    "animated_gif",
]


def test_features_of_converted_cases_equal_their_references(made, tiny_model):
    cases = [CASES_BY_NAME[name] for name in FEATURE_CASES]
    items = [made[case.name] for case in cases]
    references = [case.reference() for case in cases]
    featurizer = PretrainedCNNFeaturizer(tiny_model, n_jobs=1, batch_size=8)
    features = featurizer.fit_transform(items + references)
    from_files, from_references = features[: len(items)], features[len(items) :]
    for case, got, expected in zip(cases, from_files, from_references, strict=True):
        exact = np.array_equal(decode(made[case.name], 0), case.reference())
        tolerance = 1e-5 if exact else 0.02 * np.abs(expected).max()
        np.testing.assert_allclose(got, expected, atol=tolerance, rtol=0, err_msg=case.name)


def test_rotated_file_gives_the_features_of_its_upright_copy(tmp_path, sample_photos, tiny_model):
    upright = sample_photos[1]
    rotated = Image.fromarray(np.rot90(upright, 1).copy())  # stored turned; tag 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(tmp_path / "rotated.png", exif=exif)
    Image.fromarray(upright).save(tmp_path / "upright.png")
    features = PretrainedCNNFeaturizer(tiny_model, n_jobs=1).fit_transform(
        [str(tmp_path / "rotated.png"), str(tmp_path / "upright.png")]
    )
    np.testing.assert_array_equal(features[0], features[1])


# -- bad images ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", RUNNABLE_BAD_CASES, ids=[c.name for c in RUNNABLE_BAD_CASES])
def test_bad_case_names_index_source_and_cause(case, made):
    item = made[case.name]
    with pytest.raises(ImageDecodeError, match=r"^Could not read image 7 \(") as raised:
        decode(item, 7)
    error = raised.value
    assert re.search(case.cause, error.cause, flags=re.IGNORECASE), error.cause
    assert error.index == 7
    if isinstance(item, str):
        assert error.source == repr(item)
    assert str(error) == f"Could not read image 7 ({error.source}): {error.cause}"


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("missing_file", r"^file not found$"),
        ("directory", r"^the path is a directory, not an image file$"),
        ("empty_file", r"^the file is empty \(0 bytes\)$"),
        ("truncated_jpeg", r"^image file is truncated"),
        ("truncated_png", r"^image file is truncated"),
        ("text_as_jpg", r"^cannot identify image file: it looks like a text file"),
        ("html_as_jpg", r"^cannot identify image file: it looks like an HTML or XML page"),
        ("random_bytes_as_png", r"^cannot identify image file: not an image format Pillow"),
        ("decompression_bomb_png", r"^refused as a possible decompression bomb: .*900000000"),
        ("nan_array", r"^the array contains NaN or infinite values"),
        ("out_of_range_float_array", r"out of range: expected values in \[0, 1\], got \[0, 3.5\]"),
        ("negative_int64_array", r"^unsupported pixel dtype int64; use uint8"),
        ("rank1_array", r"must have shape \(H, W\) or \(H, W, C\).*got shape \(9216,\)"),
        ("two_channel_array", r"C in \(1, 3, 4\), got shape \(48, 64, 2\)"),
        ("empty_array", r"^the image array is empty, shape \(0, 0, 3\)"),
        ("none_item", r"^the item is None, not an image$"),
        ("int_item", r"^unsupported item type int; expected a path, bytes"),
    ],
)
def test_causes_are_pinned(name, cause, made):
    with pytest.raises(ImageDecodeError) as raised:
        decode(made[name], 0)
    assert re.search(cause, raised.value.cause), raised.value.cause


def test_channels_first_array_gets_a_hint():
    with pytest.raises(ImageDecodeError, match=r"channels-first: pass array.transpose\(1, 2, 0\)"):
        decode(np.zeros((3, 32, 32), dtype=np.uint8), 0)


def test_empty_bytes_and_html_bytes():
    with pytest.raises(ImageDecodeError, match=r"\(bytes of length 0\): the bytes are empty"):
        decode(b"", 2)
    with pytest.raises(ImageDecodeError, match="HTML or XML page"):
        decode(b"  <html><body>404</body></html>", 2)


def _refuse_to_load(monkeypatch):
    def load(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


def test_bomb_is_refused_from_its_header_without_decoding(made, monkeypatch):
    _refuse_to_load(monkeypatch)
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode(made["decompression_bomb_png"], 0)


def test_bomb_between_one_and_two_limits_is_refused_too(monkeypatch):
    """Pillow only warns from 1x to 2x MAX_IMAGE_PIXELS; skfeat refuses from 1x."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, "PNG")  # 1600 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    _refuse_to_load(monkeypatch)
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(ImageDecodeError, match=r"40x40 = 1600 pixels, over .*= 1000"),
    ):
        decode(buffer.getvalue(), 0)


def test_bomb_limit_follows_pillow_setting(monkeypatch):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # the user opted out
    assert decode(buffer.getvalue(), 0).shape == (40, 40, 3)


def _limit_file_bytes(monkeypatch, limit):
    import skfeat._inputs._reading as reading

    monkeypatch.setattr(reading, "_FILE_BYTES_FLOOR", limit)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit // 8)
    assert reading.max_file_bytes() == limit


def test_file_over_the_size_limit_is_refused_before_it_is_opened(tmp_path, monkeypatch):
    import skfeat._inputs._reading as reading

    assert reading.max_file_bytes() == max(2**30, 8 * Image.MAX_IMAGE_PIXELS)
    path = tmp_path / "huge.png"
    Image.new("RGB", (64, 64)).save(path)
    size = path.stat().st_size
    _limit_file_bytes(monkeypatch, size - 1)

    def no_open(*_args, **_kwargs):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(reading.os, "open", no_open)
    cause = rf"^the file is {size} bytes, over the limit of {size - 1} bytes on one image file"
    with pytest.raises(ImageDecodeError, match=r"Could not read image 0 \('.*huge\.png'\): "):
        decode(path, 0)
    with pytest.raises(ImageDecodeError) as raised:
        decode(path, 0)
    assert re.match(cause, raised.value.cause), raised.value.cause
    assert "raise PIL.Image.MAX_IMAGE_PIXELS" in raised.value.cause
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # no limit: read to its size
    assert reading.max_file_bytes() is None
    monkeypatch.undo()
    assert decode(path, 0).shape == (64, 64, 3)


def test_file_that_grows_past_the_limit_while_read_is_refused(tmp_path, monkeypatch):
    """The read is bounded: a file larger than its stat said stops at the limit."""
    import skfeat._inputs._reading as reading

    path = tmp_path / "growing.png"
    path.write_bytes(bytes(5000))
    _limit_file_bytes(monkeypatch, 4000)
    real_stat, real_fstat = os.stat, os.fstat

    def small(status):  # what stat said before the file grew
        fields = list(status[:10])
        fields[6] = 100  # st_size
        return os.stat_result(fields)

    monkeypatch.setattr(reading.os, "stat", lambda path: small(real_stat(path)))
    monkeypatch.setattr(reading.os, "fstat", lambda handle: small(real_fstat(handle)))
    with pytest.raises(ImageDecodeError, match=r"the file grew while read, past the limit of 4000"):
        decode(path, 0)


def test_a_file_is_opened_once_and_its_bytes_decoded(tmp_path, monkeypatch, tiny_model):
    import skfeat._inputs._reading as reading

    paths = []
    for index in range(3):
        paths.append(str(tmp_path / f"photo{index}.png"))
        Image.new("RGB", (40 + index, 40), (index, 2, 3)).save(paths[-1])
    opened = []
    real_open = os.open
    monkeypatch.setattr(
        reading.os, "open", lambda name, *args: opened.append(name) or real_open(name, *args)
    )
    PretrainedCNNFeaturizer(tiny_model, n_jobs=2).fit_transform(paths)
    assert sorted(name for name in opened if name in paths) == paths  # once each


def test_heic_is_read_once_skfeat_registers_pillow_heif():
    pytest.importorskip("pillow_heif")
    code = """
import io, sys
import numpy as np, pillow_heif
from PIL import Image
sys.path.insert(0, sys.argv[2])
from image_catalogue import CASES_BY_NAME
from skfeat._inputs import decode
case = CASES_BY_NAME["heic"]
data = open(case.make(__import__("pathlib").Path(sys.argv[1])), "rb").read()
try:
    Image.open(io.BytesIO(data))
except Exception:
    pass
else:
    raise SystemExit("HEIC opened before registration")
out = decode(data, 0)
assert np.abs(out.astype(int) - case.reference()).max() <= case.atol
print("ok")
"""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run(
            [sys.executable, "-c", code, folder, str(Path(__file__).parent)],
            capture_output=True,
            text=True,
            check=False,
        )
    assert result.stdout.strip() == "ok", result.stderr


# -- extreme aspect ratios ----------------------------------------------------------------


def _smooth(height, width):
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.dstack(
        [127 + 120 * np.sin(x / width * 20), 127 + 120 * np.cos(y / height * 7), 100 + 0 * x]
    ).astype(np.uint8)


def _full_resize_and_crop(rgb, config):
    """torchvision's resize of the short side and centre crop, on the whole image."""
    import torch
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    resized = F.resize(
        torch.from_numpy(np.array(rgb)).permute(2, 0, 1),  # a writable copy
        [config.resize_size],
        interpolation=InterpolationMode(config.interpolation),
        antialias=True,
    )
    return F.center_crop(resized, [config.crop_size, config.crop_size])


@pytest.mark.parametrize(
    "shape", [(3, 10_000), (10_000, 3), (7, 2_001), (2_000, 100), (300, 2_000), (1_500, 250)]
)
@pytest.mark.parametrize(
    "config",
    [DataConfig(256, 224, "bilinear"), DataConfig(256, 224, "bicubic"), DataConfig(224, 224)],
)
def test_long_images_are_cropped_before_resizing_with_the_same_pixels(shape, config):
    rng = np.random.default_rng(0)
    for rgb, max_difference, mean_difference in [
        (_smooth(*shape), 1, 0.01),
        (rng.integers(0, 256, (*shape, 3), dtype=np.uint8), 12, 1.5),  # the worst case
    ]:
        result = resize_and_crop(rgb, config)
        difference = (result.int() - _full_resize_and_crop(rgb, config).int()).abs()
        assert result.shape == (3, 224, 224)
        assert difference.max() <= max_difference
        assert difference.float().mean() <= mean_difference


def test_ordinary_photos_take_the_plain_resize(sample_photos):
    import torch

    config = DataConfig(256, 224, "bilinear")
    wide = np.ascontiguousarray(sample_photos[0][:200])  # 3.2:1, under the 3.5:1 switch
    for photo in [sample_photos[0], wide]:
        assert torch.equal(resize_and_crop(photo, config), _full_resize_and_crop(photo, config))


# -- X as a whole -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("X", "message"),
    [
        ("photo.jpg", r"got a single str: 'photo.jpg'. Wrap it in a list: transform\(\[path\]\)"),
        (np.zeros((5, 20)), r"got a 2-D numeric array of shape \(5, 20\).*table of features"),
        ([], r"^Expected at least one image, got an empty sequence"),
        ((x for x in []), r"got generator\. Pass a list, for example list\(X\)"),
        (np.empty((2, 2), dtype=object), r"object array of shape \(2, 2\)"),
    ],
)
def test_whole_call_errors_are_pinned(X, message):
    with pytest.raises(InvalidInputError, match=message):
        as_items(X)


@pytest.mark.parametrize("as_path", [False, True])
def test_a_folder_says_how_to_list_its_images(tmp_path, as_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    X = folder if as_path else str(folder)
    with pytest.raises(InvalidInputError) as info:
        as_items(X)
    assert str(info.value) == (
        f"Expected a sequence of images, got the folder {str(folder)!r}. Pass a list of its "
        f"images, for example sorted(pathlib.Path({str(folder)!r}).rglob('*.jpg')), or "
        f"featurize the whole folder from the shell: skfeat extract '{folder}' -o "
        "features.parquet (it finds the image files of every extension, recursively)."
    )


def test_the_suggested_folder_listing_is_accepted(tmp_path, sample_photos):
    import pathlib

    from PIL import Image

    for index, photo in enumerate(sample_photos):
        Image.fromarray(photo).save(tmp_path / f"{index}.jpg")
    assert len(as_items(sorted(pathlib.Path(str(tmp_path)).rglob("*.jpg")))) == 2


def test_several_column_dataframes_are_refused():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"path": ["a.jpg"], "label": [1], "fold": [0]})
    with pytest.raises(
        InvalidInputError,
        match=r"one column of images, got 3 columns \['path', 'label', 'fold'\]. Select",
    ):
        as_items(frame)
    polars = pytest.importorskip("polars")
    with pytest.raises(InvalidInputError, match="got 2 columns"):
        as_items(polars.DataFrame({"path": ["a.jpg"], "label": [1]}))


def test_whole_call_errors_come_before_any_model_work(tiny_model, monkeypatch):
    import skfeat._runtime._engine

    featurizer = PretrainedCNNFeaturizer(tiny_model, n_jobs=1).fit([np.zeros((8, 8, 3), "uint8")])

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(skfeat._runtime._engine, "get_model", no_model)
    for X in ["photo.jpg", np.zeros((5, 20)), []]:
        with pytest.raises(InvalidInputError):
            featurizer.transform(X)


def test_mixed_list_is_decoded_item_by_item(made, tmp_path):
    pixels = CASES_BY_NAME["pathlib_path"].reference()
    path = made["pathlib_path"]
    items = as_items([str(path), pixels, path.read_bytes(), Image.fromarray(pixels), path])
    assert len(items) == 5
    for index, item in enumerate(items):
        np.testing.assert_array_equal(decode(item, index), pixels)


def test_url_gets_a_hint_instead_of_a_download():
    with pytest.raises(ImageDecodeError, match="file not found; URLs are not downloaded"):
        decode("https://example.com/photo.jpg", 0)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_damaged_exif_block_does_not_lose_the_picture(sample_photos):
    buffer = io.BytesIO()
    Image.fromarray(sample_photos[1]).save(buffer, "JPEG", exif=b"Exif\x00\x00MM\x00*garbage")
    decoded = decode(buffer.getvalue(), 0)
    assert decoded.shape == sample_photos[1].shape


def test_decode_error_keeps_its_facts_through_pickling():
    import pickle

    with pytest.raises(ImageDecodeError) as raised:
        decode(None, 4)
    copy = pickle.loads(pickle.dumps(raised.value))  # as it comes back from a worker process
    assert (copy.index, copy.source, copy.cause) == (4, "None", "the item is None, not an image")
    assert str(copy) == str(raised.value)
