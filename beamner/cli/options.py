"""Options and helpers the ``beamner`` commands share."""

from __future__ import annotations

import contextlib
import inspect
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

from beamner.engine.settings import CLI_NORMALIZE, MAX_BEAM_WIDTH, BeamSettings
from beamner.io.atomic import atomic_write_text

OptPath = Path | None
OptStr = str | None
OptInt = int | None
OptFloat = float | None

Result = TypeVar("Result")
Command = TypeVar("Command", bound=Callable[..., None])


# One-line option declarations: ``name: Annotated[type, helper(...)] = default``.
def fraction(*names: str, help: str | None = None) -> Any:
    """An option whose value is a share or a probability, in [0, 1]."""
    return typer.Option(*names, min=0.0, max=1.0, help=help)


def count(*names: str, help: str) -> Any:
    """An option whose value is a number of things, at least 1."""
    return typer.Option(*names, min=1, help=help)


def output_option(help: str) -> Any:
    """``--output``/``-o``: what a command writes, or where."""
    return typer.Option("--output", "-o", help=help)


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


def with_options(group: type, *, leave_out: Collection[str] = ()) -> Callable[[Command], Command]:
    """Gives the decorated command the options ``group`` declares, but those named in
    ``leave_out``; the command receives them as ``**options``.

    ``group`` declares each option as a command's ``def`` would, as an annotated class
    attribute: ``name: <Annotated option type> = default``. Commands that share a group of
    options so write it once. typer reads the command's signature: the group's options
    are added to it, as keyword-only parameters after the command's own, in the group's
    order (the order --help lists them in)."""

    def add(command: Command) -> Command:
        own = inspect.signature(command, eval_str=True).parameters.values()
        kept = [p for p in own if p.kind is not inspect.Parameter.VAR_KEYWORD]
        added = [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=getattr(group, name), annotation=hint
            )
            for name, hint in get_type_hints(group, include_extras=True).items()
            if name not in leave_out
        ]
        command.__signature__ = inspect.Signature([*kept, *added])  # type: ignore[attr-defined]
        return command

    return add


def forward(
    function: Callable[..., Result], options: Mapping[str, Any], /, *args: Any, **given: Any
) -> Result:
    """``function(*args, **given)``, with besides each of ``options`` that ``function``
    takes as a keyword-only parameter of that name and ``given`` does not set.

    For a command that wraps a library function whose keyword options are the command's
    own parameters under the same names: the command passes its ``locals()`` and they
    are forwarded by name, not spelled out as ``name=name`` lists. What the function does
    not take (--report, ...) stays with the command; what it takes under another name, or
    changed, goes in ``given``. A local the command assigns itself is forwarded too if the
    function has a keyword of its name: give such a one in ``given``."""
    parameters = inspect.signature(function).parameters
    named = {
        name: value
        for name, value in options.items()
        if name in parameters and parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    }
    return function(*args, **(named | given))


def write_json(path: Path | None, result: Mapping[str, Any]) -> None:
    """``result`` as indented JSON to ``path`` (written atomically), if there is one."""
    if path is not None:
        atomic_write_text(path, json.dumps(result, indent=2) + "\n")
