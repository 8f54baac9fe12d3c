"""Dataflows of a systolic array as 3x3 integer space-time transforms.

The iteration space of ``C = A @ B`` is (i, j, k) = (row of C, column of C, inner index). A dataflow
is an integer matrix ``T`` with ``det(T) != 0``: ``T[:2] @ (i, j, k)`` is the PE ``(x, y)`` that runs
the iteration and ``T[2] @ (i, j, k)`` is its time step. Keeping the model this small makes every
named dataflow, and any user-defined one, follow the same fault semantics.

Each register line travels along its dependence vector: ``a`` along (0, 1, 0) (an activation is reused
by every column of C), ``b`` along (1, 0, 0) (a weight is reused by every row of C) and ``c`` along
(0, 0, 1) (the partial sum grows along the inner index). A line is *stationary* when
``T[:2] @ d == 0``: its value stays in one PE.
"""

from __future__ import annotations

import numpy as np

from classes_tool.errors import UserError

LINES: tuple[str, ...] = ("a", "b", "c")

#: Dependence vector of each line in (i, j, k).
LINE_DIRECTIONS: dict[str, tuple[int, int, int]] = {
    "a": (0, 1, 0),
    "b": (1, 0, 0),
    "c": (0, 0, 1),
}

#: The named dataflows. All use time t = i + j + k (one hop per cycle on every moving line).
DATAFLOWS: dict[str, tuple[tuple[int, int, int], ...]] = {
    # PE (x, y) = (i, j): c[i, j] stays; a moves along y, b moves along x.
    "output_stationary": ((1, 0, 0), (0, 1, 0), (1, 1, 1)),
    # PE (x, y) = (k, j): b[k, j] stays; a moves along y, partial sums move along x (TPU-like).
    "weight_stationary": ((0, 0, 1), (0, 1, 0), (1, 1, 1)),
    # PE (x, y) = (k, i): a[i, k] stays; b moves along y, partial sums move along x.
    "input_stationary": ((0, 0, 1), (1, 0, 0), (1, 1, 1)),
    # PE (x, y) = (i + k, j + k): nothing stays; a moves along y, b along x, c along the diagonal.
    "no_local_reuse": ((1, 0, 1), (0, 1, 1), (1, 1, 1)),
}

#: Other names people use for the same transforms.
ALIASES: dict[str, str] = {"row_stationary": "input_stationary"}


def resolve_dataflow(dataflow: str | np.ndarray | list) -> tuple[str, np.ndarray]:
    """Return (name, T) for a dataflow name or a user matrix; raise UserError if it is unusable.

    A user matrix gets the name ``"custom"``; it must be 3x3, integer-valued and invertible so
    that distinct iterations of one tile never share a PE at the same time step.
    """
    if isinstance(dataflow, str):
        name = ALIASES.get(dataflow, dataflow)
        if name not in DATAFLOWS:
            known = ", ".join(sorted([*DATAFLOWS, *ALIASES]))
            raise UserError(f"unknown dataflow {dataflow!r}; known: {known}, or a 3x3 integer matrix")
        return name, np.array(DATAFLOWS[name], dtype=np.int64)
    try:
        raw = np.asarray(dataflow, dtype=float)
    except (TypeError, ValueError) as exc:
        raise UserError(f"dataflow must be a name or a 3x3 integer matrix, got {dataflow!r}") from exc
    if raw.shape != (3, 3) or not np.all(np.isfinite(raw)) or not np.all(raw == np.round(raw)):
        raise UserError(f"dataflow matrix must be 3x3 with integer entries, got {dataflow!r}")
    T = raw.astype(np.int64)
    if round(float(np.linalg.det(T))) == 0:
        raise UserError(f"dataflow matrix {T.tolist()} is singular (det = 0): two iterations would "
                        "share a PE at the same time step")
    for name, known in DATAFLOWS.items():
        if np.array_equal(T, np.array(known)):
            return name, T
    return "custom", T


def flow_vector(T: np.ndarray, line: str) -> tuple[int, int]:
    """PE displacement of one hop of `line` (0, 0 for a stationary line)."""
    d = np.array(LINE_DIRECTIONS[line], dtype=np.int64)
    dx, dy = (T[:2] @ d).tolist()
    return int(dx), int(dy)


def chain_sign(T: np.ndarray, line: str) -> int:
    """+1 if a line's chain runs towards increasing index, -1 towards decreasing index.

    A chain is ordered by time step; when one hop takes zero time steps the order falls back to
    increasing index, so the order is always total.
    """
    d = np.array(LINE_DIRECTIONS[line], dtype=np.int64)
    return -1 if int(T[2] @ d) < 0 else 1
