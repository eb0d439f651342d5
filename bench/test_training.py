"""Beam training steps: spaCy's ``beam_ner`` update, words per second.

beamner has no native training yet, so this is spaCy's baseline only: a blank
English pipeline with ``beam_ner`` (its factory defaults, width 32, density
0.01) and ``beam_update_prob=1.0`` so that every update is a beam update,
trained on WNUT-17 train in batches of 32 sentences.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import spacy
from conftest import DATA
from spacy.training import Example

from beamner.data import conll_to_docs, read_conll

BATCH = 32
BATCHES_PER_ROUND = 12


@pytest.fixture(scope="module")
def training() -> Any:
    nlp = spacy.blank("en")
    nlp.add_pipe("beam_ner", config={"beam_update_prob": 1.0})
    sentences = read_conll(DATA / "wnut17" / "wnut17train.conll")
    predicted = conll_to_docs(nlp, sentences, with_ents=False)
    reference = conll_to_docs(nlp, sentences, with_ents=True)
    examples = [Example(p, r) for p, r in zip(predicted, reference)]
    optimizer = nlp.initialize(lambda: examples)
    batches = [examples[i : i + BATCH] for i in range(0, len(examples), BATCH)]
    nlp.update(batches[-1], sgd=optimizer)  # warm-up, not timed
    return nlp, optimizer, iter(batches[:-1])


def test_beam_training_spacy(timed, training) -> None:  # type: ignore[no-untyped-def]
    nlp, optimizer, batches = training
    cfg = nlp.get_pipe("beam_ner").cfg
    round_batches = list(itertools.islice(batches, BATCHES_PER_ROUND))  # the same each round
    words = sum(len(eg.predicted) for batch in round_batches for eg in batch)

    def step() -> None:
        for batch in round_batches:
            nlp.update(batch, sgd=optimizer, losses={})

    timed(
        "spacy",
        f"beam_ner training w{cfg['beam_width']} d{cfg['beam_density']:g}",
        step,
        2,
        words=words,
        note="spaCy only: beamner's native training does not exist yet "
        f"({BATCHES_PER_ROUND} batches of {BATCH} WNUT-17 train sentences a round, "
        "beam_update_prob 1.0)",
    )
