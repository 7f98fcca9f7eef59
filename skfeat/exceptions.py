"""Exceptions and warnings raised by skfeat.

Every error derives from :class:`SkfeatError`, and each subclass also derives
from the builtin that ``except`` clauses already catch::

    SkfeatError
    ├── InvalidParameterError(SkfeatError, ValueError, TypeError)
    │                                                    a parameter has a wrong value or type
    ├── InvalidInputError(SkfeatError, ValueError)       X is not a sequence of images
    ├── UnknownModelError(SkfeatError, ValueError)       no such backbone
    ├── UnknownLayerError(SkfeatError, ValueError)       no such layer in the backbone
    ├── ModelTraceError(SkfeatError, RuntimeError)       the backbone fails on an image batch
    ├── ImageDecodeError(SkfeatError, OSError)           one image could not be read
    ├── WeightsUnavailableError(SkfeatError, OSError)    weights cannot be loaded or downloaded
    └── MissingDependencyError(SkfeatError, ImportError) an optional extra is not installed

    SkfeatWarning(UserWarning)
    ├── ImageDecodeWarning                               some images failed, rows kept
    ├── CacheWarning                                     cache not written, or damaged entries
    └── DeviceWarning                                    requested device/precision not usable

Examples
--------
>>> from skfeat.exceptions import SkfeatError
>>> issubclass(SkfeatError, Exception)
True
"""

from __future__ import annotations

__all__ = [
    "CacheWarning",
    "DeviceWarning",
    "ImageDecodeError",
    "ImageDecodeWarning",
    "InvalidInputError",
    "InvalidParameterError",
    "MissingDependencyError",
    "ModelTraceError",
    "SkfeatError",
    "SkfeatWarning",
    "UnknownLayerError",
    "UnknownModelError",
    "WeightsUnavailableError",
]


class SkfeatError(Exception):
    """Base class of every error raised by skfeat.

    Examples
    --------
    >>> from skfeat.exceptions import SkfeatError, UnknownLayerError
    >>> issubclass(UnknownLayerError, SkfeatError)
    True
    """


class InvalidParameterError(SkfeatError, ValueError, TypeError):
    """A parameter has a value or a type that skfeat cannot use.

    It derives from both ``ValueError`` and ``TypeError``, as scikit-learn's own
    ``InvalidParameterError`` does, so either ``except`` clause catches it whatever
    was wrong with the value.

    Examples
    --------
    >>> from skfeat.exceptions import InvalidParameterError
    >>> issubclass(InvalidParameterError, ValueError), issubclass(InvalidParameterError, TypeError)
    (True, True)
    """


class InvalidInputError(SkfeatError, ValueError):
    """``X`` as a whole is not something skfeat can read as images.

    Examples
    --------
    >>> from skfeat.exceptions import InvalidInputError
    >>> issubclass(InvalidInputError, ValueError)
    True
    """


class UnknownModelError(SkfeatError, ValueError):
    """The ``model`` or ``weights`` parameter names nothing skfeat can build.

    Examples
    --------
    >>> from skfeat.exceptions import UnknownModelError
    >>> issubclass(UnknownModelError, ValueError)
    True
    """


class UnknownLayerError(SkfeatError, ValueError):
    """The ``layer`` parameter names no layer of the backbone.

    Examples
    --------
    >>> from skfeat.exceptions import UnknownLayerError
    >>> issubclass(UnknownLayerError, ValueError)
    True
    """


class ModelTraceError(SkfeatError, RuntimeError):
    """The backbone's forward pass fails on a batch of images as skfeat feeds them.

    Raised in ``fit`` (and by :func:`skfeat.list_layers`), where the network runs once
    on zeros to find its layers; the message names the model and the error it raised,
    and says how to give another input size or wrap a model that takes other inputs.

    Examples
    --------
    >>> from skfeat.exceptions import ModelTraceError
    >>> issubclass(ModelTraceError, RuntimeError)
    True
    """


class ImageDecodeError(SkfeatError, OSError):
    """One input image could not be read or converted.

    The message names the image's index and path (or type) and the cause; the
    same facts are attributes, for code that handles the error.

    Attributes
    ----------
    index : int or None
        Position of the image in ``X``.
    source : str or None
        The path (quoted) or a short description of the item, such as
        ``"array of shape (2, 2) and dtype int64"``.
    cause : str or None
        Why it failed, for example ``"image file is truncated"``.

    Examples
    --------
    >>> from skfeat.exceptions import ImageDecodeError
    >>> issubclass(ImageDecodeError, OSError)
    True
    """

    index: int | None = None
    source: str | None = None
    cause: str | None = None


class WeightsUnavailableError(SkfeatError, OSError):
    """Pretrained weights could not be loaded, for example without network access.

    Examples
    --------
    >>> from skfeat.exceptions import WeightsUnavailableError
    >>> issubclass(WeightsUnavailableError, OSError)
    True
    """


class MissingDependencyError(SkfeatError, ImportError):
    """An optional dependency is needed; the message gives the pip command.

    Examples
    --------
    >>> from skfeat.exceptions import MissingDependencyError
    >>> issubclass(MissingDependencyError, ImportError)
    True
    """


class SkfeatWarning(UserWarning):
    """Base class of every warning emitted by skfeat.

    Examples
    --------
    >>> from skfeat.exceptions import SkfeatWarning
    >>> issubclass(SkfeatWarning, UserWarning)
    True
    """


class ImageDecodeWarning(SkfeatWarning):
    """Some images could not be read; their rows were kept as NaN or zeros.

    Emitted once per call. Besides its message, it carries the failures as data.

    Attributes
    ----------
    errors : tuple of ImageDecodeError
        Every failure of the call, in input order; each has ``index``, ``source``
        and ``cause``.
    n_images : int or None
        How many images the call read.

    Examples
    --------
    >>> from skfeat.exceptions import ImageDecodeWarning, SkfeatWarning
    >>> issubclass(ImageDecodeWarning, SkfeatWarning)
    True
    """

    errors: tuple[ImageDecodeError, ...] = ()
    n_images: int | None = None


class DeviceWarning(SkfeatWarning):
    """The requested device or precision is not usable here; skfeat fell back.

    Examples
    --------
    >>> from skfeat.exceptions import DeviceWarning, SkfeatWarning
    >>> issubclass(DeviceWarning, SkfeatWarning)
    True
    """


class CacheWarning(SkfeatWarning):
    """The activation cache could not store features, found damaged entries, or cannot share.

    The features returned are correct all the same: unstored ones were computed,
    damaged entries were removed and recomputed, and an in-memory cache that reached
    another process (a worker) starts empty there and computes again.

    Examples
    --------
    >>> from skfeat.exceptions import CacheWarning, SkfeatWarning
    >>> issubclass(CacheWarning, SkfeatWarning)
    True
    """
