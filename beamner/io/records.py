"""Inputs, outputs and the streaming commands ``annotate`` and ``rank``.

Input formats (``fmt="auto"`` picks by extension):

* ``jsonl`` (``.jsonl``/``.json``): one JSON object a line with a ``"text"``
  string; every other key is kept in the output.
* ``text``: one document a line (an empty line is an empty document, so
  output line *n* belongs to input line *n*).
* ``spacy`` (``.spacy``): a DocBin; its tokenization is kept, its
  annotations are not (gold entities would otherwise be preset entities).

Spans in the output follow Prodigy's convention: ``start``/``end`` are
character offsets (end exclusive), ``token_start``/``token_end`` token
indices with ``token_end`` *inclusive*.
"""

from __future__ import annotations

import heapq
import importlib
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span

from beamner._core import BeamBatch
from beamner.calibration import entity_probabilities, parse_probabilities
from beamner.pipeline import accelerate
from beamner.search import beam_search, find_ner

__all__ = [
    "InputError",
    "Record",
    "annotate",
    "count_records",
    "load_model",
    "ner_name",
    "rank",
    "read_records",
    "span_json",
]

FORMATS = ("auto", "jsonl", "text", "spacy")
_ANNOTATE_KEY = "beamner_annotate"


class InputError(ValueError):
    """A bad input line; the message starts with ``path:line:``."""


@dataclass
class Record:
    """One input document: its 1-based ``line`` (doc index for a DocBin), the
    text, the other JSON keys, and for DocBin input the tokenized words."""

    line: int
    text: str
    extra: dict[str, Any] = field(default_factory=dict)
    words: list[str] | None = None
    spaces: list[bool] | None = None

    def make_doc(self, nlp: Language) -> Doc | str:
        """What ``nlp.pipe`` gets: the text, or a fresh unannotated Doc."""
        if self.words is None:
            return self.text
        return Doc(nlp.vocab, words=self.words, spaces=self.spaces)


def _format_of(path: str | os.PathLike[str], fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".spacy":
        return "spacy"
    return "text"


def _open_binary(path: str | os.PathLike[str]) -> IO[bytes]:
    if str(path) == "-":
        return sys.stdin.buffer
    return open(path, "rb")


def read_records(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    skip_invalid: bool = False,
    invalid: list[int] | None = None,
) -> Iterator[Record]:
    """Stream the records of ``path`` (``"-"``: stdin, JSONL or text).

    A bad line (undecodable UTF-8, bad JSON, not an object, no string
    ``"text"``) raises :class:`InputError` naming the line, or with
    ``skip_invalid`` is skipped and its line number appended to ``invalid``.
    """
    fmt = _format_of(path, fmt)
    if fmt == "spacy":
        if str(path) == "-":
            raise ValueError("a .spacy DocBin cannot be read from stdin")
        nlp_vocab = Language().vocab
        docbin = DocBin().from_disk(Path(path))
        for i, doc in enumerate(docbin.get_docs(nlp_vocab), start=1):
            yield Record(
                i,
                doc.text,
                words=[t.text for t in doc],
                spaces=[bool(t.whitespace_) for t in doc],
            )
        return
    f = _open_binary(path)
    try:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield _parse_line(raw, fmt, lineno)
            except InputError as err:
                if not skip_invalid:
                    raise InputError(f"{path}:{err}") from None
                if invalid is not None:
                    invalid.append(lineno)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _parse_line(raw: bytes, fmt: str, lineno: int) -> Record:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{lineno}: not UTF-8 ({err.reason} at byte {err.start})") from None
    line = line.rstrip("\n").rstrip("\r")
    if fmt == "text":
        return Record(lineno, line)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{lineno}: not JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{lineno}: expected a JSON object, got {type(obj).__name__}")
    text = obj.pop("text", None)
    if not isinstance(text, str):
        got = "nothing" if text is None else type(text).__name__
        raise InputError(f'{lineno}: expected a "text" string, got {got}')
    return Record(lineno, text, obj)


def count_records(path: str | os.PathLike[str], fmt: str = "auto") -> int | None:
    """Lines (docs for a DocBin) in ``path``, for a progress bar; ``None`` for stdin."""
    if str(path) == "-":
        return None
    if _format_of(path, fmt) == "spacy":
        return len(DocBin().from_disk(Path(path)))
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _count_and_repair_output(path: Path) -> int:
    """Complete lines in ``path``; a partial last line (an interrupted write) is cut off."""
    if not path.exists():
        return 0
    n = 0
    end = 0  # offset after the last newline
    offset = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            k = chunk.rfind(b"\n")
            if k >= 0:
                end = offset + k + 1
            n += chunk.count(b"\n")
            offset += len(chunk)
    if end != offset:
        with open(path, "r+b") as f:
            f.truncate(end)
    return n


def load_model(model: str | os.PathLike[str] | Language, gpu_id: int = -1) -> Language:
    """``spacy.load`` (package name or path), on GPU ``gpu_id`` when >= 0."""
    import spacy
    from thinc.api import require_gpu

    if isinstance(model, Language):
        return model
    if gpu_id >= 0:
        require_gpu(gpu_id)  # what spacy.require_gpu is
    return spacy.load(model if isinstance(model, str) else Path(model))


def ner_name(nlp: Language) -> str:
    """Name of the pipeline's (first) entity recognizer."""
    pipe = find_ner(nlp)
    for name, component in nlp.components:
        if component is pipe:
            return str(name)
    raise ValueError("entity recognizer not found among the components")  # pragma: no cover


def upstream_disabled(nlp: Language) -> list[str]:
    """Components to disable to run everything before the NER."""
    names = list(nlp.pipe_names)
    return names[names.index(ner_name(nlp)) :]


def span_json(span: Span, score: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "start": span.start_char,
        "end": span.end_char,
        "token_start": span.start,
        "token_end": span.end - 1,
        "label": span.label_,
    }
    if score is not None:
        out["score"] = round(float(score), 6)
    return out


def _progress(total: int | None, progress: bool | None, desc: str) -> Any:
    tqdm = importlib.import_module("tqdm").tqdm  # untyped

    enabled = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, disable=not enabled, desc=desc, unit="doc", file=sys.stderr)


