"""Per-layer fault statistics: how much each `FaultInjection` layer really changed.

A configured probability is not what a network experiences: stuck-at faults often leave a value
as it was, and a flipped low bit barely moves it. The layers accumulate raw sums while they inject
(see `FaultInjection._update_statistics`); this module turns them into the numbers people read:

* ``seen``: activation values that passed while injection was on for that phase,
* ``injected``: values hit by the mask; ``injection_rate`` = injected / seen,
* ``changed``: values whose result differs from the clean value; ``change_rate`` = changed / seen,
* ``rmse``: root mean square of (faulty - clean) over the seen values whose faulty result is
  finite (values that became Inf/NaN are left out, and counted in ``nonfinite``),
* ``cosine``: cosine similarity of the clean and faulty tensors over the same finite values.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import keras
import numpy as np

from classes_tool.files import write_text_atomic
from classes_tool.quant.layers import injection_layers


def raw_from_tensors(clean: np.ndarray, faulty: np.ndarray, hit: np.ndarray | None = None
                     ) -> dict[str, float]:
    """The raw sums a layer would accumulate for one (clean, faulty) pair (NumPy reference)."""
    clean = np.asarray(clean, np.float64)
    faulty = np.asarray(faulty, np.float64)
    finite = np.isfinite(faulty)
    # values whose faulty result is Inf/NaN are left out of RMSE and cosine (both sides)
    f = np.where(finite, faulty, 0.0)
    c = np.where(finite, clean, 0.0)
    return {
        "seen": float(clean.size),
        "injected": float(np.count_nonzero(hit)) if hit is not None else float("nan"),
        "changed": float(np.count_nonzero((faulty != clean) | ~finite)),
        "nonfinite": float(np.count_nonzero(~finite)),
        "sum_sq_err": float(np.sum((f - c) ** 2)),
        "sum_clean_sq": float(np.sum(c**2)),
        "sum_faulty_sq": float(np.sum(f**2)),
        "sum_dot": float(np.sum(c * f)),
    }


def derive(raw: dict[str, float]) -> dict[str, float]:
    """Rates, RMSE and cosine similarity from raw sums (zero seen -> rates 0, cosine 1).

    RMSE averages over the finite results only (seen - nonfinite), like the sums it divides;
    with none finite it is 0 and cosine follows the zero-tensor convention below."""
    seen = raw["seen"]
    out = {k: raw[k] for k in ("seen", "injected", "changed", "nonfinite")}
    out["injection_rate"] = raw["injected"] / seen if seen else 0.0
    out["change_rate"] = raw["changed"] / seen if seen else 0.0
    finite = seen - raw.get("nonfinite", 0.0)
    out["rmse"] = math.sqrt(raw["sum_sq_err"] / finite) if finite > 0 else 0.0
    norm = math.sqrt(raw["sum_clean_sq"] * raw["sum_faulty_sq"])
    if norm > 0:
        out["cosine"] = raw["sum_dot"] / norm
    else:  # both tensors zero: identical; one zero: orthogonal by convention
        out["cosine"] = 1.0 if raw["sum_clean_sq"] == raw["sum_faulty_sq"] else 0.0
    return out


def collect_statistics(model: keras.Model) -> dict[str, dict]:
    """Derived statistics of every `FaultInjection` layer of `model`, keyed by layer name."""
    stats = {}
    for layer in injection_layers(model):
        row = derive(layer.statistics())
        row.update(target=layer.target, injection_type=layer.injection_type, bits=layer.bits,
                   signed=layer.signed, scale=layer.current_scale())
        stats[layer.name] = row
    return stats


def reset_statistics(model: keras.Model) -> None:
    """Zero the statistics of every `FaultInjection` layer (e.g. between sweep points)."""
    for layer in injection_layers(model):
        layer.reset_statistics()


def write_statistics(stats: dict[str, dict], path: str | Path) -> Path:
    """Save the statistics as JSON (atomically) and return the path."""
    path = Path(path)
    write_text_atomic(path, json.dumps(stats, indent=2, sort_keys=True) + "\n")
    return path
