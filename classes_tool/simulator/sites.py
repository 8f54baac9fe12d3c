"""Injection sites: pre-generated (positions, values) pairs drawn from an error model.

Generation (documented in docs/error-models.md):
1. pick a spatial class with probability `frequency`;
2. pick one of its parameter sets with probability `conditional_frequency`, resolving every
   `{"RANDOM": [...]}` choice uniformly;
3. generate the class's distinct positions on the layer's real output shape (`patterns.py`);
4. pick a value-domain class with probability `frequency` and give each position a value class
   (`in_range`, `out_of_range`, `zero`, `nan`, `inf`), then a value.

Site i of target T is drawn from its own generator seeded with (seed, crc32(T), i), so a site
never depends on how many others are drawn, in which order, or by how many workers.

Speed: a campaign draws one site per fault, so everything that consumes no randomness is
prepared once per error model (`_Plan`: cumulative weights, merged parameter sets, value
domains) and each site makes only its draws, in the same order and with the same arguments as
the plain formulation, so site i keeps its exact positions and values. When it is built
(`classes-tool build-native`), `native_sites.py` draws the same sites in C, ~10x faster.
"""

from __future__ import annotations

import copy
import json
import math
import zlib
from bisect import bisect_right
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from classes_tool.errors import UserError
from classes_tool.files import atomic_path
from classes_tool.simulator import native_sites
from classes_tool.simulator.error_model import ErrorModel
from classes_tool.simulator.patterns import AFFINE_UNIFORM, GENERATORS, draw_positions, map_shape

#: Seeds are non-negative and fit in int64 (the ErrorSimulator keeps its seed in an int64 weight).
MAX_SEED = 2**63 - 1

# Out-of-range values lie beyond the normal range by a log-uniform excess between 1% and
# 10^6 times the range's width: from barely out of range to "very large".
OUT_OF_RANGE_EXPONENTS = (-2.0, 6.0)

#: How out-of-range values are drawn (docs/error-models.md, "Out-of-range values"):
#: "bounded" (the default): beyond the range by `w * 10^u`, u ~ U(-2, 6), always finite;
#: "bit_pattern": as the CLASSES reference simulator draws them, a uniformly random float32 bit
#: pattern, moved out of the range by w * U(2, 600) (either side) when it falls inside; about a
#: third to a half lie far beyond 10^6 w, some are NaN or infinite.
OUT_OF_RANGE_MODES = ("bounded", "bit_pattern")
BIT_PATTERN_SHIFT = (2.0, 600.0)


def check_out_of_range(mode: str) -> str:
    if mode not in OUT_OF_RANGE_MODES:
        raise UserError(f"out_of_range must be one of {', '.join(OUT_OF_RANGE_MODES)}, "
                        f"got {mode!r}")
    return mode


