"""A deliberately simple register-level reference of the systolic array, for tests and the bench.

It walks every (i, j, k) of every tile, moving the a/b/c register values PE by PE in time order,
with its own bit manipulation (Python ints and raw bytes), so it shares no code with the fast
implementation it checks.
"""

from __future__ import annotations

import numpy as np


def _to_bits(value, dtype: np.dtype) -> int:
    return int.from_bytes(np.array(value, dtype=dtype).tobytes(), "little")


def _from_bits(bits: int, dtype: np.dtype):
    return np.frombuffer(bits.to_bytes(dtype.itemsize, "little"), dtype=dtype)[0]


def corrupt(value, fault, dtype: np.dtype):
    """Value read from a faulty register of `dtype` (fault kinds by class name)."""
    kind = type(fault).__name__
    if kind == "FixedValue":
        return dtype.type(fault.value)
    bits = _to_bits(value, dtype)
    if kind == "StuckAt":
        bits = bits | (1 << fault.bit) if fault.polarity else bits & ~(1 << fault.bit)
    elif kind == "BitFlip":
        bits ^= 1 << fault.bit
    else:
        raise ValueError(kind)
    return _from_bits(bits, dtype)


def _wrap(x: int, dtype: np.dtype) -> int:
    nbits = dtype.itemsize * 8
    x &= (1 << nbits) - 1
    return x - (1 << nbits) if x >= 1 << (nbits - 1) else x


def reference_matmul(A, B, n1, n2, n3, T, in_dtype, mac_dtype, faults=()):
    """C = A @ B on an n1 x n2 x n3 array with space-time matrix T, one iteration at a time."""
    T = np.asarray(T, dtype=np.int64)
    in_dtype, mac_dtype = np.dtype(in_dtype), np.dtype(mac_dtype)
    integer = mac_dtype.kind == "i"
    M, K = A.shape
    N = B.shape[1]
    nI, nJ, nK = -(-M // n1), -(-N // n2), -(-K // n3)
    Ap = np.zeros((nI * n1, nK * n3), dtype=in_dtype)
    Ap[:M, :K] = A
    Bp = np.zeros((nK * n3, nJ * n2), dtype=in_dtype)
    Bp[:K, :N] = B

    box = [(i, j, k) for i in range(n1) for j in range(n2) for k in range(n3)]
    pe = {it: (int(T[0] @ it), int(T[1] @ it)) for it in box}
    time = {it: int(T[2] @ it) for it in box}
    t_min, period = min(time.values()), max(time.values()) - min(time.values()) + 1
    # chains of one tile, each in time order (ties: increasing index)
    a_chains = [sorted([(i, j, k) for j in range(n2)], key=lambda it: (time[it], it[1]))
                for i in range(n1) for k in range(n3)]
    b_chains = [sorted([(i, j, k) for i in range(n1)], key=lambda it: (time[it], it[0]))
                for j in range(n2) for k in range(n3)]
    c_chains = [sorted([(i, j, k) for k in range(n3)], key=lambda it: (time[it], it[2]))
                for i in range(n1) for j in range(n2)]

    def read(line, it, cycle, value, dtype):
        for f in faults:
            if f.line == line and (f.x, f.y) == pe[it]:
                if f.window is None or f.window[0] <= cycle < f.window[1]:
                    value = corrupt(value, f, dtype)
        return value

    def walk(chains, line, source, tile, used):
        """Move one operand value along each chain, register by register."""
        for chain in chains:
            incoming = source(chain[0])
            for pos, it in enumerate(chain):
                stored = incoming
                out = read(line, it, tile * period + time[it] - t_min, stored, in_dtype)
                used[it] = out
                same = pos + 1 < len(chain) and pe[chain[pos + 1]] == pe[it]
                incoming = stored if same else out  # a register keeps its value, a hop forwards

    C = [[0 if integer else mac_dtype.type(0) for _ in range(N)] for _ in range(M)]
    tile = 0
    for ti in range(nI):
        for tj in range(nJ):
            for tk in range(nK):
                a_used, b_used = {}, {}
                walk(a_chains, "a", lambda it, ti=ti, tk=tk: Ap[ti * n1 + it[0], tk * n3 + it[2]], tile, a_used)
                walk(b_chains, "b", lambda it, tj=tj, tk=tk: Bp[tk * n3 + it[2], tj * n2 + it[1]], tile, b_used)
                for chain in c_chains:  # the partial sum of c[i, j] travels over k
                    i, j = chain[0][0], chain[0][1]
                    c = 0 if integer else mac_dtype.type(0)
                    for it in chain:
                        a, b = a_used[it], b_used[it]
                        if integer:
                            s = _wrap(c + _wrap(int(a) * int(b), mac_dtype), mac_dtype)
                        else:
                            s = c + mac_dtype.type(a) * mac_dtype.type(b)
                        out = read("c", it, tile * period + time[it] - t_min,
                                   mac_dtype.type(s) if integer else s, mac_dtype)
                        c = int(out) if integer else out
                    gi, gj = ti * n1 + i, tj * n2 + j
                    if gi < M and gj < N:
                        if integer:
                            C[gi][gj] = _wrap(C[gi][gj] + c, mac_dtype)
                        else:
                            C[gi][gj] = C[gi][gj] + c
                tile += 1
    return np.array(C, dtype=mac_dtype).reshape(M, N)
