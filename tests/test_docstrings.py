"""Every public docstring passes numpydoc validation, and every doctest in skfeat passes.

The public objects are found from ``skfeat.__all__`` and from the ``__all__`` of the
public submodules (``skfeat.exceptions``, and those needing an extra, such as
``skfeat.dask``), so a new public name is checked as soon as it is exported.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import skfeat

numpydoc_validate = pytest.importorskip("numpydoc.validate", reason="needs numpydoc")

# numpydoc error codes that are not enforced, and why
# (https://numpydoc.readthedocs.io/en/latest/validation.html). Everything else is.
IGNORED = {
    # The Returns section names what is returned (``self : PretrainedCNNFeaturizer``),
    # as scikit-learn's docstrings do.
    "RT02",
}
IGNORED_IN_METHODS = {
    # A method is documented on its class's page, whose extended summary, See Also and
    # Examples cover it; scikit-learn's docstring test makes the same exception.
    "ES01",
    "SA01",
    "EX01",
}
IGNORED_IN_EXCEPTIONS = {
    # Exception and warning classes are one-liners: the hierarchy and when each is raised
    # are in the docstring of the skfeat.exceptions module.
    "ES01",
    "SA01",
}


def _own_methods(cls: type) -> list[str]:
    """Public methods and properties that skfeat defines, not those inherited from sklearn."""
    names = []
    for name in dir(cls):
        if name.startswith("_"):
            continue
        owner = next(klass for klass in cls.__mro__ if name in vars(klass))
        member = vars(owner)[name]
        if owner.__module__.startswith("skfeat") and (
            inspect.isfunction(member) or isinstance(member, (property, classmethod, staticmethod))
        ):
            names.append(name)
    return names


def _public_objects(module: ModuleType, prefix: str) -> list[tuple[str, str]]:
    """``(import path, kind)`` of each public object reachable from ``module.__all__``."""
    found = []
    for name in module.__all__:
        if name == "__version__":
            continue
        obj = getattr(module, name)
        path = f"{prefix}.{name}"
        if inspect.ismodule(obj):
            found.append((path, "module"))
            found += _public_objects(obj, path)
        elif inspect.isclass(obj):
            kind = "exception" if issubclass(obj, (Exception, Warning)) else "class"
            found.append((path, kind))
            found += [(f"{path}.{method}", "method") for method in _own_methods(obj)]
        else:
            found.append((path, "function"))
    return found


def _public_submodules() -> list[ModuleType]:
    """Submodules without a leading underscore, when their optional dependencies import."""
    found = []
    for info in pkgutil.iter_modules(skfeat.__path__):
        if not info.name.startswith("_") and info.name != "exceptions":
            try:
                found.append(importlib.import_module(f"skfeat.{info.name}"))
            except ImportError:  # an extra that is not installed
                continue
    return found


PUBLIC = _public_objects(skfeat, "skfeat")
for _module in _public_submodules():
    PUBLIC += [(_module.__name__, "module"), *_public_objects(_module, _module.__name__)]


def test_public_objects_are_found():
    paths = [path for path, _ in PUBLIC]
    assert "skfeat.PretrainedCNNFeaturizer" in paths
    assert "skfeat.PretrainedCNNFeaturizer.transform" in paths
    assert "skfeat.exceptions.ImageDecodeError" in paths
    # inherited from scikit-learn, which documents (and validates) them itself
    assert "skfeat.PretrainedCNNFeaturizer.set_params" not in paths


@pytest.mark.parametrize(("path", "kind"), PUBLIC, ids=[path for path, _ in PUBLIC])
def test_docstring_is_valid_numpydoc(path, kind):
    ignored = set(IGNORED)
    if kind == "method":
        ignored |= IGNORED_IN_METHODS
    if kind == "exception":
        ignored |= IGNORED_IN_EXCEPTIONS
    result = numpydoc_validate.validate(path)
    errors = [f"{code}: {message}" for code, message in result["errors"] if code not in ignored]
    assert not errors, f"{path} ({result['file']}:{result['file_line']}):\n" + "\n".join(errors)


def _doctests(module_name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [test for test in finder.find(module, module_name) if test.examples]


MODULES = ["skfeat"] + [
    info.name for info in pkgutil.walk_packages(skfeat.__path__, prefix="skfeat.")
]
DOCTEST_MODULES = [name for name in MODULES if _doctests(name)]


def test_doctest_modules_are_found():
    for name in ("skfeat._featurizer", "skfeat._extract", "skfeat.exceptions"):
        assert name in DOCTEST_MODULES


@pytest.mark.extras  # the docstrings' examples run on the modules as they are
@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_doctests_pass(module_name, capsys):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _doctests(module_name):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert attempted > 0
    assert failed == 0, capsys.readouterr().out
