"""Helpers for the converter tests: build ONNX graphs with onnx.helper and compare a converted
Keras model with ONNX Runtime directly (independently of the converter's own verification)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def make_onnx(path, nodes, inputs, outputs, initializers=None, opset=17):
    """Write an ONNX model; `inputs`/`outputs` are (name, shape) pairs (shape may hold None)."""
    inits = [numpy_helper.from_array(np.asarray(v), name=k)
             for k, v in (initializers or {}).items()]
    graph = helper.make_graph(
        nodes, "test_graph",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    if all(s is not None for _, s in outputs):
        onnx.checker.check_model(model)  # (the checker insists on output shapes)
    onnx.save(model, str(path))
    return path


def ort_vs_keras(onnx_path, keras_model, shapes, batch=3, seed=1):
    """Max abs difference between ONNX Runtime and `keras_model` on one random batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((batch, *s)).astype(np.float32) for s in shapes]
    ref = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), xs, strict=True)})
    kx = [x.transpose(0, 2, 3, 1) if x.ndim == 4 else x for x in xs]
    got = keras_model(kx if len(kx) > 1 else kx[0], training=False)
    got = [np.asarray(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
    worst = 0.0
    for r, g in zip(ref, got, strict=True):
        r = r.transpose(0, 2, 3, 1) if r.ndim == 4 else r
        assert r.shape == g.shape, (r.shape, g.shape)
        worst = max(worst, float(np.abs(r - g).max()))
    return worst


@pytest.fixture
def rng():
    return np.random.default_rng(0)
