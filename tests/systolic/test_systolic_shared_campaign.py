"""Shared-array systolic campaigns: one array runs every target layer, so a fault hits them all."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import stop_after_adds

from classes_tool.errors import UserError
from classes_tool.results.stats import leveugle_sample_size
from classes_tool.systolic import StuckAt, SystolicArray
from classes_tool.systolic.campaign import (
    load_systolic_config,
    make_fault,
    run_systolic_campaign,
    shared_target_name,
    validate_config,
)
from classes_tool.systolic.conv import im2col, kernel_matrix, lift
from classes_tool.systolic.layers import calibrate, predict, replace_layers

ARRAY = {"n1": 2, "n2": 2, "n3": 4, "dataflow": "output_stationary", "in_dtype": "int8"}


def _model() -> keras.Model:
    inp = keras.Input((5, 5, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(4, name="fc")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def _inputs(n: int = 6) -> np.ndarray:
    return np.random.default_rng(1).random((n, 5, 5, 1)).astype(np.float32)


def _files(tmp_path: Path) -> tuple[Path, Path]:
    model_path = tmp_path / "m.keras"
    _model().save(model_path)
    data = tmp_path / "d.npz"
    np.savez(data, x=_inputs(), y=np.arange(6) % 4)
    return model_path, data


def _config(model_path: Path, data: Path, **extra) -> dict:
    return {"target": "systolic", "model": str(model_path), "data": str(data), "array": ARRAY,
            "shared": True, "lines": ["c"], "fault_models": ["bit_flip"], "bits": [12, 20],
            "faults": 6, **extra}


def _rows(db: Path) -> tuple[list, list]:
    con = sqlite3.connect(db)
    faults = con.execute("SELECT * FROM faults ORDER BY fault_index").fetchall()
    results = con.execute("SELECT * FROM results ORDER BY fault_index, input_index").fetchall()
    con.close()
    return faults, results


def test_one_fault_reaches_every_layer_of_the_shared_array():
    # float array, so the reference below is plain NumPy on the same faulty array
    model, x = _model(), _inputs()
    fault = StuckAt("c", 1, 0, 22, 1)  # top mantissa bit of one PE's float32 accumulator
    array = SystolicArray(2, 2, 4, "output_stationary", in_dtype="float32")
    golden = predict(replace_layers(model, ["conv", "fc"], array), x)
    array.add_fault(fault)
    shared = predict(replace_layers(model, ["conv", "fc"], array), x)
    only_conv = predict(replace_layers(model, ["conv"], array), x)
    only_fc = predict(replace_layers(model, ["fc"], array), x)

    # the same network, layer by layer, each product on the one faulty array
    conv, fc = model.get_layer("conv"), model.get_layer("fc")
    cols, shape = im2col(x, conv.kernel_size, conv.strides, conv.padding, conv.dilation_rate)
    h = lift(array.matmul(cols, kernel_matrix(conv.kernel.numpy())).astype(np.float32)
             + conv.bias.numpy(), shape)
    h = np.maximum(h, 0).reshape(len(x), -1).astype(np.float32)
    want = array.matmul(h, fc.kernel.numpy()).astype(np.float32) + fc.bias.numpy()

    np.testing.assert_allclose(shared, want, rtol=1e-5, atol=1e-5)
    assert not np.allclose(shared, golden)
    assert not np.allclose(shared, only_conv) and not np.allclose(shared, only_fc)


def test_shared_campaign_stores_what_the_shared_array_computes(tmp_path):
    model_path, data = _files(tmp_path)
    result = run_systolic_campaign(_config(model_path, data), tmp_path / "run", seed=5, quiet=True)
    name = "array(conv+fc)"
    assert result["population"] == {name: 4 * 2}  # 4 PEs x 2 bits of line c, one bit-flip each
    assert result["faults"] == 6
    faults, results = _rows(result["db"])
    assert {f[1] for f in faults} == {name} and len(results) == 6 * 6
    con = sqlite3.connect(result["db"])
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    con.close()
    assert json.loads(meta["shared"]) is True and json.loads(meta["layers"]) == ["conv", "fc"]
    assert result["report"]["by_param_line.md"].is_file() and result["heatmap"].is_file()
    assert name in result["report"]["summary.md"].read_text()

    model, x = keras.models.load_model(model_path), np.load(data)["x"]
    array = SystolicArray(**ARRAY)
    models = {key: replace_layers(model, names, array)
              for key, names in (("shared", ["conv", "fc"]), ("conv", ["conv"]), ("fc", ["fc"]))}
    golden = {}
    for key, m in models.items():
        calibrate(m, x)
        golden[key] = predict(m, x)
    differs_from_both = 0
    for fi, _, pattern, params in faults:
        array.clear_faults()
        array.add_fault(make_fault(pattern, json.loads(params)))
        out = {key: predict(m, x) for key, m in models.items()}
        mine = [r for r in results if r[0] == fi]  # in input order
        assert [r[6] for r in mine] == out["shared"].argmax(1).tolist()  # faulty_top1
        top = golden["shared"].argmax(1)
        g, f = golden["shared"][range(6), top], out["shared"][range(6), top]
        np.testing.assert_allclose([r[4] for r in mine], 100 * np.abs(f - g) / np.abs(g),
                                   rtol=1e-4)  # rel_error at the golden top-1
        masked = sum(r[2] == "masked" for r in results if r[0] == fi)
        assert (masked == 6) == np.allclose(golden["shared"], out["shared"], atol=1e-6, rtol=1e-5)
        d_shared = out["shared"] - golden["shared"]
        differs_from_both += (not np.allclose(d_shared, out["conv"] - golden["conv"])
                              and not np.allclose(d_shared, out["fc"] - golden["fc"]))
    assert differs_from_both > 0


def test_shared_key_is_validated(tmp_path):
    base = {"target": "systolic", "model": "m.h5", "data": "d.npz"}
    assert validate_config(base)["shared"] is False
    assert validate_config({**base, "shared": True})["shared"] is True
    for bad in ("true", 1, None, [True]):
        with pytest.raises(UserError, match="'shared' must be true or false"):
            validate_config({**base, "shared": bad})
    path = tmp_path / "c.yaml"
    path.write_text("target: systolic\nmodel: m.h5\ndata: d.npz\nshared: maybe\n")
    with pytest.raises(UserError, match="shared"):
        load_systolic_config(path)
    path.write_text("target: systolic\nmodel: m.h5\ndata: d.npz\nshare: true\n")
    with pytest.raises(UserError, match="unknown config key"):
        load_systolic_config(path)


def test_shared_target_name_stays_short():
    assert shared_target_name(["conv1", "fc1"]) == "array(conv1+fc1)"
    assert shared_target_name([f"conv{i}" for i in range(6)]) == "array(6 layers)"
    assert shared_target_name(["a" * 30, "b" * 30]) == "array(2 layers)"


def test_shipped_shared_demo_config_is_valid():
    root = Path(__file__).resolve().parents[2]
    cfg = load_systolic_config(root / "configs" / "systolic_shared_demo.yaml")
    assert cfg["shared"] is True and cfg["array"]["in_dtype"] == "int8"
    assert (root / "models" / "digits_cnn.h5").is_file()


def test_shared_campaign_is_deterministic_and_resumes(tmp_path, monkeypatch):
    model_path, data = _files(tmp_path)
    config = _config(model_path, data, faults=None, lines=["a", "c"], bits=[3, 20],
                     fault_models=["stuck_at", "bit_flip"], margin=0.3, confidence=0.9)
    whole = run_systolic_campaign(config, tmp_path / "whole", seed=2, quiet=True)
    n = leveugle_sample_size(whole["population"]["array(conv+fc)"], 0.3, 0.9)
    assert whole["faults"] == n
    reference = _rows(whole["db"])
    assert len(reference[0]) == n and len(reference[1]) == n * 6
    # same seed, other batch size: identical rows
    again = run_systolic_campaign({**config, "batch_size": 4}, tmp_path / "again", seed=2,
                                  quiet=True)
    assert _rows(again["db"]) == reference

    # stop after 3 committed faults, as a kill would, then resume
    restore = stop_after_adds(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        run_systolic_campaign(config, tmp_path / "stopped", seed=2, quiet=True)
    restore()
    assert len(_rows(tmp_path / "stopped" / "results.db")[0]) == 3
    resumed = run_systolic_campaign(config, tmp_path / "stopped", seed=2, quiet=True)
    assert _rows(resumed["db"]) == reference

    # a shared store cannot be resumed as a per-layer campaign
    with pytest.raises(UserError, match="different config"):
        run_systolic_campaign({**config, "shared": False}, tmp_path / "whole", seed=2, quiet=True)
