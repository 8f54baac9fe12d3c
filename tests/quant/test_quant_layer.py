"""FaultInjection layer: reproducible masks, realised probability, phases, STE, statistics."""

import json
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from classes_tool.quant.layers import (
    FaultInjection,
    apply_fault_injection,
    injection_layers,
    set_injection,
)
from classes_tool.quant.statistics import (
    collect_statistics,
    derive,
    raw_from_tensors,
    write_statistics,
)
from classes_tool.results.injection_statistics import format_table


def layer(**kw):
    kw.setdefault("injection_type", "random")
    kw.setdefault("scale", 1.0)
    return FaultInjection(**kw)


def hits(fi, x, training=False):
    return np.asarray(fi(x, training=training)) != x


X = np.random.default_rng(0).integers(0, 100, size=(4, 50, 40)).astype(np.float32)


def test_mask_reproducible_from_seed_and_independent_of_batch():
    a = layer(probability=10, seed=3, apply_during="eval")
    b = layer(probability=10, seed=3, apply_during="eval")
    c = layer(probability=10, seed=4, apply_during="eval")
    out_a = np.asarray(a(X))
    assert np.array_equal(out_a, np.asarray(b(X)))
    assert not np.array_equal(out_a, np.asarray(c(X)))
    # same positions (and values) for every sample and for any batch split
    singles = np.concatenate([np.asarray(a(X[i:i + 1])) for i in range(len(X))])
    assert np.array_equal(out_a, singles)
    assert np.array_equal(hits(a, X)[0], hits(a, X)[3])


def test_realised_probability_within_binomial_interval():
    n = 50 * 40
    for p, seed in ((5.0, 1), (20.0, 2), (50.0, 3)):
        fi = layer(probability=p, seed=seed, apply_during="eval")
        k = hits(fi, X)[0].sum()
        mean, sd = n * p / 100, math.sqrt(n * p / 100 * (1 - p / 100))
        assert abs(k - mean) < 4 * sd, (p, k, mean)
    assert hits(layer(probability=0, apply_during="eval"), X).sum() == 0
    assert hits(layer(probability=100, apply_during="eval"), X).all()


def test_apply_during_phases():
    x = X[:1]
    train = layer(probability=50, apply_during="train")
    evalu = layer(probability=50, apply_during="eval")
    both = layer(probability=50, apply_during="both")
    assert hits(train, x, True).any() and not hits(train, x, False).any()
    assert hits(evalu, x, False).any() and not hits(evalu, x, True).any()
    assert hits(both, x, True).any() and hits(both, x, False).any()


def test_epoch_interval_keeps_mask_then_changes_it():
    fi = layer(probability=20, apply_during="train", epoch_interval=2)
    fi(X[:1])  # build
    masks = []
    for epoch in range(3):
        fi.epoch_var.assign(epoch)
        masks.append(hits(fi, X[:1], True))
    assert np.array_equal(masks[0], masks[1])
    assert not np.array_equal(masks[1], masks[2])


def test_step_interval_injects_that_fraction_of_steps():
    fi = layer(probability=100, apply_during="train", step_interval=0.3, seed=5)
    x = X[:1, :2, :2]
    injected = [hits(fi, x, True).any() for _ in range(400)]
    mean, sd = 400 * 0.3, math.sqrt(400 * 0.3 * 0.7)
    assert abs(sum(injected) - mean) < 4 * sd
    assert int(fi.step_var.value) == 400


def tiny_model():
    inp = keras.Input((6,), name="inp")
    h = keras.layers.Dense(8, activation="relu", name="d1")(inp)
    h = keras.layers.Dense(8, activation="relu", name="d2")(h)
    h = keras.layers.Dense(8, name="d3")(h)
    out = keras.layers.Dense(3, activation="softmax", name="out")(h)
    return keras.Model(inp, out)


def test_layer_mode_random_layer_each_step():
    model = tiny_model()
    data = np.random.default_rng(1).random((16, 6)).astype(np.float32)
    patched = apply_fault_injection(model, {"probability": 100, "mode": "layer",
                                            "injection_layer": -1, "seed": 9}, data)
    layers = injection_layers(patched)
    assert [fi.target for fi in layers] == ["d1", "d2", "d3"]  # output layer excluded
    chosen = []
    for _ in range(60):
        before = [fi.statistics()["injected"] for fi in layers]
        patched(data[:2], training=True)
        after = [fi.statistics()["injected"] for fi in layers]
        active = [i for i, (b, a) in enumerate(zip(before, after, strict=True)) if a > b]
        assert len(active) == 1
        chosen.append(active[0])
    assert set(chosen) == {0, 1, 2}
    fixed = apply_fault_injection(model, {"probability": 100, "mode": "layer",
                                          "injection_layer": "d2"}, data)
    fixed(data[:2], training=True)
    assert [fi.statistics()["injected"] > 0 for fi in injection_layers(fixed)] == [False, True, False]


