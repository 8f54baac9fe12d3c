"""SNN fault campaigns in the style users of SpikeFI know: rounds of faults, one batched run.

A *round* is a set of faults active together; a campaign runs every round over the same data and
compares against the golden (fault-free) network. What makes it fast:

1. Many rounds in one pass: the data batch is tiled R times (row = round * N + sample) and every
   fault acts only on its own rows (indices and per-unit parameters), so the model is never
   rebuilt or re-weighted per fault.
2. Late start: golden per-layer outputs (whole time axis) are computed once per data batch; a
   group of rounds starts at the first layer any of them touches.
3. Early stop, taken to the element: rows are carried as their differences from the golden run.
   After every layer only the (row, time step) slices that differ are kept (a fault that changes
   nothing for a sample costs nothing after its layer); step-wise layers (TimeDistributed) run
   on those slices only, a LIF layer recomputes only the (row, neuron) units whose input differs
   or that a fault touches, and a synapse fault on golden input changes single elements.

Every path computes each value with the same arithmetic (Keras layers per time step, one NumPy
LIF recurrence, synapse changes added in fault order), so the batched results are bit-identical
to running one fault per forward pass (`rounds_per_pass=1, late_start=False, early_stop=False`).
The model must be a chain (each layer feeds the next), as built by `classes_tool.snn.unroll`.

This module holds the rounds and the batching loop (`SpikingCampaign`); the engine's parts are
`network` (the layer chain), `batch_rows`, `faulty_lif` and `faulty_synapses` (faults on their
round's rows), `step_batches` (single time steps through step-wise layers), `golden_batch`,
`whole_rows` (the plain engine) and `sparse_propagation` (the difference engine);
`campaign_file` reads and writes saved campaigns.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from classes_tool.errors import UserError
from classes_tool.snn import metrics
from classes_tool.snn.campaign_file import FORMAT, read_campaign_file, write_campaign_file
from classes_tool.snn.faults import Fault, FaultModel, describe, resolve
from classes_tool.snn.golden_batch import GoldenBatch
from classes_tool.snn.network import SpikingNetwork
from classes_tool.snn.sparse_propagation import propagate_differences
from classes_tool.snn.whole_rows import apply_layer, propagate_whole_rows

PROGRESS = ("pbar", "table", "silent")


class SpikingCampaign:
    """Rounds of faults on one spiking model, run together over a data set.

    `input_shape` is one sample's shape (time, ...). Faults with open choices (random sites,
    factors, bits, steps) are resolved at injection from (seed, fault_index).
    """

    def __init__(self, model: keras.Model, input_shape: tuple | list, name: str = "snn-campaign",
                 seed: int = 0, model_path: str | None = None):
        self.model = model
        self.net = SpikingNetwork(model)
        self.input_shape = tuple(int(d) for d in input_shape)
        if tuple(self.input_shape) != tuple(int(d) for d in model.inputs[0].shape[1:]):
            raise UserError(f"input_shape {self.input_shape} does not match the model input "
                            f"{tuple(model.inputs[0].shape[1:])}")
        self.name = name
        self.seed = int(seed)
        self.model_path = model_path
        self.rounds: list[list[Fault]] = []
        self._next_fault = 0
        self.duration = 0.0
        self.results: metrics.Results | None = None
        self._cache: dict = {}

    # -- building rounds -----------------------------------------------------------------------

    def _resolve(self, fault: Fault) -> Fault:
        if not isinstance(fault, Fault):
            raise UserError(f"expected a Fault, got {type(fault).__name__}")
        kind = fault.model.kind
        shape = self.net.site_shape(fault.layer, kind)
        kernel = self.net.kernel(fault.layer) if kind == "synapse" else None
        rng = np.random.default_rng([self.seed, self._next_fault])
        self._next_fault += 1
        return resolve(fault, shape, self.net.time_steps, rng, kernel)

    def inject(self, faults: list[Fault] | Fault, round_idx: int = -1) -> None:
        """Add faults to one round (the last by default; a first round is created if none)."""
        faults = [faults] if isinstance(faults, Fault) else list(faults)
        if not self.rounds:
            self.rounds.append([])
        try:
            target = self.rounds[round_idx]
        except IndexError:
            raise UserError(f"no round {round_idx}; the campaign has {len(self.rounds)}") from None
        target.extend(self._resolve(f) for f in faults)
        self.results = None

    def then_inject(self, faults: list[Fault] | Fault) -> None:
        """Add a new round holding `faults`."""
        self.rounds.append([])
        self.inject(faults, -1)

    def inject_complete(self, fault_model: FaultModel | str, layer_names: list[str],
                        sampling_k: int | None = None, window: tuple[int, int] | None = None
                        ) -> None:
        """One round per site (every neuron or synapse of each layer, or k random ones)."""
        if isinstance(fault_model, str):
            fault_model = FaultModel(fault_model)
        if isinstance(layer_names, str):
            layer_names = [layer_names]
        for name in layer_names:
            shape = self.net.site_shape(name, fault_model.kind)
            size = int(np.prod(shape))
            flat = np.arange(size)
            if sampling_k is not None:
                if not 1 <= sampling_k:
                    raise UserError(f"sampling_k must be positive, got {sampling_k}")
                rng = np.random.default_rng([self.seed, self._next_fault, 1])
                flat = np.sort(rng.choice(size, size=min(sampling_k, size), replace=False))
            for i in flat:
                site = tuple(int(v) for v in np.unravel_index(int(i), shape))
                self.rounds.append([self._resolve(Fault(fault_model, name, [site], 1, window))])
        self.results = None

    def eject(self, faults: list[Fault] | None = None, round_idx: int | None = None) -> None:
        """Remove faults: the given ones, all of one round, or (no arguments) every round."""
        if faults is None and round_idx is None:
            self.rounds = []
        elif faults is None:
            try:
                del self.rounds[round_idx]
            except IndexError:
                raise UserError(f"no round {round_idx}") from None
        else:
            drop = [f.to_dict() for f in faults]
            picked = self.rounds if round_idx is None else [self.rounds[round_idx]]
            for rnd in picked:
                rnd[:] = [f for f in rnd if f.to_dict() not in drop]
            self.rounds = [r for r in self.rounds if r]
        self.results = None

    def reset(self) -> None:
        """Forget results and timing (the rounds stay), so the next run starts afresh."""
        self.results = None
        self.duration = 0.0

    # -- running -------------------------------------------------------------------------------

    def _first_last(self, rnd: list[Fault]) -> tuple[int, int]:
        idx = [self.net.index[f.layer] for f in rnd]
        return (min(idx), max(idx)) if idx else (len(self.net.layers), -1)

    def golden(self, x: np.ndarray) -> list[np.ndarray]:
        """Outputs of every layer (whole time axis) of the fault-free network."""
        outs = []
        h = np.asarray(x, np.float32)
        for i in range(len(self.net.layers)):
            h = apply_layer(self.net, i, h, {}, [])
            outs.append(h)
        return outs

    def run(self, data, progress: str = "pbar", batch_size: int = 128, max_rows: int = 4096,
            late_start: bool = True, early_stop: bool = True,
            rounds_per_pass: int | None = None, executor=None, stored: dict | None = None,
            on_unit=None) -> metrics.Results:
        """Run every round over `data` = (x, y) (x shaped (N, time, ...); y may be None).

        `max_rows` bounds the enlarged batch (rounds x samples per forward pass);
        `rounds_per_pass=1, late_start=False, early_stop=False` is the one-fault-per-pass
        baseline. With both late start and early stop (the default) rows are propagated as
        differences from the golden run. Returns (and keeps) the results.

        The work is cut into units (a batch of samples x a chunk of rounds, see `units`) at
        fixed positions; `executor` (a `classes_tool.distributed` executor whose workers hold
        this campaign) computes them on Ray actors, with the same results. `stored` holds the
        results of units an earlier run computed ({unit: `compute_unit`'s result}), which are
        not computed again; `on_unit(unit, result)` is called for every unit computed now
        (before it counts as done), e.g. to make it durable.
        """
        if progress not in PROGRESS:
            raise UserError(f"progress must be one of {PROGRESS}, got {progress!r}")
        if not self.rounds:
            raise UserError("the campaign has no rounds; inject faults first")
        x, y = split_data(data)
        if tuple(x.shape[1:]) != self.input_shape:
            raise UserError(f"data samples are shaped {tuple(x.shape[1:])}, the campaign "
                            f"expects {self.input_shape}")
        n, n_rounds = len(x), len(self.rounds)
        options = {"batch_size": batch_size, "max_rows": max_rows, "late_start": late_start,
                   "early_stop": early_stop, "rounds_per_pass": rounds_per_pass}
        units = self.units(n, **options)
        golden_scores = None
        scores = None
        bar = None
        if progress == "pbar":
            from tqdm.auto import tqdm
            bar = tqdm(total=n_rounds * n, desc=self.name, unit="run")
        elif progress == "table":
            print(f"{'rounds':>12} {'samples':>12} {'elapsed s':>10}")
        start = time.perf_counter()

        def commit(unit: tuple[int, int], result, computed: bool = True) -> None:
            nonlocal golden_scores, scores
            if computed and on_unit is not None:
                on_unit(unit, result)
            b0, c0 = unit
            gscore, chunk, out = result
            batch_len = len(gscore)
            if scores is None:
                golden_scores = np.zeros((n,) + gscore.shape[1:], np.float32)
                scores = np.zeros((n_rounds, n) + gscore.shape[1:], np.float32)
            golden_scores[b0:b0 + batch_len] = gscore
            for p, r in enumerate(chunk):
                scores[r, b0:b0 + batch_len] = out[p * batch_len:(p + 1) * batch_len]
            if bar is not None:
                bar.update(len(chunk) * batch_len)
            elif progress == "table":
                print(f"{c0 + len(chunk):>12} {b0 + batch_len:>12} "
                      f"{time.perf_counter() - start:>10.2f}")

        stored = stored or {}
        for unit in units:
            if unit in stored:
                commit(unit, stored[unit], computed=False)
        todo = [unit for unit in units if unit not in stored]
        if executor is not None:
            executor.run_units("rounds", todo, commit,
                               lambda u: f"samples from {u[0]}, rounds from {u[1]}")
        else:
            layout = self.round_layout()
            for unit in todo:
                commit(unit, self.compute_unit(x, unit, layout=layout, **options))
        if bar is not None:
            bar.close()
        self.duration += time.perf_counter() - start
        self.results = metrics.Results(golden_scores, scores, y, self.round_info())
        return self.results

    def _per_pass(self, batch_len: int, max_rows: int, rounds_per_pass: int | None) -> int:
        return rounds_per_pass or max(1, max_rows // batch_len)

    def units(self, n: int, batch_size: int = 128, max_rows: int = 4096,
              rounds_per_pass: int | None = None, **_) -> list[tuple[int, int]]:
        """The work units of `n` samples: (first sample of a batch, first position of a chunk of
        rounds in the order of their first faulty layer), cut at fixed positions."""
        return [(b0, c0) for b0 in range(0, n, batch_size)
                for c0 in range(0, len(self.rounds),
                                self._per_pass(min(batch_size, n - b0), max_rows,
                                               rounds_per_pass))]

    def round_layout(self) -> tuple[list[tuple[int, int]], list[int]]:
        """Each round's (first, last) faulty layer, and the rounds in that order: how units
        chunk the rounds. Computed once per run (or per worker), not per unit."""
        spans = [self._first_last(r) for r in self.rounds]
        return spans, sorted(range(len(self.rounds)), key=lambda r: spans[r])

    def compute_unit(self, x: np.ndarray, unit: tuple[int, int], batch_size: int = 128,
                     max_rows: int = 4096, late_start: bool = True, early_stop: bool = True,
                     rounds_per_pass: int | None = None, layout=None
                     ) -> tuple[np.ndarray, list[int], np.ndarray]:
        """(golden scores of the unit's samples, its rounds, their faulty scores: round-major
        rows) of one unit of `units`; `layout` is `round_layout()` (computed here if None)."""
        b0, c0 = unit
        xb = x[b0:b0 + batch_size]
        batch_len = len(xb)
        cached = getattr(self, "_golden_batch", None)
        if cached is None or cached[0] is not x or cached[1] != (b0, batch_len):
            # the golden run of a batch serves every chunk of rounds on it
            cached = self._golden_batch = (x, (b0, batch_len), GoldenBatch(xb, self.golden(xb)))
        bt = cached[2]
        gscore = bt.gold[-1]
        spans, order = layout if layout is not None else self.round_layout()
        chunk = order[c0:c0 + self._per_pass(batch_len, max_rows, rounds_per_pass)]
        plan: dict[int, list] = {}
        for p, r in enumerate(chunk):
            for f in self.rounds[r]:
                plan.setdefault(self.net.index[f.layer], []).append((p, f))
        out = np.tile(gscore, (len(chunk),) + (1,) * (gscore.ndim - 1))
        first = min(spans[r][0] for r in chunk) if late_start else 0
        if late_start and early_stop:
            rows, h = propagate_differences(self.net, bt, plan, first)
        else:
            rows, h = propagate_whole_rows(self.net, bt, plan, first, len(chunk), spans,
                                           chunk, early_stop)
        out[rows] = h
        return gscore, chunk, out

    # -- description, save and load ------------------------------------------------------------

    def round_info(self) -> list[dict]:
        """Per round: target (layer names), pattern (fault model names) and params (JSON)."""
        info = []
        for rnd in self.rounds:
            layers = sorted({f.layer for f in rnd}, key=lambda n: self.net.index[n])
            models = sorted({f.model.name for f in rnd})
            params = describe(rnd[0]) if len(rnd) == 1 else {"faults": [describe(f) for f in rnd]}
            info.append({"target": "+".join(layers), "pattern": "+".join(models),
                         "params": params})
        return info

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "name": self.name, "input_shape": list(self.input_shape),
                "seed": self.seed, "next_fault_index": self._next_fault,
                "duration": self.duration, "model_path": self.model_path,
                "rounds": [[f.to_dict() for f in rnd] for rnd in self.rounds]}

    def save(self, path: str | Path) -> Path:
        """Write `path` (JSON: rounds, settings) and `path` with suffix .npz (results, if run)."""
        return write_campaign_file(path, self.to_dict(), self.results)

    @classmethod
    def load(cls, path: str | Path, model: keras.Model | None = None) -> SpikingCampaign:
        """Read a campaign saved by `save`; the model is given or loaded from its saved path."""
        data, npz = read_campaign_file(path)
        if model is None:
            if not data.get("model_path"):
                raise UserError("the campaign file names no model; pass model=")
            from classes_tool.session import load_keras_model

            model = load_keras_model(data["model_path"])
        camp = cls(model, data["input_shape"], data["name"], data["seed"], data.get("model_path"))
        camp.rounds = [[Fault.from_dict(f) for f in rnd] for rnd in data["rounds"]]
        camp._next_fault = int(data["next_fault_index"])
        camp.duration = float(data.get("duration", 0.0))
        if npz.exists():
            camp.results = metrics.Results.load_npz(npz, camp.round_info())
        return camp


def split_data(data) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs x (float32) and labels y (int64, or None) from (x, y), {"x": .., "y": ..} or x."""
    if isinstance(data, dict):
        x, y = data.get("x"), data.get("y")
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    if x is None:
        raise UserError("campaign data needs inputs x")
    x = np.asarray(x, np.float32)
    y = None if y is None else np.asarray(y).astype(np.int64)
    if y is not None and len(y) != len(x):
        raise UserError(f"{len(x)} inputs but {len(y)} labels")
    return x, y


__all__ = ["SpikingCampaign"]
