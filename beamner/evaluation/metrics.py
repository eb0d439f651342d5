"""Precision, recall and F1: the one definition evaluate, the span report and
compare use (compare's bootstrap takes the array form, :func:`prf_arrays`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy

__all__ = ["Counts", "prf", "prf_arrays"]


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 of the counts (each 0 when undefined)."""
    p, r, f = prf_arrays(numpy.asarray([[tp, fp, fn]], dtype=numpy.float64))[:, 0]
    return {"precision": float(p), "recall": float(r), "f1": float(f)}


def _ratio(num: numpy.ndarray[Any, Any], den: numpy.ndarray[Any, Any]) -> numpy.ndarray[Any, Any]:
    out = numpy.zeros(numpy.broadcast(num, den).shape, dtype=float)
    numpy.divide(num, den, out=out, where=den > 0)
    return out


def prf_arrays(summed: numpy.ndarray[Any, Any]) -> numpy.ndarray[Any, Any]:
    """Counts of shape ``(rows, 3, *rest)`` (tp, fp, fn on axis 1) -> precision,
    recall and F1 of shape ``(3, rows, *rest)``."""
    tp, fp, fn = summed[:, 0], summed[:, 1], summed[:, 2]
    p = _ratio(tp, tp + fp)
    r = _ratio(tp, tp + fn)
    f = _ratio(2 * tp, 2 * tp + fp + fn)  # = 2PR / (P + R), 0 when both are 0
    return numpy.stack([p, r, f])


@dataclass
class Counts:
    """True positives, false positives and false negatives, added doc by doc."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, pred: set[Any], gold: set[Any]) -> None:
        tp = len(pred & gold)
        self.tp += tp
        self.fp += len(pred) - tp
        self.fn += len(gold) - tp

    def prf(self) -> dict[str, float]:
        return prf(self.tp, self.fp, self.fn)
