"""The YAML-config path: rounds from a dict, store rows, SNN tables and plots written."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from helpers import stop_after_adds, stored_rows  # noqa: E402

import classes_tool.snn as snn  # noqa: E402
from classes_tool.errors import UserError  # noqa: E402
from classes_tool.results.store import ResultStore  # noqa: E402
from classes_tool.snn.campaign import SpikingCampaign  # noqa: E402
from classes_tool.snn.runner import run_snn_campaign_from_config  # noqa: E402


def test_config_campaign_writes_store_tables_and_plots(tmp_path, monkeypatch, capsys):
    keras.utils.set_random_seed(2)
    layers = [keras.layers.Dense(6, name="fc1"), snn.LIF(0.8, 0.5, name="lif1"),
              keras.layers.Dense(3, name="fc2"), snn.LIF(0.8, 0.5, name="lif2")]
    model = snn.unroll(layers, (6, 4))
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((10, 4)).astype(np.float32),
             y=rng.integers(0, 3, 10))
    monkeypatch.chdir(tmp_path)
    config = {"target": "snn", "name": "t", "model": "m.keras", "data": "d.npz",
              "encode": {"kind": "rate", "time_steps": 6, "seed": 1},
              "rounds": [{"complete": {"fault": "dead_neuron", "layers": ["lif1"]}},
                         {"complete": {"fault": {"name": "threshold", "factor": 0.5},
                                       "layers": ["lif1"], "sampling_k": 2}},
                         {"inject": [{"model": "dead_synapse", "layer": "td_fc2",
                                      "sites": [[0, 1]]}]}]}
    files = run_snn_campaign_from_config(config, tmp_path / "out", seed=0, quiet=True)
    with ResultStore(files["store"], must_exist=True) as store:
        assert store.count() == (6 + 2 + 1) * 10
        faults = store.faults()
        assert {f["target"] for f in faults} == {"lif1", "td_fc2"}
        assert {f["pattern"] for f in faults} == {"dead_neuron", "threshold", "dead_synapse"}
    for key in ("accuracy_bins", "snn_heatmap_lif1_dead_neuron.png", "accuracy_vs_factor",
                "snn_by_layer", "report/summary.md"):
        assert files[key].exists() and files[key].stat().st_size > 0
    assert "dead_neuron" in (tmp_path / "out" / "snn_by_fault_model.md").read_text()
    with pytest.raises(UserError):
        run_snn_campaign_from_config(dict(config, rounds=[{"bogus": {}}]), tmp_path / "o2")
    # a second campaign into the same folder is refused: the first one's results stay
    stored = (tmp_path / "out" / "results.db").read_bytes()
    with pytest.raises(UserError, match="already holds an SNN campaign's results"):
        run_snn_campaign_from_config(config, tmp_path / "out", seed=1, quiet=True)
    assert (tmp_path / "out" / "results.db").read_bytes() == stored
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="a_file is a file, not an output folder"):
        run_snn_campaign_from_config(config, tmp_path / "a_file", seed=1, quiet=True)
    # the command line says so in one line; --resume refuses another seed, and continues (here:
    # recomputes, to the same rows) the same campaign
    import yaml

    from classes_tool.cli import main

    (tmp_path / "snn.yaml").write_text(yaml.safe_dump(config))
    rows = stored_rows(tmp_path / "out" / "results.db")
    for extra, message in (([], "already holds"), (["--resume", "--seed", "1"],
                                                   "different config")):
        assert main(["campaign", "snn.yaml", "--out", "out", "--quiet", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0]
    assert main(["campaign", "snn.yaml", "--out", "out", "--quiet", "--resume"]) == 0
    assert stored_rows(tmp_path / "out" / "results.db") == rows


def test_one_hot_labels_and_a_stopped_campaign_resumes_to_the_same_rows(tmp_path, monkeypatch):
    """One-hot `y` is read as class indices (as in a layers campaign), and a run stopped after
    some units (its rows and scores committed) resumes to the rows and outputs of a run that
    never stopped; without --resume the folder is refused."""
    keras.utils.set_random_seed(2)
    layers = [keras.layers.Dense(6, name="fc1"), snn.LIF(0.8, 0.5, name="lif1"),
              keras.layers.Dense(3, name="fc2"), snn.LIF(0.8, 0.5, name="lif2")]
    snn.unroll(layers, (6, 4)).save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 8)
    np.savez(tmp_path / "d.npz", x=rng.random((8, 4)).astype(np.float32), y=np.eye(3)[y])
    monkeypatch.chdir(tmp_path)
    config = {"target": "snn", "name": "t", "model": "m.keras", "data": "d.npz",
              "encode": {"kind": "rate", "time_steps": 6, "seed": 1}, "batch_size": 3,
              "max_rows": 6,
              "rounds": [{"inject": [{"model": "dead_neuron", "layer": "lif1", "count": 2}]},
                         {"complete": {"fault": "dead_neuron", "layers": ["lif2"]}}]}
    whole = run_snn_campaign_from_config(config, tmp_path / "whole", seed=0, quiet=True)
    with ResultStore(whole["store"], must_exist=True) as store:
        rows = store.results()
    assert len(rows) == 4 * 8 and [r["label"] for r in rows[:8]] == y.tolist()

    restore = stop_after_adds(monkeypatch, 2)
    with pytest.raises(KeyboardInterrupt):
        run_snn_campaign_from_config(config, tmp_path / "out", seed=0, quiet=True)
    restore()
    kept = stored_rows(tmp_path / "out" / "results.db")
    assert 0 < len(kept) < len(rows) and set(kept) <= set(stored_rows(whole["store"]))
    with pytest.raises(UserError, match="continue it with --resume"):
        run_snn_campaign_from_config(config, tmp_path / "out", seed=0, quiet=True)
    compute_unit = SpikingCampaign.compute_unit
    computed = []

    def counted(self, *args, **kwargs):
        computed.append(args[1])
        return compute_unit(self, *args, **kwargs)

    monkeypatch.setattr(SpikingCampaign, "compute_unit", counted)
    files = run_snn_campaign_from_config(config, tmp_path / "out", seed=0, quiet=True,
                                         resume=True)
    assert stored_rows(files["store"]) == stored_rows(whole["store"])
    assert len(computed) < 6  # the units stored before were not computed again
    for name in ("campaign.npz", "snn_by_layer.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()
    assert not (tmp_path / "out" / "snn_units").exists()


def test_a_run_that_stores_nothing_leaves_no_folder(tmp_path, monkeypatch):
    layers = [keras.layers.Dense(5, name="fc1"), snn.LIF(0.9, 0.5, name="lif1")]
    snn.unroll(layers, (6, 4)).save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((4, 4)).astype(np.float32))
    monkeypatch.chdir(tmp_path)
    config = {"target": "snn", "model": "m.keras", "data": "d.npz",
              "encode": {"kind": "rate", "time_steps": 6, "seed": 1},
              "rounds": [{"complete": {"fault": "dead_neuron", "layers": ["lif1"]}}]}
    restore = stop_after_adds(monkeypatch, 0)
    with pytest.raises(KeyboardInterrupt):
        run_snn_campaign_from_config(config, tmp_path / "out", seed=0, quiet=True)
    restore()
    assert not (tmp_path / "out").exists()
    files = run_snn_campaign_from_config(config, tmp_path / "out", seed=0, quiet=True)
    assert len(stored_rows(files["store"])) == 5 * 4
