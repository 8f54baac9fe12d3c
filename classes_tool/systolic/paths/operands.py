"""Operand rows and columns of the float permanent-fault paths, zero-padded to whole tiles."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic.geometry import ArrayGeometry


def gather_operands(geometry: ArrayGeometry, A, B, rows, cols, nr, nc, row_run, col_run,
                    copy_a: bool, copy_b: bool):
    """Rows `rows` of A as (rows, Kp) and columns `cols` of B as (Kp, columns), zero-padded.

    Sorted `rows`: the first `nr` are inside A (`cols`, `nc` likewise); a run of local rows
    in every tile is a slice. `copy_a`, `copy_b`: never share memory with A or B (the
    result will be corrupted in place).
    """
    M, K = A.shape
    N = B.shape[1]
    Kp = -(-K // geometry.n3) * geometry.n3
    R, S = len(rows), len(cols)
    if nr == R == M:
        X = A
    elif row_run is not None:  # the same local rows of every row tile: a slice
        X = A.reshape(-1, geometry.n1, K)[:, slice(*row_run)].reshape(R, K)
    else:
        X = np.take(A, rows[:nr], axis=0)
    if X.shape != (R, Kp) or (copy_a and np.may_share_memory(X, A)):
        X0, X = X, np.zeros((R, Kp), dtype=geometry.in_dtype)  # the zero padding
        X[:nr, :K] = X0[:nr]
    if nc == S == N:
        Y = B
    elif col_run is not None:
        Y = B.reshape(K, -1, geometry.n2)[:, :, slice(*col_run)].reshape(K, S)
    else:
        Y = np.take(B, cols[:nc], axis=1)
    if Y.shape != (Kp, S) or (copy_b and np.may_share_memory(Y, B)):
        Y0, Y = Y, np.zeros((Kp, S), dtype=geometry.in_dtype)
        Y[:K, :nc] = Y0[:, :nc]
    return X, Y
