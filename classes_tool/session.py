"""A model session: one model file opened for fault simulation, whatever its kind.

Opening reads any supported file (Keras 2 or 3 `.h5`, `.keras`, ONNX) into a graph and rebuilds
it as a Keras model, with each node's output shape; the session then turns data files into
the model's inputs, chooses target nodes, runs the golden model up to chosen nodes, and measures
each target's normal value range on calibration data. Patching (`patcher`) and the campaign
targets all start from here, so a model is read, checked and calibrated the same way
everywhere. `load_keras_model` opens a Keras file as is (targets that replace layers
themselves, such as the systolic one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from classes_tool.data import EXAMPLE_DATA, load_npz, model_inputs
from classes_tool.errors import UserError
from classes_tool.graph import ModelGraph, build_model, file_kind, graph_from_model, read_model
from classes_tool.graph.model_graph import Node
from classes_tool.graph.transform import output_shapes
from classes_tool.limits import check_model_file
from classes_tool.registration import register_layers
from classes_tool.simulator.error_model import available_error_models, error_model_for_layer

CALIBRATION_SAMPLES = 512

@dataclass
class ModelSession:
    """A model read from a file: its graph, the rebuilt Keras model and each node's shape."""

    path: Path
    graph: ModelGraph
    model: keras.Model
    shapes: dict[str, tuple[int, ...]]


def load(path: str | Path, input_shapes: Sequence[tuple[int, ...]] | None = None) -> ModelSession:
    """Read any supported model file (.h5, .keras, .onnx) and rebuild it."""
    path = Path(path)
    kind = file_kind(path)
    if input_shapes and kind != "onnx":  # a Keras file fixes its own shapes
        raise UserError(f"input shapes (--input-shape, or input_shape in a config) apply to "
                        f"ONNX models only; {path.name} is a {kind} file")
    if kind == "onnx":
        from classes_tool.convert import load_onnx_as_keras  # optional heavy import

        graph = graph_from_model(load_onnx_as_keras(path, input_shapes=input_shapes))
        graph.source_format = "onnx"
    else:
        graph = read_model(path)  # which checks the sizes it declares before reading them
    model = build_model(graph)
    return ModelSession(path=path, graph=graph, model=model, shapes=output_shapes(model))


def select_targets(graph: ModelGraph, after: Sequence[str] = (),
                   after_types: Sequence[str] = ()) -> list[str]:
    """Node names chosen by name and/or by layer class, in graph order, without duplicates."""
    if not after and not after_types:
        raise UserError("choose where to inject: --after NODE and/or --after-type LAYER_CLASS")
    chosen = set()
    for name in after:
        node = graph.node(name)
        if node.is_input:
            raise UserError(f"'{name}' is a model input; choose a layer")
        chosen.add(node.name)  # the file's name of a renamed node ('conv1/conv') works too
    classes = {n.class_name for n in graph.nodes}
    for class_name in after_types:
        if class_name not in classes:
            raise UserError(f"no layer of type '{class_name}' in the model; types present: "
                            f"{', '.join(sorted(classes))}")
        chosen.update(graph.nodes_of_type(class_name))
    return [n for n in graph.names() if n in chosen]


def data_inputs(loaded: ModelSession, data: dict[str, np.ndarray], source: str
                ) -> list[np.ndarray]:
    """`model_inputs` for a loaded model file: one converted from ONNX reads image data in the
    ONNX layout too."""
    return model_inputs(loaded.model, data, source,
                        onnx_layout=loaded.graph.source_format == "onnx")


def calibration_arrays(loaded: ModelSession, calibration: str | Path | None) -> list[np.ndarray]:
    """Calibration inputs: the given .npz, else the shipped example data if it fits."""
    if calibration is not None:
        return [a[:CALIBRATION_SAMPLES] for a in
                data_inputs(loaded, load_npz(calibration), str(calibration))]
    if EXAMPLE_DATA.is_file():
        try:
            return [a[:CALIBRATION_SAMPLES] for a in
                    data_inputs(loaded, load_npz(EXAMPLE_DATA), "example data")]
        except UserError:
            pass
    raise UserError("the normal value range of each target comes from calibration data: pass "
                    "--calibration DATA.npz (arrays 'x' or one per input name) or --range LOW,HIGH")


def layer_outputs(loaded: ModelSession, names: Sequence[str], arrays: list[np.ndarray],
                  batch_size: int) -> list[np.ndarray]:
    """The golden output of each named layer for all inputs, run eagerly in batches (a Keras
    `predict` would first build a data pipeline and trace a function, most of the set-up of a
    small campaign)."""
    probe = keras.Model(loaded.model.inputs, [loaded.model.get_layer(n).output for n in names])
    parts = []
    for k in range(0, len(arrays[0]), batch_size):
        out = probe([a[k:k + batch_size] for a in arrays], training=False)
        parts.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
    return [np.concatenate(p) for p in zip(*parts, strict=True)]


def value_ranges(loaded: ModelSession, targets: Sequence[str], arrays: list[np.ndarray]
                 ) -> dict[str, tuple[float, float]]:
    """Min and max of each target's golden activations on the calibration inputs."""
    outs = layer_outputs(loaded, targets, arrays, batch_size=128)
    ranges = {}
    for target, out in zip(targets, outs, strict=True):
        finite = out[np.isfinite(out)]
        if finite.size == 0:
            raise UserError(f"the golden activations of '{target}' are all NaN/Inf")
        ranges[target] = (float(finite.min()), float(finite.max()))
    return ranges


def error_model_name(node: Node, requested: str) -> str:
    if requested != "auto":
        return requested
    name = error_model_for_layer(node.class_name, node.config)
    if name is None:
        raise UserError(f"layer '{node.name}' ({node.class_name}) has no error model of its own; "
                        f"pass --error-model NAME (error_model: NAME in a campaign config; "
                        f"{', '.join(available_error_models())})")
    return name



def load_keras_model(path: str | Path) -> keras.Model:
    """A Keras file loaded as it is (for targets that replace its layers themselves): the sizes
    it declares checked against memory first, every layer this tool writes registered, and
    any failure one line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"model file not found: {path}")
    check_model_file(path)
    register_layers()
    try:
        return keras.models.load_model(path, compile=False)
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(f"cannot load model {path}: {str(exc).splitlines()[0]}") from None
