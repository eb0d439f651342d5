"""Small NER pipelines trained inside the tests on real WNUT-17 data.

Each pipeline is blank English + sentencizer + entity_ruler (preset entities
from real gold entity strings) + an NER trained here, greedy (``ner``) or
globally (``beam_ner``), in several model variants of spaCy 3.8's
``TransitionBasedParser`` (upper layer or not, maxout or ReLU, an own tok2vec
or a listener of a shared ``tok2vec`` component, legacy v1)."""

from __future__ import annotations

import functools
import random
import tempfile
from collections import Counter
from typing import Any

import spacy
from conftest import DATA
from spacy.language import Language
from spacy.training import Example
from spacy.util import fix_random_seed, minibatch

from beamner.io.conll import conll_to_docs, read_conll

TOK2VEC = {
    "@architectures": "spacy.HashEmbedCNN.v2",
    "pretrained_vectors": None,
    "width": 48,
    "depth": 2,
    "embed_size": 1000,
    "window_size": 1,
    "maxout_pieces": 3,
    "subword_features": True,
}

#: name -> (factory, model overrides, shared tok2vec)
VARIANTS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "greedy": ("ner", {"use_upper": True, "maxout_pieces": 2}, False),
    "beam": ("beam_ner", {"use_upper": False, "maxout_pieces": 2}, False),
    "relu": ("ner", {"use_upper": True, "maxout_pieces": 1}, False),
    "relu-noupper": ("ner", {"use_upper": False, "maxout_pieces": 1}, False),
    "listener": ("ner", {"use_upper": True, "maxout_pieces": 2}, True),
    # An extra label never seen in training: its class is masked (unseen_classes).
    "unseen": ("ner", {"use_upper": True, "maxout_pieces": 2}, False),
    "legacy-v1": (
        "ner",
        {"@architectures": "spacy-legacy.TransitionBasedParser.v1"},
        False,
    ),
}


def _model_config(overrides: dict[str, Any], listener: bool) -> dict[str, Any]:
    config: dict[str, Any] = {
        "@architectures": "spacy.TransitionBasedParser.v2",
        "state_type": "ner",
        "extra_state_tokens": False,
        "hidden_width": 32,
        "maxout_pieces": 2,
        "use_upper": True,
        "tok2vec": (
            {"@architectures": "spacy.Tok2VecListener.v1", "width": TOK2VEC["width"]}
            if listener
            else dict(TOK2VEC)
        ),
    }
    config.update(overrides)
    return config


def ruler_patterns(n: int = 40) -> list[dict[str, str]]:
    """The most frequent gold entity strings of the first 300 WNUT-17 dev
    sentences (the evaluation text), as entity_ruler patterns."""
    counts: Counter[tuple[str, str]] = Counter()
    for sent in read_conll(DATA / "wnut17" / "emerging.dev.conll")[:300]:
        words: list[str] = []
        label = ""
        for token, tag in [*sent, ("", "O")]:
            if tag.startswith("I-") and words:
                words.append(token)
                continue
            if words:
                counts[(" ".join(words), label)] += 1
            words, label = ([token], tag[2:]) if tag.startswith("B-") else ([], "")
    return [{"label": label, "pattern": text} for (text, label), _ in counts.most_common(n)]


def train_pipeline(
    variant: str, *, n_sentences: int = 400, n_iter: int = 3, seed: int = 0
) -> Language:
    factory, overrides, listener = VARIANTS[variant]
    fix_random_seed(seed)
    nlp = spacy.blank("en")
    if listener:
        nlp.add_pipe("tok2vec", config={"model": dict(TOK2VEC)})
    config: dict[str, Any] = {"model": _model_config(overrides, listener)}
    if factory == "beam_ner":
        config.update(beam_width=8, beam_density=0.0001, beam_update_prob=1.0)
    ner = nlp.add_pipe(factory, name="ner", config=config)
    sentences = read_conll(DATA / "wnut17" / "wnut17train.conll")[:n_sentences]
    gold = conll_to_docs(nlp, sentences, with_ents=True)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in gold]
    optimizer = nlp.initialize(lambda: examples)
    rng = random.Random(seed)
    for _ in range(n_iter):
        rng.shuffle(examples)
        for batch in minibatch(examples, size=16):
            nlp.update(batch, sgd=optimizer, drop=0.1)
    if variant == "unseen":
        # A label added after training resizes the output: its classes are unseen.
        ner.add_label("tv-show")  # type: ignore[attr-defined]
    nlp.add_pipe("sentencizer", first=True)
    ruler = nlp.add_pipe("entity_ruler", before="ner")
    ruler.add_patterns(ruler_patterns())  # type: ignore[attr-defined]
    return nlp


@functools.cache
def trained_pipeline(
    variant: str, *, n_sentences: int = 400, n_iter: int = 3, seed: int = 0
) -> Language:
    """``train_pipeline``, trained once per process and shared by every test
    module that asks for the same variant and settings: do not modify it (take
    ``pipeline_copy`` of it for that)."""
    return train_pipeline(variant, n_sentences=n_sentences, n_iter=n_iter, seed=seed)


def pipeline_copy(nlp: Language) -> Language:
    """An independent pipeline with ``nlp``'s config and weights, bit for bit:
    a trained pipeline to modify without training it again. Saved and loaded
    from disk, as users do (``from_bytes`` into a pipeline made from the config
    leaves spaCy 3.8's entity_ruler without working patterns)."""
    with tempfile.TemporaryDirectory() as tmp:
        nlp.to_disk(tmp)
        return spacy.load(tmp)


def eval_texts(n_docs: int = 60) -> list[str]:
    """WNUT-17 dev, three sentences a document, with extra whitespace tokens."""
    sentences = read_conll(DATA / "wnut17" / "emerging.dev.conll")
    texts = []
    for i in range(n_docs):
        group = sentences[3 * i : 3 * i + 3]
        joiner = ["  \n", ". ", "\n\n"][i % 3]
        texts.append(joiner.join(" ".join(tok for tok, _ in sent) for sent in group))
    return texts
