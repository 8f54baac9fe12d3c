"""The fast faulty matmul against a loop-over-(i, j, k) register reference, plus the model's rules."""

from __future__ import annotations

import numpy as np
import pytest
from systolic_reference import reference_matmul

from classes_tool.errors import UserError
from classes_tool.systolic import (
    DATAFLOWS,
    BitFlip,
    CastingError,
    FixedValue,
    StuckAt,
    SystolicArray,
    resolve_dataflow,
)

# a user dataflow with a reversed chain (b: time step -1 per hop) and a zero-time hop (a)
CUSTOM = [[1, 0, 0], [0, 1, 1], [-1, 0, 1]]
DATAFLOW_CASES = [*DATAFLOWS, CUSTOM]
SHAPE = (2, 3, 4)  # n1, n2, n3
M, K, N = 3, 7, 5  # not multiples of the tile: padded edge tiles on every axis


def _inputs(dtype: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if dtype == "int8":
        return (rng.integers(-128, 128, (M, K)).astype(np.int8),
                rng.integers(-128, 128, (K, N)).astype(np.int8))
    return (rng.standard_normal((M, K)).astype(np.float32),
            rng.standard_normal((K, N)).astype(np.float32))


def _bits(dtype: np.dtype) -> list[int]:
    n = dtype.itemsize * 8
    return [0, n // 2 - 1, n - 1]


def _check(array: SystolicArray, A, B, faults) -> None:
    array.clear_faults()
    for f in faults:
        array.add_fault(f)
    _assert_exact(array, A, B, faults, array.matmul(A, B))


def _assert_exact(array: SystolicArray, A, B, faults, fast) -> None:
    """`fast` is the register model's result of A @ B with `faults` on `array`."""
    with np.errstate(all="ignore"):
        ref = reference_matmul(A, B, *array.shape, array.T, array.in_dtype, array.mac_dtype, faults)
    assert fast.dtype == array.mac_dtype
    if array.mac_dtype.kind == "i":
        np.testing.assert_array_equal(fast, ref)
        return
    with np.errstate(all="ignore"):
        clean = reference_matmul(A, B, *array.shape, array.T, array.in_dtype, array.mac_dtype)
    golden = array.golden(A, B)
    same = (fast.view(np.uint32) == ref.view(np.uint32)) | (np.isnan(fast) & np.isnan(ref))
    unaffected = clean.view(np.uint32) == ref.view(np.uint32)
    # every element is the exact sequential value, or untouched by the fault and the BLAS value
    assert np.all(same | (unaffected & (fast == golden))), (faults, fast, ref)
    assert np.allclose(golden, clean, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("dataflow", DATAFLOW_CASES, ids=[*DATAFLOWS, "custom"])
def test_single_faults_match_register_reference(dataflow, dtype):
    array = SystolicArray(*SHAPE, dataflow=dataflow, in_dtype=dtype)
    A, B = _inputs(dtype)
    rng = np.random.default_rng(1)
    pes = array.pes
    changed = 0
    for line in "abc":
        for bit in _bits(array.line_dtype(line)):
            x, y = pes[rng.integers(len(pes))]
            for pol in (0, 1):
                _check(array, A, B, [StuckAt(line, int(x), int(y), bit, pol)])
            _check(array, A, B, [BitFlip(line, int(x), int(y), bit)])
            changed += not np.array_equal(array.matmul(A, B), array.golden(A, B))
    assert changed > 0  # the faults do reach the output


@pytest.mark.parametrize("dataflow", DATAFLOW_CASES, ids=[*DATAFLOWS, "custom"])
def test_every_pe_every_line_int8(dataflow):
    array = SystolicArray(*SHAPE, dataflow=dataflow, in_dtype="int8")
    A, B = _inputs("int8", seed=3)
    for x, y in array.pes.tolist():
        for line in "abc":
            _check(array, A, B, [BitFlip(line, x, y, 6 if line != "c" else 20)])


@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("dataflow", ["output_stationary", "weight_stationary", "no_local_reuse",
                                      "custom"])
def test_windows_and_several_faults(dataflow, dtype):
    df = CUSTOM if dataflow == "custom" else dataflow
    array = SystolicArray(*SHAPE, dataflow=df, in_dtype=dtype)
    A, B = _inputs(dtype, seed=5)
    rng = np.random.default_rng(7)
    pes = array.pes.tolist()
    total = 8 * array.period  # 2 x 2 x 2 tiles
    for trial in range(6):
        faults = []
        for _ in range(3):
            line = "abc"[rng.integers(3)]
            x, y = pes[rng.integers(len(pes))]
            nbits = array.line_dtype(line).itemsize * 8
            start = int(rng.integers(total))
            window = None if trial % 2 == 0 else (start, start + int(rng.integers(1, total)))
            faults.append(StuckAt(line, x, y, int(rng.integers(nbits)), int(rng.integers(2)),
                                  window=window))
        # two faults on one PE and line compose in the order added
        faults.append(BitFlip(faults[0].line, faults[0].x, faults[0].y, 1))
        _check(array, A, B, faults)


def test_fixed_value_and_wider_inputs():
    array = SystolicArray(3, 2, 2, "input_stationary", in_dtype="int16")
    assert array.mac_dtype == np.int64
    rng = np.random.default_rng(0)
    A = rng.integers(-2**15, 2**15, (4, 5)).astype(np.int16)
    B = rng.integers(-2**15, 2**15, (5, 3)).astype(np.int16)
    x, y = array.pes[0].tolist()
    _check(array, A, B, [FixedValue("a", x, y, -7)])
    _check(array, A, B, [FixedValue("c", x, y, 2**40)])


def test_hand_computed_output_stationary():
    # 2x2x2 output stationary, one tile: c[0,1] lives in PE (0, 1); a[0, k] passes PE (0, 0) first
    array = SystolicArray(2, 2, 2, "output_stationary", in_dtype="int8")
    A = np.array([[1, 2], [3, 4]], dtype=np.int8)
    B = np.array([[5, 6], [7, 8]], dtype=np.int8)
    np.testing.assert_array_equal(array.matmul(A, B), [[19, 22], [43, 50]])
    array.add_fault(StuckAt("a", 0, 0, 3, 1))  # a[0, :] = (1, 2) reads as (9, 10) from PE (0,0) on
    np.testing.assert_array_equal(array.matmul(A, B), [[9 * 5 + 10 * 7, 9 * 6 + 10 * 8], [43, 50]])
    array.clear_faults()
    array.add_fault(StuckAt("c", 1, 1, 0, 0))  # every partial sum of c[1,1] loses bit 0
    # c = 0 + 3*6 = 18 -> 18; 18 + 4*8 = 50 -> 50 (both even): unchanged; bit 1 instead:
    np.testing.assert_array_equal(array.matmul(A, B), [[19, 22], [43, 50]])
    array.clear_faults()
    array.add_fault(StuckAt("c", 1, 1, 1, 0))  # 18 -> 16; 16 + 32 = 48 -> 48
    np.testing.assert_array_equal(array.matmul(A, B), [[19, 22], [43, 48]])


def test_permanent_fault_hits_every_tile():
    array = SystolicArray(2, 2, 2, "output_stationary", in_dtype="int8")
    A = np.ones((4, 4), dtype=np.int8)
    B = np.ones((4, 4), dtype=np.int8)
    array.add_fault(FixedValue("c", 1, 0, 0))
    out = array.matmul(A, B)
    # c rows/cols with local position (1, 0) read as 0 after each tile: both inner tiles add 0
    expect = np.full((4, 4), 4)
    expect[1::2, 0::2] = 0
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("name,keeps", [("output_stationary", (0, 0, 1)),
                                        ("weight_stationary", (1, 0, 0)),
                                        ("input_stationary", (0, 1, 0)),
                                        ("row_stationary", (0, 1, 0))])
def test_named_dataflows_keep_their_line(name, keeps):
    _, T = resolve_dataflow(name)
    assert np.all(T[:2] @ np.array(keeps) == 0)
    assert round(np.linalg.det(T)) != 0


def test_no_local_reuse_moves_everything():
    _, T = resolve_dataflow("no_local_reuse")
    for d in np.eye(3, dtype=int):
        assert np.any(T[:2] @ d != 0)


def test_user_errors():
    with pytest.raises(UserError, match="singular"):
        SystolicArray(2, 2, 2, [[1, 0, 0], [0, 1, 0], [1, 1, 0]])
    with pytest.raises(UserError, match="unknown dataflow"):
        SystolicArray(2, 2, 2, "diagonal")
    array = SystolicArray(2, 2, 2, "output_stationary", in_dtype="int8")
    with pytest.raises(UserError, match="not part"):
        array.add_fault(StuckAt("a", 5, 5, 0, 1))
    with pytest.raises(UserError, match="bit 8"):
        array.add_fault(StuckAt("a", 0, 0, 8, 1))
    array.add_fault(StuckAt("c", 0, 0, 31, 1))  # c is int32: bit 31 exists
    with pytest.raises(UserError, match="line"):
        array.add_fault(StuckAt("d", 0, 0, 0, 1))
    with pytest.raises(CastingError, match="range"):
        array.matmul(np.array([[200, 1]]), np.ones((2, 2)))
    with pytest.raises(CastingError, match="non-integer"):
        array.matmul(np.array([[0.5, 1]]), np.ones((2, 2)))
    f16 = SystolicArray(2, 2, 2, "output_stationary", in_dtype="float16")
    with pytest.raises(CastingError, match="float16"):
        f16.matmul(np.array([[1e6, 1]]), np.ones((2, 2)))
    with pytest.raises(UserError, match="shapes"):
        array.matmul(np.ones((2, 3), np.int8), np.ones((2, 2), np.int8))


@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("dataflow", DATAFLOW_CASES, ids=[*DATAFLOWS, "custom"])
def test_operand_faults_on_two_pes_of_one_line(dataflow, dtype):
    # several a/b faults, no c fault: two faults on one line compose upstream first
    array = SystolicArray(*SHAPE, dataflow=dataflow, in_dtype=dtype)
    A, B = _inputs(dtype, seed=11)
    pes = array.pes.tolist()
    rng = np.random.default_rng(13)
    for _ in range(4):
        (x1, y1), (x2, y2), (x3, y3) = (pes[i] for i in rng.integers(len(pes), size=3))
        _check(array, A, B, [BitFlip("a", x1, y1, 2), StuckAt("a", x2, y2, 2, 1),
                             StuckAt("b", x3, y3, 5, 0)])


def test_float16_inputs_with_float32_accumulator():
    array = SystolicArray(2, 3, 2, "weight_stationary", in_dtype="float16", mac_dtype="float32")
    rng = np.random.default_rng(4)
    A = rng.standard_normal((3, 5)).astype(np.float16)
    B = rng.standard_normal((5, 4)).astype(np.float16)
    for x, y in array.pes.tolist()[:4]:
        _check(array, A, B, [StuckAt("a", x, y, 13, 1)])
        _check(array, A, B, [BitFlip("c", x, y, 25)])


@pytest.mark.parametrize("dataflow", ["weight_stationary", "input_stationary", "no_local_reuse"])
def test_sparse_integer_faults_deep_array(dataflow):
    # n3 = 12: a stationary or diagonal operand touches few inner steps of an element, which
    # takes the sparse integer path; windows pick single tiles
    array = SystolicArray(2, 2, 12, dataflow, in_dtype="int8")
    rng = np.random.default_rng(8)
    A = rng.integers(-128, 128, (3, 30)).astype(np.int8)
    B = rng.integers(-128, 128, (30, 3)).astype(np.int8)
    pes = array.pes.tolist()
    for index in range(6):
        x, y = pes[rng.integers(len(pes))]
        window = None if index % 2 == 0 else (array.period, 3 * array.period)
        for line in "ab":
            _check(array, A, B, [StuckAt(line, x, y, int(rng.integers(8)), index % 2,
                                         window=window)])


@pytest.mark.parametrize("knobs", [(0, 1 << 16), (2, 0), (100, 0)],
                         ids=["chunked-path", "grid-per-step", "grid-always"])
@pytest.mark.parametrize("dtype", ["int8", "float32"])
def test_every_fast_path_matches_reference(monkeypatch, knobs, dtype):
    from classes_tool.systolic import tuning
    monkeypatch.setattr(tuning, "GRID_MAX_WASTE", knobs[0])
    monkeypatch.setattr(tuning, "PRODUCT_BLOCK", knobs[1])
    A, B = _inputs(dtype, seed=21)
    rng = np.random.default_rng(22)
    for dataflow in DATAFLOW_CASES:
        array = SystolicArray(*SHAPE, dataflow=dataflow, in_dtype=dtype)
        pes = array.pes.tolist()
        for line in "abc":
            x, y = pes[rng.integers(len(pes))]
            bit = int(rng.integers(array.line_dtype(line).itemsize * 8))
            _check(array, A, B, [StuckAt(line, x, y, bit, 1)])
            x2, y2 = pes[rng.integers(len(pes))]
            _check(array, A, B, [BitFlip(line, x, y, bit), StuckAt("c", x2, y2, 3, 1)])


FLOAT_SHAPES = [(3, 7, 5), (4, 8, 6)]  # padded on every axis; whole tiles (results as a view)


def _float_inputs(shape, seed):
    rng = np.random.default_rng(seed)
    M, K, N = shape
    return (rng.standard_normal((M, K)).astype(np.float32),
            rng.standard_normal((K, N)).astype(np.float32))


@pytest.fixture
def blas_products(monkeypatch):
    """Grid blocks of any size form their products with BLAS (tests use tiny blocks)."""
    from classes_tool.systolic import tuning
    monkeypatch.setattr(tuning, "BLAS_MIN", 0)


@pytest.mark.parametrize("knobs", [(4, 1 << 15, 0), (4, 1 << 15, 1 << 30), (100, 1, 0), (0, 1, 0)],
                         ids=["default", "numpy-products", "grid-one-row-per-block",
                              "positions-small-blocks"])
@pytest.mark.parametrize("shape", FLOAT_SHAPES, ids=["padded", "whole-tiles"])
def test_float_permanent_paths_match_reference(monkeypatch, knobs, shape):
    # permanent float faults take the grid path (reach = local rows x columns) or the position
    # path; small blocks split the grid's outer axis and the tiles of the position path
    from classes_tool.systolic import tuning
    monkeypatch.setattr(tuning, "GRID_MAX_WASTE", knobs[0])
    monkeypatch.setattr(tuning, "STEP_BLOCK", knobs[1])
    monkeypatch.setattr(tuning, "BLAS_MIN", knobs[2])
    A, B = _float_inputs(shape, seed=31)
    A0, B0 = A.copy(), B.copy()
    rng = np.random.default_rng(32)
    kinds = set()
    for dataflow in DATAFLOW_CASES:
        array = SystolicArray(*SHAPE, dataflow=dataflow, in_dtype="float32")
        pes = array.pes.tolist()
        for line in "abc":
            for bit in (int(rng.integers(23)), 23 + int(rng.integers(8)), 31):
                x, y = pes[rng.integers(len(pes))]
                for pol in (0, 1):
                    faults = [StuckAt(line, x, y, bit, pol)]
                    _check(array, A, B, faults)
                    kinds.add(type(array._plan(*shape[:2], shape[2])).__name__)
            x2, y2 = pes[rng.integers(len(pes))]
            _check(array, A, B, [BitFlip(line, x, y, 3), StuckAt("c", x2, y2, 20, 1),
                                 BitFlip(line, x2, y2, 30)])
    np.testing.assert_array_equal(A, A0)  # operands are never corrupted in place
    np.testing.assert_array_equal(B, B0)
    assert kinds == ({"PositionPlan"} if knobs[0] == 0 else {"GridPlan", "PositionPlan"})


@pytest.mark.parametrize("dataflow", DATAFLOW_CASES, ids=[*DATAFLOWS, "custom"])
def test_float_zero_sums_keep_their_sign(dataflow, blas_products):
    # zero rows/columns make zero partial sums; a c fault on the sign bit turns them into -0,
    # and -0 + (-0) stays -0 while -0 + (+0) is +0: the products' zero signs must be exact
    rng = np.random.default_rng(41)
    A = rng.standard_normal((4, 8)).astype(np.float32)
    B = -np.abs(rng.standard_normal((8, 6))).astype(np.float32)  # a zero times b is -0
    A[1] = 0.0
    A[2, ::2] = -0.0
    B[:, 4] = 0.0
    array = SystolicArray(*SHAPE, dataflow=dataflow, in_dtype="float32")
    pes = array.pes.tolist()
    for x, y in pes:
        _check(array, A, B, [StuckAt("c", x, y, 31, 1)])
        _check(array, A, B, [FixedValue("c", x, y, -0.0)])
        _check(array, A, B, [StuckAt("a", x, y, 31, 1), StuckAt("c", x, y, 31, 1)])
        # a later fault turns the sign of a zero sum into the sign of a non-zero value
        for x2, y2 in pes[::2]:
            _check(array, A, B, [BitFlip("c", x, y, 31), BitFlip("c", x2, y2, 0)])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # BLAS golden of inf/NaN inputs
def test_float_non_finite_values_match_reference(blas_products):
    # inf and NaN operands (from the data or from exponent faults) take the NumPy products
    A, B = _float_inputs((4, 8, 6), seed=51)
    A[0, 3], B[5, 2], B[6, 0] = np.inf, np.nan, -np.inf
    for dataflow in DATAFLOW_CASES:
        array = SystolicArray(*SHAPE, dataflow=dataflow, in_dtype="float32")
        for x, y in array.pes.tolist()[::3]:
            for line in "ab":
                _check(array, A, B, [StuckAt(line, x, y, 30, 1)])
            _check(array, *_float_inputs((4, 8, 6), seed=52), [StuckAt("b", x, y, 30, 1)])


def test_plans_follow_the_shape():
    # the cached index sets belong to one (faults, shape); alternating shapes stay exact
    array = SystolicArray(*SHAPE, dataflow="weight_stationary", in_dtype="float32")
    fault = [StuckAt("a", 1, 2, 12, 1)]
    for shape in [*FLOAT_SHAPES, *FLOAT_SHAPES]:
        _check(array, *_float_inputs(shape, seed=61), fault)


@pytest.mark.parametrize("min_blas", [0, None], ids=["blas-products", "default"])
@pytest.mark.parametrize("dataflow", DATAFLOW_CASES, ids=[*DATAFLOWS, "custom"])
def test_float_paths_agree_with_windowed_path_at_scale(monkeypatch, dataflow, min_blas):
    # larger blocks than the reference can afford: the permanent-fault paths (BLAS products,
    # blocks, views) give bit-identical results to the windowed path, which is checked
    # against the reference above, with a window that covers every cycle
    import dataclasses

    from classes_tool.systolic import tuning
    if min_blas is not None:
        monkeypatch.setattr(tuning, "BLAS_MIN", min_blas)
    rng = np.random.default_rng(71)
    A = rng.standard_normal((40, 44)).astype(np.float32)
    B = rng.standard_normal((44, 36)).astype(np.float32)
    A[3], B[:, 5] = 0.0, -0.0
    array = SystolicArray(8, 8, 8, dataflow, in_dtype="float32")
    pes = array.pes.tolist()
    for trial in range(6):
        faults = [StuckAt("abc"[trial % 3], *pes[rng.integers(len(pes))], int(rng.integers(32)),
                          int(rng.integers(2)))]
        if trial >= 3:
            faults += [BitFlip("c", *pes[rng.integers(len(pes))], 31),
                       StuckAt("b", *pes[rng.integers(len(pes))], 30, 1)]
        array.clear_faults()
        for f in faults:
            array.add_fault(f)
        fast = array.matmul(A, B)
        array.clear_faults()
        for f in faults:
            array.add_fault(dataclasses.replace(f, window=(0, 10**9)))
        windowed = array.matmul(A, B)
        same = (fast.view(np.uint32) == windowed.view(np.uint32)) | (np.isnan(fast)
                                                                     & np.isnan(windowed))
        assert same.all(), faults


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # BLAS golden of inf/NaN inputs
@pytest.mark.parametrize("min_blas", [0, None], ids=["blas-products", "default"])
@pytest.mark.parametrize("shape", FLOAT_SHAPES, ids=["padded", "whole-tiles"])
def test_kept_buffers_never_reach_results(monkeypatch, shape, min_blas):
    # a plan keeps its partial sums, products, coefficient matrices and transposed operand for
    # its next call: consecutive products with the same faults and other values (zeros of
    # both signs, inf and NaN among them) stay exact, and an earlier result never changes
    from classes_tool.systolic import tuning
    if min_blas is not None:
        monkeypatch.setattr(tuning, "BLAS_MIN", min_blas)
    rng = np.random.default_rng(81)
    for dataflow in DATAFLOW_CASES:
        array = SystolicArray(*SHAPE, dataflow=dataflow, in_dtype="float32")
        pes = array.pes.tolist()
        for line in "abc":
            x, y = pes[rng.integers(len(pes))]
            x2, y2 = pes[rng.integers(len(pes))]
            for faults in ([StuckAt(line, x, y, int(rng.integers(32)), 1)],
                           [StuckAt(line, x, y, 31, 1), BitFlip("c", x2, y2, 31)]):
                array.clear_faults()
                for f in faults:
                    array.add_fault(f)
                kept = []
                for trial in range(4):
                    A, B = _float_inputs(shape, seed=int(rng.integers(1 << 30)))
                    if trial == 1:
                        A[0], B[:, -1] = 0.0, -0.0
                    if trial == 2:
                        A[-1, 0], B[1, 0] = np.inf, np.nan
                    kept.append((A, B, array.matmul(A, B)))
                    assert len(kept) < 2 or not np.shares_memory(kept[-1][2], kept[-2][2])
                for A, B, fast in kept:
                    _assert_exact(array, A, B, faults, fast)
