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
from beamner.spacy_inputs import doc_batch, gold, transition_system

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


def update_beam(
    pipe: Any,
    examples: Sequence[Example],
    *,
    beam_width: int,
    sgd: Any = None,
    losses: dict[str, float] | None = None,
    beam_density: float = 0.0,
    on_step: Callable[[int, NDArray[numpy.float32]], None] | None = None,
) -> dict[str, float] | None:
    """One global update of ``pipe`` (an entity recognizer) on ``examples``,
    equal to spaCy's ``Parser.update_beam``. ``on_step(step, d_scores)`` sees
    each step's gradient before it is backpropagated (for tests)."""
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
    model, backprop_tok2vec = pipe.model.begin_update([eg.predicted for eg in examples])
    update = BeamUpdate(
        transition_system(moves),
        doc_batch([eg.predicted for eg in kept], offsets=offsets),
        [gold(eg, moves.neg_key) for eg in kept],
        beam_width,
        beam_density,
    )
    backprops: list[Backprop] = []
    while not update.is_done:
        token_ids = update.prepare_step()
        if not len(token_ids):
            break
        scores, backprop = step_forward(model, token_ids, True)
        backprops.append(backprop)
        update.advance(_NUMPY_OPS.as_contig(_to_host(scores)))
    loss = 0.0
    for step in range(min(update.n_gradient_steps, len(backprops))):
        d_scores = update.gradient(step)
        if on_step is not None:
            on_step(step, d_scores)
        loss += float((d_scores**2).mean())
        backprops[step](model.ops.asarray(d_scores))
    if losses is not None:
        losses[pipe.name] = losses.get(pipe.name, 0.0) + loss
    backprop_tok2vec(kept)
    if sgd is not None:
        pipe.finish_update(sgd)
    return losses


def _to_host(array: Any) -> NDArray[numpy.float32]:
    if hasattr(array, "get") and not isinstance(array, numpy.ndarray):
        array = array.get()
    return numpy.ascontiguousarray(array, dtype=numpy.float32)
