"""Injection-site generation: `generate_sites` versus the plain per-site formulation it replaced.

    python bench/sites.py            # target: ratio >= 3 on conv_gemm (8, 8, 16)

`generate_sites` is timed twice: the Python generator (CLASSES_TOOL_NATIVE=0) and, when
`classes-tool build-native` has built it, the C generator (native_sites.py); the ratio line
reports the faster of the two that is available, and the native/python ratio beside it.

The baseline is kept below (`reference_sites`): one generator per site, weights, parameter sets
and value domains re-derived for every site, one small NumPy array per pattern piece merged with
np.unique. It is the plain formulation of the generators as they were before every site was made
to satisfy its class's definition (docs/error-models.md), so it now draws other sites: it is a
timing baseline only. The C generator and the Python one must give the same bits (positions,
values, splits, pattern names), which is asserted on every case before timing. One line per
case, then the summary line for the campaign's case (conv_gemm on the digits CNN's conv2,
(8, 8, 16)).
"""

from __future__ import annotations

import os
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from common import interleaved  # noqa: E402

from classes_tool.simulator import native_sites  # noqa: E402
from classes_tool.simulator.error_model import available_error_models, load_error_model  # noqa: E402
from classes_tool.simulator.patterns import map_shape  # noqa: E402
from classes_tool.simulator.sites import generate_sites  # noqa: E402

# --- the plain formulation (what generate_sites did before it was optimised) ---------------

GENERATED = ("in_range", "out_of_range", "zero", "nan", "inf")


def _weighted(rng, weights):
    w = np.cumsum(np.asarray(weights, dtype=float))
    if w[-1] <= 0:
        return int(rng.integers(0, len(w)))
    return min(int(np.searchsorted(w, rng.random() * w[-1], side="right")), len(w) - 1)


def _resolve(value, rng):
    if isinstance(value, dict) and "RANDOM" in value:
        choices = value["RANDOM"]
        return choices[int(rng.integers(0, len(choices)))]
    return value


def _fraction(rng, pct_bin, default=1.0):
    if pct_bin is None:
        return default
    low, high = pct_bin
    return float(rng.uniform(low, high)) / 100.0


def _count(rng, n, pct_bin, cap=None):
    k = int(round(n * _fraction(rng, pct_bin)))
    if cap is not None:
        k = min(k, int(cap))
    return int(min(max(k, 1), n))


def _int_in(rng, low, high, default=1):
    low = default if low is None else int(low)
    high = low if high is None else int(high)
    return int(rng.integers(min(low, high), max(low, high) + 1))


