"""Catalogue of odd-but-valid and broken image inputs for tests.

Every entry is a :class:`Case`. ``case.make(tmp_dir)`` writes whatever file the case needs
into ``tmp_dir`` and returns the input item to feed to the code under test: a ``str`` path, a
:class:`pathlib.Path`, ``bytes``, a PIL image, a numpy array, ``None`` or another object
(``case.input_type`` says which). Items are fresh objects on every call, so tests may mutate
them.

Good cases (:data:`GOOD_CASES`) are inputs a correct loader must accept. ``case.reference()``
returns the upright RGB ``uint8`` array of shape ``(H, W, 3)`` that a correct decoder must
produce, and ``case.atol`` the largest per-value absolute difference a correct decoder may show
(compare with ``np.abs(out.astype(int) - ref).max() <= case.atol``). The conventions are:

* EXIF orientation is applied (the reference is upright).
* Transparency is composited on white: ``out = round(rgb * a / 255 + 255 * (1 - a / 255))``
  (never a tie, since 255 is odd); ``atol=1`` for float-versus-integer rounding.
* 16-bit values are scaled, not clipped: ``out = round(v / 257)``; ``atol=1`` so that
  ``v >> 8`` also passes.
* Float arrays in ``[0, 1]`` become ``round(x * 255)``; ``atol=1`` so truncation passes.
* Greyscale and bilevel images are replicated to three channels.
* Palette images are looked up in their palette.

Lossless cases (PNG, TIFF, BMP, lossless WebP, GIF, arrays) have references built from the
known source pixels, independently of Pillow. JPEG is lossy, so the JPEG cases' references are
Pillow's (libjpeg) decode of the very same bytes, with ``atol=2`` for differences between
JPEG decoders; for the EXIF JPEG cases the known orientation transform is then applied with
numpy, so the reference does not rely on ``ImageOps.exif_transpose``. EXIF orientations 2-8
come twice: ``exif_orientation_<k>_png`` (lossless, an eXIf chunk, exact reference: use it for
pixel equality) and ``exif_orientation_<k>_jpeg`` (the common real-world case: use it for
feature closeness or pixel comparison within ``atol``). The CMYK cases use Pillow's naive
conversion (``c = 255 - r``, ``m = 255 - g``, ``y = 255 - b``, ``k = 0``), so no ICC profile is
involved; for the CMYK TIFF the reference is the exact source RGB, for the CMYK JPEG it is
Pillow's CMYK-to-RGB conversion of the decoded CMYK pixels.

Bad cases (:data:`BAD_CASES`) are inputs a correct loader must reject with a helpful error.
``case.cause`` is a regular expression fragment the error message should contain; match it with
``re.search(case.cause, str(error), flags=re.IGNORECASE)``.

Notes for tests
---------------
* ``no_read_permission`` has ``skip_if_root=True``: root (and Windows) can read a ``chmod 000``
  file, so skip it there; :func:`skip_reason` returns the reason or ``None``.
* ``decompression_bomb_png`` is a valid 30000x30000 1-bit PNG of about 110 kB. Opening it with
  Pillow raises ``PIL.Image.DecompressionBombError``; never decode it with the limit disabled.
* ``animated_webp`` is only present when Pillow has WebP support, ``avif`` when Pillow reads
  AVIF, ``heic`` when ``pillow-heif`` is installed (its file opens in Pillow only once the
  ``pillow_heif`` opener is registered; the reference is built without registering it).
* ``cmyk_black_jpeg`` and ``ycck_jpeg`` have references computed from their source pixels, not
  by a decoder: they check that CMYK (Adobe-inverted, with a K channel) and YCCK come out in
  the right colours.

This is a plain module (no pytest import) meant to be imported from tests, e.g.
``from image_catalogue import GOOD_CASES``. It needs only numpy, Pillow and the standard
library.
"""

from __future__ import annotations

import functools
import io
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

__all__ = [
    "BAD_CASES",
    "CASES_BY_NAME",
    "EXIF_ORIENTATION_TAG",
    "GOOD_CASES",
    "JPEG_ATOL",
    "Case",
    "apply_exif_orientation",
    "composite_on_white",
    "float_to_uint8",
    "skip_reason",
    "uint16_to_uint8",
    "write_folder",
]

EXIF_ORIENTATION_TAG = 0x0112
JPEG_ATOL = 2  # JPEG decoders (IDCT, chroma upsampling) may differ by a level or two
HEIGHT, WIDTH = 48, 64  # non-square, so a missing rotation changes the shape
BOMB_SIDE = 30_000  # 9e8 px, five times Pillow's 2 * MAX_IMAGE_PIXELS error threshold
INPUT_TYPES = ("path", "bytes", "pil", "array", "object")


