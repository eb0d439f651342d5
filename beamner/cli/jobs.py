"""``beamner annotate`` and ``beamner rank``: the streaming jobs, on one machine or on Dask."""

from __future__ import annotations

import functools
import importlib
from typing import Annotated, Any

import typer

from beamner.cli.options import (
    DEFAULTS,
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
    Overwrite,
    Progress,
    SkipInvalid,
    user_errors,
)
from beamner.cluster.engine import DEFAULT_CONNECT_TIMEOUT
from beamner.io.records import plural

ClusterTimeout = Annotated[
    float,
    typer.Option(
        "--cluster-timeout",
        min=0.1,
        help="Seconds a --cluster scheduler has to accept and answer before the job gives up.",
    ),
]
#: Skipped lines whose reason a command prints.
REASONS_SHOWN = 10


def _job(name: str, cluster: str | None, timeout: float) -> Any:
    """``beamner.jobs.<name>``, or its ``beamner.cluster`` twin bound to ``cluster``."""
    if cluster is None:
        return getattr(importlib.import_module(f"beamner.jobs.{name}"), name)
    job = getattr(importlib.import_module("beamner.cluster"), name)
    return functools.partial(job, cluster=cluster, connect_timeout=timeout)


def _report_invalid(summary: Any, input: str) -> list[str]:
    """The summary's part on skipped lines, and a line for each of the first reasons."""
    if not summary.n_invalid:
        return []
    lines = ", ".join(map(str, summary.invalid_lines[:REASONS_SHOWN]))
    more = ", ..." if summary.n_invalid > REASONS_SHOWN else ""
    for line in summary.invalid_lines[:REASONS_SHOWN]:
        typer.echo(f"skipped {input}:{line}: {summary.reasons.get(line, 'invalid')}", err=True)
    return [f"{summary.n_invalid} invalid lines skipped (lines {lines}{more})"]


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
    beam_width: BeamWidth = DEFAULTS.width,
    beam_density: BeamDensity = DEFAULTS.density,
    batch_size: BatchSize = 64,
    gpu_id: GpuId = -1,
    fmt: Format = "auto",
    skip_invalid: SkipInvalid = False,
    resume: Annotated[
        bool,
        typer.Option("--resume", help="Skip as many inputs as OUTPUT has lines; append."),
    ] = False,
    overwrite: Overwrite = False,
    progress: Progress = None,
    normalize: Normalize = NORMALIZE_DEFAULT,
    cluster: Cluster = None,
    cluster_timeout: ClusterTimeout = DEFAULT_CONNECT_TIMEOUT,
) -> None:
    """Annotate texts: JSONL with 'ents' (best parse) and 'spans' (candidates with scores).

    Each output line keeps the input's keys. Streams with constant memory; the output is
    written beside and renamed into place when the run ends.
    """
    with user_errors():
        summary = _job("annotate", cluster, cluster_timeout)(
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
            overwrite=overwrite,
            progress=progress,
            normalize=normalize,
        )
    parts = [f"{plural(summary.written, 'doc')} written"]
    if summary.skipped_resume:
        parts.append(f"{summary.skipped_resume} already in output (resumed)")
    parts += _report_invalid(summary, input)
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
    beam_width: BeamWidth = DEFAULTS.width,
    beam_density: BeamDensity = DEFAULTS.density,
    batch_size: BatchSize = 64,
    gpu_id: GpuId = -1,
    fmt: Format = "auto",
    skip_invalid: SkipInvalid = False,
    overwrite: Overwrite = False,
    progress: Progress = None,
    normalize: Normalize = NORMALIZE_DEFAULT,
    cluster: Cluster = None,
    cluster_timeout: ClusterTimeout = DEFAULT_CONNECT_TIMEOUT,
) -> None:
    """Rank examples for annotation, most uncertain first (like Prodigy's ner.teach).

    Writes JSONL tasks with 'text', 'spans' (with 'score') and 'meta' ('score', 'entropy',
    'margin', 'uncertainty').
    """
    with user_errors():
        summary = _job("rank", cluster, cluster_timeout)(
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
            overwrite=overwrite,
            progress=progress,
            normalize=normalize,
        )
    typer.echo(
        "; ".join([f"{plural(summary.written, 'task')} written", *_report_invalid(summary, input)]),
        err=True,
    )
