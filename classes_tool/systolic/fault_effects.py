"""Where a register fault acts in a tile: the local iterations whose value it corrupts (with the
local time of each hit), and the order of faults along a moving line's chain."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic.dataflow import LINE_DIRECTIONS, chain_sign
from classes_tool.systolic.faults import Fault
from classes_tool.systolic.geometry import ArrayGeometry


def corrupted_iterations(geometry: ArrayGeometry, fault: Fault) -> tuple[np.ndarray, np.ndarray]:
    """Local iterations whose value of `fault.line` is corrupted, and the local time of the hit.

    The iterations at the fault's PE read the faulty register; on a moving a/b line the
    corrupted operand also reaches every later iteration of the chain (downstream PEs). The hit
    time decides, with the tile number, whether a windowed fault was active.
    """
    hits = geometry.iterations_at(int(fault.x), int(fault.y))
    times = hits @ geometry.T[2]
    if fault.line == "c" or geometry.is_stationary(fault.line):
        return hits, times
    d = np.array(LINE_DIRECTIONS[fault.line], dtype=np.int64)
    axis = int(np.argmax(d))
    ext = (geometry.n1, geometry.n2, geometry.n3)[axis]
    sign = chain_sign(geometry.T, fault.line)
    its, ts = [], []
    for step in range(ext):
        moved = hits + sign * step * d
        keep = (moved[:, axis] >= 0) & (moved[:, axis] < ext)
        its.append(moved[keep])
        ts.append(times[keep])
    return np.concatenate(its), np.concatenate(ts)


def chain_position(geometry: ArrayGeometry, fault: Fault) -> int:
    """Position of the fault's PE along its line's chain (upstream first)."""
    dx, dy = geometry.flow(fault.line)
    return chain_sign(geometry.T, fault.line) * (int(fault.x) * dx + int(fault.y) * dy)


def in_chain_order(geometry: ArrayGeometry, faults, line: str) -> list[Fault]:
    """The faults on `line`, upstream first (same PE: in the order given)."""
    return sorted((f for f in faults if f.line == line),
                  key=lambda f: chain_position(geometry, f))
