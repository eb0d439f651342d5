"""Reading the CoNLL NER corpora and turning them into spaCy ``Doc`` objects.

The corpora beamner is measured on (WNUT-17, Broad Twitter Corpus) are
two-column files: ``token TAB IOB2-tag`` with a blank line between sentences.

Conventions used here:

* A *sentence* is a ``list[tuple[str, str]]`` of ``(token, tag)`` pairs, tags in
  IOB2 (``"O"``, ``"B-LABEL"``, ``"I-LABEL"``). Labels may themselves contain
  ``-`` (WNUT's ``creative-work``); the prefix is split on the first ``-`` only,
  exactly like ``spacy.training.iob_utils.split_bilu_label``.
* Tokens are kept verbatim, including the odd ones BTC has (``"ke s"``,
  ``"😘 "``, a lone ``" "``, which spaCy will flag as ``is_space``).
* Empty tokens (a line ``"\\tO"``, present in BTC ``f`` and ``h``) cannot be
  spaCy words (``Doc`` raises E031 on ``""``), so :func:`read_conll` drops them
  by default; see its docstring for the exact rule.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training.iob_utils import biluo_tags_to_spans, iob_to_biluo
from spacy.vocab import Vocab

from beamner.io.records import text_lines

__all__ = [
    "Sentence",
    "conll_corpus",
    "conll_to_docs",
    "documents_to_docs",
    "group_into_documents",
    "read_conll",
    "sentence_labels",
]

Sentence = list[tuple[str, str]]


def _check_tag(tag: str, path: str | os.PathLike[str], lineno: int) -> None:
    if tag == "O":
        return
    prefix, sep, label = tag.partition("-")
    if prefix not in ("B", "I") or not sep or not label:
        raise ValueError(f"{path}:{lineno}: not an IOB2 tag: {tag!r}")


def _drop_empty_tokens(sentence: Sentence) -> Sentence:
    """Remove ``""`` tokens, keeping the remaining IOB2 sequence well formed.

    If a dropped token was ``B-X`` and the next kept token is ``I-X``, that
    token becomes ``B-X`` (the entity loses its first token but stays an
    entity). Dropped ``I-X`` tokens simply shorten their entity.
    """
    out: Sentence = []
    pending_begin: str | None = None  # label of a dropped B- tag
    for token, tag in sentence:
        if token == "":
            if tag.startswith("B-"):
                pending_begin = tag[2:]
            continue
        if pending_begin is not None and tag == "I-" + pending_begin:
            tag = "B-" + pending_begin
        pending_begin = None
        out.append((token, tag))
    return out


def read_conll(path: str | os.PathLike[str], *, keep_empty_tokens: bool = False) -> list[Sentence]:
    """Read a two-column ``token TAB tag`` CoNLL file into sentences.

    Sentences are separated by empty lines (any number). A line is split on
    its *last* tab, so the token keeps any spaces it contains; ``\\r`` line
    endings are tolerated. Tags are checked to be IOB2 (``O``/``B-X``/``I-X``),
    otherwise ``ValueError`` is raised with the line number.

    Empty tokens (lines such as ``"\\tO"``):

    * ``keep_empty_tokens=False`` (default): the pair is dropped; if it was a
      ``B-X`` followed by ``I-X`` the follower is promoted to ``B-X``. A sentence
      that consisted only of empty tokens is dropped altogether. Use this for
      anything that builds spaCy ``Doc`` objects.
    * ``keep_empty_tokens=True``: the pair is kept as ``("", tag)``; with this
      setting the counts reproduce the corpus README (which counts those
      lines as tokens). Such sentences cannot be passed to :func:`conll_to_docs`.
    """
    sentences: list[Sentence] = []
    current: Sentence = []
    for lineno, raw in text_lines(path):
        line = raw.rstrip("\n").rstrip("\r")
        if line == "":
            if current:
                sentences.append(current)
            current = []
            continue
        if "\t" not in line:
            raise ValueError(f"{path}:{lineno}: expected 'token<TAB>tag': {line!r}")
        token, tag = line.rsplit("\t", 1)
        _check_tag(tag, path, lineno)
        current.append((token, tag))
    if current:
        sentences.append(current)
    if keep_empty_tokens:
        return sentences
    cleaned = (_drop_empty_tokens(s) for s in sentences)
    return [s for s in cleaned if s]


def sentence_labels(sentences: Sequence[Sentence]) -> list[str]:
    """Sorted entity labels occurring in ``sentences`` (from ``B-``/``I-`` tags)."""
    labels = {tag[2:] for sent in sentences for _, tag in sent if tag != "O"}
    return sorted(labels)


def _vocab_of(nlp_or_vocab: Language | Vocab) -> Vocab:
    if isinstance(nlp_or_vocab, Language):
        return nlp_or_vocab.vocab
    return nlp_or_vocab


def _make_doc(
    vocab: Vocab,
    sentences: Sequence[Sentence],
    *,
    with_ents: bool,
    set_sent_starts: bool,
) -> Doc:
    words: list[str] = []
    tags: list[str] = []
    starts: list[int] = []
    for sent in sentences:
        starts.append(len(words))
        for token, tag in sent:
            if token == "":
                raise ValueError(
                    "empty token: spaCy cannot build a Doc from it; "
                    "read the file with read_conll(..., keep_empty_tokens=False)"
                )
            words.append(token)
            tags.append(tag)
    # spaces=None: spaCy's default (a space after every token), which is what
    # spaCy's own CoNLL converter produces as well.
    doc = Doc(vocab, words=words)
    if set_sent_starts and len(doc) > 0:
        start_set = set(starts)
        for tok in doc:
            tok.is_sent_start = tok.i in start_set
    if with_ents:
        biluo = iob_to_biluo(tags)
        spans: list[Span] = biluo_tags_to_spans(doc, biluo)
        doc.set_ents(spans, default="outside")
    return doc


def conll_to_docs(
    nlp_or_vocab: Language | Vocab,
    sentences: Sequence[Sentence],
    *,
    with_ents: bool,
    set_sent_starts: bool = False,
) -> list[Doc]:
    """Build one spaCy ``Doc`` per sentence.

    Words are the CoNLL tokens, spaces are spaCy's default (``True`` after every
    token). Pass an ``nlp``/``Vocab`` that has lexical attribute getters
    (``spacy.blank("en")``, a loaded pipeline): a bare ``Vocab()`` has none, so
    ``token.is_space`` would be ``False`` even for ``" "``.

    ``with_ents=True``: the IOB2 tags are converted with
    ``spacy.training.iob_utils.iob_to_biluo`` + ``biluo_tags_to_spans`` and set
    with ``doc.set_ents(spans, default="outside")`` (every token annotated,
    ``ent_iob`` 3/1/2). ``with_ents=False``: no entity annotation at all
    (``ent_iob == 0`` everywhere), i.e. what the tokenizer produces and what
    the NER component sees as input.

    ``set_sent_starts=True`` marks token 0 as a sentence start and every other
    token as not one (``is_sent_start`` True/False); otherwise tokens other
    than the first keep ``is_sent_start is None``.
    """
    vocab = _vocab_of(nlp_or_vocab)
    return [
        _make_doc(vocab, [sent], with_ents=with_ents, set_sent_starts=set_sent_starts)
        for sent in sentences
    ]


def documents_to_docs(
    nlp_or_vocab: Language | Vocab,
    documents: Sequence[Sequence[Sentence]],
    *,
    with_ents: bool,
    set_sent_starts: bool = False,
) -> list[Doc]:
    """Build one spaCy ``Doc`` per group of sentences (see :func:`group_into_documents`).

    The sentences of a group are concatenated. With ``set_sent_starts=True`` the
    first token of every original sentence gets ``is_sent_start = True`` and all
    other tokens ``is_sent_start = False`` (a complete segmentation, like the
    parser or senter produce; the NER transition system then refuses to let a
    predicted entity cross those boundaries). With ``False`` the sentence
    structure is not recorded (``is_sent_start is None`` except on token 0).
    Entity handling is as in :func:`conll_to_docs`.
    """
    vocab = _vocab_of(nlp_or_vocab)
    return [
        _make_doc(vocab, group, with_ents=with_ents, set_sent_starts=set_sent_starts)
        for group in documents
    ]


def group_into_documents(
    sentences: Sequence[Sentence], n_sentences_per_doc: int
) -> list[list[Sentence]]:
    """Chunk consecutive sentences into groups of ``n_sentences_per_doc``.

    The last group may be shorter. Order is preserved, so
    ``[s for g in groups for s in g] == list(sentences)``.
    Feed the result to :func:`documents_to_docs`.
    """
    if n_sentences_per_doc < 1:
        raise ValueError("n_sentences_per_doc must be >= 1")
    return [
        list(sentences[i : i + n_sentences_per_doc])
        for i in range(0, len(sentences), n_sentences_per_doc)
    ]


def conll_corpus(path: str | os.PathLike[str], *, sentences_per_doc: int = 1) -> Any:
    """A spaCy corpus reader over a CoNLL NER file: ``(nlp) -> Iterator[Example]``,
    each Example's reference holding the gold entities (every token annotated)."""
    from spacy.training import Example

    def read(nlp: Language) -> Iterator[Example]:
        groups = group_into_documents(read_conll(path), sentences_per_doc)
        for doc in documents_to_docs(nlp, groups, with_ents=True):
            yield Example(nlp.make_doc(doc.text), doc)

    return read
