"""Exclusive span-label distributions from the beam.

Every parse of a transition-based NER is a non-overlapping labelling, so for
any span ``(start, end)`` the beam's parses split into those that label it
``L`` (one group per label) and those that do not label it at all. Summing the
parse probabilities of each group gives ``P(L | span)`` for every label and
``P(no entity) = 1 - sum_L P(L | span)``: the layout of spaCy's
``spancat_singlelabel`` (a softmax over the labels plus a negative column,
which comes last).

Two estimators:

* **beam** (``spans=None``): the candidates are every span some parse of the
  final beam labels; the probabilities are the marginal sums over the beam's
  parses (``softmax`` of the final scores, with the pipe's ``temperature``).
  With a beam wide enough to hold every parse these are the exact marginals.
* **constrained** (``spans=[...]``): for each requested span two more beams
  run natively, one whose parses must all label the span (``forced``) and one
  whose parses must not (``forbidden``). With ``m_f`` and ``m_b`` the summed
  ``exp(score)`` of their final beams,
  ``P(span is an entity) = m_f / (m_f + m_b)`` and
  ``P(L | span) = P(span is an entity) * P_forced(L)``, where ``P_forced(L)`` is
  the share of the forced beam's mass whose parses label the span ``L``.
  Under ``normalize="local"`` a parse's score is its log-probability, so
  ``m_f`` and ``m_b`` are lower bounds of the model's true masses of the two
  events and the ratio is the natural estimate of the span's marginal; it is
  exact when both beams hold every parse of their event (under ``"none"`` as
  well, for the beam's own globally normalised distribution). Unlike the
  beam estimator it scores spans no parse of the unconstrained beam holds.
  A span no parse can hold (it crosses a sentence start, starts on
  whitespace, conflicts with preset entities) gets ``P(no entity) = 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy
from numpy.typing import NDArray
from spacy.tokens import Doc, Span, SpanGroup

from beamner._core import BeamBatch
from beamner.engine.pipelined import search_chunked
from beamner.engine.pipes import find_ner
from beamner.engine.search import constrained_batch, run_batch
from beamner.engine.settings import BeamSettings, Normalize
from beamner.engine.spacy_inputs import transition_system
from beamner.probabilities.calibration import entity_probabilities, parse_probabilities
from beamner.probabilities.calibrators import IsotonicCalibrator, calibrator_of

__all__ = [
    "NO_ENTITY",
    "SPANS_LAYOUTS",
    "SpanDistributions",
    "constrained_batch",
    "constrained_from_batch",
    "distributions_from_batch",
    "distributions_from_marginals",
    "singlelabel_group",
    "span_distributions",
    "span_group",
]

#: Name of the last column of :attr:`SpanDistributions.probabilities`.
NO_ENTITY = "no entity"
#: The component's ``spans_layout``: ``"entities"`` (every candidate entity with
#: p >= ``span_threshold``, one span per (span, label)) or ``"singlelabel"``
#: (``spancat_singlelabel``'s: one span per candidate, its best label).
SPANS_LAYOUTS = ("entities", "singlelabel")

SpanList = Sequence[tuple[int, int]]


@dataclass
class SpanDistributions:
    """One doc's candidate spans and their exclusive label distributions.

    ``probabilities[i]`` is the distribution of span ``spans[i]`` over
    ``columns`` (``labels`` in the pipe's order, then :data:`NO_ENTITY`); each
    row sums to 1."""

    doc: Doc
    labels: tuple[str, ...]
    spans: NDArray[numpy.int32]  #: (n_spans, 2) start, end (token offsets)
    probabilities: NDArray[numpy.float64]  #: (n_spans, len(labels) + 1)
    method: str = "beam"  #: "beam" or "constrained"
    #: Constrained only: per span, the forced and forbidden beams' log masses
    #: (``logsumexp`` of the final scores; ``-inf`` when no parse is possible).
    log_masses: NDArray[numpy.float64] = field(
        default_factory=lambda: numpy.zeros((0, 2), dtype=numpy.float64)
    )

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.labels, NO_ENTITY)

    def __len__(self) -> int:
        return int(self.spans.shape[0])

    def best(self) -> tuple[NDArray[numpy.int64], NDArray[numpy.float64]]:
        """Per span, the argmax column and its probability (ties: the first
        column, as ``numpy.argmax``)."""
        column = self.probabilities.argmax(axis=1) if len(self) else numpy.zeros(0, numpy.int64)
        return column, self.probabilities[numpy.arange(len(self)), column]

    def as_dict(self) -> dict[tuple[int, int], dict[str, float]]:
        """``{(start, end): {column: probability}}``."""
        return {
            (int(s), int(e)): dict(zip(self.columns, map(float, row)))
            for (s, e), row in zip(self.spans, self.probabilities)
        }


def span_distributions(
    nlp_or_pipe: Any,
    docs: Sequence[Doc],
    beam_width: int | None = None,
    beam_density: float | None = None,
    normalize: Normalize | None = None,
    spans: Sequence[SpanList] | SpanList | None = None,
    *,
    calibrate: bool = True,
) -> list[SpanDistributions]:
    """Per doc, the exclusive label distribution of each candidate span
    (module docstring). Takes a pipeline or its NER pipe; docs must have run
    through the pipes before the NER.

    ``beam_width``, ``beam_density`` and ``normalize`` default (``None``) to
    the component's (:meth:`BeamSettings.from_pipe` with ``beam=True``).
    ``spans``: one list of ``(start, end)`` per doc (or, with a single doc,
    that doc's list) to score with the constrained estimator instead of the
    beam's own candidates; rows then follow the requested order.
    ``calibrate``: map the label columns through the component's isotonic
    calibration when it has one fitted under this normalization (the negative
    column then takes the rest, and a row whose calibrated labels exceed 1 is
    rescaled to 1)."""
    pipe = find_ner(nlp_or_pipe)
    docs = list(docs)
    settings = BeamSettings.from_pipe(
        pipe, beam=True, width=beam_width, density=beam_density, normalize=normalize
    )
    labels = tuple(str(label) for label in pipe.labels)
    if spans is None:
        out = search_chunked(
            pipe,
            docs,
            settings,
            lambda chunk: [
                distributions_from_batch(chunk.batch, i, doc, labels, settings.temperature)
                for i, doc in enumerate(chunk.docs)
            ],
        )
    else:
        out = _constrained(pipe, docs, _span_requests(docs, spans), labels, settings)
    calibrator = calibrator_of(settings) if calibrate else None
    if calibrator is not None:
        for dist in out:
            _apply_calibrator(dist, calibrator)
    return out


def span_group(
    dist: SpanDistributions, key: str, *, allow_overlap: bool = True, threshold: float = 0.0
) -> SpanGroup:
    """``doc.spans[key]`` in ``spancat_singlelabel``'s layout: one span per
    candidate whose most probable column is a label (not :data:`NO_ENTITY`) and
    whose probability is >= ``threshold``, labelled with it,
    ``attrs["scores"]`` its probability. ``allow_overlap=False`` keeps the most
    probable spans that do not overlap (spaCy's greedy order: by probability,
    ties in candidate order)."""
    doc = dist.doc
    column, prob = dist.best()
    n_labels = len(dist.labels)
    keep = (column < n_labels) & (prob >= threshold)
    order = numpy.arange(len(dist))
    if not allow_overlap:
        order = numpy.argsort(-prob, kind="stable")
    taken = numpy.zeros(len(doc), dtype=numpy.bool_)
    spans: list[Span] = []
    scores: list[float] = []
    for i in order:
        if not keep[i]:
            continue
        start, end = int(dist.spans[i, 0]), int(dist.spans[i, 1])
        if not allow_overlap:
            if taken[start:end].any():
                continue
            taken[start:end] = True
        spans.append(Span(doc, start, end, label=dist.labels[int(column[i])]))
        scores.append(float(prob[i]))
    group = SpanGroup(doc, name=key, spans=spans)
    group.attrs["scores"] = numpy.asarray(scores, dtype=numpy.float32)
    return group


def singlelabel_group(
    pipe: Any,
    doc: Doc,
    batch: BeamBatch,
    i: int,
    key: str,
    settings: BeamSettings,
    calibrator: IsotonicCalibrator | None,
) -> SpanGroup:
    """What ``beamner_ner`` writes to ``doc.spans[key]`` with
    ``spans_layout="singlelabel"``: :func:`span_group` of the doc's beam
    distributions (the settings' temperature and ``calibrator``, built once
    per batch with ``calibrator_of(settings)``, applied),
    overlapping or not as ``settings.spans_allow_overlap`` says."""
    labels = tuple(str(label) for label in pipe.labels)
    dist = distributions_from_batch(batch, i, doc, labels, settings.temperature)
    if calibrator is not None:
        _apply_calibrator(dist, calibrator)
    return span_group(dist, key, allow_overlap=settings.spans_allow_overlap)


def distributions_from_batch(
    batch: BeamBatch,
    i: int,
    doc: Doc,
    labels: Sequence[str],
    temperature: float = 1.0,
) -> SpanDistributions:
    """The beam estimator on a finished batch's ``i``-th doc (``doc``, whose
    vocab names the labels); ``labels``: the columns, in order."""
    strings = doc.vocab.strings
    marginals = {
        (start, end, strings[label]): prob
        for (start, end, label), prob in entity_probabilities(batch, i, temperature).items()
        if label != 0  # a blocked (label-less) preset span, not an entity
    }
    return distributions_from_marginals(doc, labels, marginals)


def distributions_from_marginals(
    doc: Doc, labels: Sequence[str], marginals: Mapping[tuple[int, int, str], float]
) -> SpanDistributions:
    """The beam estimator from entity marginals ``{(start, end, label): p}``
    (every label among ``labels``, the columns in order): one row per span,
    "no entity" the rest of its mass."""
    labels = tuple(labels)
    column_of = {label: j for j, label in enumerate(labels)}
    index: dict[tuple[int, int], int] = {}
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    for (start, end, label), prob in marginals.items():
        rows.append(index.setdefault((start, end), len(index)))
        cols.append(column_of[label])
        values.append(prob)
    probs = numpy.zeros((len(index), len(labels) + 1), dtype=numpy.float64)
    numpy.add.at(probs, (rows, cols), values)
    _set_no_entity(probs)
    span_array = numpy.asarray(list(index), dtype=numpy.int32).reshape(-1, 2)
    order = numpy.lexsort((span_array[:, 1], span_array[:, 0]))
    return SpanDistributions(doc, labels, span_array[order], probs[order], "beam")


def _set_no_entity(probs: NDArray[numpy.float64]) -> None:
    """The last column takes what the labels leave; float sums of parse
    probabilities can pass 1 by rounding, so the labels are then rescaled."""
    if probs.shape[0] == 0:
        return
    total = probs[:, :-1].sum(axis=1)
    over = total > 1.0
    probs[over, :-1] /= total[over, None]
    probs[:, -1] = numpy.maximum(0.0, 1.0 - numpy.minimum(total, 1.0))


def _span_requests(
    docs: list[Doc], spans: Sequence[SpanList] | SpanList
) -> list[list[tuple[int, int]]]:
    items: list[Any] = list(spans)
    flat = len(docs) == 1 and all(
        isinstance(x, tuple | list)
        and len(x) == 2
        and all(isinstance(v, int | numpy.integer) for v in x)
        for x in items
    )
    per_doc: list[Any] = [items] if flat and items else items
    if flat and not items:
        per_doc = [[]]
    if len(per_doc) != len(docs):
        raise ValueError(
            f"spans: expected one list of (start, end) per doc ({len(docs)}), got {len(per_doc)}"
        )
    out: list[list[tuple[int, int]]] = []
    for d, (doc, requested) in enumerate(zip(docs, per_doc)):
        doc_spans = []
        for item in requested:
            try:
                start, end = (int(v) for v in list(item))
            except (TypeError, ValueError):
                raise ValueError(
                    f"spans of doc {d}: expected (start, end) pairs, got {item!r}"
                ) from None
            if not 0 <= start < end <= len(doc):
                raise ValueError(
                    f"spans of doc {d}: ({start}, {end}) is not a non-empty span "
                    f"of its {len(doc)} tokens"
                )
            doc_spans.append((start, end))
        out.append(doc_spans)
    return out


Job = tuple[int, tuple[int, int]]  # (doc index, requested span)


def constrained_from_batch(
    batch: BeamBatch,
    docs: Sequence[Doc],
    jobs: Sequence[Job],
    labels: Sequence[str],
    temperature: float = 1.0,
) -> list[SpanDistributions]:
    """The constrained estimator (module docstring) on a finished
    :func:`constrained_batch`: per doc, its requested spans in order."""
    labels = tuple(labels)
    per_doc: list[list[tuple[tuple[int, int], NDArray[numpy.float64], tuple[float, float]]]] = [
        [] for _ in docs
    ]
    for k, (d, span) in enumerate(jobs):
        column_of = {docs[d].vocab.strings[label]: j for j, label in enumerate(labels)}
        forced = batch.parses(2 * k)
        forbidden = batch.parses(2 * k + 1)
        log_forced = _log_mass([p.score for p in forced], temperature)
        log_forbidden = _log_mass([p.score for p in forbidden], temperature)
        row = numpy.zeros(len(labels) + 1, dtype=numpy.float64)
        if numpy.isfinite(log_forced):
            p_span = 1.0 / (1.0 + numpy.exp(log_forbidden - log_forced))
            shares = parse_probabilities([p.score for p in forced], temperature)
            for parse, share in zip(forced, shares):
                for start, end, label in parse.entities:
                    if (start, end) == span and label != 0:
                        row[column_of[label]] += p_span * float(share)
        per_doc[d].append((span, row, (log_forced, log_forbidden)))
    out = []
    for d, doc in enumerate(docs):
        items = per_doc[d]
        probs = numpy.asarray([row for _, row, _ in items], dtype=numpy.float64).reshape(
            -1, len(labels) + 1
        )
        _set_no_entity(probs)
        out.append(
            SpanDistributions(
                doc,
                labels,
                numpy.asarray([s for s, _, _ in items], dtype=numpy.int32).reshape(-1, 2),
                probs,
                "constrained",
                numpy.asarray([m for _, _, m in items], dtype=numpy.float64).reshape(-1, 2),
            )
        )
    return out


def _constrained(
    pipe: Any,
    docs: list[Doc],
    requests: list[list[tuple[int, int]]],
    labels: tuple[str, ...],
    settings: BeamSettings,
) -> list[SpanDistributions]:
    """Two constrained beams per requested span (forced, forbidden), all in one
    native batch over copies of the docs that share one tok2vec pass."""
    pipe._ensure_labels_are_added(docs)
    system = transition_system(pipe.moves)
    batch, jobs = constrained_batch(
        system, docs, requests, settings.width, settings.density, settings.normalize
    )
    if jobs:
        copy_of = [d for d, _ in jobs for _ in (0, 1)]
        run_batch(pipe, docs, batch, fused=settings.fused, copy_of=copy_of)
    return constrained_from_batch(batch, docs, jobs, labels, settings.temperature)


def _log_mass(scores: Sequence[float], temperature: float) -> float:
    """``log sum exp(score / T)`` of a final beam, ``-inf`` for an empty one."""
    if not scores:
        return float("-inf")
    return float(numpy.logaddexp.reduce(numpy.asarray(scores, dtype=numpy.float64) / temperature))


def _apply_calibrator(dist: SpanDistributions, calibrator: IsotonicCalibrator) -> None:
    n, n_labels = dist.probabilities.shape[0], len(dist.labels)
    if n == 0:
        return
    flat = dist.probabilities[:, :n_labels].reshape(-1)
    names = [label for _ in range(n) for label in dist.labels]
    mapped = numpy.asarray(calibrator(flat, names), dtype=numpy.float64).reshape(n, n_labels)
    # Columns the beam gave no mass stay at 0: calibration maps the labels it saw.
    mapped[dist.probabilities[:, :n_labels] == 0.0] = 0.0
    dist.probabilities[:, :n_labels] = numpy.clip(mapped, 0.0, 1.0)
    _set_no_entity(dist.probabilities)
