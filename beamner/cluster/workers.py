"""What runs on a Dask worker: one loaded pipeline per worker process, and the
functions that turn a partition of records into output lines.

The functions are plain module-level functions (Dask pickles them by
reference), so a worker imports beamner and loads the pipeline the first time
a partition of a job reaches it; every later partition of any job with the
same :class:`PipelineSpec` reuses it. A restarted worker (after a crash)
loads it again on its first partition."""

from __future__ import annotations

import heapq
import json
import os
import threading
from dataclasses import dataclass
from typing import Any

from spacy.language import Language

from beamner.io.records import Record, batched

__all__ = [
    "PipelineSpec",
    "annotate_records",
    "loads_in_this_process",
    "rank_records",
    "worker_pipeline",
]

ANNOTATE_KEY = "beamner_annotate"  # the spans key beamner.jobs.annotate uses


@dataclass(frozen=True)
class PipelineSpec:
    """Everything that decides which pipeline a job needs: ``model`` (an installed
    package name or a path every worker can read), the beam settings and the job
    (``annotate`` swaps in beamner's component with a spans key; ``rank`` scores
    beams of the pipeline's own NER)."""

    model: str
    job: str
    beam_width: int = 16
    beam_density: float = 0.0001
    gpu_id: int = -1
    normalize: str | None = None  # None: the component's own setting

    def __post_init__(self) -> None:
        if self.job not in ("annotate", "rank"):
            raise ValueError(f"job must be 'annotate' or 'rank', got {self.job!r}")
        if self.normalize is not None:
            from beamner.engine.search import check_normalize

            check_normalize(self.normalize)


_pipelines: dict[PipelineSpec, Language] = {}
_lock = threading.Lock()
_loads = 0


def worker_pipeline(spec: PipelineSpec) -> Language:
    """The pipeline for ``spec`` in this process, loaded on first use and kept.

    A lock makes a worker with several threads load it once; the pipeline is then
    shared by its threads (beamner's component is thread-safe; one thread per
    worker process is still what scales, see the README)."""
    global _loads
    with _lock:
        nlp = _pipelines.get(spec)
        if nlp is None:
            from beamner.engine.pipes import load_model

            nlp = load_model(spec.model, spec.gpu_id)
            if spec.job == "annotate":
                from beamner.pipeline import accelerate

                accelerate(
                    nlp,
                    beam_width=spec.beam_width,
                    beam_density=spec.beam_density,
                    spans_key=ANNOTATE_KEY,
                    span_threshold=0.0,
                    **({} if spec.normalize is None else {"normalize": spec.normalize}),
                )
            _pipelines[spec] = nlp
            _loads += 1
        return nlp


def loads_in_this_process() -> dict[str, int]:
    """Pipelines loaded by this process so far, and its process id (for tests and
    the benchmark: ``client.run(loads_in_this_process)``)."""
    return {"pid": os.getpid(), "loads": _loads, "cached": len(_pipelines)}


def annotate_records(
    spec: PipelineSpec, records: list[Record], threshold: float, batch_size: int
) -> list[str]:
    """The JSONL lines (newline included) :func:`beamner.jobs.annotate` writes for
    ``records``: the same batches of ``batch_size`` from the partition's start, the
    same JSON. The caller makes partitions multiples of ``batch_size`` so that
    every batch is the one the single-machine run makes."""
    from beamner.jobs.annotate import _annotation

    nlp = worker_pipeline(spec)
    lines: list[str] = []
    for chunk in batched(records, batch_size):
        docs = nlp.pipe([r.make_doc(nlp) for r in chunk], batch_size=batch_size)
        for doc, record in zip(docs, chunk):
            obj = _annotation(doc, record, threshold)
            lines.append(json.dumps(obj, ensure_ascii=False) + "\n")
    return lines


def rank_records(
    spec: PipelineSpec,
    records: list[Record],
    strategy: str,
    unit: str,
    threshold: float,
    top: int | None,
    batch_size: int,
) -> list[tuple[float, str]]:
    """``(score, JSONL line)`` for each task of ``records`` in input order, as
    :func:`beamner.jobs.rank` scores them; with ``top`` only this partition's best
    ``top`` (ties: input order), which is all the global top can take from it."""
    from beamner.engine.pipes import find_ner, upstream_disabled
    from beamner.jobs.rank import _tasks
    from beamner.probabilities.beams import beam_docs, pipe_normalize

    nlp = worker_pipeline(spec)
    pipe = find_ner(nlp)
    normalize = pipe_normalize(pipe, spec.normalize)
    temperature = float(pipe.cfg.get("temperature", 1.0))
    disabled = upstream_disabled(nlp)
    tasks: list[tuple[float, str]] = []
    for chunk in batched(records, batch_size):
        docs = list(nlp.pipe((r.make_doc(nlp) for r in chunk), disable=disabled))
        beams = beam_docs(
            pipe, docs, spec.beam_width, spec.beam_density, temperature, normalize=normalize
        )
        for record, beam in zip(chunk, beams):
            for score, task in _tasks(record, beam, strategy, unit, threshold):
                tasks.append((score, json.dumps(task, ensure_ascii=False) + "\n"))
    if top is not None and len(tasks) > top:
        best = heapq.nsmallest(top, range(len(tasks)), key=lambda i: (-tasks[i][0], i))
        tasks = [tasks[i] for i in sorted(best)]
    return tasks


def records_from_items(items: list[Any], first_line: int = 1) -> list[Record]:
    """Records from a bag partition's items: a string is a text, a dict needs a
    ``"text"`` string (its other keys are kept, as for JSONL input)."""
    records: list[Record] = []
    for i, item in enumerate(items, start=first_line):
        if isinstance(item, str):
            records.append(Record(i, item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            extra = {k: v for k, v in item.items() if k != "text"}
            records.append(Record(i, item["text"], extra))
        else:
            got = type(item).__name__
            raise ValueError(
                f'bag item {i}: expected a string or a dict with a "text" string, got {got}'
            )
    return records
