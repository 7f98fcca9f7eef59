"""The ``skfeat`` parser and entry point: one subcommand per job, errors in one line."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import skfeat
from skfeat._cli._common import note, warn
from skfeat._params import str_options

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
skfeat: pretrained CNN features for scikit-learn, from the command line.

Start with `skfeat demo` (offline, about a minute on a laptop CPU), then
`skfeat extract photos/ -o features.parquet` on your own images.
"""

_EPILOG = """\
examples:
  skfeat demo
  skfeat extract photos/ -o features.parquet --model efficientnet_lite0
  skfeat layers resnet50
  skfeat models

Run `skfeat COMMAND --help` for the options of each command.
"""

_DEMO_HELP = """\
Featurize the bundled sample of 150 flower photos (CC BY 2.0) with
EfficientNet-Lite0 (ImageNet weights, no network needed), cross-validate a
StandardScaler + LogisticRegression probe, and compare it with the same probe on
random-init features and on raw pixels. Then tour a grid of layers x poolings,
print the table of scores and save a figure (PCA of the best features beside the
heatmap of scores).
"""

_DEMO_EPILOG = """\
example:
  skfeat demo --output demo.png

needs: pip install "skfeat[demo]"
"""


_EXTRACT_HELP = """\
Compute CNN features for many images and write them to a file.

SRC is a folder (searched recursively for image files, sorted by path), a glob
pattern (quote it), a text file with one path per line, or a CSV/Parquet file
with --column NAME. OUT ends in .parquet (a `path` column and one column per
feature, or one list column `features` with --list-column), .npy (float32 array;
paths in <stem>.paths.txt beside it) or .csv (a `path` column and the features).

Images are processed --chunk-size at a time, so memory stays flat. An
interrupted run keeps its progress in OUT.partial/; rerun with --resume to
continue, and the result is the same file an uninterrupted run writes.
"""

_EXTRACT_EPILOG = """\
examples:
  skfeat extract photos/ -o features.parquet
  skfeat extract "photos/**/*.jpg" -o features.npy --model resnet50 --layer layer3,layer4
  skfeat extract table.csv --column image_path -o features.csv --pooling gem --normalize l2
  skfeat extract photos/ -o features.parquet --resume     # after an interruption

read the result:  pandas.read_parquet("features.parquet")
"""

_LAYERS_EPILOG = """\
examples:
  skfeat layers resnet50 --depth 1
  skfeat layers efficientnet_lite0
  skfeat layers timm:convnext_tiny --weights none

"-" marks a pooling that does not apply (GeM and avgmax need a spatial map).
"""

_MODELS_EPILOG = """\
examples:
  skfeat models
  skfeat models --all | grep resnet
"""

_INFO_EPILOG = """\
examples:
  skfeat info
  skfeat info --model resnet50 --device cpu
"""


_CHECK_EPILOG = """\
examples:
  skfeat check photos/
  skfeat check table.csv --column image_path --report scan.csv
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; a little wider than the default.

    An option that passes a featurizer parameter shows the featurizer's own default,
    read from its signature only when help is printed, so parsing stays instant.
    """

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help
        parameter = getattr(action, "featurizer_parameter", None)
        if text is not None and parameter is not None:
            text += f" (default: {_featurizer_default(parameter)})"
        return text


def _featurizer_default(parameter: str) -> str:
    import inspect

    from skfeat import PretrainedCNNFeaturizer

    default = inspect.signature(PretrainedCNNFeaturizer).parameters[parameter].default
    return "all cores, at most 8" if default is None and parameter == "n_jobs" else str(default)


_FEATURIZER = "featurizer."  # the prefix of the destinations of featurizer options


def _featurizer_option(
    parser: argparse.ArgumentParser, *flags: str, parameter: str, **kwargs: Any
) -> None:
    """An option passed to the featurizer as ``parameter``; left out, its default holds."""
    if "choices" not in kwargs:
        kwargs.setdefault("metavar", parameter.upper())  # not the destination's name
    action = parser.add_argument(*flags, dest=_FEATURIZER + parameter, default=None, **kwargs)
    action.featurizer_parameter = parameter  # type: ignore[attr-defined]


