"""Guaranteed precision: the lowest probability threshold whose entities are
right at least a target share of the time, with a stated confidence, from
yes/no answers alone.

Method (Learn-then-Test with fixed-sequence testing; Angelopoulos, Bates,
Candes, Jordan, Lei 2021). For each threshold ``t`` of a grid fixed in
advance (:data:`THRESHOLD_GRID`: 0.99, 0.98, ..., 0.01), the null
hypothesis is "the entities of the stream with p >= t have precision below
the target". It is rejected when the one-sided Clopper-Pearson lower bound
at level ``1 - confidence`` of the answers' precision among p >= t is at
least the target. Thresholds are tested from high to low and testing stops
at the first one not rejected; the answer is the last one rejected. Fixed-
sequence testing needs no multiplicity correction: the procedure certifies
a threshold whose precision is below the target only if it rejects the
first true null hypothesis of the sequence, which a level-``delta`` test does
with probability at most ``delta``. Thresholds above every answer (no answer
to test) are passed over without stopping; testing starts at the highest
threshold with an answer above it.

Weights (answers drawn by uncertainty, :mod:`beamner.teach.sampling`): the
precision is the weighted mean ``sum w y / sum w`` over answers with
p >= t, and the Clopper-Pearson bound is taken with Kish's effective sample
size ``n_eff = (sum w)^2 / sum w^2`` in place of n and ``n_eff * precision``
successes (the Beta quantile takes real parameters). An exact bound for a
weighted binomial does not exist in closed form; the effective-size binomial
has the variance of the weighted mean, is exact for equal weights, and its
coverage with unequal weights is checked by simulation
(tests/test_threshold.py, experiments/answers_calibration.py).

What is guaranteed: the precision of the population the answers were drawn
from (the stream's candidates, weighted back by inclusion probability), at
the probabilities the answers were scored with. The precision realized on a
given batch of new text scatters around it (a batch of 300 entities at
precision 0.32 has a standard deviation of 0.027), so a threshold whose
population precision is just above the target falls below it on about half
of such batches. With ``batch_counts`` (how many entities of the batch to be
labelled have p >= t, which the model tells without any label), the guarantee
is about the batch itself: the test at ``t`` takes the lower bound at level
``delta / 2`` and passes when even the ``delta / 2`` binomial quantile of the
batch's precision at that bound reaches the target (a union bound: the
batch's precision falls below the target with probability <= ``delta``). Recall is estimated as the
weighted share of accepted answers with p >= t: recall among the entities
the beam proposes (p >= the stream's threshold), not among every gold
entity of the text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy
from numpy.typing import NDArray

from beamner.probabilities.answered import effective_sample_size

__all__ = [
    "THRESHOLD_GRID",
    "ThresholdResult",
    "certify_threshold",
    "clopper_pearson_lower",
    "precision_interval",
]

#: The thresholds tested, high to low; fixed before any answer is seen.
THRESHOLD_GRID: tuple[float, ...] = tuple(round(1.0 - k / 100, 2) for k in range(1, 100))


def clopper_pearson_lower(successes: float, n: float, alpha: float) -> float:
    """One-sided ``1 - alpha`` Clopper-Pearson lower bound of a binomial
    proportion (``successes`` and ``n`` may be non-integer: effective counts).
    0 when there are no successes."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if n <= 0 or successes <= 0:
        return 0.0
    from scipy.stats import beta

    successes = min(successes, n)
    return float(beta.ppf(alpha, successes, n - successes + 1.0))


def _batch_lower(successes: float, n: float, alpha: float, batch: int) -> float:
    """The ``alpha / 2`` quantile of a batch's precision (``batch`` entities)
    when the population's is its ``alpha / 2`` Clopper-Pearson lower bound."""
    bound = clopper_pearson_lower(successes, n, alpha / 2)
    if batch <= 0:
        return bound  # nothing in the batch above t: no batch precision to miss
    from scipy.stats import binom

    return float(binom.ppf(alpha / 2, batch, bound)) / batch


