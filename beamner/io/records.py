"""Input records and JSONL output for the streaming jobs.

Input formats (``fmt="auto"`` picks by extension):

* ``jsonl`` (``.jsonl``/``.json``): one JSON object a line with a ``"text"``
  string; every other key is kept in the output.
* ``text``: one document a line (an empty line is an empty document, so
  output line *n* belongs to input line *n*).
* ``spacy`` (``.spacy``): a DocBin; its tokenization is kept, its
  annotations are not (gold entities would otherwise be preset entities).

Standard input (``-``) has no extension: with ``fmt="auto"`` its first line
decides, JSONL when it starts with ``{``, text otherwise (a text whose first
line starts with ``{`` needs ``-f text``).

Spans in the output follow Prodigy's convention: ``start``/``end`` are
character offsets (end exclusive), ``token_start``/``token_end`` token
indices with ``token_end`` *inclusive*.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TextIO, TypeVar, cast

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.util import minibatch

from beamner.io.atomic import atomic_file

__all__ = [
    "FORMATS",
    "InputError",
    "JsonlWriter",
    "OnInvalid",
    "Record",
    "RunSummary",
    "UntilBadLine",
    "batched",
    "complete_lines",
    "copy_head",
    "count_records",
    "format_of",
    "json_line",
    "json_object",
    "jsonl_output",
    "parse_line",
    "plural",
    "progress_bar",
    "read_json_objects",
    "read_records",
    "records_from_items",
    "span_json",
    "text_lines",
]

FORMATS = ("auto", "jsonl", "text", "spacy")

T = TypeVar("T")


class _Batcher(Protocol):
    def __call__(self, items: Iterable[T], size: int) -> Iterator[list[T]]: ...


#: Lists of ``size`` items (the last one shorter): spaCy's own ``minibatch``.
batched: _Batcher = minibatch

#: Called with (line number, reason) for each input line skipped as invalid.
OnInvalid = Callable[[int, str], None]


class InputError(ValueError):
    """A bad input line; the message starts with ``path:line:``."""


@dataclass
class Record:
    """One input document: its 1-based ``line`` (doc index for a DocBin), the
    text, the other JSON keys, and for DocBin input the tokenized words."""

    line: int
    text: str
    extra: dict[str, Any] = field(default_factory=dict)
    words: list[str] | None = None
    spaces: list[bool] | None = None

    def make_doc(self, nlp: Language) -> Doc | str:
        """What ``nlp.pipe`` gets: the text, or a fresh unannotated Doc."""
        if self.words is None:
            return self.text
        return Doc(nlp.vocab, words=self.words, spaces=self.spaces)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``"1 answer"``, ``"2 answers"`` (``many``: an irregular plural): the
    counts in every command's messages."""
    return f"{n} {word if n == 1 else (many or word + 's')}"


def format_of(path: str | os.PathLike[str], fmt: str = "auto") -> str:
    """The input format of ``path``: ``fmt``, or with ``"auto"`` the one its extension names."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix == ".spacy":
        return "spacy"
    return "text"


def _open_binary(path: str | os.PathLike[str]) -> IO[bytes]:
    """``path`` opened for reading, or stdin for ``"-"``; an error that names the input."""
    if str(path) == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as err:
        raise InputError(f"{path}: cannot read the input ({err.strerror or err})") from None


def text_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of a UTF-8 text file (``"-"``: stdin), line endings kept; a line
    that is not UTF-8 raises :class:`InputError` naming ``path:line`` (Python's
    own error names neither)."""
    f = _open_binary(path)
    try:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InputError(
                    f"{path}:{lineno}: not UTF-8 ({err.reason} at byte {err.start})"
                ) from None
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def read_records(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    skip_invalid: bool = False,
    invalid: list[int] | None = None,
    on_invalid: OnInvalid | None = None,
) -> Iterator[Record]:
    """The records of ``path`` (``"-"``: stdin, JSONL or text), streamed.

    The input is checked (opened, and a DocBin read) here, before the first
    record is asked for, so a missing input fails before any output is made.

    A bad line (undecodable UTF-8, bad JSON, not an object, no string
    ``"text"``, a string no UTF-8 output can hold) raises :class:`InputError`
    naming ``path:line``, or with ``skip_invalid`` is skipped: its line number
    appended to ``invalid`` and ``on_invalid(line, reason)`` called."""
    requested = fmt
    fmt = format_of(path, fmt)
    if fmt == "spacy":
        if str(path) == "-":
            raise ValueError("a .spacy DocBin cannot be read from stdin")
        if not Path(path).is_file():
            raise InputError(f"{path}: cannot read the input (no such file)")
        docbin = DocBin().from_disk(Path(path))
        return _docbin_records(docbin)
    if str(path) != "-":
        _open_binary(path).close()  # fails now, naming the input; read when the records are
    # stdin has no extension to go by: its first line decides (module docstring).
    sniff = str(path) == "-" and requested == "auto"
    return _line_records(path, fmt, skip_invalid, invalid, on_invalid, sniff=sniff)


