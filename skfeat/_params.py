"""The parameter table of :class:`~skfeat.PretrainedCNNFeaturizer`: one entry per parameter.

:data:`PARAMETERS` maps each parameter to a :class:`Param`, as scikit-learn's
``_parameter_constraints`` maps each to its constraints. One table drives:

- the checks in ``fit`` (:func:`check_params`), with skfeat's messages: which
  parameter, what it must be, what it got, and a did-you-mean for a near-miss name;
- the choices the command line offers (:func:`str_options`);
- which parameters ``transform`` resolves into its run settings (``run=True``,
  :func:`run_params`) and which change the features, so a resumed ``skfeat extract``
  must keep them (``results=True``, :func:`result_params`);
- the docstring test: each entry is documented in the class docstring with its
  options, and each documented parameter has an entry.

Adding a parameter ``foo`` to the estimator touches three places: its keyword in
``PretrainedCNNFeaturizer.__init__`` and its entry in the class docstring, one line
here, and the code that uses it. The line for a parameter with named values is::

    "foo": Param(options=(None, "a", "b")),

and for one with other values, a predicate and the words of the error message::

    "foo": Param(accepts=is_int, expected="an int"),

Add ``run=True`` when ``transform`` reads it (then ``resolve_settings`` takes it as
a keyword) and ``results=False`` when the features do not depend on it (threads, a
progress bar). Only the standard library and torch-free skfeat modules are imported.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from skfeat._backends._recipe import PREPROCESSING_EXPECTED
from skfeat._blocks import INTERMEDIATE_NORMS
from skfeat._inputs import DECODERS
from skfeat._pooling import POOLINGS, pooling_synonyms
from skfeat._runtime import PRECISIONS
from skfeat._validation import did_you_mean, is_int, parameter_error

__all__ = [
    "PARAMETERS",
    "Param",
    "check_params",
    "result_params",
    "run_params",
    "str_options",
]


@dataclass(frozen=True)
class Param:
    """What one parameter accepts, and how the estimator uses it.

    A value is accepted when it is one of ``options`` (strings by equality, other
    values such as None by identity) or when ``accepts(value)`` is true; then each
    ``(condition, expected)`` of ``also`` must hold.

    Parameters
    ----------
    options : tuple, default=()
        The named values, offered by the command line and listed in the docstring.
    accepts : callable, optional
        The other values accepted (a callable pooling, an int batch size).
    expected : str, default=""
        What the value must be, as the error message says it; by default "one of"
        the options.
    also : tuple of (callable, str), default=()
        Further conditions on an accepted value, each with its own ``expected``.
    synonyms : callable, optional
        Other words for the options (``"mean"`` for ``"avg"``), for the did-you-mean.
    run : bool, default=False
        Whether ``transform`` resolves it into its run settings (``resolve_settings``).
    results : bool, default=True
        Whether the features depend on it.
    """

    options: tuple[Any, ...] = ()
    accepts: Callable[[Any], bool] | None = None
    expected: str = ""
    also: tuple[tuple[Callable[[Any], bool], str], ...] = ()
    synonyms: Callable[[], Mapping[str, str]] | None = None
    run: bool = False
    results: bool = True

    def is_option(self, value: Any) -> bool:
        """Whether ``value`` is one of the named values."""
        if isinstance(value, str):
            return value in self.options
        return any(value is option for option in self.options)  # 0 is not False

    def check(self, name: str, value: Any, owner: str) -> None:
        """Raise :class:`~skfeat.exceptions.InvalidParameterError` unless ``value`` fits."""
        if not self.is_option(value) and (self.accepts is None or not self.accepts(value)):
            named = [option for option in self.options if isinstance(option, str)]
            hint = ""
            if isinstance(value, str) and named:
                synonyms = self.synonyms() if self.synonyms is not None else None
                hint = did_you_mean(value, named, synonyms=synonyms)
            raise parameter_error(owner, name, value, self.expected_text(), hint)
        for condition, expected in self.also:
            if not condition(value):
                raise parameter_error(owner, name, value, expected)

    def expected_text(self) -> str:
        """What the value must be, for the error message."""
        return self.expected or "one of " + ", ".join(repr(option) for option in self.options)


def _is_model(value: Any) -> bool:
    return isinstance(value, (str, os.PathLike)) or callable(value)


def _is_preprocessing(value: Any) -> bool:
    from skfeat._preprocess import DataConfig

    return value is None or isinstance(value, (Mapping, DataConfig))


def _is_weights(value: Any) -> bool:
    return value is None or isinstance(value, (str, os.PathLike))


def _layer_names(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _is_layer(value: Any) -> bool:
    names = _layer_names(value)
    return bool(names) and all(isinstance(name, str) and name for name in names)


def _distinct(value: Any) -> bool:
    names = _layer_names(value)
    return len(set(names)) == len(names)


def _is_callable(value: Any) -> bool:
    return callable(value) and not isinstance(value, str)


def _is_pooling(value: Any) -> bool:
    # a list gives one pooling per layer; its items are resolved with the layers
    return _is_callable(value) or (isinstance(value, (list, tuple)) and len(value) > 0)


def _is_batch_size(value: Any) -> bool:
    return is_int(value) and value >= 1


def _is_n_jobs(value: Any) -> bool:
    return value is None or (is_int(value) and value != 0)


def _is_cache(value: Any) -> bool:
    from skfeat._cache import ActivationCache

    if value is None or isinstance(value, (bool, ActivationCache)):
        return True
    return isinstance(value, (str, os.PathLike)) and bool(os.fspath(value))


def _is_bool(value: Any) -> bool:
    import numpy as np

    return isinstance(value, (bool, np.bool_))


_ON_ERROR = ("raise", "nan", "zeros")
_RUNTIMES = ("auto", "torch", "openvino")
_DECODERS = ("auto", *DECODERS)

# In the order of PretrainedCNNFeaturizer.__init__; checked in this order.
PARAMETERS: dict[str, Param] = {
    "model": Param(
        accepts=_is_model, expected="a model name (str), a model file path or a torch.nn.Module"
    ),
    "weights": Param(
        accepts=_is_weights, expected="'DEFAULT', a weights tag, a path to a state_dict, or None"
    ),
    "preprocessing": Param(accepts=_is_preprocessing, expected=PREPROCESSING_EXPECTED),
    "layer": Param(
        accepts=_is_layer,
        expected="a layer name (str) or a non-empty list of names",
        also=((_distinct, "a list of distinct layer names"),),
    ),
    "pooling": Param(
        options=tuple(POOLINGS),
        accepts=_is_pooling,
        expected=f"a str among {sorted(POOLINGS)} or a callable, or a list of them (one per layer)",
        synonyms=pooling_synonyms,
    ),
    "intermediate_norm": Param(options=INTERMEDIATE_NORMS),
    "normalize": Param(options=(None, "l2"), expected="None or 'l2'"),
    "batch_size": Param(
        options=("auto",),
        accepts=_is_batch_size,
        expected="'auto' or an int >= 1",
        run=True,
        results=False,
    ),
    "device": Param(
        accepts=lambda value: isinstance(value, str),
        expected="a str such as 'auto', 'cpu' or 'cuda:0'",
        run=True,
        results=False,  # as for the cache: what runs where is in precision and runtime
    ),
    "precision": Param(options=PRECISIONS, expected=f"one of {PRECISIONS}", run=True),
    "runtime": Param(options=_RUNTIMES, expected=f"one of {_RUNTIMES}", run=True),
    "n_jobs": Param(accepts=_is_n_jobs, expected="None or a non-zero int", run=True, results=False),
    "decoder": Param(options=_DECODERS, expected=f"one of {_DECODERS}", run=True),
    "on_error": Param(options=_ON_ERROR, expected=f"a str among {list(_ON_ERROR)}", run=True),
    "cache": Param(
        accepts=_is_cache,
        expected="None, True (a per-user cache folder), a directory path or an ActivationCache",
        results=False,
    ),
    "progress": Param(accepts=_is_bool, expected="a bool", run=True, results=False),
}


def check_params(params: Mapping[str, Any], owner: str) -> None:
    """Check each parameter of ``params`` that the table has, in the table's order.

    Raises
    ------
    InvalidParameterError
        For the first that does not fit, saying what it must be.

    Examples
    --------
    >>> check_params({"normalize": "l1"}, "PretrainedCNNFeaturizer")
    Traceback (most recent call last):
    ...
    skfeat.exceptions.InvalidParameterError: The 'normalize' parameter of ... Got 'l1' instead.
    """
    for name, param in PARAMETERS.items():
        if name in params:
            param.check(name, params[name], owner)


def str_options(name: str) -> list[str]:
    """The named values of parameter ``name`` that are strings: the command line's choices.

    Examples
    --------
    >>> str_options("normalize")
    ['l2']
    """
    return [option for option in PARAMETERS[name].options if isinstance(option, str)]


def run_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters ``transform`` resolves into its run settings.

    Examples
    --------
    >>> sorted(run_params({"precision": "auto", "layer": "penultimate"}))
    ['precision']
    """
    return {
        name: params[name] for name, param in PARAMETERS.items() if param.run and name in params
    }


def result_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters the features depend on, in the table's order.

    Examples
    --------
    >>> sorted(result_params({"precision": "auto", "n_jobs": 2, "progress": True}))
    ['precision']
    """
    return {
        name: params[name] for name, param in PARAMETERS.items() if param.results and name in params
    }
