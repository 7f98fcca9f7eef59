"""Parameter checks and their messages, shared by every public entry point.

Each check raises :class:`~skfeat.exceptions.InvalidParameterError` (a ``ValueError``
and a ``TypeError``) with a message in one form: which parameter of which estimator
or function, what it must be, and what it got. Only the standard library is used here.
"""

from __future__ import annotations

import difflib
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

from skfeat.exceptions import InvalidParameterError

__all__ = [
    "check_choice",
    "check_n_jobs",
    "did_you_mean",
    "is_int",
    "parameter_error",
]


def is_int(value: Any) -> TypeGuard[int]:
    """Whether ``value`` is an integer (numpy integers too), but not a bool.

    Examples
    --------
    >>> is_int(3), is_int(True), is_int(3.0)
    (True, False, False)
    """
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def did_you_mean(
    name: str,
    choices: Iterable[str],
    *,
    synonyms: Mapping[str, str] | None = None,
    cutoff: float = 0.6,
    show: Callable[[str], str] = repr,
) -> str:
    """``" Did you mean 'x'?"`` for the choices close to ``name``, or ``""``.

    Parameters
    ----------
    name : str
        What was given.
    choices : iterable of str
        What is accepted.
    synonyms : mapping of str to str, optional
        Words people use for a choice (``"mean"`` for ``"avg"``); an exact synonym,
        ignoring case, is suggested first.
    cutoff : float, default=0.6
        How close a choice must be (:func:`difflib.get_close_matches`).
    show : callable, default=repr
        How a suggestion is written (``lambda c: repr("timm:" + c)``).

    Examples
    --------
    >>> did_you_mean("layer5", ["layer3", "layer4", "fc"])
    " Did you mean 'layer4', 'layer3'?"
    >>> did_you_mean("mean", ["avg", "max"], synonyms={"mean": "avg"})
    " Did you mean 'avg'?"
    >>> did_you_mean("zzz", ["avg", "max"])
    ''
    """
    by_lower = {choice.lower(): choice for choice in choices}
    close: list[str] = []
    if synonyms:
        wanted = synonyms.get(name.lower().replace("-", "_").replace(" ", "_"))
        if wanted is not None:
            close.append(wanted)
    for match in difflib.get_close_matches(name.lower(), by_lower, n=3, cutoff=cutoff):
        if by_lower[match] not in close:
            close.append(by_lower[match])
    if not close:
        return ""
    return f" Did you mean {', '.join(show(choice) for choice in close[:3])}?"


def parameter_error(owner: str, name: str, value: Any, expected: str, hint: str = "") -> Exception:
    """The error for parameter ``name`` of ``owner``, which must be ``expected``.

    Examples
    --------
    >>> print(parameter_error("check_images", "n_jobs", 0, "None or a non-zero int"))
    The 'n_jobs' parameter of check_images must be None or a non-zero int. Got 0 instead.
    """
    return InvalidParameterError(
        f"The {name!r} parameter of {owner} must be {expected}. Got {value!r} instead.{hint}"
    )


def check_n_jobs(n_jobs: Any, owner: str) -> None:
    """``n_jobs`` is None or a non-zero int (negative values count back from all cores).

    Examples
    --------
    >>> check_n_jobs(-1, "check_images")
    >>> check_n_jobs(0, "check_images")
    Traceback (most recent call last):
    ...
    skfeat.exceptions.InvalidParameterError: The 'n_jobs' parameter of check_images must be ...
    """
    if n_jobs is not None and (not is_int(n_jobs) or n_jobs == 0):
        raise parameter_error(owner, "n_jobs", n_jobs, "None or a non-zero int")


def check_choice(
    value: Any,
    choices: Iterable[Any],
    name: str,
    owner: str,
    *,
    expected: str | None = None,
    synonyms: Mapping[str, str] | None = None,
) -> None:
    """``value`` is one of ``choices``; a near-miss string gets a did-you-mean.

    ``expected`` words the expectation (default: ``"one of 'a', 'b'"``).

    Examples
    --------
    >>> check_choice("nan", ("raise", "nan"), "on_error", "PretrainedCNNFeaturizer")
    >>> check_choice("NaN", ("raise", "nan"), "on_error", "PretrainedCNNFeaturizer")
    Traceback (most recent call last):
    ...
    skfeat.exceptions.InvalidParameterError: The 'on_error' parameter of ... Did you mean 'nan'?
    """
    choices = list(choices)
    if isinstance(value, str) and value in choices:
        return
    if not isinstance(value, str) and any(value is choice for choice in choices):
        return  # None, True...: by identity, so 0 does not pass for False
    named = [choice for choice in choices if isinstance(choice, str)]
    hint = did_you_mean(value, named, synonyms=synonyms) if isinstance(value, str) else ""
    if expected is None:
        expected = "one of " + ", ".join(repr(choice) for choice in choices)
    raise parameter_error(owner, name, value, expected, hint)
