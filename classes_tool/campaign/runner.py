"""The layer campaign: golden and faulty inference, outcome classes, results stored per batch.

Speed by design:
- every sample of a batch carries its own fault (the pair (fault, input) is the unit of work),
  so one forward pass evaluates `batch_size` faults;
- "delayed start": the golden activations at the injection point (and every other tensor the
  rest of the network reads) are computed once per input; each fault runs only the suffix of the
  network after the injected node;
- golden scores are computed once per input, through the same suffix, so a fault that changes
  nothing compares equal bit for bit;
- a batch holds whole faults when each fault meets every input and they fit ("aligned"): the
  injected tensor is then one select broadcasting each fault's dense (mask, value) row over the
  golden activations of all inputs, with no per-sample gather or row; otherwise sites go in as
  dense rows per sample or, with few inputs per fault, as ragged per-sample writes;
- the outcome's per-row quantities are measured inside the traced step (five small columns
  leave it, not the scores), and SQLite commits each batch in a writer thread while TensorFlow
  computes the next one.

Determinism: fault i of target T uses site i of T, drawn from (seed, T, i) alone; the pairs of a
target are enumerated (fault-major) and cut into batches at fixed positions, so a resumed
campaign recomputes exactly the batches an uninterrupted one computes, and the batch size changes
no outcome.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool import session
from classes_tool.campaign.config import CampaignConfig, parse_config
from classes_tool.campaign.outcome_graph import classification_parts_graph
from classes_tool.config_reader import read_yaml
from classes_tool.data import labels, load_npz
from classes_tool.errors import UserError
from classes_tool.graph.model_graph import ModelGraph, Node, TensorRef
from classes_tool.results.adaptive import AdaptiveSizing, sizing_for
from classes_tool.results.estimates import design_from_meta, stored_schedule
from classes_tool.results.outcomes import (
    CRITICAL_SDC,
    OUTCOMES,
    check_golden,
    finish_classification,
    golden_terms,
)
from classes_tool.results.stats import leveugle_sample_size
from classes_tool.results.store import (
    CONTENT_HASHES,
    RESULTS_FILE,
    CampaignResult,
    ResultStore,
    content_hashes,
)
from classes_tool.simulator.error_model import ErrorModel, load_error_model
from classes_tool.simulator.write import apply_sites, dense_site_rows, write_rows

SITE_PREFETCH = 4  # batches whose sites are drawn ahead, in a background thread
#: From this many inputs per fault on, a batch's sites go in as dense rows (one per fault, so
#: they stay a small fraction of the batch); below it, as ragged per-sample writes.
DENSE_MIN_INPUTS = 8
#: Tiled copies of the other tensors the suffix reads stay below this; above it, tiled per step.
TILE_BYTES = 256 << 20
BACKGROUND_NICENESS = 10  # how much lower the side threads are scheduled (see background_thread)
WRITES_AHEAD = 2  # batches computed but not yet committed (see `_run_target`)
#: Batches handed to the compute thread at once: while the main thread classifies, counts and
#: hands one batch to the writer, TensorFlow already runs the next (about 4-8% less time per
#: evaluation on the small digits model, where that Python work is a tenth of a step).
STEPS_AHEAD = 2


@dataclass
class TargetPlan:
    """Everything the campaign needs to run the faults of one target."""

    name: str
    offset: int  # global index of its first fault
    faults: int  # fixed sizing: the faults it runs; adaptive: the most it may run
    population: int
    error_model: ErrorModel
    adaptive: AdaptiveSizing | None = None


def descendants(graph: ModelGraph, name: str) -> set[str]:
    """Nodes that (transitively) read the output of `name`."""
    found: set[str] = set()
    frontier = [name]
    while frontier:
        current = frontier.pop()
        for consumer in graph.consumers(current):
            if consumer not in found:
                found.add(consumer)
                frontier.append(consumer)
    return found


def suffix_graph(graph: ModelGraph, shapes: dict[str, tuple[int, ...]], target: str,
                 output: TensorRef) -> tuple[ModelGraph, list[str]] | None:
    """The part of the network after `target`, as a graph whose inputs are `target` itself and
    every other tensor that part reads (None if `output` does not depend on `target`)."""
    after = descendants(graph, target)
    if output.layer != target and output.layer not in after:
        return None
    needed: list[str] = [target]
    for node in graph.nodes:
        if node.name in after:
            for ref in node.refs():
                if ref.layer not in after and ref.layer not in needed:
                    if ref.index != 0:
                        raise UserError(f"delayed start after '{target}' needs output "
                                        f"{ref.index} of '{ref.layer}'; multi-output layers are "
                                        "not supported there")
                    needed.append(ref.layer)
    nodes = [Node(name=n, class_name="InputLayer", config={}, input_shape=shapes[n])
             for n in needed]
    nodes += [n for n in graph.nodes if n.name in after]
    sub = ModelGraph(name=f"after_{target}", nodes=nodes, inputs=needed,
                     outputs=[TensorRef(output.layer, output.index)],
                     weights={k: v for k, v in graph.weights.items() if k in after})
    return sub, needed


class Campaign:
    """A fault-injection campaign on the layers of a model (Python twin of `classes-tool
    campaign`): `Campaign("configs/demo.yaml").run()` then `.results()`."""

    def __init__(self, config: str | Path | dict[str, Any] | CampaignConfig,
                 out: str | Path | None = None, seed: int | None = None,
                 quiet: bool = False, source: str | Path = "campaign.yaml", *,
                 workers: int | None = None, address: str | None = None,
                 threads_per_worker: int | None = None):
        """`workers` / `address`: run the work units on Ray actors (a local Ray runtime with
        that many workers, or the cluster at `address`, e.g. "auto"); the rows are the same
        as in one process. Without them Ray is never imported."""
        if isinstance(config, CampaignConfig):
            self.config = config
        else:
            if not isinstance(config, dict):
                source, config = config, read_yaml(config)
            config = {k: v for k, v in config.items() if k != "target"}
            self.config = parse_config(config, source, out=out, seed=seed)
        self.quiet = quiet
        self.db_path = Path(self.config.output) / RESULTS_FILE
        self.workers, self.address, self.threads_per_worker = workers, address, threads_per_worker
        self._executor = None

    # -- planning -----------------------------------------------------------------------------
    def _prepare(self) -> None:
        cfg = self.config
        self.loaded = session.load(cfg.model, cfg.input_shape)
        data = load_npz(cfg.data)
        error_model = Path(cfg.error_model) if cfg.error_model.endswith(".json") else None
        # what the stored rows were computed from: a resume must read the same bytes
        self.file_hashes = content_hashes({"model": cfg.model, "data": cfg.data,
                                           "calibration": cfg.calibration,
                                           "error model": error_model})
        self.inputs = [a[: cfg.inputs] for a in session.data_inputs(self.loaded, data,
                                                                     str(cfg.data))]
        self.n_inputs = len(self.inputs[0])
        self.labels = labels(data, self.n_inputs, str(cfg.data))
        self.targets = session.select_targets(self.loaded.graph, cfg.targets["nodes"],
                                              cfg.targets["types"])
        outputs = self.loaded.graph.outputs
        if cfg.output_name is not None:
            matches = [r for r in outputs if r.layer == cfg.output_name]
            if not matches:
                raise UserError(f"'{cfg.output_name}' is not a model output "
                                f"({', '.join(r.layer for r in outputs)})")
            self.output = matches[0]
        else:
            self.output = outputs[0]
        for t in self.targets:
            if t != self.output.layer and self.output.layer not in descendants(
                    self.loaded.graph, t):
                print(f"classes-tool: warning: '{t}' does not reach the scored output "
                      f"'{self.output.layer}', so its faults are all masked (output_name in the "
                      "config chooses the output)", file=sys.stderr)
        self.plans: list[TargetPlan] = []
        offset = 0
        for t in self.targets:
            model = load_error_model(session.error_model_name(self.loaded.graph.node(t),
                                                              cfg.error_model))
            kinds = sum(len(spec["parameters"]) for spec in model.classes.values())
            population = int(np.prod(self.loaded.shapes[t])) * kinds
            adaptive = None
            if cfg.sizing == "adaptive":
                adaptive = sizing_for(population, cfg.margin, cfg.confidence, cfg.pilot_faults,
                                      cfg.max_faults)
                n = adaptive.cap  # fault indices are reserved up to the cap
            else:
                n = (min(cfg.faults, population) if cfg.faults is not None else
                     leveugle_sample_size(population, cfg.margin, cfg.confidence, cfg.p))
            self.plans.append(TargetPlan(t, offset, n, population, model, adaptive))
            offset += n

    def meta(self) -> dict[str, Any]:
        meta = {**self.config.identity(), CONTENT_HASHES: self.file_hashes, "kind": "layers",
                "population": {p.name: p.population for p in self.plans},
                "faults_per_target": {p.name: p.faults for p in self.plans},
                "n_inputs": self.n_inputs}
        if self.config.sizing == "adaptive":  # how many run is decided as they run
            del meta["faults_per_target"]
            meta["max_faults_per_target"] = {p.name: p.faults for p in self.plans}
            meta["pilot_faults_per_target"] = {p.name: p.adaptive.pilot for p in self.plans}
        return meta

    # -- running ------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Run (or continue) the campaign; returns counts of outcomes per target."""
        self._prepare()
        if self.db_path.is_file() and self.db_path.stat().st_size and not resume:
            raise UserError(f"{self.db_path} already exists: continue it with --resume, or "
                            "choose another output folder (--out)")
        if resume and not self.db_path.exists() and not self.quiet:  # a mistyped --out?
            print(f"classes-tool: note: nothing to resume in {self.db_path.parent}; starting a "
                  "new campaign there", file=sys.stderr)
        calibration = self.config.calibration or self.config.data
        ranges = (dict.fromkeys(self.targets, self.config.value_range)
                  if self.config.value_range is not None
                  else session.value_ranges(self.loaded, self.targets,
                                            session.calibration_arrays(self.loaded, calibration)))
        total = sum(p.adaptive.pilot if p.adaptive else p.faults
                    for p in self.plans) * self.n_inputs
        new_folder = not self.db_path.parent.exists()
        try:
            return self._run_stored(total, ranges, resume)
        except BaseException:
            # a run that stored nothing leaves nothing that blocks the next one: the store
            # deleted the database it created (under its lock, never another run's); the
            # folder goes too when this run made it and nothing else is in it
            if new_folder:
                with contextlib.suppress(OSError):
                    self.db_path.parent.rmdir()
            raise

    def _run_stored(self, total: int, ranges: dict, resume: bool = True) -> dict[str, Any]:
        from tqdm import tqdm

        with ResultStore(self.db_path, meta=self.meta(), new=not resume,
                         discard_empty=True) as store:
            done = store.done_array()
            if self.labels is not None:  # stored once per input, not with every row
                try:
                    store.add_labels(self.labels)
                except ValueError as exc:
                    raise UserError(f"{self.db_path}: {exc}: the data's labels are not those "
                                    "the stored results were computed with; use a new output "
                                    "folder") from None
            bar = tqdm(total=total, initial=len(done), disable=self.quiet, unit="eval",
                       desc="campaign", dynamic_ncols=True)
            counts = {"critical_sdc": 0, "all": 0}
            # outcomes of the rows this run adds, per target; the rows a previous run stored
            # are counted from the file (reading every row back costs as much as a tenth of
            # what the campaign itself spends per row on a small model)
            summary = store.outcome_counts() if len(done) else {}
            tallies = {plan.name: np.zeros(len(OUTCOMES), np.int64) for plan in self.plans}
            self.faults_run: dict[str, int] = {}
            with contextlib.ExitStack() as stack:
                stack.callback(setattr, self, "_executor", None)  # the last thing on the way out
                if self.workers is not None or self.address is not None:
                    self._executor = stack.enter_context(self.ray_executor(
                        ranges, self.workers, self.address, self.threads_per_worker))
                stack.callback(bar.close)
                for plan in self.plans:
                    if plan.adaptive is None:
                        self._run_target(plan, ranges[plan.name], store, done, bar, counts,
                                         tallies[plan.name])
                        self.faults_run[plan.name] = plan.faults
                    else:
                        runner = _TargetRun(self, plan, ranges[plan.name], store, done, bar,
                                            counts, tallies[plan.name])
                        self.faults_run[plan.name] = self._run_adaptive(plan, runner, store, bar)
            for target, tally in tallies.items():
                for outcome, k in zip(OUTCOMES, tally.tolist(), strict=True):
                    if k:
                        per_target = summary.setdefault(target, {})
                        per_target[outcome] = per_target.get(outcome, 0) + k
            return {p.name: summary[p.name] for p in self.plans if p.name in summary}

    def _run_adaptive(self, plan: TargetPlan, runner, store: ResultStore,
                      bar) -> int:
        """Run `plan`'s faults in stages until its intervals reach the margin (see `adaptive`);
        returns the faults run. The stages are decided from the stored rows by the same
        function the report replays them with, so a resumed campaign decides the same."""
        m = self.n_inputs
        design = design_from_meta(self.meta())
        first = 0
        while True:
            stages, finished = stored_schedule(store.connection, plan.name, plan.offset,
                                               plan.offset + plan.faults, design, plan.adaptive,
                                               m)
            if finished:
                return stages[-1]
            last = stages[-1]
            bar.total = max(bar.total, bar.n + (last - first) * m)
            runner.run(first, last)
            first = last

    def _run_target(self, plan: TargetPlan, value_range, store: ResultStore, done: np.ndarray,
                    bar, counts: dict[str, int], tally: np.ndarray) -> None:
        """Run every fault of a fixed-size `plan` (what a campaign without rounds does)."""
        _TargetRun(self, plan, value_range, store, done, bar, counts, tally).run(0, plan.faults)

    def files(self) -> dict[str, Path]:
        """The files the campaign reads, by config field (what a remote worker is sent)."""
        cfg = self.config
        files = {"model": Path(cfg.model), "data": Path(cfg.data)}
        if cfg.calibration is not None:
            files["calibration"] = Path(cfg.calibration)
        if str(cfg.error_model).endswith(".json"):
            files["error_model"] = Path(cfg.error_model)
        return files

    def ray_executor(self, ranges: dict[str, Any], workers: int | None = None,
                     address: str | None = None, threads_per_worker: int | None = None):
        """Ray actors that each hold a `LayerWorker` of this campaign (see `distributed`)."""
        from classes_tool.distributed.ray_executor import RayExecutor

        return RayExecutor(self.files(), functools.partial(LayerWorker, self.config, ranges),
                           workers, address, threads_per_worker)


    def _suffix_step(self, split, mode: str, size: int, per_batch: int, flat_size: int):
        """The traced campaign step of one target and the `golden_terms` of every input.

        One trace for the whole target: every batch has `size` rows (the last one padded with
        rows that get no site), and the per-row quantities of the outcome classes are measured
        inside the graph, so only five small columns come back (`finish_classification`
        completes them). Three ways in, by how faults meet inputs:
        - "aligned" (each fault meets all m inputs, whole faults per batch): the batch is
          (fault, input) in fault-major order, so the injected tensor is one select that
          broadcasts each fault's (mask, value) row over the golden activations of the m
          inputs; no per-sample gather, no per-sample rows;
        - "dense" (more inputs than a batch holds): activations gathered per sample, each
          sample's fault a dense row;
        - "ragged" (few inputs per fault): each sample's sparse site written into its row.
        """
        import tensorflow as tf

        from classes_tool.graph import build_model

        sub, needed = split
        suffix = build_model(sub)
        m = self.n_inputs
        acts = session.layer_outputs(self.loaded, needed, self.inputs, size)

        def scores(hit, others):
            out = suffix([hit, *others] if others else hit, training=False)
            return tf.reshape(out, (size, -1))

        if mode == "aligned":
            shape = acts[0].shape
            flat = tf.constant(acts[0].reshape(1, m, flat_size))
            tiled = sum(a.nbytes for a in acts[1:]) * per_batch <= TILE_BYTES
            others = [tf.constant(np.concatenate([a] * per_batch) if tiled else a)
                      for a in acts[1:]]
            signature = [tf.TensorSpec((per_batch, flat_size), tf.bool),
                         tf.TensorSpec((per_batch, flat_size), tf.float32)]

            def faulty(mask, value):
                hit = write_rows(flat, mask[:, None, :], value[:, None, :])
                rest = others if tiled else [tf.concat([a] * per_batch, 0) for a in others]
                return scores(tf.reshape(hit, (size, *shape[1:])), rest)

            no_sites = [[np.zeros((per_batch, flat_size), bool),
                         np.zeros((per_batch, flat_size), np.float32)]]
        else:
            acts_t = [tf.constant(a) for a in acts]
            ids = [tf.TensorSpec((size,), tf.int32), tf.TensorSpec((size,), tf.int32)]
            chunks = [np.minimum(np.arange(c, c + size), m - 1).astype(np.int32)
                      for c in range(0, m, size)]  # every input once, the last chunk padded
            if mode == "dense":
                signature = [*ids, tf.TensorSpec((None, flat_size), tf.bool),
                             tf.TensorSpec((None, flat_size), tf.float32)]

                def faulty(input_ids, site_ids, mask, value):
                    batch = [tf.gather(a, input_ids) for a in acts_t]
                    flat = tf.reshape(batch[0], (size, flat_size))
                    rows = tf.where(site_ids >= 0, site_ids, tf.shape(mask)[0] - 1)
                    hit = write_rows(flat, tf.gather(mask, rows), tf.gather(value, rows))
                    return scores(tf.reshape(hit, tf.shape(batch[0])), batch[1:])

                empty = [np.zeros((1, flat_size), bool), np.zeros((1, flat_size), np.float32)]
            else:
                signature = [*ids, tf.TensorSpec((None,), tf.int32),
                             tf.TensorSpec((None,), tf.float32), tf.TensorSpec((None,), tf.int32)]

                def faulty(input_ids, site_ids, positions, values, splits):
                    batch = [tf.gather(a, input_ids) for a in acts_t]
                    hit = apply_sites(batch[0], site_ids, positions, values, splits, 1,
                                      static_shapes=False)
                    return scores(hit, batch[1:])

                # one site with no positions: what apply_sites takes when none is written
                empty = [np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(2, np.int32)]
            no_sites = [[c, np.full(size, -1, np.int32), *empty] for c in chunks]

        # One traced graph serves the golden pass and every fault: the golden scores come from
        # the very graph the faults run through, at the same batch size, so a fault that
        # changes nothing compares equal bit for bit (and TensorFlow traces and optimises one
        # graph, not two). The per-input golden terms it compares against are variables, set
        # once the golden pass has measured them.
        classes = int(np.prod(suffix.outputs[0].shape[1:]))
        rows = size if mode == "aligned" else m  # aligned: tiled to the batch's rows
        order = ("golden", "top1", "bound")
        term_vars = [tf.Variable(tf.zeros((rows, classes), tf.float64), trainable=False),
                     tf.Variable(tf.zeros((rows,), tf.int32), trainable=False),
                     tf.Variable(tf.zeros((rows, classes), tf.float64), trainable=False)]

        def step(*args):
            out = faulty(*args)
            per_row = ([v.value() for v in term_vars] if mode == "aligned" else
                       [tf.gather(v, args[0]) for v in term_vars])
            return classification_parts_graph(out, *per_row), out

        step = tf.function(step, autograph=False, input_signature=signature)
        # the traced graph itself: calling it skips the per-call signature matching
        step = step.get_concrete_function()
        golden_scores = np.concatenate([step(*map(tf.constant, args))[1].numpy()
                                        for args in no_sites])
        golden_scores = golden_scores[:m].astype(np.float64)
        check_golden(golden_scores)
        terms = golden_terms(golden_scores, **self.config.tolerance)
        for var, key in zip(term_vars, order, strict=True):
            var.assign(np.concatenate([terms[key]] * per_batch) if mode == "aligned"
                       else terms[key])
        return step, terms

    def estimates(self) -> list[dict[str, Any]]:
        """Per-target rates with their intervals over faults, design effect, effective n,
        per-fault rates and margin achieved: the rows of the report's by_target table."""
        from classes_tool.results.report import target_estimates

        return target_estimates(self.db_path)[0]

    def export_csv(self, path: str | Path) -> Path:
        """Write every stored row to a CSV file (atomically)."""
        with ResultStore(self.db_path, must_exist=True) as store:
            return store.export_csv(path)

    def results(self):
        """Every stored row (fault, input, outcome, ...): a pandas DataFrame if pandas is
        installed, else a list of dicts."""
        with ResultStore(self.db_path, must_exist=True) as store:
            rows = store.results()
        try:
            import pandas as pd
        except ImportError:
            return rows
        return pd.DataFrame(rows)


