"""Activations: Relu, Clip, LeakyRelu, PRelu, Sigmoid, Tanh, HardSigmoid, HardSwish, Softmax..."""

from __future__ import annotations

import math

import keras
import numpy as np

from classes_tool.errors import UserError

from .. import layers as L
from . import register


def _same_layout(conversion, layer):
    x = conversion.model_tensor(0)
    conversion.out(layer(x.tensor), channels_last=x.channels_last)


@register("Relu")
def relu(conversion, node, attrs):
    _same_layout(conversion, keras.layers.ReLU(name=conversion.name()))


@register("LeakyRelu")
def leaky_relu(conversion, node, attrs):
    _same_layout(conversion, keras.layers.LeakyReLU(negative_slope=float(attrs.get("alpha", 0.01)),
                                            name=conversion.name()))


@register("Elu")
def elu(conversion, node, attrs):
    _same_layout(conversion, keras.layers.ELU(alpha=float(attrs.get("alpha", 1.0)), name=conversion.name()))


_SIMPLE = {"Sigmoid": "sigmoid", "Tanh": "tanh", "Softplus": "softplus",
           "Softsign": "softsign", "HardSwish": "hard_silu", "Mish": "mish"}


@register(*_SIMPLE)
def simple_activation(conversion, node, attrs):
    _same_layout(conversion, keras.layers.Activation(_SIMPLE[node.op_type], name=conversion.name()))


@register("Gelu")
def gelu(conversion, node, attrs):
    if attrs.get("approximate", "none") != "none":
        raise UserError(f"node {conversion.node_label}: approximate Gelu is not supported")
    _same_layout(conversion, keras.layers.Activation("gelu", name=conversion.name()))


@register("Selu")
def selu(conversion, node, attrs):
    if abs(attrs.get("alpha", 1.67326) - 1.67326) > 1e-4 or \
            abs(attrs.get("gamma", 1.0507) - 1.0507) > 1e-4:
        raise UserError(f"node {conversion.node_label}: Selu with non-default alpha/gamma")
    _same_layout(conversion, keras.layers.Activation("selu", name=conversion.name()))


@register("HardSigmoid")
def hard_sigmoid(conversion, node, attrs):
    _same_layout(conversion, L.HardSigmoid(alpha=attrs.get("alpha", 0.2), beta=attrs.get("beta", 0.5),
                                   name=conversion.name()))


@register("Clip")
def clip(conversion, node, attrs):
    if conversion.opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        low, high = conversion.const(1, required=False), conversion.const(2, required=False)
    low = None if low is None else float(np.asarray(low))
    high = None if high is None else float(np.asarray(high))
    if low == 0.0:
        layer = keras.layers.ReLU(max_value=high, name=conversion.name())
    else:
        layer = L.Clip(min_value=low, max_value=high, name=conversion.name())
    _same_layout(conversion, layer)


@register("PRelu")
def prelu(conversion, node, attrs):
    x = conversion.model_tensor(0)
    slope = np.asarray(conversion.const(1), dtype="float32")
    rank = x.rank
    slope = slope.reshape((1,) * (rank - slope.ndim) + slope.shape)
    if x.channels_last:
        slope = slope.transpose(x.onnx_order())
    per_sample = slope[0]
    shared = [i + 1 for i, d in enumerate(per_sample.shape) if d == 1]
    layer = keras.layers.PReLU(shared_axes=shared or None, name=conversion.name())
    y = layer(x.tensor)
    layer.set_weights([np.broadcast_to(per_sample, layer.get_weights()[0].shape).copy()])
    conversion.out(y, channels_last=x.channels_last)


@register("Softmax", "LogSoftmax")
def softmax(conversion, node, attrs):
    """Softmax/LogSoftmax; before opset 13 over all axes from `axis` on (as one flat axis).

    Over several axes, unit axes are dropped first (an `(N, C, 1, 1)` map is a softmax over C
    alone). Keras' own multi-axis Softmax computes ``exp(x - logsumexp(x))``, which cancels
    catastrophically in float32 at large logits (all outputs 1 instead of 1e-3 at 7e9), so
    several non-unit axes are merged by a Reshape (they are contiguous in either layout),
    normalised by a one-axis Softmax and reshaped back.
    """
    x = conversion.model_tensor(0)
    rank = x.rank
    if conversion.opset < 13:
        axis = attrs.get("axis", 1) % rank
        onnx_axes = list(range(axis, rank))
    else:
        onnx_axes = [attrs.get("axis", -1) % rank]
    if 0 in onnx_axes:
        raise UserError(f"node {conversion.node_label}: softmax over the batch is not supported")
    shape = x.keras_shape
    axes = sorted(x.keras_axis(a) for a in onnx_axes)
    wide = [a for a in axes if shape[a] != 1]
    if len(wide) <= 1:
        # a softmax over unit axes only is 1 everywhere (log: 0): any one of them does
        axes = wide or axes[:1]
    elif node.op_type == "Softmax" or axes[-1] == rank - 1:
        first, last = axes[0], axes[-1]
        merged = (*shape[1:first], math.prod(int(shape[a]) for a in axes), *shape[last + 1:])
        flat = keras.layers.Reshape(merged, name=conversion.name("merge_axes"))(x.tensor)
        if node.op_type == "Softmax":
            y = keras.layers.Softmax(axis=first, name=conversion.name())(flat)
        else:  # the merged axis is the last one, where log_softmax works
            y = keras.layers.Activation("log_softmax", name=conversion.name())(flat)
        y = keras.layers.Reshape(tuple(shape[1:]), name=conversion.name("split_axes"))(y)
        conversion.out(y, channels_last=x.channels_last)
        return
    if node.op_type == "LogSoftmax":
        if axes != [rank - 1]:
            raise UserError(f"node {conversion.node_label}: LogSoftmax only over the last axis")
        layer = keras.layers.Activation("log_softmax", name=conversion.name())
    else:
        layer = keras.layers.Softmax(axis=axes[0], name=conversion.name())
    _same_layout(conversion, layer)
