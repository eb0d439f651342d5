"""Typed stub of beamner/_spacy_states.pyx (Cython)."""

from typing import Any

import numpy
from numpy.typing import NDArray

def build_beam(
    moves: Any,
    doc: Any,
    offset: int,
    width: int,
    density: float,
    scores: NDArray[numpy.float32],
    histories: NDArray[numpy.int32],
) -> Any: ...
def build_state(moves: Any, doc: Any, history: NDArray[numpy.int32], offset: int = 0) -> Any: ...