class _TargetRun:
    """The faults of one target, run in ranges of fault indices [first, last): the traced step
    is built once, on the first range that has work, and serves every later one."""

    def __init__(self, campaign: Campaign, plan: TargetPlan, value_range,
                 store: ResultStore | None = None, done: np.ndarray | None = None, bar=None,
                 counts: dict[str, int] | None = None, tally: np.ndarray | None = None):
        self.campaign, self.plan, self.value_range = campaign, plan, value_range
        self.store, self.done, self.bar, self.counts, self.tally = (store, done, bar, counts,
                                                                    tally)
        m = campaign.n_inputs
        self.flat_size = int(np.prod(campaign.loaded.shapes[plan.name]))
        batch_size = campaign.config.batch_size
        self.mode = ("ragged" if m < DENSE_MIN_INPUTS else
                     "aligned" if m <= batch_size else "dense")
        # aligned batches hold whole faults: as many as fit, each meeting all m inputs
        self.per_batch = batch_size // m if self.mode == "aligned" else 0
        self.size = self.per_batch * m if self.mode == "aligned" else batch_size
        self._built = False

    def _build(self) -> None:
        if self._built:
            return
        campaign, plan, m = self.campaign, self.plan, self.campaign.n_inputs
        split = suffix_graph(campaign.loaded.graph, campaign.loaded.shapes, plan.name,
                             campaign.output)
        if split is None:  # the scored output does not depend on this node: all masked
            self.step = None
            self.golden_top1 = np.zeros(m, np.int64)
            self.golden_at_top = None
        else:
            self.step, terms = campaign._suffix_step(split, self.mode, self.size,
                                                     self.per_batch, self.flat_size)
            self.golden_top1 = terms["top1"].astype(np.int64)
            self.golden_at_top = terms["at_top"]
        self._built = True

    def stored_mask(self, last: int) -> np.ndarray:
        """Which pairs q < last * m (q = local fault * m + input) a previous run stored."""
        plan, m, done = self.plan, self.campaign.n_inputs, self.done
        stored = np.zeros(last * m, bool)
        if done is not None and len(done):
            mine = done[(done[:, 0] >= plan.offset) & (done[:, 0] < plan.offset + last)]
            stored[(mine[:, 0] - plan.offset) * m + mine[:, 1]] = True
        return stored

    def units(self, first: int, last: int, stored: np.ndarray) -> list[tuple[int, int]]:
        """The work units of faults first..last-1: pair ranges [start, stop) cut at fixed
        positions from `first` (so a unit's rows do not depend on how units are scheduled),
        leaving out the units a previous run stored whole."""
        m, size, pairs = self.campaign.n_inputs, self.size, last * self.campaign.n_inputs
        return [(s, min(s + size, pairs)) for s in range(first * m, pairs, size)
                if not stored[s:s + size].all()]

    def prepare(self, unit: tuple[int, int]):
        """Everything unit [start, stop) needs besides the network: its pairs, the sites of
        the faults it touches (site j = local fault f0 + j) as graph arguments, and the fault
        rows to store (in a background thread when run locally)."""
        import tensorflow as tf

        from classes_tool.simulator.sites import generate_sites

        self._build()
        campaign, plan, cfg, m = self.campaign, self.plan, self.campaign.config, \
            self.campaign.n_inputs
        mode, per_batch, size, flat_size = self.mode, self.per_batch, self.size, self.flat_size
        start, stop = unit
        q = np.arange(start, stop)
        local, inputs = q // m, q % m
        f0, f1 = int(local[0]), int(local[-1]) + 1
        sites = generate_sites(plan.error_model, plan.name, campaign.loaded.shapes[plan.name],
                               self.value_range, f1 - f0, cfg.seed, first=f0,
                               out_of_range=cfg.out_of_range)
        faults = [{"fault_index": plan.offset + f, "target": plan.name,
                   "pattern": sites.patterns[f - f0],
                   "params": {"site": f, "error_model": sites.error_model,
                              "positions": int(sites.splits[f - f0 + 1]
                                               - sites.splits[f - f0])}}
                  for f in range(f0, f1)]
        args: list = []
        if self.step is None:
            pass
        elif mode == "aligned":  # one (mask, value) row per fault, empty rows pad
            mask, value = dense_site_rows(sites, flat_size, rows=per_batch)
            args = [tf.constant(mask), tf.constant(value)]
        else:
            pad = size - len(q)
            site_args = (dense_site_rows(sites, flat_size) if mode == "dense" else
                         (sites.positions, sites.values, sites.splits))
            args = [tf.constant(np.concatenate([inputs, np.zeros(pad, np.int64)]), tf.int32),
                    tf.constant(np.concatenate([local - f0, np.full(pad, -1, np.int64)]),
                                tf.int32), *map(tf.constant, site_args)]
        return q, local, inputs, faults, args

    def evaluate(self, item):
        """Run the step on one prepared unit and classify its rows: (pairs, local faults,
        inputs, fault rows, outcome columns)."""
        q, local, inputs, faults, args = item
        n = len(q)
        golden_top1 = self.golden_top1
        if self.step is None:
            classified = {"outcome": np.zeros(n, np.int32), "sdc5": np.zeros(n, bool),
                          "rel_error": np.zeros(n), "faulty_top1": golden_top1[inputs],
                          "golden_top1": golden_top1[inputs]}
        else:
            parts = {k: v.numpy()[:n] for k, v in self.step(*args)[0].items()}
            classified = finish_classification(**parts, golden_top1=golden_top1[inputs],
                                               golden_at_top=self.golden_at_top[inputs])
        return q, local, inputs, faults, classified

    def compute(self, unit: tuple[int, int]):
        """`evaluate(prepare(unit))`: what a remote worker runs for one unit."""
        return self.evaluate(self.prepare(unit))

    def record(self, result, stored: np.ndarray) -> None:
        """Count a unit's rows for the summary and the progress bar (rows a previous run
        stored are not counted again)."""
        q, _, _, _, classified = result
        m, bar, counts = self.campaign.n_inputs, self.bar, self.counts
        n = len(q)
        counts["all"] += n
        counts["critical_sdc"] += int(
            (classified["outcome"] == OUTCOMES.index(CRITICAL_SDC)).sum())
        new = ~stored[q]
        self.tally += np.bincount(classified["outcome"][new], minlength=len(OUTCOMES))
        bar.update(int(new.sum()))
        # every fault meets all m inputs: whole faults done = evaluations done // m
        bar.set_postfix_str(f"faults {bar.n // m}/{bar.total // m}, SDC-1 "
                            f"{counts['critical_sdc'] / max(counts['all'], 1):.1%}, "
                            f"at {self.plan.name}", refresh=False)

    def run(self, first: int, last: int) -> None:
        """Evaluate faults first..last-1 (local indices) on every input, skipping pairs a
        previous run stored; units are cut at fixed positions from `first`."""
        stored = self.stored_mask(last)
        todo = self.units(first, last, stored)
        if not todo:
            return
        store, plan = self.store, self.plan
        executor = self.campaign._executor
        if executor is not None:  # the units run on the Ray actors; this process commits
            def commit(unit: tuple[int, int], result) -> None:
                local, inputs, faults, classified = result
                store.add_arrays(faults, plan.offset + np.asarray(local), inputs, classified)
                self.record((np.arange(*unit), local, inputs, faults, classified), stored)

            executor.run_units(self.campaign.plans.index(plan), todo, commit,
                               lambda unit: f"{plan.name} pairs {unit[0]}-{unit[1]}")
            return
        self._build()
        with background_thread() as writer:
            pending: deque = deque()
            try:
                for result in prefetched(self.evaluate, prefetched(self.prepare, todo,
                                                                   SITE_PREFETCH),
                                         STEPS_AHEAD, low_priority=False):
                    _, local, inputs, faults, classified = result
                    # SQLite runs in the writer thread while TF computes the next batch; at
                    # most WRITES_AHEAD batches wait, each committed whole or not at all
                    if len(pending) >= WRITES_AHEAD:
                        pending.popleft().result()
                    pending.append(writer.submit(
                        store.add_arrays, faults, plan.offset + local, inputs, classified))
                    self.record(result, stored)
            finally:
                # what was computed is stored before anything else happens (Ctrl-C included)
                for write in pending:
                    write.result()


