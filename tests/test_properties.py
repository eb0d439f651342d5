"""Property-based tests: beamner's state machine, oracle costs and beam against
spaCy's own implementation (BiluoPushDown, BeamBatch/thinc Beam) on random
documents with preset entities, blocked tokens, sentence starts and whitespace."""

from __future__ import annotations

import numpy as np
import pytest
import spacy
from conftest import DATA
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc
from spacy.training import Example
from spacy_reference import (
    make_moves,
    random_doc,
    random_gold_example,
    random_score_fn,
    random_valid_history,
    spacy_beam_run,
    spacy_trace,
)

import beamner
from beamner.engine.spacy_inputs import _same_tokens_tags, split_move_name
from beamner.io.conll import conll_to_docs, read_conll

LABELS = ["PER", "LOC", "ORG", "creative-work"]
NEG_KEY = "incorrect"
VOCAB = spacy.blank("en").vocab

seeds = st.integers(min_value=0, max_value=2**32 - 1)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _moves(order: str, neg_key: str | None = None):  # type: ignore[no-untyped-def]
    return make_moves(LABELS, order=order, strings=VOCAB.strings, incorrect_spans_key=neg_key)  # type: ignore[arg-type]


@SETTINGS
@given(seed=seeds, n_tokens=st.integers(1, 30), order=st.sampled_from(["add_label", "get_actions"]))
def test_validity_and_context_match_spacy(seed: int, n_tokens: int, order: str) -> None:
    rng = np.random.default_rng(seed)
    moves = _moves(order)
    doc = random_doc(VOCAB, rng, n_tokens, LABELS)
    history = random_valid_history(moves, doc, rng)
    expected = spacy_trace(moves, doc, history)
    system = beamner.transition_system(moves)
    valid, costs, context = system.trace(beamner.doc_batch([doc]), 0, np.asarray(history))
    assert costs is None
    np.testing.assert_array_equal(valid, expected.valid)
    np.testing.assert_array_equal(context, expected.context_ids)
    strings = VOCAB.strings
    ents = [
        (s, e, strings[label]) for s, e, label in system.entities(np.asarray(history), len(doc))
    ]
    assert ents == [tuple(e) for e in expected.ents]


@SETTINGS
@given(seed=seeds, n_tokens=st.integers(1, 30), with_negs=st.booleans())
def test_costs_match_spacy(seed: int, n_tokens: int, with_negs: bool) -> None:
    rng = np.random.default_rng(seed)
    neg_key = NEG_KEY if with_negs else None
    moves = _moves("get_actions", neg_key)
    doc = random_doc(VOCAB, rng, n_tokens, LABELS)
    example = random_gold_example(doc, rng, LABELS, neg_key)
    history = random_valid_history(moves, doc, rng)
    expected = spacy_trace(moves, doc, history, example)
    system = beamner.transition_system(moves)
    gold = beamner.gold(example, neg_key)
    valid, costs, _ = system.trace(beamner.doc_batch([doc]), 0, np.asarray(history), gold)
    np.testing.assert_array_equal(valid, expected.valid)
    np.testing.assert_array_equal(costs, expected.costs)


