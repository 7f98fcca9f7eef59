"""Generate a deterministic folder of realistic photos for speed benchmarks.

Timing an image feature extractor on synthetic noise or on one image repeated many times is
misleading: decode cost depends on JPEG entropy, chroma subsampling, progressive scans and image
size, and real folders contain a long tail of odd files (greyscale, CMYK, PNG with alpha, palette
images, EXIF-rotated phone pictures, a few huge camera originals and a few thumbnails). This
module builds such a folder from real photographs, so benchmark numbers resemble what users see.

What it makes
-------------
``n`` files named ``photo_00000.jpg``, ``photo_00001.png``, ... plus ``manifest.csv``. Every
image is a random crop of one of the two photographs bundled with scikit-learn
(``sklearn.datasets.load_sample_images``: ``china.jpg`` and ``flower.jpg``, 640x427), located
on disk without importing scikit-learn. Crops have photo aspect ratios (4:3, 3:2, 16:9, 1:1,
5:4; about 25% portrait), random flips and exposure jitter, and are resized to:

* most: 400-800 px on the long side;
* ~8%: 1000-1200 px;
* ~3%: 3000-4000 px (upscaled, so mild Gaussian sensor-like noise keeps JPEG entropy realistic;
  every upscaled crop gets noise, scaled with the upscaling factor);
* ~2%: tiny, 57-160 px.

Encodings, in deterministic proportions (counts are ``round(fraction * n)``, the rest RGB JPEG):

* RGB JPEG, quality 70-95, ~15% of them progressive, ~10% with 4:4:4 chroma subsampling;
* ~5% greyscale (``L``) JPEG, ~2% CMYK JPEG;
* ~2% RGBA PNG (vignette alpha), ~1% palette (``P``) PNG;
* ~1% JPEGs stored rotated with EXIF Orientation 6 or 8 (alternating); applying the tag
  (e.g. ``PIL.ImageOps.exif_transpose``) gives back the upright photo.

The 3000-4000 px images are always RGB JPEGs; the other kinds have ordinary sizes.

``manifest.csv`` has one row per image with columns ``file, format, mode, width, height, bytes,
orientation, progressive``: ``width`` and ``height`` are the stored pixel dimensions (before any
EXIF rotation), ``orientation`` is the EXIF Orientation tag (1 when absent) and ``progressive``
is 0 or 1.

Determinism
-----------
The same ``seed`` gives byte-identical files on the same installation (Pillow, libjpeg and zlib
versions). Image ``i`` only depends on ``seed``, ``i`` and its planned kind, and the plan only
on ``seed`` and ``n``. Files from a previous run that match the ``photo_*`` pattern but are not
part of this run are deleted so that the folder always holds exactly ``n`` images.

Usage
-----
From the repository root::

    python benchmarks/make_corpus.py OUT_DIR --n 500 --seed 0

or from Python::

    from make_corpus import make_corpus
    paths = make_corpus("benchmarks/_corpus", n=500, seed=0)

This module only needs numpy, Pillow and the standard library.
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import io
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SAMPLE_PHOTO_NAMES = ("china.jpg", "flower.jpg")
ASPECT_RATIOS = ((4, 3), (3, 2), (16, 9), (1, 1), (5, 4))
PORTRAIT_PROBABILITY = 0.25

# Fractions of all files; whatever is left is plain RGB JPEG.
ENCODING_FRACTIONS = {
    "jpeg_grey": 0.05,
    "jpeg_cmyk": 0.02,
    "png_rgba": 0.02,
    "png_palette": 0.01,
    "jpeg_exif_rotated": 0.01,
}
# Fractions of all files; whatever is left is "normal". "huge" is only drawn from RGB JPEGs.
SIZE_FRACTIONS = {"huge": 0.03, "large": 0.08, "tiny": 0.02}
LONG_SIDE_RANGES = {  # inclusive pixel ranges of the long side
    "tiny": (57, 160),
    "normal": (400, 800),
    "large": (1000, 1200),
    "huge": (3000, 4000),
}
# Fractions of the RGB JPEGs.
PROGRESSIVE_FRACTION = 0.15
SUBSAMPLING_444_FRACTION = 0.10

JPEG_QUALITY_RANGE = (70, 95)  # inclusive
EXIF_ORIENTATION_TAG = 0x0112
# Stored pixels = upright pixels with this transpose applied, so that the EXIF-prescribed
# transform (Orientation 6: rotate 90 degrees clockwise, 8: counter-clockwise) undoes it.
INVERSE_OF_ORIENTATION = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
NOISE_ROWS_PER_CHUNK = 256  # bounds the float32 scratch memory for 4000 px images
MANIFEST_NAME = "manifest.csv"
MANIFEST_COLUMNS = (
    "file",
    "format",
    "mode",
    "width",
    "height",
    "bytes",
    "orientation",
    "progressive",
)


@dataclass(frozen=True)
class ImagePlan:
    """What one corpus file will be; drawn up front so that proportions are exact."""

    index: int
    encoding: str  # "jpeg_rgb" or a key of ENCODING_FRACTIONS
    size_class: str  # a key of LONG_SIDE_RANGES
    progressive: bool = False
    subsampling_444: bool = False
    orientation: int = 1


@dataclass(frozen=True)
class WrittenImage:
    """One manifest row."""

    file: str
    format: str
    mode: str
    width: int
    height: int
    bytes: int
    orientation: int
    progressive: int


def _count(fraction: float, n: int) -> int:
    """Round half up, so that e.g. 2% of 25 files is 1 file rather than banker's 0."""
    return int(fraction * n + 0.5)


