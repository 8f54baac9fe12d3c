"""Rates and intervals of stored campaign results, computed the way the faults were sampled.

One place turns rows of the result store into the numbers every report, summary and stopping
rule prints: per group of faults (a target, a pattern, a param value, all of them), the
per-evaluation rate of each outcome with its interval, its design effect and effective number of
independent observations, and the per-fault rate (share of faults with the outcome on at least
one input) with its interval. `intervals` holds the statistics; this module holds the reading
and the choice of interval for the design:

- the sampling unit is the fault: a fault's rows are summarised into its rate over its inputs;
- a group inside one target uses the betting interval over faults in draw order (with the
  finite-population correction when the target's faults were drawn without replacement);
- a group that spans several targets is a stratified sample (each target sized on its own), so
  its interval is the size-weighted combination of the per-target intervals
  (`intervals.stratified_interval`, conservative);
- with `inputs: sample` in the design the inputs are a random sample too (crossed design);
- only *complete* faults (every input evaluated) enter the rates and intervals: a campaign that
  was interrupted mid-fault reports on the faults it finished.

The design comes from the campaign's meta (`design_from_meta`): layers campaigns draw faults
independently (every site's values are random, the population is effectively infinite), systolic
campaigns draw them without replacement from a finite fault space.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from classes_tool.results.adaptive import AdaptiveSizing, schedule, sizing_from_meta
from classes_tool.results.intervals import (
    NO_DATA,
    Interval,
    crossed_interval,
    fault_mean_interval,
    projected_bets,
    share_interval,
    stratified_interval,
)
from classes_tool.results.outcomes import OUTCOMES

#: The rates reported per group: the four outcome classes and the SDC-5 flag.
RATES: tuple[str, ...] = (*OUTCOMES, "sdc5")
INPUTS_FIXED, INPUTS_SAMPLE = "fixed", "sample"


@dataclass(frozen=True)
class Design:
    """How a campaign sampled: what the intervals must account for."""

    confidence: float = 0.95
    #: faults drawn without replacement from each target's population (systolic); else
    #: independent draws
    without_replacement: bool = False
    population: dict[str, int] | None = None
    inputs: str = INPUTS_FIXED  # or INPUTS_SAMPLE: the inputs are a random sample
    anytime: bool = False  # adaptive sizing: intervals valid at a data-dependent stop

    def describe(self) -> str:
        faults = ("drawn without replacement from each target's fault population"
                  if self.without_replacement else "drawn independently from each target's "
                  "fault distribution")
        inputs = ("a random sample of a larger data set (their variance is included)"
                  if self.inputs == INPUTS_SAMPLE else
                  "a fixed set: the rates are about these inputs")
        sizing = ("adaptive sizing: the intervals are confidence sequences, valid at the "
                  "data-dependent number of faults the campaign stopped at" if self.anytime
                  else "fixed sizing")
        return f"faults {faults}; inputs {inputs}; {sizing}"


def design_from_meta(meta: dict[str, Any], confidence: float | None = None) -> Design:
    """The sampling design of a stored campaign (stores written before designs were stored
    read as independent faults on fixed inputs, systolic ones as drawn without replacement)."""
    if confidence is None:
        stored = meta.get("confidence")
        confidence = float(stored) if isinstance(stored, (int, float)) and not isinstance(
            stored, bool) and 0 < stored < 1 else 0.95
    population = meta.get("population")
    population = ({str(k): int(v) for k, v in population.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}
                  if isinstance(population, dict) else None)
    without = meta.get("target") == "systolic"
    inputs = meta.get("input_set", INPUTS_FIXED)
    return Design(confidence=float(confidence), without_replacement=without,
                  population=population or None,
                  inputs=INPUTS_SAMPLE if inputs == INPUTS_SAMPLE else INPUTS_FIXED,
                  anytime=meta.get("sizing") == "adaptive")


@dataclass
class FaultTable:
    """Per-fault counts of one group, in draw (fault index) order."""

    faults: np.ndarray  # fault indices
    targets: np.ndarray  # target of each fault (object array)
    counts: np.ndarray  # (n, len(RATES)) rows with each outcome / the SDC-5 flag
    evaluations: np.ndarray  # (n,) rows per fault
    #: crossed designs only: {target: (m, len(RATES)) counts per input over complete faults}
    input_sums: dict[str, np.ndarray] | None = None

    def take(self, index) -> FaultTable:
        """The faults at `index` (a mask or a slice), with the same input sums."""
        return FaultTable(self.faults[index], self.targets[index], self.counts[index],
                          self.evaluations[index], self.input_sums)


def read_fault_tables(conn: sqlite3.Connection, expr: str, args: Sequence[Any] = (),
                      where: str = "", where_args: Sequence[Any] = ()) -> dict[Any, FaultTable]:
    """{group value: FaultTable} for the groups `expr` (SQL over the faults table `f`) makes."""
    frm = "FROM results r JOIN faults f ON f.fault_index = r.fault_index"
    cond = f"WHERE {where}" if where else ""
    per_fault: dict[int, list] = {}
    for g, fault, target, outcome, k, sdc5 in conn.execute(
            f"SELECT {expr} AS g, r.fault_index, f.target, r.outcome, COUNT(*), SUM(r.sdc5) "
            f"{frm} {cond} GROUP BY r.fault_index, r.outcome", (*args, *where_args)):
        entry = per_fault.get(fault)
        if entry is None:
            entry = per_fault[fault] = [g, target, np.zeros(len(RATES), np.int64), 0]
        entry[2][OUTCOMES.index(outcome)] += k
        entry[2][-1] += int(sdc5 or 0)
        entry[3] += k
    groups: dict[Any, list] = {}
    for fault in sorted(per_fault):
        g, target, counts, evals = per_fault[fault]
        groups.setdefault(g, []).append((fault, target, counts, evals))
    tables = {}
    for g, items in groups.items():
        tables[g] = FaultTable(
            faults=np.array([i[0] for i in items], np.int64),
            targets=np.array([i[1] for i in items], dtype=object),
            counts=np.array([i[2] for i in items], np.int64).reshape(-1, len(RATES)),
            evaluations=np.array([i[3] for i in items], np.int64))
    return tables


def read_input_sums(conn: sqlite3.Connection, expr: str, args: Sequence[Any], inputs: int,
                    complete: dict[Any, np.ndarray]) -> dict[Any, dict[str, np.ndarray]]:
    """{group: {target: (inputs, len(RATES)) counts per input over its complete faults}}."""
    sums: dict[Any, dict[str, np.ndarray]] = {g: {} for g in complete}
    keep = {g: set(c.tolist()) for g, c in complete.items()}
    for g, fault, target, inp, outcome, sdc5 in conn.execute(
            f"SELECT {expr} AS g, r.fault_index, f.target, r.input_index, r.outcome, r.sdc5 "
            "FROM results r JOIN faults f ON f.fault_index = r.fault_index", tuple(args)):
        if g in keep and fault in keep[g] and 0 <= inp < inputs:
            per = sums[g].get(target)
            if per is None:
                per = sums[g][target] = np.zeros((inputs, len(RATES)), np.int64)
            per[inp, OUTCOMES.index(outcome)] += 1
            per[inp, -1] += int(sdc5 or 0)
    return sums


def estimate(table: FaultTable, design: Design, inputs: int | None = None,
             stages: Sequence[int] | None = None) -> dict[str, Any]:
    """The row of one group: counts, and per rate its per-evaluation and per-fault estimates.

    `inputs`: the number of inputs every fault meets (default: the most any fault has).
    `stages`: the stage ends of an adaptive target (see `adaptive.schedule`); a group of an
    adaptive campaign without them (a pattern, a param value) gets confidence sequences."""
    m = int(inputs if inputs is not None else (table.evaluations.max() if len(table.faults)
                                               else 0))
    complete = table.evaluations == m
    row: dict[str, Any] = {"faults": int(len(table.faults)),
                           "evaluations": int(table.evaluations.sum()),
                           "complete_faults": int(complete.sum()), "inputs": m}
    for j, name in enumerate(RATES):
        row[name] = int(table.counts[:, j].sum())
    targets = table.targets[complete]
    names = list(dict.fromkeys(targets.tolist()))
    if len(names) > 1:  # a stratified sample: one estimate per target, combined
        return _combined(table, design, m, names)
    population = None
    if design.without_replacement and design.population and len(targets):
        population = design.population.get(str(targets[0]))
    input_sums = (None if table.input_sums is None or not names else
                  table.input_sums.get(names[0]))
    n = int(complete.sum())
    margins = []
    for j, name in enumerate(RATES):
        k = table.counts[complete, j]
        if n == 0 or m == 0:
            per_eval = per_fault = NO_DATA
        else:
            x = k / m
            if design.inputs == INPUTS_SAMPLE and input_sums is not None:
                per_eval = crossed_interval(k, input_sums[:, j], design.confidence)
            else:
                per_eval = fault_mean_interval(x, m, design.confidence, population,
                                               design.anytime and stages is None, stages)
            per_fault = share_interval(k > 0, design.confidence, population,
                                       design.anytime and stages is None, stages)
        row[f"{name}_rate"] = per_eval.estimate
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = per_eval.low, per_eval.high
        row[f"{name}_design_effect"] = per_eval.design_effect
        row[f"{name}_effective_n"] = per_eval.effective_n
        row[f"{name}_faults_hit"] = int((k > 0).sum())
        row[f"{name}_fault_rate"] = per_fault.estimate
        row[f"{name}_fault_ci_low"] = per_fault.low
        row[f"{name}_fault_ci_high"] = per_fault.high
        if name in OUTCOMES:
            margins.append(per_eval.half_width)
    row["margin_achieved"] = max(margins) if margins and n else math.nan
    return row


def _combined(table: FaultTable, design: Design, m: int, names: list) -> dict[str, Any]:
    """`estimate` of a group spanning several targets: each target's part estimated on its own
    (a stratum), then combined by `stratified_interval`."""
    parts = []
    for name in names:
        parts.append(estimate(table.take(table.targets == name), design, m))
    row: dict[str, Any] = {"faults": int(len(table.faults)),
                           "evaluations": int(table.evaluations.sum()),
                           "complete_faults": int(sum(p["complete_faults"] for p in parts)),
                           "inputs": m}
    sizes = [p["complete_faults"] for p in parts]
    margins = []
    for j, name in enumerate(RATES):
        row[name] = int(table.counts[:, j].sum())
        for kind, prefix in (("", f"{name}_"), ("fault_", f"{name}_fault_")):
            pieces = [Interval(p[f"{name}_{kind}rate"], p[f"{prefix}ci_low"],
                               p[f"{prefix}ci_high"], math.nan,
                               p.get(f"{name}_effective_n", math.nan) if not kind else
                               p["complete_faults"]) for p in parts]
            combined = stratified_interval(pieces, sizes)
            row[f"{name}_{kind}rate"] = combined.estimate
            row[f"{prefix}ci_low"], row[f"{prefix}ci_high"] = combined.low, combined.high
            if not kind:
                row[f"{name}_effective_n"] = combined.effective_n
                evaluations = sum(sizes) * m
                row[f"{name}_design_effect"] = (evaluations / combined.effective_n
                                                if combined.effective_n else math.nan)
                if name in OUTCOMES:
                    margins.append(combined.half_width)
        row[f"{name}_faults_hit"] = int(sum(p[f"{name}_faults_hit"] for p in parts))
    row["margin_achieved"] = max(margins) if margins and sum(sizes) else math.nan
    return row


def leading_complete(table: FaultTable, inputs: int) -> int:
    """How many of the group's first faults (consecutive indices from its first) met every
    input: the part of an adaptive target whose stages are settled."""
    if not len(table.faults):
        return 0
    consecutive = table.faults - table.faults[0] == np.arange(len(table.faults))
    good = consecutive & (table.evaluations == inputs)
    return int(len(good) if good.all() else np.argmin(good))


def target_schedule(table: FaultTable, design: Design, sizing: AdaptiveSizing, inputs: int
                    ) -> tuple[list[int], bool]:
    """The stages an adaptive target ran (replayed from its rows, as the campaign decided
    them) and whether it finished."""
    def look(stages: list[int]) -> tuple[float, float]:
        part = table.take(slice(stages[-1]))
        row = estimate(part, design, inputs, stages)
        bets = 0.0
        if len(stages) == 1:  # the pilot: how many bets its spread asks for
            complete = part.evaluations == inputs
            bets = max(projected_bets(part.counts[complete, j] / inputs, sizing.margin,
                                      design.confidence) for j in range(len(OUTCOMES)))
        return row["margin_achieved"], bets

    return schedule(sizing, leading_complete(table, inputs), look)


def stored_schedule(conn: sqlite3.Connection, target: str, first_fault: int, last_fault: int,
                    design: Design, sizing: AdaptiveSizing, inputs: int
                    ) -> tuple[list[int], bool]:
    """`target_schedule` of the target whose faults have global indices first_fault ..
    last_fault - 1, read from the store: what a campaign asks before each stage (the pilot
    when nothing is stored yet)."""
    table = read_fault_tables(conn, "f.target", where="r.fault_index >= ? AND r.fault_index < ?",
                              where_args=(first_fault, last_fault)).get(target)
    if table is None:
        return [sizing.pilot], False
    return target_schedule(table, design, sizing, inputs)


def group_estimates(conn: sqlite3.Connection, design: Design, expr: str,
                    args: Sequence[Any] = (), order: str = "value",
                    inputs: int | None = None, meta: dict[str, Any] | None = None
                    ) -> list[dict[str, Any]]:
    """One `estimate` row per group of `expr`, with `group` set; ordered by the group value
    ('value') or by the first fault of each group ('first', graph order for targets).

    With `meta` of an adaptive campaign and `expr` grouping by target, each target's stages
    are replayed from its rows (`target_schedule`) and its intervals bet on them."""
    tables = read_fault_tables(conn, expr, args)
    if inputs is None:
        inputs = max((int(t.evaluations.max()) for t in tables.values() if len(t.faults)),
                     default=0)
    if design.inputs == INPUTS_SAMPLE and tables:
        complete = {g: t.faults[t.evaluations == inputs] for g, t in tables.items()}
        for g, sums in read_input_sums(conn, expr, args, inputs, complete).items():
            tables[g].input_sums = sums
    rows = []
    for g, table in tables.items():
        stages = None
        sizing = (sizing_from_meta(meta, str(g)) if meta is not None and expr == "f.target"
                  else None)
        if sizing is not None and design.inputs == INPUTS_FIXED:
            stages, finished = target_schedule(table, design, sizing, inputs)
        row = {"group": "(absent)" if g is None else g,
               **estimate(table, design, inputs, stages), "_first": int(table.faults[0])}
        if stages is not None:
            row["stages"] = stages
            row["finished"] = finished
        rows.append(row)
    if order == "first":
        rows.sort(key=lambda r: r["_first"])
    else:
        rows.sort(key=lambda r: _sort_key(r["group"]))
    for r in rows:
        del r["_first"]
    return rows


def _sort_key(value: Any) -> tuple:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value, "")
    return (1, 0, str(value))
