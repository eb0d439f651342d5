"""Temperature scaling of beam probabilities and calibration metrics.

A parse's probability is the softmax of the final beam's scores (thinc's
``Beam.probs``, spaCy's ``get_beam_parses``). With a temperature ``T`` it is
``softmax(score / T)``: ``T > 1`` flattens the distribution, ``T < 1``
sharpens it; the ranking of the parses (and so the best parse) is unchanged.
An entity's probability is the sum of the probabilities of the parses that
contain it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy
from numpy.typing import NDArray

from beamner._core import BeamBatch

__all__ = [
    "CandidateSet",
    "brier_score",
    "entity_probabilities",
    "expected_calibration_error",
    "fit_temperature",
    "parse_probabilities",
    "reliability_table",
]

Entity = tuple[int, int, int]


def parse_probabilities(scores: Sequence[float] | NDArray[Any], temperature: float = 1.0) -> Any:
    """``softmax(scores / temperature)`` in float64."""
    if not temperature > 0.0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be a positive finite number, got {temperature}")
    s = numpy.asarray(scores, dtype=numpy.float64) / temperature
    if s.size == 0:
        return s
    e = numpy.exp(s - s.max())
    return e / e.sum()


def entity_probabilities(
    batch: BeamBatch, doc: int, temperature: float = 1.0
) -> dict[Entity, float]:
    """``batch.entity_probabilities(doc)`` with the final scores divided by
    ``temperature`` before the softmax (exactly the native result when
    ``temperature == 1``)."""
    if temperature == 1.0:
        return batch.entity_probabilities(doc)
    parses = batch.parses(doc)
    probs = parse_probabilities([p.score for p in parses], temperature)
    out: dict[Entity, float] = {}
    for parse, prob in zip(parses, probs):
        for ent in parse.entities:
            out[ent] = out.get(ent, 0.0) + float(prob)
    return out


def expected_calibration_error(
    probs: NDArray[Any] | Sequence[float], correct: NDArray[Any] | Sequence[bool], n_bins: int = 10
) -> float:
    """ECE: ``sum_b |B|/N * |accuracy(B) - confidence(B)|`` over ``n_bins``
    equal-width probability bins (0 when there are no samples)."""
    table = reliability_table(probs, correct, n_bins)
    total = sum(row["count"] for row in table)
    if total == 0:
        return 0.0
    return float(
        sum(row["count"] / total * abs(row["accuracy"] - row["confidence"]) for row in table)
    )


def brier_score(
    probs: NDArray[Any] | Sequence[float], correct: NDArray[Any] | Sequence[bool]
) -> float:
    """Mean squared difference between probability and correctness (0 when empty)."""
    p = numpy.asarray(probs, dtype=numpy.float64)
    y = numpy.asarray(correct, dtype=numpy.float64)
    return float(numpy.mean((p - y) ** 2)) if p.size else 0.0


def reliability_table(
    probs: NDArray[Any] | Sequence[float], correct: NDArray[Any] | Sequence[bool], n_bins: int = 10
) -> list[dict[str, Any]]:
    """One row per equal-width bin ``[lower, upper)`` (the last one closed):
    ``count``, mean ``confidence`` and ``accuracy`` (fraction correct; both
    0 for an empty bin)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    p = numpy.clip(numpy.asarray(probs, dtype=numpy.float64), 0.0, 1.0)
    y = numpy.asarray(correct, dtype=numpy.float64)
    if p.shape != y.shape:
        raise ValueError(f"probs {p.shape} and correct {y.shape} differ in shape")
    index = numpy.minimum((p * n_bins).astype(numpy.int64), n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        rows.append(
            {
                "lower": b / n_bins,
                "upper": (b + 1) / n_bins,
                "count": count,
                "confidence": float(p[mask].mean()) if count else 0.0,
                "accuracy": float(y[mask].mean()) if count else 0.0,
            }
        )
    return rows


@dataclass
class CandidateSet:
    """Everything temperature scaling needs, per doc: the final beam's scores
    and, for every candidate entity, which parses contain it and whether it is
    correct. Probabilities at any temperature are recomputed from these."""

    scores: list[NDArray[numpy.float64]]
    membership: list[NDArray[numpy.bool_]]  # (n_candidates, n_parses) per doc
    correct: list[NDArray[numpy.bool_]]  # (n_candidates,) per doc

    @classmethod
    def empty(cls) -> CandidateSet:
        return cls([], [], [])

    def add(self, scores: Sequence[float], parses: Sequence[set[Any]], gold: set[Any]) -> None:
        """One doc: parse scores, each parse's entity set, the gold entity set."""
        candidates = sorted({ent for ents in parses for ent in ents})
        member = numpy.zeros((len(candidates), len(parses)), dtype=numpy.bool_)
        for j, ents in enumerate(parses):
            for i, ent in enumerate(candidates):
                member[i, j] = ent in ents
        self.scores.append(numpy.asarray(scores, dtype=numpy.float64))
        self.membership.append(member)
        self.correct.append(numpy.asarray([c in gold for c in candidates], dtype=numpy.bool_))

    def extend(self, other: CandidateSet) -> None:
        self.scores.extend(other.scores)
        self.membership.extend(other.membership)
        self.correct.extend(other.correct)

    def __len__(self) -> int:
        return sum(len(c) for c in self.correct)

    def probabilities(self, temperature: float = 1.0) -> tuple[NDArray[Any], NDArray[Any]]:
        """Flat ``(probabilities, correct)`` over all candidates."""
        probs = [
            m.astype(numpy.float64) @ parse_probabilities(s, temperature)
            for s, m in zip(self.scores, self.membership)
            if m.shape[0]
        ]
        flags = [c for c in self.correct if c.size]
        if not probs:
            return numpy.zeros(0), numpy.zeros(0, dtype=numpy.bool_)
        return numpy.clip(numpy.concatenate(probs), 0.0, 1.0), numpy.concatenate(flags)

    def loss(self, temperature: float, objective: str = "nll") -> float:
        p, y = self.probabilities(temperature)
        if p.size == 0:
            return 0.0
        if objective == "brier":
            return brier_score(p, y)
        if objective == "nll":
            eps = 1e-12
            p = numpy.clip(p, eps, 1.0 - eps)
            return float(-numpy.mean(numpy.where(y, numpy.log(p), numpy.log1p(-p))))
        raise ValueError(f"objective must be 'nll' or 'brier', got {objective!r}")

    def metrics(self, temperature: float = 1.0, n_bins: int = 10) -> dict[str, Any]:
        p, y = self.probabilities(temperature)
        return {
            "temperature": temperature,
            "n_candidates": int(p.size),
            "ece": expected_calibration_error(p, y, n_bins),
            "brier": brier_score(p, y),
            "nll": self.loss(temperature, "nll"),
            "reliability": reliability_table(p, y, n_bins),
        }


def fit_temperature(
    candidates: CandidateSet,
    objective: str = "nll",
    bounds: tuple[float, float] = (0.01, 100.0),
    tol: float = 1e-4,
) -> float:
    """The temperature minimising ``objective`` (``"nll"``: binary
    cross-entropy of entity correctness, or ``"brier"``) over ``candidates``:
    a coarse grid over ``log T`` then golden-section search around the best
    grid point."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    if not lo < hi:
        raise ValueError(f"bad bounds {bounds}")
    candidates.loss(1.0, objective)  # validates the objective
    grid = numpy.linspace(lo, hi, 41)
    losses = [candidates.loss(math.exp(x), objective) for x in grid]
    k = int(numpy.argmin(losses))
    a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = candidates.loss(math.exp(c), objective), candidates.loss(math.exp(d), objective)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = candidates.loss(math.exp(c), objective)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = candidates.loss(math.exp(d), objective)
    best = (a + b) / 2.0
    if candidates.loss(math.exp(best), objective) > losses[k]:
        best = float(grid[k])
    return math.exp(best)
