"""Adaptive sizing and sampled inputs in a real layer campaign: stages decided from the stored
rows, the margin reached, the same rows after kill -9 and --resume, and the report's design."""

import os
import signal
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
import yaml
from helpers import MODELS, wait_for_rows
from helpers import stored_rows as _rows

from classes_tool.campaign.runner import Campaign
from classes_tool.cli import main
from classes_tool.results.estimates import design_from_meta
from classes_tool.results.intervals import fault_mean_interval
from classes_tool.results.report import target_estimates, write_report
from classes_tool.results.store import ResultStore


def _config(tmp_path, name="c.yaml", **extra):
    cfg = {"model": str(MODELS / "digits_cnn.h5"), "data": str(MODELS / "digits_test.npz"),
           "inputs": 12, "targets": {"nodes": ["conv4", "fc1"]}, "seed": 5, "batch_size": 48,
           "sizing": "adaptive", "margin": 0.15, "confidence": 0.9, "pilot_faults": 12}
    cfg.update(extra)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_adaptive_campaign_reaches_the_margin_in_stages(tmp_path):
    cfg = _config(tmp_path)
    campaign = Campaign(cfg, out=tmp_path / "run", quiet=True)
    campaign.run()
    rows, design = target_estimates(campaign.db_path)
    assert design.anytime and design.confidence == 0.9
    assert [r["group"] for r in campaign.estimates()] == [r["group"] for r in rows]
    for row in rows:
        assert row["finished"] and row["stages"][0] == 12 and len(row["stages"]) >= 2
        assert row["faults"] == row["stages"][-1] == campaign.faults_run[row["group"]]
        assert row["margin_achieved"] <= 0.15
        assert row["complete_faults"] == row["faults"]
    # the faults are the first ones a fixed-size campaign with the same seed draws
    fixed = Campaign(_config(tmp_path, "f.yaml", sizing="fixed", pilot_faults=None, margin=None,
                             faults=rows[0]["faults"]), out=tmp_path / "fixed", quiet=True)
    fixed.run()
    with sqlite3.connect(campaign.db_path) as a, sqlite3.connect(fixed.db_path) as f:
        query = ("SELECT pattern, params, input_index, outcome FROM results JOIN faults USING "
                 "(fault_index) WHERE target = 'conv4' ORDER BY fault_index, input_index")
        assert a.execute(query).fetchall() == f.execute(query).fetchall()
    # the report prints the same stages' intervals, and says how they were made
    files = write_report(campaign.db_path, tmp_path / "rep")
    summary = files["summary.md"].read_text()
    assert "adaptive sizing" in summary and "the margin asked for was ±15.00%" in summary


def test_adaptive_rows_do_not_depend_on_the_batch_size(tmp_path):
    a = Campaign(_config(tmp_path, "a.yaml"), out=tmp_path / "a", quiet=True)
    a.run()
    b = Campaign(_config(tmp_path, "b.yaml", batch_size=7), out=tmp_path / "b", quiet=True)
    b.run()
    assert _rows(a.db_path) == _rows(b.db_path)


