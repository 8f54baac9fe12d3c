"""Spatial corruption patterns: which positions of one sample's output a fault corrupts.

Every tensor is seen as feature maps: `H x W` positions in each of `C` channels (channels last,
as Keras stores them). Shapes of other ranks are mapped onto that view (see `map_shape`), so
a pattern is defined once. A generator returns the corrupted positions as *distinct, sorted*
flat indices into the sample's row-major tensor (`(h * W + w) * C + c`).

The meaning of each class and its parameters follows the CLASSES measurements (see
`docs/error-models.md`); percentages such as `affected_channels_pct: [10, 20]` are bins from which
a value is drawn uniformly.

Speed: a campaign draws one site per fault, so these run millions of times on tiny arrays. The
generators therefore draw from the generator exactly as the plain formulation would (same calls,
same order, same arguments: site i stays reproducible) but build the result directly: spaced
channels and map positions are kept as ranges, positions known to be sorted and distinct are not
passed through `np.unique`, and a channel x map-position grid is masked instead of concatenating
one small array per channel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

Params = dict[str, Any]

# Below this many positions, python ints beat numpy for a generator's final sort.
_SMALL = 256
_NUMBER = (int, float)


def _affine_uniform_is_exact() -> bool:
    """Whether `rng.uniform(low, high)` is bit for bit `low + (high - low) * rng.random()` here.

    NumPy computes exactly that (one double, then a multiply and an add), 3x slower per scalar
    call. A build that fuses the multiply-add would round differently in ~10% of draws: 1000
    draws on bins like the error models' detect it, and `_uniform` then keeps rng.uniform."""
    a, b = np.random.default_rng(7), np.random.default_rng(7)
    for i in range(1000):
        low, high = (i % 41) * 2.5, (i % 41) * 2.5 + (i % 7 + 1) * 1.25 + (i % 3) * 0.1
        if i % 4 == 3:
            low, high = -3.0 + (i % 13) * 0.37, 3.0 + (i % 5) * 1.1
        if float(a.uniform(low, high)) != low + (high - low) * b.random():
            return False
    return a.bit_generator.state == b.bit_generator.state


AFFINE_UNIFORM = _affine_uniform_is_exact()


def _uniform(rng: np.random.Generator, low: Any, high: Any) -> float:
    """`float(rng.uniform(low, high))` for plain numbers: the same double, the same draw."""
    if AFFINE_UNIFORM and type(low) in _NUMBER and type(high) in _NUMBER:
        low = float(low)
        span = float(high) - low
        if span - span == 0.0:  # finite (rng.uniform raises otherwise)
            return low + span * rng.random()
    return float(rng.uniform(low, high))


def map_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Map a sample shape (no batch axis) onto (H, W, C).

    (F,) -> (1, F, 1): a dense output is one channel with a single row of F values.
    (S, F) -> (1, S, F): a sequence is one row of S positions with F channels.
    (H, W, C) -> itself; (D, H, W, C) -> (D * H, W, C).
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return 1, 1, 1
    if len(shape) == 1:
        return 1, shape[0], 1
    if len(shape) == 2:
        return 1, shape[0], shape[1]
    return int(np.prod(shape[:-2])), shape[-2], shape[-1]


def _fraction(rng: np.random.Generator, pct_bin: Any, default: float = 1.0) -> float:
    if pct_bin is None:
        return default
    low, high = pct_bin
    return _uniform(rng, low, high) / 100.0


def _count(rng: np.random.Generator, n: int, pct_bin: Any, cap: Any = None) -> int:
    """How many of `n` items a percentage bin selects: at least 1, at most n (and cap)."""
    k = int(round(n * _fraction(rng, pct_bin)))
    if cap is not None:
        k = min(k, int(cap))
    return int(min(max(k, 1), n))


def _int_in(rng: np.random.Generator, low: Any, high: Any, default: int = 1) -> int:
    low = default if low is None else int(low)
    high = low if high is None else int(high)
    return int(rng.integers(min(low, high), max(low, high) + 1))


