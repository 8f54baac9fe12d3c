"""The campaign report: a Markdown summary a person reads first, tables (CSV + Markdown), PNG plots.

All numbers come from aggregate SQL over the result store, so the report scales to millions of
rows. Rates are per (fault, input) evaluation, with intervals over *faults* (the sampling unit),
computed by `estimates` from the sampling design stored in the campaign meta; per-fault rates
(the share of faults with an outcome on at least one input) come with them. The "margin
achieved" of a target is the largest half-width of its four outcome intervals.

Plots use Matplotlib's Agg canvas through the object-oriented API (``Figure`` +
``FigureCanvasAgg``), never pyplot: no display is needed and the backend of a notebook or another
caller is left alone. A report is all or nothing: `write_report` checks every option (params,
outcome, statistics files) before it writes, then makes the files in a staging folder and moves
them into place together, so a bad option leaves no partial report and no half-replaced old one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.errors import UserError
from classes_tool.files import atomic_path, publish, staging_folder, write_text_atomic
from classes_tool.results.estimates import RATES, Design, design_from_meta, group_estimates
from classes_tool.results.injection_statistics import format_markdown
from classes_tool.results.outcomes import BUCKETS, OUTCOMES, error_buckets
from classes_tool.results.store import DATABASE_FILE_SUFFIXES, ResultStore

LABELS = {"masked": "masked", "tolerable_sdc": "tolerable SDC", "critical_sdc": "critical SDC",
          "due": "DUE", "sdc5": "SDC-5"}
COLOURS = {"masked": "#4daf4a", "tolerable_sdc": "#ffbf00", "critical_sdc": "#e41a1c",
           "due": "#6a3d9a"}
_ABSENT = "(absent)"


# -- aggregation -----------------------------------------------------------------------------------

def _json_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))


def _pct(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f}%"


def _rate_cell(r: dict[str, Any], o: str) -> str:
    return (f"{_pct(r[o + '_rate'])} [{100 * r[o + '_ci_low']:.2f}, "
            f"{100 * r[o + '_ci_high']:.2f}]")


def _md_escape(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _table_columns(extra: Sequence[str]) -> list[str]:
    cols = ["faults", "complete_faults", "inputs", "evaluations"]
    for o in RATES:
        cols += [o, f"{o}_rate", f"{o}_ci_low", f"{o}_ci_high", f"{o}_design_effect",
                 f"{o}_effective_n", f"{o}_faults_hit", f"{o}_fault_rate", f"{o}_fault_ci_low",
                 f"{o}_fault_ci_high"]
    return cols + ["margin_achieved", *extra]


def _write_group_tables(out_dir: Path, stem: str, name: str, rows: list[dict[str, Any]],
                        extra: Sequence[str] = (), extra_md: dict[str, str] | None = None,
                        confidence: float = 0.95) -> dict[str, Path]:
    cols = _table_columns(extra)
    csv_rows = [[r["group"], *(("" if r.get(c) is None else r.get(c)) for c in cols)]
                for r in rows]
    csv_path = out_dir / f"{stem}.csv"
    write_text_atomic(csv_path, _csv_text([name, *cols], csv_rows))
    md_header = [name, "faults", "evaluations", *(LABELS[o] for o in (*OUTCOMES, "sdc5"))]
    extra_md = extra_md or {}
    md_header += list(extra_md.values())
    md_rows = [[r["group"], r["faults"], r["evaluations"],
                *(_rate_cell(r, o) for o in RATES),
                *(r.get(k, "") for k in extra_md)] for r in rows]
    md_path = out_dir / f"{stem}.md"
    write_text_atomic(md_path, f"# Outcome rates per {name}\n\nRates per (fault, input) evaluation "
                               f"(the mean over faults of each fault's rate over its inputs) "
                               f"with {100 * confidence:g}% intervals over faults in brackets "
                               "(percent); see summary.md for how they were computed.\n\n"
                      + _md_table(md_header, md_rows))
    return {csv_path.name: csv_path, md_path.name: md_path}


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._") or "param"


def target_estimates(db_path: str | Path, confidence: float | None = None
                     ) -> tuple[list[dict[str, Any]], Design]:
    """Per-target estimate rows of a result database (one snapshot) and its sampling design."""
    with ResultStore(db_path, must_exist=True) as store, store.snapshot():
        design = design_from_meta(store.meta, confidence)
        return group_estimates(store.connection, design, "f.target", order="first",
                               meta=store.meta), design


def format_summary(rows: list[dict[str, Any]], design: Design) -> str:
    """A plain-text table of per-evaluation outcome rates per target with the half-widths of
    their intervals over faults, and what the clustering cost (the campaign's closing table)."""
    conf = f"{100 * design.confidence:g}%"
    header = (f"{'target':<24}{'faults':>8}{'evals':>9}" + "".join(f"{o:>16}" for o in OUTCOMES)
              + f"{'deff':>7}{'margin':>9}")
    lines = [header, "-" * len(header)]
    for r in rows:
        cells = []
        for o in OUTCOMES:
            rate = r[f"{o}_rate"]
            if isinstance(rate, float) and math.isnan(rate):
                cells.append("-")
                continue
            half = max(r[f"{o}_ci_high"] - rate, rate - r[f"{o}_ci_low"])
            cells.append(f"{100 * rate:6.2f}% ±{100 * half:4.1f}")
        deff = r["critical_sdc_design_effect"]
        margin = r["margin_achieved"]
        lines.append(f"{str(r['group']):<24}{r['faults']:>8}{r['evaluations']:>9}"
                     + "".join(f"{c:>16}" for c in cells)
                     + f"{_num(deff):>7}" + f"{_pct(margin, 1) if math.isfinite(margin) else '-':>9}")
    lines.append(f"(rates per (fault, input) evaluation, ± the farther end of the {conf} interval "
                 "over faults; deff: design effect of the critical SDC rate; margin: the largest "
                 "half-width; " + design.describe() + ")")
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------------------

def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def _plot_outcomes(rows: list[dict[str, Any]], path: Path, confidence: float = 0.95) -> Path:
    """Stacked horizontal bars of outcome rates per target, SDC-1 rate and interval written."""
    n = max(1, len(rows))
    longest = max((len(str(r["group"])) for r in rows), default=10)
    fig = _new_figure(7.5 + 0.06 * min(longest, 40), 1.9 + 0.42 * n)
    ax = fig.add_subplot()
    if not rows:
        ax.text(0.5, 0.5, "no results", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save_png(fig, path)
    names = [str(r["group"]) for r in rows][::-1]
    ys = np.arange(len(rows))
    left = np.zeros(len(rows))
    for o in OUTCOMES:
        vals = np.array([100 * r[f"{o}_rate"] for r in rows][::-1])
        ax.barh(ys, vals, left=left, color=COLOURS[o], label=LABELS[o], height=0.7,
                edgecolor="white", linewidth=0.5)
        left += vals
    for y, r in zip(ys, rows[::-1], strict=True):
        ax.text(101, y, f"SDC-1 {_pct(r['critical_sdc_rate'], 1)} "
                        f"[{100 * r['critical_sdc_ci_low']:.1f}, {100 * r['critical_sdc_ci_high']:.1f}]"
                        f"  {r['faults']} faults x {r.get('inputs', '?')} inputs",
                va="center", fontsize=8)
    ax.set_yticks(ys, names, fontsize=9)
    # the axes run on past 100 % to hold the per-bar annotations without layout tricks
    ax.set_xlim(0, 140)
    ax.set_xticks(range(0, 101, 20))
    ax.spines[["top", "right"]].set_visible(False)
    ax.spines["bottom"].set_bounds(0, 100)
    ax.set_xlabel("share of (fault, input) evaluations (%)")
    ax.set_title(f"Outcome rates per target (SDC-1 = critical SDC, {100 * confidence:g}% "
                 "interval over faults)",
                 fontsize=10)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    ax.margins(y=0.02)
    return _save_png(fig, path)


def _plot_rel_error(outcomes: np.ndarray, rel: np.ndarray, path: Path) -> Path:
    """Left: SpikingJET buckets (incl. DUE). Right: log histogram of positive finite errors."""
    fig = _new_figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=(1, 1.6))
    buckets = _bucket_labels(outcomes, rel)
    total = len(buckets)
    counts = [int(np.sum(buckets == b)) for b in BUCKETS]
    shares = [100 * c / total if total else 0 for c in counts]
    bars = ax1.bar(BUCKETS, shares, color=["#4daf4a", "#a6d96a", "#fdae61", "#e41a1c", "#6a3d9a"])
    for b, c in zip(bars, counts, strict=True):
        ax1.annotate(str(c), (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                     va="bottom", fontsize=8)
    ax1.set_ylabel("share of evaluations (%)")
    ax1.set_xlabel("relative error at golden top-1")
    ax1.set_title("Relative-error buckets")
    ax1.set_ylim(0, max(shares + [1]) * 1.15)

    finite = rel[np.isfinite(rel)]
    positive = finite[finite > 0]
    zero = int(np.sum(finite == 0))
    inf = int(np.sum(np.isinf(rel)))
    if positive.size:
        lo, hi = positive.min(), positive.max()
        if hi <= lo:
            lo, hi = lo / 2, hi * 2
        bins = np.logspace(np.log10(lo), np.log10(hi), 40)
        ax2.hist(positive, bins=bins, color="#377eb8")
        ax2.set_xscale("log")
        for edge in (5, 10, 20):
            ax2.axvline(edge, color="grey", linestyle="--", linewidth=0.8)
    else:
        ax2.text(0.5, 0.5, "no non-zero finite errors", ha="center", va="center",
                 transform=ax2.transAxes)
    ax2.set_xlabel("relative error (%), log scale")
    ax2.set_ylabel("evaluations")
    ax2.set_title(f"Non-zero errors (not shown: {zero} exactly 0, {inf} infinite, "
                  f"{int(np.sum(np.isnan(rel)))} DUE)", fontsize=9)
    return _save_png(fig, path)


def _bucket_labels(outcomes: np.ndarray, rel: np.ndarray) -> np.ndarray:
    labels = error_buckets(rel).astype(object)
    labels[outcomes == "due"] = "due"
    labels[(outcomes != "due") & np.isnan(rel)] = "n/a"
    return labels


def _check_outcome(outcome: str) -> str:
    if outcome not in (*OUTCOMES, "sdc5"):
        raise UserError(f"unknown outcome {outcome!r}; choose one of {', '.join(OUTCOMES)}, sdc5")
    return outcome


def heatmap_file_name(x_param: str, y_param: str, outcome: str = "critical_sdc") -> str:
    """``heatmap_<x>_<y>_<outcome>.png``: the outcome is in the name so that heat maps of two
    outcomes over the same params can sit side by side in one report folder."""
    return f"heatmap_{_safe_name(x_param)}_{_safe_name(y_param)}_{_check_outcome(outcome)}.png"


def heatmap_data(db_path: str | Path, x_param: str, y_param: str,
                 outcome: str = "critical_sdc") -> tuple[list, list, np.ndarray, np.ndarray]:
    """Rate (percent) of `outcome` per (y, x) param cell: (xs, ys, rates, evaluations).

    Each cell is (evaluations with `outcome`) / (evaluations) among faults with those two param
    values; cells without faults are NaN. Faults lacking either param are left out. `outcome`
    may also be ``'sdc5'``.
    """
    _check_outcome(outcome)
    with ResultStore(db_path, must_exist=True) as store:
        return _heatmap_grid(store.connection, x_param, y_param, outcome)


def _heatmap_grid(conn, x_param: str, y_param: str, outcome: str
                  ) -> tuple[list, list, np.ndarray, np.ndarray]:
    """`heatmap_data` read through an open connection."""
    hit = "r.sdc5" if outcome == "sdc5" else "(r.outcome = ?)"
    args: list[Any] = [_json_path(x_param), _json_path(y_param)]
    if outcome != "sdc5":
        args.append(outcome)
    data = conn.execute(
        "SELECT json_extract(f.params, ?) AS x, json_extract(f.params, ?) AS y, "
        f"COUNT(*), SUM({hit}) FROM results r JOIN faults f ON f.fault_index = r.fault_index "
        "GROUP BY x, y HAVING x IS NOT NULL AND y IS NOT NULL", args).fetchall()
    keys = [] if data else _param_keys(conn)
    if not data:
        raise UserError(f"no results have both params {x_param!r} and {y_param!r}; params "
                        f"present: {', '.join(keys) or 'none'}")
    xs = sorted({d[0] for d in data}, key=_sort_key)
    ys = sorted({d[1] for d in data}, key=_sort_key)
    grid = np.full((len(ys), len(xs)), np.nan)
    counts = np.zeros((len(ys), len(xs)), dtype=np.int64)
    for x, y, n, k in data:
        grid[ys.index(y), xs.index(x)] = 100.0 * (k or 0) / n
        counts[ys.index(y), xs.index(x)] = n
    return xs, ys, grid, counts


def plot_heatmap(db_path: str | Path, x_param: str, y_param: str, path: str | Path,
                 outcome: str = "critical_sdc") -> Path:
    """Draw the rate of `outcome` over two fault params (e.g. PE ``x`` and ``y``) as a PNG.

    See `heatmap_data` for what a cell holds; empty cells stay blank.
    """
    xs, ys, grid, _ = heatmap_data(db_path, x_param, y_param, outcome)
    return _draw_heatmap(xs, ys, grid, x_param, y_param, Path(path), outcome)


def _draw_heatmap(xs: list, ys: list, grid: np.ndarray, x_param: str, y_param: str, path: Path,
                  outcome: str) -> Path:
    fig = _new_figure(1.5 + 0.45 * max(len(xs), 6), 1.2 + 0.4 * max(len(ys), 5))
    ax = fig.add_subplot()
    im = ax.imshow(np.ma.masked_invalid(grid), cmap="Reds", vmin=0,
                   vmax=max(1e-9, float(np.nanmax(grid))), origin="upper", aspect="auto")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs], fontsize=8)
    ax.set_yticks(range(len(ys)), [str(v) for v in ys], fontsize=8)
    ax.set_xlabel(x_param)
    ax.set_ylabel(y_param)
    if grid.size <= 400:
        top = np.nanmax(grid)
        for (i, j), v in np.ndenumerate(grid):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.6 * top else "black")
    fig.colorbar(im, ax=ax, label=f"{LABELS[outcome]} rate (%)")
    ax.set_title(f"{LABELS[outcome]} rate over {x_param} × {y_param}")
    return _save_png(fig, path)


