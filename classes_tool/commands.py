"""Commands beyond describe/sites/patch: campaign, report, convert (one function call each)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


def cmd_campaign(args: argparse.Namespace) -> None:
    from classes_tool.campaign.config import read_yaml
    from classes_tool.errors import UserError

    raw = read_yaml(args.config)
    target = raw.get("target", "layers")
    if target == "systolic":
        from classes_tool.systolic.campaign import run_systolic_campaign

        run_systolic_campaign(raw, args.out, args.seed, args.quiet, source=args.config,
                              resume=args.resume)
        return
    if target == "snn":
        from classes_tool.snn.campaign import run_snn_campaign_from_config

        run_snn_campaign_from_config(raw, args.out, args.seed, args.quiet, source=args.config,
                                     resume=args.resume)
        return
    if target != "layers":
        raise UserError(f"config key 'target' must be layers, systolic or snn, got {target!r}")
    from classes_tool.campaign.runner import Campaign, format_summary

    campaign = Campaign(args.config, out=args.out, seed=args.seed, quiet=args.quiet)
    try:
        summary = campaign.run(resume=args.resume)
    except KeyboardInterrupt:
        print(f"interrupted: every finished batch is stored in {campaign.db_path}; continue "
              "with --resume")
        raise
    if not args.quiet:
        print(format_summary(summary))
    print(f"results: {campaign.db_path} (and results.csv); report with: classes-tool report "
          f"{campaign.db_path} -o {Path(campaign.config.output) / 'report'}")


def cmd_report(args: argparse.Namespace) -> None:
    from classes_tool.campaign.report import plot_heatmap, write_report
    from classes_tool.campaign.store import ResultStore

    out = Path(args.output) if args.output else Path(args.db).parent / "report"
    written = write_report(args.db, out, group_params=tuple(args.group_param))
    if args.heatmap:
        x, y = args.heatmap
        written[f"heatmap_{x}_{y}.png"] = plot_heatmap(args.db, x, y,
                                                       out / f"heatmap_{x}_{y}.png",
                                                       outcome=args.outcome)
    if args.csv:
        with ResultStore(args.db, must_exist=True) as store:
            written["csv"] = store.export_csv(args.csv)
    for path in written.values():
        print(f"wrote {path}")


def cmd_convert(args: argparse.Namespace) -> None:
    from classes_tool.convert import convert_onnx_with_report, parse_input_shapes

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
    p.add_argument("--seed", type=int, help="seed (overrides the config)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or table")
    p.set_defaults(func=cmd_campaign)


def register_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="tables and plots from a campaign's results.db")
    p.add_argument("db")
    p.add_argument("-o", "--output", help="report folder (default: beside the database)")
    p.add_argument("--group-param", action="append", default=[], metavar="KEY",
                   help="also tabulate by this fault parameter (repeatable)")
    p.add_argument("--heatmap", nargs=2, metavar=("X", "Y"),
                   help="heat map of an outcome's rate over two fault parameters")
    p.add_argument("--outcome", default="critical_sdc", help="outcome of the heat map")
    p.add_argument("--csv", help="also export every row to this CSV file")
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


REGISTRARS: list[Callable[[argparse._SubParsersAction], None]] = [
    register_campaign, register_report, register_convert]
