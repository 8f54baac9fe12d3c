"""Small registered Keras layers for ONNX ops that no built-in Keras layer expresses exactly.

Every layer here is serialisable (complete `get_config`, registered under the package
"classes_tool"), keeps any saved state as a non-trainable weight (never JSON, never a closure),
and so reloads with plain `keras.models.load_model` once `classes_tool.convert` is imported.
Axes in configs are Keras axes of the tensor the layer receives (batch is axis 0).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_PKG = "classes_tool"


@keras.saving.register_keras_serializable(package=_PKG)
class Constant(keras.layers.Layer):
    """Emit a constant tensor (value stored as a weight) so it can feed merge layers.

    It is called on another tensor of the graph to be connected and to learn the batch size:
    the stored value has a leading axis of size 1 that is repeated to that batch size, because
    Keras merge layers refuse operands whose batch sizes differ.
    """

    def __init__(self, shape, value_dtype="float32", **kwargs):
        super().__init__(**kwargs)
        self.value_shape = tuple(int(d) for d in shape)
        self.value_dtype = value_dtype
        self.value = self.add_weight(name="value", shape=self.value_shape, dtype=value_dtype,
                                     initializer="zeros", trainable=False)

    def call(self, inputs):
        batch = ops.shape(inputs)[0]
        return ops.broadcast_to(ops.convert_to_tensor(self.value),
                                (batch, *self.value_shape[1:]))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.value_shape[1:])

    def get_config(self):
        config = super().get_config()
        config.update(shape=list(self.value_shape), value_dtype=self.value_dtype)
        return config


@keras.saving.register_keras_serializable(package=_PKG)
class Div(keras.layers.Layer):
    """Element-wise a / b with NumPy broadcasting (Keras has no Divide merge layer)."""

    def call(self, inputs):
        a, b = inputs
        return ops.divide(a, b)

    def compute_output_shape(self, input_shape):
        return _broadcast_shapes(*input_shape)


@keras.saving.register_keras_serializable(package=_PKG)
class MatMul(keras.layers.Layer):
    """Batched matrix product of two graph tensors (attention-style MatMul)."""

    def call(self, inputs):
        a, b = inputs
        return ops.matmul(a, b)

    def compute_output_shape(self, input_shape):
        a, b = input_shape
        batch = _broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
        return tuple(batch) + (a[-2], b[-1])


@keras.saving.register_keras_serializable(package=_PKG)
class HardSigmoid(keras.layers.Layer):
    """ONNX HardSigmoid: max(0, min(1, alpha*x + beta)); Keras' built-in fixes alpha=1/6."""

    def __init__(self, alpha=0.2, beta=0.5, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)
        self.beta = float(beta)

    def call(self, inputs):
        return ops.clip(inputs * self.alpha + self.beta, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, beta=self.beta)
        return config


@keras.saving.register_keras_serializable(package=_PKG)
class Clip(keras.layers.Layer):
    """ONNX Clip with arbitrary bounds (ReLU covers only a lower bound of 0)."""

    def __init__(self, min_value=None, max_value=None, **kwargs):
        super().__init__(**kwargs)
        self.min_value = None if min_value is None else float(min_value)
        self.max_value = None if max_value is None else float(max_value)

    def call(self, inputs):
        x = inputs
        if self.min_value is not None:
            x = ops.maximum(x, self.min_value)
        if self.max_value is not None:
            x = ops.minimum(x, self.max_value)
        return x

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(min_value=self.min_value, max_value=self.max_value)
        return config


_UNARY = {
    "sqrt": ops.sqrt, "exp": ops.exp, "log": ops.log, "neg": ops.negative, "abs": ops.abs,
    "reciprocal": lambda x: ops.divide(1.0, x), "erf": ops.erf, "floor": ops.floor,
    "ceil": ops.ceil, "sin": ops.sin, "cos": ops.cos,
}


