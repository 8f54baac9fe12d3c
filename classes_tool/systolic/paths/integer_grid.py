"""Integer permanent-fault grid path: a reach of (nearly) local rows x local columns makes the
touched elements a grid, so each PE step is one broadcast outer product."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic import tuning
from classes_tool.systolic.dataflow import chain_sign
from classes_tool.systolic.fault_effects import in_chain_order
from classes_tool.systolic.faults import Fault
from classes_tool.systolic.geometry import ArrayGeometry
from classes_tool.systolic.indexing import sorted_unique


def run_integer_grid(geometry: ArrayGeometry, faults: list[Fault], A, B, golden, pos, effects,
                     nI, nJ, nK) -> np.ndarray | None:
    """Integer arrays: permanent faults whose reach is (nearly) local rows x local columns.

    The touched elements then form a grid (row tiles x local rows) x (column tiles x local
    columns), so each PE step is one broadcast outer product of operand rows and columns:
    no per-element gathers. Returns None when the grid would waste too much work.
    """
    n1, n2, n3 = geometry.shape
    M, K = A.shape
    N = B.shape[1]
    Li, Lj = sorted_unique(pos // n2), sorted_unique(pos % n2)
    nLi, nLj = len(Li), len(Lj)
    if tuning.GRID_MAX_WASTE * len(pos) < nLi * nLj or n3 * nK * nLi * nJ * nLj > (1 << 24):
        return None  # sparse reach or one row tile too large: the chunked path is better
    masks = {}
    for f, (its, _) in effects.items():
        m = np.zeros((nLi, nLj, n3), dtype=bool)
        m[np.searchsorted(Li, its[:, 0]), np.searchsorted(Lj, its[:, 1]), its[:, 2]] = True
        masks[f] = m
    touched = np.zeros((nLi, nLj), dtype=bool)
    for m in masks.values():
        touched |= m.any(axis=2)
    mac = geometry.mac_dtype
    integer = mac.kind == "i"
    work = np.dtype(np.int64) if integer else mac
    Kp = nK * n3
    order = {line: in_chain_order(geometry, faults, line) for line in ("a", "b")}
    c_faults = [f for f in faults if f.line == "c"]
    kk_order = range(n3) if chain_sign(geometry.T, "c") > 0 else range(n3 - 1, -1, -1)
    cols = np.arange(nJ)[:, None] * n2 + Lj[None, :]  # (nJ, nLj) global columns
    col_ok = cols < N
    Bs = np.zeros((Kp, nJ, nLj), dtype=geometry.in_dtype)  # zero padding beyond K and N
    Bs[:K, col_ok] = B[:, cols[col_ok]]
    Bs = np.moveaxis(Bs.reshape(nK, n3, nJ, nLj), 1, 0)  # (n3, nK, nJ, nLj)
    b_used = Bs[:, :, None, None, :, :]  # (n3, nK, 1, 1, nJ, nLj)
    for f in order["b"]:
        m = np.moveaxis(masks[f], 2, 0)[:, None, None, :, None, :]
        b_used = np.where(m, f.corrupt(b_used), b_used)
    b_used = b_used.astype(work, copy=False)
    c_steps = []  # per c fault and step: None (no hit), True (whole block) or (rows, cols)
    for f in c_faults:
        per_kk = []
        for kk in range(n3):
            m = masks[f][:, :, kk]
            per_kk.append(None if not m.any() else True if m.all() else np.nonzero(m))
        c_steps.append((f, per_kk))
    out = golden.copy()
    step = max(1, (1 << 19) // (nK * nLi * nJ * nLj))  # bound the accumulator block
    for t0 in range(0, nI, step):
        t1 = min(nI, t0 + step)
        rows = np.arange(t0, t1)[:, None] * n1 + Li[None, :]  # (nT, nLi) global rows
        row_ok = rows < M
        Ar = np.zeros((t1 - t0, nLi, Kp), dtype=geometry.in_dtype)
        Ar[row_ok, :K] = A[rows[row_ok]]
        Ar = Ar.reshape(t1 - t0, nLi, nK, n3).transpose(3, 2, 0, 1)  # (n3, nK, nT, nLi)
        a_clean = Ar[:, :, :, :, None, None]  # (n3, nK, nT, nLi, 1, 1)
        shape = (nK, t1 - t0, nLi, nJ, nLj)
        c = np.zeros(shape, dtype=work)
        # products rounded to the accumulator dtype, then the sums (no fused multiply-add);
        # small blocks: all products in one call, large ones: one PE step at a time
        if int(np.prod(shape)) <= tuning.PRODUCT_BLOCK:
            a_used = a_clean
            for f in order["a"]:
                m = np.moveaxis(masks[f], 2, 0)[:, None, None, :, None, :]
                a_used = np.where(m, f.corrupt(a_used), a_used)
            prod = a_used.astype(work, copy=False) * b_used
        else:
            prod = None
            step_prod = np.empty(shape, dtype=work)
        for kk in kk_order:
            if prod is None:
                # the corrupted operand depends on the local column only where a fault acts
                a_kk = a_clean[kk]
                for f in order["a"]:
                    m = masks[f][:, :, kk]
                    if m.any():
                        a_kk = np.where(m[None, None, :, None, :], f.corrupt(a_kk), a_kk)
                np.multiply(a_kk.astype(work, copy=False), b_used[kk], out=step_prod)
                c += step_prod
            else:
                c += prod[kk]
            for f, per_kk in c_steps:
                hit = per_kk[kk]
                if hit is True:
                    c[...] = f.corrupt(c.astype(mac, copy=False))
                elif hit is not None:
                    ii, jj = hit
                    c[:, :, ii, :, jj] = f.corrupt(c[:, :, ii, :, jj].astype(mac)).astype(work)
        if integer:
            res = c.sum(axis=0).astype(mac)  # modular: tile order is irrelevant
        else:
            res = np.zeros(c.shape[1:], dtype=mac)
            for tk in range(nK):
                res += c[tk]
        sel = (touched[None, :, None, :] & row_ok[:, :, None, None]
               & col_ok[None, None, :, :])
        R = np.broadcast_to(rows[:, :, None, None], sel.shape)
        S = np.broadcast_to(cols[None, None, :, :], sel.shape)
        out[R[sel], S[sel]] = res[sel]
    return out
