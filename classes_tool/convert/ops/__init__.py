"""Per-op converters: `CONVERTERS[op_type](converter, node, attrs)` adds Keras layers for one node.

Each family lives in its own module; importing this package fills the table.
"""

from __future__ import annotations

from collections.abc import Callable

CONVERTERS: dict[str, Callable] = {}
#: Converters for a node whose first input is a `BatchMoved` view (see converter.py).
BATCH_MOVED_CONVERTERS: dict[str, Callable] = {}


def register(*op_types: str) -> Callable:
    """Decorator: register one function as the converter of the given ONNX op types."""

    def wrap(fn: Callable) -> Callable:
        for op_type in op_types:
            CONVERTERS[op_type] = fn
        return fn

    return wrap


def register_batch_moved(*op_types: str) -> Callable:
    """Decorator: the converter of these ops when their first input is a `BatchMoved` view."""

    def wrap(fn: Callable) -> Callable:
        for op_type in op_types:
            BATCH_MOVED_CONVERTERS[op_type] = fn
        return fn

    return wrap


from . import activation, conv, elementwise, pool, shape  # noqa: E402,F401  (fill the table)
