"""Checks of config values shared by the campaign targets (SNN, systolic, train/sweep): the
same rule gives the same message wherever a count, a seed or a set of keys is read."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from classes_tool.errors import UserError
from classes_tool.simulator.sites import MAX_SEED


def is_int(value: Any) -> bool:
    """A whole number as YAML or NumPy gives it (a bool is not one)."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def positive_int(what: str, value: Any) -> int:
    """Counts: `2.5`, `'lots'` or `-5` must not be truncated, parsed or used as a slice."""
    if not is_int(value) or value < 1:
        raise UserError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def check_seed(what: str, value: Any) -> int:
    """Seeds feed NumPy generators (non-negative only) and int64 weights: [0, MAX_SEED]."""
    if not is_int(value) or not 0 <= value <= MAX_SEED:
        raise UserError(f"{what} must be a non-negative integer below 2**63, got {value!r}")
    return int(value)


def reject_unknown_keys(block: dict, allowed: Iterable[str], where: str,
                        what: str = "key(s)") -> None:
    """A misspelt key is an error naming it and the valid ones, never silently ignored."""
    allowed = tuple(allowed)
    unknown = sorted(map(str, set(block) - set(allowed)))
    if unknown:
        raise UserError(f"unknown {what} {', '.join(unknown)} in {where}; "
                        f"valid: {', '.join(allowed)}")
