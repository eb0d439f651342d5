# cython: language_level=3, boundscheck=False, wraparound=False
"""Real spaCy parse states (StateC inside thinc Beams and StateClass objects)
built from the native search's results, so spaCy's own consumers
(``get_beam_parses``, ``scored_ents``, ``set_annotations``) work unchanged.

Each state is rebuilt by replaying its action history with spaCy's own
transition functions: one C loop per returned parse, no per-step Python.
"""

from thinc.extra.search cimport Beam
from spacy.pipeline._parser_internals.stateclass cimport StateClass
from spacy.pipeline._parser_internals.transition_system cimport TransitionSystem
from spacy.pipeline._parser_internals._state cimport StateC
from spacy.tokens.doc cimport Doc


cdef int _replay(TransitionSystem moves, StateC* state, const int[::1] history) except -1:
    cdef int clas
    cdef Py_ssize_t t
    for t in range(history.shape[0]):
        clas = history[t]
        if clas < 0 or clas >= moves.n_moves:
            raise ValueError(f"action {clas} is not in the transition table ({moves.n_moves} actions)")
        if not moves.c[clas].is_valid(state, moves.c[clas].label):
            raise ValueError(f"action {moves.get_class_name(clas)} is not valid at token {t}")
        moves.c[clas].do(state, moves.c[clas].label)
    return 0


def build_beam(
    TransitionSystem moves,
    Doc doc,
    int offset,
    int width,
    float density,
    const float[::1] scores,
    const int[:, ::1] histories,
):
    """A finished thinc ``Beam`` for ``doc`` holding the given parses (best first),
    as spaCy's ``BeamBatch`` would leave it: states at ``offset``, ``size``
    parses, ``histories`` and ``scores`` set, ``is_done``."""
    cdef Py_ssize_t n = scores.shape[0]
    if n < 1 or n > width:
        raise ValueError(f"a beam of width {width} cannot hold {n} parses")
    if histories.shape[0] != n or histories.shape[1] != doc.length:
        raise ValueError(
            f"histories must have shape ({n}, {doc.length}), got "
            f"({histories.shape[0]}, {histories.shape[1]})"
        )
    cdef Beam beam = Beam(moves.n_moves, width, min_density=density)
    beam.initialize(moves.init_beam_state, moves.del_beam_state, doc.length, <void*>doc.c)
    cdef StateC* state
    cdef Py_ssize_t i
    for i in range(width):
        state = <StateC*>beam.at(i)
        state.offset = offset
    for i in range(n):
        state = <StateC*>beam.at(i)
        _replay(moves, state, histories[i])
        beam._states[i].score = scores[i]
        beam._states[i].loss = 0
        beam._states[i].is_done = state.is_final()
        beam.histories[i] = list(histories[i])
    beam.size = n
    beam.t = doc.length
    beam.is_done = True
    return beam


def build_state(TransitionSystem moves, Doc doc, const int[::1] history, int offset=0):
    """A ``StateClass`` for ``doc`` after ``history``."""
    cdef StateClass state = StateClass(doc, offset=offset)
    _replay(moves, state.c, history)
    return state
