"""Register dtypes of a systolic array: the supported inputs, the default accumulator, lossless
casting of inputs, and the exact integer product that serves as the golden one."""

from __future__ import annotations

import numpy as np

from classes_tool.errors import UserError

SUPPORTED_INPUT_DTYPES = ("int8", "uint8", "int16", "float16", "float32", "float64")


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

