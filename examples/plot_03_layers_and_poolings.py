"""
Choosing a layer and a pooling
==============================

The last layer of an ImageNet network is not always the best one for your images.
This example lists the layers of EfficientNet-Lite0 with :func:`skfeat.list_layers`,
reads several of them in **one** forward pass, and compares them, each with two
poolings, by cross-validation.
"""

# %%
# What can be read
# ----------------
# :func:`skfeat.list_layers` runs the network on an empty ``meta`` input, so it costs no
# weights and no memory. It lists every module whose output can be read; here we keep the
# seven stages of the network and what follows them.
import skfeat

layers = skfeat.list_layers("efficientnet_lite0")
print(len(layers), "readable layers, among them:")
for name, shape in layers.items():
    is_stage = name.startswith("blocks.") and name.count(".") == 1
    if is_stage or name in ("bn2", "penultimate"):
        print(f"  {name:12} {shape}")

# %%
# Stages deeper in the network have more channels on a coarser grid. ``bn2`` is the last
# feature map, after the final 1x1 convolution; ``"penultimate"`` is its average over
# the 7 x 7 positions, the embedding the ImageNet classifier reads.
#
# Each map becomes a vector through a pooling:
for name, description in skfeat.list_poolings().items():
    print(f"{name:8} {description}")

# %%
# Several layers, one forward pass
# --------------------------------
# ``layer`` takes a list: the features of every layer in it come from one pass through
# the network, concatenated. With ``pooling="avgmax"``, each layer gives its average
# pooling followed by its max pooling, so this one call holds the features of the last
# four stages under two poolings.
import numpy as np

from skfeat import PretrainedCNNFeaturizer

flowers = skfeat.load_flowers_sample()
compared = ["blocks.3", "blocks.4", "blocks.5", "bn2"]
featurizer = PretrainedCNNFeaturizer(
    "efficientnet_lite0",
    layer=compared,
    pooling="avgmax",
)
features = featurizer.fit_transform(flowers.paths)
names = featurizer.get_feature_names_out()
print(features.shape, names[0], "...", names[-1])

# %%
# The feature names say which layer each column comes from; within a layer's ``2 C``
# columns, the first ``C`` are the average and the last ``C`` the maximum.
blocks = {}
for layer in compared:
    columns = np.flatnonzero([name.startswith(f"{layer}_") for name in names])
    n_channels = len(columns) // 2
    blocks[layer, "avg"] = features[:, columns[:n_channels]]
    blocks[layer, "max"] = features[:, columns[n_channels:]]

# %%
# A small comparison
# ------------------
# The same head as in the quickstart, cross-validated on each block of columns. This is
# what a grid search over ``layer`` and ``pooling`` would do, without running the
# network once per candidate.
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

head = make_pipeline(PCA(n_components=32), LogisticRegression(max_iter=1000))
cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
scores = {}
for key, block in blocks.items():
    scores[key] = cross_val_score(head, block, flowers.target, cv=cv).mean()

# %%
import matplotlib.pyplot as plt

poolings = ["avg", "max"]
grid = np.array([[scores[layer, p] for p in poolings] for layer in compared])
fig, ax = plt.subplots(figsize=(4.5, 4), layout="constrained")
image = ax.imshow(grid, cmap="viridis", vmin=0.2, vmax=1)
ax.set_xticks(range(len(poolings)), poolings)
row_labels = [f"{layer} {layers[layer]}" for layer in compared]
ax.set_yticks(range(len(compared)), row_labels)
for (row, column), score in np.ndenumerate(grid):
    ax.text(column, row, f"{score:.2f}", ha="center", va="center", color="white")
ax.set_xlabel("pooling")
ax.set_title("5-fold accuracy")
fig.colorbar(image, ax=ax, shrink=0.8)
plt.show()

# %%
best = max(scores, key=scores.get)
print(f"best: layer={best[0]!r}, pooling={best[1]!r}, accuracy {scores[best]:.2f}")

# %%
# With average pooling, the last stages score about the same here: their differences are
# within the spread from fold to fold that 150 photos give. The earliest stage compared
# is worse, and maximum pooling does not help. With your own data, run the same
# comparison, or a :class:`~sklearn.model_selection.GridSearchCV` over the featurizer's
# ``layer`` and ``pooling``, and then use the winner:
best_layer, best_pooling = best
chosen = PretrainedCNNFeaturizer(
    "efficientnet_lite0",
    layer=best_layer,
    pooling=best_pooling,
)
chosen
