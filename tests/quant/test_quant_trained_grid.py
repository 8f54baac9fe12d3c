"""A fault-aware tuned model keeps the activation grid it was trained on when saved and loaded."""

import json
import zipfile

import keras
import numpy as np
import pytest

from classes_tool.quant.calibration import (
    GRID_ENTRY,
    attached_grid,
    read_grid,
    save_model_with_grid,
)
from classes_tool.quant.layers import apply_fault_injection, injection_layers, set_injection
from classes_tool.quant.sweep import accuracy_under_faults, load_model
from classes_tool.quant.training import fault_aware_fit, train_from_config

FI = {"probability": 20, "seed": 1, "injection_type": "random", "quantize_all": True}


def toy(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((96, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,), name="inp")
    h = keras.layers.Dense(8, activation="relu", name="d1")(inp)
    h = keras.layers.Dense(8, name="d2")(h)
    out = keras.layers.Dense(2, activation="softmax", name="out")(h)
    model = keras.Model(inp, out)
    model.save(tmp_path / "toy.keras")
    np.savez(tmp_path / "train.npz", x=x[:64], y=y[:64])
    np.savez(tmp_path / "test.npz", x=x[64:], y=y[64:])
    return model, x, y


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_tuned_model_is_injected_on_its_trained_grid(tmp_path, suffix):
    model, x, y = toy(tmp_path)
    patched, plain, _ = fault_aware_fit(model, x, y, FI, epochs=3, batch_size=16,
                                        learning_rate=0.05)
    trained = {fi.target: fi.current_scale() for fi in injection_layers(patched)}
    assert set(attached_grid(plain)) == {"d1", "d2"}

    path = save_model_with_grid(plain, tmp_path / f"tuned{suffix}")
    assert {n: s.scale for n, s in read_grid(path).items()} == trained
    plain_keras = keras.models.load_model(path)  # still a plain model for any Keras user
    assert [ly.name for ly in plain_keras.layers] == ["inp", "d1", "d2", "out"]

    loaded = load_model(path)
    reused = apply_fault_injection(loaded, {**FI, "apply_during": "eval"}, x)
    assert {fi.target: fi.current_scale() for fi in injection_layers(reused)} == trained
    assert {fi.grid_source for fi in injection_layers(reused)} == {"trained"}
    set_injection(patched, epoch=0)  # the same masks as a freshly patched model
    assert accuracy_under_faults(reused, x, y, 20, [5, 6]) == \
        accuracy_under_faults(patched, x, y, 20, [5, 6])

    # asked for, the tuned model is calibrated afresh: a different (here coarser) grid
    fresh = apply_fault_injection(loaded, {**FI, "apply_during": "eval", "stored_grid": False}, x)
    scales = {fi.target: fi.current_scale() for fi in injection_layers(fresh)}
    assert scales != trained
    # a grid of another bit width does not fit: calibration
    other = apply_fault_injection(loaded, {**FI, "bit_width": 4}, x)
    assert {fi.grid_source for fi in injection_layers(other)} == {"calibration"}


def test_train_writes_the_grid_into_the_tuned_model_file(tmp_path):
    toy(tmp_path)
    config = {"model": str(tmp_path / "toy.keras"),
              "data": {"train": str(tmp_path / "train.npz")},
              "training": {"epochs": 1, "batch_size": 16, "output": "tuned.keras"},
              "fault_injection": FI}
    paths = train_from_config(config, tmp_path / "out", quiet=True)
    with zipfile.ZipFile(paths["model"]) as zf:
        stored = json.loads(zf.read(GRID_ENTRY))
    injected = load_model(paths["injected_model"])
    assert {n: v["scale"] for n, v in stored["layers"].items()} == \
        {fi.target: fi.current_scale() for fi in injection_layers(injected)}
    reused = apply_fault_injection(load_model(paths["model"]), FI, np.load(
        tmp_path / "train.npz")["x"])
    assert [fi.current_scale() for fi in injection_layers(reused)] == \
        [fi.current_scale() for fi in injection_layers(injected)]
    assert read_grid(tmp_path / "toy.keras") == {}  # a model without one


def test_stored_grid_is_checked():
    from classes_tool.errors import UserError
    from classes_tool.quant.config import parse_fault_injection

    assert parse_fault_injection({}).stored_grid is True
    with pytest.raises(UserError, match="stored_grid"):
        parse_fault_injection({"stored_grid": "yes"})
