"""Connecting to Dask: a scheduler address, ``local[N]`` or a client the caller owns."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["connect", "parse_local"]

_LOCAL = re.compile(r"local(?:\[(\d+)\])?")


def parse_local(cluster: str) -> int | None:
    """Workers asked for by ``local[N]`` (``local``: 2), or ``None`` for an address."""
    m = _LOCAL.fullmatch(cluster.strip())
    if m is None:
        return None
    n = int(m.group(1) or 2)
    if n < 1:
        raise ValueError(f"local[N] needs N >= 1, got {cluster!r}")
    return n


@contextmanager
def connect(cluster: Any) -> Iterator[Any]:
    """A ``distributed.Client`` for ``cluster``:

    * a ``Client``: used as is (not closed after);
    * ``"local[N]"``: a local cluster of N worker processes with one thread each,
      started here and stopped after (the worker loads the pipeline once; a thread
      per core in separate processes is how spaCy scales on CPUs);
    * anything else: a scheduler address (``tcp://host:8786``) or a scheduler file
      path (``*.json``, as written by ``dask scheduler --scheduler-file``)."""
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
    n_workers = parse_local(cluster)
    if n_workers is not None:
        local = LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None
        )
        with local, Client(local) as client:
            yield client
        return
    if cluster.endswith(".json"):
        with Client(scheduler_file=cluster) as client:
            yield client
        return
    with Client(cluster) as client:
        yield client
