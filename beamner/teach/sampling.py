"""Uncertainty sampling with known inclusion probabilities, so that answers
collected by uncertainty still give unbiased estimates.

A task stream that always serves the most uncertain candidate (p closest to
0.5) sees mostly p ~ 0.5 and almost none of the confident candidates: a
calibration map or a precision fitted on those answers describes the
candidates served, not the user's stream. Here each candidate the stream
reads is offered with a *known* probability (Poisson sampling)::

    pi(p) = min(1, rate * (floor + (1 - floor) * u(p))),   u(p) = 1 - |2p - 1|

independently of every other candidate, and ``pi`` is recorded with the task
(``meta["inclusion_probability"]``). An answered candidate then stands for
``1 / pi`` candidates of the stream (Horvitz-Thompson): a weighted mean over
answers (ECE, precision at a threshold, the isotonic fit) is an unbiased
estimate of the same mean over every candidate the stream read, although
uncertain candidates are asked about up to ``1 / floor`` times as often.

Why this design:

* *Poisson* sampling (one independent coin per candidate) makes the
  inclusion probability exact and simple: it does not depend on which other
  candidates were read, on the buffer, or on the order tasks are served in.
  A rate chosen from the past (e.g. to keep the annotator busy) is fine: the
  weight is ``1 / pi`` given everything before the coin.
* *Proportional to uncertainty* keeps what uncertainty order is for: the
  answers that move the model and the calibration map most are asked about
  most.
* The *floor* (default 0.5) gives every candidate a chance of at least
  ``floor * rate``: no weight exceeds ``1 / floor`` times the smallest, so a
  few confident answers cannot dominate an estimate, and confident
  candidates are still answered. They matter most on a new domain: a greedy
  model's many p ~ 1 candidates were right 34-50% of the time on WNUT-17 and
  BTC, and a calibration or a precision guarantee at a high threshold rests on
  them. Measured (experiments/answers_calibration.py, 300 answers drawn by
  uncertainty, 20 splits x 5 draws): held-out ECE (p >= 0.1) at floor
  0.2 / 0.3 / 0.5: WNUT-17 0.047 / 0.052 / 0.045, BTC 0.054 / 0.046 / 0.042
  (differences near the noise of the estimate, +-0.004). Uncertain
  candidates are still asked about twice as often as confident ones.

Answers without the record (other tools, older sessions) count as a uniform
sample: weight 1 (:func:`answer_weight` returns None and the caller says so).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

import numpy
from numpy.typing import NDArray

__all__ = [
    "DEFAULT_FLOOR",
    "INCLUSION_KEY",
    "UncertaintySampler",
    "answer_weight",
    "answered_precision",
    "inclusion_probabilities",
    "inclusion_probability",
    "rate_for",
]

#: The key of ``task["meta"]`` holding the probability with which the task was drawn.
INCLUSION_KEY = "inclusion_probability"

#: The smallest inclusion probability relative to the rate (see the module docstring).
DEFAULT_FLOOR = 0.5


def _check(rate: float, floor: float) -> None:
    if not (rate > 0.0 and math.isfinite(rate)):
        raise ValueError(f"sampling rate must be a finite number > 0, got {rate}")
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"sampling floor must be in (0, 1], got {floor}")


def inclusion_probabilities(
    probs: NDArray[Any] | list[float], rate: float = 1.0, floor: float = DEFAULT_FLOOR
) -> NDArray[numpy.float64]:
    """``pi(p)`` of the module docstring for each probability ``p``."""
    _check(rate, floor)
    p = numpy.clip(numpy.asarray(probs, dtype=numpy.float64), 0.0, 1.0)
    u = 1.0 - numpy.abs(2.0 * p - 1.0)
    return numpy.minimum(1.0, rate * (floor + (1.0 - floor) * u))


def inclusion_probability(p: float, rate: float = 1.0, floor: float = DEFAULT_FLOOR) -> float:
    """``pi(p)`` for one candidate."""
    return float(inclusion_probabilities([p], rate, floor)[0])


def rate_for(
    probs: NDArray[Any] | list[float], expected: float, floor: float = DEFAULT_FLOOR
) -> float:
    """The rate at which the expected number of candidates drawn from
    ``probs`` is ``expected`` (bisection; every candidate's pi is 1 at the
    largest rate, so ``expected >= len(probs)`` gives that rate)."""
    p = numpy.asarray(probs, dtype=numpy.float64)
    if expected <= 0 or p.size == 0:
        raise ValueError(f"need candidates and expected > 0, got {p.size} and {expected}")
    hi = 1.0 / floor  # every pi is 1 here
    if expected >= p.size:
        return hi
    lo = 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if inclusion_probabilities(p, mid, floor).sum() < expected:
            lo = mid
        else:
            hi = mid
    return hi


class UncertaintySampler:
    """Draws candidates with :func:`inclusion_probability` (one seeded coin
    each) and records the probability in the task's ``meta``.

    For :class:`~beamner.teach.tasks.TaskStream`: call :meth:`draw` once per
    candidate when its text is read (not when re-scored: the probability is
    the one the coin was thrown with), keep only drawn candidates, serve
    them in reading order, and put the returned pi in the task with
    :meth:`record`."""

    def __init__(self, rate: float = 1.0, floor: float = DEFAULT_FLOOR, seed: int = 0) -> None:
        _check(rate, floor)
        self.rate = rate
        self.floor = floor
        self.rng = random.Random(seed)
        #: candidates seen and drawn
        self.n_seen = 0
        self.n_drawn = 0

    def draw(self, p: float) -> float | None:
        """The inclusion probability if the candidate is drawn, else None."""
        pi = inclusion_probability(p, self.rate, self.floor)
        self.n_seen += 1
        if self.rng.random() < pi:
            self.n_drawn += 1
            return pi
        return None

    @staticmethod
    def record(task: dict[str, Any], pi: float) -> dict[str, Any]:
        """``task`` with ``meta[INCLUSION_KEY] = pi`` (in place; returned)."""
        meta = task.setdefault("meta", {})
        meta[INCLUSION_KEY] = round(float(pi), 8)
        return task


def answer_weight(meta: Any) -> float | None:
    """``1 / meta[INCLUSION_KEY]``, or None when the answer has no record
    (count it as a uniform sample). ValueError when the record is not a
    probability in (0, 1]."""
    if not isinstance(meta, Mapping) or INCLUSION_KEY not in meta:
        return None
    pi = meta[INCLUSION_KEY]
    if isinstance(pi, bool) or not isinstance(pi, (int, float)) or not 0.0 < pi <= 1.0:
        raise ValueError(f'"meta.{INCLUSION_KEY}" must be a number in (0, 1], got {pi!r}')
    return 1.0 / float(pi)


def answered_precision(
    answers: Iterable[Mapping[str, Any]], threshold: float, confidence: float = 0.9
) -> dict[str, Any]:
    """What a teach page can show while answers come in: the weighted
    precision of the answered tasks whose served score (``meta.score``, the p
    the task was shown with) is >= ``threshold``, with its two-sided
    ``confidence`` interval (:func:`beamner.probabilities.guarantee.precision_interval`),
    each answer weighted by 1 / its inclusion probability (1 without one;
    ``n_unweighted`` counts those). ``ignore`` answers and answers without a
    score are skipped."""
    from beamner.probabilities.guarantee import precision_interval

    probs: list[float] = []
    right: list[bool] = []
    weights: list[float] = []
    unweighted = 0
    for task in answers:
        meta = task.get("meta")
        decision = task.get("answer")
        if decision not in ("accept", "reject") or not isinstance(meta, Mapping):
            continue
        score = meta.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            continue
        weight = answer_weight(meta)
        unweighted += weight is None
        probs.append(float(score))
        right.append(decision == "accept")
        weights.append(1.0 if weight is None else weight)
    out = precision_interval(probs, right, weights, threshold=threshold, confidence=confidence)
    return {**out, "n_unweighted": unweighted}
