"""Translate spaCy objects into the native engine's inputs.

Everything here runs once per batch (never per state): docs become a
:class:`~beamner._core.DocBatch` of per-token arrays, a spaCy ``ner.moves``
becomes a :class:`~beamner._core.TransitionSystem` with the same class order,
and a training :class:`~spacy.training.Example` becomes a :class:`~beamner._core.Gold`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy
from numpy.typing import NDArray
from spacy.attrs import ENT_IOB, ENT_TYPE, IS_SPACE, LENGTH, ORTH, SENT_START
from spacy.errors import Errors
from spacy.strings import get_string_id
from spacy.tokens import Doc
from spacy.training import Example

from beamner._core import DocBatch, Gold, TransitionSystem

#: Move ids, as spaCy's ``ner.pyx`` numbers them.
MISSING, BEGIN, IN, LAST, UNIT, OUT = range(6)
_MOVE_IDS = {"M": MISSING, "B": BEGIN, "I": IN, "L": LAST, "U": UNIT, "O": OUT}

_TOKEN_ATTRS = [ENT_IOB, ENT_TYPE, SENT_START, IS_SPACE]


def split_move_name(name: str) -> tuple[int, int]:
    """``"B-ORG"`` -> (BEGIN, hash of "ORG"); ``"O"`` -> (OUT, 0); ``"U-"`` -> (UNIT, 0).

    Labels may contain ``-`` (``"B-creative-work"``): only the first one splits.
    """
    move_str, _, label = name.partition("-")
    if move_str not in _MOVE_IDS:
        raise ValueError(f"not a BILUO move name: {name!r}")
    return _MOVE_IDS[move_str], int(get_string_id(label)) if label else 0


def transition_system(moves: Any) -> TransitionSystem:
    """The native table for a spaCy ``BiluoPushDown`` (``nlp.get_pipe("ner").moves``),
    in the same class order, so score columns line up with spaCy's model output."""
    if not hasattr(moves, "get_class_name") or not hasattr(moves, "n_moves"):
        raise TypeError(f"expected a spaCy BiluoPushDown (ner.moves), got {type(moves).__name__}")
    n = int(moves.n_moves)
    if n == 0:
        raise ValueError("the NER has no actions: add labels and initialize it first")
    move_ids = numpy.empty(n, dtype=numpy.uint8)
    labels = numpy.empty(n, dtype=numpy.uint64)
    for i in range(n):
        move_ids[i], labels[i] = split_move_name(moves.get_class_name(i))
    return TransitionSystem(move_ids, labels)


def doc_batch(docs: Sequence[Doc], offsets: Sequence[int] | None = None) -> DocBatch:
    """Per-token preset entities, sentence starts and whitespace flags of ``docs``,
    concatenated in order. Context token ids are shifted by spaCy's batch
    offsets: the running token count, or ``offsets`` when the docs are part of
    a larger batch the model ran on."""
    lengths = numpy.fromiter((len(doc) for doc in docs), dtype=numpy.int32, count=len(docs))
    arrays = [doc.to_array(_TOKEN_ATTRS) for doc in docs if len(doc)]
    if arrays:
        table = numpy.concatenate(arrays).reshape(-1, len(_TOKEN_ATTRS))
    else:
        table = numpy.zeros((0, len(_TOKEN_ATTRS)), dtype=numpy.uint64)
    # to_array returns uint64; sent_start is -1/0/1, so reinterpret as signed.
    signed = table.view(numpy.int64)
    return DocBatch(
        ent_iob=signed[:, 0],
        ent_type=table[:, 1],
        sent_start=signed[:, 2],
        is_space=signed[:, 3],
        lengths=lengths,
        offsets=None if offsets is None else numpy.asarray(offsets, dtype=numpy.int32),
    )


#: For each label hash, the move ids an NER has for it (see :func:`known_moves`).
KnownMoves = dict[int, frozenset[int]]


def known_moves(moves: Any) -> KnownMoves:
    """The (move, label) pairs of a spaCy ``ner.moves``, for checking gold tags
    as spaCy's ``lookup_transition`` does (:func:`gold`)."""
    table: dict[int, set[int]] = {}
    for i in range(int(moves.n_moves)):
        move, label = split_move_name(moves.get_class_name(i))
        table.setdefault(label, set()).add(move)
    return {label: frozenset(ids) for label, ids in table.items()}


