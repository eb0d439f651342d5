"""Connecting to Dask: a scheduler address, a scheduler file, ``local[N]`` or a
client the caller owns.

Before a ``distributed.Client`` is made for an address, the address is probed
with a plain socket under ``timeout``: a Dask scheduler sends its handshake (a
short length-prefixed msgpack frame) as soon as it accepts a connection, so a
peer that sends nothing (an HTTP server, a dashboard port), closes, or sends
bytes that are not that frame is refused with an error that says so, instead
of a client that waits forever or allocates what a garbage length asks for."""

from __future__ import annotations

import importlib
import json
import re
import socket
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "ClusterError",
    "connect",
    "parse_local",
    "probe_scheduler",
    "read_scheduler_file",
]

#: Seconds to wait for a scheduler to accept and answer (Dask's own default is 30).
DEFAULT_CONNECT_TIMEOUT = 15.0
# A scheduler's handshake is ~100 bytes; a length past this is not one.
_MAX_HANDSHAKE = 1 << 16

_LOCAL = re.compile(r"local(?:\[(\d+)\])?")
_TCP = re.compile(r"(?:tcp://)?(\[[^\]]+\]|[^:/\[\]]+):(\d+)/?")


class ClusterError(ConnectionError):
    """No Dask scheduler could be reached at the address given, or the peer there
    is not one; the message names the address and what was found."""


def parse_local(cluster: str) -> int | None:
    """Workers asked for by ``local[N]`` (``local``: 2), or ``None`` for an address."""
    m = _LOCAL.fullmatch(cluster.strip())
    if m is None:
        return None
    n = int(m.group(1) or 2)
    if n < 1:
        raise ValueError(f"local[N] needs N >= 1, got {cluster!r}")
    return n


def read_scheduler_file(path: str | Path) -> str:
    """The scheduler address in a file written by ``dask scheduler --scheduler-file``."""
    path = Path(path)
    if not path.is_file():
        raise ClusterError(
            f"scheduler file {path} does not exist (start the scheduler with "
            f"--scheduler-file {path}, or give its address)"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ClusterError(f"{path} is not a Dask scheduler file: not JSON ({err})") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str) or not address:
        raise ClusterError(f'{path} is not a Dask scheduler file: no "address" string in it')
    return address


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def probe_scheduler(address: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
    """Check that a Dask scheduler answers at ``address`` (``tcp://host:port`` or
    ``host:port``) within ``timeout`` seconds; :class:`ClusterError` if not.
    Other schemes (``tls://``, ``ucx://``, ...) are left to Dask."""
    m = _TCP.fullmatch(address.strip())
    if m is None:
        if "://" in address:
            return
        raise ClusterError(
            f"{address!r} is not a scheduler address (tcp://host:port), a scheduler file "
            "(.json) or local[N]"
        )
    host, port = m.group(1).strip("[]"), int(m.group(2))
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as err:
        raise ClusterError(
            f"no Dask scheduler at {address}: cannot connect ({err.strerror or err})"
        ) from None
    not_dask = f"the peer at {address} is not a Dask scheduler"
    with sock:
        try:
            (size,) = struct.unpack("<Q", _recv_exactly(sock, 8, deadline))
            if not 0 < size <= _MAX_HANDSHAKE:
                raise ClusterError(f"{not_dask}: its first bytes are not Dask's handshake")
            payload = _recv_exactly(sock, size, deadline)
        except TimeoutError:
            raise ClusterError(
                f"{not_dask}: it accepted the connection but sent no Dask handshake within "
                f"{timeout:g} s (an HTTP server or a dashboard port?)"
            ) from None
        except (EOFError, OSError) as err:
            raise ClusterError(f"{not_dask}: it closed the connection ({err})") from None
    if not _is_handshake(payload):
        raise ClusterError(f"{not_dask}: its first message is not Dask's handshake")


def _is_handshake(payload: bytes) -> bool:
    unpack_frames = importlib.import_module("distributed.protocol.utils").unpack_frames
    msgpack = importlib.import_module("msgpack")  # untyped; what Dask encodes messages with
    try:
        frames = unpack_frames(payload)
        message = msgpack.loads(frames[0])
    except Exception:  # garbage fails in many ways; none of them is a handshake
        return False
    return isinstance(message, dict) and "pickle-protocol" in message


@contextmanager
def connect(cluster: Any, *, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster``:

    * a ``Client``: used as is (not closed after);
    * ``"local[N]"``: a local cluster of N worker processes with one thread each,
      started here and stopped after (the worker loads the pipeline once; a thread
      per core in separate processes is how spaCy scales on CPUs);
    * a scheduler file (``*.json``, as written by ``dask scheduler
      --scheduler-file``) or a scheduler address (``tcp://host:8786``): probed
      (:func:`probe_scheduler`) and connected to within ``timeout`` seconds."""
    try:
        distributed = importlib.import_module("distributed")  # untyped
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ImportError(
            "beamner's cluster jobs need Dask: pip install 'beamner[cluster]'"
        ) from err
    Client, LocalCluster = distributed.Client, distributed.LocalCluster
    if isinstance(cluster, Client):
        yield cluster
        return
    if not isinstance(cluster, str) or not cluster.strip():
        raise ValueError(
            f"cluster must be an address, a scheduler file or local[N], got {cluster!r}"
        )
    if not timeout > 0:
        raise ValueError(f"the connect timeout must be > 0 seconds, got {timeout}")
    n_workers = parse_local(cluster)
    if n_workers is not None:
        local = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        with local, Client(local) as client:
            yield client
        return
    address = cluster.strip()
    if address.endswith(".json") or Path(address).is_file():
        address = read_scheduler_file(address)
    probe_scheduler(address, timeout)
    try:
        client = Client(address, timeout=timeout)
    except OSError as err:
        raise ClusterError(f"cannot connect to the Dask scheduler at {address}: {err}") from None
    with client:
        yield client