@dataclass(frozen=True)
class Case:
    """One catalogue entry.

    Parameters
    ----------
    name : str
        Unique identifier, usable as a pytest id.
    kind : {"good", "bad"}
        Whether a correct loader must accept or reject the input.
    make : callable
        ``make(tmp_dir: Path) -> item``; writes any needed file into ``tmp_dir`` and returns
        the input item.
    input_type : {"path", "bytes", "pil", "array", "object"}
        What ``make`` returns (``"path"`` covers ``str`` and :class:`pathlib.Path`).
    reference : callable or None
        Good cases: returns the expected upright RGB ``uint8`` array ``(H, W, 3)``.
    atol : int
        Good cases: largest per-value absolute difference from the reference a correct decoder
        may show.
    cause : str
        Bad cases: regular expression fragment a good error message contains
        (case-insensitive).
    skip_if_root : bool
        The case cannot work when the tests run as root (or on Windows).
    note : str
        Why the case exists or how its reference was built.
    """

    name: str
    kind: str
    make: Callable[[Path], object]
    input_type: str = "path"
    reference: Callable[[], np.ndarray] | None = None
    atol: int = 0
    cause: str = ""
    skip_if_root: bool = False
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("good", "bad"):
            raise ValueError(f"{self.name}: kind must be 'good' or 'bad', not {self.kind!r}")
        if self.input_type not in INPUT_TYPES:
            raise ValueError(f"{self.name}: unknown input_type {self.input_type!r}")
        if self.kind == "good" and self.reference is None:
            raise ValueError(f"{self.name}: good cases need a reference")
        if self.kind == "bad":
            if not self.cause:
                raise ValueError(f"{self.name}: bad cases need a cause")
            re.compile(self.cause)


# --------------------------------------------------------------------------------------------
# Conversions that define the reference conventions (also handy in tests)
# --------------------------------------------------------------------------------------------

# Stored pixels -> upright pixels, per EXIF Orientation value (numpy, independent of Pillow).
_TO_UPRIGHT: dict[int, Callable[[np.ndarray], np.ndarray]] = {
    1: lambda pixels: pixels,
    2: lambda pixels: pixels[:, ::-1],
    3: lambda pixels: pixels[::-1, ::-1],
    4: lambda pixels: pixels[::-1],
    5: lambda pixels: pixels.swapaxes(0, 1),
    6: lambda pixels: np.rot90(pixels, -1),  # rotate 90 degrees clockwise
    7: lambda pixels: pixels[::-1, ::-1].swapaxes(0, 1),
    8: lambda pixels: np.rot90(pixels, 1),  # rotate 90 degrees counter-clockwise
}
# Upright -> stored: every transform is its own inverse except the two quarter turns.
_TO_STORED = {**_TO_UPRIGHT, 6: _TO_UPRIGHT[8], 8: _TO_UPRIGHT[6]}