def _docbin_records(docbin: DocBin) -> Iterator[Record]:
    for i, doc in enumerate(docbin.get_docs(Language().vocab), start=1):
        words = [t.text for t in doc]
        yield Record(i, doc.text, words=words, spaces=[bool(t.whitespace_) for t in doc])


SNIFFED_JSONL_HINT = (
    " (standard input is read as JSONL because its first line starts with '{'; "
    "pass -f text for plain text)"
)


def _line_records(
    path: str | os.PathLike[str],
    fmt: str,
    skip: bool,
    invalid: list[int] | None,
    on_invalid: OnInvalid | None,
    *,
    sniff: bool = False,
) -> Iterator[Record]:
    f = _open_binary(path)
    try:
        lines: Iterator[bytes] = iter(f)
        if sniff:
            first = next(lines, b"")
            fmt = "jsonl" if first.lstrip().startswith(b"{") else "text"
            lines = itertools.chain([first] if first else [], lines)
        for lineno, raw in enumerate(lines, start=1):
            try:
                yield parse_line(raw, fmt, lineno)
            except InputError as err:
                if not skip:
                    hint = SNIFFED_JSONL_HINT if sniff and fmt == "jsonl" else ""
                    raise InputError(f"{path}:{err}{hint}") from None
                if invalid is not None:
                    invalid.append(lineno)
                if on_invalid is not None:
                    on_invalid(lineno, str(err).split(": ", 1)[-1])
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def parse_line(raw: bytes, fmt: str, lineno: int) -> Record:
    """One input line as a Record; :class:`InputError` ``"<lineno>: <reason>"`` if bad."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{lineno}: not UTF-8 ({err.reason} at byte {err.start})") from None
    line = line.rstrip("\n").rstrip("\r")
    if fmt == "text":
        return Record(lineno, line)
    obj = json_object(line, lineno)
    if "\\u" in line:  # only an escape can make a lone surrogate, which no output can encode
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            bad = err.object[err.start : err.end].encode("unicode_escape").decode("ascii")
            raise InputError(
                f"{lineno}: a lone surrogate {bad} in a string (not a character; "
                "UTF-8 cannot encode it)"
            ) from None
    text = obj.pop("text", None)
    if not isinstance(text, str):
        got = "nothing" if text is None else type(text).__name__
        raise InputError(f'{lineno}: expected a "text" string, got {got}')
    return Record(lineno, text, obj)


def json_object(line: str, lineno: int) -> dict[str, Any]:
    """``line`` as a JSON object; :class:`InputError` ``"<lineno>: <reason>"`` if it is not one."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{lineno}: not JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{lineno}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_json_objects(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, object)`` for each non-blank line of a JSONL file (``"-"``:
    stdin; any keys, unlike :func:`read_records`); :class:`InputError` naming
    ``path:line`` at a bad one (not UTF-8, not JSON, not an object)."""
    for lineno, line in text_lines(path):
        if line.strip():
            try:
                yield lineno, json_object(line, lineno)
            except InputError as err:
                raise InputError(f"{path}:{err}") from None


def records_from_items(items: Iterable[Any], first_line: int = 1) -> list[Record]:
    """Records from in-memory items (a Dask bag partition): a string is a text, a
    dict needs a ``"text"`` string (its other keys are kept, as for JSONL input)."""
    records: list[Record] = []
    for i, item in enumerate(items, start=first_line):
        if isinstance(item, str):
            records.append(Record(i, item))
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            records.append(Record(i, item["text"], {k: v for k, v in item.items() if k != "text"}))
        else:
            got = type(item).__name__
            raise ValueError(
                f'item {i}: expected a string or a dict with a "text" string, got {got}'
            )
    return records


class UntilBadLine:
    """The records of a stream up to its first bad line, whose :class:`InputError`
    is then kept in ``error`` (so everything before the bad line is still run and
    written, and the error raised after)."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = records
        self.error: InputError | None = None

    def __iter__(self) -> Iterator[Record]:
        try:
            yield from self.records
        except InputError as err:
            self.error = err


