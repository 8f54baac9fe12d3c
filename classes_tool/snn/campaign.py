"""SNN fault campaigns in the style users of SpikeFI know: rounds of faults, one batched run.

A *round* is a set of faults active together; a campaign runs every round over the same data and
compares against the golden (fault-free) network. What makes it fast:

1. Many rounds in one pass: the data batch is tiled R times (row = round * N + sample) and every
   fault acts only on its own rows (indices and per-unit parameters), so the model is never
   rebuilt or re-weighted per fault.
2. Late start: golden per-layer outputs (whole time axis) are computed once per data batch; a
   group of rounds starts at the first layer any of them touches.
3. Early stop, taken to the element: rows are carried as their differences from the golden run.
   After every layer only the (row, time step) slices that differ are kept (a fault that changes
   nothing for a sample costs nothing after its layer); step-wise layers (TimeDistributed) run
   on those slices only, a LIF layer recomputes only the (row, neuron) units whose input differs
   or that a fault touches, and a synapse fault on golden input changes single elements.

Every path computes each value with the same arithmetic (Keras layers per time step, one NumPy
LIF recurrence, synapse changes added in fault order), so the batched results are bit-identical
to running one fault per forward pass (`rounds_per_pass=1, late_start=False, early_stop=False`).
The model must be a chain (each layer feeds the next), as built by `classes_tool.snn.unroll`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from classes_tool.errors import UserError
from classes_tool.files import atomic_path, write_text_atomic
from classes_tool.snn import metrics
from classes_tool.snn.faults import (
    PARAMETRIC,
    SYNAPSE_MODELS,
    Fault,
    FaultModel,
    describe,
    resolve,
    synapse_value,
)
from classes_tool.snn.layers import LIF, lif_numpy

FORMAT = "classes_tool.snn.campaign/1"
PROGRESS = ("pbar", "table", "silent")


# ----------------------------------------------------------------------------------------------
# The network as a chain of layers.

class _Net:
    """Layer chain of a spiking Keras model, with what the engine needs to know per layer."""

    def __init__(self, model: keras.Model):
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise UserError("SNN campaigns need a model with one input and one output")
        self.model = model
        self.layers = [ly for ly in model.layers if not isinstance(ly, keras.layers.InputLayer)]
        prev = model.inputs[0]
        for ly in self.layers:  # a chain: each layer consumes the previous output
            ins = ly._inbound_nodes[0].input_tensors if ly._inbound_nodes else []
            if len(ins) != 1 or ins[0] is not prev:
                raise UserError(f"layer {ly.name!r} is not part of a simple chain; SNN campaigns "
                                "support chain models such as those built by snn.unroll")
            prev = ly._inbound_nodes[0].output_tensors[0]
            if isinstance(ly, LIF) and ly.return_membrane:
                raise UserError(f"LIF {ly.name!r} returns its membrane; use a Readout instead")
        self.index = {ly.name: i for i, ly in enumerate(self.layers)}
        self.time_steps = int(model.inputs[0].shape[1])

    def layer(self, name: str):
        if name not in self.index:
            raise UserError(f"no layer {name!r} in the model; layers: {', '.join(self.index)}")
        return self.layers[self.index[name]]

    @staticmethod
    def synapse_core(ly):
        inner = ly.layer if isinstance(ly, keras.layers.TimeDistributed) else ly
        if isinstance(inner, (keras.layers.Dense, keras.layers.Conv2D)):
            return inner
        return None

    def site_shape(self, name: str, kind: str) -> tuple[int, ...]:
        ly = self.layer(name)
        if kind == "synapse":
            core = self.synapse_core(ly)
            if core is None:
                raise UserError(f"synapse faults need a Dense or Conv2D layer; {name!r} is "
                                f"{type(ly).__name__}")
            return tuple(int(d) for d in core.kernel.shape)
        if not isinstance(ly, LIF):
            raise UserError(f"neuron faults need a LIF layer; {name!r} is {type(ly).__name__}")
        return tuple(int(d) for d in ly.beta.shape)

    def kernel(self, name: str) -> np.ndarray:
        return np.asarray(self.synapse_core(self.layer(name)).kernel.numpy())


# ----------------------------------------------------------------------------------------------
# Applying faults to the rows of an enlarged batch.
#
# Every layer computation of the engine is one of three exact building blocks, shared by the
# one-fault-per-pass path and the batched path, so both give bit-identical results:
#   - a Keras layer applied to whole rows (`ly(x)`) or to single time steps of rows (the inner
#     layer of a TimeDistributed, as TimeDistributed itself calls it);
#   - `lif_numpy` on a (time, units) problem, a unit being one neuron of one row;
#   - synapse faults as float32 updates added to the layer output in fault order.

def _rows_by_round(row_round: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(row_round, kind="stable")
    keys, starts = np.unique(row_round[order], return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    return {int(k): order[s:e] for k, s, e in zip(keys, starts, bounds, strict=True)}


def _steps(fault: Fault, steps: int) -> np.ndarray:
    if fault.window is None:
        return np.arange(steps)
    return np.arange(fault.window[0], fault.window[1])


def _bucket(n: int) -> int:
    """Batch sizes rounded up to few distinct values, so kernels see few shapes: 2^k or
    1.5 * 2^k (at least 16) up to 4096, then multiples of 2^k / 8 (under 12.5% padding)."""
    if n > 4096:
        step = 1 << (n.bit_length() - 4)
        return -(-n // step) * step
    size = 16
    while size < n:
        size = size * 3 // 2 if (size & (size - 1)) == 0 else (size // 3) * 4
    return size


def _site_index(site, shape: tuple[int, ...]) -> int:
    return int(np.ravel_multi_index(tuple(site), shape))


def _mem_op(kind: str, units: np.ndarray, p) -> Callable[[np.ndarray], None]:
    """A membrane rewrite at one step for the given units (applied in fault order)."""
    if kind == "set":
        value = np.float32(p)

        def op(mem):
            mem[units] = value
    elif p["format"] == "float32":
        mask = np.array(1 << int(p["bit"]), np.uint32).view(np.int32)

        def op(mem):
            mem[units] = (mem[units].view(np.int32) ^ mask).view(np.float32)
    else:
        bit = 1 << int(p["bit"])
        scale = np.float32(p["scale"])
        zp = np.float32(p["zero_point"])

        def op(mem):
            old = mem[units]
            with np.errstate(invalid="ignore", over="ignore"):
                q = np.clip(np.round(old / scale) + zp, -128, 127)
                q = np.nan_to_num(q).astype(np.int32)
            u = (q & 0xFF) ^ bit
            q2 = np.where(u >= 128, u - 256, u)
            mem[units] = old + (q2 - q).astype(np.float32) * scale
    return op


def _run_lif_units(ly: LIF, current: np.ndarray, neuron: np.ndarray, fault_units: list
                   ) -> np.ndarray:
    """LIF spikes (time, M) for M units, unit m being neuron `neuron[m]` of some row.

    `fault_units` = [(fault, site index, units)]: each fault acts on its units, in list order.
    """
    steps = current.shape[0]
    beta = ly.beta.numpy().reshape(-1)
    if ly.learn_beta:  # as LIF.call does for a trained beta
        beta = np.clip(beta, 0.0, 1.0)
    beta = beta[neuron]
    thr = ly.threshold.numpy().reshape(-1)[neuron]
    refr0 = float(ly.refractory)
    refr = np.full(neuron.shape, refr0, np.float32) if refr0 > 0 else None
    gain = None
    mem_ops: dict[int, list] = {}
    spike_ops: list = []
    for fault, k, units in fault_units:
        name = fault.model.name
        p = fault.model.params
        eff = p.get("as", name)
        if name in PARAMETRIC:
            if fault.window is not None:
                raise UserError(f"parametric fault {name!r} acts on all steps; drop its window")
            if name == "threshold":
                thr[units] = thr[units] * p["factor"]
            elif name == "leak":
                beta[units] = np.clip(beta[units] * p["factor"], 0.0, 1.0)
            elif name == "gain":
                if gain is None:
                    gain = np.ones(neuron.shape, np.float32)
                gain[units] = gain[units] * p["factor"]
            else:
                if refr is None:
                    refr = np.full(neuron.shape, refr0, np.float32)
                refr[units] = np.round(np.maximum(refr[units], 1.0) * p["factor"])
        elif name == "membrane_stuck":
            for t in _steps(fault, steps):
                mem_ops.setdefault(int(t), []).append(_mem_op("set", units, p["value"]))
        elif name == "membrane_bitflip":
            mem_ops.setdefault(int(p["step"]), []).append(_mem_op("flip", units, p))
        elif name == "spike_flip":
            spike_ops.append(("flip", units, int(p["step"]), None))
        else:
            t_idx = _steps(fault, steps)
            if eff == "dead_neuron":
                vals = np.zeros(len(t_idx), np.float32)
            elif eff == "saturated_neuron":
                vals = np.ones(len(t_idx), np.float32)
            elif eff == "stuck_neuron":
                if "prob" in p:  # one pattern per fault and site, the same for every input
                    draw = np.random.default_rng([int(p["draw_seed"]), k]).random(steps)
                    vals = (draw < p["prob"]).astype(np.float32)[t_idx]
                else:
                    vals = np.full(len(t_idx), float(bool(p["value"])), np.float32)
            else:
                raise ValueError(f"not a neuron model: {name}")
            spike_ops.append(("set", units, t_idx, vals))
    spk = lif_numpy(current, beta, thr, ly.reset, refractory=refr, gain=gain, mem_ops=mem_ops)
    for kind, units, t_idx, vals in spike_ops:  # on the axon; the membrane kept evolving
        if kind == "set":
            spk[np.ix_(t_idx, units)] = vals[:, None]
        else:
            spk[t_idx, units] = 1.0 - spk[t_idx, units]
    return spk


def _run_lif(ly: LIF, x: np.ndarray, rows_of: dict[int, np.ndarray], faults: list
             ) -> np.ndarray:
    """The LIF layer on all rows of x (rows, time, ...); `faults` = [(round, Fault)] act on
    their round's rows only."""
    nrows, steps = x.shape[:2]
    shape = x.shape[2:]
    nf = int(np.prod(shape))
    current = np.ascontiguousarray(np.asarray(x, np.float32).reshape(nrows, steps, nf)
                                   .transpose(1, 0, 2)).reshape(steps, nrows * nf)
    neuron = np.tile(np.arange(nf), nrows)
    fault_units = []
    for rnd, fault in faults:
        rows = rows_of.get(rnd)
        if rows is None or rows.size == 0:
            continue
        for site in fault.sites:
            k = _site_index(site, shape)
            fault_units.append((fault, k, rows * nf + k))
    spk = _run_lif_units(ly, current, neuron, fault_units)
    return np.ascontiguousarray(spk.reshape(steps, nrows, nf).transpose(1, 0, 2)
                                ).reshape(x.shape)


