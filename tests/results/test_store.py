"""Result store: round trip, idempotent re-adds, config guard, bad files, survival of kill -9."""

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from classes_tool.errors import UserError
from classes_tool.results.outcomes import OUTCOMES, classify
from classes_tool.results.store import ResultStore, rows_from_classification

ROOT = Path(__file__).resolve().parents[2]
META = {"seed": 7, "model": "m.h5", "margin": 0.01, "targets": ["conv2d", "dense"]}


def batch(b, faults_per_batch=2, inputs=5):
    """Batch b: faults b*k .. b*k+k-1, each on `inputs` inputs, deterministic content."""
    faults, results = [], []
    for fi in range(b * faults_per_batch, (b + 1) * faults_per_batch):
        faults.append({"fault_index": fi, "target": ["conv2d", "dense"][fi % 2],
                       "pattern": "line", "params": {"x": fi % 3, "bit": fi}})
        for ii in range(inputs):
            outcome = ["masked", "tolerable_sdc", "critical_sdc", "due"][(fi + ii) % 4]
            results.append({"fault_index": fi, "input_index": ii, "outcome": outcome,
                            "sdc5": outcome == "due", "rel_error":
                            math.nan if outcome == "due" else float(fi + ii),
                            "golden_top1": ii % 10, "faulty_top1": -1 if outcome == "due" else 3,
                            "label": ii % 10})
    return faults, results


def as_text(rows):
    """Rows as JSON text, so NaN compares equal to NaN."""
    return [json.dumps(r, sort_keys=True) for r in rows]


def test_round_trip_meta_faults_and_ordered_results(tmp_path):
    db = tmp_path / "r.db"
    with ResultStore(db, META) as st:
        f1, r1 = batch(1)
        f0, r0 = batch(0)
        assert st.add(f1, r1[::-1]) == 10  # out of order on purpose
        assert st.add(f0, r0) == 10
    with ResultStore(db) as st:
        assert st.meta == META
        rows = st.results()
        assert st.count() == 20
        assert st.done_pairs() == {(f, i) for f in range(4) for i in range(5)}
        assert [(r["fault_index"], r["input_index"]) for r in rows] == \
            sorted((f, i) for f in range(4) for i in range(5))
        first = rows[0]
        assert first == {"fault_index": 0, "input_index": 0, "target": "conv2d", "pattern": "line",
                         "params": {"x": 0, "bit": 0}, "outcome": "masked", "sdc5": False,
                         "rel_error": 0.0, "golden_top1": 0, "faulty_top1": 3, "label": 0}
        due = [r for r in rows if r["outcome"] == "due"]
        assert due and all(math.isnan(r["rel_error"]) and r["sdc5"] for r in due)
        assert [f["fault_index"] for f in st.faults()] == [0, 1, 2, 3]


def test_pragmas_wal_and_normal_sync(tmp_path):
    with ResultStore(tmp_path / "r.db", META) as st:
        assert st.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st.connection.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_re_adding_stored_pairs_is_ignored(tmp_path):
    with ResultStore(tmp_path / "r.db", META) as st:
        f, r = batch(0)
        assert st.add(f, r) == 10
        before = st.results()
        assert st.add(f, r) == 0
        f1, r1 = batch(1)
        assert st.add(f + f1, r[:3] + r1) == 10  # half old, half new
        assert st.count() == 20
        assert as_text(st.results()[:10]) == as_text(before)


def test_changed_fault_definition_is_a_bug_and_rolls_back_the_batch(tmp_path):
    with ResultStore(tmp_path / "r.db", META) as st:
        f, r = batch(0)
        st.add(f, r)
        f1, r1 = batch(1)
        changed = [dict(f[0], params={"x": 99})]
        with pytest.raises(ValueError, match="not deterministic"):
            st.add(f1 + changed, r1)
        assert st.count() == 10  # nothing of the failed batch stayed
        assert [x["fault_index"] for x in st.faults()] == [0, 1]


