"""Check a converted Keras model against ONNX Runtime on random inputs.

Conversion is only trusted after this check: the same random batch goes through ONNX Runtime
(on the untouched ONNX model) and through the Keras model, and the largest absolute difference
over all outputs is reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import onnx


def _nchw_to_nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1) if a.ndim == 4 else a


def verify_model(onnx_model: onnx.ModelProto, keras_model: keras.Model,
                 input_shapes: Sequence[Sequence[int | None]], batch: int = 2,
                 seed: int = 0) -> float:
    """Max |ONNX Runtime - Keras| over all outputs for one random batch (NaN counts as inf).

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
    worst = 0.0
    for ref, out in zip(expected, got, strict=True):
        ref = _nchw_to_nhwc(np.asarray(ref, dtype=np.float64))
        out = np.asarray(out, dtype=np.float64)
        if ref.shape != out.shape:
            return float("inf")
        if ref.size == 0:
            continue
        diff = np.abs(ref - out)
        worst = max(worst, float("inf") if not np.all(np.isfinite(diff)) else float(diff.max()))
    return worst
