"""The layer campaign end to end: delayed start equals the full patched model, determinism
across batch sizes, resume after kill -9, config validation."""

import os
import signal
import sqlite3
import subprocess
import sys

import keras
import numpy as np
import pytest
import yaml
from helpers import MODELS, wait_for_rows
from helpers import stored_rows as _rows

import classes_tool
from classes_tool.campaign.runner import Campaign, suffix_graph
from classes_tool.cli import main
from classes_tool.errors import UserError
from classes_tool.graph import build_model, read_model
from classes_tool.graph.model_graph import TensorRef
from classes_tool.results.store import ResultStore


def _config(tmp_path, **extra):
    cfg = {"model": str(MODELS / "digits_cnn.h5"), "data": str(MODELS / "digits_test.npz"),
           "inputs": 6, "targets": {"nodes": ["conv2", "fc1"]}, "faults": 9, "seed": 5,
           "batch_size": 16}
    cfg.update(extra)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_suffix_graph_reads_every_tensor_it_needs():
    graph = read_model(MODELS / "digits_cnn.h5")
    from classes_tool.graph.transform import output_shapes

    shapes = output_shapes(build_model(graph))
    sub, needed = suffix_graph(graph, shapes, "conv2", TensorRef("fc2"))
    # conv3 -> residual also needs conv1, which is not after conv2
    assert needed == ["conv2", "conv1"]
    assert "conv1" not in [n.name for n in sub.nodes if not n.is_input]
    assert suffix_graph(graph, shapes, "fc2", TensorRef("fc2"))[1] == ["fc2"]


def test_results_equal_the_full_patched_model_with_the_same_sites(tmp_path):
    """Delayed start must not change anything: replay fault i through the whole patched
    model with site i forced, and compare the stored top-1s."""
    # the same normal range on both sides (campaign and patch would otherwise each calibrate)
    cfg = _config(tmp_path, targets={"nodes": ["conv2"]}, value_range=[0.0, 3.0])
    campaign = Campaign(cfg, out=tmp_path / "run", quiet=True)
    campaign.run()
    rows = campaign.results()
    rows = rows.to_dict("records") if hasattr(rows, "to_dict") else rows
    patched = tmp_path / "p.h5"
    assert main(["patch", str(MODELS / "digits_cnn.h5"), "--after", "conv2", "--sites", "9",
                 "--seed", "5", "--range", "0.0,3.0", "-o", str(patched)]) == 0
    model = keras.models.load_model(patched)
    x = np.load(MODELS / "digits_test.npz")["x"][:6]
    for fault in range(9):
        classes_tool.set_sites(model, [fault] * 6)
        top1 = model.predict(x, verbose=0).argmax(1)
        stored = [r["faulty_top1"] for r in rows if r["fault_index"] == fault]
        assert list(top1) == stored


def test_dense_site_rows_write_what_the_scatter_writes():
    import tensorflow as tf

    from classes_tool.simulator.error_model import load_error_model
    from classes_tool.simulator.sites import generate_sites
    from classes_tool.simulator.write import apply_sites, dense_site_rows

    shape = (8, 8, 16)
    sites = generate_sites(load_error_model("conv_gemm"), "t", shape, (-1.0, 2.0), 40, 3)
    sites.values[::7] = np.nan  # NaN and inf values must land as they are
    sites.values[3::11] = np.inf
    mask, value = dense_site_rows(sites, 8 * 8 * 16)
    assert mask.shape == value.shape == (41, 1024) and not mask[-1].any()
    x = np.random.default_rng(0).standard_normal((50, *shape)).astype(np.float32)
    ids = np.random.default_rng(1).integers(-1, 40, 50)
    expected = apply_sites(tf.constant(x), tf.constant(ids, tf.int32), sites.positions,
                           sites.values, sites.splits, 1, static_shapes=False).numpy()
    rows = np.where(ids >= 0, ids, 40)
    got = np.where(mask[rows], value[rows], x.reshape(50, -1)).reshape(x.shape)
    assert np.array_equal(got, expected, equal_nan=True)


def _same_but_rel_error(ra, rb):
    """Rows equal except rel_error, which may move in its last digits when TF runs the suffix
    at another batch size."""
    assert len(ra) == len(rb)
    for x, y in zip(ra, rb, strict=True):
        assert x[:4] == y[:4] and x[5:] == y[5:]
        assert (x[4] is None and y[4] is None) or abs(x[4] - y[4]) <= 1e-3 * max(1, abs(x[4]))


