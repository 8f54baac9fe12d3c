"""Keras layers whose matrix product runs on a (shared, possibly faulty) `SystolicArray`.

`SystolicConv2D` and `SystolicDense` take the same arguments and weights as `Conv2D` and `Dense`;
the product runs in NumPy through ``tf.numpy_function`` because the array model is NumPy by
design. They are **inference-only**: calling them with ``training=True`` raises a UserError (there
is no gradient through the array). Train the original model, then `replace_layers`.

Quantised mode (the array's in_dtype is an integer type): activations and weights are quantised
symmetrically per layer, ``q = clip(round(v / scale), -qmax, qmax)`` with ``qmax`` the largest
value of the dtype (127 for int8), the array accumulates in its integer accumulator (int32 for
int8) and the result is ``C * act_scale * weight_scale + bias``. The two scales are non-trainable
weights set by `calibrate` from calibration data: ``act_scale = max|input| / qmax`` over the data,
``weight_scale = max|kernel| / qmax``.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
import tensorflow as tf

from classes_tool.errors import UserError
from classes_tool.systolic.array import SystolicArray
from classes_tool.systolic.conv import im2col, kernel_matrix, lift

_DEFAULT_ARRAY = {"n1": 8, "n2": 8, "n3": 8, "dataflow": "output_stationary",
                  "in_dtype": "float32"}


def _as_array(array) -> SystolicArray:
    if isinstance(array, SystolicArray):
        return array
    if array is None:
        return SystolicArray(**_DEFAULT_ARRAY)
    if isinstance(array, dict):
        return SystolicArray(**array)
    raise UserError(f"array must be a SystolicArray or its config dict, got {type(array).__name__}")


class _SystolicMixin:
    """What both layers share: the array, the scales, calibration and the inference-only rule."""

    def _init_systolic(self, array) -> None:
        self.array = _as_array(array)
        self.trainable = False
        self._calibrating = False
        self._calib_max = 0.0

    def _build_scales(self) -> None:
        self.act_scale = self.add_weight(name="act_scale", shape=(), initializer="zeros",
                                         trainable=False)
        self.weight_scale = self.add_weight(name="weight_scale", shape=(), initializer="zeros",
                                            trainable=False)

    @property
    def quantised(self) -> bool:
        return self.array.in_dtype.kind in "iu"

    def _qmax(self) -> int:
        dt = self.array.in_dtype
        return int(np.iinfo(dt).max) if dt.kind == "i" else 127

    def _check_inference(self, training) -> None:
        if training:
            raise UserError(f"{type(self).__name__} '{self.name}' is inference-only: the systolic "
                            "array runs in NumPy and has no gradient; train the original model "
                            "and replace its layers afterwards")

    def _product(self, x2d: np.ndarray, w2d: np.ndarray, act_scale, weight_scale) -> np.ndarray:
        """The layer's matrix product on the array (float32 result, before bias)."""
        if self._calibrating:
            if x2d.size:
                self._calib_max = max(self._calib_max, float(np.max(np.abs(x2d))))
            return (x2d @ w2d).astype(np.float32)
        if not self.quantised:
            return self.array.matmul(x2d, w2d).astype(np.float32)
        sa, sw = float(act_scale), float(weight_scale)
        if sa <= 0 or sw <= 0:
            raise UserError(f"layer '{self.name}' runs on an integer array but has no scales; "
                            "run classes_tool.systolic.calibrate(model, data) first")
        q = self._qmax()
        qa = np.clip(np.rint(x2d / sa), -q, q).astype(self.array.in_dtype)
        qw = np.clip(np.rint(w2d / sw), -q, q).astype(self.array.in_dtype)
        return (self.array.matmul(qa, qw).astype(np.float64) * (sa * sw)).astype(np.float32)

    def save_own_variables(self, store) -> None:
        # Conv2D/Dense save only kernel and bias; our scales must travel with the file too
        for i, v in enumerate(self.weights):
            store[str(i)] = v.numpy()

    def load_own_variables(self, store) -> None:
        if len(store.keys()) != len(self.weights):
            raise UserError(f"layer '{self.name}' expected {len(self.weights)} saved variables, "
                            f"found {len(store.keys())}")
        for i, v in enumerate(self.weights):
            v.assign(store[str(i)])

    def _systolic_config(self, config: dict) -> dict:
        config["array"] = self.array.config()
        return config


