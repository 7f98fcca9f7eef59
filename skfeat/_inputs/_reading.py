"""Reading one image file: whole, once, bounded, and from a regular file only.

A path is read whole into memory, once (:func:`read_file`), and those bytes are what
is decoded, and what the activation cache keys, so a file replaced meanwhile can never
give one content's pixels under another's key. Only regular files are read: a FIFO, a
device or a socket is refused from its ``stat``, before it is opened, since reading
one could block or never end. One file is read up to :func:`max_file_bytes`.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from skfeat._inputs._failures import Refused, not_found

__all__ = ["max_file_bytes", "read_file"]

# Every image file Pillow accepts by default fits: its largest image, MAX_IMAGE_PIXELS
# (89.5 Mpx) of uncompressed 16-bit RGBA at 8 bytes per pixel, takes 716 MB.
_FILE_BYTES_FLOOR = 1 << 30
_BYTES_PER_PIXEL_AT_MOST = 8
_READ_BLOCK = 1 << 16  # what a file that grew after it was opened is read on by
# O_NONBLOCK: opening a FIFO that was swapped in after the stat must not wait for a writer.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_OPEN_FLAGS |= getattr(os, "O_BINARY", 0)
_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def max_file_bytes() -> int | None:
    """The most bytes one image file may hold to be read (None: no limit).

    ``max(1 GiB, 8 bytes x PIL.Image.MAX_IMAGE_PIXELS)``: 1 GiB holds every image
    Pillow accepts by default (89.5 Mpx of uncompressed 16-bit RGBA take 716 MB), and
    raising ``MAX_IMAGE_PIXELS`` raises it too. With ``MAX_IMAGE_PIXELS = None`` a file
    is read up to the size it had when opened. A larger file is refused from its size,
    before a byte is read, so that no file can exhaust memory; bytes passed as the
    item are not limited.
    """
    from PIL import Image

    pixels = Image.MAX_IMAGE_PIXELS
    if pixels is None:
        return None
    return max(_FILE_BYTES_FLOOR, _BYTES_PER_PIXEL_AT_MOST * int(pixels))


def read_file(path: str | os.PathLike[str], status: os.stat_result | None = None) -> bytes:
    """The bytes of one image file, read whole, once, from a regular file only.

    The file's type and size are checked from ``stat`` (``status`` when the caller
    has it) before it is opened, and again on the open descriptor: FIFOs, devices and
    sockets are never read, since reading one can block or never end. The read stops
    at :func:`max_file_bytes`.

    Raises
    ------
    OSError or ValueError
        The cause, for :func:`decode` to report: missing, a directory, not a regular
        file, empty, too large, unreadable.
    """
    if status is None:
        try:
            status = os.stat(path)  # one system call answers missing, directory, type and size
        except FileNotFoundError:
            raise Refused(not_found(Path(path))) from None
    limit = max_file_bytes()
    _check_file(status, limit)
    handle = os.open(path, _OPEN_FLAGS)
    try:
        opened = os.fstat(handle)  # the file opened may not be the one stat saw
        _check_file(opened, limit)
        return _read_bounded(handle, opened.st_size, limit)
    finally:
        os.close(handle)


def _check_file(status: os.stat_result, limit: int | None) -> None:
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise Refused("the path is a directory, not an image file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in _SPECIAL_FILES if test(mode)), None)
        kind = kind or f"of type {stat.S_IFMT(mode):#o}"
        raise Refused(
            f"the path is {kind}, not a regular file; only regular files are read "
            "(read it yourself and pass the bytes)"
        )
    if status.st_size == 0:
        raise Refused("the file is empty (0 bytes)")
    if limit is not None and status.st_size > limit:
        raise Refused(_too_large(status.st_size, limit))


def _read_bounded(handle: int, size: int, limit: int | None) -> bytes:
    """Read to the end of a file ``size`` bytes long when opened, never past ``limit``.

    One byte more than ``size`` is asked for, to see the end; a file that grew
    meanwhile is read on, and refused once past ``limit`` (with no limit, it is read
    up to ``size``).
    """
    stop = size if limit is None else limit + 1
    parts = []
    total = 0
    want = min(size + 1, stop)
    while want > 0 and (block := os.read(handle, want)):
        parts.append(block)
        total += len(block)
        want = min(_READ_BLOCK, stop - total)
    if limit is not None and total > limit:
        raise Refused(_too_large(total, limit, growing=True))
    return b"".join(parts)  # a single block is returned as it is, not copied


def _too_large(size: int, limit: int, growing: bool = False) -> str:
    what = "the file grew while read, past" if growing else f"the file is {size} bytes, over"
    return (
        f"{what} the limit of {limit} bytes on one image file (the larger of 1 GiB and "
        "8 bytes per pixel of PIL.Image.MAX_IMAGE_PIXELS); if you trust the file, raise "
        "PIL.Image.MAX_IMAGE_PIXELS"
    )
