"""Speed of the exact faulty systolic matmul.

Ratio 1: faulty exact matmul time / NumPy matmul time for 256x256x256, float32 (BLAS) and int8
(NumPy's exact integer product with the same int32 accumulator), averaged over random stuck-at
faults on every line of a 32x32x32 array. Target: at most 3.
Ratio 2: speed-up of the same code over the simple loop-over-(i, j, k) register reference
(tests/systolic/systolic_reference.py) on a smaller product. Target: at least 100.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "systolic"))
from systolic_reference import reference_matmul  # noqa: E402

from classes_tool.systolic import StuckAt, SystolicArray  # noqa: E402


def best(fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def random_faults(array: SystolicArray, count: int, seed: int) -> list[StuckAt]:
    out = []
    for index in range(count):
        rng = np.random.default_rng([seed, index])
        line = "abc"[index % 3]
        x, y = array.pes[rng.integers(len(array.pes))].tolist()
        bits = array.line_dtype(line).itemsize * 8
        out.append(StuckAt(line, x, y, int(rng.integers(bits)), int(rng.integers(2))))
    return out


def faulty_time(array: SystolicArray, A, B, faults) -> float:
    total = 0.0
    for f in faults:
        array.clear_faults()
        array.add_fault(f)
        total += best(lambda: array.matmul(A, B), repeat=3)
    array.clear_faults()
    return total / len(faults)


def main() -> None:
    rng = np.random.default_rng(0)
    n = 256
    Af = rng.standard_normal((n, n)).astype(np.float32)
    Bf = rng.standard_normal((n, n)).astype(np.float32)
    Ai = rng.integers(-128, 128, (n, n)).astype(np.int8)
    Bi = rng.integers(-128, 128, (n, n)).astype(np.int8)
    ratios = []
    for dtype, A, B, base_fn in (
        ("float32", Af, Bf, lambda: Af @ Bf),
        ("int8", Ai, Bi, lambda: Ai.astype(np.int32) @ Bi.astype(np.int32)),
    ):
        base = best(base_fn)
        for dataflow in ("output_stationary", "weight_stationary", "no_local_reuse"):
            array = SystolicArray(32, 32, 32, dataflow, in_dtype=dtype)
            ours = faulty_time(array, A, B, random_faults(array, 12, seed=1))
            ratios.append(ours / base)
            print(f"{dtype:8s} {dataflow:18s} numpy {base * 1e3:8.3f} ms  faulty exact "
                  f"{ours * 1e3:8.3f} ms  ratio {ours / base:6.2f}")
    worst = max(ratios)

    m, k, nn = 48, 48, 48
    A = rng.integers(-128, 128, (m, k)).astype(np.int8)
    B = rng.integers(-128, 128, (k, nn)).astype(np.int8)
    array = SystolicArray(16, 16, 16, "weight_stationary", in_dtype="int8")
    fault = StuckAt("a", 3, 5, 6, 1)
    array.add_fault(fault)
    ours = best(lambda: array.matmul(A, B))
    t0 = time.perf_counter()
    ref = reference_matmul(A, B, 16, 16, 16, array.T, array.in_dtype, array.mac_dtype, [fault])
    loop = time.perf_counter() - t0
    assert np.array_equal(ref, array.matmul(A, B))
    print(f"loop reference {m}x{k}x{nn} on 16^3 array: loop {loop:.3f} s, ours {ours * 1e3:.3f} ms, "
          f"speed-up {loop / ours:.0f}x")
    print(f"systolic_vs_numpy: ratio={worst:.2f} (baseline numpy matmul 256^3, ours worst mean "
          f"faulty exact matmul over dataflows and dtypes; target <= 3)")
    print(f"systolic_vs_loop: ratio={loop / ours:.0f} (baseline loop reference {loop:.3f} s, ours "
          f"{ours * 1e3:.3f} ms; target >= 100)")


if __name__ == "__main__":
    main()