def run(config: dict[str, Any], source: Path, out: str | Path | None = None, *,
        resume: bool = False, quiet: bool = False, seed: int | None = None,
        workers: int | None = None, address: str | None = None,
        threads_per_worker: int | None = None) -> CampaignResult:
    """The layers target's side of the campaign contract (`classes_tool.targets`)."""
    from classes_tool.results.report import format_summary, target_estimates

    campaign = Campaign(dict(config), out=out, seed=seed, quiet=quiet, source=source,
                        workers=workers, address=address,
                        threads_per_worker=threads_per_worker)
    campaign.run(resume=resume)
    # the table is read back from the store only for a run that prints it
    summary = "" if quiet else format_summary(*target_estimates(campaign.db_path))
    return CampaignResult(db=campaign.db_path, summary=summary)


class LayerWorker:
    """A remote worker's copy of a campaign: built from the files sent to it (`paths`, by
    config field), with the driver's value ranges; computes the units of any target."""

    def __init__(self, config: CampaignConfig, ranges: dict[str, Any], paths: dict[str, Path]):
        changes = {field: str(path) if field == "error_model" else path
                   for field, path in paths.items()}
        self.campaign = Campaign(replace(config, **changes), quiet=True)
        self.campaign._prepare()
        self.ranges = ranges
        self.runs: dict[int, _TargetRun] = {}

    def compute(self, target: int, unit: tuple[int, int]):
        """(local faults, inputs, fault rows, outcome columns) of one unit of target number
        `target`."""
        run = self.runs.get(target)
        if run is None:
            plan = self.campaign.plans[target]
            run = self.runs[target] = _TargetRun(self.campaign, plan, self.ranges[plan.name])
        _, local, inputs, faults, classified = run.compute(tuple(unit))
        return local, inputs, faults, classified


