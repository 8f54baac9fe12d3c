"""Parse Keras model configs (Keras 2 and Keras 3 dialects, Functional and Sequential).

Keras 2 (legacy) inbound nodes: one entry per call, a nested structure whose leaves are
`[layer, node, tensor, kwargs]` (`[[["conv2d", 0, 0, {}], ...]]` for a merge; a single leaf for
an operator layer such as `["bn", 0, 0, {"y": ["skip", 0, 0], "name": null}]`, where the kwargs
may hold tensors too; `["_CONSTANT_VALUE", -1, value, kwargs]` for a constant).
Keras 3 inbound nodes: `[{"args": [...], "kwargs": {...}}]` with tensors written as
`{"class_name": "__keras_tensor__", "config": {"keras_history": [layer, node, index]}}`.

Three things are normalised here so the rest of the tool sees plain layers:
- operation nodes (`TFOpLambda`, Keras 3 `keras.ops` nodes) become the equivalent Keras layer
  (`operations.py`);
- a nested model (Sequential or Functional used as a layer) is replaced by its own layers,
  wired to the tensors it was called on, so each of them can be described and targeted; its
  weights stay one list that `rebuild` splits over those layers;
- names Keras 3 refuses (`conv1/conv`) or that clash after nesting are renamed
  (`conv1_conv`); the node keeps the file's name in `source_name`.
"""

from __future__ import annotations

from typing import Any

from classes_tool.errors import UserError
from classes_tool.graph.model_graph import ModelGraph, Node, TensorRef, _replace, _walk
from classes_tool.graph.operations import operation_layer

FUNCTIONAL = {"Functional", "Model"}
SEQUENTIAL = {"Sequential"}
OPERATOR_LAYERS = {"TFOpLambda", "SlicingOpLambda"}
_SHAPE_KEYS = ("batch_input_shape", "batch_shape", "input_shape")
_CONSTANT = "_CONSTANT_VALUE"


def parse_model_config(config: dict[str, Any]) -> ModelGraph:
    """Turn a `model_config` dict (`{"class_name": ..., "config": ...}`) into a ModelGraph."""
    if not isinstance(config, dict) or "class_name" not in config:
        raise UserError("the model config has no 'class_name'; is this a Keras model file?")
    kind = config["class_name"]
    if kind not in SEQUENTIAL | FUNCTIONAL:
        raise UserError(f"unsupported model class '{kind}': only Functional and Sequential models "
                        "can be read without their code")
    part = _parse_model(config, nested=False)
    graph = ModelGraph(name=part.name, nodes=part.nodes, inputs=part.inputs,
                       outputs=part.outputs, dialect=part.dialect,
                       weight_groups=part.groups, untrainable_groups=part.untrainable)
    _keras3_names(graph)
    return graph


class _Part:
    """A parsed (possibly nested) model before it becomes a ModelGraph."""

    def __init__(self, name: str, nodes: list[Node], inputs: list[str],
                 outputs: list[TensorRef], dialect: str, order: list[str]):
        self.name, self.nodes, self.inputs, self.outputs = name, nodes, inputs, outputs
        self.dialect = dialect
        self.order = order  # layer names in the model's layer order (weight order)
        self.groups: dict[str, list[str]] = {}
        self.untrainable: set[str] = set()


def _is_model(layer: dict[str, Any]) -> bool:
    return layer.get("class_name") in SEQUENTIAL | FUNCTIONAL and \
        isinstance(layer.get("config"), dict) and "layers" in layer["config"]


def _parse_model(config: dict[str, Any], nested: bool) -> _Part:
    body = config.get("config", {})
    if config["class_name"] in SEQUENTIAL:
        return _parse_sequential(body, nested)
    return _parse_functional(body)


def _ref_from_history(history: list[Any]) -> TensorRef:
    # The node index is not checked: a layer called more than once is refused where its
    # calls are read, and a nested model with its own Input is node 1 of its one outer call.
    return TensorRef(str(history[0]), int(history[2]))


