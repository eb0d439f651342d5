"""Entity and parse probabilities from finished beams, per doc."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine.pipelined import Chunk, search_chunked
from beamner.engine.pipes import find_ner
from beamner.engine.settings import BeamSettings, Normalize
from beamner.probabilities.calibration import entity_probabilities, parse_probabilities
from beamner.probabilities.calibrators import (
    IsotonicCalibrator,
    apply_calibration,
    apply_calibration_with_bounds,
    calibrator_of,
)

__all__ = [
    "BeamDoc",
    "BoundedEntityScores",
    "beam_docs",
    "entity_scores",
    "named_probabilities",
    "uncertainty_scores",
]

EntityKey = tuple[int, int, str]


def named_probabilities(
    batch: BeamBatch,
    i: int,
    strings: Any,
    settings: BeamSettings,
    calibrator: IsotonicCalibrator | None,
) -> dict[EntityKey, float]:
    """Doc ``i``'s entity probabilities with label names: the beam marginals
    (``settings.temperature`` applied), then ``calibrator`` (None: none), which
    a caller builds once per batch with ``calibrator_of(settings)``.
    Label-less (blocked preset) spans are left out."""
    probs = {
        (start, end, strings[label]): prob
        for (start, end, label), prob in entity_probabilities(
            batch, i, settings.temperature
        ).items()
        if label != 0
    }
    return apply_calibration(probs, calibrator)


@dataclass
class BoundedEntityScores:
    """One doc's entity probabilities with their bounds (``normalize="local"``).

    ``coverage`` is the model probability the final beam holds (the sum of
    ``exp(score)`` over its parses, each score a sequence log-probability).
    ``bounds[entity] = (lower, upper)``: the entity's true marginal under the
    model lies in it; ``lower`` is the mass of the beam's parses that hold the
    entity, ``upper`` adds the mass the beam dropped (``1 - coverage``); where
    the beam held every parse the interval closes to a point. ``probabilities``
    are the beam posterior's (what ``entity_scores`` returns without bounds,
    temperature and calibration applied); the bounds are the model's own,
    uncalibrated."""

    probabilities: dict[EntityKey, float]
    bounds: dict[EntityKey, tuple[float, float]]
    coverage: float


@overload
def entity_scores(
    nlp_or_pipe: Any,
    docs: Sequence[Doc],
    beam_width: int | None = ...,
    beam_density: float | None = ...,
    *,
    normalize: Normalize | None = ...,
    bounds: Literal[False] = ...,
) -> list[dict[EntityKey, float]]: ...


@overload
def entity_scores(
    nlp_or_pipe: Any,
    docs: Sequence[Doc],
    beam_width: int | None = ...,
    beam_density: float | None = ...,
    *,
    normalize: Normalize | None = ...,
    bounds: Literal[True],
) -> list[BoundedEntityScores]: ...


def entity_scores(
    nlp_or_pipe: Any,
    docs: Sequence[Doc],
    beam_width: int | None = None,
    beam_density: float | None = None,
    *,
    normalize: Normalize | None = None,
    bounds: bool = False,
) -> list[dict[EntityKey, float]] | list[BoundedEntityScores]:
    """For each doc, ``{(start, end, label): probability}`` summed over the beam's
    parses that contain the entity (spaCy's ``get_beam_parses`` convention).
    Takes a pipeline or its NER pipe; docs must have run through the pipes before the NER.
    A ``temperature`` in the pipe's cfg (``beamner calibrate``) divides the final
    beam scores before the softmax; an isotonic ``calibration`` there then maps
    each entity's probability.

    ``beam_width``, ``beam_density`` and ``normalize`` default (``None``) to
    the component's settings (:meth:`BeamSettings.from_pipe` with
    ``beam=True``: width 16 and density 0.0001 for a greedy component).
    ``normalize``: ``"none"`` (raw scores, spaCy's beam) or ``"local"`` (a
    parse's score is its log-probability under the model). ``bounds=True``
    (``"local"`` only, else ValueError) returns :class:`BoundedEntityScores`
    per doc: the probabilities, each entity's interval and the doc's coverage."""
    pipe = find_ner(nlp_or_pipe)
    settings = BeamSettings.from_pipe(
        pipe, beam=True, width=beam_width, density=beam_density, normalize=normalize
    )
    if bounds and settings.normalize != "local":
        raise ValueError(
            f"bounds need normalize='local' (got normalize={settings.normalize!r}): raw beam "
            "scores are not log-probabilities, so the mass the beam dropped is unknown"
        )
    strings = pipe.vocab.strings

    cal = calibrator_of(settings)

    def read(chunk: Chunk) -> list[Any]:
        batch = chunk.batch
        n = len(chunk.docs)
        if not bounds:
            return [named_probabilities(batch, i, strings, settings, cal) for i in range(n)]
        # The same monotone map on the score and both ends of its bounds.
        out = []
        for i in range(n):
            raw = named_probabilities(batch, i, strings, settings, None)
            probs, ends = apply_calibration_with_bounds(raw, _bounds(batch, i, strings), cal)
            out.append(BoundedEntityScores(probs, ends, batch.coverage(i)))
        return out

    # Chunks of docs, each searched while the next one's network runs
    # (beamner.engine.pipelined): the same results as one batch.
    return search_chunked(pipe, docs, settings, read)


def _bounds(
    batch: BeamBatch, doc: int, strings: Any, *, labelled_only: bool = False
) -> dict[EntityKey, tuple[float, float]]:
    return {
        (start, end, strings[label]): (lower, upper)
        for (start, end, label), (lower, upper) in batch.entity_bounds(doc).items()
        if label != 0 or not labelled_only
    }


@dataclass
class BeamDoc:
    """One doc's finished beam: parse probabilities (temperature applied), each
    parse's entities as ``(start, end, label)`` strings (label-less blocked
    spans dropped), and entity probabilities (the component's isotonic
    calibration applied, unless ``beam_docs(calibrate=False)``). Under
    ``normalize="local"`` also the beam's ``coverage`` and each entity's
    ``bounds`` (see :class:`BoundedEntityScores`); ``None`` otherwise."""

    doc: Doc
    scores: list[float]
    probabilities: list[float]
    parses: list[list[tuple[int, int, str]]]
    entities: dict[tuple[int, int, str], float]
    coverage: float | None = None
    bounds: dict[tuple[int, int, str], tuple[float, float]] | None = None


def beam_docs(
    pipe: Any, docs: Sequence[Doc], settings: BeamSettings, *, calibrate: bool = True
) -> list[BeamDoc]:
    """Run the beam over ``docs`` (already through the pipes before the NER)
    with ``settings`` (width, density, normalization, temperature and the
    calibration applied unless ``calibrate=False``)."""
    strings = pipe.vocab.strings
    cal = calibrator_of(settings) if calibrate else None

    def read(chunk: Chunk) -> list[BeamDoc]:
        return [
            _beam_doc(chunk.batch, i, doc, strings, settings, cal)
            for i, doc in enumerate(chunk.docs)
        ]

    return search_chunked(pipe, docs, settings, read)


def _beam_doc(
    batch: BeamBatch,
    i: int,
    doc: Doc,
    strings: Any,
    settings: BeamSettings,
    cal: IsotonicCalibrator | None,
) -> BeamDoc:
    parses = batch.parses(i)
    scores = [p.score for p in parses]
    probs = parse_probabilities(scores, settings.temperature).tolist()
    ents = [[(s, e, strings[lab]) for s, e, lab in p.entities if lab != 0] for p in parses]
    raw = named_probabilities(batch, i, strings, settings, None)
    if settings.normalize != "local":
        return BeamDoc(doc, scores, probs, ents, apply_calibration(raw, cal))
    # the same map on the score and both ends of its bounds
    entities, bounds = apply_calibration_with_bounds(
        raw, _bounds(batch, i, strings, labelled_only=True), cal
    )
    return BeamDoc(doc, scores, probs, ents, entities, batch.coverage(i), bounds)


def uncertainty_scores(beam: BeamDoc) -> dict[str, float]:
    """``entropy`` of the beam's parse distribution (nats), ``margin``
    (``1 - (p1 - p2)``, 0 with a single parse) and ``uncertainty`` (the
    largest ``1 - |2p - 1|`` over candidate entities: 1 at p = 0.5)."""
    p = sorted(beam.probabilities, reverse=True)
    entropy = -sum(x * math.log(x) for x in p if x > 0.0)
    margin = 1.0 - (p[0] - p[1]) if len(p) > 1 else 0.0
    uncertainty = max((1.0 - abs(2.0 * x - 1.0) for x in beam.entities.values()), default=0.0)
    return {"entropy": entropy, "margin": margin, "uncertainty": uncertainty}
