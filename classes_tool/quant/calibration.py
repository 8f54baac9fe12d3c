"""Where a layer's integer grid comes from: the model's own fake-quant layers, or calibration.

Integer faults only mean something on the grid the hardware uses. A quantization-aware model
carries that grid (a fake-quant layer with ``num_bits`` and ``min``/``max``, or a QKeras
``QActivation("quantized_bits(8,0)")``); we read it from there. A float model does not, so we
calibrate: run calibration data through it, take each layer's min/max, and pick a symmetric
scale for the configured bit width (zero point 0, signed when the layer ever goes negative).
"""

from __future__ import annotations

import json
import math
import re
import weakref
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import numpy as np

from classes_tool.errors import UserError

MIN_BITS, MAX_BITS = 2, 16


@dataclass(frozen=True)
class QuantSpec:
    """The integer grid of one layer's output: ``x ≈ q * scale`` with `bits`-bit codes q."""

    scale: float
    bits: int
    signed: bool
    source: str = "calibration"  # or "fake_quant", or "trained" (stored with a tuned model)

    def to_dict(self) -> dict:
        return asdict(self)


def check_bits(bits: object) -> int:
    """Validate a bit width (2..16); the message names the valid range."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise UserError(f"bit_width must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


def spec_from_range(lo: float, hi: float, bits: int, source: str = "calibration") -> QuantSpec:
    """Symmetric grid covering [lo, hi]: unsigned if lo >= 0, else signed two's complement."""
    check_bits(bits)
    signed = lo < 0
    top = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    span = max(abs(lo), abs(hi))
    if not math.isfinite(span):
        raise UserError(f"cannot calibrate: activation range [{lo}, {hi}] is not finite")
    scale = span / top if span > 0 else 1.0
    return QuantSpec(scale=float(scale), bits=bits, signed=signed, source=source)


_QKERAS = re.compile(r"^\s*(quantized_bits|quantized_relu)\s*\((.*)\)\s*$")


def _parse_qkeras(text: str) -> QuantSpec | None:
    """Grid of a QKeras quantizer string such as ``quantized_bits(8,0)`` or ``quantized_relu(4,2)``."""
    m = _QKERAS.match(text)
    if not m:
        return None
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in (p.strip() for p in m.group(2).split(",") if p.strip()):
        if "=" in part:
            k, v = part.split("=", 1)
            named[k.strip()] = v.strip()
        else:
            positional.append(part)
    try:
        bits = int(named.get("bits", positional[0] if positional else 8))
        integer = int(named.get("integer", positional[1] if len(positional) > 1 else 0))
    except ValueError:
        return None
    if m.group(1) == "quantized_relu":
        return QuantSpec(scale=2.0 ** (integer - bits), bits=check_bits(bits), signed=False,
                         source="fake_quant")
    keep_negative = named.get("keep_negative", positional[3] if len(positional) > 3 else "1")
    signed = keep_negative.strip().lower() not in ("0", "false")
    return QuantSpec(scale=2.0 ** (integer - bits + int(signed)), bits=check_bits(bits),
                     signed=signed, source="fake_quant")


def spec_from_layer(layer: keras.layers.Layer) -> QuantSpec | None:
    """The grid a fake-quant layer declares, or None when `layer` is not one.

    Recognised: a layer whose config has ``num_bits`` and ``min``/``max`` values or weights whose
    names end in ``min``/``max`` (TF ``FakeQuant``-style), and QKeras ``QActivation`` with a
    ``quantized_bits``/``quantized_relu`` activation.
    """
    config = layer.get_config() if hasattr(layer, "get_config") else {}
    activation = config.get("activation")
    if isinstance(activation, str):
        spec = _parse_qkeras(activation)
        if spec is not None:
            return spec
    if "num_bits" not in config:
        return None
    bits = int(config["num_bits"])
    lo, hi = config.get("min"), config.get("max")
    if lo is None or hi is None:
        by_name = {w.path.split("/")[-1]: w for w in getattr(layer, "weights", [])}
        mins = [w for n, w in by_name.items() if n.endswith("min")]
        maxs = [w for n, w in by_name.items() if n.endswith("max")]
        if not mins or not maxs:
            return None
        lo = float(np.min(keras.ops.convert_to_numpy(mins[0].value)))
        hi = float(np.max(keras.ops.convert_to_numpy(maxs[0].value)))
    return spec_from_range(float(lo), float(hi), check_bits(bits), source="fake_quant")


def fake_quant_layers(model: keras.Model) -> list[str]:
    """Names of the layers of `model` that carry their own quantization grid."""
    return [layer.name for layer in model.layers if spec_from_layer(layer) is not None]


