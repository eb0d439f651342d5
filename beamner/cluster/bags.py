"""The Python API on Dask's own collection: ``annotate_bag`` / ``rank_bag`` take a
``dask.bag.Bag`` of texts (or dicts with a ``"text"``) and return a lazy bag,
partition for partition, in the input's order."""

from __future__ import annotations

import json
from typing import Any

from beamner.cluster.workers import PipelineSpec, annotate_partition, rank_partition
from beamner.io.records import records_from_items
from beamner.jobs.runners import (
    DEFAULT_SETTINGS,
    AnnotateOptions,
    Failure,
    RankOptions,
    check_batch_size,
)

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


def annotate_bag(
    bag: Any,
    model: str,
    *,
    beam_width: int = DEFAULT_SETTINGS.width,
    beam_density: float = DEFAULT_SETTINGS.density,
    threshold: float = 0.1,
    batch_size: int = 64,
    gpu_id: int = -1,
    normalize: str | None = None,
) -> Any:
    """A bag of the annotations :func:`beamner.jobs.annotate` writes (dicts: the
    item's keys, ``text``, ``ents``, ``spans``), one per item, in order. Each
    partition runs on one worker with that worker's cached pipeline, in batches of
    ``batch_size``; the scores equal the single-machine run's when partitions are
    multiples of ``batch_size`` (``bag.repartition`` or ``db.from_sequence(...,
    partition_size=k * batch_size)``)."""
    options = AnnotateOptions(threshold)
    check_batch_size(batch_size)
    spec = PipelineSpec(str(model), "annotate", beam_width, beam_density, gpu_id, normalize)
    return bag.map_partitions(_annotate_partition, spec, options, batch_size)


def rank_bag(
    bag: Any,
    model: str,
    *,
    strategy: str = "uncertainty",
    unit: str = "doc",
    beam_width: int = DEFAULT_SETTINGS.width,
    beam_density: float = DEFAULT_SETTINGS.density,
    threshold: float = 0.05,
    batch_size: int = 64,
    gpu_id: int = -1,
    normalize: str | None = None,
) -> Any:
    """A bag of annotation tasks as :func:`beamner.jobs.rank` writes them, in input
    order, each with ``meta.score`` (its ``meta.line`` counts within the partition:
    give items an id key to find them again). Order them with the engine, e.g.
    ``bag.topk(100, key=lambda t: t["meta"]["score"])``."""
    options = RankOptions(strategy, unit, threshold)
    check_batch_size(batch_size)
    spec = PipelineSpec(str(model), "rank", beam_width, beam_density, gpu_id, normalize)
    return bag.map_partitions(_rank_partition, spec, options, batch_size)