class _SynapseSite:
    """Where one weight acts: for each output position q, input feature in_idx[q] (of one time
    step's flattened input) feeds output feature out_idx[q]; positions in padding drop out."""

    def __init__(self, core, in_shape: tuple[int, ...], out_shape: tuple[int, ...], site):
        site = tuple(int(v) for v in site)
        if isinstance(core, keras.layers.Dense):
            n_in, n_out = in_shape[-1], out_shape[-1]
            mids = np.arange(int(np.prod(in_shape[:-1], dtype=np.int64)))
            self.in_idx = mids * n_in + site[0]
            self.out_idx = mids * n_out + site[1]
            return
        if (core.data_format != "channels_last" or tuple(core.dilation_rate) != (1, 1)
                or getattr(core, "groups", 1) != 1 or len(in_shape) != 3):
            raise UserError(f"synapse faults support channels_last, undilated, ungrouped Conv2D "
                            f"({core.name!r})")
        kh, kw = (int(d) for d in core.kernel.shape[:2])
        sh, sw = core.strides
        h, w, cin = in_shape
        ho, wo, cout = out_shape
        pt = pl = 0
        if core.padding == "same":
            pt = max((ho - 1) * sh + kh - h, 0) // 2
            pl = max((wo - 1) * sw + kw - w, 0) // 2
        yo, xo = np.meshgrid(np.arange(ho), np.arange(wo), indexing="ij")
        yi = yo * sh + site[0] - pt
        xi = xo * sw + site[1] - pl
        ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        self.in_idx = ((yi[ok] * w + xi[ok]) * cin + site[2]).astype(np.int64)
        self.out_idx = ((yo[ok] * wo + xo[ok]) * cout + site[3]).astype(np.int64)


