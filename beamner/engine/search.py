"""Beam search over spaCy docs with a spaCy NER pipe's own weights."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy
from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine.model import StepScorer, precompute
from beamner.engine.settings import BeamSettings, Normalize
from beamner.engine.spacy_inputs import doc_batch, transition_system

__all__ = ["beam_search", "constrained_batch", "run_batch", "run_search"]


def beam_search(
    pipe: Any,
    docs: Sequence[Doc],
    beam_width: int,
    beam_density: float = 0.0,
    *,
    fused: bool = True,
    normalize: Normalize = "none",
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
    settings = BeamSettings(beam_width, beam_density, normalize, fused=fused)
    return run_search(pipe, docs, settings)


def run_search(pipe: Any, docs: Sequence[Doc], settings: BeamSettings) -> BeamBatch:
    """The beam of :func:`beam_search` with its settings (width, density,
    normalization, fused) taken from ``settings``."""
    docs = list(docs)
    pipe._ensure_labels_are_added(docs)
    batch = BeamBatch(
        transition_system(pipe.moves),
        doc_batch(docs),
        settings.width,
        settings.density,
        normalize=settings.normalize,
    )
    run_batch(pipe, docs, batch, fused=settings.fused)
    return batch


def constrained_batch(
    system: Any,
    docs: Sequence[Doc],
    requests: Sequence[Sequence[tuple[int, int]]],
    width: int,
    density: float,
    normalize: Normalize = "none",
) -> tuple[BeamBatch, list[tuple[int, tuple[int, int]]]]:
    """An unstarted batch of two copies of the doc per requested span, the
    first with the span forced (copy ``2k``), the second with it forbidden
    (``2k + 1``), and the jobs ``k`` as ``(doc index, span)`` in order. Run it
    with :func:`run_batch` (``copy_of``) or any scorer (the copies' context
    tokens carry batch offsets over the copies)."""
    jobs = [(d, (int(s), int(e))) for d, requested in enumerate(requests) for s, e in requested]
    copies = [docs[d] for d, _ in jobs for _ in (0, 1)]
    batch = BeamBatch(system, doc_batch(copies), width, density, normalize=normalize)
    for k, (_, span) in enumerate(jobs):
        batch.constrain(2 * k, forced=[span])
        batch.constrain(2 * k + 1, forbidden=[span])
    return batch, jobs


def run_batch(
    pipe: Any,
    docs: Sequence[Doc],
    batch: BeamBatch,
    *,
    fused: bool = True,
    copy_of: Sequence[int] | None = None,
) -> None:
    """Run ``batch`` to the end with ``pipe``'s model: the one place a beam is
    scored. ``fused`` precomputes the lower layer and runs every step natively;
    otherwise each step is scored through spaCy's step model. ``copy_of``: the
    batch's docs are copies, ``copy_of[j]`` the index in ``docs`` of copy
    ``j``, scored with one tok2vec pass over ``docs``."""
    if batch.is_done:
        return
    docs = list(docs)
    if not fused:
        copies = docs if copy_of is None else [docs[d] for d in copy_of]
        scorer = StepScorer(pipe, copies)
        try:
            while batch.n_unfinished:
                batch.advance(scorer(batch.context_tokens()))
        finally:
            scorer.close()
        return
    layers = precompute(pipe, docs)
    if layers.n_classes != batch.n_actions:
        raise ValueError(
            f"model scores {layers.n_classes} classes but the NER has {batch.n_actions} moves"
        )
    features = layers.features
    if copy_of is not None:
        starts = numpy.cumsum([0] + [len(doc) for doc in docs])
        rows = [numpy.zeros(1, dtype=numpy.int64)]  # the padding row
        rows += [numpy.arange(starts[d], starts[d + 1]) + 1 for d in copy_of]
        features = numpy.ascontiguousarray(features[numpy.concatenate(rows)])
    batch.run_precomputed(
        features, layers.lower_bias, layers.upper_W, layers.upper_b, layers.class_mask
    )