def count_records(path: str | os.PathLike[str], fmt: str = "auto") -> int | None:
    """Lines (docs for a DocBin) in ``path``, for a progress bar; ``None`` for stdin."""
    if str(path) == "-":
        return None
    if format_of(path, fmt) == "spacy":
        return len(DocBin().from_disk(Path(path)))
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def complete_lines(path: str | os.PathLike[str], limit: int | None = None) -> tuple[int, int]:
    """``(lines, bytes)``: the complete lines of ``path`` (0 if it does not exist),
    at most ``limit`` of them, and the bytes they take; a partial last line (an
    interrupted write) is not counted."""
    if not Path(path).exists():
        return 0, 0
    n = end = offset = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            start = 0
            while limit is None or n < limit:
                k = chunk.find(b"\n", start)
                if k < 0:
                    break
                n += 1
                start = k + 1
                end = offset + start
            offset += len(chunk)
            if limit is not None and n >= limit:
                break
    return n, end


def copy_head(path: str | os.PathLike[str], nbytes: int, dst: IO[bytes]) -> None:
    """Copy the first ``nbytes`` of ``path`` to ``dst``."""
    with open(path, "rb") as src:
        while nbytes > 0:
            chunk = src.read(min(nbytes, 1 << 20))
            if not chunk:
                raise ValueError(f"{path} changed while it was read")
            dst.write(chunk)
            nbytes -= len(chunk)


def span_json(span: Span, score: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "start": span.start_char,
        "end": span.end_char,
        "token_start": span.start,
        "token_end": span.end - 1,
        "label": span.label_,
    }
    if score is not None:
        out["score"] = round(float(score), 6)
    return out


def progress_bar(total: int | None, progress: bool | None, desc: str) -> Any:
    tqdm = importlib.import_module("tqdm").tqdm  # untyped

    enabled = sys.stderr.isatty() if progress is None else progress
    return tqdm(total=total, disable=not enabled, desc=desc, unit="doc", file=sys.stderr)


def json_line(obj: Any) -> str:
    """``obj`` as one JSONL line, newline included (non-ASCII kept as is)."""
    return json.dumps(obj, ensure_ascii=False) + "\n"


class JsonlWriter:
    """JSON objects a line to a text file object."""

    def __init__(self, f: IO[str]) -> None:
        self.f = f

    def write(self, obj: dict[str, Any]) -> None:
        self.f.write(json_line(obj))

    def write_line(self, line: str) -> None:
        self.f.write(line)

    def flush(self) -> None:
        self.f.flush()


@contextlib.contextmanager
def jsonl_output(
    path: Path | None, *, keep_partial: bool = False, keep_bytes: int = 0
) -> Iterator[JsonlWriter]:
    """A :class:`JsonlWriter` to stdout (``path`` None) or to ``path`` through
    :func:`beamner.io.atomic.atomic_file` (written beside, renamed on success;
    ``keep_partial`` as there). ``keep_bytes``: the new file starts with that
    many bytes of the existing ``path`` (the lines a resumed run keeps)."""
    if path is None:
        writer = JsonlWriter(sys.stdout)
        try:
            yield writer
        finally:
            writer.flush()
        return
    with atomic_file(path, keep_partial=keep_partial) as f:
        if keep_bytes:
            f.flush()
            copy_head(path, keep_bytes, cast(TextIO, f).buffer)
        yield JsonlWriter(f)


@dataclass
class RunSummary:
    """What a streaming command did. ``invalid_lines``: the input lines skipped
    as invalid (``--skip-invalid``), in order; ``reasons``: why, by line."""

    written: int = 0
    skipped_resume: int = 0
    invalid_lines: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)

    @property
    def n_invalid(self) -> int:
        return len(self.invalid_lines)

    def add_invalid(self, line: int, reason: str) -> None:
        self.invalid_lines.append(line)
        self.reasons[line] = reason
        if len(self.invalid_lines) > 1 and self.invalid_lines[-2] > line:
            self.invalid_lines.sort()