@dataclass
class SiteSet:
    """Sites of one target, stored ragged: site i is positions/values[splits[i]:splits[i+1]]."""

    target: str
    error_model: str
    shape: tuple[int, ...]
    value_range: tuple[float, float]
    seed: int
    positions: np.ndarray
    values: np.ndarray
    splits: np.ndarray
    patterns: list[str] = field(default_factory=list)
    out_of_range: str = "bounded"  # how its out-of-range values were drawn (OUT_OF_RANGE_MODES)

    def __len__(self) -> int:
        return len(self.splits) - 1

    @property
    def max_positions(self) -> int:
        return int(np.diff(self.splits).max()) if len(self) else 0

    def site(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = int(self.splits[i]), int(self.splits[i + 1])
        return self.positions[a:b], self.values[a:b]

    def meta(self) -> dict[str, Any]:
        return {"target": self.target, "error_model": self.error_model,
                "shape": list(self.shape), "value_range": list(self.value_range),
                "seed": self.seed, "patterns": self.patterns, "out_of_range": self.out_of_range}


class _Choice:
    """A weighted choice with its cumulative weights computed once (per error model).

    `pick` draws exactly what `searchsorted(cumsum(w), rng.random() * w[-1], side="right")` draws
    and returns the same index: bisect_right on the same cumulative sums (taken from np.cumsum) is
    searchsorted's definition for sorted sums. Unsorted sums (negative or NaN weights, only
    possible in unvalidated models) keep np.searchsorted."""

    __slots__ = ("cum", "total", "n", "sorted", "array")

    def __init__(self, weights: list[Any]) -> None:
        self.array = np.cumsum(np.asarray(weights, dtype=float))
        self.n = len(self.array)
        self.cum = self.array.tolist()
        self.total = self.cum[-1] if self.n else 0.0
        self.sorted = all(a <= b for a, b in zip(self.cum, self.cum[1:], strict=False))

    def pick(self, rng: np.random.Generator) -> int:
        if self.n == 0:
            raise IndexError("a weighted choice needs at least one entry")
        if self.total <= 0:
            return int(rng.integers(0, self.n))
        x = rng.random() * self.total
        i = bisect_right(self.cum, x) if self.sorted else int(
            np.searchsorted(self.array, x, side="right"))
        return min(i, self.n - 1)

    def pick_one(self, rng: np.random.Generator) -> int:
        """`pick` of a one-entry choice: 0 after the same single draw."""
        if self.total <= 0:
            rng.integers(0, 1)
        else:
            rng.random()
        return 0


GENERATED_CLASSES = ("in_range", "out_of_range", "zero", "nan", "inf")
IN_RANGE, OUT_OF_RANGE, ZERO, NAN, INF = range(len(GENERATED_CLASSES))


def _class_name(name: str) -> str:
    return "out_of_range" if name == "flip" else name  # sign flips (~1e-5) count as out of range


class _Domain:
    """A `domain_classes` entry, prepared once: class probabilities and their cumulative sums
    ("random"), or bin class ids and bins (merged per generated class as a dict would)."""

    __slots__ = ("random", "cum", "total", "ids", "bins", "kind")

    def __init__(self, domain: dict[str, Any]) -> None:
        self.random = "random" in domain
        if self.random:
            p = np.zeros(len(GENERATED_CLASSES))
            for k, v in domain["values"].items():
                p[GENERATED_CLASSES.index(_class_name(k))] += float(v)
            p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1 / len(p))
            self.cum, self.total = np.cumsum(p), p.sum()
            return
        bins = {_class_name(k): v for k, v in domain.items() if k not in ("count", "frequency")}
        self.ids = np.array([GENERATED_CLASSES.index(k) for k in bins], dtype=np.int64)
        self.bins = list(bins.values())
        # Shortcuts, only for plain bins 0 <= low <= high (what validation guarantees): one
        # bin ("single": its share is 1 whatever is drawn) or two ("pair": the split computed
        # with python floats, which is exact here, see `_split_pair`).
        plain = all(isinstance(v, (list, tuple)) and len(v) == 2
                    and all(isinstance(x, (int, float)) and np.isfinite(x) for x in v)
                    and 0 <= v[0] <= v[1] for v in self.bins)
        self.kind = {1: "single", 2: "pair"}.get(len(self.bins), "") if plain else ""
        if self.kind == "pair":  # as rng.uniform computes them: low, high - low in doubles
            self.bins = [(float(v[0]), float(v[1]) - float(v[0])) for v in self.bins]

    def layout(self, rng: np.random.Generator, n: int) -> list[tuple[int, int, Any]]:
        """Which positions get which value class: (class id, count, where) for each class
        present, in increasing class order; `where` is a boolean mask over the n positions,
        or None when that class has them all. Draws what `_value_class_ids` draws."""
        if self.random:
            ids = self.cum.searchsorted(rng.random(n) * self.total, side="right")
            return _layout(ids.clip(0, len(GENERATED_CLASSES) - 1))
        if self.kind == "single":
            rng.random()  # the only bin's share: one double, as rng.uniform(low, high) draws
            rng.permutation(n)  # the shuffle of n equal ids (the same draws for any content)
            return [(int(self.ids[0]), n, None)] if n else []
        if self.kind == "pair":
            (low0, span0), (low1, span1) = self.bins
            if AFFINE_UNIFORM:  # exactly rng.uniform(low, high), see patterns._uniform
                share = [low0 + span0 * rng.random(), low1 + span1 * rng.random()]
            else:
                share = [rng.uniform(low0, low0 + span0), rng.uniform(low1, low1 + span1)]
            counts = _split_pair(share, n)
            if counts is not None:
                # permutation(repeat(ids, counts)) is repeat(ids, counts)[permutation(n)]: the
                # shuffle's draws do not depend on the content, so the first bin's positions
                # are where permutation(n) < counts[0]
                order = rng.permutation(n)
                (i0, c0), (i1, c1) = sorted(zip(self.ids.tolist(), counts, strict=True))
                if not (c0 and c1):
                    return [(i0, n, None)] if c0 else [(i1, n, None)] if c1 else []
                first = order < counts[0]
                return ([(i0, c0, first), (i1, c1, ~first)] if i0 == int(self.ids[0])
                        else [(i0, c0, ~first), (i1, c1, first)])
            counts = _split(np.array(share), n)
        else:
            counts = _split(np.array([rng.uniform(*v) for v in self.bins]), n)
        return _layout(rng.permutation(np.repeat(self.ids, counts)))


