"""Global (beam) training updates with the native oracle.

:func:`update_beam` is spaCy's ``Parser.update_beam`` with the search,
the unique-state bookkeeping, the max-violation check and the gradient done
natively (:class:`beamner._core.BeamUpdate`); only the model's forward and
backward passes stay in Python, once per step for the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy
from numpy.typing import NDArray
from spacy.training import Example
from thinc.api import NumpyOps

from beamner._core import BeamUpdate
from beamner.engine.model import to_host
from beamner.engine.spacy_inputs import doc_batch, golds, transition_system

_NUMPY_OPS = NumpyOps()
Backprop = Callable[[NDArray[numpy.float32]], None]


def step_forward(
    step_model: Any, token_ids: NDArray[numpy.int32], is_train: bool
) -> tuple[NDArray[numpy.float32], Backprop]:
    """spaCy's ``parser_model.step_forward`` on context token ids instead of
    states (same layers, dropout, unseen-class mask and backward pass)."""
    vector, get_d_tokvecs = step_model.state2vec(token_ids, is_train)
    mask = None
    if step_model.attrs["has_upper"]:
        dropout_rate = step_model.attrs["dropout_rate"]
        if is_train and dropout_rate > 0:
            mask = _NUMPY_OPS.get_dropout_mask(vector.shape, 0.1)
            vector *= mask
        scores, get_d_vector = step_model.vec2scores(vector, is_train)
    else:
        scores = NumpyOps().asarray(vector)

        def get_d_vector(d_scores: Any) -> Any:
            return d_scores

    scores[:, step_model._class_mask == 0] = numpy.nanmin(scores)

    def backprop(d_scores: NDArray[numpy.float32]) -> None:
        d_scores *= step_model._class_mask
        d_vector = get_d_vector(d_scores)
        if mask is not None:
            d_vector *= mask
        step_model.backprop_step(token_ids, d_vector, get_d_tokvecs)

    return scores, backprop


class BatchedStepModel:
    """The parser's step model for training with one backward pass for all
    steps. The forward pass per step is spaCy's (``precompute_hiddens`` and
    ``step_forward``: same feature sums, maxout/ReLU, dropout, upper layer and
    unseen-class mask, so the scores are identical); the backward pass
    concatenates the steps and runs the upper layer, the nonlinearity and the
    lower layer once, instead of once per step as spaCy's ``finish_steps``
    does. Gradients equal spaCy's up to float32 summation order. CPU (numpy)
    ops only; other ops use spaCy's step model."""

    def __init__(self, model: Any, docs: Sequence[Any]) -> None:
        tok2vec, lower, upper = model.layers[0], model.layers[1], model.layers[2]
        self.ops = model.ops
        self.has_upper = bool(model.attrs["has_upper"])
        self.upper = upper if self.has_upper else None
        # spaCy's ParserStepModel is built with dropout=0.1 on the upper layer's
        # input whatever the pipeline's dropout setting; so is this.
        self.dropout_rate = 0.1
        self.tokvecs, self.bp_tokvecs = tok2vec(docs, is_train=True)
        self.lower = lower
        self.features, _ = lower(self.tokvecs, is_train=True)
        self.n_pieces = self.features.shape[3]
        self.bias = lower.get_param("b")
        n_classes = upper.get_dim("nO") if self.has_upper else self.features.shape[2]
        self.class_mask = numpy.ones((n_classes,), dtype="f")
        for clas in model.attrs["unseen_classes"]:
            self.class_mask[clas] = 0.0
        self._ids: list[NDArray[numpy.int32]] = []
        self._which: list[Any] = []
        self._inputs: list[Any] = []
        self._dropout: list[Any] = []

    def __call__(self, token_ids: NDArray[numpy.int32]) -> NDArray[numpy.float32]:
        n, n_feats = token_ids.shape
        vector = numpy.zeros((n, *self.features.shape[2:]), dtype="f")
        for f in range(n_feats):  # sum_state_features: features in order, padding row 0
            vector += self.features[token_ids[:, f] + 1, f]
        vector += self.bias
        if self.n_pieces >= 2:
            vector, which = _NUMPY_OPS.maxout(vector)
        else:
            vector = vector.reshape((n, -1))
            which = vector >= 0.0
            vector *= which
        self._ids.append(token_ids)
        self._which.append(which)
        if self.upper is not None:
            mask = None
            if self.dropout_rate > 0:
                mask = _NUMPY_OPS.get_dropout_mask(vector.shape, 0.1)
                vector *= mask
            self._dropout.append(mask)
            self._inputs.append(vector)
            scores = self.upper.predict(vector)
        else:
            scores = NumpyOps().asarray(vector)
        scores[:, self.class_mask == 0] = numpy.nanmin(scores)
        return numpy.asarray(scores, dtype="f")

    def backward(self, d_scores: list[NDArray[numpy.float32]]) -> None:
        """Backpropagate the first ``len(d_scores)`` steps' gradients, then tok2vec."""
        n_steps = len(d_scores)
        d_tokvecs = self.ops.alloc((self.tokvecs.shape[0] + 1, self.tokvecs.shape[1]))
        if n_steps:
            d = numpy.concatenate(d_scores) * self.class_mask
            if self.upper is not None:
                inputs = numpy.concatenate(self._inputs[:n_steps])
                W = self.upper.get_param("W")
                self.upper.inc_grad("W", self.ops.gemm(d, inputs, trans1=True))
                self.upper.inc_grad("b", d.sum(axis=0))
                d = self.ops.gemm(d, W)
                if self._dropout[0] is not None:
                    d *= numpy.concatenate(self._dropout[:n_steps])
            which = numpy.concatenate(self._which[:n_steps])
            if self.n_pieces >= 2:
                d = self.ops.backprop_maxout(d, which, self.n_pieces)
            else:
                d = (d * which).reshape((*d.shape, 1))
            ids = numpy.concatenate(self._ids[:n_steps])
            self._backprop_lower(d, ids, d_tokvecs)
        self.bp_tokvecs(d_tokvecs[:-1])

    def _backprop_lower(
        self, d: NDArray[numpy.float32], ids: NDArray[numpy.int32], d_tokvecs: Any
    ) -> None:
        """spaCy's PrecomputableAffine backward, summed per token first.

        A state's hidden input is the sum of its features' precomputed rows,
        so the gradient of a row is the sum of the gradients of the states
        that read it. Summing those first (scatter-add) turns the weight and
        input GEMMs from one row per state per step into one row per token.
        Same quantities as spaCy's backward, including its quirks: padding
        features (id -1) feed the ``pad`` gradient, and the weight gradient
        with the last token's vector (``X[-1]``); their input gradient lands
        in the spare last row of ``d_tokvecs``, which is dropped.
        """
        lower = self.lower
        n_tokens, n_in = self.tokvecs.shape
        n_feats = ids.shape[1]
        n_out = d.shape[1] * d.shape[2]
        W = lower.get_param("W")  # (nF, nO, nP, nI)
        d_rows = numpy.ascontiguousarray(d.reshape((d.shape[0], n_out)), dtype="f")
        # Per feature, the row each state reads (padding -> row n_tokens);
        # int32 and contiguous, or thinc's scatter_add falls back to numpy.add.at.
        row_of = numpy.ascontiguousarray(numpy.where(ids < 0, n_tokens, ids).T, dtype="i")
        d_table = self.ops.alloc((n_feats, n_tokens + 1, n_out))
        for f in range(n_feats):
            self.ops.scatter_add(d_table[f], row_of[f], d_rows)
        lower.inc_grad("pad", d_table[:, n_tokens].reshape((1, n_feats, *d.shape[1:])))
        lower.inc_grad("b", d.sum(axis=0))
        X = numpy.concatenate([self.tokvecs, self.tokvecs[-1:]])  # padding reads X[-1]
        dW = numpy.stack([self.ops.gemm(d_table[f], X, trans1=True) for f in range(n_feats)])
        lower.inc_grad("W", dW.reshape(W.shape))
        # d_tokvecs[t] += sum_f d_table[f, t] @ W[f], one GEMM over (f, out).
        d_by_token = d_table.transpose((1, 0, 2)).reshape((n_tokens + 1, n_feats * n_out))
        d_tokvecs += self.ops.gemm(d_by_token, W.reshape((n_feats * n_out, n_in)))


