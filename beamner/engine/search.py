"""Beam search over spaCy docs with a spaCy NER pipe's own weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine.model import StepScorer, precompute
from beamner.engine.spacy_inputs import doc_batch, transition_system


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
