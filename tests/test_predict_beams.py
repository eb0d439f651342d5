"""``predict``'s result reads as spaCy's ``beam_ner`` result (a list of thinc
Beams, or of states at width 1) for every consumer, built lazily, while the
component's own ``set_annotations`` (the ``nlp.pipe`` path) builds no Beam;
and beamner's training errors keep spaCy's exception types and codes."""

from __future__ import annotations

from typing import Any

import pytest
from spacy.lang.en import English
from spacy.pipeline import EntityRecognizer
from spacy.pipeline._parser_internals.stateclass import StateClass
from spacy.tokens import Span
from spacy.training import Example
from thinc.extra.search import Beam

import beamner.pipeline
from beamner import BeamnerEntityRecognizer
from beamner.pipeline import NativeBeams

WIDTH = 16
DENSITY = 0.0001


@pytest.fixture(scope="module")
def sm_ner(nlp_sm: Any) -> Any:
    return nlp_sm.get_pipe("ner")


@pytest.fixture(scope="module")
def docs(real_docs: list[Any]) -> list[Any]:
    return [doc.copy() for doc in real_docs[:24]]


@pytest.fixture
def beams_built(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many thinc Beams beamner.pipeline built from native results."""
    built = [0]
    original = getattr(beamner.pipeline, "build_beam")  # noqa: B009 (not re-exported)

    def counting(*args: Any) -> Any:
        built[0] += 1
        return original(*args)

    monkeypatch.setattr(beamner.pipeline, "build_beam", counting)
    return built


def _fast(pipe: Any, **settings: Any) -> BeamnerEntityRecognizer:
    settings = {"beam_width": WIDTH, "beam_density": DENSITY, **settings}
    return BeamnerEntityRecognizer.from_pipe(pipe, **settings)


def _ents(docs: list[Any]) -> list[list[tuple[int, int, str]]]:
    return [[(e.start, e.end, e.label_) for e in doc.ents] for doc in docs]


def test_predict_result_reads_as_spacys_list_of_beams(
    sm_ner: Any, docs: list[Any], beams_built: list[int]
) -> None:
    fast = _fast(sm_ner)
    expected = EntityRecognizer.beam_parse(sm_ner, docs, beam_width=WIDTH, beam_density=DENSITY)
    result = fast.predict(docs)
    assert isinstance(result, NativeBeams)
    assert len(result) == len(docs) and beams_built[0] == 0  # len builds nothing
    last = result[-1]
    assert isinstance(last, Beam) and beams_built[0] == 1  # indexing builds one
    assert last is result[len(docs) - 1]
    parses = sm_ner.moves.get_beam_parses(last)
    spacy_parses = sm_ner.moves.get_beam_parses(expected[-1])
    assert [ents for _, ents in parses] == [ents for _, ents in spacy_parses]
    assert [p for p, _ in parses] == pytest.approx([p for p, _ in spacy_parses], abs=1e-12)
    assert [b is result[i + 1] for i, b in enumerate(result[1:4])] == [True] * 3
    assert next(reversed(result)) is last
    with pytest.raises(IndexError):
        result[len(docs)]
    with pytest.raises(IndexError):
        result[-len(docs) - 1]
    scored = fast.scored_ents(result)  # iterates: builds the rest, once
    assert beams_built[0] == len(docs)
    spacy_scored = EntityRecognizer.scored_ents(sm_ner, expected)
    assert len(scored) == len(spacy_scored)
    for ours, theirs in zip(scored, spacy_scored):
        assert ours == pytest.approx(theirs, abs=1e-12)
    assert all(isinstance(beam, Beam) and beam.is_done for beam in result)
    assert beams_built[0] == len(docs)
    assert "24 docs" in repr(result)


def test_spacys_set_annotations_reads_the_result_as_beams(
    sm_ner: Any, docs: list[Any], beams_built: list[int]
) -> None:
    fast = _fast(sm_ner)
    native_docs = [doc.copy() for doc in docs]
    fast.set_annotations(native_docs, fast.predict(native_docs))
    assert beams_built[0] == 0  # the component's own path reads the native arrays
    parent_docs = [doc.copy() for doc in docs]
    EntityRecognizer.set_annotations(fast, parent_docs, fast.predict(parent_docs))
    assert beams_built[0] == len(docs)
    spacy_docs = [doc.copy() for doc in docs]
    spacy_beams = EntityRecognizer.beam_parse(sm_ner, spacy_docs, WIDTH, beam_density=DENSITY)
    EntityRecognizer.set_annotations(sm_ner, spacy_docs, spacy_beams)
    assert _ents(native_docs) == _ents(parent_docs) == _ents(spacy_docs)
    assert sum(len(doc.ents) for doc in native_docs) > 10


def test_pipe_and_call_build_no_beams(sm_ner: Any, docs: list[Any], beams_built: list[int]) -> None:
    fast = _fast(sm_ner, spans_key="sc")
    piped = list(fast.pipe([doc.copy() for doc in docs], batch_size=8))
    called = [fast(doc.copy()) for doc in docs[:3]]
    assert beams_built[0] == 0
    assert _ents(called) == _ents(piped[:3])
    assert all("sc" in doc.spans for doc in piped)


def test_width_one_reads_as_greedy_parse_states(sm_ner: Any, docs: list[Any]) -> None:
    """spaCy's beam_ner at width 1 predicts with greedy_parse: a list of
    states. beamner's width-1 search (kept native when spans_key asks for
    candidate spans) reads as the same states."""
    assert sm_ner.cfg["beam_width"] == 1
    spacy_states = EntityRecognizer.predict(sm_ner, docs)
    assert all(isinstance(state, StateClass) for state in spacy_states)
    plain = _fast(sm_ner, beam_width=1).predict(docs)  # no spans_key: spaCy's own greedy_parse
    assert isinstance(plain, list) and all(isinstance(s, StateClass) for s in plain)
    native = _fast(sm_ner, beam_width=1, spans_key="sc").predict(docs)
    assert isinstance(native, NativeBeams)
    assert all(isinstance(state, StateClass) for state in native)
    results = []
    for states in (spacy_states, plain, native):
        annotated = [doc.copy() for doc in docs]
        EntityRecognizer.set_annotations(sm_ner, annotated, states)
        results.append(_ents(annotated))
    assert results[0] == results[1] == results[2]


def test_issue_snippet_scores_entities() -> None:
    """The issue's code, as a new user wrote it."""
    nlp = English()
    ner: Any = nlp.add_pipe("beamner_ner", config={"beam_width": 16, "beam_density": 0.0001})
    ner.add_label("LOC")
    nlp.initialize()
    doc = nlp.make_doc("I like London.")
    (scores,) = ner.scored_ents(ner.predict([doc]))
    assert scores and all(0.0 <= p <= 1.0 + 1e-6 for p in scores.values())
    assert {label for _, _, label in scores} == {"LOC"}


