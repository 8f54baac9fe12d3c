"""A systolic array that multiplies matrices exactly as its PE registers would, with faults.

Model (see docs/systolic.md for the full text):

* ``C = A @ B`` with iteration space (i, j, k); one *tile* is the box ``n1 x n2 x n3`` of local
  iterations. Matrices are zero-padded to whole tiles; tiles run one after another in the order
  (row tile, column tile, inner tile), inner fastest, each taking ``period`` cycles, so iteration
  (i, j, k) of tile number ``n`` runs at global cycle ``n * period + T[2] @ (i, j, k) - t_min``.
* PE ``(x, y) = T[:2] @ (i, j, k)``. Lines ``a``/``b``/``c`` move along (0,1,0)/(1,0,0)/(0,0,1).
  A *chain* is the run of iterations of one tile that carry one value: ``a[i, k]`` over j,
  ``b[k, j]`` over i, the partial sum of ``c[i, j]`` over k, ordered by time step (ties: by index).
* A PE computes ``c_out = c_in + a * b`` (product rounded to the accumulator dtype, then the sum;
  no fused multiply-add); the first iteration of a c chain starts from ``c_in = 0``, the last one's
  ``c_out`` is the tile result, and tile results are added outside the array in the accumulator
  dtype, from 0, in inner-tile order. Integers wrap (two's complement).
* A fault on register L of PE p replaces every value read from it (while active) by
  ``corrupt(value)``. For ``a``/``b``: the operand used by an iteration at p is corrupted and, on a
  moving line, that corrupted value is forwarded to every later iteration of the chain (downstream
  PEs), whatever their cycle. A stationary line keeps the clean value stored and corrupts each read
  while the fault is active. For ``c``: ``c_out`` of an iteration at p is corrupted; the partial
  sum carries the damage downstream by itself. Several faults compose in chain order (upstream
  first; same PE: in the order added).

Speed: the golden product comes from BLAS once; only output elements whose computation reads a
faulty register value are recomputed, in the PE accumulation order, vectorised over all tiles and
affected elements. Integer results are bit-identical to the register model; for floats the
recomputed elements follow the sequential order exactly and the others are the BLAS product.

* Float arrays, permanent faults. A permanent fault hits the same local iterations of every tile,
  so the index sets depend only on (faults, shape) and are cached per array (`planning`). The
  sums of all reached elements and all their inner tiles advance one PE step per NumPy add
  (`accumulation`). A plan also keeps its small value-free buffers for its next call
  (`workspace`: partial sums with the c faults' actions bound to them, step products, BLAS
  coefficient layouts); results never alias them.
  - Grid path (`paths.float_grid`): the reach is (nearly) local rows x local columns and
    operand faults act on whole rows (a) or columns (b) of it. One step's products of all tiles
    are one BLAS call ``coef @ vec`` with one non-zero per row of ``coef``: each output is one
    rounded product plus exact zeros, so it equals the product up to the sign of a zero, which
    can only matter while a partial sum is -0 (then NumPy forms that step's products). Inputs
    with inf/NaN, and small blocks, use NumPy products.
  - Position path (`paths.float_positions`): any other permanent reach, as (row tile, column
    tile, local position).
* Windowed faults and integer arrays: the chunked path (`paths.chunked`: per-element gathers),
  the integer grid path (`paths.integer_grid`), and a sparse integer delta for one operand fault
  (`paths.integer_delta`; modular sums: order is irrelevant).

This module holds the array's faults and caches and picks the path; the array's geometry is
`geometry.ArrayGeometry`, where a fault acts is `fault_effects`, the knobs are in `tuning`.
"""


from __future__ import annotations

import numpy as np

from classes_tool.errors import UserError
from classes_tool.systolic import tuning
from classes_tool.systolic.dataflow import LINES
from classes_tool.systolic.dtypes import (
    CastingError,
    cast_input,
    default_mac_dtype,
    exact_int_matmul,
)
from classes_tool.systolic.fault_effects import corrupted_iterations, in_chain_order
from classes_tool.systolic.faults import Fault
from classes_tool.systolic.geometry import ArrayGeometry
from classes_tool.systolic.indexing import sorted_unique
from classes_tool.systolic.paths.chunked import run_chunked
from classes_tool.systolic.paths.float_grid import run_float_grid
from classes_tool.systolic.paths.float_positions import run_float_positions
from classes_tool.systolic.paths.integer_delta import run_integer_delta
from classes_tool.systolic.paths.integer_grid import run_integer_grid
from classes_tool.systolic.paths.touched_elements import touched_elements
from classes_tool.systolic.planning import GridPlan, PositionPlan, plan_permanent_faults

__all__ = ["CastingError", "SystolicArray", "default_mac_dtype"]


