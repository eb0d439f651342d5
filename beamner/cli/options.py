"""Options and helpers the ``beamner`` commands share."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from beamner.engine.settings import CLI_NORMALIZE, MAX_BEAM_WIDTH, BeamSettings

OptPath = Path | None
OptStr = str | None
OptInt = int | None
OptFloat = float | None

# Shared options.
Model = Annotated[str, typer.Argument(help="spaCy pipeline: an installed package name or a path.")]
BeamWidth = Annotated[
    int, typer.Option("--beam-width", "-w", min=1, max=MAX_BEAM_WIDTH, help="Beam width.")
]
BeamDensity = Annotated[
    float,
    typer.Option("--beam-density", min=0.0, max=1.0, help="Beam density (prune below d * best)."),
]
# A fit's beam (calibrate, threshold): the component's unless given.
ComponentBeamWidth = Annotated[
    OptInt,
    typer.Option("--beam-width", "-w", min=1, max=MAX_BEAM_WIDTH, help="Default: the component's."),
]
ComponentBeamDensity = Annotated[
    OptFloat,
    typer.Option("--beam-density", min=0.0, max=1.0, help="Default: the component's."),
]
BatchSize = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Docs per batch.")]
GpuId = Annotated[
    int, typer.Option("--gpu-id", "-g", help="GPU to use (spacy.require_gpu); -1: CPU.")
]
Format = Annotated[
    str, typer.Option("--format", "-f", help="Input format: auto, jsonl, text or spacy.")
]
GoldFormat = Annotated[
    str, typer.Option("--format", "-f", help="Gold format: auto, conll, spacy or jsonl.")
]
SkipInvalid = Annotated[
    bool, typer.Option("--skip-invalid", help="Skip bad input lines and count them, not fail.")
]
Progress = Annotated[
    bool | None,
    typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal)."),
]
SentencesPerDoc = Annotated[
    int, typer.Option("--sentences-per-doc", min=1, help="CoNLL sentences grouped into a doc.")
]
LabelMap = Annotated[
    str | None,
    typer.Option(
        "--label-map",
        help="Rename predicted labels: PRED=GOLD,... or a built-in map (conll, btc, wnut17); "
        "unmapped predicted labels are ignored.",
    ),
]


#: The commands' defaults: beamner's (engine/settings.py, where each has its reason).
DEFAULTS = BeamSettings()
NORMALIZE_DEFAULT = CLI_NORMALIZE
Normalize = Annotated[
    str,
    typer.Option(
        "--normalize",
        help="Beam normalization: local (log-probabilities; spans get bounds, lines a "
        "coverage) or none (spaCy's raw scores).",
    ),
]


#: What a command reports as ``error: ...`` and exit status 1 instead of a
#: traceback: bad input or settings (ValueError, including InputError and
#: OutputError), files (OSError), a missing extra (ImportError), a native
#: allocation the machine cannot give (MemoryError).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError, MemoryError)


def fail(err: BaseException) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """The one ``try``/``fail`` of every command: :data:`USER_ERRORS` become
    ``error: <message>`` and exit status 1."""
    try:
        yield
    except USER_ERRORS as err:
        fail(err)


Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace an existing output (a file, or a folder beamner did not write). "
        "Without it an existing output is refused and left as it is.",
    ),
]


Cluster = Annotated[
    OptStr,
    typer.Option(
        "--cluster",
        help="Run on Dask (the 'cluster' extra): a scheduler address "
        "(tcp://host:8786), a scheduler file (.json) or local[N] for N local worker processes.",
    ),
]
