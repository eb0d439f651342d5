"""Checks of the spaCy-side test harness (beamner.io.conll, tests/spacy_reference.py)
against spaCy."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import spacy
from conftest import DATA
from numpy.typing import NDArray
from spacy.language import Language
from spacy.pipeline._parser_internals.ner import BiluoPushDown
from spacy.pipeline._parser_internals.stateclass import StateClass
from spacy.tokens import Doc
from spacy.training.iob_utils import biluo_to_iob, doc_to_biluo_tags, iob_to_biluo
from spacy_reference import (
    INVALID_COST,
    BeamRun,
    class_names,
    context_token_ids,
    gold_biluo_tags,
    gold_negative_spans,
    history_to_ents,
    make_moves,
    model_score_fn,
    moves_from_pipeline,
    random_doc,
    random_gold_example,
    random_score_fn,
    random_valid_history,
    replay_score_fn,
    spacy_beam_run,
    spacy_oracle,
    spacy_trace,
    valid_row,
)

from beamner.io.conll import (
    conll_to_docs,
    documents_to_docs,
    group_into_documents,
    read_conll,
    sentence_labels,
)

LABELS = ["PER", "LOC", "ORG", "creative-work"]
NEG_KEY = "incorrect_spans"


@pytest.fixture(scope="module")
def blank() -> Language:
    return spacy.blank("en")


@pytest.fixture(scope="module")
def sm(nlp_sm: Language) -> Language:
    """en_core_web_sm, the session's one load (conftest.py); only read here."""
    return nlp_sm


# ---------------------------------------------------------------------------
# beamner.io.conll
# ---------------------------------------------------------------------------


def _readme_counts() -> dict[str, tuple[int, int, int]]:
    """(sentences, tokens, entities) per file, parsed from the corpus README table."""
    text = (DATA / "README.md").read_text(encoding="utf-8")
    counts: dict[str, tuple[int, int, int]] = {}
    wnut = {
        "train": "wnut17train.conll",
        "dev": "emerging.dev.conll",
        "test": "emerging.test.annotated",
    }
    for split, fname in wnut.items():
        m = re.search(rf"{split} `{re.escape(fname)}` (\d+) / (\d+) / (\d+)", text)
        assert m, split
        counts[f"wnut17/{fname}"] = (int(m[1]), int(m[2]), int(m[3]))
    for section in "abefgh":
        m = re.search(rf"\b{section} (\d+)/(\d+)/(\d+)", text)
        assert m, section
        counts[f"btc/{section}.conll"] = (int(m[1]), int(m[2]), int(m[3]))
    return counts


README_COUNTS = _readme_counts()


@pytest.mark.parametrize("rel", sorted(README_COUNTS))
def test_read_conll_counts(rel: str) -> None:
    n_sents, n_toks, n_ents = README_COUNTS[rel]
    raw = read_conll(DATA / rel, keep_empty_tokens=True)
    assert len(raw) == n_sents
    assert sum(len(s) for s in raw) == n_toks
    assert sum(tag.startswith("B-") for s in raw for _, tag in s) == n_ents
    clean = read_conll(DATA / rel)
    n_empty = sum(tok == "" for s in raw for tok, _ in s)
    assert sum(len(s) for s in clean) == n_toks - n_empty
    assert all(tok != "" for s in clean for tok, _ in s)
    assert [[p for p in s if p[0] != ""] for s in raw if any(t for t, _ in s)] == clean


def test_btc_empty_tokens_dropped(blank: Language) -> None:
    raw = read_conll(DATA / "btc/h.conll", keep_empty_tokens=True)
    clean = read_conll(DATA / "btc/h.conll")
    assert sum(tok == "" for s in raw for tok, _ in s) == 3  # README: 3 in h
    assert len(clean) == len(raw) - sum(all(t == "" for t, _ in s) for s in raw)
    with pytest.raises(ValueError):
        conll_to_docs(blank, [s for s in raw if any(t == "" for t, _ in s)], with_ents=True)
    docs = conll_to_docs(blank, clean[-300:], with_ents=True)
    assert len(docs) == 300


def test_read_conll_repairs_dropped_begin(tmp_path: Path) -> None:
    p = tmp_path / "x.conll"
    p.write_text("a\tO\n\tB-PER\nb\tI-PER\nc\tI-PER\n\n\tO\n\nd\tB-LOC\n", encoding="utf-8")
    assert read_conll(p) == [[("a", "O"), ("b", "B-PER"), ("c", "I-PER")], [("d", "B-LOC")]]
    assert len(read_conll(p, keep_empty_tokens=True)) == 3
    bad = tmp_path / "bad.conll"
    bad.write_text("a\tX-PER\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.conll:1"):
        read_conll(bad)


