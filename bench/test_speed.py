"""Throughput: spaCy's NER and beamner's on the same docs (see conftest.py).

Every timed call runs over all the docs of the ``docs`` fixture as one batch,
as ``EntityRecognizer.beam_parse`` is called by ``nlp.pipe``'s batches.
"""

from __future__ import annotations

from typing import Any

import pytest
from spacy.pipeline import EntityRecognizer
from spacy.pipeline._parser_internals import _beam_utils

import beamner
from beamner import BeamnerEntityRecognizer
from beamner.engine.model import precompute
from beamner.engine.spacy_inputs import doc_batch, transition_system

WIDTHS = (1, 4, 16, 64)
DENSITIES = (0.0001, 0.0)


def rounds_for(engine: str, width: int) -> int:
    """Fewer rounds where one round of spaCy takes tens of seconds."""
    if engine == "spacy" and width >= 64:
        return 1
    if engine == "spacy" and width >= 16:
        return 2
    return 3


def fresh_copies(docs: list[Any]) -> Any:
    """pedantic setup: the component sets doc.ents, so every round gets clean copies."""
    return lambda: (([doc.copy() for doc in docs],), {})


def annotate(ner: Any) -> Any:
    def run(docs: list[Any]) -> None:
        ner.set_annotations(docs, ner.predict(docs))

    return run


# -- the NER component as nlp.pipe runs it: predict + set_annotations ---------------------------