def _layout(ids: np.ndarray) -> list[tuple[int, int, Any]]:
    """`_Domain.layout` from one class id per position."""
    counts = np.bincount(ids, minlength=len(GENERATED_CLASSES)).tolist()
    present = [(cls, k) for cls, k in enumerate(counts) if k]
    if len(present) == 1:
        return [(present[0][0], present[0][1], None)]
    return [(cls, k, ids == cls) for cls, k in present]


def _split(share: np.ndarray, n: int) -> np.ndarray:
    """Bin shares -> counts summing to n: normalised, floored, then largest remainders."""
    share = share / share.sum() if share.sum() > 0 else np.full(len(share), 1 / len(share))
    exact = share * n
    counts = np.floor(exact).astype(int)
    missing = n - counts.sum()
    if missing:
        counts[np.argsort(-(exact - counts))[:missing]] += 1  # largest remainders
    return counts


def _split_pair(share: list[float], n: int) -> list[int] | None:
    """`_split` of two shares >= +0 with python floats: their sum is a0 + a1 in any order, the
    other steps are one IEEE operation each. A tie of remainders, whose order depends on
    np.argsort's algorithm, returns None (`_split` decides)."""
    a0, a1 = share
    s = a0 + a1
    e0, e1 = (a0 / s * n, a1 / s * n) if s > 0 else (0.5 * n, 0.5 * n)
    counts = [math.floor(e0), math.floor(e1)]
    missing = n - (counts[0] + counts[1])
    if missing:
        r0, r1 = -(e0 - counts[0]), -(e1 - counts[1])
        if r0 < r1:
            order = [0, 1]
        elif r1 < r0:
            order = [1, 0]
        else:
            return None
        for j in order[:missing]:
            counts[j] += 1
    return counts


def _value_classes(rng: np.random.Generator, n: int, domain: dict[str, Any]) -> list[str]:
    """One value class per position, following a `domain_classes` entry."""
    return [GENERATED_CLASSES[i] for i in _value_class_ids(rng, n, domain)]


def _value_class_ids(rng: np.random.Generator, n: int, domain: dict[str, Any]) -> np.ndarray:
    """`_value_classes` as indices into GENERATED_CLASSES (what the site generator uses)."""
    ids = np.zeros(n, dtype=np.int64)
    for cls, _, where in _Domain(domain).layout(rng, n):
        ids[slice(None) if where is None else where] = cls
    return ids


def _bit_pattern_values(rng: np.random.Generator, n: int, low: float, high: float,
                        width: float) -> np.ndarray:
    """n out-of-range values as random float32 bit patterns (NaN and infinities included); one
    that falls inside [low, high] is moved out by width * U(2, 600) to either side."""
    with np.errstate(invalid="ignore"):  # NaN patterns stay NaN
        out = rng.integers(0, 2**32, size=n, dtype=np.uint32).view(np.float32).astype(np.float64)
    inside = np.flatnonzero((out >= low) & (out <= high))
    if len(inside):
        side = np.where(rng.random(len(inside)) < 0.5, -1.0, 1.0)
        out[inside] += side * width * rng.uniform(*BIT_PATTERN_SHIFT, len(inside))
    return out


def _class_values(rng: np.random.Generator, cls: int, n: int, low: float, high: float,
                  width: float, out_of_range: str = "bounded") -> Any:
    """The n values of one class (float64 array or scalar), drawn as `_values` draws them."""
    if cls == IN_RANGE:
        return rng.uniform(low, high, n) if high > low else low
    if cls == OUT_OF_RANGE and out_of_range == "bit_pattern":
        return _bit_pattern_values(rng, n, low, high, width)
    if cls == OUT_OF_RANGE:
        excess = width * 10.0 ** rng.uniform(*OUT_OF_RANGE_EXPONENTS, n)
        return np.where(rng.random(n) < 0.5, high + excess, low - excess)
    if cls == NAN:
        return np.nan
    if cls == INF:
        return np.where(rng.random(n) < 0.5, np.inf, -np.inf)
    return 0.0  # zero


