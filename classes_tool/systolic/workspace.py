"""Value-free buffers that a permanent-fault plan keeps between its calls, and the plan's pool."""

from __future__ import annotations

import numpy as np

from classes_tool.systolic import tuning


class Workspace:
    """Value-free buffers of one plan's float sums, kept for the plan's next call.

    Partial sums with their c faults' prepared in-place actions (`PartialSums`), step products,
    the BLAS coefficient matrices (zero but for a diagonal that every call overwrites) and
    the transposed operand with its per-step views. Nothing in it reaches a caller: results
    are copied into the caller's fresh array. Each call takes a workspace out of the plan's
    pool and puts it back when done (`take_workspace`, `give_back_workspace`), so concurrent
    calls never share one; only workspaces up to WORKSPACE_MAX bytes are kept.
    """

    def __init__(self) -> None:
        self.items: dict = {}
        self.nbytes = 0

    def get(self, key, build):
        """The item stored under `key`; `build()` makes it as (item, bytes it owns)."""
        item = self.items.get(key)
        if item is None:
            item, nbytes = build()
            self.items[key] = item
            self.nbytes += nbytes
        return item

    def buffer(self, key, shape, dtype) -> np.ndarray:
        """An uninitialised array kept under `key` (which must tell its shape and dtype)."""
        buf = self.items.get(key)
        if buf is None:
            buf = self.items[key] = np.empty(shape, dtype=dtype)
            self.nbytes += buf.nbytes
        return buf



def take_workspace(pool: list) -> Workspace:
    """A workspace from the plan's pool, or a new empty one."""
    try:
        return pool.pop()
    except IndexError:
        return Workspace()


def give_back_workspace(pool: list, workspace: Workspace) -> None:
    """Return a workspace to the plan's pool (kept only while small and the pool is short)."""
    if workspace.nbytes <= tuning.WORKSPACE_MAX and len(pool) < 2:
        pool.append(workspace)
