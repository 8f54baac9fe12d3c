"""SNN campaign metrics: accuracy under faults, critical faults, and per (fault, sample) classes.

Classes are judged against the golden scores (softmax of the output spike counts, or of the
maximum membrane for membrane readouts), for each (round, sample):
  masked    same top-1 and identical raw scores
  d<5, 5<=d<10, 10<=d<20, d>=20
            same top-1, scores differ; d = 100 |c - f| / c is the relative change of the golden
            top-1 class's softmax score (c golden, f faulty); half-open buckets
  sdc1      the top-1 class changed
  due       the faulty scores hold NaN or Inf
A *critical* (round, sample) is one the golden network classifies correctly and the faulty one
does not (needs labels).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from classes_tool.results.intervals import Interval, fault_mean_interval, stratified_interval

CLASSES = ("masked", "d<5", "5<=d<10", "10<=d<20", "d>=20", "sdc1", "due")
EDGES = np.array([5.0, 10.0, 20.0])


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (NaN/Inf stay non-finite)."""
    s = np.asarray(scores, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        z = s - np.max(s, axis=-1, keepdims=True)
        e = np.exp(z)
        return e / np.sum(e, axis=-1, keepdims=True)


def d_codes(d: np.ndarray) -> np.ndarray:
    """Codes 1..4 of the half-open buckets [0, 5), [5, 10), [10, 20), [20, inf) of d."""
    d = np.asarray(d, np.float64)
    return 1 + np.searchsorted(EDGES, np.where(np.isfinite(d), d, 0.0), side="right")


def classify_snn(golden: np.ndarray, faulty: np.ndarray) -> dict[str, np.ndarray]:
    """Class codes (index into CLASSES) and d for faulty scores (..., n, C) vs golden (n, C)."""
    golden = np.asarray(golden)
    faulty = np.asarray(faulty)
    g = np.broadcast_to(golden, faulty.shape)
    due = ~np.all(np.isfinite(faulty), axis=-1)
    gt = np.argmax(g, axis=-1)
    ft = np.argmax(np.where(np.isfinite(faulty), faulty, -np.inf), axis=-1)
    identical = np.all(faulty == g, axis=-1)
    pg = np.take_along_axis(softmax(g), gt[..., None], -1)[..., 0]
    pf = np.take_along_axis(softmax(faulty), gt[..., None], -1)[..., 0]
    with np.errstate(invalid="ignore"):
        d = 100.0 * np.abs(pg - pf) / pg
    code = d_codes(d)
    code = np.where(identical, 0, code)
    code = np.where(ft != gt, 5, code)
    code = np.where(due, 6, code)
    d = np.where(due, np.nan, d)
    return {"code": code.astype(np.int8), "d": d, "golden_top1": gt, "faulty_top1": ft}


class Results:
    """Scores of a campaign run and what follows from them.

    golden_scores (N, C); scores (R, N, C) per round; labels (N,) or None; info per round
    (target, pattern, params) as given by `SpikingCampaign.round_info`.
    """

    def __init__(self, golden_scores: np.ndarray, scores: np.ndarray, labels: np.ndarray | None,
                 info: list[dict]):
        self.golden_scores = np.asarray(golden_scores)
        self.scores = np.asarray(scores)
        self.labels = None if labels is None else np.asarray(labels)
        self.info = info
        c = classify_snn(self.golden_scores, self.scores)
        self.code, self.d = c["code"], c["d"]
        self.golden_top1 = np.argmax(self.golden_scores, axis=-1)  # (N,)
        self.faulty_top1 = c["faulty_top1"]  # (R, N)

    @property
    def n_rounds(self) -> int:
        return int(self.scores.shape[0])

    def golden_accuracy(self) -> float:
        self._need_labels()
        return float(np.mean(self.golden_top1 == self.labels))

    def accuracy(self) -> np.ndarray:
        """Accuracy under each round's faults, (R,)."""
        self._need_labels()
        return np.mean(self.faulty_top1 == self.labels[None], axis=1)

    def critical(self) -> np.ndarray:
        """Per round, the number of samples golden gets right and the faulty network wrong."""
        self._need_labels()
        ok = self.golden_top1 == self.labels
        return np.sum(ok[None] & (self.faulty_top1 != self.labels[None]), axis=1)

    def class_counts(self, rounds: np.ndarray | None = None) -> np.ndarray:
        """Counts of each class over (round, sample) pairs, (len(CLASSES),)."""
        code = self.code if rounds is None else self.code[rounds]
        return np.bincount(code.reshape(-1), minlength=len(CLASSES))

    def _need_labels(self):
        if self.labels is None:
            from classes_tool.errors import UserError
            raise UserError("accuracy needs labels: run the campaign with data=(x, y)")

    def table(self, by: str = "target", confidence: float = 0.95) -> list[dict]:
        """Rows per group ('target', 'pattern' or 'target+pattern'): class rates, mean accuracy
        and critical rate, each the mean over the group's rounds (faults) of the round's rate
        over the samples, with an interval over rounds: the round is the sampling unit, and the
        samples of one round are correlated (`results.intervals`). A group spanning several
        targets combines the targets' intervals as strata."""
        keys, targets = [], []
        for inf in self.info:
            keys.append({"target": inf["target"], "pattern": inf["pattern"],
                         "target+pattern": f"{inf['target']} / {inf['pattern']}"}[by])
            targets.append(inf["target"])
        keys_a, targets_a = np.array(keys, dtype=object), np.array(targets, dtype=object)
        n_samples = self.code.shape[1] if self.code.ndim > 1 else 0
        per_round: dict[str, np.ndarray] = {
            name: (self.code == i).mean(axis=1) if n_samples else np.zeros(len(keys))
            for i, name in enumerate(CLASSES)}
        if self.labels is not None:
            per_round["accuracy"] = self.accuracy()
            per_round["critical"] = self.critical() / max(n_samples, 1)
        rows = []
        for key in dict.fromkeys(keys):
            sel = keys_a == key
            row = {by: key, "faults": int(sel.sum()), "pairs": int(sel.sum()) * n_samples}
            for name, values in per_round.items():
                iv = _grouped_interval(values[sel], targets_a[sel], n_samples, confidence)
                row[name] = iv.estimate
                row[f"{name}_ci"] = (iv.low, iv.high)
            rows.append(row)
        return rows

    def save_npz(self, path: str | Path) -> None:
        arrays = {"golden_scores": self.golden_scores, "scores": self.scores}
        if self.labels is not None:
            arrays["labels"] = self.labels
        with open(path, "wb") as fh:
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load_npz(cls, path: str | Path, info: list[dict]) -> Results:
        with np.load(path, allow_pickle=False) as data:
            labels = data["labels"] if "labels" in data.files else None
            return cls(data["golden_scores"], data["scores"], labels, info)


def _grouped_interval(values: np.ndarray, targets: np.ndarray, samples: int,
                      confidence: float) -> Interval:
    """Interval over rounds for the mean of per-round rates `values`, stratified by target."""
    names = list(dict.fromkeys(targets.tolist()))
    parts = [fault_mean_interval(values[targets == t], max(samples, 1), confidence)
             for t in names]
    if len(parts) == 1:
        return parts[0]
    return stratified_interval(parts, [int((targets == t).sum()) for t in names])
