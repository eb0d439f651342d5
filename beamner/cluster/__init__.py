"""annotate and rank past one machine, on Dask (``pip install 'beamner[cluster]'``).

* :func:`annotate` / :func:`rank`: the single-machine jobs over a record file,
  on a cluster (``cluster="tcp://scheduler:8786"``, ``"local[N]"`` or a
  ``distributed.Client``); output byte for byte the single-machine output,
  exactly once per input even when workers die; ``resume`` after an interruption.
* :func:`annotate_bag` / :func:`rank_bag`: the same on a ``dask.bag.Bag``.
* One pipeline per worker process: :func:`worker_pipeline`.
* :func:`connect`: a client for an address, a scheduler file or ``local[N]``; a
  peer that is not a Dask scheduler is a :class:`ClusterError` within a timeout.
"""

from beamner.cluster.bags import annotate_bag, rank_bag
from beamner.cluster.engine import ClusterError, connect
from beamner.cluster.jobs import annotate, rank
from beamner.cluster.workers import PipelineSpec, loads_in_this_process, worker_pipeline

__all__ = [
    "ClusterError",
    "PipelineSpec",
    "annotate",
    "annotate_bag",
    "connect",
    "loads_in_this_process",
    "rank",
    "rank_bag",
    "worker_pipeline",
]
