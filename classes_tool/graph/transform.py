"""Insert layers after chosen nodes of a live model (the in-memory twin of file patching)."""

from __future__ import annotations

from collections.abc import Callable

import keras

from classes_tool.errors import UserError
from classes_tool.graph.model_graph import ModelGraph, Node
from classes_tool.graph.reader import graph_from_model
from classes_tool.graph.rebuild import build_model


def node_from_layer(layer: keras.layers.Layer) -> Node:
    """A graph node that will deserialize into a copy of `layer` (not yet connected)."""
    spec = keras.saving.serialize_keras_object(layer)
    return Node(name=layer.name, class_name=spec["class_name"], config=spec["config"],
                module=spec.get("module"), registered_name=spec.get("registered_name"))


def output_shapes(model: keras.Model) -> dict[str, tuple[int, ...]]:
    """Sample shape (no batch axis) of output 0 of every layer of a built model."""
    shapes = {}
    for layer in model.layers:
        out = layer.output
        out = out[0] if isinstance(out, (list, tuple)) else out
        shapes[layer.name] = tuple(out.shape[1:])
    return shapes


def splice(graph: ModelGraph, shapes: dict[str, tuple[int, ...]], node_names: list[str],
           make_layer: Callable[[str, tuple[int, ...]], keras.layers.Layer]) -> ModelGraph:
    """A copy of `graph` with `make_layer(name, shape)` inserted after each named node."""
    patched = graph.copy()
    for name in node_names:
        if name not in shapes:
            raise UserError(f"no node named '{name}' in model '{graph.name}'")
        patched.insert_after(name, node_from_layer(make_layer(name, shapes[name])))
    return patched


def insert_after(model: keras.Model, node_names: list[str],
                 make_layer: Callable[[str, tuple[int, ...]], keras.layers.Layer]
                 ) -> keras.Model:
    """A new model with `make_layer(node_name, output_shape)` after each named node.

    Every consumer of the node (and the model output, if it was one) reads from the new layer;
    all original weights are copied by layer name. The new layers start from their own
    initial state: set it on the returned model (`model.get_layer(name)`).
    """
    graph = graph_from_model(model)
    return build_model(splice(graph, output_shapes(model), node_names, make_layer))
