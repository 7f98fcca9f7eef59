"""
Photos beside tabular columns in a ColumnTransformer
=====================================================

Images often come as one column of a table: a product photo beside its price, a scan
beside the patient's age. :class:`~sklearn.compose.ColumnTransformer` routes the image
column to :class:`~skfeat.PretrainedCNNFeaturizer` and the other columns to the usual
encoders, and one model learns from all of them.
"""

# %%
# A table with a photo column
# ---------------------------
# The photos and their labels are real (the 150 bundled flower photos). The two tabular
# columns are **synthetic**, made up for this example: a stem length drawn around a
# typical value for each species with a wide spread, and the garden the flower was
# picked in, loosely tied to the species. They carry some, but not all, of the
# information needed to tell the classes apart, as real side information would.
import numpy as np

import skfeat

flowers = skfeat.load_flowers_sample(as_frame=True)
frame = flowers.frame  # columns: path, label
rng = np.random.default_rng(0)

typical_stem_cm = {
    "daisy": 30,
    "dandelion": 20,
    "rose": 45,
    "sunflower": 90,
    "tulip": 35,
}
stem_noise = rng.normal(0, 15, size=len(frame))
frame["stem_length_cm"] = frame.label.map(typical_stem_cm) + stem_noise
usual_garden = {
    "daisy": "meadow",
    "dandelion": "meadow",
    "rose": "greenhouse",
    "sunflower": "field",
    "tulip": "greenhouse",
}
usual = rng.random(len(frame)) < 0.6  # 60% in the species' usual garden
any_garden = rng.choice(["meadow", "greenhouse", "field"], size=len(frame))
frame["garden"] = np.where(usual, frame.label.map(usual_garden), any_garden)
X, y = frame.drop(columns="label"), frame.label
X.head()

# %%
# The model
# ---------
# The ``"path"`` column goes to the featurizer, followed by a PCA that keeps 16
# whitened components of the 1280 image features, so that they have unit variance like
# the scaled stem length; the garden is one-hot encoded. ``set_output(transform="pandas")``
# makes every step pass DataFrames with named columns.
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from skfeat import PretrainedCNNFeaturizer

photo_features = make_pipeline(
    PretrainedCNNFeaturizer("efficientnet_lite0"),
    PCA(16, whiten=True),
)
columns = ColumnTransformer(
    [
        ("photo", photo_features, "path"),
        ("stem", StandardScaler(), ["stem_length_cm"]),
        ("garden", OneHotEncoder(sparse_output=False), ["garden"]),
    ]
)
model = make_pipeline(columns, LogisticRegression(max_iter=1000))
model.set_output(transform="pandas")
model

# %%
# Fit on two thirds of the rows, score on the rest, and compare with the same model
# without the photo column.
from sklearn.model_selection import train_test_split

X_train, X_test, y_train, y_test = train_test_split(
    X, y, test_size=1 / 3, stratify=y, random_state=0
)
model.fit(X_train, y_train)

tabular_only = make_pipeline(
    ColumnTransformer(
        [
            ("stem", StandardScaler(), ["stem_length_cm"]),
            ("garden", OneHotEncoder(sparse_output=False), ["garden"]),
        ]
    ),
    LogisticRegression(max_iter=1000),
).fit(X_train, y_train)

scores = {
    "tabular columns only": tabular_only.score(X_test, y_test),
    "tabular columns + photos": model.score(X_test, y_test),
}
for name, score in scores.items():
    print(f"{name}: {score:.2f}")

# %%
# The photos add what the made-up columns cannot say. (With 50 test rows, each one is
# worth 0.02 of accuracy: read the numbers as a rough comparison.)
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 2), layout="constrained")
ax.barh(list(scores), list(scores.values()), color=["tab:grey", "tab:green"])
ax.axvline(1 / 5, color="black", linestyle=":", label="chance")
ax.set_xlim(0, 1)
ax.set_xlabel("held-out accuracy")
ax.legend(loc="lower right")
plt.show()

# %%
# Feature names
# -------------
# Every column the classifier saw has a name. The featurizer names its outputs after
# layer, pooling and channel (``penultimate_avg_0000``...); here PCA renames them, and
# the ``ColumnTransformer`` prefixes each with its transformer's name.
classifier = model[-1]
names = list(classifier.feature_names_in_)
print(*names[:3], "...", *names[-4:], sep="\n")

# %%
# The names make the coefficients readable, here the largest for the class ``sunflower``:
import pandas as pd

coefficients = pd.Series(
    classifier.coef_[list(classifier.classes_).index("sunflower")],
    index=classifier.feature_names_in_,
)
coefficients.sort_values(key=abs, ascending=False).head(5)
