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
    outcome_names(code INTEGER PRIMARY KEY, name TEXT)  -- the outcome classes, by code
    inputs(input_index INTEGER PRIMARY KEY, label INTEGER)
    result_rows(fault_index, input_index, outcome, sdc5, rel_error, golden_top1, faulty_top1,
                PRIMARY KEY(fault_index, input_index)) WITHOUT ROWID    -- outcome: a code
    results  -- VIEW: result_rows with the outcome's name and the input's label, what to query

Why the split: a campaign stores hundreds of thousands of rows while TensorFlow computes beside
the writer, so each row is kept narrow: the outcome as a small code and the label (a property of
the input) once per input, in a table clustered on its key (WITHOUT ROWID: no second b-tree for
the primary key). A row takes 28 bytes instead of 48 and costs about a fifth less to store.
Readers see one flat `results` view with the outcome's name, as before the split; a file written
with the earlier flat `results` table is read as it is and converted on its first write.

``rel_error`` NaN (DUE rows) is stored as NULL, SQLite's only way to hold it, and read back as NaN.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.errors import UserError
from classes_tool.files import atomic_path
from classes_tool.results.outcomes import OUTCOMES

#: The result store of every campaign target, in its output folder.
RESULTS_FILE = "results.db"


@dataclass(frozen=True)
class CampaignResult:
    """What a campaign wrote: its store, every other file by name, and a summary to print."""

    db: Path
    files: dict[str, Path] = field(default_factory=dict)
    summary: str = ""

#: The tables of a result database, one statement each (run inside one transaction).
_SCHEMA: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS faults (
    fault_index INTEGER PRIMARY KEY,
    target TEXT NOT NULL,
    pattern TEXT NOT NULL,
    params TEXT NOT NULL
)""",
    "CREATE TABLE IF NOT EXISTS outcome_names (code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS inputs (input_index INTEGER PRIMARY KEY, label INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS result_rows (
    fault_index INTEGER NOT NULL REFERENCES faults(fault_index),
    input_index INTEGER NOT NULL,
    outcome INTEGER NOT NULL,
    sdc5 INTEGER NOT NULL,
    rel_error REAL,
    golden_top1 INTEGER,
    faulty_top1 INTEGER,
    PRIMARY KEY (fault_index, input_index)
) WITHOUT ROWID""",
    """CREATE VIEW IF NOT EXISTS results AS
SELECT r.fault_index, r.input_index, o.name AS outcome, r.sdc5, r.rel_error, r.golden_top1,
       r.faulty_top1, i.label
FROM result_rows r JOIN outcome_names o ON o.code = r.outcome
LEFT JOIN inputs i ON i.input_index = r.input_index""",
)

#: The columns a reader or writer of an existing database relies on, per table or view.
_REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "meta": ("key", "value"),
    "faults": ("fault_index", "target", "pattern", "params"),
    "results": ("fault_index", "input_index", "outcome", "sdc5", "rel_error", "golden_top1",
                "faulty_top1", "label"),
    "result_rows": ("fault_index", "input_index", "outcome", "sdc5", "rel_error", "golden_top1",
                    "faulty_top1"),
    "outcome_names": ("code", "name"),
    "inputs": ("input_index", "label"),
}

#: A database's own file and those SQLite keeps beside it (WAL, shared memory, rollback journal).
DATABASE_FILE_SUFFIXES: tuple[str, ...] = ("", "-wal", "-shm", "-journal")

#: Columns of a stored result row, in the order `ResultStore._insert` binds them.
_RESULT_INSERT_COLUMNS: tuple[str, ...] = (
    "fault_index", "input_index", "outcome", "sdc5", "rel_error", "golden_top1", "faulty_top1",
)

#: Column order of `ResultStore.results` records and of the CSV export.
RESULT_COLUMNS: tuple[str, ...] = (
    "fault_index", "input_index", "target", "pattern", "params", "outcome", "sdc5", "rel_error",
    "golden_top1", "faulty_top1", "label",
)

# outcome names -> their index in OUTCOMES, by binary search over the sorted names
_SORTED_OUTCOMES = np.array(sorted(OUTCOMES))
_SORTED_OUTCOME_INDEX = np.array([OUTCOMES.index(name) for name in _SORTED_OUTCOMES])


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