@keras.saving.register_keras_serializable(package=_PKG)
class Elementwise(keras.layers.Layer):
    """One element-wise math function by name (sqrt, exp, ..., or pow with a fixed exponent)."""

    def __init__(self, op, exponent=None, **kwargs):
        super().__init__(**kwargs)
        if op != "pow" and op not in _UNARY:
            raise ValueError(f"unknown element-wise op {op!r}")
        self.op = op
        self.exponent = None if exponent is None else float(exponent)

    def call(self, inputs):
        if self.op == "pow":
            return ops.power(inputs, self.exponent)
        return _UNARY[self.op](inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(op=self.op, exponent=self.exponent)
        return config


@keras.saving.register_keras_serializable(package=_PKG)
class Slice(keras.layers.Layer):
    """Strided slice along non-batch axes: `axes[i]` takes `starts[i]:ends[i]:steps[i]`.

    Bounds are already clamped to the static shape, so `ends` may be -1-free Python slices
    (None means "to the end" for negative steps).
    """

    def __init__(self, axes, starts, ends, steps, **kwargs):
        super().__init__(**kwargs)
        self.axes = [int(a) for a in axes]
        self.starts = [int(s) for s in starts]
        self.ends = [None if e is None else int(e) for e in ends]
        self.steps = [int(s) for s in steps]

    def _index(self, rank):
        index = [slice(None)] * rank
        for axis, start, end, step in zip(self.axes, self.starts, self.ends, self.steps,
                                          strict=True):
            index[axis] = slice(start, end, step)
        return tuple(index)

    def call(self, inputs):
        return inputs[self._index(len(inputs.shape))]

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for axis, start, end, step in zip(self.axes, self.starts, self.ends, self.steps,
                                          strict=True):
            if shape[axis] is not None:
                shape[axis] = len(range(shape[axis])[slice(start, end, step)])
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(axes=self.axes, starts=self.starts, ends=self.ends, steps=self.steps)
        return config


@keras.saving.register_keras_serializable(package=_PKG)
class Gather(keras.layers.Layer):
    """Take fixed indices along one non-batch axis (ONNX Gather with constant indices).

    A scalar index (`scalar=True`) removes the axis, as in ONNX.
    """

    def __init__(self, axis, indices, scalar=False, **kwargs):
        super().__init__(**kwargs)
        self.axis = int(axis)
        self.indices = [int(i) for i in indices]
        self.scalar = bool(scalar)

    def call(self, inputs):
        if self.scalar:
            index = [slice(None)] * len(inputs.shape)
            index[self.axis] = self.indices[0]
            return inputs[tuple(index)]
        return ops.take(inputs, np.asarray(self.indices, dtype="int32"), axis=self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        if self.scalar:
            del shape[self.axis]
        else:
            shape[self.axis] = len(self.indices)
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(axis=self.axis, indices=self.indices, scalar=self.scalar)
        return config


@keras.saving.register_keras_serializable(package=_PKG)
class Pad(keras.layers.Layer):
    """ONNX Pad (constant value or reflect) on any axes; `pads` is [[before, after]] per
    axis including the batch axis (which must stay [0, 0])."""

    def __init__(self, pads, mode="constant", constant_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.pads = [[int(b), int(a)] for b, a in pads]
        self.mode = mode
        self.constant_value = float(constant_value)

    def call(self, inputs):
        if self.mode == "constant":
            return ops.pad(inputs, self.pads, mode="constant",
                           constant_values=self.constant_value)
        return ops.pad(inputs, self.pads, mode=self.mode)

    def compute_output_shape(self, input_shape):
        return tuple(None if d is None else d + b + a
                     for d, (b, a) in zip(input_shape, self.pads, strict=True))

    def get_config(self):
        config = super().get_config()
        config.update(pads=self.pads, mode=self.mode, constant_value=self.constant_value)
        return config


@keras.saving.register_keras_serializable(package=_PKG)
class LRN(keras.layers.Layer):
    """ONNX LRN (local response normalisation across channels, AlexNet/GoogLeNet style).

    ``y = x / (bias + alpha / size * s) ** beta`` where ``s`` sums ``x**2`` over the channels
    ``c - floor((size-1)/2) .. c + ceil((size-1)/2)`` (clipped at the ends) along `axis`.
    Keras has no such layer, and TensorFlow's ``local_response_normalization`` neither
    divides alpha by the size nor takes even sizes, so it is written with keras.ops.
    """

    def __init__(self, size, alpha=1e-4, beta=0.75, bias=1.0, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.size = int(size)
        if self.size < 1:
            raise ValueError(f"LRN size must be positive, got {size}")
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.bias = float(bias)
        self.axis = int(axis)

    def call(self, inputs):
        rank = len(inputs.shape)
        axis = self.axis % rank
        channels = int(inputs.shape[axis])
        before = (self.size - 1) // 2
        pads = [[0, 0] for _ in range(rank)]
        pads[axis] = [before, self.size - 1 - before]
        squares = ops.pad(ops.square(inputs), pads)
        total = None
        for offset in range(self.size):  # the window sum, one shifted slice per position
            index = [slice(None)] * rank
            index[axis] = slice(offset, offset + channels)
            part = squares[tuple(index)]
            total = part if total is None else total + part
        return inputs / ops.power(self.bias + (self.alpha / self.size) * total, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, alpha=self.alpha, beta=self.beta, bias=self.bias,
                      axis=self.axis)
        return config


_REDUCE = {"mean": ops.mean, "sum": ops.sum, "max": ops.max, "min": ops.min, "prod": ops.prod}


@keras.saving.register_keras_serializable(package=_PKG)
class Reduce(keras.layers.Layer):
    """Reduce over fixed non-batch axes (ONNX ReduceMean/Sum/Max/Min/Prod, keepdims or not)."""

    def __init__(self, op, axes, keepdims=True, **kwargs):
        super().__init__(**kwargs)
        if op not in _REDUCE:
            raise ValueError(f"unknown reduction {op!r}")
        self.op = op
        self.axes = [int(a) for a in axes]
        self.keepdims = bool(keepdims)

    def call(self, inputs):
        return _REDUCE[self.op](inputs, axis=tuple(self.axes), keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        if self.keepdims:
            return tuple(1 if i in self.axes else d for i, d in enumerate(input_shape))
        return tuple(d for i, d in enumerate(input_shape) if i not in self.axes)

    def get_config(self):
        config = super().get_config()
        config.update(op=self.op, axes=self.axes, keepdims=self.keepdims)
        return config


@keras.saving.register_keras_serializable(package=_PKG)
class Resize(keras.layers.Layer):
    """Resize the spatial axes of an NHWC map to a fixed size where UpSampling2D does not fit
    (align_corners bilinear, or non-integer factors)."""

    def __init__(self, size, interpolation="bilinear", align_corners=False, **kwargs):
        super().__init__(**kwargs)
        self.size = [int(s) for s in size]
        self.interpolation = interpolation
        self.align_corners = bool(align_corners)

    def call(self, inputs):
        import tensorflow as tf

        if self.align_corners:
            method = {"bilinear": tf.compat.v1.image.ResizeMethod.BILINEAR,
                      "nearest": tf.compat.v1.image.ResizeMethod.NEAREST_NEIGHBOR}[
                self.interpolation]
            return tf.compat.v1.image.resize(inputs, self.size, method=method,
                                             align_corners=True)
        return tf.image.resize(inputs, self.size, method=self.interpolation)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.size, input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(size=self.size, interpolation=self.interpolation,
                      align_corners=self.align_corners)
        return config


def _broadcast_shapes(a, b):
    a, b = list(a), list(b)
    rank = max(len(a), len(b))
    a = [1] * (rank - len(a)) + a
    b = [1] * (rank - len(b)) + b
    out = []
    for x, y in zip(a, b, strict=True):
        if x == 1:
            out.append(y)
        elif y == 1:
            out.append(x)
        elif x is None or y is None:
            out.append(x if y is None else y)
        else:
            out.append(x)
    return tuple(out)


CUSTOM_LAYERS = (Constant, Div, MatMul, HardSigmoid, Clip, Elementwise, Slice, Gather, Pad,
                 LRN, Reduce, Resize)
