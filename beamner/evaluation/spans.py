"""Span-level evaluation of exclusive span-label distributions
(:func:`beamner.span_distributions`, spaCy's ``spancat_singlelabel``).

Three views, each on gold entities ``(start, end, label)``:

* ``spans``: precision/recall/F1 of the predicted spans (the argmax label of
  each candidate whose argmax is not "no entity"; non-overlapping when the
  predictor keeps them so, as ``doc.spans`` written with
  ``spans_allow_overlap=False``);
* ``predicted``: calibration of the winning label's probability over those
  predicted spans (correct: the span and label are gold), ECE, ECE over p >= 0.1,
  precision of p >= 0.9, reliability table;
* ``negative``: calibration of the negative column over every candidate span
  (correct: the span is not a gold entity, whatever the label).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy
from numpy.typing import NDArray
from spacy.tokens import Doc

from beamner.engine.settings import Normalize
from beamner.evaluation.metrics import prf
from beamner.probabilities.calibration import (
    brier_score,
    expected_calibration_error,
    reliability_table,
)

__all__ = [
    "SpanStats",
    "calibration_summary",
    "candidate_label_calibration",
    "evaluate_spans",
    "span_metrics",
    "span_report",
]

Entity = tuple[int, int, str]
#: One doc's candidates: spans (n, 2), label names, probabilities (n, labels + 1).
Candidates = tuple[Any, Sequence[str], Any]


def calibration_summary(
    probs: Sequence[float] | NDArray[Any], correct: Sequence[bool] | NDArray[Any], n_bins: int = 10
) -> dict[str, Any]:
    p = numpy.asarray(probs, dtype=numpy.float64)
    y = numpy.asarray(correct, dtype=numpy.bool_)
    high = p >= 0.9
    mid = p >= 0.1
    return {
        "n": int(p.size),
        "ece": expected_calibration_error(p, y, n_bins),
        "ece_p10": expected_calibration_error(p[mid], y[mid], n_bins),
        "brier": brier_score(p, y),
        "precision_p90": float(y[high].mean()) if high.any() else None,
        "n_p90": int(high.sum()),
        "reliability": reliability_table(p, y, n_bins),
    }


def span_metrics(
    predicted: Sequence[Sequence[tuple[int, int, str, float]]],
    gold: Sequence[set[Entity]],
    candidates: Sequence[Candidates] | None = None,
    *,
    label_map: dict[str, str] | None = None,
    n_bins: int = 10,
) -> dict[str, Any]:
    """``predicted``: per doc, ``(start, end, label, probability)`` of each
    predicted span; ``gold``: per doc, the gold entities; ``candidates``: per
    doc, every candidate's distribution (for the negative column). With a
    ``label_map`` predicted labels are renamed and spans whose label it lacks
    are ignored (their mass counts as "no entity" in the negative column)."""
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted docs for {len(gold)} gold docs")
    tp = n_pred = n_gold = 0
    probs: list[float] = []
    correct: list[bool] = []
    for spans, truth in zip(predicted, gold):
        n_gold += len(truth)
        for start, end, label, prob in spans:
            if label_map is not None:
                if label not in label_map:
                    continue
                label = label_map[label]
            hit = (start, end, label) in truth
            n_pred += 1
            tp += hit
            probs.append(float(prob))
            correct.append(hit)
    report: dict[str, Any] = {
        "spans": {**prf(tp, n_pred - tp, n_gold - tp), "n_predicted": n_pred, "n_gold": n_gold},
        "predicted": calibration_summary(probs, correct, n_bins),
    }
    if candidates is not None:
        neg_probs: list[NDArray[Any]] = []
        neg_truth: list[NDArray[Any]] = []
        for (spans, labels, dist), truth in zip(candidates, gold):
            dist = numpy.asarray(dist, dtype=numpy.float64)
            if dist.shape[0] == 0:
                continue
            negative = dist[:, -1].copy()
            if label_map is not None:
                unmapped = [j for j, label in enumerate(labels) if label not in label_map]
                negative += dist[:, unmapped].sum(axis=1)
            gold_spans = {(s, e) for s, e, _ in truth}
            neg_probs.append(numpy.clip(negative, 0.0, 1.0))
            neg_truth.append(
                numpy.asarray([(int(s), int(e)) not in gold_spans for s, e in spans], dtype=bool)
            )
        p = numpy.concatenate(neg_probs) if neg_probs else numpy.zeros(0)
        y = numpy.concatenate(neg_truth) if neg_truth else numpy.zeros(0, dtype=bool)
        report["negative"] = calibration_summary(p, y, n_bins)
        gold_found = int((~y).sum())
        report["negative"]["n_gold_spans_among_candidates"] = gold_found
        report["negative"]["gold_span_share"] = gold_found / n_gold if n_gold else None
        report["candidate_labels"] = candidate_label_calibration(
            candidates, gold, label_map=label_map, n_bins=n_bins
        )
    return report


def candidate_label_calibration(
    candidates: Sequence[Candidates],
    gold: Sequence[set[Entity]],
    *,
    label_map: dict[str, str] | None = None,
    min_probability: float = 0.1,
    n_bins: int = 10,
) -> dict[str, Any]:
    """Calibration of every (candidate span, label) probability >=
    ``min_probability`` (correct: that span with that label is gold): the
    labels a user would read off the distributions, not only the winners."""
    probs: list[float] = []
    correct: list[bool] = []
    for (spans, labels, dist), truth in zip(candidates, gold):
        dist = numpy.asarray(dist, dtype=numpy.float64)
        for j, label in enumerate(labels):
            if label_map is not None:
                if label not in label_map:
                    continue
                label = label_map[label]
            for row in numpy.flatnonzero(dist[:, j] >= min_probability) if len(dist) else ():
                start, end = int(spans[row][0]), int(spans[row][1])
                probs.append(float(dist[row, j]))
                correct.append((start, end, label) in truth)
    return calibration_summary(probs, correct, n_bins)


def span_report(
    predicted: Sequence[Doc],
    gold: Sequence[Doc],
    key: str,
    *,
    candidates: Callable[[], Sequence[Candidates]] | None = None,
    n_bins: int = 10,
) -> dict[str, Any]:
    """:func:`span_metrics` of ``doc.spans[key]`` (scores in ``attrs["scores"]``,
    spancat's layout) against the gold docs' ``doc.ents``."""
    spans = []
    for doc in predicted:
        group = doc.spans.get(key, [])
        # spancat_singlelabel stores one (1,)-shaped array per span.
        scores: Any = (
            numpy.asarray(group.attrs.get("scores", []), dtype=numpy.float64).reshape(-1)
            if len(group)
            else []
        )
        spans.append([(s.start, s.end, s.label_, float(p)) for s, p in zip(group, scores)])
    truth = [{(e.start, e.end, e.label_) for e in doc.ents} for doc in gold]
    return span_metrics(spans, truth, candidates() if candidates else None, n_bins=n_bins)


def evaluate_spans(
    nlp: Any,
    docs: Sequence[Doc],
    gold: Sequence[set[Entity]],
    *,
    beam_width: int,
    beam_density: float,
    normalize: Normalize,
    label_map: dict[str, str] | None = None,
    n_bins: int = 10,
) -> dict[str, Any]:
    """The span-level report of :func:`beamner.span_distributions` on ``docs``
    (already through the pipes before the NER): predicted spans are the
    non-overlapping argmax spans (``spans_allow_overlap=False``)."""
    from beamner.probabilities.spans import span_distributions, span_group

    dists = span_distributions(
        nlp, docs, beam_width=beam_width, beam_density=beam_density, normalize=normalize
    )
    predicted = []
    for dist in dists:
        group = span_group(dist, "_", allow_overlap=False)
        predicted.append(
            [(s.start, s.end, s.label_, float(p)) for s, p in zip(group, group.attrs["scores"])]
        )
    candidates = [(d.spans, d.labels, d.probabilities) for d in dists]
    report = span_metrics(predicted, gold, candidates, label_map=label_map, n_bins=n_bins)
    return {"width": beam_width, "normalize": normalize, **report}


@dataclass
class SpanStats:
    """Accumulates what ``beamner evaluate`` reports per normalization and
    width at span level (``widths[i]["spans"]``), from the beams it already ran
    (:class:`beamner.probabilities.beams.BeamDoc`): each doc's span
    distributions (parse probabilities summed per span and label, "no entity"
    the rest), the non-overlapping argmax spans as predictions."""

    predicted: list[list[tuple[int, int, str, float]]] = field(default_factory=list)
    gold: list[set[Entity]] = field(default_factory=list)
    candidates: list[Candidates] = field(default_factory=list)
    label_map: dict[str, str] | None = None

    def add(self, beam: Any, gold: set[Entity], label_map: dict[str, str] | None) -> None:
        from beamner.probabilities.spans import distributions_from_marginals, span_group

        self.label_map = label_map
        marginals: dict[Entity, float] = {}
        for prob, ents in zip(beam.probabilities, beam.parses):
            for ent in ents:
                marginals[ent] = marginals.get(ent, 0.0) + prob
        labels = sorted({label for _, _, label in marginals})
        dists = distributions_from_marginals(beam.doc, labels, marginals)
        group = span_group(dists, "_", allow_overlap=False)
        self.predicted.append(
            [(s.start, s.end, s.label_, float(p)) for s, p in zip(group, group.attrs["scores"])]
        )
        self.gold.append(gold)
        self.candidates.append((dists.spans, dists.labels, dists.probabilities))

    def report(self, n_bins: int = 10) -> dict[str, Any]:
        return span_metrics(
            self.predicted, self.gold, self.candidates, label_map=self.label_map, n_bins=n_bins
        )
