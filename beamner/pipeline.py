"""The drop-in NER component: spaCy's EntityRecognizer with beamner's native
beam search, and :func:`accelerate` to swap it into a loaded pipeline."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, overload

import numpy
from spacy.language import Language
from spacy.pipeline import EntityRecognizer
from spacy.pipeline.ner import DEFAULT_NER_MODEL
from spacy.tokens import Doc, Span, SpanGroup
from thinc.api import Config, Model

from beamner._core import BeamBatch
from beamner._spacy_states import build_beam, build_state
from beamner.engine.pipelined import Chunk, chunk_plan, chunk_sizes, search_chunked, search_stream
from beamner.engine.search import run_search
from beamner.engine.settings import BeamSettings, Decode, Normalize, SpansLayout
from beamner.probabilities.beams import named_probabilities
from beamner.probabilities.calibration import entity_probabilities
from beamner.probabilities.calibrators import (
    IsotonicCalibrator,
    calibrate_bound_rows,
    calibrator_of,
)
from beamner.probabilities.decoding import marginal_entities, most_probable_entities
from beamner.probabilities.spans import singlelabel_group
from beamner.training.beam_update import update_beam

__all__ = ["BeamnerEntityRecognizer", "NativeBeams", "accelerate", "make_beamner_ner"]

#: The settings in ``beamner_ner``'s config. The fitted calibration is not
#: among them: it lives in the component's cfg (saved beside the weights),
#: not in config.cfg.
CONFIG_SETTINGS: dict[str, Any] = {
    key: value for key, value in BeamSettings().to_cfg().items() if key != "calibration"
}


class BeamnerEntityRecognizer(EntityRecognizer):  # type: ignore[misc]
    """spaCy's ``EntityRecognizer`` whose beam search runs natively.

    ``beam_parse`` returns genuine thinc ``Beam`` objects holding real spaCy
    states, so ``moves.get_beam_parses``, ``scored_ents`` and
    ``set_annotations`` work unchanged. In ``nlp.pipe`` the component sets
    ``doc.ents`` to the best parse and, with ``spans_key``, stores every
    candidate entity with probability >= ``span_threshold`` in
    ``doc.spans[spans_key]`` with the probabilities in ``attrs["scores"]``.
    Training is spaCy's own.
    """

    def __init__(
        self,
        vocab: Any,
        model: Model[Any, Any],
        name: str = "ner",
        moves: Any = None,
        *,
        update_with_oracle_cut_size: int = 100,
        beam_update_prob: float = 0.5,
        multitasks: Iterable[Any] = (),
        incorrect_spans_key: str | None = None,
        scorer: Callable[..., Any] | None = None,
        **settings: Any,
    ) -> None:
        """``settings``: :class:`~beamner.engine.settings.BeamSettings` under
        their cfg keys (``beam_width``, ``beam_density``, ``normalize``, ...);
        the rest take beamner's defaults."""
        BeamSettings.check_cfg_keys(settings)
        beam = BeamSettings.from_cfg(settings)
        kwargs: dict[str, Any] = {} if scorer is None else {"scorer": scorer}
        super().__init__(
            vocab,
            model,
            name=name,
            moves=moves,
            update_with_oracle_cut_size=update_with_oracle_cut_size,
            beam_width=beam.width,
            beam_density=beam.density,
            beam_update_prob=beam_update_prob,
            multitasks=multitasks,
            incorrect_spans_key=incorrect_spans_key,
            **kwargs,
        )
        self.cfg.update(beam.to_cfg())

    @property
    def settings(self) -> BeamSettings:
        """The component's settings, read from its cfg (what it saves)."""
        return BeamSettings.from_cfg(self.cfg)

    @classmethod
    def from_pipe(cls, pipe: EntityRecognizer, **settings: Any) -> BeamnerEntityRecognizer:
        """A component sharing ``pipe``'s model, moves and settings (no copy);
        ``settings`` (cfg keys) override them. A greedy component's density 0
        is not inherited (:meth:`BeamSettings.from_pipe`)."""
        beam = BeamSettings.from_pipe(pipe, updates=settings)
        cfg = dict(pipe.cfg)
        new = cls(
            pipe.vocab,
            pipe.model,
            name=pipe.name,
            moves=pipe.moves,
            update_with_oracle_cut_size=cfg["update_with_oracle_cut_size"],
            beam_update_prob=cfg["beam_update_prob"],
            multitasks=cfg.get("multitasks", ()),
            incorrect_spans_key=cfg.get("incorrect_spans_key"),
            scorer=pipe.scorer,
            **beam.to_cfg(),
        )
        new.cfg = {**cfg, **beam.to_cfg()}
        return new

    def update_beam(
        self,
        examples: Sequence[Any],
        *,
        beam_width: int,
        drop: float = 0.0,
        sgd: Any = None,
        losses: dict[str, float] | None = None,
        beam_density: float = 0.0,
    ) -> dict[str, float] | None:
        """spaCy's global update, natively (``beamner.training.update_beam``)."""
        return update_beam(
            self, examples, beam_width=beam_width, sgd=sgd, losses=losses, beam_density=beam_density
        )

    def beam_parse(
        self, docs: Sequence[Doc], beam_width: int, drop: float = 0.0, beam_density: float = 0.0
    ) -> list[Any]:
        """spaCy's ``Parser.beam_parse``, natively: one finished thinc ``Beam`` per doc.
        The docs are searched in chunks (:mod:`beamner.engine.pipelined`), each
        chunk's Beams built while the next chunk is searched; every Beam is
        the one a single batch over ``docs`` gives (its states keep the
        whole batch's token offsets)."""
        docs = list(docs)
        settings = self.settings.replace(width=int(beam_width), density=float(beam_density))
        moves = self.moves

        def read(chunk: Chunk) -> list[Any]:
            batch, offset = chunk.batch, chunk.offset
            beams = []
            for i, doc in enumerate(chunk.docs):
                scores, _, histories = batch.beam_arrays(i)
                beams.append(
                    build_beam(moves, doc, offset, batch.width, batch.density, scores, histories)
                )
                offset += len(doc)
            return beams

        return search_chunked(self, docs, settings, read)

    def pipe(self, docs: Iterable[Doc], *, batch_size: int = 256) -> Iterator[Doc]:
        """spaCy's ``Parser.pipe`` (batches of ``batch_size``, each sorted by
        length into sub-batches of a quarter, the error handler called with
        a failing batch), with each sub-batch searched in chunks whose native
        search runs while the next chunk's network is computed
        (:mod:`beamner.engine.pipelined`; ``BEAMNER_PIPELINE=0`` turns the
        overlap off). The docs come out annotated as ``predict`` and
        ``set_annotations`` leave them, in order."""
        settings = self.settings
        if settings.width == 1 and not settings.spans_key:
            yield from super().pipe(docs, batch_size=batch_size)  # spaCy's greedy parser
            return
        error_handler = self.get_error_handler()
        sub_size = max(batch_size // 4, 2)

        def chunks() -> Iterator[tuple[tuple[_PipeBatch, bool], list[Doc]]]:
            for batch in _batches(docs, batch_size):
                record = _PipeBatch(list(batch))
                by_length = sorted(record.docs, key=len)
                subs = list(_batches(by_length, sub_size))
                # the batch's last sub-batch ends in small chunks (chunk_plan)
                pieces = [
                    piece for k, sub in enumerate(subs) for piece in _split(sub, k == len(subs) - 1)
                ]
                for j, piece in enumerate(pieces):
                    yield (record, j == len(pieces) - 1), piece

        stream = search_stream(self, chunks(), settings)
        with closing(stream):
            for searched in stream:
                record, last = searched.key
                if not record.failed:
                    try:
                        self._annotate_chunk(searched.docs, searched.result())
                    except Exception as err:
                        record.failed = True
                        error_handler(self.name, self, record.docs, err)
                if last and not record.failed:
                    yield from record.docs

    def _annotate_chunk(self, docs: list[Doc], batch: BeamBatch) -> None:
        """``set_annotations(docs, predict(docs))`` with the chunk's finished batch."""
        if any(len(doc) for doc in docs):
            self.set_annotations(docs, NativeBeams(self.moves, docs, batch))
        else:
            self.set_annotations(docs, self.moves.init_batch(docs))  # as predict does

    def predict(self, docs: Doc | Sequence[Doc]) -> Any:
        if isinstance(docs, Doc):
            docs = [docs]
        docs = list(docs)
        if not any(len(doc) for doc in docs):
            return self.moves.init_batch(docs)
        settings = self.settings
        if settings.width == 1 and not settings.spans_key:
            return self.greedy_parse(docs, drop=0.0)
        return NativeBeams(self.moves, docs, run_search(self, docs, settings))

    def set_annotations(self, docs: Sequence[Doc], states_or_beams: Any) -> None:
        if not isinstance(states_or_beams, NativeBeams):
            super().set_annotations(docs, states_or_beams)
            return
        batch = states_or_beams.batch
        best = [
            build_state(self.moves, doc, batch.beam_arrays(i)[2][0]) for i, doc in enumerate(docs)
        ]
        super().set_annotations(docs, best)
        settings = self.settings
        key = settings.spans_key
        if not key and settings.decode == "best":
            return
        strings = self.vocab.strings
        cal = calibrator_of(settings)  # once per batch, not per doc
        # The calibrated probabilities a doc needs, computed once per doc.
        needs_probs = settings.decode == "precision" or (
            key is not None and settings.spans_layout != "singlelabel"
        )
        for i, doc in enumerate(docs):
            probs = named_probabilities(batch, i, strings, settings, cal) if needs_probs else {}
            if settings.decode == "marginal":
                marginals = entity_probabilities(batch, i, settings.temperature)
                _set_ents(doc, marginal_entities(marginals), strings)
            elif settings.decode == "precision":
                threshold = settings.precision_threshold or 0.0
                _set_ents(doc, most_probable_entities(probs, threshold), strings)
            if key and settings.spans_layout == "singlelabel":
                doc.spans[key] = singlelabel_group(self, doc, batch, i, key, settings, cal)
            elif key:
                doc.spans[key] = _scored_spans(doc, key, probs, settings.span_threshold)
                if settings.normalize == "local":
                    _attach_bounds(doc.spans[key], batch, i, cal)


class NativeBeams(Sequence[Any]):
    """What ``predict`` returns: the finished native beams, read as spaCy's
    ``beam_ner`` result, one thinc ``Beam`` per doc (``scored_ents``,
    ``moves.get_beam_parses``, ``Parser.set_annotations``, iteration, ``len``,
    indexing), or, at width 1, the best parse's ``StateClass`` per doc as
    ``greedy_parse`` returns. Each Beam (or state) is built from the native
    arrays the first time it is read; ``BeamnerEntityRecognizer.set_annotations``
    reads the arrays directly and builds none (the ``nlp.pipe`` path)."""

    def __init__(self, moves: Any, docs: list[Doc], batch: BeamBatch) -> None:
        self.moves = moves
        self.docs = docs
        self.batch = batch
        self._offsets = numpy.cumsum([0] + [len(doc) for doc in docs[:-1]], dtype=numpy.int64)
        self._built: list[Any] = [None] * len(docs)

    def __len__(self) -> int:
        return len(self.docs)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._item(i) for i in range(len(self.docs))[index]]
        n = len(self.docs)
        if not -n <= index < n:
            raise IndexError(f"beam index {index} out of range for {n} docs")
        return self._item(index % n)

    def __iter__(self) -> Iterator[Any]:
        return (self._item(i) for i in range(len(self.docs)))

    def __repr__(self) -> str:
        built = sum(item is not None for item in self._built)
        return (
            f"<NativeBeams: {len(self.docs)} docs, width {self.batch.width}, "
            f"{built} built as spaCy objects>"
        )

    def _item(self, i: int) -> Any:
        item = self._built[i]
        if item is None:
            scores, _, histories = self.batch.beam_arrays(i)
            doc = self.docs[i]
            if self.batch.width == 1:
                item = build_state(self.moves, doc, histories[0])
            else:
                offset = int(self._offsets[i])
                width, density = self.batch.width, self.batch.density
                item = build_beam(self.moves, doc, offset, width, density, scores, histories)
            self._built[i] = item
        return item


