"""``beamner teach`` against other web pages and bad input (issue #20): foreign
Host and Origin, text/plain POSTs, huge bodies, bad source lines, port reuse
after a crash, bodies the server cannot use, fsync of every answer.

A small greedy model trained on WNUT-17 train suggests entities of WNUT-17 dev
sentences (the helpers come from test_teach_page)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.server
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import spacy
from conftest import DATA
from test_teach_page import (
    LABELS,
    Page,
    _browser,
    dataset_lines,
    make_server,
    running,
    wait_until,
)
from trained_models import pipeline_copy, trained_pipeline

from beamner.io.conll import read_conll
from beamner.teach.server import TeachServer, bind_socket, make_app
from beamner.teach.server.app import MAX_BODY, allowed_hosts
from beamner.teach.tasks import TaskStream

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """As in test_teach_page: a small greedy model, no entity ruler."""
    path = tmp_path_factory.mktemp("teach-security") / "greedy"
    nlp = pipeline_copy(trained_pipeline("greedy", n_sentences=400, n_iter=3))
    nlp.remove_pipe("entity_ruler")
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """WNUT-17 dev sentences (the model was trained on train)."""
    path = tmp_path_factory.mktemp("teach-security-source") / "source.jsonl"
    sentences = read_conll(DATA / "wnut17" / "emerging.dev.conll")
    path.write_text(
        "".join(json.dumps({"text": " ".join(t for t, _ in s)}) + "\n" for s in sentences)
    )
    return path


def snapshot(server: TeachServer, dataset: Path) -> tuple[bytes, int, int]:
    """What a foreign request must not change: the dataset file, tasks served, answers."""
    data = dataset.read_bytes() if dataset.exists() else b""
    stats = server.stats()
    return data, stats["n_served"], stats["n_answers"]


# -- other pages in a real browser -----------------------------------------------------------

ATTACK_PAGE = """<!doctype html>
<html><body>
<iframe name="sink"></iframe>
<form id="form" method="POST" action="TARGET/api/next" enctype="text/plain" target="sink">
<input name='{"client": "formpost", "x": "' value='"}'>
</form>
<script>
const target = "TARGET";
const results = [];
async function attempt(what, path, init) {
  try {
    const r = await fetch(target + path, init);
    results.push(`${what}: ${r.type} ${r.status}`);
  } catch (err) {
    results.push(`${what}: error ${err}`);
  }
}
const blind = (body) => ({
  method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"},
  body: JSON.stringify(body),
});
(async () => {
  const jobs = [];
  for (let i = 0; i < 50; i++) {
    jobs.push(attempt(`next ${i}`, "/api/next", blind({client: `c${i}`})));
  }
  // The user's own page id and task, as if the attacker knew them: a blind reject.
  jobs.push(attempt("answer", "/api/answer",
                    blind({client: "user", task_hash: HASH, answer: "reject"})));
  jobs.push(attempt("undo", "/api/undo", blind({client: "user"})));
  // no-cors drops a JSON Content-Type: still not JSON to the server.
  jobs.push(attempt("no-cors json", "/api/next", {
    method: "POST", mode: "no-cors", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({client: "nocorsjson"})}));
  // A CORS request with JSON: the preflight (OPTIONS) is refused, the POST never sent.
  jobs.push(attempt("cors json", "/api/next", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({client: "corsjson"})}));
  jobs.push(attempt("cors stats", "/api/stats", {}));
  await Promise.all(jobs);
  document.getElementById("form").submit();
  window.results = results;
})();
</script>
</body></html>
"""


@contextlib.contextmanager
def static_site(directory: Path) -> Iterator[str]:
    """A plain http.server on another free port of 127.0.0.1, serving ``directory``."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_page_on_another_port_cannot_take_tasks_or_answer(
    model_dir: Path, source: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "d.jsonl"
    server = make_server(model_dir, source, dataset, update_every=100)
    driver = _browser()
    try:
        with running(server) as url, httpx.Client(base_url=url, timeout=60) as http_:
            # The user's page holds a task and has answered one.
            task = http_.post("/api/next", json={"client": "user"}).json()["task"]
            http_.post(
                "/api/answer",
                json={"client": "user", "task_hash": task["_task_hash"], "answer": "accept"},
            ).raise_for_status()
            task = http_.post("/api/next", json={"client": "user"}).json()["task"]
            before = snapshot(server, dataset)
            refused_before = server.stats()["n_refused"]
            site = tmp_path / "site"
            site.mkdir()
            page = ATTACK_PAGE.replace("TARGET", url).replace("HASH", str(task["_task_hash"]))
            (site / "evil.html").write_text(page)
            with static_site(site) as evil:
                assert evil.rsplit(":", 1)[1] != url.rsplit(":", 1)[1]
                driver.get(f"{evil}/evil.html")
                results = wait_until(
                    lambda: driver.execute_script("return window.results"),
                    what="the other page's requests",
                )
                # Every request went out (blind ones resolve opaque), or failed in the browser.
                assert len(results) == 55, results
                outcome = dict(r.split(": ", 1) for r in results)
                # Blind requests resolve with an opaque response; CORS ones fail.
                for i in range(50):
                    assert outcome[f"next {i}"] == "opaque 0", outcome
                assert outcome["cors json"].startswith("error"), outcome
                assert outcome["cors stats"].startswith("error"), outcome
                # The 50 blind POSTs, the answer, the undo, the no-cors "json", the preflight,
                # the stats read and the form: all reached the server and were refused.
                wait_until(
                    lambda: server.stats()["n_refused"] - refused_before >= 56,
                    what="the refusals",
                )
            assert snapshot(server, dataset) == before
            # The user's page still has its task; nothing was taken away from it.
            again = http_.post("/api/next", json={"client": "user"}).json()["task"]
            assert again["_task_hash"] == task["_task_hash"]
            assert server._shown.keys() == {"user"}
        assert len(dataset_lines(dataset)) == 1
    finally:
        driver.quit()