def _file_name(index: int, n: int, extension: str) -> str:
    width = max(5, len(str(n - 1)))
    return f"photo_{index:0{width}d}.{extension}"


def sample_photo_paths() -> list[Path]:
    """Locate the photographs bundled with scikit-learn without importing it.

    Returns
    -------
    list of pathlib.Path
        Paths of ``china.jpg`` and ``flower.jpg``.

    Raises
    ------
    FileNotFoundError
        If scikit-learn is not installed or the bundled images are missing.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-learn is not installed; its sample photos are needed")
    image_dir = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "images"
    paths = [image_dir / name for name in SAMPLE_PHOTO_NAMES]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"scikit-learn sample photos not found: {missing}")
    return paths


@functools.cache
def _load_sample_photos() -> tuple[Image.Image, ...]:
    photos = []
    for path in sample_photo_paths():
        with Image.open(path) as photo:
            photos.append(photo.convert("RGB"))
    return tuple(photos)


def plan_corpus(n: int, seed: int) -> list[ImagePlan]:
    """Decide the encoding and size class of every file.

    Parameters
    ----------
    n : int
        Number of images.
    seed : int
        Seed of the plan.

    Returns
    -------
    list of ImagePlan
        One plan per file, in file order.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))

    encodings = [
        name for name, fraction in ENCODING_FRACTIONS.items() for _ in range(_count(fraction, n))
    ]
    if len(encodings) > n:
        encodings = encodings[:n]
    encodings += ["jpeg_rgb"] * (n - len(encodings))
    encodings = [encodings[i] for i in rng.permutation(n)]

    rgb_jpeg_indices = np.flatnonzero(np.array(encodings) == "jpeg_rgb")
    size_classes = ["normal"] * n
    n_huge = min(_count(SIZE_FRACTIONS["huge"], n), len(rgb_jpeg_indices))
    huge_indices = rng.choice(rgb_jpeg_indices, size=n_huge, replace=False)
    for index in huge_indices:
        size_classes[index] = "huge"
    remaining = rng.permutation(np.setdiff1d(np.arange(n), huge_indices))
    n_large = min(_count(SIZE_FRACTIONS["large"], n), len(remaining))
    n_tiny = min(_count(SIZE_FRACTIONS["tiny"], n), len(remaining) - n_large)
    for index in remaining[:n_large]:
        size_classes[index] = "large"
    for index in remaining[n_large : n_large + n_tiny]:
        size_classes[index] = "tiny"

    shuffled_rgb = rng.permutation(rgb_jpeg_indices)
    progressive = set(shuffled_rgb[: _count(PROGRESSIVE_FRACTION, len(shuffled_rgb))].tolist())
    shuffled_rgb = rng.permutation(rgb_jpeg_indices)
    subsampling_444 = set(
        shuffled_rgb[: _count(SUBSAMPLING_444_FRACTION, len(shuffled_rgb))].tolist()
    )

    plans = []
    n_rotated = 0
    for index, (encoding, size_class) in enumerate(zip(encodings, size_classes, strict=True)):
        orientation = 1
        if encoding == "jpeg_exif_rotated":
            orientation = (6, 8)[n_rotated % 2]
            n_rotated += 1
        plans.append(
            ImagePlan(
                index=index,
                encoding=encoding,
                size_class=size_class,
                progressive=index in progressive,
                subsampling_444=index in subsampling_444,
                orientation=orientation,
            )
        )
    return plans


