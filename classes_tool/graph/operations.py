"""Operation nodes (Keras 2 `TFOpLambda`, Keras 3 `keras.ops` nodes) as real Keras layers.

A model written with `x + 3.0` or `tf.math.multiply(x, y)` stores a call of a function, not a
layer: Keras 2 as a `TFOpLambda` whose config names the TensorFlow function
(`"__operators__.add"`), Keras 3 as an operation node (`Add` of `keras.src.ops.numpy`, which a
Keras 3 `.h5` writes without its module, so it reads like the merge layer `Add`). Each common
one becomes the Keras layer that computes the same values bit for bit, so the rebuilt model has
only layers (each can be described, targeted and reloaded):

- tensor op tensor: `Add`, `Subtract`, `Multiply`, `Maximum`, `Minimum`;
- tensor +, -, * a constant: `Rescaling` (`x * 1 + c`, `x * c + 0`, `x * -1 + c` are exact);
  division by a power of two: `Rescaling(1 / c)` (exact);
- activations (`relu`, `relu6`, `sigmoid`, `tanh`, `silu`/`swish`, `gelu`, `softplus`, `elu`,
  `selu`, `exp`... as `Activation`), `softmax` over an axis, `concat`, `negative`, the mean over
  the spatial axes (`GlobalAveragePooling2D`).

Anything else is a `UserError` naming the node and the function.
"""

from __future__ import annotations

import math
from typing import Any

from classes_tool.errors import UserError
from classes_tool.graph.model_graph import TensorRef

# Keras 2 TFOpLambda function (tf.<function>) or Keras 3 operation class -> canonical op
_ALIASES = {
    "__operators__.add": "add", "math.add": "add", "math.add_v2": "add", "Add": "add",
    "__operators__.sub": "subtract", "math.subtract": "subtract", "Subtract": "subtract",
    "__operators__.mul": "multiply", "math.multiply": "multiply", "Multiply": "multiply",
    "__operators__.truediv": "divide", "math.truediv": "divide", "math.divide": "divide",
    "Divide": "divide", "TrueDivide": "divide",
    "math.maximum": "maximum", "Maximum": "maximum",
    "math.minimum": "minimum", "Minimum": "minimum",
    "__operators__.neg": "negative", "math.negative": "negative", "Negative": "negative",
    "concat": "concat", "Concatenate": "concat",
    "nn.softmax": "softmax", "math.softmax": "softmax", "Softmax": "softmax",
    "math.reduce_mean": "mean", "Mean": "mean",
}
_ACTIVATIONS = {
    "nn.relu": "relu", "Relu": "relu", "nn.relu6": "relu6", "Relu6": "relu6",
    "math.sigmoid": "sigmoid", "nn.sigmoid": "sigmoid", "Sigmoid": "sigmoid",
    "math.tanh": "tanh", "nn.tanh": "tanh", "Tanh": "tanh",
    "nn.silu": "silu", "nn.swish": "silu", "Silu": "silu", "Swish": "silu",
    "nn.gelu": "gelu", "Gelu": "gelu", "math.softplus": "softplus", "nn.softplus": "softplus",
    "Softplus": "softplus", "nn.elu": "elu", "Elu": "elu", "nn.selu": "selu", "Selu": "selu",
    "math.exp": "exponential", "Exp": "exponential", "nn.hard_sigmoid": "hard_sigmoid",
    "HardSigmoid": "hard_sigmoid", "nn.hard_swish": "hard_silu", "HardSwish": "hard_silu",
    "HardSilu": "hard_silu",
}
_MERGE = {"add": "Add", "subtract": "Subtract", "multiply": "Multiply", "maximum": "Maximum",
          "minimum": "Minimum"}
# the keyword a TensorFlow function names its second operand (`tf.math.add(x, y)`)
_SECOND = ("y", "b")


