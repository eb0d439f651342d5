"""spaCy 3.8 itself as the reference for beamner's NER beam search.

Everything here drives spaCy's own Cython code (``BiluoPushDown``,
``StateClass``, ``BeamBatch``/``thinc.extra.search.Beam``) and records what it
does, so the very same inputs (docs, per-step score matrices, action
histories, gold examples) can be fed to the C++ engine and compared.

Source files mirrored (spaCy 3.8.x / thinc 8.3.x, site-packages):

* ``spacy/pipeline/_parser_internals/ner.pyx``: BiluoPushDown, BiluoGold,
  validity and costs of the moves
* ``spacy/pipeline/_parser_internals/transition_system.pyx``: add_action,
  initialize_actions, apply_transition, get_oracle_sequence
* ``spacy/pipeline/_parser_internals/_beam_utils.pyx``: BeamBatch
* ``spacy/pipeline/_parser_internals/_state.pxd``: StateC.set_context_tokens
* ``spacy/pipeline/transition_parser.pyx``: Parser.add_label, initialize, beam_parse
* ``spacy/ml/parser_model.pyx``: ParserStepModel.get_token_ids
* ``thinc/extra/search.pyx``: Beam
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from spacy.language import Language
from spacy.pipeline._parser_internals._beam_utils import BeamBatch
from spacy.pipeline._parser_internals.ner import BiluoPushDown
from spacy.pipeline._parser_internals.stateclass import StateClass
from spacy.strings import StringStore
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy.vocab import Vocab

# Move ids of ner.pyx's ``cdef enum`` (MISSING is never a class).
MISSING, BEGIN, IN, LAST, UNIT, OUT = range(6)
ACTION_TYPES: tuple[int, ...] = (BEGIN, IN, LAST, UNIT, OUT)
MOVE_LETTERS = "MBILUO"
#: Cost ``BiluoPushDown.get_cost`` reports for an invalid action.
INVALID_COST = 9000.0

ScoreFn = Callable[[int, list[StateClass]], Any]
"""``score_fn(step, states) -> array (len(states), moves.n_moves)``."""

PresetMode = Literal["none", "missing", "outside", "unmodified"]
MovesOrder = Literal["add_label", "get_actions"]

SPACE_WORDS: tuple[str, ...] = (" ", "\n", "  ", "\n\n", "\t", " \n")
PLAIN_WORDS: tuple[str, ...] = (
    "the",
    "Apple",
    "London",
    "said",
    "on",
    "Monday",
    ",",
    ".",
    "New",
    "York",
    "Bob",
    "'s",
    "-",
    "@user",
    "#tag",
    "2024",
)


# ---------------------------------------------------------------------------
# Transition system
# ---------------------------------------------------------------------------


def class_names(moves: BiluoPushDown) -> list[str]:
    """Class names in class order: ``"B-PER"``, ``"U-"``, ``"O"`` (``moves.get_class_name(i)``)."""
    return [moves.get_class_name(i) for i in range(moves.n_moves)]


def make_moves(
    labels: Sequence[str] | Mapping[str, int],
    *,
    order: MovesOrder = "add_label",
    strings: StringStore | None = None,
    incorrect_spans_key: str | None = None,
) -> BiluoPushDown:
    """Build a ``BiluoPushDown`` with spaCy's own class order.

    The class order depends on how the ``EntityRecognizer`` got its labels:

    * ``order="add_label"`` mirrors ``ner = nlp.add_pipe("ner"); ner.add_label(l)``
      for each label (``Parser.add_label`` -> ``BiluoPushDown.add_action`` for every
      ``moves.action_types``; OUT with a label is refused) followed by
      ``nlp.initialize()`` (``Parser.initialize``: ``get_actions`` on the dummy
      example, which contributes only ``U-`` and ``O`` with freq 1, merged with
      ``moves.labels`` whose added labels carry negative made-up freqs, then
      ``TransitionSystem.initialize_actions``). Result:
      ``["U-", "O", "B-L1", "I-L1", "L-L1", "U-L1", "B-L2", ...]``.
    * ``order="get_actions"`` mirrors a pipeline trained from data (e.g.
      ``en_core_web_sm``): ``initialize_actions(BiluoPushDown.get_actions(...))``.
      ``labels`` may be a mapping label -> token frequency (what ``get_actions``
      counts from training examples; pass ``nlp.get_pipe("ner").moves.labels[1]``
      to reproduce a trained pipeline) or a sequence (all freq 1, i.e.
      ``get_actions(entity_types=labels)``). Classes are action-major (B, I, L, U,
      O); within an action sorted by (freq, label) descending, so equal
      frequencies give reverse-alphabetical labels; ``U-`` has freq 1.

    ``incorrect_spans_key`` is the ``ner`` component's setting of that name (the
    ``neg_key`` used for negative spans in costs).
    """
    moves = BiluoPushDown(
        strings if strings is not None else StringStore(),
        incorrect_spans_key=incorrect_spans_key,
    )
    if order == "add_label":
        if isinstance(labels, Mapping):
            raise TypeError("order='add_label' takes a sequence of labels")
        for label in labels:
            for action in moves.action_types:
                moves.add_action(action, label)
        actions: dict[int, Counter[str]] = BiluoPushDown.get_actions(examples=[])
        for action, label_freqs in moves.labels.items():
            actions.setdefault(action, Counter())
            for label, freq in label_freqs.items():
                if label not in actions[action]:
                    actions[action][label] = freq
        moves.initialize_actions(actions)
    elif order == "get_actions":
        if isinstance(labels, Mapping):
            actions = BiluoPushDown.get_actions()
            for action in (BEGIN, IN, LAST, UNIT):
                for label, freq in labels.items():
                    actions[action][label] += int(freq)
        else:
            actions = BiluoPushDown.get_actions(entity_types=list(labels))
        moves.initialize_actions(actions)
    else:
        raise ValueError(f"unknown order {order!r}")
    return moves


def moves_from_pipeline(nlp: Language, name: str = "ner") -> BiluoPushDown:
    """The transition system of a loaded pipeline's NER component (``nlp.get_pipe(name).moves``)."""
    moves: BiluoPushDown = nlp.get_pipe(name).moves  # type: ignore[attr-defined]
    return moves


