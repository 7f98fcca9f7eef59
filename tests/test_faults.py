"""Faults: files that change while read, special files, damaged cache entries.

Every check that meets a FIFO or a device runs in a subprocess with a timeout, so a
reader that blocks or spins fails the test instead of hanging the suite.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import skfeat._cache._cached as cached
from skfeat import ActivationCache
from skfeat._cache._entry import ENTRY_SUFFIX
from skfeat._cache._keys import content_key
from skfeat.exceptions import CacheWarning, ImageDecodeError

from conftest import make_featurizer

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX special files")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def _run_isolated(script: str, *args: str, timeout: float) -> dict:
    """Run ``script`` in a fresh interpreter; a hang past ``timeout`` fails the test."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "OMP_NUM_THREADS": "1",
    }
    try:
        done = subprocess.run(
            [sys.executable, "-c", script, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout} s: a read blocked or did not end")
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.splitlines()[-1])


# -- a file replaced between look-up and decode --------------------------------------------


@pytest.fixture
def photos(tmp_path, random_images):
    """An old and a new content for one path, their features, and two other files."""
    old, new = _png(random_images[0]), _png(random_images[1])
    others = []
    for index in (2, 3):
        others.append(tmp_path / f"other{index}.png")
        others[-1].write_bytes(_png(random_images[index]))
    return old, new, others


def _features(model, *items):
    return make_featurizer(model).fit_transform(list(items))


def _assert_no_entry_is_mis_keyed(featurizer, old, new, want_old, want_new, tmp_path):
    """Whatever bytes a file now holds, the cache serves the features of those bytes."""
    copy = tmp_path / "a-copy-of-the-old-bytes.png"
    copy.write_bytes(old)
    np.testing.assert_array_equal(featurizer.transform([copy])[0], want_old)
    np.testing.assert_array_equal(featurizer.transform([old])[0], want_old)
    np.testing.assert_array_equal(featurizer.transform([new])[0], want_new)


@pytest.mark.parametrize("on_disk", [False, True])
def test_file_replaced_after_its_look_up_is_keyed_by_the_bytes_decoded(
    tiny_model, photos, tmp_path, monkeypatch, on_disk
):
    old, new, others = photos
    want_old, want_new = _features(tiny_model, old, new)
    path = tmp_path / "photo.png"
    path.write_bytes(old)
    twin = tmp_path / "twin.png"  # the old bytes under another path: a duplicate of path
    twin.write_bytes(old)
    cache = ActivationCache(tmp_path / "store" if on_disk else None)
    featurizer = make_featurizer(tiny_model, cache=cache).fit([old])
    looked_up = cached.content_key

    def look_up_then_replace(item):
        key = looked_up(item)
        if os.fspath(item) == os.fspath(path):
            path.write_bytes(new)  # replaced after its key was computed
        return key

    monkeypatch.setattr(cached, "content_key", look_up_then_replace)
    rows = featurizer.transform([path, twin, *others])
    monkeypatch.undo()
    np.testing.assert_array_equal(rows[0], want_new)  # what the file held when decoded
    np.testing.assert_array_equal(rows[1], want_old)  # the twin still holds the old bytes
    np.testing.assert_array_equal(rows[2:], _features(tiny_model, *others))
    _assert_no_entry_is_mis_keyed(featurizer, old, new, want_old, want_new, tmp_path)


def test_file_replaced_just_before_decoding_is_keyed_by_the_bytes_decoded(
    tiny_model, photos, tmp_path, monkeypatch
):
    import skfeat._runtime._engine as engine

    old, new, others = photos
    want_old, want_new = _features(tiny_model, old, new)
    path = tmp_path / "photo.png"
    path.write_bytes(old)
    featurizer = make_featurizer(tiny_model, cache=ActivationCache(tmp_path / "store")).fit([old])
    decode = engine.decode
    decoded = {}

    def replace_then_decode(item, *args, **kwargs):
        if isinstance(item, (str, os.PathLike)) and os.fspath(item) == os.fspath(path):
            path.write_bytes(new)
            # Read before this point, the old bytes are decoded; read after, the new ones.
            data = kwargs.get("data")
            decoded["bytes"] = path.read_bytes() if data is None else bytes(data)
        return decode(item, *args, **kwargs)

    monkeypatch.setattr(engine, "decode", replace_then_decode)
    rows = featurizer.transform([path, *others])
    monkeypatch.undo()
    np.testing.assert_array_equal(rows[0], want_old if decoded["bytes"] == old else want_new)
    _assert_no_entry_is_mis_keyed(featurizer, old, new, want_old, want_new, tmp_path)


