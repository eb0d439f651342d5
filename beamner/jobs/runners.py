"""What ``annotate`` and ``rank`` do to one batch of records, wherever it runs.

An :class:`Annotator` or a :class:`Ranker` is made once from a pipeline, its
:class:`~beamner.engine.settings.BeamSettings` and the job's options; its
``run(records)`` turns one batch into one result per record: the output
object, or a :class:`Failure` for a record the pipeline cannot take (a text
longer than ``nlp.max_length``, or any error that record alone raises). The
single-machine jobs (:mod:`beamner.jobs.annotate`, :mod:`beamner.jobs.rank`)
and the Dask workers (:mod:`beamner.cluster.workers`) call the same ``run`` on
the same batches, so their outputs are the same bytes.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from spacy.language import Language
from spacy.tokens import Doc, Span

from beamner.engine.pipes import find_ner, upstream_disabled
from beamner.engine.settings import BeamSettings, check_normalize
from beamner.io.records import InputError, Record, span_json
from beamner.pipeline import accelerate
from beamner.probabilities.beams import BeamDoc, beam_docs, uncertainty_scores

__all__ = [
    "ANNOTATE_KEY",
    "DEFAULT_SETTINGS",
    "STRATEGIES",
    "UNITS",
    "AnnotateOptions",
    "Annotator",
    "BatchRunner",
    "Failure",
    "RankOptions",
    "Ranker",
    "ScoredTask",
    "check_batch_size",
    "check_beam",
    "job_settings",
    "skip_done",
    "stopped_at",
    "top_k",
]

#: The span group the annotate job's component writes its candidates to.
ANNOTATE_KEY = "beamner_annotate"
STRATEGIES = ("uncertainty", "entropy", "margin")
UNITS = ("doc", "entity")
#: The jobs' beam defaults are BeamSettings' own.
DEFAULT_SETTINGS = BeamSettings()

T = TypeVar("T")
#: A rank task with its score.
ScoredTask = tuple[float, dict[str, Any]]


@dataclass(frozen=True)
class Failure:
    """A record the pipeline could not take: its input line and why."""

    line: int
    reason: str


@dataclass(frozen=True)
class AnnotateOptions:
    """``threshold``: the lowest probability a span in ``spans`` has."""

    threshold: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")


@dataclass(frozen=True)
class RankOptions:
    """``strategy`` (one of :data:`STRATEGIES`), ``unit`` (``doc``: a task a
    doc; ``entity``: a task a candidate span), ``threshold`` (spans in a task:
    p >= this) and ``top`` (keep the best ``top`` tasks; ``None``: all)."""

    strategy: str = "uncertainty"
    unit: str = "doc"
    threshold: float = 0.05
    top: int | None = None

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.unit not in UNITS:
            raise ValueError(f"unit must be one of {UNITS}, got {self.unit!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.top is not None and self.top < 1:
            raise ValueError(f"top must be >= 1, got {self.top}")


def check_batch_size(batch_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def check_beam(width: int, density: float, normalize: str | None) -> None:
    """The beam settings a job was given, checked before anything is loaded or
    written (a width past :data:`~beamner.engine.settings.MAX_BEAM_WIDTH` is
    refused here, not by an allocation failure)."""
    BeamSettings(width=width, density=density)
    if normalize is not None:
        check_normalize(normalize)


def job_settings(nlp: Language, width: int, density: float, normalize: str | None) -> BeamSettings:
    """The settings a job runs ``nlp``'s NER with: the component's own (its
    temperature, calibration, and its normalization where ``normalize`` is
    ``None``) with the job's width and density."""
    return BeamSettings.from_pipe(
        find_ner(nlp), beam=True, width=width, density=density, normalize=normalize
    )


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


