"""Speed of the exact faulty systolic matmul.

Ratio 1: faulty exact matmul time / NumPy matmul time for 256x256x256, float32 (BLAS) and int8
(NumPy's exact integer product with the same int32 accumulator, ``A.astype(int32) @ B...``).
Each fault is one random stuck-at fault (line a, b or c in turn, random PE, bit and polarity) on a
32x32x32 array; the table shows the median and worst time per dataflow and line, the summary line
the median over all faults and dataflows. Target: at most 3.
Ratio 2: speed-up of the same code over the simple loop-over-(i, j, k) register reference
(tests/systolic/systolic_reference.py) on a 48x48x48 product. Target: at least 100.

BLAS runs single-threaded (set before NumPy loads) so that both sides use one core; times are the
best of several runs, baseline and ours interleaved in the same process.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

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


def random_fault(array: SystolicArray, line: str, index: int, seed: int = 1) -> StuckAt:
    rng = np.random.default_rng([seed, index])
    x, y = array.pes[rng.integers(len(array.pes))].tolist()
    bits = array.line_dtype(line).itemsize * 8
    return StuckAt(line, x, y, int(rng.integers(bits)), int(rng.integers(2)))


def main() -> None:
    rng = np.random.default_rng(0)
    n = 256
    Af = rng.standard_normal((n, n)).astype(np.float32)
    Bf = rng.standard_normal((n, n)).astype(np.float32)
    Ai = rng.integers(-128, 128, (n, n)).astype(np.int8)
    Bi = rng.integers(-128, 128, (n, n)).astype(np.int8)
    summary = {}
    print(f"{'dtype':8s} {'dataflow':18s} line  numpy ms  ours median ms  worst ms  median ratio")
    for dtype, A, B, base_fn in (
        ("float32", Af, Bf, lambda: Af @ Bf),
        ("int8", Ai, Bi, lambda: Ai.astype(np.int32) @ Bi.astype(np.int32)),
    ):
        ratios, bases, ours_all = [], [], []
        for dataflow in ("output_stationary", "weight_stationary", "no_local_reuse"):
            array = SystolicArray(32, 32, 32, dataflow, in_dtype=dtype)
            for line in "abc":
                times, base = [], []
                for index in range(4):
                    array.clear_faults()
                    array.add_fault(random_fault(array, line, index))
                    base.append(best(base_fn, 7))
                    times.append(best(lambda array=array, A=A, B=B: array.matmul(A, B), 7))
                array.clear_faults()
                b = float(np.median(base))
                ratios += [t / b for t in times]
                bases.append(b)
                ours_all += times
                print(f"{dtype:8s} {dataflow:18s} {line}    {b * 1e3:8.3f}  {np.median(times) * 1e3:13.3f}"
                      f"  {max(times) * 1e3:8.3f}  {np.median(times) / b:12.2f}")
        summary[dtype] = (float(np.median(ratios)), float(np.median(bases)),
                          float(np.median(ours_all)))

    m = k = nn = 48
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
    for dtype, (ratio, base, ours_t) in summary.items():
        print(f"systolic_faulty_vs_numpy_{dtype}: ratio={ratio:.2f} (baseline numpy "
              f"{base * 1e3:.3f} ms, ours median {ours_t * 1e3:.3f} ms; target <= 3)")
    print(f"systolic_vs_loop_reference: ratio={loop / ours:.0f} (baseline loop {loop:.3f} s, "
          f"ours {ours * 1e3:.3f} ms; target >= 100)")


if __name__ == "__main__":
    main()
