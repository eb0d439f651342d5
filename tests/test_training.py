"""Native global (beam) updates against spaCy's update_beam: same per-step
gradients, same loss, same weights after an optimizer step."""

from __future__ import annotations

from typing import Any

import numpy
import pytest
import spacy
from conftest import DATA
from spacy.pipeline._parser_internals import _beam_utils
from spacy.tokens import Span
from spacy.training import Example
from thinc.api import SGD, set_dropout_rate
from trained_models import train_pipeline

from beamner.io.conll import conll_to_docs, read_conll
from beamner.training.beam_update import update_beam

NEG_KEY = "incorrect"


def _examples(nlp: Any, start: int, n: int, *, partial: bool, negatives: bool) -> list[Example]:
    """Real WNUT-17 train sentences; some with missing annotation, some with
    negative spans (gold spans relabelled) under NEG_KEY."""
    sentences = read_conll(DATA / "wnut17" / "wnut17train.conll")[start : start + n]
    rng = numpy.random.default_rng(start)
    examples = []
    for doc in conll_to_docs(nlp, sentences, with_ents=True):
        ents = list(doc.ents)
        if partial and rng.random() < 0.4 and len(doc) > 3:
            cut = int(rng.integers(1, len(doc)))
            doc.set_ents([e for e in ents if e.end <= cut], default="unmodified")
            doc.set_ents([], missing=[Span(doc, cut, len(doc))], default="unmodified")
        if negatives and rng.random() < 0.5:
            start_tok = int(rng.integers(0, len(doc)))
            label = "person" if rng.random() < 0.5 else "location"
            neg = Span(
                doc, start_tok, min(len(doc), start_tok + 1 + int(rng.integers(0, 2))), label
            )
            if (neg.start, neg.end, neg.label_) not in {(e.start, e.end, e.label_) for e in ents}:
                doc.spans[NEG_KEY] = [neg]
        examples.append(Example(nlp.make_doc(doc.text), doc))
    return examples


class _Recorder:
    """Wraps spaCy's step model to record the gradient of each step."""

    def __init__(self, step_model: Any) -> None:
        self.step_model = step_model
        self.ops = step_model.ops
        self.d_scores: list[numpy.ndarray] = []

    def begin_update(self, states: Any) -> Any:
        scores, backprop = self.step_model.begin_update(states)

        def record(d_scores: Any) -> Any:
            self.d_scores.append(numpy.array(d_scores, copy=True))
            return backprop(d_scores)

        return scores, record


def _copy(nlp: Any) -> Any:
    other = spacy.util.load_model_from_config(nlp.config, auto_fill=True)
    other.from_bytes(nlp.to_bytes())
    return other


_PIPELINES: dict[str, Any] = {}


def _trained(variant: str) -> Any:
    if variant not in _PIPELINES:
        nlp = train_pipeline(variant, n_sentences=200, n_iter=1)
        nlp.get_pipe("ner").cfg["incorrect_spans_key"] = NEG_KEY
        nlp.get_pipe("ner").moves.cfg["neg_key"] = NEG_KEY
        _PIPELINES[variant] = nlp
    return _PIPELINES[variant]


