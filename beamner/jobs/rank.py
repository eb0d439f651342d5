"""``rank``: order unlabelled records for annotation, most uncertain first."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from spacy.language import Language

from beamner.engine.pipes import load_model
from beamner.io.records import (
    RunSummary,
    UntilBadLine,
    batched,
    count_records,
    jsonl_output,
    progress_bar,
)
from beamner.jobs.options import RankArgs, RankJob
from beamner.jobs.runners import (
    STRATEGIES,
    Failure,
    Ranker,
    ScoredTask,
    job_settings,
    stopped_at,
    top_k,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["STRATEGIES", "rank"]


def rank(
    model: str | os.PathLike[str] | Language,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    **args: Unpack[RankArgs],
) -> RunSummary:
    """Order ``input`` for annotation, most uncertain first (like Prodigy's
    ``ner.teach``), and write JSONL tasks: the input keys, ``text``,
    ``spans`` (candidates >= ``threshold`` with ``score``) and ``meta``
    (input ``meta`` plus ``score``, ``entropy``, ``margin``, ``uncertainty``);
    see :class:`~beamner.jobs.runners.Ranker`. The keyword options and their
    defaults: :class:`~beamner.jobs.options.RankJob`.
    ``normalize``: the beam's ``"none"``/``"local"`` (``None``: the component's);
    under ``"local"`` spans carry ``bounds`` and ``meta`` the beam's ``coverage``.

    ``strategy``: ``uncertainty`` (an entity probability near 0.5),
    ``entropy`` (of the beam) or ``margin`` (small gap between the two best
    parses). ``unit="entity"``: one task per candidate span, scored
    ``1 - |2p - 1|``. ``top``: keep only the best ``top`` tasks (memory
    bounded by ``top``); otherwise every task is held to be sorted.

    The output is written once every record is scored (beside, then renamed:
    :mod:`beamner.io.atomic`); it may not be the input, and an existing one
    is refused unless ``overwrite``. A bad record raises naming ``input:line``
    and writes nothing; ``skip_invalid`` skips it alone."""
    job = RankJob(**args)
    target, summary, records = job.start(input, output)
    nlp = load_model(model, job.gpu_id)
    settings = job_settings(nlp, job.beam_width, job.beam_density, job.normalize)
    ranker = Ranker(nlp, settings, job.options)
    stream = UntilBadLine(records)
    total = count_records(input, job.fmt) if job.progress is not False else None
    bar = progress_bar(total, job.progress, "rank")

    def scored() -> Iterator[ScoredTask]:
        for batch in batched(stream, job.batch_size):
            for result in ranker.run(batch):
                if isinstance(result, Failure):
                    error = f"{input}:{result.line}: {result.reason}"
                    if not job.skip_invalid:
                        raise stopped_at(error, "nothing was written")
                    summary.add_invalid(result.line, result.reason)
                    continue
                yield from result
            bar.update(len(batch))
        if stream.error is not None:
            raise stopped_at(str(stream.error), "nothing was written")

    try:
        best = top_k(scored(), job.top)
    finally:
        bar.close()
    with jsonl_output(target) as out:
        for _, task in best:
            out.write(task)
    summary.written = len(best)
    return summary