def test_file_digest_memo_holds_only_settled_files(tmp_path, random_images, monkeypatch):
    """Two writes within one tick of the file system's clock leave the same times, so a
    file changed in the last seconds is hashed at every look-up, a settled one once."""
    import skfeat._cache._keys as keys

    path = tmp_path / "fresh.png"
    path.write_bytes(_png(random_images[0]))
    key = content_key(path)
    with monkeypatch.context() as patched:
        patched.setattr(keys, "read_file", _no_read)
        with pytest.raises(AssertionError, match="read again"):
            content_key(path)  # just written: not memoised
    later = keys._now_ns() + 10 * 10**9
    monkeypatch.setattr(keys, "_now_ns", lambda: later)
    assert content_key(path) == key
    monkeypatch.setattr(keys, "read_file", _no_read)
    assert content_key(path) == key  # settled: memoised by inode, size and times


def _no_read(*_args, **_kwargs):
    raise AssertionError("the file was read again")


# -- special files: refused from stat, each with its own cause -----------------------------

_SPECIAL_FILES = r"""
import json, os, resource, socket, stat, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway read fails fast
from skfeat import check_images
from skfeat._cache._keys import content_key
from skfeat._inputs import decode
from skfeat.exceptions import ImageDecodeError

folder = sys.argv[1]
paths = {
    "fifo": os.path.join(folder, "pipe.png"),
    "dev_zero": "/dev/zero",
    "dev_urandom": "/dev/urandom",
    "dev_null": "/dev/null",
    "link_to_dev_zero": os.path.join(folder, "zero.png"),
    "socket": os.path.join(folder, "socket.png"),
}
os.mkfifo(paths["fifo"])
os.symlink("/dev/zero", paths["link_to_dev_zero"])
server = socket.socket(socket.AF_UNIX)
server.bind(paths["socket"])
blocks = sorted(p for p in os.listdir("/dev") if stat.S_ISBLK(os.stat("/dev/" + p).st_mode))
if blocks:
    paths["block_device"] = "/dev/" + blocks[0]
report = {}
for name, path in paths.items():
    try:
        decode(path, 3)
        cause = None
    except ImageDecodeError as error:
        cause = str(error)
    row = check_images([path], n_jobs=1, as_frame=False)[0]
    report[name] = {"decode": cause, "check": row["error"], "key": content_key(path)}
print(json.dumps(report))
"""

_CAUSES = {
    "fifo": r"the path is a FIFO \(named pipe\), not a regular file",
    "dev_zero": r"the path is a character device, not a regular file",
    "dev_urandom": r"the path is a character device, not a regular file",
    "dev_null": r"the path is a character device, not a regular file",
    "link_to_dev_zero": r"the path is a character device, not a regular file",
    "socket": r"the path is a socket, not a regular file",
    "block_device": r"the path is a block device, not a regular file",
}


@pytest.fixture(scope="module")
def special_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("special")
    return _run_isolated(_SPECIAL_FILES, str(folder), timeout=60)


@pytest.mark.parametrize("kind", sorted(_CAUSES))
def test_special_file_is_refused_with_its_own_cause(special_files, kind):
    if kind not in special_files:
        pytest.skip(f"no {kind} on this machine")
    report = special_files[kind]
    assert re.match(rf"^Could not read image 3 \('.*'\): {_CAUSES[kind]}", report["decode"])
    assert re.match(rf"^{_CAUSES[kind]}", report["check"])
    assert "empty" not in report["decode"]
    assert report["key"] is None  # no key: computed (and refused) by the engine, never stored


_CACHED_TRANSFORM = r"""
import json, os, sys, warnings
import numpy as np
from PIL import Image
from conftest import make_tiny_backbone
from skfeat import ActivationCache, PretrainedCNNFeaturizer

folder = sys.argv[1]
good = os.path.join(folder, "good.png")
pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
Image.fromarray(pixels).save(good)
fifo, link = os.path.join(folder, "pipe.png"), os.path.join(folder, "zero.png")
os.mkfifo(fifo)
os.symlink("/dev/zero", link)
items = [good, fifo, "/dev/zero", "/dev/urandom", link, good]
expected = PretrainedCNNFeaturizer(make_tiny_backbone(), n_jobs=1).fit_transform([good])[0]
report = {}
for name in ("memory", "disk"):
    cache = ActivationCache(os.path.join(folder, "store") if name == "disk" else None)
    featurizer = PretrainedCNNFeaturizer(
        make_tiny_backbone(), cache=cache, on_error="nan", n_jobs=2
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = featurizer.fit_transform(items)
    report[name] = {
        "nan_rows": np.isnan(features).all(axis=1).tolist(),
        "good_rows": [bool(np.array_equal(features[i], expected)) for i in (0, 5)],
        "causes": [e.cause for w in caught for e in getattr(w.message, "errors", ())],
        "entries": cache.stats()["entries"],
    }
print(json.dumps(report))
"""


