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
  so the index sets depend only on (faults, shape) and are cached per array (`_plan`). The sums of
  all reached elements and all their inner tiles advance one PE step per NumPy add. A plan also
  keeps its small value-free buffers for its next call (`_Workspace`: partial sums with the c
  faults' actions bound to them, step products, BLAS coefficient layouts); results never alias
  them.
  - Grid path: the reach is (nearly) local rows x local columns and operand faults act on whole
    rows (a) or columns (b) of it. One step's products of all tiles are one BLAS call
    ``coef @ vec`` with one non-zero per row of ``coef``: each output is one rounded product plus
    exact zeros, so it equals the product up to the sign of a zero, which can only matter while
    a partial sum is -0 (then NumPy forms that step's products). Inputs with inf/NaN, and small
    blocks, use NumPy products.
  - Position path: any other permanent reach, as (row tile, column tile, local position).
* Windowed faults and integer arrays: the chunked path (per-element gathers), the integer grid
  path, and a sparse integer delta for one operand fault (modular sums: order is irrelevant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from classes_tool.errors import UserError
from classes_tool.systolic.dataflow import (
    LINE_DIRECTIONS,
    LINES,
    chain_sign,
    flow_vector,
    resolve_dataflow,
)
from classes_tool.systolic.faults import Fault, FixedValue, StuckAt

#: Tuning knobs of the fast paths (results never depend on them; tests vary them).
GRID_MAX_WASTE = 4  # use a grid path while its box is at most this many times the reach
PRODUCT_BLOCK = 1 << 16  # integer grid: blocks up to this many sums compute all products at once
STEP_BLOCK = 1 << 14  # float paths: partial sums per block of elements
BLAS_MIN = 1 << 11  # float grid: blocks with fewer sums form all their products with NumPy
TRANSPOSE_BLOCK = 1 << 13  # elements per block of a cache-friendly transpose
PLAN_CACHE = 64  # cached index plans per array (one per fault set and shape)
WORKSPACE_MAX = 1 << 20  # bytes of sum/product buffers a plan may keep for its next call

_SUPPORTED_IN = ("int8", "uint8", "int16", "float16", "float32", "float64")


class CastingError(UserError):
    """An input value does not fit the array's input dtype (we never wrap silently)."""


def default_mac_dtype(in_dtype: np.dtype) -> np.dtype:
    """Accumulator dtype: 4x wider for integers (int8 -> int32), the same for floats."""
    in_dtype = np.dtype(in_dtype)
    if in_dtype.kind in "iu":
        return np.dtype(f"i{min(in_dtype.itemsize * 4, 8)}")
    return in_dtype


def cast_input(values, dtype: np.dtype, what: str = "input") -> np.ndarray:
    """Cast `values` to `dtype`, raising CastingError instead of wrapping or overflowing.

    Integers: values must be whole numbers inside the dtype's range. Floats: finite values must be
    inside the finite range (rounding to the nearest representable value is allowed).
    """
    dtype = np.dtype(dtype)
    arr = np.asarray(values)
    if arr.dtype == dtype:
        return arr
    if arr.dtype.kind not in "biuf":
        raise CastingError(f"{what} of dtype {arr.dtype} cannot be cast to {dtype.name}")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise CastingError(f"{what} has non-integer values; cannot cast to {dtype.name} "
                                   "without loss (quantise it first)")
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise CastingError(f"{what} has values in [{arr.min()}, {arr.max()}] outside the "
                               f"{dtype.name} range [{info.min}, {info.max}]")
        return arr.astype(dtype)
    if arr.size and arr.dtype.kind == "f":
        finite = np.abs(arr[np.isfinite(arr)])
        if finite.size and float(finite.max()) > float(np.finfo(dtype).max):
            raise CastingError(f"{what} has values up to {float(finite.max())!r}, beyond the "
                               f"{dtype.name} range")
    elif arr.size and arr.dtype.kind in "iu":
        big = max(abs(int(arr.min())), abs(int(arr.max())))
        if big > float(np.finfo(dtype).max):
            raise CastingError(f"{what} has values up to {big}, beyond the {dtype.name} range")
    return arr.astype(dtype)


def exact_int_matmul(A: np.ndarray, B: np.ndarray, out_dtype: np.dtype) -> np.ndarray:
    """Exact integer product (wrapped to `out_dtype`) using float64 BLAS on exact chunks of k."""
    out_dtype = np.dtype(out_dtype)
    M, K = A.shape
    N = B.shape[1]
    amax = int(np.abs(A.astype(np.int64)).max()) if A.size else 0
    bmax = int(np.abs(B.astype(np.int64)).max()) if B.size else 0
    per_term = max(amax * bmax, 1)
    chunk = max(1, min(K, (2**53 - 1) // per_term))
    total = np.zeros((M, N), dtype=np.int64)
    for k0 in range(0, max(K, 1), chunk):
        a = A[:, k0:k0 + chunk].astype(np.float64)
        b = B[k0:k0 + chunk].astype(np.float64)
        total += (a @ b).astype(np.int64)  # exact: every partial sum is below 2**53
    return total.astype(out_dtype)


def _unique(values: np.ndarray) -> np.ndarray:
    """Sorted unique values (sort-based: much faster than hashing for large int arrays)."""
    values = np.sort(values, kind="stable")
    if len(values) < 2:
        return values
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def _transpose(src: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Contiguous copy of a 2-D transpose, in blocks that stay in cache (2-3x faster).

    Into `out` (contiguous, shape ``src.T.shape``) when given."""
    r, c = src.shape
    if out is None:
        out = np.empty((c, r), dtype=src.dtype)
    if r >= c:
        step = max(1, TRANSPOSE_BLOCK // c)
        for s in range(0, r, step):
            out[:, s:s + step] = src[s:s + step].T
    else:
        step = max(1, TRANSPOSE_BLOCK // r)
        for s in range(0, c, step):
            out[s:s + step] = src[:, s:s + step].T
    return out


def _index(mask: np.ndarray) -> slice | np.ndarray:
    """Positions where `mask` is True: a slice when they are one run (in-place views)."""
    idx = np.nonzero(mask)[0]
    if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _run(values: np.ndarray) -> tuple[int, int] | None:
    """(first, stop) when sorted `values` are consecutive integers, else None."""
    if len(values) and int(values[-1]) - int(values[0]) + 1 == len(values):
        return int(values[0]), int(values[-1]) + 1
    return None


def _all_finite(values: np.ndarray) -> bool:
    """True when no value is inf or NaN (a finite sum of squares proves it; an overflow
    only says no, which is safe)."""
    flat = values.reshape(-1)
    return bool(np.isfinite(np.dot(flat, flat)))


class _Workspace:
    """Value-free buffers of one plan's float sums, kept for the plan's next call.

    Partial sums with their c faults' prepared in-place actions (`_Sums`), step products,
    the BLAS coefficient matrices (zero but for a diagonal that every call overwrites) and
    the transposed operand with its per-step views. Nothing in it reaches a caller: results
    are copied into the caller's fresh array. Each call takes a workspace out of the plan's
    pool and puts it back when done (`_take`, `_give`), so concurrent calls never share one;
    only workspaces up to WORKSPACE_MAX bytes are kept.
    """

    def __init__(self) -> None:
        self.items: dict = {}
        self.nbytes = 0

    def get(self, key, build):
        """The item stored under `key`; `build()` makes it as (item, bytes it owns)."""
        item = self.items.get(key)
        if item is None:
            item, nbytes = build()
            self.items[key] = item
            self.nbytes += nbytes
        return item

    def buffer(self, key, shape, dtype) -> np.ndarray:
        """An uninitialised array kept under `key` (which must tell its shape and dtype)."""
        buf = self.items.get(key)
        if buf is None:
            buf = self.items[key] = np.empty(shape, dtype=dtype)
            self.nbytes += buf.nbytes
        return buf


def _take(pool: list) -> _Workspace:
    try:
        return pool.pop()
    except IndexError:
        return _Workspace()


def _give(pool: list, ws: _Workspace) -> None:
    if ws.nbytes <= WORKSPACE_MAX and len(pool) < 2:
        pool.append(ws)


def _coef_layout(n3: int, nK: int, outer: int, dtype: np.dtype):
    """Coefficient matrices of a grid block's BLAS step products: zeros (n3, nK * outer, nK),
    the view ``coef[kk, t, o, t]`` (n3, nK, outer) of the only non-zero entries, and the
    per-step 2-D matrices as a list."""
    coef = np.zeros((n3, nK, outer, nK), dtype=dtype)
    st = coef.strides
    diag = np.ndarray((n3, nK, outer), dtype, coef, strides=(st[0], st[1] + st[3], st[2]))
    flat = coef.reshape(n3, nK * outer, nK)
    return (flat, diag, list(flat)), coef.nbytes


class _Sums:
    """Sequential PE sums of one block of elements, with the c faults prepared once.

    `run`: the products of each step (rounded to the accumulator dtype) come in the layout
    of the sums. Each step adds its products (no fused multiply-add); a c fault corrupts the
    partial sums it hits (`c_hits[kk]`) after that step; the tile results are added from +0
    in inner-tile order into `out`.

    BLAS products: ``coef @ vec`` where each row of coef has one non-zero entry; with finite
    vec each output is one rounded product plus exact zeros, i.e. the product itself up to
    the sign of a zero result. That sign cannot change a sum that is not -0, and a partial
    sum starts at +0 and becomes -0 only by adding -0 to -0 or by a c fault, so while some
    partial sum is -0 the step forms its products with NumPy instead. Without c faults no
    partial sum is ever -0.

    The partial sums `c` are a buffer of the caller (a `_Workspace` one); the c faults'
    in-place actions are bound to it, so one instance serves every call of its plan.
    """

    def __init__(self, c: np.ndarray, c_hits, mac: np.dtype) -> None:
        self.c, self.mac = c, mac
        integer = mac.kind == "i"
        work = c.dtype
        # c faults as prepared in-place actions, each with the partial sums to look for -0 in
        actions: list[list] = [[] for _ in c_hits]
        prepared: dict = {}
        for kk, hits in enumerate(c_hits):
            for hit in hits:
                if id(hit) not in prepared:
                    f, idx, view, check = hit
                    if integer:
                        def act(f=f, idx=idx):
                            c[idx] = f.corrupt(c[idx].astype(mac)).astype(work)
                    elif view:
                        act = f.corrupter(c[idx])
                    else:
                        def act(f=f, idx=idx):
                            c[idx] = f.corrupt(c[idx])
                    watch = (c[idx] if view else idx) if check else None
                    prepared[id(hit)] = (act, watch)
                actions[kk].append(prepared[id(hit)])
        self.actions = actions
        self.plain = not any(actions)

    def run(self, kk_order, tile_axis: int, out: np.ndarray, steps: np.ndarray | None = None,
            blas: tuple | None = None) -> None:
        """The sums (see the class) of the products ``steps[kk]`` (NumPy, exact) or, with
        `blas` = (coefs, vecs, prod, a_op, b_op), of ``coefs[kk] @ vecs[kk]`` into `prod`
        (``a_op[kk] * b_op[kk]`` into `prod` while some partial sum is -0)."""
        c = self.c
        c.fill(0)
        add, matmul, multiply = np.add, np.matmul, np.multiply
        if blas is not None:
            coefs, vecs, prod, a_op, b_op = blas
            flat = prod.reshape(-1, prod.shape[-1])
        if self.plain and blas is not None:  # the common case, as a tight loop
            for kk in kk_order:
                matmul(coefs[kk], vecs[kk], out=flat)
                add(c, prod, out=c)
        elif self.plain:
            for kk in kk_order:
                add(c, steps[kk], out=c)
        else:
            actions = self.actions
            negative_zero = False
            for kk in kk_order:
                if blas is None:
                    add(c, steps[kk], out=c)
                else:
                    if negative_zero:
                        multiply(a_op[kk], b_op[kk], out=prod)
                    else:
                        matmul(coefs[kk], vecs[kk], out=flat)
                    add(c, prod, out=c)
                    if negative_zero:
                        negative_zero = _has_negative_zero(c)
                for act, watch in actions[kk]:
                    act()
                    if watch is not None and blas is not None and not negative_zero:
                        negative_zero = _has_negative_zero(c[watch] if isinstance(watch, tuple)
                                                           else watch)
        mac = self.mac
        if mac.kind == "i":
            out[...] = c.sum(axis=tile_axis).astype(mac)  # modular: tile order is irrelevant
            return
        tiles = c if tile_axis == 0 else np.moveaxis(c, tile_axis, 0)
        add(tiles[0], mac.type(0), out=out)  # from +0: a -0 tile result gives +0
        for tile in range(1, len(tiles)):
            add(out, tiles[tile], out=out)


def _has_negative_zero(values: np.ndarray) -> bool:
    return bool(np.any(values.view(f"u{values.dtype.itemsize}") == _SIGN[values.dtype.itemsize]))


_SIGN = {2: np.uint16(1 << 15), 4: np.uint32(1 << 31), 8: np.uint64(1 << 63)}


def _c_hit(fault: Fault, idx: tuple, dtype: np.dtype, seen: dict) -> tuple:
    """(fault, index, whether the index is a view, whether the fault can make a -0 sum).

    The same hit at several steps is the same tuple (found in `seen`), so the step loop
    prepares its in-place action once.
    """
    key = (fault, *((i.start, i.stop) if isinstance(i, slice) else i.tobytes() for i in idx))
    if key in seen:
        return seen[key]
    nbits = dtype.itemsize * 8
    never = ((isinstance(fault, StuckAt) and int(fault.polarity) == 1
              and int(fault.bit) != nbits - 1)  # a set non-sign bit: never a zero
             or (isinstance(fault, FixedValue) and not (fault.value == 0
                                                        and np.signbit(fault.value))))
    hit = fault, idx, all(isinstance(i, slice) for i in idx), dtype.kind == "f" and not never
    seen[key] = hit
    return hit


def _block_index(outer: np.ndarray | None, inner, o0: int, o1: int) -> tuple | None:
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
class _GridPlan:
    """Value-independent index sets of the grid path (see SystolicArray._grid_plan)."""

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
    blocks: list  # (o0, o1, c faults per step as _c_hit tuples): outer ranges computed together
    view: tuple | None  # (row run, column run) when every result is written, as a view of C
    sel: np.ndarray | None  # written entries of the (outer, inner) results; None: all
    flat: np.ndarray  # their flat index into C
    pool: list = field(default_factory=list, compare=False, repr=False)  # see _Workspace


@dataclass(frozen=True)
class _PositionPlan:
    """Value-independent index sets of the position path (see SystolicArray._position_plan)."""

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
    c_steps: list  # per step: _c_hit tuples of the c faults, in the order added
    kk_order: list
    blocks: list  # (t0, t1, u0, u1): row tiles x column tiles computed together
    sel: np.ndarray | None  # elements of (nI, nJ, L) inside C (None: all)
    flat: np.ndarray  # their flat index into C
    pool: list = field(default_factory=list, compare=False, repr=False)  # see _Workspace


class SystolicArray:
    """An ``n1 x n2 x n3`` tile of (i, j, k) iterations mapped onto PEs by a dataflow.

    `in_dtype` is the dtype of registers ``a`` and ``b``; `mac_dtype` the one of ``c``
    (default: 4x wider for integers, the same for floats).
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
        if self.in_dtype.name not in _SUPPORTED_IN:
            raise UserError(f"in_dtype {self.in_dtype.name} not supported; use one of "
                            f"{', '.join(_SUPPORTED_IN)}")
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
        self._faults: list[Fault] = []
        self._effects: dict[Fault, tuple[np.ndarray, np.ndarray]] = {}
        self._plans: dict[tuple, _GridPlan | _PositionPlan | None] = {}

    # ----------------------------------------------------------------- geometry
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
        """Local iterations whose value of `fault.line` is corrupted, and the local time of the hit.

        The hit time decides, with the tile number, whether a windowed fault was active.
        """
        cached = self._effects.get(fault)
        if cached is not None:
            return cached
        hits = self.iterations_at(int(fault.x), int(fault.y))
        times = hits @ self.T[2]
        if fault.line == "c" or self.is_stationary(fault.line):
            result = (hits, times)
        else:
            d = np.array(LINE_DIRECTIONS[fault.line], dtype=np.int64)
            axis = int(np.argmax(d))
            ext = (self.n1, self.n2, self.n3)[axis]
            sign = chain_sign(self.T, fault.line)
            its, ts = [], []
            for step in range(ext):
                moved = hits + sign * step * d
                keep = (moved[:, axis] >= 0) & (moved[:, axis] < ext)
                its.append(moved[keep])
                ts.append(times[keep])
            result = (np.concatenate(its), np.concatenate(ts))
        self._effects[fault] = result
        return result

    def _chain_key(self, fault: Fault) -> int:
        dx, dy = self.flow(fault.line)
        return chain_sign(self.T, fault.line) * (int(fault.x) * dx + int(fault.y) * dy)

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
        n1, n2, n3 = self.shape
        M, K = A.shape
        N = B.shape[1]
        if self.mac_dtype.kind == "f" and all(f.window is None for f in self._faults):
            plan = self._plan(M, K, N)
            if plan is None:
                return golden
            if isinstance(plan, _GridPlan):
                return self._grid(A, B, golden, plan)
            return self._positions(A, B, golden, plan)
        nI, nJ, nK = -(-M // n1), -(-N // n2), -(-K // n3)
        effects = {f: self._effect(f) for f in self._faults}
        # local output positions (li, lj) any fault can reach
        pos = _unique(np.concatenate([it[:, 0] * n2 + it[:, 1] for it, _ in effects.values()]))
        if all(f.window is None for f in self._faults) and not (
                self.mac_dtype.kind == "i" and len(self._faults) == 1
                and self._faults[0].line != "c"):
            grid = self._int_grid(A, B, golden, pos, effects, nI, nJ, nK)
            if grid is not None:
                return grid
        L = len(pos)
        lookup = np.full(n1 * n2, -1, dtype=np.int64)
        lookup[pos] = np.arange(L)
        li, lj = pos // n2, pos % n2
        # candidate elements: every (row tile, column tile) x local position, cropped to C
        ti, tj, lp = np.meshgrid(np.arange(nI), np.arange(nJ), np.arange(L), indexing="ij")
        ti, tj, lp = ti.ravel(), tj.ravel(), lp.ravel()
        gi, gj = ti * n1 + li[lp], tj * n2 + lj[lp]
        keep = (gi < M) & (gj < N)
        ti, tj, lp, gi, gj = ti[keep], tj[keep], lp[keep], gi[keep], gj[keep]
        if len(gi) == 0:
            return golden
        tile0 = (ti * nJ + tj) * nK  # tile number of inner tile 0 of each element

        def entries(fault: Fault) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
            """(element, in-tile inner index, inner tile or None for all) of corrupted values."""
            its, times = effects[fault]
            table = np.full((L, n3), -1, dtype=np.int64)
            table[lookup[its[:, 0] * n2 + its[:, 1]], its[:, 2]] = times - self.t_min
            rel = table[lp]  # (E, n3): cycle offset of the hit inside a tile, -1: no hit
            e, kk = np.nonzero(rel >= 0)
            if fault.window is None:
                return e, kk, None
            r = rel[e, kk]
            count = len(e)
            e, kk, r = np.repeat(e, nK), np.repeat(kk, nK), np.repeat(r, nK)
            tk = np.tile(np.arange(nK), count)
            cyc = (tile0[e] + tk) * self.period + r
            on = (cyc >= int(fault.window[0])) & (cyc < int(fault.window[1]))
            return e[on], kk[on], tk[on]

        hits = {f: entries(f) for f in self._faults}
        mark = np.zeros(len(gi), dtype=bool)
        for e, _, _ in hits.values():
            mark[e] = True
        touched = np.nonzero(mark)[0]
        if len(touched) == 0:
            return golden
        # renumber elements to the touched ones (e is sorted: np.nonzero is row-major)
        renumber = np.cumsum(mark) - 1
        hits = {f: (renumber[e], kk, tk) for f, (e, kk, tk) in hits.items()}
        gi, gj = gi[touched], gj[touched]
        order = {line: sorted((f for f in self._faults if f.line == line), key=self._chain_key)
                 for line in ("a", "b")}
        c_faults = [f for f in self._faults if f.line == "c"]
        dense = sum(len(e) * (nK if tk is None else 1) for e, _, tk in hits.values())
        if (self.mac_dtype.kind == "i" and len(self._faults) == 1 and not c_faults
                and 8 * dense < len(gi) * nK * self.n3):
            values = self._int_delta(A, B, golden, gi, gj, hits[self._faults[0]])
        else:
            values = self._sequential(A, B, gi, gj, hits, order, c_faults, nK)
        out = golden.copy()
        out[gi, gj] = values
        return out

    # ----------------------------------------------------------------- permanent-fault paths
    def _plan(self, M: int, K: int, N: int) -> _GridPlan | _PositionPlan | None:
        """Index sets for the current permanent faults and this shape (cached: value-free).

        A grid plan when the reach is (nearly) a block of local rows x local columns and every
        operand fault acts on whole local rows (a) or columns (b) of it; else a position plan.
        None when no fault reaches C.
        """
        key = (tuple(self._faults), M, K, N)
        if key in self._plans:
            return self._plans[key]
        if len(self._plans) >= PLAN_CACHE:
            self._plans.clear()
        n1, n2, n3 = self.shape
        effects = {f: self._effect(f) for f in self._faults}
        pos = _unique(np.concatenate([it[:, 0] * n2 + it[:, 1] for it, _ in effects.values()]))
        plan = None
        if K > 0:
            plan = self._grid_plan(M, K, N, effects, pos) or self._position_plan(M, K, N,
                                                                                  effects, pos)
            if len(plan.flat) == 0:
                plan = None
        self._plans[key] = plan
        return plan

    def _kk_order(self) -> list[int]:
        """PE steps of a c chain in time order (ties: increasing index)."""
        n3 = self.n3
        return list(range(n3)) if chain_sign(self.T, "c") > 0 else list(range(n3 - 1, -1, -1))

    def _grid_plan(self, M, K, N, effects, pos) -> _GridPlan | None:
        n1, n2, n3 = self.shape
        nI, nJ, nK = -(-M // n1), -(-N // n2), -(-K // n3)
        Li, Lj = _unique(pos // n2), _unique(pos % n2)
        nLi, nLj = len(Li), len(Lj)
        if GRID_MAX_WASTE * len(pos) < nLi * nLj:
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
            for f in sorted((f for f in self._faults if f.line == line), key=self._chain_key):
                m = masks[f]
                on = m.any(axis=axis)  # (n3, local rows) for a, (n3, local columns) for b
                if not np.array_equal(on, m.all(axis=axis)):
                    return None  # the corrupted value depends on the other side of the grid
                ks = np.nonzero(on.any(axis=1))[0]
                if len(ks) == n3 and on.all():
                    steps.append((f, None))
                else:
                    steps.append((f, [(int(kk), _index(np.tile(on[kk], tiles))) for kk in ks]))
            operand[line] = steps
        rows_inner = len(rows) >= len(cols)
        c_steps: list[list] = [[] for _ in range(n3)]
        for f in (f for f in self._faults if f.line == "c"):
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
                                    _index(inner)))
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
        step = max(1, STEP_BLOCK // max(1, nK * inner_n))
        blocks = []
        seen: dict = {}
        for o0 in range(0, outer_n, step):
            o1 = min(outer_n, o0 + step)
            hits = [[_c_hit(f, idx, self.mac_dtype, seen) for f, outer, inner in fs
                     if (idx := _block_index(outer, inner, o0, o1)) is not None]
                    for fs in c_steps]
            blocks.append((o0, o1, hits))
        row_run, col_run = _run(Li), _run(Lj)
        # the results are one strided view of C: no scatter
        whole = (bool(ok.all()) and row_run is not None and col_run is not None
                 and M == nI * n1 and N == nJ * n2)
        return _GridPlan(nK, rows, cols, int(np.sum(rows < M)), int(np.sum(cols < N)),
                         row_run if M == nI * n1 else None,
                         col_run if N == nJ * n2 else None, rows_inner,
                         operand["a"], operand["b"], self._kk_order(), blocks,
                         (row_run, col_run) if whole else None,
                         None if ok.all() else np.nonzero(ok)[0], flat[ok])

    def _grid(self, A, B, golden, plan: _GridPlan) -> np.ndarray:
        """Grid path: the touched elements are the rows x columns of a grid over all tiles.

        Operand a is laid out (tile, step, row) (one transpose of the rows it needs), b
        (tile, step, column) (a view of B's columns), the sums (tile, column, row) or (tile,
        row, column): the longer side innermost. A step of all tiles is one BLAS product (see
        `_Sums`) or, for small blocks, all steps are one broadcast NumPy product.
        """
        n1, n2, n3 = self.shape
        M, K = A.shape
        N = B.shape[1]
        nK = plan.nK
        work = np.dtype(np.int64) if self.mac_dtype.kind == "i" else self.mac_dtype
        R, S = len(plan.rows), len(plan.cols)
        ws = _take(plan.pool)
        X, Y = self._operands(A, B, plan.rows, plan.cols, plan.nr, plan.nc, plan.row_run,
                              plan.col_run, False, bool(plan.b_steps))
        # a[tile, step, row]: our own copy (a kept buffer when it is the BLAS vector)
        keep_a = plan.rows_inner and X.dtype == work  # then vec below is a view of a_buf
        a_buf = ws.buffer("a", X.shape[::-1], X.dtype) if keep_a else None
        a = _transpose(X, a_buf).reshape(nK, n3, R)
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
        blas = work.kind == "f" and _all_finite(a if plan.rows_inner else b)
        # step first: a_op[kk] is (tile, row) and b_op[kk] (tile, column), strided views
        a, b = np.swapaxes(a, 0, 1), np.swapaxes(b, 0, 1)
        if plan.rows_inner:
            inner_n, outer_n, a_op, b_op = R, S, a[:, :, None, :], b[:, :, :, None]
        else:
            inner_n, outer_n, a_op, b_op = S, R, a[:, :, :, None], b[:, :, None, :]
        vec, sca = (a, b) if plan.rows_inner else (b, a)
        vecs = None
        total = np.empty((outer_n, inner_n), dtype=self.mac_dtype)
        for block, (o0, o1, c_hits) in enumerate(plan.blocks):
            shape = (nK, o1 - o0, inner_n)
            sums = ws.get(("sums", block), lambda shape=shape, c_hits=c_hits: (
                _Sums(ws.buffer(("c", shape), shape, work), c_hits, self.mac_dtype), 0))
            if plan.rows_inner:
                a_blk, b_blk = a_op, b_op[:, :, o0:o1]
            else:
                a_blk, b_blk = a_op[:, :, o0:o1], b_op
            if not blas or math.prod(shape) < BLAS_MIN:
                steps = np.multiply(a_blk, b_blk)  # every product at once: one NumPy call
                sums.run(plan.kk_order, 0, total[o0:o1], steps=steps)
                continue
            # coefs[kk] @ vecs[kk]: row (tile, outer) holds the outer operand at column `tile`
            coef, diag, coefs = ws.get(("coef", o1 - o0),
                                       lambda o=o1 - o0: _coef_layout(n3, nK, o, work))
            diag[...] = sca[:, :, o0:o1]
            if vecs is None:  # the per-step views of a kept buffer are kept with it
                vecs = ws.get("vecs", lambda: (list(vec), 0)) if keep_a else list(vec)
            sums.run(plan.kk_order, 0, total[o0:o1],
                     blas=(coefs, vecs, ws.buffer(("prod", shape), shape, work), a_blk, b_blk))
        _give(plan.pool, ws)
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

    def _operands(self, A, B, rows, cols, nr, nc, row_run, col_run, copy_a: bool,
                  copy_b: bool):
        """Rows `rows` of A as (rows, Kp) and columns `cols` of B as (Kp, columns), zero-padded.

        Sorted `rows`: the first `nr` are inside A (`cols`, `nc` likewise); a run of local rows
        in every tile is a slice. `copy_a`, `copy_b`: never share memory with A or B (the
        result will be corrupted in place).
        """
        M, K = A.shape
        N = B.shape[1]
        Kp = -(-K // self.n3) * self.n3
        R, S = len(rows), len(cols)
        if nr == R == M:
            X = A
        elif row_run is not None:  # the same local rows of every row tile: a slice
            X = A.reshape(-1, self.n1, K)[:, slice(*row_run)].reshape(R, K)
        else:
            X = np.take(A, rows[:nr], axis=0)
        if X.shape != (R, Kp) or (copy_a and np.may_share_memory(X, A)):
            X0, X = X, np.zeros((R, Kp), dtype=self.in_dtype)  # the zero padding
            X[:nr, :K] = X0[:nr]
        if nc == S == N:
            Y = B
        elif col_run is not None:
            Y = B.reshape(K, -1, self.n2)[:, :, slice(*col_run)].reshape(K, S)
        else:
            Y = np.take(B, cols[:nc], axis=1)
        if Y.shape != (Kp, S) or (copy_b and np.may_share_memory(Y, B)):
            Y0, Y = Y, np.zeros((Kp, S), dtype=self.in_dtype)
            Y[:K, :nc] = Y0[:, :nc]
        return X, Y

    def _position_plan(self, M, K, N, effects, pos) -> _PositionPlan:
        n1, n2, n3 = self.shape
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
            for f in sorted((f for f in self._faults if f.line == line), key=self._chain_key):
                m = masks[f]
                ks = np.nonzero(m.any(axis=1))[0]
                sub = m[ks]
                steps.append((f, ks, None if sub.all() else sub[:, None, :, None]))
            operand[line] = steps
        c_steps: list[list] = [[] for _ in range(n3)]
        seen: dict = {}
        for f in (f for f in self._faults if f.line == "c"):
            for kk in range(n3):
                if masks[f][kk].any():  # sums are (row tile, column tile, position, tile)
                    idx = (slice(None), slice(None), _index(masks[f][kk]))
                    c_steps[kk].append(_c_hit(f, idx, self.mac_dtype, seen))
        li, lj = pos // n2, pos % n2
        rows = np.arange(nI)[:, None] * n1 + li[None, :]  # (nI, L) global row of each element
        cols = np.arange(nJ)[:, None] * n2 + lj[None, :]  # (nJ, L) global column
        urows, ucols = _unique(rows.ravel()), _unique(cols.ravel())
        rix = None if np.array_equal(rows.ravel(), urows) else np.searchsorted(urows, rows)
        cix = None if np.array_equal(cols.ravel(), ucols) else np.searchsorted(ucols, cols)
        # blocks of (row tiles, column tiles) with about STEP_BLOCK accumulators
        per_tile = max(1, L * nK)
        tj_step = max(1, min(nJ, STEP_BLOCK // per_tile))
        ti_step = max(1, min(nI, STEP_BLOCK // (per_tile * tj_step)))
        blocks = [(t0, min(nI, t0 + ti_step), u0, min(nJ, u0 + tj_step))
                  for t0 in range(0, nI, ti_step) for u0 in range(0, nJ, tj_step)]
        inside = ((rows[:, None, :] < M) & (cols[None, :, :] < N)).ravel()
        flat = (rows[:, None, :] * N + cols[None, :, :]).ravel()[inside]
        row_run, col_run = _run(_unique(li)), _run(_unique(lj))
        return _PositionPlan(nI, nJ, nK, L, urows, ucols, int(np.sum(urows < M)),
                             int(np.sum(ucols < N)), row_run if M == nI * n1 else None,
                             col_run if N == nJ * n2 else None, rix, cix, operand["a"], operand["b"],
                             c_steps, self._kk_order(), blocks,
                             None if inside.all() else np.nonzero(inside)[0], flat)

    def _positions(self, A, B, golden, plan: _PositionPlan) -> np.ndarray:
        """Position path: every (row tile, column tile, reached local position) element.

        A permanent fault corrupts the same local iterations in every tile, so the reached
        elements are (row tile) x (column tile) x (local position). Operands are laid out as
        (step, tile, position, inner tile), so one PE step of a block of elements and all
        their inner tiles is one broadcast product and one add over contiguous runs.
        """
        n3 = self.n3
        M, K = A.shape
        nI, nJ, nK, L = plan.nI, plan.nJ, plan.nK, plan.L
        work = np.dtype(np.int64) if self.mac_dtype.kind == "i" else self.mac_dtype
        ur, uc = plan.urows, plan.ucols  # sorted: the padded rows and columns come last
        nr, nc = plan.nr, plan.nc
        X, Y = self._operands(A, B, ur, uc, nr, nc, plan.row_run, plan.col_run, False,
                              False)
        # (step, row or column, inner tile): one transpose of the rows/columns needed
        Au = _transpose(X.reshape(len(ur) * nK, n3)).reshape(n3, len(ur), nK)
        Bu = _transpose(Y.reshape(nK, n3 * len(uc))).reshape(n3, len(uc), nK)
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
        total = np.empty((nI, nJ, L), dtype=self.mac_dtype)
        largest = max((t1 - t0) * (u1 - u0) for t0, t1, u0, u1 in plan.blocks)
        buffer = np.empty(n3 * largest * L * nK, dtype=work)
        ws = _take(plan.pool)
        for t0, t1, u0, u1 in plan.blocks:
            # (step, row tile, column tile, position, inner tile) products of the block: a
            # broadcast copy of a, then one product with b (long contiguous runs: fast)
            shape = (t1 - t0, u1 - u0, L, nK)
            prods = buffer[:n3 * math.prod(shape)].reshape(n3, *shape)
            np.copyto(prods, Ag[:, t0:t1, None])
            np.multiply(prods, Bg[:, None, u0:u1], out=prods)
            # the c faults hit the same positions of every block: one _Sums per block shape
            sums = ws.get(("sums", shape), lambda shape=shape: (
                _Sums(ws.buffer(("c", shape), shape, work), plan.c_steps, self.mac_dtype), 0))
            sums.run(plan.kk_order, -1, total[t0:t1, u0:u1], steps=prods)
        _give(plan.pool, ws)
        out = golden.reshape(-1)  # golden is ours (fresh) and contiguous: write in place
        total = total.reshape(-1)
        out[plan.flat] = total if plan.sel is None else total[plan.sel]
        return golden

    def _int_grid(self, A, B, golden, pos, effects, nI, nJ, nK) -> np.ndarray | None:
        """Integer arrays: permanent faults whose reach is (nearly) local rows x local columns.

        The touched elements then form a grid (row tiles x local rows) x (column tiles x local
        columns), so each PE step is one broadcast outer product of operand rows and columns:
        no per-element gathers. Returns None when the grid would waste too much work.
        """
        n1, n2, n3 = self.shape
        M, K = A.shape
        N = B.shape[1]
        Li, Lj = _unique(pos // n2), _unique(pos % n2)
        nLi, nLj = len(Li), len(Lj)
        if GRID_MAX_WASTE * len(pos) < nLi * nLj or n3 * nK * nLi * nJ * nLj > (1 << 24):
            return None  # sparse reach or one row tile too large: the chunked path is better
        masks = {}
        for f, (its, _) in effects.items():
            m = np.zeros((nLi, nLj, n3), dtype=bool)
            m[np.searchsorted(Li, its[:, 0]), np.searchsorted(Lj, its[:, 1]), its[:, 2]] = True
            masks[f] = m
        touched = np.zeros((nLi, nLj), dtype=bool)
        for m in masks.values():
            touched |= m.any(axis=2)
        mac = self.mac_dtype
        integer = mac.kind == "i"
        work = np.dtype(np.int64) if integer else mac
        Kp = nK * n3
        order = {line: sorted((f for f in self._faults if f.line == line), key=self._chain_key)
                 for line in ("a", "b")}
        c_faults = [f for f in self._faults if f.line == "c"]
        kk_order = range(n3) if chain_sign(self.T, "c") > 0 else range(n3 - 1, -1, -1)
        cols = np.arange(nJ)[:, None] * n2 + Lj[None, :]  # (nJ, nLj) global columns
        col_ok = cols < N
        Bs = np.zeros((Kp, nJ, nLj), dtype=self.in_dtype)  # zero padding beyond K and N
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
            Ar = np.zeros((t1 - t0, nLi, Kp), dtype=self.in_dtype)
            Ar[row_ok, :K] = A[rows[row_ok]]
            Ar = Ar.reshape(t1 - t0, nLi, nK, n3).transpose(3, 2, 0, 1)  # (n3, nK, nT, nLi)
            a_clean = Ar[:, :, :, :, None, None]  # (n3, nK, nT, nLi, 1, 1)
            shape = (nK, t1 - t0, nLi, nJ, nLj)
            c = np.zeros(shape, dtype=work)
            # products rounded to the accumulator dtype, then the sums (no fused multiply-add);
            # small blocks: all products in one call, large ones: one PE step at a time
            if int(np.prod(shape)) <= PRODUCT_BLOCK:
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

    def _int_delta(self, A, B, golden, gi, gj, hit) -> np.ndarray:
        """One integer a/b fault: golden + sum of (a'b' - ab) over the corrupted iterations only.

        Exact because integer accumulation is modular, so the order of the terms is irrelevant.
        Used when the corrupted iterations are a small part of the touched elements' work.
        """
        (fault,) = self._faults
        e, kk, tk = hit
        n3 = self.n3
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
        if self.in_dtype.itemsize == 1:  # |terms| < 2**15: float64 sums stay exact (K < 2**38)
            delta = np.bincount(e, weights=terms.astype(np.float64), minlength=len(gi))
            delta = delta.astype(np.int64)
        else:
            delta = np.zeros(len(gi), dtype=np.int64)
            np.add.at(delta, e, terms)
        return (golden[gi, gj].astype(np.int64) + delta).astype(self.mac_dtype)

    def _sequential(self, A, B, gi, gj, hits, order, c_faults, nK) -> np.ndarray:
        """Recompute elements in the PE order: in-tile sequential sums, then tile sums, in chunks."""
        n3 = self.n3
        K = A.shape[1]
        Kp = nK * n3
        mac = self.mac_dtype
        integer = mac.kind == "i"
        work = np.dtype(np.int64) if integer else mac
        E = len(gi)
        # few elements: gather straight from A's rows; many: transpose A once
        AT = A.T if 4 * E < A.shape[0] else np.ascontiguousarray(A.T)
        kk_order = range(n3) if chain_sign(self.T, "c") > 0 else range(n3 - 1, -1, -1)
        out = np.empty(E, dtype=mac)
        chunk = max(1, (1 << 20) // Kp)  # about 4 MB per float32 operand block
        for s in range(0, E, chunk):
            t = min(E, s + chunk)

            def part(f, s=s, t=t):
                e, kk, tk = hits[f]  # e is sorted
                lo, hi = np.searchsorted(e, [s, t])
                return (slice(None) if tk is None else tk[lo:hi]), kk[lo:hi], e[lo:hi] - s

            a = np.zeros((Kp, t - s), dtype=self.in_dtype)  # rows beyond K: the zero padding
            b = np.zeros((Kp, t - s), dtype=self.in_dtype)
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
