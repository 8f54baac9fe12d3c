"""Sparse propagation: a chunk's rows as differences from the golden run.

After each layer only the (row, step) slices whose output differs from the golden one are
kept (keys row * steps + t, sorted, with their values); every other slice is golden by
construction. Step-wise layers run on the kept slices only, a LIF layer recomputes only the
(row, neuron) units whose input current differs or that a fault touches, and a layer of any
other kind (the readout) runs on whole rows rebuilt from golden plus the kept slices.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from classes_tool.snn.batch_rows import rows_by_round, site_index
from classes_tool.snn.faulty_lif import run_lif_units
from classes_tool.snn.faulty_synapses import synapse_updates, synapse_weight_changes
from classes_tool.snn.golden_batch import GoldenBatch
from classes_tool.snn.layers import LIF
from classes_tool.snn.network import SpikingNetwork
from classes_tool.snn.step_batches import call_steps, padded_rows, stepwise_layer
from classes_tool.snn.whole_rows import apply_layer


def sorted_unique(a: np.ndarray) -> np.ndarray:
    a = np.sort(a)
    return a[np.concatenate(([True], a[1:] != a[:-1]))] if a.size else a


def any_per_run(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Rows of a boolean (K, F) mask OR-ed over runs starting at `starts`: (runs, F)."""
    if mask.shape[1] % 8 == 0 and mask.flags.c_contiguous:  # eight flags per word
        words = np.bitwise_or.reduceat(mask.view(np.uint64), starts, axis=0)
        return words.view(np.uint8).astype(bool)
    return np.logical_or.reduceat(mask, starts, axis=0)


