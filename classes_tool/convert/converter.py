"""Convert an ONNX graph into a Keras functional model made of real (or registered) layers.

The converter walks the ONNX nodes in their (topological) order once. Every ONNX tensor becomes
either a NumPy constant (initializers, `Constant` nodes, and anything computed only from
constants or from static shapes, folded with onnx's reference evaluator) or a Keras tensor with a
layout flag: 3-D/4-D feature maps are kept channels-last (NWC/NHWC) so Conv2D and friends run
natively on CPU; each op that cares about axes (Reshape, Transpose, Flatten, Concat, Softmax, ...)
maps its axes through the layout or asks for the tensor in ONNX layout, which inserts a Permute.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import onnx
from onnx import helper, numpy_helper

from classes_tool.errors import UserError

from . import layers as L


@dataclass
class ModelTensor:
    """A Keras tensor standing for one ONNX tensor; `channels_last` says how its axes map."""

    tensor: object
    channels_last: bool = False
    _views: dict = field(default_factory=dict, repr=False)

    @property
    def rank(self) -> int:
        return len(self.tensor.shape)

    @property
    def keras_shape(self) -> tuple:
        return tuple(self.tensor.shape)

    @property
    def onnx_shape(self) -> tuple:
        shape = self.keras_shape
        if self.channels_last:
            return (shape[0], shape[-1], *shape[1:-1])
        return shape

    def keras_axis(self, onnx_axis: int) -> int:
        """The Keras axis holding ONNX axis `onnx_axis` (negative axes allowed)."""
        rank = self.rank
        axis = onnx_axis + rank if onnx_axis < 0 else onnx_axis
        if not 0 <= axis < rank:
            raise UserError(f"axis {onnx_axis} out of range for a rank-{rank} tensor")
        if not self.channels_last or axis == 0:
            return axis
        return rank - 1 if axis == 1 else axis - 1

    def onnx_order(self) -> list[int]:
        """ONNX axis held by each Keras axis."""
        rank = self.rank
        if not self.channels_last:
            return list(range(rank))
        return [0, *range(2, rank), 1]


@dataclass
class BatchMoved:
    """The ONNX tensor ``Transpose(source, perm)`` where `perm` moves the batch off axis 0.

    Keras keeps the batch first, so no layer is made for such a Transpose: the tensor is kept
    as this pending view, and the ops that take it apart along its new leading axes (Gather,
    Slice, Split, Squeeze, or a Transpose that brings the batch back, as in attention blocks
    that reshape to (B, N, 3, h, d), transpose the 3 to the front and pick q, k, v) are
    rewritten on `source`. Any other consumer is refused. `origin` names the Transpose.
    """

    source: ModelTensor
    perm: tuple[int, ...]
    origin: str

    @property
    def onnx_shape(self) -> tuple:
        shape = self.source.onnx_shape
        return tuple(shape[p] for p in self.perm)


def _attrs(node: onnx.NodeProto) -> dict:
    out = {}
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = numpy_helper.to_array(value)
        out[attr.name] = value
    return out


def _resize10_as_resize11(node: onnx.NodeProto, inputs: list
                          ) -> tuple[onnx.NodeProto, list]:
    """Resize-10 (X, scales) in the form of Resize-11 (X, roi, scales), with the asymmetric,
    floor-rounding coordinates of Resize-10: the reference evaluator implements only the newer
    signature, and would read Resize-10's scales as the roi."""
    attrs = {"mode": "nearest"}
    attrs.update(_attrs(node))
    attrs["coordinate_transformation_mode"] = "asymmetric"
    if attrs["mode"] == "nearest":
        attrs["nearest_mode"] = "floor"
    new = helper.make_node("Resize", [node.input[0], "", node.input[1]], list(node.output),
                           name=node.name, **attrs)
    return new, [inputs[0], None, inputs[1]]


