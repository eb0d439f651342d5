"""Fuzzing the Python boundary with hypothesis: every binding entry point of
beamner._core gets arbitrary numpy arrays (any dtype, any shape, strided views,
extreme values) and non-array objects. The only acceptable outcomes are a
result or TypeError/ValueError/IndexError/RuntimeError; a crash, a sanitizer
report (see .ci/run's sanitized stage) or any other exception is a bug. After
each rejected call the same object must still work."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import beamner
from beamner import _core

ALLOWED = (TypeError, ValueError, IndexError, RuntimeError)
# The sanitized CI stage runs fewer examples (each call is ~10x slower there).
EXAMPLES = int(os.environ.get("BEAMNER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

DTYPES = [
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.bool_,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
]


@st.composite
def any_array(draw: st.DrawFn, max_dims: int = 3, max_side: int = 6) -> Any:
    """A numpy array of any dtype and shape (0-d included), sometimes a strided
    or reversed view, with extreme values (NaN, inf, -0.0, dtype min/max)."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side))
    arr = draw(hnp.arrays(dtype, shape))
    view = draw(st.integers(0, 3))
    if view == 1 and arr.ndim >= 1 and arr.shape[0] > 1:
        arr = arr[::2]
    elif view == 2 and arr.ndim >= 1:
        arr = arr[::-1]
    elif view == 3 and arr.ndim == 2:
        arr = arr.T
    return arr


def any_object() -> st.SearchStrategy[Any]:
    """An array, or something that is not one."""
    return st.one_of(
        any_array(),
        any_array(),
        any_array(),
        st.none(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(-5, 5), max_size=4),
        st.text(max_size=3),
        st.builds(lambda: np.zeros(3, dtype=object)),
        st.builds(lambda: np.array(["a", "b"])),
    )


def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except ALLOWED:
        return None


LABELS = np.array([11, 22], dtype=np.uint64)


def system() -> beamner.TransitionSystem:
    return beamner.TransitionSystem.from_labels(LABELS)


def plain_docs(*lengths: int) -> beamner.DocBatch:
    n = sum(lengths)
    z = np.zeros(n, dtype=np.int64)
    return beamner.DocBatch(z, z.astype(np.uint64), z, z, np.array(lengths, dtype=np.int32))


def fresh_batch(width: int = 3) -> beamner.BeamBatch:
    return beamner.BeamBatch(system(), plain_docs(3, 1, 0, 4), width, 0.0)


def still_works(batch: beamner.BeamBatch) -> None:
    """The batch answers and runs to the end with well-formed input."""
    steps = batch.n_steps
    while batch.n_unfinished:
        batch.context_tokens()
        batch.valid_actions()
        batch.advance(np.zeros((batch.n_unfinished, batch.n_actions), dtype=np.float32))
    assert batch.is_done and batch.n_steps >= steps
    for d in range(batch.n_docs):
        parses = batch.parses(d)
        assert parses and abs(sum(p.probability for p in parses) - 1.0) < 1e-9
        batch.beam_arrays(d)
        batch.entity_probabilities(d)


@FUZZ
@given(moves=any_object(), labels=any_object())
def test_transition_system_tables(moves: Any, labels: Any) -> None:
    s = call(beamner.TransitionSystem, moves, labels)
    if s is not None:
        assert s.n_actions == len(s.moves) == len(s.labels) >= 1
    call(beamner.TransitionSystem.from_labels, labels)


@FUZZ
@given(
    iob=any_object(),
    typ=any_object(),
    sent=any_object(),
    space=any_object(),
    lengths=any_object(),
    offsets=st.one_of(st.none(), any_object()),
)
def test_doc_batch(iob: Any, typ: Any, sent: Any, space: Any, lengths: Any, offsets: Any) -> None:
    docs = call(beamner.DocBatch, iob, typ, sent, space, lengths, offsets)
    if docs is None:
        return
    assert docs.n_tokens == int(np.sum(docs.lengths))
    # Whatever got through validation is a usable batch.
    batch = call(beamner.BeamBatch, system(), docs, 2, 0.0)
    if batch is not None:
        for _ in range(64):
            if not batch.n_unfinished:
                break
            if call(batch.advance, np.zeros((batch.n_unfinished, 10), np.float32)) is None:
                break  # inconsistent presets: a ValueError naming the token