def valid_row(
    moves: BiluoPushDown, state: StateClass, names: Sequence[str] | None = None
) -> NDArray[np.bool_]:
    """Validity of every class, ``moves.is_valid(state, name)``, as ``set_valid`` computes it."""
    if names is None:
        names = class_names(moves)
    return np.array([bool(moves.is_valid(state, n)) for n in names], dtype=np.bool_)


def context_token_ids(state: StateClass, n_feats: int = 3, offset: int = 0) -> list[int]:
    """Python port of ``StateC.set_context_tokens(ids, n)`` (``_state.pxd``).

    ``offset`` is the state's ``c.offset`` (not visible from Python): the sum of
    the lengths of the docs before this one in ``moves.init_batch(docs)``, which
    ``BeamBatch`` copies to every beam state. Negative ids stay ``-1``.
    For NER the stack is always empty and ``n_feats`` is 3 (spaCy's default
    ``nr_feature_tokens``): ``[B(0), E(0) if an entity is open, B(0) - 1 if both]``.
    """
    b0 = state.B(0)
    ids: list[int]
    if n_feats == 1:
        ids = [b0 if b0 >= 0 else -1]
    elif n_feats == 2:
        ids = [b0, state.S(0)]
    elif n_feats == 3:
        first = b0 if b0 >= 0 else -1
        ent_start = state.E(0) if state.entity_is_open() else -1
        last = -1 if first == -1 or ent_start == -1 else first - 1
        ids = [first, ent_start, last]
    elif n_feats == 6:
        ids = [-1] * 6
        if b0 >= 0:
            ids[0] = b0
        if state.entity_is_open():
            j = 1
            for i in range(state.E(0), b0):
                ids[j] = i
                j += 1
                if j >= 6:
                    break
    else:
        raise ValueError(f"n_feats={n_feats} not supported for NER")
    return [i + offset if i >= 0 else -1 for i in ids]


