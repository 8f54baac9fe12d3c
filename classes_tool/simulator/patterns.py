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

from bisect import bisect_left
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


def _channels(rng: np.random.Generator, channels: int, p: Params, at_least: int = 1) -> range:
    """`choose_channels` as a range; at least `at_least` channels when the tensor has them (the
    multi-channel classes are defined by two or more corrupted channels, quasi-shattered by
    three: see `MIN_CHANNELS`)."""
    k = _count(rng, channels, p.get("affected_channels_pct"), p.get("max_corrupted_channels"))
    k = min(max(k, at_least), channels)
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
    k = min(max(_count(rng, length, pct, p.get("max_cardinality")), 2), length)  # one is single
    steps = _spaced(rng, length, k,
                    _int_in(rng, p.get("min_value_skip"), p.get("max_value_skip")))
    if along_row:
        first, step = int(rng.integers(0, h)) * w + steps.start, steps.step
    else:
        first, step = steps.start * w + int(rng.integers(0, w)), steps.step * w
    ch = int(rng.integers(0, c))
    return np.arange(len(steps), dtype=np.int64) * (step * c) + (first * c + ch)


#: Fewest corrupted channels each multi-channel class has by definition (when the tensor has
#: them): the classifier only calls a tensor with two or more channels bullet wake, multi-channel
#: block, shattered or uncategorized, and a quasi-shattered tensor has a position shared by two
#: channels that a third lacks (with two channels, a shared position is shattered).
MIN_CHANNELS = {"bullet_wake": 2, "multi_channel_block": 2, "shattered_channel": 2,
                "quasi_shattered_channel": 3, "multiple_channels_uncategorized": 2}


def _bullet_wake(rng, h, w, c, p):
    m = int(rng.integers(0, h * w))
    return _arange(_channels(rng, c, p, 2)) + m * c


