"""Entity and parse probabilities from finished beams, per doc."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine.pipes import find_ner
from beamner.engine.search import beam_search
from beamner.probabilities.calibration import entity_probabilities, parse_probabilities
from beamner.probabilities.calibrators import apply_calibration, calibrator_for

__all__ = ["BeamDoc", "beam_docs", "entity_scores", "uncertainty_scores"]


def entity_scores(
    nlp_or_pipe: Any, docs: Sequence[Doc], beam_width: int = 16, beam_density: float = 0.0001
) -> list[dict[tuple[int, int, str], float]]:
    """For each doc, ``{(start, end, label): probability}`` summed over the beam's
    parses that contain the entity (spaCy's ``get_beam_parses`` convention).
    Takes a pipeline or its NER pipe; docs must have run through the pipes before the NER.
    A ``temperature`` in the pipe's cfg (``beamner calibrate``) divides the final
    beam scores before the softmax; an isotonic ``calibration`` there then maps
    each entity's probability."""
    pipe = find_ner(nlp_or_pipe)
    batch = beam_search(pipe, docs, beam_width, beam_density)
    strings = pipe.vocab.strings
    cfg = getattr(pipe, "cfg", {})
    temperature = float(cfg.get("temperature", 1.0))
    calibrator = calibrator_for(cfg, "none")
    return [
        apply_calibration(
            {
                (start, end, strings[label]): prob
                for (start, end, label), prob in entity_probabilities(batch, i, temperature).items()
            },
            calibrator,
        )
        for i in range(len(docs))
    ]


@dataclass
class BeamDoc:
    """One doc's finished beam: parse probabilities (temperature applied), each
    parse's entities as ``(start, end, label)`` strings (label-less blocked
    spans dropped), and entity probabilities (the component's isotonic
    calibration applied, unless ``beam_docs(calibrate=False)``)."""

    doc: Doc
    scores: list[float]
    probabilities: list[float]
    parses: list[list[tuple[int, int, str]]]
    entities: dict[tuple[int, int, str], float]


def beam_docs(
    pipe: Any,
    docs: Sequence[Doc],
    width: int,
    density: float,
    temperature: float = 1.0,
    *,
    calibrate: bool = True,
) -> list[BeamDoc]:
    """Run the beam over ``docs`` (already through the pipes before the NER)."""
    batch: BeamBatch = beam_search(pipe, docs, width, density)
    strings = pipe.vocab.strings
    calibrator = calibrator_for(getattr(pipe, "cfg", {}), "none") if calibrate else None
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
        out.append(BeamDoc(doc, scores, probs, ents, ent_probs))
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
