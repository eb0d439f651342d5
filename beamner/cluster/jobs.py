"""``annotate`` and ``rank`` over a record file on a Dask cluster.

The client reads the input (so bad lines are reported as in the single-machine
jobs, ``path:line:``), cuts the records into partitions of
``partition_size`` (a multiple of ``batch_size``, so every batch the engine
sees is the one :func:`beamner.jobs.annotate` would make) and keeps a bounded
window of partitions in flight. Each finished partition is written whole to
``<output>.parts/part-NNNNNN.jsonl`` (a temporary file renamed into place), so:

* a worker that dies mid-partition loses nothing: Dask runs the partition again
  on another worker, and the part file is written once, whole, under its index
  (a partition computed twice writes the same name with the same bytes);
* an interrupted job (client killed, a task that kept failing) resumes with
  ``resume=True``: partitions with a part file are not sent again;
* at the end the parts are concatenated in input order into ``<output>``
  (written to a temporary file, then renamed), and the parts directory removed.

Without an output file, results go to stdout in input order as they become
contiguous (no parts, no resume)."""

from __future__ import annotations

import heapq
import importlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from beamner.cluster.engine import connect
from beamner.cluster.workers import PipelineSpec, annotate_records, rank_records
from beamner.io.records import (
    InputError,
    Record,
    RunSummary,
    _count_and_repair_output,
    chunks,
    count_records,
    progress_bar,
    read_records,
    skip,
)

__all__ = ["annotate", "rank"]

_MANIFEST = "manifest.json"
# Partitions per worker thread kept in flight: enough to hide the round trip, few
# enough that the client holds little (records out, lines back).
_IN_FLIGHT_PER_WORKER = 2


def _model_name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return os.fspath(model)
    raise TypeError(
        "a cluster job needs the model as a package name or a path every worker can read, "
        f"not a {type(model).__name__} object"
    )


def _partition_size(batch_size: int, partition_size: int | None) -> int:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if partition_size is None:
        return batch_size * 16
    if partition_size < 1 or partition_size % batch_size:
        raise ValueError(
            f"partition_size must be a positive multiple of batch_size ({batch_size}), "
            f"got {partition_size}"
        )
    return partition_size


