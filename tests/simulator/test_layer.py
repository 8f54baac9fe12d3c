"""The ErrorSimulator layer: per-sample sites, modes, XLA, any rank, save/load."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from classes_tool import ErrorSimulator, set_injection, set_sites, simulators

SITES = {"positions": [0, 5, 31, 7], "values": [100.0, 200.0, np.nan, -5.0],
         "splits": [0, 2, 3, 4]}


def _model(shape=(4, 4, 2)):
    inp = keras.Input(shape)
    sim = ErrorSimulator(num_sites=3, total_positions=4, max_positions=2, name="sim")
    out = sim(inp)
    model = keras.Model(inp, out)
    sim.load_sites(**SITES)
    return model


def _x(n=6, shape=(4, 4, 2)):
    return np.random.default_rng(0).uniform(size=(n, *shape)).astype("float32")


def test_forced_sites_write_exact_positions_per_sample():
    model, x = _model(), _x()
    set_sites(model, [0, 1, 2, -1, 0, 1])
    y = model.predict(x, verbose=0).reshape(6, -1)
    flat = x.reshape(6, -1)
    changed = [set(np.flatnonzero(~(y[b] == flat[b]))) for b in range(6)]
    assert changed == [{0, 5}, {31}, {7}, set(), {0, 5}, {31}]
    assert y[0, 0] == 100.0 and y[0, 5] == 200.0 and np.isnan(y[1, 31]) and y[2, 7] == -5.0


@pytest.mark.parametrize("ids, message", [
    ([3, 0], r"must lie in \[-1, 2\]"), ([-2], r"must lie in \[-1, 2\]"),
    ([0.5, 1], "list of integers"), ([], "non-empty"),
])
def test_set_sites_refuses_ids_it_would_silently_ignore(ids, message):
    model = _model()
    set_sites(model, [1])
    with pytest.raises(ValueError, match=message):
        set_sites(model, ids)
    assert simulators(model)[0].forced_sites.numpy()[0] == 1  # left as it was


def test_switches_on_a_model_without_simulators_or_with_a_non_bool():
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="has no ErrorSimulator layer"):
        set_sites(plain, [0])
    with pytest.raises(ValueError, match="has no ErrorSimulator layer"):
        set_injection(plain, True)
    with pytest.raises(TypeError, match="True or False"):
        set_injection(_model(), "no")


def test_off_is_bit_identical_and_random_mode_varies_per_sample():
    model, x = _model(), _x(64)
    set_injection(model, False)
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)
    set_injection(model, True)
    y = model.predict(x, verbose=0).reshape(64, -1)
    diff = ~(y == x.reshape(64, -1))
    per_sample = [tuple(np.flatnonzero(d)) for d in diff]
    assert all(len(p) >= 1 for p in per_sample)  # every sample got a site
    assert len(set(per_sample)) == 3  # and samples got different sites


def test_rank_two_tensor_and_xla():
    inp = keras.Input((10,))
    sim = ErrorSimulator(num_sites=2, total_positions=3, max_positions=2, name="sim")
    model = keras.Model(inp, sim(inp))
    sim.load_sites([1, 9, 4], [7.0, 8.0, 9.0], [0, 2, 3])
    set_sites(model, [1, 0])
    x = np.zeros((2, 10), "float32")
    compiled = tf.function(lambda t: model(t), jit_compile=True)
    y = compiled(tf.constant(x)).numpy()
    assert y[0, 4] == 9.0 and y[1, 1] == 7.0 and y[1, 9] == 8.0
    assert np.count_nonzero(y) == 3
    set_injection(model, False)  # the mode is a variable: no retracing needed
    np.testing.assert_array_equal(compiled(tf.constant(x)).numpy(), x)


def test_no_injection_in_training_unless_asked():
    model, x = _model(), _x()
    np.testing.assert_array_equal(model(x, training=True).numpy(), x)
    sim = ErrorSimulator(num_sites=3, total_positions=4, max_positions=2,
                         inject_in_training=True)
    inp = keras.Input((4, 4, 2))
    trained = keras.Model(inp, sim(inp))
    sim.load_sites(**SITES)
    assert not np.array_equal(trained(x, training=True).numpy(), x)


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_sites_live_in_weights_and_survive_save_load(tmp_path, suffix):
    model, x = _model(), _x()
    path = tmp_path / f"m.{suffix}"
    model.save(path)
    loaded = keras.models.load_model(path)
    sim = simulators(loaded)[0]
    np.testing.assert_array_equal(sim.splits.numpy(), SITES["splits"])
    config = sim.get_config()  # the config holds sizes, never the site arrays themselves
    assert not any(isinstance(v, (list, tuple)) for v in config.values())
    set_sites(loaded, [1])
    assert np.isnan(loaded.predict(x[:1], verbose=0).reshape(-1)[31])


def test_bad_site_arrays_are_refused():
    model = _model()
    with pytest.raises(ValueError):
        model.get_layer("sim").load_sites([1, 2], [1.0, 2.0], [0, 2])


def test_ragged_and_static_paths_agree():
    from classes_tool.simulator.write import apply_sites

    rng = np.random.default_rng(0)
    sizes = [1, 40, 3, 0, 17]
    splits = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    positions = np.concatenate([rng.choice(48, k, replace=False) for k in sizes]).astype(np.int32)
    values = rng.normal(size=len(positions)).astype(np.float32)
    x = tf.constant(rng.normal(size=(7, 4, 4, 3)).astype("float32"))
    ids = tf.constant([0, 1, 2, 3, 4, -1, 1])
    args = (x, ids, tf.constant(positions), tf.constant(values), tf.constant(splits), 40)
    ragged = apply_sites(*args, static_shapes=False).numpy()
    static = apply_sites(*args, static_shapes=True).numpy()
    np.testing.assert_array_equal(ragged, static)
    assert (ragged != x.numpy()).reshape(7, -1).sum(1).tolist() == [1, 40, 3, 0, 17, 0, 40]


@pytest.mark.parametrize("batch", [3, 9])
def test_many_entries_take_the_compiled_write_and_match_numpy(batch):
    """Above XLA_WRITE_MIN_ENTRIES the write runs as a compiled scatter padded to a size class;
    it must equal a plain NumPy write, NaN and Inf values included, rows without site untouched."""
    from classes_tool.simulator import write as L

    rng = np.random.default_rng(1)
    shape = (16, 16, 32)
    flat = int(np.prod(shape))
    sizes = [flat, 5000, 1, 3333]  # one site covers the whole sample
    splits = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    positions = np.concatenate([rng.choice(flat, k, replace=False) for k in sizes]).astype(np.int32)
    values = rng.normal(size=len(positions)).astype(np.float32)
    values[::97] = np.nan
    values[5::101] = -np.inf
    x = rng.normal(size=(batch, *shape)).astype("float32")
    ids = np.array([(b % 5) - 1 for b in range(batch)], dtype=np.int32)  # -1, 0, 1, 2, 3, ...
    entries = sum(sizes[i] for i in ids if i >= 0)
    assert entries >= L.XLA_WRITE_MIN_ENTRIES
    expected = x.reshape(batch, -1).copy()
    for b, i in enumerate(ids):
        if i >= 0:
            expected[b, positions[splits[i]:splits[i + 1]]] = values[splits[i]:splits[i + 1]]
    got = L.apply_sites(tf.constant(x), tf.constant(ids), tf.constant(positions),
                        tf.constant(values), tf.constant(splits), max(sizes),
                        static_shapes=False).numpy()
    np.testing.assert_array_equal(got.reshape(batch, -1), expected)
    # and inside a traced function (how models run)
    fn = tf.function(lambda t: L.apply_sites(t, tf.constant(ids), tf.constant(positions),
                                             tf.constant(values), tf.constant(splits),
                                             max(sizes), static_shapes=False))
    np.testing.assert_array_equal(fn(tf.constant(x)).numpy().reshape(batch, -1), expected)


def test_compiled_write_with_sites_passed_per_call_matches_numpy():
    """The campaign passes each batch's sites as arguments of unknown length (padded to a
    power of two before the compiled program): same result as a NumPy write."""
    from classes_tool.simulator import write as L

    rng = np.random.default_rng(2)
    shape, batch = (8, 8, 64), 12
    flat = int(np.prod(shape))
    sizes = [flat, 1000, 7, 2500, 3]
    splits = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    positions = np.concatenate([rng.choice(flat, k, replace=False) for k in sizes]).astype(np.int32)
    values = rng.normal(size=len(positions)).astype(np.float32)
    x = rng.normal(size=(batch, *shape)).astype("float32")
    fn = tf.function(lambda t, i, p, v, s: L.apply_sites(t, i, p, v, s, 1, static_shapes=False),
                     input_signature=[tf.TensorSpec((batch, *shape)), tf.TensorSpec((batch,), tf.int32),
                                      tf.TensorSpec((None,), tf.int32),
                                      tf.TensorSpec((None,), tf.float32),
                                      tf.TensorSpec((None,), tf.int32)])
    for ids in ([0, 1, 2, 3, 4, -1, 0, 1, 2, 3, 4, -1], [3, 3, 3, 3, 1, 1, 1, 1, 0, 0, 2, 4]):
        ids = np.array(ids, np.int32)
        assert sum(sizes[i] for i in ids if i >= 0) >= L.XLA_WRITE_MIN_ENTRIES
        expected = x.reshape(batch, -1).copy()
        for b, i in enumerate(ids):
            if i >= 0:
                expected[b, positions[splits[i]:splits[i + 1]]] = values[splits[i]:splits[i + 1]]
        got = fn(x, ids, positions, values, splits).numpy().reshape(batch, -1)
        np.testing.assert_array_equal(got, expected)
