"""PNG plots of SNN campaign results (matplotlib, Agg backend: no display needed).

- `plot_accuracy_bins`: per (layer, fault model), the share of faults whose accuracy drop
  (golden accuracy minus accuracy under the fault, in points) falls in each bin, stacked.
- `plot_neuron_heatmap`: accuracy under a fault at each site of one layer (from
  `inject_complete`), drawn over the site grid.
- `plot_accuracy_vs_param`: mean accuracy against a numeric fault parameter (e.g. factor).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from classes_tool.files import atomic_path  # noqa: E402
from classes_tool.snn.metrics import Results  # noqa: E402

DROP_EDGES = (0.0, 1.0, 5.0, 10.0, 25.0)
DROP_LABELS = ("no drop", "(0, 1]", "(1, 5]", "(5, 10]", "(10, 25]", "> 25")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def drop_bins(results: Results) -> np.ndarray:
    """Bin index (into DROP_LABELS) of each round's accuracy drop in percentage points."""
    drop = 100.0 * (results.golden_accuracy() - results.accuracy())
    return np.searchsorted(np.array(DROP_EDGES), drop, side="left")


def plot_accuracy_bins(results: Results, path: str | Path) -> Path:
    """Stacked bars: share of faults per accuracy-drop bin, one bar per (layer, fault model)."""
    bins = drop_bins(results)
    keys = [f"{i['target']}\n{i['pattern']}" for i in results.info]
    groups = list(dict.fromkeys(keys))
    shares = np.zeros((len(groups), len(DROP_LABELS)))
    for g, key in enumerate(groups):
        sel = np.array([k == key for k in keys])
        shares[g] = np.bincount(bins[sel], minlength=len(DROP_LABELS)) / sel.sum()
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) + 2), 4.0))
    bottom = np.zeros(len(groups))
    colors = plt.cm.RdYlGn_r(np.linspace(0.0, 1.0, len(DROP_LABELS)))
    for b, label in enumerate(DROP_LABELS):
        ax.bar(range(len(groups)), shares[:, b], bottom=bottom, color=colors[b], label=label)
        bottom += shares[:, b]
    ax.set_xticks(range(len(groups)), groups, fontsize=7)
    ax.set_ylabel("share of faults")
    ax.set_title(f"accuracy drop (points) per layer and fault model; golden "
                 f"{100 * results.golden_accuracy():.1f}%")
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1.0), loc="upper left")
    return _save(fig, path)


def _mean_of_sampled(grid: np.ndarray) -> np.ndarray:
    """Mean over the last axis of the sites that were faulted, NaN where none was.

    With `sampling_k` most (row, column) cells have no faulted channel; `np.nanmean` would warn
    "Mean of empty slice" for each of them, so the mean is taken from sums and counts instead.
    """
    sampled = ~np.isnan(grid)
    count = sampled.sum(axis=-1)
    total = np.where(sampled, grid, 0.0).sum(axis=-1)
    return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)


def plot_neuron_heatmap(results: Results, layer: str, pattern: str, site_shape: tuple,
                        path: str | Path) -> Path:
    """Accuracy under a single fault at each site of `layer` (mean over channels for 3-D
    neuron grids; (in, out) for dense kernels; (rows*cols*in, out) for conv kernels)."""
    acc = results.accuracy()
    grid = np.full(site_shape, np.nan)
    for r, info in enumerate(results.info):
        p = info["params"]
        if info["target"] == layer and info["pattern"] == pattern and len(p.get("sites", [])) == 1:
            grid[tuple(p["sites"][0])] = acc[r]
    if grid.ndim == 1:
        side = int(np.ceil(np.sqrt(grid.size)))
        grid = np.concatenate([grid, np.full(side * side - grid.size, np.nan)]).reshape(side, side)
    elif grid.ndim == 3:
        grid = _mean_of_sampled(grid)
    elif grid.ndim == 4:
        grid = grid.reshape(-1, grid.shape[-1])
    fig, ax = plt.subplots(figsize=(5.0, 4.0))
    im = ax.imshow(100.0 * grid, cmap="viridis", aspect="auto")
    fig.colorbar(im, ax=ax, label="accuracy under fault (%)")
    ax.set_title(f"{pattern} in {layer}", fontsize=9)
    return _save(fig, path)


def plot_accuracy_vs_param(results: Results, param: str, path: str | Path,
                           pattern: str | None = None) -> Path:
    """Accuracy against a numeric fault parameter; one line per (layer, fault model)."""
    acc = results.accuracy()
    series: dict[str, list[tuple[float, float]]] = {}
    for r, info in enumerate(results.info):
        if pattern is not None and info["pattern"] != pattern:
            continue
        value = info["params"].get(param)
        if isinstance(value, (int, float)):
            series.setdefault(f"{info['target']} / {info['pattern']}", []).append(
                (float(value), acc[r]))
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for label, pts in series.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", ms=3, label=label)
    ax.axhline(100 * results.golden_accuracy(), color="gray", ls="--", label="golden")
    ax.set_xlabel(param)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize=7)
    return _save(fig, path)