def calibrate_ranges(model: keras.Model, node_names: list[str], data: np.ndarray,
                     batch_size: int = 256) -> dict[str, tuple[float, float]]:
    """Min and max of each named layer's output over `data` (inference mode)."""
    if data is None or len(data) == 0:
        raise UserError("calibration needs data (got none) for layers without fake-quant: "
                        + ", ".join(node_names))
    outputs = [model.get_layer(n).output for n in node_names]
    probe = keras.Model(model.inputs, outputs)
    lo = {n: math.inf for n in node_names}
    hi = {n: -math.inf for n in node_names}
    for start in range(0, len(data), batch_size):
        values = probe([data[start:start + batch_size]], training=False)
        if len(node_names) == 1:
            values = [values]
        for name, v in zip(node_names, values, strict=True):
            v = keras.ops.convert_to_numpy(v)
            lo[name] = min(lo[name], float(v.min()))
            hi[name] = max(hi[name], float(v.max()))
    return {n: (lo[n], hi[n]) for n in node_names}


def quant_specs(model: keras.Model, node_names: list[str], data: np.ndarray | None,
                bits: int, batch_size: int = 256, stored: dict[str, QuantSpec] | None = None
                ) -> dict[str, QuantSpec]:
    """Grid for each named layer: from the layer when it is fake-quant, else the `stored` grid
    of that layer (the one a fault-aware model was trained on) when it has `bits` bits, else
    from calibration."""
    check_bits(bits)
    stored = stored or {}
    specs: dict[str, QuantSpec] = {}
    to_calibrate = []
    for name in node_names:
        spec = spec_from_layer(model.get_layer(name))
        if spec is None and name in stored and stored[name].bits == bits:
            spec = stored[name]
        if spec is None:
            to_calibrate.append(name)
        else:
            specs[name] = spec
    if to_calibrate:
        ranges = calibrate_ranges(model, to_calibrate, data, batch_size)
        for name, (lo, hi) in ranges.items():
            specs[name] = spec_from_range(lo, hi, bits)
    return {n: specs[n] for n in node_names}


# --------------------------------------------------------------------------- trained grids
# A fault-aware tuned model is robust on the grid it was trained with. Its plain saved file (the
# original architecture, loadable by any Keras) carries that grid beside the model: an archive
# entry of a .keras file, a root attribute of an .h5 file. Keras ignores both; `load_model` of
# `classes_tool.quant.sweep` reads it and attaches it to the loaded model, and the injection then
# uses it instead of calibrating the tuned model afresh (whose ranges grew: see docs/quant.md).

GRID_ENTRY = "classes_tool_activation_grid.json"
_GRID_FORMAT = 1
_ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attach_grid(model: keras.Model, grid: dict[str, QuantSpec]) -> None:
    """Remember `grid` (layer name -> trained grid) as the stored grid of `model` (in memory)."""
    if grid:
        _ATTACHED[model] = {n: QuantSpec(float(s.scale), int(s.bits), bool(s.signed), "trained")
                            for n, s in grid.items()}
    else:
        _ATTACHED.pop(model, None)


def attached_grid(model: keras.Model) -> dict[str, QuantSpec]:
    """The grid attached to `model` by `attach_grid` or `load_model` ({} when none)."""
    return dict(_ATTACHED.get(model, {}))


def _grid_json(grid: dict[str, QuantSpec]) -> str:
    layers = {n: {"scale": float(s.scale), "bits": int(s.bits), "signed": bool(s.signed)}
              for n, s in grid.items()}
    return json.dumps({"format": _GRID_FORMAT, "layers": layers}, indent=2, sort_keys=True)


def _is_h5(path: Path) -> bool:
    return path.suffix.lower() in (".h5", ".hdf5")


def write_grid(path: str | Path, grid: dict[str, QuantSpec]) -> None:
    """Store `grid` inside the saved model file at `path` (.keras archive entry or .h5 attribute)."""
    path = Path(path)
    text = _grid_json(grid)
    if _is_h5(path):
        import h5py

        with h5py.File(path, "a") as f:
            f.attrs[GRID_ENTRY] = text
    else:
        with zipfile.ZipFile(path, "a") as zf:
            if GRID_ENTRY in zf.namelist():
                raise UserError(f"{path} already holds an activation grid")
            zf.writestr(GRID_ENTRY, text)


def read_grid(path: str | Path) -> dict[str, QuantSpec]:
    """The grid stored in the model file at `path` by `write_grid` ({} when it has none)."""
    path = Path(path)
    try:
        if _is_h5(path):
            import h5py

            with h5py.File(path, "r") as f:
                text = f.attrs.get(GRID_ENTRY)
            if isinstance(text, bytes):
                text = text.decode()
        else:
            if not zipfile.is_zipfile(path):
                return {}
            with zipfile.ZipFile(path) as zf:
                if GRID_ENTRY not in zf.namelist():
                    return {}
                text = zf.read(GRID_ENTRY).decode()
        if text is None:
            return {}
        data = json.loads(text)
        return {n: QuantSpec(float(v["scale"]), check_bits(int(v["bits"])), bool(v["signed"]),
                             "trained") for n, v in data["layers"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserError(f"{path}: unreadable stored activation grid ({exc})") from exc


def save_model_with_grid(model: keras.Model, path: str | Path,
                         grid: dict[str, QuantSpec] | None = None) -> Path:
    """`model.save(path)`, with `grid` (default: the one attached to `model`) stored in the file."""
    path = Path(path)
    grid = attached_grid(model) if grid is None else grid
    model.save(path)
    if grid:
        write_grid(path, grid)
    return path