def test_unknown_outcome_and_missing_fault_are_rejected(tmp_path):
    with ResultStore(tmp_path / "r.db", META) as st:
        f, r = batch(0)
        with pytest.raises(ValueError, match="unknown outcome"):
            st.add(f, [dict(r[0], outcome="bad")])
        with pytest.raises(ValueError, match="fault 12345, which is not stored"):
            st.add([], [dict(r[0], fault_index=12345)])
        assert st.count() == 0
        # a fault stored by an earlier batch may be named without its row
        st.add(f, r[:1])
        assert st.add([], r[1:2]) == 1
        with pytest.raises(ValueError, match="fault 12345"):  # the whole batch rolls back
            st.add_arrays(f, [r[2]["fault_index"], 12345], [r[2]["input_index"], 0],
                          {k: [r[2][k]] * 2 for k in ("outcome", "sdc5", "rel_error",
                                                       "golden_top1", "faulty_top1")})
        assert st.count() == 2


def test_meta_mismatch_names_the_key(tmp_path):
    db = tmp_path / "r.db"
    ResultStore(db, META).close()
    ResultStore(db, META).close()  # same config: fine
    ResultStore(db, {"seed": 7}).close()  # subset: fine
    with pytest.raises(UserError, match=r"different config: key 'seed' differs.*new output folder"):
        ResultStore(db, dict(META, seed=8))
    with pytest.raises(UserError, match="key 'targets' differs"):
        ResultStore(db, dict(META, targets=["dense"]))
    with pytest.raises(UserError, match="key 'extra' differs"):
        ResultStore(db, dict(META, extra=1))
    # tuples and lists are the same JSON value; 1 and 1.0 compare equal
    ResultStore(db, dict(META, targets=("conv2d", "dense"), seed=7.0)).close()


def test_corrupt_or_foreign_or_missing_files_are_user_errors(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UserError, match="not a readable result database"):
        ResultStore(junk)
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE t(x)")
    con.commit()
    con.close()
    with pytest.raises(UserError, match="not a campaign result database"):
        ResultStore(foreign)
    with pytest.raises(UserError, match="not found"):
        ResultStore(tmp_path / "missing.db", must_exist=True)
    assert not (tmp_path / "missing.db").exists()
    with pytest.raises(UserError, match="folder"):
        ResultStore(tmp_path)


def test_export_csv(tmp_path):
    with ResultStore(tmp_path / "r.db", META) as st:
        st.add(*batch(0))
        out = st.export_csv(tmp_path / "out" / "results.csv")
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10
    assert list(rows[0]) == ["fault_index", "input_index", "target", "pattern", "params",
                             "outcome", "sdc5", "rel_error", "golden_top1", "faulty_top1", "label"]
    assert json.loads(rows[0]["params"]) == {"x": 0, "bit": 0}
    assert rows[3]["outcome"] == "due" and rows[3]["rel_error"] == "nan" and rows[3]["sdc5"] == "1"
    assert [p.name for p in out.parent.iterdir()] == ["results.csv"]  # no temporary left


def test_rows_from_classification_round_trip(tmp_path):
    golden = np.array([[0.8, 0.2], [0.3, 0.7], [0.5, 0.5]])
    faulty = np.array([[0.8, 0.2], [0.9, 0.1], [np.nan, 0.5]])
    c = classify(golden, faulty)
    rows = rows_from_classification([0, 0, 1], [0, 1, 2], c, labels=[0, 1, None])
    with ResultStore(tmp_path / "r.db", META) as st:
        st.add([{"fault_index": 0, "target": "a", "pattern": "p", "params": {}},
                {"fault_index": 1, "target": "a", "pattern": "p", "params": {}}], rows)
        got = st.results()
    assert [r["outcome"] for r in got] == ["masked", "critical_sdc", "due"]
    assert [r["label"] for r in got] == [0, 1, None]