def apply_exif_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright as the EXIF Orientation tag prescribes.

    Parameters
    ----------
    pixels : numpy.ndarray
        Array of shape ``(H, W, ...)`` as stored in the file.
    orientation : int
        EXIF Orientation value, 1-8.

    Returns
    -------
    numpy.ndarray
        Upright pixels (a contiguous copy).
    """
    return np.ascontiguousarray(_TO_UPRIGHT[orientation](pixels))


def composite_on_white(pixels: np.ndarray) -> np.ndarray:
    """Composite grey+alpha or RGB+alpha ``uint8`` pixels on white.

    Parameters
    ----------
    pixels : numpy.ndarray
        ``uint8`` array of shape ``(H, W, 2)`` (LA) or ``(H, W, 4)`` (RGBA).

    Returns
    -------
    numpy.ndarray
        ``uint8`` RGB array ``(H, W, 3)``,
        ``round(colour * a / 255 + 255 * (1 - a / 255))``.
    """
    colour = pixels[..., :-1].astype(np.int64)
    alpha = pixels[..., -1:].astype(np.int64)
    # (c * a + 255 * (255 - a)) / 255 is never exactly halfway, so +127 // 255 rounds.
    blended = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    if blended.shape[-1] == 1:
        blended = np.repeat(blended, 3, axis=-1)
    return blended.astype(np.uint8)


def uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit values to 8 bits: ``round(v / 257)``, so 65535 maps to 255."""
    return ((values.astype(np.int64) * 2 + 257) // 514).astype(np.uint8)  # never a tie


def float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale floats in ``[0, 1]`` to 8 bits: ``round(x * 255)``."""
    return np.rint(np.asarray(values, dtype=np.float64) * 255.0).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., np.newaxis], 3, axis=-1)


# --------------------------------------------------------------------------------------------
# Source pixels (cached and read-only; hand out copies)
# --------------------------------------------------------------------------------------------


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@functools.cache
def _smooth_rgb(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Smooth, JPEG-friendly, orientation-revealing picture.

    Red grows left to right, green top to bottom and a blue blob sits near the top-left, so each
    of the eight flips and rotations gives a different picture.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    red = 20 + 215 * x / max(width - 1, 1)
    green = 20 + 215 * y / max(height - 1, 1)
    blob = np.exp(
        -(((x - 0.25 * width) / (0.2 * width)) ** 2 + ((y - 0.3 * height) / (0.2 * height)) ** 2)
    )
    blue = 30 + 200 * blob
    return _frozen(np.rint(np.stack([red, green, blue], axis=-1)).astype(np.uint8))


@functools.cache
def _detailed_rgb(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """The smooth picture plus pixel-level noise, for lossless formats: catches any resampling."""
    rng = np.random.default_rng(height * 100_003 + width)
    noise = rng.integers(-20, 21, size=(height, width, 3))
    return _frozen(np.clip(_smooth_rgb(height, width) + noise, 0, 255).astype(np.uint8))


@functools.cache
def _detailed_grey(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    rgb = _detailed_rgb(height, width).astype(np.float64)
    return _frozen(np.rint(rgb @ [0.299, 0.587, 0.114]).astype(np.uint8))


@functools.cache
def _vignette_alpha(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Opaque centre, half-transparent ring, fully transparent corners."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    radius_squared = ((x - width / 2) / (width / 2)) ** 2 + ((y - height / 2) / (height / 2)) ** 2
    return _frozen(np.rint(np.clip(1.5 - radius_squared, 0, 1) * 255).astype(np.uint8))


@functools.cache
def _grey16() -> np.ndarray:
    """16-bit ramp over the full range, with the boundary values in the first row."""
    ramp = np.linspace(0, 65535, HEIGHT * WIDTH).reshape(HEIGHT, WIDTH)
    values = np.rint(ramp).astype(np.uint16)
    values[0, :6] = [0, 1, 128, 256, 32896, 65535]
    return _frozen(values)


@functools.cache
def _rgb16() -> np.ndarray:
    return _frozen(np.stack([_grey16(), _grey16()[::-1], _grey16()[:, ::-1]], axis=-1))


@functools.cache
def _palette() -> np.ndarray:
    """Sixteen distinct colours, ``(16, 3)`` uint8."""
    rng = np.random.default_rng(16)
    return _frozen(rng.integers(0, 256, size=(16, 3)).astype(np.uint8))


@functools.cache
def _palette_indices(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return _frozen(((x // 4 + 3 * (y // 4)) % 16).astype(np.uint8))


# Per palette index alpha for the tRNS case: transparent, half, quarter, then opaque.
_PALETTE_ALPHA = _frozen(np.array([0, 128, 64] + [255] * 13, dtype=np.uint8))


def _palette_image(indices: np.ndarray) -> Image.Image:
    image = Image.fromarray(indices)  # mode L; putpalette turns it into mode P
    image.putpalette(_palette().ravel().tolist())
    return image


# --------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------


def _encode(image: Image.Image, file_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, file_format, **options)
    return buffer.getvalue()


def _decode_rgb_with_pillow(data: bytes) -> np.ndarray:
    """Pillow's decode, for JPEG references only (lossy: there is no other ground truth)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png_from_parts(
    width: int, height: int, bit_depth: int, colour_type: int, idat: bytes
) -> bytes:
    """Assemble a PNG by hand (for what Pillow will not write: 16-bit RGB, huge sizes)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"".join(
        [
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", header),
            _png_chunk(b"IDAT", idat),
            _png_chunk(b"IEND", b""),
        ]
    )


def _zlib_stream_of_zeros(n_bytes: int, block_size: int = 1 << 20) -> bytes:
    """zlib stream that inflates to ``n_bytes`` zero bytes, without compressing them all.

    A full flush makes deflate forget its history, so after the first block every block of
    zeros compresses to the same bytes: compress two blocks and repeat the second. The zlib
    header and Adler-32 trailer are written by hand; for all-zero data the Adler-32 sums are
    ``A = 1`` and ``B = n_bytes mod 65521``.
    """
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, no header or trailer
    zero_block = bytes(block_size)
    n_blocks, tail_size = divmod(n_bytes, block_size)
    pieces = []
    block_output = b""
    for block_index in range(n_blocks):
        if block_index < 2:
            block_output = deflate.compress(zero_block) + deflate.flush(zlib.Z_FULL_FLUSH)
        pieces.append(block_output)
    pieces.append(deflate.compress(bytes(tail_size)) + deflate.flush())
    adler32 = ((n_bytes % 65521) << 16) | 1
    return b"\x78\xda" + b"".join(pieces) + struct.pack(">I", adler32)


@functools.cache
def _bomb_png() -> bytes:
    """Valid all-black 1-bit PNG of BOMB_SIDE x BOMB_SIDE pixels, about 110 kB."""
    row_bytes = 1 + (BOMB_SIDE + 7) // 8  # filter byte + packed bits
    idat = _zlib_stream_of_zeros(row_bytes * BOMB_SIDE)
    return _png_from_parts(BOMB_SIDE, BOMB_SIDE, bit_depth=1, colour_type=0, idat=idat)


@functools.cache
def _rgb16_png() -> bytes:
    values = _rgb16()
    height, width, _ = values.shape
    rows = values.astype(">u2").view(np.uint8).reshape(height, width * 6)
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)  # filter 0
    return _png_from_parts(width, height, 16, 2, zlib.compress(scanlines.tobytes()))


@functools.cache
def _exif_png(orientation: int) -> bytes:
    return _exif_encoded(_detailed_rgb(), orientation, "PNG")


@functools.cache
def _exif_jpeg(orientation: int) -> bytes:
    return _exif_encoded(_smooth_rgb(), orientation, "JPEG", quality=95, subsampling=0)


def _exif_encoded(
    upright: np.ndarray, orientation: int, file_format: str, **options: object
) -> bytes:
    stored = Image.fromarray(np.ascontiguousarray(_TO_STORED[orientation](upright)))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return _encode(stored, file_format, exif=exif, **options)


@functools.cache
def _jpeg(name: str) -> bytes:
    smooth = Image.fromarray(_smooth_rgb())
    if name == "rgb":
        return _encode(smooth, "JPEG", quality=90)
    if name == "progressive":
        return _encode(smooth, "JPEG", quality=90, progressive=True)
    if name == "grey":
        return _encode(smooth.convert("L"), "JPEG", quality=90)
    if name == "cmyk":
        return _encode(smooth.convert("CMYK"), "JPEG", quality=95)
    if name == "noise":  # incompressible, so half the file is well inside the scan data
        rng = np.random.default_rng(7)
        noise = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        return _encode(Image.fromarray(noise), "JPEG", quality=90)
    raise KeyError(name)


@functools.cache
def _cmyk_with_black() -> np.ndarray:
    """CMYK source pixels with a black (K) ramp, so that K must be applied, not dropped."""
    inverse = 255 - _smooth_rgb().astype(np.float64)
    black = np.broadcast_to(np.linspace(0, 160, WIDTH), (HEIGHT, WIDTH))
    return _frozen(np.rint(np.dstack([0.6 * inverse, black])).astype(np.uint8))


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    """The usual conversion: ``r = (255 - c) * (255 - k) / 255``, rounded."""
    ink = 255 - cmyk[..., :3].astype(np.int64)
    white = 255 - cmyk[..., 3:].astype(np.int64)
    return ((ink * white + 127) // 255).astype(np.uint8)


@functools.cache
def _ycck_jpeg() -> bytes:
    """A YCCK JPEG (Adobe transform 2, as Photoshop writes CMYK), built with Pillow alone.

    Pillow writes CMYK JPEGs with an Adobe marker, transform 0 (plain CMYK), storing
    ``255 - value`` (the Adobe convention). A YCCK decoder turns the stored (Y, Cb, Cr)
    back into (R, G, B) and then into stored CMYK as ``255 - R``..., and K passes through.
    So encode the YCbCr of the visible (c, m, y) = 255 - source RGB (k = 0), hand Pillow
    ``255 - stored`` values, and flip the transform byte of the Adobe marker to 2.
    """
    visible = 255 - _smooth_rgb().astype(np.float64)  # naive CMYK, k = 0
    c, m, y = visible[..., 0], visible[..., 1], visible[..., 2]
    luma = 0.299 * c + 0.587 * m + 0.114 * y
    chroma_b = -0.168736 * c - 0.331264 * m + 0.5 * y + 128
    chroma_r = 0.5 * c - 0.418688 * m - 0.081312 * y + 128
    stored = np.dstack([luma, chroma_b, chroma_r, np.full_like(luma, 255.0)])
    given = np.clip(np.rint(255 - stored), 0, 255).astype(np.uint8)
    data = bytearray(_encode(Image.fromarray(given, "CMYK"), "JPEG", quality=95))
    marker = data.find(b"Adobe")
    if marker < 0 or data[marker + 11] != 0:
        raise RuntimeError("Pillow no longer writes an Adobe marker with transform 0")
    data[marker + 11] = 2
    return bytes(data)


def _heif_support() -> object | None:
    """The ``pillow_heif`` module when installed (HEIC is read through it), else None."""
    try:
        import pillow_heif
    except ImportError:
        return None
    return pillow_heif


@functools.cache
def _heic() -> bytes:
    heif = _heif_support()
    buffer = io.BytesIO()
    heif.from_pillow(Image.fromarray(_smooth_rgb())).save(buffer, quality=90)
    return buffer.getvalue()


def _heic_reference() -> np.ndarray:
    """pillow-heif's own decode (lossy codec), without registering it in Pillow."""
    heif = _heif_support()
    return np.asarray(heif.open_heif(io.BytesIO(_heic())).to_pillow().convert("RGB"))


