"""ONNX first, then patch: convert -> save -> load -> patch -> run, by file and on the fly."""

import keras
import numpy as np
import pytest
from test_convert_models import mobilenet_like

import classes_tool
from classes_tool.cli import main


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_convert_save_load_patch_run(tmp_path, suffix):
    onnx_path = mobilenet_like(tmp_path / "mnet.onnx")
    converted = tmp_path / f"mnet{suffix}"
    assert main(["convert", str(onnx_path), "-o", str(converted)]) == 0
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=x)
    patched = tmp_path / f"patched{suffix}"
    # target by the names users know from ONNX (sanitised) and by Keras layer type
    assert main(["patch", str(converted), "--after", "blocks_0_dw_Conv",
                 "--after-type", "Dense", "--sites", "20", "--calibration", str(calib),
                 "-o", str(patched)]) == 0
    model = keras.models.load_model(patched)
    plain = keras.models.load_model(converted)
    assert len(classes_tool.simulators(model)) == 3  # the depthwise conv and both Gemm layers
    classes_tool.set_injection(model, False)
    np.testing.assert_array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))
    classes_tool.set_injection(model, True)
    assert not np.array_equal(model.predict(x, verbose=0), plain.predict(x, verbose=0))


def test_patch_onnx_directly(tmp_path):
    onnx_path = mobilenet_like(tmp_path / "mnet.onnx")
    out = tmp_path / "p.h5"
    assert main(["patch", str(onnx_path), "--after-type", "DepthwiseConv2D", "--range", "0,6",
                 "--sites", "5", "-o", str(out)]) == 0
    assert len(classes_tool.simulators(keras.models.load_model(out))) == 2
