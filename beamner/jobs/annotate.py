"""``annotate``: a pipeline's beam over a stream of records, written as JSONL."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from spacy.language import Language

from beamner.engine.pipes import load_model
from beamner.io.records import (
    RunSummary,
    UntilBadLine,
    batched,
    complete_lines,
    count_records,
    json_line,
    jsonl_output,
    progress_bar,
)
from beamner.jobs.options import AnnotateArgs, AnnotateJob
from beamner.jobs.runners import Annotator, Failure, job_settings, skip_done, stopped_at

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["annotate", "stop_state"]


def annotate(
    model: str | os.PathLike[str] | Language,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    **args: Unpack[AnnotateArgs],
) -> RunSummary:
    """Annotate ``input`` with ``model``'s beam and write JSONL to ``output``
    (stdout when ``None``): every input key, ``text``, ``ents`` (the best
    parse, with each entity's probability as ``score``) and ``spans`` (every
    candidate entity with probability >= ``threshold``, highest first); see
    :class:`~beamner.jobs.runners.Annotator`. The keyword options and their
    defaults: :class:`~beamner.jobs.options.AnnotateJob`.

    The output follows :mod:`beamner.io.atomic`: ``output`` may not be the
    input, an existing one is refused unless ``overwrite`` or ``resume``, and
    it is written beside and renamed into place at the end. A bad record
    raises :class:`~beamner.io.records.InputError` naming ``input:line``; when
    ``output`` did not exist before, the lines before the bad record are then
    left in it, so ``resume`` (which counts the complete lines in ``output``
    and skips that many inputs) goes on from there. A run that fails leaves an
    ``output`` that existed before as it was. ``skip_invalid``: bad records
    (bad lines, texts over ``nlp.max_length``, any record the pipeline fails
    on) are skipped alone and counted in the summary.

    ``normalize``: the beam's ``"none"`` or ``"local"`` (``None``: the
    component's own setting, ``"none"`` for spaCy pipelines). Under
    ``"local"`` every span also gets ``bounds`` ``[lower, upper]`` (the
    interval its marginal under the model lies in) and the line a
    ``coverage`` (the model probability the beam held)."""
    job = AnnotateJob(**args)
    target, summary, records = job.start(input, output, resume=job.resume, resumable=True)
    nlp = load_model(model, job.gpu_id)
    settings = job_settings(nlp, job.beam_width, job.beam_density, job.normalize)
    annotator = Annotator(nlp, settings, job.options)
    existed = target is not None and target.exists()
    resume = job.resume
    already, keep_bytes = complete_lines(target) if resume and target is not None else (0, 0)
    summary.skipped_resume = already
    max_length = nlp.max_length if job.skip_invalid else None
    stream = UntilBadLine(skip_done(records, already, max_length))
    total = count_records(input, job.fmt) if job.progress is not False else None
    left = None if total is None else max(total - already, 0)
    bar = progress_bar(left, job.progress, "annotate")
    try:
        with jsonl_output(target, keep_partial=True, keep_bytes=keep_bytes) as out:
            for batch in batched(stream, job.batch_size):
                for result in annotator.run(batch):
                    if isinstance(result, Failure):
                        error = f"{input}:{result.line}: {result.reason}"
                        if not job.skip_invalid:
                            raise stopped_at(error, *stop_state(target, existed, resume, summary))
                        summary.add_invalid(result.line, result.reason)
                        continue
                    out.write_line(json_line(result))
                    summary.written += 1
                out.flush()
                bar.update(len(batch))
            if stream.error is not None:
                raise stopped_at(str(stream.error), *stop_state(target, existed, resume, summary))
    finally:
        bar.close()
    return summary


def stop_state(
    target: Path | None, existed: bool, resume: bool, summary: RunSummary
) -> tuple[str, str]:
    """What the output of an annotate run stopped at a bad record holds, and the
    option a rerun goes on with."""
    done = summary.skipped_resume + summary.written
    if target is None:
        return f"{done} docs were written", ""
    if not existed:
        if not done:
            return f"nothing was written to {target}", ""
        return f"{done} docs are in {target}", " with --resume"
    if resume:
        return f"{target} is left as it was, {summary.skipped_resume} docs", " with --resume"
    return f"{target} is left as it was", " with --overwrite"