# -- the report ------------------------------------------------------------------------------------

def _margins(rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """Add population and a Markdown cell of the margin achieved to per-target rows."""
    population = meta.get("population")
    population = population if isinstance(population, dict) else {}
    for r in rows:
        n_pop = population.get(str(r["group"]))
        r["population"] = int(n_pop) if isinstance(n_pop, (int, float)) else None
        m = r.get("margin_achieved")
        r["margin_md"] = ("n/a" if m is None or (isinstance(m, float) and math.isnan(m))
                          else f"±{_pct(m)}")


def _num(x: Any, digits: int = 1) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def _design_section(design: Design, meta: dict[str, Any], by_target: list[dict[str, Any]],
                    conf_pct: str) -> list[str]:
    """How the intervals were computed, and what the clustering of each target cost."""
    asked = meta.get("margin")
    asked_text = (f"the margin asked for was ±{_pct(float(asked))}" if isinstance(
        asked, (int, float)) and not isinstance(asked, bool) and meta.get("faults") is None
        else "no margin was asked for (a fixed fault budget)")
    lines = [
        "## How the intervals were computed", "",
        f"Sampling design: {design.describe()}.", "",
        "The fault is the unit of sampling: every fault runs on the same inputs, so the "
        "evaluations of one fault are correlated (a fault that corrupts one input tends to "
        "corrupt the others). A per-evaluation rate is the mean over faults of each fault's "
        "rate over its inputs, and its interval comes from the spread between faults: a "
        "confidence interval by betting (Waudby-Smith and Ramdas), valid for any distribution of "
        "per-fault rates at every sample size" + (
            ", with the inputs' own variance added (crossed design)" if design.inputs ==
            "sample" else "") + ". A group spanning several targets (each sampled and sized on its "
        "own) takes the size-weighted ends of the targets' intervals, which is conservative. "
        "The per-fault rate is the share of faults with the outcome on "
        "at least one input. Only faults that met every input enter the rates.", "",
        "The design effect is how many times the variance of a rate exceeds that of as many "
        "independent trials as there are evaluations; the effective n is the number of "
        "independent trials the evaluations are worth (evaluations / design effect). "
        f"Margin achieved: the largest half-width of the target's four outcome intervals at "
        f"{conf_pct} confidence; {asked_text}.", ""]
    header = ["target", "faults", "inputs", "population",
              "design effect (critical SDC)", "effective n (critical SDC)",
              f"margin achieved ({conf_pct})"]
    lines.append(_md_table(header, [
        [r["group"], r["faults"], r["inputs"],
         "n/a" if r.get("population") is None else r["population"],
         _num(r["critical_sdc_design_effect"]), _num(r["critical_sdc_effective_n"], 0),
         r["margin_md"]] for r in by_target]))
    lines += ["## Per-fault rates", "",
              f"Share of faults with the outcome on at least one input ({conf_pct} interval over "
              "faults, percent).", "",
              _md_table(["target", "faults", *(LABELS[o] for o in RATES if o != "masked")],
                        [[r["group"], r["complete_faults"],
                          *(f"{_pct(r[o + '_fault_rate'])} [{100 * r[o + '_fault_ci_low']:.2f}"
                            f", {100 * r[o + '_fault_ci_high']:.2f}]"
                            for o in RATES if o != "masked")] for r in by_target])]
    return lines


#: Items of a dict or list meta value shown in the summary; the rest are counted, not listed.
_META_ITEMS = 12


def _compact(value: Any, top: bool = True) -> str:
    """A dict or list meta value on one line: ``atol=1e-06, rtol=1e-05``, nested ``[a, b]``.

    Long ones show their first `_META_ITEMS` items and how many more there are, so a campaign
    over fifty layers still gets a readable line instead of none.
    """
    if isinstance(value, dict):
        shown = [f"{k}={_compact(v, False)}" for k, v in list(value.items())[:_META_ITEMS]]
        brackets = "{}"
    elif isinstance(value, (list, tuple)):
        shown = [_compact(v, False) for v in value[:_META_ITEMS]]
        brackets = "[]"
    else:
        return str(value)
    more = len(value) - len(shown)
    text = ", ".join(shown + ([f"… {more} more"] if more else []))
    if top:
        return text or "none"
    return brackets[0] + text + brackets[1]


def _meta_lines(meta: dict[str, Any]) -> list[str]:
    """The campaign settings from the store's meta, one line each.

    Dict and list values (``tolerance``, ``targets``, ``faults_per_target``) are written
    compactly rather than left out: they are part of what a campaign was run with.
    """
    lines = []
    for k in sorted(meta):
        v = meta[k]
        if k == "population" and isinstance(v, dict):
            lines.append(f"- population: {sum(int(x) for x in v.values())} faults over "
                         f"{len(v)} targets")
            continue
        if isinstance(v, (dict, list)):
            lines.append(f"- {k}: {_compact(v)}")
            continue
        text = repr(v) if isinstance(v, str) else str(v)
        if len(text) <= 100:
            lines.append(f"- {k}: {text}")
    return lines


def _statistics_section(name: str | os.PathLike) -> str:
    """The summary section of one fault-statistics JSON file (written by `train`/`sweep`).

    Read and checked before the report writes anything, so a missing or foreign file (say an
    .h5 model given by mistake) is a one-line error and leaves no report behind.
    """
    try:
        text = Path(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"statistics file {name} not found") from None
    except UnicodeDecodeError:
        raise UserError(f"{name} is not a fault-statistics JSON file: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"cannot read statistics file {name}: {exc.strerror or exc}") from None
    try:
        stats = json.loads(text)
        if not isinstance(stats, dict) or not all(isinstance(r, dict) for r in stats.values()):
            raise TypeError("expected {layer name: {seen: ..., injected: ..., ...}}")
        table = format_markdown(stats)
    except KeyError as exc:
        raise UserError(f"{name} is not a fault-statistics JSON file: no {exc} in a layer's "
                        "row") from None
    except (ValueError, TypeError, AttributeError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"{name} is not a fault-statistics JSON file: {first}") from None
    return (f"## Injection statistics ({Path(name).name})\n\nPer injection layer: activations "
            "seen, injected, changed, rates, RMSE and cosine similarity between clean and faulty "
            f"tensors.\n\n{table}")


def _param_keys(conn: sqlite3.Connection) -> list[str]:
    return sorted({k for (js,) in conn.execute("SELECT DISTINCT params FROM faults")
                   for k in json.loads(js)})


def write_report(db_path: str | Path, out_dir: str | Path, group_params: Sequence[str] = (),
                 confidence: float | None = None, *, heatmap: Sequence[str] | None = None,
                 outcome: str | None = None, statistics: Sequence[str | os.PathLike] = (),
                 csv_path: str | Path | None = None) -> dict[str, Path]:
    """Write the report of one result database into `out_dir`; returns {file name: path}.

    `confidence` of the intervals: by default the one the campaign was sized with (stored in its
    meta), else 0.95, so a report rebuilt from the database equals the campaign's own.

    Files: summary.md, by_target.{csv,md}, by_pattern.{csv,md}, by_param_<key>.{csv,md} for each
    key in `group_params`, outcomes_by_target.png, rel_error.png; with `heatmap` (x, y params)
    also the heat map of `outcome` (default critical_sdc) named by `heatmap_file_name`.
    `outcome` without `heatmap` is an error (it would be ignored). `statistics`: fault-statistics
    JSON files whose tables are added to summary.md. `csv_path`: also export every row there (key
    ``"csv"`` of the result).

    One snapshot: every table, plot and the CSV describe the same rows, even while a campaign
    is still adding to the database.

    All or nothing: every option is checked before anything is written, and the files are made
    in a hidden folder beside `out_dir` and moved into place only when all of them exist, so a
    bad option or a failure leaves neither a partial report nor half-replaced old files.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"report output {out_dir} exists and is not a folder")
    if outcome is not None:
        _check_outcome(outcome)
        if heatmap is None:
            raise UserError(f"outcome {outcome!r} is what a heat map shows: give the heat map's "
                            "params too (--heatmap X Y)")
    if heatmap is not None and len(heatmap) != 2:
        raise UserError(f"a heat map needs two params (X and Y), not {list(heatmap)}")
    outcome = outcome or "critical_sdc"
    if csv_path is not None:
        database = str(Path(db_path).resolve())
        if Path(csv_path).resolve() in {Path(database + end) for end in DATABASE_FILE_SUFFIXES}:
            raise UserError(f"{csv_path} is the result database: the CSV would replace it; "
                            "give the CSV another name")
    stats_sections = [_statistics_section(name) for name in statistics]
    with ResultStore(db_path, must_exist=True) as store, store.snapshot():
        store.check_contents()  # unknown outcomes, non-JSON meta or params: refused, not skipped
        conn = store.connection
        meta = store.meta
        design = design_from_meta(meta, confidence)
        confidence = design.confidence
        overall = group_estimates(conn, design, "'all'")
        by_target = group_estimates(conn, design, "f.target", order="first", meta=meta)
        by_pattern = group_estimates(conn, design, "f.pattern", order="first")
        by_param = {}
        for key in group_params:
            present = conn.execute("SELECT COUNT(*) FROM faults WHERE json_type(params, ?) "
                                   "IS NOT NULL", (_json_path(key),)).fetchone()[0]
            if not present:
                keys = _param_keys(conn)
                raise UserError(f"no fault has the param {key!r}; params present: "
                                f"{', '.join(keys) or 'none'}")
            by_param[key] = group_estimates(conn, design, "json_extract(f.params, ?)",
                                            (_json_path(key),))
        n_inputs = conn.execute("SELECT COUNT(DISTINCT input_index) FROM results").fetchone()[0]
        outcomes_arr, rel_arr = [], []
        for o, e in conn.execute("SELECT outcome, rel_error FROM results"):
            outcomes_arr.append(o)
            rel_arr.append(math.nan if e is None else e)
        outcomes_np = np.asarray(outcomes_arr, dtype=object)
        rel_np = np.asarray(rel_arr, dtype=np.float64)
        heat = (None if heatmap is None else
                _heatmap_grid(conn, heatmap[0], heatmap[1], outcome))

        # every check passed: render into a staging folder, then move the complete set into
        # place (the CSV last but one, so that a failure in it publishes no report)
        with staging_folder(out_dir) as stage:
            staged = _render(stage, db_path, meta, design, overall, by_target, by_pattern,
                             by_param, n_inputs, outcomes_np, rel_np, heatmap, outcome, heat,
                             stats_sections)
            if csv_path is not None and Path(csv_path).resolve() in {
                    (out_dir / path.name).resolve() for path in staged.values()}:
                raise UserError(f"{csv_path} is one of the report's own files; give the CSV "
                                "another name")
            exported = {} if csv_path is None else {"csv": store.export_csv(csv_path)}
            return {**publish(staged, out_dir), **exported}


def _render(out_dir: Path, db_path: str | Path, meta: dict[str, Any], design: Design,
            overall: list[dict[str, Any]], by_target: list[dict[str, Any]],
            by_pattern: list[dict[str, Any]], by_param: dict[str, list[dict[str, Any]]],
            n_inputs: int, outcomes_np: np.ndarray, rel_np: np.ndarray,
            heatmap: Sequence[str] | None, outcome: str, heat: tuple | None,
            stats_sections: list[str]) -> dict[str, Path]:
    """Write every report file into `out_dir` (the staging folder); returns {name: path}."""
    files: dict[str, Path] = {}
    confidence = design.confidence
    _margins(by_target, meta)
    extra = ("population",)
    extra_md = {"margin_md": f"margin achieved ({100 * confidence:g}% conf.)"}
    files.update(_write_group_tables(out_dir, "by_target", "target", by_target, extra, extra_md,
                                     confidence))
    files.update(_write_group_tables(out_dir, "by_pattern", "pattern", by_pattern,
                                     confidence=confidence))
    for key, rows in by_param.items():
        files.update(_write_group_tables(out_dir, f"by_param_{_safe_name(key)}", key, rows,
                                         confidence=confidence))
    files["outcomes_by_target.png"] = _plot_outcomes(by_target, out_dir / "outcomes_by_target.png",
                                                     confidence)
    files["rel_error.png"] = _plot_rel_error(outcomes_np, rel_np, out_dir / "rel_error.png")
    if heat is not None:
        name = heatmap_file_name(heatmap[0], heatmap[1], outcome)
        xs, ys, grid, _ = heat
        files[name] = _draw_heatmap(xs, ys, grid, heatmap[0], heatmap[1], out_dir / name,
                                    outcome)

    # -- summary.md
    tot = overall[0] if overall else {"faults": 0, "evaluations": 0}
    conf_pct = f"{100 * confidence:g}%"
    md = ["# Campaign report", "", f"Database: `{Path(db_path).name}`", ""]
    meta_lines = _meta_lines(meta)
    if meta_lines:
        md += ["## Campaign", "", *meta_lines, ""]
    md += ["## Totals", "", f"- faults injected: {tot['faults']}", f"- inputs: {n_inputs}",
           f"- evaluations (fault x input): {tot['evaluations']}", ""]
    if not overall:
        md += ["No results stored yet.", ""]
    else:
        o = overall[0]
        md += [f"## Outcome rates (all targets, {conf_pct} intervals over faults)", "",
               _md_table(["outcome", "count", "rate", f"{conf_pct} interval",
                          "design effect", "effective n"],
                         [[LABELS[k], o[k], _pct(o[f"{k}_rate"]),
                           f"[{_pct(o[f'{k}_ci_low'])}, {_pct(o[f'{k}_ci_high'])}]",
                           _num(o[f"{k}_design_effect"]), _num(o[f"{k}_effective_n"], 0)]
                          for k in RATES]),
               f"SDC-5 rate (golden top-1 not in the faulty top-5, DUE counted): "
               f"**{_pct(o['sdc5_rate'])}** [{_pct(o['sdc5_ci_low'])}, {_pct(o['sdc5_ci_high'])}]"
               f"; critical SDC (SDC-1): **{_pct(o['critical_sdc_rate'])}**.", ""]
        header = ["target", "faults", "evaluations", *(LABELS[k] for k in RATES),
                  f"margin achieved ({conf_pct} conf.)"]
        md += ["## Per target", "",
               "Per-evaluation rates in percent with the interval over faults in brackets.", "",
               _md_table(header, [[r["group"], r["faults"], r["evaluations"],
                                   *(_rate_cell(r, k) for k in RATES), r["margin_md"]]
                                  for r in by_target])]
        md += _design_section(design, meta, by_target, conf_pct)
        buckets = _bucket_labels(outcomes_np, rel_np)
        names = list(BUCKETS) + (["n/a"] if np.any(buckets == "n/a") else [])
        md += ["## Relative error at the golden top-1 class", "",
               "Share of evaluations per bucket of 100·|faulty − golden| / |golden| "
               "(SpikingJET buckets; DUE rows have no error value).", "",
               _md_table(["bucket", "count", "share"],
                         [[b, int(np.sum(buckets == b)),
                           _pct(float(np.mean(buckets == b)))] for b in names])]
    md += ["## Files", "", *(f"- [{name}]({name})" for name in files), "",
           "Definitions: masked = outputs equal within the tolerance; tolerable SDC = outputs "
           "differ, same top-1; critical SDC = top-1 differs; DUE = NaN/Inf in the output. "
           "Intervals are over faults, the unit the campaign samples (see above).", ""]
    md += stats_sections
    summary = out_dir / "summary.md"
    write_text_atomic(summary, "\n".join(md))
    return {"summary.md": summary, **files}
