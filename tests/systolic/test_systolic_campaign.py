"""Systolic campaign: sizing, store contents, resume, report files, config validation."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import systolic_files

from classes_tool.errors import UserError
from classes_tool.results.stats import leveugle_sample_size
from classes_tool.systolic import SystolicArray
from classes_tool.systolic.campaign import (
    FaultSpace,
    load_systolic_config,
    make_fault,
    run_systolic_campaign,
    validate_config,
)
from classes_tool.systolic.layers import calibrate, predict, replace_layers


def test_fault_space_enumerates_everything_once():
    array = SystolicArray(2, 2, 2, "output_stationary", in_dtype="int8")
    space = FaultSpace(array, ["a", "c"], ["stuck_at", "bit_flip"])
    assert space.size == 4 * (8 * 2 + 32 * 2 + 8 + 32)
    seen = {(p, tuple(sorted(d.items()))) for p, d in map(space.fault, range(space.size))}
    assert len(seen) == space.size


def test_campaign_store_resume_and_report(tmp_path):
    model_path, data = systolic_files(tmp_path)
    config = {"target": "systolic", "model": str(model_path), "data": str(data),
              "array": {"n1": 2, "n2": 2, "n3": 4, "dataflow": "output_stationary",
                        "in_dtype": "int8"},
              "layers": ["conv", "fc"], "lines": ["a", "c"], "bits": [3, 6, 30],
              "margin": 0.3, "confidence": 0.9}
    out = tmp_path / "run"
    result = run_systolic_campaign(config, out, seed=3, quiet=True)
    pop = result["population"]["conv"]
    n = leveugle_sample_size(pop, 0.3, 0.9)
    assert result["faults"] == 2 * n
    con = sqlite3.connect(result["db"])
    faults = con.execute("SELECT fault_index, target, pattern, params FROM faults").fetchall()
    assert len(faults) == 2 * n
    assert {f[1] for f in faults} == {"conv", "fc"}
    assert {f[2] for f in faults} <= {"stuck_at", "bit_flip"}
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2 * n * 6
    con.close()
    for name in ("summary.md", "by_param_line.md", "by_param_bit.md"):
        assert result["report"][name].is_file()
    assert result["heatmap"].is_file()
    # a stored outcome agrees with running that fault by hand
    fi, target, pattern, params = faults[0]
    model = keras.models.load_model(model_path)
    array = SystolicArray(2, 2, 4, "output_stationary", in_dtype="int8")
    sys_model = replace_layers(model, [target], array)
    x = np.load(data)["x"]
    calibrate(sys_model, x)
    golden = predict(sys_model, x)
    array.add_fault(make_fault(pattern, json.loads(params)))
    faulty = predict(sys_model, x)
    con = sqlite3.connect(result["db"])
    stored = con.execute("SELECT input_index, faulty_top1 FROM results WHERE fault_index = ? "
                         "ORDER BY input_index", (fi,)).fetchall()
    masked = con.execute("SELECT COUNT(*) FROM results WHERE fault_index = ? AND outcome = "
                         "'masked'", (fi,)).fetchone()[0]
    con.close()
    assert [s[1] for s in stored] == faulty.argmax(1).tolist()
    assert (masked == 6) == np.allclose(golden, faulty, atol=1e-6, rtol=1e-5)
    # resuming adds nothing and keeps the same fault plan
    again = run_systolic_campaign(config, out, seed=3, quiet=True)
    con = sqlite3.connect(again["db"])
    assert con.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2 * n * 6
    con.close()
    # the report command rebuilds the same per-line, per-bit and per-PE report from the store
    from classes_tool.cli import main

    assert main(["report", str(result["db"]), "-o", str(tmp_path / "rep")]) == 0
    for name in ("by_param_line.md", "by_param_bit.md", "heatmap_x_y_critical_sdc.png"):
        assert (tmp_path / "rep" / name).is_file()
    assert ((tmp_path / "rep" / "by_param_line.md").read_text()
            == result["report"]["by_param_line.md"].read_text())


def test_config_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("target: systolic\nmodel: m.h5\ndata: d.npz\nlines: [a, z]\n")
    with pytest.raises(UserError, match="lines"):
        load_systolic_config(path)
    path.write_text("target: systolic\nmodel: m.h5\ndata: d.npz\nwhat: 1\n")
    with pytest.raises(UserError, match="unknown config key"):
        load_systolic_config(path)
    path.write_text("target: systolic\nmodel: m.h5\ndata: d.npz\narray: {dataflow: [[1,0,0],[0,1,0],[0,1,0]]}\n")
    with pytest.raises(UserError, match="singular"):
        load_systolic_config(path)
    path.write_text("target: systolic\nmodel: sub/m.h5\ndata: d.npz\n")
    cfg = load_systolic_config(path)
    assert Path(cfg["model"]) == tmp_path / "sub" / "m.h5"


def test_demo_config_is_valid():
    cfg = load_systolic_config(Path(__file__).resolve().parents[2] / "configs" / "systolic_demo.yaml")
    assert cfg["array"]["in_dtype"] == "int8" and cfg["layers"] == ["conv2", "fc1"]


@pytest.mark.parametrize("seed", [-4, 2**63, 2.5, "3", True])
def test_seed_must_be_a_non_negative_integer(seed):
    """`seed: -4` reached NumPy and gave a traceback ('expected non-negative integer')."""
    with pytest.raises(UserError, match="'seed' must be a non-negative integer below 2\\*\\*63"):
        validate_config({"model": "m.h5", "data": "d.npz", "seed": seed})


def test_counts_and_tolerance_are_checked():
    base = {"model": "m.h5", "data": "d.npz"}
    with pytest.raises(UserError, match="'batch_size' must be a positive integer, got 2.5"):
        validate_config({**base, "batch_size": 2.5})
    with pytest.raises(UserError, match="'calibration_inputs' must be a positive integer"):
        validate_config({**base, "calibration_inputs": 0})
    with pytest.raises(UserError, match="tolerance.atol must be a number, got 'x'"):
        validate_config({**base, "tolerance": {"atol": "x"}})
    # YAML reads 1e-6 as a string: still a number here
    assert validate_config({**base, "tolerance": {"atol": "1e-6"}})["tolerance"]["atol"] == 1e-6
    assert validate_config({**base, "seed": 2**63 - 1})["seed"] == 2**63 - 1


def test_cli_bad_seed_and_bad_data_leave_no_output(tmp_path, capsys):
    """One-line errors, raised before the output folder (and its result store) is created."""
    from classes_tool.cli import main

    model_path, data = systolic_files(tmp_path)
    cfg = tmp_path / "c.yaml"
    out = tmp_path / "out"
    cfg.write_text(f"target: systolic\nmodel: {model_path}\ndata: {data}\nseed: -4\n")
    assert main(["campaign", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == ("classes-tool: error: 'seed' must be a non-negative integer below 2**63, "
                   "got -4\n")
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 4, 4, 1), np.float32))
    cfg.write_text(f"target: systolic\nmodel: {model_path}\ndata: {tmp_path / 'wrong.npz'}\n")
    assert main(["campaign", str(cfg), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "wrong.npz: inputs are shaped (4, 4, 1) but model" in err
    assert "expects (5, 5, 1)" in err and err.count("\n") == 1
    assert not out.exists()


def test_adaptive_sizing_stops_at_the_margin_and_resumes_identically(tmp_path):
    """sizing: adaptive runs a prefix of the same fault order in stages, stops once the report's
    own intervals (without replacement, betting on the stages) reach the margin, and a second
    run on the same folder adds nothing."""
    from classes_tool.results.report import target_estimates

    model_path, data = systolic_files(tmp_path)
    config = {"target": "systolic", "model": str(model_path), "data": str(data),
              "array": {"n1": 2, "n2": 2, "n3": 4, "dataflow": "output_stationary",
                        "in_dtype": "int8"},
              "layers": ["conv"], "lines": ["a", "c"], "bits": [3, 6, 30],
              "margin": 0.2, "confidence": 0.9, "sizing": "adaptive", "pilot_faults": 8}
    out = tmp_path / "run"
    result = run_systolic_campaign(config, out, seed=3, quiet=True)
    rows, design = target_estimates(result["db"])
    assert design.anytime and design.without_replacement
    (row,) = rows
    assert row["finished"] and row["stages"][0] == 8 and len(row["stages"]) >= 2
    assert row["faults"] == row["stages"][-1] == result["faults"]
    assert row["faults"] == result["population"]["conv"] or row["margin_achieved"] <= 0.2
    # the faults are the first ones of the fixed-size campaign's order
    fixed = run_systolic_campaign({**config, "sizing": "fixed", "faults": row["faults"],
                                   "pilot_faults": None}, tmp_path / "fixed", seed=3, quiet=True)
    con_a, con_f = sqlite3.connect(result["db"]), sqlite3.connect(fixed["db"])
    query = "SELECT pattern, params FROM faults ORDER BY fault_index"
    assert con_a.execute(query).fetchall() == con_f.execute(query).fetchall()
    before = con_a.execute("SELECT * FROM results ORDER BY fault_index, input_index").fetchall()
    con_a.close()
    con_f.close()
    again = run_systolic_campaign(config, out, seed=3, quiet=True)
    con = sqlite3.connect(again["db"])
    assert con.execute("SELECT * FROM results ORDER BY fault_index, input_index").fetchall() \
        == before
    con.close()


def test_adaptive_sizing_config_errors(tmp_path):
    model_path, data = systolic_files(tmp_path)
    base = {"target": "systolic", "model": str(model_path), "data": str(data)}
    with pytest.raises(UserError, match="fixed budget"):
        validate_config({**base, "sizing": "adaptive", "faults": 3})
    with pytest.raises(UserError, match="applies to 'sizing: adaptive' only"):
        validate_config({**base, "pilot_faults": 3})
    with pytest.raises(UserError, match="needs 'input_set: fixed'"):
        validate_config({**base, "sizing": "adaptive", "input_set": "sample"})
    with pytest.raises(UserError, match="'sizing' must be"):
        validate_config({**base, "sizing": "sometimes"})
