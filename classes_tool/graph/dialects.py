"""Parse Keras model configs (Keras 2 and Keras 3 dialects, Functional and Sequential).

Keras 2 (legacy) inbound nodes: `[[["conv2d", 0, 0, {}], ...]]`, one list per call.
Keras 3 inbound nodes: `[{"args": [...], "kwargs": {...}}]` with tensors written as
`{"class_name": "__keras_tensor__", "config": {"keras_history": [layer, node, index]}}`.
"""

from __future__ import annotations

from typing import Any

from classes_tool.errors import UserError
from classes_tool.graph.model_graph import ModelGraph, Node, TensorRef

FUNCTIONAL = {"Functional", "Model"}
SEQUENTIAL = {"Sequential"}
_SHAPE_KEYS = ("batch_input_shape", "batch_shape", "input_shape")


def parse_model_config(config: dict[str, Any]) -> ModelGraph:
    """Turn a `model_config` dict (`{"class_name": ..., "config": ...}`) into a ModelGraph."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise UserError("the model config has no 'class_name'; is this a Keras model file?")
    kind = config["class_name"]
    body = config.get("config", {})
    if kind in SEQUENTIAL:
        return _parse_sequential(body)
    if kind in FUNCTIONAL:
        return _parse_functional(body)
    raise UserError(f"unsupported model class '{kind}': only Functional and Sequential models "
                    "can be read without their code")


def _ref_from_history(history: list[Any], owner: str) -> TensorRef:
    layer, node_index, tensor_index = history[0], int(history[1]), int(history[2])
    if node_index != 0:
        raise UserError(f"layer '{layer}' is called more than once (a shared layer, used by "
                        f"'{owner}'); shared layers are not supported")
    return TensorRef(layer, tensor_index)


def _keras3_template(obj: Any, owner: str) -> Any:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return _ref_from_history(obj["config"]["keras_history"], owner)
        return {k: _keras3_template(v, owner) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keras3_template(v, owner) for v in obj]
    return obj


def _inbound(layer: dict[str, Any]) -> tuple[list[Any], dict[str, Any], str]:
    """Call args/kwargs of a layer entry and the dialect they were written in."""
    name = layer.get("name") or layer["config"]["name"]
    inbound = layer.get("inbound_nodes", [])
    if not inbound:
        return [], {}, "none"
    if len(inbound) > 1:
        raise UserError(f"layer '{name}' is called {len(inbound)} times (a shared layer); "
                        "shared layers are not supported")
    call = inbound[0]
    if isinstance(call, dict):  # Keras 3
        return (_keras3_template(call.get("args", []), name),
                _keras3_template(call.get("kwargs", {}), name), "keras3")
    if isinstance(call, list):  # Keras 2: [[layer, node, tensor, kwargs], ...]
        refs = [_ref_from_history(entry, name) for entry in call]
        kwargs = dict(call[0][3]) if len(call[0]) > 3 and isinstance(call[0][3], dict) else {}
        return ([refs[0]] if len(refs) == 1 else [refs]), kwargs, "keras2"
    raise UserError(f"cannot read the inbound nodes of layer '{name}'")


def _input_node(name: str, config: dict[str, Any], shape: Any = None) -> Node:
    shape = shape or next((config[k] for k in _SHAPE_KEYS[:2] if config.get(k)), None)
    if shape is None:
        raise UserError(f"input '{name}' has no shape in the model config")
    dtype = config.get("dtype") or "float32"
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name", "float32")
    return Node(name=name, class_name="InputLayer", config={}, input_shape=tuple(shape[1:]),
                dtype=str(dtype))


def _keras2_compat(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Keras 2 wrote BatchNormalization's axis as a one-element list; Keras 3 wants an int."""
    axis = config.get("axis")
    if class_name == "BatchNormalization" and isinstance(axis, list) and len(axis) == 1:
        config = {**config, "axis": int(axis[0])}
    return config


def _layer_node(layer: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> Node:
    config = {k: v for k, v in layer["config"].items() if k not in _SHAPE_KEYS}
    if "module" not in layer:
        config = _keras2_compat(layer["class_name"], config)
    return Node(name=config["name"], class_name=layer["class_name"], config=config, args=args,
                kwargs=kwargs, module=layer.get("module"),
                registered_name=layer.get("registered_name"))


def _io_refs(spec: Any) -> list[TensorRef]:
    if isinstance(spec, dict):
        spec = list(spec.values())
    if spec and isinstance(spec[0], str):
        spec = [spec]
    return [TensorRef(s[0], int(s[2])) for s in spec]


def _parse_functional(body: dict[str, Any]) -> ModelGraph:
    nodes: list[Node] = []
    dialects = set()
    for layer in body.get("layers", []):
        name = layer.get("name") or layer["config"]["name"]
        if layer["class_name"] == "InputLayer":
            nodes.append(_input_node(name, layer["config"]))
            continue
        args, kwargs, dialect = _inbound(layer)
        dialects.add(dialect)
        nodes.append(_layer_node({**layer, "config": {**layer["config"], "name": name}},
                                 args, kwargs))
    inputs = [r.layer for r in _io_refs(body.get("input_layers", []))]
    outputs = _io_refs(body.get("output_layers", []))
    dialect = "keras2" if "keras2" in dialects else "keras3"
    return ModelGraph(name=body.get("name", "model"), nodes=nodes, inputs=inputs,
                      outputs=outputs, dialect=dialect)


def _parse_sequential(body: dict[str, Any]) -> ModelGraph:
    layers = list(body.get("layers", []))
    if not layers:
        raise UserError("the Sequential model has no layers")
    nodes: list[Node] = []
    if layers[0]["class_name"] == "InputLayer":
        first = layers.pop(0)
        nodes.append(_input_node(first["config"]["name"], first["config"]))
    else:
        shape = next((layers[0]["config"].get(k) for k in _SHAPE_KEYS[:2]
                      if layers[0]["config"].get(k)), None) or body.get("build_input_shape")
        if shape is None:
            raise UserError("the Sequential model was never built: its input shape is unknown")
        nodes.append(_input_node(f"{layers[0]['config']['name']}_input", layers[0]["config"],
                                 shape))
    dialect = "keras3" if any("module" in lyr for lyr in layers) else "keras2"
    previous = nodes[0].name
    for layer in layers:
        node = _layer_node(layer, [TensorRef(previous, 0)], {})
        nodes.append(node)
        previous = node.name
    return ModelGraph(name=body.get("name", "sequential"), nodes=nodes, inputs=[nodes[0].name],
                      outputs=[TensorRef(previous, 0)], dialect=dialect)
