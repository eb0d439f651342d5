"""``annotate``: a pipeline's beam over a stream of records, written as JSONL."""

from __future__ import annotations

import os
from pathlib import Path

from spacy.language import Language

from beamner.engine.pipes import load_model
from beamner.io.atomic import check_output
from beamner.io.records import (
    RunSummary,
    UntilBadLine,
    batched,
    complete_lines,
    count_records,
    json_line,
    jsonl_output,
    progress_bar,
    read_records,
)
from beamner.jobs.runners import (
    DEFAULT_SETTINGS,
    AnnotateOptions,
    Annotator,
    Failure,
    check_batch_size,
    check_beam,
    job_settings,
    skip_done,
    stopped_at,
)

__all__ = ["annotate", "stop_state"]


def annotate(
    model: str | os.PathLike[str] | Language,
    input: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    fmt: str = "auto",
    beam_width: int = DEFAULT_SETTINGS.width,
    beam_density: float = DEFAULT_SETTINGS.density,
    threshold: float = 0.1,
    batch_size: int = 64,
    gpu_id: int = -1,
    skip_invalid: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    normalize: str | None = None,
) -> RunSummary:
    """Annotate ``input`` with ``model``'s beam and write JSONL to ``output``
    (stdout when ``None``): every input key, ``text``, ``ents`` (the best
    parse, with each entity's probability as ``score``) and ``spans`` (every
    candidate entity with probability >= ``threshold``, highest first); see
    :class:`~beamner.jobs.runners.Annotator`.

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
    options = AnnotateOptions(threshold)
    check_batch_size(batch_size)
    check_beam(beam_width, beam_density, normalize)
    target = check_output(output, [input], overwrite=overwrite, resume=resume)
    if resume and target is None:
        raise ValueError("--resume needs an --output file")
    summary = RunSummary()
    records = read_records(input, fmt, skip_invalid=skip_invalid, on_invalid=summary.add_invalid)
    nlp = load_model(model, gpu_id)
    annotator = Annotator(nlp, job_settings(nlp, beam_width, beam_density, normalize), options)
    existed = target is not None and target.exists()
    already, keep_bytes = complete_lines(target) if resume and target is not None else (0, 0)
    summary.skipped_resume = already
    max_length = nlp.max_length if skip_invalid else None
    stream = UntilBadLine(skip_done(records, already, max_length))
    total = count_records(input, fmt) if progress is not False else None
    bar = progress_bar(None if total is None else max(total - already, 0), progress, "annotate")
    try:
        with jsonl_output(target, keep_partial=True, keep_bytes=keep_bytes) as out:
            for batch in batched(stream, batch_size):
                for result in annotator.run(batch):
                    if isinstance(result, Failure):
                        error = f"{input}:{result.line}: {result.reason}"
                        if not skip_invalid:
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
