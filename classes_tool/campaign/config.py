"""Campaign configuration: a YAML file, every key validated, unknown keys refused.

Paths in the file are relative to the file's own folder, so a config can be run from anywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from classes_tool.errors import UserError
from classes_tool.simulator.sites import MAX_SEED, OUT_OF_RANGE_MODES

KEYS = {
    "target": "what is simulated: 'layers' (ErrorSimulator, default), 'systolic' or 'snn'",
    "model": "model file (.h5, .keras or .onnx)",
    "data": ".npz with 'x' (or one array per input) and optional 'y'; 'example' = shipped digits",
    "inputs": "how many inputs of the data to use (default: all)",
    "targets": "{nodes: [names], types: [layer classes]} where faults are injected",
    "error_model": "'auto' (by layer type), a shipped model name, or a CLASSES JSON path",
    "faults": "fault budget per target (instead of margin)",
    "margin": "statistical margin e of the Leveugle sample size (default 0.05)",
    "confidence": "confidence of the sizing and the intervals (default 0.99)",
    "p": "estimated failure probability for the sizing (default 0.5)",
    "seed": "seed of every fault (default 0)",
    "batch_size": "(fault, input) pairs per forward pass (default 256)",
    "output": "output folder (default runs/<config name>)",
    "calibration": ".npz for the normal value ranges (default: the campaign data)",
    "value_range": "[low, high] normal range for all targets instead of calibration",
    "tolerance": "{atol, rtol} under which outputs count as equal (default 1e-6, 1e-5)",
    "output_name": "which model output is scored (default: the first)",
    "input_shape": "ONNX only: fixed input shapes, one list per input",
    "sizing": "'fixed' (Leveugle, default) or 'adaptive' (rounds until the margin is reached)",
    "pilot_faults": "adaptive sizing: faults of the first round per target",
    "max_faults": "adaptive sizing: most faults per target (default: its population)",
    "input_set": "'fixed' (default: the rates are about these inputs) or 'sample' (the inputs "
                 "are a random sample of a larger data set; intervals include their variance)",
    "out_of_range": "how out-of-range values are drawn: 'bounded' (default, finite) or "
                    "'bit_pattern' (random float32 bits, as the CLASSES reference simulator)",
}
SIZINGS = ("fixed", "adaptive")
INPUT_SETS = ("fixed", "sample")
ALLOWED_TARGETS = ("layers", "systolic", "snn")


@dataclass
class CampaignConfig:
    """A validated layer-campaign configuration (paths resolved)."""

    model: Path
    data: Path
    targets: dict[str, list[str]]
    output: Path
    inputs: int | None = None
    error_model: str = "auto"
    faults: int | None = None
    margin: float = 0.05
    confidence: float = 0.99
    p: float = 0.5
    seed: int = 0
    batch_size: int = 256
    calibration: Path | None = None
    value_range: tuple[float, float] | None = None
    tolerance: dict[str, float] = field(default_factory=lambda: {"atol": 1e-6, "rtol": 1e-5})
    output_name: str | None = None
    input_shape: list[tuple[int, ...]] | None = None
    sizing: str = "fixed"
    pilot_faults: int | None = None
    max_faults: int | None = None
    input_set: str = "fixed"
    out_of_range: str = "bounded"

    def identity(self) -> dict[str, Any]:
        """What defines the campaign's results (a resumed run must match it)."""
        data = asdict(self)
        data.pop("output")
        data.pop("batch_size")  # results do not depend on it
        # keys added after stores existed are stored only when they differ from their default,
        # so that those stores still resume
        for key, default in (("sizing", "fixed"), ("pilot_faults", None), ("max_faults", None),
                             ("input_set", "fixed"), ("out_of_range", "bounded")):
            if data[key] == default:
                data.pop(key)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def _number(raw: dict, key: str, kind: type, low: float | None = None,
            high: float | None = None, default: Any = None) -> Any:
    value = raw.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            kind is int and not float(value).is_integer()):
        raise UserError(f"config key '{key}' must be {'an integer' if kind is int else 'a number'}"
                        f", got {value!r}")
    if not math.isfinite(value):  # NaN passes every comparison below; inf is no count
        raise UserError(f"config key '{key}' must be a finite number, got {value!r}")
    value = kind(value)
    if (low is not None and value < low) or (high is not None and value > high):
        bound = (f"within [{low}, {high}]" if low is not None and high is not None else
                 f"at least {low}" if low is not None else f"at most {high}")
        raise UserError(f"config key '{key}' must be {bound}, got {value}")
    return value


