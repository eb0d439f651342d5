"""``rank``: order unlabelled records for annotation, most uncertain first."""

from __future__ import annotations

import os
from collections.abc import Iterator

from spacy.language import Language

from beamner.engine.pipes import load_model
from beamner.io.atomic import check_output
from beamner.io.records import (
    RunSummary,
    UntilBadLine,
    batched,
    count_records,
    jsonl_output,
    progress_bar,
    read_records,
)
from beamner.jobs.runners import (
    DEFAULT_SETTINGS,
    STRATEGIES,
    Failure,
    Ranker,
    RankOptions,
    ScoredTask,
    check_batch_size,
    check_beam,
    job_settings,
    stopped_at,
    top_k,
)

__all__ = ["STRATEGIES", "rank"]


def rank(
    model: str | os.PathLike[str] | Language,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "auto",
    strategy: str = "uncertainty",
    unit: str = "doc",
    top: int | None = None,
    beam_width: int = DEFAULT_SETTINGS.width,
    beam_density: float = DEFAULT_SETTINGS.density,
    threshold: float = 0.05,
    batch_size: int = 64,
    gpu_id: int = -1,
    skip_invalid: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    normalize: str | None = None,
) -> RunSummary:
    """Order ``input`` for annotation, most uncertain first (like Prodigy's
    ``ner.teach``), and write JSONL tasks: the input keys, ``text``,
    ``spans`` (candidates >= ``threshold`` with ``score``) and ``meta``
    (input ``meta`` plus ``score``, ``entropy``, ``margin``, ``uncertainty``);
    see :class:`~beamner.jobs.runners.Ranker`.
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
    options = RankOptions(strategy, unit, threshold, top)
    check_batch_size(batch_size)
    check_beam(beam_width, beam_density, normalize)
    target = check_output(output, [input], overwrite=overwrite)
    summary = RunSummary()
    records = read_records(input, fmt, skip_invalid=skip_invalid, on_invalid=summary.add_invalid)
    nlp = load_model(model, gpu_id)
    ranker = Ranker(nlp, job_settings(nlp, beam_width, beam_density, normalize), options)
    stream = UntilBadLine(records)
    total = count_records(input, fmt) if progress is not False else None
    bar = progress_bar(total, progress, "rank")

    def scored() -> Iterator[ScoredTask]:
        for batch in batched(stream, batch_size):
            for result in ranker.run(batch):
                if isinstance(result, Failure):
                    error = f"{input}:{result.line}: {result.reason}"
                    if not skip_invalid:
                        raise stopped_at(error, "nothing was written")
                    summary.add_invalid(result.line, result.reason)
                    continue
                yield from result
            bar.update(len(batch))
        if stream.error is not None:
            raise stopped_at(str(stream.error), "nothing was written")

    try:
        best = top_k(scored(), top)
    finally:
        bar.close()
    with jsonl_output(target) as out:
        for _, task in best:
            out.write(task)
    summary.written = len(best)
    return summary
