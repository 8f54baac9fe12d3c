"""Turn a ModelGraph back into a `keras.Model` and carry the weights over by layer name."""

from __future__ import annotations

import ast
import re
import warnings
from typing import Any

import keras
import numpy as np

from classes_tool.errors import UserError
from classes_tool.graph.keras_classes import find_keras_class
from classes_tool.graph.model_graph import ModelGraph, Node, TensorRef, with_registered_names

_UNRECOGNIZED = re.compile(r"Unrecognized keyword arguments passed to \w+: (?=\{)")


def unrecognized_kwargs(message: str) -> dict[str, Any]:
    """The dict of arguments a Keras error says it does not accept ({} if none or unreadable).

    The dict may nest (an initializer's config), so it is cut where its braces balance, not at
    the first '}'."""
    found = _UNRECOGNIZED.search(message)
    if not found:
        return {}
    text, depth, quote = message[found.end():], 0, ""
    for i, ch in enumerate(text):
        if quote:
            if ch == "\\":
                continue
            if ch == quote and text[i - 1] != "\\":
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "{[(":
            depth += 1
        elif ch in "}])":
            depth -= 1
            if depth == 0:
                try:
                    value = ast.literal_eval(text[:i + 1])
                except (SyntaxError, ValueError):
                    return {}
                return value if isinstance(value, dict) else {}
    return {}


def _instantiate(spec: dict[str, Any], custom_objects: dict[str, Any] | None
                 ) -> keras.layers.Layer:
    builtin = getattr(keras.layers, spec["class_name"], None)
    custom = spec.get("module") is None and spec.get("registered_name")
    if spec.get("module") in ("keras.layers", None) and not custom and isinstance(builtin, type):
        return builtin.from_config(spec["config"])  # precise errors, no wrapper
    if spec.get("module") is None and not custom:
        # no module (Keras 2, Keras 3 .h5): the user's classes first, then all of Keras
        name = spec["class_name"]
        cls = (custom_objects or {}).get(name) or \
            (custom_objects or {}).get(name.rsplit(">", 1)[-1]) or find_keras_class(name)
        if cls is not None:
            return cls.from_config(spec["config"])
        raise _UnknownClass(name)
    return keras.saving.deserialize_keras_object(spec, custom_objects=custom_objects)


class _UnknownClass(Exception):
    """A layer class found neither in Keras nor among the classes the user passed."""


def _label(node: Node) -> str:
    """How a message names a node: its name, and the file's name when that differs."""
    if node.source_name and node.source_name != node.name:
        return f"'{node.name}' (saved as '{node.source_name}')"
    return f"'{node.name}'"


def _deserialize(node: Node, custom_objects: dict[str, Any] | None) -> keras.layers.Layer:
    spec: dict[str, Any] = {"class_name": node.class_name, "config": node.config}
    if node.module:
        spec["module"] = node.module
        spec["registered_name"] = node.registered_name
    elif node.registered_name:
        # a custom class of the user's own script: Keras writes `module: None` for classes of
        # `__main__` and finds them by their registered name ("package>Class") alone
        spec["registered_name"] = node.registered_name
    custom_objects = with_registered_names(custom_objects, [(node.registered_name,
                                                             node.class_name)])
    dropped: dict[str, Any] = {}
    while True:
        try:
            layer = _instantiate(spec, custom_objects)
            break
        except _UnknownClass:
            raise UserError(
                f"layer {_label(node)} is of class '{node.class_name}', which is not a Keras "
                "class: pass its class to classes_tool.graph.read_model/build_model as "
                f"custom_objects={{'{node.class_name}': TheClass}}, or import the module that "
                "registers it (keras.saving.register_keras_serializable) first") from None
        except (TypeError, ValueError) as exc:
            # Keras 2 configs may carry arguments Keras 3 removed (e.g. DepthwiseConv2D's
            # `groups`, SeparableConv2D's `kernel_initializer`): drop exactly the ones Keras
            # names, once each, and say so.
            extra = unrecognized_kwargs(str(exc))
            if not extra or set(extra) & set(dropped):
                raise UserError(f"cannot rebuild layer {_label(node)} of class "
                                f"{node.class_name}: {str(exc).splitlines()[0]}") from None
            dropped.update(extra)
            node.config = {k: v for k, v in node.config.items() if k not in extra}
            spec["config"] = node.config
    if dropped:
        warnings.warn(f"layer {_label(node)}: dropped legacy arguments {sorted(dropped)} that "
                      "Keras 3 does not accept", stacklevel=2)
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
    _assign(layer.trainable_weights + layer.non_trainable_weights, arrays,
            f"layer '{layer.name}'")
    finalize(layer)


def _assign(variables: list, arrays: list[np.ndarray], owner: str) -> None:
    """Assign `arrays` to `variables` in order, after checking their count and each shape
    (`owner` names the layer or nested model in the message)."""
    if len(variables) != len(arrays):
        raise UserError(f"{owner} has {len(variables)} weights but the file holds {len(arrays)}")
    for var, value in zip(variables, arrays, strict=True):
        if tuple(var.shape) != tuple(np.shape(value)):
            raise UserError(f"weight {var.path} of {owner} has shape {tuple(var.shape)} but the "
                            f"file holds {np.shape(value)}")
        var.assign(value)


def finalize(layer: keras.layers.Layer) -> None:
    """Let a layer derive its working state from assigned weights, as Keras's own loaders do
    (an adapted Normalization computes its mean and variance tensors here)."""
    if hasattr(layer, "finalize_state"):
        layer.finalize_state()


def set_group_weights(layers: list[keras.layers.Layer], arrays: list[np.ndarray], group: str,
                      trainable: bool = True) -> None:
    """Assign the arrays a nested model stored as one list (all its layers' trainable weights,
    then all their non-trainable ones; layer by layer when it was saved untrainable)."""
    if trainable:
        variables = [v for layer in layers for v in layer.trainable_weights] + \
            [v for layer in layers for v in layer.non_trainable_weights]
    else:
        variables = [v for layer in layers
                     for v in layer.trainable_weights + layer.non_trainable_weights]
    _assign(variables, arrays, f"nested model '{group}'")
    for layer in layers:
        finalize(layer)


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
            raise UserError(f"cannot call layer {_label(node)} ({node.class_name}) on its "
                            f"inputs: {str(exc).splitlines()[0]}") from None
        tensors[node.name] = list(out) if isinstance(out, (list, tuple)) else [out]
        layers[node.name] = layer
    inputs = [tensors[name][0] for name in graph.inputs]
    outputs = [tensors[r.layer][r.index] for r in graph.outputs]
    model = keras.Model(inputs=inputs if len(inputs) > 1 else inputs[0],
                        outputs=outputs if len(outputs) > 1 else outputs[0], name=graph.name)
    if load_weights:
        for node in graph.nodes:
            key = graph.weight_key(node)
            if node.name in layers and key is not None and graph.weights.get(key):
                set_layer_weights(layers[node.name], graph.weights[key])
        for group, leaves in graph.weight_groups.items():
            if graph.weights.get(group):
                set_group_weights([layers[n] for n in leaves if n in layers],
                                  graph.weights[group], group,
                                  trainable=group not in graph.untrainable_groups)
    return model
