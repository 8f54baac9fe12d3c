"""A LIF layer with neuron faults acting on chosen units (one neuron of one row each).

One of the engine's exact building blocks: `lif_numpy` on a (time, units) problem, the faults'
parameter changes, membrane rewrites and spike overrides applied in fault order."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from classes_tool.errors import UserError
from classes_tool.snn.batch_rows import active_steps, site_index
from classes_tool.snn.faults import PARAMETRIC
from classes_tool.snn.layers import LIF, lif_numpy


def membrane_op(kind: str, units: np.ndarray, p) -> Callable[[np.ndarray], None]:
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


def run_lif_units(lif: LIF, current: np.ndarray, neuron: np.ndarray, fault_units: list
                  ) -> np.ndarray:
    """LIF spikes (time, M) for M units, unit m being neuron `neuron[m]` of some row.

    `fault_units` = [(fault, site index, units)]: each fault acts on its units, in list order.
    """
    steps = current.shape[0]
    beta = lif.beta.numpy().reshape(-1)
    if lif.learn_beta:  # as LIF.call does for a trained beta
        beta = np.clip(beta, 0.0, 1.0)
    beta = beta[neuron]
    thr = lif.threshold.numpy().reshape(-1)[neuron]
    refr0 = float(lif.refractory)
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
            for t in active_steps(fault, steps):
                mem_ops.setdefault(int(t), []).append(membrane_op("set", units, p["value"]))
        elif name == "membrane_bitflip":
            mem_ops.setdefault(int(p["step"]), []).append(membrane_op("flip", units, p))
        elif name == "spike_flip":
            spike_ops.append(("flip", units, int(p["step"]), None))
        else:
            t_idx = active_steps(fault, steps)
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
    spk = lif_numpy(current, beta, thr, lif.reset, refractory=refr, gain=gain, mem_ops=mem_ops)
    for kind, units, t_idx, vals in spike_ops:  # on the axon; the membrane kept evolving
        if kind == "set":
            spk[np.ix_(t_idx, units)] = vals[:, None]
        else:
            spk[t_idx, units] = 1.0 - spk[t_idx, units]
    return spk


def run_lif_rows(lif: LIF, x: np.ndarray, rows_of: dict[int, np.ndarray], faults: list
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
            k = site_index(site, shape)
            fault_units.append((fault, k, rows * nf + k))
    spk = run_lif_units(lif, current, neuron, fault_units)
    return np.ascontiguousarray(spk.reshape(steps, nrows, nf).transpose(1, 0, 2)
                                ).reshape(x.shape)
