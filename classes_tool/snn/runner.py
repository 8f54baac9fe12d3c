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
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.errors import UserError
from classes_tool.files import write_text_atomic
from classes_tool.snn import plots
from classes_tool.snn.faults import Fault, FaultModel
from classes_tool.snn.metrics import CLASSES, Results, softmax

ENCODERS = ("rate", "repeat", "latency")


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
    try:
        with np.load(p, allow_pickle=False) as d:
            x = d["x"].astype(np.float32)
            y = d["y"] if "y" in d.files else None
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"cannot read data {p}: {exc}") from None
    enc = config.get("encode")
    if enc:
        from classes_tool.snn import layers
        kind = enc.get("kind", "rate")
        if kind not in ENCODERS:
            raise UserError(f"encode.kind must be one of {ENCODERS}, got {kind!r}")
        steps = int(enc.get("time_steps", time_steps))
        if kind == "rate":
            x = layers.rate_encode(x, steps, int(enc.get("seed", 0)))
        elif kind == "repeat":
            x = layers.repeat_encode(x, steps)
        else:
            x = layers.latency_encode(x, steps)
    n = config.get("samples")
    if n is not None:
        x, y = x[:int(n)], (None if y is None else y[:int(n)])
    return x, y


def build_campaign(config: dict, seed: int, base: Path):
    """The Campaign described by `config`, with its rounds injected, and its data."""
    import keras

    import classes_tool.snn  # noqa: F401  (registers the layers)
    from classes_tool.snn.campaign import Campaign

    model_path = config.get("model")
    if not model_path:
        raise UserError("SNN config needs 'model'")
    mp = Path(model_path) if Path(model_path).is_absolute() else base / model_path
    if not mp.exists():
        raise UserError(f"model not found: {mp}")
    model = keras.models.load_model(mp, compile=False)
    time_steps = int(model.inputs[0].shape[1])
    x, y = _load_data(config, base, time_steps)
    camp = Campaign(model, x.shape[1:], name=str(config.get("name", "snn-campaign")), seed=seed,
                    model_path=str(mp))
    rounds = config.get("rounds")
    if not rounds:
        raise UserError("SNN config needs a non-empty 'rounds' list")
    for entry in rounds:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise UserError(f"each round entry is {{complete: ...}} or {{inject: [...]}}: {entry}")
        (kind, body), = entry.items()
        if kind == "complete":
            window = body.get("window")
            camp.inject_complete(_model_from(body.get("fault")), list(body.get("layers", [])),
                                 body.get("sampling_k"), None if window is None else tuple(window))
        elif kind == "inject":
            faults = []
            for f in body:
                f = dict(f)
                f["model"] = _model_from(f.get("model")).to_dict()
                faults.append(Fault.from_dict(f))
            camp.then_inject(faults)
        else:
            raise UserError(f"unknown round kind {kind!r} (use complete or inject)")
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


def write_store(results: Results, db_path: Path, meta: dict) -> Path:
    """One row per (round, sample) in the shared result store; outcomes from the softmax scores."""
    from classes_tool.campaign.outcomes import classify
    from classes_tool.campaign.store import ResultStore

    n = results.golden_scores.shape[0]
    g = softmax(results.golden_scores)
    with ResultStore(db_path, meta) as store:
        for r, info in enumerate(results.info):
            c = classify(g, softmax(results.scores[r]))
            rows = [{"fault_index": r, "input_index": i, "outcome": str(c["outcome"][i]),
                     "sdc5": bool(c["sdc5"][i]), "rel_error": float(c["rel_error"][i]),
                     "golden_top1": int(c["golden_top1"][i]),
                     "faulty_top1": int(c["faulty_top1"][i]),
                     "label": None if results.labels is None else int(results.labels[i])}
                    for i in range(n)]
            store.add([{"fault_index": r, "target": info["target"], "pattern": info["pattern"],
                        "params": info["params"]}], rows)
    return db_path


def run_snn_campaign_from_config(config: dict, out_dir: str | Path, seed: int = 0,
                                 quiet: bool = False) -> dict[str, Path]:
    """Run the SNN campaign of `config`; write campaign JSON/NPZ, the SQLite store and its
    report, SNN tables and plots into `out_dir`. Relative paths in the config are taken from
    the current folder. Returns {name: path}."""
    if config.get("target", "snn") != "snn":
        raise UserError(f"not an SNN config (target {config.get('target')!r})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    camp, x, y = build_campaign(config, int(seed), Path.cwd())
    res = camp.run((x, y), progress="silent" if quiet else "pbar",
                   batch_size=int(config.get("batch_size", 128)),
                   max_rows=int(config.get("max_rows", 4096)),
                   early_stop=bool(config.get("early_stop", True)))
    files: dict[str, Path] = {"campaign": camp.save(out / "campaign.json")}
    files["campaign_npz"] = out / "campaign.npz"
    db = out / "results.sqlite"
    if db.exists():
        db.unlink()
    meta = {"target": "snn", "name": camp.name, "model": camp.model_path, "seed": int(seed),
            "samples": int(len(x)), "rounds": len(camp.rounds), "duration_s": camp.duration}
    files["store"] = write_store(res, db, meta)
    from classes_tool.campaign.report import write_report
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
    return files
