"""Rows of an enlarged batch: row = round * N + sample, so each round of faults owns its rows.

Helpers shared by the engine's layer building blocks: the rows of each round, the steps a
fault is active, and the flat index of a fault site."""

from __future__ import annotations

import numpy as np

from classes_tool.snn.faults import Fault


def rows_by_round(row_round: np.ndarray) -> dict[int, np.ndarray]:
    """The rows of each round, given the round of every row."""
    order = np.argsort(row_round, kind="stable")
    keys, starts = np.unique(row_round[order], return_index=True)
    bounds = list(starts[1:]) + [len(order)]
    return {int(k): order[s:e] for k, s, e in zip(keys, starts, bounds, strict=True)}


def active_steps(fault: Fault, steps: int) -> np.ndarray:
    """The time steps at which `fault` acts (its window, or every step)."""
    if fault.window is None:
        return np.arange(steps)
    return np.arange(fault.window[0], fault.window[1])


def site_index(site, shape: tuple[int, ...]) -> int:
    """The flat index of a neuron or weight site in a layer of the given shape."""
    return int(np.ravel_multi_index(tuple(site), shape))
