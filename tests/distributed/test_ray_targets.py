"""Systolic and SNN campaigns on a real local Ray runtime: the same rows as one process, and a
systolic campaign stopped on Ray that resumes to them."""

from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from helpers import stop_after_adds, stored_rows, systolic_files

from classes_tool.cli import main

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


def _campaign(config: Path, out: Path, *extra: str) -> list:
    assert main(["campaign", str(config), "--out", str(out), "--quiet", *extra]) == 0
    return stored_rows(out / "results.db")


def test_systolic_campaigns_on_two_workers_store_the_rows_one_process_stores(tmp_path):
    model_path, data = systolic_files(tmp_path)
    base = {"target": "systolic", "model": str(model_path), "data": str(data),
            "array": {"n1": 2, "n2": 2, "n3": 4, "dataflow": "output_stationary",
                      "in_dtype": "int8"},
            "layers": ["conv", "fc"], "lines": ["a", "c"], "bits": [3, 6, 30],
            "faults": 12, "seed": 3}
    cases = {
        "int8": {},
        "float_shared": {"array": {**base["array"], "in_dtype": "float32"}, "shared": True,
                         "bits": [30]},
        "adaptive": {"faults": None, "sizing": "adaptive", "margin": 0.3, "confidence": 0.9,
                     "pilot_faults": 8},
    }
    for name, extra in cases.items():
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump({k: v for k, v in {**base, **extra}.items()
                                          if v is not None}))
        alone = _campaign(config, tmp_path / f"{name}_one")
        assert alone, name
        assert _campaign(config, tmp_path / f"{name}_two", "--workers", "2",
                         "--threads-per-worker", "1") == alone, name


def test_a_systolic_campaign_stopped_on_ray_resumes_to_the_same_rows(tmp_path, monkeypatch):
    from classes_tool.systolic.campaign import load_systolic_config, run_systolic_campaign

    model_path, data = systolic_files(tmp_path)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "target": "systolic", "model": str(model_path), "data": str(data),
        "array": {"n1": 2, "n2": 2, "n3": 4, "dataflow": "output_stationary",
                  "in_dtype": "int8"}, "layers": ["conv", "fc"], "lines": ["a", "c"],
        "bits": [3, 6], "faults": 10, "seed": 4}))
    alone = _campaign(config, tmp_path / "one")
    restore = stop_after_adds(monkeypatch, 3)  # the driver stops after three faults
    with pytest.raises(KeyboardInterrupt):
        run_systolic_campaign(load_systolic_config(config), tmp_path / "two", quiet=True,
                              workers=2, threads_per_worker=1)
    restore()
    assert 0 < len(stored_rows(tmp_path / "two" / "results.db")) < len(alone)
    # without --resume the stored rows are not touched; with it, the campaign ends as one run
    assert main(["campaign", str(config), "--out", str(tmp_path / "two"), "--quiet",
                 "--workers", "2"]) == 2
    assert _campaign(config, tmp_path / "two", "--resume", "--workers", "2") == alone


def test_an_snn_campaign_on_two_workers_stores_the_rows_one_process_stores(tmp_path):
    from classes_tool import snn

    layers = [keras.layers.Dense(5, name="fc1"), snn.LIF(0.9, 0.5, name="lif1"),
              keras.layers.Dense(3, name="fc2"), snn.LIF(0.8, 0.5, name="lif2")]
    snn.unroll(layers, (6, 4)).save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((10, 4)).astype(np.float32),
             y=rng.integers(0, 3, 10))
    config = tmp_path / "snn.yaml"
    # batches of 4 samples and at most 8 rows a pass: 3 batches x several chunks of rounds
    config.write_text(yaml.safe_dump({
        "target": "snn", "name": "t", "model": "m.keras", "data": "d.npz",
        "batch_size": 4, "max_rows": 8,
        "encode": {"kind": "rate", "time_steps": 6, "seed": 1},
        "rounds": [{"complete": {"fault": "dead_neuron", "layers": ["lif1", "lif2"]}},
                   {"complete": {"fault": {"name": "threshold", "factor": 0.5},
                                 "layers": ["lif1"], "sampling_k": 2}},
                   {"inject": [{"model": "dead_synapse", "layer": "td_fc2",
                                "sites": [[0, 1]]}]}]}))
    alone = _campaign(config, tmp_path / "one")
    assert len(alone) == (5 + 3 + 2 + 1) * 10
    assert _campaign(config, tmp_path / "two", "--workers", "2",
                     "--threads-per-worker", "1") == alone
