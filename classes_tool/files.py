"""Atomic file output: write to a temporary file in the same folder, then `os.replace`.

A crash or kill never leaves a half-written file under the final name, and the input is never
touched because we only ever open the destination's temporary sibling for writing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from classes_tool.errors import UserError


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; on success rename it over `destination`.

    The temporary name keeps the destination's suffix (Keras picks the format from it).
    On failure the temporary file is removed and nothing appears under `destination`.
    """
    destination = Path(destination)
    if destination.is_dir():  # else the rename fails naming the temporary file, not this one
        raise UserError(f"{destination} is a folder: give a file name to write")
    destination.parent.mkdir(parents=True, exist_ok=True)
    suffix = destination.suffix if suffix is None else suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{destination.stem}.", suffix=".tmp" + suffix,
                               dir=destination.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as h5py/keras want to create the file themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, destination)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text_atomic(destination: str | os.PathLike, text: str) -> None:
    """Write `text` to `destination` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_text(text)


def write_bytes_atomic(destination: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `destination` atomically."""
    with atomic_path(destination) as tmp:
        tmp.write_bytes(data)