def background_thread(low_priority: bool = True) -> ThreadPoolExecutor:
    """One worker thread. Side work (drawing sites, storing rows) runs at a lower scheduling
    priority where the OS allows it: TensorFlow splits each op of the step over all cores and
    waits for the slowest part, so side work that takes a core mid-op stalls the whole step;
    at low priority it fills the gaps instead (on two cores this saved about 5% of a small
    model's campaign). The thread that runs the steps keeps normal priority."""
    def lower_priority() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           min(19, os.getpriority(os.PRIO_PROCESS, 0) + BACKGROUND_NICENESS))
        except (AttributeError, OSError):  # not Linux/Unix, or not permitted: run as is
            pass

    return ThreadPoolExecutor(max_workers=1, initializer=lower_priority if low_priority else None)


def prefetched(fn, items: Iterable, depth: int, low_priority: bool = True) -> Iterator:
    """`map(fn, items)`, computing up to `depth` results ahead in one background thread (the
    campaign draws the sites of the next batches, in NumPy, while TensorFlow runs this one;
    and runs TensorFlow's next batch while the main thread hands this one to the writer)."""
    if depth <= 0:
        yield from map(fn, items)
        return
    items = iter(items)
    with background_thread(low_priority) as pool:
        ahead = deque(pool.submit(fn, item) for item in itertools.islice(items, depth))
        while ahead:
            result = ahead.popleft().result()
            for item in itertools.islice(items, 1):
                ahead.append(pool.submit(fn, item))
            yield result
