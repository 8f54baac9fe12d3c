"""`fault_injection:` / `training:` validation, and the quantization grid sources."""

import keras
import numpy as np
import pytest

from classes_tool.config_reader import read_yaml
from classes_tool.errors import UserError
from classes_tool.quant.calibration import (
    calibrate_ranges,
    fake_quant_layers,
    quant_specs,
    spec_from_layer,
    spec_from_range,
)
from classes_tool.quant.config import (
    FaultInjectionConfig,
    parse_fault_injection,
    parse_train_run,
)
from classes_tool.quant.layers import apply_fault_injection, injection_layers, resolve_targets
from classes_tool.quant.sweep import parse_probabilities

ISSUE_BLOCK = {"enabled": True, "probability": 5.0, "mode": "full_model",
               "injection_type": "random", "bit_width": 8, "apply_during": "train",
               "epoch_interval": 1, "step_interval": 0.5, "seed": 42, "track_statistics": True}


def test_issue_example_block_is_valid():
    cfg = parse_fault_injection(ISSUE_BLOCK)
    assert isinstance(cfg, FaultInjectionConfig)
    assert cfg.probability == 5.0 and cfg.step_interval == 0.5 and cfg.seed == 42


@pytest.mark.parametrize("change, message", [
    ({"probabilty": 5}, "unknown key.*probabilty"),
    ({"probability": 150}, "probability must be between 0 and 100"),
    ({"probability": "5%"}, "probability must be a number"),
    ({"mode": "layers"}, "mode must be one of full_model, layer"),
    ({"injection_type": "flip"}, "valid: bit_flip, float16_bit_flip"),
    ({"bit_width": 1}, "bit_width must be an integer from 2 to 16"),
    ({"bit_width": 17}, "bit_width must be an integer from 2 to 16"),
    ({"bit_width": 8.0}, "bit_width must be an integer"),
    ({"injection_type": "bit_flip", "bit": 8}, r"bit must be in 0\.\.7"),
    ({"injection_type": "float16_bit_flip", "bit": 16}, r"bit must be in 0\.\.15"),
    ({"injection_type": "stuck_at"}, "stuck_value 0 or 1"),
    ({"injection_type": "stuck_at", "stuck_value": 2}, "stuck_value 0 or 1"),
    ({"apply_during": "always"}, "apply_during must be one of train, eval, both"),
    ({"epoch_interval": 0}, "epoch_interval must be in 1..inf"),
    ({"step_interval": 1.5}, "step_interval must be between 0 and 1"),
    ({"seed": -1}, "seed must be in 0"),
    ({"enabled": "yes"}, "enabled must be true or false"),
    ({"injection_layer": -2}, "injection_layer must be in -1"),
    ({"layers": []}, "layers must be a non-empty list"),
    ({"resample": "batch"}, "resample must be one of epoch, step, sample"),
])
def test_bad_values_are_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        parse_fault_injection({**ISSUE_BLOCK, **change})


def small_model():
    inp = keras.Input((4,))
    h = keras.layers.Dense(5, activation="relu", name="h1")(inp)
    h = keras.layers.Dense(5, name="h2")(h)
    return keras.Model(inp, keras.layers.Dense(2, name="out")(h))


def test_targets_and_injection_layer_errors():
    model = small_model()
    assert resolve_targets(model, None) == ["h1", "h2"]
    assert resolve_targets(model, ["Dense"]) == ["h1", "h2", "out"]
    assert resolve_targets(model, ["h2"]) == ["h2"]
    with pytest.raises(UserError, match="neither a layer name nor a layer class"):
        resolve_targets(model, ["conv9"])
    data = np.ones((4, 4), np.float32)
    with pytest.raises(UserError, match="not an injected layer"):
        apply_fault_injection(model, {"mode": "layer", "injection_layer": "out"}, data)
    with pytest.raises(UserError, match="out of range"):
        apply_fault_injection(model, {"mode": "layer", "injection_layer": 2}, data)
    with pytest.raises(UserError, match="calibration needs data"):
        apply_fault_injection(model, {}, None)
    assert apply_fault_injection(model, {"enabled": False}, None) is model