def value_runs(sorted_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and where each run of equal values starts."""
    starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))
    return sorted_ids[starts], starts


@dataclasses.dataclass
class Difference:
    """Where one layer's output differs from the golden one, for the rows of a chunk.

    Whole slices (`keys` sorted, row * steps + t; `vals` (K, features) flattened), or single
    elements when a fault changes only a few of each slice (`keys` per element, unsorted, with
    `feat` and `vals` (E,)). Everything not listed is golden.
    """

    keys: np.ndarray
    vals: np.ndarray | None = None
    feat: np.ndarray | None = None
    padded: np.ndarray | None = None  # slices: vals as the first rows of a `padded_rows` batch

    @property
    def empty(self) -> bool:
        return self.keys.size == 0

    def slices(self, bt: GoldenBatch, j: int) -> Difference:
        """The same difference as whole slices of layer j's output."""
        if self.feat is None:
            return self
        order = np.argsort(self.keys, kind="stable")
        keys, starts = value_runs(self.keys[order])
        run = np.empty(self.keys.size, np.int64)
        run[order] = np.repeat(np.arange(keys.size), np.diff(np.append(starts, order.size)))
        vals, padded = padded_rows(keys.size, bt.flat(j).shape[2])
        bt.slices(j, keys, out=vals)
        vals[run, self.feat] = self.vals
        return Difference(keys, vals, padded=padded)


NO_DIFFERENCE = Difference(np.zeros(0, np.int64))


def lif_on_difference(lif: LIF, i: int, bt: GoldenBatch, diff: Difference, faults: list
                      ) -> Difference:
    """A LIF layer on a difference: recompute only units (row, neuron) whose input differs at
    some step or that a fault touches; return the slices whose spikes differ from golden."""
    steps, batch_len = bt.steps, bt.n
    shape = tuple(int(d) for d in lif.beta.shape)
    nf = int(np.prod(shape))
    keys = diff.keys
    parts = []
    if diff.feat is not None:
        in_codes = (keys // steps) * nf + diff.feat
        parts.append(in_codes)
    elif keys.size:
        vin = diff.vals
        in_rows, starts = value_runs(keys // steps)
        r, n = np.nonzero(any_per_run(vin != bt.slices(i - 1, keys), starts))
        parts.append(in_rows[r] * nf + n)
    fault_codes = []
    for rnd, fault in faults:
        rows = rnd * batch_len + np.arange(batch_len)
        for site in fault.sites:
            k = site_index(site, shape)
            fault_codes.append((fault, k, rows * nf + k))
    if fault_codes:
        parts.append(np.concatenate([c for _, _, c in fault_codes]))
    if not parts:
        return NO_DIFFERENCE
    if len(parts) == 1 and diff.feat is None and keys.size:
        codes = parts[0]  # already sorted and distinct
    else:
        codes = sorted_unique(np.concatenate(parts))
    if codes.size == 0:
        return NO_DIFFERENCE
    row = codes // nf
    neuron = codes % nf
    col = (row % batch_len) * nf + neuron
    if diff.feat is None and keys.size:  # units of rows whose input differs: rebuilt rows
        pos = np.minimum(np.searchsorted(in_rows, row), in_rows.size - 1)
        sel = in_rows[pos] == row
        rows_in = np.take(bt.time_major(i - 1).reshape(steps, batch_len, nf), in_rows % batch_len, axis=1)
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
    spk = run_lif_units(lif, current, neuron, units)
    ne = spk != np.take(bt.time_major(i), col, axis=1)
    changed = np.flatnonzero(ne.any(axis=0))
    if changed.size == 0:
        return NO_DIFFERENCE
    pp, tt = np.nonzero(ne[:, changed].T)
    pp = changed[pp]
    out_rows, first = value_runs(row[pp])
    at = np.repeat(np.arange(out_rows.size), np.diff(np.append(first, pp.size)))
    hit = np.zeros((out_rows.size, steps), bool)
    hit[at, tt] = True
    ro, to = np.nonzero(hit)
    index = np.zeros((out_rows.size, steps), np.int64)
    index[ro, to] = np.arange(ro.size)
    out_keys = out_rows[ro] * steps + to
    out, padded = padded_rows(out_keys.size, nf)
    bt.slices(i, out_keys, out=out)
    out[index[at, tt], neuron[pp]] = spk[tt, pp]
    return Difference(out_keys, out, padded=padded)


def stepwise_on_difference(net: SpikingNetwork, i: int, bt: GoldenBatch, diff: Difference,
                           faults: list) -> Difference:
    """A step-wise layer on a difference: run the differing slices, add synapse faults'
    updates on their rounds' rows, keep what differs from golden."""
    net_layer = net.layers[i]
    steps, batch_len = bt.steps, bt.n
    out_shape = bt.out(i).shape[2:]
    width = int(np.prod(out_shape))
    diff = diff.slices(bt, i - 1)
    keys = diff.keys
    in_shape = bt.out(i - 1).shape[2:]
    new = None
    if keys.size:
        new = call_steps(stepwise_layer(net_layer), diff.vals.reshape((keys.size,) + in_shape),
                         diff.padded)
    if faults:
        vin = None if diff.vals is None else diff.vals.reshape(keys.size, -1)
        gin = bt.flat(i - 1)
        upd = []
        for rnd, geo, delta, tmask in synapse_weight_changes(net, net_layer, faults, in_shape,
                                                             out_shape, steps):
            g = gin[:, :, geo.in_idx]
            lo, hi = np.searchsorted(keys, [rnd * batch_len * steps, (rnd + 1) * batch_len * steps])
            if hi > lo:  # this round's rows whose input differs from golden
                local = keys[lo:hi] - rnd * batch_len * steps
                g[local // steps, local % steps] = vin[lo:hi][:, geo.in_idx]
            r, t, o, u = synapse_updates(g, geo, delta, tmask)
            upd.append(((rnd * batch_len + r) * steps + t, o, u))
        if not keys.size:  # golden input: only the updated elements change
            return updated_elements(bt, i, upd, width)
        out_keys = sorted_unique(np.concatenate([k for k, _, _ in upd] + [keys]))
        out = bt.slices(i, out_keys)
        out[np.searchsorted(out_keys, keys)] = new.reshape(keys.size, width)
        flat = out.reshape(-1)
        for k, o, u in upd:
            np.add.at(flat, np.searchsorted(out_keys, k) * width + o, u)
        keys = out_keys
    elif keys.size == 0:
        return NO_DIFFERENCE
    else:
        out = new.reshape(keys.size, width)
    differs = np.any(out != bt.slices(i, keys), axis=1)
    kept, padded = padded_rows(int(differs.sum()), width)
    np.compress(differs, out, axis=0, out=kept)
    return Difference(keys[differs], kept, padded=padded)


def updated_elements(bt: GoldenBatch, i: int, upd: list, width: int) -> Difference:
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
    return Difference(keys[keep], vals[keep], feat[keep])


def rows_from_difference(bt: GoldenBatch, j: int, diff: Difference, extra: np.ndarray
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


def propagate_differences(net: SpikingNetwork, bt: GoldenBatch, plan: dict, first: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Rows as differences from golden (see `lif_on_difference`, `stepwise_on_difference`);
    layers of other kinds run on whole rows. Returns the rows whose output differs (or may differ)
    from golden and their outputs."""
    batch_len = bt.n
    nl = len(net.layers)
    if not plan:
        return np.zeros(0, np.int64), bt.gold[-1][:0]
    last = max(plan)
    diff = NO_DIFFERENCE
    rows = h = None  # whole rows, once a layer needed them
    for i in range(first, nl):
        net_layer = net.layers[i]
        faults_i = plan.get(i, [])
        if rows is None and isinstance(net_layer, LIF):
            diff = lif_on_difference(net_layer, i, bt, diff, faults_i)
        elif rows is None and stepwise_layer(net_layer) is not None:
            diff = stepwise_on_difference(net, i, bt, diff, faults_i)
        else:
            extra = np.unique(np.concatenate(
                [p * batch_len + np.arange(batch_len) for p, _ in faults_i] or [np.zeros(0, np.int64)]))
            if rows is None:
                rows, h = rows_from_difference(bt, i - 1, diff, extra)
            elif np.setdiff1d(extra, rows).size:
                new = np.union1d(rows, extra)
                h_new = bt.out(i - 1)[new % batch_len]
                h_new[np.searchsorted(new, rows)] = h
                rows, h = new, h_new
            if rows.size == 0:  # every row golden here: nothing to run
                h = bt.out(i)[:0]
            else:
                rows_of = rows_by_round(rows // batch_len) if faults_i else {}
                h = apply_layer(net, i, h, rows_of, faults_i)
                if i < nl - 1:
                    same = np.all((h == bt.out(i)[rows % batch_len]).reshape(rows.size, -1), 1)
                    rows, h = rows[~same], h[~same]
        if i >= last and (diff.empty if rows is None else rows.size == 0):
            return np.zeros(0, np.int64), bt.gold[-1][:0]
    if rows is None:
        rows, h = rows_from_difference(bt, nl - 1, diff, np.zeros(0, np.int64))
    return rows, h
