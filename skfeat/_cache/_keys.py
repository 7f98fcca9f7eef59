"""Cache keys: what an image is (its content) and what computed its features (a namespace).

An entry is found by two keys. The namespace names the computation: the backbone and
its weights, the preprocessing, and the compute signature (precision, GeM exponent,
entry format). The image key names the content: encoded bytes for files and bytes (one
key for the same file under two paths), dtype, shape and pixels for arrays, mode,
size, orientation, palette and pixels for PIL images.

A file is read with :func:`skfeat._inputs.read_file` (regular files only, bounded), and
its digest is remembered for the process by inode, size and times, as make and git do,
once those times are settled (see :func:`_file_key`).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from skfeat._inputs import read_file
from skfeat._pooling import GEM_P

__all__ = [
    "CACHE_FORMAT",
    "bytes_key",
    "compute_signature",
    "content_key",
    "default_cache_directory",
    "namespace_key",
]

CACHE_FORMAT = 2
_FILE_DIGESTS_MAX = 100_000
# Two writes within one tick of a file system's clock leave the same times: up to 2 s
# (FAT), a few ms (ext4). A digest is remembered only for a file unchanged that long.
_SETTLED_NS = 2 * 10**9


def compute_signature(precision: str = "fp32", **settings: Any) -> str:
    """What, beyond model and preprocessing, decides the numbers: part of every key.

    Anything that changes the computed values belongs here, so that changing it
    misses: the resolved run settings that decide them
    (:meth:`~skfeat._runtime.RunSettings.signature`: the compute precision, and the
    runtime and JPEG decoder when not the defaults), the GeM exponent and the entry
    format. The others follow in their order, after the parts every key has had.
    """
    signature = f"precision={precision};gem_p={GEM_P:g};format={CACHE_FORMAT}"
    return signature + "".join(f";{name}={value}" for name, value in settings.items())


def namespace_key(model_key: str, data_fingerprint: str, signature: str) -> str:
    """The folder of one (model and weights, preprocessing, compute) combination."""
    text = f"{model_key}\n{data_fingerprint}\n{signature}".encode()
    return hashlib.blake2b(text, digest_size=10).hexdigest()


def default_cache_directory() -> Path:
    """The per-user cache folder used by ``cache=True`` (platform conventions)."""
    import platformdirs

    return platformdirs.user_cache_path("skfeat", appauthor=False) / "activations"


_FILE_DIGESTS: OrderedDict[tuple[Any, ...], str] = OrderedDict()
_FILE_DIGESTS_LOCK = threading.Lock()


def content_key(item: Any) -> str | None:
    """A hash of what the image is, not where it is; None when it cannot be read.

    An item that cannot be hashed is computed (and fails there with the usual
    message) but never stored.
    """
    try:
        if isinstance(item, (str, os.PathLike)):
            return _file_key(os.fspath(item))
        if isinstance(item, (bytes, bytearray, memoryview)):
            return bytes_key(bytes(item))
        if isinstance(item, np.ndarray):
            header = f"{item.dtype.str}{item.shape}".encode()
            return _digest(b"array", header, np.ascontiguousarray(item).tobytes())
        from PIL import Image

        if isinstance(item, Image.Image):
            return _pil_key(item)
    except (OSError, ValueError, TypeError, SyntaxError):
        return None
    return None


def bytes_key(data: bytes) -> str:
    """The key of encoded image bytes: a file and its bytes share it."""
    return _digest(b"encoded", data)


def _digest(*parts: bytes) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def _now_ns() -> int:
    return time.time_ns()


def _times(info: os.stat_result) -> tuple[int, ...]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _file_key(path: str) -> str:
    """The key of a file's bytes, read through :func:`read_file`.

    Hashing is skipped only for a file this process already hashed and that has not
    changed since (same inode, size and times). A digest is remembered only when the
    file's times did not change while it was read and are older than the file
    system's clock can blur (``_SETTLED_NS``): a file written twice within one tick
    keeps its times, so a younger one is hashed at every look-up.
    """
    before = os.stat(path)
    identity = (os.path.realpath(path), *_times(before))
    with _FILE_DIGESTS_LOCK:
        known = _FILE_DIGESTS.get(identity)
    if known is not None:
        return known
    now = _now_ns()
    key = bytes_key(read_file(path, before))
    settled = now - max(before.st_mtime_ns, before.st_ctime_ns) > _SETTLED_NS
    if settled and _times(os.stat(path)) == identity[1:]:
        with _FILE_DIGESTS_LOCK:
            _FILE_DIGESTS[identity] = key
            if len(_FILE_DIGESTS) > _FILE_DIGESTS_MAX:
                _FILE_DIGESTS.popitem(last=False)
    return key


def _pil_key(image: Any) -> str:
    orientation = image.getexif().get(0x0112, 1)  # decoding applies it
    palette = image.getpalette() if image.mode in ("P", "PA") else None
    meta = repr((image.mode, image.size, orientation, palette, image.info.get("transparency")))
    return _digest(b"pil", meta.encode(), image.tobytes())