def sanitize(name: str) -> str:
    """A Keras-safe layer name that still reads like the ONNX node name (`/a/b.1/Conv`)."""
    clean = re.sub(r"[^A-Za-z0-9_\-]+", "_", name).strip("_")
    clean = re.sub(r"_+", "_", clean)
    if not clean:
        return ""
    if not clean[0].isalpha():
        clean = "n_" + clean
    return clean


# ops that must never be folded even when their inputs are constant (random generators)
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial"}


class Converter:
    """Holds the tensor table while one ONNX graph is turned into a Keras model."""

    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
                          13)
        self.values: dict[str, np.ndarray | ModelTensor] = {}
        self._used_names: set[str] = set()
        self.node: onnx.NodeProto | None = None
        self.node_label = ""
        self.base_name = ""

    # ---- naming -------------------------------------------------------------------------
    def unique(self, name: str) -> str:
        base, i = name, 1
        while name in self._used_names:
            i += 1
            name = f"{base}_{i}"
        self._used_names.add(name)
        return name

    def name(self, suffix: str = "") -> str:
        """Name for a layer made for the current node (main layer: no suffix)."""
        return self.unique(self.base_name + (f"_{suffix}" if suffix else ""))

    # ---- tensor table -------------------------------------------------------------------
    def get(self, tensor_name: str) -> np.ndarray | ModelTensor | BatchMoved | None:
        if tensor_name == "":
            return None
        if tensor_name not in self.values:
            raise UserError(f"tensor {tensor_name!r} used by node {self.node_label} is not "
                            "produced by any earlier node")
        return self.values[tensor_name]

    def const(self, index: int, required: bool = True) -> np.ndarray | None:
        """Input `index` of the current node as a constant array (None if absent)."""
        names = self.node.input
        if index >= len(names) or names[index] == "":
            if required:
                raise UserError(f"node {self.node_label}: input {index} is missing")
            return None
        value = self.get(names[index])
        if isinstance(value, ModelTensor):
            raise UserError(f"node {self.node_label}: input {index} must be a constant (it is "
                            "computed from the model input); fix the input shape with "
                            "--input-shape or simplify the model")
        return value

    def model_tensor(self, index: int) -> ModelTensor:
        value = self.get(self.node.input[index])
        if not isinstance(value, ModelTensor):
            raise UserError(f"node {self.node_label}: input {index} is a constant where a "
                            "tensor computed from the model input is expected")
        return value

    def out(self, value: np.ndarray | ModelTensor | BatchMoved | object, channels_last: bool = False,
            index: int = 0) -> None:
        if not isinstance(value, (np.ndarray, ModelTensor, BatchMoved)):
            value = ModelTensor(value, channels_last and len(value.shape) >= 3)
        self.values[self.node.output[index]] = value

    # ---- layout helpers -----------------------------------------------------------------
    def onnx_layout(self, kt: ModelTensor, for_reshape: bool = False):
        """`kt` as a Keras tensor in ONNX axis order (adds a Permute once, then reuses it).

        With `for_reshape`, a channels-last tensor whose non-unit axes are already in ONNX
        order is returned unchanged (the consumer reshapes it anyway, memory order is equal).
        """
        if not kt.channels_last:
            return kt.tensor
        if for_reshape:
            shape = kt.keras_shape
            order = [a for a, d in zip(kt.onnx_order(), shape, strict=True) if d != 1]
            if order == sorted(order):
                return kt.tensor
        if "onnx" not in kt._views:
            rank = kt.rank
            kt._views["onnx"] = keras.layers.Permute(
                (rank - 1, *range(1, rank - 1)), name=self.name("to_onnx_layout"))(kt.tensor)
        return kt._views["onnx"]

    def channels_last(self, kt: ModelTensor):
        """`kt` as a channels-last Keras tensor (adds a Permute once, then reuses it)."""
        if kt.channels_last:
            return kt.tensor
        if kt.rank < 3:
            raise UserError(f"node {self.node_label}: expects a feature map (rank >= 3), got "
                            f"rank {kt.rank}")
        if "cl" not in kt._views:
            rank = kt.rank
            kt._views["cl"] = keras.layers.Permute(
                (*range(2, rank), 1), name=self.name("to_channels_last"))(kt.tensor)
        return kt._views["cl"]

    def constant_like(self, value: np.ndarray, ref: ModelTensor, channels_last: bool, suffix: str):
        """A Constant layer holding `value` (ONNX layout, broadcastable against `ref`)."""
        value = np.asarray(value)
        rank = ref.rank
        if value.ndim > rank:
            raise UserError(f"node {self.node_label}: constant of rank {value.ndim} does not "
                            f"broadcast against a rank-{rank} tensor")
        value = value.reshape((1,) * (rank - value.ndim) + value.shape)
        if channels_last and rank >= 3:
            value = value.transpose([0, *range(2, rank), 1])
        if value.shape[0] != 1:
            raise UserError(f"node {self.node_label}: constant spans the batch dimension "
                            f"(shape {value.shape}); not supported")
        dtype = str(ref.tensor.dtype) if str(ref.tensor.dtype).startswith("float") else "float32"
        layer = L.Constant(value.shape, value_dtype=dtype, name=self.name(suffix))
        tensor = layer(ref.tensor)
        layer.set_weights([value.astype(dtype)])
        return tensor

    # ---- folding ------------------------------------------------------------------------
    def fold(self, node: onnx.NodeProto, inputs: list[np.ndarray | None]
             ) -> list[np.ndarray | None]:
        """Evaluate one node whose inputs are all constants; one result per output slot.

        The node runs inside a one-node model that imports the model's own opsets: a bare
        node given to the reference evaluator runs with the newest opset, where ops whose
        signature changed (Unsqueeze/Squeeze/Reduce*/Split with `axes` as an attribute, Slice,
        Pad, Clip, Resize, ...) fail or compute something else. An unnamed (skipped) optional
        output gets None.
        """
        from onnx.reference import ReferenceEvaluator

        if node.op_type == "Resize" and self.opset < 11:
            node, inputs = _resize10_as_resize11(node, inputs)
        names = [n for n in dict.fromkeys(node.input) if n]
        graph = helper.make_graph(
            [node], "fold", [helper.make_empty_tensor_value_info(n) for n in names],
            [helper.make_empty_tensor_value_info(n) for n in node.output if n])
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        try:
            evaluator = ReferenceEvaluator(model)
            feeds = {n: v for n, v in zip(node.input, inputs, strict=True) if n}
            results = iter(evaluator.run(None, feeds))
            return [np.asarray(next(results)) if n else None for n in node.output]
        except Exception as exc:  # the reference evaluator raises many types
            raise UserError(f"could not fold constant node {self.node_label}: "
                            f"{type(exc).__name__}: {exc}") from exc

    def static_shape(self, kt: ModelTensor | BatchMoved) -> list[int]:
        """ONNX shape of `kt` with the batch dimension as 1 (shape arithmetic is then folded)."""
        if isinstance(kt, BatchMoved):
            source = self.static_shape(kt.source)
            return [source[p] for p in kt.perm]
        shape = list(kt.onnx_shape)
        if any(d is None for d in shape[1:]):
            raise UserError(f"node {self.node_label}: the shape of its input is not static; "
                            "give the input shape (--input-shape)")
        return [1] + [int(d) for d in shape[1:]]

    # ---- main loop ----------------------------------------------------------------------
    def run(self, input_shapes: Sequence[Sequence[int]] | None) -> keras.Model:
        from .ops import BATCH_MOVED_CONVERTERS, CONVERTERS

        graph = self.model.graph
        for init in graph.initializer:
            self.values[init.name] = _initializer_array(init)
        inputs = [i for i in graph.input if i.name not in self.values]
        if input_shapes is not None and len(input_shapes) != len(inputs):
            raise UserError(f"the model has {len(inputs)} input(s) but {len(input_shapes)} "
                            "input shape(s) were given")
        keras_inputs = []
        self.onnx_input_shapes = []
        for i, value_info in enumerate(inputs):
            shape = onnx_input_shape(value_info, None if input_shapes is None
                                     else input_shapes[i])
            elem = value_info.type.tensor_type.elem_type
            if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16,
                            onnx.TensorProto.DOUBLE):
                raise UserError(f"input {value_info.name!r} is not a float tensor; only float "
                                "inputs are supported")
            self.onnx_input_shapes.append(shape)
            per_sample = shape[1:]
            channels_last = len(shape) == 4
            keras_shape = ((*per_sample[1:], per_sample[0]) if channels_last
                           else tuple(per_sample))
            name = self.unique(sanitize(value_info.name) or f"input_{i}")
            tensor = keras.Input(shape=keras_shape, batch_size=None, name=name,
                                 dtype="float32")
            keras_inputs.append(tensor)
            self.values[value_info.name] = ModelTensor(tensor, channels_last)

        for index, node in enumerate(graph.node):
            self.node = node
            self.node_label = f"{node.name or '(unnamed)'} ({node.op_type})"
            self.base_name = self.unique(sanitize(node.name) or f"{node.op_type}_{index}")
            self._used_names.discard(self.base_name)
            if node.domain not in ("", "ai.onnx"):
                raise UserError(f"unsupported ONNX op {node.domain}.{node.op_type} at node "
                                f"{node.name or '(unnamed)'}")
            values = [self.get(n) for n in node.input]
            if node.op_type == "Shape" and isinstance(values[0], (ModelTensor, BatchMoved)):
                shape = np.asarray(self.static_shape(values[0]), dtype=np.int64)
                attrs = _attrs(node)
                start, end = attrs.get("start", 0), attrs.get("end", None)
                self.out(shape[start:end])
                continue
            if node.op_type == "Size" and isinstance(values[0], (ModelTensor, BatchMoved)):
                self.out(np.asarray(np.prod(self.static_shape(values[0])), dtype=np.int64))
                continue
            moved = next((v for v in values if isinstance(v, BatchMoved)), None)
            if moved is not None:
                fn = BATCH_MOVED_CONVERTERS.get(node.op_type)
                if fn is None or not isinstance(values[0], BatchMoved):
                    raise UserError(
                        f"node {self.node_label} reads the output of {moved.origin}, a "
                        "Transpose that moves the batch axis; only Gather, Slice, Split, "
                        "Squeeze, or a Transpose that brings the batch back to the front may "
                        "follow such a Transpose")
                try:
                    fn(self, node, _attrs(node))
                except ValueError as exc:
                    raise UserError(f"cannot convert node {self.node_label}: {exc}") from exc
                continue
            if node.op_type not in _NO_FOLD and all(not isinstance(v, ModelTensor) for v in values):
                for i, result in enumerate(self.fold(node, values)):
                    if result is not None:
                        self.out(result, index=i)
                continue
            fn = CONVERTERS.get(node.op_type)
            if fn is None:
                raise UserError(f"unsupported ONNX op {node.op_type} at node "
                                f"{node.name or '(unnamed)'}")
            try:
                fn(self, node, _attrs(node))
            except ValueError as exc:  # Keras rejected a layer built from this node's values
                raise UserError(f"cannot convert node {self.node_label}: {exc}") from exc

        outputs = []
        self.onnx_output_names = []
        for value_info in graph.output:
            value = self.values.get(value_info.name)
            if isinstance(value, BatchMoved):
                raise UserError(f"model output {value_info.name!r} comes from {value.origin}, "
                                "a Transpose that moves the batch axis; not supported")
            if not isinstance(value, ModelTensor):
                raise UserError(f"model output {value_info.name!r} is a constant; nothing to "
                                "convert")
            self.node_label = value_info.name
            self.base_name = sanitize(value_info.name) or "output"
            # 4-D outputs stay NHWC like 4-D inputs; every other rank is in ONNX layout
            tensor = self.channels_last(value) if value.rank == 4 else self.onnx_layout(value)
            outputs.append(tensor)
            self.onnx_output_names.append(value_info.name)
        name = sanitize(graph.name) or "onnx_model"
        return keras.Model(keras_inputs if len(keras_inputs) > 1 else keras_inputs[0],
                           outputs if len(outputs) > 1 else outputs[0], name=name)


