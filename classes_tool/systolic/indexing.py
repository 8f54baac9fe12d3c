"""Small NumPy index helpers of the fast paths: sorted unique values, runs of consecutive
positions as slices, a cache-friendly transpose and a quick finiteness test."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic import tuning


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Sorted unique values (sort-based: much faster than hashing for large int arrays)."""
    values = np.sort(values, kind="stable")
    if len(values) < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def blocked_transpose(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Contiguous copy of a 2-D transpose, in blocks that stay in cache (2-3x faster).

    Into `out` (contiguous, shape ``src.T.shape``) when given."""
    r, c = src.shape
    if out is None:
        out = np.empty((c, r), dtype=src.dtype)
    if r >= c:
        step = max(1, tuning.TRANSPOSE_BLOCK // c)
        for s in range(0, r, step):
            out[:, s:s + step] = src[s:s + step].T
    else:
        step = max(1, tuning.TRANSPOSE_BLOCK // r)
        for s in range(0, c, step):
            out[s:s + step] = src[:, s:s + step].T
    return out


def positions_of(mask: np.ndarray) -> slice | np.ndarray:
    """Positions where `mask` is True: a slice when they are one run (in-place views)."""
    idx = np.nonzero(mask)[0]
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def consecutive_run(values: np.ndarray) -> tuple[int, int] | None:
    """(first, stop) when sorted `values` are consecutive integers, else None."""
    if len(values) and int(values[-1]) - int(values[0]) + 1 == len(values):
        return int(values[0]), int(values[-1]) + 1
    return None


def all_finite(values: np.ndarray) -> bool:
    """True when no value is inf or NaN (a finite sum of squares proves it; an overflow
    only says no, which is safe)."""
    flat = values.reshape(-1)
    return bool(np.isfinite(np.dot(flat, flat)))

