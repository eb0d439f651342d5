"""The one way beamner writes a file or a folder.

The output policy every command follows:

* inputs are read and checked before any output exists (:func:`check_output`
  is called before the first write);
* an output that is one of the inputs (same resolved path or inode) is refused;
* an existing file, or a non-empty folder beamner did not create, is refused
  unless the caller passes ``overwrite`` (or ``resume``, for appending);
* files are written beside the target and renamed over it on success
  (:func:`atomic_file`, :func:`atomic_write_text`); folders are built beside
  the target and swapped in (:func:`swap_directory`), with recovery of an
  interrupted swap;
* nothing is deleted that beamner did not create: the folders beamner writes
  carry a marker file (:data:`MARKER`), and only marked leftovers are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "MARKER",
    "OutputError",
    "atomic_file",
    "atomic_write_text",
    "check_output",
    "fsync_directory",
    "is_marked",
    "on_disk",
    "same_file",
    "swap_directory",
]

#: The file inside every folder beamner writes (pipelines, checkpoints): what
#: lets it later replace or remove that folder without touching a user's own.
MARKER = ".beamner-output"

PathLike = str | os.PathLike[str]


class OutputError(ValueError):
    """An output the policy refuses; the message names the path and the way out."""


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` are the same file (resolved path, or inode when both exist)."""
    pa, pb = Path(a), Path(b)
    if str(a) == "-" or str(b) == "-":
        return False
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def is_marked(folder: Path) -> bool:
    """Whether ``folder`` was written by beamner (holds :data:`MARKER`)."""
    return (folder / MARKER).is_file()


def on_disk(*inputs: object) -> list[Path]:
    """The inputs that are files or folders on disk: what a command whose
    model may be a package name or an ``nlp`` object, and whose source may be
    an iterable of texts, hands to :func:`check_output`."""
    paths = [Path(i) for i in inputs if isinstance(i, (str, os.PathLike)) and str(i) != "-"]
    return [path for path in paths if path.exists()]


def check_output(
    output: PathLike | None,
    inputs: Iterable[object] = (),
    *,
    overwrite: bool = False,
    resume: bool = False,
    resumable: bool = False,
    folder: bool = False,
) -> Path | None:
    """Check ``output`` against the policy (module docstring) before anything
    is written; return it as a Path (``None`` for stdout). ``inputs``: the
    command's inputs; those that are not paths (``None``, an ``nlp`` object,
    ``"-"``) are skipped.

    ``folder``: the output is a folder, replaced by :func:`swap_directory`; an
    existing folder beamner wrote (:func:`is_marked`) or an empty one may be
    replaced, any other needs ``overwrite``. An input inside it is refused
    (the swap would delete it), and so is a leftover ``OUTPUT.partial`` or
    ``OUTPUT.old`` beamner did not write (the swap goes through those names;
    ``overwrite`` does not change that). A file output that exists needs
    ``overwrite`` or ``resume`` (``resumable``: the command has ``--resume``,
    and the refusal says so)."""
    if output is None or str(output) == "-":
        return None
    path = Path(output)
    sources = [Path(i) for i in inputs if isinstance(i, (str, os.PathLike)) and str(i) != "-"]
    for source in sources:
        if same_file(path, source):
            raise OutputError(
                f"output {path} is the input {source}: it would be overwritten before it is "
                "read; write elsewhere"
            )
        if source.is_dir() and path.resolve().is_relative_to(source.resolve()):
            raise OutputError(f"output {path} is inside the input folder {source}")
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputError(f"output {path} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()) and not is_marked(path) and not overwrite:
            raise OutputError(
                f"output folder {path} exists, is not empty and was not written by beamner; "
                "choose another folder or pass --overwrite"
            )
        for source in sources:
            if source.exists() and source.resolve().is_relative_to(path.resolve()):
                raise OutputError(
                    f"the input {source} is inside the output folder {path}, which is replaced "
                    "when the output is saved; write elsewhere"
                )
        for leftover in _swap_paths(path):
            if leftover.exists() and not (leftover.is_dir() and is_marked(leftover)):
                raise OutputError(
                    f"{leftover} exists and was not written by beamner (saves go through "
                    f"that name); move it away or choose another output than {path}"
                )
        return path
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name")
    if path.exists() and not (overwrite or resume):
        raise OutputError(
            f"output {path} exists; pass --overwrite to replace it"
            + (" or --resume to continue it" if resumable else "")
        )
    return path


def fsync_directory(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(
    path: PathLike, mode: str = "w", *, keep_partial: bool = False
) -> Iterator[IO[Any]]:
    """A file object writing to a temporary file beside ``path``; on success
    it is flushed, fsynced and renamed over ``path``. On an exception the
    target is untouched and the temporary file removed, unless
    ``keep_partial`` and ``path`` did not exist: then what was written is
    renamed into place (a streaming job's ``--resume`` continues from it)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    existed = target.exists()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    # mkstemp makes the file private (0600); the output gets the mode a plain
    # open() would give, or keeps the mode of the file it replaces.
    os.chmod(fd, target.stat().st_mode & 0o7777 if existed else 0o666 & ~_umask())
    encoding = None if "b" in mode else "utf-8"
    f = os.fdopen(fd, mode, encoding=encoding)
    try:
        yield f
    except BaseException:
        f.close()
        if keep_partial and not existed and tmp.stat().st_size > 0:
            os.replace(tmp, target)
        else:
            tmp.unlink(missing_ok=True)
        raise
    else:
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, target)
        fsync_directory(target.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text)


def _remove_marked(folder: Path) -> None:
    if folder.exists() and is_marked(folder):
        shutil.rmtree(folder)


def recover_directory(target: PathLike) -> None:
    """Finish or undo an interrupted :func:`swap_directory` of ``target``:
    the previous folder is put back if the new one never arrived, and
    beamner's own leftovers (marked) are removed. Unmarked folders at the
    leftover names are left alone."""
    path = Path(target)
    partial, old = _swap_paths(path)
    if not path.exists() and old.exists() and is_marked(old):
        os.replace(old, path)
    _remove_marked(partial)
    _remove_marked(old)


def _swap_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(path.name + ".partial"), path.with_name(path.name + ".old")


def swap_directory(
    target: PathLike, build: Callable[[Path], None], *, info: dict[str, Any] | None = None
) -> Path:
    """Build a folder with ``build(tmp)`` beside ``target`` and swap it in.

    The new folder gets :data:`MARKER` (with ``info``) so a later run may
    replace it. The previous ``target`` (if any) is moved to ``target.old``
    and removed once the new one is in place. Leftovers of an interrupted
    swap are recovered first (:func:`recover_directory`); a leftover folder
    beamner did not write is refused, not deleted."""
    path = Path(target)
    partial, old = _swap_paths(path)
    recover_directory(path)
    for leftover in (partial, old):
        if leftover.exists():
            raise OutputError(
                f"{leftover} exists and was not written by beamner; move it away first"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial.mkdir()
    (partial / MARKER).write_text(json.dumps(info or {}, sort_keys=True) + "\n")
    try:
        build(partial)
        (partial / MARKER).write_text(json.dumps(info or {}, sort_keys=True) + "\n")
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"output {path} exists and is not a folder")
        if not is_marked(path):
            # Replacing a folder beamner did not write was allowed by the
            # caller (--overwrite); mark the copy moved aside so it is removed.
            (path / MARKER).write_text("{}\n")
        os.replace(path, old)
    os.replace(partial, path)
    fsync_directory(path.parent)
    _remove_marked(old)
    return path
