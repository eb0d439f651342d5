"""Tasks for the yes/no loop: one candidate entity per task, Prodigy's JSONL format.

A task is a plain ``dict`` (what is written to and read from JSONL)::

    {
      "text": "Visiting New York today",
      "tokens": [{"text": "Visiting", "start": 0, "end": 8, "id": 0, "ws": true}, ...],
      "spans": [{"start": 9, "end": 17, "token_start": 1, "token_end": 2,
                 "label": "GPE", "score": 0.512}],
      "meta": {"score": 0.512, "uncertainty": 0.976, "line": 3, "model_version": 0},
      "_input_hash": 1234567890123,
      "_task_hash": 987654321098765
    }

plus any other keys of the input record. ``tokens`` is the tokenization the
model saw (Prodigy's format); answers carrying it are trained on the same
tokens. Also kept: any other keys of the input record (``meta`` keys of the input are kept
under ``meta``). ``start``/``end`` are character offsets (end exclusive),
``token_start``/``token_end`` token indices with ``token_end`` *inclusive*
(Prodigy's convention). ``meta.score`` and ``spans[0].score`` are the
model's probability of the entity (the sum of the probabilities of the beam's
parses that contain it, the pipe's ``temperature`` applied);
``meta.uncertainty`` is ``1 - |2p - 1|`` (1 at p = 0.5);
``meta.model_version`` counts the model updates the score was computed after.

Hashes (:func:`input_hash`, :func:`task_hash`) are computed from the content
only (text; text + span offsets + label), so the same text and span get the
same hashes in every run, on every machine and in every tool that uses these
functions. They are non-negative integers below 2**53, so they survive a
round trip through JavaScript's ``JSON.parse``. They are *not* Prodigy's
murmurhash values: answers read back by :mod:`beamner.teach.answers` are
re-hashed from their content, whatever hashes the file carries.

:class:`TaskStream` is the single-threaded stream (a bounded look-ahead
buffer, uncertainty or random order, re-scored after every model update);
:class:`beamner.teach.session.TeachSession` wraps it with locking and updates.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypedDict, Union

from spacy.language import Language
from spacy.tokens import Doc

from beamner.engine.pipes import find_ner, upstream_disabled
from beamner.engine.settings import BeamSettings
from beamner.io.records import (
    Record,
    read_records,
    span_json,
)
from beamner.probabilities.beams import beam_docs
from beamner.teach.sampling import DEFAULT_FLOOR, UncertaintySampler

__all__ = [
    "BAD_LINES_KEPT",
    "ORDERS",
    "Source",
    "StreamArgs",
    "TaskStream",
    "input_hash",
    "make_task",
    "preset_tokens",
    "records_from",
    "task_hash",
    "uncertainty",
]

#: Orders a :class:`TaskStream` can serve tasks in.
ORDERS = ("uncertainty", "random", "sample")

#: Bad source lines a :class:`TaskStream` keeps (line, reason) for display; all are counted.
BAD_LINES_KEPT = 10

#: What a task stream reads: a records file (see :func:`beamner.io.records.read_records`),
#: or an iterable of texts, :class:`~beamner.io.records.Record` objects or dicts with ``"text"``.
Source = Union[str, "os.PathLike[str]", Iterable[str | Record | dict[str, Any]]]

Candidate = tuple[int, int, str]  # token start, token end (exclusive), label


class StreamArgs(TypedDict, total=False):
    """Keyword options of a :class:`TaskStream` that
    :class:`~beamner.teach.session.TeachSession` passes to it as given (their
    meaning and defaults: :class:`TaskStream`; the session decides the beam and
    the seed itself)."""

    order: str
    buffer: int
    batch_size: int
    threshold: float
    fmt: str


def _hash53(payload: Any) -> int:
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 11


def input_hash(text: str) -> int:
    """Hash of a task's input (its text), in ``[0, 2**53)``."""
    return _hash53(["input", text])


def task_hash(input_hash_: int, start: int, end: int, label: str) -> int:
    """Hash of a task: its input hash and the span's character offsets and label."""
    return _hash53(["task", input_hash_, start, end, label])


def uncertainty(p: float) -> float:
    """``1 - |2p - 1|``: 1 at p = 0.5, 0 at p = 0 or 1."""
    return 1.0 - abs(2.0 * p - 1.0)


#: Called with (line number, reason) for each source line a stream skips.
OnBad = Callable[[int, str], None]