def test_a_label_belongs_to_its_input(tmp_path):
    """Labels are stored once per input: a row without one reads its input's label back, and a
    second, different label for an input is a bug that rolls the batch back."""
    with ResultStore(tmp_path / "r.db", META) as st:
        f, r = batch(0)
        st.add(f, r)
        unlabelled = [dict(x, label=None) for x in batch(1)[1]]
        st.add(batch(1)[0], unlabelled)
        assert [x["label"] for x in st.results() if x["fault_index"] == 2] == [0, 1, 2, 3, 4]
        f2, r2 = batch(2)
        with pytest.raises(ValueError, match="input 3 is given label 7 but has label 3"):
            st.add(f2, [dict(x, label=7) if x["input_index"] == 3 else x for x in r2])
        with pytest.raises(ValueError, match="input 1 is given two labels in one batch"):
            st.add_arrays(f2, [4, 5], [1, 1], {"outcome": np.array([0, 0]),
                                               "sdc5": np.zeros(2, bool),
                                               "rel_error": np.zeros(2),
                                               "golden_top1": np.zeros(2, int),
                                               "faulty_top1": np.zeros(2, int)},
                          np.array([1, 2]))
        assert st.count() == 20 and len(st.faults()) == 4  # the failed batches left nothing
        assert st.connection.execute("SELECT COUNT(*) FROM inputs").fetchone()[0] == 5


@pytest.mark.parametrize("change, message", [
    ({"label": 2.7}, "a label must be an integer, got 2.7"),
    ({"golden_top1": 1.5}, "golden_top1 must be an integer, got 1.5"),
    ({"faulty_top1": 0.25}, "faulty_top1 must be an integer"),
    ({"label": float("inf")}, "a label must be an integer, got inf"),
    ({"golden_top1": "three"}, "golden_top1 must be an integer, got 'three'"),
])
def test_integer_columns_are_not_cut(tmp_path, change, message):
    """2.7 was stored as 2; integral floats (2.0) stay fine, as NumPy labels often are."""
    with ResultStore(tmp_path / "r.db", META) as st:
        f, r = batch(0)
        with pytest.raises(ValueError, match=message):
            st.add(f, [dict(r[0], **change), *r[1:]])
        columns = {"outcome": np.array([0, 0]), "sdc5": np.zeros(2, bool),
                   "rel_error": np.zeros(2), "golden_top1": np.zeros(2, int),
                   "faulty_top1": np.zeros(2, int)}
        key = next(iter(change))
        if key == "label":
            with pytest.raises(ValueError, match="a label must be an integer, got "):
                st.add_arrays(f, [0, 1], [0, 1], columns, np.array([1.0, change[key]]))
            with pytest.raises(ValueError, match="a label must be an integer"):
                st.add_labels([1, 2.7])
        else:
            with pytest.raises(ValueError, match=f"{key} must be integers, got "
                                                 f"{change[key]!r}"):
                st.add_arrays(f, [0, 1], [0, 1],
                              {**columns, key: np.array([1, change[key]], dtype=object)})
            with pytest.raises(ValueError, match=f"{key} must be integers, got None"):
                st.add_arrays(f, [0, 1], [0, 1], {**columns, key: [1, None]})
        assert st.count() == 0
        st.add(f, [dict(x, label=float(x["label"])) for x in r])  # 3.0 is 3
        st.add_arrays(f, np.array([0.0, 1.0]), [5, 6], {**columns, "golden_top1": [3.0, 4.0]})
        assert st.count() == len(r) + 2
        assert {x["label"] for x in st.results() if x["input_index"] < 5} == {x["label"] for x in r}


FLAT_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE faults (fault_index INTEGER PRIMARY KEY, target TEXT NOT NULL, pattern TEXT NOT NULL,
                     params TEXT NOT NULL);
CREATE TABLE results (fault_index INTEGER NOT NULL REFERENCES faults(fault_index),
                      input_index INTEGER NOT NULL, outcome TEXT NOT NULL, sdc5 INTEGER NOT NULL,
                      rel_error REAL, golden_top1 INTEGER, faulty_top1 INTEGER, label INTEGER,
                      PRIMARY KEY (fault_index, input_index));
