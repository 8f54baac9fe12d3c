"""Atomic file output: write to a temporary file in the same folder, then `os.replace`.

A crash or kill never leaves a half-written file under the final name, and the input is never
touched because we only ever open the destination's temporary sibling for writing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TypeVar

from classes_tool.errors import UserError

K = TypeVar("K")


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `destination`; on success rename it over `destination`.

    The temporary name keeps the destination's suffix (Keras picks the format from it).
    On failure the temporary file is removed and nothing appears under `destination`.
    """
    given = Path(destination)
    # a symbolic link is written through: the file it points to is replaced, the link stays
    destination = Path(os.path.realpath(given)) if given.is_symlink() else given
    if destination.is_dir():  # else the rename fails naming the temporary file, not this one
        raise UserError(f"{given} is a folder: give a file name to write")
    if destination.exists() and not destination.is_file():  # a device, a pipe, a socket
        raise UserError(f"{given} is not a regular file: give a file name to write")
    suffix = destination.suffix if suffix is None else suffix
    destination.parent.mkdir(parents=True, exist_ok=True)  # its errors name the culprit
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{destination.stem}.", suffix=".tmp" + suffix,
                                   dir=destination.parent)
    except OSError as exc:
        raise UserError(f"cannot write {given}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(tmp)  # writers such as h5py/keras want to create the file themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, destination)
    except OSError as exc:
        if exc.filename not in (str(tmp_path), tmp_path):
            raise
        raise UserError(f"cannot write {given}: {exc.strerror or exc}") from None
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


@contextlib.contextmanager
def staging_folder(out: str | os.PathLike) -> Iterator[Path]:
    """An empty temporary folder beside the output folder `out` (the same file system, so
    `publish` can rename from it), removed on exit: a run that writes several files makes them
    here, and a failure half-way leaves `out` as it was instead of a mix of old and new files."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as exc:
        raise UserError(f"cannot write to {out}: {exc.strerror or exc}") from None
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def publish(files: Mapping[K, Path], out: str | os.PathLike) -> dict[K, Path]:
    """Move finished files (from a `staging_folder`) into `out` under their names, each by one
    atomic rename; a destination that is a folder is refused before anything moves."""
    out = Path(out)
    for path in files.values():
        if (out / path.name).is_dir():
            raise UserError(f"{out / path.name} is a folder: a file cannot replace it")
    out.mkdir(parents=True, exist_ok=True)
    moved = {}
    for key, path in files.items():
        moved[key] = out / path.name
        os.replace(path, moved[key])
    return moved


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file: the same string, a relative and an absolute spelling,
    a symbolic link and its target, or two hard links (a path that does not exist is the same
    as another only by its resolved name)."""
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_inputs_as_output(output: str | os.PathLike, inputs: Mapping[str, object]) -> None:
    """A command's destination must not be one of its inputs: writing it would destroy the
    input (`describe m.h5 -o m.h5`). `inputs`: {what: path or None}, e.g. {"model": "m.h5"}."""
    for what, path in inputs.items():
        if path is None or isinstance(path, bool):
            continue
        if same_file(output, os.fspath(path)):  # type: ignore[arg-type]
            raise UserError(f"the output {output} is the input {what} {path}: writing it would "
                            "destroy the input; choose another output path")
