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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy
from numpy.typing import NDArray

from beamner._core import BeamBatch

if TYPE_CHECKING:
    from beamner.probabilities.calibrators import IsotonicCalibrator

__all__ = [
    "CandidateSet",
    "brier_score",
    "entity_probabilities",
    "expected_calibration_error",
    "fit_temperature",
    "parse_probabilities",
    "probability_report",
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
    labels: list[list[str]] = field(default_factory=list)  # (n_candidates,) per doc

    @classmethod
    def empty(cls) -> CandidateSet:
        return cls([], [], [], [])

    def add(
        self,
        scores: Sequence[float],
        parses: Sequence[set[Any]] | Sequence[Sequence[Any]],
        gold: set[Any],
        label_map: Mapping[str, str] | None = None,
    ) -> None:
        """One doc: parse scores, each parse's entities ``(start, end, label)``,
        the gold entity set. Candidates are the parses' entities in the
        model's labels (what a calibrator is applied to); with ``label_map``
        only those with a mapped label, correct when the mapped entity is gold."""
        sets = [set(p) for p in parses]
        candidates = sorted(
            {ent for ents in sets for ent in ents if label_map is None or ent[2] in label_map}
        )
        member = numpy.zeros((len(candidates), len(sets)), dtype=numpy.bool_)
        index = {ent: i for i, ent in enumerate(candidates)}
        for j, ents in enumerate(sets):
            for ent in ents:
                i = index.get(ent)
                if i is not None:
                    member[i, j] = True
        if label_map is None:
            correct = [c in gold for c in candidates]
        else:
            correct = [(s, e, label_map[lab]) in gold for s, e, lab in candidates]
        self.scores.append(numpy.asarray(scores, dtype=numpy.float64))
        self.membership.append(member)
        self.correct.append(numpy.asarray(correct, dtype=numpy.bool_))
        self.labels.append([str(c[2]) for c in candidates])

    def extend(self, other: CandidateSet) -> None:
        self.scores.extend(other.scores)
        self.membership.extend(other.membership)
        self.correct.extend(other.correct)
        self.labels.extend(other.labels)

    def __len__(self) -> int:
        return sum(len(c) for c in self.correct)

    def probabilities(
        self, temperature: float = 1.0, calibrator: IsotonicCalibrator | None = None
    ) -> tuple[NDArray[Any], NDArray[Any]]:
        """Flat ``(probabilities, correct)`` over all candidates: beam marginals
        at ``temperature``, then mapped by ``calibrator`` when given."""
        probs = [
            m.astype(numpy.float64) @ parse_probabilities(s, temperature)
            for s, m in zip(self.scores, self.membership)
            if m.shape[0]
        ]
        flags = [c for c in self.correct if c.size]
        if not probs:
            return numpy.zeros(0), numpy.zeros(0, dtype=numpy.bool_)
        p = numpy.clip(numpy.concatenate(probs), 0.0, 1.0)
        if calibrator is not None:
            p = calibrator(p, self.flat_labels())
        return p, numpy.concatenate(flags)

    def flat_labels(self) -> list[str]:
        """Each candidate's label (model labels), in :meth:`probabilities` order."""
        return [label for labels in self.labels for label in labels]

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

    def metrics(
        self,
        temperature: float = 1.0,
        n_bins: int = 10,
        calibrator: IsotonicCalibrator | None = None,
    ) -> dict[str, Any]:
        p, y = self.probabilities(temperature, calibrator)
        eps = 1e-12
        q = numpy.clip(p, eps, 1.0 - eps)
        nll = float(-numpy.mean(numpy.where(y, numpy.log(q), numpy.log1p(-q)))) if p.size else 0.0
        return {
            "temperature": temperature,
            "calibration": calibrator.method if calibrator is not None else None,
            **probability_report(p, y, n_bins),
            "nll": nll,
        }


def probability_report(
    probs: NDArray[Any] | Sequence[float],
    correct: NDArray[Any] | Sequence[bool],
    n_bins: int = 10,
    min_prob: float = 0.1,
    confident: float = 0.9,
) -> dict[str, Any]:
    """What a user of the probabilities needs to know, over candidate entities:
    ``ece`` over all of them; ``ece_p10``, the ECE over those with
    ``p >= min_prob`` (the beam's thousands of near-zero candidates do not
    drown it, and it does not move with the beam density); ``n_p10``;
    ``precision_p90``, the fraction right among those with ``p >= confident``
    (None when there are none) and ``n_p90``; ``brier``; the ``reliability``
    table over all candidates."""
    p = numpy.clip(numpy.asarray(probs, dtype=numpy.float64), 0.0, 1.0)
    y = numpy.asarray(correct, dtype=numpy.bool_)
    if p.shape != y.shape:
        raise ValueError(f"probs {p.shape} and correct {y.shape} differ in shape")
    likely = p >= min_prob
    sure = p >= confident
    return {
        "n_candidates": int(p.size),
        "ece": expected_calibration_error(p, y, n_bins),
        "ece_p10": expected_calibration_error(p[likely], y[likely], n_bins),
        "n_p10": int(likely.sum()),
        "precision_p90": float(y[sure].mean()) if sure.any() else None,
        "n_p90": int(sure.sum()),
        "brier": brier_score(p, y),
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
    a coarse grid over ``log T`` brackets the minimum (the loss need not be
    convex in ``T``), then scipy's bounded Brent search refines it."""
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    if not lo < hi:
        raise ValueError(f"bad bounds {bounds}")
    candidates.loss(1.0, objective)  # validates the objective
    try:
        from scipy.optimize import minimize_scalar
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f'fitting a temperature needs scipy ({err}); pip install "beamner[calibration]"'
        ) from None
    grid = numpy.linspace(lo, hi, 41)
    losses = [candidates.loss(math.exp(x), objective) for x in grid]
    k = int(numpy.argmin(losses))
    a, b = float(grid[max(k - 1, 0)]), float(grid[min(k + 1, len(grid) - 1)])
    result = minimize_scalar(
        lambda x: candidates.loss(math.exp(x), objective),
        bounds=(a, b),
        method="bounded",
        options={"xatol": tol},
    )
    best = float(result.x)
    if not result.success or float(result.fun) > losses[k]:
        best = float(grid[k])
    return math.exp(best)
