"""
Transformer blocks: which block, which tokens, DINOv2's linear probe
====================================================================

DINOv2's authors probe their model on the class tokens of the last one or four blocks,
with or without the mean patch token. This example compares every block of a DINOv2
model (with registers) under four token poolings, and DINOv2's own recipe, by
cross-validated accuracy on the bundled flower photos, from **one** backbone pass per
photo: every candidate reads its features from a shared
:class:`~skfeat.ActivationCache`.

Blocks are read through the model's own final norm, as DINOv2 reads them
(``intermediate_norm="final"``, the default; see :ref:`intermediate-norm`).

No DINOv2 weights ship with skfeat. With them in timm's cache (or a network), the
example uses the real weights; otherwise it says so and runs the same code on random
weights, where the accuracies only show the method, not what DINOv2 learned (and
every block is close to the patch embedding: DINOv2's layer scale starts at 1e-5).
"""

# %%
# The model, and its weights
# --------------------------
# ``weights="DEFAULT"`` asks timm for the real DINOv2 weights; without them skfeat
# raises :class:`~skfeat.exceptions.WeightsUnavailableError`, and the example goes on
# with random weights.
import skfeat
from skfeat import ActivationCache, PretrainedCNNFeaturizer
from skfeat.exceptions import WeightsUnavailableError

model = "timm:vit_small_patch14_reg4_dinov2"
flowers = skfeat.load_flowers_sample()
paths, y = flowers.paths[::2], flowers.target[::2]  # 75 photos: 518 px is slow on a CPU
try:
    PretrainedCNNFeaturizer(model, n_jobs=1).fit_transform(paths[:1])
    weights = "DEFAULT"
    print("Real DINOv2 weights.")
except WeightsUnavailableError:
    weights = None
    print(
        "No DINOv2 weights here: random weights, so the scores below show the method only."
    )

# %%
# Blocks and poolings
# -------------------
# Blocks are numbered from 0, and ``"blocks.-1"`` is the last. On tokens, ``cls`` is
# the class token, ``avg`` and ``gem`` pool the patch tokens (the class token and the
# 4 registers left out), and ``clsavg`` is the class token then the mean patch token.
layers = skfeat.list_layers(model, weights=None, details=True)
n_blocks = sum(name.startswith("blocks.") and name.count(".") == 1 for name in layers)
print(
    n_blocks,
    "blocks of",
    layers["blocks.0"].shape,
    "tokens x channels, prefix tokens:",
    layers["blocks.0"].prefix_tokens,
)
poolings = ["cls", "avg", "clsavg", "gem"]
last4 = ["blocks.-4", "blocks.-3", "blocks.-2", "blocks.-1"]
candidates = {f"blocks.{i}": [f"blocks.{i}"] for i in range(n_blocks)}
candidates["last 4"] = last4

# %%
# One featurizer per candidate, one cache for all of them: the first computes every
# block's poolings for each photo and stores them, the others only read.
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

cache = ActivationCache()
head = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)


def features(layer, pooling):
    featurizer = PretrainedCNNFeaturizer(
        model, weights=weights, layer=layer, pooling=pooling, cache=cache
    )
    return featurizer.fit_transform(paths)


scores = np.array(
    [
        [cross_val_score(head, features(layer, p), y, cv=cv).mean() for p in poolings]
        for layer in candidates.values()
    ]
)

# %%
# DINOv2's linear probe reads the class tokens of the last four blocks and the mean
# patch token of the last one: ``5 x 384`` features, one pooling per layer.
probe = features(last4, ["cls", "cls", "cls", "clsavg"])
probe_score = cross_val_score(head, probe, y, cv=cv).mean()
print(f"DINOv2's linear probe: {probe.shape[1]} features, accuracy {probe_score:.2f}")
print("backbone passes per photo:", cache.stats()["misses"] / len(paths))

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5.5, 6), layout="constrained")
image = ax.imshow(scores, cmap="viridis", vmin=1 / len(flowers.target_names), vmax=1)
ax.set_xticks(range(len(poolings)), poolings)
ax.set_yticks(range(len(candidates)), list(candidates))
for (row, column), score in np.ndenumerate(scores):
    ax.text(column, row, f"{score:.2f}", ha="center", va="center", color="white")
ax.set_xlabel("pooling")
ax.set_title(f"5-fold accuracy, {'DINOv2' if weights else 'random'} weights")
fig.colorbar(image, ax=ax, shrink=0.8)
plt.show()

# %%
# With one ``pooling`` for the last four blocks, each block gets it: ``clsavg`` there
# is ``8 x 384`` features, the class and mean patch tokens of every block. A
# :class:`~sklearn.model_selection.GridSearchCV` over ``layer`` and ``pooling`` with
# the same cache costs the same single pass; ``intermediate_norm="none"`` reads the
# blocks as they leave them, before the final norm.
