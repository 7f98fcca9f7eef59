"""Converted OpenVINO graphs on disk, so that a process loads one instead of converting it.

Converting a backbone takes seconds; every process (each loky or Dask worker, each CLI
run) would pay it again. A converted graph (``openvino.save_model``'s ``.xml`` and
``.bin``) is kept in a folder named by a hash of all it depends on: the backbone and
its weights' fingerprint, the preprocessing, the layers it outputs, and the versions
of skfeat, torch, torchvision, timm and OpenVINO. A manifest beside the files holds
their SHA-256; an entry whose files do not match it, or that OpenVINO cannot read, is
removed, and the graph converted anew. Entries are written to a temporary folder and
renamed into place, so a reader never sees half of one.

The folder is ``$SKFEAT_CACHE_DIR/openvino``, else ``$XDG_CACHE_HOME/skfeat/openvino``,
else ``~/.cache/skfeat/openvino``; ``SKFEAT_GRAPH_CACHE=0`` turns it off. Like the
activation cache, the folder is trusted input: checksums catch damage, not forgery,
so only its owner should be able to write it. What is loaded is still checked
against PyTorch on the check images before use (:mod:`skfeat._runtime._openvino`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["CACHE_DIR_ENV", "DISABLE_ENV", "entry_for", "location", "read", "remove", "write"]

CACHE_DIR_ENV = "SKFEAT_CACHE_DIR"
DISABLE_ENV = "SKFEAT_GRAPH_CACHE"
_FILES = ("graph.xml", "graph.bin")
_MANIFEST = "manifest.json"
_VERSIONED = ("skfeat", "torch", "torchvision", "timm", "openvino")


def location() -> Path | None:
    """The folder of converted graphs, or None when turned off."""
    if os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    root = os.environ.get(CACHE_DIR_ENV)
    if root:
        return Path(root).expanduser() / "openvino"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skfeat" / "openvino"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "absent"


def entry_for(plan: Any, layers: Sequence[Any]) -> Path | None:
    """The folder of the graph of ``plan``'s backbone reading ``layers``, or None."""
    root = location()
    if root is None:
        return None
    identity = {
        "backbone": plan.backend.key,
        "preprocessing": plan.data_config.fingerprint(),
        "layers": [(layer.name, list(layer.shape)) for layer in layers],
        "versions": {package: _version(package) for package in _VERSIONED},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return root / digest[:32]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read(core: Any, entry: Path) -> Any:
    """The stored ``openvino.Model`` of ``entry``; None when absent or damaged (then removed)."""
    manifest = entry / _MANIFEST
    if not manifest.exists():
        return None
    try:
        sums = json.loads(manifest.read_text())["sha256"]
        if any(_sha256(entry / name) != sums[name] for name in _FILES):
            raise ValueError("checksum mismatch")
        return core.read_model(str(entry / _FILES[0]), str(entry / _FILES[1]))
    except Exception:  # damaged: rebuilt, never trusted
        remove(entry)
        return None


def write(ov: ModuleType, model: Any, entry: Path) -> None:
    """Store ``model`` as ``entry``, atomically; a disk that refuses leaves no entry."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    except OSError:
        return  # an unwritable cache folder costs a conversion per process, nothing else
    try:
        ov.save_model(model, str(staging / _FILES[0]), compress_to_fp16=False)
        sums = {name: _sha256(staging / name) for name in _FILES}
        (staging / _MANIFEST).write_text(json.dumps({"sha256": sums}))
        os.replace(staging, entry)
    except OSError:  # full disk, or another process stored the same entry first
        shutil.rmtree(staging, ignore_errors=True)


def remove(entry: Path) -> None:
    """Remove ``entry`` (moved aside first, so that no reader sees it half removed)."""
    aside = entry.with_name(f".{entry.name}-removed-{os.getpid()}")
    try:
        os.replace(entry, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)
