"""SNN fault campaigns in the style users of SpikeFI know: rounds of faults, one batched run.

A *round* is a set of faults active together; a campaign runs every round over the same data and
compares against the golden (fault-free) network. Three things make it fast:

1. Many rounds in one forward pass: the data batch is tiled R times (row = round * N + sample) and
   every fault is applied only to its own rows (sparse index updates and per-row parameter
   arrays), so the model is never rebuilt or re-weighted per fault.
2. Late start: golden per-layer outputs (whole time axis) are computed once per data batch; a
   group of rounds starts at the first layer any of them touches.
3. Early stop: after the last faulty layer of a group, rows whose output equals the golden one are
   dropped and take the golden scores.

The model must be a chain (each layer feeds the next), as built by `classes_tool.snn.unroll`.
"""

from __future__ import annotations

import json
import time
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
from classes_tool.snn.layers import LIF, lif_dynamics

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

def _rows_by_round(row_round: np.ndarray) -> dict[int, np.ndarray]:
    order = np.argsort(row_round, kind="stable")
    keys, starts = np.unique(row_round[order], return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    return {int(k): order[s:e] for k, s, e in zip(keys, starts, bounds, strict=True)}


def _steps(fault: Fault, steps: int) -> np.ndarray:
    if fault.window is None:
        return np.arange(steps)
    return np.arange(fault.window[0], fault.window[1])


@tf.function(jit_compile=True)
def _lif_compiled(x, beta, thr, gain, refr, subtract: bool, slope: float):
    return lif_dynamics(x, beta, thr, "subtract" if subtract else "zero", refractory=refr,
                        gain=gain, slope=slope)


def _bucket(n: int) -> int:
    """Row counts rounded up to 2^k or 1.5 * 2^k, so XLA compiles only a few shapes."""
    size = 16
    while size < n:
        size = size * 3 // 2 if (size & (size - 1)) == 0 else (size // 3) * 4
    return size


def _lif_xla(x, beta, thr, gain, refr, subtract: bool, slope: float):
    """Compiled LIF for the common case (no membrane hook); gain 1 and refr 0 change nothing.

    Per-row tensors (rank of x minus one) are padded with the rows to a bucket size.
    """
    n = int(x.shape[0])
    pad = _bucket(n) - n
    rank = len(x.shape)

    def padded(v):
        v = tf.convert_to_tensor(v, tf.float32)
        if pad and len(v.shape) == rank - 1:
            v = tf.pad(v, [[0, pad]] + [[0, 0]] * (rank - 2))
        return v

    xp = tf.pad(x, [[0, pad]] + [[0, 0]] * (rank - 1)) if pad else x
    out = _lif_compiled(xp, padded(beta), padded(thr), padded(gain), padded(refr),
                        bool(subtract), float(slope))
    return out[:n] if pad else out


def _lif_plain(ly: LIF, x: tf.Tensor) -> tf.Tensor:
    refr = tf.constant(float(ly.refractory))
    return _lif_xla(x, ly.beta, ly.threshold, tf.constant(1.0), refr, ly.reset == "subtract",
                    ly.slope)


def _run_lif(ly: LIF, x: tf.Tensor, rows_of: dict[int, np.ndarray], faults: list,
             base: tuple[np.ndarray, np.ndarray] | None = None,
             shape: tuple[int, ...] | None = None) -> tf.Tensor:
    """The LIF layer on all rows; `faults` = [(round, Fault)] act on their round's rows only.

    `base` (beta, threshold) per row and neuron, with `shape`, lets the sparse path run a
    compacted problem (one column per faulty (row, neuron) pair).
    """
    nrows, steps = int(x.shape[0]), int(x.shape[1])
    if shape is None:
        shape = tuple(int(d) for d in ly.beta.shape)
    nf = int(np.prod(shape))
    if base is None:
        beta = ly.beta.numpy().reshape(nf)
        thr = ly.threshold.numpy().reshape(nf)
    else:
        beta, thr = base
    refr0 = float(ly.refractory)
    params: dict[str, np.ndarray] = {}
    mem_ops: dict[int, list] = {}
    spike_set: list[tuple[np.ndarray, np.ndarray]] = []
    spike_flip: list[np.ndarray] = []
    for rnd, fault in faults:
        rows = rows_of.get(rnd)
        if rows is None or rows.size == 0:
            continue
        sites = np.array([np.ravel_multi_index(s, shape) for s in fault.sites], dtype=np.int64)
        name = fault.model.name
        p = fault.model.params
        eff = p.get("as", name)
        if name in PARAMETRIC:
            if fault.window is not None:
                raise UserError(f"parametric fault {name!r} acts on all steps; drop its window")
            key = {"threshold": "thr", "leak": "beta", "gain": "gain", "refractory": "refr"}[name]
            if key not in params:
                start = {"thr": thr, "beta": beta, "gain": np.ones(nf),
                         "refr": np.full(nf, refr0)}[key]
                params[key] = np.array(np.broadcast_to(start, (nrows, nf)), np.float32)
            arr = params[key]
            ix = np.ix_(rows, sites)
            if key == "beta":
                arr[ix] = np.clip(arr[ix] * p["factor"], 0.0, 1.0)
            elif key == "refr":
                arr[ix] = np.round(np.maximum(arr[ix], 1.0) * p["factor"])
            else:
                arr[ix] = arr[ix] * p["factor"]
            continue
        if name == "membrane_stuck":
            for t in _steps(fault, steps):
                mem_ops.setdefault(int(t), []).append(("set", rows, sites, float(p["value"])))
            continue
        if name == "membrane_bitflip":
            mem_ops.setdefault(int(p["step"]), []).append(("flip", rows, sites, p))
            continue
        if name == "spike_flip":
            spike_flip.append(_flat(rows, np.array([p["step"]]), sites, steps, nf))
            continue
        t_idx = _steps(fault, steps)
        flat = _flat(rows, t_idx, sites, steps, nf)  # (rows, t, sites) raveled
        if eff == "dead_neuron":
            vals = np.zeros(flat.shape, np.float32)
        elif eff == "saturated_neuron":
            vals = np.ones(flat.shape, np.float32)
        elif eff == "stuck_neuron":
            if "prob" in p:  # one pattern per fault, the same for every input
                keys = p.get("_sites", sites)  # the same draw per site, dense or sparse
                pattern = np.stack([np.random.default_rng([int(p["draw_seed"]), int(k)])
                                    .random(steps) < p["prob"] for k in keys], 1)[t_idx]
            else:
                pattern = np.full((len(t_idx), len(sites)), bool(p["value"]))
            vals = np.broadcast_to(pattern[None], (len(rows),) + pattern.shape)
            vals = vals.reshape(-1).astype(np.float32)
        else:
            raise ValueError(f"not a neuron model: {name}")
        spike_set.append((flat, vals))

    args = {}
    for key, name in (("beta", "beta"), ("thr", "threshold"), ("gain", "gain"),
                      ("refr", "refractory")):
        if key in params:
            args[name] = tf.constant(params[key].reshape((nrows,) + shape))
    b = args.get("beta", ly.beta if base is None else tf.constant(beta.reshape(-1, *shape)))
    th = args.get("threshold",
                  ly.threshold if base is None else tf.constant(thr.reshape(-1, *shape)))
    if mem_ops:
        hook = _membrane_hook(mem_ops, nrows, nf, shape)
        spk = lif_dynamics(x, b, th, ly.reset,
                           refractory=args.get("refractory", refr0 if refr0 > 0 else None),
                           gain=args.get("gain"), mem_hook=hook, slope=ly.slope)
    else:
        spk = _lif_xla(x, b, th, args.get("gain", tf.constant(1.0)),
                       args.get("refractory", tf.constant(refr0)), ly.reset == "subtract",
                       ly.slope)
    if spike_set or spike_flip:
        flat_spk = tf.reshape(spk, [-1])
        if spike_set:
            idx = np.concatenate([f for f, _ in spike_set])
            val = np.concatenate([v for _, v in spike_set])
            flat_spk = tf.tensor_scatter_nd_update(flat_spk, idx[:, None], val)
        if spike_flip:
            idx = np.concatenate(spike_flip)[:, None]
            flat_spk = tf.tensor_scatter_nd_update(flat_spk, idx,
                                                   1.0 - tf.gather_nd(flat_spk, idx))
        spk = tf.reshape(flat_spk, tf.shape(spk))
    return spk


def _flat(rows: np.ndarray, t_idx: np.ndarray, sites: np.ndarray, steps: int, nf: int) -> np.ndarray:
    return ((rows[:, None, None] * steps + t_idx[None, :, None]) * nf
            + sites[None, None, :]).reshape(-1)


def _membrane_hook(mem_ops: dict, nrows: int, nf: int, shape: tuple):
    """Build mem_hook(t, mem) applying stuck values and bit flips at their steps."""
    plans = {}
    for t, ops in mem_ops.items():
        set_idx, set_val, f32_idx, f32_mask, q_idx, q_bit, q_scale, q_zp = ([] for _ in range(8))
        for kind, rows, sites, p in ops:
            flat = (rows[:, None] * nf + sites[None, :]).reshape(-1)
            if kind == "set":
                set_idx.append(flat)
                set_val.append(np.full(flat.shape, p, np.float32))
            elif p["format"] == "float32":
                f32_idx.append(flat)
                mask = np.array(1 << int(p["bit"]), dtype=np.uint32).view(np.int32)
                f32_mask.append(np.full(flat.shape, mask, np.int32))
            else:
                q_idx.append(flat)
                q_bit.append(np.full(flat.shape, 1 << int(p["bit"]), np.int32))
                q_scale.append(np.full(flat.shape, p["scale"], np.float32))
                q_zp.append(np.full(flat.shape, p["zero_point"], np.int32))
        cat = (lambda a, dt: np.concatenate(a).astype(dt) if a else None)  # noqa: E731
        plans[t] = (cat(set_idx, np.int64), cat(set_val, np.float32),
                    cat(f32_idx, np.int64), cat(f32_mask, np.int32),
                    cat(q_idx, np.int64), cat(q_bit, np.int32), cat(q_scale, np.float32),
                    cat(q_zp, np.int32))

    def hook(t: int, mem: tf.Tensor) -> tf.Tensor:
        plan = plans.get(t)
        if plan is None:
            return mem
        s_idx, s_val, f_idx, f_mask, q_idx, q_bit, q_scale, q_zp = plan
        flat = tf.reshape(mem, [-1])
        if f_idx is not None:
            old = tf.gather(flat, f_idx)
            new = tf.bitcast(tf.bitwise.bitwise_xor(tf.bitcast(old, tf.int32), f_mask), tf.float32)
            flat = tf.tensor_scatter_nd_update(flat, f_idx[:, None], new)
        if q_idx is not None:
            old = tf.gather(flat, q_idx)
            q = tf.clip_by_value(tf.cast(tf.round(old / q_scale), tf.int32) + q_zp, -128, 127)
            u = tf.bitwise.bitwise_xor(tf.bitwise.bitwise_and(q, 0xFF), q_bit)
            q2 = tf.where(u >= 128, u - 256, u)
            new = old + tf.cast(q2 - q, tf.float32) * q_scale
            flat = tf.tensor_scatter_nd_update(flat, q_idx[:, None], new)
        if s_idx is not None:
            flat = tf.tensor_scatter_nd_update(flat, s_idx[:, None], s_val)
        return tf.reshape(flat, tf.shape(mem))

    return hook


def _run_synapse(net: _Net, ly, x: tf.Tensor, rows_of: dict[int, np.ndarray],
                 faults: list, base: tf.Tensor | None = None) -> tf.Tensor:
    """The synapse layer on all rows, plus each fault's weight change on its own rows only.

    out = W x + (w' - w) * x[input of that weight], added at the weight's output position; the
    layer's activation must be linear for this to be exact.
    """
    out = ly(x, training=False) if base is None else base
    core = net.synapse_core(ly)
    if core.activation not in (keras.activations.linear, None):
        raise UserError(f"synapse faults need a linear activation in {ly.name!r}")
    kernel = core.kernel.numpy()
    steps = int(x.shape[1])
    rows_l, pos_l, delta_l, tmask_l = [], [], [], []
    for rnd, fault in faults:
        rows = rows_of.get(rnd)
        if rows is None or rows.size == 0:
            continue
        tmask = np.zeros(steps, bool)
        tmask[_steps(fault, steps)] = True
        for site in fault.sites:
            w = float(kernel[site])
            delta = synapse_value(fault.model, w, kernel) - w
            rows_l.append(rows)
            pos_l.append(np.tile(np.array(site)[None], (len(rows), 1)))
            delta_l.append(np.full(len(rows), delta, np.float32))
            tmask_l.append(np.tile(tmask[None], (len(rows), 1)))
    if not rows_l:
        return out
    rows = np.concatenate(rows_l).astype(np.int64)
    pos = np.concatenate(pos_l).astype(np.int64)
    delta = tf.constant(np.concatenate(delta_l))
    tmask = tf.constant(np.concatenate(tmask_l))
    if isinstance(core, keras.layers.Dense):
        xt = tf.transpose(x, [0, 2, 1])  # (B, in, T)
        g = tf.gather_nd(xt, np.stack([rows, pos[:, 0]], 1))  # (M, T)
        upd = tf.where(tmask, g * delta[:, None], 0.0)
        ot = tf.transpose(out, [0, 2, 1])
        ot = tf.tensor_scatter_nd_add(ot, np.stack([rows, pos[:, 1]], 1), upd)
        return tf.transpose(ot, [0, 2, 1])
    # Conv2D over (B, T, H, W, Cin)
    if (core.data_format != "channels_last" or tuple(core.dilation_rate) != (1, 1)
            or getattr(core, "groups", 1) != 1):
        raise UserError(f"synapse faults support channels_last, undilated, ungrouped Conv2D "
                        f"({ly.name!r})")
    kh, kw = kernel.shape[:2]
    sh, sw = core.strides
    h, w_in = int(x.shape[2]), int(x.shape[3])
    ho, wo = int(out.shape[2]), int(out.shape[3])
    if core.padding == "same":
        ph = max((ho - 1) * sh + kh - h, 0)
        pw = max((wo - 1) * sw + kw - w_in, 0)
        pads = [[0, 0], [0, 0], [ph // 2, ph - ph // 2], [pw // 2, pw - pw // 2], [0, 0]]
        x = tf.pad(x, pads)
    xt = tf.transpose(x, [0, 4, 2, 3, 1])  # (B, Cin, Hp, Wp, T)
    yy = pos[:, 0][:, None, None] + sh * np.arange(ho)[None, :, None]
    xx = pos[:, 1][:, None, None] + sw * np.arange(wo)[None, None, :]
    m = len(rows)
    idx = np.stack([np.broadcast_to(rows[:, None, None], (m, ho, wo)),
                    np.broadcast_to(pos[:, 2][:, None, None], (m, ho, wo)),
                    np.broadcast_to(yy, (m, ho, wo)), np.broadcast_to(xx, (m, ho, wo))], -1)
    g = tf.gather_nd(xt, idx)  # (M, Ho, Wo, T)
    upd = tf.where(tmask[:, None, None, :], g * delta[:, None, None, None], 0.0)
    ot = tf.transpose(out, [0, 4, 2, 3, 1])  # (B, Cout, Ho, Wo, T)
    ot = tf.tensor_scatter_nd_add(ot, np.stack([rows, pos[:, 3]], 1), upd)
    return tf.transpose(ot, [0, 4, 2, 3, 1])


def _sparse_lif(ly: LIF, cur_t: tf.Tensor, gold_out: tf.Tensor, samples: np.ndarray,
                rows_of: dict[int, np.ndarray], faults: list) -> tf.Tensor | None:
    """First faulty layer is a LIF with golden input: recompute only the faulty (row, neuron)
    pairs and patch them into the golden output. None when a neuron has two faults in a round
    (the dense path handles that)."""
    shape = tuple(int(d) for d in ly.beta.shape)
    nf = int(np.prod(shape))
    seen: set = set()
    pos_l, site_l, vfaults, vrows = [], [], [], {}
    count = 0
    for rnd, fault in faults:
        pos = rows_of.get(rnd)
        if pos is None or pos.size == 0:
            continue
        for site in fault.sites:
            k = int(np.ravel_multi_index(site, shape))
            if (rnd, k) in seen:
                return None
            seen.add((rnd, k))
            params = dict(fault.model.params)
            params["_sites"] = [k]
            vid = len(vfaults)
            vfaults.append((vid, Fault(FaultModel(fault.model.name, params), fault.layer, [(0,)],
                                       1, fault.window)))
            vrows[vid] = np.arange(count, count + pos.size)
            count += pos.size
            pos_l.append(pos)
            site_l.append(np.full(pos.size, k, np.int64))
    h = tf.gather(gold_out, samples)
    if not pos_l:
        return h
    pos = np.concatenate(pos_l)
    site = np.concatenate(site_l)
    cur = tf.gather_nd(cur_t, np.stack([samples[pos], site], 1))[:, :, None]  # (P, T, 1)
    beta = ly.beta.numpy().reshape(nf)[site][:, None]
    thr = ly.threshold.numpy().reshape(nf)[site][:, None]
    spk = _run_lif(ly, cur, vrows, vfaults, base=(beta, thr), shape=(1,))
    steps = int(h.shape[1])
    ht = tf.transpose(tf.reshape(h, [-1, steps, nf]), [0, 2, 1])
    ht = tf.tensor_scatter_nd_update(ht, np.stack([pos, site], 1), spk[:, :, 0])
    return tf.reshape(tf.transpose(ht, [0, 2, 1]), tf.shape(h))


def _apply(net: _Net, i: int, x: tf.Tensor, rows_of: dict, faults: list) -> tf.Tensor:
    ly = net.layers[i]
    if isinstance(ly, LIF):
        if not faults:
            return _lif_plain(ly, x)
        return _run_lif(ly, x, rows_of, faults)
    if faults:
        return _run_synapse(net, ly, x, rows_of, faults)
    return ly(x, training=False)


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

    def golden(self, x: np.ndarray) -> list[tf.Tensor]:
        """Outputs of every layer (whole time axis) of the fault-free network."""
        outs = []
        h = tf.convert_to_tensor(x, tf.float32)
        for i in range(len(self.net.layers)):
            h = _apply(self.net, i, h, {}, [])
            outs.append(h)
        return outs

    def run(self, data, progress: str = "pbar", batch_size: int = 128, max_rows: int = 4096,
            late_start: bool = True, early_stop: bool = True,
            rounds_per_pass: int | None = None) -> metrics.Results:
        """Run every round over `data` = (x, y) (x shaped (N, time, ...); y may be None).

        `max_rows` bounds the enlarged batch (rounds x samples per forward pass);
        `rounds_per_pass=1` is the one-fault-per-pass baseline. Returns (and keeps) the results.
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
        nl = len(self.net.layers)
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
            gold = self.golden(xb)
            self._cache = {}
            gscore = gold[-1].numpy()
            if scores is None:
                golden_scores = np.zeros((n,) + gscore.shape[1:], np.float32)
                scores = np.zeros((n_rounds, n) + gscore.shape[1:], np.float32)
            golden_scores[b0:b0 + nb] = gscore
            per_pass = rounds_per_pass or max(1, max_rows // nb)
            for c0 in range(0, n_rounds, per_pass):
                chunk = order[c0:c0 + per_pass]
                first = min(spans[r][0] for r in chunk) if late_start else 0
                plan: dict[int, list] = {}
                for p, r in enumerate(chunk):
                    for f in self.rounds[r]:
                        plan.setdefault(self.net.index[f.layer], []).append((p, f))
                row_round = np.repeat(np.arange(len(chunk)), nb)
                row_sample = np.tile(np.arange(nb), len(chunk))
                round_last = np.array([spans[r][1] for r in chunk])
                out = np.empty((len(chunk) * nb,) + gscore.shape[1:], np.float32)
                alive = np.arange(len(row_round))
                h = None
                for i in range(first, nl):
                    faults_i = plan.get(i, [])
                    if h is None and late_start:
                        h = self._sparse_first(i, xb, gold, faults_i, alive, row_round,
                                               row_sample)
                    else:
                        if h is None:
                            h = tf.tile(tf.convert_to_tensor(xb, tf.float32),
                                        [len(chunk)] + [1] * (len(xb.shape) - 1))
                        rows_of = _rows_by_round(row_round[alive]) if faults_i else {}
                        h = _apply(self.net, i, h, rows_of, faults_i)
                    if early_stop and i < nl - 1:
                        cand = np.flatnonzero(round_last[row_round[alive]] <= i)
                        if cand.size:
                            g = tf.gather(gold[i], row_sample[alive[cand]])
                            hc = tf.gather(h, cand)
                            diff = tf.reshape(tf.not_equal(hc, g), [cand.size, -1])
                            same = cand[~tf.reduce_any(diff, axis=1).numpy()]
                            if same.size:
                                done = alive[same]
                                out[done] = gscore[row_sample[done]]
                                keep = np.setdiff1d(np.arange(alive.size), same)
                                alive = alive[keep]
                                h = tf.gather(h, keep)
                        if alive.size == 0:
                            break
                if alive.size:
                    out[alive] = h.numpy() if h is not None else gscore[row_sample[alive]]
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

    def _sparse_first(self, i: int, xb: np.ndarray, gold: list, faults: list,
                      alive: np.ndarray, row_round: np.ndarray, row_sample: np.ndarray
                      ) -> tf.Tensor:
        """Layer i on golden input: golden output, patched only where the faults act."""
        ly = self.net.layers[i]
        samples = row_sample[alive]
        rows_of = _rows_by_round(row_round[alive]) if faults else {}
        x_in = tf.convert_to_tensor(xb, tf.float32) if i == 0 else gold[i - 1]
        if faults and isinstance(ly, LIF):
            key = ("cur_t", i)
            if key not in self._cache:
                steps = int(x_in.shape[1])
                self._cache[key] = tf.transpose(tf.reshape(x_in, [x_in.shape[0], steps, -1]),
                                                [0, 2, 1])
            h = _sparse_lif(ly, self._cache[key], gold[i], samples, rows_of, faults)
            if h is not None:
                return h
        if faults:
            if self.net.synapse_core(ly) is not None:
                return _run_synapse(self.net, ly, tf.gather(x_in, samples), rows_of, faults,
                                    base=tf.gather(gold[i], samples))
            return _apply(self.net, i, tf.gather(x_in, samples), rows_of, faults)
        return tf.gather(gold[i], samples)

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
