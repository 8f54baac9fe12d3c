"""Float permanent-fault grid path: the touched elements are the rows x columns of a grid over
all tiles, one BLAS product (or NumPy products) per PE step of all tiles at once."""

from __future__ import annotations

import math

import numpy as np

from classes_tool.systolic import tuning
from classes_tool.systolic.accumulation import PartialSums
from classes_tool.systolic.geometry import ArrayGeometry
from classes_tool.systolic.indexing import all_finite, blocked_transpose
from classes_tool.systolic.paths.operands import gather_operands
from classes_tool.systolic.planning import GridPlan
from classes_tool.systolic.workspace import give_back_workspace, take_workspace


def coefficient_layout(n3: int, nK: int, outer: int, dtype: np.dtype):
    """Coefficient matrices of a grid block's BLAS step products: zeros (n3, nK * outer, nK),
    the view ``coef[kk, t, o, t]`` (n3, nK, outer) of the only non-zero entries, and the
    per-step 2-D matrices as a list."""
    coef = np.zeros((n3, nK, outer, nK), dtype=dtype)
    st = coef.strides
    diag = np.ndarray((n3, nK, outer), dtype, coef, strides=(st[0], st[1] + st[3], st[2]))
    flat = coef.reshape(n3, nK * outer, nK)
    return (flat, diag, list(flat)), coef.nbytes


def run_float_grid(geometry: ArrayGeometry, A, B, golden, plan: GridPlan) -> np.ndarray:
    """Grid path: the touched elements are the rows x columns of a grid over all tiles.

    Operand a is laid out (tile, step, row) (one transpose of the rows it needs), b
    (tile, step, column) (a view of B's columns), the sums (tile, column, row) or (tile,
    row, column): the longer side innermost. A step of all tiles is one BLAS product (see
    `PartialSums`) or, for small blocks, all steps are one broadcast NumPy product.
    """
    n1, n2, n3 = geometry.shape
    M, K = A.shape
    N = B.shape[1]
    nK = plan.nK
    work = np.dtype(np.int64) if geometry.mac_dtype.kind == "i" else geometry.mac_dtype
    R, S = len(plan.rows), len(plan.cols)
    ws = take_workspace(plan.pool)
    X, Y = gather_operands(geometry, A, B, plan.rows, plan.cols, plan.nr, plan.nc,
                           plan.row_run, plan.col_run, False, bool(plan.b_steps))
    # a[tile, step, row]: our own copy (a kept buffer when it is the BLAS vector)
    keep_a = plan.rows_inner and X.dtype == work  # then vec below is a view of a_buf
    a_buf = ws.buffer("a", X.shape[::-1], X.dtype) if keep_a else None
    a = blocked_transpose(X, a_buf).reshape(nK, n3, R)
    b = Y.reshape(nK, n3, S)
    for op, steps in ((a, plan.a_steps), (b, plan.b_steps)):
        for f, where in steps:  # chain order: upstream faults first
            if where is None:
                f.corrupt_inplace(op)
                continue
            for kk, idx in where:
                if isinstance(idx, slice):
                    f.corrupt_inplace(op[:, kk, idx])
                else:
                    op[:, kk, idx] = f.corrupt(op[:, kk, idx])
    a, b = a.astype(work, copy=False), b.astype(work, copy=False)
    blas = work.kind == "f" and all_finite(a if plan.rows_inner else b)
    # step first: a_op[kk] is (tile, row) and b_op[kk] (tile, column), strided views
    a, b = np.swapaxes(a, 0, 1), np.swapaxes(b, 0, 1)
    if plan.rows_inner:
        inner_n, outer_n, a_op, b_op = R, S, a[:, :, None, :], b[:, :, :, None]
    else:
        inner_n, outer_n, a_op, b_op = S, R, a[:, :, :, None], b[:, :, None, :]
    vec, sca = (a, b) if plan.rows_inner else (b, a)
    vecs = None
    total = np.empty((outer_n, inner_n), dtype=geometry.mac_dtype)
    for block, (o0, o1, c_hits) in enumerate(plan.blocks):
        shape = (nK, o1 - o0, inner_n)
        sums = ws.get(("sums", block), lambda shape=shape, c_hits=c_hits: (
            PartialSums(ws.buffer(("c", shape), shape, work), c_hits, geometry.mac_dtype), 0))
        if plan.rows_inner:
            a_blk, b_blk = a_op, b_op[:, :, o0:o1]
        else:
            a_blk, b_blk = a_op[:, :, o0:o1], b_op
        if not blas or math.prod(shape) < tuning.BLAS_MIN:
            steps = np.multiply(a_blk, b_blk)  # every product at once: one NumPy call
            sums.run(plan.kk_order, 0, total[o0:o1], steps=steps)
            continue
        # coefs[kk] @ vecs[kk]: row (tile, outer) holds the outer operand at column `tile`
        coef, diag, coefs = ws.get(("coef", o1 - o0),
                                   lambda o=o1 - o0: coefficient_layout(n3, nK, o, work))
        diag[...] = sca[:, :, o0:o1]
        if vecs is None:  # the per-step views of a kept buffer are kept with it
            vecs = ws.get("vecs", lambda: (list(vec), 0)) if keep_a else list(vec)
        sums.run(plan.kk_order, 0, total[o0:o1],
                 blas=(coefs, vecs, ws.buffer(("prod", shape), shape, work), a_blk, b_blk))
    give_back_workspace(plan.pool, ws)
    # golden is ours (fresh) and contiguous: write in place
    if plan.view is not None:
        (r0, r1), (c0, c1) = plan.view
        view = golden.reshape(M // n1, n1, N // n2, n2)[:, r0:r1, :, c0:c1]
        if plan.rows_inner:  # total is (column tile, column, row tile, row)
            view[...] = total.reshape(view.shape[2:] + view.shape[:2]).transpose(2, 3, 0, 1)
        else:
            view[...] = total.reshape(view.shape)
        return golden
    total = total.reshape(-1)
    golden.reshape(-1)[plan.flat] = total if plan.sel is None else total[plan.sel]
    return golden
