"""Outcome classes of one (fault, input) evaluation, compared against the golden output.

Every faulty output row is put in exactly one class, checked in this order (first match wins):

1. ``'due'``           -- the faulty row holds a NaN or an Inf anywhere (Detected Unrecoverable
                          Error: a system would notice and could not use the result).
2. ``'critical_sdc'``  -- the top-1 class differs from the golden top-1 (SDC-1). This wins over the
                          tolerance: a near-tie that flips the decision is critical even when the
                          numbers moved less than the tolerance, because the decision is what a
                          system acts on.
3. ``'tolerable_sdc'`` -- same top-1, but some output element differs beyond the tolerance.
4. ``'masked'``        -- every output element equals the golden one within the tolerance.

Tolerance: element-wise ``np.isclose(faulty, golden, atol=atol, rtol=rtol)`` semantics, i.e.
``|faulty - golden| <= atol + rtol * |golden|`` (``<=``: a difference exactly at the tolerance is
still masked), required for *every* element of the output vector.

Ties: top-1 is ``numpy.argmax``, so among equal maximal scores the lowest class index wins, for the
golden and the faulty output alike. Top-5 uses the same order (score descending, then index
ascending).

SDC-5 (reported beside the class, not a class of its own): the golden top-1 class is not among the
faulty top-5. With 5 classes or fewer it can never happen for a finite output. For a DUE row there
is no valid ranking, so ``sdc5`` is True (counted conservatively).

Relative error (percent) at the golden top-1 class ``t``: ``100 * |f[t] - g[t]| / |g[t]|``.
When ``g[t] == 0`` it is 0 if ``f[t] == 0`` and ``inf`` otherwise (any change of a zero score is
an unbounded relative change). For DUE rows it is NaN. Buckets follow SpikingJET:
``'0-5%'``, ``'5-10%'``, ``'10-20%'``, ``'>20%'`` (half-open ``[0,5)``, ``[5,10)``, ``[10,20)``,
``[20, inf]``) and ``'due'`` for NaN.
"""

from __future__ import annotations

import math

import numpy as np

from classes_tool.errors import UserError

MASKED = "masked"
TOLERABLE_SDC = "tolerable_sdc"
CRITICAL_SDC = "critical_sdc"
DUE = "due"
#: All outcome classes, from harmless to worst (the order used in tables and plots).
OUTCOMES: tuple[str, ...] = (MASKED, TOLERABLE_SDC, CRITICAL_SDC, DUE)

#: Relative-error buckets (labels, lower bounds in percent), then the DUE bucket.
BUCKETS: tuple[str, ...] = ("0-5%", "5-10%", "10-20%", ">20%", "due")
_BUCKET_EDGES = np.array([5.0, 10.0, 20.0])

TOP_K = 5


def _as_rows(a: np.ndarray) -> np.ndarray:
    """View scores as (n, classes): 1-D means one sample, extra trailing dims are flattened."""
    a = np.asarray(a)
    if a.ndim == 0:
        raise ValueError("scores must have at least one dimension (classes)")
    if a.ndim == 1:
        return a[None, :]
    return a.reshape(a.shape[0], -1)


def check_golden(golden: np.ndarray) -> None:
    """Outcomes are judged against the golden rows, so these must be finite."""
    g = _as_rows(golden)
    if not np.all(np.isfinite(g)):
        bad = np.flatnonzero(~np.all(np.isfinite(g), axis=1))[:5].tolist()
        raise UserError(f"the fault-free model gives NaN/Inf outputs (rows {bad}); "
                        "campaign outcomes cannot be judged against it")