class _Output:
    """JSONL writer: a file (appended to on resume) or stdout; flushed on request."""

    def __init__(self, output: str | os.PathLike[str] | None, resume: bool) -> None:
        self.already = 0
        if output is None or str(output) == "-":
            if resume:
                raise ValueError("--resume needs an --output file")
            self.f: IO[str] = sys.stdout
            self.own = False
        else:
            path = Path(output)
            if resume:
                self.already = _count_and_repair_output(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "a" if resume else "w", encoding="utf-8")
            self.own = True

    def write(self, obj: dict[str, Any]) -> None:
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.flush()
        if self.own:
            self.f.close()


@dataclass
class RunSummary:
    """What a streaming command did."""

    written: int = 0
    skipped_resume: int = 0
    invalid_lines: list[int] = field(default_factory=list)

    @property
    def n_invalid(self) -> int:
        return len(self.invalid_lines)


def _chunks(
    records: Iterator[Record], size: int
) -> Iterator[tuple[list[Record], InputError | None]]:
    """Batches of ``size`` records; a batch cut short by a bad line comes with its error
    (so everything before the bad line is still processed and written)."""
    while True:
        chunk: list[Record] = []
        try:
            for record in records:
                chunk.append(record)
                if len(chunk) >= size:
                    break
        except InputError as err:
            yield chunk, err
            return
        if chunk:
            yield chunk, None
        if len(chunk) < size:
            return


def _skip(records: Iterator[Record], n: int) -> Iterator[Record]:
    for i, record in enumerate(records):
        if i >= n:
            yield record


