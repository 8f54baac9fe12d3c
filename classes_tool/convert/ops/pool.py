"""MaxPool, AveragePool, global pools and Reduce* ops."""

from __future__ import annotations

import math

import keras
import numpy as np

from classes_tool.errors import UserError

from .. import layers as L
from ..converter import ModelTensor
from . import register
from .conv import explicit_pads, tf_same_pads

_LOWEST = float(np.finfo(np.float32).min)


def _ceil_extra(spatial, kernel, strides, pads) -> list[int]:
    """Extra end padding that ceil_mode adds (0 where floor and ceil agree)."""
    extra = []
    for size, k, s, (b, e) in zip(spatial, kernel, strides, pads, strict=True):
        span = size + b + e - k
        n_floor, n_ceil = span // s + 1, math.ceil(span / s) + 1
        if n_ceil > n_floor and (n_ceil - 1) * s >= size + b:
            n_ceil -= 1  # a last window starting in the end padding is dropped
        extra.append(max((n_ceil - 1) * s + k - (size + b + e), 0) if n_ceil > n_floor else 0)
    return extra


def _window_counts(spatial, kernel, strides, pads, extra, include_pad) -> np.ndarray:
    """Cells each average-pooling window divides by, as an array over the output positions.

    Windows run over the input padded by `pads` plus the `extra` end cells of ceil_mode. A
    window counts the input cells it covers, or with `include_pad` also the explicit pads
    (never the ceil_mode extra), as ONNX Runtime does.
    """
    per_axis = []
    for size, k, s, (b, e), x_ in zip(spatial, kernel, strides, pads, extra, strict=True):
        n_out = (size + b + e + x_ - k) // s + 1
        start = np.arange(n_out) * s - b  # window start in input coordinates
        low, high = (-b, size + e) if include_pad else (0, size)
        per_axis.append(np.minimum(start + k, high) - np.maximum(start, low))
    counts = per_axis[0]
    for axis_counts in per_axis[1:]:
        counts = np.multiply.outer(counts, axis_counts)
    return counts


@register("MaxPool", "AveragePool")
def pool(conversion, node, attrs):
    x = conversion.model_tensor(0)
    if x.rank not in (3, 4):
        raise UserError(f"node {conversion.node_label}: only 1-D and 2-D pooling is supported")
    n = x.rank - 2
    spatial = [int(d) for d in x.onnx_shape[2:]]
    kernel = [int(k) for k in attrs["kernel_shape"]]
    strides = [int(s) for s in attrs.get("strides", [1] * n)]
    if any(d != 1 for d in attrs.get("dilations", [1] * n)):
        raise UserError(f"node {conversion.node_label}: dilated pooling is not supported")
    pads = explicit_pads(conversion, attrs, spatial, kernel, strides, [1] * n)
    is_max = node.op_type == "MaxPool"
    include_pad = bool(attrs.get("count_include_pad", 0))
    extra = [0] * n
    if attrs.get("ceil_mode", 0):
        extra = _ceil_extra(spatial, kernel, strides, pads)
    tensor = conversion.channels_last(x)
    if is_max:
        cls = keras.layers.MaxPooling2D if n == 2 else keras.layers.MaxPooling1D
        full = [(b, e + x_) for (b, e), x_ in zip(pads, extra, strict=True)]
        if all(p == (0, 0) for p in full):
            padding = "valid"
        elif full == tf_same_pads(spatial, kernel, strides, [1] * n):
            padding = "same"  # TF 'same' pooling ignores padded cells
        else:
            tensor = L.Pad([[0, 0], *full, [0, 0]], mode="constant", constant_value=_LOWEST,
                           name=conversion.name("pad"))(tensor)
            padding = "valid"
        y = cls(pool_size=kernel, strides=strides, padding=padding, name=conversion.name())(tensor)
        conversion.out(y, channels_last=True)
        return
    cls = keras.layers.AveragePooling2D if n == 2 else keras.layers.AveragePooling1D
    if (not include_pad and not any(extra)
            and pads == tf_same_pads(spatial, kernel, strides, [1] * n)):
        # TF 'same' average pooling divides by the input cells only, as ONNX does here
        y = cls(pool_size=kernel, strides=strides, padding="same", name=conversion.name())(tensor)
        conversion.out(y, channels_last=True)
        return
    # general case: average the zero-padded input over whole windows (the sum over each
    # window / kernel size), then rescale every output position by kernel size / its count
    full = [(b, e + x_) for (b, e), x_ in zip(pads, extra, strict=True)]
    if any(p != (0, 0) for p in full):
        layer = keras.layers.ZeroPadding2D if n == 2 else keras.layers.ZeroPadding1D
        tensor = layer(tuple(full) if n == 2 else full[0], name=conversion.name("pad"))(tensor)
    y = cls(pool_size=kernel, strides=strides, padding="valid", name=conversion.name())(tensor)
    counts = _window_counts(spatial, kernel, strides, pads, extra, include_pad)
    if np.any(counts <= 0):
        raise UserError(f"node {conversion.node_label}: a pooling window covers no input cell")
    if np.any(counts != math.prod(kernel)):
        scale = (math.prod(kernel) / counts).astype("float32")
        # ONNX layout (1, 1, *spatial): constant_like turns it channels-last
        scale = scale.reshape((1, 1, *scale.shape))
        const = conversion.constant_like(scale, ModelTensor(y, True), True, "count")
        y = keras.layers.Multiply(name=conversion.name("rescale"))([y, const])
    conversion.out(y, channels_last=True)


