"""skfeat: pretrained CNNs as scikit-learn transformers.

Images in (paths, bytes, PIL images, arrays), feature matrix out, inside ``transform``,
so a CNN chains with PCA, scalers and classifiers in a ``Pipeline`` and is tuned with
``GridSearchCV``. ``import skfeat`` is cheap: torch loads on first use.
"""

import importlib as _importlib
import typing as _typing

__version__ = "0.1.0"  # the one version source: pyproject.toml reads it

if _typing.TYPE_CHECKING:  # what the lazy names are, for type checkers; never run
    from skfeat import exceptions
    from skfeat._backends import list_models
    from skfeat._cache import ActivationCache
    from skfeat._check import check_images
    from skfeat._datasets import load_flowers_sample
    from skfeat._extract import list_layers
    from skfeat._featurizer import PretrainedCNNFeaturizer
    from skfeat._pooling import list_poolings

# Public name -> module that defines it; imported on first access (PEP 562).
_LAZY = {
    "ActivationCache": "skfeat._cache",
    "PretrainedCNNFeaturizer": "skfeat._featurizer",
    "check_images": "skfeat._check",
    "list_layers": "skfeat._extract",
    "list_models": "skfeat._backends",
    "list_poolings": "skfeat._pooling",
    "load_flowers_sample": "skfeat._datasets",
}

__all__ = [
    "ActivationCache",
    "PretrainedCNNFeaturizer",
    "__version__",
    "check_images",
    "exceptions",
    "list_layers",
    "list_models",
    "list_poolings",
    "load_flowers_sample",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(_importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name == "exceptions":
        return _importlib.import_module("skfeat.exceptions")
    raise AttributeError(f"module 'skfeat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