def test_transform_with_a_cache_refuses_special_files_without_reading(tmp_path):
    report = _run_isolated(_CACHED_TRANSFORM, str(tmp_path), timeout=240)
    fifo, device = _CAUSES["fifo"], _CAUSES["dev_zero"]
    for name in ("memory", "disk"):
        run = report[name]
        assert run["nan_rows"] == [False, True, True, True, True, False]
        assert run["good_rows"] == [True, True]
        assert [
            re.match(f"^{c}", cause) is not None
            for cause, c in zip(run["causes"], [fifo, device, device, device], strict=True)
        ] == [True] * 4
        assert run["entries"] == 1


_DAMAGED_ENTRIES = r"""
import json, os, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # a runaway read fails fast
import numpy as np
from skfeat import ActivationCache

folder = sys.argv[1]
cache = ActivationCache(folder)
namespace = "0" * 20
keys = ["ab" + "1" * 30, "ab" + "2" * 30, "ab" + "3" * 30]
entry = {"stage1|avg": np.ones(4, dtype=np.float32)}
cache._put_many(namespace, {key: entry for key in keys})
zero, fifo = (os.path.join(folder, namespace, key[:2], key + '.skfc') for key in keys[:2])
os.remove(zero)
os.symlink("/dev/zero", zero)
os.remove(fifo)
os.mkfifo(fifo)
cache._get_many(namespace, keys)
print(json.dumps({
    "corrupt": cache.stats()["corrupt"],
    "removed": [not os.path.lexists(path) for path in (zero, fifo)],
    "entries": cache.stats()["entries"],
}))
"""


def test_entry_replaced_by_a_device_or_a_fifo_is_damage_not_a_hang(tmp_path):
    report = _run_isolated(_DAMAGED_ENTRIES, str(tmp_path / "store"), timeout=60)
    assert report == {"corrupt": 2, "removed": [True, True], "entries": 1}


def test_a_fifo_swapped_in_between_stat_and_open_is_refused(tmp_path, monkeypatch):
    """The type is checked again on the open descriptor, opened without blocking."""
    import skfeat._inputs._reading as reading
    from skfeat._inputs import decode

    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG not really")
    real_open = os.open

    def swap_then_open(name, flags, *args, **kwargs):
        if os.fspath(name) == os.fspath(path):
            path.unlink()
            os.mkfifo(path)
        return real_open(name, flags, *args, **kwargs)

    monkeypatch.setattr(reading.os, "open", swap_then_open)
    outcome = {}

    def read():
        try:
            decode(path, 0)
        except ImageDecodeError as error:
            outcome["cause"] = error.cause

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=20)
    if reader.is_alive():  # blocked in open() or read(): release it, then fail
        handle = real_open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(handle)
        reader.join(timeout=5)
        pytest.fail("the read of a FIFO blocked")
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert re.match(rf"^{_CAUSES['fifo']}", outcome["cause"])


# -- entries tied to their key -------------------------------------------------------------

_PREFIX = struct.Struct("<5sI")  # the magic, then the header length
_DIGEST = 16


def _forge(path: Path, change) -> None:
    """Rewrite an entry's header and payload with ``change``, under a valid checksum."""
    data = path.read_bytes()
    magic, length = _PREFIX.unpack_from(data)
    header = json.loads(data[_PREFIX.size : _PREFIX.size + length])
    payload = np.frombuffer(data[_PREFIX.size + length : -_DIGEST], dtype="<f4").copy()
    header, payload = change(header, payload)
    text = json.dumps(header).encode()
    body = text + payload.astype("<f4").tobytes()
    digest = hashlib.blake2b(body, digest_size=_DIGEST).digest()
    path.write_bytes(_PREFIX.pack(magic, len(text)) + body + digest)


def _entry_of(directory: Path, item) -> Path:
    key = content_key(item)
    (found,) = directory.rglob(f"{key}{ENTRY_SUFFIX}")
    return found


def _as_nan(header, payload):
    return header, np.full_like(payload, np.nan)


