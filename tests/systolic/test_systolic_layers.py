"""Systolic Keras layers: im2col against a direct loop, replacement, quantisation, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from classes_tool.errors import UserError
from classes_tool.systolic import StuckAt, SystolicArray
from classes_tool.systolic.conv import conv2d, im2col
from classes_tool.systolic.layers import (
    SystolicConv2D,
    SystolicDense,
    calibrate,
    compatible_layers,
    predict,
    replace_layers,
)


def _direct_conv(x, w, stride, padding, dilation):
    """Plain loops over output pixels, TensorFlow's padding rule."""
    n, h, wd, c = x.shape
    kh, kw, _, co = w.shape
    sh, sw = stride
    dh, dw = dilation
    span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
    if padding == "same":
        oh, ow = -(-h // sh), -(-wd // sw)
        ph = max((oh - 1) * sh + span_h - h, 0)
        pw = max((ow - 1) * sw + span_w - wd, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - span_h) // sh + 1, (wd - span_w) // sw + 1
    out = np.zeros((n, oh, ow, co))
    for b in range(n):
        for r in range(oh):
            for q in range(ow):
                for a in range(kh):
                    for e in range(kw):
                        out[b, r, q] += x[b, r * sh + a * dh, q * sw + e * dw] @ w[a, e]
    return out


@pytest.mark.parametrize("shape,kernel,stride,padding,dilation", [
    ((2, 7, 6, 3), (3, 2), (1, 1), "valid", (1, 1)),
    ((1, 7, 6, 2), (3, 3), (2, 1), "same", (1, 1)),
    ((2, 9, 8, 1), (2, 3), (2, 3), "same", (1, 1)),
    ((1, 9, 9, 2), (3, 2), (1, 1), "valid", (2, 2)),
])
def test_im2col_matches_direct_convolution(shape, kernel, stride, padding, dilation):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((*kernel, shape[-1], 4))
    got = conv2d(x, w, np.matmul, stride, padding, dilation)
    np.testing.assert_allclose(got, _direct_conv(x, w, stride, padding, dilation), atol=1e-10)
    cols, (n, oh, ow) = im2col(x, kernel, stride, padding, dilation)
    assert cols.shape == (n * oh * ow, kernel[0] * kernel[1] * shape[-1])


def _model():
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(3, (2, 3), strides=(2, 1), name="c2")(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(5, activation="softmax", name="d1")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5
                       for w in model.get_weights()])
    return model


def _data(n=16):
    return np.random.default_rng(1).random((n, 6, 6, 2)).astype(np.float32)


def test_replaced_model_equals_original_without_faults():
    model = _model()
    assert compatible_layers(model) == ["c1", "c2", "d1"]
    array = SystolicArray(4, 4, 4, "weight_stationary", in_dtype="float32")
    sys_model = replace_layers(model, ["c1", "c2", "d1"], array)
    assert isinstance(sys_model.get_layer("c1"), SystolicConv2D)
    assert isinstance(sys_model.get_layer("d1"), SystolicDense)
    assert sys_model.get_layer("c1").array is array
    x = _data()
    np.testing.assert_allclose(predict(sys_model, x), model.predict(x, verbose=0), atol=1e-5)
    # the original model is untouched
    assert not any(isinstance(layer, SystolicConv2D) for layer in model.layers)


def test_fault_changes_output_and_clear_restores():
    model = _model()
    array = SystolicArray(4, 4, 4, "output_stationary", in_dtype="float32")
    sys_model = replace_layers(model, ["c1"], array)
    x = _data()
    clean = predict(sys_model, x)
    array.add_fault(StuckAt("a", 1, 1, 30, 1))
    faulty = predict(sys_model, x)
    assert not np.allclose(clean, faulty)
    array.clear_faults()
    np.testing.assert_array_equal(predict(sys_model, x), clean)


def test_quantised_int8_close_to_float_and_saved(tmp_path):
    model = _model()
    array = SystolicArray(4, 4, 4, "output_stationary", in_dtype="int8")
    sys_model = replace_layers(model, ["c1", "c2", "d1"], array)
    x = _data(32)
    with pytest.raises(Exception, match="calibrate"):
        predict(sys_model, x)
    scales = calibrate(sys_model, x)
    act, wsc = scales["c1"]
    assert act == pytest.approx(float(np.abs(x).max()) / 127, rel=1e-6)
    kernel = model.get_layer("c1").get_weights()[0]
    assert wsc == pytest.approx(float(np.abs(kernel).max()) / 127, rel=1e-6)
    ref = model.predict(x, verbose=0)
    got = predict(sys_model, x)
    assert np.abs(got - ref).max() < 0.1
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9
    path = tmp_path / "m.keras"
    sys_model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("c2").array.config() == array.config()
    np.testing.assert_array_equal(predict(loaded, x), got)


def test_quantised_dense_matches_hand_formula():
    inp = keras.Input((6,))
    model = keras.Model(inp, keras.layers.Dense(3, name="d")(inp))
    rng = np.random.default_rng(2)
    w = rng.standard_normal((6, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    model.get_layer("d").set_weights([w, b])
    sys_model = replace_layers(model, ["d"], SystolicArray(2, 2, 2, "no_local_reuse", "int8"))
    x = rng.standard_normal((10, 6)).astype(np.float32)
    calibrate(sys_model, x)
    sa, sw = np.abs(x).max() / 127, np.abs(w).max() / 127
    qa = np.clip(np.rint(x / sa), -127, 127).astype(np.int64)
    qw = np.clip(np.rint(w / sw), -127, 127).astype(np.int64)
    expect = (qa @ qw) * (float(np.float32(sa)) * float(np.float32(sw))) + b
    np.testing.assert_allclose(predict(sys_model, x), expect, rtol=1e-5, atol=1e-5)


def test_training_is_refused_and_bad_names():
    model = _model()
    array = SystolicArray(2, 2, 2, in_dtype="float32")
    with pytest.raises(UserError, match="no layer"):
        replace_layers(model, ["nope"], array)
    with pytest.raises(UserError, match="cannot run"):
        replace_layers(model, ["flatten"] if "flatten" in [la.name for la in model.layers]
                       else [model.layers[3].name], array)
    sys_model = replace_layers(model, ["d1"], array)
    with pytest.raises(UserError, match="inference-only"):
        sys_model(_data(2), training=True)