@functools.cache
def _png_rgb(height: int = HEIGHT, width: int = WIDTH) -> bytes:
    return _encode(Image.fromarray(_detailed_rgb(height, width)), "PNG")


@functools.cache
def _animated(file_format: str) -> bytes:
    """Three frames; later frames differ so that decoding the wrong frame is caught."""
    if file_format == "GIF":
        frames = [_palette_image((_palette_indices() + shift) % 16) for shift in (0, 5, 11)]
        return _encode(
            frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0
        )
    frames = [
        Image.fromarray(_detailed_rgb()[:, :, order]) for order in ([0, 1, 2], [2, 0, 1], [1, 2, 0])
    ]
    return _encode(
        frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100, lossless=True
    )


# --------------------------------------------------------------------------------------------
# Case builders
# --------------------------------------------------------------------------------------------


def _write(tmp_dir: Path, filename: str, data: bytes) -> str:
    path = Path(tmp_dir) / filename
    path.write_bytes(data)
    return str(path)


def _copy_of(array_factory: Callable[[], np.ndarray]) -> Callable[[], np.ndarray]:
    return lambda: np.array(array_factory())  # writable copy each call


def _good_file(
    name: str,
    filename: str,
    encoded: Callable[[], bytes],
    reference: Callable[[], np.ndarray],
    atol: int = 0,
    note: str = "",
) -> Case:
    return Case(
        name=name,
        kind="good",
        make=lambda tmp_dir: _write(tmp_dir, filename, encoded()),
        reference=_copy_of(reference),
        atol=atol,
        note=note,
    )


