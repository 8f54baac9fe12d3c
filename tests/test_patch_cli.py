"""`classes-tool describe | sites | patch` end to end on real files, and every bad input."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import FIXTURES, MODELS

import classes_tool
from classes_tool.cli import main
from classes_tool.graph import read_model

MODEL = str(MODELS / "digits_cnn.h5")


def test_describe_writes_every_node_with_shape(tmp_path):
    out = tmp_path / "d.json"
    assert main(["describe", MODEL, "-o", str(out)]) == 0
    data = json.loads(out.read_text())
    nodes = {n["name"]: n for n in data["nodes"]}
    assert nodes["conv4"]["output_shape"] == [None, 4, 4, 32]
    assert nodes["residual"]["inputs"] == ["conv1", "conv3"]
    assert sorted(nodes["conv1"]["consumers"]) == ["conv2", "residual"]
    assert nodes["conv1"]["error_model"] == "conv_gemm"


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_patch_by_type_golden_bit_exact_and_per_sample_injection(tmp_path, suffix, digits_x):
    out = tmp_path / f"patched.{suffix}"
    assert main(["patch", MODEL, "--after-type", "Conv2D", "--sites", "50", "--seed", "7",
                 "-o", str(out)]) == 0
    patched = keras.models.load_model(out)
    original = keras.models.load_model(MODEL)
    names = [layer.name for layer in classes_tool.simulators(patched)]
    assert names == [f"conv{i}_error_sim" for i in (1, 2, 3, 4)]
    classes_tool.set_injection(patched, False)
    np.testing.assert_array_equal(patched.predict(digits_x, verbose=0),
                                  original.predict(digits_x, verbose=0))
    classes_tool.set_injection(patched, True)
    faulty = patched.predict(digits_x, verbose=0)
    assert (faulty != original.predict(digits_x, verbose=0)).any(axis=1).mean() > 0.5
    graph = read_model(out) if suffix == "h5" else None
    if graph is not None:  # the residual Add now reads the simulated conv1 and conv3
        assert {r.layer for r in graph.node("residual").refs()} == {
            "conv1_error_sim", "conv3_error_sim"}


def test_patch_by_name_and_sites_file_reproduce_the_same_sites(tmp_path):
    sites = tmp_path / "s.npz"
    assert main(["sites", MODEL, "--after", "conv2", "--after", "fc1", "--sites", "20",
                 "--seed", "3", "-o", str(sites)]) == 0
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    assert main(["patch", MODEL, "--sites-file", str(sites), "-o", str(a)]) == 0
    assert main(["patch", MODEL, "--after", "conv2", "--after", "fc1", "--sites", "20",
                 "--seed", "3", "-o", str(b)]) == 0
    ma, mb = keras.models.load_model(a), keras.models.load_model(b)
    for name in ("conv2_error_sim", "fc1_error_sim"):
        for wa, wb in zip(ma.get_layer(name).get_weights(), mb.get_layer(name).get_weights(),
                          strict=True):
            np.testing.assert_array_equal(wa, wb)


def test_keras2_file_patched_with_calibration(tmp_path):
    data = np.load(FIXTURES / "keras2_inputs.npz")
    calib = tmp_path / "calib.npz"
    np.savez(calib, img=data["img"], aux=data["aux"])
    out = tmp_path / "k2.h5"
    assert main(["patch", str(FIXTURES / "keras2_functional.h5"), "--after", "conv_a",
                 "--after-type", "Dense", "--sites", "10", "--calibration", str(calib),
                 "-o", str(out)]) == 0
    model = keras.models.load_model(out)
    classes_tool.set_injection(model, False)
    probs, _ = model.predict([data["img"], data["aux"]], verbose=0)
    np.testing.assert_allclose(probs, data["probs"], atol=1e-6)


def test_patched_file_loads_in_a_fresh_process(tmp_path):
    out = tmp_path / "p.h5"
    assert main(["patch", MODEL, "--after", "conv4", "--sites", "5", "-o", str(out)]) == 0
    code = (f"import classes_tool, keras, numpy as np; m = keras.models.load_model({str(out)!r}); "
            "print(len(classes_tool.simulators(m)), m.predict(np.zeros((2,8,8,1)), "
            "verbose=0).shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("1 (2, 10)")


@pytest.mark.parametrize("args, message", [
    (["patch", "missing.h5", "--after", "conv1"], "not found"),
    (["patch", str(FIXTURES / "keras2_inputs.npz"), "--after", "conv1"], "not a valid .keras"),
    (["patch", str(FIXTURES / "keras2_weights_only.h5"), "--after", "conv1"],
     "no model config"),
    (["patch", MODEL, "--after", "conv9"], "no node named 'conv9'"),
    (["patch", MODEL, "--after-type", "LSTM"], "no layer of type 'LSTM'"),
    (["patch", MODEL, "--after", "flatten"], "has no error model"),
    (["patch", MODEL, "--after", "conv1", "--error-model", "bad.json"], "not found"),
    (["patch", MODEL], "choose where to inject"),
    (["patch", MODEL, "--after", "conv1", "--sites-file", "s.npz", "--sites", "3"],
     "--sites-file brings its own sites; --sites would be ignored"),
    (["patch", MODEL, "--after", "conv1", "--sites-file", "s.npz", "--seed", "5",
      "--range=0,1"], "--seed, --range would be ignored"),
    (["describe", MODEL, "--input-shape", "3,8,8"], "apply to ONNX models only"),
])
def test_bad_input_one_line_exit_2_no_output(tmp_path, capsys, args, message):
    out = tmp_path / "out.h5"
    assert main([*args, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["describe", "patch", "sites"])
def test_output_path_that_is_a_folder(tmp_path, capsys, command):
    """The system's refusal (a folder, no permission) is one line, not a traceback."""
    taken = tmp_path / "taken.h5"
    taken.mkdir()
    extra = [] if command == "describe" else ["--after", "conv1", "--sites", "2"]
    assert main([command, MODEL, *extra, "-o", str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"classes-tool: error: {taken} is a folder: give a file name to write"
    assert list(taken.iterdir()) == []
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main([command, MODEL, *extra, "-o", str(a_file / "out.h5")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("classes-tool: error: cannot use") and len(err.splitlines()) == 1
    assert a_file.read_text() == "x"


@pytest.mark.parametrize("option", ["--seed=-1", "--seed=9223372036854775808", "--sites=0",
                                    "--sites=10000001"])
def test_seed_and_sites_bounds(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as exit_:
        main(["patch", MODEL, "--after", "conv1", option, "-o", str(tmp_path / "o.h5")])
    assert exit_.value.code == 2 and "bad " in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_malformed_error_model_file(tmp_path, capsys):
    bad = tmp_path / "model.json"
    bad.write_text('{"single": {"frequency": "often"}}')
    out = tmp_path / "out.h5"
    assert main(["patch", MODEL, "--after", "conv1", "--error-model", str(bad),
                 "-o", str(out)]) == 2
    assert "frequency" in capsys.readouterr().err
    assert not out.exists()
