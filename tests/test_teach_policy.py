"""teach and teach-update: where they may write (beamner's output policy), runs
that repeat bit for bit with the same seed, and saved pipelines that serve the
beam they were taught with, checked in a fresh process."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest
import spacy
from conftest import DATA
from trained_models import eval_texts, pipeline_copy, trained_pipeline
from typer.testing import CliRunner

from beamner.cli.app import app
from beamner.engine.pipes import find_ner
from beamner.io.atomic import MARKER, OutputError
from beamner.io.conll import conll_to_docs, read_conll
from beamner.pipeline import accelerate
from beamner.teach import TeachSession
from beamner.teach.batch import PROGRESS_FILE, teach_update

LABELS = ["person", "location", "corporation", "group", "product", "creative-work"]
SPANS_KEY = "candidates"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small greedy NER trained on WNUT-17, as beamner's component storing
    candidates in ``doc.spans`` (settings teach must keep)."""
    path = tmp_path_factory.mktemp("policy") / "model"
    nlp = pipeline_copy(trained_pipeline("greedy", n_sentences=400, n_iter=3))
    accelerate(nlp, spans_key=SPANS_KEY, span_threshold=0.02)
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="module")
def answers_file(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 answers from the gold annotation of WNUT-17 sentences the model did not see."""
    sentences = read_conll(DATA / "wnut17" / "wnut17train.conll")[400:700]
    docs = conll_to_docs(spacy.blank("en"), sentences, with_ents=True)
    gold = {d.text: {(e.start_char, e.end_char, e.label_) for e in d.ents} for d in docs}
    session = TeachSession(
        spacy.load(model_dir), list(gold), LABELS, order="random", seed=1, threshold=0.01
    )
    path = tmp_path_factory.mktemp("answers") / "answers.jsonl"
    with path.open("w") as f:
        for _ in range(40):
            task = session.next_task()
            assert task is not None
            span = task["spans"][0]
            key = (span["start"], span["end"], span["label"])
            decision = "accept" if key in gold[task["text"]] else "reject"
            f.write(json.dumps(session.answer(task, decision)) + "\n")
    return path


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` (itself, if a file) -> sha256 of its bytes."""
    if root.is_file():
        return {root.name: hashlib.sha256(root.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def foreign_folder(path: Path) -> dict[str, str]:
    """A user's folder (no marker) with a file in it; returns its snapshot."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text(f"my own notes in {path.name}\n")
    return tree(path)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


# -- where teach-update may write ----------------------------------------------------------


def test_teach_update_refuses_an_input_as_output(
    model_dir: Path, answers_file: Path, tmp_path: Path
) -> None:
    before = tree(answers_file), tree(model_dir)
    result = invoke("teach-update", model_dir, answers_file, "-o", answers_file)
    assert result.exit_code == 1 and "is the input" in result.output
    result = invoke("teach-update", model_dir, answers_file, "-o", model_dir, "--overwrite")
    assert result.exit_code == 1 and "is the input" in result.output
    # Answers inside the output folder would be deleted with it when it is replaced.
    out = tmp_path / "out"
    out.mkdir()
    (out / MARKER).write_text("{}\n")  # even a folder beamner wrote
    inside = out / "answers.jsonl"
    inside.write_bytes(answers_file.read_bytes())
    result = invoke("teach-update", model_dir, inside, "-o", out)
    assert result.exit_code == 1 and "inside the output folder" in result.output
    assert (tree(answers_file), tree(model_dir)) == before
    assert inside.read_bytes() == answers_file.read_bytes()


def test_teach_update_keeps_foreign_folders(
    model_dir: Path, answers_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    mine = foreign_folder(out)
    result = invoke("teach-update", model_dir, answers_file, "-o", out, "-n", "1")
    assert result.exit_code == 1, result.output
    assert "not written by beamner" in result.output and "--overwrite" in result.output
    assert tree(out) == mine
    # Leftover names a checkpoint goes through, holding a user's files: never
    # deleted (the old code removed them first, then refused OUT), not even with --overwrite.
    old, partial = foreign_folder(tmp_path / "out.old"), foreign_folder(tmp_path / "out.partial")
    for extra in ([], ["--overwrite"]):
        result = invoke("teach-update", model_dir, answers_file, "-o", out, "-n", "1", *extra)
        assert result.exit_code == 1 and "was not written by beamner" in result.output
        assert tree(tmp_path / "out.old") == old and tree(tmp_path / "out.partial") == partial
        assert tree(out) == mine
    # --overwrite replaces the user's OUT (asked for) once the leftover names are free.
    (tmp_path / "out.old").rename(tmp_path / "kept.old")
    (tmp_path / "out.partial").rename(tmp_path / "kept.partial")
    result = invoke("teach-update", model_dir, answers_file, "-o", out, "-n", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert (out / MARKER).is_file() and (out / PROGRESS_FILE).is_file()
    assert not (out / "notes.txt").exists()
    assert tree(tmp_path / "kept.old") == old and tree(tmp_path / "kept.partial") == partial
    spacy.load(out)


def test_counts_are_pluralized(model_dir: Path, answers_file: Path, tmp_path: Path) -> None:
    one = tmp_path / "one.jsonl"
    one.write_text(answers_file.read_text().splitlines()[0] + "\n")
    result = invoke(
        "teach-update", model_dir, one, "-o", tmp_path / "out", "-n", "1", "--holdout", "0"
    )
    assert result.exit_code == 0, result.output
    assert "1 answer (" in result.output and "1 text trained" in result.output
    assert "1 answers" not in result.output and "1 texts" not in result.output


# -- where teach may write (checked before the server starts) ------------------------------


def test_teach_refuses_outputs_before_the_server_starts(
    model_dir: Path, answers_file: Path, tmp_path: Path
) -> None:
    dataset = tmp_path / "answers.jsonl"
    dataset.write_bytes(answers_file.read_bytes())
    source = tmp_path / "source.txt"
    source.write_text("Some text to annotate .\n")
    folder = tmp_path / "mine"
    mine = foreign_folder(folder)
    foreign_folder(tmp_path / "answers-model")  # the default output, DATASET-model
    marked = tmp_path / "marked"
    marked.mkdir()
    (marked / MARKER).write_text("{}\n")
    (marked / "answers.jsonl").write_bytes(answers_file.read_bytes())
    snapshot = {
        p: tree(p) for p in (dataset, source, model_dir, folder, marked, tmp_path / "answers-model")
    }

    # A port that is taken: the output is checked before the port is bound, so a refused
    # output is the error; an accepted one gets to the port and never starts a server.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]

        def teach(*args: Any, data: Path = dataset) -> Any:
            return invoke(
                "teach", model_dir, source, "--label", "person", "--dataset", data,
                "--port", port, *args,
            )  # fmt: skip

        cases = [
            (("-o", dataset), dataset, "is the input"),  # the saves would move the dataset away
            (("-o", model_dir), dataset, "the model being taught"),
            (("-o", source), dataset, "is the input"),
            (("-o", folder), dataset, "not written by beamner"),
            ((), dataset, "not written by beamner"),
            (("-o", marked), marked / "answers.jsonl", "inside the output folder"),
        ]
        for args, data, message in cases:
            result = teach(*args, data=data)
            assert result.exit_code == 1, (args, result.output)
            assert message in result.output, (args, result.output)
        assert {p: tree(p) for p in snapshot} == snapshot
        # --overwrite passes the output check for a user's folder (the port stops this
        # run, before the model loads); the folder is untouched until a save.
        result = teach("-o", folder, "--overwrite")
        assert result.exit_code == 1 and f"port {port}" in result.output, result.output
        assert tree(folder) == mine
        result = teach("-o", tmp_path / "new-model")
        assert result.exit_code == 1 and f"port {port}" in result.output, result.output


def test_session_save_follows_the_policy(model_dir: Path, tmp_path: Path) -> None:
    session = TeachSession(spacy.load(model_dir), ["A text ."], LABELS)
    folder = tmp_path / "mine"
    mine = foreign_folder(folder)
    with pytest.raises(OutputError, match="not written by beamner"):
        session.save(folder)
    assert tree(folder) == mine
    out = tmp_path / "saved"
    session.save(out)
    assert (out / MARKER).is_file()
    (out / "stale").write_text("from the first save\n")
    session.save(out)  # beamner's own folder: replaced as a whole
    assert (out / MARKER).is_file() and not (out / "stale").exists()
    session.save(folder, overwrite=True)
    assert (folder / MARKER).is_file() and not (folder / "notes.txt").exists()
    spacy.load(folder)


# -- the same seed, the same model ----------------------------------------------------------


def test_teach_update_is_reproducible(model_dir: Path, answers_file: Path, tmp_path: Path) -> None:
    runs = {}
    for name, seed, rng in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        numpy.random.seed(rng)  # whatever ran before: the run's seed decides
        teach_update(model_dir, answers_file, tmp_path / name, n_epochs=2, seed=seed)
        runs[name] = tree(tmp_path / name)
    assert "ner/model" in runs["a"] and PROGRESS_FILE in runs["a"]
    assert runs["a"] == runs["b"]  # every file, byte for byte
    assert runs["c"]["ner/model"] != runs["a"]["ner/model"]  # the seed reaches the dropout


def test_session_is_reproducible(model_dir: Path, answers_file: Path) -> None:
    answers = [json.loads(line) for line in answers_file.read_text().splitlines()]
    weights = []
    for seed, rng in ((3, 1), (3, 2), (4, 1)):
        numpy.random.seed(rng)
        nlp = spacy.load(model_dir)
        session = TeachSession(nlp, ["A text ."], LABELS, seed=seed, update_batch=8)
        for i in range(0, len(answers), 20):
            assert session.update(answers[i : i + 20]).n_batches > 0
        weights.append(find_ner(nlp).model.to_bytes())
    assert weights[0] == weights[1]
    assert weights[2] != weights[0]


# -- saved pipelines serve what they were taught with ---------------------------------------

#: Loads each pipeline given in a fresh interpreter and reports what it serves,
#: and the beam of its own cfg's width and density under both normalizations.
LOAD_SCRIPT = """
import json, sys
import spacy
from beamner.engine.pipes import upstream_disabled
from beamner.engine.settings import BeamSettings
from beamner.probabilities.beams import beam_docs

key, texts, report = sys.argv[1], json.loads(sys.argv[2]), {}
for path in sys.argv[3:]:
    nlp = spacy.load(path)
    pipe = nlp.get_pipe("ner")
    names = ("beam_width", "beam_density", "normalize", "spans_key", "span_threshold")
    docs = list(nlp.pipe(texts))
    pre = list(nlp.pipe(texts, disable=upstream_disabled(nlp)))
    beams = {}
    for normalize in ("local", "none"):
        settings = BeamSettings(
            width=pipe.cfg["beam_width"], density=pipe.cfg["beam_density"], normalize=normalize
        )
        beams[normalize] = [
            {"best": sorted(map(list, b.parses[0])),
             "entities": [[s, e, label, p] for (s, e, label), p in b.entities.items()]}
            for b in beam_docs(pipe, pre, settings)
        ]
    report[path] = {
        "factory": nlp.config["components"]["ner"]["factory"],
        "cfg": {k: pipe.cfg[k] for k in names},
        "config": {k: nlp.config["components"]["ner"][k] for k in names},
        "ents": [sorted([e.start, e.end, e.label_] for e in d.ents) for d in docs],
        "spans": [
            [[s.start, s.end, s.label_, float(p)] for s, p in zip(g, g.attrs["scores"])]
            for g in (d.spans[key] for d in docs)
        ],
        "bounds": all("bounds" in d.spans[key].attrs for d in docs),
        "beams": beams,
    }
print(json.dumps(report))
"""


def test_saved_pipelines_serve_their_settings_in_a_fresh_process(
    model_dir: Path, answers_file: Path, tmp_path: Path
) -> None:
    updated = tmp_path / "updated"
    teach_update(model_dir, answers_file, updated, n_epochs=1, beam_width=8, beam_density=0.001)
    session = TeachSession(
        spacy.load(model_dir), ["A text ."], LABELS, beam_width=12, beam_density=0.0005
    )
    session.update([json.loads(line) for line in answers_file.read_text().splitlines()])
    saved = session.save(tmp_path / "session")
    texts = eval_texts(25)
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, SPANS_KEY, json.dumps(texts), str(updated), str(saved)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    for path, (width, density) in ((updated, (8, 0.001)), (saved, (12, 0.0005))):
        served = report[str(path)]
        expected = {
            "beam_width": width,
            "beam_density": density,
            "normalize": "local",  # the teach commands' normalization, not the component's "none"
            "spans_key": SPANS_KEY,  # the component's own settings are kept
            "span_threshold": 0.02,
        }
        assert served["factory"] == "beamner_ner"
        assert served["cfg"] == expected and served["config"] == expected, path
        local, raw = served["beams"]["local"], served["beams"]["none"]
        # doc.ents: the best parse of the locally normalized beam of that width and density.
        assert served["ents"] == [b["best"] for b in local]
        # doc.spans: its entity probabilities (>= the threshold), with their bounds.
        assert served["bounds"]
        differs = 0
        for spans, loc, non in zip(served["spans"], local, raw):
            got = {(s, e, label): p for s, e, label, p in spans}
            want = {(s, e, label): p for s, e, label, p in loc["entities"] if p >= 0.02}
            assert got.keys() == want.keys()
            assert all(got[k] == pytest.approx(want[k], abs=1e-6) for k in got)
            other = {(s, e, label): p for s, e, label, p in non["entities"]}
            differs += any(abs(p - other.get(k, 0.0)) > 1e-3 for k, p in want.items())
        assert differs >= 5  # what was compared tells the normalizations apart