def build_parser() -> argparse.ArgumentParser:
    """The ``skfeat`` argument parser with every subcommand.

    Returns
    -------
    parser : argparse.ArgumentParser
        Parses ``skfeat [--debug] COMMAND ...``.

    Examples
    --------
    >>> from skfeat._cli import build_parser
    >>> build_parser().parse_args(["demo", "--output", "out.png"]).output
    PosixPath('out.png')
    """
    # --debug is accepted before or after the command; SUPPRESS keeps the subparser
    # from resetting a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the full traceback on errors",
    )
    parser = argparse.ArgumentParser(
        prog="skfeat",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"skfeat {skfeat.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser(
        "demo",
        parents=[common],
        help="offline tour on bundled flower photos: accuracy, layer x pooling grid, figure",
        description=_DEMO_HELP,
        epilog=_DEMO_EPILOG,
        formatter_class=_Formatter,
    )
    demo.add_argument(
        "-o",
        "--output",
        type=Path,
        default=Path("skfeat-demo.png"),
        metavar="PATH",
        help="PNG file for the figure (default: skfeat-demo.png)",
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="seed of the cross-validation folds (default: 0)"
    )
    demo.set_defaults(handler=_run_demo)

    extract = commands.add_parser(
        "extract",
        parents=[common],
        help="featurize a folder, glob, list or table of images into Parquet, NumPy or CSV",
        description=_EXTRACT_HELP,
        epilog=_EXTRACT_EPILOG,
        formatter_class=_Formatter,
    )
    extract.add_argument("source", metavar="SRC", help="folder, glob, list of paths, CSV/Parquet")
    extract.add_argument(
        "-o", "--output", type=Path, required=True, metavar="OUT", help="the .parquet/.npy/.csv"
    )
    extract.add_argument("--column", metavar="NAME", help="column of image paths in a table SRC")
    _add_model_options(extract)
    extract.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="layer to read (repeat, or a comma list, to concatenate; default: penultimate)",
    )
    _featurizer_option(
        extract,
        "--pooling",
        parameter="pooling",
        choices=str_options("pooling"),
        help="how a feature map becomes a vector",
    )
    _featurizer_option(
        extract,
        "--preprocessing",
        parameter="preprocessing",
        type=_recipe,
        metavar="JSON",
        help=_PREPROCESSING_HELP,
    )
    _featurizer_option(
        extract,
        "--intermediate-norm",
        parameter="intermediate_norm",
        choices=str_options("intermediate_norm"),
        help="transformer blocks through the model's final norm (final) or as they are",
    )
    _featurizer_option(
        extract,
        "--normalize",
        parameter="normalize",
        choices=str_options("normalize"),
        help="scale each row to unit norm",
    )
    _featurizer_option(
        extract,
        "--batch-size",
        parameter="batch_size",
        type=_batch_size,
        metavar="N",
        help="images per forward pass, or auto",
    )
    _featurizer_option(
        extract, "--device", parameter="device", help="auto, cpu, cuda, cuda:1, mps..."
    )
    _featurizer_option(
        extract,
        "--precision",
        parameter="precision",
        choices=str_options("precision"),
        help="compute precision",
    )
    _featurizer_option(
        extract,
        "--runtime",
        parameter="runtime",
        choices=str_options("runtime"),
        help="what runs the backbone (openvino: pip install 'skfeat[openvino]')",
    )
    _featurizer_option(
        extract,
        "--decoder",
        parameter="decoder",
        choices=str_options("decoder"),
        help="what decodes JPEG pixels (simplejpeg: pip install 'skfeat[jpeg]')",
    )
    _featurizer_option(
        extract,
        "--on-error",
        parameter="on_error",
        choices=str_options("on_error"),
        help="an unreadable image: stop (raise), or keep its row as NaN or zeros",
    )
    _featurizer_option(
        extract,
        "--cache",
        parameter="cache",
        metavar="DIR",
        help="reuse activations stored in DIR across runs",
    )
    _featurizer_option(
        extract,
        "--n-jobs",
        parameter="n_jobs",
        type=int,
        metavar="N",
        help="image decoding threads",
    )
    extract.add_argument(
        "--chunk-size",
        type=int,
        default=1024,
        metavar="N",
        help="images per chunk written (default: 1024); the unit of --resume",
    )
    extract.add_argument(
        "--list-column",
        action="store_true",
        help="Parquet: one list column `features` instead of a column per feature",
    )
    extract.add_argument(
        "--resume", action="store_true", help="continue an interrupted run into the same OUT"
    )
    extract.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    extract.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(handler=_run_extract)

    layers = commands.add_parser(
        "layers",
        parents=[common],
        help="the layers of a model, with output shapes and width after each pooling",
        description="List the layers of MODEL that --layer / layer= accept, with the output "
        "shape\nfor one image and the number of features each pooling gives.",
        epilog=_LAYERS_EPILOG,
        formatter_class=_Formatter,
    )
    layers.add_argument("model", metavar="MODEL", help="a model name, see `skfeat models`")
    layers.add_argument(
        "--weights",
        type=_weights,
        default="DEFAULT",
        help="only matters where weights change the input size (default: DEFAULT)",
    )
    layers.add_argument(
        "--preprocessing", type=_recipe, default=None, metavar="JSON", help=_PREPROCESSING_HELP
    )
    layers.add_argument(
        "--depth",
        type=int,
        default=None,
        metavar="D",
        help="only layers with at most D dotted parts (layer4 is 1, layer4.1 is 2)",
    )
    layers.set_defaults(handler=_run_layers)

    models = commands.add_parser(
        "models",
        parents=[common],
        help="the model sources, and which need network or an extra",
        description="List where models come from, what each source needs, and the names.",
        epilog=_MODELS_EPILOG,
        formatter_class=_Formatter,
    )
    models.add_argument("--all", action="store_true", help="print every model name")
    models.set_defaults(handler=_run_models)

    info = commands.add_parser(
        "info",
        parents=[common],
        help='versions, and what the "auto" settings choose on this machine',
        description="Print the versions of skfeat and its dependencies, and the device,\n"
        'precision, runtime, decoder, batch size and threads that "auto" chooses here.',
        epilog=_INFO_EPILOG,
        formatter_class=_Formatter,
    )
    info.add_argument("--model", default="efficientnet_lite0", help="a model name")
    info.add_argument("--weights", type=_weights, default="DEFAULT", help="as for extract")
    info.add_argument("--device", default="auto", help="as for extract (default: auto)")
    info.set_defaults(handler=_run_info)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="find the images that cannot be read, and why (no model is loaded)",
        description="Decode every image of SRC (as `skfeat extract` takes it) and report the\n"
        "ones that fail, with the reason. Exit status 1 when any image is bad.",
        epilog=_CHECK_EPILOG,
        formatter_class=_Formatter,
    )
    check.add_argument("source", metavar="SRC", help="folder, glob, list of paths, CSV/Parquet")
    check.add_argument("--column", metavar="NAME", help="column of image paths in a table SRC")
    check.add_argument(
        "--n-jobs", type=int, default=None, metavar="N", help="image decoding threads"
    )
    check.add_argument(
        "--report", type=Path, default=None, metavar="CSV", help="write every row to CSV"
    )
    check.set_defaults(handler=_run_check)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    # Not the featurizer's default (resnet50, downloaded): a model that works offline.
    parser.add_argument(
        "--model",
        default="efficientnet_lite0",
        help="backbone (default: efficientnet_lite0, offline); see `skfeat models`",
    )
    parser.add_argument(
        "--weights",
        type=_weights,
        default="DEFAULT",
        help="DEFAULT, a torchvision weights tag, a state_dict PATH, or none (random init)",
    )


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


