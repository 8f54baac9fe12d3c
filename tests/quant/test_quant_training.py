"""Fault-aware training and probability sweeps, end to end on a tiny model."""

import csv
import json

import keras
import numpy as np
import pytest

from classes_tool.quant.layers import FaultInjection, injection_layers
from classes_tool.quant.sweep import summarize, sweep_from_config
from classes_tool.quant.training import (
    FaultAwareTrainingCallback,
    fault_aware_fit,
    train_from_config,
)


def toy_problem(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((96, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    inp = keras.Input((6,), name="inp")
    h = keras.layers.Dense(8, activation="relu", name="d1")(inp)
    out = keras.layers.Dense(2, activation="softmax", name="out")(h)
    model = keras.Model(inp, out)
    model.save(tmp_path / "toy.keras")
    np.savez(tmp_path / "train.npz", x=x[:64], y=y[:64])
    np.savez(tmp_path / "test.npz", x=x[64:], y=y[64:])
    return model, x, y


def test_fault_aware_fit_returns_plain_tuned_model(tmp_path):
    model, x, y = toy_problem(tmp_path)
    original = [w.copy() for w in model.get_weights()]
    patched, plain, history = fault_aware_fit(
        model, x, y, {"probability": 20, "epoch_interval": 1, "seed": 1}, epochs=2,
        batch_size=32)
    assert len(history["loss"]) == 2
    assert not any(isinstance(layer, FaultInjection) for layer in plain.layers)
    assert [layer.name for layer in plain.layers] == [layer.name for layer in model.layers]
    assert all(np.array_equal(a, b) for a, b in zip(original, model.get_weights(), strict=True))
    assert not np.allclose(plain.get_layer("d1").get_weights()[0], original[0])
    assert np.allclose(plain.get_layer("d1").get_weights()[0],
                       patched.get_layer("d1").get_weights()[0])
    fi = injection_layers(patched)[0]
    assert int(fi.epoch_var.value) == 1  # the callback advanced the epoch
    assert fi.statistics()["injected"] > 0


def test_callback_sets_epoch(tmp_path):
    model, x, y = toy_problem(tmp_path)
    from classes_tool.quant.layers import apply_fault_injection

    patched = apply_fault_injection(model, {"probability": 5}, x)
    cb = FaultAwareTrainingCallback(epoch_offset=10)
    cb.set_model(patched)
    cb.on_epoch_begin(3)
    assert int(injection_layers(patched)[0].epoch_var.value) == 13


@pytest.mark.slow
def test_train_and_sweep_from_config(tmp_path):
    toy_problem(tmp_path)
    config = {"model": str(tmp_path / "toy.keras"),
              "data": {"train": str(tmp_path / "train.npz"), "test": str(tmp_path / "test.npz")},
              "training": {"epochs": 2, "batch_size": 16, "output": "tuned.keras"},
              "fault_injection": {"probability": 10, "seed": 3, "injection_type": "msb_flip",
                                  "quantize_all": True}}
    paths = train_from_config(config, tmp_path / "out", quiet=True)
    assert paths["model"].name == "tuned.keras"
    tuned = keras.models.load_model(paths["model"])
    assert [layer.name for layer in tuned.layers] == ["inp", "d1", "out"]
    evaluation = json.loads(paths["evaluation"].read_text())
    assert len(evaluation["fault_aware"]["faulty_accuracy"]) == 5
    assert "d1_fault_injection" in json.loads(paths["statistics"].read_text())

    out = sweep_from_config(config, tmp_path / "sweep", [0, 50], seeds=2, quiet=True)
    rows = list(csv.DictReader(out["csv"].open()))
    assert [(float(r["probability"]), int(r["seed"])) for r in rows] == \
        [(0, 3), (0, 4), (50, 3), (50, 4)]
    xt = np.load(tmp_path / "test.npz")
    clean = float(np.mean(keras.models.load_model(tmp_path / "toy.keras")
                          .predict(xt["x"], verbose=0).argmax(1) == xt["y"]))
    assert [float(r["accuracy"]) for r in rows[:2]] == [clean, clean]
    assert float(rows[0]["change_rate"]) == 0 and float(rows[2]["change_rate"]) > 0.3
    assert out["png"].stat().st_size > 1000
    assert len(list(csv.DictReader(out["summary_csv"].open()))) == 2

    # the tuned model with its own injection layers is swept as it is (no second patching)
    out = sweep_from_config(config, tmp_path / "sweep2", [0, 50], seeds=1, quiet=True,
                            model_path=paths["injected_model"])
    stats = json.loads(out["statistics"].read_text())
    assert list(stats["p=50,seed=3"]) == ["d1_fault_injection"]


def test_summarize_by_hand():
    rows = [{"probability": 1.0, "seed": 0, "accuracy": 0.5},
            {"probability": 1.0, "seed": 1, "accuracy": 0.7},
            {"probability": 0.0, "seed": 0, "accuracy": 0.9}]
    s = summarize(rows)
    assert [r["probability"] for r in s] == [0.0, 1.0]
    assert s[1]["mean_accuracy"] == pytest.approx(0.6) and s[1]["std_accuracy"] == pytest.approx(0.1)
    # t interval over 2 seeds: 0.6 +- t(0.975, 1) * sd / sqrt(2), t(0.975, 1) = 12.706
    half = 12.7062047362 * np.std([0.5, 0.7], ddof=1) / np.sqrt(2)
    assert s[1]["ci_low"] == pytest.approx(0.6 - half, rel=1e-6)
    assert s[1]["ci_high"] == pytest.approx(0.6 + half, rel=1e-6)
    assert np.isnan(s[0]["ci_low"]) and s[0]["seeds"] == 1
