"""The Python API on Dask's own collection: ``annotate_bag`` / ``rank_bag`` take a
``dask.bag.Bag`` of texts (or dicts with a ``"text"``) and return a lazy bag,
partition for partition, in the input's order."""

from __future__ import annotations

from typing import Any

from beamner.cluster.workers import (
    PipelineSpec,
    annotate_records,
    rank_records,
    records_from_items,
)

__all__ = ["annotate_bag", "rank_bag"]


def _annotate_partition(
    items: Any, spec: PipelineSpec, threshold: float, batch_size: int
) -> list[dict[str, Any]]:
    import json

    lines = annotate_records(spec, records_from_items(list(items)), threshold, batch_size)
    return [json.loads(line) for line in lines]


def _rank_partition(
    items: Any,
    spec: PipelineSpec,
    strategy: str,
    unit: str,
    threshold: float,
    batch_size: int,
) -> list[dict[str, Any]]:
    import json

    tasks = rank_records(
        spec, records_from_items(list(items)), strategy, unit, threshold, None, batch_size
    )
    return [json.loads(line) for _, line in tasks]


def annotate_bag(
    bag: Any,
    model: str,
    *,
    beam_width: int = 16,
    beam_density: float = 0.0001,
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
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = PipelineSpec(str(model), "annotate", beam_width, beam_density, gpu_id, normalize)
    return bag.map_partitions(_annotate_partition, spec, threshold, batch_size)


def rank_bag(
    bag: Any,
    model: str,
    *,
    strategy: str = "uncertainty",
    unit: str = "doc",
    beam_width: int = 16,
    beam_density: float = 0.0001,
    threshold: float = 0.05,
    batch_size: int = 64,
    gpu_id: int = -1,
    normalize: str | None = None,
) -> Any:
    """A bag of annotation tasks as :func:`beamner.jobs.rank` writes them, in input
    order, each with ``meta.score`` (its ``meta.line`` counts within the partition:
    give items an id key to find them again). Order them with the engine, e.g.
    ``bag.topk(100, key=lambda t: t["meta"]["score"])``."""
    from beamner.jobs.rank import STRATEGIES

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if unit not in ("doc", "entity"):
        raise ValueError(f"unit must be 'doc' or 'entity', got {unit!r}")
    spec = PipelineSpec(str(model), "rank", beam_width, beam_density, gpu_id, normalize)
    return bag.map_partitions(_rank_partition, spec, strategy, unit, threshold, batch_size)
