"""Float permanent-fault position path: every (row tile, column tile, reached local position)
element, one broadcast product and add per PE step of a block of elements."""

from __future__ import annotations

import math

import numpy as np

from classes_tool.systolic.accumulation import PartialSums
from classes_tool.systolic.geometry import ArrayGeometry
from classes_tool.systolic.indexing import blocked_transpose
from classes_tool.systolic.paths.operands import gather_operands
from classes_tool.systolic.planning import PositionPlan
from classes_tool.systolic.workspace import give_back_workspace, take_workspace


def run_float_positions(geometry: ArrayGeometry, A, B, golden, plan: PositionPlan
                        ) -> np.ndarray:
    """Position path: every (row tile, column tile, reached local position) element.

    A permanent fault corrupts the same local iterations in every tile, so the reached
    elements are (row tile) x (column tile) x (local position). Operands are laid out as
    (step, tile, position, inner tile), so one PE step of a block of elements and all
    their inner tiles is one broadcast product and one add over contiguous runs.
    """
    n3 = geometry.n3
    M, K = A.shape
    nI, nJ, nK, L = plan.nI, plan.nJ, plan.nK, plan.L
    work = np.dtype(np.int64) if geometry.mac_dtype.kind == "i" else geometry.mac_dtype
    ur, uc = plan.urows, plan.ucols  # sorted: the padded rows and columns come last
    nr, nc = plan.nr, plan.nc
    X, Y = gather_operands(geometry, A, B, ur, uc, nr, nc, plan.row_run, plan.col_run,
                           False, False)
    # (step, row or column, inner tile): one transpose of the rows/columns needed
    Au = blocked_transpose(X.reshape(len(ur) * nK, n3)).reshape(n3, len(ur), nK)
    Bu = blocked_transpose(Y.reshape(nK, n3 * len(uc))).reshape(n3, len(uc), nK)
    ops = {}
    for line, U, ix, tiles, steps in (("a", Au, plan.rix, nI, plan.a_steps),
                                      ("b", Bu, plan.cix, nJ, plan.b_steps)):
        G = U.reshape(n3, tiles, L, nK) if ix is None else np.take(U, ix, axis=1)
        for f, ks, m in steps:  # chain order: upstream faults first
            if len(ks) == n3 and m is None:
                f.corrupt_inplace(G)
            else:
                sub = G[ks]
                if m is None:
                    G[ks] = f.corrupt(sub)
                else:
                    np.copyto(sub, f.corrupt(sub), where=m)
                    G[ks] = sub
        ops[line] = G.astype(work, copy=False)
    Ag, Bg = ops["a"], ops["b"]
    total = np.empty((nI, nJ, L), dtype=geometry.mac_dtype)
    largest = max((t1 - t0) * (u1 - u0) for t0, t1, u0, u1 in plan.blocks)
    buffer = np.empty(n3 * largest * L * nK, dtype=work)
    ws = take_workspace(plan.pool)
    for t0, t1, u0, u1 in plan.blocks:
        # (step, row tile, column tile, position, inner tile) products of the block: a
        # broadcast copy of a, then one product with b (long contiguous runs: fast)
        shape = (t1 - t0, u1 - u0, L, nK)
        prods = buffer[:n3 * math.prod(shape)].reshape(n3, *shape)
        np.copyto(prods, Ag[:, t0:t1, None])
        np.multiply(prods, Bg[:, None, u0:u1], out=prods)
        # the c faults hit the same positions of every block: one PartialSums per block shape
        sums = ws.get(("sums", shape), lambda shape=shape: (
            PartialSums(ws.buffer(("c", shape), shape, work), plan.c_steps, geometry.mac_dtype), 0))
        sums.run(plan.kk_order, -1, total[t0:t1, u0:u1], steps=prods)
    give_back_workspace(plan.pool, ws)
    out = golden.reshape(-1)  # golden is ours (fresh) and contiguous: write in place
    total = total.reshape(-1)
    out[plan.flat] = total if plan.sel is None else total[plan.sel]
    return golden
