"""``annotate`` and ``rank`` over a record file on a Dask cluster.

The client checks the output (:mod:`beamner.io.atomic`), opens the input, and
reads it (so bad lines are reported as in the single-machine jobs,
``path:line:``), cuts the records into partitions of ``partition_size`` (a
multiple of ``batch_size``, so every batch the engine sees is the one
:func:`beamner.jobs.annotate` would make) and keeps a bounded window of
partitions in flight. The workers run the single-machine jobs' own
:class:`~beamner.jobs.runners.Annotator` / :class:`~beamner.jobs.runners.Ranker`
on them. Each finished partition is written whole to
``<output>.parts/part-NNNNNN.jsonl`` (atomically), so:

* a worker that dies mid-partition loses nothing: Dask runs the partition again
  on another worker, and the part file is written once, whole, under its index
  (a partition computed twice writes the same name with the same bytes);
* an interrupted job (client killed, a task that kept failing) resumes with
  ``resume=True``: partitions with a part file are not sent again;
* at the end the parts are merged in input order into ``<output>`` (written
  beside it, then renamed), and the parts directory removed.

A bad record (without ``skip_invalid``) stops the job as on one machine: the
output gets the lines before it if it did not exist before; an output that
existed is left as it was and the finished parts are kept for ``resume``.
Without an output file, results go to stdout in input order as they become
contiguous (no parts, no resume)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from beamner.cluster.engine import DEFAULT_CONNECT_TIMEOUT, connect
from beamner.cluster.workers import (
    PipelineSpec,
    annotate_partition,
    rank_partition,
    worker_max_length,
)
from beamner.io.atomic import OutputError, atomic_file, atomic_write_text
from beamner.io.records import (
    Record,
    RunSummary,
    UntilBadLine,
    batched,
    complete_lines,
    copy_head,
    count_records,
    jsonl_output,
    progress_bar,
)
from beamner.jobs.annotate import stop_state
from beamner.jobs.options import AnnotateArgs, AnnotateJob, Job, RankArgs, RankJob
from beamner.jobs.runners import Failure, skip_done, stopped_at, top_k

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["annotate", "rank"]

_MANIFEST = "manifest.json"
# Partitions per worker thread kept in flight: enough to hide the round trip, few
# enough that the client holds little (records out, lines back).
_IN_FLIGHT_PER_WORKER = 2
# Job options that do not change what the parts hold.
_NOT_PARAMS = ("progress", "overwrite", "resume")


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

    ``already``: the lines of the existing output kept ahead of the parts (an
    annotate job resumed from a single-machine output)."""

    def __init__(self, output: Path, params: dict[str, Any], resume: bool) -> None:
        self.output = output
        self.dir = output.with_name(output.name + ".parts")
        self.params = params
        self.already = 0
        self.resumed = False
        self.created = False
        manifest = self.dir / _MANIFEST
        if not self.dir.exists():
            return
        if not manifest.is_file():
            raise OutputError(f"{self.dir} exists and was not written by beamner; move it away")
        if not resume:
            shutil.rmtree(self.dir)  # beamner's own leftovers of an earlier run
            return
        found = json.loads(manifest.read_text(encoding="utf-8"))
        if found.get("params") != params:
            raise ValueError(
                f"{self.dir} was written by a job with other settings "
                f"({found.get('params')}); rerun those, or without --resume"
            )
        self.already = int(found["already"])
        self.resumed = True

    def start(self, already: int) -> None:
        if self.resumed:
            return
        self.dir.mkdir(parents=True)
        self.created = True
        self.already = already
        manifest = {"params": self.params, "already": already}
        atomic_write_text(self.dir / _MANIFEST, json.dumps(manifest) + "\n")

    def path(self, index: int) -> Path:
        return self.dir / f"part-{index:06d}.jsonl"

    def done(self, index: int) -> bool:
        return self.path(index).exists()

    def write(self, index: int, text: str) -> None:
        atomic_write_text(self.path(index), text)

    def read(self, index: int) -> str:
        if not self.done(index):
            raise ValueError(f"{self.dir}: part {index} is missing; rerun without --resume")
        return self.path(index).read_text(encoding="utf-8")

    def merge(self, n: int, tail: str = "") -> None:
        """``output`` = its first ``already`` lines + parts ``0..n-1`` + ``tail``,
        renamed into place; then the parts are removed. Merging again gives the
        same file (a crash between the rename and the removal is harmless)."""
        with atomic_file(self.output, "wb") as dst:
            if self.already:
                have, nbytes = complete_lines(self.output, self.already)
                if have < self.already:
                    raise ValueError(
                        f"{self.output} has {have} lines, its parts directory expects "
                        f"{self.already}: remove {self.dir} and rerun"
                    )
                copy_head(self.output, nbytes, dst)
            for index in range(n):
                dst.write(self.read(index).encode("utf-8"))
            dst.write(tail.encode("utf-8"))
        self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def drop_after(self, index: int) -> None:
        """Remove the parts after ``index``: a resume after the input was fixed at
        a line of partition ``index`` (a line replaced, or deleted) recomputes them."""
        for path in self.dir.glob("part-*.jsonl"):
            if int(path.stem[5:]) > index:
                path.unlink()

    def drop_if_empty(self) -> None:
        """Remove a parts directory this run made and wrote no part to."""
        if self.created and not any(self.dir.glob("part-*.jsonl")):
            self.remove()


