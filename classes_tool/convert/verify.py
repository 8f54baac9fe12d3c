"""Check a converted Keras model against ONNX Runtime on random inputs.

Conversion is only trusted after this check: the same random batch goes through ONNX Runtime
(on the untouched ONNX model) and through the Keras model, and every output element must agree
within ``atol + rtol * |ONNX Runtime value|``: an absolute bound for values near zero plus a
bound relative to the value's magnitude, because float32 round-off grows with it (4 ulps of a
box coordinate near 300 are 1.2e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import onnx

#: Default tolerance of the check: absolute part and magnitude-relative part.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-5


def _nchw_to_nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


@dataclass(frozen=True)
class Differences:
    """How far the Keras outputs are from ONNX Runtime's, over all outputs.

    `max_abs_diff`: the largest ``|keras - ort|``; `max_rel_diff`: the largest
    ``|keras - ort| / |ort|`` over elements where ``ort != 0``; `excess`: the largest
    ``|keras - ort| / (atol + rtol * |ort|)`` (the check passes when it is at most 1), and
    `worst`: the (ort, keras) values of the element where that happens (None when no element
    was compared). A non-finite difference or an output of the wrong shape counts as inf.
    """

    max_abs_diff: float
    max_rel_diff: float
    excess: float
    atol: float
    rtol: float
    worst: tuple[float, float] | None = None

    @property
    def within(self) -> bool:
        return self.excess <= 1.0

    def describe(self) -> str:
        """'max abs difference ..., max relative difference ...' plus the worst element."""
        text = (f"max abs difference {self.max_abs_diff:.3g}, max relative difference "
                f"{self.max_rel_diff:.3g}")
        if self.worst is not None and not self.within:
            text += f" (worst element: ONNX Runtime {self.worst[0]:.8g}, Keras {self.worst[1]:.8g})"
        return text

    def bound(self) -> str:
        return f"abs {self.atol:g} + rel {self.rtol:g} x |value|"


def run_both(onnx_model: onnx.ModelProto, keras_model: keras.Model,
             input_shapes: Sequence[Sequence[int | None]], batch: int = 2,
             seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ONNX Runtime output, Keras output) pairs for one random batch, both NHWC for 4-D.

    `input_shapes` are the ONNX shapes of the graph inputs (batch entry ignored). A graph whose
    inputs declare a fixed batch size is run with that batch size.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds, keras_inputs = {}, []
    for info, shape in zip(session.get_inputs(), input_shapes, strict=True):
        declared = info.shape[0] if info.shape else None
        n = declared if isinstance(declared, int) and declared > 0 else batch
        x = rng.standard_normal((n, *[int(d) for d in shape[1:]])).astype(np.float32)
        feeds[info.name] = x.astype(np.float16) if "float16" in info.type else x
        keras_inputs.append(_nchw_to_nhwc(x))
    expected = session.run(None, feeds)
    got = keras_model(keras_inputs if len(keras_inputs) > 1 else keras_inputs[0], training=False)
    got = got if isinstance(got, (list, tuple)) else [got]
    return [(_nchw_to_nhwc(np.asarray(ref, dtype=np.float64)), np.asarray(out, dtype=np.float64))
            for ref, out in zip(expected, got, strict=True)]


def compare(pairs: Sequence[tuple[np.ndarray, np.ndarray]], atol: float = DEFAULT_ATOL,
            rtol: float = DEFAULT_RTOL) -> Differences:
    """The differences of (reference, converted) output pairs under ``atol + rtol * |ref|``."""
    max_abs = max_rel = excess = 0.0
    worst = None
    for ref, out in pairs:
        ref, out = np.asarray(ref, dtype=np.float64), np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            return Differences(float("inf"), float("inf"), float("inf"), atol, rtol)
        if ref.size == 0:
            continue
        diff = np.abs(ref - out)
        diff[~np.isfinite(diff)] = np.inf  # NaN (also inf - inf) counts as infinitely far
        max_abs = max(max_abs, float(diff.max()))
        nonzero = ref != 0
        if nonzero.any():
            with np.errstate(invalid="ignore"):
                rel = diff[nonzero] / np.abs(ref[nonzero])
            rel[~np.isfinite(rel)] = np.inf
            max_rel = max(max_rel, float(rel.max()))
        with np.errstate(invalid="ignore"):
            ratio = diff / (atol + rtol * np.abs(ref))
        ratio[~np.isfinite(ratio)] = np.inf
        i = int(np.argmax(ratio))
        if worst is None or float(ratio.flat[i]) > excess:
            excess = float(ratio.flat[i])
            worst = (float(ref.flat[i]), float(out.flat[i]))
    return Differences(max_abs, max_rel, excess, atol, rtol, worst)


def verify_model(onnx_model: onnx.ModelProto, keras_model: keras.Model,
                 input_shapes: Sequence[Sequence[int | None]], batch: int = 2,
                 seed: int = 0) -> float:
    """Max |ONNX Runtime - Keras| over all outputs for one random batch (NaN counts as inf).

    `verify_differences` gives the relative difference and the tolerance check as well.
    """
    return compare(run_both(onnx_model, keras_model, input_shapes, batch, seed)).max_abs_diff


def verify_differences(onnx_model: onnx.ModelProto, keras_model: keras.Model,
                       input_shapes: Sequence[Sequence[int | None]],
                       atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, batch: int = 2,
                       seed: int = 0) -> Differences:
    """The `Differences` of one random batch under ``atol + rtol * |ONNX Runtime value|``."""
    return compare(run_both(onnx_model, keras_model, input_shapes, batch, seed), atol, rtol)