def history_to_ents(moves: BiluoPushDown, history: Sequence[int]) -> list[tuple[int, int, str]]:
    """Entities built by a complete action history, in ``get_beam_parses`` format.

    Each NER action consumes exactly one token, so step ``t`` acts on token
    ``t``. ``U-`` (the blocked-token unit) yields an entity with label ``""``,
    exactly as ``BiluoPushDown.get_beam_parses`` reports it.
    """
    names = class_names(moves)
    ents: list[tuple[int, int, str]] = []
    start = -1
    label = ""
    for t, clas in enumerate(history):
        name = names[clas]
        move, _, lab = name.partition("-")
        if move == "B":
            start, label = t, lab
        elif move == "L":
            ents.append((start, t + 1, label))
        elif move == "U":
            ents.append((t, t + 1, lab))
    return ents


# ---------------------------------------------------------------------------
# Random inputs
# ---------------------------------------------------------------------------


def _random_spans(
    rng: np.random.Generator, n: int, p_start: float, max_len: int
) -> list[tuple[int, int]]:
    """Non-overlapping random ``(start, end)`` token spans."""
    spans: list[tuple[int, int]] = []
    i = 0
    while i < n:
        if rng.random() < p_start:
            length = int(rng.integers(1, max_len + 1))
            end = min(n, i + length)
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans


def _labelled(
    doc: Doc, rng: np.random.Generator, spans: Sequence[tuple[int, int]], labels: Sequence[str]
) -> list[Span]:
    return [Span(doc, s, e, label=str(labels[int(rng.integers(len(labels)))])) for s, e in spans]


def random_doc(
    vocab: Vocab,
    rng: np.random.Generator,
    n_tokens: int,
    labels: Sequence[str],
    *,
    p_space: float = 0.1,
    p_sent_start: float = 0.1,
    p_not_sent_start: float = 0.2,
    preset: PresetMode | Literal["random"] = "random",
    p_ent: float = 0.15,
    p_blocked: float = 0.05,
    max_ent_len: int = 4,
) -> Doc:
    """A ``Doc`` with whitespace tokens, random sentence starts and preset entities.

    * Words: ``PLAIN_WORDS``, or with prob ``p_space`` a whitespace word from
      ``SPACE_WORDS`` (``token.is_space`` is True given a vocab with lexical
      attribute getters, e.g. ``spacy.blank("en").vocab``; a bare ``Vocab()``
      gives ``is_space == False``). Whitespace tokens have ``spaces=False`` and so
      does the token before them.
    * Sentence starts (tokens 1..n-1): ``is_sent_start = True`` with prob
      ``p_sent_start`` (``TokenC.sent_start == 1``, which stops B/I across it),
      ``False`` with prob ``p_not_sent_start`` (-1), else left ``None`` (0).
      Token 0 keeps the ``Doc`` default ``sent_start == 1``.
    * Presets, always via ``Doc.set_ents`` (so spaCy's own consistency fix-ups
      apply; only labels from ``labels`` are used, otherwise no action would be
      valid on the preset tokens - spaCy's ``_ensure_labels_are_added`` adds them
      to the model in that case):

      - ``"none"``: no entity annotation (``ent_iob == 0`` everywhere),
      - ``"missing"`` / ``"outside"``: ``doc.set_ents(ents, default=...)``,
      - ``"unmodified"``: a first random layer ``set_ents(old, default=missing|outside)``
        then ``set_ents(new, default="unmodified")`` over it (partially
        overwriting old entities),
      - ``"random"``: one of the above.

      Except for ``"none"``, blocked spans are then added with
      ``doc.set_ents([], blocked=spans, default="unmodified")`` (``ent_iob=3``,
      ``ent_type=0``; they may cut existing entities).
    """
    n = n_tokens
    words: list[str] = []
    for _ in range(n):
        if rng.random() < p_space:
            words.append(SPACE_WORDS[int(rng.integers(len(SPACE_WORDS)))])
        else:
            words.append(PLAIN_WORDS[int(rng.integers(len(PLAIN_WORDS)))])
    is_ws = [w.isspace() for w in words]
    spaces = [bool(rng.random() < 0.8) for _ in range(n)]
    for i in range(n):
        if is_ws[i]:
            spaces[i] = False
            if i > 0:
                spaces[i - 1] = False
    doc = Doc(vocab, words=words, spaces=spaces)
    for i in range(1, n):
        r = rng.random()
        if r < p_sent_start:
            doc[i].is_sent_start = True
        elif r < p_sent_start + p_not_sent_start:
            doc[i].is_sent_start = False
    mode: str = preset
    if mode == "random":
        mode = str(rng.choice(["none", "missing", "outside", "unmodified"]))
    if mode == "none" or n == 0 or not labels:
        return doc
    if mode == "unmodified":
        first_default = str(rng.choice(["missing", "outside"]))
        old = _labelled(doc, rng, _random_spans(rng, n, p_ent, max_ent_len), labels)
        doc.set_ents(old, default=first_default)
    new = _labelled(doc, rng, _random_spans(rng, n, p_ent, max_ent_len), labels)
    doc.set_ents(new, default=mode)
    if p_blocked > 0:
        blocked = [Span(doc, s, e) for s, e in _random_spans(rng, n, p_blocked, 2)]
        if blocked:
            doc.set_ents([], blocked=blocked, default="unmodified")
    return doc