@pytest.mark.parametrize("batch_size, mode", [(16, "aligned"), (7, "dense")])
def test_every_site_path_stores_the_rows_the_ragged_path_stores(tmp_path, monkeypatch,
                                                                 batch_size, mode):
    from classes_tool.campaign import runner

    seen = []
    real = Campaign._suffix_step
    monkeypatch.setattr(Campaign, "_suffix_step",
                        lambda self, split, m, *a: seen.append(m) or real(self, split, m, *a))
    assert runner.DENSE_MIN_INPUTS <= 8
    cfg = _config(tmp_path, inputs=8, batch_size=batch_size)
    Campaign(cfg, out=tmp_path / mode, quiet=True).run()
    assert seen == [mode, mode]
    monkeypatch.setattr(runner, "DENSE_MIN_INPUTS", 10**9)
    Campaign(cfg, out=tmp_path / "ragged", quiet=True).run()
    assert seen[2:] == ["ragged", "ragged"]
    dense, ragged = _rows(tmp_path / mode / "results.db"), _rows(tmp_path / "ragged" /
                                                                    "results.db")
    assert len(dense) == 2 * 9 * 8
    if mode == "dense":  # same batch size: bit for bit
        assert dense == ragged
    else:  # 16 = 2 faults x 8 inputs, but the ragged path runs 16 samples too
        _same_but_rel_error(dense, ragged)


def test_aligned_batches_with_a_last_partial_fault_group_and_resume(tmp_path):
    """50 inputs in batches of 64: one fault per batch (50 rows); in batches of 100: two, the
    last batch half padding. A resumed half run equals a full run."""
    cfg = _config(tmp_path, inputs=50, faults=5, batch_size=64, targets={"nodes": ["conv3"]})
    Campaign(cfg, out=tmp_path / "full", quiet=True).run()
    full = _rows(tmp_path / "full" / "results.db")
    assert len(full) == 5 * 50
    half = tmp_path / "half"
    Campaign(cfg, out=half, quiet=True).run()
    with sqlite3.connect(half / "results.db") as conn:
        conn.execute("DELETE FROM result_rows WHERE fault_index >= 2 OR "
                     "(fault_index = 1 AND input_index >= 20)")
    summary = Campaign(cfg, out=half, quiet=True).run(resume=True)
    assert _rows(half / "results.db") == full
    # the summary adds the outcomes of the rows it stored to those a previous run had stored
    with ResultStore(half / "results.db") as store:
        assert summary == store.outcome_counts() and sum(summary["conv3"].values()) == 250
    pairs = tmp_path / "pairs"
    Campaign(_config(tmp_path, inputs=50, faults=5, batch_size=100,
                     targets={"nodes": ["conv3"]}), out=pairs, quiet=True).run()
    _same_but_rel_error(_rows(pairs / "results.db"), full)


def test_same_seed_same_results_whatever_the_batch_size(tmp_path):
    a = Campaign(_config(tmp_path, batch_size=7), out=tmp_path / "a", quiet=True)
    b = Campaign(_config(tmp_path, batch_size=64), out=tmp_path / "b", quiet=True)
    a.run()
    b.run()
    ra, rb = _rows(tmp_path / "a" / "results.db"), _rows(tmp_path / "b" / "results.db")
    assert len(ra) == len(rb) == 2 * 9 * 6
    _same_but_rel_error(ra, rb)


def test_resuming_with_other_labels_is_a_user_error(tmp_path):
    data = np.load(MODELS / "digits_test.npz")
    np.savez(tmp_path / "d.npz", x=data["x"], y=data["y"])
    cfg = _config(tmp_path, data=str(tmp_path / "d.npz"), targets={"nodes": ["fc1"]}, faults=2)
    Campaign(cfg, out=tmp_path / "r", quiet=True).run()
    np.savez(tmp_path / "d.npz", x=data["x"], y=(data["y"] + 1) % 10)
    with pytest.raises(UserError, match="data file .* changed"):  # its content hash differs
        Campaign(cfg, out=tmp_path / "r", quiet=True).run(resume=True)
    with sqlite3.connect(tmp_path / "r" / "results.db") as conn:  # a store without hashes
        conn.execute("DELETE FROM meta WHERE key = 'file_sha256'")
    with pytest.raises(UserError, match="labels are not those the stored results were"):
        Campaign(cfg, out=tmp_path / "r", quiet=True).run(resume=True)


