"""SNN campaigns from a YAML/dict config: build rounds, run, store, report, plot.

Config keys (see configs/snn_demo.yaml):
  target: snn
  name: campaign name                      model: path to .keras/.h5 (spiking layers)
  data: .npz with x (N, T, ...) [and y]    encode: {kind: rate|repeat|latency, time_steps, seed}
                                            when x is not yet shaped over time
  samples: first N samples (optional)      batch_size, max_rows, early_stop (optional)
  rounds: list of
    - complete: {fault: <model>, layers: [...], sampling_k: k, window: [t0, t1]}
    - inject: [{model: <model>, layer: name, sites: [[...]], count: n, window: [t0, t1]}, ...]
  where <model> is a fault model name or {name: ..., <param>: value}.
  seed, output: read by the CLI (seed of the fault draws; output folder)

Every key is checked by `validate_config` before anything is loaded or written: an unknown key
or a bad count is a one-line `UserError`, never a traceback or a silently different campaign.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.config_checks import check_seed, is_int, positive_int, reject_unknown_keys
from classes_tool.data import finite_inputs, labels, read_npz
from classes_tool.errors import UserError
from classes_tool.files import atomic_path, write_text_atomic
from classes_tool.results.store import RESULTS_FILE
from classes_tool.snn import plots
from classes_tool.snn.faults import Fault, FaultModel
from classes_tool.snn.metrics import CLASSES, softmax

ENCODERS = ("rate", "repeat", "latency")
#: Top-level keys of an SNN campaign config (`seed` and `output` are read by the CLI).
KEYS = ("target", "name", "model", "data", "encode", "samples", "batch_size", "max_rows",
        "early_stop", "rounds", "seed", "output")
ENCODE_KEYS = ("kind", "time_steps", "seed")
COMPLETE_KEYS = ("fault", "layers", "sampling_k", "window")
INJECT_KEYS = ("model", "layer", "sites", "count", "window")


def _known(where: str, block: Any, keys: tuple[str, ...]) -> dict:
    if not isinstance(block, dict):
        raise UserError(f"{where} must be a mapping with keys {', '.join(keys)}, got {block!r}")
    reject_unknown_keys(block, keys, where)
    return block


def _window(where: str, value: Any) -> None:
    if value is not None and (not isinstance(value, list | tuple) or len(value) != 2
                              or not all(map(is_int, value))):
        raise UserError(f"{where}.window must be [start, stop] (two integers), got {value!r}")


def validate_config(config: Any, source: str | Path | None = None) -> dict:
    """Check the keys and values of an SNN campaign config (no file is read); return it.

    `source` (the config file) is named in the messages.
    """
    name = "the SNN config" + (f" {source}" if source is not None else "")
    if not isinstance(config, dict):
        raise UserError(f"{name} must be a mapping, got {type(config).__name__}")
    reject_unknown_keys(config, KEYS, name, "top-level key(s)")
    if config.get("target", "snn") != "snn":
        raise UserError(f"not an SNN config (target {config.get('target')!r})")
    for key in ("model", "data"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise UserError(f"{name} needs '{key}' (a file path), got {config.get(key)!r}")
    for key in ("name", "output"):
        if key in config and not isinstance(config[key], str):
            raise UserError(f"'{key}' in {name} must be a string, got {config[key]!r}")
    for key in ("samples", "batch_size", "max_rows"):
        if config.get(key) is not None:
            positive_int(f"'{key}' in {name}", config[key])
    if "seed" in config:
        check_seed(f"'seed' in {name}", config["seed"])
    if not isinstance(config.get("early_stop", True), bool):
        raise UserError(f"'early_stop' in {name} must be true or false, "
                        f"got {config['early_stop']!r}")
    if config.get("encode") is not None:
        enc = _known(f"'encode' in {name}", config["encode"], ENCODE_KEYS)
        if enc.get("kind", "rate") not in ENCODERS:
            raise UserError(f"encode.kind must be one of {', '.join(ENCODERS)}, "
                            f"got {enc['kind']!r}")
        if "time_steps" in enc:
            positive_int("encode.time_steps", enc["time_steps"])
        if "seed" in enc:
            check_seed("encode.seed", enc["seed"])
    rounds = config.get("rounds")
    if not isinstance(rounds, list) or not rounds:
        raise UserError(f"{name} needs a non-empty 'rounds' list")
    for i, entry in enumerate(rounds):
        if not isinstance(entry, dict) or len(entry) != 1:
            raise UserError(f"rounds[{i}] must be {{complete: ...}} or {{inject: [...]}}, "
                            f"got {entry!r}")
        (kind, body), = entry.items()
        where = f"rounds[{i}].{kind}"
        if kind == "complete":
            _known(where, body, COMPLETE_KEYS)
            if body.get("fault") is None:
                raise UserError(f"{where} needs 'fault' (a fault model)")
            _named(where, _model_from, body["fault"])
            layers = body.get("layers")
            if isinstance(layers, str):
                layers = [layers]
            if not isinstance(layers, list) or not layers or \
                    not all(isinstance(x, str) for x in layers):
                raise UserError(f"{where}.layers must be a non-empty list of layer names, "
                                f"got {body.get('layers')!r}")
            if body.get("sampling_k") is not None:
                positive_int(f"{where}.sampling_k", body["sampling_k"])
            _window(where, body.get("window"))
        elif kind == "inject":
            if not isinstance(body, list) or not body:
                raise UserError(f"{where} must be a non-empty list of faults, got {body!r}")
            for j, fault in enumerate(body):
                at = f"{where}[{j}]"
                _known(at, fault, INJECT_KEYS)
                for key in ("model", "layer"):
                    if fault.get(key) is None:
                        raise UserError(f"{at} needs '{key}'")
                _named(at, _model_from, fault["model"])
                if "count" in fault:
                    positive_int(f"{at}.count", fault["count"])
                sites = fault.get("sites")
                if sites is not None and (not isinstance(sites, list) or not sites or not all(
                        isinstance(st, list | tuple) and st and all(map(is_int, st))
                        for st in sites)):
                    raise UserError(f"{at}.sites must be a non-empty list of index lists, "
                                    f"got {sites!r}")
                _window(at, fault.get("window"))
        else:
            raise UserError(f"unknown round kind {kind!r} in rounds[{i}] (use complete or inject)")
    return config


def _named(where: str, fn, *args):
    """`fn(*args)`, its user errors prefixed with the config entry they come from (a fault model
    or a fault that does not fit the network names its round)."""
    try:
        return fn(*args)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _model_from(spec: Any) -> FaultModel:
    if isinstance(spec, str):
        return FaultModel(spec)
    if isinstance(spec, dict) and "name" in spec:
        return FaultModel.from_dict(spec)
    raise UserError(f"a fault model is a name or {{name: ..., params}}, got {spec!r}")


def _load_data(config: dict, base: Path, time_steps: int):
    path = config.get("data")
    if not path:
        raise UserError("SNN config needs 'data' (an .npz with x and y)")
    p = Path(path) if Path(path).is_absolute() else base / path
    d = read_npz(p, "data")
    if "x" not in d:
        raise UserError(f"cannot read data {p}: it has no array 'x'")
    x, y = d["x"].astype(np.float32), d.get("y")
    finite_inputs([x], f"data {p}")
    enc = config.get("encode")
    if enc:
        from classes_tool.snn import layers
        kind = enc.get("kind", "rate")
        steps = enc.get("time_steps", time_steps)
        if kind == "rate":
            x = layers.rate_encode(x, steps, enc.get("seed", 0))
        elif kind == "repeat":
            x = layers.repeat_encode(x, steps)
        else:
            x = layers.latency_encode(x, steps)
    if y is not None and len(y) != len(x):
        raise UserError(f"data {p}: {len(x)} inputs in x but {len(y)} labels in y")
    n = config.get("samples")  # a positive integer (validate_config)
    if n is not None:
        x = x[:n]
    if y is not None:  # one integer class per sample, as in every campaign (one-hot: argmax)
        y = labels({"y": y}, len(x), f"data {p}")
    return x, y, p


def _shape_text(shape: tuple) -> str:
    text = ", ".join("any" if d is None else str(d) for d in shape)
    return f"({text},)" if len(shape) == 1 else f"({text})"


def build_campaign(config: dict, seed: int, base: Path, source: str | Path | None = None):
    """The SpikingCampaign described by `config`, with its rounds injected, and its data.

    The config is validated first, and the data's sample shape is checked against the model's
    input (naming both), so nothing fails later in the middle of a run.
    """
    from classes_tool.session import load_keras_model
    from classes_tool.snn.campaign import SpikingCampaign

    validate_config(config, source)
    seed = check_seed("seed", seed)
    model_path = config["model"]
    mp = Path(model_path) if Path(model_path).is_absolute() else base / model_path
    model = load_keras_model(mp)
    if len(model.inputs) != 1 or len(model.inputs[0].shape) < 2:
        raise UserError(f"model {mp}: SNN campaigns need one input shaped (batch, time, ...)")
    want = tuple(model.inputs[0].shape[1:])
    time_steps = want[0] if want[0] is not None else 1
    x, y, data_path = _load_data(config, base, time_steps)
    got = tuple(x.shape[1:])
    if len(got) != len(want) or any(w is not None and w != g
                                     for w, g in zip(want, got, strict=True)):
        raise UserError(f"data {data_path}: samples are shaped {_shape_text(got)} (after "
                        f"encode/samples) but model {mp} expects {_shape_text(want)}")
    if len(x) == 0:
        raise UserError(f"data {data_path} holds no samples")
    camp = SpikingCampaign(model, got, name=config.get("name", "snn-campaign"), seed=seed,
                           model_path=str(mp))
    for i, entry in enumerate(config["rounds"]):
        (kind, body), = entry.items()
        where = f"rounds[{i}].{kind}"
        if kind == "complete":
            window = body.get("window")
            layers = body["layers"]
            _named(where, camp.inject_complete, _model_from(body["fault"]),
                   [layers] if isinstance(layers, str) else list(layers),
                   body.get("sampling_k"), None if window is None else tuple(window))
        else:
            for j, f in enumerate(body):  # the first opens the round, the others join it
                f = dict(f)
                f["model"] = _model_from(f.get("model")).to_dict()
                at = f"{where}[{j}]"
                _named(at, camp.then_inject if j == 0 else camp.inject,
                       _named(at, Fault.from_dict, f))
    return camp, x, y


def _table_text(rows: list[dict], key: str, has_labels: bool) -> tuple[str, str]:
    cols = [key, "faults", "pairs"] + list(CLASSES)
    if has_labels:
        cols += ["accuracy", "critical"]
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(cols + [f"{c}_ci_low" for c in cols[3:]] + [f"{c}_ci_high" for c in cols[3:]])
    for r in rows:
        cells = [str(r[key]), str(r["faults"]), str(r["pairs"])]
        for c in cols[3:]:
            lo, hi = r[f"{c}_ci"]
            cells.append(f"{100 * r[c]:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]")
        md.append("| " + " | ".join(cells) + " |")
        w.writerow([r[key], r["faults"], r["pairs"]] + [r[c] for c in cols[3:]]
                   + [r[f"{c}_ci"][0] for c in cols[3:]] + [r[f"{c}_ci"][1] for c in cols[3:]])
    return "\n".join(md) + "\n", buf.getvalue()


#: Folder (in the output folder) where each computed unit's scores wait until the campaign ends.
UNITS_FOLDER = "snn_units"


def _unit_path(out: Path, unit: tuple[int, int]) -> Path:
    return out / UNITS_FOLDER / f"{unit[0]}_{unit[1]}.npz"


def _save_unit(path: Path, result) -> None:
    gscore, chunk, scores = result
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, gscore=gscore, chunk=np.asarray(chunk, np.int64), scores=scores)


def _load_unit(path: Path):
    with np.load(path, allow_pickle=False) as data:
        return data["gscore"], data["chunk"].tolist(), data["scores"]


def unit_rows(result, first: int, labels: np.ndarray | None, info: list[dict]
              ) -> tuple[list[dict], list[dict]]:
    """The store's fault and result rows of one unit (`SpikingCampaign.compute_unit`'s result
    for the samples from `first`): one row per (round, sample), outcomes from the softmax
    scores, each row compared with its own sample's golden scores."""
    from classes_tool.results.outcomes import classify

    gscore, chunk, scores = result
    count = len(gscore)
    golden = softmax(gscore)
    faults, rows = [], []
    for p, r in enumerate(chunk):
        c = classify(golden, softmax(scores[p * count:(p + 1) * count]))
        faults.append({"fault_index": r, "target": info[r]["target"],
                       "pattern": info[r]["pattern"], "params": info[r]["params"]})
        rows += [{"fault_index": r, "input_index": first + i, "outcome": str(c["outcome"][i]),
                  "sdc5": bool(c["sdc5"][i]), "rel_error": float(c["rel_error"][i]),
                  "golden_top1": int(c["golden_top1"][i]),
                  "faulty_top1": int(c["faulty_top1"][i]),
                  "label": None if labels is None else int(labels[first + i])}
                 for i in range(count)]
    return faults, rows


