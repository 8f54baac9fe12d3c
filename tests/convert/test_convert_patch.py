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


def test_campaign_on_an_onnx_file_reads_data_in_the_onnx_layout(tmp_path, capsys):
    """A campaign names the .onnx file itself; its data may come channels-first, as the ONNX
    model's users hold it, or channels-last: both give the same stored rows."""
    import sqlite3

    import yaml
    from test_convert_models import branching_model

    onnx_path = branching_model(tmp_path / "branch.onnx")  # input (N, 3, 16, 16)
    x = np.random.default_rng(1).uniform(size=(10, 3, 16, 16)).astype("float32")
    np.savez(tmp_path / "nchw.npz", x=x, y=np.arange(10) % 5)
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1), y=np.arange(10) % 5)
    rows = {}
    for layout in ("nchw", "nhwc"):
        cfg = {"model": str(onnx_path), "data": str(tmp_path / f"{layout}.npz"),
               "calibration": str(tmp_path / f"{layout}.npz"), "inputs": 10,
               "targets": {"types": ["Conv2D"]}, "faults": 6, "seed": 2, "batch_size": 32}
        path = tmp_path / f"{layout}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["campaign", str(path), "--out", str(tmp_path / layout), "--quiet"]) == 0
        with sqlite3.connect(tmp_path / layout / "results.db") as conn:
            rows[layout] = conn.execute("SELECT * FROM results ORDER BY fault_index, "
                                        "input_index").fetchall()
    assert len(rows["nchw"]) == 3 * 6 * 10  # three convolutions, 6 faults each, 10 inputs
    assert rows["nchw"] == rows["nhwc"]
    assert len({r[2] for r in rows["nchw"]}) > 1  # not everything masked

    np.savez(tmp_path / "bad.npz", x=x[:, :, :8])
    cfg["data"] = str(tmp_path / "bad.npz")
    path.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()
    assert main(["campaign", str(path), "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "(3, 8, 16)" in err and "(16, 16, 3)" in err and "ONNX layout" in err
    assert not (tmp_path / "bad" / "results.db").exists()
