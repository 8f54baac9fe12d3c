"""Input data for calibration and campaigns: `.npz` files with `x` (and optional `y`), or
one array per model input named after the input."""

from __future__ import annotations

import importlib.resources
import zipfile
import zlib
from pathlib import Path

import numpy as np

from classes_tool.errors import UserError

#: What the tool reads at run time ships inside the package (error models, the example model
#: and data), found through importlib.resources, so an installed wheel has it too.
PACKAGE_DATA = Path(str(importlib.resources.files("classes_tool") / "package_data"))
EXAMPLE_DATA = PACKAGE_DATA / "digits_test.npz"
EXAMPLE_MODEL = PACKAGE_DATA / "digits_cnn.h5"


#: The dtype kinds an array of numbers may have: bool, signed and unsigned integers, floats.
NUMERIC_KINDS = "biuf"


def _read_header(fh, name: str, source: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a `.npy` member declares, read without reading its data."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:  # 3.0 (UTF-8 field names): NumPy reads it only through its private helper
            from numpy.lib import _format_impl

            shape, _, dtype = _format_impl._read_array_header(fh, version)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError, ImportError,
            AttributeError) as exc:
        raise UserError(f"{source}: member {name!r} is not a readable .npy array "
                        f"({exc})") from None
    return tuple(shape), np.dtype(dtype)


def read_npz(path: str | Path, what: str = "data", text: tuple[str, ...] = ()
             ) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file, every one checked before it is read.

    The one npz reader of the tool (campaign data, calibration, sites files, SNN, train, sweep):
    a single `.npy` renamed `.npz`, a zip member that is not a `.npy`, arrays of strings,
    objects or complex numbers (except the text arrays named in `text`), and arrays larger
    than the memory available (checked from the headers, before allocating) are one-line
    errors."""
    from classes_tool.limits import check_size, element_count

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}" if not path.is_dir() else
                        f"{what} file {path} is a folder, not an .npz file")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
        if not zipfile.is_zipfile(path):
            kind = ("a single .npy array (save with numpy.savez to get an .npz)"
                    if magic == b"\x93NUMPY" else "not a zip archive")
            raise UserError(f"{what} file {path} is not an .npz file: it is {kind}")
        total = 0
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    raise UserError(f"{what} file {path}: member {info.filename!r} is not a "
                                    ".npy array")
                name = info.filename[:-4]
                with archive.open(info) as fh:
                    shape, dtype = _read_header(fh, name, path)
                if dtype.kind not in NUMERIC_KINDS and not (name in text and
                                                            dtype.kind in "US"):
                    kind = ("complex numbers" if dtype.kind == "c" else
                            "text" if dtype.kind in "US" else f"dtype {dtype}")
                    raise UserError(f"{what} file {path}: array {name!r} holds {kind}; "
                                    "expected numbers")
                try:
                    nbytes = element_count(shape) * dtype.itemsize
                except ValueError as exc:
                    raise UserError(f"{what} file {path}: array {name!r}: {exc}") from None
                total += nbytes
                check_size(f"{what} file {path} (array {name!r} of shape {shape}, {dtype})",
                           total)
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise UserError(f"{what} file {path} is not a readable .npz file: "
                        f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                        ) from None


def load_npz(path: str | Path, what: str = "data") -> dict[str, np.ndarray]:
    """`read_npz` of a data file (inputs, labels, calibration)."""
    return read_npz(path, what)


def finite_inputs(arrays, source: str) -> None:
    """Inputs with NaN or Inf give every fault a meaningless outcome (a golden output that is
    already NaN): refused, as the layer campaign does."""
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            where = "" if len(arrays) == 1 else f" (input {i})"
            raise UserError(f"{source}: the inputs{where} hold NaN or Inf values")


def model_inputs(model, data: dict[str, np.ndarray], source: str = "data",
                 onnx_layout: bool = False) -> list[np.ndarray]:
    """The arrays to feed `model`, in its input order, checked against its input shapes.

    `onnx_layout`: the model was converted from ONNX, whose image inputs are channels-first
    (N, C, H, W) while the converted model reads (N, H, W, C). Data in the ONNX layout, what
    the model's user holds, is then transposed; data already channels-last is taken as it
    is. A shape that fits both ways (C == H == W) is read in the ONNX layout."""
    names = [t.name.split(":")[0] for t in model.inputs]
    layer_names = [getattr(t, "_keras_history", [None])[0] for t in model.inputs]
    layer_names = [getattr(layer, "name", n) for layer, n in zip(layer_names, names, strict=True)]
    arrays = []
    for i, (tensor, name) in enumerate(zip(model.inputs, layer_names, strict=True)):
        if name in data:
            array = data[name]
        elif len(model.inputs) == 1 and "x" in data:
            array = data["x"]
        elif len(model.inputs) == 1 and len(data) == 1 and "y" not in data:
            array = next(iter(data.values()))
        else:
            raise UserError(f"{source} has no array for model input {i} '{name}' "
                            f"(arrays: {', '.join(sorted(data))}; use 'x' or the input's name)")
        expected = tuple(tensor.shape[1:])
        channels_first = (expected[-1], *expected[:-1]) if len(expected) == 3 else None
        if onnx_layout and channels_first and tuple(array.shape[1:]) == channels_first:
            array = np.ascontiguousarray(array.transpose(0, 2, 3, 1))
        elif tuple(array.shape[1:]) != expected:
            also = (f" (or {channels_first} in the ONNX layout)"
                    if onnx_layout and channels_first else "")
            raise UserError(f"{source}: array for input '{name}' has sample shape "
                            f"{tuple(array.shape[1:])}, the model expects {expected}{also}")
        arrays.append(array.astype(tensor.dtype if isinstance(tensor.dtype, str) else "float32"))
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise UserError(f"{source}: input arrays have different lengths {sorted(lengths)}")
    if lengths == {0}:
        raise UserError(f"{source}: the input arrays hold no samples")
    return arrays


def labels(data: dict[str, np.ndarray], n: int | None = None, source: str = "data"
           ) -> np.ndarray | None:
    """The class labels `y` of the first `n` samples as integers, or None without `y`.

    One-hot (or score) rows are read as their argmax, a common way to store labels; anything
    else that is not one integer class per sample is an error, and so is a `y` shorter than
    the inputs it labels (it would otherwise fail only when a result row is stored)."""
    y = data.get("y")
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)
    elif y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iub" and not (
            y.dtype.kind == "f" and np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        raise UserError(f"{source}: 'y' must hold one integer class per sample (or one-hot "
                        f"rows), got shape {y.shape} of {y.dtype}")
    n = len(y) if n is None else n
    if len(y) < n:
        raise UserError(f"{source}: 'y' has {len(y)} labels for {n} inputs")
    return y[:n].astype(np.int64)