def random_gold_example(
    doc: Doc,
    rng: np.random.Generator,
    labels: Sequence[str],
    neg_key: str | None = None,
    *,
    p_ent: float = 0.2,
    p_missing: float = 0.1,
    p_blocked: float = 0.03,
    max_ent_len: int = 4,
    max_negs: int = 4,
) -> Example:
    """``Example(doc, reference)`` with random gold entities.

    The reference has the same words/spaces as ``doc`` (so the alignment is
    one-to-one) and, token-wise, random gold entities (any token, whitespace
    included), MISSING runs (``ent_iob == 0``, tag ``"-"``), a few blocked
    tokens (``ent_iob == 3``, ``ent_type == 0``; spaCy's
    ``Example.get_aligned_ents_and_ner`` turns them into missing, except on
    whitespace tokens) and ``O`` elsewhere. If ``neg_key`` is given, up to
    ``max_negs`` random labelled spans go to ``reference.spans[neg_key]``
    (they may overlap gold entities but never equal one in
    (start, end, label), which ``create_gold_state`` rejects with E868).
    ``doc`` itself (the predicted side, with its presets) is not modified.
    """
    n = len(doc)
    ref = Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])
    ents: list[Span] = []
    missing: list[Span] = []
    i = 0
    while i < n:
        r = rng.random()
        length = int(rng.integers(1, max_ent_len + 1))
        end = min(n, i + length)
        if r < p_ent:
            ents.append(Span(ref, i, end, label=str(labels[int(rng.integers(len(labels)))])))
            i = end
        elif r < p_ent + p_missing:
            missing.append(Span(ref, i, end))
            i = end
        else:
            i += 1
    ref.set_ents(ents, missing=missing, default="outside")
    if p_blocked > 0:
        ent_tokens = {k for e in ents for k in range(e.start, e.end)}
        blocked = [
            Span(ref, k, k + 1)
            for k in range(n)
            if k not in ent_tokens and rng.random() < p_blocked
        ]
        if blocked:
            ref.set_ents([], blocked=blocked, default="unmodified")
    if neg_key is not None and n > 0:
        gold = {(e.start, e.end, e.label_) for e in ents}
        negs: list[Span] = []
        for _ in range(int(rng.integers(0, max_negs + 1))):
            s = int(rng.integers(n))
            e = min(n, s + int(rng.integers(1, max_ent_len + 1)))
            lab = str(labels[int(rng.integers(len(labels)))])
            if (s, e, lab) not in gold:
                negs.append(Span(ref, s, e, label=lab))
        ref.spans[neg_key] = negs
    return Example(doc, ref)


