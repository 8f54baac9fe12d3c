"""Conv, ConvTranspose, Gemm, MatMul, BatchNormalization (weight layers) and LRN."""

from __future__ import annotations

import math

import keras
import numpy as np

from classes_tool.errors import UserError

from .. import layers as L
from . import register


def explicit_pads(conversion, attrs: dict, spatial: list[int], kernel: list[int], strides: list[int],
                  dilations: list[int]) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis from ONNX `pads` / `auto_pad`."""
    n = len(spatial)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            out.append((small, total - small) if auto_pad == "SAME_UPPER"
                       else (total - small, small))
        return out
    if auto_pad == "VALID":
        return [(0, 0)] * n
    pads = list(attrs.get("pads", [0] * (2 * n)))
    if any(p < 0 for p in pads):
        raise UserError(f"node {conversion.node_label}: negative pads are not supported")
    return [(int(pads[i]), int(pads[i + n])) for i in range(n)]


def tf_same_pads(spatial, kernel, strides, dilations) -> list[tuple[int, int]]:
    """What Keras padding='same' pads for this static input (the ONNX SAME_UPPER rule)."""
    return explicit_pads(None, {"auto_pad": "SAME_UPPER"}, spatial, kernel, strides, dilations)


def pad_input(conversion, tensor, pads: list[tuple[int, int]], spatial, kernel, strides, dilations,
              allow_same: bool = True):
    """Return (tensor, keras_padding): 'valid'/'same' when exact, else a ZeroPadding layer."""
    if all(p == (0, 0) for p in pads):
        return tensor, "valid"
    if allow_same and pads == tf_same_pads(spatial, kernel, strides, dilations):
        return tensor, "same"
    layer = keras.layers.ZeroPadding2D if len(pads) == 2 else keras.layers.ZeroPadding1D
    arg = tuple(pads) if len(pads) == 2 else pads[0]
    return layer(arg, name=conversion.name("pad"))(tensor), "valid"


def _spatial_attrs(attrs: dict, n: int):
    strides = [int(s) for s in attrs.get("strides", [1] * n)]
    dilations = [int(d) for d in attrs.get("dilations", [1] * n)]
    return strides, dilations


@register("Conv")
def conv(conversion, node, attrs):
    x = conversion.model_tensor(0)
    w = conversion.const(1).astype("float32")
    b = conversion.const(2, required=False)
    if x.rank not in (3, 4):
        raise UserError(f"node {conversion.node_label}: only 1-D and 2-D convolutions are supported")
    n = x.rank - 2
    spatial = [int(d) for d in x.onnx_shape[2:]]
    c_in, c_out = int(x.onnx_shape[1]), int(w.shape[0])
    kernel = [int(k) for k in w.shape[2:]]
    strides, dilations = _spatial_attrs(attrs, n)
    group = int(attrs.get("group", 1))
    pads = explicit_pads(conversion, attrs, spatial, kernel, strides, dilations)
    tensor, padding = pad_input(conversion, conversion.channels_last(x), pads, spatial, kernel, strides,
                                dilations)
    common = dict(kernel_size=kernel, strides=strides, padding=padding,
                  dilation_rate=dilations, use_bias=b is not None, name=conversion.name())
    if group == 1:
        cls = keras.layers.Conv2D if n == 2 else keras.layers.Conv1D
        layer = cls(c_out, **common)
        kernel_w = w.transpose(*range(2, 2 + n), 1, 0)
    elif group == c_in and c_out % c_in == 0:
        cls = keras.layers.DepthwiseConv2D if n == 2 else keras.layers.DepthwiseConv1D
        multiplier = c_out // c_in
        layer = cls(depth_multiplier=multiplier, **common)
        kernel_w = w.reshape(c_in, multiplier, *kernel).transpose(*range(2, 2 + n), 0, 1)
    else:
        if c_in % group or c_out % group:
            raise UserError(f"node {conversion.node_label}: channels not divisible by group {group}")
        cls = keras.layers.Conv2D if n == 2 else keras.layers.Conv1D
        layer = cls(c_out, groups=group, **common)
        kernel_w = w.transpose(*range(2, 2 + n), 1, 0)
    y = layer(tensor)
    layer.set_weights([kernel_w] + ([b.astype("float32")] if b is not None else []))
    conversion.out(y, channels_last=True)


@register("ConvTranspose")
def conv_transpose(conversion, node, attrs):
    x = conversion.model_tensor(0)
    w = conversion.const(1).astype("float32")
    b = conversion.const(2, required=False)
    if x.rank != 4:
        raise UserError(f"node {conversion.node_label}: only 2-D ConvTranspose is supported")
    if int(attrs.get("group", 1)) != 1:
        raise UserError(f"node {conversion.node_label}: grouped ConvTranspose is not supported")
    strides, dilations = _spatial_attrs(attrs, 2)
    if dilations != [1, 1]:
        raise UserError(f"node {conversion.node_label}: dilated ConvTranspose is not supported")
    spatial = [int(d) for d in x.onnx_shape[2:]]
    kernel = [int(k) for k in w.shape[2:]]
    out_pad = [int(p) for p in attrs.get("output_padding", [0, 0])]
    full = [(i - 1) * s + k + op
            for i, s, k, op in zip(spatial, strides, kernel, out_pad, strict=True)]
    if "output_shape" in attrs:
        pads = []
        for f, o in zip(full, attrs["output_shape"][-2:], strict=True):
            total = f - int(o)
            if total < 0:
                raise UserError(f"node {conversion.node_label}: output_shape larger than the full "
                                "transposed convolution is not supported")
            half = total // 2
            pads.append((half, total - half) if attrs.get("auto_pad") == "SAME_UPPER"
                        else (total - half, half))
    elif attrs.get("auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for f, i, s in zip(full, spatial, strides, strict=True):
            total = f - i * s
            half = total // 2
            pads.append((half, total - half) if attrs["auto_pad"] == "SAME_UPPER"
                        else (total - half, half))
    else:
        pads = explicit_pads(conversion, {"pads": attrs.get("pads", [0] * 4)}, spatial, kernel,
                             strides, dilations)
    layer = keras.layers.Conv2DTranspose(
        int(w.shape[1]), kernel_size=kernel, strides=strides, padding="valid",
        output_padding=out_pad if any(out_pad) else None, use_bias=b is not None,
        name=conversion.name())
    y = layer(conversion.channels_last(x))
    layer.set_weights([w.transpose(2, 3, 1, 0)] + ([b.astype("float32")] if b is not None
                                                   else []))
    keras_size = [int(d) for d in y.shape[1:3]]
    if keras_size != full:
        raise UserError(f"node {conversion.node_label}: transposed convolution size mismatch "
                        f"{keras_size} vs {full}")
    if any(p != (0, 0) for p in pads):
        y = keras.layers.Cropping2D(tuple(pads), name=conversion.name("crop"))(y)
    conversion.out(y, channels_last=True)


def _dense(conversion, tensor, kernel: np.ndarray, bias: np.ndarray | None):
    layer = keras.layers.Dense(int(kernel.shape[1]), use_bias=bias is not None, name=conversion.name())
    y = layer(tensor)
    layer.set_weights([kernel.astype("float32")] +
                      ([bias.astype("float32")] if bias is not None else []))
    return y


@register("Gemm")
def gemm(conversion, node, attrs):
    a = conversion.model_tensor(0)
    if attrs.get("transA", 0):
        raise UserError(f"node {conversion.node_label}: Gemm with transA is not supported")
    b = conversion.get(node.input[1])
    if not isinstance(b, np.ndarray):
        raise UserError(f"node {conversion.node_label}: Gemm of two computed tensors is not supported")
    kernel = (b.T if attrs.get("transB", 0) else b) * float(attrs.get("alpha", 1.0))
    c = conversion.const(2, required=False)
    bias = None
    if c is not None:
        c = np.asarray(c, dtype="float32") * float(attrs.get("beta", 1.0))
        if c.ndim == 2 and c.shape[0] != 1:
            raise UserError(f"node {conversion.node_label}: Gemm bias spans the batch; not supported")
        bias = np.broadcast_to(c.reshape(-1) if c.size > 1 else c, (kernel.shape[1],)).copy()
    conversion.out(_dense(conversion, conversion.onnx_layout(a), kernel, bias))


@register("MatMul")
def matmul(conversion, node, attrs):
    a, b = conversion.get(node.input[0]), conversion.get(node.input[1])
    if isinstance(a, np.ndarray):
        raise UserError(f"node {conversion.node_label}: MatMul with a constant left operand is not "
                        "supported")
    if isinstance(b, np.ndarray):
        if b.ndim != 2:
            raise UserError(f"node {conversion.node_label}: MatMul with a rank-{b.ndim} constant is "
                            "not supported")
        conversion.out(_dense(conversion, conversion.onnx_layout(a), b, None))
        return
    if a.rank != b.rank:
        raise UserError(f"node {conversion.node_label}: MatMul of tensors of different rank is not "
                        "supported")
    conversion.out(L.MatMul(name=conversion.name())([conversion.onnx_layout(a), conversion.onnx_layout(b)]))


@register("BatchNormalization")
def batch_norm(conversion, node, attrs):
    x = conversion.model_tensor(0)
    scale, bias, mean, var = (conversion.const(i).astype("float32") for i in range(1, 5))
    layer = keras.layers.BatchNormalization(
        axis=x.keras_axis(1), epsilon=float(attrs.get("epsilon", 1e-5)),
        momentum=float(attrs.get("momentum", 0.9)), name=conversion.name())
    y = layer(x.tensor)
    layer.set_weights([scale, bias, mean, var])
    conversion.out(y, channels_last=x.channels_last)


@register("LRN")
def lrn(conversion, node, attrs):
    x = conversion.model_tensor(0)
    if x.rank < 3:
        raise UserError(f"node {conversion.node_label}: LRN needs a (N, C, ...) feature map")
    layer = L.LRN(int(attrs["size"]), alpha=attrs.get("alpha", 1e-4),
                  beta=attrs.get("beta", 0.75), bias=attrs.get("bias", 1.0),
                  axis=x.keras_axis(1), name=conversion.name())
    conversion.out(layer(x.tensor), channels_last=x.channels_last)