def test_conll_to_docs_entities(blank: Language) -> None:
    sents = read_conll(DATA / "wnut17/emerging.dev.conll")[:400]
    assert "creative-work" in sentence_labels(sents)
    docs = conll_to_docs(blank, sents, with_ents=True)
    for sent, doc in zip(sents, docs):
        assert [t.text for t in doc] == [w for w, _ in sent]
        tags = [t for _, t in sent]
        assert doc_to_biluo_tags(doc) == iob_to_biluo(tags)
        assert biluo_to_iob(doc_to_biluo_tags(doc)) == tags
        assert all(t.ent_iob != 0 for t in doc)
    plain = conll_to_docs(blank.vocab, sents, with_ents=False)
    assert all(not d.has_annotation("ENT_IOB") for d in plain)
    assert all(t.is_sent_start is None for d in plain for t in d[1:])


def test_btc_space_tokens_are_space(blank: Language) -> None:
    sents = read_conll(DATA / "btc/h.conll")
    with_space = [s for s in sents if any(tok.isspace() for tok, _ in s)]
    assert with_space
    for doc, sent in zip(conll_to_docs(blank, with_space, with_ents=True), with_space):
        assert [t.is_space for t in doc] == [tok.isspace() for tok, _ in sent]


def test_group_into_documents(blank: Language) -> None:
    sents = read_conll(DATA / "btc/e.conll")
    groups = group_into_documents(sents, 7)
    assert [s for g in groups for s in g] == sents
    assert all(len(g) == 7 for g in groups[:-1]) and 1 <= len(groups[-1]) <= 7
    with pytest.raises(ValueError):
        group_into_documents(sents, 0)
    docs = documents_to_docs(blank, groups, with_ents=True, set_sent_starts=True)
    for g, doc in zip(groups, docs):
        assert len(doc) == sum(len(s) for s in g)
        sents_spans = list(doc.sents)
        assert [[t.text for t in sp] for sp in sents_spans] == [[w for w, _ in s] for s in g]
        assert biluo_to_iob(doc_to_biluo_tags(doc)) == [t for s in g for _, t in s]
    unmarked = documents_to_docs(blank, groups[:3], with_ents=False)
    assert all(t.is_sent_start is None for d in unmarked for t in d[1:])


# ---------------------------------------------------------------------------
# Transition system construction
# ---------------------------------------------------------------------------


def test_make_moves_matches_entity_recognizer() -> None:
    labels = ["PER", "LOC", "ORG", "creative-work", "B"]
    nlp = spacy.blank("en")
    ner: Any = nlp.add_pipe("ner")
    for label in labels:
        ner.add_label(label)
    nlp.initialize()
    real = moves_from_pipeline(nlp)
    mine = make_moves(labels, order="add_label")
    assert class_names(mine) == class_names(real)
    assert class_names(mine)[:2] == ["U-", "O"]


def test_make_moves_matches_trained_pipeline(sm: Language) -> None:
    real = moves_from_pipeline(sm)
    freqs = dict(real.labels[1])
    mine = make_moves(freqs, order="get_actions")
    assert class_names(mine) == class_names(real)
    seq = make_moves(["A", "C", "B"], order="get_actions")
    assert class_names(seq)[:3] == ["B-C", "B-B", "B-A"]
    assert class_names(seq)[-2:] == ["U-", "O"]


def test_make_moves_neg_key() -> None:
    assert make_moves(LABELS, incorrect_spans_key=NEG_KEY).neg_key == NEG_KEY
    assert make_moves(LABELS).neg_key is None


# ---------------------------------------------------------------------------
# Random docs
# ---------------------------------------------------------------------------


def _check_iob_consistent(doc: Doc) -> None:
    for i, tok in enumerate(doc):
        if tok.ent_iob == 1:  # I must follow B/I of the same type
            assert i > 0 and doc[i - 1].ent_iob in (1, 3)
            assert doc[i - 1].ent_type == tok.ent_type != 0
        if tok.ent_iob in (0, 2):
            assert tok.ent_type == 0


def test_random_doc_properties(blank: Language) -> None:
    rng = np.random.default_rng(1)
    seen_iob: set[int] = set()
    seen_sent: set[bool | None] = set()
    n_blocked = 0
    for mode in ("none", "missing", "outside", "unmodified"):
        for _ in range(15):
            doc = random_doc(blank.vocab, rng, int(rng.integers(1, 30)), LABELS, preset=mode)
            _check_iob_consistent(doc)
            for tok in doc:
                assert tok.is_space == tok.text.isspace()
                if tok.is_space:
                    assert tok.whitespace_ == ""
                if tok.ent_type:
                    assert tok.ent_type_ in LABELS
                n_blocked += tok.ent_iob == 3 and tok.ent_type == 0
                seen_iob.add(tok.ent_iob)
                if tok.i > 0:
                    seen_sent.add(tok.is_sent_start)
            iobs = {t.ent_iob for t in doc}
            if mode == "none":
                assert iobs == {0}
            elif mode == "missing":
                assert 2 not in iobs
            elif mode == "outside":
                assert 0 not in iobs
    assert seen_iob == {0, 1, 2, 3}
    assert seen_sent == {True, False, None}
    assert n_blocked > 0


