"""beamner against spaCy's own beam search on the real en_core_web_sm 3.8.0 pipeline.

Both paths of beamner are checked: the fused native search (lower layer
precomputed once, steps scored natively through thinc's blis sgemm) and the
step API (each step scored by spaCy's own ParserStepModel). Both see the same
floats as spaCy, so histories and scores must be identical, not merely close.
"""

from __future__ import annotations

from typing import Any

import pytest

import beamner

WIDTHS = [1, 4, 16, 64]
DENSITIES = [0.0, 0.0001, 0.01]


def _spacy_beams(ner, docs, width, density):  # type: ignore[no-untyped-def]
    return ner.beam_parse(docs, beam_width=width, beam_density=density)


@pytest.fixture(scope="module")
def spacy_k_best(nlp_sm, real_docs):  # type: ignore[no-untyped-def]
    """spaCy's beams per (width, density), read out once (histories, scores,
    probabilities, get_beam_parses) and compared with both of beamner's paths:
    spaCy's own beam search is the slow side of every comparison."""
    ner = nlp_sm.get_pipe("ner")
    cache: dict[tuple[int, float], list[Any]] = {}

    def get(width: int, density: float):  # type: ignore[no-untyped-def]
        if (width, density) not in cache:
            beams = _spacy_beams(ner, real_docs, width, density)
            cache[width, density] = [
                (
                    [list(h) for h in beam.histories[: len(beam)]],
                    list(beam.scores),
                    list(beam.probs),
                    ner.moves.get_beam_parses(beam),
                )
                for beam in beams
            ]
        return cache[width, density]

    return get


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step"])
@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("width", WIDTHS)
def test_same_k_best_as_spacy(nlp_sm, real_docs, spacy_k_best, width, density, fused):  # type: ignore[no-untyped-def]
    ner = nlp_sm.get_pipe("ner")
    spacy_beams = spacy_k_best(width, density)
    batch = beamner.beam_search(ner, real_docs, width, density, fused=fused)
    assert batch.n_docs == len(real_docs) == len(spacy_beams)
    strings = nlp_sm.vocab.strings
    for i, (histories, scores, probs, expected) in enumerate(spacy_beams):
        parses = batch.parses(i)
        assert histories == [p.history.tolist() for p in parses], f"doc {i}"
        assert scores == [p.score for p in parses], f"doc {i}"
        for prob, parse in zip(probs, parses):
            assert parse.probability == pytest.approx(prob, abs=1e-12, rel=0)
        got = [
            (p.probability, [(s, e, strings[label]) for s, e, label in p.entities]) for p in parses
        ]
        assert [ents for _, ents in expected] == [ents for _, ents in got], f"doc {i}"


def test_width_one_matches_greedy_ner(nlp_sm, real_texts):  # type: ignore[no-untyped-def]
    """Width 1 follows the argmax like greedy parsing (ties aside, which the
    beam breaks towards the higher class and greedy towards the lower)."""
    greedy = list(nlp_sm.pipe(real_texts))
    docs = list(nlp_sm.pipe(real_texts, disable=["ner"]))
    batch = beamner.beam_search(nlp_sm.get_pipe("ner"), docs, 1, 0.0)
    strings = nlp_sm.vocab.strings
    for i, doc in enumerate(greedy):
        expected = [(e.start, e.end, e.label_) for e in doc.ents]
        (parse,) = batch.parses(i)
        assert [(s, e, strings[label]) for s, e, label in parse.entities] == expected, f"doc {i}"


def test_entity_scores_sum_parse_probabilities(nlp_sm, real_docs):  # type: ignore[no-untyped-def]
    """entity_scores equals the user snippet's sum over get_beam_parses."""
    ner = nlp_sm.get_pipe("ner")
    docs = real_docs[:30]
    beams = ner.beam_parse(docs, beam_width=16, beam_density=0.0001)
    ours = beamner.entity_scores(ner, docs, beam_width=16, beam_density=0.0001)
    for beam, scores in zip(beams, ours):
        expected: dict[tuple[int, int, str], float] = {}
        for score, ents in ner.moves.get_beam_parses(beam):
            for start, end, label in ents:
                expected[(start, end, label)] = expected.get((start, end, label), 0.0) + score
        assert scores.keys() == expected.keys()
        for key, value in expected.items():
            assert scores[key] == pytest.approx(value, abs=1e-12, rel=0)


@pytest.fixture(scope="module")
def long_doc(nlp_sm, real_texts):  # type: ignore[no-untyped-def]
    """The real texts run together as one document, parsed once (5,120 words:
    at least as many tokens)."""
    text = " ".join(real_texts)
    return nlp_sm(" ".join(text.split()[: 5 * 2**14 // 16]), disable=["ner"])


@pytest.mark.parametrize("width", [16, 64])
def test_long_document_with_compacted_history_matches_spacy(nlp_sm, long_doc, width):  # type: ignore[no-untyped-def]
    """A long document whose beam history (len(doc) * width candidate nodes)
    passes the compaction threshold (16k nodes) at least four times, and the
    k-best still equal spaCy's. The length is 5 * 2**14 / width tokens (5,120
    at width 16, the first 1,280 of them at width 64): the same number of
    nodes, so the same number of compactions, at either width."""
    n_tokens = 5 * 2**14 // width
    doc = long_doc[:n_tokens].as_doc()
    assert len(doc) == n_tokens
    assert len(doc) * width > 4 * 2**14
    ner = nlp_sm.get_pipe("ner")
    (beam,) = _spacy_beams(ner, [doc], width, 0.0001)
    batch = beamner.beam_search(ner, [doc], width, 0.0001)
    assert batch.history_nodes(0) < len(doc) * width // 4  # compacted
    parses = batch.parses(0)
    assert [list(h) for h in beam.histories[: len(beam)]] == [p.history.tolist() for p in parses]
    assert list(beam.scores) == [p.score for p in parses]


def test_fused_upper_gemm_kernel_gives_blis_bits(nlp_sm, real_docs):  # type: ignore[no-untyped-def]
    """The fused search may compute the upper layer with beamner's own kernel,
    which it picks only where a probe shows blis' bits on this CPU (blis runs
    an FMA kernel on CPUs it recognises); the beams equal those scored through
    spaCy's step model (blis itself) bit for bit either way."""
    from beamner._core import upper_gemm_kernel
    from beamner.engine.model import precompute

    ner = nlp_sm.get_pipe("ner")
    upper_W = precompute(ner, real_docs[:2]).upper_W
    assert upper_W is not None
    kernel = upper_gemm_kernel(upper_W)
    assert kernel == "blis" or kernel.startswith("sequential-")
    assert upper_gemm_kernel(upper_W, use_blis=False) == "cblas"

    fused = beamner.beam_search(ner, real_docs, 16, 0.0001, fused=True)
    step = beamner.beam_search(ner, real_docs, 16, 0.0001, fused=False)
    for i in range(len(real_docs)):
        fused_scores, fused_probs, fused_histories = fused.beam_arrays(i)
        step_scores, step_probs, step_histories = step.beam_arrays(i)
        assert fused_scores.tobytes() == step_scores.tobytes(), f"doc {i}"
        assert fused_probs.tobytes() == step_probs.tobytes(), f"doc {i}"
        assert fused_histories.tolist() == step_histories.tolist(), f"doc {i}"
