"""`classes-tool`: a thin shell over the Python API.

Each command parses its arguments, calls one function, and maps a `UserError` to a one-line
message on stderr with exit code 2 (bugs keep their traceback). Heavy imports happen inside the
commands so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence

from classes_tool.errors import UserError, expected_failure
from classes_tool.files import refuse_inputs_as_output

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


def cmd_describe(args: argparse.Namespace) -> None:
    import json

    from classes_tool import patcher

    if args.output:
        refuse_inputs_as_output(args.output, {"model": args.model})
    description = patcher.describe(patcher.load(args.model, args.input_shape))
    if args.output:
        patcher.write_json(description, args.output)
        print(f"wrote {args.output} ({len(description['nodes'])} nodes)")
    else:
        print(json.dumps(description, indent=2))


def cmd_sites(args: argparse.Namespace) -> None:
    from classes_tool import patcher
    from classes_tool.simulator.sites import save_sites

    _site_defaults(args)
    refuse_inputs_as_output(args.output, _site_inputs(args))
    loaded = patcher.load(args.model, args.input_shape)
    targets = patcher.select_targets(loaded.graph, args.after, args.after_type)
    site_sets = patcher.make_sites(loaded, targets, args.sites, args.seed, args.error_model,
                                   args.calibration, args.range, args.out_of_range)
    save_sites(args.output, site_sets)
    for s in site_sets:
        print(f"{s.target}: {len(s)} sites from '{s.error_model}', range "
              f"[{s.value_range[0]:.4g}, {s.value_range[1]:.4g}], shape {s.shape}")
    print(f"wrote {args.output}")


def _site_inputs(args: argparse.Namespace) -> dict[str, object]:
    """The files a sites or patch command reads (none of them may be its output)."""
    error_model = args.error_model
    return {"model": args.model, "calibration data": args.calibration,
            "sites file": getattr(args, "sites_file", None),
            "error model": error_model if error_model and error_model.endswith(".json") else None}


#: Defaults of the site options, filled in after parsing so that `patch --sites-file` can tell
#: an option the user gave (and that the file's sites would silently override) from a default.
SITE_DEFAULTS = {"sites": 1000, "seed": 0, "error_model": "auto", "out_of_range": "bounded"}


def _site_defaults(args: argparse.Namespace) -> None:
    for key, value in SITE_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def cmd_patch(args: argparse.Namespace) -> None:
    from classes_tool import patcher

    if args.sites_file:
        given = [f"--{key.replace('_', '-')}" for key in
                 ("sites", "seed", "error_model", "range", "calibration", "out_of_range")
                 if getattr(args, key) is not None]
        if given:
            raise UserError(f"--sites-file brings its own sites; {', '.join(given)} would be "
                            "ignored: leave it out, or draw new sites without --sites-file")
    _site_defaults(args)
    refuse_inputs_as_output(args.output, _site_inputs(args))
    result = patcher.patch(args.model, args.output, args.after, args.after_type,
                           args.error_model, args.sites, args.seed, args.sites_file,
                           args.calibration, args.range, active=not args.inactive,
                           input_shapes=args.input_shape, out_of_range=args.out_of_range)
    for target in result["targets"]:
        print(f"{target}: ErrorSimulator with {result['sites'][target]} sites "
              f"('{result['error_models'][target]}')")
    print(f"wrote {result['output']}")


def cmd_demo(args: argparse.Namespace) -> None:
    from classes_tool.demo import run_demo

    run_demo(quiet=args.quiet)


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


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="classes-tool", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("describe", help="describe a model's graph as JSON")
    p.add_argument("model")
    p.add_argument("-o", "--output", help="JSON file (default: print)")
    _add_input_shape(p)
    p.set_defaults(func=cmd_describe)

    p = sub.add_parser("sites", help="generate injection sites into a .npz")
    p.add_argument("model")
    _add_model_selection(p)
    _add_site_options(p)
    p.add_argument("-o", "--output", required=True)
    _add_input_shape(p)
    p.set_defaults(func=cmd_sites)

    p = sub.add_parser("patch", help="write a copy of a model with ErrorSimulator layers")
    p.add_argument("model")
    _add_model_selection(p)
    _add_site_options(p)
    p.add_argument("--sites-file", help="use sites from `classes-tool sites` instead")
    p.add_argument("--inactive", action="store_true",
                   help="save with injection off (turn on with classes_tool.set_injection)")
    p.add_argument("-o", "--output", required=True, help="patched model (.h5 or .keras)")
    _add_input_shape(p)
    p.set_defaults(func=cmd_patch)

    p = sub.add_parser("demo", help="patch and evaluate the shipped example")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_demo)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


# Commands of other targets register themselves here (campaign, convert, ...).
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_tensorflow()
    _load_extra_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
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


def _load_extra_commands() -> None:
    if EXTRA_COMMANDS:
        return
    from classes_tool import commands

    EXTRA_COMMANDS.extend(commands.REGISTRARS)


if __name__ == "__main__":
    sys.exit(main())
