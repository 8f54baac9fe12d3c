"""Synapse faults as float32 weight changes added to a Dense/Conv2D layer's output, per round's
rows and in fault order (exact for a linear activation)."""

from __future__ import annotations

import keras
import numpy as np

from classes_tool.errors import UserError
from classes_tool.snn.batch_rows import active_steps
from classes_tool.snn.faults import synapse_value
from classes_tool.snn.network import SpikingNetwork


class SynapseSite:
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


def synapse_weight_changes(net: SpikingNetwork, synapse_layer, faults: list, in_shape, out_shape,
                           steps: int):
    """Per (round, Fault) and site: (round, geometry, float32 weight change per step, step mask).

    Faults of one round on the same weight act in injection order: each one's faulty value is
    computed from the weight as the faults before it (active at that step) left it, and its
    change is the difference to that weight, so stuck 2.0 then stuck 3.0 ends at 3.0."""
    core = net.synapse_core(synapse_layer)
    if core.activation not in (keras.activations.linear, None):
        raise UserError(f"synapse faults need a linear activation in {synapse_layer.name!r}")
    kernel = core.kernel.numpy()
    out = []
    current: dict[tuple, np.ndarray] = {}  # (round, site) -> weight per step so far (float64)
    for rnd, fault in faults:
        tmask = np.zeros(steps, bool)
        tmask[active_steps(fault, steps)] = True
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
            out.append((rnd, SynapseSite(core, in_shape, out_shape, site), delta, tmask))
    return out


def synapse_updates(g: np.ndarray, geo: SynapseSite, delta: np.ndarray, tmask: np.ndarray):
    """Nonzero updates g * delta (g: inputs (rows, time, Q); delta: the weight change per
    step) as (row, step, out feature, value).

    A zero update changes nothing, so it is left out on every path alike."""
    u = g * delta[None, :, None]
    u[:, ~tmask] = 0.0
    r, t, q = np.nonzero(u)
    return r, t, geo.out_idx[q], u[r, t, q]


def run_synapse_rows(net: SpikingNetwork, synapse_layer, x: np.ndarray, rows_of: dict[int, np.ndarray],
                     faults: list) -> np.ndarray:
    """The synapse layer on all rows, plus each fault's weight change on its own rows only.

    out = W x + (w' - w) * x[input of that weight], added at the weight's output position in
    fault order; the layer's activation must be linear for this to be exact.
    """
    out = np.array(synapse_layer(x, training=False))
    nrows, steps = x.shape[:2]
    xf = np.asarray(x, np.float32).reshape(nrows, steps, -1)
    of = out.reshape(-1)
    width = int(np.prod(out.shape[2:]))
    for rnd, geo, delta, tmask in synapse_weight_changes(net, synapse_layer, faults, x.shape[2:],
                                                         out.shape[2:], steps):
        rows = rows_of.get(rnd)
        if rows is None or rows.size == 0:
            continue
        r, t, o, u = synapse_updates(xf[rows][:, :, geo.in_idx], geo, delta, tmask)
        np.add.at(of, (rows[r] * steps + t) * width + o, u)
    return out
