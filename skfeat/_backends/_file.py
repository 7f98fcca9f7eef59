"""Model files: ONNX, TensorFlow SavedModel, TFLite and OpenVINO IR, run by OpenVINO.

A model file is not a torch module: its graph is read and run by OpenVINO
(:mod:`skfeat._runtime._file_graph`), and its layers are the graph's named tensors.
A file does not say how its images were prepared, so the recipe is the user's
(``preprocessing=``). The backend holds the path and the recipe only, so an estimator
reading a file pickles without the file's contents; the file's fingerprint keys the
per-process registries and the activation cache.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from skfeat._backends._base import file_fingerprint
from skfeat._preprocess import DataConfig
from skfeat.exceptions import InvalidParameterError, UnknownModelError

__all__ = ["FILE_FORMATS", "GraphFileBackend", "model_file_format", "runtime_for"]

# File suffix -> format; a SavedModel is a folder holding saved_model.pb.
FILE_FORMATS = {".onnx": "onnx", ".tflite": "tflite", ".xml": "openvino"}
_SAVED_MODEL = "saved_model.pb"
_FORMAT_NAMES = {
    "onnx": "ONNX",
    "tflite": "TFLite",
    "openvino": "OpenVINO IR",
    "savedmodel": "TensorFlow SavedModel",
}


def model_file_format(model: Any) -> str | None:
    """The format of the model file ``model`` names, or None when it names no file.

    ``"onnx"``, ``"tflite"``, ``"openvino"`` (an IR ``.xml``) by suffix, and
    ``"savedmodel"`` for a folder holding ``saved_model.pb``.
    """
    if not isinstance(model, (str, os.PathLike)):
        return None
    path = os.fspath(model)
    suffix = Path(path).suffix.lower()
    if suffix in FILE_FORMATS:
        return FILE_FORMATS[suffix]
    if os.path.isfile(os.path.join(path, _SAVED_MODEL)):
        return "savedmodel"
    looks_like_path = isinstance(model, os.PathLike) or os.sep in path
    # A bare name ("resnet50") is a model name even where a folder of that name exists.
    return "folder" if looks_like_path and os.path.isdir(path) else None


def _as_data_config(preprocessing: Any, path: str) -> DataConfig:
    from skfeat._backends._recipe import resolve_preprocessing

    def no_recipe_of_its_own() -> DataConfig:
        raise InvalidParameterError(
            f"model={path!r} is a model file, which does not say how its images were "
            "prepared. Pass preprocessing={'resize_size': 256, 'crop_size': 224, 'mean': "
            "(0.485, 0.456, 0.406), 'std': (0.229, 0.224, 0.225)} with the values the model "
            "was trained with (or a timm data config with input_size and crop_pct)."
        )

    if preprocessing is None:
        return no_recipe_of_its_own()
    sized = isinstance(preprocessing, DataConfig) or (
        isinstance(preprocessing, Mapping)
        and ({"resize_size", "crop_size"} <= set(preprocessing) or "input_size" in preprocessing)
    )
    # Keys left out take DataConfig's defaults (bilinear, ImageNet mean and std, RGB);
    # the sizes have no default for a file.
    return resolve_preprocessing(
        preprocessing,
        (lambda: DataConfig(256, 224)) if sized else no_recipe_of_its_own,
        "PretrainedCNNFeaturizer",
    )


class GraphFileBackend:
    """One model file, read and run by OpenVINO.

    Parameters
    ----------
    path : str or path
        The ``.onnx``, ``.tflite`` or OpenVINO ``.xml`` file, or the SavedModel folder.
    file_format : {"onnx", "tflite", "openvino", "savedmodel"}
        What the file holds.
    data_config : DataConfig
        The user's preprocessing recipe.
    """

    source = "file"
    weights = "DEFAULT"  # a model file carries its own weights

    def __init__(self, path: str | os.PathLike[str], file_format: str, data_config: DataConfig):
        self.name = os.fspath(path)
        self.file_format = file_format
        self.config = data_config

    @classmethod
    def resolve(
        cls, model: Any, file_format: str, weights: Any, preprocessing: Any
    ) -> GraphFileBackend:
        """Check ``model`` names a readable file and build its backend.

        Raises
        ------
        UnknownModelError
            For a missing file, a folder that is not a SavedModel, or ``weights``
            other than ``"DEFAULT"``.
        InvalidParameterError
            Without ``preprocessing``, or with an invalid one.
        """
        path = os.fspath(model)
        if file_format == "folder":
            raise UnknownModelError(
                f"model={path!r} is a folder without {_SAVED_MODEL}, so not a TensorFlow "
                "SavedModel. Pass a SavedModel folder, or a .onnx, .tflite or OpenVINO .xml "
                "file."
            )
        if file_format != "savedmodel" and not os.path.isfile(path):
            raise UnknownModelError(
                f"The model file {path!r} does not exist. Check the path passed as model=."
            )
        if weights != "DEFAULT":
            raise UnknownModelError(
                f"weights={weights!r} is not valid with a model file: the file carries its "
                "weights. Leave weights='DEFAULT'."
            )
        return cls(path, file_format, _as_data_config(preprocessing, path))

    @property
    def label(self) -> str:
        """The path, as the user gave it: ``skfeat.list_layers(label)`` lists it."""
        return self.name

    @property
    def format_name(self) -> str:
        return _FORMAT_NAMES[self.file_format]

    def weights_fingerprint(self) -> str:
        """Changes whenever the file (or a SavedModel's graph or variables) does."""
        files = self.files()
        if len(files) == 1:
            return file_fingerprint(files[0])
        digest = hashlib.sha256()
        for path in files:
            digest.update(f"{path.name}:{file_fingerprint(path)}".encode())
        return f"files-{digest.hexdigest()[:16]}"

    def files(self) -> list[Path]:
        """The files the model is made of: a SavedModel's graph and variables, an IR's
        ``.xml`` and ``.bin``, or the one file."""
        path = Path(self.name)
        if self.file_format == "savedmodel":
            variables = sorted((path / "variables").glob("*"))
            return [path / _SAVED_MODEL, *[v for v in variables if v.is_file()]]
        if self.file_format == "openvino" and path.with_suffix(".bin").is_file():
            return [path, path.with_suffix(".bin")]
        return [path]

    @property
    def key(self) -> str:
        """Identity of the file's contents, for per-process registries and the cache."""
        return f"file:{self.label}|{self.weights_fingerprint()}"

    @property
    def trace_key(self) -> Any:
        return ("file", self.label, self.weights_fingerprint())

    def data_config(self) -> DataConfig:
        """The user's preprocessing recipe."""
        return self.config

    def read_architecture(self, crop_size: int) -> Any:
        """The graph's named tensors at ``crop_size``, with shapes and layouts."""
        from skfeat._runtime._file_graph import read_architecture

        return read_architecture(self, crop_size)


def runtime_for(backend: Any, runtime: str) -> str:
    """The runtime a backend runs with: a model file runs in OpenVINO, or refuses.

    Raises
    ------
    InvalidParameterError
        For ``runtime="torch"`` with a model file.
    """
    if not isinstance(backend, GraphFileBackend):
        return runtime
    if runtime == "torch":
        raise InvalidParameterError(
            f"runtime='torch' cannot run the {backend.format_name} file {backend.label!r}: "
            "model files run in OpenVINO. Use runtime='auto' or 'openvino' (needs "
            "skfeat[openvino])."
        )
    return "openvino"
