"""Add/Sub/Mul/Div/Max/Min/Sum with ONNX broadcasting, Pow and unary math, pass-through ops."""

from __future__ import annotations

import keras
import numpy as np

from classes_tool.errors import UserError

from .. import layers as L
from ..converter import ModelTensor
from . import register

_MERGE = {"Add": keras.layers.Add, "Sum": keras.layers.Add, "Sub": keras.layers.Subtract,
          "Mul": keras.layers.Multiply, "Div": L.Div, "Max": keras.layers.Maximum,
          "Min": keras.layers.Minimum}


def _scalar_rescaling(op: str, value: float, const_first: bool):
    """(scale, offset) for x op c / c op x expressible as x*scale + offset, else None."""
    if op in ("Add", "Sum"):
        return 1.0, value
    if op == "Mul":
        return value, 0.0
    if op == "Sub":
        return (-1.0, value) if const_first else (1.0, -value)
    if op == "Div" and not const_first and value != 0.0:
        return 1.0 / value, 0.0
    return None


@register(*_MERGE)
def binary(conversion, node, attrs):
    op = node.op_type
    values = [conversion.get(n) for n in node.input]
    tensors = [v for v in values if isinstance(v, ModelTensor)]
    if len(values) == 1:
        conversion.out(values[0])
        return
    if len(values) > 2 and len(tensors) != len(values):
        raise UserError(f"node {conversion.node_label}: variadic {op} with constants is not supported")
    if len(values) == 2 and len(tensors) == 1:
        const_first = not isinstance(values[0], ModelTensor)
        x = tensors[0]
        c = np.asarray(values[0] if const_first else values[1])
        if c.size == 1 and c.dtype.kind in "fiu" \
                and c.ndim <= x.rank:
            pair = _scalar_rescaling(op, float(c.reshape(())), const_first)
            if pair is not None:
                layer = keras.layers.Rescaling(scale=pair[0], offset=pair[1], name=conversion.name())
                conversion.out(layer(x.tensor), channels_last=x.channels_last)
                return
        if c.ndim > x.rank or (c.ndim == x.rank and c.shape[0] != 1):
            raise UserError(f"node {conversion.node_label}: constant operand of shape {c.shape} "
                            "broadcasts over the batch; not supported")
        const = conversion.constant_like(c, x, x.channels_last, "const")
        operands = [const, x.tensor] if const_first else [x.tensor, const]
        conversion.out(_MERGE[op](name=conversion.name())(operands), channels_last=x.channels_last)
        return
    ranks = {t.rank for t in tensors}
    if len(ranks) != 1:
        raise UserError(f"node {conversion.node_label}: {op} of tensors with ranks {sorted(ranks)} "
                        "(broadcasting across ranks) is not supported")
    channels_last = any(t.channels_last for t in tensors)
    operands = [conversion.channels_last(t) if channels_last else t.tensor for t in tensors]
    conversion.out(_MERGE[op](name=conversion.name())(operands), channels_last=channels_last)


_UNARY = {"Sqrt": "sqrt", "Exp": "exp", "Log": "log", "Neg": "neg", "Abs": "abs",
          "Reciprocal": "reciprocal", "Erf": "erf", "Floor": "floor", "Ceil": "ceil",
          "Sin": "sin", "Cos": "cos"}


@register(*_UNARY)
def unary(conversion, node, attrs):
    x = conversion.model_tensor(0)
    conversion.out(L.Elementwise(_UNARY[node.op_type], name=conversion.name())(x.tensor),
           channels_last=x.channels_last)


@register("Pow")
def power(conversion, node, attrs):
    x = conversion.model_tensor(0)
    exponent = np.asarray(conversion.const(1))
    if exponent.size != 1:
        raise UserError(f"node {conversion.node_label}: Pow needs a scalar constant exponent")
    conversion.out(L.Elementwise("pow", exponent=float(exponent.reshape(())), name=conversion.name())(x.tensor),
           channels_last=x.channels_last)


@register("Identity", "Dropout")
def identity(conversion, node, attrs):
    conversion.out(conversion.model_tensor(0))


@register("Cast")
def cast(conversion, node, attrs):
    import onnx

    if attrs.get("to") not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE,
                               onnx.TensorProto.FLOAT16):
        raise UserError(f"node {conversion.node_label}: Cast of a computed tensor to a non-float "
                        "type is not supported")
    conversion.out(conversion.model_tensor(0))