class BatchRunner(ABC, Generic[T]):
    """A job's work on batches of records with one loaded pipeline."""

    def __init__(self, nlp: Language) -> None:
        self.nlp = nlp

    def problem(self, record: Record) -> str | None:
        """Why the pipeline cannot take ``record`` (known without running it), or None."""
        if record.words is None and len(record.text) > self.nlp.max_length:
            return (
                f"the text is {len(record.text)} characters, over the pipeline's max_length "
                f"{self.nlp.max_length} (split it, or raise nlp.max_length)"
            )
        return None

    def run(self, records: Sequence[Record]) -> list[T | Failure]:
        """One result per record, in order: its output, or a :class:`Failure`.
        The records the pipeline can take run as one batch; a record that makes
        the batch fail is found by running each alone, and only it fails."""
        reasons = [self.problem(record) for record in records]
        outputs = iter(self._isolating([r for r, why in zip(records, reasons) if why is None]))
        return [
            next(outputs) if why is None else Failure(record.line, why)
            for record, why in zip(records, reasons)
        ]

    def _isolating(self, records: list[Record]) -> list[T | Failure]:
        if not records:
            return []
        try:
            return list(self.outputs(records))
        except Exception as err:
            if len(records) == 1:
                return [Failure(records[0].line, _describe(err))]
            alone = [self._isolating([record])[0] for record in records]
            if all(isinstance(result, Failure) for result in alone):
                raise  # every record fails: the pipeline's fault, not one record's
            return alone

    @abstractmethod
    def outputs(self, records: list[Record]) -> list[T]:
        """The outputs of ``records``, run as one batch."""


class Annotator(BatchRunner[dict[str, Any]]):
    """``annotate``'s output objects: the record's keys, ``text``, ``ents`` (the
    best parse, each entity with its probability as ``score``), ``spans``
    (candidates with p >= ``threshold``, highest first) and, under
    ``normalize="local"``, each span's ``bounds`` and the doc's ``coverage``.
    A pipeline saved by ``beamner threshold`` (``decode="precision"``) marks
    each entity and span ``certified`` (p at or above the certified threshold,
    written on the line as ``precision_threshold``); its ``ents`` are those.

    Swaps ``nlp``'s NER for beamner's component (:func:`beamner.accelerate`)
    with ``settings``, writing every candidate to :data:`ANNOTATE_KEY`."""

    def __init__(
        self, nlp: Language, settings: BeamSettings, options: AnnotateOptions | None = None
    ) -> None:
        super().__init__(nlp)
        self.settings = settings.replace(spans_key=ANNOTATE_KEY, span_threshold=0.0)
        self.options = options or AnnotateOptions()
        accelerate(nlp, **self.settings.to_cfg())

    def outputs(self, records: list[Record]) -> list[dict[str, Any]]:
        docs = self.nlp.pipe([r.make_doc(self.nlp) for r in records], batch_size=len(records))
        return [self.annotation(doc, record) for doc, record in zip(docs, records)]

    def annotation(self, doc: Doc, record: Record) -> dict[str, Any]:
        """The output object of ``record`` from its ``doc`` after this pipeline
        (for callers that run ``nlp.pipe`` themselves, e.g. with ``n_process``)."""
        group = doc.spans[ANNOTATE_KEY]
        scores = group.attrs.get("scores", [])
        probs = {(s.start, s.end, s.label_): float(p) for s, p in zip(group, scores)}
        bounds_of = {
            (s.start, s.end, s.label_): [round(float(lo), 6), round(float(hi), 6)]
            for s, (lo, hi) in zip(group, group.attrs.get("bounds", []))
        }
        coverage = group.attrs.get("coverage")
        spans = sorted(
            ((span, float(p)) for span, p in zip(group, scores) if p >= self.options.threshold),
            key=lambda item: (-item[1], item[0].start, item[0].end, item[0].label_),
        )
        del doc.spans[ANNOTATE_KEY]

        certified_at = self.settings.precision_threshold
        if self.settings.decode != "precision":
            certified_at = None

        def with_bounds(span: Span, out: dict[str, Any]) -> dict[str, Any]:
            key = (span.start, span.end, span.label_)
            if key in bounds_of:
                out["bounds"] = bounds_of[key]
            if certified_at is not None:  # decode="precision": at or above the certified t
                out["certified"] = probs.get(key, 0.0) >= certified_at
            return out

        obj: dict[str, Any] = {"text": doc.text, **record.extra}
        obj["ents"] = [
            with_bounds(e, span_json(e, probs.get((e.start, e.end, e.label_)))) for e in doc.ents
        ]
        obj["spans"] = [with_bounds(span, span_json(span, p)) for span, p in spans]
        if coverage is not None:
            obj["coverage"] = round(float(coverage), 6)
        if certified_at is not None:
            obj["precision_threshold"] = certified_at
        return obj