def _one_short(header, payload):
    """The vector the featurizer reads loses its last value."""
    index = header["names"].index("stage2|gem")
    end = sum(header["sizes"][: index + 1])
    header["sizes"][index] -= 1
    return header, np.delete(payload, end - 1)


def _damaged_call(featurizer, images, match):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        features = featurizer.transform(images)
    damage = [w for w in caught if issubclass(w.category, CacheWarning)]
    assert len(damage) == 1, [str(w.message) for w in caught]
    assert re.search(match, str(damage[0].message)), str(damage[0].message)
    return features


@pytest.fixture
def stored(tiny_model, random_images, tmp_path):
    directory = tmp_path / "store"
    cache = ActivationCache(directory)
    featurizer = make_featurizer(tiny_model, cache=cache, layer="stage2", pooling="gem")
    expected = featurizer.fit_transform(random_images)
    return featurizer, cache, directory, expected


def test_entry_copied_over_another_is_damage(stored, random_images):
    featurizer, cache, directory, expected = stored
    shutil.copyfile(_entry_of(directory, random_images[0]), _entry_of(directory, random_images[1]))
    features = _damaged_call(featurizer, random_images, r"^1 damaged entry .* recomputed")
    np.testing.assert_array_equal(features, expected)
    assert cache.stats()["corrupt"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(featurizer.transform(random_images), expected)  # rewritten


def test_entry_of_another_namespace_is_damage(stored, tiny_model, random_images):
    featurizer, cache, directory, expected = stored
    mine = _entry_of(directory, random_images[1])
    other_model = type(tiny_model)()  # other weights, so another namespace
    make_featurizer(other_model, cache=cache, layer="stage2", pooling="gem").fit_transform(
        random_images[:2]
    )
    (theirs,) = (p for p in directory.rglob(mine.name) if p != mine)
    shutil.copyfile(theirs, mine)
    features = _damaged_call(featurizer, random_images, r"^1 damaged entry")
    np.testing.assert_array_equal(features, expected)


@pytest.mark.parametrize("on_error", ["raise", "nan"])
@pytest.mark.parametrize("damage", [_as_nan, _one_short], ids=["nan", "wrong_length"])
def test_entry_with_a_valid_checksum_but_bad_values_is_damage(
    stored, random_images, on_error, damage
):
    featurizer, cache, directory, expected = stored
    featurizer.set_params(on_error=on_error)
    _forge(_entry_of(directory, random_images[2]), damage)
    features = _damaged_call(featurizer, random_images, r"^1 damaged entry")
    np.testing.assert_array_equal(features, expected)
    assert cache.stats()["corrupt"] == 1


def test_one_warning_per_call_counts_every_damaged_entry(stored, random_images):
    featurizer, cache, directory, expected = stored
    _forge(_entry_of(directory, random_images[0]), _as_nan)
    _forge(_entry_of(directory, random_images[1]), _one_short)
    shutil.copyfile(_entry_of(directory, random_images[3]), _entry_of(directory, random_images[2]))
    _entry_of(directory, random_images[4]).write_bytes(b"SKFC")
    features = _damaged_call(featurizer, random_images, r"^4 damaged entries .* recomputed")
    np.testing.assert_array_equal(features, expected)
    assert cache.stats()["corrupt"] == 4


# -- what held: threads sharing one featurizer and one cache -------------------------------


@pytest.mark.parametrize("on_disk", [False, True])
def test_threads_sharing_one_featurizer_and_one_cache_get_the_right_rows(
    tiny_model, random_images, tmp_path, on_disk
):
    paths = []
    for index, pixels in enumerate(random_images):
        paths.append(tmp_path / f"photo{index}.png")
        paths[-1].write_bytes(_png(pixels))
    expected = _features(tiny_model, *paths)
    cache = ActivationCache(tmp_path / "store" if on_disk else None)
    featurizer = make_featurizer(tiny_model, cache=cache).fit(paths[:1])
    orders = [np.random.default_rng(seed).permutation(len(paths)) for seed in range(4)]
    results, errors = {}, []

    def run(seed):
        try:
            for _ in range(2):  # the first pass races to compute, the second reads entries
                results[seed] = featurizer.transform([paths[i] for i in orders[seed]])
        except Exception as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(seed,), daemon=True) for seed in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no damage, no failed write
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread did not finish"
    assert errors == []
    for seed, order in enumerate(orders):
        np.testing.assert_array_equal(results[seed], expected[order])
    assert cache.stats()["corrupt"] == 0 and cache.stats()["entries"] == len(paths)