def _good_item(
    name: str,
    input_type: str,
    item: Callable[[], object],
    reference: Callable[[], np.ndarray],
    atol: int = 0,
    note: str = "",
) -> Case:
    return Case(
        name=name,
        kind="good",
        make=lambda tmp_dir: item(),
        input_type=input_type,
        reference=_copy_of(reference),
        atol=atol,
        note=note,
    )


def _bad_file(
    name: str, filename: str, content: Callable[[], bytes], cause: str, note: str = ""
) -> Case:
    return Case(
        name=name,
        kind="bad",
        make=lambda tmp_dir: _write(tmp_dir, filename, content()),
        cause=cause,
        note=note,
    )


def _bad_item(name: str, input_type: str, item: Callable[[], object], cause: str) -> Case:
    return Case(
        name=name, kind="bad", make=lambda tmp_dir: item(), input_type=input_type, cause=cause
    )


def _exif_cases() -> list[Case]:
    cases = []
    for orientation in range(2, 9):
        cases.append(
            _good_file(
                f"exif_orientation_{orientation}_png",
                f"exif_orientation_{orientation}.png",
                functools.partial(_exif_png, orientation),
                _detailed_rgb,
                note="lossless; pixels stored transformed so that applying the tag restores them",
            )
        )
        cases.append(
            _good_file(
                f"exif_orientation_{orientation}_jpeg",
                f"exif_orientation_{orientation}.jpg",
                functools.partial(_exif_jpeg, orientation),
                functools.partial(_exif_jpeg_reference, orientation),
                atol=JPEG_ATOL,
                note="Pillow-decoded stored pixels turned upright with numpy; within a few "
                "levels of the smooth source",
            )
        )
    return cases


def _exif_jpeg_reference(orientation: int) -> np.ndarray:
    return apply_exif_orientation(_decode_rgb_with_pillow(_exif_jpeg(orientation)), orientation)


