"""Input data for calibration and campaigns: `.npz` files with `x` (and optional `y`), or
one array per model input named after the input."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classes_tool.errors import UserError

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = REPO_ROOT / "models" / "digits_test.npz"


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npz file: {exc}") from None


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
        elif len(model.inputs) == 1 and len(data) == 1:
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
    return arrays


def labels(data: dict[str, np.ndarray]) -> np.ndarray | None:
    return data.get("y")
