"""Check a converted Keras model against ONNX Runtime on random inputs.

Conversion is only trusted after this check: the same random batch goes through ONNX Runtime
(on the untouched ONNX model) and through the Keras model, and every output element must agree
within ``atol + rtol * |ONNX Runtime value|``: an absolute bound for values near zero plus a
bound relative to the value's magnitude, because float32 round-off grows with it (4 ulps of a
box coordinate near 300 are 1.2e-4).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import onnx

from classes_tool.errors import UserError

#: Default tolerance of the check: absolute part and magnitude-relative part.
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-5

#: The default ONNX operator domain (written "" or "ai.onnx").
DEFAULT_DOMAINS = ("", "ai.onnx")


def _runtime_loads_opset(opset: int) -> bool:
    """Whether ONNX Runtime loads a one-node model of the default domain at `opset`, allowing
    released opsets only (its default; an opset still in development is refused)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8  # any IR version the runtime reads: the probe is about the opset
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.allow_released_opsets_only", "1")
    try:
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - the runtime's own exception types (Fail, ...)
        return False
    return True


@functools.lru_cache(maxsize=1)
def onnxruntime_max_opset() -> int | None:
    """The newest opset of the default ONNX domain that the installed ONNX Runtime runs, found
    by loading a one-node model (ONNX Runtime has no call that says it; its refusal names the
    number only in its message text). None when it runs none (a broken installation: the
    verification then says why)."""
    newest = known = onnx.defs.onnx_opset_version()
    if _runtime_loads_opset(newest):  # the usual case: onnx and the runtime agree
        while newest < known + 8 and _runtime_loads_opset(newest + 1):
            newest += 1
        return newest
    for opset in range(newest - 1, 0, -1):
        if _runtime_loads_opset(opset):
            return opset
    return None


def check_runtime_opsets(onnx_model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Refuse a model whose default-domain opset ONNX Runtime does not run, with or without
    verification: a conversion is only trusted once ONNX Runtime can check it, and an opset
    newer than the runtime may give an op a meaning it does not know."""
    imported = [entry.version for entry in onnx_model.opset_import
                if entry.domain in DEFAULT_DOMAINS]
    if not imported:
        return
    newest = onnxruntime_max_opset()
    if newest is not None and max(imported) > newest:
        import onnxruntime as ort

        raise UserError(f"{path} uses ONNX opset {max(imported)}; the installed onnxruntime "
                        f"{ort.__version__} runs opsets up to {newest}, and every conversion "
                        f"must be one it can check: export the model with opset {newest} or "
                        "older")


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
