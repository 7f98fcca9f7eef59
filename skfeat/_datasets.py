"""Small datasets bundled with skfeat, for the ``skfeat demo`` command and the docs.

Only the standard library and numpy are imported here at module import time; scikit-learn
(a core dependency) and pandas (optional) are imported inside :func:`load_flowers_sample`.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import sys
import tempfile
from contextlib import ExitStack
from importlib.resources import as_file, files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

    from sklearn.utils import Bunch

__all__ = ["load_flowers_sample"]

_FLOWERS_DIR = "flowers5"
_ATTRIBUTION = "ATTRIBUTION.txt"
_README = "README.md"
_IMAGE_SUFFIXES = (".jpg", ".jpeg")

# Keeps any temporary copy of package data (made only when skfeat is not installed as plain
# files, e.g. imported from a zip) alive until the interpreter exits, as the
# ``importlib.resources`` documentation recommends for ``as_file``.
_file_manager = ExitStack()
atexit.register(_file_manager.close)


def _extract_tree(resource: Traversable, target: Path) -> None:
    """Copy a resource directory tree to ``target`` on the file system."""
    target.mkdir(parents=True, exist_ok=True)
    for child in resource.iterdir():
        if child.is_dir():
            _extract_tree(child, target / child.name)
        else:
            (target / child.name).write_bytes(child.read_bytes())


@functools.cache
def _data_dir(name: str) -> Path:
    """Return a real directory holding the bundled data set ``name``.

    When skfeat is installed as a regular directory (the usual case) this is the package
    directory itself and nothing is copied. Otherwise the tree is extracted once to a temporary
    directory that lives until the interpreter exits.
    """
    resource = files("skfeat") / "_data" / name
    if isinstance(resource, Path) or sys.version_info >= (3, 12):
        # ``as_file`` yields a plain Path unchanged, and handles directories from Python 3.12.
        path = _file_manager.enter_context(as_file(resource))
    else:  # pragma: no cover - zip-imported skfeat on Python < 3.12
        tmp = Path(tempfile.mkdtemp(prefix=f"skfeat-{name}-"))
        _file_manager.callback(shutil.rmtree, tmp, ignore_errors=True)
        _extract_tree(resource, tmp)
        path = tmp
    path = Path(path).resolve()
    if not path.is_dir():
        raise FileNotFoundError(
            f"skfeat's bundled data set {name!r} was not found at {str(path)!r}; "
            "the installation looks incomplete, reinstall skfeat."
        )
    return path


def load_flowers_sample(*, as_frame: bool = False) -> Bunch:
    """Load the bundled sample of 150 labelled flower photos (5 classes, CC BY 2.0).

    The sample holds 30 real RGB photos, 128x128 JPEG, of each of ``daisy``, ``dandelion``,
    ``rose``, ``sunflower`` and ``tulip`` (about 400 KB in all), taken from the TensorFlow
    ``flower_photos`` set. It is meant for quick demos, documentation examples and tests, not
    for benchmarking: the images are small and the classes have few examples.

    Parameters
    ----------
    as_frame : bool, default=False
        If True, also return ``frame``, a :class:`pandas.DataFrame` with one row per image.
        Needs pandas (``pip install "skfeat[pandas]"``).

    Returns
    -------
    data : sklearn.utils.Bunch
        Dictionary-like object with the attributes:

        paths : list of str
            Absolute paths of the 150 JPEG files, sorted by class name then file name. Pass
            them straight to a skfeat transformer as ``X``.
        target : numpy.ndarray of int64, shape (150,)
            Class index of each image, an index into ``target_names``.
        target_names : list of str
            The sorted class names, ``['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']``.
        attribution : str
            Absolute path of ``ATTRIBUTION.txt``, naming the photographer and Flickr source
            URL of every image, as the licence requires.
        DESCR : str
            Description of the sample: classes, provenance, licence and how it was drawn.
        frame : pandas.DataFrame of shape (150, 2)
            Only when ``as_frame=True``. Columns ``path`` (str, as in ``paths``) and ``label``
            (str, the class name of each row, ``target_names[target]``).

    Raises
    ------
    ImportError
        If ``as_frame=True`` and pandas is not installed
        (:class:`skfeat.exceptions.MissingDependencyError`, a subclass of ImportError).

    See Also
    --------
    PretrainedCNNFeaturizer : Turns the photos at ``paths`` into features.

    Notes
    -----
    Each image is licensed under Creative Commons Attribution 2.0
    (https://creativecommons.org/licenses/by/2.0/) by its photographer, listed with the Flickr
    source URL in the file at ``attribution``. The images are modified versions of the
    originals (resized and cropped to 128x128). If you redistribute or publish them, keep
    that attribution with them.

    The 30 images of each class were drawn deterministically from a larger 128x128 copy of
    the CC BY licensed part of tf_flowers: sorted by file name, every ``n / 30``-th file.

    Examples
    --------
    >>> import numpy as np
    >>> from skfeat._datasets import load_flowers_sample
    >>> data = load_flowers_sample()
    >>> len(data.paths)
    150
    >>> data.target_names
    ['daisy', 'dandelion', 'rose', 'sunflower', 'tulip']
    >>> np.bincount(data.target).tolist()
    [30, 30, 30, 30, 30]
    >>> data.target_names[data.target[-1]]
    'tulip'
    >>> frame = load_flowers_sample(as_frame=True).frame
    >>> frame.shape, list(frame.columns)
    ((150, 2), ['path', 'label'])
    """
    from sklearn.utils import Bunch

    root = _data_dir(_FLOWERS_DIR)
    target_names = sorted(
        entry.name
        for entry in root.iterdir()
        if entry.is_dir() and not entry.name.startswith((".", "_"))
    )
    paths: list[str] = []
    target: list[int] = []
    for index, name in enumerate(target_names):
        images = sorted(
            entry.name
            for entry in (root / name).iterdir()
            if entry.is_file() and entry.suffix.lower() in _IMAGE_SUFFIXES
        )
        paths.extend(str(root / name / image) for image in images)
        target.extend([index] * len(images))
    if not paths:
        raise FileNotFoundError(
            f"No images found in skfeat's bundled data at {str(root)!r}; "
            "the installation looks incomplete, reinstall skfeat."
        )
    readme = root / _README
    data = Bunch(
        paths=paths,
        target=np.asarray(target, dtype=np.int64),
        target_names=target_names,
        attribution=str(root / _ATTRIBUTION),
        DESCR=readme.read_text(encoding="utf-8") if readme.is_file() else "",
    )
    if as_frame:
        from skfeat._optional import import_optional

        pd = import_optional("pandas", extra="pandas", purpose="load_flowers_sample(as_frame=True)")
        data.frame = pd.DataFrame(
            {"path": paths, "label": [target_names[i] for i in target]},
            columns=["path", "label"],
        )
    return data