class _InOrder:
    """Completed partitions to stdout in input order."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.next = 0
        self.lines = 0
        self.waiting: dict[int, str] = {}

    def write(self, index: int, text: str) -> None:
        self.waiting[index] = text
        while self.next in self.waiting:
            self.write_now(self.waiting.pop(self.next))
            self.next += 1

    def write_now(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
        self.lines += text.count("\n")


@dataclass
class _Stop:
    """The earliest record a job stopped at: its partition, the failure, and the
    partition's lines before it."""

    index: int | None = None
    error: str = ""
    lines: str = ""

    def at(self, index: int, error: str, lines: str) -> None:
        if self.index is None or index < self.index:
            self.index, self.error, self.lines = index, error, lines


@dataclass
class _Run:
    """What sending a job's partitions needs: the client, the pipeline and the
    job, Dask's ``retries`` of a failing task, the parts directory (``None``:
    stdout) and the progress bar."""

    client: Any
    spec: PipelineSpec
    job: AnnotateJob | RankJob
    retries: int
    parts: _Parts | None
    bar: Any

    def partitions(
        self,
        work: Callable[..., Any],
        partitions: Iterator[tuple[int, list[Record]]],
        finished: Callable[[int, Any, int], None],
    ) -> None:
        """Submit ``work(spec, options, records, batch_size)`` for each of
        ``partitions`` with a bounded window; ``finished(index, result, n)`` for
        each as it completes (any order). A task error propagates (after Dask's
        own retries); the part files already written stay for a resume."""
        as_completed = importlib.import_module("distributed").as_completed  # untyped

        slots = max(1, sum(self.client.nthreads().values()))  # worker threads, at the start
        window = max(2, _IN_FLIGHT_PER_WORKER * slots)
        pending = as_completed()
        meta: dict[str, tuple[int, int]] = {}
        name = f"beamner-{work.__name__}-{uuid.uuid4().hex[:8]}"
        args = (self.spec, self.job.options)

        def collect_one() -> None:
            future = next(pending)
            index, n = meta.pop(future.key)
            result = future.result()
            future.release()
            finished(index, result, n)

        try:
            for index, records in partitions:
                future = self.client.submit(
                    work,
                    *args,
                    records,
                    self.job.batch_size,
                    key=f"{name}-{index:06d}",
                    retries=self.retries,
                )
                meta[future.key] = (index, len(records))
                pending.add(future)
                while len(meta) >= window:
                    collect_one()
            while meta:
                collect_one()
        except BaseException:
            if self.parts is not None:
                self.parts.drop_if_empty()
            raise
        finally:
            self.bar.close()


