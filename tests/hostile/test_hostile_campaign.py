"""Hostile conditions around a layer campaign and its result store: a second campaign racing
for the same folder, files changed under a resume, a full disk, bad configs and damaged
databases. Every one is one line and exit 2, and no stored row is lost or mixed (issue 19)."""

from __future__ import annotations

import shutil
import sqlite3

import h5py
import numpy as np
import pytest
import yaml
from helpers import MODELS

from classes_tool.campaign import runner as runner_module
from classes_tool.results.store import CONTENT_HASHES, ResultStore


def _rows(db):
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM result_rows ORDER BY fault_index, "
                            "input_index").fetchall()


@pytest.fixture
def files(tmp_path):
    """A model and data of our own (the test changes them) and a tiny campaign config."""
    model = tmp_path / "m.h5"
    shutil.copyfile(MODELS / "digits_cnn.h5", model)
    data = tmp_path / "d.npz"
    with np.load(MODELS / "digits_test.npz") as d:
        np.savez(data, x=d["x"][:4], y=d["y"][:4])
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "model": "m.h5", "data": "d.npz", "targets": {"nodes": ["fc1"]}, "faults": 6,
        "seed": 3, "batch_size": 8, "value_range": [0.0, 3.0], "output": "run"}))
    return model, data, config


def _config(config, **changes):
    raw = yaml.safe_load(config.read_text())
    raw.update(changes)
    config.write_text(yaml.safe_dump(raw))
    return config


# -- the start-up race -------------------------------------------------------------------------

def test_a_campaign_that_loses_the_race_leaves_the_winners_database(hostile, files, tmp_path,
                                                                   monkeypatch):
    """Both runs see no database; the other one takes the lock first. The loser is refused
    and must not delete the winner's database, WAL or folder while the winner runs."""
    _, _, config = files
    db = tmp_path / "run" / "results.db"
    real = runner_module.ResultStore
    held = []

    def winner_first(*args, **kwargs):  # the other campaign starts just before this one
        held.append(real(db, meta={"kind": "other run"}, new=True, discard_empty=True))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "ResultStore", winner_first)
    try:
        hostile.run(["campaign", config, "--quiet"], inputs=[config],
                    expect="being written by another campaign")
        assert db.is_file() and db.parent.is_dir()
        # the winner still writes and commits
        faults = [{"fault_index": 0, "target": "t", "pattern": "p", "params": {}}]
        held[0].add(faults, [{"fault_index": 0, "input_index": 0, "outcome": "masked",
                             "sdc5": False, "rel_error": 0.0, "golden_top1": 1,
                             "faulty_top1": 1}])
    finally:
        for store in held:
            store.close()
    with ResultStore(db, must_exist=True) as store:
        assert store.count() == 1 and store.meta["kind"] == "other run"


def test_a_fresh_campaign_refuses_a_database_that_appeared_meanwhile(hostile, files, tmp_path,
                                                                    monkeypatch):
    """The winner finished between the loser's first look and its lock: the loser must not
    add to it as if resuming."""
    _, _, config = files
    db = tmp_path / "run" / "results.db"
    real = runner_module.ResultStore

    def winner_done(*args, **kwargs):
        with real(db, meta={"kind": "other run"}):
            pass
        return real(*args, **kwargs)

    monkeypatch.setattr(runner_module, "ResultStore", winner_done)
    hostile.run(["campaign", config, "--quiet"], inputs=[config], expect="already exists")
    with ResultStore(db, must_exist=True) as store:
        assert store.meta["kind"] == "other run" and store.count() == 0


# -- resume against changed files --------------------------------------------------------------

@pytest.fixture
def interrupted(hostile, files, tmp_path):
    """A finished campaign with its last fault's rows removed (what kill -9 leaves)."""
    _, _, config = files
    hostile.ok(["campaign", config, "--quiet"])
    db = tmp_path / "run" / "results.db"
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM result_rows WHERE fault_index = 5")
    return db


def _negate_a_kernel(model):
    with h5py.File(model, "r+") as f:
        kernel = f["model_weights/fc1/fc1/kernel"]
        kernel[...] = -kernel[...]


def test_resume_refuses_a_changed_model(hostile, files, interrupted):
    model, _, config = files
    _negate_a_kernel(model)
    rows = _rows(interrupted)
    message = hostile.run(["campaign", config, "--resume", "--quiet"], inputs=[config, model],
                          watch=[interrupted.parent], expect="model file")
    assert "changed" in message
    assert _rows(interrupted) == rows


def test_resume_refuses_changed_data(hostile, files, interrupted):
    _, data, config = files
    with np.load(data) as d:
        x, y = d["x"].copy(), d["y"]
    x[0] += 0.5
    np.savez(data, x=x, y=y)
    rows = _rows(interrupted)
    hostile.run(["campaign", config, "--resume", "--quiet"], inputs=[config, data],
                watch=[interrupted.parent], expect="data file")
    assert _rows(interrupted) == rows