"""


def test_a_file_with_the_earlier_flat_results_table_is_read_then_converted(tmp_path):
    """A database written before rows were split (one flat `results` table, outcome names in
    every row) reads as it is, and its first write converts it: resuming it gives the rows of
    a database written in the current layout."""
    db = tmp_path / "flat.db"
    con = sqlite3.connect(db)
    con.executescript(FLAT_SCHEMA)
    f0, r0 = batch(0)
    con.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in META.items()])
    con.executemany("INSERT INTO faults VALUES (?, ?, ?, ?)",
                    [(f["fault_index"], f["target"], f["pattern"], json.dumps(f["params"]))
                     for f in f0])
    con.executemany("INSERT INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(x["fault_index"], x["input_index"], x["outcome"], int(x["sdc5"]),
                      None if math.isnan(x["rel_error"]) else x["rel_error"], x["golden_top1"],
                      x["faulty_top1"], x["label"]) for x in r0])
    con.commit()
    con.close()
    with ResultStore(tmp_path / "new.db", META) as st:
        st.add(f0, r0)
        st.add(*batch(1))
        want = as_text(st.results())
    with ResultStore(db, must_exist=True) as st:  # a reader leaves the file as it is
        assert as_text(st.results()) == want[:10] and st.count() == 10
        assert st.done_pairs() == {(f, i) for f in range(2) for i in range(5)}
    with ResultStore(db, META) as st:
        assert st.add(*batch(1)) == 10
        assert as_text(st.results()) == want
    con = sqlite3.connect(db)
    kinds = dict(con.execute("SELECT name, type FROM sqlite_master"))
    con.close()
    assert kinds["results"] == "view" and kinds["result_rows"] == "table"
    assert "flat_results" not in kinds


def test_a_batch_split_over_several_statements_and_outcome_codes(tmp_path):
    """Rows go in several per statement; a batch larger than one statement, with a last
    partial statement, stores every row once; add_arrays takes outcome names or codes."""
    faults, results = batch(0, faults_per_batch=13, inputs=7)  # 91 rows
    with ResultStore(tmp_path / "a.db", META) as st:
        st.add(faults, results)
        want = as_text(st.results())
    with ResultStore(tmp_path / "b.db", META) as st:
        st._rows_per_statement = 10  # 9 statements of 10 rows, one of 1
        st.add(faults, results)
        assert as_text(st.results()) == want
    columns = {k: np.array([r[k] for r in results]) for k in
               ("sdc5", "rel_error", "golden_top1", "faulty_top1")}
    codes = np.array([OUTCOMES.index(r["outcome"]) for r in results], np.int32)
    with ResultStore(tmp_path / "c.db", META) as st:
        st._rows_per_statement = 4
        st.add_arrays(faults, [r["fault_index"] for r in results],
                      [r["input_index"] for r in results], {**columns, "outcome": codes},
                      [r["label"] for r in results])
        assert as_text(st.results()) == want
        with pytest.raises(ValueError, match="outcome codes"):
            st.add_arrays(faults, [0], [0], {**{k: v[:1] for k, v in columns.items()},
                                             "outcome": np.array([4])})

WRITER = textwrap.dedent("""
    import os, signal, sys, types
    # Load only the store: a stub parent package skips classes_tool/__init__ (which pulls in
    # TensorFlow); the store itself needs nothing of it.
    pkg = types.ModuleType("classes_tool")
    pkg.__path__ = [sys.argv[1] + "/classes_tool"]
    sys.modules["classes_tool"] = pkg
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[3])
    from test_store import batch, META
    from classes_tool.results.store import ResultStore
    stop, kill_at = int(sys.argv[4]), int(sys.argv[5])
    with ResultStore(sys.argv[2], META) as st:
        inserts = 0
        def trace(sql):
            # kill -9 ourselves inside batch `kill_at`: its fault and result rows all written,
            # its COMMIT started but not done (the trace runs as a statement begins)
            global inserts
            if sql.startswith("INSERT OR IGNORE INTO result_rows"):
                inserts += 1
            elif sql == "COMMIT" and inserts == kill_at + 1:
                os.kill(os.getpid(), signal.SIGKILL)
        assert len(batch(0, 4, 50)[1]) <= 512  # one results statement per batch
        if kill_at >= 0:
            st.connection.set_trace_callback(trace)
        for b in range(stop):
            st.add(*batch(b, 4, 50))
            print(b, flush=True)
    print("finished", flush=True)