def _params(
    spec: PipelineSpec, input: str | os.PathLike[str], job: Job, size: int
) -> dict[str, Any]:
    """What a parts directory was made with (a resume must match it)."""
    source = os.path.abspath(input) if str(input) != "-" else "-"
    options = {k: v for k, v in asdict(job).items() if k not in _NOT_PARAMS}
    return {**spec.__dict__, "input": source, **options, "partition_size": size}


def annotate(
    model: str | os.PathLike[str],
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    cluster: Any = "local[2]",
    partition_size: int | None = None,
    retries: int = 1,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    **args: Unpack[AnnotateArgs],
) -> RunSummary:
    """:func:`beamner.jobs.annotate` on a Dask cluster: the same JSONL, byte for
    byte, in input order, under the same output policy; the same keyword
    options (:class:`~beamner.jobs.options.AnnotateJob`). ``cluster``: a
    ``distributed.Client``, a scheduler address or file, or ``local[N]``
    (``connect_timeout``: seconds a scheduler has to answer).
    ``partition_size`` (default ``16 * batch_size``) docs go to a worker at a
    time; a failing task is tried ``retries`` more times. ``resume`` continues
    an interrupted run from its parts (or, with none, skips as many inputs as
    ``output`` has lines, as the single-machine job does)."""
    job = AnnotateJob(**args)
    size = _partition_size(job.batch_size, partition_size)
    spec = PipelineSpec.for_job(_model_name(model), "annotate", job)
    resume = job.resume
    target, summary, records = job.start(input, output, resume=resume, resumable=True)
    params = _params(spec, input, job, size)
    existed = target is not None and target.exists()
    total = count_records(input, job.fmt) if job.progress is not False else None
    stop = _Stop()
    cut: set[int] = set()  # the partition a bad line cut short (never a part: not whole)
    tails: dict[int, str] = {}
    n_partitions = 0
    with connect(cluster, timeout=connect_timeout) as client:
        parts = _Parts(target, params, resume) if target is not None else None
        sink = parts if parts is not None else _InOrder(sys.stdout)
        already = complete_lines(target)[0] if resume and target is not None else 0
        if parts is not None:
            parts.start(already)
            already = parts.already
        summary.skipped_resume = already
        max_length = None
        if already and job.skip_invalid:  # records over max_length made no line
            max_length = client.submit(worker_max_length, spec, pure=False).result()
        stream = UntilBadLine(skip_done(records, already, max_length))
        left = None if total is None else max(total - already, 0)
        bar = progress_bar(left, job.progress, "annotate")

        def todo() -> Iterator[tuple[int, list[Record]]]:
            nonlocal n_partitions
            for index, chunk in enumerate(batched(stream, size)):
                if stop.index is not None:
                    return
                n_partitions = index + 1
                if stream.error is not None:
                    cut.add(index)
                elif parts is not None and parts.done(index):
                    summary.skipped_resume += len(chunk)
                    bar.update(len(chunk))
                    continue
                yield index, chunk

        def finished(index: int, results: list[str | Failure], n: int) -> None:
            lines: list[str] = []
            for result in results:
                if isinstance(result, str):
                    lines.append(result)
                elif job.skip_invalid:
                    summary.add_invalid(result.line, result.reason)
                else:
                    stop.at(index, f"{input}:{result.line}: {result.reason}", "".join(lines))
                    return
            summary.written += len(lines)
            bar.update(n)
            if index in cut and parts is not None:
                tails[index] = "".join(lines)
            else:
                sink.write(index, "".join(lines))

        run = _Run(client, spec, job, retries, parts, bar)
        run.partitions(annotate_partition, todo(), finished)
    if stop.index is None and stream.error is None:
        if parts is not None:
            parts.merge(n_partitions)
        return summary
    if stop.index is not None:
        error, good, tail = stop.error, stop.index, stop.lines
    else:
        error, good, tail = str(stream.error), n_partitions - len(tails), "".join(tails.values())
    if parts is None:
        assert isinstance(sink, _InOrder) and sink.next == good
        sink.write_now(tail)
        summary.written = sink.lines
        raise stopped_at(error, *stop_state(None, False, False, summary))
    if not existed:
        summary.skipped_resume, summary.written = 0, 0
        if already or good or tail:
            parts.merge(good, tail)
            summary.written = complete_lines(parts.output)[0]
        else:
            parts.remove()
        raise stopped_at(error, *stop_state(parts.output, False, resume, summary))
    parts.drop_after(good)
    parts.drop_if_empty()
    kept = f"; the finished partitions are kept in {parts.dir}" if parts.dir.exists() else ""
    raise stopped_at(error, f"{parts.output} is left as it was{kept}", " with --resume")