def _spaced(rng: np.random.Generator, n: int, k: int, skip: int) -> range:
    """k indices in [0, n) with constant spacing `skip` (shrunk if they would not fit); one
    index when k <= 1. A range: sorted, distinct and free to build."""
    if k <= 1:
        start = int(rng.integers(0, n))
        return range(start, start + 1)
    skip = max(1, min(skip, (n - 1) // (k - 1)))
    start = int(rng.integers(0, n - (k - 1) * skip))
    return range(start, start + k * skip, skip)


def _channels(rng: np.random.Generator, channels: int, p: Params) -> range:
    """`choose_channels` as a range."""
    k = _count(rng, channels, p.get("affected_channels_pct"), p.get("max_corrupted_channels"))
    skip = _int_in(rng, p.get("min_channel_skip"), p.get("max_channel_skip"))
    return _spaced(rng, channels, k, skip)


def choose_channels(rng: np.random.Generator, channels: int, p: Params) -> np.ndarray:
    """Channels hit by a multi-channel pattern: how many from `affected_channels_pct` (capped by
    `max_corrupted_channels`), spaced by a skip drawn in [min_channel_skip, max_channel_skip]."""
    return np.array(_channels(rng, channels, p), dtype=np.int64)


def _pick(rng: np.random.Generator, n: int, pct_bin: Any) -> np.ndarray | None:
    """Indices of the `k` of `n` items kept, k from the percentage bin; None when all are kept.
    A permutation prefix: 3x faster than `rng.choice(replace=False)` on a site's small arrays."""
    if pct_bin is None:  # the whole of it, no draw
        return None
    k = _count(rng, n, pct_bin)
    return None if k >= n else rng.permutation(n)[:k]


def _arange(r: range) -> np.ndarray:
    return np.arange(r.start, r.stop, r.step, dtype=np.int64)


def _picks(rng: np.random.Generator, n: int, pct_bin: Any, channels: int
           ) -> list[tuple[np.ndarray, int] | None]:
    """`_pick` for each of `channels` channels, as (permutation of n, k): keep perm[:k]."""
    if pct_bin is None:
        return [None] * channels
    out: list[tuple[np.ndarray, int] | None] = []
    for _ in range(channels):
        k = _count(rng, n, pct_bin)
        out.append(None if k >= n else (rng.permutation(n), k))
    return out


def _grid(maps: np.ndarray, chans: range, picks: list[tuple[np.ndarray, int] | None] | None,
          c: int) -> np.ndarray:
    """Flat positions of map positions `maps` (sorted, distinct) in channels `chans`, keeping in
    channel j only maps[perm[:k]] for picks[j] = (perm, k) (all when None). Row-major order of
    the (map position, channel) grid is already sorted, so nothing needs sorting but the
    python ints of a small grid."""
    if picks is not None and all(pk is None for pk in picks):
        picks = None
    n, nch = len(maps), len(chans)
    if n * nch <= 64:  # python ints are faster than a few numpy calls here
        listed = maps.tolist()
        flat = []
        for j, ch in enumerate(chans):
            pk = picks[j] if picks is not None else None
            kept = listed if pk is None else [listed[i] for i in pk[0][:pk[1]].tolist()]
            flat += [m * c + ch for m in kept]
        flat.sort()
        return np.array(flat, dtype=np.int64)
    grid = maps[:, None] * c + _arange(chans)[None, :]
    if picks is None:
        return grid.ravel()
    if nch < 4:
        keep = np.zeros(grid.shape, dtype=bool)
        for j, pk in enumerate(picks):
            if pk is None:
                keep[:, j] = True
            else:
                keep[pk[0][:pk[1]], j] = True
        return grid[keep]
    # many channels: one scatter marks the first k entries of every channel's permutation
    every = np.arange(n)
    perms = np.stack([every if pk is None else pk[0] for pk in picks])
    ks = np.array([n if pk is None else pk[1] for pk in picks])
    keep = np.zeros((nch, n), dtype=bool)
    keep[np.arange(nch)[:, None], perms] = every < ks[:, None]
    return grid[keep.T]


def _single(rng, h, w, c, p):
    ch = int(rng.integers(0, c))
    return np.array([int(rng.integers(0, h * w)) * c + ch], dtype=np.int64)


def _line(rng, h, w, c, p, along_row: bool):
    length = w if along_row else h
    pct = p.get("row_corruption_pct" if along_row else "column_corruption_pct")
    k = _count(rng, length, pct, p.get("max_cardinality"))
    steps = _spaced(rng, length, k,
                    _int_in(rng, p.get("min_value_skip"), p.get("max_value_skip")))
    if along_row:
        first, step = int(rng.integers(0, h)) * w + steps.start, steps.step
    else:
        first, step = steps.start * w + int(rng.integers(0, w)), steps.step * w
    ch = int(rng.integers(0, c))
    return np.arange(len(steps), dtype=np.int64) * (step * c) + (first * c + ch)


def _bullet_wake(rng, h, w, c, p):
    m = int(rng.integers(0, h * w))
    return _arange(_channels(rng, c, p)) + m * c


def _skip(rng, h, w, c, p, default_skip: int):
    size = h * w
    skip = max(1, int(p.get("skip_amount", default_skip)))
    unique = max(1, min(int(p.get("unique_channel_indexes", 1)), -(-size // skip)))
    start = int(rng.integers(0, max(1, size - (unique - 1) * skip)))
    candidates = np.arange(start, min(start + unique * skip, size), skip, dtype=np.int64)
    chans = _channels(rng, c, p)
    pct = p.get("indexes_corruption_pct")
    return _grid(candidates, chans, _picks(rng, len(candidates), pct, len(chans)), c)


def _block(rng: np.random.Generator, size: int, block_size: Any) -> range:
    """An aligned block of `block_size` consecutive map positions (clipped to the map)."""
    b = max(1, min(int(block_size or 1), size))
    n_blocks = -(-size // b)
    start = int(rng.integers(0, n_blocks)) * b
    return range(start, min(start + b, size))


def _single_block(rng, h, w, c, p):
    block = _block(rng, h * w, p.get("block_size"))
    ch = int(rng.integers(0, c))
    sel = _pick(rng, len(block), p.get("block_corruption_pct"))
    maps = _arange(block) if sel is None else np.sort(sel) + block.start
    return maps * c + ch


def _multi_channel_block(rng, h, w, c, p):
    block = _block(rng, h * w, p.get("block_size"))
    chans = _channels(rng, c, p)
    pct = p.get("avg_block_corruption_pct")
    return _grid(_arange(block), chans, _picks(rng, len(block), pct, len(chans)), c)


def _shattered(rng, h, w, c, p, quasi: bool):
    """Shattered glass: a point corrupted in several channels, with a span of neighbours
    around it in each; quasi-shattered spans need not contain the shared point.

    Per channel the kept map positions are a range (whole span) or a set (a subset of it);
    the span always contains the anchor, so only a subset needs it added back."""
    size = h * w
    integers = rng.integers
    anchor = int(integers(0, size))
    pct = p.get("avg_span_corruption_pct")
    low, high = p.get("min_span_width"), p.get("max_span_width")
    low = 1 if low is None else int(low)  # _int_in's bounds, the same for every channel
    high = low if high is None else int(high)
    low, high = min(low, high), max(low, high) + 1
    pieces: list[tuple[int, Any]] = []
    total = 0
    for ch in _channels(rng, c, p):
        width = max(1, min(int(integers(low, high)), size))
        start = min(max(anchor - int(integers(0, width)), 0), size - width)
        sel = _pick(rng, width, pct)
        kept: Any
        if sel is None:
            kept = range(start, start + width)
        else:
            kept = [x + start for x in sel.tolist()]
        if not quasi:
            if sel is not None:
                kept = set(kept)
                kept.add(anchor)
        elif rng.random() < 0.5 and width > 1:  # drift the span off the anchor (clipped)
            shift = int(integers(1, width + 1))
            if sel is None:
                kept = range(min(start + shift, size - 1), min(start + width + shift, size))
            else:
                kept = {min(x + shift, size - 1) for x in kept}
        pieces.append((ch, kept))
        total += len(kept)
    if total <= _SMALL:
        flat = [m * c + ch for ch, kept in pieces for m in kept]
        flat.sort()
        return np.array(flat, dtype=np.int64)
    parts = [(_arange(kept) if isinstance(kept, range) else np.fromiter(kept, np.int64, len(kept)))
             * c + ch for ch, kept in pieces]
    return np.sort(np.concatenate(parts))


def _full_channels(rng, h, w, c, p):
    size = h * w
    chans = _channels(rng, c, p)
    pct = p.get("avg_channel_corruption_pct")
    return _grid(np.arange(size, dtype=np.int64), chans, _picks(rng, size, pct, len(chans)), c)


def _rectangles(rng, h, w, c, p):
    rh = max(1, min(int(p.get("rectangle_height", 1)), h))
    rw = max(1, min(int(p.get("rectangle_width", 1)), w))
    top = int(rng.integers(0, h - rh + 1))
    left = int(rng.integers(0, w - rw + 1))
    m = ((top + np.arange(rh, dtype=np.int64))[:, None] * w
         + (left + np.arange(rw, dtype=np.int64))[None, :]).ravel()
    return _grid(m, _channels(rng, c, p), None, c)


def _single_channel_random(rng, h, w, c, p):
    k = _count(rng, h * w, p.get("channel_corruption_pct"), p.get("max_cardinality"))
    ch = int(rng.integers(0, c))
    m = rng.choice(h * w, size=k, replace=False)
    m.sort()
    return m.astype(np.int64, copy=False) * c + ch


def _alternated_blocks(rng, h, w, c, p):
    """Blocks of `block_size` positions, every `skip`-th block corrupted (skip >= 2, drawn in
    [min_block_skip, max_block_skip]), starting from a random block."""
    size = h * w
    b = max(1, min(int(p.get("block_size", 1)), size))
    n_blocks = -(-size // b)
    skip = max(2, _int_in(rng, p.get("min_block_skip"), p.get("max_block_skip"), default=2))
    first = int(rng.integers(0, min(skip, n_blocks)))
    starts = np.arange(first, n_blocks, skip, dtype=np.int64) * b
    m = (starts[:, None] + np.arange(b, dtype=np.int64)[None, :]).ravel()
    ch = int(rng.integers(0, c))
    return m[m < size] * c + ch


def _uncategorized(rng, h, w, c, p):
    size = h * w
    by_range = "min_errors_per_channel" in p or "max_errors_per_channel" in p
    parts = []
    for ch in _channels(rng, c, p):
        if by_range:
            k = min(size, _int_in(rng, p.get("min_errors_per_channel"),
                                  p.get("max_errors_per_channel")))
        else:
            k = _count(rng, size, p.get("avg_channel_corruption_pct"))
        parts.append(rng.choice(size, size=max(k, 1), replace=False).astype(np.int64) * c + ch)
    out = np.concatenate(parts) if len(parts) > 1 else parts[0]
    out.sort()
    return out


# name -> generator(rng, H, W, C, params) -> distinct, sorted flat positions (int64)
GENERATORS: dict[str, Callable[..., np.ndarray]] = {
    "single": _single,
    "same_row": lambda rng, h, w, c, p: _line(rng, h, w, c, p, along_row=True),
    "same_column": lambda rng, h, w, c, p: _line(rng, h, w, c, p, along_row=False),
    "bullet_wake": _bullet_wake,
    "skip_2": lambda rng, h, w, c, p: _skip(rng, h, w, c, p, 2),
    "skip_4": lambda rng, h, w, c, p: _skip(rng, h, w, c, p, 4),
    "skip_8": lambda rng, h, w, c, p: _skip(rng, h, w, c, p, 8),
    "skip_16": lambda rng, h, w, c, p: _skip(rng, h, w, c, p, 16),
    "single_block": _single_block,
    "multi_channel_block": _multi_channel_block,
    "shattered_channel": lambda rng, h, w, c, p: _shattered(rng, h, w, c, p, quasi=False),
    "quasi_shattered_channel": lambda rng, h, w, c, p: _shattered(rng, h, w, c, p, quasi=True),
    "full_channels": _full_channels,
    "rectangles": _rectangles,
    "single_channel_random": _single_channel_random,
    "single_channel_alternated_blocks": _alternated_blocks,
    "multiple_channels_uncategorized": _uncategorized,
}


def generate_positions(pattern: str, shape: tuple[int, ...], params: Params,
                       rng: np.random.Generator) -> np.ndarray:
    """Distinct, sorted flat positions (into one sample of `shape`) corrupted by `pattern`."""
    h, w, c = map_shape(shape)
    return GENERATORS[pattern](rng, h, w, c, params)
