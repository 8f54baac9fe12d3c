"""Sparse integer delta path: one a/b fault on an integer array, as the golden value plus the
change of the corrupted products only (modular sums: the order of terms is irrelevant)."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic.faults import Fault
from classes_tool.systolic.geometry import ArrayGeometry


def run_integer_delta(geometry: ArrayGeometry, fault: Fault, A, B, golden, gi, gj, hit
                      ) -> np.ndarray:
    """One integer a/b fault: golden + sum of (a'b' - ab) over the corrupted iterations only.

    Exact because integer accumulation is modular, so the order of the terms is irrelevant.
    Used when the corrupted iterations are a small part of the touched elements' work.
    """
    e, kk, tk = hit
    n3 = geometry.n3
    K = A.shape[1]
    if tk is None:
        nK = -(-K // n3)
        e = np.repeat(e, nK)
        kg = np.repeat(kk, nK) + n3 * np.tile(np.arange(nK), len(kk))
    else:
        kg = tk * n3 + kk
    inside = kg < K  # padded inner positions hold 0 on both operands
    e, kg = e[inside], kg[inside]  # a corrupted padded operand still multiplies a clean 0
    if fault.line == "a":
        clean, other = A[gi[e], kg], B[kg, gj[e]]
    else:
        clean, other = B[kg, gj[e]], A[gi[e], kg]
    terms = (fault.corrupt(clean).astype(np.int64) - clean.astype(np.int64)) * other
    if geometry.in_dtype.itemsize == 1:  # |terms| < 2**15: float64 sums stay exact (K < 2**38)
        delta = np.bincount(e, weights=terms.astype(np.float64), minlength=len(gi))
        delta = delta.astype(np.int64)
    else:
        delta = np.zeros(len(gi), dtype=np.int64)
        np.add.at(delta, e, terms)
    return (golden[gi, gj].astype(np.int64) + delta).astype(geometry.mac_dtype)