def annotate(
    model: str | os.PathLike[str] | Language,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "auto",
    beam_width: int = 16,
    beam_density: float = 0.0001,
    threshold: float = 0.1,
    batch_size: int = 64,
    gpu_id: int = -1,
    skip_invalid: bool = False,
    resume: bool = False,
    progress: bool | None = None,
) -> RunSummary:
    """Annotate ``input`` with ``model``'s beam and write JSONL to ``output``
    (stdout when ``None``): every input key, ``text``, ``ents`` (the best
    parse, with each entity's probability as ``score``) and ``spans`` (every
    candidate entity with probability >= ``threshold``, highest first).

    Streams: ``nlp.pipe`` over a generator, each line written as it comes and
    the file flushed after every batch of ``batch_size`` docs; a bad line
    raises :class:`InputError` after everything before it is written.
    ``resume`` counts the complete
    lines already in ``output`` and skips that many (valid) inputs."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    nlp = load_model(model, gpu_id)
    accelerate(
        nlp,
        beam_width=beam_width,
        beam_density=beam_density,
        spans_key=_ANNOTATE_KEY,
        span_threshold=0.0,
    )
    summary = RunSummary()
    out = _Output(output, resume)
    summary.skipped_resume = out.already
    records = _skip(
        read_records(input, fmt, skip_invalid=skip_invalid, invalid=summary.invalid_lines),
        out.already,
    )
    total = count_records(input, fmt) if progress is not False else None
    bar = _progress(None if total is None else max(total - out.already, 0), progress, "annotate")
    try:
        for chunk, error in _chunks(records, batch_size):
            docs = nlp.pipe([r.make_doc(nlp) for r in chunk], batch_size=batch_size)
            for doc, record in zip(docs, chunk):
                out.write(_annotation(doc, record, threshold))
            out.flush()
            summary.written += len(chunk)
            bar.update(len(chunk))
            if error is not None:
                written = summary.skipped_resume + summary.written
                raise InputError(
                    f"{error} ({written} docs are in the output; fix the line and rerun "
                    "with --resume, or use --skip-invalid)"
                ) from None
    finally:
        bar.close()
        out.close()
    return summary


def _annotation(doc: Doc, record: Record, threshold: float) -> dict[str, Any]:
    group = doc.spans[_ANNOTATE_KEY]
    scores = group.attrs.get("scores", [])
    probs = {(s.start, s.end, s.label_): float(p) for s, p in zip(group, scores)}
    spans = sorted(
        ((span, float(p)) for span, p in zip(group, scores) if p >= threshold),
        key=lambda item: (-item[1], item[0].start, item[0].end, item[0].label_),
    )
    del doc.spans[_ANNOTATE_KEY]
    obj: dict[str, Any] = {"text": doc.text, **record.extra}
    obj["ents"] = [span_json(e, probs.get((e.start, e.end, e.label_))) for e in doc.ents]
    obj["spans"] = [span_json(span, p) for span, p in spans]
    return obj


# --- beam over a stream of docs (rank, evaluate) ----------------------------------------


@dataclass
class BeamDoc:
    """One doc's finished beam: parse probabilities (temperature applied), each
    parse's entities as ``(start, end, label)`` strings (label-less blocked
    spans dropped), and entity probabilities."""

    doc: Doc
    scores: list[float]
    probabilities: list[float]
    parses: list[list[tuple[int, int, str]]]
    entities: dict[tuple[int, int, str], float]


def beam_docs(
    pipe: Any, docs: Sequence[Doc], width: int, density: float, temperature: float = 1.0
) -> list[BeamDoc]:
    """Run the beam over ``docs`` (already through the pipes before the NER)."""
    batch: BeamBatch = beam_search(pipe, docs, width, density)
    strings = pipe.vocab.strings
    out = []
    for i, doc in enumerate(docs):
        parses = batch.parses(i)
        scores = [p.score for p in parses]
        probs = parse_probabilities(scores, temperature).tolist()
        ents = [[(s, e, strings[lab]) for s, e, lab in p.entities if lab != 0] for p in parses]
        ent_probs = {
            (s, e, strings[lab]): prob
            for (s, e, lab), prob in entity_probabilities(batch, i, temperature).items()
            if lab != 0
        }
        out.append(BeamDoc(doc, scores, probs, ents, ent_probs))
    return out


def _batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def uncertainty_scores(beam: BeamDoc) -> dict[str, float]:
    """``entropy`` of the beam's parse distribution (nats), ``margin``
    (``1 - (p1 - p2)``, 0 with a single parse) and ``uncertainty`` (the
    largest ``1 - |2p - 1|`` over candidate entities: 1 at p = 0.5)."""
    p = sorted(beam.probabilities, reverse=True)
    entropy = -sum(x * math.log(x) for x in p if x > 0.0)
    margin = 1.0 - (p[0] - p[1]) if len(p) > 1 else 0.0
    uncertainty = max((1.0 - abs(2.0 * x - 1.0) for x in beam.entities.values()), default=0.0)
    return {"entropy": entropy, "margin": margin, "uncertainty": uncertainty}


STRATEGIES = ("uncertainty", "entropy", "margin")


def rank(
    model: str | os.PathLike[str] | Language,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "auto",
    strategy: str = "uncertainty",
    unit: str = "doc",
    top: int | None = None,
    beam_width: int = 16,
    beam_density: float = 0.0001,
    threshold: float = 0.05,
    batch_size: int = 64,
    gpu_id: int = -1,
    skip_invalid: bool = False,
    progress: bool | None = None,
) -> RunSummary:
    """Order ``input`` for annotation, most uncertain first (like Prodigy's
    ``ner.teach``), and write JSONL tasks: the input keys, ``text``,
    ``spans`` (candidates >= ``threshold`` with ``score``) and ``meta``
    (input ``meta`` plus ``score``, ``entropy``, ``margin``, ``uncertainty``).

    ``strategy``: ``uncertainty`` (an entity probability near 0.5),
    ``entropy`` (of the beam) or ``margin`` (small gap between the two best
    parses). ``unit="entity"``: one task per candidate span, scored
    ``1 - |2p - 1|``. ``top``: keep only the best ``top`` tasks (memory
    bounded by ``top``); otherwise every task is held to be sorted."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if unit not in ("doc", "entity"):
        raise ValueError(f"unit must be 'doc' or 'entity', got {unit!r}")
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    nlp = load_model(model, gpu_id)
    pipe = find_ner(nlp)
    temperature = float(pipe.cfg.get("temperature", 1.0))
    disabled = upstream_disabled(nlp)
    summary = RunSummary()
    records = read_records(input, fmt, skip_invalid=skip_invalid, invalid=summary.invalid_lines)
    heap: list[tuple[float, int, dict[str, Any]]] = []
    counter = 0
    bar = _progress(count_records(input, fmt) if progress is not False else None, progress, "rank")
    try:
        for chunk in _batched(records, batch_size):
            docs = list(nlp.pipe((r.make_doc(nlp) for r in chunk), disable=disabled))
            beams = beam_docs(pipe, docs, beam_width, beam_density, temperature)
            for record, beam in zip(chunk, beams):
                for score, task in _tasks(record, beam, strategy, unit, threshold):
                    item = (score, -counter, task)  # ties: input order
                    counter += 1
                    if top is None or len(heap) < top:
                        heapq.heappush(heap, item)
                    else:
                        heapq.heappushpop(heap, item)
            bar.update(len(chunk))
    finally:
        bar.close()
    out = _Output(output, resume=False)
    try:
        for _, _, task in sorted(heap, key=lambda item: (-item[0], -item[1])):
            out.write(task)
            summary.written += 1
    finally:
        out.close()
    return summary