def gold_biluo_tags(example: Example) -> list[str | None]:
    """Per predicted-token gold tags that ``BiluoGold`` is built from.

    ``example.get_aligned_ents_and_ner()[1]``: ``"B-X"``/``"I-X"``/``"L-X"``/``"U-X"``/``"O"``
    or ``None`` (missing; ``lookup_transition`` maps it to the MISSING move).
    """
    return list(example.get_aligned_ents_and_ner()[1])


def gold_negative_spans(example: Example, neg_key: str | None) -> list[tuple[int, int, str]]:
    """Negative spans as ``create_gold_state`` sees them.

    ``example.get_aligned_spans_y2x(example.y.spans[neg_key], allow_overlap=True)``
    as ``(start, end, label)``; ``[]`` without a ``neg_key``.
    """
    if neg_key is None:
        return []
    spans = example.get_aligned_spans_y2x(example.y.spans.get(neg_key, []), allow_overlap=True)
    return [(s.start, s.end, s.label_) for s in spans]


def random_valid_history(
    moves: BiluoPushDown, doc: Doc, rng: np.random.Generator, *, p_out: float = 0.5
) -> list[int]:
    """Walk random valid actions from ``moves.init_batch([doc])[0]`` to the final state.

    At each step ``O`` is taken with prob ``p_out`` when valid, otherwise a
    uniformly random valid class. Raises ``RuntimeError`` if a state has no
    valid action (never happens for docs whose preset labels are in ``moves``).
    """
    names = class_names(moves)
    out_idx = names.index("O")
    state: StateClass = moves.init_batch([doc])[0]
    history: list[int] = []
    while not state.is_final():
        valid = np.flatnonzero(valid_row(moves, state, names))
        if valid.size == 0:
            raise RuntimeError(f"no valid action at token {state.B(0)}")
        if out_idx in valid and rng.random() < p_out:
            clas = out_idx
        else:
            clas = int(rng.choice(valid))
        history.append(clas)
        moves.apply_transition(state, names[clas])
    return history


# ---------------------------------------------------------------------------
# Traces of single histories
# ---------------------------------------------------------------------------


@dataclass
class Trace:
    """Per-step record of walking one history with spaCy's transition system."""

    valid: NDArray[np.bool_]
    """(T, A) validity of every class before step t (``moves.is_valid``)."""
    costs: NDArray[np.float32] | None
    """(T, A) ``moves.get_cost`` (9000 for invalid classes), or None without gold."""
    context_ids: NDArray[np.int32]
    """(T, 3) ``set_context_tokens`` ids (doc-local, offset 0) before step t."""
    ents: list[tuple[int, int, str]]
    """Entities of the history (see :func:`history_to_ents`)."""
    is_final: bool
    """Whether the state is final after the whole history."""


def spacy_trace(
    moves: BiluoPushDown,
    doc: Doc,
    history: Sequence[int],
    gold_example: Example | None = None,
) -> Trace:
    """Replay ``history`` (class indices) from ``moves.init_batch([doc])[0]``.

    Before each step records, for every class ``i``,
    ``moves.is_valid(state, moves.get_class_name(i))`` (the per-class
    ``Transition.is_valid`` of ner.pyx) and, with a gold example,
    ``moves.get_cost(state, gold, i)`` with ``gold = moves.init_gold(state, example)``
    created once from the initial state as ``init_gold_batch`` does (negative
    spans count only if ``moves`` has ``incorrect_spans_key``). Then applies the
    action with ``moves.apply_transition`` (raising ``ValueError`` if invalid,
    which is spaCy's E170). ``gold_example.predicted`` must be ``doc``.
    """
    names = class_names(moves)
    n_moves = len(names)
    state: StateClass = moves.init_batch([doc])[0]
    gold = None
    if gold_example is not None:
        if gold_example.predicted is not doc:
            raise ValueError("gold_example.predicted must be the traced doc")
        gold = moves.init_gold(state, gold_example)
    t_len = len(history)
    valid = np.zeros((t_len, n_moves), dtype=np.bool_)
    costs = np.zeros((t_len, n_moves), dtype=np.float32) if gold is not None else None
    ctx = np.full((t_len, 3), -1, dtype=np.int32)
    for t, clas in enumerate(history):
        if state.is_final():
            raise ValueError(f"history continues past the final state at step {t}")
        valid[t] = valid_row(moves, state, names)
        ctx[t] = context_token_ids(state, 3)
        if costs is not None:
            costs[t] = [moves.get_cost(state, gold, i) for i in range(n_moves)]
        if not valid[t, clas]:
            raise ValueError(f"step {t}: action {names[clas]} is not valid")
        moves.apply_transition(state, names[clas])
    return Trace(
        valid=valid,
        costs=costs,
        context_ids=ctx,
        ents=history_to_ents(moves, history),
        is_final=bool(state.is_final()),
    )