def _path(base: Path, value: Any, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise UserError(f"config key '{key}' must be a path, got {value!r}")
    path = Path(value)
    return path if path.is_absolute() else (base / path)


def _names(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserError(f"config key '{key}' must be a name or a list of names")
    return value


def parse_config(raw: dict[str, Any], source: str | Path, out: str | Path | None = None,
                 seed: int | None = None) -> CampaignConfig:
    """Validate a layer-campaign config; `out`/`seed` override the file's values."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise UserError(f"unknown config key '{unknown[0]}' in {source}; allowed: "
                        f"{', '.join(KEYS)}")
    base = Path(source).resolve().parent
    for key in ("model", "data", "targets"):
        if key not in raw:
            raise UserError(f"config {source} needs '{key}' ({KEYS[key]})")
    targets = raw["targets"]
    if isinstance(targets, (str, list)):
        targets = {"nodes": _names(targets, "targets")}
    if not isinstance(targets, dict) or set(targets) - {"nodes", "types"} or not targets:
        raise UserError("config key 'targets' must be {nodes: [...], types: [...]}")
    targets = {"nodes": _names(targets.get("nodes", []), "targets.nodes"),
               "types": _names(targets.get("types", []), "targets.types")}
    data = raw["data"]
    from classes_tool.data import EXAMPLE_DATA

    data_path = EXAMPLE_DATA if data == "example" else _path(base, data, "data")
    tolerance = raw.get("tolerance", {"atol": 1e-6, "rtol": 1e-5})
    if not isinstance(tolerance, dict) or set(tolerance) - {"atol", "rtol"}:
        raise UserError("config key 'tolerance' must be {atol: number, rtol: number}")
    tolerance = {"atol": _number(tolerance, "atol", float, 0, None, 1e-6),
                 "rtol": _number(tolerance, "rtol", float, 0, None, 1e-5)}
    value_range = raw.get("value_range")
    if value_range is not None:
        if not (isinstance(value_range, list) and len(value_range) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) for v in value_range)
                and value_range[0] <= value_range[1]):
            raise UserError("config key 'value_range' must be [low, high], two finite numbers "
                            f"with low <= high, got {value_range!r}")
        value_range = (float(value_range[0]), float(value_range[1]))
    if raw.get("faults") is not None and raw.get("margin") is not None:
        raise UserError("config keys 'faults' (a fixed budget per target) and 'margin' "
                        "(statistical sizing) exclude each other: give one")
    input_shape = raw.get("input_shape")
    if input_shape is not None:
        if not (isinstance(input_shape, list) and input_shape):
            raise UserError("config key 'input_shape' must be a list of shapes")
        if all(isinstance(d, int) for d in input_shape):
            input_shape = [input_shape]
        for shape in input_shape:
            if not (isinstance(shape, list) and shape and all(
                    isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
                raise UserError("config key 'input_shape' must be a shape (a list of positive "
                                f"integers, e.g. [3, 224, 224]) or a list of them, got {shape!r}")
        input_shape = [tuple(int(d) for d in s) for s in input_shape]
    sizing = raw.get("sizing", "fixed")
    if sizing not in SIZINGS:
        raise UserError(f"config key 'sizing' must be one of {', '.join(SIZINGS)}, got {sizing!r}")
    input_set = raw.get("input_set", "fixed")
    if input_set not in INPUT_SETS:
        raise UserError(f"config key 'input_set' must be one of {', '.join(INPUT_SETS)}, got "
                        f"{input_set!r}")
    if sizing == "adaptive":
        if raw.get("faults") is not None:
            raise UserError("config key 'faults' is a fixed budget; 'sizing: adaptive' sizes "
                            "each target from its results (give 'max_faults' to cap it)")
        if input_set == "sample":
            raise UserError("'sizing: adaptive' needs 'input_set: fixed': with sampled inputs "
                            "the inputs' share of the interval does not shrink with more faults, "
                            "so no number of faults is sure to reach the margin")
    else:
        for key in ("pilot_faults", "max_faults"):
            if raw.get(key) is not None:
                raise UserError(f"config key '{key}' applies to 'sizing: adaptive' only")
    out_of_range = raw.get("out_of_range", "bounded")
    if out_of_range not in OUT_OF_RANGE_MODES:
        raise UserError(f"config key 'out_of_range' must be one of "
                        f"{', '.join(OUT_OF_RANGE_MODES)}, got {out_of_range!r}")
    error_model = raw.get("error_model", "auto")
    if not isinstance(error_model, str):
        raise UserError("config key 'error_model' must be a name or a path")
    if error_model.endswith(".json"):
        error_model = str(_path(base, error_model, "error_model"))
    config = CampaignConfig(
        model=_path(base, raw["model"], "model"),
        data=data_path,
        targets=targets,
        output=Path(out) if out is not None else (
            _path(base, raw["output"], "output") if "output" in raw
            else Path("runs") / Path(str(source)).stem),
        inputs=_number(raw, "inputs", int, 1),
        error_model=error_model,
        faults=_number(raw, "faults", int, 1),
        margin=_number(raw, "margin", float, 1e-6, 0.5, 0.05),
        confidence=_number(raw, "confidence", float, 0.5, 0.999999, 0.99),
        p=_number(raw, "p", float, 0.0, 1.0, 0.5),
        seed=_number({"seed": seed} if seed is not None else raw, "seed", int, 0, MAX_SEED, 0),
        batch_size=_number(raw, "batch_size", int, 1, None, 256),
        calibration=_path(base, raw["calibration"], "calibration") if raw.get("calibration")
        else None,
        value_range=value_range,
        tolerance=tolerance,
        output_name=raw.get("output_name"),
        input_shape=input_shape,
        sizing=sizing,
        pilot_faults=_number(raw, "pilot_faults", int, 1),
        max_faults=_number(raw, "max_faults", int, 1),
        input_set=input_set,
        out_of_range=out_of_range,
    )
    if not config.model.exists():
        raise UserError(f"model file not found: {config.model}")
    if not config.targets["nodes"] and not config.targets["types"]:
        raise UserError("config key 'targets' names no node and no layer type")
    return config
