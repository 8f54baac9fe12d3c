"""Sizes a file declares, checked against the machine before anything is allocated.

An `.npz` header, an `.h5` dataset or an ONNX tensor can declare 10**12 floats in a file of a
few hundred bytes; allocating first fails late (or swaps for minutes). Every reader that learns
a size from a file calls `check_size` before it allocates; `check_model_file` does it for a
Keras `.h5` or `.keras` file before Keras loads it.
"""

from __future__ import annotations

import io
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
        _check_datasets(handle, path, "its weights")
        config = handle.attrs.get("model_config")
    if config is None:
        return
    if isinstance(config, bytes):
        config = config.decode("utf-8", "replace")
    try:
        config = json.loads(config)
    except ValueError:
        return  # the model reader names a config that is not JSON
    _check_input_shapes(config, path)


#: Where a `.keras` file (a zip archive) keeps its config and its weights.
KERAS_CONFIG = "config.json"
KERAS_WEIGHTS = "model.weights.h5"


def check_keras_zip(path) -> None:
    """A `.keras` file's declared sizes, read before Keras builds or loads anything: its
    config (read whole into memory) and the datasets of its weights file (an HDF5 file inside
    the zip, read in place), against the memory available; its input shapes (no negative
    dimension)."""
    import json
    import zipfile
    from pathlib import Path

    import h5py

    path = Path(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return  # not a zip file: the model reader says what it is
    with archive:
        names = set(archive.namelist())
        if KERAS_WEIGHTS in names:
            try:
                member = _zip_member(archive, KERAS_WEIGHTS)
            except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError):
                member = None  # encrypted, an unknown compression: Keras names what it is
            if member is not None:
                with member:
                    try:
                        handle = h5py.File(member, "r")
                    except OSError:
                        handle = None  # not HDF5: Keras names what it is
                    if handle is not None:
                        with handle:
                            _check_datasets(handle, path, f"its weights in {KERAS_WEIGHTS}")
        if KERAS_CONFIG not in names:
            return
        check_size(f"{path} ({KERAS_CONFIG})", archive.getinfo(KERAS_CONFIG).file_size)
        try:
            config = json.loads(archive.read(KERAS_CONFIG))
        except (ValueError, zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError):
            return  # the model reader names a config it cannot read
    _check_input_shapes(config, path)


def _zip_member(archive, name):
    """A seekable binary file over one member of `archive`. An uncompressed member (what Keras
    writes) is read in place from the archive file; a compressed one is decompressed into
    memory (its declared size checked first), as Keras does: zipfile's own member file seeks
    backwards by decompressing again from its start, very slow on the scattered reads of HDF5."""
    import struct
    import zipfile

    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or not archive.filename:
        check_size(f"{archive.filename} ({name}, compressed)", info.file_size)
        return io.BytesIO(archive.read(name))
    fh = open(archive.filename, "rb")
    try:
        fh.seek(info.header_offset)
        header = fh.read(30)  # the local header: its name and extra field lengths differ from
        if len(header) < 30 or header[:4] != b"PK\x03\x04":  # the central directory's
            raise zipfile.BadZipFile(f"no local header for {name}")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        return _Window(fh, info.header_offset + 30 + name_length + extra_length,
                       info.file_size)
    except BaseException:
        fh.close()
        raise


class _Window(io.RawIOBase):
    """Bytes [start, start + size) of an open file, as a file of their own."""

    def __init__(self, fh, start: int, size: int):
        super().__init__()
        self._fh, self._start, self._size, self._pos = fh, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._size - self._pos))
        if n == 0:
            return 0
        self._fh.seek(self._start + self._pos)
        got = self._fh.readinto(memoryview(buffer)[:n])
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._fh.close()
        super().close()


def _check_datasets(handle, path, what: str) -> None:
    """The datasets of an open HDF5 file, their declared sizes summed against memory."""
    import h5py

    sizes: list[tuple[int, str]] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            sizes.append((int(obj.size or 0) * obj.dtype.itemsize, f"{name} {obj.shape}"))

    handle.visititems(visit)
    if sizes:
        largest = max(sizes)
        check_size(f"{path} ({what}; the largest: {largest[1]})", sum(s for s, _ in sizes))


def _check_input_shapes(config, path) -> None:
    """No input shape of a model config has a negative dimension."""
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


def check_model_file(path) -> None:
    """The declared sizes of a Keras model file, `.h5` or `.keras` (judged by content), before
    anything loads it; other files are left to the reader."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return  # the reader says why it cannot open the file
    if head == b"\x89HDF\r\n\x1a\n":
        check_keras_h5(path)
    elif head[:2] == b"PK":
        check_keras_zip(path)