def spacy_oracle(moves: BiluoPushDown, example: Example) -> list[int] | None:
    """``moves.get_oracle_sequence(example)``: the first valid zero-cost class at each step.

    Returns ``[]`` when the example has no gold annotation (``has_gold`` False)
    and ``None`` when spaCy raises E024 (some state has no valid zero-cost
    action; happens when the gold conflicts with presets, whitespace or
    sentence starts of ``example.predicted``).
    """
    try:
        return list(moves.get_oracle_sequence(example))
    except ValueError as err:
        if "E024" in str(err):
            return None
        raise


# ---------------------------------------------------------------------------
# Beam search
# ---------------------------------------------------------------------------


@dataclass
class BeamStep:
    """One ``BeamBatch.advance`` call. Rows follow ``batch.get_unfinished_states()``."""

    scores: NDArray[np.float32]
    """(R, A) the float32 C-contiguous matrix passed to ``advance``."""
    doc_index: NDArray[np.int32]
    """(R,) which doc/beam each row's state belongs to."""
    beam_slot: NDArray[np.int32]
    """(R,) position ``i`` of the state in its beam (``beam.at(i)``)."""
    histories: list[list[int]]
    """History (class indices) of each row's state."""
    context_ids: NDArray[np.int32]
    """(R, 3) batch-global context token ids (``ParserStepModel.get_token_ids``)."""
    valid: NDArray[np.bool_] | None
    """(R, A) validity per row (``record_valid=True``), else None."""


@dataclass
class BeamDocResult:
    """Final state of one doc's ``Beam`` (entries ``0..len(beam)-1``)."""

    histories: list[list[int]]
    scores: list[float]
    probs: list[float]
    parses: list[tuple[float, list[tuple[int, int, str]]]]
    """``moves.get_beam_parses(beam)``: (prob, [(start, end, label)]) per final state."""
    is_done: bool


@dataclass
class BeamRun:
    docs: list[BeamDocResult]
    steps: list[BeamStep] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    """Token offset of each doc in the batch (``init_batch``)."""


