"""The public surface: what `import skfeat` exposes, and what it costs."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import skfeat

REPO = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that imports this checkout's skfeat."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path])}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )


def test_all_is_sorted_and_every_name_resolves():
    assert skfeat.__all__ == sorted(skfeat.__all__)
    assert len(set(skfeat.__all__)) == len(skfeat.__all__)
    for name in skfeat.__all__:
        assert getattr(skfeat, name) is not None, name


def test_all_lists_exactly_what_the_package_serves():
    # The lazy table is the source of what skfeat serves; __all__ must say the same.
    served = set(skfeat._LAZY) | {"exceptions", "__version__"}
    assert set(skfeat.__all__) == served
    for name, module in skfeat._LAZY.items():
        assert name in importlib.import_module(module).__all__, (name, module)
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        skfeat.nope  # noqa: B018


def test_star_import_and_namespace_in_a_fresh_process():
    # vars(), not dir(): dir() is __all__ itself. Every public name defined in the
    # package's namespace, once everything is loaded, is one that __all__ lists.
    code = (
        "import json, skfeat\n"
        "ns = {}\n"
        "exec('from skfeat import *', ns)\n"
        "[getattr(skfeat, name) for name in skfeat.__all__]\n"
        "public = sorted(n for n in vars(skfeat) if not n.startswith('_'))\n"
        "print(json.dumps({'star': sorted(n for n in ns if n != '__builtins__'),"
        " 'public': public}))\n"
    )
    done = _run(code)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["star"] == sorted(skfeat.__all__)
    assert set(result["public"]) == set(skfeat.__all__) - {"__version__"}


# Each entry is cheap work that must not import torch (it takes seconds to import).
LIGHT_CALLS = {
    "estimator and registries": (
        "from skfeat import PretrainedCNNFeaturizer, list_poolings\n"
        "PretrainedCNNFeaturizer('resnet18', layer='layer3')\n"
        "list_poolings()\n"
    ),
    "cache handle": (
        "import pickle, tempfile\n"
        "from skfeat import ActivationCache, PretrainedCNNFeaturizer\n"
        "cache = ActivationCache(tempfile.mkdtemp())\n"
        "PretrainedCNNFeaturizer('resnet18', cache=cache)\n"
        "pickle.loads(pickle.dumps(cache)).stats()\n"
    ),
    "command-line help and source errors": (
        "from skfeat._cli import main\n"
        "try:\n"
        "    main(['extract', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert main(['extract', '/no/such/folder', '-o', 'x.npy']) == 1\n"
    ),
    "check_images": (
        "import numpy as np, skfeat\n"
        "rows = skfeat.check_images([np.zeros((4, 4, 3), 'uint8'), None], as_frame=False)\n"
        "assert [row['ok'] for row in rows] == [True, False]\n"
    ),
}


@pytest.mark.parametrize("call", list(LIGHT_CALLS))
def test_light_calls_do_not_import_torch(call):
    done = _run(LIGHT_CALLS[call] + "import sys\nprint('torch' in sys.modules)\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False", f"{call} imported torch"


def test_exceptions_inherit_builtins():
    from skfeat import exceptions

    assert issubclass(exceptions.ImageDecodeError, OSError)
    assert issubclass(exceptions.UnknownLayerError, ValueError)
    assert issubclass(exceptions.MissingDependencyError, ImportError)
    assert issubclass(exceptions.InvalidParameterError, ValueError)
    assert issubclass(exceptions.InvalidParameterError, TypeError)
    assert issubclass(exceptions.ImageDecodeWarning, UserWarning)
    for name in exceptions.__all__:
        error = getattr(exceptions, name)
        base = exceptions.SkfeatWarning if issubclass(error, Warning) else exceptions.SkfeatError
        assert issubclass(error, base), name


def test_parameter_errors_are_skfeat_errors(tiny_model):
    from skfeat import ActivationCache, PretrainedCNNFeaturizer, check_images, list_models
    from skfeat.exceptions import InvalidParameterError

    with pytest.raises(InvalidParameterError):
        PretrainedCNNFeaturizer(tiny_model, batch_size=0).fit([b""])
    with pytest.raises(InvalidParameterError):
        ActivationCache(max_bytes=-1)
    with pytest.raises(InvalidParameterError):
        check_images([None], n_jobs=0)
    with pytest.raises(InvalidParameterError, match=r"'source' parameter of list_models"):
        list_models("hub")