# -- Host, Origin, Content-Type ----------------------------------------------------------------


def test_foreign_host_origin_and_content_type_are_refused(
    model_dir: Path, source: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "d.jsonl"
    server = make_server(model_dir, source, dataset, update_every=100)
    with running(server) as url, httpx.Client(base_url=url, timeout=60) as http_:
        port = int(url.rsplit(":", 1)[1])
        body = b'{"client": "rebind"}'
        before = snapshot(server, dataset)
        for host, status in [
            (f"rebind.attacker.example:{port}", 403),  # DNS rebinding: the attacker's name
            ("rebind.attacker.example", 403),
            (f"localhost.attacker.example:{port}", 403),
            (f"localhost:{port + 1}", 403),  # a name of this machine, another port
            ("localhost", 403),  # no port: 80
            (f"127.0.0.1:{port}x", 400),
            (f"[::1:{port}", 400),
        ]:
            r = http_.post("/api/next", content=body, headers={**JSON, "Host": host})
            assert r.status_code == status, (host, r.text)
            assert r.headers["connection"] == "close"
            assert r.json()["error"]
            r = http_.get("/", headers={"Host": host})  # the page itself is refused too
            assert r.status_code == status, host
        for origin in [f"http://127.0.0.1:{port + 1}", "http://evil.example", "null"]:
            r = http_.post("/api/next", content=body, headers={**JSON, "Origin": origin})
            assert r.status_code == 403 and "other pages" in r.json()["error"], origin
        for content_type in [
            None,
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ]:
            headers = {} if content_type is None else {"Content-Type": content_type}
            r = http_.post("/api/next", content=body, headers=headers)
            assert r.status_code == 415, (content_type, r.text)
        assert snapshot(server, dataset) == before
        assert server.stats()["n_refused"] == 7 * 2 + 3 + 6
        # No Host at all (HTTP/1.0): 400.
        with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
            raw.sendall(b"GET /api/stats HTTP/1.0\r\n\r\n")
            assert read_response(raw)[0] == 400
        # What the page sends is accepted, under each of its names.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LocalHost:{port}"):
            headers = {**JSON, "Host": host, "Origin": f"http://{host}"}
            r = http_.post("/api/next", content=b'{"client": "ok"}', headers=headers)
            assert r.status_code == 200, (host, r.text)
        r = http_.post(
            "/api/next",
            content=b'{"client": "ok"}',
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert r.status_code == 200 and r.json()["task"] is not None
        assert http_.get("/api/stats").status_code == 200


def test_allowed_hosts_for_each_listening_address(
    model_dir: Path, source: Path, tmp_path: Path
) -> None:
    assert allowed_hosts("127.0.0.1") == {"127.0.0.1", "localhost", "[::1]"}
    assert allowed_hosts("::1") == {"127.0.0.1", "localhost", "[::1]"}
    assert "myhost.lan" in allowed_hosts("MyHost.lan")  # what --host names
    assert "teach.example" in allowed_hosts("127.0.0.1", ["teach.example"])
    assert socket.gethostname().lower() in allowed_hosts("0.0.0.0")
    server = make_server(model_dir, source, tmp_path / "d.jsonl", update_every=100)
    try:
        cases = [
            ("127.0.0.1", [], "http://127.0.0.1:8080", 200),
            ("127.0.0.1", [], "http://192.168.1.5:8080", 403),
            ("127.0.0.1", [], "http://teach.example:8080", 403),
            ("127.0.0.1", ["teach.example"], "http://teach.example:8080", 200),
            ("::1", [], "http://[::1]:8080", 200),
            ("0.0.0.0", [], "http://192.168.1.5:8080", 200),  # an address: no rebinding
            ("0.0.0.0", [], "http://[fe80::1]:8080", 200),
            ("0.0.0.0", [], "http://192.168.1.5:8081", 403),
            ("0.0.0.0", [], "http://rebind.attacker.example:8080", 403),
        ]
        for host, extra, base, status in cases:
            app = make_app(server, host=host, port=8080, allow_hosts=extra)
            r = asyncio.run(get_in_process(app, base, "/api/stats"))
            assert r.status_code == status, (host, extra, base, r.text)
    finally:
        server.close()


async def get_in_process(app: Any, base: str, path: str) -> httpx.Response:
    """GET through the ASGI app itself (no lifespan: the server stays open)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        return await client.get(path)


# -- request size --------------------------------------------------------------------------------


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and raw bytes of one HTTP response (read until the server closes)."""
    data = b""
    sock.settimeout(30)
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 ") or data.startswith(b"HTTP/1.0 "), data[:200]
    return int(data.split()[1]), data


def post_big(port: int, size: int, *, chunked: bool) -> tuple[int, bytes, int]:
    """POST ``size`` bytes to /api/answer (declared, or chunked with no length),
    sending until the server answers; (status, response, bytes sent)."""
    piece = memoryview(b"x" * 65536)
    head = b"POST /api/answer HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port
    head += b"Content-Type: application/json\r\n"
    head += (
        b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"Content-Length: %d\r\n\r\n" % size
    )
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < size:
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered: stop sending
                n = min(len(piece), size - sent)
                if chunked:
                    sock.sendall(b"%x\r\n" % n)
                    sock.sendall(piece[:n])
                    sock.sendall(b"\r\n")
                else:
                    sock.sendall(piece[:n])
                sent += n
            if chunked and sent >= size:
                sock.sendall(b"0\r\n\r\n")
        status, data = read_response(sock)
    return status, data, sent


def test_a_10mb_body_gets_413_without_being_read(
    model_dir: Path, source: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "d.jsonl"
    server = make_server(model_dir, source, dataset, update_every=100)
    size = 10 * 1024 * 1024
    with running(server) as url:
        port = int(url.rsplit(":", 1)[1])
        before = snapshot(server, dataset)
        for chunked in (False, True):
            # The server runs in this process: Python's allocations while it handles the
            # request (server and client, all threads) are traced; the body is never held.
            tracemalloc.start()
            try:
                status, data, sent = post_big(port, size, chunked=chunked)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert status == 413, data[:300]
            assert b"request body over 65536 bytes" in data
            assert peak < 3 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB while refusing"
            print(
                f"\n10 MB {'chunked' if chunked else 'declared'} body: 413 after "
                f"{sent / 2**10:.0f} KiB sent; traced peak {peak / 2**20:.2f} MiB"
            )
        assert snapshot(server, dataset) == before
        with httpx.Client(base_url=url, timeout=60) as http_:
            # Just under the limit is read (and refused for what it says, not its size).
            filler = "y" * (MAX_BODY - 100)
            r = http_.post("/api/next", json={"client": "ok", "pad": filler})
            assert r.status_code == 200 and r.json()["task"] is not None


# -- bodies the server cannot use ------------------------------------------------------------


def test_bodies_it_cannot_use_get_400(model_dir: Path, source: Path, tmp_path: Path) -> None:
    dataset = tmp_path / "d.jsonl"
    server = make_server(model_dir, source, dataset, update_every=100)
    with running(server) as url, httpx.Client(base_url=url, timeout=60, headers=JSON) as http_:
        task = http_.post("/api/next", json={"client": "a"}).json()["task"]
        th = task["_task_hash"]
        before = snapshot(server, dataset)
        cases: list[tuple[str | bytes, str]] = [
            ('{"client": ' + "[" * 5000 + "]" * 5000 + "}", "must be JSON"),
            ("[" * 20000, "must be JSON"),
            (
                '{"client": "a", "task_hash": ' + "1" * 5000 + ', "answer": "reject"}',
                "must be JSON",
            ),
            ('{"client": "a", "task_hash": ' + "1" * 4000 + ', "answer": "reject"}', "task_hash"),
            ('{"client": "a", "task_hash": -1, "answer": "reject"}', "task_hash"),
            ('{"client": "a", "task_hash": 9007199254740992, "answer": "reject"}', "task_hash"),
            ('{"client": "a", "task_hash": 1e400, "answer": "reject"}', "task_hash"),
            ('{"client": "a\\n", "task_hash": TH, "answer": "reject"}', "'client' must be"),
            ('{"client": "a\\u0000", "task_hash": TH, "answer": "reject"}', "'client' must"),
            ('{"client": "' + "a" * 65 + '", "task_hash": 1, "answer": "reject"}', "'client'"),
            ('{"client": "a", "task_hash": TH, "answer": ["reject"]}', "'answer' must"),
            ('{"client": "a", "task_hash": TH, "answer": {"x": 1}}', "'answer' must"),
            ('"\\ud800"', "JSON object"),
        ]
        cases.append((b"\xff\xfe{}", "must be JSON"))  # not UTF-8
        for body, message in cases:
            data = body if isinstance(body, bytes) else body.replace("TH", str(th)).encode()
            r = http_.post("/api/answer", content=data)
            assert r.status_code == 400, (body[:80], r.status_code, r.text[:200])
            assert message in r.json()["error"], (body[:80], r.text[:200])
        r = http_.post("/api/next", content=b'{"client": "a\\n"}')
        assert r.status_code == 400
        assert snapshot(server, dataset) == before
        ok = http_.post("/api/answer", json={"client": "a", "task_hash": th, "answer": "reject"})
        assert ok.status_code == 200
    assert dataset_lines(dataset) == [(th, "reject")]


# -- bad source lines ------------------------------------------------------------------------------


def test_bad_source_lines_are_skipped_counted_and_shown(
    model_dir: Path, source: Path, tmp_path: Path
) -> None:
    good = source.read_bytes().splitlines()[:40]
    lines = [
        good[0],
        b"not json at all",
        b'{"txt": "no text key"}',
        b'{"text": "bad \xff utf-8"}',
        b"[1, 2]",
        *good[1:],
    ]
    bad_source = tmp_path / "source.jsonl"
    bad_source.write_bytes(b"\n".join(lines) + b"\n")
    dataset = tmp_path / "d.jsonl"
    server = make_server(model_dir, bad_source, dataset, update_every=1000, order="random")
    driver = _browser()
    try:
        page = Page(driver)
        with running(server) as url:
            driver.get(url)
            page.wait_shown()
            note = wait_until(lambda: page.text("bad-lines"), what="the bad lines note")
            assert note.startswith("4 bad source lines skipped (line 2: not JSON"), note
            assert 'line 3: expected a "text" string' in note and "line 4: not UTF-8" in note
            assert driver.find_element(page.by.ID, "bad-lines").is_displayed()
            stats = server.stats()
            assert stats["n_bad_lines"] == 4
            assert [b["line"] for b in stats["bad_lines"]] == [2, 3, 4, 5]
            assert "expected a JSON object" in stats["bad_lines"][3]["reason"]
            # Every valid text is offered: the tasks run out only after the last line.
            served_lines = set()
            with httpx.Client(base_url=url, timeout=60) as http_:
                task = http_.post("/api/next", json={"client": "drain"}).json()["task"]
                while task is not None:
                    served_lines.add(task["meta"]["line"])
                    body = {"client": "drain", "task_hash": task["_task_hash"], "answer": "ignore"}
                    r = http_.post("/api/answer", json=body)
                    assert r.status_code == 200, r.text
                    task = r.json()["task"]
            assert server.stats()["n_read"] == len(good)
            assert max(served_lines) > 30 and not served_lines & {2, 3, 4, 5}
    finally:
        driver.quit()


def test_task_stream_bad_items(model_dir: Path, source: Path) -> None:
    nlp = spacy.load(model_dir)
    good = [json.loads(x)["text"] for x in source.read_text().splitlines()[:2]]
    texts: list[Any] = [good[0], 5, {"txt": 1}, good[1]]
    stream = TaskStream(nlp, texts, LABELS, batch_size=1, threshold=0.0)
    lines = {t["meta"]["line"] for t in stream}
    assert lines and lines <= {1, 4}
    assert (
        stream.n_read == 2
        and stream.n_bad_lines == 2
        and [n for n, _ in stream.bad_lines] == [2, 3]
    )
    assert "got int" in stream.bad_lines[0][1]
    strict = TaskStream(nlp, texts, LABELS, batch_size=1, skip_bad_lines=False)
    with pytest.raises(ValueError, match="task source item 2: expected a text"):
        list(strict)


# -- the port ------------------------------------------------------------------------------------


def test_bind_socket_reuses_a_port_in_time_wait_and_names_what_holds_it() -> None:
    listener = bind_socket("127.0.0.1", 0)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server closes first: its side of the connection waits in TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    again = bind_socket("127.0.0.1", port)  # at once, not a minute later
    try:
        assert again.getsockname()[1] == port
        # A port really taken: the message says by what.
        with pytest.raises(OSError) as err:
            bind_socket("127.0.0.1", port)
        message = str(err.value)
        assert message.startswith(f"port {port} on 127.0.0.1 is in use by process {os.getpid()} (")
        assert "pytest" in message or "python" in message
        assert message.endswith("; choose another with --port")
    finally:
        again.close()
    with socket.socket() as bound:  # bound, not listening: nothing to name
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        with pytest.raises(OSError, match=rf"^port {port} on 127\.0\.0\.1 is in use; choose"):
            bind_socket("127.0.0.1", port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_teach(model_dir: Path, source: Path, dataset: Path, port: int) -> tuple[Any, str]:
    """``beamner teach`` in a subprocess; (process, banner line or the error)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "beamner",
            "teach",
            str(model_dir),
            str(source),
            "--label",
            ",".join(LABELS),
            "--dataset",
            str(dataset),
            "--port",
            str(port),
            "--beam-width",
            "8",
            "--update-every",
            "100",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = ""
    for _ in range(50):
        line = proc.stderr.readline()
        if "beamner teach: http" in line or "error" in line.lower() or not line:
            break
    return proc, line


def test_restart_on_the_same_port_after_a_crash_and_after_ctrl_c(
    model_dir: Path, source: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "answers.jsonl"
    port = free_port()
    procs: list[Any] = []
    clients: list[httpx.Client] = []
    try:
        for stop in ("kill -9", "Ctrl-C", None):
            proc, banner = start_teach(model_dir, source, dataset, port)
            procs.append(proc)
            # Restarted at once, while the last server's connection to the page lingers.
            assert f"beamner teach: http://127.0.0.1:{port}/" in banner, (stop, banner)
            if stop is None:
                break
            # The page polls: its keep-alive connection is open when the server goes,
            # and stays open (the client does not close it).
            http_ = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
            clients.append(http_)
            task = http_.post("/api/next", json={"client": "p"}).json()["task"]
            http_.post(
                "/api/answer",
                json={"client": "p", "task_hash": task["_task_hash"], "answer": "ignore"},
            ).raise_for_status()
            assert http_.get("/api/stats").status_code == 200
            proc.send_signal(signal.SIGKILL if stop == "kill -9" else signal.SIGINT)
            _, err = proc.communicate(timeout=120)  # reads and closes its stderr
            procs.remove(proc)
            if stop == "Ctrl-C":
                assert proc.returncode == 0 and "stopped; 1 answer" in err, err
            assert f":{port:04X} " in Path("/proc/net/tcp").read_text()  # still there
        assert len(dataset_lines(dataset)) == 2
    finally:
        for client in clients:
            client.close()
        for proc in procs:
            proc.kill()
            proc.communicate(timeout=60)


# -- fsync ---------------------------------------------------------------------------------------


def test_every_acknowledged_answer_is_fsynced(
    model_dir: Path, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []  # inode of each file synced
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    dataset = tmp_path / "d.jsonl"
    server = make_server(model_dir, source, dataset, update_every=100)
    inode = dataset.stat().st_ino
    with running(server) as url, httpx.Client(base_url=url, timeout=60) as http_:
        task = http_.post("/api/next", json={"client": "a"}).json()["task"]
        for i in range(5):
            body = {"client": "a", "task_hash": task["_task_hash"], "answer": "accept"}
            r = http_.post("/api/answer", json=body)
            assert r.status_code == 200
            # On disk before the page was told: one fsync of the dataset per answer.
            assert synced.count(inode) == i + 1
            task = r.json()["task"]
        assert http_.post("/api/undo", json={"client": "a"}).status_code == 200
        assert synced.count(inode) == 6  # the undo's truncation too
    assert len(dataset_lines(dataset)) == 4
    # fsync=False (a benchmark's comparison): flushed only.
    synced.clear()
    other = tmp_path / "nosync.jsonl"
    server = make_server(model_dir, source, other, update_every=100, fsync=False)
    try:
        task = server.next_for("b")
        assert task is not None
        server.answer("b", task["_task_hash"], "reject")
        assert other.stat().st_ino not in synced and len(dataset_lines(other)) == 1
    finally:
        server.close()


# -- what held up, behind the guard ------------------------------------------------------------


def test_20_clients_with_undo_behind_the_guard(
    model_dir: Path, source: Path, tmp_path: Path
) -> None:
    """20 pages answer and undo at once through the guard (Origin and JSON, as
    the page sends them): the file holds exactly the answers not undone, once each."""
    dataset = tmp_path / "d.jsonl"
    server = make_server(model_dir, source, dataset, update_every=25, order="random")
    kept: dict[str, list[tuple[int, str]]] = {}
    failures: list[str] = []
    n_undone: list[int] = []

    def page(name: str) -> None:
        mine: list[tuple[int, str]] = []
        kept[name] = mine
        origin = {"Origin": url}
        with httpx.Client(base_url=url, timeout=120, headers=origin) as http_:
            task = http_.post("/api/next", json={"client": name}).json()["task"]
            for i in range(12):
                decision = ("accept", "reject", "ignore")[i % 3]
                body = {"client": name, "task_hash": task["_task_hash"], "answer": decision}
                r = http_.post("/api/answer", json=body)
                if r.status_code != 200:
                    failures.append(f"{name} answer {i}: {r.status_code} {r.text}")
                    return
                mine.append((task["_task_hash"], decision))
                task = r.json()["task"]
                if i % 4 == 3:  # undo: allowed until an update took the answer
                    r = http_.post("/api/undo", json={"client": name})
                    if r.status_code == 200:
                        undone = mine.pop()
                        n_undone.append(1)
                        task = r.json()["task"]
                        if task["_task_hash"] != undone[0]:
                            failures.append(f"{name} undo {i}: another task came back")
                            return
                    elif r.status_code != 409:
                        failures.append(f"{name} undo {i}: {r.status_code} {r.text}")
                        return

    with running(server) as url:
        threads = [threading.Thread(target=page, args=(f"page{n}",)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        refused = server.stats()["n_refused"]
    assert not failures, failures[:3]
    assert refused == 0 and len(n_undone) > 0
    lines = dataset_lines(dataset)
    expected = [x for mine in kept.values() for x in mine]
    assert sorted(lines) == sorted(expected)
    assert len({h for h, _ in lines}) == len(lines)
    for mine in kept.values():  # each page's answers in the file in its order
        assert [x for x in lines if x in set(mine)] == mine