def spacy_beam_run(
    moves: BiluoPushDown,
    docs: Sequence[Doc],
    score_fn: ScoreFn,
    width: int,
    density: float = 0.0,
    *,
    record_valid: bool = False,
) -> BeamRun:
    """Run spaCy's beam search with scores from ``score_fn`` and record everything.

    Mirrors ``Parser.beam_parse`` (transition_parser.pyx)::

        batch = BeamBatch(moves, moves.init_batch(docs), None, width, density=density)
        while not batch.is_done:
            states = batch.get_unfinished_states()
            if not states: break
            scores = score_fn(step, states)      # model.predict(states) in spaCy
            batch.advance(scores)

    ``score_fn`` gets the step number and the unfinished ``StateClass`` list and
    returns ``(len(states), moves.n_moves)`` scores (made float32 C-contiguous
    here; that exact matrix is recorded). Rows for a doc are consumed in order
    by that doc's beam (``BeamBatch._set_scores``). Context ids are computed by
    the Python port of ``set_context_tokens`` with the ``init_batch`` offsets.
    """
    doc_list = list(docs)
    names = class_names(moves)
    n_moves = len(names)
    states0 = moves.init_batch(doc_list)
    offsets: list[int] = []
    off = 0
    for d in doc_list:
        offsets.append(off)
        off += len(d)
    batch = BeamBatch(moves, states0, None, width, density=density)
    steps: list[BeamStep] = []
    step = 0
    while not batch.is_done:
        states = batch.get_unfinished_states()
        if not states:
            break
        all_states = batch.get_states()
        doc_idx: list[int] = []
        slots: list[int] = []
        hists: list[list[int]] = []
        ctx: list[list[int]] = []
        pos = 0
        for b, beam in enumerate(batch.beams):
            size = len(beam)
            beam_hists = beam.histories
            for i in range(size):
                st = all_states[pos + i]
                if not st.is_final():
                    doc_idx.append(b)
                    slots.append(i)
                    hists.append(list(beam_hists[i]))
                    ctx.append(context_token_ids(st, 3, offsets[b]))
            pos += size
        if len(doc_idx) != len(states):
            raise AssertionError("row bookkeeping differs from get_unfinished_states()")
        valid = np.stack([valid_row(moves, s, names) for s in states]) if record_valid else None
        scores = np.ascontiguousarray(np.asarray(score_fn(step, states)), dtype=np.float32)
        if scores.shape != (len(states), n_moves):
            raise ValueError(
                f"score_fn returned shape {scores.shape}, expected {(len(states), n_moves)}"
            )
        scores = scores.copy()
        steps.append(
            BeamStep(
                scores=scores,
                doc_index=np.asarray(doc_idx, dtype=np.int32),
                beam_slot=np.asarray(slots, dtype=np.int32),
                histories=hists,
                context_ids=np.asarray(ctx, dtype=np.int32).reshape(len(states), 3),
                valid=valid,
            )
        )
        batch.advance(scores)
        step += 1
    results: list[BeamDocResult] = []
    for beam in batch.beams:
        size = len(beam)
        results.append(
            BeamDocResult(
                histories=[list(h) for h in beam.histories[:size]],
                scores=[float(s) for s in beam.scores],
                probs=[float(p) for p in beam.probs],
                parses=[
                    (float(prob), [(int(s), int(e), str(lab)) for s, e, lab in parse])
                    for prob, parse in moves.get_beam_parses(beam)
                ],
                is_done=bool(beam.is_done),
            )
        )
    return BeamRun(docs=results, steps=steps, offsets=offsets)


def random_score_fn(
    rng: np.random.Generator, n_moves: int, *, scale: float = 1.0, ties: bool = False
) -> ScoreFn:
    """Score function with i.i.d. normal scores (``ties=True``: small integers, many exact ties)."""

    def score_fn(step: int, states: list[StateClass]) -> NDArray[np.float32]:
        shape = (len(states), n_moves)
        if ties:
            return rng.integers(-2, 3, size=shape).astype(np.float32)
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    return score_fn


def replay_score_fn(matrices: Sequence[NDArray[np.float32]]) -> ScoreFn:
    """Score function returning recorded matrices in order (``[s.scores for s in run.steps]``)."""

    def score_fn(step: int, states: list[StateClass]) -> NDArray[np.float32]:
        m = matrices[step]
        if m.shape[0] != len(states):
            raise ValueError(f"step {step}: {len(states)} states but {m.shape[0]} rows recorded")
        return m

    return score_fn


def model_score_fn(nlp: Language, docs: Sequence[Doc], name: str = "ner") -> tuple[ScoreFn, Any]:
    """Real model scores, as ``Parser.beam_parse`` gets them.

    Returns ``(score_fn, step_model)`` where ``step_model = ner.model.predict(docs)``
    (a ``ParserStepModel``; ``step_model.get_token_ids(states)`` gives spaCy's own
    context ids) and ``score_fn`` calls ``step_model.predict(states)``. ``docs``
    must be the same objects, in the same order, as given to :func:`spacy_beam_run`.
    """
    ner: Any = nlp.get_pipe(name)
    step_model = ner.model.predict(list(docs))

    def score_fn(step: int, states: list[StateClass]) -> Any:
        return step_model.predict(states)

    return score_fn, step_model
