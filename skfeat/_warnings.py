"""Where skfeat's warnings are reported: the user's own line.

A transform is usually called through scikit-learn (``Pipeline``, ``set_output``,
``GridSearchCV``), so a fixed ``stacklevel`` would point at scikit-learn's code. The
warning is reported at the first frame outside skfeat, scikit-learn and joblib
(which scikit-learn calls through) instead.
"""

from __future__ import annotations

import sys
import warnings

__all__ = ["warn_at_caller"]

_INTERNAL = ("skfeat", "sklearn", "joblib")


def _is_internal(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in _INTERNAL)


def warn_at_caller(warning: Warning | str, category: type[Warning] | None = None) -> None:
    """Emit ``warning`` at the first calling frame outside skfeat, scikit-learn and joblib.

    Examples
    --------
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_at_caller(UserWarning("look here"))
    >>> str(caught[0].message)
    'look here'
    """
    frame = sys._getframe(1)
    level = 2  # 1 is this function, 2 its caller
    while frame.f_back is not None and _is_internal(frame.f_globals.get("__name__", "")):
        frame = frame.f_back
        level += 1
    warnings.warn(warning, category, stacklevel=level)