# ---------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------


def test_random_valid_histories_trace(blank: Language) -> None:
    rng = np.random.default_rng(2)
    moves = make_moves(LABELS, incorrect_spans_key=NEG_KEY)
    names = class_names(moves)
    for _ in range(40):
        doc = random_doc(blank.vocab, rng, int(rng.integers(1, 25)), LABELS)
        history = random_valid_history(moves, doc, rng)
        assert len(history) == len(doc)
        ex = random_gold_example(doc, rng, LABELS, NEG_KEY)
        tr = spacy_trace(moves, doc, history, ex)
        assert tr.is_final
        assert tr.valid.shape == (len(history), moves.n_moves)
        assert all(tr.valid[t, a] for t, a in enumerate(history))
        assert tr.costs is not None
        assert np.array_equal(tr.valid, tr.costs < INVALID_COST)
        assert np.all(tr.costs[tr.valid] >= 0)
        assert np.all(tr.costs[~tr.valid] == INVALID_COST)
        assert np.all(tr.context_ids[:, 0] == np.arange(len(doc)))
        for t, tok in enumerate(doc):
            row = tr.valid[t]
            valid_names = {names[i] for i in np.flatnonzero(row)}
            assert valid_names
            if tok.ent_iob == 3 and tok.ent_type == 0:  # blocked: only U-
                assert valid_names == {"U-"}
            elif tok.ent_iob == 3:  # preset B: forced label
                assert len(valid_names) == 1
                assert valid_names.pop()[2:] == tok.ent_type_
            elif tok.ent_iob == 1:
                assert len(valid_names) == 1
            if tok.is_space and tok.ent_iob in (0, 2):  # no entity may start on whitespace
                assert not any(n.startswith(("B-", "U-")) for n in valid_names)
            if tok.ent_iob == 2 and tr.context_ids[t, 1] == -1 and not tok.is_space:
                # preset O is *not* enforced by the transition system
                assert any(n.startswith("U-") and n != "U-" for n in valid_names)
        # a wrong history is refused
        bad = list(history)
        invalid = np.flatnonzero(~tr.valid[0])
        bad[0] = int(invalid[0])
        with pytest.raises(ValueError):
            spacy_trace(moves, doc, bad)


def test_gold_example_and_oracle(blank: Language) -> None:
    rng = np.random.default_rng(3)
    moves = make_moves(LABELS, incorrect_spans_key=NEG_KEY)
    n_missing = n_negs = n_oracles = 0
    for _ in range(40):
        doc = random_doc(
            blank.vocab,
            rng,
            int(rng.integers(1, 25)),
            LABELS,
            p_space=0.0,
            p_sent_start=0.0,
            preset="none",
        )
        ex = random_gold_example(doc, rng, LABELS, NEG_KEY)
        assert ex.predicted is doc
        tags = gold_biluo_tags(ex)
        assert len(tags) == len(doc)
        n_missing += sum(t is None for t in tags)
        gold = {(e.start, e.end, e.label_) for e in ex.reference.ents}
        negs = gold_negative_spans(ex, NEG_KEY)
        n_negs += len(negs)
        assert not gold & set(negs)
        oracle = spacy_oracle(moves, ex)
        if oracle is None or not oracle:
            continue
        n_oracles += 1
        tr = spacy_trace(moves, doc, oracle, ex)
        assert tr.costs is not None
        assert np.all(tr.costs[np.arange(len(oracle)), oracle] == 0)
        assert gold <= set(tr.ents)
    assert n_missing > 0 and n_negs > 0 and n_oracles > 20


# ---------------------------------------------------------------------------
# Beam search
# ---------------------------------------------------------------------------


def _replayed_score(run: BeamRun, b: int, history: list[int]) -> float:
    """Sum (float32, in order) of the recorded scores along ``history``."""
    total = np.float32(0.0)
    for t, clas in enumerate(history):
        step = run.steps[t]
        rows = [r for r in np.flatnonzero(step.doc_index == b) if step.histories[r] == history[:t]]
        assert len(rows) == 1
        total = np.float32(total + step.scores[rows[0], clas])
    return float(total)


