"""Chunked path: windowed faults and integer arrays without a better path. Operands are gathered
per touched element in blocks, corrupted where a fault reaches, and summed in PE order."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic.dataflow import chain_sign
from classes_tool.systolic.geometry import ArrayGeometry


def run_chunked(geometry: ArrayGeometry, A, B, gi, gj, hits, order, c_faults, nK) -> np.ndarray:
    """Recompute elements in the PE order: in-tile sequential sums, then tile sums, in chunks."""
    n3 = geometry.n3
    K = A.shape[1]
    Kp = nK * n3
    mac = geometry.mac_dtype
    integer = mac.kind == "i"
    work = np.dtype(np.int64) if integer else mac
    E = len(gi)
    # few elements: gather straight from A's rows; many: transpose A once
    AT = A.T if 4 * E < A.shape[0] else np.ascontiguousarray(A.T)
    kk_order = range(n3) if chain_sign(geometry.T, "c") > 0 else range(n3 - 1, -1, -1)
    out = np.empty(E, dtype=mac)
    chunk = max(1, (1 << 20) // Kp)  # about 4 MB per float32 operand block
    for s in range(0, E, chunk):
        t = min(E, s + chunk)

        def part(f, s=s, t=t):
            e, kk, tk = hits[f]  # e is sorted
            lo, hi = np.searchsorted(e, [s, t])
            return (slice(None) if tk is None else tk[lo:hi]), kk[lo:hi], e[lo:hi] - s

        a = np.zeros((Kp, t - s), dtype=geometry.in_dtype)  # rows beyond K: the zero padding
        b = np.zeros((Kp, t - s), dtype=geometry.in_dtype)
        np.take(AT, gi[s:t], axis=1, out=a[:K])
        np.take(B, gj[s:t], axis=1, out=b[:K])
        a, b = a.reshape(nK, n3, t - s), b.reshape(nK, n3, t - s)
        for line, op in (("a", a), ("b", b)):
            for f in order[line]:
                where = part(f)
                if isinstance(where[0], slice) and 8 * len(where[1]) > n3 * (t - s):
                    # dense hits: a masked whole-block update beats fancy indexing
                    m = np.zeros((n3, t - s), dtype=bool)
                    m[where[1], where[2]] = True
                    np.copyto(op, f.corrupt(op), where=m[None])
                else:
                    op[where] = f.corrupt(op[where])
        if integer and not c_faults:
            # modular arithmetic: the order of the terms is irrelevant
            out[s:t] = np.einsum("ke,ke->e", a.reshape(Kp, -1).astype(np.int64),
                                 b.reshape(Kp, -1).astype(np.int64)).astype(mac)
            continue
        c_masks = []
        for f in c_faults:
            where = part(f)
            if len(where[1]):
                m = np.zeros((nK, n3, t - s), dtype=bool)
                m[where] = True
                c_masks.append((f, m))
        if a.dtype != work:
            a, b = a.astype(work), b.astype(work)
        c = np.zeros((nK, t - s), dtype=work)
        prod = np.empty((nK, t - s), dtype=work)
        for kk in kk_order:
            # product rounded to the accumulator dtype, then the sum (no fused multiply-add)
            np.multiply(a[:, kk, :], b[:, kk, :], out=prod)
            c += prod
            for f, m in c_masks:
                mk = m[:, kk, :]
                if mk.any():
                    c[mk] = f.corrupt(c[mk].astype(mac)).astype(work)
        if integer:
            out[s:t] = c.sum(axis=0).astype(mac)  # modular: tile order is irrelevant
        else:
            total = np.zeros(t - s, dtype=mac)
            for tk in range(nK):
                total += c[tk]
            out[s:t] = total
    return out
