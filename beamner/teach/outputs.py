"""Where ``teach`` and ``teach-update`` may write their pipeline, checked before
anything is written (beamner's output policy, :mod:`beamner.io.atomic`), and
the counts in their messages."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from beamner.io.atomic import OutputError, check_output, is_marked

__all__ = ["check_pipeline_output", "input_paths"]


def input_paths(*inputs: Any) -> list[Path]:
    """The inputs that are files or folders on disk (a model may be a package
    name or an ``nlp`` object, a source an iterable of texts: not paths)."""
    out = []
    for item in inputs:
        if isinstance(item, (str, os.PathLike)) and str(item) != "-" and Path(item).exists():
            out.append(Path(item))
    return out


def check_pipeline_output(
    output: str | os.PathLike[str], inputs: Iterable[Path], *, overwrite: bool = False
) -> Path:
    """Refuse a pipeline folder ``output`` that would destroy something:

    * an output that is one of ``inputs`` (the dataset, the answers, the
      model), or inside an input folder, or that holds an input (replacing
      the folder would delete it);
    * an existing file, or a non-empty folder beamner did not write (no
      :data:`~beamner.io.atomic.MARKER`), unless ``overwrite``;
    * a folder ``OUTPUT.partial`` or ``OUTPUT.old`` beamner did not write:
      checkpoints are swapped in through those names, and only beamner's own
      leftovers there are ever removed (``overwrite`` does not change that).

    Raises :class:`~beamner.io.atomic.OutputError`; writes nothing."""
    inputs = list(inputs)
    path = check_output(output, inputs, overwrite=overwrite, folder=True)
    assert path is not None  # a folder name, never stdout
    resolved = path.resolve()
    for source in inputs:
        if source.resolve().is_relative_to(resolved):
            raise OutputError(
                f"the input {source} is inside the output folder {path}, which is replaced "
                "when the model is saved; write elsewhere"
            )
    for leftover in (path.with_name(path.name + ".partial"), path.with_name(path.name + ".old")):
        if leftover.exists() and not (leftover.is_dir() and is_marked(leftover)):
            raise OutputError(
                f"{leftover} exists and was not written by beamner (saves go through that "
                f"name); move it away or choose another output than {path}"
            )
    return path