def _constant(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return math.isfinite(value)
    return isinstance(value, list) and bool(value) and all(_constant(v) for v in value)


def _neg(value: Any) -> Any:
    return [_neg(v) for v in value] if isinstance(value, list) else -value


def _unsupported(node: str, function: str, why: str = "") -> UserError:
    return UserError(f"node '{node}' calls {function}{', ' + why if why else ''}, which this tool "
                     "cannot rebuild as a Keras layer (supported: +, -, *, / by a power of two, "
                     "maximum, minimum, concat, softmax, mean over the spatial axes, negative "
                     "and the usual activations)")


def _binary(name: str, op: str, a: Any, b: Any, function: str) -> tuple[str, dict, list]:
    ta, tb = isinstance(a, TensorRef), isinstance(b, TensorRef)
    if ta and tb:
        if op == "divide":
            raise _unsupported(name, function, "a tensor by a tensor")
        return _MERGE[op], {}, [[a, b]]
    if not (ta or tb) or not _constant(b if ta else a):
        raise _unsupported(name, function, "with operands it cannot read")
    tensor, const = (a, b) if ta else (b, a)
    if op == "add":
        return "Rescaling", {"scale": 1.0, "offset": const}, [tensor]
    if op == "multiply":
        return "Rescaling", {"scale": const, "offset": 0.0}, [tensor]
    if op == "subtract":
        if ta:  # x - c == x * 1 + (-c)
            return "Rescaling", {"scale": 1.0, "offset": _neg(const)}, [tensor]
        return "Rescaling", {"scale": -1.0, "offset": const}, [tensor]
    if op == "divide" and ta and isinstance(const, (int, float)) and const != 0 and \
            math.frexp(abs(const))[0] == 0.5:  # a power of two: the reciprocal is exact
        return "Rescaling", {"scale": 1.0 / const, "offset": 0.0}, [tensor]
    raise _unsupported(name, function, "with a constant operand")


def operation_layer(name: str, function: str, args: list[Any], kwargs: dict[str, Any],
                    origin: str) -> tuple[str, dict[str, Any], list[Any]]:
    """(layer class, layer config, call args) that compute operation `function` of node
    `name`, called with `args`/`kwargs` (tensors as TensorRef)."""
    kwargs = {k: v for k, v in kwargs.items() if k != "name"}
    base = {"name": name, "trainable": True}
    if function in _ACTIVATIONS:
        if len(args) != 1 or not isinstance(args[0], TensorRef) or kwargs:
            raise _unsupported(name, origin, "with arguments it cannot read")
        return "Activation", {**base, "activation": _ACTIVATIONS[function]}, [args[0]]
    op = _ALIASES.get(function)
    if op is None:
        raise _unsupported(name, origin)
    if op in _MERGE or op == "divide":
        operands = list(args) + [kwargs.pop(k) for k in _SECOND if k in kwargs]
        if len(operands) != 2 or kwargs:
            raise _unsupported(name, origin, "with arguments it cannot read")
        cls, config, call = _binary(name, op, operands[0], operands[1], origin)
        return cls, {**base, **config}, call
    if op == "negative" and len(args) == 1 and not kwargs:
        return "Rescaling", {**base, "scale": -1.0, "offset": 0.0}, [args[0]]
    if op == "concat":
        values = args[0] if args else kwargs.pop("values", None)
        axis = args[1] if len(args) > 1 else kwargs.pop("axis", -1)
        if isinstance(values, list) and all(isinstance(v, TensorRef) for v in values) and \
                isinstance(axis, int) and not kwargs:
            return "Concatenate", {**base, "axis": axis}, [values]
    if op == "softmax" and len(args) >= 1 and isinstance(args[0], TensorRef):
        axis = args[1] if len(args) > 1 else kwargs.pop("axis", -1)
        if isinstance(axis, int) and not kwargs:
            return "Softmax", {**base, "axis": axis}, [args[0]]
    if op == "mean" and len(args) >= 1 and isinstance(args[0], TensorRef):
        axis = args[1] if len(args) > 1 else kwargs.pop("axis", None)
        keep = bool(kwargs.pop("keepdims", kwargs.pop("keep_dims", False)))
        if isinstance(axis, list) and sorted(axis) == [1, 2] and not kwargs:
            return "GlobalAveragePooling2D", {**base, "keepdims": keep}, [args[0]]
    raise _unsupported(name, origin, "with arguments it cannot read")
