"""Error models: CLASSES-format JSON files, validated, and the map from Keras layers to them.

An error model says, for one operator kind, how often each spatial class of corruption occurs
(`frequency`), with which shape parameters (`parameters[*].keys/stats`, weighted by
`conditional_frequency`), and which value domains the corrupted values fall in
(`domain_classes`). Files written by the CLASSES tool are read as they are.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classes_tool.errors import UserError

#: The shipped CLASSES error models: package data (see classes_tool.data.PACKAGE_DATA).
ERROR_MODELS_DIR = Path(str(importlib.resources.files("classes_tool")
                            / "package_data" / "error_models"))

SPATIAL_CLASSES = (
    "single", "same_row", "same_column", "bullet_wake", "skip_2", "skip_4", "skip_8", "skip_16",
    "single_block", "multi_channel_block", "shattered_channel", "quasi_shattered_channel",
    "full_channels", "rectangles", "single_channel_random", "single_channel_alternated_blocks",
    "multiple_channels_uncategorized",
)
VALUE_CLASSES = ("in_range", "out_of_range", "zero", "nan", "inf", "flip")

ALIASES = {"conv": "conv_gemm", "gemm": "conv_gemm", "dense": "conv_gemm", "matmul": "conv_gemm",
           "batch_norm": "batchnorm", "add": "bias_add", "biasadd": "bias_add",
           "relu6": "clipped_relu", "max_pool": "maxpool", "avg_pool": "avgpool"}

# Keras layer class -> error model name. Layers that only move data (Flatten, Reshape,
# Concatenate, Dropout, ...) have no measured model: injecting after them needs --error-model.
LAYER_ERROR_MODELS = {
    **dict.fromkeys(["Conv1D", "Conv2D", "Conv3D", "DepthwiseConv1D", "DepthwiseConv2D",
                     "SeparableConv1D", "SeparableConv2D", "Conv1DTranspose", "Conv2DTranspose",
                     "Conv3DTranspose", "Dense", "EinsumDense"], "conv_gemm"),
    **dict.fromkeys(["MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "GlobalMaxPooling1D",
                     "GlobalMaxPooling2D", "GlobalMaxPooling3D"], "maxpool"),
    **dict.fromkeys(["AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
                     "GlobalAveragePooling1D", "GlobalAveragePooling2D",
                     "GlobalAveragePooling3D"], "avgpool"),
    **dict.fromkeys(["BatchNormalization", "LayerNormalization", "GroupNormalization"],
                    "batchnorm"),
    **dict.fromkeys(["Add", "Subtract", "Average"], "bias_add"),
    "ReLU": "relu", "LeakyReLU": "relu", "PReLU": "relu", "ELU": "elu",
}
ACTIVATION_ERROR_MODELS = {"relu": "relu", "relu6": "clipped_relu", "leaky_relu": "relu",
                           "elu": "elu", "selu": "elu", "sigmoid": "sigmoid",
                           "hard_sigmoid": "sigmoid", "tanh": "tanh"}


@dataclass(frozen=True)
class ErrorModel:
    """A validated error model: its name and the JSON content (CLASSES format)."""

    name: str
    data: dict[str, Any]

    @property
    def classes(self) -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.data.items() if not k.startswith("_")}


def error_model_for_layer(class_name: str, config: dict[str, Any]) -> str | None:
    """The error model name for a Keras layer, or None when no measured kind fits."""
    if class_name == "ReLU" and config.get("max_value") not in (None, 0):
        return "clipped_relu"
    if class_name == "Activation":
        activation = config.get("activation")
        if isinstance(activation, dict):
            activation = activation.get("config", {}).get("name") or activation.get("class_name")
        return ACTIVATION_ERROR_MODELS.get(str(activation))
    return LAYER_ERROR_MODELS.get(class_name)


def available_error_models() -> list[str]:
    return sorted(p.stem for p in ERROR_MODELS_DIR.glob("*.json"))


def load_error_model(name_or_path: str | Path) -> ErrorModel:
    """Load a shipped model by name (or alias) or any CLASSES-format JSON file by path."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".json") or path.is_file()):
        name = ALIASES.get(text, text)
        path = ERROR_MODELS_DIR / f"{name}.json"
        if not path.is_file():
            raise UserError(f"unknown error model '{text}'; shipped: "
                            f"{', '.join(available_error_models())} (or give a .json path)")
    if not path.is_file():
        raise UserError(f"error model file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"error model {path} is not valid JSON: {exc}") from None
    validate_error_model(data, str(path))
    return ErrorModel(name=path.stem, data=data)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_bin(value: Any, where: str) -> None:
    if not (isinstance(value, list) and len(value) == 2 and all(map(_is_number, value))
            and 0 <= value[0] <= value[1] <= 100):
        raise UserError(f"{where}: expected a percentage bin [low, high] within 0..100, "
                        f"got {value!r}")


#: Parameters the pattern generators read as counts, sizes or skips (patterns.py): each must be
#: a whole number of at least 1. Other keys of the measured data are descriptive and not read.
COUNT_PARAMETERS = (
    "max_corrupted_channels", "min_channel_skip", "max_channel_skip", "skip_amount",
    "unique_channel_indexes", "block_size", "min_value_skip", "max_value_skip",
    "max_cardinality", "rectangle_height", "rectangle_width", "min_block_skip",
    "max_block_skip", "min_errors_per_channel", "max_errors_per_channel", "min_span_width",
    "max_span_width")


def _check_parameter(key: str, value: Any, where: str) -> None:
    """A parameter value (or one RANDOM choice) the generators can use: a percentage bin for a
    `*_pct` key, a whole number >= 1 for a count. Checked here so that a bad value fails when
    the model is loaded, not when a rare parameter set happens to be drawn."""
    if key.endswith("_pct"):
        _check_bin(value, where)
    elif key in COUNT_PARAMETERS and not (_is_number(value) and float(value).is_integer()
                                          and value >= 1):
        raise UserError(f"{where}: expected a whole number of at least 1, got {value!r}")


def validate_error_model(data: Any, source: str = "error model") -> None:
    """Check a CLASSES-format error model; raise UserError naming the first problem."""
    if not isinstance(data, dict):
        raise UserError(f"{source}: top level must be an object of spatial classes")
    classes = {k: v for k, v in data.items() if not k.startswith("_")}
    if not classes:
        raise UserError(f"{source}: no spatial classes")
    total = 0.0
    for name, spec in classes.items():
        where = f"{source}: class '{name}'"
        if name not in SPATIAL_CLASSES:
            raise UserError(f"{where} is not a known spatial class "
                            f"({', '.join(SPATIAL_CLASSES)})")
        if not isinstance(spec, dict) or not _is_number(spec.get("frequency")):
            raise UserError(f"{where} needs a numeric 'frequency'")
        if not 0 <= spec["frequency"] <= 1:
            raise UserError(f"{where}: frequency {spec['frequency']} outside 0..1")
        total += spec["frequency"]
        params = spec.get("parameters")
        if not isinstance(params, list) or not params:
            raise UserError(f"{where} needs a non-empty 'parameters' list")
        for i, p in enumerate(params):
            if not (isinstance(p, dict) and isinstance(p.get("keys", {}), dict)
                    and isinstance(p.get("stats", {}), dict)
                    and _is_number(p.get("conditional_frequency"))):
                raise UserError(f"{where}: parameters[{i}] needs 'keys', 'stats' objects and a "
                                f"numeric 'conditional_frequency'")
            for key, value in {**p.get("stats", {}), **p.get("keys", {})}.items():
                choices = [value]
                if isinstance(value, dict):
                    choices = value.get("RANDOM")
                    if set(value) != {"RANDOM"} or not isinstance(choices, list) or not choices:
                        raise UserError(f"{where}: parameters[{i}].{key} must be a value or "
                                        f"{{'RANDOM': [choices]}}")
                for choice in choices:
                    _check_parameter(key, choice, f"{where}: parameters[{i}].{key}")
        domains = spec.get("domain_classes")
        if not isinstance(domains, list) or not domains:
            raise UserError(f"{where} needs a non-empty 'domain_classes' list")
        for i, d in enumerate(domains):
            dwhere = f"{where}: domain_classes[{i}]"
            if not isinstance(d, dict) or not _is_number(d.get("frequency")):
                raise UserError(f"{dwhere} needs a numeric 'frequency'")
            if "random" in d:
                values = d.get("values")
                if not isinstance(values, dict) or not values or not all(
                        k in VALUE_CLASSES and _is_number(v) and v >= 0 for k, v in values.items()):
                    raise UserError(f"{dwhere}: 'random' needs 'values' mapping value classes "
                                    f"({', '.join(VALUE_CLASSES)}) to probabilities")
            else:
                bins = {k: v for k, v in d.items() if k not in ("count", "frequency")}
                if not bins:
                    raise UserError(f"{dwhere} names no value class")
                for k, v in bins.items():
                    if k not in VALUE_CLASSES:
                        raise UserError(f"{dwhere}: unknown value class '{k}'")
                    _check_bin(v, f"{dwhere}.{k}")
    if total <= 0:
        raise UserError(f"{source}: class frequencies sum to zero")
