"""Answers as labelled, weighted candidates: fitting a calibration on them and
estimating calibration error and precision with the same weights.

Each accept/reject answer about one span is a labelled candidate: its beam
probability under the model's settings (0 when no parse of the beam holds
it), right (accepted) or wrong (rejected), and a weight, 1 / the
probability with which the task stream drew it
(:mod:`beamner.teach.sampling`; 1 for answers without that record). Every
estimate here is a weighted mean over answers, so that answers collected by
uncertainty describe the whole stream (Horvitz-Thompson); the fit and the
estimates use the same weights.

Fit (:func:`fit_from_answers`): the isotonic map (weighted) from
:data:`MIN_ISOTONIC_ANSWERS` answers on, the temperature below. An isotonic
map has one free value per block of answers; with a few hundred answers
(10-15% of them accepted on a new domain) plain isotonic regression puts a
level on a handful of answers, and the top level, where most of a greedy
model's confident candidates sit, swung between 0.1 and 1.0 from split to
split. So every level must hold at least :func:`min_block` answers
(``max(40, n / 10)``: at most ~10 levels, the resolution a 10-bin ECE can
see). Measured (experiments/answers_calibration.py, 300 answers drawn by
uncertainty, 20 splits x 5 draws): held-out ECE (p >= 0.1) 0.061 -> 0.045
on WNUT-17 and 0.074 -> 0.042 on BTC.

The cutoff: below ``2 * MIN_BLOCK`` answers the map has a single level, a
constant that ranks every entity alike (a threshold could then only take all
or nothing), so the temperature, which keeps the beam's ranking, is the
fallback there. It is not the better-calibrated choice on a new domain: the
temperature only sharpens or flattens the beam, and a greedy model that is
overconfident on every candidate stays so (held-out ECE 0.17-0.20 at any
number of answers, against 0.06-0.08 for the one-level map already at 25-50
answers; ``cutoff`` in the experiment's results).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy
from numpy.typing import NDArray

from beamner.probabilities.calibration import parse_probabilities
from beamner.probabilities.calibrators import IsotonicCalibrator, fit_isotonic

__all__ = [
    "MIN_BLOCK",
    "MIN_ISOTONIC_ANSWERS",
    "AnswerFit",
    "LabelledCandidates",
    "cross_fitted_report",
    "effective_sample_size",
    "fit_from_answers",
    "fit_temperature_weighted",
    "min_block",
    "weighted_ece",
    "weighted_report",
]

#: The fewest answers a level of an isotonic map fitted on answers holds.
MIN_BLOCK = 40
#: Fewer answers than this (right and wrong together) fit a temperature, not an
#: isotonic map: below it the map would have one level (the module docstring).
MIN_ISOTONIC_ANSWERS = 2 * MIN_BLOCK


def min_block(n_answers: int) -> int:
    """Answers per level of the isotonic map: ``max(MIN_BLOCK, n / 10)``."""
    return max(MIN_BLOCK, n_answers // 10)


@dataclass
class LabelledCandidates:
    """Answered candidates: per candidate its doc's final-beam parse scores
    (shared arrays), which of those parses hold it, whether it is right, its
    weight and its label (the model's)."""

    scores: list[NDArray[numpy.float64]] = field(default_factory=list)
    membership: list[NDArray[numpy.bool_]] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    #: per candidate, the text it is about (cross-fitting keeps a text's answers together)
    groups: list[int] = field(default_factory=list)

    def add(
        self,
        scores: NDArray[numpy.float64],
        member: NDArray[numpy.bool_],
        correct: bool,
        weight: float = 1.0,
        label: str = "",
        group: int | None = None,
    ) -> None:
        if not (weight > 0.0 and math.isfinite(weight)):
            raise ValueError(f"an answer's weight must be a finite number > 0, got {weight}")
        self.scores.append(scores)
        self.membership.append(numpy.asarray(member, dtype=numpy.bool_))
        self.correct.append(bool(correct))
        self.weights.append(float(weight))
        self.labels.append(label)
        self.groups.append(len(self.groups) if group is None else group)

    def subset(self, index: NDArray[numpy.int64] | list[int]) -> LabelledCandidates:
        """The candidates at ``index``."""
        out = LabelledCandidates()
        for i in index:
            out.add(
                self.scores[i],
                self.membership[i],
                self.correct[i],
                self.weights[i],
                self.labels[i],
                self.groups[i],
            )
        return out

    def __len__(self) -> int:
        return len(self.correct)

    def probabilities(self, temperature: float = 1.0) -> NDArray[numpy.float64]:
        """Each candidate's beam probability at ``temperature``."""
        cache: dict[int, NDArray[numpy.float64]] = {}
        out = numpy.zeros(len(self), dtype=numpy.float64)
        for i, (s, m) in enumerate(zip(self.scores, self.membership)):
            probs = cache.get(id(s))
            if probs is None:
                probs = cache[id(s)] = parse_probabilities(s, temperature)
            out[i] = float(probs[m].sum()) if m.size else 0.0
        return numpy.clip(out, 0.0, 1.0)

    def arrays(self) -> tuple[NDArray[numpy.bool_], NDArray[numpy.float64]]:
        """``(correct, weights)`` as arrays."""
        return numpy.asarray(self.correct, dtype=numpy.bool_), numpy.asarray(
            self.weights, dtype=numpy.float64
        )


def effective_sample_size(weights: NDArray[Any]) -> float:
    """Kish's ``(sum w)^2 / sum w^2``: the number of unweighted answers whose
    mean is as variable as this weighted mean (``len(weights)`` when equal)."""
    w = numpy.asarray(weights, dtype=numpy.float64)
    if w.size == 0:
        return 0.0
    return float(w.sum() ** 2 / (w**2).sum())


def weighted_ece(
    probs: NDArray[Any],
    correct: NDArray[Any],
    weights: NDArray[Any] | None = None,
    n_bins: int = 10,
) -> float:
    """ECE over ``n_bins`` equal-width bins with each candidate counted
    ``weight`` times (equal weights: :func:`expected_calibration_error`)."""
    p = numpy.clip(numpy.asarray(probs, dtype=numpy.float64), 0.0, 1.0)
    y = numpy.asarray(correct, dtype=numpy.float64)
    w = numpy.ones_like(p) if weights is None else numpy.asarray(weights, dtype=numpy.float64)
    total = w.sum()
    if p.size == 0 or total <= 0:
        return 0.0
    index = numpy.minimum((p * n_bins).astype(numpy.int64), n_bins - 1)
    py = numpy.bincount(index, w * y, n_bins)
    pp = numpy.bincount(index, w * p, n_bins)
    return float(numpy.abs(py - pp).sum() / total)


def weighted_report(
    probs: NDArray[Any],
    correct: NDArray[Any],
    weights: NDArray[Any] | None = None,
    *,
    n_bins: int = 10,
    min_prob: float = 0.1,
    confident: float = 0.9,
) -> dict[str, Any]:
    """:func:`~beamner.probabilities.calibration.probability_report`'s
    numbers, weighted: ``ece``, ``ece_p10`` (over p >= ``min_prob``),
    ``precision_p90`` (over p >= ``confident``; None when none), their
    answer counts and the effective sample size."""
    p = numpy.asarray(probs, dtype=numpy.float64)
    y = numpy.asarray(correct, dtype=numpy.bool_)
    w = numpy.ones_like(p) if weights is None else numpy.asarray(weights, dtype=numpy.float64)
    likely, sure = p >= min_prob, p >= confident
    return {
        "n_answers": int(p.size),
        "effective_n": effective_sample_size(w),
        "ece": weighted_ece(p, y, w, n_bins),
        "ece_p10": weighted_ece(p[likely], y[likely], w[likely], n_bins),
        "n_p10": int(likely.sum()),
        "precision_p90": float((w[sure] * y[sure]).sum() / w[sure].sum()) if sure.any() else None,
        "n_p90": int(sure.sum()),
    }


def _nll(p: NDArray[Any], y: NDArray[Any], w: NDArray[Any]) -> float:
    q = numpy.clip(p, 1e-12, 1.0 - 1e-12)
    return float(-(w * numpy.where(y, numpy.log(q), numpy.log1p(-q))).sum() / w.sum())


def fit_temperature_weighted(
    candidates: LabelledCandidates, bounds: tuple[float, float] = (0.05, 20.0)
) -> float:
    """The temperature minimising the weighted cross-entropy of the answers
    (a grid over ``log T``, then scipy's bounded Brent search around its best
    point, as :func:`~beamner.probabilities.calibration.fit_temperature`)."""
    from scipy.optimize import minimize_scalar

    y, w = candidates.arrays()

    def loss(log_t: float) -> float:
        return _nll(candidates.probabilities(math.exp(log_t)), y, w)

    grid = numpy.linspace(math.log(bounds[0]), math.log(bounds[1]), 31)
    losses = [loss(float(x)) for x in grid]
    k = int(numpy.argmin(losses))
    a, b = float(grid[max(k - 1, 0)]), float(grid[min(k + 1, len(grid) - 1)])
    res = minimize_scalar(loss, bounds=(a, b), method="bounded", options={"xatol": 1e-4})
    best = float(res.x) if res.success and float(res.fun) <= losses[k] else float(grid[k])
    return math.exp(best)


@dataclass
class AnswerFit:
    """What :func:`fit_from_answers` fitted: ``method`` ``"isotonic"`` (the
    ``calibrator``, on probabilities at ``temperature``, the model's) or
    ``"temperature"`` (a new ``temperature``, no calibrator)."""

    method: str
    temperature: float
    calibrator: IsotonicCalibrator | None
    reason: str

    def probabilities(self, candidates: LabelledCandidates) -> NDArray[numpy.float64]:
        p = candidates.probabilities(self.temperature)
        return self.calibrator(p, candidates.labels) if self.calibrator is not None else p


def fit_from_answers(
    candidates: LabelledCandidates,
    *,
    temperature: float = 1.0,
    normalize: str = "none",
    method: str = "auto",
    min_isotonic: int = MIN_ISOTONIC_ANSWERS,
    per_label: bool = False,
) -> AnswerFit:
    """Fit the calibration on weighted answers. ``method``: ``"auto"``
    (isotonic from ``min_isotonic`` answers on, else temperature),
    ``"isotonic"`` or ``"temperature"``. ``temperature``: the model's, under
    which the isotonic map is fitted. ValueError without both right and wrong
    answers (nothing tells a calibration which way to move)."""
    if method not in ("auto", "isotonic", "temperature"):
        raise ValueError(f"method must be auto, isotonic or temperature, got {method!r}")
    y, w = candidates.arrays()
    n_right = int(y.sum())
    if n_right == 0 or n_right == len(y):
        raise ValueError(
            f"calibration from answers needs both accepted and rejected spans, got {n_right} "
            f"accepted of {len(y)}"
        )
    if method == "auto":
        method = "isotonic" if len(y) >= min_isotonic else "temperature"
        reason = (
            f"{len(y)} answers >= {min_isotonic}: isotonic"
            if method == "isotonic"
            else f"{len(y)} answers < {min_isotonic}: temperature (too few for an isotonic map)"
        )
    else:
        reason = f"{method} asked for"
    if method == "temperature":
        return AnswerFit("temperature", fit_temperature_weighted(candidates), None, reason)
    p = candidates.probabilities(temperature)
    cal = fit_isotonic(
        p,
        y,
        candidates.labels,
        per_label=per_label,
        normalize=normalize,
        weights=w,
        min_block=min_block(len(y)),
    )
    return AnswerFit("isotonic", temperature, cal, reason)


def cross_fitted_report(
    candidates: LabelledCandidates, folds: int = 5, seed: int = 0, **fit_args: Any
) -> dict[str, Any] | None:
    """:func:`weighted_report` of calibrated probabilities each fitted
    without its own text's answers: the texts are dealt into ``folds`` groups,
    and each group's answers are mapped by :func:`fit_from_answers` on the
    others (``fit_args``). An honest estimate of how calibrated the fitted map
    is on the stream (the in-sample ECE of an isotonic map is ~0 by
    construction). None when a fold cannot be fitted (all its training
    answers accepted, or all rejected)."""
    groups = numpy.asarray(candidates.groups)
    texts = numpy.unique(groups)
    if texts.size < folds:
        return None
    rng = numpy.random.default_rng(seed)
    fold_of = dict(zip(rng.permutation(texts).tolist(), numpy.arange(texts.size) % folds))
    fold = numpy.asarray([fold_of[g] for g in groups.tolist()])
    p = numpy.zeros(len(candidates))
    for k in range(folds):
        held = numpy.flatnonzero(fold == k)
        train = numpy.flatnonzero(fold != k)
        try:
            fit = fit_from_answers(candidates.subset(train), **fit_args)
        except ValueError:
            return None
        p[held] = fit.probabilities(candidates.subset(held))
    y, w = candidates.arrays()
    return {"folds": folds, **weighted_report(p, y, w)}