@register("GlobalAveragePool", "GlobalMaxPool")
def global_pool(conversion, node, attrs):
    x = conversion.model_tensor(0)
    if x.rank not in (3, 4):
        raise UserError(f"node {conversion.node_label}: only 1-D and 2-D global pooling is supported")
    avg = node.op_type == "GlobalAveragePool"
    cls = {(True, 4): keras.layers.GlobalAveragePooling2D,
           (True, 3): keras.layers.GlobalAveragePooling1D,
           (False, 4): keras.layers.GlobalMaxPooling2D,
           (False, 3): keras.layers.GlobalMaxPooling1D}[(avg, x.rank)]
    conversion.out(cls(keepdims=True, name=conversion.name())(conversion.channels_last(x)), channels_last=True)


_REDUCE = {"ReduceMean": "mean", "ReduceSum": "sum", "ReduceMax": "max", "ReduceMin": "min",
           "ReduceProd": "prod"}


@register(*_REDUCE)
def reduce(conversion, node, attrs):
    x = conversion.model_tensor(0)
    rank = x.rank
    axes = attrs.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        axes = conversion.const(1)
    keepdims = bool(attrs.get("keepdims", 1))
    if axes is None or len(axes) == 0:
        if attrs.get("noop_with_empty_axes", 0):
            conversion.out(x)
            return
        axes = list(range(rank))
    axes = sorted({int(a) % rank for a in np.asarray(axes).reshape(-1)})
    if 0 in axes:
        raise UserError(f"node {conversion.node_label}: reducing over the batch axis is not supported")
    op = _REDUCE[node.op_type]
    if x.channels_last and rank == 4 and axes == [2, 3] and op in ("mean", "max"):
        cls = keras.layers.GlobalAveragePooling2D if op == "mean" else \
            keras.layers.GlobalMaxPooling2D
        conversion.out(cls(keepdims=keepdims, name=conversion.name())(x.tensor), channels_last=keepdims)
        return
    if keepdims:
        keras_axes = sorted(x.keras_axis(a) for a in axes)
        conversion.out(L.Reduce(op, keras_axes, keepdims=True, name=conversion.name())(x.tensor),
               channels_last=x.channels_last)
    else:
        conversion.out(L.Reduce(op, axes, keepdims=False, name=conversion.name())(conversion.onnx_layout(x)))