def _synapse_faults(net: _Net, ly, faults: list, in_shape, out_shape, steps: int):
    """Per (round, Fault) and site: (round, geometry, float32 weight change per step, step mask).

    Faults of one round on the same weight act in injection order: each one's faulty value is
    computed from the weight as the faults before it (active at that step) left it, and its
    change is the difference to that weight, so stuck 2.0 then stuck 3.0 ends at 3.0."""
    core = net.synapse_core(ly)
    if core.activation not in (keras.activations.linear, None):
        raise UserError(f"synapse faults need a linear activation in {ly.name!r}")
    kernel = core.kernel.numpy()
    out = []
    current: dict[tuple, np.ndarray] = {}  # (round, site) -> weight per step so far (float64)
    for rnd, fault in faults:
        tmask = np.zeros(steps, bool)
        tmask[_steps(fault, steps)] = True
        for site in fault.sites:
            before = current.get((rnd, site))
            if before is None:
                before = np.full(steps, float(kernel[site]))
            after = before.copy()
            for w in np.unique(before[tmask]):
                same = np.isnan(before) if np.isnan(w) else before == w
                after[tmask & same] = synapse_value(fault.model, float(w), kernel)
            current[(rnd, site)] = after
            delta = (after - before).astype(np.float32)
            out.append((rnd, _SynapseSite(core, in_shape, out_shape, site), delta, tmask))
    return out


def _synapse_updates(g: np.ndarray, geo: _SynapseSite, delta: np.ndarray, tmask: np.ndarray):
    """Nonzero updates g * delta (g: inputs (rows, time, Q); delta: the weight change per
    step) as (row, step, out feature, value).

    A zero update changes nothing, so it is left out on every path alike."""
    u = g * delta[None, :, None]
    u[:, ~tmask] = 0.0
    r, t, q = np.nonzero(u)
    return r, t, geo.out_idx[q], u[r, t, q]


def _run_synapse(net: _Net, ly, x: np.ndarray, rows_of: dict[int, np.ndarray],
                 faults: list) -> np.ndarray:
    """The synapse layer on all rows, plus each fault's weight change on its own rows only.

    out = W x + (w' - w) * x[input of that weight], added at the weight's output position in
    fault order; the layer's activation must be linear for this to be exact.
    """
    out = np.array(ly(x, training=False))
    nrows, steps = x.shape[:2]
    xf = np.asarray(x, np.float32).reshape(nrows, steps, -1)
    of = out.reshape(-1)
    width = int(np.prod(out.shape[2:]))
    for rnd, geo, delta, tmask in _synapse_faults(net, ly, faults, x.shape[2:], out.shape[2:],
                                                  steps):
        rows = rows_of.get(rnd)
        if rows is None or rows.size == 0:
            continue
        r, t, o, u = _synapse_updates(xf[rows][:, :, geo.in_idx], geo, delta, tmask)
        np.add.at(of, (rows[r] * steps + t) * width + o, u)
    return out


def _apply(net: _Net, i: int, x: np.ndarray, rows_of: dict, faults: list) -> np.ndarray:
    """Layer i on whole rows x (rows, time, ...), faults acting on their round's rows."""
    ly = net.layers[i]
    if isinstance(ly, LIF):
        return _run_lif(ly, x, rows_of, faults)
    if faults:
        return _run_synapse(net, ly, x, rows_of, faults)
    return np.array(ly(x, training=False))


