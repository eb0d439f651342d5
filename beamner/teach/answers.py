"""Binary answers: reading, validating, merging per text, and turning them into Examples.

An answer is a task (see :mod:`beamner.teach.tasks`) with an ``"answer"`` key:
``"accept"``, ``"reject"`` or ``"ignore"``. Answers written by
:class:`~beamner.teach.session.TeachSession`, by the annotation page, by
Prodigy (``prodigy db-out``) or by any other tool are read the same way:

* ``text`` (string) and ``answer`` are required; ``spans`` is a list (may be
  missing or empty for ``ignore``);
* each span has a string ``label`` and either character offsets
  ``start``/``end`` (preferred when present; they must fall on the model's
  token boundaries) or ``token_start``/``token_end`` (``token_end``
  inclusive, Prodigy's convention);
* ``tokens`` (optional, Prodigy's format: ``text`` and ``ws`` per token) fix
  the tokenization the spans refer to; they must spell the text exactly.
  Without them, the model's tokenizer splits the text;
* ``_input_hash``/``_task_hash`` in the file are not trusted: hashes are
  recomputed from the content (:func:`~beamner.teach.tasks.input_hash`).

Meaning (a span is its offsets and its label):

* ``accept``: every span of the answer is a gold entity; every other token of
  the text is *unknown* (missing in the gold, not ``O``);
* ``reject``: every span is a negative example (spaCy's ``incorrect_spans_key``);
* ``ignore``: nothing; ignore answers are dropped before merging.

Merging (:func:`merge_answers`), per text (input hash), in answer order:

1. the *last* answer about a span wins: accept then reject of the same span
   and label is a reject (an annotator changing their mind, or an undo/redo);
   each overridden answer is counted in ``n_overridden``;
2. accepted spans that overlap each other (two different entities over the
   same tokens cannot both be gold) are all dropped and counted in
   ``n_conflicts``; so are accepted spans whose label is not the model's;
3. a rejected span may overlap an accepted one (accept "New York" GPE and
   reject "York" GPE) and the same offsets may be rejected with one label and
   accepted with another.

The result is one :class:`TextAnswers` per text, which
:func:`build_examples` turns into spaCy ``Example`` objects for the native
beam update, on the text as the pipeline's components before the NER left it.
Two more kinds of span are dropped there, counted, never trained on:

4. spans touching a *preset* entity (set before the NER, e.g. by an
   ``entity_ruler``: tokens with ``ent_iob`` B or I, blocked tokens included)
   are counted in ``n_preset``. The NER's moves on those tokens are forced, so
   the preset entity has p = 1 and any other span over its tokens p = 0 by
   construction: none of them is the NER's decision, and a reject of the
   preset entity could not be followed by any parse (the task stream never
   offers such spans; answers from elsewhere may hold them);
5. spans that no parse of the NER can follow at all (spaCy's own oracle finds
   no zero-cost path through the text: e.g. an accepted span crossing a
   sentence boundary set by an earlier component, or starting on a
   whitespace token) are counted in ``n_unreachable``: each such span alone
   first, then, if the text's remaining spans together still cannot be
   followed, all of them. A text with no span left gives no example, so one
   such answer never stops the update of the others.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from spacy.language import Language
from spacy.pipeline._parser_internals.ner import BiluoGold
from spacy.tokens import Doc, Span
from spacy.training import Example

from beamner.engine.pipes import find_ner, upstream_disabled
from beamner.io.records import InputError, read_json_objects
from beamner.teach.tasks import input_hash, preset_tokens, task_hash

__all__ = [
    "ANSWERS",
    "Answer",
    "AnswerSpan",
    "MergeReport",
    "SpanAnswers",
    "TextAnswers",
    "build_examples",
    "doc_span",
    "examples_by_text",
    "keep_last",
    "merge_answers",
    "parse_answer",
    "predicted_docs",
    "preset_tokens",
    "read_answers",
]

ANSWERS = ("accept", "reject", "ignore")


@dataclass(frozen=True)
class AnswerSpan:
    """A span of an answer: character offsets (``None`` when only tokens were
    given), token indices (``token_end`` *exclusive* here) and label."""

    label: str
    start: int | None = None
    end: int | None = None
    token_start: int | None = None
    token_end: int | None = None

    @property
    def key(self) -> tuple[Any, ...]:
        if self.start is not None:
            return ("char", self.start, self.end, self.label)
        return ("token", self.token_start, self.token_end, self.label)


@dataclass
class Answer:
    """One validated answer line: ``line`` is 1-based (0 for answers made in memory)."""

    text: str
    answer: str
    spans: list[AnswerSpan]
    line: int = 0
    source: str = ""
    #: The task's tokenization (from its ``tokens``), or None: the model's tokenizer.
    words: list[str] | None = None
    spaces: list[bool] | None = None

    @property
    def input_hash(self) -> int:
        return input_hash(self.text)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.source else f"answer {self.line}"


@dataclass
class TextAnswers:
    """The merged decisions about one text."""

    text: str
    input_hash: int
    accepted: list[AnswerSpan] = field(default_factory=list)
    rejected: list[AnswerSpan] = field(default_factory=list)
    #: ``where`` of the first answer about this text (for error messages).
    where: str = ""
    #: Tokenization of the first answer about this text that carried ``tokens``.
    words: list[str] | None = None
    spaces: list[bool] | None = None

    @property
    def task_hashes(self) -> list[int]:
        return [_span_hash(self.input_hash, s) for s in [*self.accepted, *self.rejected]]


@dataclass
class MergeReport:
    """What :func:`merge_answers` did with the answers."""

    n_answers: int = 0
    n_accept: int = 0
    n_reject: int = 0
    n_ignore: int = 0
    n_overridden: int = 0
    n_conflicts: int = 0
    n_texts: int = 0
    #: Spans dropped by :func:`build_examples`: touching preset entities, or no parse can follow.
    n_preset: int = 0
    n_unreachable: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _span_hash(ih: int, span: AnswerSpan) -> int:
    if span.start is not None and span.end is not None:
        return task_hash(ih, span.start, span.end, span.label)
    return task_hash(ih, -1 - int(span.token_start or 0), -1 - int(span.token_end or 0), span.label)


def _int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"span {key!r} must be an integer, got {value!r}")
    return value


def _parse_span(obj: Any, text: str, i: int) -> AnswerSpan:
    if not isinstance(obj, dict):
        raise InputError(f"span {i} must be an object, got {type(obj).__name__}")
    label = obj.get("label")
    if not isinstance(label, str) or not label:
        raise InputError(f"span {i} has no 'label' string")
    try:
        start, end = _int(obj, "start"), _int(obj, "end")
        token_start, token_end = _int(obj, "token_start"), _int(obj, "token_end")
    except InputError as err:
        raise InputError(f"span {i}: {err}") from None
    if start is not None or end is not None:
        if start is None or end is None or not 0 <= start < end <= len(text):
            raise InputError(
                f"span {i} has character offsets {start}-{end} outside the text "
                f"(length {len(text)}) or empty"
            )
        return AnswerSpan(label, start, end)
    if token_start is None or token_end is None or not 0 <= token_start <= token_end:
        raise InputError(
            f"span {i} needs 'start'/'end' or 'token_start'/'token_end' (token_end inclusive, "
            f">= token_start >= 0), got token_start={token_start!r} token_end={token_end!r}"
        )
    return AnswerSpan(label, token_start=token_start, token_end=token_end + 1)


def parse_answer(obj: Any, line: int = 0, source: str = "") -> Answer:
    """Validate one answer object; :class:`InputError` says what is wrong (without the line)."""
    if not isinstance(obj, dict):
        raise InputError(f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError('expected a "text" string')
    decision = obj.get("answer")
    if decision not in ANSWERS:
        raise InputError(f'"answer" must be one of {", ".join(ANSWERS)}, got {decision!r}')
    raw_spans = obj.get("spans", [])
    if raw_spans is None:
        raw_spans = []
    if not isinstance(raw_spans, list):
        raise InputError(f'"spans" must be a list, got {type(raw_spans).__name__}')
    spans = (
        [] if decision == "ignore" else [_parse_span(s, text, i) for i, s in enumerate(raw_spans)]
    )
    words, spaces = _parse_tokens(obj.get("tokens"), text)
    return Answer(text, str(decision), spans, line, source, words, spaces)


def _parse_tokens(tokens: Any, text: str) -> tuple[list[str] | None, list[bool] | None]:
    """Words and trailing-space flags of a task's ``tokens`` (Prodigy's format:
    ``text``, ``start``, ``end``, ``id``, ``ws``), checked against the text."""
    if tokens is None:
        return None, None
    if not isinstance(tokens, list) or not all(
        isinstance(t, dict) and isinstance(t.get("text"), str) and t["text"] for t in tokens
    ):
        raise InputError('"tokens" must be a list of objects with a non-empty "text"')
    words = [t["text"] for t in tokens]
    spaces = [bool(t.get("ws", True)) for t in tokens]
    if "".join(w + (" " if sp else "") for w, sp in zip(words, spaces)) != text:
        raise InputError('"tokens" (their "text" and "ws") do not spell the "text"')
    return words, spaces


def read_answers(path: str | os.PathLike[str]) -> Iterator[Answer]:
    """Validated answers of a JSONL file (``"-"``: stdin). Blank lines are skipped;
    any other bad line raises :class:`~beamner.io.records.InputError` as
    ``path:line: what is wrong``."""
    for lineno, obj in read_json_objects(path):
        try:
            yield parse_answer(obj, lineno, str(path))
        except InputError as err:
            raise InputError(f"{path}:{lineno}: {err}") from None


def _overlaps(a: AnswerSpan, b: AnswerSpan) -> bool:
    if a.start is not None and b.start is not None:
        return a.start < (b.end or 0) and b.start < (a.end or 0)
    if a.token_start is not None and b.token_start is not None:
        return a.token_start < (b.token_end or 0) and b.token_start < (a.token_end or 0)
    return False  # mixed offsets: checked on tokens in build_examples


T = TypeVar("T")

#: The last answer about each span of a text: span key -> (answer, span, what
#: came with the answer), in the order of the last answers (:func:`keep_last`).
SpanAnswers = dict[tuple[Any, ...], tuple[Answer, AnswerSpan, T]]


def keep_last(spans: SpanAnswers[T], answer: Answer, extra: T) -> int:
    """Put each span of ``answer`` (with ``extra``) last in ``spans``, replacing an
    earlier answer about it: the last answer about a span wins (an undo or a
    changed mind). Returns how many earlier answers it overrode."""
    n_overridden = 0
    for span in answer.spans:
        if span.key in spans:
            n_overridden += 1
            del spans[span.key]  # re-inserted last: order of the last answer
        spans[span.key] = (answer, span, extra)
    return n_overridden


def merge_answers(
    answers: Iterable[Answer | dict[str, Any]], labels: Iterable[str] | None = None
) -> tuple[list[TextAnswers], MergeReport]:
    """Merge answers per text as the module docstring says; texts in order of first
    answer. ``labels``: the model's labels (accepted spans with another label are
    conflicts; rejected ones are dropped silently: the model cannot predict them)."""
    known = None if labels is None else set(labels)
    report = MergeReport()
    by_text: dict[int, tuple[TextAnswers, SpanAnswers[None]]] = {}
    for item in answers:
        ans = item if isinstance(item, Answer) else parse_answer(item)
        report.n_answers += 1
        if ans.answer == "ignore":
            report.n_ignore += 1
            continue
        report.n_accept += ans.answer == "accept"
        report.n_reject += ans.answer == "reject"
        ih = ans.input_hash
        if ih not in by_text:
            by_text[ih] = (TextAnswers(ans.text, ih, where=ans.where), {})
        text_answers, decisions = by_text[ih]
        if text_answers.words is None and ans.words is not None:
            text_answers.words, text_answers.spaces = ans.words, ans.spaces
        report.n_overridden += keep_last(decisions, ans, None)
    merged = []
    for text_answers, decisions in by_text.values():
        accepted = [s for a, s, _ in decisions.values() if a.answer == "accept"]
        rejected = [s for a, s, _ in decisions.values() if a.answer == "reject"]
        bad = {
            i
            for i, a in enumerate(accepted)
            if (known is not None and a.label not in known)
            or any(_overlaps(a, b) for j, b in enumerate(accepted) if j != i)
        }
        report.n_conflicts += len(bad)
        text_answers.accepted = [a for i, a in enumerate(accepted) if i not in bad]
        text_answers.rejected = [r for r in rejected if known is None or r.label in known]
        if text_answers.accepted or text_answers.rejected:
            merged.append(text_answers)
    report.n_texts = len(merged)
    return merged, report


def doc_span(doc: Doc, span: AnswerSpan, where: str) -> Span:
    """``span`` as a labelled Span of ``doc``; InputError if it is off the token boundaries."""
    if span.start is not None and span.end is not None:
        out = doc.char_span(span.start, span.end, label=span.label)
        if out is None:
            raise InputError(
                f"{where}: span {span.start}-{span.end} ({doc.text[span.start : span.end]!r}) "
                "does not fall on the model's token boundaries"
            )
        return out
    start, end = int(span.token_start or 0), int(span.token_end or 0)
    if end > len(doc):
        raise InputError(
            f"{where}: token span {start}-{end - 1} is outside the text's {len(doc)} tokens"
        )
    return Span(doc, start, end, label=span.label)


def predicted_docs(nlp: Language, merged: Sequence[TextAnswers]) -> list[Doc]:
    """The texts through the pipeline's components before the NER, tokenized as
    their answers' ``tokens`` say (the model's tokenizer where there are none)."""
    inputs = (
        m.text if m.words is None else Doc(nlp.vocab, words=m.words, spaces=m.spaces)
        for m in merged
    )
    return list(nlp.pipe(inputs, disable=upstream_disabled(nlp)))


def _touches(span: Span, tokens: set[int]) -> bool:
    return any(i in tokens for i in range(span.start, span.end))


def _reachable(moves: Any, neg_key: str, doc: Doc, ref: Doc) -> bool:
    """Whether the NER's transition system has a zero-cost path through ``doc`` that
    follows ``ref`` (spaCy's own oracle; the beam update follows the same costs)."""
    example = Example(doc, ref)
    state = moves.init_batch([doc])[0]
    gold = BiluoGold(moves, state, example, neg_key)
    try:
        moves.get_oracle_sequence_from_state(state, gold)
    except ValueError:
        return False
    return True


def _reference(
    nlp: Language, doc: Doc, accepted: Sequence[Span], rejected: Sequence[Span], neg_key: str
) -> Doc:
    ref = Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
    ref.set_ents([Span(ref, s.start, s.end, s.label) for s in accepted], default="unmodified")
    ref.spans[neg_key] = [Span(ref, s.start, s.end, s.label) for s in rejected]
    return ref


def examples_by_text(
    nlp: Language,
    merged: Sequence[TextAnswers],
    neg_key: str,
    docs: Sequence[Doc] | None = None,
    report: MergeReport | None = None,
) -> list[tuple[TextAnswers, Example]]:
    """:func:`build_examples`, each example with the text it comes from (texts left
    with no usable span have none); counts go to ``report`` when given."""
    if docs is None:
        docs = predicted_docs(nlp, merged)
    report = report if report is not None else MergeReport()
    moves = find_ner(nlp).moves
    out = []
    for m, doc in zip(merged, docs):
        accepted = [doc_span(doc, s, m.where) for s in m.accepted]
        # Token-level overlap (answers mixing char and token offsets) is a conflict too.
        taken: set[int] = set()
        clean: list[Span] = []
        for span in sorted(accepted, key=lambda s: (s.start, s.end)):
            tokens = set(range(span.start, span.end))
            if tokens & taken:
                clean = [s for s in clean if not set(range(s.start, s.end)) & tokens]
            else:
                clean.append(span)
            taken |= tokens
        accepted_keys = {(s.start, s.end, s.label) for s in clean}
        rejected = [
            span
            for span in (doc_span(doc, s, m.where) for s in m.rejected)
            if (span.start, span.end, span.label) not in accepted_keys
        ]
        # Spans on preset entities are not the NER's decision (see the module docstring).
        preset = preset_tokens(doc)
        if preset:
            n_before = len(clean) + len(rejected)
            clean = [s for s in clean if not _touches(s, preset)]
            rejected = [s for s in rejected if not _touches(s, preset)]
            report.n_preset += n_before - len(clean) - len(rejected)
        ref = _reference(nlp, doc, clean, rejected, neg_key)
        if (clean or rejected) and not _reachable(moves, neg_key, doc, ref):
            # Drop the spans no parse can follow on their own, then, if their
            # combination still cannot be followed, the text's remaining spans.
            n_before = len(clean) + len(rejected)
            clean = [
                s
                for s in clean
                if _reachable(moves, neg_key, doc, _reference(nlp, doc, [s], [], neg_key))
            ]
            rejected = [
                s
                for s in rejected
                if _reachable(moves, neg_key, doc, _reference(nlp, doc, [], [s], neg_key))
            ]
            ref = _reference(nlp, doc, clean, rejected, neg_key)
            if not _reachable(moves, neg_key, doc, ref):
                clean, rejected = [], []
            report.n_unreachable += n_before - len(clean) - len(rejected)
        if clean or rejected:
            out.append((m, Example(doc, ref)))
    return out


def build_examples(
    nlp: Language,
    merged: Sequence[TextAnswers],
    neg_key: str,
    docs: Sequence[Doc] | None = None,
    report: MergeReport | None = None,
) -> list[Example]:
    """One ``Example`` per text with a usable span: the predicted doc has run
    through the pipeline's components before the NER (``docs`` when already
    done); the reference has the accepted spans as entities, every other token
    missing, and the rejected spans under ``spans[neg_key]``. Spans touching
    preset entities are dropped (``report.n_preset``), and so are spans no
    parse of the NER can follow (``report.n_unreachable``; see the module
    docstring); a text left with none gives no example. A span off the model's
    token boundaries raises :class:`~beamner.io.records.InputError` naming the
    answer."""
    return [eg for _, eg in examples_by_text(nlp, merged, neg_key, docs, report)]