class Ranker(BatchRunner[list[ScoredTask]]):
    """``rank``'s scored tasks for each record (one for ``unit="doc"``, one a
    candidate with p >= ``threshold`` for ``unit="entity"``): the record's
    keys, ``text``, ``spans`` and ``meta`` (input ``meta`` plus ``score``,
    ``entropy``, ``margin``, ``uncertainty``, ``line`` and, under
    ``normalize="local"``, ``coverage``; spans then carry ``bounds``).
    Beams of ``nlp``'s own NER with ``settings``; ``nlp`` is not changed."""

    def __init__(
        self, nlp: Language, settings: BeamSettings, options: RankOptions | None = None
    ) -> None:
        super().__init__(nlp)
        self.settings = settings
        self.options = options or RankOptions()
        self.pipe = find_ner(nlp)
        self.disabled = upstream_disabled(nlp)

    def outputs(self, records: list[Record]) -> list[list[ScoredTask]]:
        docs = list(
            self.nlp.pipe(
                (r.make_doc(self.nlp) for r in records),
                disable=self.disabled,
                batch_size=len(records),
            )
        )
        beams = beam_docs(self.pipe, docs, self.settings)
        return [list(self._tasks(record, beam)) for record, beam in zip(records, beams)]

    def _tasks(self, record: Record, beam: BeamDoc) -> Iterator[ScoredTask]:
        doc = beam.doc
        scores: dict[str, float] = dict(uncertainty_scores(beam))
        if beam.coverage is not None:
            scores["coverage"] = beam.coverage
        meta_in = record.extra.get("meta")
        base_meta: dict[str, Any] = dict(meta_in) if isinstance(meta_in, dict) else {}
        extra = {k: v for k, v in record.extra.items() if k not in ("meta", "spans")}
        threshold = self.options.threshold
        candidates = [
            (key, prob)
            for key, prob in sorted(beam.entities.items(), key=lambda kv: (-kv[1], kv[0]))
            if prob >= threshold
        ]

        def span_of(key: tuple[int, int, str], prob: float) -> dict[str, Any]:
            start, end, label = key
            out = span_json(Span(doc, start, end, label=label), prob)
            if beam.bounds is not None and key in beam.bounds:
                out["bounds"] = [round(float(b), 6) for b in beam.bounds[key]]
            return out

        def task(score: float, spans: list[dict[str, Any]]) -> ScoredTask:
            meta = {**base_meta, **scores, "score": score, "line": record.line}
            return score, {"text": doc.text, **extra, "spans": spans, "meta": meta}

        if self.options.unit == "entity":
            for key, prob in candidates:
                yield task(1.0 - abs(2.0 * prob - 1.0), [span_of(key, prob)])
            return
        yield task(scores[self.options.strategy], [span_of(k, p) for k, p in candidates])


def top_k(scored: Iterable[tuple[float, T]], k: int | None) -> list[tuple[float, T]]:
    """The ``k`` highest-scored items (all of them with ``k`` None), best first;
    equal scores keep their input order. Memory is bounded by ``k``."""
    heap: list[tuple[float, int, T]] = []
    for counter, (score, item) in enumerate(scored):
        entry = (score, -counter, item)  # -counter: the earlier item wins a tie
        if k is None or len(heap) < k:
            heapq.heappush(heap, entry)
        else:
            heapq.heappushpop(heap, entry)
    return [(score, item) for score, _, item in sorted(heap, key=lambda e: (-e[0], -e[1]))]


def skip_done(records: Iterable[Record], n: int, max_length: int | None) -> Iterator[Record]:
    """``records`` after the first ``n`` that produced an output line (a resumed
    run's lines): records longer than ``max_length`` made none, so they do not count."""
    done = 0
    for record in records:
        if done >= n:
            yield record
        elif max_length is None or record.words is not None or len(record.text) <= max_length:
            done += 1


def stopped_at(error: str, state: str, rerun: str = "") -> InputError:
    """The error a job stops with at a bad record: ``error`` (``path:line:
    reason``), what the output holds, and how to go on."""
    how = f"fix the line and rerun{rerun}, or use --skip-invalid to skip bad lines"
    return InputError(f"{error} ({state}; {how})")
