"""The campaign result store: one SQLite file, one row per (fault, input), committed per batch.

Why SQLite: results outlive the code and the process. In WAL mode every committed batch
survives a kill -9 of the campaign, and an interrupted batch vanishes as a whole (one transaction
per `ResultStore.add`). ``synchronous=NORMAL``, not FULL: FULL syncs the disk on every commit
(~3 ms, as much as the whole network costs per batch on a small model) and only adds protection
against a power cut or OS crash, where NORMAL may lose the last few batches but never corrupts
the file. Campaigns are deterministic, so `--resume` recomputes those batches identically.
Re-adding a stored (fault, input) pair is ignored, so a resumed campaign may recompute a batch
that was partly done without duplicates.

Schema::

    meta(key TEXT PRIMARY KEY, value TEXT)              -- value is JSON
    faults(fault_index INTEGER PRIMARY KEY, target TEXT, pattern TEXT, params TEXT)  -- params JSON
    results(fault_index, input_index, outcome, sdc5, rel_error, golden_top1, faulty_top1, label,
            PRIMARY KEY(fault_index, input_index))

``rel_error`` NaN (DUE rows) is stored as NULL, SQLite's only way to hold it, and read back as NaN.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.campaign.outcomes import OUTCOMES
from classes_tool.errors import UserError
from classes_tool.files import atomic_path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS faults (
    fault_index INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    pattern TEXT NOT NULL,
    params TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    fault_index INTEGER NOT NULL REFERENCES faults(fault_index),
    input_index INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    sdc5 INTEGER NOT NULL,
    rel_error REAL,
    golden_top1 INTEGER,
    faulty_top1 INTEGER,
    label INTEGER,
    PRIMARY KEY (fault_index, input_index)
);
"""

#: Columns of a stored result row, in the order `ResultStore._insert` binds them.
_RESULT_INSERT_COLUMNS: tuple[str, ...] = (
    "fault_index", "input_index", "outcome", "sdc5", "rel_error", "golden_top1", "faulty_top1",
    "label",
)

#: Column order of `ResultStore.results` records and of the CSV export.
RESULT_COLUMNS: tuple[str, ...] = (
    "fault_index", "input_index", "target", "pattern", "params", "outcome", "sdc5", "rel_error",
    "golden_top1", "faulty_top1", "label",
)