def records_from(
    source: Source, fmt: str = "auto", on_bad: OnBad | None = None
) -> Iterator[Record]:
    """Records of a file (as ``read_records``) or of an iterable of texts, Records or dicts.

    A bad line or item raises (:class:`~beamner.io.records.InputError` naming the
    line, or ``ValueError``); with ``on_bad``, it is skipped instead and
    ``on_bad(line, reason)`` called, and the records after it are read on.
    """
    if isinstance(source, (str, os.PathLike)):
        yield from read_records(source, fmt, skip_invalid=on_bad is not None, on_invalid=on_bad)
        return
    for i, item in enumerate(source, start=1):
        if isinstance(item, Record):
            yield item
        elif isinstance(item, str):
            yield Record(i, item)
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            extra = {k: v for k, v in item.items() if k != "text"}
            yield Record(i, item["text"], extra)
        else:
            reason = (
                f"expected a text, a Record or a dict with a 'text' string, "
                f"got {type(item).__name__}"
            )
            if on_bad is None:
                raise ValueError(f"task source item {i}: {reason}")
            on_bad(i, reason)


def make_task(
    record: Record, doc: Doc, candidate: Candidate, p: float, model_version: int = 0
) -> dict[str, Any]:
    """The JSONL task for one candidate entity of ``doc`` (see the module docstring)."""
    start, end, label = candidate
    span = span_json(doc[start:end], p)
    span["label"] = label
    meta_in = record.extra.get("meta")
    meta: dict[str, Any] = dict(meta_in) if isinstance(meta_in, dict) else {}
    meta.update(
        score=round(float(p), 6),
        uncertainty=round(uncertainty(p), 6),
        line=record.line,
        model_version=model_version,
    )
    extra = {
        k: v
        for k, v in record.extra.items()
        if k not in ("meta", "spans", "tokens", "answer", "_input_hash", "_task_hash")
    }
    ih = input_hash(doc.text)
    tokens = [
        {
            "text": t.text,
            "start": t.idx,
            "end": t.idx + len(t),
            "id": t.i,
            "ws": bool(t.whitespace_),
        }
        for t in doc
    ]
    return {
        **extra,
        "text": doc.text,
        "tokens": tokens,
        "spans": [span],
        "meta": meta,
        "_input_hash": ih,
        "_task_hash": task_hash(ih, span["start"], span["end"], label),
    }


def preset_tokens(doc: Doc) -> set[int]:
    """Tokens of ``doc`` inside entities set before the NER (``ent_iob`` B or I, e.g.
    by an ``entity_ruler``, blocked tokens included): the NER's moves there are
    forced, so no task or answer about a span touching them is the NER's decision."""
    return {t.i for t in doc if t.ent_iob in (1, 3)}


@dataclass
class _PooledDoc:
    record: Record
    doc: Doc
    input_hash: int
    #: candidate -> (probability, task hash), those not yet served or skipped
    candidates: dict[Candidate, tuple[float, int]] = field(default_factory=dict)