@dataclass
class _PipeBatch:
    """One batch of ``BeamnerEntityRecognizer.pipe``, in input order."""

    docs: list[Doc]
    failed: bool = False


def _batches(docs: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    """spaCy's ``minibatch`` with a fixed size."""
    items = iter(docs)
    while batch := list(itertools.islice(items, size)):
        yield batch


def _split(docs: list[Doc], tail: bool) -> list[list[Doc]]:
    """``docs`` in even chunks of at most ``CHUNK_DOCS``, the last one halved
    when ``tail`` (:func:`~beamner.engine.pipelined.chunk_plan`)."""
    sizes = chunk_plan([len(doc) for doc in docs]) if tail else chunk_sizes(len(docs))
    out, start = [], 0
    for size in sizes:
        out.append(docs[start : start + size])
        start += size
    return out


def _set_ents(doc: Doc, entities: Sequence[tuple[int, int, int | str]], strings: Any) -> None:
    """``doc.ents``: ``entities`` (they do not overlap), the rest of the doc
    outside; preset entities keep their ``kb_id``."""
    kb_ids = {(e.start, e.end, e.label_): e.kb_id for e in doc.ents}
    spans = []
    for start, end, label in entities:
        name = label if isinstance(label, str) else strings[label]
        span = Span(doc, start, end, label=name, kb_id=kb_ids.get((start, end, name), 0))
        spans.append(span)
    doc.set_ents(spans, default="outside")


def _attach_bounds(
    group: SpanGroup,
    batch: BeamBatch,
    doc_index: int,
    calibrator: IsotonicCalibrator | None = None,
) -> None:
    """``normalize="local"``: ``attrs["bounds"]``, (n_spans, 2) float64, the
    interval each span's marginal under the model lies in (mapped by the
    calibration the scores were, so a score lies inside its bounds), and
    ``attrs["coverage"]``, the model probability the beam held."""
    bounds = batch.entity_bounds(doc_index)
    rows = [bounds[(span.start, span.end, span.label)] for span in group]
    group.attrs["bounds"] = calibrate_bound_rows(
        numpy.asarray(rows, dtype=numpy.float64).reshape(len(rows), 2),
        [span.label_ for span in group],
        group.attrs["scores"],
        calibrator,
    )
    group.attrs["coverage"] = batch.coverage(doc_index)


def _scored_spans(
    doc: Doc, key: str, probabilities: dict[tuple[int, int, str], float], threshold: float
) -> SpanGroup:
    items = [
        (start, end, label, prob)
        for (start, end, label), prob in probabilities.items()
        if label and prob >= threshold
    ]
    spans = [doc[start:end] for start, end, _, _ in items]
    for span, (_, _, label, _) in zip(spans, items):
        span.label_ = label
    scores = numpy.asarray([prob for _, _, _, prob in items], dtype=numpy.float32)
    return SpanGroup(doc, name=key, spans=spans, attrs={"scores": scores})


@Language.factory(
    "beamner_ner",
    assigns=["doc.ents", "token.ent_iob", "token.ent_type"],
    default_config={
        "moves": None,
        "update_with_oracle_cut_size": 100,
        "model": DEFAULT_NER_MODEL,
        "beam_update_prob": 0.5,
        "incorrect_spans_key": None,
        "scorer": {"@scorers": "spacy.ner_scorer.v1"},
        **CONFIG_SETTINGS,
    },
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_beamner_ner(
    nlp: Language,
    name: str,
    model: Model[Any, Any],
    moves: Any,
    update_with_oracle_cut_size: int,
    beam_update_prob: float,
    incorrect_spans_key: str | None,
    scorer: Callable[..., Any] | None,
    # The settings of BeamSettings, listed because spaCy's config system
    # validates a factory's arguments by its signature.
    beam_width: int,
    beam_density: float,
    normalize: Normalize,
    temperature: float,
    decode: Decode,
    precision_threshold: float | None,
    fused: bool,
    span_threshold: float,
    spans_key: str | None,
    spans_layout: SpansLayout,
    spans_allow_overlap: bool,
) -> BeamnerEntityRecognizer:
    """Factory ``beamner_ner``: ``beam_ner``'s settings plus beamner's
    (:class:`~beamner.engine.settings.BeamSettings`, where each default and its
    reason are). An isotonic calibration fitted by ``beamner calibrate`` lives
    in the component's cfg (``calibration``) and is saved and loaded with it."""
    return BeamnerEntityRecognizer(
        nlp.vocab,
        model,
        name=name,
        moves=moves,
        update_with_oracle_cut_size=update_with_oracle_cut_size,
        beam_update_prob=beam_update_prob,
        incorrect_spans_key=incorrect_spans_key,
        scorer=scorer,
        beam_width=beam_width,
        beam_density=beam_density,
        normalize=normalize,
        temperature=temperature,
        decode=decode,
        precision_threshold=precision_threshold,
        fused=fused,
        span_threshold=span_threshold,
        spans_key=spans_key,
        spans_layout=spans_layout,
        spans_allow_overlap=spans_allow_overlap,
    )


def accelerate(nlp: Language, **settings: Any) -> Language:
    """Swap every ``ner``/``beam_ner`` component of ``nlp`` for
    :class:`BeamnerEntityRecognizer` in place, sharing its weights and moves,
    and return ``nlp``. ``settings`` (cfg keys of
    :class:`~beamner.engine.settings.BeamSettings`: ``beam_width``,
    ``beam_density``, ``normalize``, ``spans_key``, ...) override the
    component's, in its cfg and in the pipeline's config, so ``nlp.to_disk``
    and ``spacy.load`` serve them. A greedy component's density 0 is not
    inherited (the default density is used). The pipeline then saves with
    factory ``beamner_ner``."""
    BeamSettings.check_cfg_keys(settings)
    found = False
    for i, (name, pipe) in enumerate(nlp._components):
        if isinstance(pipe, BeamnerEntityRecognizer):
            pipe.cfg.update(BeamSettings.from_pipe(pipe, updates=settings).to_cfg())
        elif isinstance(pipe, EntityRecognizer):
            pipe = BeamnerEntityRecognizer.from_pipe(pipe, **settings)
            nlp._components[i] = (name, pipe)
            nlp._pipe_meta[name] = nlp.get_factory_meta("beamner_ner")
        else:
            continue
        found = True
        config = {**nlp._pipe_configs[name], "factory": "beamner_ner"}
        config["beam_update_prob"] = pipe.cfg["beam_update_prob"]
        config.update({key: pipe.cfg[key] for key in CONFIG_SETTINGS})
        nlp._pipe_configs[name] = Config(config)
    if not found:
        raise ValueError(
            "accelerate found no 'ner' or 'beam_ner' component in the pipeline "
            f"(components: {nlp.component_names})"
        )
    return nlp
