"""Learning from yes/no answers: candidate-entity tasks ordered by uncertainty,
binary answers, and native beam updates from them.

* :mod:`beamner.teach.tasks`: the task format, hashes, :class:`TaskStream`;
* :mod:`beamner.teach.answers`: reading, validating and merging answers, Examples;
* :mod:`beamner.teach.session`: :class:`TeachSession` (serve / answer / update,
  thread-safe for a server; its docstring is the contract);
* :mod:`beamner.teach.batch`: :func:`teach_update` (``beamner teach-update``).
"""

from beamner.teach.answers import Answer, MergeReport, merge_answers, read_answers
from beamner.teach.session import TeachSession, UpdateResult
from beamner.teach.tasks import TaskStream, input_hash, task_hash

__all__ = [
    "Answer",
    "MergeReport",
    "TaskStream",
    "TeachSession",
    "UpdateResult",
    "input_hash",
    "merge_answers",
    "read_answers",
    "task_hash",
]