class _Parts:
    """``<output>.parts/``: the job's manifest and one file per finished partition.

    ``appends`` (annotate): the output keeps its first ``already`` lines (a resumed
    single-machine output) and the parts are appended to them."""

    def __init__(self, output: Path, params: dict[str, Any], resume: bool, appends: bool) -> None:
        self.output = output
        self.dir = output.with_name(output.name + ".parts")
        manifest_path = self.dir / _MANIFEST
        if self.dir.exists():
            if not manifest_path.exists():
                raise ValueError(f"{self.dir} exists and is not a beamner parts directory")
            if resume:
                found = json.loads(manifest_path.read_text(encoding="utf-8"))
                if found.get("params") != params:
                    raise ValueError(
                        f"{self.dir} was written by a job with other settings "
                        f"({found.get('params')}); rerun those, or without --resume"
                    )
                self.already = int(found["already"])
                if not appends:
                    return
                have = _count_and_repair_output(output)
                if have == self.already:
                    return
                in_parts = sum(_count_lines(self.path(i)) for i in self.indices())
                if have != self.already + in_parts:
                    raise ValueError(
                        f"{output} has {have} lines, its parts directory expects "
                        f"{self.already}: remove {self.dir} and rerun with --resume"
                    )
                # The last run's merge was renamed into place; only the cleanup was missed.
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.already = 0
        if resume and appends:  # as the single-machine job: skip as many inputs as lines
            self.already = _count_and_repair_output(output)
        self._write_atomic(
            manifest_path, json.dumps({"params": params, "already": self.already}) + "\n"
        )

    def path(self, index: int) -> Path:
        return self.dir / f"part-{index:06d}.jsonl"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def write(self, index: int, text: str) -> None:
        self._write_atomic(self.path(index), text)

    def indices(self) -> list[int]:
        found = sorted(int(p.stem[5:]) for p in self.dir.glob("part-*.jsonl"))
        if found != list(range(len(found))):
            raise ValueError(f"{self.dir}: parts missing between 0 and {found[-1]}")
        return found

    def remove(self) -> None:
        shutil.rmtree(self.dir)

    @staticmethod
    def _write_atomic(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


class _InOrder:
    """Completed partitions to stdout in input order."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.next = 0
        self.waiting: dict[int, str] = {}

    def write(self, index: int, text: str) -> None:
        self.waiting[index] = text
        while self.next in self.waiting:
            self.out.write(self.waiting.pop(self.next))
            self.out.flush()
            self.next += 1


def _run_partitions(
    client: Any,
    partitions: Iterator[tuple[int, list[Record]]],
    submit: Callable[[int, list[Record]], Any],
    finished: Callable[[int, Any, int], None],
) -> None:
    """Submit ``partitions`` with a bounded window; ``finished(index, result, n)``
    for each as it completes (any order). A task error propagates (after Dask's
    own retries); the part files already written stay for a resume."""
    as_completed = importlib.import_module("distributed").as_completed  # untyped

    slots = max(1, sum(client.nthreads().values()))  # worker threads, when the job starts
    window = max(2, _IN_FLIGHT_PER_WORKER * slots)
    pending = as_completed()
    meta: dict[str, tuple[int, int]] = {}

    def collect_one() -> None:
        future = next(pending)
        index, n = meta.pop(future.key)
        result = future.result()
        future.release()
        finished(index, result, n)

    for index, records in partitions:
        future = submit(index, records)
        meta[future.key] = (index, len(records))
        pending.add(future)
        while len(meta) >= window:
            collect_one()
    while meta:
        collect_one()


def _partitions(
    records: Iterator[Record], size: int, errors: list[InputError]
) -> Iterator[tuple[int, list[Record]]]:
    for index, (chunk, error) in enumerate(chunks(records, size)):
        if chunk:
            yield index, chunk
        if error is not None:
            errors.append(error)
            return


def annotate(
    model: str | os.PathLike[str],
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    cluster: Any = "local[2]",
    fmt: str = "auto",
    beam_width: int = 16,
    beam_density: float = 0.0001,
    threshold: float = 0.1,
    batch_size: int = 64,
    partition_size: int | None = None,
    gpu_id: int = -1,
    skip_invalid: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    normalize: str | None = None,
    retries: int = 1,
) -> RunSummary:
    """:func:`beamner.jobs.annotate` on a Dask cluster: the same JSONL, byte for
    byte, in input order. ``cluster``: a ``distributed.Client``, a scheduler
    address or file, or ``local[N]``. ``partition_size`` (default ``16 *
    batch_size``) docs go to a worker at a time. ``resume`` continues an
    interrupted run from its parts (or, with none, skips as many inputs as
    ``output`` has lines, as the single-machine job does)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    size = _partition_size(batch_size, partition_size)
    spec = PipelineSpec(_model_name(model), "annotate", beam_width, beam_density, gpu_id, normalize)
    params = {
        **spec.__dict__,
        "input": os.path.abspath(input) if str(input) != "-" else "-",
        "fmt": fmt,
        "threshold": threshold,
        "batch_size": batch_size,
        "partition_size": size,
        "skip_invalid": skip_invalid,
    }
    summary = RunSummary()
    sink: _Parts | _InOrder
    if output is None or str(output) == "-":
        if resume:
            raise ValueError("--resume needs an --output file")
        sink = _InOrder(sys.stdout)
        already = 0
    else:
        sink = _Parts(Path(output), params, resume, appends=True)
        already = sink.already
    summary.skipped_resume = already
    errors: list[InputError] = []
    records = skip(
        read_records(input, fmt, skip_invalid=skip_invalid, invalid=summary.invalid_lines),
        already,
    )
    total = count_records(input, fmt) if progress is not False else None
    bar = progress_bar(None if total is None else max(total - already, 0), progress, "annotate")
    job = uuid.uuid4().hex[:8]

    def todo() -> Iterator[tuple[int, list[Record]]]:
        for index, chunk in _partitions(records, size, errors):
            if isinstance(sink, _Parts) and sink.done(index):
                summary.skipped_resume += len(chunk)
                bar.update(len(chunk))
                continue
            yield index, chunk

    def finished(index: int, lines: list[str], n: int) -> None:
        sink.write(index, "".join(lines))
        summary.written += n
        bar.update(n)

    try:
        with connect(cluster) as client:
            _run_partitions(
                client,
                todo(),
                lambda index, chunk: client.submit(
                    annotate_records,
                    spec,
                    chunk,
                    threshold,
                    batch_size,
                    key=f"beamner-annotate-{job}-{index:06d}",
                    retries=retries,
                ),
                finished,
            )
    finally:
        bar.close()
    if isinstance(sink, _Parts):
        _merge_annotations(sink, already)
    if errors:
        written = summary.skipped_resume + summary.written
        raise InputError(
            f"{errors[0]} ({written} docs are in the output; fix the line and rerun "
            "with --resume, or use --skip-invalid)"
        ) from None
    return summary


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _merge_annotations(parts: _Parts, already: int) -> None:
    """``output`` = its first ``already`` lines + every part in order, renamed into place."""
    out = parts.output
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.merging")
    with open(tmp, "wb") as dst:
        if already:
            with open(out, "rb") as src:
                shutil.copyfileobj(src, dst)
        for index in parts.indices():
            with open(parts.path(index), "rb") as src:
                shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, out)
    parts.remove()


