"""Whole rows of an enlarged batch through the layers, each fault acting on its round's rows.

`apply_layer` is the layer step that every engine path shares. `propagate_whole_rows` is the
engine unless both late start and early stop are on (then `sparse_propagation`): every row is
carried whole from the first layer, and with early stop rows equal to golden after their
round's last faulty layer leave."""

from __future__ import annotations

import numpy as np

from classes_tool.snn.batch_rows import rows_by_round
from classes_tool.snn.faulty_lif import run_lif_rows
from classes_tool.snn.faulty_synapses import run_synapse_rows
from classes_tool.snn.golden_batch import GoldenBatch
from classes_tool.snn.layers import LIF
from classes_tool.snn.network import SpikingNetwork


def apply_layer(net: SpikingNetwork, i: int, x: np.ndarray, rows_of: dict, faults: list
                ) -> np.ndarray:
    """Layer i on whole rows x (rows, time, ...), faults acting on their round's rows."""
    net_layer = net.layers[i]
    if isinstance(net_layer, LIF):
        return run_lif_rows(net_layer, x, rows_of, faults)
    if faults:
        return run_synapse_rows(net, net_layer, x, rows_of, faults)
    return np.array(net_layer(x, training=False))


def propagate_whole_rows(net: SpikingNetwork, bt: GoldenBatch, plan: dict, first: int,
                         n_chunk: int, spans: list, chunk: list, early_stop: bool
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Whole rows through every layer from `first` (golden input there); with early stop,
    rows equal to golden after their round's last faulty layer leave. Returns the rows
    that reach the output and their outputs."""
    batch_len = bt.n
    nl = len(net.layers)
    row_round = np.repeat(np.arange(n_chunk), batch_len)
    row_sample = np.tile(np.arange(batch_len), n_chunk)
    round_last = np.array([spans[r][1] for r in chunk])
    alive = np.arange(len(row_round))
    start = bt.out(first - 1)
    h = np.tile(start, (n_chunk,) + (1,) * (start.ndim - 1))
    for i in range(first, nl):
        faults_i = plan.get(i, [])
        rows_of = rows_by_round(row_round[alive]) if faults_i else {}
        h = apply_layer(net, i, h, rows_of, faults_i)
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
