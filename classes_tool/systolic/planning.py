"""Index plans of the float permanent-fault paths: which output elements, operand rows and
columns, steps and inner tiles the faults reach, for one fault set and matrix shape.

A permanent fault hits the same local iterations of every tile, so these index sets depend
only on (faults, shape) and contain no values: an array caches them. A grid plan serves a
reach that is (nearly) a block of local rows x local columns where every operand fault acts on
whole local rows (a) or columns (b) of it; a position plan serves any other reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from classes_tool.systolic import tuning
from classes_tool.systolic.accumulation import c_fault_hit
from classes_tool.systolic.fault_effects import in_chain_order
from classes_tool.systolic.faults import Fault
from classes_tool.systolic.geometry import ArrayGeometry
from classes_tool.systolic.indexing import consecutive_run, positions_of, sorted_unique


def block_index(outer: np.ndarray | None, inner, o0: int, o1: int) -> tuple | None:
    """Index into a block's (tile, outer o0..o1, inner) sums; None when nothing is inside."""
    if outer is None:
        return (slice(None), slice(None), inner)
    part = outer[(outer >= o0) & (outer < o1)] - o0
    if len(part) == 0:
        return None
    if isinstance(inner, slice):
        return (slice(None), part, inner)
    return (slice(None), part[:, None], inner[None, :])


@dataclass(frozen=True)
class GridPlan:
    """Value-independent index sets of the grid path (see `plan_grid`)."""

    nK: int
    rows: np.ndarray  # global rows of the grid, ascending (padded rows >= M last)
    cols: np.ndarray
    nr: int  # rows < M
    nc: int  # columns < N
    row_run: tuple[int, int] | None  # the grid's rows are local rows r0..r1 of every tile
    col_run: tuple[int, int] | None
    rows_inner: bool  # sums laid out (tile, column, row); else (tile, row, column)
    a_steps: list  # chain order: (fault, None: every step and row, or [(step, rows)])
    b_steps: list
    kk_order: list
    blocks: list  # (o0, o1, c-fault hits per step): outer ranges computed together
    view: tuple | None  # (row run, column run) when every result is written, as a view of C
    sel: np.ndarray | None  # written entries of the (outer, inner) results; None: all
    flat: np.ndarray  # their flat index into C
    pool: list = field(default_factory=list, compare=False, repr=False)  # see workspace.Workspace


@dataclass(frozen=True)
class PositionPlan:
    """Value-independent index sets of the position path (see `plan_positions`)."""

    nI: int
    nJ: int
    nK: int
    L: int  # reached local positions
    urows: np.ndarray  # global rows the elements read (sorted; padded rows >= M come last)
    ucols: np.ndarray
    nr: int  # rows < M
    nc: int  # columns < N
    row_run: tuple[int, int] | None  # urows are local rows r0..r1 of every tile
    col_run: tuple[int, int] | None
    rix: np.ndarray | None  # (nI, L) index into urows of each element's row; None: in order
    cix: np.ndarray | None  # (nJ, L)
    a_steps: list  # (fault, steps it reaches, mask over (steps, 1, L, 1) or None: all), chain order
    b_steps: list
    c_steps: list  # per step: `c_fault_hit` tuples of the c faults, in the order added
    kk_order: list
    blocks: list  # (t0, t1, u0, u1): row tiles x column tiles computed together
    sel: np.ndarray | None  # elements of (nI, nJ, L) inside C (None: all)
    flat: np.ndarray  # their flat index into C
    pool: list = field(default_factory=list, compare=False, repr=False)  # see workspace.Workspace


def plan_permanent_faults(geometry: ArrayGeometry, faults: list[Fault], effects: dict,
                          M: int, K: int, N: int) -> GridPlan | PositionPlan | None:
    """Index sets for permanent `faults` (with their `effects`, see `corrupted_iterations`)
    and the shape M x K x N: a grid plan when it applies, else a position plan; None when no
    fault reaches C."""
    n2 = geometry.n2
    pos = sorted_unique(np.concatenate([it[:, 0] * n2 + it[:, 1] for it, _ in effects.values()]))
    plan = None
    if K > 0:
        plan = (plan_grid(geometry, faults, M, K, N, effects, pos)
                or plan_positions(geometry, faults, M, K, N, effects, pos))
        if len(plan.flat) == 0:
            plan = None
    return plan


