"""The Python API on Dask's own collection: ``annotate_bag`` / ``rank_bag`` take a
``dask.bag.Bag`` of texts (or dicts with a ``"text"``) and return a lazy bag,
partition for partition, in the input's order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from beamner.cluster.workers import PipelineSpec, annotate_partition, rank_partition
from beamner.io.records import records_from_items
from beamner.jobs.options import AnnotateArgs, AnnotateJob, Job, RankArgs, RankJob
from beamner.jobs.runners import AnnotateOptions, Failure, RankOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

JobT = TypeVar("JobT", bound=Job)
# Options of a job over a file; a bag has none of them.
_FILE_OPTIONS = {"fmt", "skip_invalid", "resume", "overwrite", "progress", "top"}

__all__ = ["annotate_bag", "rank_bag"]


def _failed(failure: Failure) -> ValueError:
    return ValueError(f"item {failure.line} of a partition: {failure.reason}")


def _annotate_partition(
    items: Any, spec: PipelineSpec, options: AnnotateOptions, batch_size: int
) -> list[dict[str, Any]]:
    out = []
    for result in annotate_partition(spec, options, records_from_items(items), batch_size):
        if isinstance(result, Failure):
            raise _failed(result)
        out.append(json.loads(result))
    return out


def _rank_partition(
    items: Any, spec: PipelineSpec, options: RankOptions, batch_size: int
) -> list[dict[str, Any]]:
    tasks, failures = rank_partition(spec, options, records_from_items(items), batch_size)
    if failures:
        raise _failed(failures[0])
    return [json.loads(line) for _, line in tasks]


def _bag_job(kind: type[JobT], args: Mapping[str, Any]) -> JobT:
    """The job's options for a bag: those that name a file or a run do not apply."""
    given = sorted(set(args) & _FILE_OPTIONS)
    if given:
        raise TypeError(f"{', '.join(given)}: options of a file job, not of a bag")
    return kind(**args)


def annotate_bag(bag: Any, model: str, **args: Unpack[AnnotateArgs]) -> Any:
    """A bag of the annotations :func:`beamner.jobs.annotate` writes (dicts: the
    item's keys, ``text``, ``ents``, ``spans``), one per item, in order, with
    its beam and batch options (:class:`~beamner.jobs.options.AnnotateJob`).
    Each partition runs on one worker with that worker's cached pipeline, in
    batches of ``batch_size``; the scores equal the single-machine run's when
    partitions are multiples of ``batch_size`` (``bag.repartition`` or
    ``db.from_sequence(..., partition_size=k * batch_size)``)."""
    job = _bag_job(AnnotateJob, args)
    spec = PipelineSpec.for_job(str(model), "annotate", job)
    return bag.map_partitions(_annotate_partition, spec, job.options, job.batch_size)


def rank_bag(bag: Any, model: str, **args: Unpack[RankArgs]) -> Any:
    """A bag of annotation tasks as :func:`beamner.jobs.rank` writes them, in input
    order, each with ``meta.score`` (its ``meta.line`` counts within the partition:
    give items an id key to find them again), with its beam, batch and task
    options (:class:`~beamner.jobs.options.RankJob`). Order them with the
    engine, e.g. ``bag.topk(100, key=lambda t: t["meta"]["score"])``."""
    job = _bag_job(RankJob, args)
    spec = PipelineSpec.for_job(str(model), "rank", job)
    return bag.map_partitions(_rank_partition, spec, job.options, job.batch_size)