# "beam": no upper layer; "greedy": upper layer with spaCy's fixed 0.1 dropout
# on its input (masks drawn from numpy's global RNG, seeded alike for both);
# "relu": upper layer over ReLU hiddens.
@pytest.mark.parametrize("variant", ["beam", "greedy", "relu"])
@pytest.mark.parametrize("width,density", [(2, 0.0), (8, 0.0001), (16, 0.01)])
@pytest.mark.parametrize("partial,negatives", [(False, False), (True, True)])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "per-step"])
def test_gradients_equal_spacy_update_beam(
    variant: str, width: int, density: float, partial: bool, negatives: bool, batched: bool
) -> None:
    nlp = _trained(variant)
    pipe = nlp.get_pipe("ner")
    set_dropout_rate(pipe.model, 0.0)
    examples = _examples(nlp, 1000, 24, partial=partial, negatives=negatives)
    # spaCy, recording each step's d_scores
    numpy.random.seed(7)
    states, golds, _ = pipe.moves.init_gold_batch(examples)
    step_model, _ = pipe.model.begin_update([eg.predicted for eg in examples])
    recorder = _Recorder(step_model)
    spacy_loss = _beam_utils.update_beam(pipe.moves, states, golds, recorder, width, density)
    # beamner
    numpy.random.seed(7)
    ours: list[numpy.ndarray] = []
    losses: dict[str, float] = {}
    update_beam(
        pipe,
        examples,
        beam_width=width,
        beam_density=density,
        losses=losses,
        on_step=lambda step, d: ours.append(d.copy()),
        batched=batched,
    )
    assert len(ours) == len(recorder.d_scores)
    assert any(d.any() for d in ours)
    for step, (expected, got) in enumerate(zip(recorder.d_scores, ours)):
        assert expected.shape == got.shape, f"step {step}"
        numpy.testing.assert_allclose(got, expected, atol=1e-5, rtol=0, err_msg=f"step {step}")
    assert losses["ner"] == pytest.approx(spacy_loss, abs=1e-5)


@pytest.mark.parametrize("variant", ["beam", "greedy"])
def test_weights_after_update_equal_spacy(variant: str) -> None:
    """The backward pass through the whole model (upper, lower, tok2vec):
    every parameter's gradient after one update equals spaCy's, and so do the
    weights after a plain SGD step. (Adam's first step, lr * g / (|g| + eps),
    would turn float32 summation-order noise in gradients near eps into weight
    differences near lr, so it is not the place to compare backward passes.)"""
    beam_nlp = _trained(variant)
    ours_nlp, spacy_nlp = _copy(beam_nlp), _copy(beam_nlp)
    examples = _examples(beam_nlp, 2000, 16, partial=True, negatives=False)
    grads = {}
    for nlp, fn in ((spacy_nlp, "spacy"), (ours_nlp, "beamner")):
        pipe = nlp.get_pipe("ner")
        set_dropout_rate(pipe.model, 0.0)
        egs = [Example(nlp.make_doc(eg.reference.text), eg.reference) for eg in examples]
        numpy.random.seed(11)
        if fn == "spacy":
            pipe.update_beam(egs, beam_width=8, losses={"ner": 0.0}, beam_density=0.0)
        else:
            update_beam(pipe, egs, beam_width=8, losses={"ner": 0.0}, beam_density=0.0)
        grads[fn] = _grads(pipe.model)
        pipe.finish_update(SGD(0.01))
    assert [name for name, _ in grads["spacy"]] == [name for name, _ in grads["beamner"]]
    assert any(numpy.abs(g).max() > 0 for _, g in grads["spacy"])
    for (name, a), (_, b) in zip(grads["spacy"], grads["beamner"]):
        scale = max(float(numpy.abs(a).max()), 1e-3)
        numpy.testing.assert_allclose(b, a, atol=1e-5 * scale, rtol=0, err_msg=name)
    before = _params(beam_nlp.get_pipe("ner").model)
    after_spacy = _params(spacy_nlp.get_pipe("ner").model)
    after_ours = _params(ours_nlp.get_pipe("ner").model)
    assert any(not numpy.array_equal(a, b) for (_, a), (_, b) in zip(before, after_spacy))
    for (name, a), (_, b) in zip(after_spacy, after_ours):
        numpy.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5, err_msg=name)


def _grads(model: Any) -> list[tuple[str, numpy.ndarray]]:
    return _params(model, grads=True)


def _params(model: Any, grads: bool = False) -> list[tuple[str, numpy.ndarray]]:
    """Every parameter (or its accumulated gradient) of ``model``, by name, copied."""
    out = []
    for node in model.walk():
        for name in node.param_names:
            if node.has_grad(name) if grads else node.has_param(name):
                value = node.get_grad(name) if grads else node.get_param(name)
                out.append((f"{node.name}.{name}", numpy.array(value)))
    return out