def _remove_if_empty(folder: Path) -> None:
    """A run that stored no row: its unit scores (useless without their rows) and the folder
    it made go."""
    if not (folder / RESULTS_FILE).exists():
        shutil.rmtree(folder / UNITS_FOLDER, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


class SpikingWorker:
    """A remote worker's copy of an SNN campaign, built from the files sent to it; computes
    units of `SpikingCampaign.units`."""

    def __init__(self, config: dict, seed: int, options: dict, paths: dict[str, Path]):
        config = {**config, **{k: str(v) for k, v in paths.items()}}
        self.campaign, self.x, _ = build_campaign(config, seed, Path.cwd())
        self.options = options
        self.layout = self.campaign.round_layout()

    def compute(self, key: str, unit: tuple[int, int]):
        return self.campaign.compute_unit(self.x, tuple(unit), layout=self.layout,
                                          **self.options)


def run_snn_campaign_from_config(config: dict, out_dir: str | Path, seed: int = 0,
                                 quiet: bool = False, source: str | Path | None = None,
                                 workers: int | None = None, address: str | None = None,
                                 threads_per_worker: int | None = None, resume: bool = False
                                 ) -> dict[str, Path]:
    """Run the SNN campaign of `config`; write campaign JSON/NPZ, the SQLite store and its
    report, SNN tables and plots into `out_dir`. Relative paths in the config are taken from
    the current folder; `source` (the config file) is named in error messages. Returns
    {name: path}.

    Each unit (a batch of samples x a chunk of rounds) is committed as it is computed: its rows
    go to the store and its scores wait in `snn_units/` until the campaign ends. A folder that
    already holds a store is refused unless `resume`, which continues it (refused when the
    config, model or data changed) and ends with the rows of an uninterrupted run.
    `workers`/`address`: the units run on Ray actors (see `classes_tool.distributed`), with the
    same results.
    """
    from classes_tool.results.store import CONTENT_HASHES, ResultStore, content_hashes

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out_dir} is a file, not an output folder")
    db = out / RESULTS_FILE
    if (out / "results.sqlite").exists():  # the name older versions used
        raise UserError(f"{out / 'results.sqlite'} already holds an SNN campaign's results: "
                        "choose another output folder (--out), or delete that one")
    if db.exists() and not resume:
        raise UserError(f"{db} already holds an SNN campaign's results: continue it with "
                        "--resume, or choose another output folder (--out)")
    camp, x, y = build_campaign(config, seed, Path.cwd(), source)
    options = {"batch_size": config.get("batch_size", 128),
               "max_rows": config.get("max_rows", 4096),
               "early_stop": config.get("early_stop", True)}
    data_path = Path(config["data"])
    meta = {"target": "snn", "name": camp.name, "model": camp.model_path, "seed": camp.seed,
            "samples": int(len(x)), "rounds": len(camp.rounds),
            "round_configs": config["rounds"], "encode": config.get("encode"), "units": options,
            CONTENT_HASHES: content_hashes({"model": camp.model_path, "data": data_path})}
    info = camp.round_info()
    new_folder = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        if new_folder:  # a run that stored nothing leaves no folder behind (the store deletes
            # a database it created and left empty)
            stack.callback(_remove_if_empty, out)
        executor = None
        if workers is not None or address is not None:
            from classes_tool.distributed.ray_executor import RayExecutor

            files = {"model": Path(camp.model_path), "data": data_path}
            executor = stack.enter_context(RayExecutor(
                files, functools.partial(SpikingWorker, config, seed, options), workers,
                address, threads_per_worker))
        store = stack.enter_context(ResultStore(db, meta, discard_empty=True))
        done = store.done_pairs()
        stored = {}
        for unit in camp.units(len(x), **options):  # units whose rows and scores were kept
            path = _unit_path(out, unit)
            if path.is_file():
                result = _load_unit(path)
                if all((r, unit[0] + i) in done for r in result[1]
                       for i in range(len(result[0]))):
                    stored[unit] = result

        def commit(unit: tuple[int, int], result) -> None:
            _save_unit(_unit_path(out, unit), result)  # the scores first, then the rows
            store.add(*unit_rows(result, unit[0], y, info))

        res = camp.run((x, y), progress="silent" if quiet else "pbar", executor=executor,
                       stored=stored, on_unit=commit, **options)
    files: dict[str, Path] = {"campaign": camp.save(out / "campaign.json")}
    files["campaign_npz"] = out / "campaign.npz"
    files["store"] = db
    from classes_tool.results.report import write_report
    files.update({f"report/{k}": v for k, v in write_report(db, out / "report").items()})
    has_labels = y is not None
    for key, stem in (("target", "snn_by_layer"), ("pattern", "snn_by_fault_model"),
                      ("target+pattern", "snn_by_layer_and_model")):
        md, csv_text = _table_text(res.table(key), key, has_labels)
        write_text_atomic(out / f"{stem}.md", md)
        write_text_atomic(out / f"{stem}.csv", csv_text)
        files[stem] = out / f"{stem}.md"
    if has_labels:
        files["accuracy_bins"] = plots.plot_accuracy_bins(res, out / "snn_accuracy_bins.png")
        done = set()
        for rnd in camp.rounds:
            if len(rnd) == 1 and len(rnd[0].sites) == 1:
                f = rnd[0]
                key = (f.layer, f.model.name)
                if key not in done:
                    done.add(key)
                    shape = camp.net.site_shape(f.layer, f.model.kind)
                    name = f"snn_heatmap_{f.layer}_{f.model.name}.png"
                    files[name] = plots.plot_neuron_heatmap(res, f.layer, f.model.name, shape,
                                                            out / name)
        if any("factor" in i["params"] for i in res.info):
            files["accuracy_vs_factor"] = plots.plot_accuracy_vs_param(
                res, "factor", out / "snn_accuracy_vs_factor.png")
        summary = (f"# {camp.name}\n\nrounds: {len(camp.rounds)}, samples: {len(x)}, "
                   f"golden accuracy: {100 * res.golden_accuracy():.2f}%, mean accuracy under "
                   f"faults: {100 * float(np.mean(res.accuracy())):.2f}%, duration: "
                   f"{camp.duration:.1f} s\n")
        write_text_atomic(out / "snn_summary.md", summary)
        files["snn_summary"] = out / "snn_summary.md"
        if not quiet:
            print(summary.strip())
    # every score is in campaign.npz now: the units' copies go
    shutil.rmtree(out / UNITS_FOLDER, ignore_errors=True)
    return files
