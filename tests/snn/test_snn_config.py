"""SNN campaign configs: every key and count is checked up front, as one-line CLI errors, and a
rejected run leaves no output folder behind."""

import os
import re
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

import classes_tool.snn as snn  # noqa: E402
from classes_tool.cli import main  # noqa: E402
from classes_tool.errors import UserError  # noqa: E402
from classes_tool.snn.metrics import Results  # noqa: E402
from classes_tool.snn.plots import _mean_of_sampled, plot_neuron_heatmap  # noqa: E402
from classes_tool.snn.runner import validate_config  # noqa: E402

T = 6
GOOD = {"target": "snn", "name": "t", "model": "m.keras", "data": "d.npz", "samples": 4,
        "rounds": [{"complete": {"fault": "dead_neuron", "layers": ["lif1"], "sampling_k": 2}},
                   {"inject": [{"model": "dead_neuron", "layer": "lif2", "count": 1}]}]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A tiny spiking model and 10 encoded samples, beside which the test configs are written."""
    path = tmp_path_factory.mktemp("snn_config")
    keras.utils.set_random_seed(3)
    layers = [keras.layers.Dense(5, name="fc1"), snn.LIF(0.8, 0.5, name="lif1"),
              keras.layers.Dense(3, name="fc2"), snn.LIF(0.8, 0.5, name="lif2")]
    snn.unroll(layers, (T, 4)).save(path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(path / "d.npz", x=snn.rate_encode(rng.random((10, 4)), T, seed=1),
             y=rng.integers(0, 3, 10))
    np.savez(path / "wrong.npz", x=np.zeros((10, T, 7), np.float32), y=np.zeros(10, int))
    return path


def _campaign(folder, tmp_path, capsys, **changes):
    config = {**GOOD, **changes}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({k: v for k, v in config.items() if v is not None}))
    for name in ("m.keras", "d.npz", "wrong.npz"):
        (tmp_path / name).symlink_to(folder / name)
    rc = main(["campaign", str(cfg), "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    return rc, captured.err, captured.out


@pytest.mark.parametrize("samples", [0, "lots", -5, 2.5, True])
def test_samples_must_be_a_positive_integer(folder, tmp_path, capsys, samples):
    """`samples: 0` crashed in the metrics, 'lots' in int(), and -5 sliced 'all but the last 5'."""
    rc, err, _ = _campaign(folder, tmp_path, capsys, samples=samples)
    assert rc == 2
    assert err.startswith(f"classes-tool: error: 'samples' in the SNN config {tmp_path / 'c.yaml'}"
                          " must be a positive integer") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_unknown_top_level_key_is_an_error(folder, tmp_path, capsys):
    rc, err, _ = _campaign(folder, tmp_path, capsys, modle="x")
    assert rc == 2
    assert "unknown top-level key(s) modle" in err and "valid: target, name, model" in err
    assert not (tmp_path / "out").exists()


def test_data_that_does_not_fit_the_model_names_both_shapes(folder, tmp_path, capsys):
    rc, err, _ = _campaign(folder, tmp_path, capsys, data="wrong.npz")
    assert rc == 2
    assert "samples are shaped (6, 7)" in err and "expects (6, 4)" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_samples_takes_the_first_n(folder, tmp_path, capsys):
    rc, err, out = _campaign(folder, tmp_path, capsys, samples=4)
    assert rc == 0, err
    assert "samples: 4," in (tmp_path / "out" / "snn_summary.md").read_text()
    assert "RuntimeWarning" not in err


@pytest.mark.parametrize("change, message", [
    ({"batch_size": 0}, "'batch_size' in the SNN config must be a positive integer"),
    ({"max_rows": "many"}, "'max_rows' in the SNN config must be a positive integer"),
    ({"seed": -4}, "'seed' in the SNN config must be a non-negative integer below 2\\*\\*63"),
    ({"seed": 2**63}, "'seed' in the SNN config must be a non-negative integer"),
    ({"early_stop": "yes"}, "'early_stop' in the SNN config must be true or false"),
    ({"encode": {"kind": "rate", "time_steps": 0}}, "encode.time_steps must be a positive"),
    ({"encode": {"kind": "rate", "seed": -1}}, "encode.seed must be a non-negative integer"),
    ({"encode": {"kind": "rate", "steps": 4}}, "unknown key\\(s\\) steps in 'encode'"),
    ({"rounds": [{"complete": {"fault": "dead_neuron", "layers": ["lif1"], "sampling_k": 2.5}}]},
     "rounds\\[0\\].complete.sampling_k must be a positive integer, got 2.5"),
    ({"rounds": [{"complete": {"fault": "dead_neuron", "layer": ["lif1"]}}]},
     "unknown key\\(s\\) layer in rounds\\[0\\].complete"),
    ({"rounds": [{"inject": [{"model": "dead_neuron", "layer": "lif1", "count": "two"}]}]},
     "rounds\\[0\\].inject\\[0\\].count must be a positive integer"),
    ({"rounds": [{"inject": [{"model": "dead_neuron", "layer": "lif1", "window": [1]}]}]},
     "rounds\\[0\\].inject\\[0\\].window must be \\[start, stop\\]"),
    ({"rounds": []}, "needs a non-empty 'rounds' list"),
])
def test_counts_seeds_and_nested_keys_are_checked(change, message):
    with pytest.raises(UserError, match=message):
        validate_config({**GOOD, **change})


@pytest.mark.parametrize("rounds, message", [
    ([{"complete": {"fault": {"name": "threshold", "factor": -1}, "layers": ["lif1"]}}],
     "rounds[0].complete: SNN fault model 'threshold': parameter 'factor' must be positive"),
    ([{"complete": {"fault": "dead_neuron", "layers": ["lif1"]}},
      {"inject": [{"model": "dead_neuron", "layer": "lif1"},
                  {"model": {"name": "stuck_neuron", "prob": 2}, "layer": "lif2"}]}],
     "rounds[1].inject[1]: SNN fault model 'stuck_neuron': parameter 'prob' must lie in"),
    ([{"complete": {"fault": {"name": "nope"}, "layers": ["lif1"]}}],
     "rounds[0].complete: unknown SNN fault model 'nope'"),
    ([{"inject": [{"model": {"name": "threshold", "params": 3}, "layer": "lif1"}]}],
     "rounds[0].inject[0]: SNN fault model 'threshold': 'params' must be a mapping"),
    ([{"inject": [{"model": {"name": "threshold", "params": [1]}, "layer": "lif1"}]}],
     "'params' must be a mapping of parameter names to values, got [1]"),
])
def test_fault_models_are_checked_with_the_config(rounds, message):
    """Before the model loads (seconds, for a real network), and naming the round."""
    with pytest.raises(UserError, match=re.escape(message)):
        validate_config({**GOOD, "rounds": rounds})


@pytest.mark.parametrize("rounds, message", [
    ([{"inject": [{"model": "dead_neuron", "layer": "lif1"}]},
      {"inject": [{"model": "dead_neuron", "layer": "lif1"},
                  {"model": {"name": "spike_flip", "step": T}, "layer": "lif2"}]}],
     f"rounds[1].inject[1]: step {T} outside 0..{T - 1}"),
    ([{"complete": {"fault": "dead_neuron", "layers": ["lif1"], "window": [2, T + 1]}}],
     f"rounds[0].complete: window (2, {T + 1}) outside 0..{T}"),
    ([{"inject": [{"model": "dead_neuron", "layer": "lif1", "window": [4, 2]}]}],
     "rounds[0].inject[0]: window (4, 2) must start before it stops"),
    ([{"inject": [{"model": "dead_neuron", "layer": "lif1", "sites": [[9, 9]]}]}],
     "rounds[0].inject[0]: site"),
])
def test_a_fault_that_does_not_fit_the_network_names_its_round(folder, tmp_path, capsys, rounds,
                                                               message):
    rc, err, _ = _campaign(folder, tmp_path, capsys, rounds=rounds)
    assert rc == 2
    assert err.startswith(f"classes-tool: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_validate_names_the_file():
    with pytest.raises(UserError, match="in the SNN config c.yaml"):
        validate_config({**GOOD, "sample": 3}, source="c.yaml")


def test_heatmap_of_sampled_sites_does_not_warn(tmp_path):
    """The demo printed 'Mean of empty slice' for every (row, column) with no faulted channel."""
    info = [{"target": "lif1", "pattern": "dead_neuron", "params": {"sites": [site]}}
            for site in ([0, 0, 0], [0, 0, 2], [1, 1, 1])]
    golden = np.eye(3)[[0, 1, 2, 0]]
    scores = np.stack([golden, golden[::-1], golden])
    results = Results(golden, scores, np.array([0, 1, 2, 0]), info)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_neuron_heatmap(results, "lif1", "dead_neuron", (2, 2, 3), tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 0
    grid = np.full((2, 2, 3), np.nan)
    grid[0, 0] = [0.5, np.nan, 1.0]
    mean = _mean_of_sampled(grid)
    assert mean[0, 0] == 0.75 and np.isnan(mean[1:]).all() and np.isnan(mean[0, 1])