def _stepwise(ly) -> keras.layers.Layer | None:
    """The per-step layer of a layer that treats every time step alone (TimeDistributed, or a
    bare Dense on (batch, time, features)); None for any other layer."""
    if isinstance(ly, keras.layers.TimeDistributed):
        return ly.layer
    if isinstance(ly, keras.layers.Dense):
        return ly
    return None


def _call_steps(inner, slices: np.ndarray, padded: np.ndarray | None = None) -> np.ndarray:
    """`inner` on a batch of single time steps, as TimeDistributed calls it on each step.

    The batch is padded to a bucket size (few distinct shapes for the kernels) and handed to
    TensorFlow without another copy; `padded` (from `_padded_rows`), when given, already holds
    `slices` in its first rows.
    """
    n = slices.shape[0]
    if padded is None:
        batch = _aligned((_bucket(n),) + slices.shape[1:])
        batch[:n] = slices
        batch[n:] = 0.0
    else:
        batch = padded.reshape((padded.shape[0],) + slices.shape[1:])
    kwargs = {"training": False} if getattr(inner, "_call_has_training_arg", False) else {}
    out = np.asarray(inner.call(_as_tensor(batch), **kwargs))
    return out[:n]


_ALIGN = 128  # TensorFlow needs buffers it does not own aligned (64 bytes on AVX-512 builds)