def _spaced(rng, n, k, skip):
    if k <= 1:
        return np.array([rng.integers(0, n)])
    skip = max(1, min(skip, (n - 1) // (k - 1)))
    start = int(rng.integers(0, n - (k - 1) * skip))
    return start + skip * np.arange(k)


def _channels(rng, channels, p):
    k = _count(rng, channels, p.get("affected_channels_pct"), p.get("max_corrupted_channels"))
    skip = _int_in(rng, p.get("min_channel_skip"), p.get("max_channel_skip"))
    return _spaced(rng, channels, k, skip)


def _subset(rng, items, pct_bin):
    k = _count(rng, len(items), pct_bin)
    if k >= len(items):
        return np.asarray(items)
    return np.asarray(items)[rng.permutation(len(items))[:k]]


def _block(rng, size, block_size):
    b = max(1, min(int(block_size or 1), size))
    start = int(rng.integers(0, -(-size // b))) * b
    return np.arange(start, min(start + b, size))


def _line(rng, h, w, c, p, along_row):
    length = w if along_row else h
    pct = p.get("row_corruption_pct" if along_row else "column_corruption_pct")
    k = _count(rng, length, pct, p.get("max_cardinality"))
    steps = _spaced(rng, length, k, _int_in(rng, p.get("min_value_skip"), p.get("max_value_skip")))
    if along_row:
        m = int(rng.integers(0, h)) * w + steps
    else:
        m = steps * w + int(rng.integers(0, w))
    return [(int(rng.integers(0, c)), m)]


def _skip(rng, h, w, c, p, default_skip):
    size = h * w
    skip = max(1, int(p.get("skip_amount", default_skip)))
    unique = max(1, min(int(p.get("unique_channel_indexes", 1)), -(-size // skip)))
    start = int(rng.integers(0, max(1, size - (unique - 1) * skip)))
    candidates = start + skip * np.arange(unique)
    candidates = candidates[candidates < size]
    return [(int(ch), _subset(rng, candidates, p.get("indexes_corruption_pct")))
            for ch in _channels(rng, c, p)]


def _shattered(rng, h, w, c, p, quasi):
    size = h * w
    anchor = int(rng.integers(0, size))
    result = []
    for ch in _channels(rng, c, p):
        width = _int_in(rng, p.get("min_span_width"), p.get("max_span_width"))
        width = max(1, min(width, size))
        start = int(np.clip(anchor - rng.integers(0, width), 0, size - width))
        span = np.arange(start, start + width)
        kept = _subset(rng, span, p.get("avg_span_corruption_pct"))
        if not quasi:
            kept = np.union1d(kept, [anchor])
        elif rng.random() < 0.5 and len(span) > 1:
            kept = np.clip(kept + int(rng.integers(1, len(span) + 1)), 0, size - 1)
        result.append((int(ch), kept))
    return result


def _rectangles(rng, h, w, c, p):
    rh = max(1, min(int(p.get("rectangle_height", 1)), h))
    rw = max(1, min(int(p.get("rectangle_width", 1)), w))
    top = int(rng.integers(0, h - rh + 1))
    left = int(rng.integers(0, w - rw + 1))
    m = ((top + np.arange(rh))[:, None] * w + (left + np.arange(rw))[None, :]).ravel()
    return [(int(ch), m) for ch in _channels(rng, c, p)]


def _alternated(rng, h, w, c, p):
    size = h * w
    b = max(1, min(int(p.get("block_size", 1)), size))
    n_blocks = -(-size // b)
    skip = max(2, _int_in(rng, p.get("min_block_skip"), p.get("max_block_skip"), default=2))
    first = int(rng.integers(0, min(skip, n_blocks)))
    m = ((np.arange(first, n_blocks, skip) * b)[:, None] + np.arange(b)[None, :]).ravel()
    return [(int(rng.integers(0, c)), m[m < size])]


def _uncategorized(rng, h, w, c, p):
    size = h * w
    result = []
    for ch in _channels(rng, c, p):
        if "min_errors_per_channel" in p or "max_errors_per_channel" in p:
            k = min(size, _int_in(rng, p.get("min_errors_per_channel"),
                                  p.get("max_errors_per_channel")))
        else:
            k = _count(rng, size, p.get("avg_channel_corruption_pct"))
        result.append((int(ch), rng.choice(size, size=max(k, 1), replace=False)))
    return result


def _single_block(rng, h, w, c, p):
    block = _block(rng, h * w, p.get("block_size"))
    return [(int(rng.integers(0, c)), _subset(rng, block, p.get("block_corruption_pct")))]


def _multi_block(rng, h, w, c, p):
    block = _block(rng, h * w, p.get("block_size"))
    return [(int(ch), _subset(rng, block, p.get("avg_block_corruption_pct")))
            for ch in _channels(rng, c, p)]


def _full(rng, h, w, c, p):
    return [(int(ch), _subset(rng, np.arange(h * w), p.get("avg_channel_corruption_pct")))
            for ch in _channels(rng, c, p)]


def _random_channel(rng, h, w, c, p):
    k = _count(rng, h * w, p.get("channel_corruption_pct"), p.get("max_cardinality"))
    return [(int(rng.integers(0, c)), rng.choice(h * w, size=k, replace=False))]


PIECES = {
    "single": lambda rng, h, w, c, p: [(int(rng.integers(0, c)),
                                        np.array([rng.integers(0, h * w)]))],
    "same_row": lambda rng, h, w, c, p: _line(rng, h, w, c, p, True),
    "same_column": lambda rng, h, w, c, p: _line(rng, h, w, c, p, False),
    "bullet_wake": lambda rng, h, w, c, p: (lambda m: [(int(ch), m) for ch in _channels(
        rng, c, p)])(np.array([rng.integers(0, h * w)])),
    "skip_2": lambda rng, h, w, c, p: _skip(rng, h, w, c, p, 2),
    "skip_4": lambda rng, h, w, c, p: _skip(rng, h, w, c, p, 4),
    "skip_8": lambda rng, h, w, c, p: _skip(rng, h, w, c, p, 8),
    "skip_16": lambda rng, h, w, c, p: _skip(rng, h, w, c, p, 16),
    "single_block": _single_block,
    "multi_channel_block": _multi_block,
    "shattered_channel": lambda rng, h, w, c, p: _shattered(rng, h, w, c, p, False),
    "quasi_shattered_channel": lambda rng, h, w, c, p: _shattered(rng, h, w, c, p, True),
    "full_channels": _full,
    "rectangles": _rectangles,
    "single_channel_random": _random_channel,
    "single_channel_alternated_blocks": _alternated,
    "multiple_channels_uncategorized": _uncategorized,
}


def _class_ids(rng, n, domain):
    name = lambda k: "out_of_range" if k == "flip" else k  # noqa: E731
    if "random" in domain:
        p = np.zeros(len(GENERATED))
        for k, v in domain["values"].items():
            p[GENERATED.index(name(k))] += float(v)
        p = p / p.sum() if p.sum() > 0 else np.full(len(p), 1 / len(p))
        return np.searchsorted(np.cumsum(p), rng.random(n) * p.sum(), side="right").clip(
            0, len(p) - 1)
    bins = {name(k): v for k, v in domain.items() if k not in ("count", "frequency")}
    ids = np.array([GENERATED.index(k) for k in bins], dtype=np.int64)
    share = np.array([rng.uniform(*v) for v in bins.values()])
    share = share / share.sum() if share.sum() > 0 else np.full(len(ids), 1 / len(ids))
    exact = share * n
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts))[: n - counts.sum()]] += 1
    return rng.permutation(np.repeat(ids, counts))


def _values(rng, class_ids, low, high):
    out = np.zeros(len(class_ids), dtype=np.float32)
    width = max(high - low, abs(high), abs(low), 1e-3)
    for cls in np.unique(class_ids).tolist():
        at = np.flatnonzero(class_ids == cls)
        name = GENERATED[cls]
        if name == "in_range":
            out[at] = rng.uniform(low, high, len(at)) if high > low else low
        elif name == "out_of_range":
            excess = width * 10.0 ** rng.uniform(-2.0, 6.0, len(at))
            out[at] = np.where(rng.random(len(at)) < 0.5, high + excess, low - excess)
        elif name == "nan":
            out[at] = np.nan
        elif name == "inf":
            out[at] = np.where(rng.random(len(at)) < 0.5, np.inf, -np.inf)
    return out


def reference_site(model, shape, low, high, rng) -> tuple[str, np.ndarray, np.ndarray]:
    classes = model.classes
    names = list(classes)
    pattern = names[_weighted(rng, [classes[n]["frequency"] for n in names])]
    spec = classes[pattern]
    plist = spec["parameters"]
    chosen = plist[_weighted(rng, [p["conditional_frequency"] for p in plist])]
    params = {k: _resolve(v, rng) for k, v in {**chosen.get("stats", {}),
                                               **chosen.get("keys", {})}.items()}
    h, w, c = map_shape(shape)
    pieces = PIECES[pattern](rng, h, w, c, params)
    flat = [np.asarray(m, dtype=np.int64) * c + ch for ch, m in pieces]
    positions = np.unique(np.concatenate(flat)).astype(np.int64)
    domains = spec["domain_classes"]
    domain = domains[_weighted(rng, [d["frequency"] for d in domains])]
    values = _values(rng, _class_ids(rng, len(positions), domain), low, high)
    return pattern, positions, values


def reference_sites(model, target, shape, value_range, count, seed, first=0):
    """(positions, values, splits, patterns) as the plain formulation drew them."""
    low, high = float(value_range[0]), float(value_range[1])
    positions, values, lengths, patterns = [], [], [], []
    for i in range(first, first + count):
        rng = np.random.default_rng([int(seed), zlib.crc32(target.encode()), i])
        pattern, pos, val = reference_site(model, shape, low, high, rng)
        positions.append(pos)
        values.append(val)
        lengths.append(len(pos))
        patterns.append(pattern)
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return (np.concatenate(positions).astype(np.int32),
            np.concatenate(values).astype(np.float32), splits, patterns)


# --- the benchmark ----------------------------------------------------------------------------

def same_bits(ours, ref: tuple[Any, ...]) -> bool:
    positions, values, splits, patterns = ref
    return (np.array_equal(ours.positions, positions) and ours.positions.dtype == positions.dtype
            and ours.values.dtype == values.dtype
            and np.array_equal(ours.values.view(np.uint32), values.view(np.uint32))
            and np.array_equal(ours.splits, splits) and ours.patterns == patterns)


def python_only(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` run with the compiled generator switched off."""
    def run():
        os.environ["CLASSES_TOOL_NATIVE"] = "0"
        try:
            return fn()
        finally:
            del os.environ["CLASSES_TOOL_NATIVE"]
    return run


def run_case(name: str, shape: tuple[int, ...], count: int, rounds: int) -> tuple[float, float]:
    model = load_error_model(name)
    args = (model, "conv2", shape, (-3.0, 3.0), count, 1)
    for first in (0, 977):
        python = python_only(lambda f=first: generate_sites(*args, first=f))()
        ref = (python.positions, python.values, python.splits, python.patterns)
        assert same_bits(generate_sites(*args, first=first), ref), f"{name} {shape} differs"
    fns = {"reference": lambda: reference_sites(*args),
           "python": python_only(lambda: generate_sites(*args))}
    if native_sites.load() is not None:
        fns["native"] = lambda: generate_sites(*args)
    best = interleaved(fns, rounds=rounds, repeats=1)
    rates = {k: count / v for k, v in best.items()}
    native = (f"   native {rates['native']:8.0f} sites/s ({rates['native'] / rates['python']:4.1f}x "
              "python)" if "native" in rates else "   native: not built")
    print(f"{name:14s} {str(shape):14s} reference {rates['reference']:8.0f} sites/s   "
          f"python {rates['python']:8.0f} sites/s ({rates['python'] / rates['reference']:4.1f}x)"
          + native, flush=True)
    return rates


def main() -> None:
    quick = "--quick" in sys.argv
    count = 500 if quick else 2000
    slowest = []
    for shape in ((32, 32, 16), (16, 16, 32), (64,)):
        slowest.append(run_case("conv_gemm", shape, count, rounds=2 if quick else 3))
    for name in available_error_models():
        if name != "conv_gemm":
            slowest.append(run_case(name, (8, 8, 16), count // 2, rounds=2 if quick else 3))
    rates = run_case("conv_gemm", (8, 8, 16), 4000 if not quick else 1000,
                     rounds=2 if quick else 5)
    ref_rate, our_rate = rates["reference"], rates.get("native", rates["python"])
    native = ""
    if "native" in rates:  # the least native/python gain over every case: no class left slow
        least = min(r["native"] / r["python"] for r in [*slowest, rates])
        native = f"; native {rates['native'] / rates['python']:.1f}x python, least {least:.1f}x"
    print(f"sites: ratio={our_rate / ref_rate:.1f}x (baseline {ref_rate:.0f} sites/s, "
          f"ours {our_rate:.0f} sites/s{native})")


if __name__ == "__main__":
    main()