def _check_run(run: BeamRun, moves: BiluoPushDown, docs: list[Doc], width: int) -> None:
    n_moves = moves.n_moves
    for b, (res, doc) in enumerate(zip(run.docs, docs)):
        assert res.is_done
        assert 1 <= len(res.histories) <= width
        assert len(res.scores) == len(res.probs) == len(res.histories) == len(res.parses)
        assert sum(res.probs) == pytest.approx(1.0)
        s = np.asarray(res.scores, dtype=np.float64)
        assert np.all(np.diff(s) <= 0)  # best first
        softmax = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        assert np.allclose(softmax, res.probs)
        assert len({tuple(h) for h in res.histories}) == len(res.histories)
        for h, score, (_prob, parse) in zip(res.histories, res.scores, res.parses):
            assert len(h) == len(doc)
            assert score == _replayed_score(run, b, h)  # exact float32 sum
            assert parse == history_to_ents(moves, h)
    for step in run.steps:
        assert step.scores.dtype == np.float32 and step.scores.flags["C_CONTIGUOUS"]
        assert step.scores.shape == (len(step.histories), n_moves)
        assert np.all(np.diff(step.doc_index) >= 0)
        for r, b in enumerate(step.doc_index):
            assert step.context_ids[r, 0] == run.offsets[b] + len(step.histories[r])


@pytest.mark.parametrize(
    ("width", "density", "ties"),
    [(1, 0.0, False), (4, 0.0, False), (8, 0.001, False), (6, 0.0, True)],
)
def test_beam_run_random_scores(blank: Language, width: int, density: float, ties: bool) -> None:
    rng = np.random.default_rng(10 + width)
    moves = make_moves(LABELS)
    names = class_names(moves)
    docs = [random_doc(blank.vocab, rng, n, LABELS) for n in (12, 0, 1, 7, 20)]
    run = spacy_beam_run(
        moves,
        docs,
        random_score_fn(rng, moves.n_moves, ties=ties),
        width,
        density,
        record_valid=True,
    )
    assert len(run.steps) == max(len(d) for d in docs)
    _check_run(run, moves, docs, width)
    assert run.docs[1].histories == [[]] and run.docs[1].parses == [(1.0, [])]
    for res, doc in zip(run.docs, docs):
        for h in res.histories:
            assert spacy_trace(moves, doc, h).ents == history_to_ents(moves, h)
    # Every row's validity mask matches a trace of the row's history.
    for step in run.steps[:5]:
        assert step.valid is not None
        for r, (b, h) in enumerate(zip(step.doc_index, step.histories)):
            state = moves.init_batch([docs[b]])[0]
            for clas in h:
                moves.apply_transition(state, names[clas])
            assert np.array_equal(step.valid[r], valid_row(moves, state, names))
            assert context_token_ids(state, 3, run.offsets[b]) == step.context_ids[r].tolist()
    if width == 1:  # greedy: argmax over valid classes (no ties with normal scores)
        for step in run.steps:
            assert step.valid is not None
            masked: NDArray[np.float32] = np.where(step.valid, step.scores, -np.inf).astype(
                np.float32
            )
            for r, b in enumerate(step.doc_index):
                t = len(step.histories[r])
                assert run.docs[b].histories[0][t] == int(np.argmax(masked[r]))
    # Replaying the recorded matrices reproduces the run exactly.
    again = spacy_beam_run(
        moves, docs, replay_score_fn([s.scores for s in run.steps]), width, density
    )
    assert [(d.histories, d.scores, d.probs, d.parses) for d in again.docs] == [
        (d.histories, d.scores, d.probs, d.parses) for d in run.docs
    ]


def test_beam_run_real_model(sm: Language) -> None:
    rng = np.random.default_rng(20)
    moves = moves_from_pipeline(sm)
    names = class_names(moves)
    labels = sorted({n[2:] for n in names if n[:2] == "B-"})
    texts = [
        "Apple is buying U.K. startup for $1 billion.",
        "Hello  world\n\nBob Smith lives in Paris, France",
    ]
    docs = [sm.make_doc(t) for t in texts]
    docs += [random_doc(sm.vocab, rng, n, labels) for n in (15, 9)]
    score_fn, step_model = model_score_fn(sm, docs)
    real_ids: list[NDArray[np.int32]] = []

    def recording(step: int, states: list[StateClass]) -> Any:
        real_ids.append(np.asarray(step_model.get_token_ids(states)))
        return score_fn(step, states)

    run = spacy_beam_run(moves, docs, recording, 4)
    _check_run(run, moves, docs, 4)
    assert len(real_ids) == len(run.steps)
    for ids, step in zip(real_ids, run.steps):
        assert np.array_equal(ids, step.context_ids)
    # The pipeline's own beam_parse on copies of the same batch gives the same beams.
    ner: Any = sm.get_pipe("ner")
    beams = ner.beam_parse([d.copy() for d in docs], beam_width=4)
    for beam, res in zip(beams, run.docs):
        assert moves.get_beam_parses(beam) == res.parses
        assert [list(h) for h in beam.histories[: len(beam)]] == res.histories
