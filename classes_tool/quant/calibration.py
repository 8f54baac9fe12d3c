"""Where a layer's integer grid comes from: the model's own fake-quant layers, or calibration.

Integer faults only mean something on the grid the hardware uses. A quantization-aware model
carries that grid (a fake-quant layer with ``num_bits`` and ``min``/``max``, or a QKeras
``QActivation("quantized_bits(8,0)")``); we read it from there. A float model does not, so we
calibrate: run calibration data through it, take each layer's min/max, and pick a symmetric
scale for the configured bit width (zero point 0, signed when the layer ever goes negative).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

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
    source: str = "calibration"  # or "fake_quant"

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
                bits: int, batch_size: int = 256) -> dict[str, QuantSpec]:
    """Grid for each named layer: from the layer when it is fake-quant, else from calibration."""
    check_bits(bits)
    specs: dict[str, QuantSpec] = {}
    to_calibrate = []
    for name in node_names:
        spec = spec_from_layer(model.get_layer(name))
        if spec is None:
            to_calibrate.append(name)
        else:
            specs[name] = spec
    if to_calibrate:
        ranges = calibrate_ranges(model, to_calibrate, data, batch_size)
        for name, (lo, hi) in ranges.items():
            specs[name] = spec_from_range(lo, hi, bits)
    return {n: specs[n] for n in node_names}
