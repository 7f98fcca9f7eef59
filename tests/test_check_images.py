"""check_images: one row per input saying whether it decodes, what it is, and why not."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import ImageFile

import skfeat
from skfeat import check_images
from skfeat.exceptions import InvalidInputError

from image_catalogue import BAD_CASES, CASES_BY_NAME, GOOD_CASES, skip_reason, write_folder

CASES = GOOD_CASES + [case for case in BAD_CASES if skip_reason(case) is None]
COLUMNS = ["index", "item", "ok", "format", "mode", "width", "height", "error"]


@pytest.fixture(scope="module")
def catalogue_items(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("catalogue"), CASES)


@pytest.fixture(scope="module")
def report(catalogue_items):
    pytest.importorskip("pandas")
    return check_images(catalogue_items, n_jobs=2)


def test_one_row_per_input_in_order_with_ok_and_cause(report):
    assert list(report.columns) == COLUMNS
    assert report["index"].tolist() == list(range(len(CASES)))
    assert report["ok"].tolist() == [case.kind == "good" for case in CASES]
    for case, (_, row) in zip(CASES, report.iterrows(), strict=True):
        if case.kind == "bad":
            assert re.search(case.cause, row["error"], flags=re.IGNORECASE), case.name
        else:
            assert row["error"] is None or row["error"] != row["error"]  # None or NaN


def _row(report, name):
    return report.iloc[CASES.index(CASES_BY_NAME[name])]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cmyk_jpeg", ("JPEG", "CMYK", 64, 48)),
        ("grey16_tiff", ("TIFF", "I;16", 64, 48)),
        ("palette_trns_png", ("PNG", "P", 64, 48)),
        ("exif_orientation_6_jpeg", ("JPEG", "RGB", 64, 48)),  # stored 48x64, reported upright
        ("wide_10000x3_png", ("PNG", "RGB", 10_000, 3)),
        ("truncated_jpeg", ("JPEG", "RGB", 64, 64)),  # the header read before the failure
        ("float32_array", (None, "float32", 64, 48)),
    ],
)
def test_format_mode_and_size(report, name, expected):
    row = _row(report, name)
    file_format = row["format"] if isinstance(row["format"], str) else None
    assert (file_format, row["mode"], row["width"], row["height"]) == expected


def test_item_is_the_path_or_a_description(report, catalogue_items):
    index = CASES.index(CASES_BY_NAME["missing_file"])
    assert report["item"][index] == catalogue_items[index]
    assert _row(report, "none_item")["item"] == "None"
    assert _row(report, "nan_array")["item"] == "array of shape (48, 64, 3) and dtype float32"


def test_list_of_dicts_holds_the_same_report(report, catalogue_items):
    pd = pytest.importorskip("pandas")
    rows = check_images(catalogue_items, n_jobs=1, as_frame=False)
    assert isinstance(rows, list) and list(rows[0]) == COLUMNS
    from_frame = [
        {key: (None if pd.isna(value) else value) for key, value in record.items()}
        for record in report.to_dict("records")
    ]
    assert rows == from_frame


def test_truncation_is_caught_by_a_full_decode(tmp_path, sample_photos):
    from PIL import Image

    path = tmp_path / "cut.jpg"
    Image.fromarray(sample_photos[0]).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:20_000])  # the header is intact, the pixels are not
    (row,) = check_images([path], as_frame=False)
    assert not row["ok"]
    assert row["error"].startswith("image file is truncated")
    assert (row["width"], row["height"]) == (640, 427)


def test_bomb_is_reported_without_decoding(catalogue_items, monkeypatch):
    def load(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    bomb = catalogue_items[CASES.index(CASES_BY_NAME["decompression_bomb_png"])]
    (row,) = check_images([bomb], as_frame=False)
    assert row["error"].startswith("refused as a possible decompression bomb")


def test_bomb_between_one_and_two_limits_reports_its_header(monkeypatch):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (50, 40)).save(buffer, "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow warns up to 2000, then raises
    with pytest.warns(Image.DecompressionBombWarning):
        (row,) = check_images([buffer.getvalue()], as_frame=False)
    assert (row["format"], row["mode"], row["width"], row["height"]) == ("PNG", "RGB", 50, 40)
    assert row["error"].startswith("refused as a possible decompression bomb: 50x40 = 2000")


def test_whole_call_errors_and_parameters():
    with pytest.raises(InvalidInputError, match="Wrap it in a list"):
        check_images("photo.jpg")
    with pytest.raises(InvalidInputError, match="at least one image"):
        check_images([])
    with pytest.raises(
        ValueError, match=r"'as_frame' parameter of check_images must be one of 'auto', True, False"
    ):
        check_images([None], as_frame="yes")
    with pytest.raises(
        ValueError,
        match=r"'n_jobs' parameter of check_images must be None or a non-zero int\. Got 0",
    ):
        check_images([None], n_jobs=0)


def test_is_public():
    assert "check_images" in skfeat.__all__
    assert skfeat.check_images is check_images


def test_agrees_with_the_featurizer(tiny_model, catalogue_items):
    from skfeat import PretrainedCNNFeaturizer
    from skfeat.exceptions import ImageDecodeWarning

    rows = check_images(catalogue_items, as_frame=False)
    with pytest.warns(ImageDecodeWarning) as record:
        PretrainedCNNFeaturizer(tiny_model, on_error="nan", n_jobs=2).fit_transform(catalogue_items)
    failed = [error.index for error in record[0].message.errors]
    assert failed == [row["index"] for row in rows if not row["ok"]]
    assert [error.cause for error in record[0].message.errors] == [
        row["error"] for row in rows if not row["ok"]
    ]
    assert np.array_equal(failed, [i for i, case in enumerate(CASES) if case.kind == "bad"])
