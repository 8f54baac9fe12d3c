"""Accuracy versus fault probability, over several seeds: CSV tables and a PNG plot.

One patched model is built and calibrated once; each (probability, seed) point only changes the
layers' probability and seed weights (`set_injection`), so a sweep costs one inference pass per
point. Each seed gives a different set of faulty positions, which is why a point's spread over seeds
matters as much as its mean.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import keras
import numpy as np

from classes_tool.config_reader import read_yaml
from classes_tool.data import finite_inputs, read_npz
from classes_tool.errors import UserError
from classes_tool.files import atomic_path, refuse_inputs_as_output, write_text_atomic
from classes_tool.quant.calibration import attach_grid, read_grid
from classes_tool.quant.config import (
    FaultInjectionConfig,
    parse_fault_injection,
    parse_train_run,
)
from classes_tool.quant.layers import (
    InsertAfter,
    apply_fault_injection,
    injection_layers,
    set_injection,
)
from classes_tool.quant.statistics import collect_statistics, reset_statistics, write_statistics


def parse_probabilities(text: str) -> list[float]:
    """``"0,1,2,5,10"`` -> [0.0, 1.0, 2.0, 5.0, 10.0] (percent, each 0..100)."""
    try:
        values = [float(p) for p in str(text).split(",") if p.strip()]
    except ValueError as exc:
        raise UserError(f"--sweep-prob must be comma-separated percentages, got {text!r}") from exc
    if not values or any(not 0.0 <= v <= 100.0 for v in values):
        raise UserError(f"--sweep-prob values must be percentages from 0 to 100, got {text!r}")
    return values


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy of `model` on (x, y); y holds class indices or one-hot rows."""
    scores = model.predict(x, batch_size=batch_size, verbose=0)
    labels = y.argmax(-1) if y.ndim > 1 else y
    return float(np.mean(np.argmax(scores, -1) == labels))


def accuracy_under_faults(patched: keras.Model, x: np.ndarray, y: np.ndarray,
                          probability: float, seeds: list[int],
                          batch_size: int = 256) -> list[float]:
    """Accuracy of a patched model with injection on at inference, one value per seed."""
    out = []
    for seed in seeds:
        set_injection(patched, probability=probability, seed=seed, apply_during="eval")
        out.append(accuracy(patched, x, y, batch_size))
    return out


def sweep_probability(model: keras.Model, x: np.ndarray, y: np.ndarray,
                      config: dict | FaultInjectionConfig, probabilities: list[float],
                      seeds: list[int], calibration_data: np.ndarray | None = None,
                      batch_size: int = 256, insert_after: InsertAfter | None = None
                      ) -> tuple[list[dict], dict[str, dict]]:
    """Rows (probability, seed, accuracy, mean change rate) and the statistics per point.

    `model` is a plain model, patched here with `config`; a model that already has
    `FaultInjection` layers (e.g. saved by `train`) is swept as it is, with its own strategy and grid.
    """
    cfg = parse_fault_injection(config).replace(apply_during="eval", enabled=True)
    if injection_layers(model):
        patched = model
    else:
        patched = apply_fault_injection(model, cfg, calibration_data, insert_after=insert_after)
    rows, stats = [], {}
    for p in probabilities:
        for seed in seeds:
            reset_statistics(patched)
            set_injection(patched, probability=p, seed=seed, apply_during="eval")
            acc = accuracy(patched, x, y, batch_size)
            point = collect_statistics(patched)
            seen = sum(r["seen"] for r in point.values())
            changed = sum(r["changed"] for r in point.values())
            rows.append({"probability": p, "seed": seed, "accuracy": acc,
                         "change_rate": changed / seen if seen else 0.0})
            stats[f"p={p:g},seed={seed}"] = point
    return rows, stats


#: Confidence of the interval of the mean accuracy over seeds.
SWEEP_CONFIDENCE = 0.95


