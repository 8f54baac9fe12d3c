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


def systolic_files(tmp_path: Path) -> tuple[Path, Path]:
    """A small Conv2D + Dense model (`conv`, `fc`) saved as .keras and six inputs with labels:
    what the systolic campaign tests run on."""
    inp = keras.Input((5, 5, 1))
    x = keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(4, activation="softmax", name="fc")(x)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32)
                       for w in model.get_weights()])
    model_path = tmp_path / "m.keras"
    model.save(model_path)
    data = tmp_path / "d.npz"
    np.savez(data, x=rng.random((6, 5, 5, 1)).astype(np.float32), y=np.arange(6) % 4)
    return model_path, data


def stop_after_adds(monkeypatch, count: int) -> callable:
    """Make the result store raise KeyboardInterrupt (as a kill would stop a run) once `count`
    faults were committed; returns the function that puts the real `add` back."""
    from classes_tool.results.store import ResultStore

    add, calls = ResultStore.add, []

    def add_then_stop(self, *args, **kwargs):
        if len(calls) == count:
            raise KeyboardInterrupt
        calls.append(1)
        return add(self, *args, **kwargs)

    monkeypatch.setattr(ResultStore, "add", add_then_stop)
    return lambda: monkeypatch.setattr(ResultStore, "add", add)
