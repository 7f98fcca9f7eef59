"""The ``skfeat`` parser and entry point: one subcommand per job, errors in one line."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import skfeat
from skfeat._cli._common import warn

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


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; a little wider than the default."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)


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
        help="where to save the figure (PNG; default: ./skfeat-demo.png)",
    )
    demo.add_argument(
        "--seed", type=int, default=0, help="seed of the cross-validation folds (default: 0)"
    )
    demo.set_defaults(handler=_run_demo)
    return parser


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
    if not debug:
        warnings.showwarning = _show_warning
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