def _format_cases() -> list[Case]:
    cases = [
        _good_file(
            "rgb_jpeg",
            "rgb.jpg",
            functools.partial(_jpeg, "rgb"),
            lambda: _decode_rgb_with_pillow(_jpeg("rgb")),
            atol=JPEG_ATOL,
            note="baseline 4:2:0 JPEG, the common case",
        ),
        _good_file(
            "progressive_jpeg",
            "progressive.jpg",
            functools.partial(_jpeg, "progressive"),
            lambda: _decode_rgb_with_pillow(_jpeg("progressive")),
            atol=JPEG_ATOL,
        ),
        _good_file(
            "grey_jpeg",
            "grey.jpg",
            functools.partial(_jpeg, "grey"),
            lambda: _decode_rgb_with_pillow(_jpeg("grey")),
            atol=JPEG_ATOL,
            note="mode L JPEG; reference is the decoded grey replicated to RGB",
        ),
        _good_file(
            "cmyk_jpeg",
            "cmyk.jpg",
            functools.partial(_jpeg, "cmyk"),
            lambda: _decode_rgb_with_pillow(_jpeg("cmyk")),
            atol=JPEG_ATOL,
            note="Pillow's CMYK->RGB conversion of the decoded CMYK pixels (k is about 0, so "
            "naive and multiplicative conversions agree)",
        ),
        _good_file(
            "cmyk_tiff",
            "cmyk.tif",
            lambda: _encode(Image.fromarray(_detailed_rgb()).convert("CMYK"), "TIFF"),
            _detailed_rgb,
            note="naive RGB->CMYK with k=0 is lossless, so the reference is the source RGB",
        ),
        _good_file(
            "cmyk_black_jpeg",
            "cmyk_black.jpg",
            lambda: _encode(Image.fromarray(_cmyk_with_black(), "CMYK"), "JPEG", quality=95),
            lambda: _cmyk_to_rgb(_cmyk_with_black()),
            atol=JPEG_ATOL + 1,
            note="CMYK with a K ramp; reference from the source CMYK by the usual formula "
            "(r = (255 - c)(255 - k) / 255), not from a decoder, so an inverted or "
            "dropped K is caught; one more level of tolerance for the lossy CMYK round trip",
        ),
        _good_file(
            "ycck_jpeg",
            "ycck.jpg",
            _ycck_jpeg,
            _smooth_rgb,
            atol=JPEG_ATOL + 2,
            note="Adobe transform 2 (YCCK), as Photoshop saves CMYK; reference is the source "
            "RGB, so colours must come out right (two more levels for the YCC round trip)",
        ),
        _good_file(
            "palette_png",
            "palette.png",
            lambda: _encode(_palette_image(_palette_indices()), "PNG"),
            lambda: _palette()[_palette_indices()],
        ),
        _good_file(
            "palette_trns_png",
            "palette_trns.png",
            lambda: _encode(
                _palette_image(_palette_indices()), "PNG", transparency=_PALETTE_ALPHA.tobytes()
            ),
            lambda: composite_on_white(
                np.concatenate([_palette(), _PALETTE_ALPHA[:, np.newaxis]], axis=1)[
                    _palette_indices()
                ]
            ),
            atol=1,
            note="tRNS chunk with transparent, half and quarter alpha entries; composited on white",
        ),
        _good_file(
            "la_png",
            "la.png",
            lambda: _encode(
                Image.fromarray(np.dstack([_detailed_grey(), _vignette_alpha()])), "PNG"
            ),
            lambda: composite_on_white(np.dstack([_detailed_grey(), _vignette_alpha()])),
            atol=1,
        ),
        _good_file(
            "rgba_png",
            "rgba.png",
            lambda: _encode(
                Image.fromarray(np.dstack([_detailed_rgb(), _vignette_alpha()])), "PNG"
            ),
            lambda: composite_on_white(np.dstack([_detailed_rgb(), _vignette_alpha()])),
            atol=1,
        ),
        _good_file(
            "grey16_png",
            "grey16.png",
            lambda: _encode(Image.fromarray(_grey16()), "PNG"),
            lambda: _grey_to_rgb(uint16_to_uint8(_grey16())),
            atol=1,
            note="mode I;16; reference round(v / 257): clipping at 255 would be wrong",
        ),
        _good_file(
            "grey16_tiff",
            "grey16.tif",
            lambda: _encode(Image.fromarray(_grey16()), "TIFF"),
            lambda: _grey_to_rgb(uint16_to_uint8(_grey16())),
            atol=1,
        ),
        _good_file(
            "rgb16_png",
            "rgb16.png",
            _rgb16_png,
            lambda: uint16_to_uint8(_rgb16()),
            atol=1,
            note="48-bit RGB PNG written by hand; Pillow opens it as 8-bit RGB (high bytes)",
        ),
        _good_file(
            "bilevel_png",
            "bilevel.png",
            lambda: _encode(Image.fromarray(_detailed_grey() > 128), "PNG"),
            lambda: _grey_to_rgb(np.where(_detailed_grey() > 128, 255, 0).astype(np.uint8)),
            note="mode 1; black and white become 0 and 255",
        ),
        _good_file(
            "animated_gif",
            "animated.gif",
            functools.partial(_animated, "GIF"),
            lambda: _palette()[_palette_indices()],
            note="three frames; the reference is the first",
        ),
        _good_file(
            "bmp",
            "image.bmp",
            lambda: _encode(Image.fromarray(_detailed_rgb()), "BMP"),
            _detailed_rgb,
        ),
        _good_file(
            "one_pixel_png",
            "one_pixel.png",
            functools.partial(_png_rgb, 1, 1),
            functools.partial(_detailed_rgb, 1, 1),
        ),
        _good_file(
            "wide_10000x3_png",
            "wide_10000x3.png",
            functools.partial(_png_rgb, 3, 10_000),
            functools.partial(_detailed_rgb, 3, 10_000),
            note="width 10000, height 3",
        ),
        _good_file(
            "tall_3x10000_png",
            "tall_3x10000.png",
            functools.partial(_png_rgb, 10_000, 3),
            functools.partial(_detailed_rgb, 10_000, 3),
            note="width 3, height 10000",
        ),
        _good_file(
            "png_named_jpg",
            "png_content.jpg",
            _png_rgb,
            _detailed_rgb,
            note="the extension lies; decoders must sniff the content",
        ),
        _good_file("uppercase_extension", "UPPER.PNG", _png_rgb, _detailed_rgb),
        _good_file(
            "unicode_filename",
            "фото é 写真.png",
            _png_rgb,
            _detailed_rgb,
            note="non-ASCII characters and spaces in the file name",
        ),
    ]
    if features.check("webp"):
        cases.append(
            _good_file(
                "animated_webp",
                "animated.webp",
                functools.partial(_animated, "WEBP"),
                _detailed_rgb,
                note="three lossless frames; the reference is the first",
            )
        )
    if features.check("avif"):
        cases.append(
            _good_file(
                "avif",
                "image.avif",
                lambda: _encode(Image.fromarray(_smooth_rgb()), "AVIF", quality=90),
                lambda: _decode_rgb_with_pillow(
                    _encode(Image.fromarray(_smooth_rgb()), "AVIF", quality=90)
                ),
                atol=JPEG_ATOL,
                note="lossy; reference is Pillow's own AVIF decode (Pillow >= 11.3)",
            )
        )
    if _heif_support() is not None:
        cases.append(
            _good_file(
                "heic",
                "image.heic",
                _heic,
                _heic_reference,
                atol=JPEG_ATOL,
                note="lossy; only when pillow-heif is installed; reference is its own decode",
            )
        )
    return cases


