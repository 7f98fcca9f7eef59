"""Keras 3 applications (``"keras:ResNet50"``), run on Keras's torch backend.

On the torch backend a Keras model is a ``torch.nn.Module``, but its layers are not
torch submodules and calling them runs no torch hooks. :class:`KerasNetwork` wraps a
``keras.applications`` model so that skfeat reads it like any torch network: it runs
Keras's own functional graph and passes each layer's output through an
``nn.Identity`` named after the Keras layer (``"conv5_block3_out"``), where a hook
sees it exactly. Maps keep Keras's channels-last ``(H, W, C)`` layout; skfeat finds
it by tracing at several input sizes (symbolically: Keras computes the shapes on
torch's ``meta`` device, nothing runs) and pools over the right axes.

``"penultimate"`` is the input of the top classifier (the Dense ``"predictions"``;
the last 1x1 convolution of MobileNet and MobileNetV3, flattened), ``"logits"`` the
classifier's output before the softmax: the model is built with
``classifier_activation=None``, which keeps the ImageNet weights as they are.
Preprocessing is read from the application's own ``preprocess_input`` (modes
``"caffe"``, ``"tf"``, ``"torch"``, or none for the models that normalise inside) and
applied after a squash resize to the model's default input size, as Keras's
tutorials do.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from skfeat._backends._base import Backend, file_fingerprint, require_file
from skfeat._backends._download import unreachable
from skfeat._optional import import_optional
from skfeat._preprocess import DataConfig
from skfeat._validation import did_you_mean
from skfeat.exceptions import MissingDependencyError, UnknownModelError, WeightsUnavailableError

__all__ = [
    "KERAS_MODEL",
    "PRE_LOGITS",
    "KerasBackend",
    "import_keras",
    "is_keras_object",
    "keras_cache_dir",
    "keras_data_config",
    "keras_network",
    "list_keras_models",
]

# The module whose output is the classifier's input: "penultimate".
PRE_LOGITS = "skfeat_pre_logits"
# The attribute of KerasNetwork holding the Keras model (a torch submodule, so that
# .to(), .eval() and .parameters() reach its weights).
KERAS_MODEL = "keras_model"
_NAMED_WEIGHTS = ("DEFAULT", "imagenet")
_FILE_SUFFIXES = (".weights.h5", ".keras", ".h5")
_KERAS_HINT = (
    "Pass a local Keras weights file of the same application with its top, "
    "weights='/path/to/model.weights.h5' (saved with model.save_weights), a .keras "
    "file or Keras's own ImageNet .h5 file, or weights=None for random init."
)
# What Keras warns when it loads a weights file only in part.
_PARTIAL_LOAD = ("could not be loaded", "freshly-initialized", "retain their")
# Applications built for any input size: the size their ImageNet weights were made at
# (Keras's weight files are named "..._224_...").
_FLEXIBLE_INPUT_SIDES = {"MobileNetV3Large": 224, "MobileNetV3Small": 224}
# Applications Keras refuses to build on its torch backend ("not available with the
# torch backend at this time due to an outstanding bug"): not listed.
_NOT_ON_TORCH = frozenset({"NASNetLarge", "NASNetMobile"})
# Per process: each application's input shape, and the random-init network built to
# read it, until the trace that follows takes it (skfeat keeps the traced layers, and
# the network would hold memory for nothing).
_INPUT_SHAPES: dict[Any, tuple[Any, ...]] = {}
_SPARE: dict[Any, Any] = {}
_TRACING_LOCK = threading.Lock()
# Python's random is seeded while a model is built: one build at a time.
_BUILD_LOCK = threading.RLock()
_INIT_SEED = 0
# get_file is replaced while an application loads its weights: one at a time.
_DOWNLOAD_LOCK = threading.Lock()


def import_keras(purpose: str) -> ModuleType:
    """Import Keras on its torch backend, choosing that backend if Keras is not imported yet.

    Raises
    ------
    MissingDependencyError
        When Keras is not installed, or runs (or is set to run) on another backend.
    """
    if "keras" not in sys.modules and importlib.util.find_spec("keras") is not None:
        chosen = os.environ.get("KERAS_BACKEND", "")
        if chosen not in ("", "torch"):
            raise MissingDependencyError(
                f"{purpose} needs Keras on its torch backend, but KERAS_BACKEND is "
                f"{chosen!r}. Set KERAS_BACKEND=torch before Keras is first imported."
            )
        os.environ["KERAS_BACKEND"] = "torch"  # read once, when Keras is first imported
    keras = import_optional("keras", extra="keras", purpose=purpose)
    backend = keras.backend.backend()
    if backend != "torch":
        raise MissingDependencyError(
            f"{purpose} needs Keras on its torch backend, but Keras was imported with the "
            f"{backend!r} backend. Set KERAS_BACKEND=torch before Keras is first imported "
            "(export KERAS_BACKEND=torch, or os.environ['KERAS_BACKEND'] = 'torch' before "
            "import keras), or let skfeat import Keras first."
        )
    return keras


def list_keras_models() -> list[str]:
    """Names of ``keras.applications`` models, or an empty list without Keras on torch."""
    try:
        keras = import_keras("Listing Keras applications")
    except MissingDependencyError:
        return []
    return _application_names(keras)


def _application_names(keras: Any) -> list[str]:
    applications = keras.applications
    return sorted(
        name
        for name in dir(applications)
        if name[:1].isupper()
        and inspect.isfunction(getattr(applications, name))
        and name not in _NOT_ON_TORCH
    )


def is_keras_object(model: Any) -> bool:
    """Whether ``model`` is a Keras layer or model (checked without importing Keras)."""
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(model, keras.layers.Layer)


class KerasBackend(Backend):
    """A ``keras.applications`` model such as ``"keras:ResNet50"``, on Keras's torch backend.

    ``weights`` is ``"DEFAULT"`` or ``"imagenet"`` (Keras's ImageNet weights, downloaded
    into Keras's cache or found there), a Keras weights file of the same application
    with its top (``.weights.h5``, ``.keras``, or Keras's legacy ``.h5``), or None for
    random init (seeded: the same weights in every process).
    """

    source = "keras"
    penultimate_module = PRE_LOGITS

    def _keras(self) -> Any:
        return import_keras(f"model={self.label!r}")

    def check(self) -> None:
        """Raise unless Keras runs on torch here and knows the model and the weights."""
        keras = self._keras()
        names = _application_names(keras)
        if self.name in _NOT_ON_TORCH:
            raise UnknownModelError(
                f"keras.applications.{self.name} does not run on Keras's torch backend: "
                "Keras refuses to build it there."
            )
        if self.name not in names:
            hint = did_you_mean(self.name, names, show=lambda name: repr(f"keras:{name}"))
            raise UnknownModelError(
                f"keras.applications has no model {self.name!r}.{hint} See "
                "skfeat.list_models('keras')."
            )
        path = self._weights_file()
        if path is not None:
            require_file(path)
        elif self.weights is not None and self.weights not in _NAMED_WEIGHTS:
            raise UnknownModelError(
                f"weights={self.weights!r} is not valid for Keras applications: use "
                "'DEFAULT' or 'imagenet' (Keras's ImageNet weights), a path to a Keras "
                f"weights file ending in {', '.join(_FILE_SUFFIXES)}, or None for random init."
            )
        data_format = keras.config.image_data_format()
        if data_format != "channels_last":
            raise UnknownModelError(
                f"Keras's image_data_format is {data_format!r}; skfeat builds Keras "
                "applications channels_last, the layout their ImageNet weights were made "
                "for. Call keras.config.set_image_data_format('channels_last')."
            )

    def _weights_file(self) -> str | None:
        weights = self.weights
        if isinstance(weights, os.PathLike):
            return os.fspath(weights)
        if isinstance(weights, str) and (os.sep in weights or weights.endswith(_FILE_SUFFIXES)):
            return weights
        return None

    def weights_fingerprint(self) -> str:
        path = self._weights_file()
        if path is not None:
            return file_fingerprint(path)
        if self.weights in _NAMED_WEIGHTS:
            return "imagenet"
        return super().weights_fingerprint()

    def _application(self) -> Any:
        return getattr(self._keras().applications, self.name)

    def _build_keras(self, weights: Any) -> Any:
        """The Keras model on the CPU, with logits out; named and seeded as in a new process."""
        keras = self._keras()
        with _fresh_keras_state(keras), keras.device("cpu"):
            return self._application()(weights=weights, classifier_activation=None)

    def build(self) -> Any:
        return keras_network(self._build_keras(None))

    @property
    def trace_key(self) -> Any:
        return (self.label, self._application())

    def tracing_module(self, device: str, side: int | None = None) -> Any:
        # Shapes come from Keras's symbolic pass, which takes any input size and device.
        if side is not None:
            return None
        with _TRACING_LOCK:
            network = _SPARE.pop(self.trace_key, None)
        return network if network is not None else self._tracing_network()

    def _tracing_network(self) -> Any:
        network = keras_network(self._build_keras(None), symbolic=True)
        with _TRACING_LOCK:
            _INPUT_SHAPES[self.trace_key] = tuple(getattr(network, KERAS_MODEL).input_shape)
        return network

    def _input_shape(self) -> tuple[Any, ...]:
        with _TRACING_LOCK:
            shape = _INPUT_SHAPES.get(self.trace_key)
        if shape is None:
            # Built to read its input size; kept for the trace that follows in fit.
            network = self._tracing_network()
            with _TRACING_LOCK:
                _SPARE[self.trace_key] = network
            shape = _INPUT_SHAPES[self.trace_key]
        return shape

    def load(self, head: str | None = None) -> tuple[Any, bool]:
        path = self._weights_file()
        if self.weights is None:
            network = self.build()
        elif path is not None:
            network, _ = self.load_file(path, head)
        else:
            network = self.load_named()
        return network.eval(), True

    def load_file(self, path: str | os.PathLike[str], head: str | None) -> tuple[Any, bool]:
        path = os.fspath(path)
        require_file(path)
        model = self._build_keras(None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                model.load_weights(path)
                # Keras keeps the fresh weights of what it could not match, and only warns.
                partial = [w for w in caught if any(p in str(w.message) for p in _PARTIAL_LOAD)]
                if partial:
                    raise ValueError(str(partial[0].message))
            except Exception as err:
                raise WeightsUnavailableError(
                    f"Cannot load the Keras weights file {path!r} into keras.applications."
                    f"{self.name} ({type(err).__name__}: {' '.join(str(err).split())[:300]}). "
                    f"Pass weights saved from keras.applications.{self.name}() with its top "
                    "(include_top=True, 1000 classes), as .weights.h5, .keras or Keras's "
                    "ImageNet .h5."
                ) from err
        return keras_network(model), True

    def load_named(self) -> Any:
        with _DOWNLOAD_LOCK, _fail_fast_downloads(self.name):
            try:
                model = self._build_keras("imagenet")
            except WeightsUnavailableError:
                raise
            except Exception as err:
                raise WeightsUnavailableError(
                    f"Could not get the ImageNet weights of Keras application {self.name!r} "
                    f"({type(err).__name__}: {str(err)[:200]}). The machine may be offline, "
                    f"or Keras's cache {keras_cache_dir()!r} holds a damaged copy. "
                    f"{_KERAS_HINT}"
                ) from err
        return keras_network(model)

    def data_config(self) -> DataConfig:
        shape = self._input_shape()
        if shape[1] is None and self.name in _FLEXIBLE_INPUT_SIDES:
            side = _FLEXIBLE_INPUT_SIDES[self.name]
            shape = (shape[0], side, side, *shape[3:])
        module = sys.modules[self._application().__module__]
        return keras_data_config(module.preprocess_input, shape, f"keras:{self.name}")


@contextlib.contextmanager
def _fresh_keras_state(keras: Any) -> Iterator[None]:
    """Keras's layer-name counters and random seeds as in a new process, then restored.

    Auto-named layers (``"global_average_pooling2d"``) would otherwise get a suffix for
    every model built before in the process, and random init would depend on what
    was drawn before: Keras seeds each unseeded initializer from Python's ``random``,
    and keeps its name counters and global seed generator in its global state.
    """
    import random

    from keras.src.backend.common import global_state

    with _BUILD_LOCK:
        saved = {
            name: global_state.get_global_attribute(name)
            for name in ("object_name_uids", "global_seed_generator")
        }
        python_state = random.getstate()
        global_state.set_global_attribute("object_name_uids", None)
        global_state.set_global_attribute("global_seed_generator", keras.random.SeedGenerator(0))
        random.seed(_INIT_SEED)
        try:
            yield
        finally:
            random.setstate(python_state)
            for name, value in saved.items():
                global_state.set_global_attribute(name, value)


def _keras_home() -> str:
    """The folder of Keras's downloads, as ``get_file`` picks it."""
    from keras.src.backend import config

    base = os.path.expanduser(config.keras_home())
    if not os.access(base, os.W_OK):  # get_file's own fallback
        base = os.path.join("/tmp", ".keras")
    return base


def keras_cache_dir() -> str:
    """Where Keras keeps downloaded application weights."""
    return os.path.join(_keras_home(), "models")


@contextlib.contextmanager
def _fail_fast_downloads(name: str) -> Iterator[None]:
    """While it runs, a Keras download whose host does not answer fails at once.

    Keras's ``get_file`` waits on a dead network with no timeout. A file already in
    Keras's cache is used without any probe.
    """
    from keras.src.utils import file_utils

    real = file_utils.get_file
    signature = inspect.signature(real)

    def get_file(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        fname, origin = bound.arguments["fname"], bound.arguments["origin"]
        cache = bound.arguments.get("cache_dir")
        home = os.path.expanduser(cache) if cache else _keras_home()
        base = os.path.join(home, bound.arguments["cache_subdir"])
        target = os.path.join(base, fname or os.path.basename(urlparse(origin).path))
        if not os.path.exists(target):
            reason = unreachable(origin)
            if reason is not None:
                raise WeightsUnavailableError(
                    f"Could not download the ImageNet weights of Keras application {name!r}: "
                    f"the machine seems offline ({urlparse(origin).netloc} did not answer: "
                    f"{reason}), and they are not in Keras's cache {base!r}. {_KERAS_HINT}"
                )
        return real(*args, **kwargs)

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = real


def keras_data_config(preprocess_input: Any, input_shape: Any, origin: str) -> DataConfig:
    """The :class:`DataConfig` of a Keras ``preprocess_input``, for a squash resize.

    ``preprocess_input`` is read, not named: it is run on black, pure red, green and
    blue pixels, which gives its channel order, scale and offset per channel; the
    result is then checked on random pixels. Keras's modes come out as
    ``"caffe"``: BGR, mean (103.939, 116.779, 123.68) / 255, std 1 / 255;
    ``"tf"``: mean = std = 0.5; ``"torch"``: ImageNet mean and std; none (the model
    normalises inside): mean 0, std 1 / 255, pixels fed in 0-255.

    Raises
    ------
    UnknownModelError
        When the preprocessing is not a per-channel scale and offset, the input is not
        square, or the channel order is neither RGB nor BGR.
    """
    import numpy as np

    height, width = (int(v) if v is not None else None for v in tuple(input_shape)[1:3])
    if height is None or height != width:
        raise UnknownModelError(
            f"The default input of {origin} is {tuple(input_shape)!r}; skfeat feeds square "
            "images of a fixed size."
        )
    probe = np.zeros((1, 2, 2, 3), dtype=np.float32)
    probe[0, 0, 1], probe[0, 1, 0], probe[0, 1, 1] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    out = np.asarray(preprocess_input(probe.copy()), dtype=np.float64)[0].reshape(4, 3)
    offset, responses = out[0], out[1:] - out[0]  # responses[i, j]: input channel i -> out j
    order, slope = None, np.zeros(3)
    identity = np.eye(3, dtype=bool)
    for name, mask in (("RGB", identity), ("BGR", identity[::-1])):
        if np.allclose(responses[~mask], 0.0):
            # Row-major: output channels 0, 1, 2 for RGB; 2, 1, 0 for BGR.
            order, slope = name, responses[mask] if name == "RGB" else responses[mask][::-1]
            slope = slope / 255.0
    if order is None or np.any(slope <= 0):
        raise UnknownModelError(
            f"The preprocess_input of {origin} does not scale each channel of RGB or BGR "
            "pixels by a positive factor; skfeat cannot reproduce it."
        )
    std = [float(v) for v in 1.0 / (255.0 * slope)]
    mean = [float(v) for v in -offset * np.array(std)]
    config = DataConfig(
        resize_size=height,
        crop_size=height,
        interpolation="bilinear",
        mean=(mean[0] + 0.0, mean[1] + 0.0, mean[2] + 0.0),  # + 0.0: no -0.0 in fingerprints
        std=(std[0], std[1], std[2]),
        crop_mode="squash",
        channel_order=order,
    )
    _check_recipe(preprocess_input, config, origin)
    return config


def _check_recipe(preprocess_input: Any, config: DataConfig, origin: str) -> None:
    """Raise unless ``config`` gives what ``preprocess_input`` gives on random pixels."""
    import numpy as np

    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 5, 3)).astype(np.float32)
    expected = np.asarray(preprocess_input(pixels.copy()), dtype=np.float64)
    ordered = pixels[..., ::-1] if config.channel_order == "BGR" else pixels
    ours = (ordered / 255.0 - np.array(config.mean)) / np.array(config.std)
    scale = max(1.0, float(np.abs(expected).max()))
    if expected.shape != ours.shape or np.abs(ours - expected).max() > 1e-5 * scale:
        raise UnknownModelError(
            f"The preprocess_input of {origin} is not a per-channel scale and offset "
            "(checked on random pixels); skfeat cannot reproduce it."
        )


def keras_network(model: Any, symbolic: bool = False) -> Any:
    """``model`` (a Keras functional model) as a :class:`KerasNetwork`."""
    return _network_class()(model, symbolic)


@functools.cache
def _network_class() -> type:
    import torch
    from torch import nn

    class KerasNetwork(nn.Module):
        """A Keras functional model whose layers torch hooks can read, by Keras name.

        Takes ``(N, 3, H, W)`` images and runs the Keras graph on ``(N, H, W, 3)``,
        passing each layer's output through an ``nn.Identity`` of the layer's name,
        and the top classifier's input through :data:`PRE_LOGITS`. With ``symbolic``
        nothing is computed: Keras's ``compute_output_spec`` gives every shape, and
        empty ``meta`` tensors of those shapes go through the same modules (tracing).

        Its ``feature_info`` and ``output_fmt`` declare, in timm's format, the
        channels-last maps whose stride is a whole number, for models that can only
        be traced at their own input size (VGG's dense head).
        """

        def __init__(self, model: Any, symbolic: bool) -> None:
            super().__init__()
            self.add_module(KERAS_MODEL, model)
            self.symbolic = symbolic
            self.classifier = _classifier_name(model)
            for layer in model.layers:
                if type(layer).__name__ == "InputLayer":
                    continue
                if layer.name in (KERAS_MODEL, PRE_LOGITS) or hasattr(self, layer.name):
                    raise UnknownModelError(
                        f"The Keras layer name {layer.name!r} clashes with skfeat's own "
                        "module names; it cannot be read."
                    )
                self.add_module(layer.name, nn.Identity())
            self.add_module(PRE_LOGITS, nn.Identity())
            self.output_fmt = "NHWC"
            self.feature_info = _stage_declaration(model)

        def forward(self, images: Any) -> Any:
            pixels = images.permute(0, 2, 3, 1)
            model = getattr(self, KERAS_MODEL)
            if self.symbolic:
                import keras

                spec = keras.KerasTensor(tuple(pixels.shape), dtype="float32")
                out = model._run_through_graph([spec], operation_fn=self._traced)
                return torch.empty(tuple(out.shape), device="meta")
            import keras

            with keras.device(str(pixels.device)):
                return model._run_through_graph([pixels], operation_fn=self._tapped)

        def _tapped(self, operation: Any) -> Any:
            tap = self._modules.get(operation.name)

            def call(*args: Any, **kwargs: Any) -> Any:
                if operation.name == self.classifier:
                    embedding = _flat_vector(args[0])
                    if embedding is not None:
                        getattr(self, PRE_LOGITS)(embedding)
                out = operation(*args, **kwargs)
                if tap is not None and isinstance(out, torch.Tensor):
                    return tap(out)
                return out

            return call

        def _traced(self, operation: Any) -> Any:
            tap = self._modules.get(operation.name)

            def call(*args: Any, **kwargs: Any) -> Any:
                if operation.name == self.classifier:
                    shape = _flat_shape(tuple(args[0].shape))
                    if shape is not None:
                        getattr(self, PRE_LOGITS)(torch.empty(shape, device="meta"))
                out = operation.compute_output_spec(*args, **kwargs)
                if tap is not None and hasattr(out, "shape") and not isinstance(out, list):
                    tap(torch.empty(tuple(out.shape), device="meta"))
                return out

            return call

    return KerasNetwork


def _classifier_name(model: Any) -> str | None:
    """The top classifier: the last layer with weights, reading a vector or a 1x1 map."""
    for layer in reversed(model.layers):
        if layer.weights:
            shape = tuple(layer.input.shape) if hasattr(layer, "input") else ()
            return layer.name if _flat_shape(shape) is not None else None
    return None


def _flat_shape(shape: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """``(N, D)`` for an ``(N, D)`` or ``(N, 1, 1, D)`` shape; None for anything else."""
    if len(shape) == 2:
        return shape
    if len(shape) == 4 and shape[1] == shape[2] == 1:
        return (shape[0], shape[3])
    return None


def _flat_vector(tensor: Any) -> Any:
    shape = _flat_shape(tuple(tensor.shape))
    return None if shape is None else tensor.reshape(shape)


def _stage_declaration(model: Any) -> list[dict[str, Any]]:
    """timm-style ``feature_info``: each square channels-last map with a whole stride."""
    side = model.input_shape[1]
    stages = []
    for layer in model.layers:
        shape = tuple(getattr(getattr(layer, "output", None), "shape", ()) or ())
        if len(shape) != 4 or type(layer).__name__ == "InputLayer" or not side:
            continue
        height, width, channels = shape[1:]
        if height and height == width and side % height == 0:
            stages.append(
                {"module": layer.name, "num_chs": int(channels), "reduction": side // height}
            )
    return stages
