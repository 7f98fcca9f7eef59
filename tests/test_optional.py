"""Optional and companion packages: a missing one says which extra to install, a broken one why."""

import importlib.abc
import importlib.metadata
import re
import sys

import pytest
import torch

from skfeat import PretrainedCNNFeaturizer
from skfeat._optional import import_optional, import_torchvision
from skfeat.exceptions import MissingDependencyError


class _TorchvisionOfAnotherBuild(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``torchvision`` as one built for another torch does: it fails on nms."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision":
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        raise RuntimeError("operator torchvision::nms does not exist")


@pytest.fixture
def mismatched_torchvision(monkeypatch):
    for name in [name for name in sys.modules if name.split(".")[0] == "torchvision"]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_TorchvisionOfAnotherBuild(), *sys.meta_path])


def test_a_torchvision_of_another_build_names_both_versions_and_the_fix(mismatched_torchvision):
    vision = importlib.metadata.version("torchvision")
    release = torch.__version__.split("+")[0]
    minor = int(release.split(".")[1])
    message = (
        rf"torchvision {vision} does not match torch {re.escape(torch.__version__)}: importing "
        r"it failed "
        r"with 'operator torchvision::nms does not exist'\. .*CUDA torchvision beside a CPU "
        rf"torch.* pip install torch=={release} torchvision==0\.{minor + 15}\.\* "
        r"--index-url https://download\.pytorch\.org/whl/cpu \(for a GPU, the index"
    )
    with pytest.raises(MissingDependencyError, match=message):
        import_torchvision()
    with pytest.raises(MissingDependencyError, match="does not match torch"):
        PretrainedCNNFeaturizer("resnet18", weights=None).fit(["a.jpg"])  # in fit


def test_other_import_errors_of_torchvision_are_left_as_they_are(monkeypatch):
    def broken(name):
        raise RuntimeError("something else")

    monkeypatch.setattr(importlib, "import_module", broken)
    with pytest.raises(RuntimeError, match="something else"):
        import_torchvision()


def test_a_working_torchvision_is_returned():
    assert import_torchvision() is sys.modules["torchvision"]


def test_a_missing_extra_says_what_to_install():
    with pytest.raises(MissingDependencyError, match=r'pip install "skfeat\[demo\]"'):
        import_optional("no_such_module_here", extra="demo", purpose="the demo")
