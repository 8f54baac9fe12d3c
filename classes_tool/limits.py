"""Sizes a file declares, checked against the machine before anything is allocated.

An `.npz` header, an `.h5` dataset or an ONNX tensor can declare 10**12 floats in a file of a
few hundred bytes; allocating first fails late (or swaps for minutes). Every reader that learns
a size from a file calls `check_size` before it allocates.
"""

from __future__ import annotations

import os

from classes_tool.errors import UserError


def available_memory() -> int:
    """Bytes of memory this process may still use (MemAvailable on Linux; else physical)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 1 << 62  # unknown: do not refuse


def _bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} PiB"


def check_size(what: str, nbytes: int | float, available: int | None = None) -> None:
    """Refuse `what` (e.g. "data.npz array 'x' of shape (10**12,) float32") when its `nbytes`
    exceed the memory available."""
    available = available_memory() if available is None else available
    if nbytes > available:
        raise UserError(f"{what} declares {_bytes(nbytes)}, more than the {_bytes(available)} of "
                        "memory available: the file is damaged or too large for this machine")


def element_count(shape) -> int:
    """The number of elements of `shape` (Python integers: no overflow); a negative dimension
    is a ValueError."""
    count = 1
    for d in shape:
        d = int(d)
        if d < 0:
            raise ValueError(f"negative dimension {d} in shape {tuple(shape)}")
        count *= d
    return count


def check_keras_h5(path) -> None:
    """A Keras `.h5` file's declared weight sizes (against the memory available) and its input
    shapes (no negative dimension), read from the file before Keras allocates anything."""
    import json
    from pathlib import Path

    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError:
        return  # not an HDF5 file: the model reader says what it is
    with handle:
        sizes: list[tuple[int, str]] = []

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                sizes.append((int(obj.size or 0) * obj.dtype.itemsize, f"{name} {obj.shape}"))

        handle.visititems(visit)
        if sizes:
            largest = max(sizes)
            check_size(f"{path} (its weights; the largest: {largest[1]})",
                       sum(s for s, _ in sizes))
        config = handle.attrs.get("model_config")
    if config is None:
        return
    if isinstance(config, bytes):
        config = config.decode("utf-8", "replace")
    try:
        config = json.loads(config)
    except ValueError:
        return  # the model reader names a config that is not JSON
    stack = [config]
    while stack:  # no recursion: a config nested 100,000 deep is the reader's to refuse
        item = stack.pop()
        if isinstance(item, dict):
            for key in ("batch_shape", "batch_input_shape"):
                shape = item.get(key)
                if isinstance(shape, list) and any(
                        isinstance(d, int) and not isinstance(d, bool) and d < 0 for d in shape):
                    raise UserError(f"{path}: input shape {shape} has a negative dimension")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