def _aligned(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised float32 array whose data starts on an `_ALIGN`-byte boundary."""
    size = int(np.prod(shape)) * 4
    raw = np.empty(size + _ALIGN, np.uint8)
    start = -raw.ctypes.data % _ALIGN
    return raw[start:start + size].view(np.float32).reshape(shape)


def _padded_rows(n: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An aligned (bucket(n), width) array with zero rows after the first n, and its first n
    rows (to be filled), so a batch for `_call_steps` is written only once."""
    padded = _aligned((_bucket(n), width))
    padded[n:] = 0.0
    return padded[:n], padded


def _as_tensor(a: np.ndarray) -> tf.Tensor:
    """A tensor sharing `a`'s memory when it is aligned and contiguous (it must not change
    while the tensor lives), else a copy."""
    if a.flags.c_contiguous and a.ctypes.data % _ALIGN == 0 and a.size:
        return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
    return tf.convert_to_tensor(a)


# ----------------------------------------------------------------------------------------------
# Sparse propagation: a chunk's rows as differences from the golden run.
#
# After each layer only the (row, step) slices whose output differs from the golden one are
# kept (keys row * steps + t, sorted, with their values); every other slice is golden by
# construction. Step-wise layers run on the kept slices only, a LIF layer recomputes only the
# (row, neuron) units whose input current differs or that a fault touches, and a layer of any
# other kind (the readout) runs on whole rows rebuilt from golden plus the kept slices.

class _Batch:
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


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def _any_per_run(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Rows of a boolean (K, F) mask OR-ed over runs starting at `starts`: (runs, F)."""
    if mask.shape[1] % 8 == 0 and mask.flags.c_contiguous:  # eight flags per word
        words = np.bitwise_or.reduceat(mask.view(np.uint64), starts, axis=0)
        return words.view(np.uint8).astype(bool)
    return np.logical_or.reduceat(mask, starts, axis=0)


def _runs(sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and where each run of equal values starts."""
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    return sorted_ids[starts], starts


@dataclasses.dataclass
class _Diff:
    """Where one layer's output differs from the golden one, for the rows of a chunk.

    Whole slices (`keys` sorted, row * steps + t; `vals` (K, features) flattened), or single
    elements when a fault changes only a few of each slice (`keys` per element, unsorted, with
    `feat` and `vals` (E,)). Everything not listed is golden.
    """

    keys: np.ndarray
    vals: np.ndarray | None = None
    feat: np.ndarray | None = None
    padded: np.ndarray | None = None  # slices: vals as the first rows of a `_padded_rows` batch

    @property
    def empty(self) -> bool:
        return self.keys.size == 0

    def slices(self, bt: _Batch, j: int) -> _Diff:
        """The same difference as whole slices of layer j's output."""
        if self.feat is None:
            return self
        order = np.argsort(self.keys, kind="stable")
        keys, starts = _runs(self.keys[order])
        run = np.empty(self.keys.size, np.int64)
        run[order] = np.repeat(np.arange(keys.size), np.diff(np.append(starts, order.size)))
        vals, padded = _padded_rows(keys.size, bt.flat(j).shape[2])
        bt.slices(j, keys, out=vals)
        vals[run, self.feat] = self.vals
        return _Diff(keys, vals, padded=padded)


_NONE = _Diff(np.zeros(0, np.int64))


def _lif_sparse(ly: LIF, i: int, bt: _Batch, diff: _Diff, faults: list) -> _Diff:
    """A LIF layer on a difference: recompute only units (row, neuron) whose input differs at
    some step or that a fault touches; return the slices whose spikes differ from golden."""
    steps, nb = bt.steps, bt.n
    shape = tuple(int(d) for d in ly.beta.shape)
    nf = int(np.prod(shape))
    keys = diff.keys
    parts = []
    if diff.feat is not None:
        in_codes = (keys // steps) * nf + diff.feat
        parts.append(in_codes)
    elif keys.size:
        vin = diff.vals
        in_rows, starts = _runs(keys // steps)
        r, n = np.nonzero(_any_per_run(vin != bt.slices(i - 1, keys), starts))
        parts.append(in_rows[r] * nf + n)
    fault_codes = []
    for rnd, fault in faults:
        rows = rnd * nb + np.arange(nb)
        for site in fault.sites:
            k = _site_index(site, shape)
            fault_codes.append((fault, k, rows * nf + k))
    if fault_codes:
        parts.append(np.concatenate([c for _, _, c in fault_codes]))
    if not parts:
        return _NONE
    if len(parts) == 1 and diff.feat is None and keys.size:
        codes = parts[0]  # already sorted and distinct
    else:
        codes = _sorted_unique(np.concatenate(parts))
    if codes.size == 0:
        return _NONE
    row = codes // nf
    neuron = codes % nf
    col = (row % nb) * nf + neuron
    if diff.feat is None and keys.size:  # units of rows whose input differs: rebuilt rows
        pos = np.minimum(np.searchsorted(in_rows, row), in_rows.size - 1)
        sel = in_rows[pos] == row
        rows_in = np.take(bt.time_major(i - 1).reshape(steps, nb, nf), in_rows % nb, axis=1)
        rows_in[keys % steps, np.repeat(np.arange(in_rows.size),
                                        np.diff(np.append(starts, keys.size)))] = vin
        rebuilt = np.take(rows_in.reshape(steps, -1), pos[sel] * nf + neuron[sel], axis=1)
        if sel.all():
            current = rebuilt
        else:
            current = np.take(bt.time_major(i - 1), col, axis=1)
            current[:, sel] = rebuilt
    else:
        current = np.take(bt.time_major(i - 1), col, axis=1)  # (steps, units), golden input
        if diff.feat is not None:
            current[keys % steps, np.searchsorted(codes, in_codes)] = diff.vals
    units = [(f, k, np.searchsorted(codes, c)) for f, k, c in fault_codes]
    spk = _run_lif_units(ly, current, neuron, units)
    ne = spk != np.take(bt.time_major(i), col, axis=1)
    changed = np.flatnonzero(ne.any(axis=0))
    if changed.size == 0:
        return _NONE
    pp, tt = np.nonzero(ne[:, changed].T)
    pp = changed[pp]
    out_rows, first = _runs(row[pp])
    at = np.repeat(np.arange(out_rows.size), np.diff(np.append(first, pp.size)))
    hit = np.zeros((out_rows.size, steps), bool)
    hit[at, tt] = True
    ro, to = np.nonzero(hit)
    index = np.zeros((out_rows.size, steps), np.int64)
    index[ro, to] = np.arange(ro.size)
    out_keys = out_rows[ro] * steps + to
    out, padded = _padded_rows(out_keys.size, nf)
    bt.slices(i, out_keys, out=out)
    out[index[at, tt], neuron[pp]] = spk[tt, pp]
    return _Diff(out_keys, out, padded=padded)


def _stepwise_sparse(net: _Net, i: int, bt: _Batch, diff: _Diff, faults: list) -> _Diff:
    """A step-wise layer on a difference: run the differing slices, add synapse faults'
    updates on their rounds' rows, keep what differs from golden."""
    ly = net.layers[i]
    steps, nb = bt.steps, bt.n
    out_shape = bt.out(i).shape[2:]
    width = int(np.prod(out_shape))
    diff = diff.slices(bt, i - 1)
    keys = diff.keys
    in_shape = bt.out(i - 1).shape[2:]
    new = None
    if keys.size:
        new = _call_steps(_stepwise(ly), diff.vals.reshape((keys.size,) + in_shape),
                          diff.padded)
    if faults:
        vin = None if diff.vals is None else diff.vals.reshape(keys.size, -1)
        gin = bt.flat(i - 1)
        upd = []
        for rnd, geo, delta, tmask in _synapse_faults(net, ly, faults, in_shape, out_shape,
                                                      steps):
            g = gin[:, :, geo.in_idx]
            lo, hi = np.searchsorted(keys, [rnd * nb * steps, (rnd + 1) * nb * steps])
            if hi > lo:  # this round's rows whose input differs from golden
                local = keys[lo:hi] - rnd * nb * steps
                g[local // steps, local % steps] = vin[lo:hi][:, geo.in_idx]
            r, t, o, u = _synapse_updates(g, geo, delta, tmask)
            upd.append(((rnd * nb + r) * steps + t, o, u))
        if not keys.size:  # golden input: only the updated elements change
            return _updated_elements(bt, i, upd, width)
        out_keys = _sorted_unique(np.concatenate([k for k, _, _ in upd] + [keys]))
        out = bt.slices(i, out_keys)
        out[np.searchsorted(out_keys, keys)] = new.reshape(keys.size, width)
        flat = out.reshape(-1)
        for k, o, u in upd:
            np.add.at(flat, np.searchsorted(out_keys, k) * width + o, u)
        keys = out_keys
    elif keys.size == 0:
        return _NONE
    else:
        out = new.reshape(keys.size, width)
    differs = np.any(out != bt.slices(i, keys), axis=1)
    kept, padded = _padded_rows(int(differs.sum()), width)
    np.compress(differs, out, axis=0, out=kept)
    return _Diff(keys[differs], kept, padded=padded)


def _updated_elements(bt: _Batch, i: int, upd: list, width: int) -> _Diff:
    """Golden output of layer i plus synapse updates [(slice keys, features, values)], added
    in list order, as a difference of single elements."""
    keys = np.concatenate([k for k, _, _ in upd])
    feat = np.concatenate([o for _, o, _ in upd])
    u = np.concatenate([v for _, _, v in upd])
    code = (keys % (bt.n * bt.steps)) * width + feat
    golden = bt.flat(i).reshape(-1)
    elem = keys * width + feat
    order = np.argsort(elem, kind="stable")
    first = np.concatenate(([True], elem[order][1:] != elem[order][:-1]))
    if first.all():  # one update per element: one addition each
        vals = golden[code] + u
    else:  # several: added one after the other, in fault order
        run = np.empty(elem.size, np.int64)
        run[order] = np.cumsum(first) - 1
        head = order[first]
        keys, feat, code = keys[head], feat[head], code[head]
        vals = golden[code].copy()
        np.add.at(vals, run, u)
    keep = vals != golden[code]
    return _Diff(keys[keep], vals[keep], feat[keep])


def _rows_from(bt: _Batch, j: int, diff: _Diff, extra: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Whole rows (golden output of layer j with the differences written in), for the rows of
    the difference and `extra` rows."""
    diff = diff.slices(bt, j)
    keys = diff.keys
    rows = np.union1d(keys // bt.steps, extra).astype(np.int64)
    h = bt.out(j)[rows % bt.n]
    if keys.size:
        h[np.searchsorted(rows, keys // bt.steps), keys % bt.steps] = \
            diff.vals.reshape((keys.size,) + h.shape[2:])
    return rows, h


# ----------------------------------------------------------------------------------------------
# The campaign.

class Campaign:
    """Rounds of faults on one spiking model, run together over a data set.

    `input_shape` is one sample's shape (time, ...). Faults with open choices (random sites,
    factors, bits, steps) are resolved at injection from (seed, fault_index).
    """

    def __init__(self, model: keras.Model, input_shape: tuple | list, name: str = "snn-campaign",
                 seed: int = 0, model_path: str | None = None):
        self.model = model
        self.net = _Net(model)
        self.input_shape = tuple(int(d) for d in input_shape)
        if tuple(self.input_shape) != tuple(int(d) for d in model.inputs[0].shape[1:]):
            raise UserError(f"input_shape {self.input_shape} does not match the model input "
                            f"{tuple(model.inputs[0].shape[1:])}")
        self.name = name
        self.seed = int(seed)
        self.model_path = model_path
        self.rounds: list[list[Fault]] = []
        self._next_fault = 0
        self.duration = 0.0
        self.results: metrics.Results | None = None
        self._cache: dict = {}

    # -- building rounds -----------------------------------------------------------------------

    def _resolve(self, fault: Fault) -> Fault:
        if not isinstance(fault, Fault):
            raise UserError(f"expected a Fault, got {type(fault).__name__}")
        kind = fault.model.kind
        shape = self.net.site_shape(fault.layer, kind)
        kernel = self.net.kernel(fault.layer) if kind == "synapse" else None
        rng = np.random.default_rng([self.seed, self._next_fault])
        self._next_fault += 1
        return resolve(fault, shape, self.net.time_steps, rng, kernel)

    def inject(self, faults: list[Fault] | Fault, round_idx: int = -1) -> None:
        """Add faults to one round (the last by default; a first round is created if none)."""
        faults = [faults] if isinstance(faults, Fault) else list(faults)
        if not self.rounds:
            self.rounds.append([])
        try:
            target = self.rounds[round_idx]
        except IndexError:
            raise UserError(f"no round {round_idx}; the campaign has {len(self.rounds)}") from None
        target.extend(self._resolve(f) for f in faults)
        self.results = None

    def then_inject(self, faults: list[Fault] | Fault) -> None:
        """Add a new round holding `faults`."""
        self.rounds.append([])
        self.inject(faults, -1)

    def inject_complete(self, fault_model: FaultModel | str, layer_names: list[str],
                        sampling_k: int | None = None, window: tuple[int, int] | None = None
                        ) -> None:
        """One round per site (every neuron or synapse of each layer, or k random ones)."""
        if isinstance(fault_model, str):
            fault_model = FaultModel(fault_model)
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        for name in layer_names:
            shape = self.net.site_shape(name, fault_model.kind)
            size = int(np.prod(shape))
            flat = np.arange(size)
            if sampling_k is not None:
                if not 1 <= sampling_k:
                    raise UserError(f"sampling_k must be positive, got {sampling_k}")
                rng = np.random.default_rng([self.seed, self._next_fault, 1])
                flat = np.sort(rng.choice(size, size=min(sampling_k, size), replace=False))
            for i in flat:
                site = tuple(int(v) for v in np.unravel_index(int(i), shape))
                self.rounds.append([self._resolve(Fault(fault_model, name, [site], 1, window))])
        self.results = None

    def eject(self, faults: list[Fault] | None = None, round_idx: int | None = None) -> None:
        """Remove faults: the given ones, all of one round, or (no arguments) every round."""
        if faults is None and round_idx is None:
            self.rounds = []
        elif faults is None:
            try:
                del self.rounds[round_idx]
            except IndexError:
                raise UserError(f"no round {round_idx}") from None
        else:
            drop = [f.to_dict() for f in faults]
            picked = self.rounds if round_idx is None else [self.rounds[round_idx]]
            for rnd in picked:
                rnd[:] = [f for f in rnd if f.to_dict() not in drop]
            self.rounds = [r for r in self.rounds if r]
        self.results = None

    def reset(self) -> None:
        """Forget results and timing (the rounds stay), so the next run starts afresh."""
        self.results = None
        self.duration = 0.0

    # -- running -------------------------------------------------------------------------------

    def _first_last(self, rnd: list[Fault]) -> tuple[int, int]:
        idx = [self.net.index[f.layer] for f in rnd]
        return (min(idx), max(idx)) if idx else (len(self.net.layers), -1)

    def golden(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs of every layer (whole time axis) of the fault-free network."""
        outs = []
        h = np.asarray(x, np.float32)
        for i in range(len(self.net.layers)):
            h = _apply(self.net, i, h, {}, [])
            outs.append(h)
        return outs

    def run(self, data, progress: str = "pbar", batch_size: int = 128, max_rows: int = 4096,
            late_start: bool = True, early_stop: bool = True,
            rounds_per_pass: int | None = None) -> metrics.Results:
        """Run every round over `data` = (x, y) (x shaped (N, time, ...); y may be None).

        `max_rows` bounds the enlarged batch (rounds x samples per forward pass);
        `rounds_per_pass=1, late_start=False, early_stop=False` is the one-fault-per-pass
        baseline. With both late start and early stop (the default) rows are propagated as
        differences from the golden run. Returns (and keeps) the results.
        """
        if progress not in PROGRESS:
            raise UserError(f"progress must be one of {PROGRESS}, got {progress!r}")
        if not self.rounds:
            raise UserError("the campaign has no rounds; inject faults first")
        x, y = _split_data(data)
        if tuple(x.shape[1:]) != self.input_shape:
            raise UserError(f"data samples are shaped {tuple(x.shape[1:])}, the campaign "
                            f"expects {self.input_shape}")
        n = len(x)
        n_rounds = len(self.rounds)
        spans = [self._first_last(r) for r in self.rounds]
        order = sorted(range(n_rounds), key=lambda r: spans[r])
        golden_scores = None
        scores = None
        bar = None
        if progress == "pbar":
            from tqdm.auto import tqdm
            bar = tqdm(total=n_rounds * n, desc=self.name, unit="run")
        elif progress == "table":
            print(f"{'rounds':>12} {'samples':>12} {'elapsed s':>10}")
        start = time.perf_counter()
        for b0 in range(0, n, batch_size):
            xb = x[b0:b0 + batch_size]
            nb = len(xb)
            bt = _Batch(xb, self.golden(xb))
            gscore = bt.gold[-1]
            if scores is None:
                golden_scores = np.zeros((n,) + gscore.shape[1:], np.float32)
                scores = np.zeros((n_rounds, n) + gscore.shape[1:], np.float32)
            golden_scores[b0:b0 + nb] = gscore
            per_pass = rounds_per_pass or max(1, max_rows // nb)
            for c0 in range(0, n_rounds, per_pass):
                chunk = order[c0:c0 + per_pass]
                plan: dict[int, list] = {}
                for p, r in enumerate(chunk):
                    for f in self.rounds[r]:
                        plan.setdefault(self.net.index[f.layer], []).append((p, f))
                out = np.tile(gscore, (len(chunk),) + (1,) * (gscore.ndim - 1))
                first = min(spans[r][0] for r in chunk) if late_start else 0
                if late_start and early_stop:
                    rows, h = self._run_sparse(bt, plan, first)
                else:
                    rows, h = self._run_dense(bt, plan, first, len(chunk), spans, chunk,
                                              early_stop)
                out[rows] = h
                for p, r in enumerate(chunk):
                    scores[r, b0:b0 + nb] = out[p * nb:(p + 1) * nb]
                if bar is not None:
                    bar.update(len(chunk) * nb)
                elif progress == "table":
                    print(f"{min(c0 + per_pass, n_rounds):>12} {b0 + nb:>12} "
                          f"{time.perf_counter() - start:>10.2f}")
        if bar is not None:
            bar.close()
        self.duration += time.perf_counter() - start
        self.results = metrics.Results(golden_scores, scores, y, self.round_info())
        return self.results

    def _run_dense(self, bt: _Batch, plan: dict, first: int, n_chunk: int, spans: list,
                   chunk: list, early_stop: bool) -> tuple[np.ndarray, np.ndarray]:
        """Whole rows through every layer from `first` (golden input there); with early stop,
        rows equal to golden after their round's last faulty layer leave. Returns the rows
        that reach the output and their outputs."""
        nb = bt.n
        nl = len(self.net.layers)
        row_round = np.repeat(np.arange(n_chunk), nb)
        row_sample = np.tile(np.arange(nb), n_chunk)
        round_last = np.array([spans[r][1] for r in chunk])
        alive = np.arange(len(row_round))
        start = bt.out(first - 1)
        h = np.tile(start, (n_chunk,) + (1,) * (start.ndim - 1))
        for i in range(first, nl):
            faults_i = plan.get(i, [])
            rows_of = _rows_by_round(row_round[alive]) if faults_i else {}
            h = _apply(self.net, i, h, rows_of, faults_i)
            if early_stop and i < nl - 1:
                cand = np.flatnonzero(round_last[row_round[alive]] <= i)
                if cand.size:
                    g = bt.out(i)[row_sample[alive[cand]]]
                    same = cand[~np.any((h[cand] != g).reshape(cand.size, -1), axis=1)]
                    if same.size:
                        keep = np.setdiff1d(np.arange(alive.size), same)
                        alive = alive[keep]
                        h = h[keep]
                if alive.size == 0:
                    break
        return alive, h

    def _run_sparse(self, bt: _Batch, plan: dict, first: int
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows as differences from golden (see `_lif_sparse`, `_stepwise_sparse`); layers of
        other kinds run on whole rows. Returns the rows whose output differs (or may differ)
        from golden and their outputs."""
        nb = bt.n
        nl = len(self.net.layers)
        if not plan:
            return np.zeros(0, np.int64), bt.gold[-1][:0]
        last = max(plan)
        diff = _NONE
        rows = h = None  # whole rows, once a layer needed them
        for i in range(first, nl):
            ly = self.net.layers[i]
            faults_i = plan.get(i, [])
            if rows is None and isinstance(ly, LIF):
                diff = _lif_sparse(ly, i, bt, diff, faults_i)
            elif rows is None and _stepwise(ly) is not None:
                diff = _stepwise_sparse(self.net, i, bt, diff, faults_i)
            else:
                extra = np.unique(np.concatenate(
                    [p * nb + np.arange(nb) for p, _ in faults_i] or [np.zeros(0, np.int64)]))
                if rows is None:
                    rows, h = _rows_from(bt, i - 1, diff, extra)
                elif np.setdiff1d(extra, rows).size:
                    new = np.union1d(rows, extra)
                    h_new = bt.out(i - 1)[new % nb]
                    h_new[np.searchsorted(new, rows)] = h
                    rows, h = new, h_new
                if rows.size == 0:  # every row golden here: nothing to run
                    h = bt.out(i)[:0]
                else:
                    rows_of = _rows_by_round(rows // nb) if faults_i else {}
                    h = _apply(self.net, i, h, rows_of, faults_i)
                    if i < nl - 1:
                        same = np.all((h == bt.out(i)[rows % nb]).reshape(rows.size, -1), 1)
                        rows, h = rows[~same], h[~same]
            if i >= last and (diff.empty if rows is None else rows.size == 0):
                return np.zeros(0, np.int64), bt.gold[-1][:0]
        if rows is None:
            rows, h = _rows_from(bt, nl - 1, diff, np.zeros(0, np.int64))
        return rows, h

    # -- description, save and load ------------------------------------------------------------

    def round_info(self) -> list[dict]:
        """Per round: target (layer names), pattern (fault model names) and params (JSON)."""
        info = []
        for rnd in self.rounds:
            layers = sorted({f.layer for f in rnd}, key=lambda n: self.net.index[n])
            models = sorted({f.model.name for f in rnd})
            params = describe(rnd[0]) if len(rnd) == 1 else {"faults": [describe(f) for f in rnd]}
            info.append({"target": "+".join(layers), "pattern": "+".join(models),
                         "params": params})
        return info

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "input_shape": list(self.input_shape),
                "seed": self.seed, "next_fault_index": self._next_fault,
                "duration": self.duration, "model_path": self.model_path,
                "rounds": [[f.to_dict() for f in rnd] for rnd in self.rounds]}

    def save(self, path: str | Path) -> Path:
        """Write `path` (JSON: rounds, settings) and `path` with suffix .npz (results, if run)."""
        path = Path(path)
        if path.suffix != ".json":
            path = path.with_suffix(".json")
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1))
        npz = path.with_suffix(".npz")
        if self.results is not None:
            with atomic_path(npz) as tmp:
                self.results.save_npz(tmp)
        elif npz.exists():
            npz.unlink()
        return path

    @classmethod
    def load(cls, path: str | Path, model: keras.Model | None = None) -> Campaign:
        """Read a campaign saved by `save`; the model is given or loaded from its saved path."""
        path = Path(path)
        if path.suffix != ".json":
            path = path.with_suffix(".json")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read campaign {path}: {exc}") from None
        if data.get("format") != FORMAT:
            raise UserError(f"{path} is not an SNN campaign file ({FORMAT})")
        if model is None:
            if not data.get("model_path"):
                raise UserError("the campaign file names no model; pass model=")
            import classes_tool.snn  # noqa: F401  (registers the layers)
            model = keras.models.load_model(data["model_path"], compile=False)
        camp = cls(model, data["input_shape"], data["name"], data["seed"], data.get("model_path"))
        camp.rounds = [[Fault.from_dict(f) for f in rnd] for rnd in data["rounds"]]
        camp._next_fault = int(data["next_fault_index"])
        camp.duration = float(data.get("duration", 0.0))
        npz = path.with_suffix(".npz")
        if npz.exists():
            camp.results = metrics.Results.load_npz(npz, camp.round_info())
        return camp


def _split_data(data) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(data, dict):
        x, y = data.get("x"), data.get("y")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    if x is None:
        raise UserError("campaign data needs inputs x")
    x = np.asarray(x, np.float32)
    y = None if y is None else np.asarray(y).astype(np.int64)
    if y is not None and len(y) != len(x):
        raise UserError(f"{len(x)} inputs but {len(y)} labels")
    return x, y


__all__ = ["Campaign", "SYNAPSE_MODELS"]
