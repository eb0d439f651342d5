"""Entity and parse probabilities from finished beams, per doc."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine.pipes import find_ner
from beamner.engine.search import beam_search, check_normalize
from beamner.probabilities.calibration import entity_probabilities, parse_probabilities
from beamner.probabilities.calibrators import apply_calibration, calibrator_for

__all__ = [
    "BeamDoc",
    "BoundedEntityScores",
    "beam_docs",
    "entity_scores",
    "pipe_normalize",
    "uncertainty_scores",
]

EntityKey = tuple[int, int, str]


def pipe_normalize(pipe: Any, normalize: str | None = None) -> str:
    """``normalize`` checked, or (``None``) the component's own ``normalize``
    setting (``"none"`` for spaCy's components and by default)."""
    if normalize is None:
        normalize = str(getattr(pipe, "cfg", {}).get("normalize", "none"))
    return check_normalize(normalize)


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
    beam_width: int = ...,
    beam_density: float = ...,
    *,
    normalize: str | None = ...,
    bounds: Literal[False] = ...,
) -> list[dict[EntityKey, float]]: ...


@overload
def entity_scores(
    nlp_or_pipe: Any,
    docs: Sequence[Doc],
    beam_width: int = ...,
    beam_density: float = ...,
    *,
    normalize: str | None = ...,
    bounds: Literal[True],
) -> list[BoundedEntityScores]: ...


def entity_scores(
    nlp_or_pipe: Any,
    docs: Sequence[Doc],
    beam_width: int = 16,
    beam_density: float = 0.0001,
    *,
    normalize: str | None = None,
    bounds: bool = False,
) -> list[dict[EntityKey, float]] | list[BoundedEntityScores]:
    """For each doc, ``{(start, end, label): probability}`` summed over the beam's
    parses that contain the entity (spaCy's ``get_beam_parses`` convention).
    Takes a pipeline or its NER pipe; docs must have run through the pipes before the NER.
    A ``temperature`` in the pipe's cfg (``beamner calibrate``) divides the final
    beam scores before the softmax; an isotonic ``calibration`` there then maps
    each entity's probability.

    ``normalize``: ``"none"`` (raw scores, spaCy's beam), ``"local"`` (a parse's
    score is its log-probability under the model), or ``None`` for the
    component's own setting. ``bounds=True`` (``"local"`` only, else
    ValueError) returns :class:`BoundedEntityScores` per doc: the
    probabilities, each entity's interval and the doc's coverage."""
    pipe = find_ner(nlp_or_pipe)
    normalize = pipe_normalize(pipe, normalize)
    if bounds and normalize != "local":
        raise ValueError(
            f"bounds need normalize='local' (got normalize={normalize!r}): raw beam scores "
            "are not log-probabilities, so the mass the beam dropped is unknown"
        )
    batch = beam_search(pipe, docs, beam_width, beam_density, normalize=normalize)
    strings = pipe.vocab.strings
    cfg = getattr(pipe, "cfg", {})
    temperature = float(cfg.get("temperature", 1.0))
    calibrator = calibrator_for(cfg, normalize)
    scores = [
        apply_calibration(
            {
                (start, end, strings[label]): prob
                for (start, end, label), prob in entity_probabilities(batch, i, temperature).items()
            },
            calibrator,
        )
        for i in range(len(docs))
    ]
    if not bounds:
        return scores
    return [
        BoundedEntityScores(probs, _bounds(batch, i, strings), batch.coverage(i))
        for i, probs in enumerate(scores)
    ]


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
    pipe: Any,
    docs: Sequence[Doc],
    width: int,
    density: float,
    temperature: float = 1.0,
    *,
    calibrate: bool = True,
    normalize: str | None = None,
) -> list[BeamDoc]:
    """Run the beam over ``docs`` (already through the pipes before the NER);
    ``normalize`` as in :func:`entity_scores` (``None``: the component's)."""
    normalize = pipe_normalize(pipe, normalize)
    batch: BeamBatch = beam_search(pipe, docs, width, density, normalize=normalize)
    strings = pipe.vocab.strings
    calibrator = calibrator_for(getattr(pipe, "cfg", {}), normalize) if calibrate else None
    out = []
    for i, doc in enumerate(docs):
        parses = batch.parses(i)
        scores = [p.score for p in parses]
        probs = parse_probabilities(scores, temperature).tolist()
        ents = [[(s, e, strings[lab]) for s, e, lab in p.entities if lab != 0] for p in parses]
        ent_probs = apply_calibration(
            {
                (s, e, strings[lab]): prob
                for (s, e, lab), prob in entity_probabilities(batch, i, temperature).items()
                if lab != 0
            },
            calibrator,
        )
        beam = BeamDoc(doc, scores, probs, ents, ent_probs)
        if normalize == "local":
            beam.coverage = batch.coverage(i)
            beam.bounds = _bounds(batch, i, strings, labelled_only=True)
        out.append(beam)
    return out


def uncertainty_scores(beam: BeamDoc) -> dict[str, float]:
    """``entropy`` of the beam's parse distribution (nats), ``margin``
    (``1 - (p1 - p2)``, 0 with a single parse) and ``uncertainty`` (the
    largest ``1 - |2p - 1|`` over candidate entities: 1 at p = 0.5)."""
    p = sorted(beam.probabilities, reverse=True)
    entropy = -sum(x * math.log(x) for x in p if x > 0.0)
    margin = 1.0 - (p[0] - p[1]) if len(p) > 1 else 0.0
    uncertainty = max((1.0 - abs(2.0 * x - 1.0) for x in beam.entities.values()), default=0.0)
    return {"entropy": entropy, "margin": margin, "uncertainty": uncertainty}
