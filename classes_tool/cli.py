"""`classes-tool`: a thin shell over the Python API.

The parsers are here; what each command does is in `classes_tool.commands` (one call into the
Python API each). An expected failure becomes a one-line message on stderr with exit code 2
(bugs keep their traceback). TensorFlow is loaded only by the commands that need it, so
`--help` and `report` start fast.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Sequence

from classes_tool import commands
from classes_tool.errors import expected_failure

EXIT_USER_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """argparse, reading any argument that starts like a negative number as a value.

    Stock argparse takes only plain numbers (-3, -0.5) for values and everything else that
    starts with "-" for an option, so `--range -3,3` or `--tolerance -1e-3` failed with
    "expected one argument". No option of ours is spelled like a number, so an argument
    starting with "-" and a digit (or "-." and a digit) is always a value. Subcommand parsers
    inherit this class.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\.?\d")


def _quiet_tensorflow() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def _shape(text: str) -> tuple[int, ...]:
    """'3,48,192' -> (3, 48, 192): one model input's shape without the batch axis."""
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape '{text}': use e.g. 3,224,224") from None
    if any(d < 1 for d in shape):
        raise argparse.ArgumentTypeError(f"bad shape '{text}': every dimension must be a "
                                         "positive integer")
    return shape


def _int_within(text: str, what: str, low: int, high: int, allowed: str) -> int:
    """An integer option in [low, high]; argparse prints the message with the usage line."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad {what} '{text}': use an integer") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"bad {what} {value}: use {allowed}")
    return value


def seed_argument(text: str) -> int:
    """A --seed: an integer in [0, 2**63 - 1] (what every seeded part of the tool accepts)."""
    from classes_tool.simulator.sites import MAX_SEED

    return _int_within(text, "seed", 0, MAX_SEED, "an integer in [0, 2**63 - 1]")


#: Sites per target above this are refused: each site is stored in the patched model's weights,
#: and drawing 10**11 of them would run for hours and fill the memory before failing.
MAX_SITES = 10_000_000


#: sites.OUT_OF_RANGE_MODES, written out so that parsing arguments does not import NumPy
OUT_OF_RANGE_MODES = ("bounded", "bit_pattern")


def _sites(text: str) -> int:
    return _int_within(text, "number of sites", 1, MAX_SITES, f"1 to {MAX_SITES:,}")


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad range '{text}': use LOW,HIGH") from None
    return low, high


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def _add_model_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--after", action="append", default=[], metavar="NODE",
                   help="inject after this node (repeatable)")
    p.add_argument("--after-type", action="append", default=[], metavar="CLASS",
                   help="inject after every layer of this Keras class, e.g. Conv2D (repeatable)")


def _add_input_shape(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", type=_shape, action="append",
                   help="ONNX only: one input's shape without batch, e.g. 3,224,224 "
                   "(repeat per input)")


def _add_site_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--error-model",
                   help="error model name or CLASSES JSON path (default: by layer type)")
    p.add_argument("--sites", type=_sites,
                   help=f"sites per target (default 1000, at most {MAX_SITES:,})")
    p.add_argument("--seed", type=seed_argument, help="random seed (default 0)")
    p.add_argument("--calibration", metavar="DATA.npz",
                   help="inputs whose golden activations give each target's normal range")
    p.add_argument("--range", type=_range, metavar="LOW,HIGH",
                   help="normal value range for all targets (instead of calibration), "
                        "e.g. --range -2,2")
    p.add_argument("--out-of-range", choices=OUT_OF_RANGE_MODES,
                   help="how out-of-range values are drawn: bounded (default, finite) or "
                        "bit_pattern (random float32 bits, as the CLASSES reference simulator)")


def _add_campaign(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("campaign", help="run a fault-injection campaign from a YAML config")
    p.add_argument("config")
    p.add_argument("--resume", action="store_true", help="continue an interrupted campaign")
    p.add_argument("--out", help="output folder (overrides the config)")
    p.add_argument("--seed", type=seed_argument, help="seed (overrides the config)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    p.add_argument("--workers", type=_positive, help="run on a local Ray runtime with this many "
                   "workers (needs classes-tool[distributed])")
    p.add_argument("--address", help="run on the Ray cluster at this address ('auto': the one "
                   "started on this machine with 'ray start')")
    p.add_argument("--threads-per-worker", type=_positive,
                   help="TensorFlow threads of each worker (default: cores / workers)")
    p.set_defaults(func=commands.cmd_campaign)


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables and plots from a campaign's results.db")
    p.add_argument("db")
    p.add_argument("-o", "--output", help="report folder (default: beside the database)")
    p.add_argument("--group-param", action="append", default=[], metavar="KEY",
                   help="also tabulate by this fault parameter (repeatable; systolic "
                        "campaigns: line and bit by default)")
    p.add_argument("--heatmap", nargs=2, metavar=("X", "Y"),
                   help="heat map of an outcome's rate over two fault parameters (systolic "
                        "campaigns: x y, i.e. per PE, by default)")
    p.add_argument("--outcome", help="outcome the heat map shows (default critical_sdc)")
    p.add_argument("--csv", help="also export every row to this CSV file")
    p.add_argument("--statistics", action="append", default=[], metavar="JSON",
                   help="add per-layer injection statistics (from train/sweep) to the summary")
    p.set_defaults(func=commands.cmd_report)


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ONNX model into a patchable Keras file")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help=".h5 or .keras")
    p.add_argument("--input-shape", action="append",
                   help="per input, without batch, in the ONNX layout, e.g. 3,48,192")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted abs difference vs ONNX Runtime (default 1e-4)")
    p.set_defaults(func=commands.cmd_convert)


def _add_quant(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fault-aware training from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=commands.cmd_train)
    p = sub.add_parser("sweep", help="accuracy versus fault probability (quantized faults)")
    p.add_argument("config")
    p.add_argument("--sweep-prob", default="0,1,2,5,10", help="percentages, e.g. 0,1,2,5,10")
    p.add_argument("--seeds", type=int, default=3, help="fault seeds per probability")
    p.add_argument("--model", help="model to sweep instead of the config's")
    p.add_argument("--out", help="output folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=commands.cmd_sweep)


def _add_build_native(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-native", help="compile the in-place write kernel and the site "
                                            "generator the simulator uses when available")
    p.add_argument("--force", action="store_true", help="rebuild even if it is built")
    p.set_defaults(func=commands.cmd_build_native)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="classes-tool", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("describe", help="describe a model's graph as JSON")
    p.add_argument("model")
    p.add_argument("-o", "--output", help="JSON file (default: print)")
    _add_input_shape(p)
    p.set_defaults(func=commands.cmd_describe)

    p = sub.add_parser("sites", help="generate injection sites into a .npz")
    p.add_argument("model")
    _add_model_selection(p)
    _add_site_options(p)
    p.add_argument("-o", "--output", required=True)
    _add_input_shape(p)
    p.set_defaults(func=commands.cmd_sites)

    p = sub.add_parser("patch", help="write a copy of a model with ErrorSimulator layers")
    p.add_argument("model")
    _add_model_selection(p)
    _add_site_options(p)
    p.add_argument("--sites-file", help="use sites from `classes-tool sites` instead")
    p.add_argument("--inactive", action="store_true",
                   help="save with injection off (turn on with classes_tool.set_injection)")
    p.add_argument("-o", "--output", required=True, help="patched model (.h5 or .keras)")
    _add_input_shape(p)
    p.set_defaults(func=commands.cmd_patch)

    p = sub.add_parser("demo", help="patch and evaluate the shipped example")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=commands.cmd_demo)

    for add in (_add_campaign, _add_report, _add_convert, _add_quant, _add_build_native):
        add(sub)
    return parser


#: Commands that never need TensorFlow (it takes seconds to load).
WITHOUT_TENSORFLOW = (commands.cmd_report,)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.func not in WITHOUT_TENSORFLOW:
            # loaded here, before the command, without the lines TensorFlow prints as it loads
            from classes_tool.tf_startup import import_tensorflow

            import_tensorflow()
        args.func(args)
    except KeyboardInterrupt:
        print("classes-tool: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        # the one place where expected failures (a user mistake, a path the system refuses, a
        # full disk, too little memory, a file nested too deeply, a model library refusing a
        # file) become one line and exit 2; anything else is a bug and keeps its traceback
        message = expected_failure(exc)
        if message is None:
            raise
        print(f"classes-tool: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())

