"""Answers (Prodigy-style accept/reject JSONL, :mod:`beamner.teach.answers`)
as labelled, weighted candidates scored by a model: what ``calibrate
--format answers`` and ``threshold`` fit and test on.

Each span of an accept or reject answer is one labelled candidate: right
when accepted, wrong when rejected; its probability is the model's beam
probability of that span and label under the settings given (0 when no
parse of the beam holds it); its weight is 1 / ``meta.inclusion_probability``
(:mod:`beamner.teach.sampling`), or 1 when the answer carries none (counted
in ``n_unweighted``: such answers are taken as a uniform sample of the
stream). The last answer about a span wins (an undo or a changed mind).
Spans with a label the model does not have, and spans touching entities
preset before the NER (p is 1 or 0 by construction there), are left out
and counted. ``ignore`` answers are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from beamner.engine.pipes import find_ner, upstream_disabled
from beamner.engine.settings import BeamSettings
from beamner.io.records import InputError, read_json_objects
from beamner.probabilities.answered import LabelledCandidates
from beamner.probabilities.beams import beam_docs
from beamner.teach.answers import Answer, SpanAnswers, doc_span, keep_last, parse_answer
from beamner.teach.sampling import answer_weight
from beamner.teach.tasks import preset_tokens

__all__ = ["AnswerCounts", "read_weighted_answers", "score_answers"]


def read_weighted_answers(path: str | os.PathLike[str]) -> Iterator[tuple[Answer, float | None]]:
    """Each valid answer of a JSONL file with its weight (None: no inclusion
    probability recorded). A bad line raises
    :class:`~beamner.io.records.InputError` as ``path:line: what is wrong``
    (as :func:`~beamner.teach.answers.read_answers`), a bad
    ``meta.inclusion_probability`` too."""
    for lineno, obj in read_json_objects(path):
        try:
            answer = parse_answer(obj, lineno, str(path))
            weight = answer_weight(obj.get("meta"))
        except (InputError, ValueError) as err:
            raise InputError(f"{path}:{lineno}: {err}") from None
        yield answer, weight


@dataclass
class AnswerCounts:
    """What :func:`score_answers` read and used. Unlike
    :class:`~beamner.teach.answers.MergeReport`'s counts of the same names,
    ``n_accept`` and ``n_reject`` count spans, not answers."""

    #: Answers read, and the ``ignore`` ones among them.
    n_lines: int = 0
    n_ignore: int = 0
    #: Spans of the accept and reject answers, overridden ones included.
    n_spans: int = 0
    #: Spans scored (the last answer about each): accepted, rejected.
    n_accept: int = 0
    n_reject: int = 0
    #: Span answers a later answer about the same span replaced.
    n_overridden: int = 0
    #: Spans scored whose answer has no ``meta.inclusion_probability`` (weight 1).
    n_unweighted: int = 0
    #: Spans left out: a label the model does not have; touching a preset entity.
    n_unknown_label: int = 0
    n_preset: int = 0
    #: Spans scored that no parse of the beam holds (p = 0).
    n_not_in_beam: int = 0
    #: Texts (with their answers' tokens, if any) with a span answered.
    texts: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def score_answers(
    nlp: Language,
    path: str | os.PathLike[str],
    settings: BeamSettings,
    *,
    batch_size: int = 128,
) -> tuple[LabelledCandidates, AnswerCounts]:
    """The answers of ``path`` as :class:`LabelledCandidates` scored by the
    beam of ``nlp``'s NER under ``settings`` (uncalibrated: the caller maps
    them), and what was counted. InputError (``path:line``) for a bad line or
    a span off the model's token boundaries; ValueError when no answer is left."""
    pipe = find_ner(nlp)
    known = set(pipe.labels)
    counts = AnswerCounts()
    # Last answer per (text, span) wins; texts in order of first answer.
    by_text: dict[tuple[str, Any], SpanAnswers[float | None]] = {}
    for answer, weight in read_weighted_answers(path):
        counts.n_lines += 1
        if answer.answer == "ignore":
            counts.n_ignore += 1
            continue
        key = (answer.text, None if answer.words is None else tuple(answer.words))
        counts.n_spans += len(answer.spans)
        counts.n_overridden += keep_last(by_text.setdefault(key, {}), answer, weight)
    items = [(k, v) for k, v in by_text.items() if v]
    counts.texts = len(items)
    inputs = [
        text
        if words is None
        else Doc(nlp.vocab, words=list(words), spaces=next(iter(spans.values()))[0].spaces)
        for (text, words), spans in items
    ]
    docs = list(nlp.pipe(inputs, disable=upstream_disabled(nlp), batch_size=batch_size))
    out = LabelledCandidates()
    for start in range(0, len(docs), batch_size):
        chunk = docs[start : start + batch_size]
        nonempty = [d for d in chunk if len(d)]
        beams = iter(beam_docs(pipe, nonempty, settings, calibrate=False)) if nonempty else None
        for text_index, ((_, spans), doc) in enumerate(
            zip(items[start : start + batch_size], chunk), start=start
        ):
            beam = next(beams) if len(doc) and beams is not None else None
            scores = numpy.asarray(beam.scores if beam else [], dtype=numpy.float64)
            parse_sets = [set(p) for p in beam.parses] if beam else []
            preset = preset_tokens(doc)
            for answer, span, weight in spans.values():
                if span.label not in known:
                    counts.n_unknown_label += 1
                    continue
                s = doc_span(doc, span, answer.where)
                if preset and any(i in preset for i in range(s.start, s.end)):
                    counts.n_preset += 1
                    continue
                ent = (s.start, s.end, span.label)
                member = numpy.asarray([ent in p for p in parse_sets], dtype=numpy.bool_)
                counts.n_not_in_beam += not member.any()
                accepted = answer.answer == "accept"
                counts.n_accept += accepted
                counts.n_reject += not accepted
                counts.n_unweighted += weight is None
                weight_ = 1.0 if weight is None else weight
                out.add(scores, member, accepted, weight_, span.label, text_index)
    if not len(out):
        raise ValueError(
            f"{path}: no accept/reject answer about a span with one of the model's labels "
            f"({counts.n_lines} answers read, {counts.n_ignore} ignore, "
            f"{counts.n_unknown_label} spans with other labels, {counts.n_preset} on preset "
            "entities)"
        )
    if counts.n_unweighted:
        counts.notes.append(
            f"{counts.n_unweighted} of {len(out)} answered spans carry no "
            "meta.inclusion_probability: counted as a uniform sample of the stream (weight 1)"
        )
    return out, counts
