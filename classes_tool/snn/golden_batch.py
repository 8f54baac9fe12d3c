"""Golden (fault-free) per-layer outputs of one data batch, with the views the engine reads."""

from __future__ import annotations

import numpy as np


class GoldenBatch:
    """Golden per-layer outputs of one data batch, with the views the sparse engine reads."""

    def __init__(self, x: np.ndarray, gold: list[np.ndarray]):
        self.x = x
        self.gold = gold
        self.n = len(x)
        self.steps = int(x.shape[1])
        self._tm: dict[int, np.ndarray] = {}

    def out(self, j: int) -> np.ndarray:
        """Golden output of layer j (j = -1: the input)."""
        return self.x if j < 0 else self.gold[j]

    def flat(self, j: int) -> np.ndarray:
        """Golden output of layer j as (samples, steps, features)."""
        o = self.out(j)
        return o.reshape(o.shape[0], o.shape[1], -1)

    def time_major(self, j: int) -> np.ndarray:
        """Golden output of layer j as (steps, samples * features), column s * F + f."""
        if j not in self._tm:
            f = self.flat(j)
            self._tm[j] = np.ascontiguousarray(f.transpose(1, 0, 2)).reshape(f.shape[1], -1)
        return self._tm[j]

    def slices(self, j: int, keys: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Golden slices (row, step) = keys of layer j's output, flattened: (K, features)."""
        f = self.flat(j)
        per_step = f.reshape(f.shape[0] * f.shape[1], f.shape[2])
        if out is None:
            return np.take(per_step, keys % (self.n * self.steps), axis=0)
        return np.take(per_step, keys % (self.n * self.steps), axis=0, out=out, mode="clip")
