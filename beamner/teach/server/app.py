"""The server behind ``beamner teach``: state, JSON API and the uvicorn runner.

State (:class:`TeachServer`), all behind one lock:

* each page (a browser tab: a client id the page keeps in ``sessionStorage``,
  so a reload keeps it) has a list of *shown* tasks: served to it, not yet
  answered. ``/api/next`` gives the first of them, or a new task from the
  session (each task is served to one page only); a reload shows the same task
  again, and two tabs never see the same task.
* ``/api/answer`` accepts an answer only for a task shown to that page (a
  repeated click or a stale tab gets 409, never a second line), records it in
  the session, appends it to the dataset file and flushes it, and returns the
  page's next task in the same response.
* ``/api/undo`` takes back the page's last answer while the session still has
  it pending (not yet taken by a model update): the line is removed from the
  dataset file and the task is shown again; after an update took it: 409.
* every ``update_every`` answers a background thread runs
  :meth:`TeachSession.update` (the pages keep getting tasks meanwhile; the
  session's locking keeps that to short waits) and, every ``save_every``
  answers, saves the model to ``output`` (written next to it, then renamed).
  On shutdown, pending answers are trained on and the model is saved.

Restarting with the same dataset file skips every task answered in it (by task
hash, recomputed from each answer's text and spans) and carries on.

Requests from other web pages are refused before any handler runs
(:class:`RequestGuard`): the ``Host`` header must name this server (127.0.0.1,
localhost, [::1] or the address it listens on, with its port: a DNS-rebinding
page sends its own name), an ``Origin`` header, when sent, must be the
server's own origin (a page on another port or site), POSTs must say
``Content-Type: application/json`` (a ``text/plain`` POST needs no CORS
preflight, so a foreign page could send one blind), and a request body over
:data:`MAX_BODY` bytes is refused with 413 while it is read, never buffered.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import os
import re
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

from beamner.io.atomic import swap_directory
from beamner.io.records import InputError
from beamner.teach.answers import parse_answer
from beamner.teach.session import TeachSession
from beamner.teach.tasks import input_hash, task_hash

__all__ = [
    "MAX_BODY",
    "DatasetFile",
    "RequestError",
    "RequestGuard",
    "TeachServer",
    "allowed_hosts",
    "bind_socket",
    "make_app",
    "serve",
    "uvicorn_server",
]

STATIC = Path(__file__).resolve().parent / "static"
LOG = logging.getLogger("beamner.teach")
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # fullmatch: "$" would let "c1\n" through
DECISIONS = ("accept", "reject", "ignore")
#: Largest request body accepted (the page's requests are well under 1 KB).
MAX_BODY = 64 * 1024
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_WILDCARD = ("0.0.0.0", "::", "")


class RequestError(Exception):
    """A request the server refuses: an HTTP status and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _answer_hashes(obj: dict[str, Any]) -> set[int]:
    """Task hashes an answer line stands for, recomputed from its content (and
    the ``_task_hash`` it carries, for tools whose spans we cannot recompute)."""
    out: set[int] = set()
    text = obj.get("text")
    spans = obj.get("spans") or []
    if isinstance(text, str) and isinstance(spans, list):
        ih = input_hash(text)
        for span in spans:
            if isinstance(span, dict) and {"start", "end", "label"} <= span.keys():
                out.add(task_hash(ih, int(span["start"]), int(span["end"]), str(span["label"])))
    carried = obj.get("_task_hash")
    if isinstance(carried, int) and not isinstance(carried, bool):
        out.add(carried)
    return out


