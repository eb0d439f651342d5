"""Beam search over spaCy docs with a spaCy NER pipe's own weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine.model import StepScorer, precompute
from beamner.engine.spacy_inputs import doc_batch, transition_system

#: What ``normalize=`` accepts: ``"none"`` adds the model's raw scores (spaCy's
#: beam, bit for bit); ``"local"`` adds each state's log-softmax over its valid
#: actions, so a parse's score is its log-probability under the model.
NORMALIZE_CHOICES = ("none", "local")


def check_normalize(normalize: str) -> str:
    """``normalize`` if it is one of :data:`NORMALIZE_CHOICES`, else ValueError."""
    if normalize not in NORMALIZE_CHOICES:
        raise ValueError(
            f"normalize must be one of {', '.join(map(repr, NORMALIZE_CHOICES))}, got {normalize!r}"
        )
    return normalize


def beam_search(
    pipe: Any,
    docs: Sequence[Doc],
    beam_width: int,
    beam_density: float = 0.0,
    *,
    fused: bool = True,
    normalize: str = "none",
) -> BeamBatch:
    """Run the beam over ``docs`` with ``pipe``'s model and moves; return the
    finished :class:`~beamner._core.BeamBatch` (``parses(i)``,
    ``entity_probabilities(i)``).

    ``fused=True`` precomputes the lower layer and runs every step natively;
    ``fused=False`` scores each step through spaCy's step model (one Python
    call per step, any thinc ops). Both paths normalize natively: ``normalize``
    is ``"none"`` (raw scores, spaCy's beam) or ``"local"`` (each step's
    log-softmax over the valid actions; then ``batch.coverage(i)`` and
    ``batch.entity_bounds(i)`` are available).
    """
    check_normalize(normalize)
    docs = list(docs)
    pipe._ensure_labels_are_added(docs)
    batch = BeamBatch(
        transition_system(pipe.moves),
        doc_batch(docs),
        beam_width,
        beam_density,
        normalize=normalize,
    )
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