""")


def run_writer(db, stop, kill_at=-1):
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ROOT), str(db), str(Path(__file__).parent), str(stop),
         str(kill_at)], stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=""))


def whole_batches(db, per_batch=4, inputs=50):
    """Number of batches stored; asserts that only whole batches, from 0 on, are there."""
    with ResultStore(db) as st:
        pairs = st.done_pairs()
    n = len({f for f, _ in pairs}) // per_batch
    assert pairs == {(f, i) for f in range(per_batch * n) for i in range(inputs)}
    return n


def resume_and_compare(tmp_path, db, stop):
    """Resume `db` up to batch `stop`; it must equal an uninterrupted store row for row."""
    with ResultStore(db, META) as st:
        done = st.done_pairs()
        for b in range(stop):
            f, r = batch(b, 4, 50)
            st.add(f, [x for x in r if (x["fault_index"], x["input_index"]) not in done])
        resumed = st.results()
    with ResultStore(tmp_path / "clean.db", META) as st:
        for b in range(stop):
            st.add(*batch(b, 4, 50))
        clean = st.results()
    assert len(clean) == stop * 200
    assert as_text(resumed) == as_text(clean)


@pytest.mark.slow
def test_kill_9_inside_a_transaction_loses_exactly_that_batch(tmp_path):
    db = tmp_path / "killed.db"
    proc = run_writer(db, stop=100, kill_at=7)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert out.split() == [str(b) for b in range(7)]  # batches 0..6 reported committed
    assert whole_batches(db) == 7  # batch 7 was written, uncommitted: none of it stayed
    resume_and_compare(tmp_path, db, stop=12)


@pytest.mark.slow
def test_kill_9_from_outside_keeps_whole_batches_and_resume_equals_uninterrupted(tmp_path):
    db = tmp_path / "killed.db"
    total = 100_000  # far more batches than get written before the kill
    proc = run_writer(db, total)
    committed = -1
    for line in proc.stdout:
        committed = int(line)
        if committed >= 10:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert committed >= 10, "writer died before being killed"
    n = whole_batches(db)
    assert committed < n < total  # every batch reported committed is there, and no more than run
    resume_and_compare(tmp_path, db, stop=n + 3)


def test_a_reader_opens_read_only_and_changes_nothing(tmp_path):
    """The report reads a file it may not write (a read-only file, an earlier-layout file in
    rollback-journal mode) without touching it."""
    db = tmp_path / "flat.db"
    con = sqlite3.connect(db)
    con.executescript(FLAT_SCHEMA)
    con.commit()
    con.close()
    before = db.read_bytes()
    db.chmod(0o444)
    try:
        with ResultStore(db, must_exist=True) as st:
            assert st.count() == 0 and st.outcome_counts() == {}
        assert db.read_bytes() == before  # still in its own journal mode, untouched
    finally:
        db.chmod(0o644)


def test_a_second_writer_is_refused_while_the_first_holds_the_file(tmp_path):
    db = tmp_path / "r.db"
    with ResultStore(db, META) as st:
        st.add(*batch(0))
        with pytest.raises(UserError, match="being written by another campaign"):
            ResultStore(db, META)
        with ResultStore(db, must_exist=True) as reader:  # readers are welcome meanwhile
            assert reader.count() == 10
    with ResultStore(db, META) as st:  # the first one closed: free again
        assert st.count() == 10
