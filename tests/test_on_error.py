"""on_error: a folder of the whole catalogue gives one row per input, in order, and says why."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from skfeat import PretrainedCNNFeaturizer
from skfeat.exceptions import ImageDecodeError, ImageDecodeWarning

from conftest import make_featurizer
from image_catalogue import BAD_CASES, GOOD_CASES, skip_reason, write_folder

RUNNABLE_BAD_CASES = [case for case in BAD_CASES if skip_reason(case) is None]
# The big bomb is refused from its header; the 10000-pixel-long images are the slowest good ones.
CASES = GOOD_CASES + RUNNABLE_BAD_CASES
ORDER = np.random.default_rng(5).permutation(len(CASES))  # bad images scattered among good
ORDERED_CASES = [CASES[i] for i in ORDER]
BAD_ROWS = [row for row, case in enumerate(ORDERED_CASES) if case.kind == "bad"]
GOOD_ROWS = [row for row, case in enumerate(ORDERED_CASES) if case.kind == "good"]


@pytest.fixture(scope="module")
def folder_items(tmp_path_factory):
    """The whole catalogue in one folder (plus in-memory items), in a scattered order."""
    return write_folder(tmp_path_factory.mktemp("catalogue"), ORDERED_CASES)


@pytest.fixture(scope="module")
def good_only(folder_items):
    """Features of the good images alone, with no bad neighbours in their batches."""
    from conftest import make_tiny_backbone

    good = [folder_items[row] for row in GOOD_ROWS]
    return PretrainedCNNFeaturizer(make_tiny_backbone(), n_jobs=1, batch_size=8).fit_transform(good)


def test_nan_keeps_every_row_in_order(folder_items, good_only, tiny_model):
    featurizer = make_featurizer(tiny_model, on_error="nan", n_jobs=2).fit(folder_items)
    with pytest.warns(ImageDecodeWarning) as record:
        features = featurizer.transform(folder_items)
    assert len(record) == 1  # one warning per call, whatever the number of batches
    assert features.shape == (len(CASES), featurizer.n_features_out_)
    assert features.dtype == np.float32
    failed = np.flatnonzero(np.isnan(features).all(axis=1))
    np.testing.assert_array_equal(failed, BAD_ROWS)
    assert np.isfinite(features[GOOD_ROWS]).all()
    # Bad neighbours in the same batch change nothing for the good images.
    np.testing.assert_allclose(features[GOOD_ROWS], good_only, atol=1e-5, rtol=0)


def test_zeros_fills_failed_rows_with_zeros(folder_items, good_only, tiny_model):
    with pytest.warns(ImageDecodeWarning, match=r"their rows are zeros \(on_error='zeros'\)"):
        features = make_featurizer(tiny_model, on_error="zeros", n_jobs=2).fit_transform(
            folder_items
        )
    assert not features[BAD_ROWS].any()
    assert (np.abs(features[GOOD_ROWS]).sum(axis=1) > 0).all()
    np.testing.assert_allclose(features[GOOD_ROWS], good_only, atol=1e-5, rtol=0)


def test_warning_summarises_count_first_failures_and_what_to_do(folder_items, tiny_model):
    n_bad, n_all = len(BAD_ROWS), len(CASES)
    first = BAD_ROWS[0]
    first_case = ORDERED_CASES[first]
    expected = (
        rf"^{n_bad} of {n_all} images could not be read; their rows are NaN "
        rf"\(on_error='nan'\):\n  image {first} \(.*\): (?i:.*{first_case.cause})"
    )
    with pytest.warns(ImageDecodeWarning, match=expected) as record:
        make_featurizer(tiny_model, on_error="nan", n_jobs=2).fit_transform(folder_items)
    text = str(record[0].message)
    assert len(re.findall(r"^  image \d+ ", text, flags=re.MULTILINE)) == 5
    assert f"  ... and {n_bad - 5} more." in text
    assert text.endswith("skfeat.check_images(X) lists every image that cannot be read, and why.")
    errors = record[0].message.errors
    assert [error.index for error in errors] == BAD_ROWS
    assert record[0].message.n_images == n_all
    for error, row in zip(errors, BAD_ROWS, strict=True):
        assert re.search(ORDERED_CASES[row].cause, error.cause, flags=re.IGNORECASE)


@pytest.mark.parametrize("case", RUNNABLE_BAD_CASES, ids=[c.name for c in RUNNABLE_BAD_CASES])
def test_raise_names_index_source_cause_and_the_way_out(case, tmp_path, tiny_model):
    good = np.zeros((16, 16, 3), dtype=np.uint8)
    bad = case.make(tmp_path)
    featurizer = make_featurizer(tiny_model, on_error="raise", n_jobs=1).fit([good])
    source = repr(bad) if isinstance(bad, str) else ".*"
    with pytest.raises(
        ImageDecodeError,
        match=(
            rf"^Could not read image 1 \({source}\): (?i:.*{case.cause}).*\. "
            r"Pass on_error='nan' to keep going with a NaN row for each unreadable image, "
            r"or find them all first with skfeat.check_images\(X\)\.$"
        ),
    ) as raised:
        featurizer.transform([good, bad, good])
    assert raised.value.index == 1


def test_raise_reports_the_first_bad_image_in_input_order(tmp_path, tiny_model):
    good = np.zeros((16, 16, 3), dtype=np.uint8)
    X = [good] * 5 + [None] + [good] * 3 + [str(tmp_path / "missing.jpg")]
    featurizer = make_featurizer(tiny_model, on_error="raise", n_jobs=2, batch_size=2).fit(X)
    with pytest.raises(ImageDecodeError, match=r"^Could not read image 5 \(None\)"):
        featurizer.transform(X)


def test_no_warning_when_every_image_reads(tiny_model, random_images):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        features = make_featurizer(tiny_model, on_error="nan", n_jobs=2).fit_transform(
            random_images
        )
    assert np.isfinite(features).all()


def test_l2_normalize_keeps_failed_rows_nan_and_zeros(tiny_model, random_images):
    X = [random_images[0], None, random_images[1]]
    with pytest.warns(ImageDecodeWarning):
        nan_rows = make_featurizer(
            tiny_model, on_error="nan", n_jobs=2, normalize="l2"
        ).fit_transform(X)
    with pytest.warns(ImageDecodeWarning):
        zero_rows = make_featurizer(
            tiny_model, on_error="zeros", n_jobs=2, normalize="l2"
        ).fit_transform(X)
    assert np.isnan(nan_rows[1]).all()
    assert not zero_rows[1].any()
    np.testing.assert_allclose(np.linalg.norm(nan_rows[[0, 2]], axis=1), 1.0, rtol=1e-5)


def test_pandas_output_keeps_failed_rows(tiny_model, random_images):
    pd = pytest.importorskip("pandas")
    paths = pd.Series([random_images[0], None, random_images[1]], index=[10, 20, 30])
    featurizer = make_featurizer(tiny_model, on_error="nan", n_jobs=2).set_output(
        transform="pandas"
    )
    with pytest.warns(ImageDecodeWarning, match="1 of 3 images"):
        frame = featurizer.fit_transform(paths)
    assert frame.shape[0] == 3
    assert frame.iloc[1].isna().all() and frame.iloc[[0, 2]].notna().all().all()


def test_warning_points_at_the_users_line_through_sklearn(tiny_model, random_images):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = [random_images[0], None, random_images[1]]
    featurizer = (
        make_featurizer(tiny_model, on_error="nan", n_jobs=2).set_output(transform="pandas").fit(X)
    )
    pipe = make_pipeline(make_featurizer(tiny_model, on_error="nan", n_jobs=2), StandardScaler())
    for call in (lambda: featurizer.transform(X), lambda: pipe.fit_transform(X)):
        with pytest.warns(ImageDecodeWarning) as record:
            call()
        assert [w.filename for w in record] == [__file__], [w.filename for w in record]


@pytest.mark.parametrize("value", ["ignore", None, "NaN", 0])
def test_on_error_is_validated_in_fit(value, tiny_model):
    with pytest.raises(
        ValueError,
        match=rf"'on_error' parameter of PretrainedCNNFeaturizer must be a str among "
        rf"\['raise', 'nan', 'zeros'\]. Got {re.escape(repr(value))} instead",
    ):
        PretrainedCNNFeaturizer(tiny_model, on_error=value).fit([np.zeros((4, 4, 3), "uint8")])


# -- properties: any valid image gives one finite row ----------------------------------------

SIDES = st.one_of(st.sampled_from([1, 2, 3, 250]), st.integers(1, 40))


@st.composite
def valid_images(draw):
    height, width = draw(SIDES), draw(SIDES)
    kind = draw(
        st.sampled_from(
            ["uint8", "grey", "rgba", "uint16", "float32", "float64", "bool", "png", "jpeg"]
        )
    )
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if kind == "uint8":
        return rgb
    if kind == "grey":
        return rgb[:, :, 0]
    if kind == "rgba":
        return np.dstack([rgb, rng.integers(0, 256, (height, width), dtype=np.uint8)])
    if kind == "uint16":
        return rng.integers(0, 65536, (height, width, 3), dtype=np.uint16)
    if kind in ("float32", "float64"):
        return rng.random((height, width, 3)).astype(kind)
    if kind == "bool":
        return rgb[:, :, 0] > 127
    modes = ["RGB", "L", "P", "1", "RGBA", "I;16"] if kind == "png" else ["RGB", "L", "CMYK"]
    mode = draw(st.sampled_from(modes))
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, (height, width), dtype=np.uint16))
    else:
        image = Image.fromarray(rgb).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, "PNG" if kind == "png" else "JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_featurizer():
    from conftest import make_tiny_backbone

    images = [np.zeros((4, 4, 3), "uint8")]
    return PretrainedCNNFeaturizer(make_tiny_backbone(), n_jobs=1, batch_size=4).fit(images)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images=st.lists(valid_images(), min_size=1, max_size=5))
def test_any_valid_images_give_one_finite_row_each(tiny_featurizer, images):
    features = tiny_featurizer.transform(images)
    assert features.shape == (len(images), tiny_featurizer.n_features_out_)
    assert np.isfinite(features).all()
