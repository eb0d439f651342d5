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
from contextlib import closing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from spacy.tokens import Doc

from beamner._core import BeamBatch
from beamner.engine import search
from beamner.engine.search import PreparedSearch
from beamner.engine.settings import BeamSettings

__all__ = [
    "CHUNK_DOCS",
    "PIPELINE_ENV",
    "Chunk",
    "Searched",
    "chunk_sizes",
    "pipelining",
    "search_chunked",
    "search_stream",
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
            used = time.thread_time() - start
            with _cpu_lock:
                _worker_cpu += used

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


def _sequential(
    pipe: Any, chunks: Iterable[tuple[K, Sequence[Doc]]], settings: BeamSettings
) -> Iterator[Searched[K]]:
    for key, docs in chunks:
        docs = list(docs)
        try:
            batch = search.finish_search(
                pipe, search.prepare_search(pipe, docs, settings), settings
            )
        except Exception as err:
            yield Searched(key, docs, None, err)
        else:
            yield Searched(key, docs, batch)


def _overlapped(
    pipe: Any, chunks: Iterable[tuple[K, Sequence[Doc]]], settings: BeamSettings
) -> Iterator[Searched[K]]:
    in_flight: tuple[K, list[Doc], _Flight | None, BaseException | None] | None = None
    try:
        for key, docs in chunks:
            docs = list(docs)
            prepared: PreparedSearch | None = None
            failed: BaseException | None = None
            try:
                prepared = search.prepare_search(
                    pipe, docs, settings
                )  # overlaps in_flight's search
            except Exception as err:
                failed = err
            done = None
            if in_flight is not None:
                done = _land(in_flight)
            flight = None
            if prepared is not None:
                flight = _Flight(_finisher(pipe, prepared, settings))
            in_flight = (key, docs, flight, failed)
            if done is not None:
                yield done  # the caller reads it while the next chunk is searched
        if in_flight is not None:
            last, in_flight = in_flight, None
            yield _land(last)
    finally:
        if in_flight is not None and in_flight[2] is not None:
            in_flight[2].join()  # closed early or failed: leave no thread behind


def _finisher(
    pipe: Any, prepared: PreparedSearch, settings: BeamSettings
) -> Callable[[], BeamBatch]:
    return lambda: search.finish_search(pipe, prepared, settings)


def _land(
    in_flight: tuple[K, list[Doc], _Flight | None, BaseException | None],
) -> Searched[K]:
    key, docs, flight, failed = in_flight
    if flight is None:
        return Searched(key, docs, None, failed)
    batch, error = flight.join()
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
    keys: list[tuple[int, int]] = []
    parts: list[list[Doc]] = []
    first = offset = 0
    for size in chunk_sizes(len(docs), chunk_docs):
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
