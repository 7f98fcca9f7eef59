"""
Vision transformers: tokens, class token and DINOv2's linear probe
==================================================================

A transformer block outputs tokens, not a feature map: ``(T, C)`` per image, a few
prefix tokens (class, registers) followed by one token per image patch. This example
lists the layers of a DINOv2 model with their layouts, reads its class token and its
mean patch token, and builds DINOv2's linear-probe features (class tokens of the last
four blocks and the mean patch token of the last) from one backbone pass, with two
featurizers sharing an :class:`~skfeat.ActivationCache`.

The weights are random (``weights=None``) so that the example runs offline; with
``weights="DEFAULT"`` timm downloads the real DINOv2 weights from the Hugging Face Hub
and the same code gives the real features.
"""

# %%
# Layers, with their layout
# -------------------------
# ``list_layers(..., details=True)`` says what each layer's axes mean. DINOv2 with
# registers has 1 class token and 4 register tokens before its 37 x 37 patch tokens:
# its weights were trained at 518 px, and skfeat uses their own input size.
import skfeat

model = "timm:vit_small_patch14_reg4_dinov2"
layers = skfeat.list_layers(model, weights=None, details=True)
for name in ("patch_embed.proj", "blocks.0", "blocks.11", "norm", "penultimate"):
    layer = layers[name]
    print(f"{name:17} {layer.layout:8} {layer.shape!s:13} prefix={layer.prefix_tokens}")

# %%
# Poolings on tokens
# ------------------
# On tokens, ``avg``, ``max`` and ``gem`` pool the patch tokens only (the class and
# register tokens are left out, as timm does), ``cls`` is the class token and
# ``clsavg`` both, concatenated. Their widths are known before any image is read.
print({pooling: layers["norm"].widths[pooling] for pooling in skfeat.list_poolings()})

# %%
# DINOv2's linear-probe features in one pass
# ------------------------------------------
# Two featurizers in a ``FeatureUnion`` share one cache. The first computes, for each
# new image, every named pooling of the model's usual stages (its 12 blocks and the
# final norm) and stores them; the second finds what it needs there.
from sklearn.pipeline import FeatureUnion

from skfeat import ActivationCache, PretrainedCNNFeaturizer

flowers = skfeat.load_flowers_sample()
paths = flowers.paths[::10]  # 15 photos keep the example fast at 518 px on a CPU
cache = ActivationCache()
probe_features = FeatureUnion(
    [
        (
            "class_tokens",
            PretrainedCNNFeaturizer(
                model,
                weights=None,
                layer=["blocks.8", "blocks.9", "blocks.10", "norm"],
                pooling="cls",
                cache=cache,
            ),
        ),
        (
            "patch_mean",
            PretrainedCNNFeaturizer(
                model, weights=None, layer="norm", pooling="avg", cache=cache
            ),
        ),
    ]
)
features = probe_features.fit_transform(paths)
names = probe_features.get_feature_names_out()
print(features.shape, names[0], names[-1])
print(cache.stats())

# %%
# ``misses`` counts the images the backbone ran on: each photo once, for both
# featurizers. The second featurizer's lookups are the ``hits``. The feature names say
# layer, pooling and index, so a model fitted on them can be read back.
#
# The blocks are read through the model's final norm (``intermediate_norm="final"``,
# the default), as DINOv2's own evaluation code reads them, and ``norm`` is the last
# block after it: these are DINOv2's features exactly. One featurizer gives them too,
# with one pooling per layer: ``layer=["blocks.-4", "blocks.-3", "blocks.-2",
# "blocks.-1"]`` and ``pooling=["cls", "cls", "cls", "clsavg"]``.
