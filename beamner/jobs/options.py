"""The options of an ``annotate`` or ``rank`` run, written once.

:class:`AnnotateJob` and :class:`RankJob` hold every keyword option of the
jobs with its default, and check them when made (before a model is loaded or a
file opened). :func:`beamner.jobs.annotate.annotate`,
:func:`beamner.jobs.rank.rank`, their Dask twins (:mod:`beamner.cluster`) and
the bag functions all take these options as keyword arguments
(:class:`AnnotateArgs`, :class:`RankArgs`) and make the job from them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from beamner.io.atomic import check_output
from beamner.io.records import Record, RunSummary, read_records
from beamner.jobs.runners import (
    DEFAULT_SETTINGS,
    AnnotateOptions,
    RankOptions,
    check_batch_size,
    check_beam,
)

__all__ = [
    "AnnotateArgs",
    "AnnotateJob",
    "JobArgs",
    "RankArgs",
    "RankJob",
]

PathLike = str | os.PathLike[str]


class JobArgs(TypedDict, total=False):
    """The keyword options both jobs take (see :class:`Job`)."""

    fmt: str
    beam_width: int
    beam_density: float
    threshold: float
    batch_size: int
    gpu_id: int
    skip_invalid: bool
    overwrite: bool
    progress: bool | None
    normalize: str | None


class AnnotateArgs(JobArgs, total=False):
    """``annotate``'s keyword options (see :class:`AnnotateJob`)."""

    resume: bool


class RankArgs(JobArgs, total=False):
    """``rank``'s keyword options (see :class:`RankJob`)."""

    strategy: str
    unit: str
    top: int | None


@dataclass(frozen=True)
class Job:
    """Options both jobs share.

    * ``fmt``: the input format (``auto``, ``jsonl``, ``text``, ``spacy``;
      :mod:`beamner.io.records`);
    * ``beam_width``, ``beam_density``, ``normalize``: the beam (``normalize``
      ``None``: the component's own setting, ``"none"`` for spaCy pipelines);
    * ``batch_size``: docs per batch; ``gpu_id``: the GPU (-1: CPU);
    * ``skip_invalid``: skip a bad record alone (counted, with its reason, in
      the summary) instead of stopping at it;
    * ``overwrite``: replace an existing output (else refused);
    * ``progress``: a progress bar (``None``: on a terminal)."""

    fmt: str = "auto"
    beam_width: int = DEFAULT_SETTINGS.width
    beam_density: float = DEFAULT_SETTINGS.density
    threshold: float = 0.1
    batch_size: int = 64
    gpu_id: int = -1
    skip_invalid: bool = False
    overwrite: bool = False
    progress: bool | None = None
    normalize: str | None = None

    def __post_init__(self) -> None:
        check_batch_size(self.batch_size)
        check_beam(self.beam_width, self.beam_density, self.normalize)

    def start(
        self,
        input: PathLike,
        output: PathLike | None,
        *,
        resume: bool = False,
        resumable: bool = False,
    ) -> tuple[Path | None, RunSummary, Iterator[Record]]:
        """The output checked (:func:`beamner.io.atomic.check_output`), then the
        input opened: the output path (``None``: stdout), the run's summary and
        the input's records (bad lines skipped into the summary when
        ``skip_invalid``)."""
        target = check_output(
            output, [input], overwrite=self.overwrite, resume=resume, resumable=resumable
        )
        if resume and target is None:
            raise ValueError("--resume needs an --output file")
        summary = RunSummary()
        records = read_records(
            input, self.fmt, skip_invalid=self.skip_invalid, on_invalid=summary.add_invalid
        )
        return target, summary, records


@dataclass(frozen=True)
class AnnotateJob(Job):
    """``annotate``'s options: :class:`Job`'s, ``threshold`` (the lowest
    probability a span in ``spans`` has) and ``resume`` (skip as many inputs as
    the output has complete lines, and add to it)."""

    resume: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _ = self.options  # checks the threshold now

    @property
    def options(self) -> AnnotateOptions:
        return AnnotateOptions(self.threshold)


@dataclass(frozen=True)
class RankJob(Job):
    """``rank``'s options: :class:`Job`'s and those of
    :class:`~beamner.jobs.runners.RankOptions` (``strategy``, ``unit``,
    ``threshold``, default 0.05, and ``top``)."""

    threshold: float = 0.05
    strategy: str = "uncertainty"
    unit: str = "doc"
    top: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _ = self.options  # checks the options now

    @property
    def options(self) -> RankOptions:
        return RankOptions(self.strategy, self.unit, self.threshold, self.top)
