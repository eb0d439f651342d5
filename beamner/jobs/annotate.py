"""``annotate``: a pipeline's beam over a stream of records, written as JSONL."""

from __future__ import annotations

import os
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, Span

from beamner.engine.pipes import load_model
from beamner.engine.search import check_normalize
from beamner.io.records import (
    InputError,
    JsonlWriter,
    Record,
    RunSummary,
    chunks,
    count_records,
    progress_bar,
    read_records,
    skip,
    span_json,
)
from beamner.pipeline import accelerate

__all__ = ["annotate"]

_ANNOTATE_KEY = "beamner_annotate"


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
    normalize: str | None = None,
) -> RunSummary:
    """Annotate ``input`` with ``model``'s beam and write JSONL to ``output``
    (stdout when ``None``): every input key, ``text``, ``ents`` (the best
    parse, with each entity's probability as ``score``) and ``spans`` (every
    candidate entity with probability >= ``threshold``, highest first).

    Streams: ``nlp.pipe`` over a generator, each line written as it comes and
    the file flushed after every batch of ``batch_size`` docs; a bad line
    raises :class:`InputError` after everything before it is written.
    ``resume`` counts the complete
    lines already in ``output`` and skips that many (valid) inputs.

    ``normalize``: the beam's ``"none"`` or ``"local"`` (``None``: the
    component's own setting, ``"none"`` for spaCy pipelines). Under
    ``"local"`` every span also gets ``bounds`` ``[lower, upper]`` (the
    interval its marginal under the model lies in) and the line a
    ``coverage`` (the model probability the beam held)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if normalize is not None:
        check_normalize(normalize)
    nlp = load_model(model, gpu_id)
    accelerate(
        nlp,
        beam_width=beam_width,
        beam_density=beam_density,
        spans_key=_ANNOTATE_KEY,
        span_threshold=0.0,
        **({} if normalize is None else {"normalize": normalize}),
    )
    summary = RunSummary()
    out = JsonlWriter(output, resume)
    summary.skipped_resume = out.already
    records = skip(
        read_records(input, fmt, skip_invalid=skip_invalid, invalid=summary.invalid_lines),
        out.already,
    )
    total = count_records(input, fmt) if progress is not False else None
    bar = progress_bar(None if total is None else max(total - out.already, 0), progress, "annotate")
    try:
        for chunk, error in chunks(records, batch_size):
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
    # normalize="local": each candidate's bounds and the beam's coverage.
    bounds_of = {
        (s.start, s.end, s.label_): [round(float(lo), 6), round(float(hi), 6)]
        for s, (lo, hi) in zip(group, group.attrs.get("bounds", []))
    }
    coverage = group.attrs.get("coverage")
    spans = sorted(
        ((span, float(p)) for span, p in zip(group, scores) if p >= threshold),
        key=lambda item: (-item[1], item[0].start, item[0].end, item[0].label_),
    )
    del doc.spans[_ANNOTATE_KEY]

    def with_bounds(span: Span, out: dict[str, Any]) -> dict[str, Any]:
        key = (span.start, span.end, span.label_)
        if key in bounds_of:
            out["bounds"] = bounds_of[key]
        return out

    obj: dict[str, Any] = {"text": doc.text, **record.extra}
    obj["ents"] = [
        with_bounds(e, span_json(e, probs.get((e.start, e.end, e.label_)))) for e in doc.ents
    ]
    obj["spans"] = [with_bounds(span, span_json(span, p)) for span, p in spans]
    if coverage is not None:
        obj["coverage"] = round(float(coverage), 6)
    return obj