def test_component_spacy_greedy(timed, spacy_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    assert spacy_ner.cfg["beam_width"] == 1
    timed(
        "spacy",
        "ner component greedy",
        annotate(spacy_ner),
        3,
        setup=fresh_copies(docs),
        tokens=n_tokens,
    )


@pytest.mark.parametrize("engine", ["spacy", "beamner"])
def test_component_w16(timed, engine, spacy_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    if engine == "spacy":
        ner = EntityRecognizer(
            spacy_ner.vocab,
            spacy_ner.model,
            moves=spacy_ner.moves,
            beam_width=16,
            beam_density=0.0001,
        )
    else:
        ner = BeamnerEntityRecognizer.from_pipe(spacy_ner, beam_width=16, beam_density=0.0001)
    timed(
        engine,
        "ner component w16 d0.0001",
        annotate(ner),
        rounds_for(engine, 16),
        setup=fresh_copies(docs),
        tokens=n_tokens,
    )


# -- beam_parse: finished thinc Beams ---------------------------------------------------------


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("engine", ["spacy", "beamner"])
def test_beam_parse(  # type: ignore[no-untyped-def]
    timed, engine, width, density, spacy_ner, beamner_ner, docs, n_tokens
):
    ner = spacy_ner if engine == "spacy" else beamner_ner
    beams = timed(
        engine,
        f"beam_parse w{width} d{density:g}",
        lambda: ner.beam_parse(docs, beam_width=width, beam_density=density),
        rounds_for(engine, width),
        tokens=n_tokens,
    )
    assert len(beams) == len(docs)


# -- entity probabilities ---------------------------------------------------------------------

SCORES_CASE = "scored_ents w16 d0.0001"
_expected_scores: list[Any] = []


def test_scored_ents_spacy(timed, spacy_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    scores = timed(
        "spacy",
        SCORES_CASE,
        lambda: spacy_ner.scored_ents(
            spacy_ner.beam_parse(docs, beam_width=16, beam_density=0.0001)
        ),
        rounds_for("spacy", 16),
        tokens=n_tokens,
        note="spaCy: beam_parse + scored_ents (get_beam_parses)",
    )
    _expected_scores[:] = scores


def test_scored_ents_beamner(timed, beamner_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    timed(
        "beamner",
        SCORES_CASE,
        lambda: beamner_ner.scored_ents(
            beamner_ner.beam_parse(docs, beam_width=16, beam_density=0.0001)
        ),
        3,
        tokens=n_tokens,
        note="beamner: drop-in beam_parse + spaCy's scored_ents",
    )


def test_entity_scores_beamner(timed, beamner_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    scores = timed(
        "beamner",
        "entity_scores w16 d0.0001",
        lambda: beamner.entity_scores(beamner_ner, docs, beam_width=16, beam_density=0.0001),
        3,
        tokens=n_tokens,
        vs=SCORES_CASE,
        note="beamner.entity_scores (no Beam objects) vs spaCy's beam_parse + scored_ents",
    )
    if _expected_scores:  # the same entities and probabilities as spaCy's
        for got, expected in zip(scores, _expected_scores):
            assert got.keys() == expected.keys()
            assert all(abs(got[k] - v) <= 1e-9 for k, v in expected.items())


# -- the search alone: features precomputed outside the timer ---------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_search_spacy(timed, width, spacy_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    moves = spacy_ner.moves
    model = spacy_ner.model.predict(docs)  # tok2vec + lower layer, not timed

    def search() -> None:
        batch = _beam_utils.BeamBatch(moves, moves.init_batch(docs), None, width, density=0.0001)
        while not batch.is_done:
            states = batch.get_unfinished_states()
            if not states:
                break
            batch.advance(model.predict(states))

    try:
        timed(
            "spacy",
            f"search w{width} d0.0001",
            search,
            rounds_for("spacy", width),
            tokens=n_tokens,
            note="spaCy: BeamBatch loop with a ready ParserStepModel",
        )
    finally:
        model.clear_memory()


@pytest.mark.parametrize("width", WIDTHS)
def test_search_beamner(timed, width, beamner_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    layers = precompute(beamner_ner, docs)  # tok2vec + lower layer, not timed
    system = transition_system(beamner_ner.moves)
    args = (layers.features, layers.lower_bias, layers.upper_W, layers.upper_b, layers.class_mask)

    def search() -> None:
        batch = beamner.BeamBatch(system, doc_batch(docs), width, 0.0001)
        batch.run_precomputed(*args)

    timed(
        "beamner",
        f"search w{width} d0.0001",
        search,
        3,
        tokens=n_tokens,
        note="beamner: BeamBatch.run_precomputed on precompute()'s arrays",
    )


# -- normalized beam (issue 11): normalize="local" against "none", same run ----------------------

NORMALIZE_SETTINGS = ("none", "local")


def normalize_case(what: str, normalize: str) -> str:
    return f"{what} w16 d0.0001 normalize={normalize}"


@pytest.mark.parametrize("normalize", NORMALIZE_SETTINGS)
def test_entity_scores_normalize(timed, normalize, beamner_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    """Fused entity scores (precompute + native search + probabilities)."""
    timed(
        "beamner",
        normalize_case("entity_scores", normalize),
        lambda: beamner.entity_scores(
            beamner_ner, docs, beam_width=16, beam_density=0.0001, normalize=normalize
        ),
        3,
        tokens=n_tokens,
        normalize=normalize,
        note=f"beamner.entity_scores(normalize={normalize!r}), fused",
    )


@pytest.mark.parametrize("normalize", NORMALIZE_SETTINGS)
def test_beam_parse_normalize(timed, normalize, beamner_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    """The drop-in component's beam_parse with its ``normalize`` setting."""
    ner = BeamnerEntityRecognizer.from_pipe(beamner_ner, normalize=normalize)
    beams = timed(
        "beamner",
        normalize_case("beam_parse", normalize),
        lambda: ner.beam_parse(docs, beam_width=16, beam_density=0.0001),
        3,
        tokens=n_tokens,
        normalize=normalize,
        note=f"BeamnerEntityRecognizer(normalize={normalize!r}).beam_parse, fused",
    )
    assert len(beams) == len(docs)


@pytest.mark.parametrize("normalize", NORMALIZE_SETTINGS)
def test_search_normalize(timed, normalize, beamner_ner, docs, n_tokens):  # type: ignore[no-untyped-def]
    """The search alone (features precomputed outside the timer): where the
    log-softmax's cost shows undiluted."""
    layers = precompute(beamner_ner, docs)
    system = transition_system(beamner_ner.moves)
    args = (layers.features, layers.lower_bias, layers.upper_W, layers.upper_b, layers.class_mask)

    def search() -> None:
        batch = beamner.BeamBatch(system, doc_batch(docs), 16, 0.0001, normalize=normalize)
        batch.run_precomputed(*args)

    timed(
        "beamner",
        normalize_case("search", normalize),
        search,
        3,
        tokens=n_tokens,
        normalize=normalize,
        note=f"BeamBatch(normalize={normalize!r}).run_precomputed",
    )
