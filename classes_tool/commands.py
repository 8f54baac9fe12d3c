"""Commands beyond describe/sites/patch: campaign, report, convert (one function call each)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from classes_tool.cli import seed_argument


def cmd_campaign(args: argparse.Namespace) -> None:
    from classes_tool.campaign.config import read_yaml
    from classes_tool.errors import UserError

    raw = read_yaml(args.config)
    target = raw.get("target", "layers")
    distributed = args.workers is not None or args.address is not None
    if distributed and target != "layers":
        raise UserError(f"--workers and --address run layers campaigns on Ray; a {target} "
                        "campaign runs in one process")
    if target == "systolic":
        from classes_tool.systolic.campaign import load_systolic_config, run_systolic_campaign

        result = run_systolic_campaign(load_systolic_config(args.config), args.out, args.seed,
                                       args.quiet)
        print(f"results: {result.get('db')}")
        return
    if target == "snn":
        from classes_tool.snn.runner import run_snn_campaign_from_config

        if args.resume:
            raise UserError("an SNN campaign runs in one piece and keeps no partial results, "
                            "so there is nothing to resume; --resume applies to layers "
                            "campaigns (systolic ones always continue their database)")

        raw = _rebase(raw, Path(args.config).resolve().parent, ("model", "data", "output"))
        out = args.out or raw.get("output") or Path("runs") / Path(args.config).stem
        seed = args.seed if args.seed is not None else raw.get("seed", 0)
        written = run_snn_campaign_from_config(raw, out, seed, args.quiet, source=args.config)
        for path in written.values():
            print(f"wrote {path}")
        return
    if target != "layers":
        raise UserError(f"config key 'target' must be layers, systolic or snn, got {target!r}")
    from classes_tool.campaign.report import format_summary, target_estimates
    from classes_tool.campaign.runner import Campaign

    campaign = Campaign(args.config, out=args.out, seed=args.seed, quiet=args.quiet,
                        workers=args.workers, address=args.address,
                        threads_per_worker=args.threads_per_worker)
    try:
        campaign.run(resume=args.resume)
    except KeyboardInterrupt:
        print(f"interrupted: every finished batch is stored in {campaign.db_path}; continue "
              "with --resume")
        raise
    if not args.quiet:
        print(format_summary(*target_estimates(campaign.db_path)))
    print(f"results: {campaign.db_path}; report (tables, plots, --csv) with: classes-tool "
          f"report {campaign.db_path} -o {Path(campaign.config.output) / 'report'}")


def _rebase(raw: dict, base: Path, keys: tuple[str, ...]) -> dict:
    """Make the config's relative paths relative to the config file's folder."""
    return {k: (str(base / v) if k in keys and isinstance(v, str) and not Path(v).is_absolute()
                else v) for k, v in raw.items()}


def cmd_train(args: argparse.Namespace) -> None:
    from classes_tool.files import refuse_inputs_as_output
    from classes_tool.quant.config import load_yaml, parse_train_run
    from classes_tool.quant.training import train_from_config

    out = Path(args.out or Path("runs") / Path(args.config).stem)
    config = load_yaml(args.config)
    run = parse_train_run(config, Path(args.config).parent, args.config)
    stem = Path(run.training.output)
    inputs = {"model": run.model, "training data": run.train_data, "test data": run.test_data,
              "config": args.config}
    for name in (run.training.output, f"{stem.stem}_injected{stem.suffix}", "history.json",
                 "fault_statistics.json", "evaluation.json"):
        refuse_inputs_as_output(out / name, inputs)
    for path in train_from_config(config, out, quiet=args.quiet,
                                  base_dir=Path(args.config).parent).values():
        print(f"wrote {path}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from classes_tool.quant.sweep import parse_probabilities, sweep_from_config

    out = args.out or Path("runs") / f"{Path(args.config).stem}_sweep"
    written = sweep_from_config(args.config, out, parse_probabilities(args.sweep_prob),
                                seeds=args.seeds, quiet=args.quiet, model_path=args.model)
    for path in written.values():
        print(f"wrote {path}")


def register_quant(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="fault-aware training from a YAML config")
    p.add_argument("config")
    p.add_argument("--out", help="output folder (default runs/<config name>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("sweep", help="accuracy versus fault probability (quantized faults)")
    p.add_argument("config")
    p.add_argument("--sweep-prob", default="0,1,2,5,10", help="percentages, e.g. 0,1,2,5,10")
    p.add_argument("--seeds", type=int, default=3, help="fault seeds per probability")
    p.add_argument("--model", help="model to sweep instead of the config's")
    p.add_argument("--out", help="output folder")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_sweep)


def cmd_report(args: argparse.Namespace) -> None:
    from classes_tool.campaign.report import write_report
    from classes_tool.campaign.store import ResultStore
    from classes_tool.errors import UserError

    out = Path(args.output) if args.output else Path(args.db).parent / "report"
    group_params, heatmap = tuple(args.group_param), args.heatmap
    with ResultStore(args.db, must_exist=True) as store:
        systolic = store.meta.get("target") == "systolic"
    if systolic:  # the same report the systolic campaign writes, unless told otherwise
        group_params = group_params or ("line", "bit")
        heatmap = heatmap or ("x", "y")
    if args.csv and (Path(args.csv).is_dir() or not Path(args.csv).resolve().parent.is_dir()):
        raise UserError(f"cannot write the CSV to {args.csv}: a folder, or in a folder that "
                        "does not exist")
    # every option is checked before the first file is written (see write_report)
    written = write_report(args.db, out, group_params=group_params, heatmap=heatmap,
                           outcome=args.outcome, statistics=args.statistics, csv_path=args.csv)
    for path in written.values():
        print(f"wrote {path}")


def cmd_convert(args: argparse.Namespace) -> None:
    from classes_tool.convert import convert_onnx_with_report, parse_input_shapes
    from classes_tool.files import refuse_inputs_as_output

    refuse_inputs_as_output(args.output, {"model": args.model})
    _, report = convert_onnx_with_report(args.model, args.output,
                                         input_shapes=parse_input_shapes(args.input_shape),
                                         verify=not args.no_verify, tolerance=args.tolerance)
    diff = "skipped" if report.max_abs_diff is None else f"{report.max_abs_diff:.3g}"
    print(f"wrote {report.output_path}: {report.layers} layers, Keras inputs "
          f"{report.input_shapes} (4-D inputs are NHWC), max abs difference vs ONNX Runtime: "
          f"{diff}")


def register_campaign(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=cmd_campaign)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def register_report(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=cmd_report)


def register_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ONNX model into a patchable Keras file")
    p.add_argument("model")
    p.add_argument("-o", "--output", required=True, help=".h5 or .keras")
    p.add_argument("--input-shape", action="append",
                   help="per input, without batch, in the ONNX layout, e.g. 3,48,192")
    p.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest accepted abs difference vs ONNX Runtime (default 1e-4)")
    p.set_defaults(func=cmd_convert)


def cmd_build_native(args: argparse.Namespace) -> None:
    from classes_tool.errors import UserError
    from classes_tool.simulator import native, native_sites

    failed = []
    # the write kernel, then the site generator: one failing does not stop the other
    for part, ready, unloadable in (
            (native, "native in-place write ready", "TensorFlow cannot load it"),
            (native_sites, "native site generator ready", "cannot be loaded")):
        try:
            path = part.build(force=args.force)
            if not part.enabled():
                print(f"built {path} (CLASSES_TOOL_NATIVE=0: not used)")
            elif part.load() is None:
                raise UserError(f"{path} was built but {unloadable}")
            else:
                print(f"{ready}: {path}")
        except UserError as exc:
            failed.append(exc)
    if failed:
        raise failed[0] if len(failed) == 1 else UserError("; ".join(map(str, failed)))


def register_build_native(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build-native", help="compile the in-place write kernel and the site "
                                            "generator the simulator uses when available")
    p.add_argument("--force", action="store_true", help="rebuild even if it is built")
    p.set_defaults(func=cmd_build_native)


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    register_campaign, register_report, register_convert, register_quant, register_build_native]