class DatasetFile:
    """The answers JSONL file: existing answers are read (and validated) once;
    new ones are appended, flushed and (``fsync``, the default) synced to disk
    one by one, so an acknowledged answer survives a power cut too; the last
    answers can be removed again (undo)."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.answered: set[int] = set()
        self.n_previous = 0
        if self.path.exists():
            self._read_existing()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "ab")  # kept open for the server's lifetime

    def _read_existing(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):  # an interrupted write: cut the partial last line
            LOG.warning("%s: cutting a partial last line (%d bytes)", self.path, len(data) - end)
            with open(self.path, "r+b") as f:
                f.truncate(end)
            data = data[:end]
        for lineno, raw in enumerate(data.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
                parse_answer(obj, lineno, str(self.path))
            except (UnicodeDecodeError, json.JSONDecodeError, InputError) as err:
                raise ValueError(
                    f"{self.path}:{lineno}: not an answer line ({err}); "
                    "fix or move the dataset file, then restart"
                ) from None
            self.answered |= _answer_hashes(obj)
            self.n_previous += 1

    def append(self, answer: dict[str, Any]) -> tuple[int, int]:
        """Write one answer line, flush and sync it; its (offset, length) in bytes."""
        line = (json.dumps(answer, ensure_ascii=False) + "\n").encode("utf-8")
        offset = self._f.tell()
        self._f.write(line)
        self._sync()
        return offset, len(line)

    def _sync(self) -> None:
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def remove(self, offset: int, length: int) -> None:
        """Remove the line at ``offset`` (the last line: a truncate; otherwise the
        file is rewritten beside itself and renamed over)."""
        self._f.flush()
        size = self._f.tell()
        if offset + length == size:
            self._f.truncate(offset)
            self._f.seek(offset)
            self._sync()
            return
        data = self.path.read_bytes()
        tmp = self.path.with_name(self.path.name + ".undo")
        with open(tmp, "wb") as f:
            f.write(data[:offset] + data[offset + length :])
            f.flush()
            os.fsync(f.fileno())
        self._f.close()
        os.replace(tmp, self.path)
        self._f = open(self.path, "ab")

    def close(self) -> None:
        self._f.close()


class TeachServer:
    """The annotation server's state (see the module docstring)."""

    def __init__(
        self,
        session: TeachSession,
        dataset: str | os.PathLike[str],
        *,
        update_every: int = 10,
        save_every: int = 100,
        output: str | os.PathLike[str] | None = None,
        model_name: str = "",
        labels: list[str] | None = None,
        fsync: bool = True,
    ) -> None:
        if update_every < 1 or save_every < 1:
            raise ValueError("update_every and save_every must be >= 1")
        self.session = session
        self.dataset = DatasetFile(dataset, fsync=fsync)
        session.skip_hashes(self.dataset.answered)
        self.update_every = update_every
        self.save_every = save_every
        self.output = Path(output) if output is not None else None
        self.model_name = model_name
        self.labels = list(labels or [])
        self._lock = threading.Lock()
        self._shown: dict[str, list[dict[str, Any]]] = {}  # client -> tasks shown, unanswered
        self._answered: dict[str, list[int]] = {}  # client -> its answers' task hashes (undo)
        self._lines: dict[int, tuple[int, int]] = {}  # task hash -> (offset, length) in file
        self._since_update = 0
        self._since_save = 0
        self._updater: threading.Thread | None = None
        self.n_saves = 0
        #: Requests refused before reaching the API (foreign Host or Origin, not JSON, too big).
        self.n_refused = 0
        self._refused_lock = threading.Lock()
        self.last_update: dict[str, Any] | None = None
        self.last_error: str | None = None
        self.closed = False

    # -- requests ---------------------------------------------------------------------------

    @staticmethod
    def check_client(client: Any) -> str:
        if not isinstance(client, str) or not _CLIENT_ID.fullmatch(client):
            raise RequestError(400, "'client' must be 1-64 letters, digits, '-' or '_'")
        return client

    def next_for(self, client: str) -> dict[str, Any] | None:
        """The task this page should show: its oldest unanswered one, or a new one."""
        with self._lock:
            self._check_open()
            return self._next_locked(client)

    def _next_locked(self, client: str) -> dict[str, Any] | None:
        shown = self._shown.setdefault(client, [])
        if not shown:
            task = self.session.next_task()
            if task is None:
                return None
            shown.append(task)
        return shown[0]

    def answer(self, client: str, th: Any, decision: Any) -> dict[str, Any] | None:
        """Record an answer to a task shown to ``client``; the page's next task."""
        if decision not in DECISIONS:
            raise RequestError(400, f"'answer' must be one of {', '.join(DECISIONS)}")
        if not isinstance(th, int) or isinstance(th, bool) or not 0 <= th < 2**53:
            raise RequestError(400, "'task_hash' must be an integer in [0, 2**53)")
        with self._lock:
            self._check_open()
            shown = self._shown.get(client, [])
            task = next((t for t in shown if t["_task_hash"] == th), None)
            if task is None:
                raise RequestError(
                    409, f"task {th} is not waiting for an answer on this page (already answered?)"
                )
            answer = self.session.answer(task, decision)
            self._lines[th] = self.dataset.append(answer)
            shown.remove(task)
            self._answered.setdefault(client, []).append(th)
            self._since_update += 1
            self._since_save += 1
            self._maybe_update_locked()
            return self._next_locked(client)

    def undo(self, client: str) -> dict[str, Any]:
        """Take back this page's last answer if no update has trained on it yet;
        the task, to show again."""
        with self._lock:
            self._check_open()
            answered = self._answered.get(client, [])
            if not answered:
                raise RequestError(409, "nothing to undo on this page")
            th = answered[-1]
            if self.session.retract(th) is None:
                answered.clear()  # older answers were trained on too
                raise RequestError(
                    409, "the last answer has already been trained on: it cannot be undone"
                )
            answered.pop()
            offset, length = self._lines.pop(th)
            self.dataset.remove(offset, length)
            for other, (o, n) in self._lines.items():
                if o > offset:
                    self._lines[other] = (o - length, n)
            # retract() put the task back at the front of the stream: take it for this page.
            task = self.session.next_task()
            if task is None or task["_task_hash"] != th:  # pragma: no cover - stream contract
                raise RuntimeError("the stream did not give the undone task back first")
            self._shown.setdefault(client, []).insert(0, task)
            self._since_update = max(0, self._since_update - 1)
            self._since_save = max(0, self._since_save - 1)
            return task

    def stats(self) -> dict[str, Any]:
        stats = self.session.stats()
        with self._lock:
            updating = self._updater is not None and self._updater.is_alive()
            stats.update(
                n_previous=self.dataset.n_previous,
                n_total=self.dataset.n_previous + stats["n_answers"],
                updating=updating,
                update_every=self.update_every,
                n_saves=self.n_saves,
                n_refused=self.n_refused,
                last_update=self.last_update,
                last_error=self.last_error,
                dataset=str(self.dataset.path),
                model=self.model_name,
                labels=self.labels,
            )
        stream = self.session.stream
        stats.update(  # skipped source lines: counted, the first ones shown on the page
            n_bad_lines=stream.n_bad_lines,
            bad_lines=[{"line": n, "reason": why} for n, why in list(stream.bad_lines)],
        )
        return stats

    def note_refused(self, status: int, why: str) -> None:
        """Count (and log) a request the :class:`RequestGuard` refused."""
        LOG.warning("refused a request (%d): %s", status, why)
        # Its own lock: called on the event loop, which must not wait while _lock is
        # held for a beam scoring a batch.
        with self._refused_lock:
            self.n_refused += 1

    def _check_open(self) -> None:
        if self.closed:
            raise RequestError(503, "the server is shutting down")

    # -- updates and saves ------------------------------------------------------------------

    def _maybe_update_locked(self) -> None:
        if self._since_update < self.update_every:
            return
        if self._updater is not None and self._updater.is_alive():
            return  # the next answer tries again
        self._since_update = 0
        save = self.output is not None and self._since_save >= self.save_every
        if save:
            self._since_save = 0
        self._updater = threading.Thread(
            target=self._run_update, args=(save,), name="beamner-teach-update", daemon=True
        )
        self._updater.start()

    def _run_update(self, save: bool) -> None:
        try:
            result = self.session.update()
            with self._lock:
                self.last_update = result.as_dict()
            if save:
                self.save()
        except Exception as err:  # a failed update must not take the server down
            LOG.exception("model update failed")
            with self._lock:
                self.last_error = f"model update failed: {err}"

    def save(self) -> None:
        """Save the model and ``teach.json`` to ``output`` by beamner's output
        policy: built beside it and swapped in (``swap_directory``), marked as
        beamner's; only beamner's own leftovers are ever removed (``beamner
        teach`` refuses a bad output before the server starts)."""
        if self.output is None:
            return
        stats = self.session.stats()
        state = {
            "dataset": str(self.dataset.path),
            "answers_trained_this_run": stats["n_trained"],
            "model_updates_this_run": stats["n_updates"],
        }

        def build(folder: Path) -> None:
            self.session.to_disk(folder)
            (folder / "teach.json").write_text(json.dumps(state, indent=2) + "\n")

        swap_directory(self.output, build, info={"written_by": "beamner teach"})
        with self._lock:
            self.n_saves += 1

    def close(self) -> None:
        """Stop taking answers, train on the pending ones, save, close the file."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            updater = self._updater
        if updater is not None:
            updater.join()
        try:
            if self.session.n_pending:
                self.last_update = self.session.update().as_dict()
            self.save()
        finally:
            self.dataset.close()


# -- HTTP --------------------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _host_name(host: str) -> str:
    """``host`` as a Host header spells it: IPv6 addresses in brackets, lower case."""
    host = host.strip().lower()
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """Host names (without port) a server listening on ``host`` answers to: the
    loopback names, ``host`` itself and ``extra``; for a wildcard address
    (0.0.0.0, ::) also this machine's name. (Any IP address is accepted there
    too, by :class:`RequestGuard`: DNS rebinding needs a name, not an address.)"""
    names = {*_LOOPBACK, _host_name(host), *(_host_name(h) for h in extra if h.strip())}
    if host in _WILDCARD:
        names.add(_host_name(socket.gethostname()))
    names.discard("")
    return frozenset(names)


def _split_host(value: str) -> tuple[str, int] | None:
    """A Host header's (name, port); None if malformed. No port: 80 (plain HTTP)."""
    value = value.strip().lower()
    if value.startswith("["):  # an IPv6 address: [::1]:8080
        end = value.find("]")
        if end < 0:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, colon, port_text = value.partition(":")
        rest = colon + port_text
    if not name:
        return None
    if not rest:
        return name, 80
    port_text = rest[1:]
    if rest[0] != ":" or not port_text.isdigit() or len(port_text) > 5:
        return None
    return name, int(port_text)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name[1:-1] if name.startswith("[") else name)
    except ValueError:
        return False
    return True


