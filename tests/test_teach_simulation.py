"""The helpers of experiments/teach_simulation.py: the simulated annotator, the
home-style text, agreement F1 and the resumable results file."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest

_PATH = Path(__file__).resolve().parents[1] / "experiments" / "teach_simulation.py"


@pytest.fixture(scope="module")
def sim() -> Any:
    spec = importlib.util.spec_from_file_location("teach_simulation", _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["teach_simulation"] = module
    spec.loader.exec_module(module)
    return module


def _task(start: int, end_inclusive: int, label: str) -> dict[str, Any]:
    return {"spans": [{"token_start": start, "token_end": end_inclusive, "label": label}]}


def test_gold_answer_maps_the_label_and_uses_exclusive_ends(sim: Any) -> None:
    gold = {(1, 3, "location"), (5, 6, "person")}
    label_map = {"GPE": "location", "LOC": "location", "PERSON": "person"}
    assert sim.gold_answer(_task(1, 2, "GPE"), gold, label_map) == "accept"
    assert sim.gold_answer(_task(1, 2, "LOC"), gold, label_map) == "accept"
    assert sim.gold_answer(_task(5, 5, "PERSON"), gold, label_map) == "accept"
    # wrong boundary, wrong label, a label the map does not know: reject
    assert sim.gold_answer(_task(1, 1, "GPE"), gold, label_map) == "reject"
    assert sim.gold_answer(_task(5, 5, "GPE"), gold, label_map) == "reject"
    assert sim.gold_answer(_task(5, 5, "DATE"), gold, label_map) == "reject"


def test_split_sentences_and_prose_filter(sim: Any) -> None:
    text = (
        "Return the keyed message, or the default if it does not exist.\n"
        "More text on a second line. And a\nthird sentence here.\n\n"
        ">>> x = f(1)\n\nParameters:\n    x -- the value"
    )
    sents = sim.split_sentences(text)
    assert sents[0] == "Return the keyed message, or the default if it does not exist."
    assert "And a third sentence here." in sents
    assert sim.is_prose("Return the keyed message, or the default if it does not exist.")
    assert not sim.is_prose("More text on a second line.")  # too short
    assert not sim.is_prose(">>> x = f(1) and then some more words follow here.")
    assert not sim.is_prose("return the keyed message, or the default if it does not exist.")
    assert not sim.is_prose("Return the keyed message, or the default if it does not exist")


def test_home_sentences_are_fixed_and_distinct(sim: Any) -> None:
    a = sim.home_sentences(50, seed=3, modules=("textwrap", "json"))
    b = sim.home_sentences(50, seed=3, modules=("textwrap", "json"))
    assert a == b
    assert len(a) == len(set(a))
    from spacy.lang.en.examples import sentences

    assert a[-len(sentences) :] == list(sentences)
    assert all(sim.is_prose(s) for s in a[: -len(sentences)])


def test_entity_f1_is_agreement(sim: Any) -> None:
    a = [{(0, 1, "X"), (2, 3, "Y")}, set()]
    b = [{(0, 1, "X")}, {(4, 5, "Z")}]
    r = sim.entity_f1(a, b)
    assert r["precision"] == pytest.approx(0.5)
    assert r["recall"] == pytest.approx(0.5)
    assert r["f1"] == pytest.approx(0.5)
    assert sim.entity_f1(b, a)["f1"] == pytest.approx(r["f1"])
    assert sim.entity_f1(a, a)["f1"] == 1.0
    with pytest.raises(ValueError):
        sim.entity_f1(a, b[:1])


def test_records_resume_and_summaries(sim: Any, tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    assert sim.read_records(path) == []
    rec = {"corpus": "btc", "order": "random", "seed": 1, "answers": 250, "config": "c"}
    sim.append(path, rec)
    with path.open("a") as f:
        f.write('{"corpus": "btc", "ord')  # a run killed mid-write
    records = sim.read_records(path)
    assert records == [rec]
    assert sim.record_key(records[0]) == ("btc", "random", 1, 250, "c")
    assert json.loads(path.read_text().splitlines()[0]) == rec
    mean, std, lo, hi = sim.summarize([0.1, 0.2, 0.3])
    assert (mean, lo, hi) == pytest.approx((0.2, 0.1, 0.3))
    assert std == pytest.approx(0.1)
    assert sim.summarize([0.5])[1] == 0.0


def test_label_counts(sim: Any) -> None:
    ref = [{(0, 1, "DATE"), (2, 3, "ORG")}, {(1, 2, "ORG")}]
    pred = [{(0, 1, "DATE")}, {(1, 2, "PERSON")}]
    assert sim.label_counts(pred, ref) == {"DATE": [1, 1, 1], "ORG": [2, 0, 0], "PERSON": [0, 1, 0]}


def test_silver_answers_accept_the_parse_and_reject_the_rest(sim: Any) -> None:
    import spacy

    from beamner.teach.answers import merge_answers

    nlp = spacy.blank("en")
    doc = nlp.make_doc("Angela Merkel visited Paris on Monday")
    best = {(0, 2, "PERSON"), (3, 4, "GPE")}
    others = {(3, 4, "GPE"), (3, 4, "ORG"), (0, 1, "PERSON")}
    answers = sim.silver_answers(doc, best, others)
    assert [a["answer"] for a in answers] == ["accept", "reject"]
    merged, report = merge_answers(answers)
    assert report.n_conflicts == 0
    (text,) = merged

    def tokens(span: Any) -> tuple[int, int, str]:  # char offsets are what an answer keeps
        char_span = doc.char_span(span.start, span.end)
        return (char_span.start, char_span.end, span.label)

    assert {tokens(s) for s in text.accepted} == best
    rejected = {tokens(s) for s in text.rejected}
    assert rejected == {(3, 4, "ORG"), (0, 1, "PERSON")}
    assert answers[0]["spans"][0]["start"] == 0 and answers[0]["spans"][0]["end"] == 13
    assert sim.silver_answers(doc, set(), set()) == []
    assert [a["answer"] for a in sim.silver_answers(doc, set(), others)] == ["reject"]


def test_is_at_mention(sim: Any) -> None:
    import spacy

    doc = spacy.blank("en").make_doc("RT @ Theory_Versa saw Paris")
    assert [sim.is_at_mention(doc, i) for i in range(len(doc))] == [
        False,
        True,
        True,
        False,
        False,
    ]