class SystolicArray(ArrayGeometry):
    """An ``n1 x n2 x n3`` tile of (i, j, k) iterations mapped onto PEs by a dataflow, with faults.

    `in_dtype` is the dtype of registers ``a`` and ``b``; `mac_dtype` the one of ``c``
    (default: 4x wider for integers, the same for floats).
    """

    def __init__(self, n1: int, n2: int, n3: int, dataflow: str | np.ndarray = "output_stationary",
                 in_dtype: str | np.dtype = "int8", mac_dtype: str | np.dtype | None = None):
        super().__init__(n1, n2, n3, dataflow, in_dtype, mac_dtype)
        self._faults: list[Fault] = []
        self._effects: dict[Fault, tuple[np.ndarray, np.ndarray]] = {}
        self._plans: dict[tuple, GridPlan | PositionPlan | None] = {}

    # ----------------------------------------------------------------- faults
    @property
    def faults(self) -> tuple[Fault, ...]:
        return tuple(self._faults)

    def add_fault(self, fault: Fault) -> None:
        """Add a fault; several faults compose (upstream first, then in the order added)."""
        if not isinstance(fault, Fault):
            raise UserError(f"not a fault: {fault!r}")
        if fault.line not in LINES:
            raise UserError(f"fault line must be one of {', '.join(LINES)}, got {fault.line!r}")
        fault.check(self.line_dtype(fault.line))
        if len(self.iterations_at(int(fault.x), int(fault.y))) == 0:
            raise UserError(f"PE ({fault.x}, {fault.y}) is not part of this {self.n1}x{self.n2}x"
                            f"{self.n3} {self.dataflow} array")
        self._faults.append(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    def _effect(self, fault: Fault) -> tuple[np.ndarray, np.ndarray]:
        """`corrupted_iterations` of `fault`, cached per array."""
        cached = self._effects.get(fault)
        if cached is not None:
            return cached
        result = corrupted_iterations(self, fault)
        self._effects[fault] = result
        return result

    # ----------------------------------------------------------------- products
    def _check(self, A, B) -> tuple[np.ndarray, np.ndarray]:
        A = cast_input(A, self.in_dtype, "A")
        B = cast_input(B, self.in_dtype, "B")
        if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[0]:
            raise UserError(f"matmul needs A (rows x inner) and B (inner x cols), got shapes "
                            f"{A.shape} and {B.shape}")
        return A, B

    def golden(self, A, B) -> np.ndarray:
        """The fault-free product in the accumulator dtype (BLAS; exact for integers)."""
        A, B = self._check(A, B)
        return self._golden(A, B)

    def _golden(self, A: np.ndarray, B: np.ndarray) -> np.ndarray:
        if self.in_dtype.kind in "iu":
            return exact_int_matmul(A, B, self.mac_dtype)
        return np.matmul(A.astype(self.mac_dtype, copy=False), B.astype(self.mac_dtype, copy=False))

    def matmul(self, A, B) -> np.ndarray:
        """``A @ B`` as this array computes it with its current faults (accumulator dtype)."""
        A, B = self._check(A, B)
        golden = self._golden(A, B)
        if not self._faults or golden.size == 0:
            return golden
        with np.errstate(all="ignore"):
            return self._faulty(A, B, golden)

    def _faulty(self, A: np.ndarray, B: np.ndarray, golden: np.ndarray) -> np.ndarray:
        """The faulty product: `golden` with the elements the faults reach recomputed by the
        path that fits the faults and dtypes (see the module docstring)."""
        n1, n2, n3 = self.shape
        M, K = A.shape
        N = B.shape[1]
        if self.mac_dtype.kind == "f" and all(f.window is None for f in self._faults):
            plan = self._plan(M, K, N)
            if plan is None:
                return golden
            if isinstance(plan, GridPlan):
                return run_float_grid(self, A, B, golden, plan)
            return run_float_positions(self, A, B, golden, plan)
        nI, nJ, nK = -(-M // n1), -(-N // n2), -(-K // n3)
        effects = {f: self._effect(f) for f in self._faults}
        # local output positions (li, lj) any fault can reach
        pos = sorted_unique(np.concatenate([it[:, 0] * n2 + it[:, 1]
                                            for it, _ in effects.values()]))
        if all(f.window is None for f in self._faults) and not (
                self.mac_dtype.kind == "i" and len(self._faults) == 1
                and self._faults[0].line != "c"):
            grid = run_integer_grid(self, self._faults, A, B, golden, pos, effects, nI, nJ, nK)
            if grid is not None:
                return grid
        touched = touched_elements(self, self._faults, effects, pos, M, N, nI, nJ, nK)
        if touched is None:
            return golden
        gi, gj, hits = touched
        order = {line: in_chain_order(self, self._faults, line) for line in ("a", "b")}
        c_faults = [f for f in self._faults if f.line == "c"]
        dense = sum(len(e) * (nK if tk is None else 1) for e, _, tk in hits.values())
        if (self.mac_dtype.kind == "i" and len(self._faults) == 1 and not c_faults
                and 8 * dense < len(gi) * nK * self.n3):
            fault = self._faults[0]
            values = run_integer_delta(self, fault, A, B, golden, gi, gj, hits[fault])
        else:
            values = run_chunked(self, A, B, gi, gj, hits, order, c_faults, nK)
        out = golden.copy()
        out[gi, gj] = values
        return out

    def _plan(self, M: int, K: int, N: int) -> GridPlan | PositionPlan | None:
        """`plan_permanent_faults` for the current faults and this shape (cached: value-free)."""
        key = (tuple(self._faults), M, K, N)
        if key in self._plans:
            return self._plans[key]
        if len(self._plans) >= tuning.PLAN_CACHE:
            self._plans.clear()
        effects = {f: self._effect(f) for f in self._faults}
        plan = plan_permanent_faults(self, self._faults, effects, M, K, N)
        self._plans[key] = plan
        return plan
