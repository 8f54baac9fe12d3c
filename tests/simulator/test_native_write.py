"""The compiled in-place site write (classes_tool/simulator/native.py) against TensorFlow's
stock-op path: same results, never a changed tensor that someone else still sees."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from classes_tool.simulator import native
from classes_tool.simulator.write import apply_sites

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C++ compiler")


@pytest.fixture(scope="module", autouse=True)
def built():
    native.build()  # a no-op once built (make does it during set-up)
    assert native.load() is not None


def _sites(rng, per_sample, count=12):
    lengths = rng.integers(0, min(40, per_sample), count)
    lengths[0] = per_sample  # one site covers the whole sample
    positions = np.concatenate([np.sort(rng.choice(per_sample, n, replace=False))
                                for n in lengths]).astype(np.int32)
    values = rng.standard_normal(len(positions)).astype(np.float32)
    values[::5] = np.nan
    values[1::7] = np.inf
    values[2::9] = -np.inf
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return positions, values, splits


def _stock(monkeypatch, fn, *args):
    with monkeypatch.context() as m:
        m.setenv("CLASSES_TOOL_NATIVE", "0")
        assert native.load() is None
        return fn(*args)


@pytest.mark.parametrize("shape", [(6, 5, 4, 3), (9, 17), (4, 8, 8, 2, 3)])
def test_native_write_equals_the_stock_scatter(monkeypatch, shape):
    rng = np.random.default_rng(len(shape))
    per_sample = int(np.prod(shape[1:]))
    positions, values, splits = _sites(rng, per_sample)
    x = rng.standard_normal(shape).astype(np.float32)
    ids = rng.integers(-1, len(splits) - 1, shape[0]).astype(np.int32)
    ids[0] = 0

    def run(x, ids):
        return apply_sites(x, ids, positions, values, splits, int(np.diff(splits).max()),
                           static_shapes=False)

    graph = tf.function(lambda x, ids: run(tf.identity(x) * 1.0, ids))  # a fresh buffer
    want = _stock(monkeypatch, lambda: tf.function(
        lambda x, ids: run(tf.identity(x) * 1.0, ids))(x, ids).numpy())
    for got in (graph(x, ids).numpy(), run(tf.constant(x), tf.constant(ids)).numpy()):
        assert np.array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.isnan(want[0]).sum() == (np.isnan(values[:per_sample])).sum()  # site 0 landed


def test_a_tensor_someone_else_reads_is_never_changed():
    x = np.arange(24, dtype=np.float32).reshape(4, 6)
    start = tf.constant([0, 0, 0, 0], tf.int32)
    length = tf.constant([2, 0, 2, 1], tf.int32)
    positions = tf.constant([1, 4], tf.int32)
    values = tf.constant([-1.0, -2.0])

    @tf.function
    def both(x):
        y = x * 2.0  # fresh, but also returned: its buffer must not be taken over
        return y, native.write_sites(y, start, length, positions, values)

    y, z = both(tf.constant(x))
    assert np.array_equal(y.numpy(), 2 * x)
    expected = 2 * x
    expected[[0, 0, 2, 2, 3], [1, 4, 1, 4, 1]] = [-1, -2, -1, -2, -1]
    assert np.array_equal(z.numpy(), expected)
    eager = tf.constant(x)
    native.write_sites(eager, start, length, positions, values)
    assert np.array_equal(eager.numpy(), x)  # eager inputs are held by Python: copied


def test_bad_sites_are_errors_not_writes_out_of_bounds():
    x = tf.zeros((2, 3))
    with pytest.raises(tf.errors.InvalidArgumentError, match="position out of range"):
        native.write_sites(x, tf.constant([0, 0]), tf.constant([1, 0]), tf.constant([3]),
                           tf.constant([1.0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="site outside positions"):
        native.write_sites(x, tf.constant([0, 0]), tf.constant([2, 0]), tf.constant([1]),
                           tf.constant([1.0]))


def test_gradient_matches_the_stock_path(monkeypatch):
    rng = np.random.default_rng(3)
    positions, values, splits = _sites(rng, 20, count=4)
    values = np.nan_to_num(values, posinf=3.0, neginf=-3.0)
    x = tf.constant(rng.standard_normal((5, 20)).astype(np.float32))
    ids = tf.constant([0, 1, -1, 3, 2], tf.int32)

    def grad():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = apply_sites(x * 1.0, ids, positions, values, splits, 20, static_shapes=False)
            loss = tf.reduce_sum(y * tf.range(100.0)[:20])
        return tape.gradient(loss, x).numpy()

    assert np.array_equal(grad(), _stock(monkeypatch, grad))


def test_a_patched_model_gives_the_same_outputs_either_way(tmp_path, monkeypatch):
    import keras

    import classes_tool
    from classes_tool import patcher

    rng = np.random.default_rng(0)
    inp = keras.Input((8, 8, 3))
    out = keras.layers.Dense(4)(keras.layers.Flatten()(keras.layers.Conv2D(5, 3)(inp)))
    keras.Model(inp, out).save(tmp_path / "m.h5")
    patcher.patch(tmp_path / "m.h5", tmp_path / "p.h5", after_types=["Conv2D"], sites=50,
                  seed=1, value_range=(-1.0, 1.0))
    x = rng.standard_normal((16, 8, 8, 3)).astype(np.float32)

    def outputs():
        model = keras.models.load_model(tmp_path / "p.h5")
        classes_tool.set_sites(model, list(range(16)))
        return model.predict(x, verbose=0)

    want = _stock(monkeypatch, outputs)
    assert np.array_equal(outputs(), want, equal_nan=True)


def test_build_without_a_compiler_is_a_clear_error(tmp_path, monkeypatch):
    from classes_tool.errors import UserError

    monkeypatch.setenv("CLASSES_TOOL_CACHE", str(tmp_path))
    monkeypatch.setattr(native, "compiler", lambda: None)
    with pytest.raises(UserError, match="no C[+][+] compiler"):
        native.build()
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert native.load() is None  # not built here: the stock path runs