def test_a_store_without_hashes_still_resumes(hostile, files, interrupted):
    _, _, config = files
    with sqlite3.connect(interrupted) as conn:
        conn.execute("DELETE FROM meta WHERE key = ?", (CONTENT_HASHES,))
    before = len(_rows(interrupted))
    hostile.ok(["campaign", config, "--resume", "--quiet"])
    assert len(_rows(interrupted)) == before + 4


# -- a full disk -------------------------------------------------------------------------------

def test_a_full_disk_keeps_the_stored_rows_and_resume_finishes(hostile, files, tmp_path,
                                                              monkeypatch):
    """SQLite reports 'database or disk is full' part-way (a page limit stands in for the
    disk): one line, exit 2, every committed batch kept; --resume on a disk with space
    finishes the campaign."""
    _, _, config = files
    _config(config, faults=300, batch_size=8)
    db = tmp_path / "run" / "results.db"
    real_connect = ResultStore._connect
    limit = {}

    def small_disk(self):
        conn = real_connect(self)
        if not self._reading:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            limit["pages"] = max(pages, 14)
            conn.execute(f"PRAGMA max_page_count = {limit['pages']}")
        return conn

    monkeypatch.setattr(ResultStore, "_connect", small_disk)
    hostile.run(["campaign", config, "--quiet"], inputs=[config], watch=[tmp_path / "elsewhere"],
                expect="disk is full")
    kept = _rows(db)
    assert kept, "no batch was stored before the disk filled"
    monkeypatch.setattr(ResultStore, "_connect", real_connect)
    hostile.ok(["campaign", config, "--resume", "--quiet"])
    rows = _rows(db)
    assert len(kept) < 300 * 4 and len(rows) == 300 * 4 and set(kept) <= set(rows)


# -- configs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, expect", [
    ({"tolerance": {"atol": float("nan"), "rtol": 1e-5}}, "atol"),
    ({"tolerance": {"atol": 1e-6, "rtol": float("inf")}}, "rtol"),
    ({"faults": float("nan")}, "faults"),
    ({"input_shape": ["abc"]}, "input_shape"),
    ({"input_shape": [[1, -3]]}, "input_shape"),
])
def test_bad_numbers_in_a_config(hostile, files, tmp_path, changes, expect):
    _, _, config = files
    _config(config, **changes)
    hostile.run(["campaign", config, "--quiet"], inputs=[config], outputs=[tmp_path / "run"],
                expect=expect)


def test_yaml_alias_bomb(hostile, tmp_path):
    config = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    config.write_text("\n".join(lines) + "\nmodel: *a8\n")
    hostile.run(["campaign", config], inputs=[config], watch=[tmp_path], expect="expands")


def test_yaml_long_value_is_cut_in_the_message(hostile, files, tmp_path):
    _, _, config = files
    _config(config, seed="x" * 200_000)
    hostile.run(["campaign", config, "--quiet"], inputs=[config], watch=[tmp_path],
                expect="seed")


def test_yaml_not_utf8(hostile, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes(b"model: \xff\xfe m.h5\n")
    hostile.run(["campaign", config], inputs=[config], watch=[tmp_path], expect="UTF-8")


# -- reports on damaged databases --------------------------------------------------------------

@pytest.fixture
def finished(hostile, files, tmp_path):
    _, _, config = files
    hostile.ok(["campaign", config, "--quiet"])
    return tmp_path / "run" / "results.db"


def _sql(db, *statements):
    with sqlite3.connect(db) as conn:
        for s in statements:
            conn.execute(s)


DAMAGE = {
    "unknown_outcome_code": ("UPDATE result_rows SET outcome = 99 WHERE fault_index = 0 AND "
                             "input_index = 0", "unknown outcome"),
    "non_json_meta": ("UPDATE meta SET value = '{broken' WHERE key = 'seed'", "JSON"),
    "non_json_params": ("UPDATE faults SET params = 'oops' WHERE fault_index = 1", "params"),
    "other_columns": ("ALTER TABLE faults RENAME COLUMN pattern TO shape", "column"),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_report_on_a_damaged_database(hostile, finished, tmp_path, kind):
    statement, expect = DAMAGE[kind]
    _sql(finished, statement)
    out, csv = tmp_path / "report", tmp_path / "all.csv"
    hostile.run(["report", finished, "-o", out, "--csv", csv], inputs=[finished],
                outputs=[out, csv], expect=expect)


def test_report_with_other_tables_of_the_right_names(hostile, tmp_path):
    db = tmp_path / "results.db"
    _sql(db, "CREATE TABLE meta (a, b)", "CREATE TABLE faults (c)", "CREATE TABLE results (d)")
    hostile.run(["report", db, "-o", tmp_path / "report"], inputs=[db],
                outputs=[tmp_path / "report"], expect="column")


def test_report_with_a_confidence_that_is_not_a_number(hostile, finished, tmp_path):
    """A meta confidence "high" is not a number: the report falls back to the default
    confidence instead of failing (or refuses with one line)."""
    _sql(finished, "UPDATE meta SET value = '\"high\"' WHERE key = 'confidence'")
    out = tmp_path / "report"
    from classes_tool.cli import main

    code = main(["report", str(finished), "-o", str(out)])
    assert code in (0, 2)
    assert code == 2 or (out / "summary.md").is_file()