def test_straight_through_gradient():
    fi = layer(probability=60, apply_during="train", injection_type="msb_flip", bits=8, scale=0.5)
    x = tf.constant(X[:2] / 10)
    w = tf.constant(np.random.default_rng(2).random(x.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fi(x, training=True)
        loss = tf.reduce_sum(w * y)
    assert (np.asarray(y) != np.asarray(x)).any()
    assert np.allclose(tape.gradient(loss, x), w)  # identity, also at hit positions


def test_training_updates_weights_before_the_injection():
    model = tiny_model()
    rng = np.random.default_rng(3)
    x = rng.random((64, 6)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    patched = apply_fault_injection(model, {"probability": 30, "injection_type": "full_flip"},
                                    x)
    before = patched.get_layer("d1").get_weights()[0].copy()
    patched.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    patched.fit(x, y, epochs=1, batch_size=32, verbose=0)
    assert not np.allclose(before, patched.get_layer("d1").get_weights()[0])
    assert collect_statistics(patched)["d1_fault_injection"]["injected"] > 0


def test_set_injection_changes_compiled_model():
    model = tiny_model()
    x = np.random.default_rng(4).random((32, 6)).astype(np.float32)
    patched = apply_fault_injection(model, {"probability": 0, "apply_during": "eval"}, x)
    clean = model.predict(x, verbose=0)
    assert np.allclose(patched.predict(x, verbose=0), clean)
    set_injection(patched, probability=100, seed=1)
    assert not np.allclose(patched.predict(x, verbose=0), clean)
    set_injection(patched, apply_during="none")
    assert np.allclose(patched.predict(x, verbose=0), clean)


def test_save_and_load_keeps_behaviour(tmp_path):
    model = tiny_model()
    x = np.random.default_rng(5).random((8, 6)).astype(np.float32)
    patched = apply_fault_injection(model, {"probability": 40, "apply_during": "eval",
                                            "injection_type": "bit_flip", "bit": 3,
                                            "seed": 11}, x)
    set_injection(patched, seed=12)
    path = tmp_path / "patched.keras"
    patched.save(path)
    loaded = keras.models.load_model(path)
    assert np.array_equal(loaded.predict(x, verbose=0), patched.predict(x, verbose=0))
    cfg = injection_layers(loaded)[0].get_config()
    assert cfg["bit"] == 3 and cfg["injection_type"] == "bit_flip" and cfg["target"] == "d1"


def test_statistics_on_known_tensors(tmp_path):
    x = np.float32([[0, 1, 2, 3]])
    fi = layer(injection_type="lsb_flip", probability=100, bits=8, apply_during="eval")
    assert np.asarray(fi(x)).tolist() == [[1, 0, 3, 2]]
    s = derive(fi.statistics())
    assert s["seen"] == 4 and s["injected"] == 4 and s["changed"] == 4
    assert s["injection_rate"] == 1.0 and math.isclose(s["rmse"], 1.0)
    assert math.isclose(s["cosine"], 12 / 14)  # (0*1 + 1*0 + 2*3 + 3*2) / (|x| |f|), both 14

    fi = layer(injection_type="stuck_at_0", bit=0, probability=100, bits=8, apply_during="eval")
    assert np.asarray(fi(x)).tolist() == [[0, 0, 2, 2]]
    s = derive(fi.statistics())
    assert s["injected"] == 4 and s["changed"] == 2 and s["change_rate"] == 0.5
    assert math.isclose(s["rmse"], math.sqrt(2 / 4))
    assert math.isclose(s["cosine"], 10 / math.sqrt(14 * 8))
    assert derive(raw_from_tensors(x, [[0, 0, 2, 2]], np.ones((1, 4)))) == pytest.approx(s)

    fi = layer(injection_type="float32_bit_flip", bit=30, probability=100, apply_during="eval")
    fi(np.float32([[1.0, 2.0]]))  # exponent MSB: 1.0 -> 2**128 = inf, 2.0 -> tiny
    s = derive(fi.statistics())
    assert s["nonfinite"] == 1 and s["changed"] == 2

    model = tiny_model()
    data = np.random.default_rng(6).random((8, 6)).astype(np.float32)
    patched = apply_fault_injection(model, {"probability": 50, "apply_during": "eval"}, data)
    patched.predict(data, verbose=0)
    stats = collect_statistics(patched)
    assert set(stats) == {"d1_fault_injection", "d2_fault_injection", "d3_fault_injection"}
    assert stats["d1_fault_injection"]["seen"] == 8 * 8
    assert "d2_fault_injection" in format_table(stats)
    path = write_statistics(stats, tmp_path / "s.json")
    assert json.loads(path.read_text())["d3_fault_injection"]["target"] == "d3"


def test_quantize_all_puts_every_value_on_the_grid():
    x = np.float32([[0.04, 0.26, 1.0, 30.0]])
    fi = layer(injection_type="lsb_flip", probability=0, bits=4, scale=0.1, quantize_all=True,
               apply_during="eval")
    assert np.allclose(np.asarray(fi(x)), [[0.0, 0.3, 1.0, 1.5]])  # rounded, clipped at 15 * 0.1
    fi = layer(injection_type="lsb_flip", probability=100, bits=4, scale=0.1, quantize_all=True,
               apply_during="eval")
    assert np.allclose(np.asarray(fi(x)), [[0.1, 0.2, 1.1, 1.4]])
    s = derive(fi.statistics())  # measured against the clean grid values
    assert s["changed"] == 4 and math.isclose(s["rmse"], 0.1, rel_tol=1e-5)


def test_recalibrate_follows_the_model():
    from classes_tool.quant.layers import recalibrate

    model = tiny_model()
    data = np.random.default_rng(7).random((32, 6)).astype(np.float32)
    patched = apply_fault_injection(model, {"probability": 1}, data)
    fi = injection_layers(patched)[0]
    before = fi.current_scale()
    d1 = patched.get_layer("d1")
    d1.set_weights([w * 2 for w in d1.get_weights()])  # relu(2z) = 2 relu(z): range doubles
    recalibrate(patched, data)
    assert fi.current_scale() == pytest.approx(2 * before, rel=1e-5)


def test_layer_mode_picks_one_layer_per_mask_in_evaluation():
    model = tiny_model()
    data = np.random.default_rng(1).random((16, 6)).astype(np.float32)
    patched = apply_fault_injection(model, {"probability": 100, "mode": "layer",
                                            "injection_layer": -1, "apply_during": "eval"}, data)
    layers = injection_layers(patched)
    chosen = []
    for seed in range(30):
        for epoch in (0, 1):
            set_injection(patched, seed=seed, epoch=epoch)
            for fi in layers:
                fi.reset_statistics()
            patched.predict(data, verbose=0)
            active = [i for i, fi in enumerate(layers) if fi.statistics()["injected"] > 0]
            assert len(active) == 1, (seed, epoch, active)  # all layers agree on the choice
            again = patched.predict(data, verbose=0)  # and keep it while the mask stays
            assert [fi.statistics()["injected"] > 0 for fi in layers].count(True) == 1
            assert np.array_equal(again, patched.predict(data, verbose=0))
            chosen.append(active[0])
    assert set(chosen) == {0, 1, 2}


def test_nonfinite_results_are_left_out_of_rmse_and_cosine():
    clean = np.float32([[1.0, 2.0, 0.5, 0.25]])
    fi = layer(injection_type="float32_bit_flip", bit=30, probability=100, apply_during="eval")
    faulty = np.asarray(fi(clean), np.float64)  # exponent MSB: inf, 0, 2**127, 2**126
    assert np.isinf(faulty[0, 0]) and np.isfinite(faulty[0, 1:]).all()
    c, f = clean[0, 1:].astype(np.float64), faulty[0, 1:]
    want_rmse = math.sqrt(np.mean((f - c) ** 2))  # over the three finite results only
    want_cos = float(c @ f / math.sqrt((c @ c) * (f @ f)))
    s = derive(fi.statistics())
    assert s["nonfinite"] == 1 and s["seen"] == 4
    assert s["rmse"] == pytest.approx(want_rmse, rel=1e-12)
    assert s["cosine"] == pytest.approx(want_cos, rel=1e-12)
    assert derive(raw_from_tensors(clean, faulty)) == pytest.approx(
        {k: v for k, v in s.items() if k != "injected"} | {"injected": math.nan,
                                                            "injection_rate": math.nan},
        nan_ok=True)
    # a NaN result too; the clean value there counts in neither side of the cosine
    s = derive(raw_from_tensors([[3.0, 4.0]], [[np.nan, 4.0]]))
    assert s["rmse"] == 0.0 and s["cosine"] == pytest.approx(1.0) and s["nonfinite"] == 1