def _json_default(obj: Any) -> Any:
    """Let NumPy scalars/arrays and paths into JSON without importing NumPy here."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def to_json(value: Any) -> str:
    """Canonical JSON (sorted keys) so equal values always give equal text."""
    return json.dumps(value, sort_keys=True, default=_json_default, allow_nan=True)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class ResultStore:
    """Durable campaign results in one SQLite file (see the module docstring).

    `meta` describes the campaign (model, data, seed, error model, ...). A new database stores it;
    an existing one must agree on every key given, otherwise resuming would silently mix two
    different campaigns. With ``must_exist=True`` a missing file is a user error instead of being
    created (what a reader such as the report wants).
    """

    def __init__(self, path: str | os.PathLike, meta: Mapping[str, Any] | None = None, *,
                 must_exist: bool = False):
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"{self.path} is a folder, not a result database")
        existed = self.path.exists() and self.path.stat().st_size > 0
        if must_exist and not existed:
            raise UserError(f"result database not found: {self.path}")
        if not existed:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # check_same_thread=False: a campaign hands its writes to one writer thread (one at a
        # time, never concurrently with the owner), so that SQLite works while TF computes
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._insert_statements: dict[int, str] = {}
        variables = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        self._rows_per_statement = max(1, min(512, variables // len(_RESULT_INSERT_COLUMNS)))
        try:
            self._setup(existed)
            if meta:
                self._merge_meta(dict(meta))
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise UserError(f"{self.path} is not a readable result database ({exc})") from None
        except BaseException:
            self._conn.close()
            raise

    def _setup(self, existed: bool) -> None:
        c = self._conn
        if existed:
            tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not {"meta", "faults", "results"} <= tables:
                raise UserError(f"{self.path} is an SQLite file but not a campaign result database "
                                f"(tables: {', '.join(sorted(tables)) or 'none'})")
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("PRAGMA foreign_keys=ON")
        c.execute("PRAGMA busy_timeout=10000")
        if not existed:
            c.executescript(_SCHEMA)

    def _merge_meta(self, meta: dict[str, Any]) -> None:
        stored = self.meta
        given = {k: json.loads(to_json(v)) for k, v in meta.items()}
        if stored:
            for key in sorted(given):
                if key not in stored or stored[key] != given[key]:
                    raise UserError(f"{self.path} was created with a different config: key "
                                    f"{key!r} differs (stored {stored.get(key, '<absent>')!r}, "
                                    f"given {given[key]!r}); use a new output folder")
            return
        with self._transaction():
            self._conn.executemany("INSERT INTO meta(key, value) VALUES (?, ?)",
                                   [(k, to_json(v)) for k, v in given.items()])

    def _transaction(self):
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error (used as a context manager)."""
        conn = self._conn

        class _Tx:
            def __enter__(self_inner):
                conn.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, exc_type, exc, tb):
                if exc_type is None:
                    conn.execute("COMMIT")
                else:
                    conn.execute("ROLLBACK")
                return False

        return _Tx()

    # -- writing ---------------------------------------------------------------------------------

    def add(self, faults: Iterable[Mapping[str, Any]], results: Iterable[Mapping[str, Any]]) -> int:
        """Store one batch in one committed transaction; returns the number of new result rows.

        `faults`: dicts with fault_index, target, pattern, params (any JSON-able dict).
        `results`: dicts with fault_index, input_index, outcome, sdc5, rel_error, golden_top1,
        faulty_top1 and optionally label. Pairs already stored are skipped. A fault index that is
        stored with different target/pattern/params is a bug (non-deterministic fault plan) and
        raises ValueError; the whole batch is then rolled back.
        """
        flat: list[Any] = []
        for r in results:
            outcome = str(r["outcome"])
            if outcome not in OUTCOMES:
                raise ValueError(f"unknown outcome {outcome!r}; expected one of {OUTCOMES}")
            flat += (int(r["fault_index"]), int(r["input_index"]), outcome, int(bool(r["sdc5"])),
                     _opt_float(r.get("rel_error")), _opt_int(r.get("golden_top1")),
                     _opt_int(r.get("faulty_top1")), _opt_int(r.get("label")))
        return self._insert(faults, flat)

    def add_arrays(self, faults: Iterable[Mapping[str, Any]], fault_indices, input_indices,
                   classified: Mapping[str, Any], labels=None) -> int:
        """`add` for column arrays (what the engines produce): the same rows, built column by
        column without a dict or tuple per row, because a campaign stores hundreds of thousands
        of them. ``outcome`` may hold the class names or their integer indices into
        `OUTCOMES`."""
        outcome = np.asarray(classified["outcome"])
        if outcome.dtype.kind in "iu":
            if outcome.size and (outcome.min() < 0 or outcome.max() >= len(OUTCOMES)):
                raise ValueError(f"outcome codes must lie in [0, {len(OUTCOMES)})")
            names = np.asarray(OUTCOMES, object)[outcome]
        else:
            names = outcome.astype(str)
            unknown = sorted(set(names[~np.isin(names, OUTCOMES)].tolist()))
            if unknown:
                raise ValueError(f"unknown outcome {unknown[0]!r}; expected one of {OUTCOMES}")
        n = len(names)
        rel = np.asarray(classified["rel_error"], float)
        rel_values = rel.astype(object)
        rel_values[np.isnan(rel)] = None  # NaN -> NULL
        if labels is None:
            label_values: list[Any] = [None] * n
        elif isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
            label_values = labels.tolist()
        else:
            label_values = [None if v is None else int(v) for v in
                            np.asarray(labels, object).tolist()]
        columns = [np.asarray(fault_indices, np.int64).tolist(),
                   np.asarray(input_indices, np.int64).tolist(), names.tolist(),
                   np.asarray(classified["sdc5"], bool).astype(int).tolist(),
                   rel_values.tolist(), np.asarray(classified["golden_top1"], np.int64).tolist(),
                   np.asarray(classified["faulty_top1"], np.int64).tolist(), label_values]
        if any(len(c) != n for c in columns):
            raise ValueError("fault_indices, input_indices, labels and classified arrays differ "
                             "in length")
        flat: list[Any] = [None] * (n * len(columns))
        for k, column in enumerate(columns):  # row-major: row i is flat[8i : 8i + 8]
            flat[k::len(columns)] = column
        return self._insert(faults, flat)

    def _insert(self, faults: Iterable[Mapping[str, Any]], flat: list[Any]) -> int:
        """Store fault rows and result rows (`flat`: the values of the result rows one after
        another, in `_RESULT_INSERT_COLUMNS` order) in one transaction."""
        fault_rows = [(int(f["fault_index"]), str(f["target"]), str(f["pattern"]),
                       to_json(f.get("params") or {})) for f in faults]
        conn = self._conn
        with self._transaction():
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO faults(fault_index, target, pattern, params) "
                             "VALUES (?, ?, ?, ?)", fault_rows)
            if conn.total_changes - before < len(fault_rows):  # some were stored: same plan?
                stored = {}
                indices = [row[0] for row in fault_rows]
                for k in range(0, len(indices), 500):  # one query per 500 (SQLite's limit)
                    chunk = indices[k:k + 500]
                    stored.update((r[0], tuple(r)) for r in conn.execute(
                        "SELECT fault_index, target, pattern, params FROM faults WHERE "
                        f"fault_index IN ({','.join('?' * len(chunk))})", chunk))
                for row in fault_rows:
                    old = stored[row[0]]
                    if old != row:
                        raise ValueError(f"fault {row[0]} is stored as {old[1:]} but was given as "
                                         f"{row[1:]}: the fault plan is not deterministic")
            before = conn.total_changes
            # many rows per statement: half the cost per row of one `executemany` step each
            width = len(_RESULT_INSERT_COLUMNS)
            step = self._rows_per_statement * width
            for k in range(0, len(flat), step):
                part = flat[k:k + step]
                conn.execute(self._insert_sql(len(part) // width), part)
            return conn.total_changes - before

    def _insert_sql(self, rows: int) -> str:
        sql = self._insert_statements.get(rows)
        if sql is None:
            one = "(" + ", ".join("?" * len(_RESULT_INSERT_COLUMNS)) + ")"
            sql = (f"INSERT OR IGNORE INTO results({', '.join(_RESULT_INSERT_COLUMNS)}) "
                   f"VALUES {', '.join([one] * rows)}")
            self._insert_statements[rows] = sql
        return sql

    # -- reading ---------------------------------------------------------------------------------

    @property
    def meta(self) -> dict[str, Any]:
        """The campaign description stored at creation (JSON values decoded)."""
        return {k: json.loads(v) for k, v in self._conn.execute("SELECT key, value FROM meta")}

    def done_pairs(self) -> set[tuple[int, int]]:
        """(fault_index, input_index) pairs already stored: what a resumed run skips."""
        return set(self._conn.execute("SELECT fault_index, input_index FROM results"))

    def done_array(self) -> np.ndarray:
        """The stored (fault_index, input_index) pairs as an (n, 2) integer array."""
        rows = self._conn.execute("SELECT fault_index, input_index FROM results").fetchall()
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    def count(self) -> int:
        """Number of stored result rows."""
        return self._conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def faults(self) -> list[dict[str, Any]]:
        """Stored faults ordered by fault_index, params decoded."""
        return [{"fault_index": i, "target": t, "pattern": p, "params": json.loads(js)}
                for i, t, p, js in self._conn.execute(
                    "SELECT fault_index, target, pattern, params FROM faults ORDER BY fault_index")]

    def _iter_results(self):
        query = ("SELECT r.fault_index, r.input_index, f.target, f.pattern, f.params, r.outcome, "
                 "r.sdc5, r.rel_error, r.golden_top1, r.faulty_top1, r.label FROM results r "
                 "JOIN faults f ON f.fault_index = r.fault_index "
                 "ORDER BY r.fault_index, r.input_index")
        for row in self._conn.execute(query):
            rec = dict(zip(RESULT_COLUMNS, row, strict=True))
            rec["params"] = json.loads(rec["params"])
            rec["sdc5"] = bool(rec["sdc5"])
            rec["rel_error"] = math.nan if rec["rel_error"] is None else float(rec["rel_error"])
            yield rec

    def results(self) -> list[dict[str, Any]]:
        """All results ordered by (fault_index, input_index), joined with their fault.

        Keys are `RESULT_COLUMNS`; params is a dict, sdc5 a bool, rel_error a float (NaN for DUE).
        """
        return list(self._iter_results())

    def export_csv(self, path: str | os.PathLike) -> Path:
        """Write all results as CSV (params as a JSON column), atomically; returns the path."""
        path = Path(path)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(RESULT_COLUMNS)
            for rec in self._iter_results():
                rec["params"] = to_json(rec["params"])
                rec["sdc5"] = int(rec["sdc5"])
                rec["label"] = "" if rec["label"] is None else rec["label"]
                w.writerow([rec[k] for k in RESULT_COLUMNS])
        return path

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for read-only aggregate queries (e.g. the report)."""
        return self._conn

    def close(self) -> None:
        """Close the database (all batches are already committed)."""
        self._conn.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def rows_from_classification(fault_indices: Iterable[int], input_indices: Iterable[int],
                             classified: Mapping[str, Any],
                             labels: Iterable[int | None] | None = None) -> list[dict[str, Any]]:
    """Turn the arrays of `outcomes.classify` (plus the row's fault/input index) into result dicts."""
    fi = list(fault_indices)
    ii = list(input_indices)
    lab = [None] * len(fi) if labels is None else list(labels)
    cols = [classified[k] for k in ("outcome", "sdc5", "rel_error", "golden_top1", "faulty_top1")]
    if not all(len(c) == len(fi) for c in (ii, lab, *cols)):
        raise ValueError("fault_indices, input_indices, labels and classified arrays differ in length")
    return [{"fault_index": int(f), "input_index": int(i), "outcome": str(o), "sdc5": bool(s),
             "rel_error": float(e), "golden_top1": int(g), "faulty_top1": int(t),
             "label": None if lb is None else int(lb)}
            for f, i, lb, o, s, e, g, t in zip(fi, ii, lab, *cols, strict=True)]
