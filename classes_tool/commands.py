"""What each `classes-tool` command does: one call into the Python API, then what it prints.

The parsers live in `classes_tool.cli`; this module never imports it. The API is imported
inside each command, so that `--help` and `report` start without TensorFlow.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from classes_tool.errors import UserError
from classes_tool.files import refuse_inputs_as_output


def cmd_describe(args: argparse.Namespace) -> None:
    import json

    from classes_tool import patcher, session

    if args.output:
        refuse_inputs_as_output(args.output, {"model": args.model})
    description = patcher.describe(session.load(args.model, args.input_shape))
    if args.output:
        patcher.write_json(description, args.output)
        print(f"wrote {args.output} ({len(description['nodes'])} nodes)")
    else:
        print(json.dumps(description, indent=2))


def cmd_sites(args: argparse.Namespace) -> None:
    from classes_tool import patcher, session
    from classes_tool.simulator.sites import save_sites

    _site_defaults(args)
    refuse_inputs_as_output(args.output, _site_inputs(args))
    loaded = session.load(args.model, args.input_shape)
    targets = session.select_targets(loaded.graph, args.after, args.after_type)
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


def cmd_campaign(args: argparse.Namespace) -> None:
    from classes_tool.targets import run_campaign

    try:
        result = run_campaign(args.config, args.out, resume=args.resume, quiet=args.quiet,
                              seed=args.seed, workers=args.workers, address=args.address,
                              threads_per_worker=args.threads_per_worker)
    except KeyboardInterrupt:
        print("interrupted: every finished unit is stored; continue with --resume")
        raise
    if result.summary and not args.quiet:
        print(result.summary)
    for path in result.files.values():
        print(f"wrote {path}")
    print(f"results: {result.db}; report (tables, plots, --csv) with: classes-tool report "
          f"{result.db} -o {result.db.parent / 'report'}")


def cmd_train(args: argparse.Namespace) -> None:
    from classes_tool.config_reader import read_yaml
    from classes_tool.quant.config import parse_train_run
    from classes_tool.quant.training import train_from_config

    out = Path(args.out or Path("runs") / Path(args.config).stem)
    config = read_yaml(args.config)
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


def cmd_report(args: argparse.Namespace) -> None:
    from classes_tool.results.report import write_report
    from classes_tool.results.store import ResultStore

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

    refuse_inputs_as_output(args.output, {"model": args.model})
    _, report = convert_onnx_with_report(args.model, args.output,
                                         input_shapes=parse_input_shapes(args.input_shape),
                                         verify=not args.no_verify, tolerance=args.tolerance)
    diff = "skipped" if report.max_abs_diff is None else f"{report.max_abs_diff:.3g}"
    print(f"wrote {report.output_path}: {report.layers} layers, Keras inputs "
          f"{report.input_shapes} (4-D inputs are NHWC), max abs difference vs ONNX Runtime: "
          f"{diff}")


def cmd_build_native(args: argparse.Namespace) -> None:
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
