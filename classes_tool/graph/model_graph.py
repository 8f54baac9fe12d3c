"""A small, dialect-free description of a Keras model's graph.

Only this package knows the Keras 2 and Keras 3 config dialects; everything else sees a
`ModelGraph`: nodes (one per layer) with their class, config, and call arguments in which
input tensors are `TensorRef`s. Splicing a layer after a node is a pure edit of this
structure; `rebuild.py` turns it back into a `keras.Model`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from classes_tool.errors import UserError


def with_registered_names(custom_objects: dict[str, Any] | None,
                          layers: list[tuple[str | None, str]]) -> dict[str, Any] | None:
    """`custom_objects`, where a class given by its class name also answers to the registered
    name ("package>Class") that a layer of `layers` ((registered name, class name) pairs) was
    saved under: Keras looks a custom layer up by that name only."""
    if not custom_objects:
        return custom_objects
    out = dict(custom_objects)
    for registered, class_name in layers:
        if registered and registered not in out and class_name in custom_objects:
            out[registered] = custom_objects[class_name]
    return out


@dataclass(frozen=True)
class TensorRef:
    """Output `index` of layer `layer` (its first and only call)."""

    layer: str
    index: int = 0


@dataclass
class Node:
    """One layer of the graph.

    `args`/`kwargs` are the call arguments with `TensorRef` where a tensor goes (nested lists
    kept as they are, e.g. `[[a, b]]` for a merge). Input nodes have `input_shape` (without batch)
    and `dtype` instead.
    """

    name: str
    class_name: str
    config: dict[str, Any]
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    module: str | None = None
    registered_name: str | None = None
    input_shape: tuple[int | None, ...] | None = None
    dtype: str = "float32"
    # the name in the file when it had to change ('/' that Keras 3 refuses, a clash between a
    # nested model's layer and an outer one), so messages and lookups can use either
    source_name: str | None = None
    # what the file stored when this layer stands for an operation (`tf.__operators__.add`)
    origin: str | None = None

    @property
    def is_input(self) -> bool:
        return self.class_name == "InputLayer"

    def refs(self) -> list[TensorRef]:
        return [r for r in _walk(self.args) if isinstance(r, TensorRef)] + \
            [r for r in _walk(self.kwargs) if isinstance(r, TensorRef)]


def _walk(obj: Any):
    if isinstance(obj, TensorRef):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _walk(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _walk(item)


def _replace(obj: Any, old: TensorRef, new: TensorRef) -> Any:
    if isinstance(obj, TensorRef):
        return new if obj == old else obj
    if isinstance(obj, list):
        return [_replace(x, old, new) for x in obj]
    if isinstance(obj, tuple):
        return tuple(_replace(x, old, new) for x in obj)
    if isinstance(obj, dict):
        return {k: _replace(v, old, new) for k, v in obj.items()}
    return obj


@dataclass
class ModelGraph:
    """Nodes in topological order, the model's inputs/outputs, and the weights by layer name.

    `weights[name]` lists a layer's arrays as trainable weights then non-trainable ones (the
    order of legacy h5 files), keyed by the layer's name in the file. A nested model is read as
    its layers, spliced into the outer graph; its arrays stay one list under its own name, and
    `weight_groups[name]` lists the layers (in the nested model's order) they belong to.
    """

    name: str
    nodes: list[Node]
    inputs: list[str]
    outputs: list[TensorRef]
    weights: dict[str, list[Any]] = field(default_factory=dict)
    dialect: str = "keras3"
    source_format: str = "h5"
    weight_groups: dict[str, list[str]] = field(default_factory=dict)
    # nested models saved with trainable=False: their arrays are in layer order, not legacy order
    untrainable_groups: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.nodes = _topological(self.nodes)

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        for n in self.nodes:
            if n.source_name == name:
                return n
        raise UserError(f"no node named '{name}' in model '{self.name}'; nodes: "
                        f"{', '.join(n.name for n in self.nodes)}")

    def names(self) -> list[str]:
        return [n.name for n in self.nodes]

    def consumers(self, name: str) -> list[str]:
        return [n.name for n in self.nodes if any(r.layer == name for r in n.refs())]

    def nodes_of_type(self, class_name: str) -> list[str]:
        return [n.name for n in self.nodes if n.class_name == class_name]

    def copy(self) -> ModelGraph:
        return ModelGraph(name=self.name, nodes=copy.deepcopy(self.nodes),
                          inputs=list(self.inputs), outputs=list(self.outputs),
                          weights=dict(self.weights), dialect=self.dialect,
                          source_format=self.source_format,
                          weight_groups={k: list(v) for k, v in self.weight_groups.items()},
                          untrainable_groups=set(self.untrainable_groups))

    def file_name(self, name: str) -> str:
        """The name node `name` has in the file (for messages)."""
        node = self.node(name)
        return node.source_name or node.name

    def weight_key(self, node: Node) -> str | None:
        """Where `weights` holds this node's own arrays (None: inside a nested model's)."""
        if any(node.name in leaves for leaves in self.weight_groups.values()):
            return None
        return node.source_name or node.name

    def insert_after(self, target: str, new_node: Node) -> None:
        """Put `new_node` after output 0 of `target` and rewire every consumer (and the model
        outputs) of that tensor to read from `new_node` instead."""
        target = self.node(target).name
        if new_node.name in self.names():
            raise UserError(f"a node named '{new_node.name}' already exists")
        old, new = TensorRef(target, 0), TensorRef(new_node.name, 0)
        for n in self.nodes:
            n.args = _replace(n.args, old, new)
            n.kwargs = _replace(n.kwargs, old, new)
        self.outputs = [new if r == old else r for r in self.outputs]
        new_node.args = [old]
        self.nodes.append(new_node)
        self.nodes = _topological(self.nodes)


def _topological(nodes: list[Node]) -> list[Node]:
    """Order nodes so that each comes after the nodes it reads (stable for ordered input)."""
    by_name = {n.name: n for n in nodes}
    done: set[str] = set()
    ordered: list[Node] = []
    visiting: set[str] = set()

    def visit(n: Node) -> None:
        if n.name in done:
            return
        if n.name in visiting:
            raise UserError(f"the model graph has a cycle through '{n.name}'")
        visiting.add(n.name)
        for ref in n.refs():
            if ref.layer not in by_name:
                raise UserError(f"node '{n.name}' reads from unknown layer '{ref.layer}'")
            visit(by_name[ref.layer])
        visiting.discard(n.name)
        done.add(n.name)
        ordered.append(n)

    for n in nodes:
        visit(n)
    return ordered
