"""Beam training steps, words per second: spaCy's ``beam_ner`` against
``beamner_ner`` (issue 4), with greedy ``ner`` for reference.

Each engine gets a blank English pipeline with its component built from the
same settings (width 16, density 0.01, ``beam_update_prob=1.0`` so that every
update is a beam update, spaCy's default model) and the same seed, so both
start from identical weights; each round trains on the same WNUT-17 train
batches of 32 sentences.
"""

from __future__ import annotations

from typing import Any

import numpy
import pytest
import spacy
from conftest import DATA
from spacy.training import Example
from thinc.api import fix_random_seed

from beamner.io.conll import conll_to_docs, read_conll

BATCH = 32
BATCHES_PER_ROUND = 12
ROUNDS = 3
BEAM = {"beam_width": 16, "beam_density": 0.01, "beam_update_prob": 1.0}
FACTORIES = {"spacy": "beam_ner", "beamner": "beamner_ner", "greedy": "ner"}


def _pipeline(factory: str) -> tuple[Any, Any, list[list[Example]]]:
    fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe(factory, name="ner", config={} if factory == "ner" else BEAM)
    sentences = read_conll(DATA / "wnut17" / "wnut17train.conll")
    predicted = conll_to_docs(nlp, sentences, with_ents=False)
    reference = conll_to_docs(nlp, sentences, with_ents=True)
    examples = [Example(p, r) for p, r in zip(predicted, reference)]
    optimizer = nlp.initialize(lambda: examples)
    batches = [examples[i : i + BATCH] for i in range(0, len(examples), BATCH)]
    nlp.update(batches[-1], sgd=optimizer)  # warm-up, not timed
    return nlp, optimizer, batches[:BATCHES_PER_ROUND]


@pytest.mark.parametrize("engine", ["spacy", "beamner", "greedy"])
def test_beam_training(timed, engine: str) -> None:  # type: ignore[no-untyped-def]
    nlp, optimizer, round_batches = _pipeline(FACTORIES[engine])
    words = sum(len(eg.predicted) for batch in round_batches for eg in batch)

    def train_round() -> None:
        for batch in round_batches:
            nlp.update(batch, sgd=optimizer, losses={})

    case = (
        "greedy ner training"
        if engine == "greedy"
        else f"beam training w{BEAM['beam_width']} d{BEAM['beam_density']:g}"
    )
    timed(
        "spacy" if engine == "greedy" else engine,
        case,
        train_round,
        ROUNDS,
        words=words,
        note=f"{FACTORIES[engine]}: {BATCHES_PER_ROUND} batches of {BATCH} WNUT-17 train "
        "sentences a round, nlp.update with Adam",
    )


def test_training_floor(timed) -> None:  # type: ignore[no-untyped-def]
    """What every engine's beam update pays whatever its search costs: the
    tok2vec and lower-layer forward and backward passes and the optimizer step,
    on the same batches (the backward gets zero gradients). spaCy's beam time
    over this is the most any engine could gain."""
    nlp, optimizer, round_batches = _pipeline("beamner_ner")
    ner = nlp.get_pipe("ner")
    tok2vec, lower = ner.model.layers[0], ner.model.layers[1]
    words = sum(len(eg.predicted) for batch in round_batches for eg in batch)

    def floor_round() -> None:
        for batch in round_batches:
            tokvecs, bp_tokvecs = tok2vec([eg.predicted for eg in batch], is_train=True)
            features, bp_lower = lower(tokvecs, is_train=True)
            ids = numpy.zeros((1, features.shape[1]), dtype="i")
            bp_lower((numpy.zeros((1, *features.shape[2:]), dtype="f"), ids))
            bp_tokvecs(numpy.zeros_like(tokvecs))
            ner.finish_update(optimizer)

    timed(
        "spacy",
        "beam training floor (tok2vec + lower + Adam)",
        floor_round,
        ROUNDS,
        words=words,
        note="the shared part of a beam update: spaCy's tok2vec and lower layer forward "
        "and backward and the Adam step, no search",
    )
