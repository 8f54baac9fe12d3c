"""Adaptive sizing: run a target's faults in rounds and stop once its intervals are narrow enough.

Leveugle's formula sizes a campaign for the worst case p = 0.5 and for independent trials; most
targets' rates sit far from 0.5, and the per-fault spread is what sets the precision. Adaptive
sizing runs a pilot round, then larger rounds, and stops a target when the largest half-width of
its four per-evaluation outcome intervals is at most the margin asked for (or its fault budget
is spent).

Why the stop does not bias the intervals: an adaptive campaign's intervals are confidence
*sequences* (`intervals.betting_interval(anytime=True)`), which cover the true rate at every
number of faults simultaneously with the stated probability (Ville's inequality on the betting
martingale), so they also cover at a number of faults chosen by looking at the data. The tests
check this by simulating the whole loop.

Determinism: each decision uses only the stored rows of faults before the round boundary, which
are themselves determined by (seed, target, fault index); a resumed campaign therefore takes the
same decisions and ends with the same rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from classes_tool.results.stats import leveugle_sample_size

#: Growth of an extension stage over the faults run so far: at least GROWTH_MIN, so that a
#: target needs few stages, and at most GROWTH_MAX, so that a projection cannot overshoot by much.
GROWTH_MIN, GROWTH_MAX = 1.25, 2.0
#: The second stage runs this share of the bets the pilot projects: a small pilot misjudges a
#: rate of a few percent by up to twice, and overshooting costs more than the slightly wider
#: interval of one more stage (measured by simulating campaigns: 0.8 used the fewest faults of
#: 0.6 to 1.1 on targets near 5% and near 50%).
PROJECTION_SLACK = 0.8
#: Later stages are projected from a measured half-width, which is reliable: a little slack.
EXT_SLACK = 1.05
MIN_PILOT = 32
MIN_STAGE = 16  # fewest faults a stage adds


@dataclass(frozen=True)
class AdaptiveSizing:
    """The stages of one target: pilot size, cap, the margin to reach at `confidence`."""

    margin: float
    confidence: float
    pilot: int
    cap: int

    def next_end(self, stages: Sequence[int], half_width: float, bets: float) -> int | None:
        """Where the next stage ends, or None when the target is finished: its interval
        reached the margin at the end of a betting stage, or its cap is spent.

        After the pilot (which does not bet) the second stage holds the `bets` the pilot's
        spread projects (`intervals.projected_bets`, the largest over the outcomes). A later
        stage is sized from the shortfall of the one before (half-widths shrink like
        1 / sqrt(bets))."""
        done = int(stages[-1])
        if done >= self.cap:
            return None
        if len(stages) > 1 and math.isfinite(half_width) and half_width <= self.margin:
            return None
        if len(stages) == 1:
            end = done + max(MIN_STAGE, math.ceil(PROJECTION_SLACK * max(bets, 0.0)))
        else:
            bets = done - self.pilot
            ratio = (half_width / self.margin) ** 2 if math.isfinite(half_width) else GROWTH_MAX
            end = self.pilot + math.ceil(bets * ratio * EXT_SLACK)
            end = min(math.ceil(done * GROWTH_MAX), max(math.ceil(done * GROWTH_MIN), end))
        return min(self.cap, max(done + MIN_STAGE, end))


def schedule(sizing: AdaptiveSizing, complete: int,
             look: Callable[[list[int]], tuple[float, float]]) -> tuple[list[int], bool]:
    """The stage ends decided from the data so far, and whether the target is finished.

    `complete`: how many of the target's first faults are fully evaluated; `look(stages)`:
    (largest half-width of the four outcome intervals, bets the next stage needs by the
    pilot's spread: used after the pilot only) over the faults before `stages[-1]`, with the
    intervals betting on `stages`. The last end returned
    is the one to run up to when the target is not finished. The runner and the report both
    call this, so they agree on the stages by construction."""
    stages = [sizing.pilot]
    while True:
        if complete < stages[-1]:
            return stages, False
        half_width, bets = look(stages)
        following = sizing.next_end(stages, half_width, bets)
        if following is None:
            return stages, True
        stages.append(following)


def default_pilot(population: int, margin: float, confidence: float) -> int:
    """A pilot of a fortieth of the fixed (p = 0.5) size, at least MIN_PILOT faults: it does
    not bet, so it is kept small; it only has to show the spread of the target's faults (in
    simulated campaigns near 5%, a fortieth used the fewest faults of 1/64 to 1/10)."""
    fixed = leveugle_sample_size(population, margin, confidence, 0.5)
    return min(population, max(MIN_PILOT, math.ceil(fixed / 40)))


def sizing_for(population: int, margin: float, confidence: float, pilot: int | None = None,
               max_faults: int | None = None) -> AdaptiveSizing:
    """The adaptive sizing of a target of `population` faults."""
    cap = population if max_faults is None else min(population, max_faults)
    first = default_pilot(population, margin, confidence) if pilot is None else pilot
    return AdaptiveSizing(margin=margin, confidence=confidence, pilot=max(1, min(first, cap)),
                          cap=max(1, cap))


def sizing_from_meta(meta: dict, target: str) -> AdaptiveSizing | None:
    """The sizing a stored adaptive campaign used for `target` (None if not adaptive)."""
    if meta.get("sizing") != "adaptive":
        return None
    try:
        return AdaptiveSizing(margin=float(meta["margin"]), confidence=float(meta["confidence"]),
                              pilot=int(meta["pilot_faults_per_target"][target]),
                              cap=int(meta["max_faults_per_target"][target]))
    except (KeyError, TypeError, ValueError):
        return None