def _in_memory_cases() -> list[Case]:
    float_pixels = _detailed_rgb().astype(np.float64) / 255.0
    float_pixels[0, 0] = [0.0, 0.5, 1.0]  # exact ends of the range, and a rounding midpoint
    uint16_pixels = _rgb16()

    def detailed_png_path(tmp_dir: Path) -> Path:
        return Path(_write(tmp_dir, "pathlib_path.png", _png_rgb()))

    return [
        Case(
            name="pathlib_path",
            kind="good",
            make=detailed_png_path,
            reference=_copy_of(_detailed_rgb),
            note="a pathlib.Path rather than a str",
        ),
        _good_item("png_bytes", "bytes", _png_rgb, _detailed_rgb, note="raw bytes of a PNG file"),
        _good_item("pil_image_rgb", "pil", lambda: Image.fromarray(_detailed_rgb()), _detailed_rgb),
        _good_item(
            "pil_image_rgba",
            "pil",
            lambda: Image.fromarray(np.dstack([_detailed_rgb(), _vignette_alpha()])),
            lambda: composite_on_white(np.dstack([_detailed_rgb(), _vignette_alpha()])),
            atol=1,
        ),
        _good_item(
            "float32_array",
            "array",
            lambda: float_pixels.astype(np.float32),
            lambda: float_to_uint8(float_pixels.astype(np.float32)),
            atol=1,
            note="(H, W, 3) float32 in [0, 1]; reference round(x * 255)",
        ),
        _good_item(
            "float64_array",
            "array",
            lambda: float_pixels.copy(),
            lambda: float_to_uint8(float_pixels),
            atol=1,
        ),
        _good_item(
            "uint16_array",
            "array",
            lambda: np.array(uint16_pixels),
            lambda: uint16_to_uint8(uint16_pixels),
            atol=1,
            note="(H, W, 3) uint16; reference round(v / 257)",
        ),
        _good_item(
            "grey_uint8_array",
            "array",
            lambda: np.array(_detailed_grey()),
            lambda: _grey_to_rgb(_detailed_grey()),
            note="(H, W) uint8",
        ),
        _good_item(
            "single_channel_array",
            "array",
            lambda: np.array(_detailed_grey())[..., np.newaxis],
            lambda: _grey_to_rgb(_detailed_grey()),
            note="(H, W, 1) uint8",
        ),
        _good_item(
            "rgba_uint8_array",
            "array",
            lambda: np.dstack([_detailed_rgb(), _vignette_alpha()]),
            lambda: composite_on_white(np.dstack([_detailed_rgb(), _vignette_alpha()])),
            atol=1,
            note="(H, W, 4) uint8, composited on white",
        ),
    ]


# --------------------------------------------------------------------------------------------
# Bad cases
# --------------------------------------------------------------------------------------------

_CANNOT_IDENTIFY = "cannot identify|not an image|unrecogni[sz]ed|unknown (image )?format"
_BAD_SHAPE = "shape|dimension|ndim|channel"


def _missing_file(tmp_dir: Path) -> str:
    path = Path(tmp_dir) / "missing_file.jpg"
    path.unlink(missing_ok=True)
    return str(path)


def _directory(tmp_dir: Path) -> str:
    path = Path(tmp_dir) / "directory.jpg"  # a folder with an image-like name
    path.mkdir(exist_ok=True)
    return str(path)


def _unreadable_file(tmp_dir: Path) -> str:
    path = Path(tmp_dir) / "no_read_permission.png"
    if path.exists():
        path.chmod(0o600)  # so that a second make can rewrite it
    path.write_bytes(_png_rgb())
    path.chmod(0o000)
    return str(path)


@functools.cache
def _bad_array_noise() -> np.ndarray:
    """Incompressible pixels, so that half a PNG ends inside the image data."""
    return _frozen(np.random.default_rng(11).integers(0, 256, (64, 64, 3), dtype=np.uint8))


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _bad_array(kind: str) -> np.ndarray:
    pixels = _detailed_rgb().astype(np.float32) / 255.0
    if kind == "nan":
        pixels[10:20, 10:20] = np.nan
        return pixels
    if kind == "out_of_range":
        pixels[0, 0] = 3.5
        return pixels
    if kind == "complex":
        return pixels.astype(np.complex64)
    if kind == "negative_int64":
        return _detailed_rgb().astype(np.int64) - 128
    if kind == "rank1":
        return np.array(_detailed_rgb()).ravel()
    if kind == "rank5":
        return np.array(_detailed_rgb())[np.newaxis, np.newaxis]
    if kind == "two_channels":
        return np.array(_detailed_rgb()[..., :2])
    if kind == "five_channels":
        return np.dstack([_detailed_rgb(), _vignette_alpha(), _vignette_alpha()])
    if kind == "empty":
        return np.zeros((0, 0, 3), dtype=np.uint8)
    raise KeyError(kind)


