"""Touched output elements of the general (windowed or integer) case: the elements some fault
reaches, and for each fault its corrupted values as (element, step in a tile, inner tile)."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic.faults import Fault
from classes_tool.systolic.geometry import ArrayGeometry


def touched_elements(geometry: ArrayGeometry, faults: list[Fault], effects: dict,
                     pos: np.ndarray, M: int, N: int, nI: int, nJ: int, nK: int) -> tuple | None:
    """(rows, columns, hits) of the elements of C that some fault corrupts; None when none.

    `pos` are the local output positions (li * n2 + lj) any fault can reach. `hits[fault]`
    is (element, in-tile inner index, inner tile or None for all) of the values it corrupts,
    elements numbered in the order of the returned rows and columns (sorted per fault). A
    windowed fault counts only where its window covers the cycle of the hit.
    """
    n1, n2, n3 = geometry.shape
    L = len(pos)
    lookup = np.full(n1 * n2, -1, dtype=np.int64)
    lookup[pos] = np.arange(L)
    li, lj = pos // n2, pos % n2
    # candidate elements: every (row tile, column tile) x local position, cropped to C
    ti, tj, lp = np.meshgrid(np.arange(nI), np.arange(nJ), np.arange(L), indexing="ij")
    ti, tj, lp = ti.ravel(), tj.ravel(), lp.ravel()
    gi, gj = ti * n1 + li[lp], tj * n2 + lj[lp]
    keep = (gi < M) & (gj < N)
    ti, tj, lp, gi, gj = ti[keep], tj[keep], lp[keep], gi[keep], gj[keep]
    if len(gi) == 0:
        return None
    tile0 = (ti * nJ + tj) * nK  # tile number of inner tile 0 of each element

    def entries(fault: Fault) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(element, in-tile inner index, inner tile or None for all) of corrupted values."""
        its, times = effects[fault]
        table = np.full((L, n3), -1, dtype=np.int64)
        table[lookup[its[:, 0] * n2 + its[:, 1]], its[:, 2]] = times - geometry.t_min
        rel = table[lp]  # (E, n3): cycle offset of the hit inside a tile, -1: no hit
        e, kk = np.nonzero(rel >= 0)
        if fault.window is None:
            return e, kk, None
        r = rel[e, kk]
        count = len(e)
        e, kk, r = np.repeat(e, nK), np.repeat(kk, nK), np.repeat(r, nK)
        tk = np.tile(np.arange(nK), count)
        cyc = (tile0[e] + tk) * geometry.period + r
        on = (cyc >= int(fault.window[0])) & (cyc < int(fault.window[1]))
        return e[on], kk[on], tk[on]

    hits = {f: entries(f) for f in faults}
    mark = np.zeros(len(gi), dtype=bool)
    for e, _, _ in hits.values():
        mark[e] = True
    touched = np.nonzero(mark)[0]
    if len(touched) == 0:
        return None
    # renumber elements to the touched ones (e is sorted: np.nonzero is row-major)
    renumber = np.cumsum(mark) - 1
    hits = {f: (renumber[e], kk, tk) for f, (e, kk, tk) in hits.items()}
    return gi[touched], gj[touched], hits
