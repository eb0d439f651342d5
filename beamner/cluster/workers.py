"""What runs on a Dask worker: one loaded pipeline per worker process, and the
functions that turn a partition of records into results.

The functions are plain module-level functions (Dask pickles them by
reference), so a worker imports beamner and loads the pipeline the first time
a partition of a job reaches it; every later partition of any job with the
same :class:`PipelineSpec` reuses it. A restarted worker (after a crash)
loads it again on its first partition. The work on each batch is the
single-machine job's own (:class:`~beamner.jobs.runners.Annotator`,
:class:`~beamner.jobs.runners.Ranker`), on the same batches."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

from spacy.language import Language

from beamner.engine.settings import BeamSettings
from beamner.io.records import Record, batched, json_line
from beamner.jobs.options import Job
from beamner.jobs.runners import (
    AnnotateOptions,
    Annotator,
    BatchRunner,
    Failure,
    Ranker,
    RankOptions,
    check_beam,
    job_settings,
    top_k,
)

__all__ = [
    "PipelineSpec",
    "annotate_partition",
    "loads_in_this_process",
    "rank_partition",
    "worker_max_length",
    "worker_pipeline",
]


@dataclass(frozen=True)
class PipelineSpec:
    """Everything that decides which pipeline a job needs: ``model`` (an installed
    package name or a path every worker can read), the beam settings and the job
    (``annotate`` swaps in beamner's component with a spans key; ``rank`` scores
    beams of the pipeline's own NER)."""

    model: str
    job: str
    beam_width: int = BeamSettings.width
    beam_density: float = BeamSettings.density
    gpu_id: int = -1
    normalize: str | None = None  # None: the component's own setting

    @classmethod
    def for_job(cls, model: str, name: str, job: Job) -> PipelineSpec:
        """The pipeline job ``name`` (annotate, rank) with options ``job`` needs."""
        return cls(model, name, job.beam_width, job.beam_density, job.gpu_id, job.normalize)

    def __post_init__(self) -> None:
        if self.job not in ("annotate", "rank"):
            raise ValueError(f"job must be 'annotate' or 'rank', got {self.job!r}")
        check_beam(self.beam_width, self.beam_density, self.normalize)


_pipelines: dict[PipelineSpec, Language] = {}
_runners: dict[tuple[PipelineSpec, Any], BatchRunner[Any]] = {}
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
            _pipelines[spec] = nlp
            _loads += 1
        return nlp


def _runner(spec: PipelineSpec, options: AnnotateOptions | RankOptions) -> BatchRunner[Any]:
    nlp = worker_pipeline(spec)
    with _lock:
        runner = _runners.get((spec, options))
        if runner is None:
            settings = job_settings(nlp, spec.beam_width, spec.beam_density, spec.normalize)
            if isinstance(options, AnnotateOptions):
                runner = Annotator(nlp, settings, options)
            else:
                runner = Ranker(nlp, settings, options)
            _runners[(spec, options)] = runner
        return runner


def loads_in_this_process() -> dict[str, int]:
    """Pipelines loaded by this process so far, and its process id (for tests and
    the benchmark: ``client.run(loads_in_this_process)``)."""
    return {"pid": os.getpid(), "loads": _loads, "cached": len(_pipelines)}


def worker_max_length(spec: PipelineSpec) -> int:
    """The ``max_length`` of the pipeline the workers run (what a resumed job
    needs to know which records made no line)."""
    return int(worker_pipeline(spec).max_length)


def annotate_partition(
    spec: PipelineSpec, options: AnnotateOptions, records: list[Record], batch_size: int
) -> list[str | Failure]:
    """For each record, the JSONL line (newline included) the single-machine
    job writes, or its :class:`~beamner.jobs.runners.Failure`: the same batches
    of ``batch_size`` from the partition's start. The caller makes partitions
    multiples of ``batch_size`` so every batch is the single-machine run's."""
    runner = _runner(spec, options)
    return [
        result if isinstance(result, Failure) else json_line(result)
        for batch in batched(records, batch_size)
        for result in runner.run(batch)
    ]


def rank_partition(
    spec: PipelineSpec, options: RankOptions, records: list[Record], batch_size: int
) -> tuple[list[tuple[float, str]], list[Failure]]:
    """``(score, JSONL line)`` of the partition's tasks in input order, or with
    ``options.top`` only its best ``top`` (all the global top can take from it),
    best first (ties in input order); and the records that failed."""
    runner = _runner(spec, options)
    tasks: list[tuple[float, str]] = []
    failures: list[Failure] = []
    for batch in batched(records, batch_size):
        for result in runner.run(batch):
            if isinstance(result, Failure):
                failures.append(result)
            else:
                tasks.extend((score, json_line(task)) for score, task in result)
    return (tasks if options.top is None else top_k(tasks, options.top)), failures
