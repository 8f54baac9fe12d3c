"""Turn a ModelGraph back into a `keras.Model` and carry the weights over by layer name."""

from __future__ import annotations

import ast
import re
import warnings
from typing import Any

import keras
import numpy as np

from classes_tool.errors import UserError
from classes_tool.graph.model_graph import ModelGraph, Node, TensorRef, with_registered_names

_UNRECOGNIZED = re.compile(r"Unrecognized keyword arguments passed to \w+: (\{.*?\})")


def _instantiate(spec: dict[str, Any], custom_objects: dict[str, Any] | None
                 ) -> keras.layers.Layer:
    builtin = getattr(keras.layers, spec["class_name"], None)
    custom = spec.get("module") is None and spec.get("registered_name")
    if spec.get("module") in ("keras.layers", None) and not custom and isinstance(builtin, type):
        return builtin.from_config(spec["config"])  # precise errors, no wrapper
    return keras.saving.deserialize_keras_object(spec, custom_objects=custom_objects)


def _deserialize(node: Node, custom_objects: dict[str, Any] | None) -> keras.layers.Layer:
    spec: dict[str, Any] = {"class_name": node.class_name, "config": node.config}
    if node.module:
        spec["module"] = node.module
        spec["registered_name"] = node.registered_name
    elif node.registered_name:
        # a custom class of the user's own script: Keras writes `module: None` for classes of
        # `__main__` and finds them by their registered name ("package>Class") alone
        spec["registered_name"] = node.registered_name
    elif hasattr(keras.layers, node.class_name):  # Keras 2 configs name no module
        spec["module"] = "keras.layers"
    custom_objects = with_registered_names(custom_objects, [(node.registered_name,
                                                             node.class_name)])
    dropped: dict[str, Any] = {}
    while True:
        try:
            layer = _instantiate(spec, custom_objects)
            break
        except (TypeError, ValueError) as exc:
            # Keras 2 configs may carry arguments Keras 3 removed (e.g. DepthwiseConv2D's
            # `groups`): drop exactly the ones Keras names, once each, and say so.
            found = _UNRECOGNIZED.search(str(exc))
            extra = ast.literal_eval(found.group(1)) if found else {}
            if not extra or set(extra) & set(dropped):
                raise UserError(f"cannot rebuild layer '{node.name}' of class "
                                f"{node.class_name}: {str(exc).splitlines()[0]}") from None
            dropped.update(extra)
            node.config = {k: v for k, v in node.config.items() if k not in extra}
            spec["config"] = node.config
    if dropped:
        warnings.warn(f"layer '{node.name}': dropped legacy arguments {dropped} that Keras 3 "
                      "does not accept", stacklevel=2)
    return layer


def _fill(template: Any, tensors: dict[str, list[Any]]) -> Any:
    if isinstance(template, TensorRef):
        return tensors[template.layer][template.index]
    if isinstance(template, list):
        return [_fill(x, tensors) for x in template]
    if isinstance(template, tuple):
        return tuple(_fill(x, tensors) for x in template)
    if isinstance(template, dict):
        return {k: _fill(v, tensors) for k, v in template.items()}
    return template


def set_layer_weights(layer: keras.layers.Layer, arrays: list[np.ndarray]) -> None:
    """Assign arrays in the legacy order (trainable, then non-trainable), checking shapes."""
    variables = layer.trainable_weights + layer.non_trainable_weights
    if len(variables) != len(arrays):
        raise UserError(f"layer '{layer.name}' has {len(variables)} weights but the file holds "
                        f"{len(arrays)}")
    for var, value in zip(variables, arrays, strict=True):
        if tuple(var.shape) != tuple(np.shape(value)):
            raise UserError(f"weight {var.path} of layer '{layer.name}' has shape "
                            f"{tuple(var.shape)} but the file holds {np.shape(value)}")
        var.assign(value)


def build_model(graph: ModelGraph, custom_objects: dict[str, Any] | None = None,
                load_weights: bool = True) -> keras.Model:
    """Create the layers, call them in graph order, and copy the weights by layer name."""
    tensors: dict[str, list[Any]] = {}
    layers: dict[str, keras.layers.Layer] = {}
    for node in graph.nodes:
        if node.is_input:
            tensors[node.name] = [keras.Input(shape=node.input_shape, dtype=node.dtype,
                                              name=node.name)]
            continue
        layer = _deserialize(node, custom_objects)
        try:
            out = layer(*_fill(node.args, tensors), **_fill(node.kwargs, tensors))
        except Exception as exc:  # noqa: BLE001 - report which layer cannot be called
            raise UserError(f"cannot call layer '{node.name}' ({node.class_name}) on its inputs: "
                            f"{str(exc).splitlines()[0]}") from None
        tensors[node.name] = list(out) if isinstance(out, (list, tuple)) else [out]
        layers[node.name] = layer
    inputs = [tensors[name][0] for name in graph.inputs]
    outputs = [tensors[r.layer][r.index] for r in graph.outputs]
    model = keras.Model(inputs=inputs if len(inputs) > 1 else inputs[0],
                        outputs=outputs if len(outputs) > 1 else outputs[0], name=graph.name)
    if load_weights:
        for name, arrays in graph.weights.items():
            if name in layers and arrays:
                set_layer_weights(layers[name], arrays)
    return model
