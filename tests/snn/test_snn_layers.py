"""LIF dynamics against a hand-written NumPy loop, surrogate gradient, encoders, save/load."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

import classes_tool.snn as snn  # noqa: E402
from classes_tool.errors import UserError  # noqa: E402


def numpy_lif(current, beta, thr, reset):
    """The issue's equations, one step at a time."""
    n, steps = current.shape[:2]
    mem = np.zeros((n,) + current.shape[2:])
    spk = np.zeros_like(mem)
    spikes, mems = [], []
    for t in range(steps):
        if reset == "subtract":
            mem = beta * mem + current[:, t] - spk * thr
        else:
            mem = beta * mem * (1 - spk) + current[:, t]
        spk = (mem > thr).astype(float)
        spikes.append(spk)
        mems.append(mem)
    return np.stack(spikes, 1), np.stack(mems, 1)


@pytest.mark.parametrize("reset", ["subtract", "zero"])
def test_lif_matches_numpy_loop(reset):
    rng = np.random.default_rng(0)
    current = rng.uniform(-0.5, 1.5, size=(5, 12, 3, 2)).astype(np.float32)
    layer = snn.LIF(beta=0.8, threshold=1.0, reset=reset, return_membrane=True)
    spk, mem = layer(tf.constant(current))
    ref_spk, ref_mem = numpy_lif(current.astype(np.float64), 0.8, 1.0, reset)
    np.testing.assert_allclose(mem.numpy(), ref_mem, atol=1e-5)
    np.testing.assert_array_equal(spk.numpy(), ref_spk)
    assert ref_spk.sum() > 5  # the test exercises resets


def test_lif_threshold_is_strict_and_resets_differ():
    # beta = 0.5, input 1 each step: mem 1 (not > 1: no spike), 1.5 (spike), then the resets differ
    current = np.ones((1, 4, 1), np.float32)
    sub = snn.LIF(beta=0.5, threshold=1.0, reset="subtract", return_membrane=True)
    zero = snn.LIF(beta=0.5, threshold=1.0, reset="zero", return_membrane=True)
    s1, m1 = sub(tf.constant(current))
    s2, m2 = zero(tf.constant(current))
    np.testing.assert_allclose(m1.numpy()[0, :, 0], [1.0, 1.5, 0.75, 1.375])
    np.testing.assert_array_equal(s1.numpy()[0, :, 0], [0, 1, 0, 1])
    np.testing.assert_allclose(m2.numpy()[0, :, 0], [1.0, 1.5, 1.0, 1.5])
    np.testing.assert_array_equal(s2.numpy()[0, :, 0], [0, 1, 0, 1])


def test_surrogate_gradient_flows():
    x = tf.Variable([[-0.1, 0.0, 0.2]])
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(snn.spike_function(x, slope=10.0))
    g = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(g, 1.0 / (1.0 + 10.0 * np.abs(x.numpy())) ** 2, rtol=1e-6)
    assert y.numpy() == 1.0


def test_bad_reset_is_user_error():
    with pytest.raises(UserError):
        snn.LIF(reset="bogus")


def test_encoders():
    x = np.array([[0.0, 1.0, 0.5]], np.float32)
    r = snn.rate_encode(x, 2000, seed=3)
    assert r.shape == (1, 2000, 3)
    np.testing.assert_allclose(r.mean(axis=1)[0], [0.0, 1.0, 0.5], atol=0.05)
    np.testing.assert_array_equal(snn.rate_encode(x, 10, seed=3), snn.rate_encode(x, 10, seed=3))
    np.testing.assert_array_equal(snn.repeat_encode(x, 3)[0, 2], x[0])
    lat = snn.latency_encode(x, 5)
    np.testing.assert_array_equal(lat[0, :, 0], 0)
    assert lat[0, 0, 1] == 1 and lat[0, 2, 2] == 1 and lat.sum() == 2


def _tiny_model():
    layers = [keras.layers.Dense(4, name="fc1"), snn.LIF(beta=0.7, name="lif1"),
              keras.layers.Dense(3, name="fc2"), snn.LIF(beta=0.9, reset="zero", name="lif2")]
    return snn.unroll(layers, (6, 5), readout="count")


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load_model(tmp_path, suffix):
    keras.utils.set_random_seed(1)
    model = _tiny_model()
    x = snn.rate_encode(np.random.default_rng(0).random((8, 5)), 6, seed=0)
    path = tmp_path / f"m{suffix}"
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    lif2 = loaded.get_layer("lif2")
    assert lif2.reset == "zero" and lif2.beta_init == 0.9


def test_membrane_readout_is_max_of_leaky_integral():
    x = np.array([[[1.0], [0.0], [2.0]]], np.float32)
    out = snn.Readout("membrane", beta=0.5)(tf.constant(x)).numpy()
    assert out[0, 0] == pytest.approx(max(1.0, 0.5, 2.25))


def test_fit_reduces_loss():
    keras.utils.set_random_seed(0)
    model = _tiny_model()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 64)
    x = snn.rate_encode(np.eye(5)[y] * 0.9 + 0.05, 6, seed=1)
    model.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    hist = model.fit(x, y, epochs=8, batch_size=32, verbose=0).history["loss"]
    assert hist[-1] < hist[0]


def test_shipped_model_loads_and_reaches_stated_accuracy():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "models", "snn")
    data = np.load(os.path.join(root, "snn_digits_test.npz"))
    for name in ("snn_digits.keras", "snn_digits.h5"):
        model = keras.models.load_model(os.path.join(root, name), compile=False)
        acc = np.mean(np.argmax(model.predict(data["x"], verbose=0), 1) == data["y"])
        assert acc >= 0.90, name