@keras.saving.register_keras_serializable(package="classes_tool")
class SystolicDense(_SystolicMixin, keras.layers.Dense):
    """`Dense` whose product runs on a `SystolicArray` (inference only)."""

    def __init__(self, *args, array=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_systolic(array)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_scales()

    def _forward(self, x, kernel, bias, act_scale, weight_scale):
        shape = x.shape
        y = self._product(x.reshape(-1, shape[-1]).astype(np.float32), kernel, act_scale,
                          weight_scale)
        if self.use_bias:
            y = y + bias
        return y.reshape(*shape[:-1], y.shape[-1]).astype(np.float32)

    def call(self, inputs, training=None):
        self._check_inference(training)
        inputs = tf.cast(inputs, tf.float32)
        bias = self.bias if self.use_bias else tf.zeros((self.units,), tf.float32)
        y = tf.numpy_function(self._forward, [inputs, self.kernel, bias, self.act_scale,
                                              self.weight_scale], tf.float32, stateful=True)
        y.set_shape(tuple(inputs.shape[:-1]) + (self.units,))
        return self.activation(y) if self.activation is not None else y

    def get_config(self):
        return self._systolic_config(super().get_config())


@keras.saving.register_keras_serializable(package="classes_tool")
class SystolicConv2D(_SystolicMixin, keras.layers.Conv2D):
    """`Conv2D` (channels_last, groups=1) lowered with im2col onto a `SystolicArray`."""

    def __init__(self, *args, array=None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.data_format != "channels_last" or self.groups != 1:
            raise UserError("SystolicConv2D supports data_format='channels_last' and groups=1 only")
        self._init_systolic(array)

    def build(self, input_shape):
        super().build(input_shape)
        self._build_scales()

    def _forward(self, x, kernel, bias, act_scale, weight_scale):
        cols, shape = im2col(x.astype(np.float32), self.kernel_size, self.strides,
                             self.padding, self.dilation_rate)
        y = self._product(cols, kernel_matrix(kernel), act_scale, weight_scale)
        if self.use_bias:
            y = y + bias
        return lift(y, shape).astype(np.float32)

    def call(self, inputs, training=None):
        self._check_inference(training)
        inputs = tf.cast(inputs, tf.float32)
        bias = self.bias if self.use_bias else tf.zeros((self.filters,), tf.float32)
        y = tf.numpy_function(self._forward, [inputs, self.kernel, bias, self.act_scale,
                                              self.weight_scale], tf.float32, stateful=True)
        y.set_shape(self.compute_output_shape(tuple(inputs.shape)))
        return self.activation(y) if self.activation is not None else y

    def get_config(self):
        return self._systolic_config(super().get_config())


SYSTOLIC_LAYERS = (SystolicConv2D, SystolicDense)


def _replacement(layer) -> type | None:
    if type(layer) is keras.layers.Conv2D:
        cfg = layer.get_config()
        if cfg.get("data_format", "channels_last") == "channels_last" and cfg.get("groups", 1) == 1:
            return SystolicConv2D
    if type(layer) is keras.layers.Dense:
        return SystolicDense
    return None


def compatible_layers(model: keras.Model) -> list[str]:
    """Names of the layers `replace_layers` can move onto a systolic array (Conv2D, Dense)."""
    return [layer.name for layer in model.layers if _replacement(layer) is not None]


def replace_layers(model: keras.Model, names: Iterable[str], array: SystolicArray) -> keras.Model:
    """A new model with the named layers running on `array` (shared), weights carried over.

    The input model is not changed. Unknown or incompatible names raise a UserError.
    """
    names = list(names)
    compatible = set(compatible_layers(model))
    known = {layer.name for layer in model.layers}
    for name in names:
        if name not in known:
            raise UserError(f"model has no layer named {name!r}")
        if name not in compatible:
            raise UserError(f"layer {name!r} cannot run on a systolic array (only Conv2D with "
                            f"channels_last and groups=1, and Dense); compatible: "
                            f"{', '.join(sorted(compatible)) or 'none'}")
    wanted = set(names)

    def clone(layer):
        config = layer.get_config()
        if layer.name in wanted:
            return _replacement(layer)(**config, array=array)
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        target = new.get_layer(layer.name)
        if layer.name in wanted:
            by_name = {v.path.split("/")[-1]: v for v in target.weights}
            for v in layer.weights:
                by_name[v.path.split("/")[-1]].assign(v.numpy())
        else:
            target.set_weights(weights)
    return new


def systolic_layers(model: keras.Model) -> list:
    """The systolic layers of a model, in model order."""
    return [layer for layer in model.layers if isinstance(layer, SYSTOLIC_LAYERS)]


def calibrate(model: keras.Model, data: np.ndarray, batch_size: int = 256) -> dict[str, tuple]:
    """Set per-layer (act_scale, weight_scale) of every systolic layer from calibration `data`.

    The forward pass used for calibration is the float one, so scales do not depend on each
    other's rounding. Returns {layer name: (act_scale, weight_scale)}.
    """
    layers = systolic_layers(model)
    if not layers:
        raise UserError("model has no systolic layers to calibrate")
    data = np.asarray(data, dtype=np.float32)
    if len(data) == 0:
        raise UserError("calibration data is empty")
    for layer in layers:
        layer._calib_max, layer._calibrating = 0.0, True
    try:
        for s in range(0, len(data), batch_size):
            model(data[s:s + batch_size], training=False)
    finally:
        for layer in layers:
            layer._calibrating = False
    scales = {}
    for layer in layers:
        q = layer._qmax()
        act = layer._calib_max / q if layer._calib_max > 0 else 1.0
        wmax = float(np.max(np.abs(layer.kernel.numpy())))
        wsc = wmax / q if wmax > 0 else 1.0
        layer.act_scale.assign(act)
        layer.weight_scale.assign(wsc)
        scales[layer.name] = (act, wsc)
    return scales


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Eager batched inference (no XLA: the array runs in NumPy)."""
    outs = [np.asarray(model(x[s:s + batch_size], training=False))
            for s in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,))