def _opt_int(value: Any, what: str) -> int | None:
    """An integer column's value (None stays None); 2.0 is 2, but 2.7 is a ValueError rather
    than being cut to 2."""
    if value is None:
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):  # "x", inf, nan
        number = None
    if number is None or number != value:
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return number


def _int_column(values, what: str) -> np.ndarray:
    """An integer column given as an array: int64, and non-integral numbers a ValueError (the
    engines give integer arrays, which pass unchecked)."""
    array = np.asarray(values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    try:
        with np.errstate(invalid="ignore"):
            as_int = array.astype(np.int64)
        wrong = as_int != array
    except (TypeError, ValueError, OverflowError):  # None, text, numbers beyond int64
        wrong = np.array([_not_int(v) for v in array.ravel().tolist()]).reshape(array.shape)
    if wrong.any():
        raise ValueError(f"{what} must be integers, got {np.asarray(array[wrong][0]).item()!r}")
    return as_int


def _not_int(value: Any) -> bool:
    try:
        return _opt_int(value, "") is None
    except ValueError:
        return True


def _opt_float(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def _outcome_indices(outcome: np.ndarray) -> np.ndarray:
    """Outcomes given as class names or as indices into `OUTCOMES`, as checked indices."""
    if outcome.dtype.kind in "iu":
        if outcome.size and (outcome.min() < 0 or outcome.max() >= len(OUTCOMES)):
            raise ValueError(f"outcome codes must lie in [0, {len(OUTCOMES)})")
        return outcome
    names = outcome.astype(str)
    unknown = [name for name in names.tolist() if name not in OUTCOMES]
    if unknown:
        raise ValueError(f"unknown outcome {unknown[0]!r}; expected one of {OUTCOMES}")
    return _SORTED_OUTCOME_INDEX[np.searchsorted(_SORTED_OUTCOMES, names)]


#: Meta key of the content hashes of the files a campaign reads ({role: {"path", "sha256"}}):
#: a resume against a changed model or data file would mix the rows of two campaigns.
CONTENT_HASHES = "file_sha256"


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content (read in 1 MiB blocks)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_hashes(files: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """{role: {"path": path, "sha256": hash}} of the files given ({role: path or None};
    None and paths that are not files are left out)."""
    return {role: {"path": str(path), "sha256": file_sha256(path)}
            for role, path in files.items() if path is not None and Path(path).is_file()}


def _check_hashes(db: Path, stored: Any, given: dict[str, Any]) -> None:
    """A resume reads the files the stored rows were computed from, byte for byte."""
    if not isinstance(stored, dict):
        return
    for role in sorted(set(stored) | set(given)):
        old, new = stored.get(role), given.get(role)
        old_hash = old.get("sha256") if isinstance(old, dict) else None
        new_hash = new.get("sha256") if isinstance(new, dict) else None
        if old_hash != new_hash:
            path = (new or old or {}).get("path", role)
            raise UserError(f"the {role} file {path} changed since {db} stored its results "
                            "(its content hash differs): resuming would mix rows of two "
                            "campaigns; use a new output folder")


class _Probed(Exception):
    """Rolls back the write that `ResultStore._claim` makes to see that it can write."""


#: Campaign keys stored only when they differ from their default (so that stores made before
#: they existed still resume); a resume whose config lacks one that is stored is refused.
OPTIONAL_IDENTITY_KEYS = ("sizing", "pilot_faults", "max_faults", "input_set", "out_of_range",
                          "shared", "pilot_faults_per_target", "max_faults_per_target")


class ResultStore:
    """Durable campaign results in one SQLite file (see the module docstring).

    `meta` describes the campaign (model, data, seed, error model, ...). A new database stores it;
    an existing one must agree on every key given, otherwise resuming would silently mix two
    different campaigns. With ``must_exist=True`` a missing file is a user error instead of being
    created (what a reader such as the report wants).
    """

    def __init__(self, path: str | os.PathLike, meta: Mapping[str, Any] | None = None, *,
                 must_exist: bool = False, new: bool = False, discard_empty: bool = False):
        """`new`: the database must not hold a campaign yet (checked under the writer's lock,
        so two runs started together cannot both take it as new). `discard_empty`: a database
        this store created is deleted again when the store closes on an error without a
        stored result row (while the lock is still held: never another process's file)."""
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"{self.path} is a folder, not a result database")
        if must_exist and not (self.path.is_file() and self.path.stat().st_size > 0):
            raise UserError(f"result database not found: {self.path}")
        # a reader (must_exist, no meta) opens the file read-only and changes nothing in it
        self._reading = must_exist and meta is None
        self._conn: Any = None
        self._lock: Any = None
        self._flat = False
        self._insert_statements: dict[int, str] = {}
        #: this store made the database (it was absent or empty when the lock was taken)
        self.created = False
        self._discard_empty = discard_empty
        try:
            if not self._reading:
                # the lock first: whether the database is new is decided only by its holder
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._take_lock()
            existed = self.path.is_file() and self.path.stat().st_size > 0
            if new and existed:
                raise UserError(f"{self.path} already exists: continue it with --resume, or "
                                "choose another output folder (--out)")
            self.created = not existed and not self._reading
            self._conn = self._connect()
            variables = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._rows_per_statement = max(1, min(512, variables // len(_RESULT_INSERT_COLUMNS)))
            self._setup(existed)
            if not self._reading:
                self._probe_writable()
            if meta:
                self._merge_meta(dict(meta))
        except sqlite3.OperationalError as exc:
            self._abandon(failed=True)
            if "full" in str(exc) or "I/O" in str(exc):
                raise  # the disk, not the file: the caller's error map says so
            raise UserError(f"{self.path} is not a readable result database ({exc})") from None
        except sqlite3.DatabaseError as exc:
            self._abandon(failed=True)
            raise UserError(f"{self.path} is not a readable result database ({exc})") from None
        except BaseException:
            self._abandon(failed=True)
            raise

    def _take_lock(self) -> None:
        """Become the only writer of the file (creating it empty if absent): two campaigns
        adding to one database would each count the other's rows as their own."""
        try:
            import fcntl
        except ImportError:  # not Unix: no lock, as SQLite's own locking allows
            return
        fd = os.open(self.path, os.O_RDONLY | os.O_CREAT, 0o644)
        self._lock = os.fdopen(fd, "rb")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f"{self.path} is being written by another campaign: wait for it to "
                            "finish, or choose another output folder") from None

    def _probe_writable(self) -> None:
        """A writer makes sure that it can write the file: SQLite opens a file it may not write
        read-only, so a row is written and rolled back."""
        try:
            with self._transaction():
                self._conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('', 'null')")
                raise _Probed
        except _Probed:
            pass
        except sqlite3.OperationalError as exc:
            if "full" in str(exc):
                raise
            raise UserError(f"{self.path} cannot be written ({exc}); a finished campaign's "
                            "results can still be reported") from None

    def _abandon(self, failed: bool) -> None:
        """Close; a database this store created and that holds no result row is deleted first
        when `failed` and the store was asked to (`discard_empty`), so that a failed start does
        not make the next run ask for --resume. The lock is released last."""
        if failed and self._discard_empty and self.created and self._lock is not None:
            try:
                empty = self._conn is None or self._conn.execute(
                    f"SELECT COUNT(*) FROM {self._rows}").fetchone()[0] == 0
            except sqlite3.Error:
                empty = True  # the tables were never made
            if empty:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                for suffix in DATABASE_FILE_SUFFIXES:
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.close()

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: a campaign hands its writes to one writer thread (one at a
        # time, never concurrently with the owner), so that SQLite works while TF computes
        if not self._reading:
            return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        uri = self.path.resolve().as_uri()
        try:
            conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            return conn
        except sqlite3.OperationalError:  # WAL file in a folder it cannot write: as it is
            return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None,
                                   check_same_thread=False)

    def _setup(self, existed: bool) -> None:
        c = self._conn
        kinds: dict[str, str] = {}
        if existed:
            kinds = dict(c.execute("SELECT name, type FROM sqlite_master "
                                   "WHERE type IN ('table', 'view')"))
            if not {"meta", "faults", "results"} <= set(kinds):
                raise UserError(f"{self.path} is an SQLite file but not a campaign result database "
                                f"(tables: {', '.join(sorted(kinds)) or 'none'})")
            self._check_columns(kinds)
        if not self._reading:
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            # the result rows' reference to their fault is checked once per batch by
            # `_check_faults_known`: SQLite's own check costs a b-tree lookup per row, a
            # quarter of what storing a row costs
            c.execute("PRAGMA foreign_keys=OFF")
        c.execute("PRAGMA busy_timeout=10000")
        # a file of an earlier version keeps its flat `results` table until its first write
        self._flat = kinds.get("results") == "table"
        if not existed:
            with self._transaction():
                self._create_tables()
        self._read_codes_and_labels()

    def _check_columns(self, kinds: dict[str, str]) -> None:
        """Tables of the right names must also have the columns this store reads."""
        for table, columns in _REQUIRED_COLUMNS.items():
            if table not in kinds:
                continue
            have = {row[1] for row in self._conn.execute(f'PRAGMA table_info("{table}")')}
            missing = [c for c in columns if c not in have]
            if missing:
                raise UserError(f"{self.path} is not a campaign result database: its table "
                                f"'{table}' lacks the column(s) {', '.join(missing)}")

    def check_contents(self) -> None:
        """What a reader relies on, checked before it reads: every meta value and every fault's
        params are JSON (params an object), and every result row has a known outcome (the
        `results` view would silently leave a row with an unknown code out of every count)."""
        self.meta  # noqa: B018  (decodes every value, or says which is not JSON)
        conn = self._conn
        bad = conn.execute("SELECT fault_index FROM faults WHERE json_valid(params) = 0 OR "
                           "json_type(params) != 'object' LIMIT 1").fetchone()
        if bad:
            raise UserError(f"{self.path}: the params of fault {bad[0]} are not a JSON object; "
                            "the database is damaged or was not written by classes-tool")
        marks = ", ".join("?" * len(OUTCOMES))
        query = (f"SELECT COUNT(*), MIN(outcome) FROM results WHERE outcome IS NULL OR outcome "
                 f"NOT IN ({marks})" if self._flat else
                 "SELECT COUNT(*), MIN(r.outcome) FROM result_rows r LEFT JOIN outcome_names o "
                 f"ON o.code = r.outcome WHERE o.name IS NULL OR o.name NOT IN ({marks})")
        n, example = conn.execute(query, OUTCOMES).fetchone()
        if n:
            raise UserError(f"{self.path}: {n} stored result row(s) have an unknown outcome "
                            f"({example!r}; known: {', '.join(OUTCOMES)}): the database is "
                            "damaged or was written by another version of classes-tool")

    def _create_tables(self) -> None:
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._conn.executemany("INSERT OR IGNORE INTO outcome_names(code, name) VALUES (?, ?)",
                               enumerate(OUTCOMES))

    def _read_codes_and_labels(self) -> None:
        """What a write needs from the file: the stored code of each of `OUTCOMES` and the
        labels already stored (a cache, so that a batch inserts only inputs seen first)."""
        if self._flat:
            self._outcome_codes, self._labels = None, {}
            return
        code_of = {name: code for code, name in
                   self._conn.execute("SELECT code, name FROM outcome_names")}
        missing = [name for name in OUTCOMES if name not in code_of]
        if missing:
            raise UserError(f"{self.path} lacks the outcome classes {', '.join(missing)}: it was "
                            "written by another version of classes-tool")
        self._outcome_codes = np.array([code_of[name] for name in OUTCOMES], np.int64)
        self._labels = dict(self._conn.execute("SELECT input_index, label FROM inputs"))

    def _convert_flat(self) -> None:
        """Move the rows of an earlier version's flat `results` table into `result_rows` and
        `inputs` (one transaction: the file is converted whole or not at all)."""
        c = self._conn
        with self._transaction():
            c.execute("ALTER TABLE results RENAME TO flat_results")
            self._create_tables()
            rows = c.execute("SELECT COUNT(*) FROM flat_results").fetchone()[0]
            moved = c.execute(
                "INSERT INTO result_rows SELECT r.fault_index, r.input_index, o.code, r.sdc5, "
                "r.rel_error, r.golden_top1, r.faulty_top1 FROM flat_results r "
                "JOIN outcome_names o ON o.name = r.outcome").rowcount
            if moved != rows:
                raise UserError(f"{self.path}: {rows - moved} stored rows have an unknown outcome")
            c.execute("INSERT INTO inputs SELECT input_index, MIN(label) FROM flat_results "
                      "WHERE label IS NOT NULL GROUP BY input_index")
            c.execute("DROP TABLE flat_results")
        self._flat = False
        self._read_codes_and_labels()

    def _merge_meta(self, meta: dict[str, Any]) -> None:
        stored = self.meta
        given = {k: json.loads(to_json(v)) for k, v in meta.items()}
        if stored:
            hashes = given.pop(CONTENT_HASHES, None)
            if CONTENT_HASHES in stored and hashes is not None:  # older stores have none
                _check_hashes(self.path, stored[CONTENT_HASHES], hashes)
            for key in sorted(given):
                if key not in stored or stored[key] != given[key]:
                    raise UserError(f"{self.path} was created with a different config: key "
                                    f"{key!r} differs (stored {stored.get(key, '<absent>')!r}, "
                                    f"given {given[key]!r}); use a new output folder")
            # a key the campaign writes only when it is not the default (sizing: adaptive,
            # input_set: sample, ...): stored but not given means the config went back to the
            # default, which is a different campaign too
            for key in sorted((set(stored) - set(given)) & set(OPTIONAL_IDENTITY_KEYS)):
                raise UserError(f"{self.path} was created with a different config: key "
                                f"{key!r} differs (stored {stored[key]!r}, given <absent>); use "
                                "a new output folder")
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
                elif conn.in_transaction:  # SQLite itself rolls back on a full disk
                    with contextlib.suppress(sqlite3.Error):  # the first error is the one
                        conn.execute("ROLLBACK")
                return False

        return _Tx()

    # -- writing ---------------------------------------------------------------------------------

    def add(self, faults: Iterable[Mapping[str, Any]], results: Iterable[Mapping[str, Any]]) -> int:
        """Store one batch in one committed transaction; returns the number of new result rows.

        `faults`: dicts with fault_index, target, pattern, params (any JSON-able dict).
        `results`: dicts with fault_index, input_index, outcome, sdc5, rel_error, golden_top1,
        faulty_top1 and optionally label. Pairs already stored are skipped. A fault index that is
        stored with different target/pattern/params is a bug (non-deterministic fault plan), and
        so is a second label for one input: either raises ValueError, and the whole batch is
        rolled back. A row without a label reads back its input's label, if one was stored.
        """
        rows = list(results)
        outcomes = _outcome_indices(np.array([str(r["outcome"]) for r in rows], dtype=str))
        columns = [[int(r["fault_index"]) for r in rows], [int(r["input_index"]) for r in rows],
                   outcomes.tolist(), [int(bool(r["sdc5"])) for r in rows],
                   [_opt_float(r.get("rel_error")) for r in rows],
                   [_opt_int(r.get("golden_top1"), "golden_top1") for r in rows],
                   [_opt_int(r.get("faulty_top1"), "faulty_top1") for r in rows]]
        labels = np.array([_opt_int(r.get("label"), "a label") for r in rows], object)
        return self._insert(faults, columns, np.array(columns[1], np.int64), labels)

    def add_arrays(self, faults: Iterable[Mapping[str, Any]], fault_indices, input_indices,
                   classified: Mapping[str, Any], labels=None) -> int:
        """`add` for column arrays (what the engines produce): the same rows, built column by
        column without a dict or tuple per row, because a campaign stores hundreds of thousands
        of them. ``outcome`` may hold the class names or their integer indices into
        `OUTCOMES`."""
        outcome = _outcome_indices(np.asarray(classified["outcome"]))
        rel = np.asarray(classified["rel_error"], float)
        rel_values = rel.astype(object)
        rel_values[np.isnan(rel)] = None  # NaN -> NULL
        inputs = _int_column(input_indices, "input_indices")
        columns = [_int_column(fault_indices, "fault_indices").tolist(), inputs.tolist(),
                   outcome.astype(np.int64).tolist(),
                   np.asarray(classified["sdc5"], bool).astype(int).tolist(),
                   rel_values.tolist(),
                   _int_column(classified["golden_top1"], "golden_top1").tolist(),
                   _int_column(classified["faulty_top1"], "faulty_top1").tolist()]
        if labels is not None and len(labels) != len(inputs):
            raise ValueError("labels and input_indices differ in length")
        return self._insert(faults, columns, inputs, labels)

    def add_labels(self, labels) -> None:
        """Store the label of each input (input i has labels[i]; None: no label) in one
        transaction: what an engine that knows all its inputs does once, instead of passing a
        label with every row. A label that differs from a stored one raises ValueError."""
        if self._flat:
            self._convert_flat()
        new = self._new_labels(np.arange(len(labels)), np.asarray(labels, object))
        with self._transaction():
            self._insert_labels(new)
        self._labels.update(new)

    def _new_labels(self, inputs: np.ndarray, labels) -> dict[int, int]:
        """The (input, label) pairs of a batch that the file does not hold yet; a label that
        differs from the one already given for that input raises ValueError."""
        if labels is None:
            return {}
        labels = np.asarray(labels)
        if labels.dtype.kind in "iu":  # the engines' case: every row labelled
            first_of, first = np.unique(inputs, return_index=True)
            per_input = labels[first]
            differs = labels != per_input[np.searchsorted(first_of, inputs)]
            if differs.any():
                k = int(np.argmax(differs))
                raise ValueError(f"input {inputs[k]} is given two labels in one batch")
            pairs = zip(first_of.tolist(), per_input.tolist(), strict=True)
        else:
            pairs = ((i, _opt_int(v, "a label")) for i, v in zip(inputs.tolist(),
                                                                labels.tolist(), strict=True)
                     if v is not None)
        new: dict[int, int] = {}
        for i, label in pairs:
            known = self._labels.get(i, new.get(i))
            if known is None:
                new[i] = label
            elif known != label:
                raise ValueError(f"input {i} is given label {label} but has label {known}")
        return new

    def _insert(self, faults: Iterable[Mapping[str, Any]], columns: list[list[Any]],
                inputs: np.ndarray, labels) -> int:
        """Store fault rows, new input labels and result rows (`columns`: one list per
        `_RESULT_INSERT_COLUMNS` entry, outcomes as indices into `OUTCOMES`) in one
        transaction."""
        if self._flat:
            self._convert_flat()
        n = len(columns[0])
        if any(len(c) != n for c in columns):
            raise ValueError("fault_indices, input_indices and classified arrays differ in "
                             "length")
        new_labels = self._new_labels(inputs, labels)
        columns[2] = self._outcome_codes[np.asarray(columns[2], np.int64)].tolist()
        width = len(columns)
        flat: list[Any] = [None] * (n * width)
        for k, column in enumerate(columns):  # row-major: row i is flat[width i : width (i+1)]
            flat[k::width] = column
        fault_rows = [(int(f["fault_index"]), str(f["target"]), str(f["pattern"]),
                       to_json(f.get("params") or {})) for f in faults]
        conn = self._conn
        with self._transaction():
            self._insert_checked("faults", ("fault_index", "target", "pattern", "params"),
                                 fault_rows, lambda old, new: (
                                     f"fault {new[0]} is stored as {old[1:]} but was given as "
                                     f"{new[1:]}: the fault plan is not deterministic"))
            self._insert_labels(new_labels)
            self._check_faults_known(np.asarray(columns[0], np.int64),
                                     {row[0] for row in fault_rows})
            before = conn.total_changes
            # many rows per statement: half the cost per row of one `executemany` step each
            step = self._rows_per_statement * width
            for k in range(0, len(flat), step):
                part = flat[k:k + step]
                conn.execute(self._insert_sql(len(part) // width), part)
            added = conn.total_changes - before
        self._labels.update(new_labels)
        return added

    def _check_faults_known(self, fault_indices: np.ndarray, given: set[int]) -> None:
        """Every result row names a fault stored in this batch or before (the schema's foreign
        key, checked per batch); ValueError otherwise."""
        unknown = [f for f in np.unique(fault_indices).tolist() if f not in given]
        found = self._stored_rows("faults", ("fault_index",), unknown)
        missing = [f for f in unknown if f not in found]
        if missing:
            raise ValueError(f"result rows name fault {missing[0]}, which is not stored: "
                             "give its fault row with them")

    def _stored_rows(self, table: str, columns: tuple[str, ...], keys: list) -> dict[Any, tuple]:
        """The stored rows (`columns`, keyed by the first) whose key is among `keys`."""
        stored = {}
        for k in range(0, len(keys), 500):  # one query per 500 keys (SQLite's limit)
            chunk = keys[k:k + 500]
            stored.update((r[0], tuple(r)) for r in self._conn.execute(
                f"SELECT {', '.join(columns)} FROM {table} WHERE {columns[0]} IN "
                f"({','.join('?' * len(chunk))})", chunk))
        return stored

    def _insert_labels(self, labels: dict[int, int]) -> None:
        self._insert_checked("inputs", ("input_index", "label"), list(labels.items()),
                             lambda old, new: (f"input {new[0]} is given label {new[1]} but has "
                                               f"label {old[1]}"))

    def _insert_checked(self, table: str, columns: tuple[str, ...], rows: list[tuple],
                        mismatch) -> None:
        """INSERT OR IGNORE `rows` (keyed by their first column); a key stored with other
        values is a bug in the caller: ValueError(mismatch(stored_row, given_row))."""
        if not rows:
            return
        conn = self._conn
        before = conn.total_changes
        conn.executemany(f"INSERT OR IGNORE INTO {table}({', '.join(columns)}) VALUES "
                         f"({', '.join('?' * len(columns))})", rows)
        if conn.total_changes - before == len(rows):
            return
        stored = self._stored_rows(table, columns, [row[0] for row in rows])
        for row in rows:
            if stored[row[0]] != row:
                raise ValueError(mismatch(stored[row[0]], row))

    def _insert_sql(self, rows: int) -> str:
        sql = self._insert_statements.get(rows)
        if sql is None:
            one = "(" + ", ".join("?" * len(_RESULT_INSERT_COLUMNS)) + ")"
            sql = (f"INSERT OR IGNORE INTO result_rows({', '.join(_RESULT_INSERT_COLUMNS)}) "
                   f"VALUES {', '.join([one] * rows)}")
            self._insert_statements[rows] = sql
        return sql

    # -- reading ---------------------------------------------------------------------------------

    @property
    def _rows(self) -> str:
        """The table of result rows (the `results` view joins what only a reader needs)."""
        return "results" if self._flat else "result_rows"

    @property
    def meta(self) -> dict[str, Any]:
        """The campaign description stored at creation (JSON values decoded)."""
        meta = {}
        for key, value in self._conn.execute("SELECT key, value FROM meta"):
            try:
                meta[key] = json.loads(value)
            except (TypeError, ValueError, RecursionError):
                raise UserError(f"{self.path}: the campaign setting {key!r} is not JSON; the "
                                "database is damaged or was not written by classes-tool") from None
        return meta

    def done_pairs(self) -> set[tuple[int, int]]:
        """(fault_index, input_index) pairs already stored: what a resumed run skips."""
        return set(self._conn.execute(f"SELECT fault_index, input_index FROM {self._rows}"))

    def done_array(self) -> np.ndarray:
        """The stored (fault_index, input_index) pairs as an (n, 2) integer array."""
        rows = self._conn.execute(f"SELECT fault_index, input_index FROM {self._rows}").fetchall()
        return np.array(rows, dtype=np.int64).reshape(-1, 2)

    def count(self) -> int:
        """Number of stored result rows."""
        return self._conn.execute(f"SELECT COUNT(*) FROM {self._rows}").fetchone()[0]

    def outcome_counts(self) -> dict[str, dict[str, int]]:
        """Stored rows per target and outcome: {target: {outcome: count}}, the outcomes
        present only."""
        if self._flat:
            query = ("SELECT f.target, r.outcome, COUNT(*) FROM results r JOIN faults f "
                     "USING (fault_index) GROUP BY f.target, r.outcome")
        else:  # counted per fault before joining: one join per fault, not per row
            query = ("SELECT f.target, o.name, SUM(g.n) FROM (SELECT fault_index, outcome, "
                     "COUNT(*) AS n FROM result_rows GROUP BY fault_index, outcome) g "
                     "JOIN faults f USING (fault_index) JOIN outcome_names o ON o.code = g.outcome "
                     "GROUP BY f.target, o.name")
        counts: dict[str, dict[str, int]] = {}
        for target, outcome, k in self._conn.execute(query):
            counts.setdefault(target, {})[outcome] = k
        return counts

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

    @contextlib.contextmanager
    def snapshot(self):
        """Reads inside see the database as it was at their first read, whatever a running
        campaign commits meanwhile (one read transaction): a report's tables, plots and CSV
        then describe the same rows."""
        self._conn.execute("BEGIN")
        try:
            yield self
        finally:
            self._conn.execute("COMMIT")

    @property
    def connection(self) -> sqlite3.Connection:
        """The underlying connection, for read-only aggregate queries (e.g. the report)."""
        return self._conn

    def close(self) -> None:
        """Close the database (all batches are already committed) and release the writer's
        lock."""
        if self._conn is not None:
            self._conn.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        self._abandon(failed=exc_type is not None)


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
