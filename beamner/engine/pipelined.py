"""Beam search over many docs in chunks, the native search of one chunk
running while the network of the next one is computed.

A fused search has two halves (:mod:`beamner.engine.search`): the NER's
tok2vec, which is mostly thinc's Python and holds the GIL (only blis'
matmuls inside it release it), and the lower layer plus the native search,
which release it (one blis matmul, then ``BeamBatch.run_precomputed``). So
the calling thread computes tok2vec for chunk ``i + 1`` and reads the results
of chunk ``i - 1`` while one worker thread runs the lower layer and the search
of chunk ``i`` on the second core. Each chunk is computed exactly as it is
without the overlap (the same functions on the same docs; tok2vec gives each
token the same vector whatever batch it is in), so the results are the same
bit for bit and come in input order.

Chunks of about :data:`CHUNK_DOCS` docs also bound one call's working set: the
precomputed features of 800 docs (1.5 KB a token) no longer fit any cache,
and one search over all of them ran at 0.46 of tok2vec's throughput against
0.69 in calls of 64 docs (issue 23).

The overlap is on unless ``pipelined=False`` is passed or the environment
variable :data:`PIPELINE_ENV` is ``0``; no thread is started for a single
chunk, and at most one search is in flight (a thread per chunk, joined before
the next starts, so none outlives a call that returns or raises).
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine import search
from beamner.engine.search import PreparedSearch
from beamner.engine.settings import BeamSettings

__all__ = [
    "CHUNK_DOCS",
    "PIPELINE_ENV",
    "TAIL_TOKENS",
    "Chunk",
    "ChunkTimes",
    "Searched",
    "StreamTrace",
    "chunk_plan",
    "chunk_sizes",
    "idle_seconds",
    "pipelining",
    "search_chunked",
    "search_stream",
    "traced",
    "worker_cpu_seconds",
]

#: Docs a chunk holds at most (chunks of one call are made even: 100 docs run
#: as 50 + 50). Calls of 64 docs were the fastest measured (issue 23).
CHUNK_DOCS = 64
#: ``BEAMNER_PIPELINE=0`` turns the overlap off (chunks then run one after the
#: other on the calling thread); ``1`` (the default) turns it on.
PIPELINE_ENV = "BEAMNER_PIPELINE"
_ON = ("1", "on", "true", "yes")
_OFF = ("0", "off", "false", "no")

K = TypeVar("K")
R = TypeVar("R")


def pipelining(pipelined: bool | None = None) -> bool:
    """Whether searches overlap the network: ``pipelined`` when given, else
    :data:`PIPELINE_ENV` (default on)."""
    if pipelined is not None:
        return bool(pipelined)
    value = os.environ.get(PIPELINE_ENV, "1").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{PIPELINE_ENV} must be one of {_ON + _OFF}, got {value!r}")


#: The last chunk of a call is halved (by tokens) while both halves keep at
#: least this many tokens: only the last chunk's search has no network to
#: overlap, so it is made small; below ~1000 tokens thinc's per-call cost
#: (~2 ms) outweighs what a smaller tail saves. A call of fewer than twice
#: this many tokens in one chunk runs without a thread.
TAIL_TOKENS = 1000


def chunk_plan(
    lengths: Sequence[int], chunk_docs: int = CHUNK_DOCS, tail_tokens: int = TAIL_TOKENS
) -> list[int]:
    """Chunk sizes (docs) for docs of ``lengths`` tokens, in order: even chunks
    of at most ``chunk_docs``, the last one then halved by tokens while each
    half keeps >= ``tail_tokens`` tokens (64 docs of ~150 tokens: 32, 16, 8, 8)."""
    sizes = chunk_sizes(len(lengths), chunk_docs)
    if not sizes:
        return sizes
    last = sizes.pop()
    start = len(lengths) - last
    while last >= 2:
        tokens = list(itertools.accumulate(lengths[start : start + last]))
        if tokens[-1] < 2 * tail_tokens:
            break
        half = next(i + 1 for i, t in enumerate(tokens) if 2 * t >= tokens[-1])
        half = min(max(half, 1), last - 1)
        if tokens[half - 1] < tail_tokens or tokens[-1] - tokens[half - 1] < tail_tokens:
            break
        sizes.append(half)
        start += half
        last -= half
    sizes.append(last)
    return sizes


def chunk_sizes(n_docs: int, chunk_docs: int = CHUNK_DOCS) -> list[int]:
    """Even chunk sizes, each at most ``chunk_docs``, summing to ``n_docs``
    (none for no docs)."""
    if chunk_docs < 1:
        raise ValueError(f"chunk_docs must be >= 1, got {chunk_docs}")
    if n_docs <= 0:
        return []
    n_chunks = max(1, math.ceil(n_docs / chunk_docs))
    base, extra = divmod(n_docs, n_chunks)
    return [base + (1 if i < extra else 0) for i in range(n_chunks)]


_cpu_lock = threading.Lock()
_worker_cpu = 0.0


def worker_cpu_seconds() -> float:
    """CPU seconds the search threads have used in this process so far (for
    benchmarks: with :func:`time.thread_time` of the calling thread, the two
    cores' shares of a call)."""
    with _cpu_lock:
        return _worker_cpu


@dataclass
class ChunkTimes:
    """CPU seconds of one chunk: the network (tok2vec) on the calling thread,
    the lower layer + search (on the worker when overlapped), and the caller's
    reading of the results."""

    prepare: float = 0.0
    search: float = 0.0
    read: float = 0.0


@dataclass
class StreamTrace:
    """One :func:`search_stream`'s chunks, and whether they overlapped."""

    overlapped: bool
    chunks: list[ChunkTimes] = field(default_factory=list)


_traces: list[StreamTrace] | None = None


@contextmanager
def traced() -> Iterator[list[StreamTrace]]:
    """Record the CPU times of every stream run inside (benchmarks:
    :func:`idle_seconds`). Not thread-safe: one traced caller at a time."""
    global _traces
    previous, _traces = _traces, []
    try:
        yield _traces
    finally:
        _traces = previous


def idle_seconds(trace: StreamTrace) -> float:
    """The stream's elapsed seconds on two otherwise idle cores, replayed from
    its measured CPU times and the order the threads wait on each other:
    chunk i's search starts once its network is done and chunk i - 1's
    search has been joined; its results are read after chunk i + 1's network."""
    if not trace.overlapped:
        return sum(c.prepare + c.search + c.read for c in trace.chunks)
    main = 0.0
    done = 0.0  # when the search in flight ends
    previous: ChunkTimes | None = None
    for chunk in trace.chunks:
        main += chunk.prepare
        if previous is not None:
            main = max(main, done)
        done = main + chunk.search
        if previous is not None:
            main += previous.read
        previous = chunk
    if previous is not None:
        main = max(main, done) + previous.read
    return main


@dataclass
class Searched(Generic[K]):
    """A finished chunk of :func:`search_stream`: its key and docs, and the
    finished batch or the exception that chunk raised."""

    key: K
    docs: list[Doc]
    batch: BeamBatch | None
    error: BaseException | None = None

    def result(self) -> BeamBatch:
        """The finished batch; raises the chunk's exception if it had one."""
        if self.error is not None:
            raise self.error
        assert self.batch is not None
        return self.batch


class _Flight:
    """One chunk's second half (lower layer + native search) on its own thread."""

    def __init__(self, run: Callable[[], BeamBatch]) -> None:
        self._run = run
        self.batch: BeamBatch | None = None
        self.error: BaseException | None = None
        self.cpu = 0.0
        self.thread = threading.Thread(target=self._target, name="beamner-search", daemon=True)
        self.thread.start()

    def _target(self) -> None:
        global _worker_cpu
        start = time.thread_time()
        try:
            self.batch = self._run()
        except BaseException as err:  # handed to the calling thread by join()
            self.error = err
        finally:
            self.cpu = time.thread_time() - start
            with _cpu_lock:
                _worker_cpu += self.cpu

    def join(self) -> tuple[BeamBatch | None, BaseException | None]:
        self.thread.join()
        return self.batch, self.error


def search_stream(
    pipe: Any,
    chunks: Iterable[tuple[K, Sequence[Doc]]],
    settings: BeamSettings,
    *,
    pipelined: bool | None = None,
) -> Generator[Searched[K], None, None]:
    """Search each ``(key, docs)`` chunk with ``settings``; yield them finished,
    in order. An exception of one chunk (its network or its search) comes as
    that chunk's :attr:`Searched.error`, and the stream goes on with the next.
    While the caller reads chunk ``i``, chunk ``i + 1`` is being searched, so
    close the stream when stopping early (``contextlib.closing``): that waits
    for the search in flight. ``pipelined`` (default :func:`pipelining`):
    overlap the searches with the network; never with a single chunk, nor
    when not ``settings.fused`` (the step-by-step search is Python)."""
    items = iter(chunks)
    first = next(items, None)
    if first is None:
        return
    second = next(items, None) if pipelining(pipelined) and settings.fused else None
    if second is None:
        yield from _sequential(pipe, itertools.chain([first], items), settings)
    else:
        yield from _overlapped(pipe, itertools.chain([first, second], items), settings)


def _trace(overlapped: bool) -> StreamTrace | None:
    if _traces is None:
        return None
    trace = StreamTrace(overlapped)
    _traces.append(trace)
    return trace


def _sequential(
    pipe: Any, chunks: Iterable[tuple[K, Sequence[Doc]]], settings: BeamSettings
) -> Iterator[Searched[K]]:
    trace = _trace(False)
    clock = time.thread_time
    for key, docs in chunks:
        docs = list(docs)
        times = ChunkTimes()
        start = clock()
        try:
            prepared = search.prepare_search(pipe, docs, settings)
            times.prepare = clock() - start
            batch = search.finish_search(pipe, prepared, settings)
            times.search = clock() - start - times.prepare
            out = Searched(key, docs, batch)
        except Exception as err:
            out = Searched(key, docs, None, err)
        start = clock()
        yield out
        times.read = clock() - start
        if trace is not None:
            trace.chunks.append(times)


def _overlapped(
    pipe: Any, chunks: Iterable[tuple[K, Sequence[Doc]]], settings: BeamSettings
) -> Iterator[Searched[K]]:
    trace = _trace(True)
    clock = time.thread_time
    in_flight: tuple[K, list[Doc], _Flight | None, BaseException | None] | None = None
    in_flight_times = ChunkTimes()
    try:
        for key, docs in chunks:
            docs = list(docs)
            times = ChunkTimes()
            prepared: PreparedSearch | None = None
            failed: BaseException | None = None
            start = clock()
            try:
                # tok2vec here while in_flight's search runs on the worker
                prepared = search.prepare_search(pipe, docs, settings)
            except Exception as err:
                failed = err
            times.prepare = clock() - start
            done = None
            if in_flight is not None:
                done = _land(in_flight, in_flight_times)
            flight = None
            if prepared is not None:
                flight = _Flight(_finisher(pipe, prepared, settings))
            in_flight, in_flight_times, done_times = (
                (key, docs, flight, failed),
                times,
                in_flight_times,
            )
            if done is not None:
                start = clock()
                yield done  # the caller reads it while the next chunk is searched
                done_times.read = clock() - start
                if trace is not None:
                    trace.chunks.append(done_times)
        if in_flight is not None:
            last, in_flight = in_flight, None
            done = _land(last, in_flight_times)
            start = clock()
            yield done
            in_flight_times.read = clock() - start
            if trace is not None:
                trace.chunks.append(in_flight_times)
    finally:
        if in_flight is not None and in_flight[2] is not None:
            in_flight[2].join()  # closed early or failed: leave no thread behind


def _finisher(
    pipe: Any, prepared: PreparedSearch, settings: BeamSettings
) -> Callable[[], BeamBatch]:
    return lambda: search.finish_search(pipe, prepared, settings)


def _land(
    in_flight: tuple[K, list[Doc], _Flight | None, BaseException | None], times: ChunkTimes
) -> Searched[K]:
    key, docs, flight, failed = in_flight
    if flight is None:
        return Searched(key, docs, None, failed)
    batch, error = flight.join()
    times.search = flight.cpu
    return Searched(key, docs, batch, error)


@dataclass
class Chunk:
    """One chunk of :func:`search_chunked`: its docs, finished batch, the index
    of its first doc in the input and the token offset of that doc (what
    spaCy's batch offsets would be had the input run as one batch)."""

    docs: list[Doc]
    batch: BeamBatch
    first: int
    offset: int


def search_chunked(
    pipe: Any,
    docs: Sequence[Doc],
    settings: BeamSettings,
    read: Callable[[Chunk], Iterable[R]],
    *,
    chunk_docs: int = CHUNK_DOCS,
    pipelined: bool | None = None,
) -> list[R]:
    """Search ``docs`` in chunks of at most ``chunk_docs`` and return the
    concatenated ``read(chunk)`` outputs (one per doc, in input order, as a
    caller of one big search would). ``read`` runs on this thread while the
    next chunk is searched. The first exception (of the network, the search
    or ``read``) is raised once the search in flight has finished."""
    docs = list(docs)
    if docs:  # every label first, as one batch over the docs would (a new one resizes the model)
        pipe._ensure_labels_are_added(docs)
    keys: list[tuple[int, int]] = []
    parts: list[list[Doc]] = []
    first = offset = 0
    for size in chunk_plan([len(doc) for doc in docs], chunk_docs):
        part = docs[first : first + size]
        keys.append((first, offset))
        parts.append(part)
        first += size
        offset += sum(len(doc) for doc in part)
    out: list[R] = []
    stream = search_stream(pipe, zip(keys, parts), settings, pipelined=pipelined)
    with closing(stream):
        for searched in stream:
            start, tokens = searched.key
            out.extend(read(Chunk(searched.docs, searched.result(), start, tokens)))
    return out
