"""Beam search over spaCy docs with a spaCy NER pipe's own weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.calibration import entity_probabilities
from beamner.model import StepScorer, precompute
from beamner.spacy_inputs import doc_batch, transition_system


def beam_search(
    pipe: Any,
    docs: Sequence[Doc],
    beam_width: int,
    beam_density: float = 0.0,
    *,
    fused: bool = True,
) -> BeamBatch:
    """Run the beam over ``docs`` with ``pipe``'s model and moves; return the
    finished :class:`~beamner._core.BeamBatch` (``parses(i)``,
    ``entity_probabilities(i)``).

    ``fused=True`` precomputes the lower layer and runs every step natively;
    ``fused=False`` scores each step through spaCy's step model (one Python
    call per step, any thinc ops).
    """
    docs = list(docs)
    pipe._ensure_labels_are_added(docs)
    batch = BeamBatch(transition_system(pipe.moves), doc_batch(docs), beam_width, beam_density)
    if batch.is_done:
        return batch
    if fused:
        layers = precompute(pipe, docs)
        if layers.n_classes != batch.n_actions:
            raise ValueError(
                f"model scores {layers.n_classes} classes but the NER has {batch.n_actions} moves"
            )
        batch.run_precomputed(
            layers.features, layers.lower_bias, layers.upper_W, layers.upper_b, layers.class_mask
        )
        return batch
    scorer = StepScorer(pipe, docs)
    try:
        while batch.n_unfinished:
            batch.advance(scorer(batch.context_tokens()))
    finally:
        scorer.close()
    return batch


def find_ner(nlp_or_pipe: Any) -> Any:
    """The NER pipe itself, or the first entity recognizer of a pipeline."""
    if hasattr(nlp_or_pipe, "moves"):
        return nlp_or_pipe
    from spacy.pipeline import EntityRecognizer

    for _, pipe in getattr(nlp_or_pipe, "components", []):
        if isinstance(pipe, EntityRecognizer):
            return pipe
    raise ValueError(f"no entity recognizer in {type(nlp_or_pipe).__name__}")


def entity_scores(
    nlp_or_pipe: Any, docs: Sequence[Doc], beam_width: int = 16, beam_density: float = 0.0001
) -> list[dict[tuple[int, int, str], float]]:
    """For each doc, ``{(start, end, label): probability}`` summed over the beam's
    parses that contain the entity (spaCy's ``get_beam_parses`` convention).
    Takes a pipeline or its NER pipe; docs must have run through the pipes before the NER.
    A ``temperature`` in the pipe's cfg (``beamner calibrate``) divides the final
    beam scores before the softmax."""
    pipe = find_ner(nlp_or_pipe)
    batch = beam_search(pipe, docs, beam_width, beam_density)
    strings = pipe.vocab.strings
    temperature = float(getattr(pipe, "cfg", {}).get("temperature", 1.0))
    return [
        {
            (start, end, strings[label]): prob
            for (start, end, label), prob in entity_probabilities(batch, i, temperature).items()
        }
        for i in range(len(docs))
    ]
