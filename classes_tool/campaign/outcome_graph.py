"""The outcome classes of `classes_tool.results.outcomes` as TensorFlow ops, for the layers
campaign's traced step (the results layer itself stays free of TensorFlow)."""

from __future__ import annotations

from typing import Any

import tensorflow as tf


def classification_parts_graph(faulty, golden, top1, bound) -> dict[str, Any]:
    """The per-row quantities of `classify` as TensorFlow ops, for a traced campaign step: only
    five small columns leave the graph instead of the score matrix; `finish_classification`
    turns them into the outcome columns. `golden`, `top1` and `bound` are each row's
    `golden_terms`. Same float64 arithmetic and tie rules as `classify` (``tf.argmax`` is
    avoided: its choice among ties is unspecified), which the tests compare bit for bit.

    Returns ``due`` (NaN/Inf anywhere), ``faulty_top1`` (lowest index among the maximal
    scores, with a DUE row's scores taken as 0), ``close`` (every score within its bound),
    ``faulty_at_top`` (the faulty score at the golden top-1 class) and ``ahead`` (how many
    classes rank before that class in the faulty order)."""
    f = tf.cast(faulty, tf.float64)
    idx = tf.range(tf.shape(f)[1])[None, :]
    due = tf.logical_not(tf.reduce_all(tf.math.is_finite(f), axis=1))
    f_safe = tf.where(due[:, None], tf.zeros_like(f), f)
    best = tf.reduce_max(f_safe, axis=1, keepdims=True)
    f_top = tf.reduce_min(tf.where(f_safe == best, idx, tf.shape(f)[1]), axis=1)
    close = tf.reduce_all(tf.abs(f_safe - golden) <= bound, axis=1)
    f_at_t = tf.gather(f_safe, top1, axis=1, batch_dims=1)
    before = (f_safe > f_at_t[:, None]) | ((f_safe == f_at_t[:, None]) & (idx < top1[:, None]))
    return {"due": due, "faulty_top1": f_top, "close": close, "faulty_at_top": f_at_t,
            "ahead": tf.reduce_sum(tf.cast(before, tf.int32), axis=1)}