@FUZZ
@given(
    n=st.integers(0, 6),
    iob=st.lists(st.integers(0, 3), min_size=6, max_size=6),
    typ=st.lists(st.sampled_from([0, 11, 22, 33]), min_size=6, max_size=6),
    sent=st.lists(st.integers(-1, 1), min_size=6, max_size=6),
    space=st.lists(st.booleans(), min_size=6, max_size=6),
    history=any_object(),
    gold_moves=any_object(),
    gold_labels=any_object(),
    negatives=st.one_of(st.none(), any_array(max_dims=2)),
    negative_labels=st.one_of(st.none(), any_array(max_dims=1)),
    doc=st.integers(-3, 3),
    length=st.integers(-(2**31), 2**31 - 1),
)
def test_trace_entities_and_gold(
    n: int,
    iob: list[int],
    typ: list[int],
    sent: list[int],
    space: list[bool],
    history: Any,
    gold_moves: Any,
    gold_labels: Any,
    negatives: Any,
    negative_labels: Any,
    doc: int,
    length: int,
) -> None:
    docs = beamner.DocBatch(
        np.array(iob[:n], dtype=np.int8),
        np.array(typ[:n], dtype=np.uint64),
        np.array(sent[:n], dtype=np.int8),
        np.array(space[:n], dtype=np.uint8),
        np.array([n], dtype=np.int32),
    )
    s = system()
    gold = call(beamner.Gold, gold_moves, gold_labels, negatives, negative_labels)
    call(s.trace, docs, doc, history)
    call(s.trace, docs, doc, history, gold)
    ents = call(s.entities, history, length)
    if ents is not None:
        assert all(0 <= a < b <= max(length, 0) for a, b, _ in ents)
    if gold is not None:
        batch = call(beamner.BeamBatch, s, docs, 2, 0.0, [gold], True)
        if batch is not None:
            call(batch.costs)
    # Rejections left the system usable.
    assert s.trace(plain_docs(2), 0, np.array([9, 9], dtype=np.int32))[0].shape == (2, 10)


@FUZZ
@example(width=526587144, density=0.0, golds=None, follow_gold=None)  # was std::bad_alloc
@given(
    width=st.one_of(st.integers(-5, 2000), st.integers(-(2**40), 2**40), st.floats()),
    density=st.one_of(st.floats(), st.integers(-3, 3)),
    golds=st.one_of(st.none(), st.lists(st.none(), max_size=2), st.integers()),
    follow_gold=st.one_of(st.booleans(), st.none(), st.integers()),
)
def test_beam_batch_options(width: Any, density: Any, golds: Any, follow_gold: Any) -> None:
    batch = call(beamner.BeamBatch, system(), plain_docs(2, 3), width, density, golds, follow_gold)
    if batch is not None:
        assert 1 <= batch.width and 0.0 <= batch.density <= 1.0
        if batch.width <= 64:
            still_works(batch)


@FUZZ
@given(scores=st.lists(any_object(), min_size=1, max_size=4), doc=st.integers(-(2**31), 2**31))
def test_advance_and_results(scores: list[Any], doc: int) -> None:
    batch = fresh_batch()
    for s in scores:
        before = (batch.n_steps, batch.n_unfinished)
        if call(batch.advance, s) is None:
            # None is also advance's success value: compare the state.
            if (batch.n_steps, batch.n_unfinished) != before:
                continue
    call(batch.parses, doc)
    call(batch.beam_arrays, doc)
    call(batch.entity_probabilities, doc)
    still_works(batch)


@FUZZ
@given(
    rows=st.integers(0, 12),
    cols=st.integers(0, 12),
    fill=st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45, 1.0]),
    where=st.tuples(st.integers(0, 11), st.integers(0, 11)),
)
def test_advance_score_values(rows: int, cols: int, fill: float, where: tuple[int, int]) -> None:
    """Right dtype, any shape, one extreme value somewhere (twice, for the
    running sum to overflow)."""
    batch = fresh_batch()
    for _ in range(2):
        scores = np.zeros((rows, cols), dtype=np.float32)
        if rows and cols:
            scores[where[0] % rows, where[1] % cols] = fill
        call(batch.advance, scores)
        scores = np.full((batch.n_unfinished, batch.n_actions), fill, dtype=np.float32)
        call(batch.advance, scores)
    still_works(batch)


