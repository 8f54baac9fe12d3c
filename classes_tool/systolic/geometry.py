"""Geometry of a systolic array: its tile of (i, j, k) iterations, the dataflow that maps them onto
PEs and time steps, the register dtypes, and the timing of one tile (see docs/systolic.md)."""

from __future__ import annotations

from functools import cached_property

import numpy as np

from classes_tool.errors import UserError
from classes_tool.systolic.dataflow import chain_sign, flow_vector, resolve_dataflow
from classes_tool.systolic.dtypes import SUPPORTED_INPUT_DTYPES, default_mac_dtype


class ArrayGeometry:
    """An ``n1 x n2 x n3`` tile of (i, j, k) iterations mapped onto PEs by a dataflow.

    `in_dtype` is the dtype of registers ``a`` and ``b``; `mac_dtype` the one of ``c``
    (default: 4x wider for integers, the same for floats). A tile takes `period` cycles; its
    iteration (i, j, k) runs at local time ``T[2] @ (i, j, k) - t_min``.
    """

    def __init__(self, n1: int, n2: int, n3: int, dataflow: str | np.ndarray = "output_stationary",
                 in_dtype: str | np.dtype = "int8", mac_dtype: str | np.dtype | None = None):
        for name, n in (("n1", n1), ("n2", n2), ("n3", n3)):
            if int(n) != n or int(n) < 1:
                raise UserError(f"array extent {name} must be a positive integer, got {n!r}")
        self.n1, self.n2, self.n3 = int(n1), int(n2), int(n3)
        self.dataflow, self.T = resolve_dataflow(dataflow)
        try:
            self.in_dtype = np.dtype(in_dtype)
        except TypeError as exc:
            raise UserError(f"unknown in_dtype {in_dtype!r}") from exc
        if self.in_dtype.name not in SUPPORTED_INPUT_DTYPES:
            raise UserError(f"in_dtype {self.in_dtype.name} not supported; use one of "
                            f"{', '.join(SUPPORTED_INPUT_DTYPES)}")
        try:
            self.mac_dtype = (default_mac_dtype(self.in_dtype) if mac_dtype is None
                              else np.dtype(mac_dtype))
        except TypeError as exc:
            raise UserError(f"unknown mac_dtype {mac_dtype!r}") from exc
        int_in = self.in_dtype.kind in "iu"
        if int_in and (self.mac_dtype.kind != "i" or self.mac_dtype.itemsize > 8):
            raise UserError("integer inputs need a signed integer accumulator (int16/int32/int64)")
        if not int_in and (self.mac_dtype.kind != "f"
                           or self.mac_dtype.itemsize < self.in_dtype.itemsize):
            raise UserError("float inputs need a float accumulator at least as wide as the inputs")
        ext = np.array([self.n1 - 1, self.n2 - 1, self.n3 - 1], dtype=np.int64)
        t_row = self.T[2]
        self.t_min = int(np.minimum(t_row * ext, 0).sum())
        self.t_max = int(np.maximum(t_row * ext, 0).sum())
        self.period = self.t_max - self.t_min + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.n1, self.n2, self.n3

    def config(self) -> dict:
        """JSON-able arguments that rebuild this array (without its faults)."""
        return {"n1": self.n1, "n2": self.n2, "n3": self.n3,
                "dataflow": self.dataflow if self.dataflow != "custom" else self.T.tolist(),
                "in_dtype": self.in_dtype.name, "mac_dtype": self.mac_dtype.name}

    def line_dtype(self, line: str) -> np.dtype:
        """Dtype of a register line: in_dtype for ``a``/``b``, the accumulator dtype for ``c``."""
        return self.mac_dtype if line == "c" else self.in_dtype

    def flow(self, line: str) -> tuple[int, int]:
        """PE displacement of one hop of `line`; (0, 0) means the line is stationary."""
        return flow_vector(self.T, line)

    def is_stationary(self, line: str) -> bool:
        return self.flow(line) == (0, 0)

    @cached_property
    def pes(self) -> np.ndarray:
        """All PE coordinates (x, y) that run some iteration of a tile, sorted, shape (P, 2)."""
        found = set()
        jj, kk = np.meshgrid(np.arange(self.n2), np.arange(self.n3), indexing="ij")
        for i in range(self.n1):
            it = np.stack([np.full(jj.size, i), jj.ravel(), kk.ravel()])
            xy = self.T[:2] @ it
            found.update(zip(xy[0].tolist(), xy[1].tolist(), strict=True))
        return np.array(sorted(found), dtype=np.int64).reshape(-1, 2)

    def iterations_at(self, x: int, y: int) -> np.ndarray:
        """Local iterations (i, j, k) of a tile that run on PE (x, y), shape (h, 3)."""
        T2 = self.T[:2]
        normal = np.cross(T2[0], T2[1])  # the direction along which the PE does not change
        axis = int(np.argmax(np.abs(normal)))  # its component is a 2x2 minor of T[:2]: non-zero
        others = [d for d in range(3) if d != axis]
        minor = T2[:, others]
        det = int(round(np.linalg.det(minor)))
        ext = (self.n1, self.n2, self.n3)
        v = np.arange(ext[axis], dtype=np.int64)
        rhs = np.array([x, y], dtype=np.int64)[:, None] - T2[:, axis][:, None] * v[None, :]
        # Cramer's rule in exact integers
        num0 = rhs[0] * minor[1, 1] - rhs[1] * minor[0, 1]
        num1 = minor[0, 0] * rhs[1] - minor[1, 0] * rhs[0]
        ok = (num0 % det == 0) & (num1 % det == 0)
        u0, u1 = num0 // det, num1 // det
        ok &= (u0 >= 0) & (u0 < ext[others[0]]) & (u1 >= 0) & (u1 < ext[others[1]])
        out = np.empty((int(ok.sum()), 3), dtype=np.int64)
        out[:, axis] = v[ok]
        out[:, others[0]] = u0[ok]
        out[:, others[1]] = u1[ok]
        return out

    def c_step_order(self) -> list[int]:
        """PE steps of a c chain in time order (ties: increasing index)."""
        n3 = self.n3
        return list(range(n3)) if chain_sign(self.T, "c") > 0 else list(range(n3 - 1, -1, -1))
