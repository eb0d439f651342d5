"""Bridge from spaCy's parser model (``TransitionBasedParser``) to the engine.

Two ways to score the beam's states, both with spaCy's arithmetic:

* :func:`precompute`: run tok2vec and the lower layer once per batch (as
  spaCy's ``precompute_hiddens`` does) and hand the arrays to the native
  search, which does every step without Python (``BeamBatch.run_precomputed``).
* :class:`StepScorer`: score one step's context-token matrix through spaCy's
  own step model (``ParserStepModel``); one call and one device transfer per
  step, so it works with any thinc ops (numpy or cupy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy
from numpy.typing import NDArray

Float32Array = NDArray[numpy.float32]


def to_host(array: Any) -> Float32Array:
    """A C-contiguous float32 numpy copy of a numpy or cupy array (one transfer)."""
    if hasattr(array, "get") and not isinstance(array, numpy.ndarray):
        array = array.get()  # cupy -> numpy, once per call
    return numpy.ascontiguousarray(array, dtype=numpy.float32)


def _class_mask(model: Any, n_classes: int) -> Float32Array | None:
    unseen = model.attrs.get("unseen_classes", set())
    if not unseen:
        return None
    mask = numpy.ones(n_classes, dtype=numpy.float32)
    for clas in unseen:
        mask[clas] = 0.0
    return mask


@dataclass
class PrecomputedLayers:
    """What the native search needs to score states on its own."""

    features: Float32Array  #: (n_tokens + 1, nF, nO, nP); row 0 is padding
    lower_bias: Float32Array  #: (nO, nP)
    upper_W: Float32Array | None  #: (n_classes, nO), None without an upper layer
    upper_b: Float32Array | None  #: (n_classes,)
    class_mask: Float32Array | None  #: (n_classes,), 0 for unseen classes

    @property
    def n_classes(self) -> int:
        return int(self.upper_W.shape[0] if self.upper_W is not None else self.features.shape[2])


def parser_model(pipe: Any) -> Any:
    """The ``TransitionModel`` of a spaCy NER pipe, checked to be one we can run."""
    model = getattr(pipe, "model", None)
    if model is None or model.name != "parser_model":
        name = getattr(model, "name", type(model).__name__)
        raise TypeError(
            f"expected a transition-based NER model (TransitionBasedParser), got {name!r}"
        )
    return model


def precompute(pipe: Any, docs: list[Any]) -> PrecomputedLayers:
    """tok2vec + the lower layer for all tokens of ``docs`` (batch order), and the
    upper layer's weights, as host float32 arrays."""
    return lower_layers(pipe, token_vectors(pipe, docs))


def token_vectors(pipe: Any, docs: list[Any]) -> Any:
    """The NER's tok2vec (with its projection) over ``docs``: the first half of
    :func:`precompute`, mostly Python holding the GIL."""
    return parser_model(pipe).layers[0].predict(docs)


@dataclass
class UpperLayer:
    """The upper layer's weights (None without one) and the unseen-class mask,
    read at one moment: a label added later (``_ensure_labels_are_added``)
    replaces the upper layer with a larger one and leaves these as they were."""

    W: Float32Array | None
    b: Float32Array | None
    class_mask: Float32Array | None


def upper_layer(pipe: Any) -> UpperLayer | None:
    """:class:`UpperLayer` of ``pipe``'s model; None when it has no upper layer
    (its lower layer scores the classes, and a new label resizes that)."""
    model = parser_model(pipe)
    if not model.attrs["has_upper"]:
        return None
    upper = model.layers[2]
    upper_W = to_host(upper.get_param("W"))
    return UpperLayer(
        upper_W, to_host(upper.get_param("b")), _class_mask(model, int(upper_W.shape[0]))
    )


def lower_layers(pipe: Any, tokvecs: Any, upper: UpperLayer | None = None) -> PrecomputedLayers:
    """The second half of :func:`precompute`: the lower layer over
    :func:`token_vectors`' output (one blis matmul, which releases the GIL)
    and the upper layer's weights (``upper``, read earlier, else now)."""
    model = parser_model(pipe)
    lower = model.layers[1]
    features = to_host(lower.predict(tokvecs))
    n_pieces = lower.get_dim("nP") if lower.has_dim("nP") else 1
    lower_bias = to_host(lower.get_param("b")).reshape(features.shape[2], n_pieces)
    features = features.reshape(features.shape[0], features.shape[1], features.shape[2], n_pieces)
    if upper is None:
        upper = upper_layer(pipe)
    if upper is not None:
        return PrecomputedLayers(features, lower_bias, upper.W, upper.b, upper.class_mask)
    layers = PrecomputedLayers(features, lower_bias, None, None, None)
    layers.class_mask = _class_mask(model, layers.n_classes)
    return layers


class StepScorer:
    """Scores a step's (n_states, 3) context tokens with spaCy's step model."""

    def __init__(self, pipe: Any, docs: list[Any]) -> None:
        self.model = parser_model(pipe)
        self.step_model = self.model.predict(docs)

    def __call__(self, token_ids: NDArray[numpy.int32]) -> Float32Array:
        step = self.step_model
        vector = step.state2vec.predict(token_ids)
        if step.attrs["has_upper"]:
            scores = step.vec2scores.predict(step.vec2scores.ops.asarray(vector))
        else:
            scores = vector
        scores = to_host(scores)
        unseen = step._class_mask == 0
        if unseen.any():
            scores[:, unseen] = numpy.nanmin(scores)
        return scores

    def close(self) -> None:
        self.step_model.clear_memory()