def update_beam(
    pipe: Any,
    examples: Sequence[Example],
    *,
    beam_width: int,
    sgd: Any = None,
    losses: dict[str, float] | None = None,
    beam_density: float = 0.0,
    on_step: Callable[[int, NDArray[numpy.float32]], None] | None = None,
    batched: bool = True,
) -> dict[str, float] | None:
    """One global update of ``pipe`` (an entity recognizer) on ``examples``,
    equal to spaCy's ``Parser.update_beam``. ``on_step(step, d_scores)`` sees
    each step's gradient before it is backpropagated (for tests).
    ``batched`` runs one backward pass for all steps (:class:`BatchedStepModel`);
    otherwise each step backpropagates through spaCy's step model, as spaCy does."""
    moves = pipe.moves
    kept: list[Example] = []
    offsets: list[int] = []
    offset = 0
    # spaCy's init_gold_batch: examples with gold annotation and tokens;
    # their offsets stay those of the whole batch the model runs on.
    for eg in examples:
        if len(eg.predicted) and moves.has_gold(eg):
            kept.append(eg)
            offsets.append(offset)
        offset += len(eg.predicted)
    if not kept:
        return losses
    docs = [eg.predicted for eg in examples]
    update = BeamUpdate(
        transition_system(moves),
        doc_batch([eg.predicted for eg in kept], offsets=offsets),
        golds(kept, moves.neg_key, moves),
        beam_width,
        beam_density,
    )
    loss = 0.0
    if batched and isinstance(pipe.model.ops, NumpyOps):
        steps = BatchedStepModel(pipe.model, docs)
        n_steps = 0
        while not update.is_done:
            token_ids = update.prepare_step()
            if not len(token_ids):
                break
            update.advance(steps(token_ids))
            n_steps += 1
        gradients = []
        for step in range(min(update.n_gradient_steps, n_steps)):
            d_scores = update.gradient(step)
            if on_step is not None:
                on_step(step, d_scores)
            loss += float((d_scores**2).mean())
            gradients.append(d_scores)
        steps.backward(gradients)
    else:
        model, backprop_tok2vec = pipe.model.begin_update(docs)
        backprops: list[Backprop] = []
        while not update.is_done:
            token_ids = update.prepare_step()
            if not len(token_ids):
                break
            scores, backprop = step_forward(model, token_ids, True)
            backprops.append(backprop)
            update.advance(to_host(scores))
        for step in range(min(update.n_gradient_steps, len(backprops))):
            d_scores = update.gradient(step)
            if on_step is not None:
                on_step(step, d_scores)
            loss += float((d_scores**2).mean())
            backprops[step](model.ops.asarray(d_scores))
        backprop_tok2vec(kept)
    if losses is not None:
        losses[pipe.name] = losses.get(pipe.name, 0.0) + loss
    if sgd is not None:
        pipe.finish_update(sgd)
    return losses