def test_existing_results_need_resume_and_a_matching_config(tmp_path):
    summary = Campaign(_config(tmp_path), out=tmp_path / "r", quiet=True).run()
    with ResultStore(tmp_path / "r" / "results.db") as store:  # counted as stored
        assert summary == store.outcome_counts() and list(summary) == ["conv2", "fc1"]
    again = Campaign(_config(tmp_path), out=tmp_path / "r", quiet=True).run(resume=True)
    assert again == summary and list(again) == ["conv2", "fc1"]  # targets in graph order
    with pytest.raises(UserError, match="--resume"):
        Campaign(_config(tmp_path), out=tmp_path / "r", quiet=True).run()
    with pytest.raises(UserError, match="different config"):
        Campaign(_config(tmp_path), out=tmp_path / "r", seed=6, quiet=True).run(resume=True)


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    cfg = _config(tmp_path, faults=60, inputs=20, batch_size=8,
                  targets={"types": ["Conv2D"]})
    clean = tmp_path / "clean"
    Campaign(cfg, out=clean, quiet=True).run()
    crashed = tmp_path / "crashed"
    proc = subprocess.Popen([sys.executable, "-m", "classes_tool.cli", "campaign", str(cfg),
                             "--out", str(crashed), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = crashed / "results.db"
    wait_for_rows(db, 400, proc)
    assert proc.poll() is None, "the campaign finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = len(_rows(db))
    assert 0 < partial < 4 * 60 * 20
    assert main(["campaign", str(cfg), "--out", str(crashed), "--resume", "--quiet"]) == 0
    assert _rows(db) == _rows(clean / "results.db")


@pytest.mark.parametrize("change, message", [
    ({"wobble": 1}, "unknown config key 'wobble'"),
    ({"seed": "seven"}, "'seed' must be an integer"),
    ({"margin": 2, "faults": None}, "'margin' must be within"),
    ({"margin": 0.1}, "'faults' (a fixed budget per target) and 'margin'"),
    ({"seed": -1}, "'seed' must be within [0, 9223372036854775807], got -1"),
    ({"value_range": [5, 1]}, "'value_range' must be [low, high], two finite numbers"),
    ({"value_range": [0, float("nan")]}, "'value_range' must be [low, high]"),
    ({"batch_size": 0}, "'batch_size' must be at least 1, got 0"),
    ({"targets": {"layers": ["conv1"]}}, "targets"),
    ({"model": "missing.h5"}, "model file not found"),
    ({"targets": {"nodes": ["nope"]}}, "no node named 'nope'"),
    ({"data": "missing.npz"}, "data file not found"),
])
def test_config_errors_are_one_line_exit_2(tmp_path, capsys, change, message):
    cfg = _config(tmp_path, **change)
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_key_given_twice_is_an_error(tmp_path, capsys):
    """YAML keeps the last of two equal keys silently; a config must not."""
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + "seed: 6\n")
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "key 'seed' is given twice" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("seed", ["-1", "9223372036854775808", "x"])
def test_bad_seed_option(tmp_path, capsys, seed):
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit for a bad option value
        main(["campaign", str(_config(tmp_path)), "--out", str(tmp_path / "o"),
              f"--seed={seed}", "--quiet"])
    assert exit_.value.code == 2
    assert "bad seed" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def test_labels_short_or_shaped_wrong_are_errors_before_any_output(tmp_path, capsys):
    x = np.load(MODELS / "digits_test.npz")["x"][:6]
    for y, message in ((np.arange(5), "'y' has 5 labels for 6 inputs"),
                       (np.zeros((6, 2, 2)), "'y' must hold one integer class per sample")):
        cfg = _config(tmp_path, data=str(_npz(tmp_path, x=x, y=y)))
        assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1
        assert not (tmp_path / "o").exists()


def test_one_hot_labels_are_read_as_classes(tmp_path):
    data = np.load(MODELS / "digits_test.npz")
    x, y = data["x"][:6], data["y"][:6]
    cfg = _config(tmp_path, data=str(_npz(tmp_path, x=x, y=np.eye(10)[y])))
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    with sqlite3.connect(tmp_path / "o" / "results.db") as conn:
        stored = dict(conn.execute("SELECT DISTINCT input_index, label FROM results"))
    assert stored == {i: int(y[i]) for i in range(6)}


def test_data_without_x_or_samples(tmp_path, capsys):
    y = np.arange(6)
    cfg = _config(tmp_path, data=str(_npz(tmp_path, y=y)))
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "has no array for model input 0" in capsys.readouterr().err
    cfg = _config(tmp_path, data=str(_npz(tmp_path, x=np.zeros((0, 8, 8, 1), np.float32))))
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "hold no samples" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_run_that_fails_before_storing_leaves_nothing(tmp_path, monkeypatch):
    """A failure after the database was created but before any row was stored removes it (and
    the folder the run created), so the next run does not ask for --resume."""
    from classes_tool.campaign import runner

    def broken(*args, **kwargs):
        raise UserError("broken on purpose")

    monkeypatch.setattr(runner.Campaign, "_run_target", broken)
    out = tmp_path / "o"
    with pytest.raises(UserError, match="broken on purpose"):
        Campaign(_config(tmp_path), out=out, quiet=True).run()
    assert not out.exists()
    monkeypatch.undo()
    Campaign(_config(tmp_path), out=out, quiet=True).run()  # no --resume needed
    assert len(_rows(out / "results.db")) == 2 * 9 * 6


def test_output_folder_that_is_a_file(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert main(["campaign", str(_config(tmp_path)), "--out", str(taken), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("classes-tool: error: cannot use") and len(err.splitlines()) == 1
    assert taken.read_text() == "a file"


def test_invalid_yaml(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    assert main(["campaign", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


def test_campaign_cli_then_report(tmp_path, capsys):
    cfg = _config(tmp_path)
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "run" / "results.db"), "-o",
                 str(tmp_path / "rep"), "--csv", str(tmp_path / "all.csv")]) == 0
    assert len((tmp_path / "all.csv").read_text().splitlines()) == 1 + 2 * 9 * 6
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "conv2" in summary and "fc1" in summary
    assert (tmp_path / "rep" / "outcomes_by_target.png").stat().st_size > 1000


def test_report_includes_injection_statistics(tmp_path, capsys):
    import json

    from classes_tool.quant.statistics import derive, raw_from_tensors

    clean = np.array([1.0, 2.0, 3.0, 4.0])
    faulty = np.array([1.0, 2.0, 0.0, 4.0])
    row = derive(raw_from_tensors(clean, faulty, hit=np.array([0, 0, 1, 0], bool)))
    stats = tmp_path / "fault_statistics.json"
    stats.write_text(json.dumps({"conv1_fault_injection": {**row, "target": "conv1"}}))
    cfg = _config(tmp_path)
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert main(["report", str(tmp_path / "run" / "results.db"), "-o", str(tmp_path / "rep"),
                 "--statistics", str(stats)]) == 0
    summary = (tmp_path / "rep" / "summary.md").read_text()
    assert "## Injection statistics" in summary
    line = next(x for x in summary.splitlines() if x.startswith("| conv1_fault_injection"))
    assert "| 4 | 1 | 1 | 25.000% | 25.000% |" in line  # 4 seen, 1 hit, 1 changed
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    assert main(["report", str(tmp_path / "run" / "results.db"), "-o", str(tmp_path / "rep2"),
                 "--statistics", str(bad)]) == 2
    assert "not a fault-statistics JSON" in capsys.readouterr().err


def test_summary_table_uses_the_campaigns_confidence():
    from classes_tool.results.estimates import Design
    from classes_tool.results.report import format_summary

    row = {"group": "conv2", "faults": 4, "evaluations": 40, "critical_sdc_design_effect": 3.5,
           "margin_achieved": 0.21}
    for o in ("masked", "tolerable_sdc", "critical_sdc", "due"):
        row.update({f"{o}_rate": 0.25, f"{o}_ci_low": 0.1, f"{o}_ci_high": 0.5})
    text = format_summary([row], Design(confidence=0.99))
    assert "25.00% ±25.0" in text  # the farther end of the interval
    assert "99% interval over faults" in text and "3.5" in text and "21.0%" in text
    assert "95% interval over faults" in format_summary([row], Design())


def test_two_input_model_in_every_site_path_equals_the_patched_model(tmp_path, monkeypatch):
    """A model with an image and a vector input, faults in either branch: the suffix reads
    tensors of the other branch, and every path stores what the patched full model computes."""
    from classes_tool.campaign import runner

    img = keras.Input((8, 8, 2), name="img")
    meta = keras.Input((5,), name="meta")
    x = keras.layers.Flatten(name="fl")(keras.layers.ReLU(name="r1")(
        keras.layers.Conv2D(4, 3, padding="same", name="c1")(img)))
    z = keras.layers.Concatenate(name="cat")([x, keras.layers.Dense(6, name="d_meta")(meta)])
    out = keras.layers.Dense(4, activation="softmax", name="head")(z)
    keras.utils.set_random_seed(3)
    keras.Model([img, meta], out).save(tmp_path / "two.h5")
    rng = np.random.default_rng(0)
    data = {"img": rng.random((12, 8, 8, 2)).astype("float32"),
            "meta": rng.random((12, 5)).astype("float32")}
    np.savez(tmp_path / "two.npz", **data)

    def run(name, batch_size):
        cfg = _config(tmp_path, model=str(tmp_path / "two.h5"), data=str(tmp_path / "two.npz"),
                      inputs=12, targets={"nodes": ["c1", "d_meta"]}, faults=5,
                      batch_size=batch_size, value_range=[-2.0, 2.0])
        Campaign(cfg, out=tmp_path / name, quiet=True).run()
        return _rows(tmp_path / name / "results.db")

    aligned, dense = run("aligned", 48), run("dense", 8)
    monkeypatch.setattr(runner, "DENSE_MIN_INPUTS", 10**9)
    ragged = run("ragged", 8)
    assert len(aligned) == 2 * 5 * 12 and dense == ragged
    _same_but_rel_error(aligned, dense)
    patched = tmp_path / "p.h5"
    assert main(["patch", str(tmp_path / "two.h5"), "--after", "c1", "--sites", "5", "--seed",
                 "5", "--range=-2.0,2.0", "-o", str(patched)]) == 0
    model = keras.models.load_model(patched)
    for fault in range(5):
        classes_tool.set_sites(model, [fault] * 12)
        top1 = model.predict([data["img"], data["meta"]], verbose=0).argmax(1)
        assert top1.tolist() == [r[6] for r in ragged if r[0] == fault]


def test_ctrl_c_keeps_every_computed_batch_and_resume_completes_it(tmp_path, monkeypatch):
    """Ctrl-C during batch 4: batches 1-3, computed and handed to the writer thread, are all
    committed before the interrupt propagates; --resume then equals an uninterrupted run."""
    cfg = _config(tmp_path, inputs=8, faults=12, batch_size=16, targets={"nodes": ["conv3"]})
    Campaign(cfg, out=tmp_path / "clean", quiet=True).run()
    real = Campaign._suffix_step

    def interrupted(self, *args):
        step, golden = real(self, *args)
        calls = []

        def step_then_ctrl_c(*a):
            calls.append(1)
            if len(calls) == 4:
                raise KeyboardInterrupt
            return step(*a)
        return step_then_ctrl_c, golden

    monkeypatch.setattr(Campaign, "_suffix_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Campaign(cfg, out=tmp_path / "cut", quiet=True).run()
    assert len(_rows(tmp_path / "cut" / "results.db")) == 3 * 16  # 2 faults x 8 inputs each
    monkeypatch.setattr(Campaign, "_suffix_step", real)
    Campaign(cfg, out=tmp_path / "cut", quiet=True).run(resume=True)
    assert _rows(tmp_path / "cut" / "results.db") == _rows(tmp_path / "clean" / "results.db")


@pytest.mark.parametrize("batch_size, inputs", [(64, 8), (8, 12)])
def test_a_step_without_sites_is_masked_with_zero_error_in_every_slot(tmp_path, monkeypatch,
                                                                      batch_size, inputs):
    """Golden scores come from the faulty step itself: with nothing written, every row of a
    batch, whatever its slot, equals its input's golden row bit for bit."""
    import tensorflow as tf

    from classes_tool.results.outcomes import finish_classification

    seen = {}
    real = Campaign._suffix_step

    def spy(self, split, mode, size, per_batch, flat_size):
        seen.update(mode=mode, size=size, per_batch=per_batch, flat=flat_size)
        step, terms = real(self, split, mode, size, per_batch, flat_size)
        seen.update(step=step, terms=terms)
        return step, terms

    monkeypatch.setattr(Campaign, "_suffix_step", spy)
    cfg = _config(tmp_path, inputs=inputs, batch_size=batch_size, targets={"nodes": ["conv2"]})
    Campaign(cfg, out=tmp_path / "r", quiet=True).run()
    flat, size = seen["flat"], seen["size"]
    if seen["mode"] == "aligned":
        rows = seen["per_batch"]
        out = seen["step"](tf.zeros((rows, flat), tf.bool), tf.zeros((rows, flat)))
    else:
        assert seen["mode"] == "dense"
        ids = tf.constant(np.arange(size) % inputs, tf.int32)
        out = seen["step"](ids, tf.fill((size,), -1), tf.zeros((1, flat), tf.bool),
                           tf.zeros((1, flat)))
    rows = np.arange(size) % inputs  # the input of each row, in both layouts
    parts, scores = out  # the step returns the outcome parts and the scores
    assert scores.shape == (size, 10)
    got = finish_classification(**{k: v.numpy() for k, v in parts.items()},
                                golden_top1=seen["terms"]["top1"][rows],
                                golden_at_top=seen["terms"]["at_top"][rows])
    assert got["outcome"].tolist() == [0] * size  # OUTCOMES[0] == "masked"
    assert not got["rel_error"].any()
    # not merely within tolerance: the very golden scores, bit for bit
    assert parts["faulty_at_top"].numpy().tolist() == seen["terms"]["at_top"][rows].tolist()


def test_other_tensors_tiled_in_the_step_when_a_tiled_copy_would_be_too_big(tmp_path,
                                                                            monkeypatch):
    """conv2's suffix also reads conv1 (the residual): kept as a tiled constant, or tiled in
    every step above TILE_BYTES; both store the same rows."""
    from classes_tool.campaign import runner

    cfg = _config(tmp_path, inputs=8, batch_size=32, targets={"nodes": ["conv2"]})
    Campaign(cfg, out=tmp_path / "constant", quiet=True).run()
    monkeypatch.setattr(runner, "TILE_BYTES", 0)
    Campaign(cfg, out=tmp_path / "per_step", quiet=True).run()
    rows = _rows(tmp_path / "constant" / "results.db")
    assert len(rows) == 9 * 8 and rows == _rows(tmp_path / "per_step" / "results.db")


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priorities here")
def test_side_work_runs_at_a_lower_priority_than_the_caller():
    import threading

    from classes_tool.campaign.runner import background_thread

    def niceness():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    with background_thread() as pool:
        assert pool.submit(niceness).result() > niceness() or niceness() == 19


def test_prefetched_keeps_order_takes_any_iterable_and_raises_where_consumed():
    from classes_tool.campaign.runner import prefetched

    pulled = []

    def source():
        for k in range(7):
            pulled.append(k)
            yield k

    for depth in (0, 1, 2, 10):
        pulled.clear()
        results = prefetched(lambda k: k * k, source(), depth)
        assert next(results) == 0
        assert len(pulled) == min(7, depth + 1)  # the one consumed and `depth` ahead
        assert list(results) == [k * k for k in range(1, 7)]
    # chained, as the campaign chains preparing and running batches
    assert list(prefetched(str, prefetched(lambda k: k + 1, range(5), 3), 2,
                           low_priority=False)) == ["1", "2", "3", "4", "5"]

    def fails_on_3(k):
        if k == 3:
            raise KeyboardInterrupt
        return k

    got = []
    with pytest.raises(KeyboardInterrupt):
        for k in prefetched(fails_on_3, range(6), 2):
            got.append(k)
    assert got == [0, 1, 2]


def test_a_target_that_cannot_reach_the_scored_output_is_named(tmp_path, capsys):
    """Its faults are all masked by construction; the user is told why, and how to choose."""
    inp = keras.Input((8, 8, 1), name="image")
    trunk = keras.layers.Flatten(name="flat")(inp)
    head_a = keras.layers.Dense(10, name="head_a")(trunk)
    branch = keras.layers.Dense(6, activation="relu", name="branch_b")(trunk)
    head_b = keras.layers.Dense(3, name="head_b")(branch)
    path = tmp_path / "two_heads.h5"
    keras.Model(inp, [head_a, head_b]).save(path)
    cfg = _config(tmp_path, model=str(path), targets={"nodes": ["branch_b"]}, faults=2,
                  error_model="relu")
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "o"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: 'branch_b' does not reach the scored output 'head_a'" in err
    with sqlite3.connect(tmp_path / "o" / "results.db") as conn:
        assert conn.execute("SELECT DISTINCT outcome FROM results").fetchall() == [("masked",)]


def test_resume_with_nothing_to_resume_says_so(tmp_path, capsys):
    cfg = _config(tmp_path, faults=1)
    assert main(["campaign", str(cfg), "--out", str(tmp_path / "typo"), "--resume"]) == 0
    assert "nothing to resume in" in capsys.readouterr().err
    assert len(_rows(tmp_path / "typo" / "results.db")) == 2 * 6