def summarize(rows: list[dict], confidence: float = SWEEP_CONFIDENCE) -> list[dict]:
    """Per probability: mean, standard deviation (ddof=0), min and max accuracy over seeds, and
    the Student t interval of the mean accuracy over seeds (the seed is the sampling unit: one
    seed draws the faults of the whole test set, so inputs of one seed are not independent
    trials); the interval is empty (NaN) with one seed."""
    from classes_tool.results.intervals import t_interval

    out = []
    for p in sorted({r["probability"] for r in rows}):
        accs = np.array([r["accuracy"] for r in rows if r["probability"] == p])
        iv = t_interval(accs, confidence)
        out.append({"probability": p, "seeds": len(accs), "mean_accuracy": float(accs.mean()),
                    "std_accuracy": float(accs.std()), "min_accuracy": float(accs.min()),
                    "max_accuracy": float(accs.max()), "ci_low": iv.low, "ci_high": iv.high,
                    "confidence": confidence})
    return out


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plot_sweep(summary: list[dict], rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Mean accuracy with its interval over seeds (none with one seed), each seed as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([r["probability"] for r in rows], [r["accuracy"] for r in rows], s=10,
               alpha=0.4, color="gray", label="one seed")
    means = np.array([s["mean_accuracy"] for s in summary])
    low = np.nan_to_num(means - np.array([s["ci_low"] for s in summary]))
    high = np.nan_to_num(np.array([s["ci_high"] for s in summary]) - means)
    level = summary[0]["confidence"] if summary else SWEEP_CONFIDENCE
    ax.errorbar([s["probability"] for s in summary], means, yerr=[low, high], marker="o",
                capsize=4, label=f"mean, {100 * level:g}% interval over seeds")
    ax.set_xlabel("fault probability (% of activations)")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def sweep_outputs(out_dir: str | Path) -> dict[str, Path]:
    """The files a sweep writes into `out_dir`."""
    out = Path(out_dir)
    return {"csv": out / "sweep.csv", "summary_csv": out / "sweep_summary.csv",
            "png": out / "sweep.png", "statistics": out / "sweep_statistics.json"}


def write_sweep(rows: list[dict], stats: dict, out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """sweep.csv (one row per point and seed), sweep_summary.csv, sweep.png, sweep_statistics.json."""
    summary = summarize(rows)
    paths = sweep_outputs(out_dir)
    write_text_atomic(paths["csv"], _csv(rows))
    write_text_atomic(paths["summary_csv"], _csv(summary))
    plot_sweep(summary, rows, paths["png"], title)
    write_statistics(stats, paths["statistics"])
    return paths


def load_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Arrays `x` and `y` of a data file."""
    data = read_npz(path, "data")  # numbers only: string labels are refused here
    missing = [k for k in ("x", "y") if k not in data]
    if missing:
        raise UserError(f"{path}: expected an .npz file with arrays x and y (no "
                        f"{' or '.join(missing)})")
    x = data["x"].astype(np.float32)
    finite_inputs([x], f"data {path}")
    return x, data["y"]


def load_model(path: str | Path) -> keras.Model:
    """Load a .h5/.keras model for inference or training; failures are user mistakes.

    The activation grid a fault-aware tuned model was saved with (`calibration.write_grid`) is
    attached to the loaded model, so injecting into it uses that grid by default."""
    from classes_tool.session import load_keras_model

    model = load_keras_model(path)
    attach_grid(model, read_grid(path))
    return model


def _shape_text(shape: tuple) -> str:
    text = ", ".join("any" if d is None else str(d) for d in shape)
    return f"({text},)" if len(shape) == 1 else f"({text})"


def fit_data_to_model(model: keras.Model, x: np.ndarray, y: np.ndarray | None,
                      data_path: str | Path, model_path: str | Path) -> np.ndarray:
    """Check one data file against the model's input before any work; return `x` to use.

    A mismatch would otherwise surface as a Keras traceback in the middle of a run. As Keras
    itself does, a missing or extra trailing axis of size 1 is accepted (and `x` reshaped).
    """
    if len(model.inputs) != 1:
        raise UserError(f"model {model_path} has {len(model.inputs)} inputs; train and sweep "
                        "need a model with one input")
    want = tuple(model.inputs[0].shape[1:])
    got = tuple(x.shape[1:])

    def fits(shape: tuple) -> bool:
        return len(shape) == len(want) and all(w is None or w == g
                                               for w, g in zip(want, shape, strict=True))

    if not fits(got):
        if want and want[-1] == 1 and fits(got + (1,)):
            x = x[..., None]
        elif got and got[-1] == 1 and fits(got[:-1]):
            x = x[..., 0]
        else:
            raise UserError(f"{data_path}: samples are shaped {_shape_text(got)} but model "
                            f"{model_path} expects inputs shaped {_shape_text(want)}")
    if y is not None and len(y) != len(x):
        raise UserError(f"{data_path}: {len(x)} samples in x but {len(y)} labels in y")
    if len(x) == 0:
        raise UserError(f"{data_path}: the data holds no samples")
    return x


def sweep_from_config(config: dict | str | Path, out_dir: str | Path, probabilities: list[float],
                      seeds: int = 3, quiet: bool = False, model_path: str | Path | None = None,
                      base_dir: str | Path | None = None) -> dict[str, Path]:
    """`classes-tool sweep CONFIG.yaml --sweep-prob 0,1,2,5,10 --seeds N`.

    Uses the config's `model` (or `model_path`), its `data.test` (else `data.train`) for accuracy,
    its `data.train` (else the test data) for calibration, and its `fault_injection` block. Seeds are
    ``fault_injection.seed + 0 .. seeds - 1``.
    """
    source = None
    if isinstance(config, str | Path):
        base_dir = base_dir or Path(config).parent
        source = config
        config = read_yaml(config)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds must be a positive integer, got {seeds!r}")
    if not probabilities:
        raise UserError("--sweep-prob needs at least one probability")
    run = parse_train_run(config, base_dir, source)
    data_path = run.test_data or run.train_data
    if data_path is None:
        raise UserError("sweep needs data: set data.test (or data.train) in the config")
    if model_path is not None and not Path(model_path).is_file():
        raise UserError(f"model file not found: {model_path}")
    model_path = model_path or run.model
    inputs = {"config": source, "model": model_path, "test data": run.test_data,
              "training data": run.train_data}
    for output in sweep_outputs(out_dir).values():  # before any work: never over an input
        refuse_inputs_as_output(output, inputs)
    model = load_model(model_path)
    x, y = load_npz(data_path)
    x = fit_data_to_model(model, x, y, data_path, model_path)
    calib = x
    if run.train_data and run.train_data != data_path:
        calib = fit_data_to_model(model, load_npz(run.train_data)[0], None, run.train_data,
                                  model_path)
    seed_list = [run.fault_injection.seed + i for i in range(seeds)]
    rows, stats = sweep_probability(model, x, y, run.fault_injection, probabilities, seed_list,
                                    calib)
    title = f"{Path(model_path).name}: {run.fault_injection.injection_type}"
    paths = write_sweep(rows, stats, out_dir, title)
    if not quiet:  # the written files are the caller's to list (the CLI prints each once)
        for s in summarize(rows):
            interval = ("no interval from one seed" if np.isnan(s["ci_low"]) else
                        f"{100 * s['confidence']:g}% interval over seeds [{s['ci_low']:.4f}, "
                        f"{s['ci_high']:.4f}]")
            print(f"p={s['probability']:g}%  accuracy {s['mean_accuracy']:.4f} "
                  f"({interval}; std {s['std_accuracy']:.4f}, min {s['min_accuracy']:.4f}, "
                  f"max {s['max_accuracy']:.4f}, {s['seeds']} seeds)")
    return paths
