"""Input records and JSONL output for the streaming jobs.

Input formats (``fmt="auto"`` picks by extension):

* ``jsonl`` (``.jsonl``/``.json``): one JSON object a line with a ``"text"``
  string; every other key is kept in the output.
* ``text``: one document a line (an empty line is an empty document, so
  output line *n* belongs to input line *n*).
* ``spacy`` (``.spacy``): a DocBin; its tokenization is kept, its
  annotations are not (gold entities would otherwise be preset entities).

Spans in the output follow Prodigy's convention: ``start``/``end`` are
character offsets (end exclusive), ``token_start``/``token_end`` token
indices with ``token_end`` *inclusive*.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span

__all__ = [
    "InputError",
    "JsonlWriter",
    "Record",
    "RunSummary",
    "batched",
    "chunks",
    "count_records",
    "progress_bar",
    "read_records",
    "skip",
    "span_json",
]

FORMATS = ("auto", "jsonl", "text", "spacy")


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


def _format_of(path: str | os.PathLike[str], fmt: str) -> str:
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
    if str(path) == "-":
        return sys.stdin.buffer
    return open(path, "rb")


def read_records(
    path: str | os.PathLike[str],
    fmt: str = "auto",
    *,
    skip_invalid: bool = False,
    invalid: list[int] | None = None,
) -> Iterator[Record]:
    """Stream the records of ``path`` (``"-"``: stdin, JSONL or text).

    A bad line (undecodable UTF-8, bad JSON, not an object, no string
    ``"text"``) raises :class:`InputError` naming the line, or with
    ``skip_invalid`` is skipped and its line number appended to ``invalid``.
    """
    fmt = _format_of(path, fmt)
    if fmt == "spacy":
        if str(path) == "-":
            raise ValueError("a .spacy DocBin cannot be read from stdin")
        nlp_vocab = Language().vocab
        docbin = DocBin().from_disk(Path(path))
        for i, doc in enumerate(docbin.get_docs(nlp_vocab), start=1):
            yield Record(
                i,
                doc.text,
                words=[t.text for t in doc],
                spaces=[bool(t.whitespace_) for t in doc],
            )
        return
    f = _open_binary(path)
    try:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield _parse_line(raw, fmt, lineno)
            except InputError as err:
                if not skip_invalid:
                    raise InputError(f"{path}:{err}") from None
                if invalid is not None:
                    invalid.append(lineno)
    finally:
        if f is not sys.stdin.buffer:
            f.close()


def _parse_line(raw: bytes, fmt: str, lineno: int) -> Record:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{lineno}: not UTF-8 ({err.reason} at byte {err.start})") from None
    line = line.rstrip("\n").rstrip("\r")
    if fmt == "text":
        return Record(lineno, line)
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise InputError(f"{lineno}: not JSON ({err.msg}, column {err.colno})") from None
    if not isinstance(obj, dict):
        raise InputError(f"{lineno}: expected a JSON object, got {type(obj).__name__}")
    text = obj.pop("text", None)
    if not isinstance(text, str):
        got = "nothing" if text is None else type(text).__name__
        raise InputError(f'{lineno}: expected a "text" string, got {got}')
    return Record(lineno, text, obj)


def count_records(path: str | os.PathLike[str], fmt: str = "auto") -> int | None:
    """Lines (docs for a DocBin) in ``path``, for a progress bar; ``None`` for stdin."""
    if str(path) == "-":
        return None
    if _format_of(path, fmt) == "spacy":
        return len(DocBin().from_disk(Path(path)))
    n = 0
    last = b"\n"
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def _count_and_repair_output(path: Path) -> int:
    """Complete lines in ``path``; a partial last line (an interrupted write) is cut off."""
    if not path.exists():
        return 0
    n = 0
    end = 0  # offset after the last newline
    offset = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            k = chunk.rfind(b"\n")
            if k >= 0:
                end = offset + k + 1
            n += chunk.count(b"\n")
            offset += len(chunk)
    if end != offset:
        with open(path, "r+b") as f:
            f.truncate(end)
    return n


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


class JsonlWriter:
    """JSONL writer: a file (appended to on resume) or stdout; flushed on request."""

    def __init__(self, output: str | os.PathLike[str] | None, resume: bool) -> None:
        self.already = 0
        if output is None or str(output) == "-":
            if resume:
                raise ValueError("--resume needs an --output file")
            self.f: IO[str] = sys.stdout
            self.own = False
        else:
            path = Path(output)
            if resume:
                self.already = _count_and_repair_output(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "a" if resume else "w", encoding="utf-8")
            self.own = True

    def write(self, obj: dict[str, Any]) -> None:
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        self.f.flush()

    def close(self) -> None:
        self.f.flush()
        if self.own:
            self.f.close()


@dataclass
class RunSummary:
    """What a streaming command did."""

    written: int = 0
    skipped_resume: int = 0
    invalid_lines: list[int] = field(default_factory=list)

    @property
    def n_invalid(self) -> int:
        return len(self.invalid_lines)


def chunks(
    records: Iterator[Record], size: int
) -> Iterator[tuple[list[Record], InputError | None]]:
    """Batches of ``size`` records; a batch cut short by a bad line comes with its error
    (so everything before the bad line is still processed and written)."""
    while True:
        chunk: list[Record] = []
        try:
            for record in records:
                chunk.append(record)
                if len(chunk) >= size:
                    break
        except InputError as err:
            yield chunk, err
            return
        if chunk:
            yield chunk, None
        if len(chunk) < size:
            return


def skip(records: Iterator[Record], n: int) -> Iterator[Record]:
    for i, record in enumerate(records):
        if i >= n:
            yield record


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