def _random_crop_box(
    rng: np.random.Generator, photo_size: tuple[int, int], min_fraction: float
) -> tuple[int, int, int, int]:
    """Pick a crop box with a photo aspect ratio, portrait about a quarter of the time."""
    ratio_w, ratio_h = ASPECT_RATIOS[rng.integers(len(ASPECT_RATIOS))]
    if rng.random() < PORTRAIT_PROBABILITY:
        ratio_w, ratio_h = ratio_h, ratio_w
    photo_w, photo_h = photo_size
    # Largest box of that ratio that fits, shrunk by a random zoom factor.
    max_w = min(photo_w, photo_h * ratio_w / ratio_h)
    crop_w = max_w * rng.uniform(min_fraction, 1.0)
    crop_h = crop_w * ratio_h / ratio_w
    left = rng.uniform(0, photo_w - crop_w)
    top = rng.uniform(0, photo_h - crop_h)
    box = (round(left), round(top), round(left + crop_w), round(top + crop_h))
    return box[0], box[1], min(box[2], photo_w), min(box[3], photo_h)


def _exposure_lut(rng: np.random.Generator) -> list[int]:
    """Lookup table for a random exposure gain (+-0.5 stop) and a mild gamma change."""
    gain = 2.0 ** rng.uniform(-0.5, 0.5)
    gamma = rng.uniform(0.85, 1.15)
    levels = np.arange(256, dtype=np.float64) / 255.0
    curve = np.clip(gain * levels**gamma, 0.0, 1.0)
    return np.rint(curve * 255.0).astype(np.uint8).tolist() * 3


def _add_sensor_noise(image: Image.Image, rng: np.random.Generator, sigma: float) -> Image.Image:
    """Add Gaussian noise in row chunks so that huge images need little scratch memory."""
    pixels = np.array(image)  # writable copy
    for start in range(0, pixels.shape[0], NOISE_ROWS_PER_CHUNK):
        rows = pixels[start : start + NOISE_ROWS_PER_CHUNK]
        noise = rng.standard_normal(rows.shape, dtype=np.float32)
        noisy = rows.astype(np.float32) + noise * np.float32(sigma)
        rows[...] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def _vignette_alpha(size: tuple[int, int]) -> Image.Image:
    """Opaque centre fading to transparent corners."""
    width, height = size
    x = np.linspace(-1.0, 1.0, width, dtype=np.float32)
    y = np.linspace(-1.0, 1.0, height, dtype=np.float32)
    radius_squared = x[np.newaxis, :] ** 2 + y[:, np.newaxis] ** 2
    alpha = np.clip(1.6 - radius_squared, 0.0, 1.0)
    return Image.fromarray(np.rint(alpha * 255).astype(np.uint8))