def _keras3_template(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            return _ref_from_history(obj["config"]["keras_history"])
        return {k: _keras3_template(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keras3_template(v) for v in obj]
    return obj


def _is_keras2_entry(obj: Any) -> bool:
    """`[layer, node, tensor]` or `[layer, node, tensor, kwargs]` (tf_keras's own test)."""
    return isinstance(obj, list) and len(obj) in (3, 4) and isinstance(obj[0], str) and \
        isinstance(obj[1], int) and (len(obj) == 3 or isinstance(obj[3], dict))


def _keras2_kwargs(obj: Any) -> Any:
    """Call kwargs of a Keras 2 entry: a `[layer, node, tensor]` inside them is a tensor."""
    if _is_keras2_entry(obj) and len(obj) == 3 and obj[0] != _CONSTANT:
        return _ref_from_history(obj)
    if isinstance(obj, dict):
        return {k: _keras2_kwargs(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_keras2_kwargs(v) for v in obj]
    return obj


def _keras2_call(call: Any, owner: str) -> tuple[list[Any], dict[str, Any]]:
    """The call of one Keras 2 inbound node: its leaves become tensors (or constants), the
    structure is kept, one tensor in a one-element list is unnested (as tf_keras calls it)."""
    kwargs: dict[str, Any] = {}

    def leaf(entry: Any) -> Any:
        if not _is_keras2_entry(entry):
            raise UserError(f"cannot read the inbound nodes of layer '{owner}'")
        if len(entry) == 4 and entry[3]:
            kwargs.update(_keras2_kwargs(entry[3]))
        if entry[0] == _CONSTANT:
            return entry[2]
        return _ref_from_history(entry)

    def walk(obj: Any) -> Any:
        if _is_keras2_entry(obj):
            return leaf(obj)
        if isinstance(obj, list):
            return [walk(v) for v in obj]
        raise UserError(f"cannot read the inbound nodes of layer '{owner}'")

    inputs = walk(call)
    if isinstance(inputs, list) and len(inputs) == 1:
        inputs = inputs[0]
    return [inputs], kwargs


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
        return (_keras3_template(call.get("args", [])),
                _keras3_template(call.get("kwargs", {})), "keras3")
    if isinstance(call, list):  # Keras 2
        args, kwargs = _keras2_call(call, name)
        return args, kwargs, "keras2"
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


def _is_keras3_operation(layer: dict[str, Any]) -> bool:
    """A Keras 3 operation node: `.keras` names its module (keras.src.ops...); a Keras 3 `.h5`
    does not, but an operation's config has no `trainable`, which every layer's has."""
    module = layer.get("module") or ""
    if module.startswith(("keras.src.ops", "keras.ops")):
        return True
    return "module" not in layer and isinstance(layer.get("inbound_nodes"), list) and \
        bool(layer["inbound_nodes"]) and isinstance(layer["inbound_nodes"][0], dict) and \
        "trainable" not in layer.get("config", {})


def _layer_node(layer: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> Node:
    config = {k: v for k, v in layer["config"].items() if k not in _SHAPE_KEYS}
    name = config["name"]
    if layer["class_name"] in OPERATOR_LAYERS:
        function = str(config.get("function", "?"))
        cls, conf, call = operation_layer(name, function, args, kwargs, f"tf.{function}")
        return Node(name=name, class_name=cls, config={**conf, "dtype": config.get("dtype")
                                                       or "float32"},
                    args=call, origin=f"tf.{function}")
    if _is_keras3_operation(layer):
        op = layer["class_name"]
        extra = {k: v for k, v in config.items() if k != "name"}
        cls, conf, call = operation_layer(name, op, args, {**extra, **kwargs},
                                          f"keras.ops {op}")
        return Node(name=name, class_name=cls, config=conf, args=call, origin=f"keras.ops.{op}")
    if "module" not in layer:
        config = _keras2_compat(layer["class_name"], config)
    return Node(name=name, class_name=layer["class_name"], config=config, args=args,
                kwargs=kwargs, module=layer.get("module"),
                registered_name=layer.get("registered_name"))


def _io_refs(spec: Any) -> list[TensorRef]:
    if isinstance(spec, dict):
        spec = list(spec.values())
    if spec and isinstance(spec[0], str):
        spec = [spec]
    return [TensorRef(s[0], int(s[2])) for s in spec]


class _Builder:
    """Collects the nodes of one model level, splicing nested models in as their layers."""

    def __init__(self, reserved: set[str]):
        self.nodes: list[Node] = []
        self.order: list[str] = []
        self.aliases: dict[str, list[TensorRef]] = {}  # nested model -> its output tensors
        self.groups: dict[str, list[str]] = {}
        self.untrainable: set[str] = set()
        self.reserved = reserved  # every name of this level (clashes are renamed)
        self.dialects: set[str] = set()

    def add(self, node: Node) -> None:
        self.nodes.append(node)
        self.order.append(node.name)
        self.reserved.add(node.name)

    def add_model(self, layer: dict[str, Any], args: list[Any], kwargs: dict[str, Any]) -> None:
        name = layer.get("name") or layer["config"]["name"]
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # mask=None, training=None
        if kwargs:
            raise UserError(f"nested model '{name}' is called with arguments {sorted(kwargs)}; "
                            "only its input tensors can be passed")
        part = _parse_model(layer, nested=True)
        self.dialects.add(part.dialect)
        given = [r for r in _walk(args) if isinstance(r, TensorRef)]
        if len(given) != len(part.inputs):
            raise UserError(f"nested model '{name}' has {len(part.inputs)} inputs but is called "
                            f"on {len(given)} tensors")
        renames: dict[str, str] = {}
        for node in part.nodes:
            if node.is_input:
                continue
            if node.name in self.reserved:
                new = _unique(f"{name}_{node.name}", self.reserved)
                renames[node.name] = new
            self.reserved.add(renames.get(node.name, node.name))
        subst = {TensorRef(i, 0): ref for i, ref in zip(part.inputs, given, strict=True)}
        leaves = []
        for node in part.nodes:
            if node.is_input:
                continue
            _rename_node(node, renames)
            for old_ref, new_ref in subst.items():
                node.args = _replace(node.args, old_ref, new_ref)
                node.kwargs = _replace(node.kwargs, old_ref, new_ref)
            self.nodes.append(node)
        for leaf in part.order:
            if leaf not in part.inputs:
                leaves.append(renames.get(leaf, leaf))
        outputs = [TensorRef(renames.get(r.layer, r.layer), r.index) for r in part.outputs]
        self.aliases[name] = [subst.get(r, r) for r in outputs]
        self.groups[name] = leaves
        if layer["config"].get("trainable") is False:
            self.untrainable.add(name)
        self.order.extend(leaves)

    def resolve(self, refs: list[TensorRef]) -> list[TensorRef]:
        """Point every reference to a nested model at the layer that made that output."""
        for node in self.nodes:
            node.args = _resolve(node.args, self.aliases)
            node.kwargs = _resolve(node.kwargs, self.aliases)
        return [_resolve(r, self.aliases) for r in refs]


def _resolve(obj: Any, aliases: dict[str, list[TensorRef]]) -> Any:
    if isinstance(obj, TensorRef):
        if obj.layer in aliases:
            outputs = aliases[obj.layer]
            if obj.index >= len(outputs):
                raise UserError(f"nested model '{obj.layer}' has no output {obj.index}")
            return outputs[obj.index]
        return obj
    if isinstance(obj, list):
        return [_resolve(x, aliases) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(x, aliases) for x in obj)
    if isinstance(obj, dict):
        return {k: _resolve(v, aliases) for k, v in obj.items()}
    return obj


def _rename_refs(obj: Any, old: str, new: str) -> Any:
    if isinstance(obj, TensorRef):
        return TensorRef(new, obj.index) if obj.layer == old else obj
    if isinstance(obj, list):
        return [_rename_refs(x, old, new) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_rename_refs(x, old, new) for x in obj)
    if isinstance(obj, dict):
        return {k: _rename_refs(v, old, new) for k, v in obj.items()}
    return obj


def _rename_node(node: Node, renames: dict[str, str]) -> None:
    """Apply `renames` (old node name -> new) to what `node` reads and to its own name, which
    it keeps as `source_name` (the file's name, for --after and messages)."""
    for old, new in renames.items():
        node.args = _rename_refs(node.args, old, new)
        node.kwargs = _rename_refs(node.kwargs, old, new)
    if node.name in renames:
        node.source_name = node.source_name or node.name
        node.name = renames[node.name]
        if not node.is_input:
            node.config = {**node.config, "name": node.name}


def _unique(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    k = 1
    while f"{name}_{k}" in taken:
        k += 1
    return f"{name}_{k}"


def _layer_name(layer: dict[str, Any]) -> str:
    return layer.get("name") or layer["config"]["name"]


def _parse_functional(body: dict[str, Any]) -> _Part:
    layers = body.get("layers", [])
    builder = _Builder({_layer_name(layer) for layer in layers})
    for layer in layers:
        name = _layer_name(layer)
        if layer["class_name"] == "InputLayer":
            builder.add(_input_node(name, layer["config"]))
            continue
        args, kwargs, dialect = _inbound(layer)
        builder.dialects.add(dialect)
        if _is_model(layer):
            builder.add_model({**layer, "name": name}, args, kwargs)
            continue
        builder.add(_layer_node({**layer, "config": {**layer["config"], "name": name}},
                                args, kwargs))
    inputs = [r.layer for r in _io_refs(body.get("input_layers", []))]
    outputs = builder.resolve(_io_refs(body.get("output_layers", [])))
    dialect = "keras2" if "keras2" in builder.dialects else "keras3"
    part = _Part(body.get("name", "model"), builder.nodes, inputs, outputs, dialect,
                 builder.order)
    part.groups, part.untrainable = builder.groups, builder.untrainable
    return part


def _parse_sequential(body: dict[str, Any], nested: bool = False) -> _Part:
    layers = list(body.get("layers", []))
    if not layers:
        raise UserError("the Sequential model has no layers")
    builder = _Builder({_layer_name(layer) for layer in layers})
    if layers[0]["class_name"] == "InputLayer":
        first = layers.pop(0)
        builder.add(_input_node(first["config"]["name"], first["config"]))
    else:
        shape = next((layers[0]["config"].get(k) for k in _SHAPE_KEYS[:2]
                      if layers[0]["config"].get(k)), None) or body.get("build_input_shape")
        name = _unique(f"{_layer_name(layers[0])}_input", builder.reserved)
        if shape is None and not nested:
            raise UserError("the Sequential model was never built: its input shape is unknown")
        # a nested Sequential reads the tensor it is called on: its own shape is not needed
        builder.add(_input_node(name, layers[0]["config"], shape or [None]))
    builder.order.clear()
    input_name = builder.nodes[0].name
    dialect = "keras3" if any("module" in lyr for lyr in layers) else "keras2"
    previous = [TensorRef(input_name, 0)]
    for layer in layers:
        name = _layer_name(layer)
        if _is_model(layer):
            builder.add_model({**layer, "name": name}, previous, {})
            previous = builder.aliases[name]
            continue
        node = _layer_node({**layer, "config": {**layer["config"], "name": name}},
                           [previous[0]], {})
        builder.add(node)
        previous = [TensorRef(node.name, 0)]
    outputs = builder.resolve(previous)
    part = _Part(body.get("name", "sequential"), builder.nodes, [input_name], outputs,
                 dialect, builder.order)
    part.groups, part.untrainable = builder.groups, builder.untrainable
    return part


def keras3_name(name: str) -> str:
    """A name Keras 3 accepts for a layer: '/' (common in Keras 2 files) becomes '_'."""
    return name.replace("/", "_")


def _keras3_names(graph: ModelGraph) -> None:
    """Rename every node whose name Keras 3 refuses, everywhere it is used."""
    taken = set(graph.names())
    mapping: dict[str, str] = {}
    for node in graph.nodes:
        new = keras3_name(node.name)
        if new != node.name:
            new = _unique(new, taken)
            taken.add(new)
            mapping[node.name] = new
    if not mapping:
        return
    for node in graph.nodes:
        _rename_node(node, mapping)
    graph.inputs = [mapping.get(n, n) for n in graph.inputs]
    graph.outputs = [TensorRef(mapping.get(r.layer, r.layer), r.index) for r in graph.outputs]
    graph.weight_groups = {k: [mapping.get(n, n) for n in v]
                           for k, v in graph.weight_groups.items()}