def onnx_input_shape(value_info: onnx.ValueInfoProto,
                     given: Sequence[int] | None) -> list[int | None]:
    """Shape of one graph input: batch stays free (None), the rest static (given or stored)."""
    dims = value_info.type.tensor_type.shape.dim
    stored = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims]
    if given is not None:
        given = [int(d) for d in given]
        if stored and len(given) != len(stored) - 1:
            raise UserError(f"input {value_info.name!r} has rank {len(stored)}; the input shape "
                            f"{','.join(map(str, given))} must give {len(stored) - 1} dimensions "
                            "(without the batch)")
        for g, s in zip(given, stored[1:], strict=False):
            if s is not None and s != g:
                raise UserError(f"input {value_info.name!r} has fixed dimension {s}, the input "
                                f"shape gives {g}")
        return [None, *given]
    if not stored:
        raise UserError(f"input {value_info.name!r} has no shape; give it with --input-shape")
    if any(d is None for d in stored[1:]):
        raise UserError(f"input {value_info.name!r} has dynamic dimensions "
                        f"{[d if d is not None else '?' for d in stored]}; give them with "
                        "--input-shape (per input, without the batch dimension)")
    shape = [None, *stored[1:]]
    _check_input_size(value_info.name, shape)
    return shape


def _check_input_size(name: str, shape: list[int | None]) -> None:
    """One float32 sample of the input must fit in memory (an input of [1, 10**12] would
    otherwise fail deep inside the verification's allocation)."""
    from classes_tool.limits import check_size, element_count

    check_size(f"ONNX input {name!r} of shape {[d if d else '?' for d in shape]}",
               element_count(d for d in shape[1:] if d) * 4)


