"""
Broken files in a photo folder: find them, keep going, keep ``y`` aligned
=========================================================================

Real folders hold more than photos: a download that saved an error page, a copy cut
short, an empty file. By default :class:`~skfeat.PretrainedCNNFeaturizer` stops at the
first one and names it. This example shows the two ways on:
:func:`skfeat.check_images` lists every unreadable file before any model work, and
``on_error="nan"`` keeps one row per input, in order, so the labels stay aligned
whatever you then do with the failed rows: drop them, or impute them in a pipeline.
"""

# %%
# A folder with a few broken files
# --------------------------------
# We copy the 150 bundled flower photos into a temporary folder and break three of
# them the way files break in practice. Their labels stay in ``y``: the files are bad,
# the rows are not.
import shutil
import tempfile
from pathlib import Path

import numpy as np

import skfeat

flowers = skfeat.load_flowers_sample()
folder = Path(tempfile.mkdtemp(prefix="skfeat-bad-images-"))
paths = []
for source in flowers.paths:
    target = folder / f"{len(paths):03d}_{Path(source).name}"
    shutil.copyfile(source, target)
    paths.append(str(target))
y = flowers.target

Path(paths[7]).write_bytes(Path(paths[7]).read_bytes()[:2000])  # a copy cut short
error_page = "<html><body>429 Too Many Requests</body></html>"
Path(paths[64]).write_text(error_page)  # an error page saved as a photo
Path(paths[121]).write_bytes(b"")  # an empty file
print(len(paths), "files in", folder)

# %%
# Find them before a long run
# ---------------------------
# :func:`skfeat.check_images` decodes every file in full (so a truncated file is caught),
# in threads, without loading a network. It returns a DataFrame, one row per input.
report = skfeat.check_images(paths)
bad = report[~report["ok"]]
for index, error in zip(bad["index"], bad["error"], strict=True):
    print(f"image {index}: {error}")
print(report["mode"].value_counts().to_dict())
print("sizes:", report["width"].unique().tolist())

# %%
# Option 1: drop the bad rows, with their labels
# ----------------------------------------------
# The report is aligned with ``paths``, so its ``ok`` column is the mask for both ``X``
# and ``y``.
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skfeat import PretrainedCNNFeaturizer

ok = report["ok"].to_numpy()
featurizer = PretrainedCNNFeaturizer("efficientnet_lite0", n_jobs=2)
features_ok = featurizer.fit_transform(np.asarray(paths)[ok])
classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
scores = cross_val_score(classifier, features_ok, y[ok], cv=3)
print(f"{ok.sum()} images kept, accuracy {scores.mean():.2f}")

# %%
# Option 2: keep going, one row per input
# ---------------------------------------
# With ``on_error="nan"`` the transform never stops: the rows of unreadable images are
# NaN, the others are exactly what they would be without the bad files, and one
# :class:`~skfeat.exceptions.ImageDecodeWarning` per call says which failed and why.
import warnings

from skfeat.exceptions import ImageDecodeWarning

featurizer = PretrainedCNNFeaturizer("efficientnet_lite0", n_jobs=2, on_error="nan")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always", ImageDecodeWarning)
    features = featurizer.fit_transform(paths)
print(caught[0].message)
print(features.shape, "rows, NaN rows:", np.flatnonzero(np.isnan(features).all(axis=1)))
assert np.allclose(features[ok], features_ok, atol=1e-5)

# %%
# The NaN rows can be dropped with their labels (``np.isnan(features).all(axis=1)``
# is the same mask as ``~ok``), or filled inside the model with
# :class:`~sklearn.impute.SimpleImputer`, which keeps every row of ``y``: the three
# broken files get the mean embedding and are predicted like an average photo.
from sklearn.impute import SimpleImputer

imputing_classifier = make_pipeline(
    SimpleImputer(strategy="mean"), StandardScaler(), LogisticRegression(max_iter=2000)
)
scores = cross_val_score(imputing_classifier, features, y, cv=3)
print(f"all {len(y)} rows kept, accuracy {scores.mean():.2f}")

shutil.rmtree(folder)