def plan_grid(geometry: ArrayGeometry, faults: list[Fault], M, K, N, effects, pos
              ) -> GridPlan | None:
    """A grid plan, or None when the reach is not (nearly) a grid that the faults act on
    by whole local rows, columns or rectangles."""
    n1, n2, n3 = geometry.shape
    nI, nJ, nK = -(-M // n1), -(-N // n2), -(-K // n3)
    Li, Lj = sorted_unique(pos // n2), sorted_unique(pos % n2)
    nLi, nLj = len(Li), len(Lj)
    if tuning.GRID_MAX_WASTE * len(pos) < nLi * nLj:
        return None
    masks = {}
    for f, (its, _) in effects.items():
        m = np.zeros((n3, nLi, nLj), dtype=bool)
        m[its[:, 2], np.searchsorted(Li, its[:, 0]), np.searchsorted(Lj, its[:, 1])] = True
        masks[f] = m
    rows = (np.arange(nI)[:, None] * n1 + Li[None, :]).ravel()  # ascending: padding last
    cols = (np.arange(nJ)[:, None] * n2 + Lj[None, :]).ravel()
    operand = {}
    for line, axis, tiles in (("a", 2, nI), ("b", 1, nJ)):
        steps = []
        for f in in_chain_order(geometry, faults, line):
            m = masks[f]
            on = m.any(axis=axis)  # (n3, local rows) for a, (n3, local columns) for b
            if not np.array_equal(on, m.all(axis=axis)):
                return None  # the corrupted value depends on the other side of the grid
            ks = np.nonzero(on.any(axis=1))[0]
            if len(ks) == n3 and on.all():
                steps.append((f, None))
            else:
                steps.append((f, [(int(kk), positions_of(np.tile(on[kk], tiles))) for kk in ks]))
        operand[line] = steps
    rows_inner = len(rows) >= len(cols)
    c_steps: list[list] = [[] for _ in range(n3)]
    for f in (f for f in faults if f.line == "c"):
        for kk in range(n3):
            m = masks[f][kk]
            if not m.any():
                continue
            r_on, c_on = m.any(axis=1), m.any(axis=0)
            if not np.array_equal(m, r_on[:, None] & c_on[None, :]):
                return None  # not a rectangle of the grid
            r_idx, c_idx = np.tile(r_on, nI), np.tile(c_on, nJ)
            outer, inner = (c_idx, r_idx) if rows_inner else (r_idx, c_idx)
            c_steps[kk].append((f, None if outer.all() else np.nonzero(outer)[0],
                                positions_of(inner)))
    reach = np.zeros((nLi, nLj), dtype=bool)
    for m in masks.values():
        reach |= m.any(axis=0)
    # element (outer, inner) of the result block -> C
    r_all, c_all = rows[:, None], cols[None, :]
    ok = (r_all < M) & (c_all < N) & np.tile(reach, (nI, nJ))
    flat = r_all * N + c_all
    if rows_inner:
        ok, flat = ok.T, flat.T
    ok, flat = ok.ravel(), flat.ravel()
    outer_n, inner_n = (len(cols), len(rows)) if rows_inner else (len(rows), len(cols))
    step = max(1, tuning.STEP_BLOCK // max(1, nK * inner_n))
    blocks = []
    seen: dict = {}
    for o0 in range(0, outer_n, step):
        o1 = min(outer_n, o0 + step)
        hits = [[c_fault_hit(f, idx, geometry.mac_dtype, seen) for f, outer, inner in fs
                 if (idx := block_index(outer, inner, o0, o1)) is not None]
                for fs in c_steps]
        blocks.append((o0, o1, hits))
    row_run, col_run = consecutive_run(Li), consecutive_run(Lj)
    # the results are one strided view of C: no scatter
    whole = (bool(ok.all()) and row_run is not None and col_run is not None
             and M == nI * n1 and N == nJ * n2)
    return GridPlan(nK, rows, cols, int(np.sum(rows < M)), int(np.sum(cols < N)),
                    row_run if M == nI * n1 else None,
                    col_run if N == nJ * n2 else None, rows_inner,
                    operand["a"], operand["b"], geometry.c_step_order(), blocks,
                    (row_run, col_run) if whole else None,
                    None if ok.all() else np.nonzero(ok)[0], flat[ok])


def plan_positions(geometry: ArrayGeometry, faults: list[Fault], M, K, N, effects, pos
                   ) -> PositionPlan:
    """A position plan: (row tile, column tile, reached local position) elements."""
    n1, n2, n3 = geometry.shape
    nI, nJ, nK = -(-M // n1), -(-N // n2), -(-K // n3)
    L = len(pos)
    lookup = np.full(n1 * n2, -1, dtype=np.int64)
    lookup[pos] = np.arange(L)
    masks = {}
    for f, (its, _) in effects.items():
        m = np.zeros((n3, L), dtype=bool)
        m[its[:, 2], lookup[its[:, 0] * n2 + its[:, 1]]] = True
        masks[f] = m
    operand = {}
    for line in ("a", "b"):
        steps = []
        for f in in_chain_order(geometry, faults, line):
            m = masks[f]
            ks = np.nonzero(m.any(axis=1))[0]
            sub = m[ks]
            steps.append((f, ks, None if sub.all() else sub[:, None, :, None]))
        operand[line] = steps
    c_steps: list[list] = [[] for _ in range(n3)]
    seen: dict = {}
    for f in (f for f in faults if f.line == "c"):
        for kk in range(n3):
            if masks[f][kk].any():  # sums are (row tile, column tile, position, tile)
                idx = (slice(None), slice(None), positions_of(masks[f][kk]))
                c_steps[kk].append(c_fault_hit(f, idx, geometry.mac_dtype, seen))
    li, lj = pos // n2, pos % n2
    rows = np.arange(nI)[:, None] * n1 + li[None, :]  # (nI, L) global row of each element
    cols = np.arange(nJ)[:, None] * n2 + lj[None, :]  # (nJ, L) global column
    urows, ucols = sorted_unique(rows.ravel()), sorted_unique(cols.ravel())
    rix = None if np.array_equal(rows.ravel(), urows) else np.searchsorted(urows, rows)
    cix = None if np.array_equal(cols.ravel(), ucols) else np.searchsorted(ucols, cols)
    # blocks of (row tiles, column tiles) with about STEP_BLOCK accumulators
    per_tile = max(1, L * nK)
    tj_step = max(1, min(nJ, tuning.STEP_BLOCK // per_tile))
    ti_step = max(1, min(nI, tuning.STEP_BLOCK // (per_tile * tj_step)))
    blocks = [(t0, min(nI, t0 + ti_step), u0, min(nJ, u0 + tj_step))
              for t0 in range(0, nI, ti_step) for u0 in range(0, nJ, tj_step)]
    inside = ((rows[:, None, :] < M) & (cols[None, :, :] < N)).ravel()
    flat = (rows[:, None, :] * N + cols[None, :, :]).ravel()[inside]
    row_run, col_run = consecutive_run(sorted_unique(li)), consecutive_run(sorted_unique(lj))
    return PositionPlan(nI, nJ, nK, L, urows, ucols, int(np.sum(urows < M)),
                        int(np.sum(ucols < N)), row_run if M == nI * n1 else None,
                        col_run if N == nJ * n2 else None, rix, cix, operand["a"], operand["b"],
                        c_steps, geometry.c_step_order(), blocks,
                        None if inside.all() else np.nonzero(inside)[0], flat)