def rank(
    model: str | os.PathLike[str],
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    cluster: Any = "local[2]",
    partition_size: int | None = None,
    resume: bool = False,
    retries: int = 1,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    **args: Unpack[RankArgs],
) -> RunSummary:
    """:func:`beamner.jobs.rank` on a Dask cluster: the same tasks in the same order,
    byte for byte, under the same output policy; the same keyword options
    (:class:`~beamner.jobs.options.RankJob`), and those of :func:`annotate` here.
    Each partition sends back its scored tasks (with ``top``, only its best
    ``top``); the client keeps the best (:func:`~beamner.jobs.runners.top_k`) at
    the end. A bad record stops the job with nothing written; the finished parts
    stay for ``resume``."""
    job = RankJob(**args)
    size = _partition_size(job.batch_size, partition_size)
    spec = PipelineSpec.for_job(_model_name(model), "rank", job)
    target, summary, records = job.start(input, output, resume=resume)
    params = _params(spec, input, job, size)
    stream = UntilBadLine(records)
    in_memory: dict[int, list[tuple[float, str]]] = {}
    stop = _Stop()
    total = count_records(input, job.fmt) if job.progress is not False else None
    n_partitions = 0
    with connect(cluster, timeout=connect_timeout) as client:
        parts = _Parts(target, params, resume) if target is not None else None
        if parts is not None:
            parts.start(0)
        bar = progress_bar(total, job.progress, "rank")

        def todo() -> Iterator[tuple[int, list[Record]]]:
            nonlocal n_partitions
            for index, chunk in enumerate(batched(stream, size)):
                if stop.index is not None or stream.error is not None:
                    return  # the job stops: nothing is written
                n_partitions = index + 1
                if parts is not None and parts.done(index):
                    bar.update(len(chunk))
                    continue
                yield index, chunk

        def finished(index: int, result: Any, n: int) -> None:
            tasks, failures = result
            if failures and not job.skip_invalid:
                stop.at(index, f"{input}:{failures[0].line}: {failures[0].reason}", "")
                return
            for failure in failures:
                summary.add_invalid(failure.line, failure.reason)
            bar.update(n)
            if parts is None:
                in_memory[index] = tasks
            else:
                parts.write(index, "".join(f"{score!r}\t{line}" for score, line in tasks))

        run = _Run(client, spec, job, retries, parts, bar)
        run.partitions(rank_partition, todo(), finished)
    if stop.index is not None or stream.error is not None:
        error = stop.error if stop.index is not None else str(stream.error)
        kept = ""
        if parts is not None:
            parts.drop_after(stop.index if stop.index is not None else n_partitions)
            parts.drop_if_empty()
            if parts.dir.exists():
                kept = f"; the finished partitions are kept in {parts.dir} for resume"
        raise stopped_at(error, f"nothing was written{kept}")

    def scored() -> Iterator[tuple[float, str]]:
        for index in range(n_partitions):
            if parts is None:
                yield from in_memory[index]
                continue
            for row in parts.read(index).splitlines(keepends=True):
                score, line = row.split("\t", 1)
                yield float(score), line

    best = top_k(scored(), job.top)
    with jsonl_output(target) as out:
        for _, line in best:
            out.write_line(line)
    summary.written = len(best)
    if parts is not None:
        parts.remove()
    return summary
