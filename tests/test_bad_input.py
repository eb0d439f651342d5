"""Bad input at the Python boundary: a clear exception naming the problem,
never a crash, and the engine stays usable afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import spacy
from spacy.tokens import Doc, Span

import beamner

VOCAB = spacy.blank("en").vocab


def _system() -> beamner.TransitionSystem:
    labels = np.array([VOCAB.strings.add(x) for x in ("PER", "LOC")], dtype=np.uint64)
    return beamner.TransitionSystem.from_labels(labels)


def _docs(*lengths: int) -> beamner.DocBatch:
    docs = [Doc(VOCAB, words=["w"] * n) for n in lengths]
    return beamner.doc_batch(docs)


def _batch(*lengths: int, width: int = 4) -> beamner.BeamBatch:
    return beamner.BeamBatch(_system(), _docs(*lengths), width, 0.0)


def _scores(batch: beamner.BeamBatch) -> np.ndarray:
    return np.zeros((batch.n_unfinished, batch.n_actions), dtype=np.float32)


def test_wrong_shape_names_expected_and_got() -> None:
    batch = _batch(3, 2)
    bad = np.zeros((batch.n_unfinished + 1, batch.n_actions), dtype=np.float32)
    with pytest.raises(ValueError, match=r"shape \(2, 10\).*got \(3, 10\)"):
        batch.advance(bad)
    with pytest.raises(ValueError, match=r"got \(2, 11\)"):
        batch.advance(np.zeros((2, 11), dtype=np.float32))  # more columns than actions
    with pytest.raises(ValueError, match="2-dimensional"):
        batch.advance(np.zeros(20, dtype=np.float32))
    batch.advance(_scores(batch))  # still usable
    assert batch.n_steps == 1


def test_wrong_dtype_layout_or_type() -> None:
    batch = _batch(3)
    with pytest.raises(TypeError, match="float32, got float64"):
        batch.advance(np.zeros((1, 10)))
    with pytest.raises(ValueError, match="C-contiguous"):
        batch.advance(np.zeros((1, 20), dtype=np.float32)[:, ::2])
    with pytest.raises(TypeError, match=r"numpy.ndarray, got list"):
        batch.advance([[0.0] * 10])  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_scores_are_rejected(value: float) -> None:
    batch = _batch(3)
    scores = _scores(batch)
    scores[0, 4] = value
    with pytest.raises(ValueError, match=r"row 0, column 4 .*must be finite"):
        batch.advance(scores)
    assert batch.n_steps == 0
    batch.advance(_scores(batch))
    assert batch.n_steps == 1


def test_empty_and_one_token_docs() -> None:
    batch = _batch(0, 1, 0)
    assert batch.n_unfinished == 1
    batch.advance(_scores(batch))
    assert batch.is_done
    (empty,) = batch.parses(0)
    assert empty.history.tolist() == [] and empty.probability == 1.0
    one = batch.parses(1)
    assert len(one) == 3  # U-PER, U-LOC, O: B/I/L impossible on a one-token doc
    assert sum(p.probability for p in one) == pytest.approx(1.0)
    assert _batch().is_done  # no docs at all


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        beamner.BeamBatch(_system(), _docs(2), 0, 0.0)
    with pytest.raises(ValueError, match=r"density must be in \[0, 1\]"):
        beamner.BeamBatch(_system(), _docs(2), 2, 1.5)
    with pytest.raises(ValueError, match="density"):
        beamner.BeamBatch(_system(), _docs(2), 2, float("nan"))
    with pytest.raises(IndexError, match="out of range"):
        _batch(2).parses(5)


def test_doc_arrays_are_checked() -> None:
    ok = np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match="add up to 4 tokens but 3"):
        beamner.DocBatch(ok, ok, ok, ok, np.array([4]))
    with pytest.raises(ValueError, match="same length"):
        beamner.DocBatch(ok, np.zeros(2, dtype=np.uint64), ok, ok, np.array([3]))
    with pytest.raises(ValueError, match=r"ent_iob must be 0..3, got 7"):
        beamner.DocBatch(np.array([0, 7, 0]), ok, ok, ok, np.array([3]))
    with pytest.raises(ValueError, match="does not fit in int8"):
        beamner.DocBatch(np.array([0, 300, 0]), ok, ok, ok, np.array([3]))
    with pytest.raises(TypeError, match="integer or bool dtype"):
        beamner.DocBatch(ok.astype(float), ok, ok, ok, np.array([3]))
    with pytest.raises(ValueError, match="negative length"):
        beamner.DocBatch(ok, ok, ok, ok, np.array([4, -1]))


def test_preset_label_missing_from_table() -> None:
    doc = Doc(VOCAB, words=["a", "b", "c"])
    doc.set_ents([Span(doc, 1, 2, label="UNKNOWN")])
    batch = beamner.BeamBatch(_system(), beamner.doc_batch([doc]), 4, 0.0)
    batch.advance(_scores(batch))
    with pytest.raises(ValueError, match=r"no valid action at token 1.*inconsistent"):
        batch.advance(_scores(batch))


def test_tables_are_checked() -> None:
    with pytest.raises(ValueError, match="not one of B, I, L, U, O"):
        beamner.TransitionSystem(np.array([0]), np.array([0], dtype=np.uint64))
    with pytest.raises(ValueError, match="O cannot have a label"):
        beamner.TransitionSystem(np.array([5]), np.array([3], dtype=np.uint64))
    with pytest.raises(ValueError, match="duplicates"):
        beamner.TransitionSystem(np.array([5, 5]), np.array([0, 0], dtype=np.uint64))
    with pytest.raises(ValueError, match="same length"):
        beamner.TransitionSystem(np.array([5]), np.array([0, 0], dtype=np.uint64))
    with pytest.raises(ValueError, match="reserved"):
        beamner.TransitionSystem.from_labels(np.array([0], dtype=np.uint64))


def test_trace_rejects_invalid_history() -> None:
    system = _system()
    docs = _docs(2)
    with pytest.raises(ValueError, match="not valid at token 1"):
        system.trace(docs, 0, np.array([9, 0]))  # O, then B on the last token
    with pytest.raises(ValueError, match="not an action index"):
        system.trace(docs, 0, np.array([42]))
    with pytest.raises(ValueError, match="ends after 2"):
        system.trace(docs, 0, np.array([9, 9, 9]))
    with pytest.raises(IndexError):
        system.trace(docs, 3, np.array([9]))


def test_gold_is_checked() -> None:
    with pytest.raises(ValueError, match="not a move"):
        beamner.Gold(np.array([9]), np.array([0], dtype=np.uint64))
    with pytest.raises(ValueError, match="outside the document"):
        beamner.Gold(
            np.array([5, 5]),
            np.zeros(2, dtype=np.uint64),
            np.array([[1, 3]]),
            np.array([1], dtype=np.uint64),
        )
    gold = beamner.Gold(np.array([5, 5]), np.zeros(2, dtype=np.uint64))
    with pytest.raises(ValueError, match="one gold per document"):
        beamner.BeamBatch(_system(), _docs(2, 2), 2, 0.0, golds=[gold])
    with pytest.raises(ValueError, match="2 tags for a document of 3 tokens"):
        beamner.BeamBatch(_system(), _docs(3), 2, 0.0, golds=[gold])
    with pytest.raises(ValueError, match="follow_gold needs golds"):
        beamner.BeamBatch(_system(), _docs(3), 2, 0.0, follow_gold=True)
    with pytest.raises(RuntimeError, match="costs need golds"):
        _batch(2).costs()


def test_precomputed_arrays_are_checked() -> None:
    batch = _batch(2)
    n_rows, nF, nO, nP = 3, 3, 4, 2
    feats = np.zeros((n_rows, nF, nO, nP), dtype=np.float32)
    bias = np.zeros((nO, nP), dtype=np.float32)
    W = np.zeros((10, nO), dtype=np.float32)
    b = np.zeros(10, dtype=np.float32)
    with pytest.raises(ValueError, match=r"one row per token plus the padding row \(3\), got 2"):
        batch.run_precomputed(feats[:2], bias, W, b)
    with pytest.raises(ValueError, match=r"lower_bias must have shape \(4, 2\)"):
        batch.run_precomputed(feats, bias.T.copy(), W, b)
    with pytest.raises(ValueError, match=r"upper_b must have shape \(10,\)"):
        batch.run_precomputed(feats, bias, W, b[:5])
    with pytest.raises(ValueError, match="together"):
        batch.run_precomputed(feats, bias, W, None)
    with pytest.raises(ValueError, match="scorer gives 9 classes but the transition table has 10"):
        batch.run_precomputed(feats, bias, W[:9], b[:9])
    with pytest.raises(ValueError, match="nF must be 3"):
        batch.run_precomputed(np.zeros((3, 2, nO, nP), dtype=np.float32), bias, W, b)
    batch.run_precomputed(feats, bias, W, b)
    assert batch.is_done