def _values(rng: np.random.Generator, layout: list[tuple[int, int, Any]], low: float,
            high: float, n: int, out_of_range: str = "bounded") -> np.ndarray:
    """A value per position for its class (`_Domain.layout`), drawn class by class in increasing
    class order."""
    width = max(high - low, abs(high), abs(low), 1e-3)
    if len(layout) == 1:
        out = np.empty(n, dtype=np.float32)
        with np.errstate(over="ignore"):  # a bit pattern moved beyond float32: infinite
            out[:] = _class_values(rng, layout[0][0], n, low, high, width, out_of_range)
        return out
    out = np.zeros(n, dtype=np.float32)
    for cls, k, where in layout:
        if cls != ZERO:
            with np.errstate(over="ignore"):
                out[where] = _class_values(rng, cls, k, low, high, width, out_of_range)
    return out


class _Plan:
    """Everything `draw_site` needs from an error model that consumes no randomness: class
    names, cumulative weights, merged parameter sets with their RANDOM entries, domains."""

    def __init__(self, model_data: dict[str, Any]) -> None:
        classes = {k: v for k, v in model_data.items() if not k.startswith("_")}
        self.names = list(classes)
        self.choice = _Choice([classes[n]["frequency"] for n in self.names])
        self.classes = []
        for name in self.names:
            spec = classes[name]
            params = []
            for chosen in spec["parameters"]:
                merged = {**chosen.get("stats", {}), **chosen.get("keys", {})}
                random = [(k, v["RANDOM"]) for k, v in merged.items()
                          if isinstance(v, dict) and "RANDOM" in v]
                params.append((merged, random))
            self.classes.append((
                name, GENERATORS[name] if name in GENERATORS else _unknown(name),
                _Choice([p["conditional_frequency"] for p in spec["parameters"]]), params,
                _Choice([d["frequency"] for d in spec["domain_classes"]]),
                [_Domain(d) for d in spec["domain_classes"]]))

    def draw(self, rng: np.random.Generator, hwc: tuple[int, int, int], low: float, high: float,
             out_of_range: str = "bounded") -> tuple[str, np.ndarray, np.ndarray]:
        name, generate, param_choice, params, domain_choice, domains = \
            self.classes[self.choice.pick(rng)]
        merged, random = params[param_choice.pick(rng) if param_choice.n > 1 else
                                param_choice.pick_one(rng)]

        def resolved() -> dict[str, Any]:
            """Each {"RANDOM": [...]} resolved uniformly, in the merged dict's order."""
            if not random:
                return merged
            out = dict(merged)
            for key, choices in random:
                out[key] = choices[int(rng.integers(0, len(choices)))]
            return out

        positions = draw_positions(name, generate, rng, *hwc, resolved)
        domain = domains[domain_choice.pick(rng) if domain_choice.n > 1 else
                         domain_choice.pick_one(rng)]
        n = len(positions)
        return name, positions, _values(rng, domain.layout(rng, n), low, high, n, out_of_range)


def _unknown(name: str):
    def generate(*args):
        raise KeyError(name)
    return generate


_PLANS: dict[int, tuple[dict[str, Any], _Plan]] = {}


def _plan(model: ErrorModel) -> _Plan:
    """The prepared plan of `model`, cached by object id and checked against a deep copy of the
    data it was built from (a dict comparison, ~10 us), so a mutated or new model never reuses a
    stale plan."""
    hit = _PLANS.get(id(model))
    if hit is not None and hit[0] == model.data:
        return hit[1]
    plan = _Plan(model.data)
    if len(_PLANS) >= 16:
        _PLANS.pop(next(iter(_PLANS)))
    _PLANS[id(model)] = (copy.deepcopy(model.data), plan)
    return plan