def classify(golden: np.ndarray, faulty: np.ndarray, atol: float = 1e-6,
             rtol: float = 1e-5) -> dict[str, np.ndarray]:
    """Classify each faulty output row against its golden row (see the module docstring).

    `golden` and `faulty` are score arrays of shape (n, classes); `golden` may also be a single row
    (classes,) shared by all faulty rows. Returns arrays of length n: ``outcome`` (str),
    ``sdc5`` (bool), ``rel_error`` (float64, percent), ``golden_top1`` and ``faulty_top1``
    (int64; ``faulty_top1`` is -1 for DUE rows, which have no valid ranking).
    """
    f = _as_rows(faulty).astype(np.float64, copy=False)
    g = _as_rows(golden).astype(np.float64, copy=False)
    if g.shape[1] != f.shape[1] or g.shape[0] not in (1, f.shape[0]):
        raise ValueError(f"golden shape {np.shape(golden)} does not match faulty shape "
                         f"{np.shape(faulty)}")
    g = np.broadcast_to(g, f.shape)
    n, classes = f.shape
    if classes == 0:
        raise ValueError("scores need at least one class")
    check_golden(g)

    due = ~np.all(np.isfinite(f), axis=1)
    g_top = np.argmax(g, axis=1)
    f_safe = np.where(due[:, None], 0.0, f)  # keeps argmax/ranking well defined on DUE rows
    f_top = np.argmax(f_safe, axis=1)
    close = np.all(np.isclose(f_safe, g, atol=atol, rtol=rtol), axis=1)
    # Rank of the golden top-1 class in the faulty order (score desc, index asc): the number of
    # classes that come before it. It is in the top-5 iff fewer than 5 come before it.
    rows = np.arange(n)
    f_at_t = f_safe[rows, g_top]
    idx = np.arange(classes)[None, :]
    before = (f_safe > f_at_t[:, None]) | ((f_safe == f_at_t[:, None]) & (idx < g_top[:, None]))
    out = finish_classification(due, f_top, close, f_at_t, before.sum(axis=1), g_top,
                                g[rows, g_top])
    out["outcome"] = np.asarray(OUTCOMES)[out["outcome"]]
    return out


def finish_classification(due, faulty_top1, close, faulty_at_top, ahead, golden_top1,
                          golden_at_top) -> dict[str, np.ndarray]:
    """The outcome columns from the per-row quantities `classify` measures (see
    `classification_parts_graph` for their definitions); ``outcome`` as int32 indices into
    `OUTCOMES`. Shared by `classify` and the campaign, which measures them inside its traced
    step and finishes here: the few row-wise rules cost NumPy microseconds per batch, where
    TensorFlow would pay an op dispatch for each."""
    due, close = np.asarray(due, bool), np.asarray(close, bool)
    f_top, g_top = np.asarray(faulty_top1), np.asarray(golden_top1)
    codes = np.full(len(due), OUTCOMES.index(MASKED), np.int32)
    codes[~close] = OUTCOMES.index(TOLERABLE_SDC)
    codes[f_top != g_top] = OUTCOMES.index(CRITICAL_SDC)
    codes[due] = OUTCOMES.index(DUE)
    sdc5 = (np.asarray(ahead) >= TOP_K) | due
    f_at_t = np.asarray(faulty_at_top, np.float64)
    g_at_t = np.asarray(golden_at_top, np.float64)
    diff = np.abs(f_at_t - g_at_t)
    denom = np.abs(g_at_t)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(denom > 0, 100.0 * diff / np.where(denom > 0, denom, 1.0),
                       np.where(diff == 0, 0.0, np.inf))
    rel[due] = np.nan
    return {
        "outcome": codes,
        "sdc5": sdc5,
        "rel_error": rel,
        "golden_top1": g_top.astype(np.int64),
        "faulty_top1": np.where(due, -1, f_top).astype(np.int64),
    }


def error_bucket(rel_error_percent: float) -> str:
    """SpikingJET bucket label of one relative error in percent (NaN means DUE -> ``'due'``)."""
    x = float(rel_error_percent)
    if math.isnan(x):
        return "due"
    if x < 0:
        raise ValueError(f"relative error cannot be negative: {x}")
    return BUCKETS[int(np.searchsorted(_BUCKET_EDGES, x, side="right"))]


def error_buckets(rel_error_percent: np.ndarray) -> np.ndarray:
    """Vectorised `error_bucket`: an array of bucket labels, same shape as the input."""
    x = np.asarray(rel_error_percent, dtype=np.float64)
    if np.any(x < 0):
        raise ValueError("relative error cannot be negative")
    labels = np.asarray(BUCKETS)
    i = np.searchsorted(_BUCKET_EDGES, np.where(np.isnan(x), 0.0, x), side="right")
    return np.where(np.isnan(x), "due", labels[i])


def golden_terms(golden: np.ndarray, atol: float = 1e-6, rtol: float = 1e-5
                 ) -> dict[str, np.ndarray]:
    """What `classify` derives from the golden rows alone, computed once per input: the rows in
    float64, their top-1 class, the score there, and each score's tolerance bound
    ``atol + rtol * |g|`` (the same float64 expression `np.isclose` evaluates). A campaign
    gathers these per evaluation instead of recomputing them for every fault."""
    g = _as_rows(golden).astype(np.float64)
    top = np.argmax(g, axis=1)
    return {"golden": g, "top1": top.astype(np.int32), "at_top": g[np.arange(len(g)), top],
            "bound": atol + rtol * np.abs(g)}