def _tasks(
    record: Record, beam: BeamDoc, strategy: str, unit: str, threshold: float
) -> Iterator[tuple[float, dict[str, Any]]]:
    doc = beam.doc
    scores = uncertainty_scores(beam)
    meta_in = record.extra.get("meta")
    base_meta: dict[str, Any] = dict(meta_in) if isinstance(meta_in, dict) else {}
    extra = {k: v for k, v in record.extra.items() if k not in ("meta", "spans")}
    candidates = sorted(beam.entities.items(), key=lambda kv: (-kv[1], kv[0]))

    def span_of(key: tuple[int, int, str], prob: float) -> dict[str, Any]:
        start, end, label = key
        return span_json(Span(doc, start, end, label=label), prob)

    if unit == "entity":
        for key, prob in candidates:
            if prob < threshold:
                continue
            score = 1.0 - abs(2.0 * prob - 1.0)
            meta = {**base_meta, **scores, "score": score, "line": record.line}
            yield score, {"text": doc.text, **extra, "spans": [span_of(key, prob)], "meta": meta}
        return
    score = scores[strategy]
    spans = [span_of(key, prob) for key, prob in candidates if prob >= threshold]
    meta = {**base_meta, **scores, "score": score, "line": record.line}
    yield score, {"text": doc.text, **extra, "spans": spans, "meta": meta}