def draw_site(model: ErrorModel, shape: tuple[int, ...], value_range: tuple[float, float],
              rng: np.random.Generator, out_of_range: str = "bounded"
              ) -> tuple[str, np.ndarray, np.ndarray]:
    """One site: (spatial class, distinct flat positions, values)."""
    low, high = value_range
    return _plan(model).draw(rng, map_shape(shape), low, high, check_out_of_range(out_of_range))


def target_seed(seed: int, target: str) -> list[int]:
    return [int(seed), zlib.crc32(target.encode())]


def _site_rngs(seed: int, target: str, first: int, count: int):
    """The generators of sites first .. first+count-1: default_rng([seed, crc32(target), i])."""
    prefix = target_seed(seed, target)
    for i in range(first, first + count):
        yield np.random.default_rng([*prefix, i])


def generate_sites(model: ErrorModel, target: str, shape: tuple[int, ...],
                   value_range: tuple[float, float], count: int, seed: int, first: int = 0,
                   out_of_range: str = "bounded") -> SiteSet:
    """Draw `count` sites for `target` (a node whose sample output shape is `shape`).

    Site i depends only on (seed, target, i), so sites `first .. first+count-1` can be drawn
    in pieces (the campaign draws each batch's sites while the previous batch runs).
    `out_of_range` ("bounded" or "bit_pattern", see OUT_OF_RANGE_MODES) says how values of the
    out-of-range class are drawn."""
    check_out_of_range(out_of_range)
    if count < 1:
        raise UserError(f"the number of sites must be at least 1, got {count}")
    if not 0 <= int(seed) <= MAX_SEED:
        raise UserError(f"the seed must be an integer in [0, 2**63 - 1], got {seed}")
    low, high = float(value_range[0]), float(value_range[1])
    if not (np.isfinite(low) and np.isfinite(high) and low <= high):
        raise UserError(f"invalid normal value range for {target}: [{low}, {high}]")
    plan, hwc = _plan(model), map_shape(shape)
    drawn = None if out_of_range != "bounded" else native_sites.draw(
        plan, hwc, low, high, seed, target, first, count)
    if drawn is not None:  # the compiled generator, when built: the same sites, faster
        return SiteSet(target=target, error_model=model.name,
                       shape=tuple(int(d) for d in shape), value_range=(low, high),
                       seed=int(seed), positions=drawn[0], values=drawn[1], splits=drawn[2],
                       patterns=drawn[3], out_of_range=out_of_range)
    positions, values, lengths, patterns = [], [], [], []
    for rng in _site_rngs(seed, target, first, count):
        pattern, pos, val = plan.draw(rng, hwc, low, high, out_of_range)
        positions.append(pos)
        values.append(val)
        lengths.append(len(pos))
        patterns.append(pattern)
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return SiteSet(target=target, error_model=model.name, shape=tuple(int(d) for d in shape),
                   value_range=(low, high), seed=int(seed),
                   positions=np.concatenate(positions).astype(np.int32),
                   values=np.concatenate(values).astype(np.float32), splits=splits,
                   patterns=patterns, out_of_range=out_of_range)


def save_sites(path: str | Path, site_sets: list[SiteSet]) -> None:
    """Write sites to an `.npz` (atomically): arrays per target plus a JSON description."""
    arrays: dict[str, np.ndarray] = {}
    meta = []
    for i, s in enumerate(site_sets):
        arrays[f"t{i}_positions"] = s.positions
        arrays[f"t{i}_values"] = s.values
        arrays[f"t{i}_splits"] = s.splits
        meta.append(s.meta())
    arrays["meta"] = np.array(json.dumps(meta))
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def load_sites(path: str | Path) -> list[SiteSet]:
    """Read a sites file written by `save_sites`, every array and meta field checked: a site
    outside its layer's output, splits that decrease, values that are not floats or a meta
    that does not describe the arrays is one line here, not a failure at inference."""
    from classes_tool.data import read_npz

    path = Path(path)
    if not path.is_file():
        raise UserError(f"sites file not found: {path}")
    data = read_npz(path, "sites", text=("meta",))
    bad = f"{path} is not a sites file written by classes-tool"
    if "meta" not in data or data["meta"].ndim != 0 or data["meta"].dtype.kind != "U":
        raise UserError(f"{bad}: no JSON 'meta' text")
    try:
        meta = json.loads(str(data["meta"]))
    except (ValueError, RecursionError) as exc:
        raise UserError(f"{bad}: its meta is not JSON ({exc})") from None
    if not isinstance(meta, list) or not all(isinstance(m, dict) for m in meta):
        raise UserError(f"{bad}: its meta is not a list of target descriptions")
    expected = {f"t{i}_{part}" for i in range(len(meta))
                for part in ("positions", "values", "splits")} | {"meta"}
    if set(data) != expected:
        extra, missing = sorted(set(data) - expected), sorted(expected - set(data))
        raise UserError(f"{bad}: arrays {'missing ' + ', '.join(missing) if missing else ''}"
                        f"{'; ' if extra and missing else ''}"
                        f"{'unexpected ' + ', '.join(extra) if extra else ''}")
    return [_checked_site_set(m, i, data, bad) for i, m in enumerate(meta)]


