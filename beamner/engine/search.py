"""Beam search over spaCy docs with a spaCy NER pipe's own weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy
from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine.model import (
    PrecomputedLayers,
    StepScorer,
    UpperLayer,
    lower_layers,
    token_vectors,
    upper_layer,
)
from beamner.engine.settings import BeamSettings, Normalize
from beamner.engine.spacy_inputs import doc_batch, transition_system

__all__ = [
    "PreparedSearch",
    "beam_search",
    "constrained_batch",
    "finish_search",
    "prepare_search",
    "run_batch",
    "run_search",
]


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
    normalization, fused) taken from ``settings``: :func:`prepare_search`
    then :func:`finish_search`, as one batch."""
    return finish_search(pipe, prepare_search(pipe, docs, settings), settings)


@dataclass
class PreparedSearch:
    """A batch ready to search: its docs, the unstarted native batch and, when
    fused, the tok2vec output and the upper layer read with it (or, for a
    model without an upper layer, every layer already precomputed)."""

    docs: list[Doc]
    batch: BeamBatch
    tokvecs: Any = None
    upper: UpperLayer | None = None
    layers: PrecomputedLayers | None = None


def prepare_search(pipe: Any, docs: Sequence[Doc], settings: BeamSettings) -> PreparedSearch:
    """The half of a search that holds the GIL: labels, the native batch and
    (fused) the NER's tok2vec, which is mostly thinc's Python. Everything a
    later ``_ensure_labels_are_added`` could change is read here, so the
    other half may run on another thread while the next batch is prepared."""
    docs = list(docs)
    pipe._ensure_labels_are_added(docs)
    batch = BeamBatch(
        transition_system(pipe.moves),
        doc_batch(docs),
        settings.width,
        settings.density,
        normalize=settings.normalize,
    )
    prepared = PreparedSearch(docs, batch)
    if settings.fused and not batch.is_done:
        prepared.tokvecs = token_vectors(pipe, docs)
        prepared.upper = upper_layer(pipe)
        if prepared.upper is None:  # a new label would resize the lower layer
            prepared.layers = lower_layers(pipe, prepared.tokvecs)
    return prepared


def finish_search(pipe: Any, prepared: PreparedSearch, settings: BeamSettings) -> BeamBatch:
    """The other half: fused, the lower layer (a blis matmul) and the native
    search, both with the GIL released, so another thread can run the next
    batch's tok2vec meanwhile; otherwise the step-by-step search."""
    batch = prepared.batch
    if prepared.tokvecs is None:
        run_batch(pipe, prepared.docs, batch, fused=settings.fused)
    else:
        layers = prepared.layers or lower_layers(pipe, prepared.tokvecs, prepared.upper)
        _run_layers(batch, layers)
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
    layers = lower_layers(pipe, token_vectors(pipe, docs))
    if copy_of is not None:
        starts = numpy.cumsum([0] + [len(doc) for doc in docs])
        rows = [numpy.zeros(1, dtype=numpy.int64)]  # the padding row
        rows += [numpy.arange(starts[d], starts[d + 1]) + 1 for d in copy_of]
        layers.features = numpy.ascontiguousarray(layers.features[numpy.concatenate(rows)])
    _run_layers(batch, layers)


def _run_layers(batch: BeamBatch, layers: PrecomputedLayers) -> None:
    if layers.n_classes != batch.n_actions:
        raise ValueError(
            f"model scores {layers.n_classes} classes but the NER has {batch.n_actions} moves"
        )
    batch.run_precomputed(
        layers.features, layers.lower_bias, layers.upper_W, layers.upper_b, layers.class_mask
    )