class TaskStream:
    """Candidate-entity tasks over unlabelled text, one at a time (not thread-safe;
    :class:`~beamner.teach.session.TeachSession` adds the locking).

    The stream reads ``batch_size`` records at a time, runs the pipeline's
    components before the NER on them, and scores every candidate entity of
    the requested ``labels`` with the beam (:func:`beam_docs`). Candidates with
    probability below ``threshold`` are not offered, nor are spans touching an
    entity preset before the NER (e.g. by an ``entity_ruler``): the NER's moves
    there are forced, so such a span's p is 1 or 0 by construction, and an
    answer about it could teach the NER nothing. Pending candidates wait in
    a look-ahead buffer of at most ``buffer`` tasks (plus one batch while it
    is refilled). ``normalize`` is passed to :func:`beam_docs` (``None``: the
    component's setting). ``score_lock`` (optional) is held while the beam
    reads the model's weights:

    * ``order="uncertainty"``: :meth:`next` serves the buffered candidate with
      p closest to 0.5; when the buffer overflows, the least uncertain
      candidates are dropped (counted in :attr:`n_dropped`), never served.
    * ``order="random"``: :meth:`next` serves a uniformly random buffered
      candidate (``seed``); nothing is dropped.

    The buffer is refilled whenever it holds fewer than ``buffer`` candidates,
    so once it is full, each task served in uncertainty order reads one more
    batch: about ``batch_size`` records are read per task, and the task served
    is the most uncertain of everything read and not yet served or dropped.
    ``batch_size`` is therefore the selectivity (1: mild, 16: strong, at the
    cost of reading 16 texts per answer). Random order reads only as many
    records as it needs to keep ``buffer`` candidates.

    Call :meth:`invalidate` after the model changed: before serving the next
    task, every buffered candidate is re-scored with the current model (and
    dropped if it fell below ``threshold``), so served scores always come from
    the model as it is when the task is served. A text's candidates are fixed
    when it is read: re-scoring does not add new ones.
    Task hashes passed to :meth:`skip` (e.g. answered in an earlier session)
    and tasks already served are never served again.

    A bad source line (not UTF-8, not JSON, no ``"text"`` string) is skipped
    and counted (:attr:`n_bad_lines`; the first :data:`BAD_LINES_KEPT` with
    their reasons in :attr:`bad_lines`), and the lines after it are read on:
    one broken line must not end a long annotation session. With
    ``skip_bad_lines=False`` it raises instead, naming the line.
    """

    def __init__(
        self,
        nlp: Language,
        source: Source,
        labels: Sequence[str],
        *,
        order: str = "uncertainty",
        buffer: int = 64,
        batch_size: int = 16,
        beam_width: int = BeamSettings.width,
        beam_density: float = BeamSettings.density,
        threshold: float = 0.05,
        seed: int = 0,
        sampling_rate: float = 1.0,
        sampling_floor: float = DEFAULT_FLOOR,
        fmt: str = "auto",
        normalize: str | None = None,
        score_lock: AbstractContextManager[Any] | None = None,
        skip_bad_lines: bool = True,
    ) -> None:
        if order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if buffer < 1 or batch_size < 1 or beam_width < 1:
            raise ValueError("buffer, batch_size and beam_width must be >= 1")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        self.nlp = nlp
        self.pipe = find_ner(nlp)
        known = set(self.pipe.labels)
        missing = [label for label in labels if label not in known]
        if not labels or missing:
            raise ValueError(
                f"labels {missing or '(none)'} are not labels of the entity recognizer "
                f"(it has {sorted(known)})"
            )
        self.labels = frozenset(labels)
        self.order = order
        self.buffer = buffer
        self.batch_size = batch_size
        self.beam_width = beam_width
        self.beam_density = beam_density
        self.threshold = threshold
        self.normalize = normalize
        self.rng = random.Random(seed)
        #: order "sample": each candidate is offered with a recorded probability
        #: (beamner.teach.sampling), served in reading order, never dropped
        self.sampler = (
            UncertaintySampler(sampling_rate, sampling_floor, seed) if order == "sample" else None
        )
        self._inclusion: dict[int, float] = {}  # task hash -> inclusion probability
        #: Bad source lines skipped, and the first BAD_LINES_KEPT of them: (line, reason).
        self.n_bad_lines = 0
        self.bad_lines: list[tuple[int, str]] = []
        self._records = records_from(source, fmt, self._bad_line if skip_bad_lines else None)
        self._exhausted = False
        self._disabled = upstream_disabled(nlp)
        self._pool: list[_PooledDoc] = []
        self._skip: set[int] = set()
        self._front: list[dict[str, Any]] = []  # tasks given back (undo): served first
        self.model_version = 0
        self._scored_version = 0
        self._score_lock = score_lock if score_lock is not None else nullcontext()
        #: Records read, tasks served, candidates dropped from a full buffer (uncertainty order).
        self.n_read = 0
        self.n_served = 0
        self.n_dropped = 0

    # -- public -----------------------------------------------------------------------------

    def skip(self, task_hashes: Iterable[int]) -> None:
        """Never serve these task hashes (also removes them from the buffer)."""
        self._skip.update(int(h) for h in task_hashes)
        for pooled in self._pool:
            for cand, (_, th) in list(pooled.candidates.items()):
                if th in self._skip:
                    del pooled.candidates[cand]
        self._pool = [p for p in self._pool if p.candidates]
        self._front = [t for t in self._front if t["_task_hash"] not in self._skip]

    def give_back(self, task: dict[str, Any]) -> None:
        """Serve ``task`` again next (an undone answer); its score is as it was."""
        self._skip.discard(int(task["_task_hash"]))
        self._front.append(task)

    def invalidate(self) -> None:
        """The model changed: re-score the buffer before the next task is served."""
        self.model_version += 1

    def next(self) -> dict[str, Any] | None:
        """The next task, or None when the source is exhausted and the buffer empty."""
        while self._front:
            task = self._front.pop()
            if task["_task_hash"] not in self._skip:
                self._skip.add(task["_task_hash"])
                self.n_served += 1
                return task
        if self._scored_version != self.model_version:
            self._rescore()
        while self._n_buffered() < self.buffer and not self._exhausted:
            self._read_batch()
        if self.order == "uncertainty":
            self._trim()
        choice = self._choose()
        if choice is None:
            return None
        pooled, cand = choice
        p, th = pooled.candidates.pop(cand)
        if not pooled.candidates:
            self._pool.remove(pooled)
        self._skip.add(th)
        self.n_served += 1
        task = make_task(pooled.record, pooled.doc, cand, p, self._scored_version)
        if th in self._inclusion:
            UncertaintySampler.record(task, self._inclusion.pop(th))
        return task

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (task := self.next()) is not None:
            yield task

    @property
    def n_buffered(self) -> int:
        """Candidates waiting in the buffer."""
        return self._n_buffered() + len(self._front)

    # -- internals --------------------------------------------------------------------------

    def _bad_line(self, line: int, reason: str) -> None:
        self.n_bad_lines += 1
        if len(self.bad_lines) < BAD_LINES_KEPT:
            self.bad_lines.append((line, reason))

    def _n_buffered(self) -> int:
        return sum(len(p.candidates) for p in self._pool)

    def _read_batch(self) -> None:
        chunk: list[Record] = []
        for record in self._records:
            chunk.append(record)
            if len(chunk) >= self.batch_size:
                break
        if len(chunk) < self.batch_size:
            self._exhausted = True
        if not chunk:
            return
        self.n_read += len(chunk)
        docs = list(self.nlp.pipe((r.make_doc(self.nlp) for r in chunk), disable=self._disabled))
        pooled = [_PooledDoc(r, d, input_hash(d.text)) for r, d in zip(chunk, docs)]
        self._score(pooled)
        self._pool.extend(p for p in pooled if p.candidates)

    def _rescore(self) -> None:
        self._score(self._pool, rescore=True)
        self._pool = [p for p in self._pool if p.candidates]

    def _score(self, pooled: Sequence[_PooledDoc], rescore: bool = False) -> None:
        """Candidates of freshly read docs; with ``rescore``, only new probabilities
        for the candidates a doc already has (a doc's candidates are fixed when it
        is read, so a changing model cannot keep one text in the buffer forever)."""
        version = self.model_version
        nonempty = [p for p in pooled if len(p.doc)]
        old = {id(p): p.candidates for p in pooled}
        for p in pooled:
            p.candidates = {}
        if nonempty:
            # Read each time: an update or calibration may change the pipe's cfg.
            settings = BeamSettings.from_pipe(
                self.pipe,
                beam=True,
                width=self.beam_width,
                density=self.beam_density,
                normalize=self.normalize,
            )
            with self._score_lock:
                beams = beam_docs(self.pipe, [p.doc for p in nonempty], settings)
            for p, beam in zip(nonempty, beams):
                preset = preset_tokens(p.doc)
                if rescore:
                    for cand, (_, th) in old[id(p)].items():
                        prob = beam.entities.get(cand, 0.0)
                        # a drawn candidate is served whatever its new p: dropping it
                        # would make its inclusion probability wrong
                        keep = prob >= self.threshold or th in self._inclusion
                        if keep and th not in self._skip:
                            p.candidates[cand] = (float(prob), th)
                    continue
                for (start, end, label), prob in beam.entities.items():
                    if label not in self.labels or prob < self.threshold:
                        continue
                    if preset and any(i in preset for i in range(start, end)):
                        continue  # a preset entity (p = 1 by construction): not the NER's call
                    span = p.doc[start:end]
                    th = task_hash(p.input_hash, span.start_char, span.end_char, label)
                    if th in self._skip:
                        continue
                    if self.sampler is not None:
                        # one coin per candidate, when its text is read (not on re-scoring)
                        pi = self.sampler.draw(float(prob))
                        if pi is None:
                            continue
                        self._inclusion[th] = pi
                    p.candidates[(start, end, label)] = (float(prob), th)
        self._scored_version = version

    def _entries(self) -> list[tuple[float, int, _PooledDoc, Candidate]]:
        out = []
        for i, pooled in enumerate(self._pool):
            for cand, (p, _) in pooled.candidates.items():
                out.append((uncertainty(p), i, pooled, cand))
        return out

    def _trim(self) -> None:
        excess = self._n_buffered() - self.buffer
        if excess <= 0:
            return
        # Least uncertain first; ties: the later doc goes first (input order is kept).
        entries = sorted(self._entries(), key=lambda e: (e[0], -e[1], e[3]))
        for _, _, pooled, cand in entries[:excess]:
            del pooled.candidates[cand]
        self.n_dropped += excess
        self._pool = [p for p in self._pool if p.candidates]

    def _choose(self) -> tuple[_PooledDoc, Candidate] | None:
        entries = self._entries()
        if not entries:
            return None
        if self.order == "sample":
            # reading order: the answered candidates are every drawn one of the texts read
            pooled = self._pool[0]
            return pooled, next(iter(pooled.candidates))
        if self.order == "random":
            _, _, pooled, cand = entries[self.rng.randrange(len(entries))]
            return pooled, cand
        # Most uncertain; ties: input order, then span order.
        _, _, pooled, cand = min(entries, key=lambda e: (-e[0], e[1], e[3]))
        return pooled, cand
