"""Public entry points: convert an ONNX file to a verified Keras model (and optionally save it)."""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras

from classes_tool.errors import UserError
from classes_tool.files import atomic_path

from .converter import build_keras_model, load_onnx_model
from .verify import DEFAULT_ATOL, DEFAULT_RTOL, check_runtime_opsets, verify_differences


@dataclass
class ConversionReport:
    """What the CLI prints after converting."""

    layers: int
    max_abs_diff: float | None  # None when verification was skipped
    input_shapes: list[tuple]  # Keras input shapes (4-D image inputs are NHWC)
    output_path: Path | None
    max_rel_diff: float | None = None  # max |Keras - ORT| / |ORT| (elements with ORT != 0)


def supported_ops() -> list[str]:
    """ONNX op types that convert to layers (plus any op whose inputs are all constants)."""
    from .ops import CONVERTERS

    return sorted(CONVERTERS)


def parse_input_shapes(texts: Sequence[str] | None) -> list[tuple[int, ...]] | None:
    """Parse CLI `--input-shape 3,48,192` values (one per model input, no batch dimension)."""
    if not texts:
        return None
    shapes = []
    for text in texts:
        try:
            shape = tuple(int(t) for t in str(text).replace("x", ",").split(",") if t.strip())
        except ValueError:
            raise UserError(f"bad input shape {text!r}; expected e.g. 3,224,224") from None
        if not shape or any(d <= 0 for d in shape):
            raise UserError(f"bad input shape {text!r}; expected positive integers, "
                            "e.g. 3,224,224")
        shapes.append(shape)
    return shapes


def check_tolerance(tolerance: float) -> float:
    """A verification tolerance (its absolute part) must be a positive finite number.

    The check is ``|Keras - ONNX Runtime| <= tolerance + rtol * |ONNX Runtime|`` per element:
    a negative, zero (float round-off makes conversions differ by ~1e-7 near zero) or NaN
    tolerance fails every model after the whole conversion ran, and an infinite one silently
    switches the check off (that is what --no-verify is for).
    """
    if (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)
            or not math.isfinite(tolerance) or tolerance <= 0):
        shown = (f"{tolerance:g}" if isinstance(tolerance, numbers.Real)
                 and not isinstance(tolerance, bool) else repr(tolerance))
        raise UserError(f"bad tolerance {shown}: use a positive finite number, e.g. 1e-4 "
                        "(or --no-verify to skip the check)")
    return float(tolerance)


def check_rtol(rtol: float) -> float:
    """The relative part of the tolerance: a finite number >= 0 (0: absolute check only)."""
    if (isinstance(rtol, bool) or not isinstance(rtol, numbers.Real)
            or not math.isfinite(rtol) or rtol < 0):
        shown = (f"{rtol:g}" if isinstance(rtol, numbers.Real) and not isinstance(rtol, bool)
                 else repr(rtol))
        raise UserError(f"bad relative tolerance {shown}: use a finite number >= 0, e.g. 1e-5 "
                        "(0 for an absolute check only)")
    return float(rtol)


def convert_onnx_with_report(onnx_path: str | os.PathLike,
                             output_path: str | os.PathLike | None = None,
                             input_shapes: Sequence[Sequence[int]] | None = None,
                             verify: bool = True, tolerance: float = DEFAULT_ATOL,
                             rtol: float = DEFAULT_RTOL
                             ) -> tuple[keras.Model, ConversionReport]:
    """`convert_onnx`, also returning a report (layer count, verified differences)."""
    tolerance = check_tolerance(tolerance)  # before the (slow) conversion, not after it
    rtol = check_rtol(rtol)
    if output_path is not None and Path(output_path).suffix not in (".h5", ".keras"):
        raise UserError(f"output file must end in .h5 or .keras: {output_path}")
    onnx_model = load_onnx_model(onnx_path)
    check_runtime_opsets(onnx_model, onnx_path)  # also with --no-verify
    keras_model, converter = build_keras_model(onnx_model, input_shapes)
    lambdas = [layer.name for layer in keras_model.layers
               if isinstance(layer, keras.layers.Lambda)]
    if lambdas:  # never expected: every converter emits real or registered layers
        raise RuntimeError(f"converter produced Lambda layers: {lambdas}")
    diffs = None
    if verify:
        diffs = verify_differences(onnx_model, keras_model, converter.onnx_input_shapes,
                                   atol=tolerance, rtol=rtol)
        if not diffs.within:
            raise UserError(f"converted model differs from ONNX Runtime: {diffs.describe()}, "
                            f"beyond the tolerance {diffs.bound()} (use --tolerance to "
                            "raise the absolute part, or --no-verify)")
    if output_path is not None:
        with atomic_path(output_path) as tmp:
            keras_model.save(tmp)
    report = ConversionReport(
        layers=len(keras_model.layers),
        max_abs_diff=None if diffs is None else diffs.max_abs_diff,
        input_shapes=[tuple(t.shape[1:]) for t in keras_model.inputs],
        output_path=None if output_path is None else Path(output_path),
        max_rel_diff=None if diffs is None else diffs.max_rel_diff)
    return keras_model, report


def convert_onnx(onnx_path: str | os.PathLike, output_path: str | os.PathLike | None = None,
                 input_shapes: Sequence[Sequence[int]] | None = None, verify: bool = True,
                 tolerance: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> keras.Model:
    """Convert an ONNX file into a Keras model of real layers, checked against ONNX Runtime.

    `input_shapes`: one shape per graph input in ONNX layout without the batch dimension
    (e.g. (3, 48, 192)); it fixes dynamic dimensions so shape arithmetic folds to constants.
    4-D inputs of the Keras model are NHWC. With `output_path` (.h5 or .keras) the model is
    written atomically, and only after verification passed: every output element must be
    within ``tolerance + rtol * |ONNX Runtime value|`` (absolute plus magnitude-relative).
    """
    return convert_onnx_with_report(onnx_path, output_path, input_shapes, verify,
                                    tolerance, rtol)[0]


def load_onnx_as_keras(path: str | os.PathLike,
                       input_shapes: Sequence[Sequence[int]] | None = None,
                       verify: bool = True, tolerance: float = DEFAULT_ATOL,
                       rtol: float = DEFAULT_RTOL) -> keras.Model:
    """Convert an ONNX file in memory (for `patch`/`campaign` given an .onnx path)."""
    return convert_onnx(path, None, input_shapes, verify, tolerance, rtol)