class RequestGuard:
    """ASGI middleware in front of the app: only requests meant for this server,
    from its own page, are let through (see the module docstring).

    * ``Host`` missing or malformed: 400; naming another server: 403. Allowed:
      ``names`` (see :func:`allowed_hosts`) with ``port``, and with ``any_ip``
      (the server listens on a wildcard address) any IP address with ``port``.
    * ``Origin`` present and not ``http://`` + the Host header: 403 (a page of
      another site or another port of this machine).
    * POST without ``Content-Type: application/json``: 415.
    * A body over ``max_body`` bytes (any method but GET/HEAD): 413, from the
      declared ``Content-Length`` before reading, or as soon as the chunks
      read exceed it; the body is never held beyond ``max_body``.

    Refusals close the connection, so an unread body is not drained either.
    """

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        names: Iterable[str],
        port: int,
        any_ip: bool = False,
        max_body: int = MAX_BODY,
        on_refuse: Callable[[int, str], None] | None = None,
    ) -> None:
        self.app = app
        self.on_refuse = on_refuse
        self.names = frozenset(_host_name(n) for n in names)
        self.port = port
        self.any_ip = any_ip
        self.max_body = max_body

    def host_allowed(self, value: str) -> bool | None:
        """True/False for a well-formed Host value; None if malformed."""
        parsed = _split_host(value)
        if parsed is None:
            return None
        name, port = parsed
        return port == self.port and (name in self.names or (self.any_ip and _is_ip(name)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def refuse(status: int, message: str) -> None:
            if self.on_refuse is not None:
                self.on_refuse(status, f"{scope['method']} {scope['path']}: {message}")
            await _refuse(send, status, message)

        headers: dict[str, str] = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            if name in headers:  # a repeated Host, Origin, ...: ambiguous, refused below
                headers[name] = "\x00"
            else:
                headers[name] = value.decode("latin-1")
        host = headers.get("host")
        ok = None if host is None else self.host_allowed(host)
        if ok is None:
            await refuse(400, "a Host header naming this server is required")
            return
        if not ok:
            await refuse(
                403,
                f"Host {host!r} is not this server (requests for other names are refused: "
                "DNS rebinding)",
            )
            return
        assert host is not None
        origin = headers.get("origin")
        if origin is not None and origin.lower() != f"http://{host.strip().lower()}":
            await refuse(403, f"requests from other pages ({origin}) are refused")
            return
        method = scope["method"]
        if method in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if method == "POST":
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                await refuse(415, "POST bodies must be 'Content-Type: application/json'")
                return
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or len(declared) > 18):
            await refuse(400, "bad Content-Length")
            return
        if declared is not None and int(declared) > self.max_body:
            await refuse(413, f"request body over {self.max_body} bytes")
            return
        chunks: list[bytes] = []
        size = 0
        while True:  # read at most max_body (+ one chunk): never the whole of a huge body
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await refuse(413, f"request body over {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _refuse(send: Send, status: int, message: str) -> None:
    data = json.dumps({"error": message}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def make_app(
    server: TeachServer,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    allow_hosts: Iterable[str] = (),
    max_body: int = MAX_BODY,
) -> Any:
    """The app for a server listening on ``host:port``: the page, its static files
    and the JSON API, behind a :class:`RequestGuard` (Host names allowed:
    :func:`allowed_hosts` of ``host`` and ``allow_hosts``)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            # ValueError: bad JSON, or an integer of more digits than Python converts.
            raise RequestError(400, "the request body must be JSON") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the request body must be a JSON object")
        return body

    def with_stats(action: Callable[..., dict[str, Any] | None], *args: Any) -> dict[str, Any]:
        # Off the event loop: both may wait for the session's locks.
        return {"task": action(*args), "stats": server.stats()}

    async def index(request: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def api_next(request: Request) -> JSONResponse:
        body = await body_of(request)
        client = server.check_client(body.get("client"))
        return JSONResponse(await run_in_threadpool(with_stats, server.next_for, client))

    async def api_answer(request: Request) -> JSONResponse:
        body = await body_of(request)
        client = server.check_client(body.get("client"))
        return JSONResponse(
            await run_in_threadpool(
                with_stats, server.answer, client, body.get("task_hash"), body.get("answer")
            )
        )

    async def api_undo(request: Request) -> JSONResponse:
        body = await body_of(request)
        client = server.check_client(body.get("client"))
        return JSONResponse(await run_in_threadpool(with_stats, server.undo, client))

    async def api_stats(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(server.stats))

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        LOG.exception("error answering %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"server error: {exc}"}, status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(server.close)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/next", api_next, methods=["POST"]),
            Route("/api/answer", api_answer, methods=["POST"]),
            Route("/api/undo", api_undo, methods=["POST"]),
            Route("/api/stats", api_stats),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={
            RequestError: refused,
            HTTPException: http_error,
            Exception: crashed,
        },
        lifespan=lifespan,
    )
    return RequestGuard(
        app,
        names=allowed_hosts(host, allow_hosts),
        port=port,
        any_ip=host.strip() in _WILDCARD,
        max_body=max_body,
        on_refuse=server.note_refused,
    )


def _listener_of(port: int) -> str | None:
    """What listens on TCP ``port`` on this machine, if Linux's /proc tells:
    'process PID (command line)', or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            # local_address is ADDR:PORT in hex; state 0A is LISTEN; field 9 the inode.
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue  # another user's process, or gone
        for fd in fds:
            try:
                if os.readlink(fd) in inodes:
                    cmd = (
                        (proc / "cmdline")
                        .read_bytes()
                        .replace(b"\0", b" ")
                        .decode("utf-8", "replace")
                    )
                    cmd = cmd.strip()
                    return f"process {proc.name} ({cmd[:120]}{'…' if len(cmd) > 120 else ''})"
            except OSError:
                continue
    return "a process of another user"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), or an OSError
    that says plainly what is wrong (a port in use: by what, if this machine
    tells). SO_REUSEADDR: a restart right after a stop or a crash binds at once,
    even while connections of the old server linger in TIME_WAIT."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share a port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            who = _listener_of(port)
            taken = f"in use by {who}" if who else "in use"
            raise OSError(f"port {port} on {host} is {taken}; choose another with --port") from None
        raise OSError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def uvicorn_server(
    server: TeachServer,
    sock: socket.socket,
    *,
    allow_hosts: Iterable[str] = (),
    log_level: str = "warning",
) -> Any:
    """A ``uvicorn.Server`` for the app on ``sock`` (HTTP only: no websockets
    needed); Host names allowed: see :func:`allowed_hosts`."""
    import uvicorn

    host, port = sock.getsockname()[:2]
    app = make_app(server, host=host, port=port, allow_hosts=allow_hosts)
    config = uvicorn.Config(app, log_level=log_level, lifespan="on", ws="none")
    return uvicorn.Server(config)


def serve(
    server: TeachServer,
    sock: socket.socket,
    *,
    allow_hosts: Iterable[str] = (),
    log_level: str = "warning",
) -> None:
    """Run the app on ``sock`` with uvicorn until interrupted (Ctrl-C, SIGTERM);
    the lifespan's shutdown trains on pending answers and saves the model.
    ``allow_hosts``: Host names the page may be reached by besides the loopback
    names and the address listened on (e.g. the ``--host`` name as given).
    uvicorn raises a caught Ctrl-C again once it has shut down: that is the
    normal way out here, not an error."""
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn_server(server, sock, allow_hosts=allow_hosts, log_level=log_level).run(
            sockets=[sock]
        )
