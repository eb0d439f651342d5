"""``rank``: order unlabelled records for annotation, most uncertain first."""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator
from typing import Any

from spacy.language import Language
from spacy.tokens import Span

from beamner.engine.pipes import find_ner, load_model, upstream_disabled
from beamner.io.records import (
    JsonlWriter,
    Record,
    RunSummary,
    batched,
    count_records,
    progress_bar,
    read_records,
    span_json,
)
from beamner.probabilities.beams import BeamDoc, beam_docs, pipe_normalize, uncertainty_scores

__all__ = ["STRATEGIES", "rank"]

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
    normalize: str | None = None,
) -> RunSummary:
    """Order ``input`` for annotation, most uncertain first (like Prodigy's
    ``ner.teach``), and write JSONL tasks: the input keys, ``text``,
    ``spans`` (candidates >= ``threshold`` with ``score``) and ``meta``
    (input ``meta`` plus ``score``, ``entropy``, ``margin``, ``uncertainty``).
    ``normalize``: the beam's ``"none"``/``"local"`` (``None``: the component's);
    under ``"local"`` spans carry ``bounds`` and ``meta`` the beam's ``coverage``.

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
    normalize = pipe_normalize(pipe, normalize)
    temperature = float(pipe.cfg.get("temperature", 1.0))
    disabled = upstream_disabled(nlp)
    summary = RunSummary()
    records = read_records(input, fmt, skip_invalid=skip_invalid, invalid=summary.invalid_lines)
    heap: list[tuple[float, int, dict[str, Any]]] = []
    counter = 0
    total = count_records(input, fmt) if progress is not False else None
    bar = progress_bar(total, progress, "rank")
    try:
        for chunk in batched(records, batch_size):
            docs = list(nlp.pipe((r.make_doc(nlp) for r in chunk), disable=disabled))
            beams = beam_docs(
                pipe, docs, beam_width, beam_density, temperature, normalize=normalize
            )
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
    out = JsonlWriter(output, resume=False)
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
        out = span_json(Span(doc, start, end, label=label), prob)
        if beam.bounds is not None and key in beam.bounds:  # normalize="local"
            out["bounds"] = [round(float(b), 6) for b in beam.bounds[key]]
        return out

    if beam.coverage is not None:
        scores = {**scores, "coverage": beam.coverage}

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
