"""Single time steps of rows through a step-wise layer, as TimeDistributed would call it.

Batches are padded to a few bucket sizes (few distinct shapes for the kernels), aligned, and
handed to TensorFlow without another copy."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

ALIGNMENT = 128  # TensorFlow needs buffers it does not own aligned (64 bytes on AVX-512 builds)


def stepwise_layer(candidate) -> keras.layers.Layer | None:
    """The per-step layer of a layer that treats every time step alone (TimeDistributed, or a
    bare Dense on (batch, time, features)); None for any other layer."""
    if isinstance(candidate, keras.layers.TimeDistributed):
        return candidate.layer
    if isinstance(candidate, keras.layers.Dense):
        return candidate
    return None


def bucket_size(n: int) -> int:
    """Batch sizes rounded up to few distinct values, so kernels see few shapes: 2^k or
    1.5 * 2^k (at least 16) up to 4096, then multiples of 2^k / 8 (under 12.5% padding)."""
    if n > 4096:
        step = 1 << (n.bit_length() - 4)
        return -(-n // step) * step
    size = 16
    while size < n:
        size = size * 3 // 2 if (size & (size - 1)) == 0 else (size // 3) * 4
    return size


def call_steps(inner, slices: np.ndarray, padded: np.ndarray | None = None) -> np.ndarray:
    """`inner` on a batch of single time steps, as TimeDistributed calls it on each step.

    The batch is padded to a bucket size (few distinct shapes for the kernels) and handed to
    TensorFlow without another copy; `padded` (from `padded_rows`), when given, already holds
    `slices` in its first rows.
    """
    n = slices.shape[0]
    if padded is None:
        batch = aligned_array((bucket_size(n),) + slices.shape[1:])
        batch[:n] = slices
        batch[n:] = 0.0
    else:
        batch = padded.reshape((padded.shape[0],) + slices.shape[1:])
    kwargs = {"training": False} if getattr(inner, "_call_has_training_arg", False) else {}
    out = np.asarray(inner.call(as_tensor(batch), **kwargs))
    return out[:n]


def aligned_array(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose data starts on an `ALIGNMENT`-byte boundary."""
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + size].view(np.float32).reshape(shape)


def padded_rows(n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An aligned (bucket(n), width) array with zero rows after the first n, and its first n
    rows (to be filled), so a batch for `call_steps` is written only once."""
    padded = aligned_array((bucket_size(n), width))
    padded[n:] = 0.0
    return padded[:n], padded


def as_tensor(a: np.ndarray) -> tf.Tensor:
    """A tensor sharing `a`'s memory when it is aligned and contiguous (it must not change
    while the tensor lives), else a copy."""
    if a.flags.c_contiguous and a.ctypes.data % ALIGNMENT == 0 and a.size:
        return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
    return tf.convert_to_tensor(a)
