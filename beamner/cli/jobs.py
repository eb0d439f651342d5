"""``beamner annotate`` and ``beamner rank``: the streaming jobs, on one machine or on Dask."""

from __future__ import annotations

from typing import Annotated

import typer

from beamner.cli.options import (
    NORMALIZE_DEFAULT,
    BatchSize,
    BeamDensity,
    BeamWidth,
    Cluster,
    Format,
    GpuId,
    Model,
    Normalize,
    OptInt,
    OptPath,
    Progress,
    SkipInvalid,
    cluster_job,
    fail,
)


def annotate_cmd(
    model: Model,
    input: Annotated[
        str, typer.Argument(help="JSONL ({'text': ...}), plain text (a doc a line), .spacy or -.")
    ],
    output: Annotated[
        OptPath,
        typer.Option("--output", "-o", help="JSONL output (default: stdout)."),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option("--threshold", "-t", min=0.0, max=1.0, help="Keep spans with p >= this."),
    ] = 0.1,
    beam_width: BeamWidth = 16,
    beam_density: BeamDensity = 0.0001,
    batch_size: BatchSize = 64,
    gpu_id: GpuId = -1,
    fmt: Format = "auto",
    skip_invalid: SkipInvalid = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Skip as many inputs as OUTPUT has lines; append."),
    ] = False,
    progress: Progress = None,
    normalize: Normalize = NORMALIZE_DEFAULT,
    cluster: Cluster = None,
) -> None:
    """Annotate texts: JSONL with 'ents' (best parse) and 'spans' (candidates with scores).

    Each output line keeps the input's keys. Streams with constant memory, flushes every batch.
    """
    from beamner.jobs.annotate import annotate

    try:
        summary = cluster_job(annotate, cluster, "annotate")(
            model,
            input,
            output,
            fmt=fmt,
            beam_width=beam_width,
            beam_density=beam_density,
            threshold=threshold,
            batch_size=batch_size,
            gpu_id=gpu_id,
            skip_invalid=skip_invalid,
            resume=resume,
            progress=progress,
            normalize=normalize,
        )
    except (ValueError, OSError, ImportError) as err:
        fail(err)
        return
    parts = [f"{summary.written} docs written"]
    if summary.skipped_resume:
        parts.append(f"{summary.skipped_resume} already in output (resumed)")
    if summary.n_invalid:
        lines = ", ".join(map(str, summary.invalid_lines[:10]))
        more = ", ..." if summary.n_invalid > 10 else ""
        parts.append(f"{summary.n_invalid} invalid lines skipped (lines {lines}{more})")
    typer.echo("; ".join(parts), err=True)


def rank_cmd(
    model: Model,
    input: Annotated[str, typer.Argument(help="JSONL, plain text (a doc a line), .spacy or -.")],
    output: Annotated[
        OptPath,
        typer.Option("--output", "-o", help="JSONL tasks (default: stdout)."),
    ] = None,
    strategy: Annotated[
        str, typer.Option("--strategy", "-s", help="uncertainty, entropy or margin.")
    ] = "uncertainty",
    unit: Annotated[
        str, typer.Option("--unit", help="doc (one task a doc) or entity (one task a span).")
    ] = "doc",
    top: Annotated[
        OptInt,
        typer.Option("--top", "-n", min=1, help="Keep only the N most uncertain tasks."),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option("--threshold", "-t", min=0.0, max=1.0, help="Spans in a task: p >= this."),
    ] = 0.05,
    beam_width: BeamWidth = 16,
    beam_density: BeamDensity = 0.0001,
    batch_size: BatchSize = 64,
    gpu_id: GpuId = -1,
    fmt: Format = "auto",
    skip_invalid: SkipInvalid = False,
    progress: Progress = None,
    normalize: Normalize = NORMALIZE_DEFAULT,
    cluster: Cluster = None,
) -> None:
    """Rank examples for annotation, most uncertain first (like Prodigy's ner.teach).

    Writes JSONL tasks with 'text', 'spans' (with 'score') and 'meta' ('score', 'entropy',
    'margin', 'uncertainty').
    """
    from beamner.jobs.rank import rank

    try:
        summary = cluster_job(rank, cluster, "rank")(
            model,
            input,
            output,
            fmt=fmt,
            strategy=strategy,
            unit=unit,
            top=top,
            beam_width=beam_width,
            beam_density=beam_density,
            threshold=threshold,
            batch_size=batch_size,
            gpu_id=gpu_id,
            skip_invalid=skip_invalid,
            progress=progress,
            normalize=normalize,
        )
    except (ValueError, OSError, ImportError) as err:
        fail(err)
        return
    msg = f"{summary.written} tasks written"
    if summary.n_invalid:
        msg += f"; {summary.n_invalid} invalid lines skipped"
    typer.echo(msg, err=True)