@pytest.mark.slow
def test_kill_9_then_resume_takes_the_same_stages(tmp_path):
    cfg = _config(tmp_path, inputs=20, batch_size=8, targets={"types": ["Conv2D"]},
                  margin=0.1, pilot_faults=20)
    clean = tmp_path / "clean"
    Campaign(cfg, out=clean, quiet=True).run()
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen([sys.executable, "-m", "classes_tool.cli", "campaign", str(cfg),
                             "--out", str(crashed), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = crashed / "results.db"
    wait_for_rows(db, 900, proc)  # past the first target's pilot
    assert proc.poll() is None, "the campaign finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 0 < len(_rows(db)) < len(_rows(clean / "results.db"))
    assert main(["campaign", str(cfg), "--out", str(crashed), "--resume", "--quiet"]) == 0
    assert _rows(db) == _rows(clean / "results.db")


def test_sampled_inputs_widen_the_interval_with_the_inputs_variance(tmp_path):
    fixed = Campaign(_config(tmp_path, "f.yaml", sizing="fixed", pilot_faults=None,
                             margin=None, faults=40, inputs=30), out=tmp_path / "f", quiet=True)
    fixed.run()
    sampled = Campaign(_config(tmp_path, "s.yaml", sizing="fixed", pilot_faults=None,
                               margin=None, faults=40, inputs=30, input_set="sample"),
                       out=tmp_path / "s", quiet=True)
    sampled.run()
    assert _rows(fixed.db_path) == _rows(sampled.db_path)  # the same evaluations
    rows_f, design_f = target_estimates(fixed.db_path)
    rows_s, design_s = target_estimates(sampled.db_path)
    assert design_f.inputs == "fixed" and design_s.inputs == "sample"
    for f, s in zip(rows_f, rows_s, strict=True):
        rate = "critical_sdc"
        assert f[f"{rate}_rate"] == pytest.approx(s[f"{rate}_rate"])
        if 0 < f[f"{rate}_rate"] < 1:
            assert (s[f"{rate}_ci_high"] - s[f"{rate}_ci_low"]
                    > f[f"{rate}_ci_high"] - f[f"{rate}_ci_low"])
    summary = write_report(sampled.db_path, tmp_path / "rep")["summary.md"].read_text()
    assert "a random sample of a larger data set" in summary


def test_report_intervals_follow_the_per_fault_spread(tmp_path):
    """The demo's defect: the per-target interval must be as wide as the spread of the
    per-fault rates says (at least the normal-theory width z s / sqrt(n)), not the width of
    n*m independent trials."""
    cfg = _config(tmp_path, sizing="fixed", pilot_faults=None, margin=None, faults=60,
                  inputs=25, confidence=0.99)
    campaign = Campaign(cfg, out=tmp_path / "run", quiet=True)
    campaign.run()
    rows, _ = target_estimates(campaign.db_path)
    with ResultStore(campaign.db_path, must_exist=True) as store:
        per_fault = {}
        for _fault, target, crit in store.connection.execute(
                "SELECT r.fault_index, f.target, SUM(r.outcome = 'critical_sdc') FROM results r "
                "JOIN faults f USING (fault_index) GROUP BY r.fault_index"):
            per_fault.setdefault(target, []).append(crit / 25)
    for row in rows:
        x = np.array(per_fault[row["group"]])
        normal_half = 2.5758 * x.std(ddof=1) / np.sqrt(len(x))
        half = (row["critical_sdc_ci_high"] - row["critical_sdc_ci_low"]) / 2
        assert half >= normal_half * 0.95, (row["group"], half, normal_half)
        assert row["critical_sdc_ci_low"] == pytest.approx(
            fault_mean_interval(x, 25, 0.99).low)
        independent = 2.5758 * np.sqrt(x.mean() * (1 - x.mean()) / (len(x) * 25))
        if row["critical_sdc_design_effect"] > 2:
            assert half > 1.3 * independent


@pytest.mark.parametrize("change, message", [
    ({"sizing": "sometimes"}, "'sizing' must be one of fixed, adaptive"),
    ({"faults": 9, "margin": None}, "'faults' is a fixed budget"),
    ({"sizing": "fixed", "pilot_faults": 3}, "'pilot_faults' applies to 'sizing: adaptive'"),
    ({"input_set": "sample"}, "needs 'input_set: fixed'"),
    ({"sizing": "fixed", "pilot_faults": None, "input_set": "all"}, "'input_set' must be one"),
])
def test_sizing_config_errors_are_one_line(tmp_path, capsys, change, message):
    cfg = _config(tmp_path, **change)
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_old_stores_read_as_independent_faults_on_fixed_inputs():
    design = design_from_meta({"confidence": 0.99, "population": {"a": 10}})
    assert (design.confidence, design.inputs, design.anytime, design.without_replacement) == (
        0.99, "fixed", False, False)
    assert design_from_meta({"target": "systolic"}).without_replacement


@pytest.mark.parametrize("first, then", [
    ({"sizing": "adaptive"}, {"sizing": "fixed", "pilot_faults": None, "margin": 0.15}),
    ({"sizing": "fixed", "pilot_faults": None, "input_set": "sample"},
     {"sizing": "fixed", "pilot_faults": None}),
])
def test_resume_refuses_a_config_that_went_back_to_a_default(tmp_path, capsys, first, then):
    """Keys written only when not the default must still be compared: a store made with
    sizing: adaptive (or input_set: sample) is not resumed by a config without them."""
    out = tmp_path / "run"
    assert main(["campaign", str(_config(tmp_path, "a.yaml", **first)), "--out", str(out),
                 "--quiet"]) == 0
    before = _rows(out / "results.db")
    assert main(["campaign", str(_config(tmp_path, "b.yaml", **then)), "--out", str(out),
                 "--resume", "--quiet"]) == 2
    assert "was created with a different config" in capsys.readouterr().err
    assert _rows(out / "results.db") == before