def _initializer_array(init: onnx.TensorProto) -> np.ndarray:
    """An initializer as an array, its declared size checked against memory first and its
    data against its shape (a 10**6 x 10**6 initializer without data is one line)."""
    from classes_tool.limits import check_size, element_count

    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type))
        count = element_count(init.dims)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"ONNX initializer {init.name!r} has an unusable type or shape "
                        f"({exc})") from None
    check_size(f"ONNX initializer {init.name!r} of shape {list(init.dims)}",
               count * dtype.itemsize)
    try:
        return numpy_helper.to_array(init)
    except (ValueError, TypeError) as exc:
        raise UserError(f"ONNX initializer {init.name!r} of shape {list(init.dims)} does not "
                        f"hold its data ({str(exc).splitlines()[0]})") from None


def _check_opsets(model: onnx.ModelProto, path: Path) -> None:
    """An opset newer than the installed onnx knows cannot be converted or verified faithfully
    (an op may have changed meaning), with or without --no-verify."""
    newest = onnx.defs.onnx_opset_version()
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and entry.version > newest:
            raise UserError(f"{path} uses ONNX opset {entry.version}, newer than the {newest} "
                            "this installation knows; export it with an older opset")


def load_onnx_model(path: str | os.PathLike) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise UserError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from exc
    if not model.graph.node:
        raise UserError(f"{path} is not an ONNX model with a graph")
    _check_opsets(model, path)
    return model


def build_keras_model(model: onnx.ModelProto,
                      input_shapes: Sequence[Sequence[int]] | None = None
                      ) -> tuple[keras.Model, Converter]:
    """Convert a loaded ONNX model; returns the model and the converter (for its metadata)."""
    converter = Converter(model)
    return converter.run(input_shapes), converter


OpConverter = Callable[[Converter, onnx.NodeProto, dict], None]