_PREPROCESSING_HELP = (
    'the recipe as JSON, e.g. \'{"resize_size": 256, "crop_size": 224}\' (skfeat\'s keys or a '
    "timm data config; a model file needs it, other models have their own)"
)


def _recipe(value: str) -> dict[str, Any]:
    import json

    try:
        recipe = json.loads(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {value!r} ({err})") from None
    if not isinstance(recipe, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {value!r}")
    return recipe


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        size = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1 or 'auto', got {value!r}") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1 or 'auto', got {value!r}")
    return size


def _layers(values: list[str] | None) -> str | list[str]:
    if not values:
        return "penultimate"
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return names[0] if len(names) == 1 else names


def _run_extract(args: argparse.Namespace) -> int:
    from skfeat._cli._extract_job import ExtractOptions, check_output, run_extract
    from skfeat._cli._sources import image_paths

    given = {  # the featurizer options given on the command line
        dest.removeprefix(_FEATURIZER): value
        for dest, value in vars(args).items()
        if dest.startswith(_FEATURIZER) and value is not None
    }
    params: dict[str, Any] = {
        **given,
        "model": args.model,
        "weights": args.weights,
        "layer": _layers(args.layer),
        "progress": not args.quiet,
    }
    options = ExtractOptions(
        featurizer=params,
        chunk_size=args.chunk_size,
        list_column=args.list_column,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    check_output(args.output, options)
    paths = image_paths(args.source, args.column)
    note(f"Found {len(paths)} images in {args.source!r}.")
    run_extract(paths, args.output, options)
    return 0


def _run_check(args: argparse.Namespace) -> int:
    from skfeat._cli._check_command import check_report
    from skfeat._cli._sources import image_paths

    paths = image_paths(args.source, args.column)
    text, n_bad = check_report(paths, n_jobs=args.n_jobs, report=args.report)
    print(text)
    return 1 if n_bad else 0


def _run_layers(args: argparse.Namespace) -> int:
    from skfeat._cli._info import layer_table

    print(layer_table(args.model, args.weights, args.depth, preprocessing=args.preprocessing))
    return 0


def _run_models(args: argparse.Namespace) -> int:
    from skfeat._cli._info import models_text

    print(models_text(show_all=args.all))
    return 0


def _run_info(args: argparse.Namespace) -> int:
    from skfeat._cli._info import info_text

    print(info_text(args.model, args.weights, args.device))
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from skfeat._cli._demo import run_demo

    run_demo(args.output, seed=args.seed)
    return 0


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if not text:
        text = type(error).__name__
    return text


def _show_warning(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
    warn(" ".join(str(message).split()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``skfeat`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``skfeat``; defaults to ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 on success, 1 when the command failed, 2 on a usage error, 130 when
        interrupted.

    Examples
    --------
    >>> from skfeat._cli import main
    >>> main(["--version"])  # doctest: +SKIP
    skfeat 0.1.0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 2
    debug = bool(getattr(args, "debug", False))
    with warnings.catch_warnings():  # restores the caller's warning display on return
        if not debug:
            warnings.showwarning = _show_warning
        return _run(args, debug)


def _run(args: argparse.Namespace, debug: bool) -> int:
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        if debug:
            raise
        print("skfeat: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        message = _one_line(error)
        if not isinstance(error, (skfeat.exceptions.SkfeatError, OSError)):
            message = f"{type(error).__name__}: {message} (run with --debug for the traceback)"
        print(f"skfeat: error: {message}", file=sys.stderr)
        return 1
