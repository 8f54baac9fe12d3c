"""The one injection mechanism: how a site's values are written into a tensor.

The `ErrorSimulator` layer and the campaign's traced steps both write through this module, so
what a patched model computes and what a campaign measures cannot drift apart. A site replaces
the values at its flat positions (`out = where(mask, value, x)` per sample); two forms of it:

- sparse (`apply_sites`): each sample gets the site `site_ids[b]` of the ragged site arrays
  (positions, values, splits), written with one vectorised scatter. The layer uses it, and a
  campaign with few inputs per fault;
- dense rows (`dense_site_rows` builds them, `write_rows` writes them): a site as a (mask,
  value) row over the whole flattened tensor, for campaign batches that broadcast one fault
  over many inputs. `write_rows(x, *dense_site_rows(...))` writes exactly what `apply_sites`
  writes (tested bit for bit).

Cost on CPU: TensorFlow's scatter copies the whole tensor even to write one element. When the
compiled kernel of `native.py` is built (`classes-tool build-native`, done by `make`), the sparse
write takes over the tensor's buffer whenever no one else holds it and costs only its entries;
otherwise the stock path runs: TensorFlow's scatter for a few entries, and from
XLA_WRITE_MIN_ENTRIES entries on one small XLA program (~10 ns per entry) whose entry count is
padded to a power of two, so that only a few programs are ever compiled.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from classes_tool.simulator import native


def _in_xla_context() -> bool:
    """True while tracing for XLA (jit_compile), where shapes must be static."""
    try:
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(
            tf.compat.v1.get_default_graph()))
    except (ImportError, AttributeError):  # private API moved: take the always-safe path
        return True


def apply_sites(x: tf.Tensor, site_ids: tf.Tensor, positions: tf.Tensor, values: tf.Tensor,
                splits: tf.Tensor, max_positions: int, static_shapes: bool | None = None
                ) -> tf.Tensor:
    """Write site `site_ids[b]` into sample b of `x` (`site_ids[b] < 0` leaves sample b alone).

    This is `out = where(mask_b, value_b, x_b)` for every sample b, done as one scatter.
    Two equivalent ways: outside XLA, gather exactly the entries of the drawn sites (cost follows
    the sites' real sizes: most are a few positions, a few span whole channels); under XLA,
    where shapes must be static, a window as wide as the largest site, padding sent to a spare
    column.
    """
    if max_positions == 0:
        return x
    site_ids = tf.cast(site_ids, tf.int32)
    active = site_ids >= 0
    safe_ids = tf.where(active, site_ids, 0)
    start = tf.gather(splits, safe_ids)
    length = tf.gather(splits, safe_ids + 1) - start
    length = tf.where(active, length, 0)
    if static_shapes is None:
        static_shapes = _in_xla_context()
    if not static_shapes:
        return _apply_ragged(x, start, length, positions, values)
    shape = tf.shape(x)
    batch = shape[0]
    flat_size = int(np.prod(x.shape[1:]))
    flat = tf.reshape(x, (batch, flat_size))
    offsets = tf.range(max_positions, dtype=tf.int32)
    index = start[:, None] + offsets[None, :]
    valid = offsets[None, :] < length[:, None]
    last = tf.maximum(tf.shape(positions)[0] - 1, 0)
    index = tf.minimum(index, last)
    pos = tf.where(valid, tf.gather(positions, index), flat_size)  # padding -> spare column
    val = tf.cast(tf.gather(values, index), x.dtype)
    rows = tf.broadcast_to(tf.range(batch, dtype=tf.int32)[:, None], tf.shape(pos))
    scatter_index = tf.stack([rows, pos], axis=-1)
    padded = tf.concat([flat, tf.zeros((batch, 1), dtype=x.dtype)], axis=1)
    updated = tf.tensor_scatter_nd_update(padded, scatter_index, val)
    return tf.reshape(updated[:, :flat_size], shape)


#: dtypes the native in-place write handles (native/write_sites.cc)
NATIVE_DTYPES = (tf.float16, tf.bfloat16, tf.float32, tf.float64)

#: Below this many written entries per call TensorFlow's own scatter is as fast as the compiled
#: one; above it the compiled one wins (TF's CPU kernel costs ~60 ns per entry, XLA's ~10 ns).
XLA_WRITE_MIN_ENTRIES = 8192


def _entry_rows(length: tf.Tensor, size: tf.Tensor | int) -> tf.Tensor:
    """Sample index of entries 0 .. size-1 of the concatenated sites (sample b owns `length[b]`
    consecutive entries): the number of samples whose run ends at or before the entry, as a
    cumulative sum of end marks (RaggedTensor.value_rowids does this ten times slower on CPU).
    Entries past the last run get the number of samples."""
    end = tf.cumsum(length)
    return tf.cumsum(tf.math.unsorted_segment_sum(tf.ones_like(end), end, size + 1)[:size])


def _site_entries(start, length, positions, values, size, flat_size, dtype):
    """(flat target index, value) of entries 0 .. size-1 of the sites drawn for the batch."""
    rows = _entry_rows(length, size)
    rows = tf.minimum(rows, tf.shape(length)[0] - 1)  # entries past the end: any valid row
    first = tf.cumsum(length, exclusive=True)
    index = tf.range(size) + tf.gather(start - first, rows)
    index = tf.clip_by_value(index, 0, tf.maximum(tf.shape(positions)[0] - 1, 0))
    target = rows * flat_size + tf.gather(positions, index)
    return target, tf.cast(tf.gather(values, index), dtype)


@tf.function(jit_compile=True, reduce_retracing=True, autograph=False)
def _compiled_apply(flat, start, length, positions, values, slots):
    """The whole write as one XLA program for `len(slots)` >= the real entry count: the extra
    slots repeat entry 0 (same index, same value), so the order in which the compiled scatter
    writes duplicates cannot change the result. XLA compiles one program per shape of its
    arguments, so callers pad `slots` (and ragged site arrays whose size varies) to powers of
    two."""
    flat_size = tf.shape(flat)[0] // tf.shape(length)[0]
    target, vals = _site_entries(start, length, positions, values, tf.shape(slots)[0],
                                 flat_size, flat.dtype)
    real = slots < tf.reduce_sum(length)
    return tf.tensor_scatter_nd_update(flat, tf.where(real, target, target[0])[:, None],
                                       tf.where(real, vals, vals[0]))


def _power_of_two(n: tf.Tensor) -> tf.Tensor:
    """Smallest power of two >= n (n >= 1)."""
    return tf.bitwise.left_shift(1, tf.cast(tf.math.ceil(
        tf.math.log(tf.cast(n, tf.float64)) / np.log(2.0) - 1e-9), tf.int32))


def _pad_to_power_of_two(a: tf.Tensor) -> tf.Tensor:
    size = tf.maximum(tf.shape(a)[0], 1)
    return tf.concat([a, tf.zeros([_power_of_two(size) - tf.shape(a)[0]], a.dtype)], 0)


def _apply_ragged(x: tf.Tensor, start: tf.Tensor, length: tf.Tensor, positions: tf.Tensor,
                  values: tf.Tensor) -> tf.Tensor:
    if x.dtype in NATIVE_DTYPES and native.load() is not None:
        # in place when x is nobody else's (see native.py): nothing else here reads x, which
        # is what lets TensorFlow hand its buffer over
        return native.write_sites(x, tf.cast(start, tf.int32), tf.cast(length, tf.int32),
                                  tf.cast(positions, tf.int32), tf.cast(values, x.dtype))
    flat_size = int(np.prod(x.shape[1:]))
    n = tf.reduce_sum(length)
    shape = tf.shape(x)
    flat = tf.reshape(x, (-1,))

    def small():  # TensorFlow's scatter: cheapest for a few entries
        target, vals = _site_entries(start, length, positions, values, n, flat_size, x.dtype)
        return tf.tensor_scatter_nd_update(flat, target[:, None], vals)

    def large():  # one XLA program; entries padded to a power of two (few programs)
        pos, vals = positions, values
        if positions.shape[0] is None:  # sites passed per call (a campaign): sizes vary too
            pos, vals = _pad_to_power_of_two(positions), _pad_to_power_of_two(values)
        return _compiled_apply(flat, start, length, pos, vals, tf.range(_power_of_two(n)))

    updated = tf.cond(n >= XLA_WRITE_MIN_ENTRIES, large,
                      lambda: tf.cond(n > 0, small, lambda: flat))
    return tf.reshape(updated, shape)


def write_rows(x: tf.Tensor, mask: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """`x` with `value` where `mask` is set (dense rows of `dense_site_rows`, broadcast as the
    caller arranges them): the dense form of the write `apply_sites` does."""
    return tf.where(mask, tf.cast(value, x.dtype), x)


def dense_site_rows(sites, flat_size: int, rows: int | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(mask, value) rows of shape (rows, flat_size): row j writes site j, the rows after the
    last site write nothing (for padded samples); `rows` defaults to one empty row after the
    sites. `where(mask[j], value[j], x)` is what the ErrorSimulator's scatter writes for site
    j."""
    n = len(sites.splits) - 1
    rows = n + 1 if rows is None else rows
    if rows < n:
        raise ValueError(f"{n} sites do not fit in {rows} rows")
    mask = np.zeros((rows, flat_size), bool)
    value = np.zeros((rows, flat_size), np.float32)
    owner = np.repeat(np.arange(n), np.diff(sites.splits))
    mask[owner, sites.positions] = True
    value[owner, sites.positions] = sites.values
    return mask, value
