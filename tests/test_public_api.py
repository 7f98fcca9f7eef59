"""The public surface: what `import skfeat` exposes, and what it costs."""

from __future__ import annotations

import subprocess
import sys

import skfeat


def test_all_is_sorted_and_complete():
    assert skfeat.__all__ == sorted(skfeat.__all__)
    for name in skfeat.__all__:
        assert getattr(skfeat, name) is not None, name
    public = {name for name in dir(skfeat) if not name.startswith("_")}
    assert public == set(skfeat.__all__) - {"__version__"}


def test_import_does_not_load_torch():
    code = (
        "import sys, skfeat\n"
        "from skfeat import PretrainedCNNFeaturizer, list_poolings\n"
        "PretrainedCNNFeaturizer('resnet18', layer='layer3')\n"
        "list_poolings()\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=_env())


def _env():
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def test_exceptions_inherit_builtins():
    from skfeat import exceptions

    assert issubclass(exceptions.ImageDecodeError, OSError)
    assert issubclass(exceptions.UnknownLayerError, ValueError)
    assert issubclass(exceptions.MissingDependencyError, ImportError)
    assert issubclass(exceptions.ImageDecodeWarning, UserWarning)