def _checked_site_set(m: dict[str, Any], i: int, data: dict[str, np.ndarray], bad: str
                      ) -> SiteSet:
    """The site set `i` of a sites file, after checking its meta against its arrays."""
    where = f"{bad}: target {i}"
    fields = {"target": str, "error_model": str, "shape": list, "value_range": list,
              "seed": int, "patterns": list}
    for key, kind in fields.items():
        if not isinstance(m.get(key), kind) or isinstance(m.get(key), bool):
            raise UserError(f"{where}: meta '{key}' must be a {kind.__name__}, got "
                            f"{m.get(key)!r}")
    shape = m["shape"]
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                            for d in shape):
        raise UserError(f"{where}: meta 'shape' must list positive integers, got {shape!r}")
    low_high = m["value_range"]
    if not (len(low_high) == 2 and all(isinstance(v, int | float) and not isinstance(v, bool)
                                       and math.isfinite(v) for v in low_high)
            and low_high[0] <= low_high[1]):
        raise UserError(f"{where}: meta 'value_range' must be [low, high], finite, low <= "
                        f"high, got {low_high!r}")
    if not 0 <= m["seed"] <= MAX_SEED:
        raise UserError(f"{where}: meta 'seed' must lie in [0, 2**63 - 1], got {m['seed']!r}")
    positions, values, splits = (data[f"t{i}_{part}"] for part in
                                 ("positions", "values", "splits"))
    for name, array, kinds in (("positions", positions, "iu"), ("values", values, "f"),
                               ("splits", splits, "iu")):
        if array.ndim != 1 or array.dtype.kind not in kinds:
            raise UserError(f"{where}: {name} must be a 1-D array of "
                            f"{'integers' if kinds == 'iu' else 'floats'}, got shape "
                            f"{array.shape} of {array.dtype}")
    if len(values) != len(positions):
        raise UserError(f"{where}: {len(positions)} positions but {len(values)} values")
    size = math.prod(shape)
    if len(splits) < 1 or splits[0] != 0 or splits[-1] != len(positions) or (
            np.diff(splits.astype(np.int64)) < 0).any():
        raise UserError(f"{where}: splits must rise from 0 to the number of positions "
                        f"({len(positions)}) without decreasing")
    if len(positions) and (positions.min() < 0 or positions.max() >= size):
        k = int(np.argmax((positions < 0) | (positions >= size)))
        raise UserError(f"{where} ('{m['target']}'): position {int(positions[k])} lies outside "
                        f"its output of {size} elements (shape {tuple(shape)})")
    out_of_range = m.get("out_of_range", "bounded")  # files written before it was recorded
    if out_of_range not in OUT_OF_RANGE_MODES:
        raise UserError(f"{where}: meta 'out_of_range' must be one of "
                        f"{', '.join(OUT_OF_RANGE_MODES)}, got {out_of_range!r}")
    patterns = m["patterns"]
    if patterns and (len(patterns) != len(splits) - 1 or not all(isinstance(t, str)
                                                                  for t in patterns)):
        raise UserError(f"{where}: meta 'patterns' must name one pattern per site "
                        f"({len(splits) - 1}), got {len(patterns)}")
    return SiteSet(target=m["target"], error_model=m["error_model"], shape=tuple(shape),
                   value_range=(float(low_high[0]), float(low_high[1])), seed=m["seed"],
                   positions=positions.astype(np.int64, copy=False)
                   if positions.dtype.kind == "u" else positions,
                   values=values, splits=splits, patterns=list(patterns),
                   out_of_range=out_of_range)