@SETTINGS
@given(
    seed=seeds,
    width=st.sampled_from([1, 2, 4, 16, 64]),
    density=st.sampled_from([0.0, 1e-4, 0.01]),
    ties=st.booleans(),
    lengths=st.lists(st.integers(0, 20), min_size=1, max_size=5),
)
def test_beam_matches_spacy(
    seed: int, width: int, density: float, ties: bool, lengths: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    moves = _moves("get_actions")
    docs = [random_doc(VOCAB, rng, n, LABELS) for n in lengths]
    run = spacy_beam_run(
        moves, docs, random_score_fn(rng, moves.n_moves, ties=ties), width, density
    )
    batch = beamner.BeamBatch(
        beamner.transition_system(moves), beamner.doc_batch(docs), width, density
    )
    for step in run.steps:
        assert not batch.is_done
        np.testing.assert_array_equal(batch.context_tokens(), step.context_ids)
        batch.advance(step.scores)
    assert batch.is_done
    for i, expected in enumerate(run.docs):
        parses = batch.parses(i)
        assert [p.history.tolist() for p in parses] == [list(h) for h in expected.histories]
        assert [p.score for p in parses] == list(expected.scores)
        np.testing.assert_allclose(
            [p.probability for p in parses], expected.probs, rtol=0, atol=1e-12
        )


@SETTINGS
@given(
    seed=seeds,
    width=st.sampled_from([1, 4, 16]),
    lengths=st.lists(st.integers(1, 15), min_size=1, max_size=4),
)
def test_gold_following_beam_only_takes_zero_cost_actions(
    seed: int, width: int, lengths: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    moves = _moves("get_actions")
    docs = [random_doc(VOCAB, rng, n, LABELS, preset="none") for n in lengths]
    examples = [random_gold_example(doc, rng, LABELS, p_blocked=0.0) for doc in docs]
    golds = [beamner.gold(eg) for eg in examples]
    batch = beamner.BeamBatch(
        beamner.transition_system(moves), beamner.doc_batch(docs), width, 0.0, golds=golds
    )
    follow = beamner.BeamBatch(
        beamner.transition_system(moves),
        beamner.doc_batch(docs),
        width,
        0.0,
        golds=golds,
        follow_gold=True,
    )
    score_fn = random_score_fn(rng, moves.n_moves)
    while not batch.is_done:
        costs = batch.costs()
        valid = batch.valid_actions()
        assert np.all((costs == 9000.0) == ~valid)
        batch.advance(score_fn(0, [None] * batch.n_unfinished))
    try:
        while not follow.is_done:
            follow.advance(score_fn(0, [None] * follow.n_unfinished))
    except ValueError as err:  # gold unreachable (e.g. gold entity across whitespace start)
        assert "no valid action" in str(err)
        return
    for i in range(len(docs)):
        assert all(p.loss == 0.0 for p in follow.parses(i))


@pytest.mark.parametrize("order", ["add_label", "get_actions"])
def test_table_follows_spacy_class_order(order: str) -> None:
    moves = _moves(order)
    system = beamner.transition_system(moves)
    names = [moves.get_class_name(i) for i in range(moves.n_moves)]
    letters = "MBILUO"
    strings = VOCAB.strings
    rebuilt = [
        letters[m] + ("" if letters[m] == "O" else "-" + (strings[int(label)] if label else ""))
        for m, label in zip(system.moves, system.labels)
    ]
    assert rebuilt == names


def _spacy_gold_arrays(example: Example) -> tuple[np.ndarray, np.ndarray]:
    """spaCy's aligned BILUO tags as beamner's (move, label) arrays."""
    _, tags = example.get_aligned_ents_and_ner()
    moves = np.zeros(len(tags), dtype=np.uint8)
    labels = np.zeros(len(tags), dtype=np.uint64)
    for i, tag in enumerate(tags):
        if tag not in (None, "", "-"):
            moves[i], labels[i] = split_move_name(tag)
    return moves, labels


@SETTINGS
@given(seed=seeds, n_tokens=st.integers(0, 30))
def test_gold_fast_path_equals_spacy_alignment(seed: int, n_tokens: int) -> None:
    """Same words: beamner reads the gold tags from arrays; they must be the
    tags spaCy's get_aligned_ents_and_ner gives (entities on whitespace,
    missing runs, blocked tokens, O)."""
    rng = np.random.default_rng(seed)
    doc = random_doc(VOCAB, rng, n_tokens, LABELS)
    example = random_gold_example(doc, rng, LABELS)
    fast = _same_tokens_tags(example)
    assert fast is not None or not example.y.has_annotation("ENT_IOB")
    if fast is not None:
        expected = _spacy_gold_arrays(example)
        np.testing.assert_array_equal(fast[0], expected[0])
        np.testing.assert_array_equal(fast[1], expected[1])


def test_gold_fast_path_on_wnut17_and_fallback_on_other_tokens() -> None:
    nlp = spacy.blank("en")
    sentences = read_conll(DATA / "wnut17" / "wnut17train.conll")[:800]
    predicted = conll_to_docs(nlp, sentences, with_ents=False)
    reference = conll_to_docs(nlp, sentences, with_ents=True)
    n_ents = 0
    for x, y in zip(predicted, reference):
        example = Example(x, y)
        fast = _same_tokens_tags(example)
        assert fast is not None
        expected = _spacy_gold_arrays(example)
        np.testing.assert_array_equal(fast[0], expected[0])
        np.testing.assert_array_equal(fast[1], expected[1])
        n_ents += len(y.ents)
    assert n_ents > 50
    # Different tokenization: spaCy's alignment decides, and gold() agrees with it.
    y = Doc(nlp.vocab, words=["New", "York", "rocks"], ents=["B-LOC", "I-LOC", "O"])
    example = Example(Doc(nlp.vocab, words=["New York", "rocks"]), y)
    assert _same_tokens_tags(example) is None
    assert [tag for tag in example.get_aligned_ner()] == ["U-LOC", "O"]
    assert beamner.gold(example).n_tokens == 2
