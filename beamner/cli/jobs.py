"""``beamner annotate`` and ``beamner rank``: the streaming jobs, on one machine or on Dask."""

from __future__ import annotations

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
    count,
    fraction,
    output_option,
    user_errors,
    with_options,
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
Resume = Annotated[
    bool, typer.Option("--resume", help="Skip as many inputs as OUTPUT has lines; append.")
]
#: Skipped lines whose reason a command prints.
REASONS_SHOWN = 10


class JobCommandOptions:
    """The options annotate and rank share (rank all but --resume), after their own."""

    beam_width: BeamWidth = DEFAULTS.width
    beam_density: BeamDensity = DEFAULTS.density
    batch_size: BatchSize = 64
    gpu_id: GpuId = -1
    fmt: Format = "auto"
    skip_invalid: SkipInvalid = False
    resume: Resume = False
    overwrite: Overwrite = False
    progress: Progress = None
    normalize: Normalize = NORMALIZE_DEFAULT
    cluster: Cluster = None
    cluster_timeout: ClusterTimeout = DEFAULT_CONNECT_TIMEOUT


def _run_job(
    name: str, *args: Any, cluster: str | None, cluster_timeout: float, **options: Any
) -> Any:
    """``beamner.jobs.<name>``, or its ``beamner.cluster`` twin on ``cluster``, run."""
    if cluster is None:
        job = getattr(importlib.import_module(f"beamner.jobs.{name}"), name)
        return job(*args, **options)
    job = getattr(importlib.import_module("beamner.cluster"), name)
    return job(*args, cluster=cluster, connect_timeout=cluster_timeout, **options)


def _report_invalid(summary: Any, input: str) -> list[str]:
    """The summary's part on skipped lines, and a line for each of the first reasons."""
    if not summary.n_invalid:
        return []
    lines = ", ".join(map(str, summary.invalid_lines[:REASONS_SHOWN]))
    more = ", ..." if summary.n_invalid > REASONS_SHOWN else ""
    for line in summary.invalid_lines[:REASONS_SHOWN]:
        typer.echo(f"skipped {input}:{line}: {summary.reasons.get(line, 'invalid')}", err=True)
    return [f"{summary.n_invalid} invalid lines skipped (lines {lines}{more})"]


@with_options(JobCommandOptions)
def annotate_cmd(
    model: Model,
    input: Annotated[
        str, typer.Argument(help="JSONL ({'text': ...}), plain text (a doc a line), .spacy or -.")
    ],
    output: Annotated[OptPath, output_option("JSONL output (default: stdout).")] = None,
    threshold: Annotated[
        float, fraction("--threshold", "-t", help="Keep spans with p >= this.")
    ] = 0.1,
    **options: Any,
) -> None:
    """Annotate texts: JSONL with 'ents' (best parse) and 'spans' (candidates with scores).

    Each output line keeps the input's keys. Streams with constant memory; the output is
    written beside and renamed into place when the run ends.
    """
    with user_errors():
        summary = _run_job("annotate", model, input, output, threshold=threshold, **options)
    parts = [f"{plural(summary.written, 'doc')} written"]
    if summary.skipped_resume:
        parts.append(f"{summary.skipped_resume} already in output (resumed)")
    parts += _report_invalid(summary, input)
    typer.echo("; ".join(parts), err=True)


@with_options(JobCommandOptions, leave_out={"resume"})
def rank_cmd(
    model: Model,
    input: Annotated[str, typer.Argument(help="JSONL, plain text (a doc a line), .spacy or -.")],
    output: Annotated[OptPath, output_option("JSONL tasks (default: stdout).")] = None,
    strategy: Annotated[
        str, typer.Option("--strategy", "-s", help="uncertainty, entropy or margin.")
    ] = "uncertainty",
    unit: Annotated[
        str, typer.Option("--unit", help="doc (one task a doc) or entity (one task a span).")
    ] = "doc",
    top: Annotated[
        OptInt, count("--top", "-n", help="Keep only the N most uncertain tasks.")
    ] = None,
    threshold: Annotated[
        float, fraction("--threshold", "-t", help="Spans in a task: p >= this.")
    ] = 0.05,
    **options: Any,
) -> None:
    """Rank examples for annotation, most uncertain first (like Prodigy's ner.teach).

    Writes JSONL tasks with 'text', 'spans' (with 'score') and 'meta' ('score', 'entropy',
    'margin', 'uncertainty').
    """
    with user_errors():
        summary = _run_job(
            "rank",
            model,
            input,
            output,
            strategy=strategy,
            unit=unit,
            top=top,
            threshold=threshold,
            **options,
        )
    typer.echo(
        "; ".join([f"{plural(summary.written, 'task')} written", *_report_invalid(summary, input)]),
        err=True,
    )