def test_train_run_validation(tmp_path):
    (tmp_path / "m.keras").write_text("x")
    (tmp_path / "d.npz").write_text("x")
    good = {"model": "m.keras", "data": {"train": "d.npz"}, "fault_injection": ISSUE_BLOCK}
    run = parse_train_run(good, base_dir=tmp_path)
    assert run.model == tmp_path / "m.keras" and run.training.epochs == 5
    # a top-level typo used to be ignored (the run silently used the other keys)
    with pytest.raises(UserError, match="unknown top-level key.* modle in the config of c.yaml; "
                                        "valid: model, data, training, fault_injection"):
        parse_train_run({**good, "modle": "x.h5"}, tmp_path, source="c.yaml")
    with pytest.raises(UserError, match="unknown top-level key.* campaign"):
        parse_train_run({**good, "campaign": {"anything": 1}}, tmp_path)
    with pytest.raises(UserError, match="unknown key.*epoch"):
        parse_train_run({**good, "training": {"epoch": 3}}, tmp_path)
    with pytest.raises(UserError, match="training.output must be a file name ending in"):
        parse_train_run({**good, "training": {"output": "m.pt"}}, tmp_path)
    with pytest.raises(UserError, match="file not found"):
        parse_train_run({**good, "model": "nope.h5"}, tmp_path)
    with pytest.raises(UserError, match="needs a `fault_injection:` block"):
        parse_train_run({"model": "m.keras"}, tmp_path)
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        read_yaml(tmp_path / "bad.yaml")


def test_parse_probabilities():
    assert parse_probabilities("0,1,2,5,10") == [0, 1, 2, 5, 10]
    for bad in ("1,x", "", "120", "-1"):
        with pytest.raises(UserError):
            parse_probabilities(bad)


def test_spec_from_range_by_hand():
    s = spec_from_range(0.0, 2.55, 8)
    assert not s.signed and s.scale == pytest.approx(0.01)
    s = spec_from_range(-1.27, 0.5, 8)
    assert s.signed and s.scale == pytest.approx(0.01)
    s = spec_from_range(-0.2, 0.7, 4)  # signed 4-bit: top code 7
    assert s.signed and s.scale == pytest.approx(0.1)
    assert spec_from_range(0.0, 0.0, 8).scale == 1.0


@keras.saving.register_keras_serializable(package="test_quant")
class FakeQuant(keras.layers.Layer):
    """A minimal TF-FakeQuant-style layer (num_bits, min, max in its config)."""

    def __init__(self, num_bits=8, min=0.0, max=1.0, **kw):  # noqa: A002
        super().__init__(**kw)
        self.num_bits, self.min, self.max = num_bits, min, max

    def call(self, x):
        return x

    def get_config(self):
        return {**super().get_config(), "num_bits": self.num_bits, "min": self.min, "max": self.max}


def test_grid_from_fake_quant_layers():
    fq = FakeQuant(num_bits=4, min=0.0, max=1.5, name="fq")
    spec = spec_from_layer(fq)
    assert spec.source == "fake_quant" and spec.bits == 4 and not spec.signed
    assert spec.scale == pytest.approx(0.1)
    qk = keras.layers.Activation("relu")  # not a quantizer
    assert spec_from_layer(qk) is None

    class QActivation(keras.layers.Layer):  # QKeras-style config, parsed from the string
        def get_config(self):
            return {**super().get_config(), "activation": self.act}

    q = QActivation()
    q.act = "quantized_bits(8,0,alpha=1)"
    assert spec_from_layer(q).scale == 2.0**-7 and spec_from_layer(q).signed
    q.act = "quantized_relu(4, 2)"
    assert spec_from_layer(q).scale == 2.0**-2 and not spec_from_layer(q).signed

    inp = keras.Input((3,))
    h = keras.layers.Dense(3, name="dense")(inp)
    h = FakeQuant(num_bits=6, min=-2.0, max=2.0, name="fq")(h)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(h))
    assert fake_quant_layers(model) == ["fq"]
    assert resolve_targets(model, None) == ["fq"]
    data = np.random.default_rng(0).random((10, 3)).astype(np.float32)
    specs = quant_specs(model, ["fq", "dense"], data, bits=8)
    assert specs["fq"].bits == 6 and specs["fq"].scale == pytest.approx(2 / 31)
    assert specs["dense"].source == "calibration" and specs["dense"].bits == 8
    patched = apply_fault_injection(model, {"probability": 1}, data)
    assert [(fi.target, fi.bits) for fi in injection_layers(patched)] == [("fq", 6)]


def test_calibration_ranges_match_numpy():
    model = small_model()
    data = np.random.default_rng(1).normal(size=(300, 4)).astype(np.float32)
    ranges = calibrate_ranges(model, ["h1", "h2"], data, batch_size=64)
    h2 = keras.Model(model.inputs, model.get_layer("h2").output).predict(data, verbose=0)
    assert ranges["h2"] == pytest.approx((h2.min(), h2.max()), rel=1e-5)
    assert ranges["h1"][0] >= 0  # relu
    spec = quant_specs(model, ["h2"], data, bits=8)["h2"]
    assert spec.signed and spec.scale == pytest.approx(max(-h2.min(), h2.max()) / 127, rel=1e-5)