@FUZZ
@given(
    features=any_object(),
    lower_bias=any_object(),
    upper_W=st.one_of(st.none(), any_object()),
    upper_b=st.one_of(st.none(), any_object()),
    class_mask=st.one_of(st.none(), any_object()),
    use_blis=st.booleans(),
)
def test_run_precomputed_any_arrays(
    features: Any,
    lower_bias: Any,
    upper_W: Any,
    upper_b: Any,
    class_mask: Any,
    use_blis: bool,
) -> None:
    batch = fresh_batch()
    call(batch.run_precomputed, features, lower_bias, upper_W, upper_b, class_mask, use_blis)
    still_works(batch)


@FUZZ
@given(
    nO=st.integers(1, 4),
    nP=st.integers(1, 3),
    n_classes=st.sampled_from([9, 10, 11]),
    extra_rows=st.integers(-2, 2),
    value=st.sampled_from([0.5, np.nan, np.inf, 3e38, -0.0]),
    upper=st.booleans(),
    masked=st.booleans(),
    use_blis=st.booleans(),
)
def test_run_precomputed_shapes_and_values(
    nO: int,
    nP: int,
    n_classes: int,
    extra_rows: int,
    value: float,
    upper: bool,
    masked: bool,
    use_blis: bool,
) -> None:
    """Well-typed arrays of nearly the right shapes, with extreme values."""
    batch = fresh_batch()
    rng = np.random.default_rng(nO * 7 + nP)
    n_rows = max(0, 8 + 1 + extra_rows)
    features = rng.standard_normal((n_rows, 3, nO, nP)).astype(np.float32)
    if n_rows:
        features[-1, 0, 0, 0] = value
    bias = rng.standard_normal((nO, nP)).astype(np.float32)
    W = rng.standard_normal((n_classes, nO)).astype(np.float32) if upper else None
    b = np.zeros(n_classes, dtype=np.float32) if upper else None
    mask = None
    if masked:
        mask = np.ones(n_classes if upper else nO, dtype=np.float32)
        mask[0] = 0.0
    call(batch.run_precomputed, features, bias, W, b, mask, use_blis)
    still_works(batch)


@FUZZ
@given(
    golds=st.lists(st.tuples(any_array(max_dims=1), any_array(max_dims=1)), min_size=0, max_size=3),
    width=st.integers(-2, 8),
    density=st.floats(),
    scores=any_object(),
    step=st.integers(-(2**31), 2**31),
)
def test_beam_update(
    golds: list[tuple[Any, Any]], width: int, density: float, scores: Any, step: int
) -> None:
    if not hasattr(_core, "BeamUpdate"):
        pytest.skip("no BeamUpdate in this build")
    made = [call(beamner.Gold, m, lb) for m, lb in golds]
    gold_list = [g for g in made if g is not None]
    upd = call(_core.BeamUpdate, system(), plain_docs(3, 1), gold_list, width, density)
    if upd is None:
        return
    for _ in range(6):
        if upd.is_done:
            break
        ids = call(upd.prepare_step)
        if ids is None:
            break
        call(upd.advance, scores)
        call(upd.advance, np.zeros((len(ids), 10), dtype=np.float32))
    call(upd.gradient, step)
    for i in range(upd.n_gradient_steps):
        assert np.all(np.isfinite(upd.gradient(i)))


def test_wrong_object_types_for_handles() -> None:
    """Objects of the wrong class where a TransitionSystem/DocBatch/Gold is expected."""
    s, d = system(), plain_docs(2)
    for args in [(d, d, 2, 0.0), (s, s, 2, 0.0), (s, d, 2, 0.0, [s]), (None, None, 1, 0.0)]:
        with pytest.raises(TypeError):
            beamner.BeamBatch(*args)
    with pytest.raises(TypeError):
        s.trace(s, 0, np.zeros(1, dtype=np.int32))
    with pytest.raises(TypeError):
        s.trace(d, 0, np.zeros(1, dtype=np.int32), d)
