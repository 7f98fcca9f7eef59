"""
From the command line to Parquet to pandas
==========================================

For a folder of photos, ``skfeat extract`` computes the features without writing any
Python and saves them in a file: here a Parquet table with one row per image, which
pandas (or polars, DuckDB, Spark) reads back. Large runs are written in chunks, so
memory stays flat, and an interrupted run continues with ``--resume``.
"""

# %%
# A folder of photos
# ------------------
# We copy the bundled flower photos into a temporary folder, one sub-folder per class,
# as photos usually arrive.
import shutil
import tempfile
from pathlib import Path

import skfeat

flowers = skfeat.load_flowers_sample()
workdir = Path(tempfile.mkdtemp(prefix="skfeat-example-"))
photos = workdir / "photos"
for path, label in zip(flowers.paths, flowers.target, strict=True):
    folder = photos / flowers.target_names[label]
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, folder)
print(sorted(folder.name for folder in photos.iterdir()))

# %%
# Extract
# -------
# In a shell, in the folder above ``photos``, this is
# ``skfeat extract photos -o features.parquet``; here we run the same command as a
# subprocess (``python -m skfeat`` is the ``skfeat`` command).
# The folder is searched recursively and the images are processed in path order.
import subprocess
import sys

command = "extract photos -o features.parquet --model efficientnet_lite0 --quiet"
result = subprocess.run(
    [sys.executable, "-m", "skfeat", *command.split()],
    cwd=workdir,
    capture_output=True,
    text=True,
    check=True,
)
print(result.stderr)

# %%
# Read it with pandas
# -------------------
# The table has a ``path`` column and one column per feature, named as
# :meth:`~skfeat.PretrainedCNNFeaturizer.get_feature_names_out` names them.
import pandas as pd

features = pd.read_parquet(workdir / "features.parquet")
print(features.shape)
features.iloc[:3, :3]

# %%
# The labels come from the folder names; the rest is ordinary scikit-learn.
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

y = features["path"].map(lambda path: Path(path).parent.name)
X = features.drop(columns="path")
probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))
scores = cross_val_score(probe, X, y, cv=5)
print(f"5-fold accuracy: {scores.mean():.2f}")

# %%
# The same features as in Python
# ------------------------------
# The command runs :class:`~skfeat.PretrainedCNNFeaturizer` with the same defaults, so
# the file holds the features ``transform`` gives, row for row:
import numpy as np

from skfeat import PretrainedCNNFeaturizer

first = [workdir / path for path in features["path"].iloc[:4]]
in_python = PretrainedCNNFeaturizer("efficientnet_lite0").fit_transform(first)
print(np.allclose(X.iloc[:4].to_numpy(), in_python, atol=1e-5))

shutil.rmtree(workdir)