_HTML_PAGE = b"""<!DOCTYPE html>
<html><head><title>404 Not Found</title></head>
<body><h1>Not Found</h1><p>The requested image was not found on this server.</p></body></html>
"""


def _bad_cases() -> list[Case]:
    return [
        Case(
            "missing_file",
            "bad",
            _missing_file,
            cause="not found|no such file|does not exist",
        ),
        Case("directory", "bad", _directory, cause="directory"),
        Case(
            "no_read_permission",
            "bad",
            _unreadable_file,
            cause="permission",
            skip_if_root=True,
            note="chmod 000; root and Windows can still read it",
        ),
        _bad_file("empty_file", "empty.jpg", lambda: b"", cause="empty|0 bytes"),
        _bad_file(
            "truncated_jpeg",
            "truncated.jpg",
            lambda: _truncated(_jpeg("noise")),
            cause="truncated",
            note="first half of a JPEG: the header opens, the pixels fail on load",
        ),
        _bad_file(
            "truncated_png",
            "truncated.png",
            lambda: _truncated(_encode(Image.fromarray(_bad_array_noise()), "PNG")),
            cause="truncated",
        ),
        _bad_file(
            "text_as_jpg", "text.jpg", lambda: b"This is not an image.\n", cause=_CANNOT_IDENTIFY
        ),
        _bad_file(
            "html_as_jpg",
            "page.jpg",
            lambda: _HTML_PAGE,
            cause=_CANNOT_IDENTIFY,
            note="what a failed download saves",
        ),
        _bad_file(
            "random_bytes_as_png",
            "random.png",
            lambda: np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
            cause=_CANNOT_IDENTIFY,
        ),
        _bad_file(
            "decompression_bomb_png",
            "bomb.png",
            _bomb_png,
            cause="decompression bomb",
            note=f"valid {BOMB_SIDE}x{BOMB_SIDE} 1-bit PNG, about 110 kB on disk",
        ),
        _bad_item("nan_array", "array", lambda: _bad_array("nan"), cause="nan|finite"),
        _bad_item(
            "out_of_range_float_array", "array", lambda: _bad_array("out_of_range"), cause="range"
        ),
        _bad_item("complex_array", "array", lambda: _bad_array("complex"), cause="dtype|complex"),
        _bad_item(
            "negative_int64_array",
            "array",
            lambda: _bad_array("negative_int64"),
            cause="dtype|negative|range",
        ),
        _bad_item("rank1_array", "array", lambda: _bad_array("rank1"), cause=_BAD_SHAPE),
        _bad_item("rank5_array", "array", lambda: _bad_array("rank5"), cause=_BAD_SHAPE),
        _bad_item(
            "two_channel_array", "array", lambda: _bad_array("two_channels"), cause=_BAD_SHAPE
        ),
        _bad_item(
            "five_channel_array", "array", lambda: _bad_array("five_channels"), cause=_BAD_SHAPE
        ),
        _bad_item("empty_array", "array", lambda: _bad_array("empty"), cause="empty|shape|size"),
        _bad_item("none_item", "object", lambda: None, cause="none"),
        _bad_item("int_item", "object", lambda: 42, cause="int|type|unsupported"),
    ]


GOOD_CASES: list[Case] = _exif_cases() + _format_cases() + _in_memory_cases()
BAD_CASES: list[Case] = _bad_cases()
CASES_BY_NAME: dict[str, Case] = {case.name: case for case in GOOD_CASES + BAD_CASES}
if len(CASES_BY_NAME) != len(GOOD_CASES) + len(BAD_CASES):
    raise RuntimeError("image catalogue case names must be unique")


# --------------------------------------------------------------------------------------------
# Helpers for tests
# --------------------------------------------------------------------------------------------


def skip_reason(case: Case) -> str | None:
    """Why ``case`` cannot run here, or ``None`` if it can.

    Parameters
    ----------
    case : Case
        A catalogue case.

    Returns
    -------
    str or None
        E.g. ``"root can read chmod 000 files"`` for ``no_read_permission`` as root.
    """
    if not case.skip_if_root:
        return None
    if os.name == "nt":
        return "Windows ignores chmod 000 for reading"
    if os.geteuid() == 0:
        return "root can read chmod 000 files"
    return None


def write_folder(tmp_dir: str | Path, cases: Iterable[Case]) -> list[object]:
    """Make every case in ``tmp_dir``.

    Parameters
    ----------
    tmp_dir : str or pathlib.Path
        Folder for the files, created if needed. Each case uses its own file name.
    cases : iterable of Case
        Cases to make.

    Returns
    -------
    list
        The items, in the order of ``cases``.
    """
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    return [case.make(tmp_dir) for case in cases]