def rank(
    model: str | os.PathLike[str],
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    cluster: Any = "local[2]",
    fmt: str = "auto",
    strategy: str = "uncertainty",
    unit: str = "doc",
    top: int | None = None,
    beam_width: int = 16,
    beam_density: float = 0.0001,
    threshold: float = 0.05,
    batch_size: int = 64,
    partition_size: int | None = None,
    gpu_id: int = -1,
    skip_invalid: bool = False,
    resume: bool = False,
    progress: bool | None = None,
    normalize: str | None = None,
    retries: int = 1,
) -> RunSummary:
    """:func:`beamner.jobs.rank` on a Dask cluster: the same tasks in the same order,
    byte for byte. Each partition sends back its scored tasks (with ``top``, only its
    best ``top``); the client sorts them (score, then input order) at the end."""
    from beamner.jobs.rank import STRATEGIES

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if unit not in ("doc", "entity"):
        raise ValueError(f"unit must be 'doc' or 'entity', got {unit!r}")
    if top is not None and top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    size = _partition_size(batch_size, partition_size)
    spec = PipelineSpec(_model_name(model), "rank", beam_width, beam_density, gpu_id, normalize)
    params = {
        **spec.__dict__,
        "input": os.path.abspath(input) if str(input) != "-" else "-",
        "fmt": fmt,
        "strategy": strategy,
        "unit": unit,
        "top": top,
        "threshold": threshold,
        "batch_size": batch_size,
        "partition_size": size,
        "skip_invalid": skip_invalid,
    }
    summary = RunSummary()
    parts: _Parts | None = None
    if output is None or str(output) == "-":
        if resume:
            raise ValueError("--resume needs an --output file")
    else:
        parts = _Parts(Path(output), params, resume, appends=False)
    in_memory: dict[int, list[tuple[float, str]]] = {}
    errors: list[InputError] = []
    records = read_records(input, fmt, skip_invalid=skip_invalid, invalid=summary.invalid_lines)
    total = count_records(input, fmt) if progress is not False else None
    bar = progress_bar(total, progress, "rank")
    job = uuid.uuid4().hex[:8]

    def todo() -> Iterator[tuple[int, list[Record]]]:
        for index, chunk in _partitions(records, size, errors):
            if parts is not None and parts.done(index):
                bar.update(len(chunk))
                continue
            yield index, chunk

    def finished(index: int, tasks: list[tuple[float, str]], n: int) -> None:
        if parts is None:
            in_memory[index] = tasks
        else:
            parts.write(index, "".join(f"{score!r}\t{line}" for score, line in tasks))
        bar.update(n)

    try:
        with connect(cluster) as client:
            _run_partitions(
                client,
                todo(),
                lambda index, chunk: client.submit(
                    rank_records,
                    spec,
                    chunk,
                    strategy,
                    unit,
                    threshold,
                    top,
                    batch_size,
                    key=f"beamner-rank-{job}-{index:06d}",
                    retries=retries,
                ),
                finished,
            )
    finally:
        bar.close()
    if errors:
        raise errors[0]

    def scored() -> Iterator[tuple[float, str]]:
        if parts is None:
            for index in sorted(in_memory):
                yield from in_memory[index]
            return
        for index in parts.indices():
            with open(parts.path(index), encoding="utf-8") as f:
                for row in f:
                    score, line = row.split("\t", 1)
                    yield float(score), line

    # As beamner.jobs.rank: (score, -counter) in a heap bounded by top; ties in input order.
    heap: list[tuple[float, int, str]] = []
    for counter, (score, line) in enumerate(scored()):
        item = (score, -counter, line)
        if top is None or len(heap) < top:
            heapq.heappush(heap, item)
        else:
            heapq.heappushpop(heap, item)
    ordered = [line for _, _, line in sorted(heap, key=lambda item: (-item[0], -item[1]))]
    summary.written = len(ordered)
    if parts is None:
        sys.stdout.writelines(ordered)
        sys.stdout.flush()
        return summary
    out = parts.output
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex}.merging")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(ordered)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    parts.remove()
    return summary
