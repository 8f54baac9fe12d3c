"""`classes-tool train` / `sweep` on bad input: one-line errors before any output is written."""

import keras
import numpy as np
import pytest
import yaml

from classes_tool.cli import main


@pytest.fixture
def toy(tmp_path):
    """A tiny Dense model on 6 features, its train/test data, a config, and a 4-feature model."""
    rng = np.random.default_rng(0)
    x = rng.random((48, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 1).astype(np.int64)
    for features, name in ((6, "toy.keras"), (4, "other.keras")):
        inp = keras.Input((features,))
        h = keras.layers.Dense(8, activation="relu", name="d1")(inp)
        keras.Model(inp, keras.layers.Dense(2, activation="softmax")(h)).save(tmp_path / name)
    np.savez(tmp_path / "train.npz", x=x[:32], y=y[:32])
    np.savez(tmp_path / "test.npz", x=x[32:], y=y[32:])
    config = {"model": "toy.keras", "data": {"train": "train.npz", "test": "test.npz"},
              "training": {"epochs": 1, "batch_size": 16, "output": "tuned.keras"},
              "fault_injection": {"probability": 10, "seed": 3}}
    return tmp_path, config


def _write(path, config):
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_unknown_top_level_key_names_key_and_file(toy, capsys, command):
    """`modle: typo.h5` was ignored and the run went on with the config's `model`."""
    folder, config = toy
    cfg = _write(folder / "typo.yaml", {**config, "modle": "typo.h5"})
    assert main([command, cfg, "--out", str(folder / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == (f"classes-tool: error: unknown top-level key(s) modle in the config of {cfg}; "
                   "valid: model, data, training, fault_injection\n")
    assert not (folder / "out").exists()


def test_sweep_model_that_does_not_fit_the_data_names_both_shapes(toy, capsys):
    """A --model whose input does not fit the data gave a Keras ValueError traceback."""
    folder, config = toy
    cfg = _write(folder / "c.yaml", config)
    rc = main(["sweep", cfg, "--sweep-prob", "5", "--seeds", "1", "--model",
               str(folder / "other.keras"), "--out", str(folder / "out"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "test.npz: samples are shaped (6,) but model" in err
    assert "other.keras expects inputs shaped (any,)" not in err  # the batch axis is not shown
    assert "expects inputs shaped (4,)" in err and err.count("\n") == 1
    assert not (folder / "out").exists()


def test_train_test_data_is_checked_before_training(toy, capsys):
    """A bad data.test used to fail after training, leaving a half-written output folder."""
    folder, config = toy
    np.savez(folder / "bad_test.npz", x=np.zeros((5, 3), np.float32), y=np.zeros(5, int))
    cfg = _write(folder / "c.yaml",
                 {**config, "data": {"train": "train.npz", "test": "bad_test.npz"}})
    assert main(["train", cfg, "--out", str(folder / "out"), "--quiet"]) == 2
    assert "bad_test.npz: samples are shaped (3,)" in capsys.readouterr().err
    assert not (folder / "out").exists()


def test_labels_must_match_the_inputs(toy, capsys):
    folder, config = toy
    np.savez(folder / "short_y.npz", x=np.zeros((5, 6), np.float32), y=np.zeros(4, int))
    cfg = _write(folder / "c.yaml", {**config, "data": {"train": "short_y.npz"}})
    assert main(["train", cfg, "--out", str(folder / "out"), "--quiet"]) == 2
    assert "5 samples in x but 4 labels in y" in capsys.readouterr().err


@pytest.mark.slow
def test_train_lists_each_written_file_once(toy, capsys):
    """`wrote .../tuned.keras` was printed twice (by the trainer and by the CLI)."""
    folder, config = toy
    cfg = _write(folder / "c.yaml", config)
    out = folder / "out"
    assert main(["train", cfg, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count(f"wrote {out / 'tuned.keras'}\n") == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "evaluation.json", "fault_statistics.json", "history.json", "tuned.keras",
        "tuned_injected.keras"]
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []  # no staging left