# spaCy's errors, kept by beamner's native beam update --------------------------


def _beam_ner_pair(neg_key: str | None = "neg") -> tuple[Any, Any, Any]:
    """A blank pipeline with spaCy's beam_ner, and beamner's component sharing it."""
    nlp = English()
    config = {"beam_width": 4, "beam_density": 0.0, "incorrect_spans_key": neg_key}
    pipe: Any = nlp.add_pipe("beam_ner", config=config)
    for label in ("PERSON", "LOC"):
        pipe.add_label(label)
    nlp.initialize()
    return nlp, pipe, BeamnerEntityRecognizer.from_pipe(pipe)


def _update_errors(example: Example, spacy_pipe: Any, fast: Any) -> list[BaseException]:
    """The errors of spaCy's update_beam and beamner's on ``example``."""
    errors: list[BaseException] = []
    for pipe in (spacy_pipe, fast):
        with pytest.raises(Exception) as info:
            type(pipe).update_beam(pipe, [example], beam_width=4)
        errors.append(info.value)
    return errors


def test_conflicting_negative_annotation_is_spacys_E868() -> None:
    nlp, spacy_pipe, fast = _beam_ner_pair()
    example = Example.from_dict(
        nlp.make_doc("Who is Shaka Khan?"), {"entities": [(7, 17, "PERSON")]}
    )
    example.reference.spans["neg"] = [Span(example.reference, 2, 4, "PERSON")]
    spacy_error, ours = _update_errors(example, spacy_pipe, fast)
    assert type(ours) is type(spacy_error) is ValueError
    assert "[E868]" in str(spacy_error) and str(spacy_error) in str(ours)


def test_gold_label_the_ner_lacks_is_spacys_E022() -> None:
    nlp, spacy_pipe, fast = _beam_ner_pair(None)
    example = Example.from_dict(nlp.make_doc("I like Paris"), {"entities": [(7, 12, "GPE")]})
    spacy_error, ours = _update_errors(example, spacy_pipe, fast)
    assert type(ours) is type(spacy_error) is KeyError
    assert "[E022]" in str(ours) and "U-GPE" in str(ours)
    assert str(spacy_error).strip("\"'") in str(ours)


def test_negation_label_is_spacys_E869() -> None:
    nlp, spacy_pipe, fast = _beam_ner_pair(None)
    example = Example.from_dict(nlp.make_doc("I like Paris"), {"entities": [(7, 12, "!LOC")]})
    spacy_error, ours = _update_errors(example, spacy_pipe, fast)
    assert type(ours) is type(spacy_error) is ValueError
    assert "[E869]" in str(spacy_error) and str(spacy_error) in str(ours)


def test_empty_docs_among_others_read_as_spacys_beams(sm_ner: Any, docs: list[Any]) -> None:
    """Empty docs keep their place (the beams of later docs keep their offsets)."""
    empty = docs[0][0:0].as_doc()
    batch = [docs[0], empty, docs[1], empty.copy(), docs[2]]
    expected = EntityRecognizer.beam_parse(sm_ner, batch, beam_width=WIDTH, beam_density=DENSITY)
    result = _fast(sm_ner).predict(batch)
    assert isinstance(result, NativeBeams) and len(result) == len(batch)
    spacy_scored = EntityRecognizer.scored_ents(sm_ner, expected)
    for ours, theirs in zip(_fast(sm_ner).scored_ents(result), spacy_scored):
        assert ours == pytest.approx(theirs, abs=1e-12)
