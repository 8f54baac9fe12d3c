"""Shared test helpers: small models built in the tests, and the committed fixtures."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import classes_tool  # noqa: E402, F401  (registers the layers)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
MODELS = ROOT / "models"


def stored_rows(db) -> list[tuple]:
    """Every stored row of a layer campaign with its fault's target, pattern and params, in
    (fault, input) order: what two runs that must agree are compared by."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT r.*, f.target, f.pattern, f.params FROM results r JOIN "
                            "faults f USING (fault_index) ORDER BY fault_index, "
                            "input_index").fetchall()


def wait_for_rows(db, count: int, proc=None, timeout: float = 120.0,
                  pause: float = 0.05) -> int:
    """Poll a campaign's result database until it holds `count` rows, `proc` (a running
    campaign) has ended, or `timeout` seconds have passed; returns the rows seen last (a test
    that kills a campaign mid-run waits for this)."""
    import sqlite3
    import time

    deadline = time.time() + timeout
    stored = 0
    while time.time() < deadline and (proc is None or proc.poll() is None):
        if Path(db).exists():
            try:
                with sqlite3.connect(db) as conn:
                    stored = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                pass
            if stored >= count:
                break
        time.sleep(pause)
    return stored


def branching_model(seed: int = 0) -> keras.Model:
    """Two inputs, a layer with three consumers, Add and Concatenate merges, two outputs."""
    keras.utils.set_random_seed(seed)
    img = keras.Input((6, 6, 2), name="img")
    meta = keras.Input((3,), name="meta")
    stem = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="stem")(img)
    a = keras.layers.Conv2D(4, 1, name="branch_a")(stem)
    b = keras.layers.Conv2D(4, 3, padding="same", name="branch_b")(stem)
    added = keras.layers.Add(name="add")([a, b, stem])
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(added)
    joined = keras.layers.Concatenate(name="concat")([pooled, meta])
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(joined)
    probs = keras.layers.Dense(3, activation="softmax", name="probs")(hidden)
    value = keras.layers.Dense(1, name="value")(hidden)
    return keras.Model([img, meta], [probs, value], name="branching")


def branching_inputs(n: int = 5, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 6, 6, 2)).astype("float32"),
            rng.normal(size=(n, 3)).astype("float32")]