def _skip(rng, h, w, c, p, default_skip: int):
    size = h * w
    skip = max(1, int(p.get("skip_amount", default_skip)))
    unique = max(1, min(int(p.get("unique_channel_indexes", 1)), -(-size // skip)))
    start = int(rng.integers(0, max(1, size - (unique - 1) * skip)))
    candidates = np.arange(start, min(start + unique * skip, size), skip, dtype=np.int64)
    chans = _channels(rng, c, p)
    pct = p.get("indexes_corruption_pct")
    return _grid(candidates, chans, _picks(rng, len(candidates), pct, len(chans)), c)


def block_counts(b: int) -> tuple[int, int]:
    """How many errors a block of `b` positions holds by definition: the classifier sizes a block
    by its number of errors (11-16: a block of 16, 17-32: of 32, 33-64: of 64), so a block of b
    holds more than max(10, b/2) and at most b errors (all of it when b is too small)."""
    return min(b, max(11, b // 2 + 1)), b


def _block_count(rng: np.random.Generator, b: int, pct_bin: Any) -> int:
    """Errors in a block of b positions: the percentage bin, kept within `block_counts(b)`."""
    low, high = block_counts(b)
    k = b if pct_bin is None else _count(rng, b, pct_bin)
    return min(max(k, low), high)


def _window(rng: np.random.Generator, b: int, k: int) -> list[int]:
    """Offsets of k of the b positions of a window, sorted (all of them when k >= b)."""
    if k >= b:
        return list(range(b))
    return sorted(rng.permutation(b)[:k].tolist())


def _single_block(rng, h, w, c, p):
    """A window of `block_size` consecutive positions of the channel-first flattened tensor (any
    start: it may cross from one channel into the next), `block_corruption_pct` of it kept."""
    size, total = h * w, h * w * c
    b = max(1, min(int(p.get("block_size") or 1), total))
    start = int(rng.integers(0, total - b + 1))
    k = _block_count(rng, b, p.get("block_corruption_pct"))
    flat = [((start + t) % size) * c + (start + t) // size for t in _window(rng, b, k)]
    flat.sort()
    return np.array(flat, dtype=np.int64)


def _multi_channel_block(rng, h, w, c, p):
    """The same window of `block_size` consecutive map positions (any start) in every chosen
    channel, `avg_block_corruption_pct` of it kept per channel. One channel, the leader, holds a
    block by definition: as many errors as the fullest channel (at least `block_counts`), the
    window's first position among them, so every other channel's errors lie in its block."""
    size = h * w
    b = max(1, min(int(p.get("block_size") or 1), size))
    start = int(rng.integers(0, size - b + 1))
    chans = _channels(rng, c, p, 2)
    pct = p.get("avg_block_corruption_pct")
    counts = [b if pct is None else _count(rng, b, pct) for _ in chans]
    leader = int(rng.integers(0, len(chans)))
    low, high = block_counts(b)
    counts[leader] = min(max(max(counts), low), high)
    flat = []
    for j, ch in enumerate(chans):
        k = counts[j]
        if j == leader and k < b:
            kept = [0] + sorted((rng.permutation(b - 1)[:k - 1] + 1).tolist())
        else:
            kept = _window(rng, b, k)
        flat += [(start + t) * c + ch for t in kept]
    flat.sort()
    return np.array(flat, dtype=np.int64)


def _span(rng, size: int, anchor: int, low: int, high: int, pct: Any) -> tuple[int, Any, Any]:
    """A span of width in [low, high) around the anchor: (width, start, kept offsets or None)."""
    width = max(1, min(int(rng.integers(low, high)), size))
    start = min(max(anchor - int(rng.integers(0, width)), 0), size - width)
    return width, start, _pick(rng, width, pct)


#: Most errors a span keeps when the site would otherwise be a multi-channel block: 10 errors
#: or fewer are never a block (`block_counts`).
SPAN_MOST = 10


def _block_of(k: int, first: int, last: int, largest: int) -> int:
    """The classifier's block test on k sorted indices from first to last: the block size, 0
    when they are not one block (11-16 errors within 16, 17-32 within 32, 33-64 within 64, no
    larger than `largest`)."""
    if k <= 10:
        return 0
    b = 16 if k <= 16 else 32 if k <= 32 else 64 if k <= 64 else 0
    return b if b and last - first <= b and largest >= b else 0


def _block_leader(spans: list[tuple[int, int, int]], size: int) -> int:
    """Which of the channels, each given as (count, first, last) of its distinct map positions,
    is the leader of a multi-channel block (the largest block, then the earliest; every other
    channel lies within [first, first + block size] or holds a block of its own); -1 when the
    channels are not a multi-channel block."""
    best, first, lead = -1, size, -1
    for j, (k, lo, hi) in enumerate(spans):
        b = _block_of(k, lo, hi, size)
        if b and (b > best or (b == best and lo < first)):
            best, first, lead = b, lo, j
    if lead < 0:
        return -1
    for k, lo, hi in spans:
        if not ((lo >= first and hi <= first + best) or _block_of(k, lo, hi, 64)):
            return -1
    return lead


def _nearest(kept: Any, anchor: int, most: int) -> list[int]:
    """The `most` positions of `kept` nearest the anchor (a tie: the one before it), sorted."""
    s = sorted(kept)
    lo = hi = bisect_left(s, anchor)
    while hi - lo < most:
        if lo > 0 and (hi == len(s) or anchor - s[lo - 1] <= s[hi] - anchor):
            lo -= 1
        else:
            hi += 1
    return s[lo:hi]


def _shattered(rng, h, w, c, p, quasi: bool, settle: bool = False):
    """Shattered glass: a point (the anchor) corrupted in every chosen channel, with a span of
    neighbours around it in each. Quasi-shattered: the anchor is corrupted in the first two
    channels only; the last channel's span lies beside the span those two share (never on it)
    and the others may drift off the anchor, so some position is shared by two channels but
    none by all.

    Dense spans of 11 to 64 errors are blocks, and channels that all hold one or lie in the
    leader's block are a multi-channel block. `settle` (the last of a site's draws, see
    `draw_positions`): while the channels form one, the leader's span keeps only its SPAN_MOST
    errors nearest the anchor (at most 10 errors are never a block)."""
    size = h * w
    integers = rng.integers
    anchor = int(integers(0, size))
    pct = p.get("avg_span_corruption_pct")
    low, high = p.get("min_span_width"), p.get("max_span_width")
    low = 1 if low is None else int(low)  # _int_in's bounds, the same for every channel
    high = low if high is None else int(high)
    low, high = min(low, high), max(low, high) + 1
    chans = _channels(rng, c, p, MIN_CHANNELS["quasi_shattered_channel" if quasi else
                                              "shattered_channel"])
    last = len(chans) - 1
    pieces: list[tuple[int, Any]] = []
    shared = (0, 0)  # quasi: the first and last position of the span channels 0 and 1 share
    for j, ch in enumerate(chans):
        width, start, sel = _span(rng, size, anchor, low, high, pct)
        if j == 0 and width * 2 > size > 1:  # one channel at most half corrupted: not full
            width = size // 2
            start = min(max(anchor - int(integers(0, width)), 0), size - width)
            sel = None if sel is None else sel[sel < width]
            if sel is not None and len(sel) == 0:
                sel = None
        if j == 0:
            shared = (start, start + width - 1)
        elif j == 1:
            shared = (max(shared[0], start), min(shared[1], start + width - 1))
        if quasi and j == last and j >= 2 and size > 1:
            # beside the shared span (both spans hold the anchor): right of it when it fits
            # (or by a coin), else left of it
            room_right, room_left = size - 1 - shared[1], shared[0]
            width = max(1, min(width, max(room_right, room_left)))
            right = room_right >= width and (room_left < width or rng.random() < 0.5)
            start = shared[1] + 1 if right else shared[0] - width
            if sel is not None:
                sel = sel[sel < width]
                if len(sel) == 0:
                    sel = None if width == 1 else np.array([0])
        kept: Any = range(start, start + width) if sel is None else {x + start for x in
                                                                     sel.tolist()}
        if not quasi or j < 2:
            if sel is not None:
                kept.add(anchor)
        elif j < last and rng.random() < 0.5 and width > 1:  # drift off the anchor (clipped)
            shift = int(integers(1, width + 1))
            kept = {min(x + shift, size - 1) for x in kept}
        pieces.append((ch, kept))
    if settle and len(pieces) > 1 and any(len(kept) > SPAN_MOST for _, kept in pieces):
        spans = [(len(kept), kept[0], kept[-1]) if type(kept) is range else
                 (len(kept), min(kept), max(kept)) for _, kept in pieces]
        lead = _block_leader(spans, size)
        while lead >= 0:
            kept = _nearest(pieces[lead][1], anchor, SPAN_MOST)
            pieces[lead] = (pieces[lead][0], kept)
            spans[lead] = (len(kept), kept[0], kept[-1])
            lead = _block_leader(spans, size)
    flat = [m * c + ch for ch, kept in pieces for m in kept]
    flat.sort()
    return np.array(flat, dtype=np.int64)


def _full_channels(rng, h, w, c, p):
    """Every chosen channel with more than half of its positions corrupted (the definition),
    `avg_channel_corruption_pct` of them when that is more."""
    size = h * w
    chans = _channels(rng, c, p)
    pct = p.get("avg_channel_corruption_pct")
    least = size // 2 + 1
    flat = []
    for ch in chans:
        k = size if pct is None else max(_count(rng, size, pct), least)
        kept = range(size) if k >= size else rng.permutation(size)[:k].tolist()
        flat += [m * c + ch for m in kept]
    flat.sort()
    return np.array(flat, dtype=np.int64)


def _rectangles(rng, h, w, c, p):
    """The same rectangle in every chosen channel. `rectangle_height`/`_width` are, as measured,
    the differences between the last and first row/column, so the rectangle has one row and one
    column more; it never spans the whole width (the classifier does not call that a
    rectangle). A rectangle of 3 x 3 or more that fills more than half of the map would make
    every channel full (full_channels): one chosen channel then leaves out as many of its cells
    as needed to hold half the map, which the others still cover (alone, a channel may leave
    out 2 cells: a rectangle misses at most 2)."""
    rh = max(1, min(int(p.get("rectangle_height", 1)) + 1, h))
    rw = max(1, min(int(p.get("rectangle_width", 1)) + 1, max(1, w - 1)))
    top = int(rng.integers(0, h - rh + 1))
    left = int(rng.integers(0, w - rw + 1))
    m = ((top + np.arange(rh, dtype=np.int64))[:, None] * w
         + (left + np.arange(rw, dtype=np.int64))[None, :]).ravel()
    chans = _channels(rng, c, p)
    cells = rh * rw
    out = cells - h * w // 2  # cells to leave out so that a channel holds half the map
    picks = None
    if rh >= 3 and rw >= 3 and out > 0 and (len(chans) > 1 or out <= 2):
        j = int(rng.integers(0, len(chans)))
        picks = [None] * len(chans)
        picks[j] = (rng.permutation(cells), cells - out)
    return _grid(m, chans, picks, c)


def _single_channel_random(rng, h, w, c, p):
    """One channel, `channel_corruption_pct` of its positions (at least two, at most
    `max_cardinality`), each `min_value_skip`..`max_value_skip` positions after the previous one
    (row-major), over at least two rows when the map has them (one row is `same_row`)."""
    size = h * w
    k = max(2, _count(rng, size, p.get("channel_corruption_pct"), p.get("max_cardinality")))
    k = min(k, size)
    low, high = p.get("min_value_skip"), p.get("max_value_skip")
    low = 1 if low is None else int(low)
    high = low if high is None else int(high)
    fit = max(1, (size - 1) // max(1, k - 1))  # gaps shrunk so that k positions fit the map
    low, high = min(max(1, min(low, high)), fit), min(max(1, low, high), fit)
    offsets = [0]
    if k > 1:
        for gap in rng.integers(low, high + 1, size=k - 1).tolist():
            if offsets[-1] + gap > size - 1:
                break
            offsets.append(offsets[-1] + gap)
    span = offsets[-1]
    if h >= 2 and 0 < span < w:  # a start whose positions cross a row boundary
        i = int(rng.integers(0, (h - 1) * span))
        start = (i // span) * w + (w - span) + i % span
    else:
        start = int(rng.integers(0, size - span))
    ch = int(rng.integers(0, c))
    return np.array([(start + o) * c + ch for o in offsets], dtype=np.int64)


def _alternated_blocks(rng, h, w, c, p):
    """Blocks of `block_size` positions, every `skip`-th block corrupted (skip >= 2, drawn in
    [min_block_skip, max_block_skip]), from a random block among those that leave room for a
    second one."""
    size = h * w
    b = max(1, min(int(p.get("block_size", 1)), size))
    n_blocks = -(-size // b)
    skip = max(2, _int_in(rng, p.get("min_block_skip"), p.get("max_block_skip"), default=2))
    first = int(rng.integers(0, max(1, min(skip, n_blocks - skip))))
    starts = np.arange(first, n_blocks, skip, dtype=np.int64) * b
    m = (starts[:, None] + np.arange(b, dtype=np.int64)[None, :]).ravel()
    ch = int(rng.integers(0, c))
    return m[m < size] * c + ch


def _uncategorized(rng, h, w, c, p):
    """Two or more channels, each with `avg_channel_corruption_pct` of its positions corrupted
    (kept within [min_errors_per_channel, max_errors_per_channel] when given), no position
    shared by two channels (a shared position would be quasi-shattered)."""
    size = h * w
    chans = _channels(rng, c, p, 2)
    pct = p.get("avg_channel_corruption_pct")
    least, most = p.get("min_errors_per_channel"), p.get("max_errors_per_channel")
    counts = []
    for _ in chans:
        k = _count(rng, size, pct)
        if least is not None:
            k = max(k, int(least))
        if most is not None:
            k = min(k, int(most))
        counts.append(min(max(k, 1), size))  # the loop below would bring it down to size
    while sum(counts) > size and max(counts) > 1:  # distinct positions must fit the map
        counts[counts.index(max(counts))] -= 1
    total = min(sum(counts), size)
    drawn = rng.permutation(size)[:total].tolist()
    flat, at = [], 0
    for ch, k in zip(chans, counts, strict=True):
        flat += [m * c + ch for m in drawn[at:at + k]]
        at += k
    flat.sort()
    return np.array(flat, dtype=np.int64)


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


# --- what a site's class is, by the CLASSES classifier's definitions --------------------------
#
# The measured error models were produced by CLASSES' cnn-error-classifier, which looks at the
# corrupted positions of one tensor and tries the classes in a fixed order, the first that
# matches naming it. A site drawn for a class must be one the classifier calls that class (the
# definitions in plain words are in docs/error-models.md). The generators above build sites that
# mostly are; `draw_positions` redraws the rare one that is not (an accidental skip of four, a
# rectangle that fills a small map, ...).

#: Classes in the classifier's order, for tensors with one corrupted channel and with several.
SINGLE_CHANNEL_ORDER = ("single", "skip_4", "single_block", "single_channel_alternated_blocks",
                        "same_row", "full_channels", "rectangles", "single_channel_random")
MULTI_CHANNEL_ORDER = ("skip_4", "single_block", "multi_channel_block", "bullet_wake",
                       "full_channels", "rectangles", "shattered_channel",
                       "quasi_shattered_channel", "multiple_channels_uncategorized")
#: Classes the classifier defines (the others, e.g. same_column or skip_8, are drawn unchecked).
CHECKED = frozenset(SINGLE_CHANNEL_ORDER + MULTI_CHANNEL_ORDER)
#: Draws of a site's positions before the last one is kept even if it does not match (a class
#: that cannot exist on the layer's shape, e.g. a block of 16 on a 3x3 map).
MAX_ATTEMPTS = 16
#: Generators of a site's last draw, for classes whose draws may all be another class where the
#: class can exist: shattered spans dense enough to be blocks on every draw (a 4 x 4 map, two
#: channels with spans of 11 errors or more), settled there (see `_shattered`).
LAST_DRAW: dict[str, Callable[..., np.ndarray]] = {
    "shattered_channel": lambda rng, h, w, c, p: _shattered(rng, h, w, c, p, False, True),
    "quasi_shattered_channel": lambda rng, h, w, c, p: _shattered(rng, h, w, c, p, True, True),
}


def _block_size_of(idx: np.ndarray, largest: int) -> int:
    """The classifier's block test on sorted indices: 0 when they are not one block."""
    n = len(idx)
    return _block_of(n, int(idx[0]), int(idx[-1]), largest) if n > 10 else 0


def _is_skip_4(maps: np.ndarray) -> bool:
    """Distinct map positions: two or more a multiple of 4 after the first, at most one not."""
    good = int(np.count_nonzero((maps - maps[0]) % 4 == 0))
    return good >= 2 and len(maps) - good <= 1


def _is_alternated(maps: np.ndarray, size: int) -> bool:
    blocks, counts = np.unique(maps // 32, return_counts=True)
    if len(blocks) < 2 or np.diff(blocks).min() < 2:
        return False
    remainder = size // 32 if size % 32 else -1
    return bool(np.all((counts >= 16) | (blocks == remainder)))


def _is_rectangle(rows: np.ndarray, cols: np.ndarray, w: int) -> bool:
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    if bottom - top < 2 or right - left < 2 or (left == 0 and right == w - 1):
        return False
    cells = len(np.unique(rows * w + cols))
    return (bottom - top + 1) * (right - left + 1) - cells <= 2


def _multi_channel_block(chans: np.ndarray, maps: np.ndarray, nch: np.ndarray, size: int) -> bool:
    """A leader channel holds a block; every other channel's errors lie in the leader's block
    [first, first + size] or form a block of their own."""
    per = np.split(maps, np.cumsum(nch)[:-1])  # sorted by channel, then map position
    best, first = -1, size
    for m in per:
        b = _block_size_of(m, size)
        if b and (b > best or (b == best and m[0] < first)):
            best, first = b, int(m[0])
    if best < 0:
        return False
    return all((m[0] >= first and m[-1] <= first + best) or _block_size_of(m, 64)
               for m in per)


def classify(positions: np.ndarray, h: int, w: int, c: int) -> str:
    """The spatial class CLASSES' classifier gives the corrupted flat positions (distinct,
    channels last) of one sample of an (h, w, c) tensor."""
    pos = np.asarray(positions, dtype=np.int64)
    size = h * w
    ch, m = pos % c, pos // c
    order = np.lexsort((m, ch))
    ch, m = ch[order], m[order]
    chans, nch = np.unique(ch, return_counts=True)
    maps = np.unique(m)
    if len(chans) == 1 and len(pos) == 1:
        return "single"
    if _is_skip_4(maps):
        return "skip_4"
    if _block_size_of(ch * size + m, size):  # channel-first order: sorted already
        return "single_block"
    rows, cols = m // w, m % w
    full = bool(np.all(nch * 2 > size))
    if len(chans) == 1:
        if _is_alternated(m, size):
            return "single_channel_alternated_blocks"
        if rows.min() == rows.max():
            return "same_row"
        if full:
            return "full_channels"
        if _is_rectangle(rows, cols, w):
            return "rectangles"
        return "single_channel_random"
    if _multi_channel_block(chans, m, nch, size):
        return "multi_channel_block"
    if len(maps) == 1:
        return "bullet_wake"
    if full:
        return "full_channels"
    if _is_rectangle(rows, cols, w):
        return "rectangles"
    sharing = np.unique(m, return_counts=True)[1]  # channels holding each map position
    if sharing.max() == len(chans):
        return "shattered_channel"
    if sharing.max() >= 2:
        return "quasi_shattered_channel"
    return "multiple_channels_uncategorized"


def draw_positions(name: str, generate: Callable[..., np.ndarray], rng: np.random.Generator,
                   h: int, w: int, c: int, params: Callable[[], Params]) -> np.ndarray:
    """A site's positions for class `name`, from parameters `params()` (a parameter set with its
    RANDOM choices resolved). While the classifier would call them another class, the choices
    and the positions are drawn again from the same generator, at most MAX_ATTEMPTS times: the
    measured parameters describe sites of this class, so a site of another class is not one of
    them (a choice of span width that fills a small map, an accidental skip of four, ...). The
    last draw of a class in LAST_DRAW is made by its settling generator."""
    positions = generate(rng, h, w, c, params())
    if name in CHECKED:
        for attempt in range(1, MAX_ATTEMPTS):
            if classify(positions, h, w, c) == name:
                break
            last = attempt == MAX_ATTEMPTS - 1
            positions = (LAST_DRAW.get(name, generate) if last else generate)(
                rng, h, w, c, params())
    return positions