def render_photo(plan: ImagePlan, seed: int) -> Image.Image:
    """Make the upright RGB photo of one plan.

    Parameters
    ----------
    plan : ImagePlan
        What to make.
    seed : int
        Corpus seed; combined with ``plan.index`` so each file has its own random stream.

    Returns
    -------
    PIL.Image.Image
        Upright RGB image of the planned size class.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(plan.index,)))
    photos = _load_sample_photos()
    photo = photos[rng.integers(len(photos))]

    # Huge images are upscaled a lot; start from a large crop so they stay photo-like.
    min_fraction = 0.85 if plan.size_class == "huge" else 0.45
    box = _random_crop_box(rng, photo.size, min_fraction)
    image = photo.crop(box)
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.05:
        image = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    image = image.point(_exposure_lut(rng))  # on the small crop: cheaper than after upscaling

    low, high = LONG_SIDE_RANGES[plan.size_class]
    long_side = int(rng.integers(low, high + 1))
    scale = long_side / max(image.size)
    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(new_size, Image.Resampling.LANCZOS)
    if scale > 1.0:
        # Upscaled crops are unnaturally smooth and would compress far better than real photos.
        sigma = float(np.clip(1.0 + 0.5 * scale, 1.5, 4.0)) * rng.uniform(0.8, 1.2)
        image = _add_sensor_noise(image, rng, sigma)
    return image


def encode_photo(image: Image.Image, plan: ImagePlan, seed: int) -> tuple[bytes, str, str]:
    """Encode an upright photo as planned.

    Parameters
    ----------
    image : PIL.Image.Image
        Upright RGB photo from :func:`render_photo`.
    plan : ImagePlan
        What to make.
    seed : int
        Corpus seed, for the JPEG quality draw.

    Returns
    -------
    data : bytes
        File content.
    format : str
        ``"JPEG"`` or ``"PNG"``.
    mode : str
        PIL mode of the stored image.
    """
    # A separate stream, so that encoding choices do not shift the pixel draws.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(plan.index, 1)))
    low, high = JPEG_QUALITY_RANGE
    jpeg_options = {
        "quality": int(rng.integers(low, high + 1)),
        "progressive": plan.progressive,
        "subsampling": 0 if plan.subsampling_444 else 2,  # 0 is 4:4:4, 2 is 4:2:0
    }
    buffer = io.BytesIO()
    if plan.encoding == "jpeg_rgb":
        stored, file_format = image, "JPEG"
        stored.save(buffer, file_format, **jpeg_options)
    elif plan.encoding == "jpeg_grey":
        stored, file_format = image.convert("L"), "JPEG"
        stored.save(buffer, file_format, **jpeg_options)
    elif plan.encoding == "jpeg_cmyk":
        stored, file_format = image.convert("CMYK"), "JPEG"
        stored.save(buffer, file_format, **jpeg_options)
    elif plan.encoding == "jpeg_exif_rotated":
        stored, file_format = image.transpose(INVERSE_OF_ORIENTATION[plan.orientation]), "JPEG"
        exif = Image.Exif()
        exif[EXIF_ORIENTATION_TAG] = plan.orientation
        stored.save(buffer, file_format, exif=exif, **jpeg_options)
    elif plan.encoding == "png_rgba":
        stored, file_format = image.convert("RGBA"), "PNG"
        stored.putalpha(_vignette_alpha(image.size))
        stored.save(buffer, file_format)
    elif plan.encoding == "png_palette":
        stored, file_format = image.quantize(colors=256), "PNG"
        stored.save(buffer, file_format)
    else:
        raise ValueError(f"unknown encoding {plan.encoding!r}")
    return buffer.getvalue(), file_format, stored.mode


def _remove_stale_files(out_dir: Path, keep: set[str]) -> None:
    """Delete corpus files of an earlier, larger run; never touch anything else."""
    for path in out_dir.glob("photo_*"):
        if path.is_file() and path.suffix in {".jpg", ".png"} and path.name not in keep:
            path.unlink()


def write_manifest(path: Path, rows: Sequence[WrittenImage]) -> None:
    """Write ``manifest.csv``.

    Parameters
    ----------
    path : pathlib.Path
        Destination file.
    rows : sequence of WrittenImage
        One row per image, in file order.
    """
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for row in rows:
            writer.writerow([getattr(row, column) for column in MANIFEST_COLUMNS])


def make_corpus(out_dir: str | Path, n: int = 500, seed: int = 0) -> list[Path]:
    """Write ``n`` realistic photos and ``manifest.csv`` into ``out_dir``.

    Parameters
    ----------
    out_dir : str or pathlib.Path
        Destination folder, created if needed.
    n : int, default=500
        Number of images.
    seed : int, default=0
        Seed; the same seed gives byte-identical files on the same installation.

    Returns
    -------
    list of pathlib.Path
        Paths of the images, sorted by name (which is also generation order).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    rows = []
    paths = []
    for plan in plan_corpus(n, seed):
        data, file_format, mode = encode_photo(render_photo(plan, seed), plan, seed)
        extension = "jpg" if file_format == "JPEG" else "png"
        path = out_dir / _file_name(plan.index, n, extension)
        path.write_bytes(data)
        paths.append(path)
        with Image.open(io.BytesIO(data)) as stored:  # header only: cheap
            width, height = stored.size
        rows.append(
            WrittenImage(
                file=path.name,
                format=file_format,
                mode=mode,
                width=width,
                height=height,
                bytes=len(data),
                orientation=plan.orientation,
                progressive=int(plan.progressive),
            )
        )
    _remove_stale_files(out_dir, keep={path.name for path in paths})
    write_manifest(out_dir / MANIFEST_NAME, rows)
    return sorted(paths)


def summarize(out_dir: Path, seconds: float) -> str:
    """One-line summary of a corpus from its manifest.

    Parameters
    ----------
    out_dir : pathlib.Path
        Corpus folder holding ``manifest.csv``.
    seconds : float
        Generation time to report.

    Returns
    -------
    str
        E.g. ``"500 images, 80.1 MB in 30.2 s -> out: JPEG/RGB 450, JPEG/L 25, ..."``.
    """
    with (out_dir / MANIFEST_NAME).open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    kinds = Counter(f"{row['format']}/{row['mode']}" for row in rows)
    total_mb = sum(int(row["bytes"]) for row in rows) / 1e6
    long_sides = [max(int(row["width"]), int(row["height"])) for row in rows]
    n_rotated = sum(row["orientation"] != "1" for row in rows)
    n_progressive = sum(row["progressive"] == "1" for row in rows)
    kind_text = ", ".join(f"{kind} {count}" for kind, count in kinds.most_common())
    return (
        f"{len(rows)} images, {total_mb:.1f} MB in {seconds:.1f} s -> {out_dir}: {kind_text}; "
        f"{n_progressive} progressive, {n_rotated} EXIF-rotated; "
        f"long side {min(long_sides)}-{max(long_sides)} px"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="destination folder")
    parser.add_argument("--n", type=int, default=500, help="number of images (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    make_corpus(args.out_dir, n=args.n, seed=args.seed)
    print(summarize(args.out_dir, time.perf_counter() - start))
    return 0


if __name__ == "__main__":
    sys.exit(main())