def gold(example: Example, neg_key: str | None = None, known: KnownMoves | None = None) -> Gold:
    """The oracle's view of an Example, as spaCy's ``create_gold_state`` builds it:
    one action per predicted token (aligned gold BILUO tags, missing where
    unannotated) and the negative spans under ``neg_key``.

    Raises as spaCy does: with ``known`` (:func:`known_moves`), a tag the NER
    has no move for is spaCy's ``KeyError`` E022 (``ValueError`` E869 for a
    ``!`` label); a negative span equal to a gold entity is spaCy's
    ``ValueError`` E868."""
    tags: list[str | None] | None = None
    aligned = _same_tokens_tags(example)
    if aligned is not None:
        move_ids, labels = aligned
    else:
        _, aligned_tags = example.get_aligned_ents_and_ner()
        tags = list(aligned_tags)
        move_ids = numpy.empty(len(tags), dtype=numpy.uint8)
        labels = numpy.zeros(len(tags), dtype=numpy.uint64)
        for i, tag in enumerate(tags):
            if tag is None or tag in ("", "-"):
                move_ids[i] = MISSING
            else:
                move_ids[i], labels[i] = split_move_name(tag)
    if known is not None:
        _check_known_moves(example, move_ids, labels, tags, known)
    negatives = numpy.zeros((0, 2), dtype=numpy.int32)
    negative_labels = numpy.zeros(0, dtype=numpy.uint64)
    if neg_key is not None:
        negs = example.get_aligned_spans_y2x(example.y.spans.get(neg_key, []), allow_overlap=True)
        neg_triples = {(s.start_char, s.end_char, s.label) for s in negs}
        for ent in example.get_aligned_ents_and_ner()[0]:
            if (ent.start_char, ent.end_char, ent.label) in neg_triples:
                span = (ent.start_char, ent.end_char, ent.label_)
                raise ValueError(
                    f"{Errors.E868.format(span=span)} (span {ent.text!r} is both a gold "
                    f"entity and a negative example under {neg_key!r})"
                )
        negatives = numpy.array([[s.start, s.end] for s in negs], dtype=numpy.int32).reshape(-1, 2)
        negative_labels = numpy.array([s.label for s in negs], dtype=numpy.uint64)
    return Gold(move_ids, labels, negatives, negative_labels)


def _same_tokens_tags(
    example: Example,
) -> tuple[NDArray[numpy.uint8], NDArray[numpy.uint64]] | None:
    """``get_aligned_ents_and_ner``'s tags as arrays, when the predicted and
    reference docs have the same words (the usual training case), without
    building a Python string per token; None otherwise (then spaCy's own
    alignment decides). With the same words, spaCy's alignment is the
    identity, every reference entity maps to itself, and a token outside the
    entities is O where the reference says O or the token is whitespace,
    missing elsewhere."""
    x, y = example.x, example.y
    if len(x) != len(y) or not y.has_annotation("ENT_IOB"):
        return None
    x_arr = x.to_array([ORTH, LENGTH, IS_SPACE])
    y_arr = y.to_array([ORTH, ENT_IOB])
    # Zero-length tokens and unlabelled entities take other branches in spaCy.
    if not numpy.array_equal(x_arr[:, 0], y_arr[:, 0]) or not x_arr[:, 1].all():
        return None
    ents = [(e.start, e.end, e.label) for e in y.ents]
    if any(label == 0 for _, _, label in ents):
        return None
    n = len(x)
    move_ids = numpy.full(n, MISSING, dtype=numpy.uint8)
    move_ids[(y_arr[:, 1] == 2) | (x_arr[:, 2] != 0)] = OUT
    labels = numpy.zeros(n, dtype=numpy.uint64)
    for start, end, label in ents:
        labels[start:end] = label
        if end - start == 1:
            move_ids[start] = UNIT
        else:
            move_ids[start] = BEGIN
            move_ids[start + 1 : end - 1] = IN
            move_ids[end - 1] = LAST
    return move_ids, labels


def _check_known_moves(
    example: Example,
    move_ids: NDArray[numpy.uint8],
    labels: NDArray[numpy.uint64],
    tags: list[str | None] | None,
    known: KnownMoves,
) -> None:
    """spaCy's ``lookup_transition`` errors for the first gold tag the NER has no
    move for (arrays per distinct label, not per token)."""
    unknown = numpy.zeros(len(move_ids), dtype=bool)
    for label in numpy.unique(labels).tolist():
        allowed = numpy.array(sorted(known.get(int(label), frozenset()) | {MISSING}))
        rows = labels == label
        unknown[rows] = ~numpy.isin(move_ids[rows], allowed)
    if not unknown.any():
        return
    i = int(numpy.argmax(unknown))
    label = int(labels[i])
    strings = example.x.vocab.strings
    try:
        label_str = strings[label]
    except KeyError:
        label_str = str(label)
    move_names = {v: k for k, v in _MOVE_IDS.items()}
    tag = tags[i] if tags is not None else None
    if tag is None:
        tag = move_names[int(move_ids[i])] + (f"-{label_str}" if label else "")
    where = f"(gold tag of token {i}, {example.x[i].text!r}; the NER's labels decide its moves)"
    if label_str.startswith("!"):
        raise ValueError(f"{Errors.E869.format(label=tag)} {where}")
    raise KeyError(f"{Errors.E022.format(name=tag)} {where}")


def golds(examples: Iterable[Example], neg_key: str | None = None, moves: Any = None) -> list[Gold]:
    """:func:`gold` for each example; with ``moves`` (``ner.moves``), gold tags
    are checked against its moves as spaCy does."""
    known = None if moves is None else known_moves(moves)
    return [gold(eg, neg_key, known) for eg in examples]