@dataclass
class ThresholdResult:
    """What :func:`certify_threshold` found. ``threshold`` is None when no
    threshold could be certified."""

    threshold: float | None
    target: float
    confidence: float
    #: at ``threshold``: weighted precision of the answers, its lower bound,
    #: answers above it, their effective size, estimated recall
    precision: float | None = None
    lower_bound: float | None = None
    n_answers: int = 0
    effective_n: float = 0.0
    expected_recall: float | None = None
    #: every threshold tested, high to low: t, n, n_eff, precision, lower bound, passed
    tested: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def certify_threshold(
    probs: NDArray[Any] | Sequence[float],
    correct: NDArray[Any] | Sequence[bool],
    weights: NDArray[Any] | Sequence[float] | None = None,
    *,
    precision: float = 0.9,
    confidence: float = 0.9,
    grid: Sequence[float] = THRESHOLD_GRID,
    batch_counts: Callable[[float], int] | None = None,
) -> ThresholdResult:
    """The lowest threshold of ``grid`` (tested high to low, see the module
    docstring) at which the answers certify precision >= ``precision`` with
    confidence ``confidence``; with ``batch_counts`` (threshold -> number of
    entities of a batch with p >= it), precision on that batch."""
    if not 0.0 < precision < 1.0:
        raise ValueError(f"target precision must be in (0, 1), got {precision}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p = numpy.asarray(probs, dtype=numpy.float64)
    y = numpy.asarray(correct, dtype=numpy.bool_)
    w = numpy.ones_like(p) if weights is None else numpy.asarray(weights, dtype=numpy.float64)
    if not (p.shape == y.shape == w.shape) or p.ndim != 1:
        raise ValueError(f"probs {p.shape}, correct {y.shape}, weights {w.shape} must match")
    if numpy.any(w <= 0) or not numpy.all(numpy.isfinite(w)):
        raise ValueError("weights must be finite numbers > 0")
    thresholds = sorted({float(t) for t in grid}, reverse=True)
    alpha = 1.0 - confidence
    accepted_weight = float(w[y].sum())
    result = ThresholdResult(None, precision, confidence)
    for t in thresholds:
        above = p >= t
        n = int(above.sum())
        if n == 0:
            continue  # no answer to test: passed over (the module docstring)
        wa, ya = w[above], y[above]
        prec = float((wa * ya).sum() / wa.sum())
        n_eff = effective_sample_size(wa)
        if batch_counts is None:
            lower = clopper_pearson_lower(prec * n_eff, n_eff, alpha)
        else:
            lower = _batch_lower(prec * n_eff, n_eff, alpha, int(batch_counts(t)))
        passed = lower >= precision
        result.tested.append(
            {
                "threshold": t,
                "n_answers": n,
                "effective_n": n_eff,
                "precision": prec,
                "lower_bound": lower,
                "passed": passed,
            }
        )
        if not passed:
            break
        result.threshold, result.precision, result.lower_bound = t, prec, lower
        result.n_answers, result.effective_n = n, n_eff
        result.expected_recall = (
            float((wa * ya).sum() / accepted_weight) if accepted_weight > 0 else None
        )
    if result.threshold is None:
        if not result.tested:
            result.reason = "no answers to test"
        else:
            first = result.tested[0]
            result.reason = (
                f"no threshold can be certified: at the highest threshold with answers "
                f"(p >= {first['threshold']:g}: {first['n_answers']} answers, effective "
                f"{first['effective_n']:.1f}) the precision is {first['precision']:.3f} and "
                f"its {confidence:g}-confidence lower bound {first['lower_bound']:.3f} < "
                f"{precision:g}"
            )
    else:
        result.reason = (
            f"precision >= {precision:g} certified at p >= {result.threshold:g} with "
            f"confidence {confidence:g}"
        )
    return result


def precision_interval(
    probs: NDArray[Any] | Sequence[float],
    correct: NDArray[Any] | Sequence[bool],
    weights: NDArray[Any] | Sequence[float] | None = None,
    *,
    threshold: float,
    confidence: float = 0.9,
) -> dict[str, Any]:
    """The weighted precision of the answers with p >= ``threshold`` and its
    two-sided ``confidence`` Clopper-Pearson interval (Kish's effective size,
    as :func:`certify_threshold`): what a teach page can show as "precision
    at the threshold". ``estimate`` etc. are None without answers above it."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    p = numpy.asarray(probs, dtype=numpy.float64)
    y = numpy.asarray(correct, dtype=numpy.bool_)
    w = numpy.ones_like(p) if weights is None else numpy.asarray(weights, dtype=numpy.float64)
    above = p >= threshold
    out: dict[str, Any] = {"threshold": threshold, "confidence": confidence}
    out["n_answers"] = int(above.sum())
    if not above.any():
        return {**out, "estimate": None, "lower": None, "upper": None, "effective_n": 0.0}
    wa, ya = w[above], y[above]
    est = float((wa * ya).sum() / wa.sum())
    n_eff = effective_sample_size(wa)
    alpha = (1.0 - confidence) / 2
    lower = clopper_pearson_lower(est * n_eff, n_eff, alpha)
    # the upper bound is one minus the lower bound of the failures
    upper = 1.0 - clopper_pearson_lower((1.0 - est) * n_eff, n_eff, alpha)
    return {**out, "estimate": est, "lower": lower, "upper": upper, "effective_n": n_eff}
