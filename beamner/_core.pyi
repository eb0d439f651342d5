"""
beamner native core: BILUO transition system and beam search
"""

from __future__ import annotations

import collections.abc
import typing

import numpy
import numpy.typing

__all__: list[str] = [
    "BeamBatch",
    "BeamUpdate",
    "DocBatch",
    "Gold",
    "Parse",
    "TransitionSystem",
    "upper_gemm_kernel",
]

class DocBatch:
    """
    Per-token inputs of many documents, concatenated (see beamner.docs).
    """
    def __init__(
        self,
        ent_iob: numpy.typing.NDArray[numpy.integer],
        ent_type: numpy.typing.NDArray[numpy.integer],
        sent_start: numpy.typing.NDArray[numpy.integer],
        is_space: numpy.typing.NDArray[numpy.integer] | numpy.typing.NDArray[numpy.bool],
        lengths: numpy.typing.NDArray[numpy.integer],
        offsets: numpy.typing.NDArray[numpy.integer] | None = None,
    ) -> None: ...
    @property
    def lengths(self) -> numpy.typing.NDArray[numpy.int32]: ...
    @property
    def n_docs(self) -> int: ...
    @property
    def n_tokens(self) -> int: ...

class Gold:
    """
    Gold actions of one document for the dynamic oracle.
    """
    def __init__(
        self,
        moves: numpy.typing.NDArray[numpy.integer],
        labels: numpy.typing.NDArray[numpy.integer],
        negatives: numpy.typing.NDArray[numpy.integer] | None = None,
        negative_labels: numpy.typing.NDArray[numpy.integer] | None = None,
    ) -> None: ...
    @property
    def n_negatives(self) -> int: ...
    @property
    def n_tokens(self) -> int: ...

class TransitionSystem:
    """
    BILUO action table with spaCy 3.8's validity rules and costs.
    """
    @staticmethod
    def from_labels(labels: numpy.typing.NDArray[numpy.integer]) -> TransitionSystem: ...
    def __init__(
        self,
        moves: numpy.typing.NDArray[numpy.integer],
        labels: numpy.typing.NDArray[numpy.integer],
    ) -> None:
        """
        Actions in class order: move ids (1..5: B, I, L, U, O) and label ids.
        """
    def entities(
        self,
        history: numpy.typing.NDArray[numpy.integer],
        length: typing.SupportsInt | typing.SupportsIndex,
    ) -> list[tuple[int, int, int]]: ...
    def trace(
        self,
        docs: DocBatch,
        doc: typing.SupportsInt | typing.SupportsIndex,
        history: numpy.typing.NDArray[numpy.integer],
        gold: Gold | None = None,
    ) -> tuple[
        numpy.typing.NDArray[numpy.bool],
        numpy.typing.NDArray[numpy.float32] | None,
        numpy.typing.NDArray[numpy.int32],
    ]:
        """
        Walk `history` from the start of document `doc`: (valid, costs or None, context).
        """
    @property
    def labels(self) -> numpy.typing.NDArray[numpy.uint64]: ...
    @property
    def moves(self) -> numpy.typing.NDArray[numpy.uint8]: ...
    @property
    def n_actions(self) -> int: ...

class Parse:
    """
    One parse of a document's final beam.
    """
    def __repr__(self) -> str: ...
    @property
    def entities(self) -> list[tuple[int, int, int]]: ...
    @property
    def history(self) -> numpy.typing.NDArray[numpy.int32]: ...
    @property
    def loss(self) -> float: ...
    @property
    def probability(self) -> float: ...
    @property
    def score(self) -> float: ...

class BeamBatch:
    """
    Beam search over many documents with thinc's Beam semantics.
    """
    def __init__(
        self,
        system: TransitionSystem,
        docs: DocBatch,
        width: typing.SupportsInt | typing.SupportsIndex = 1,
        density: typing.SupportsFloat | typing.SupportsIndex = 0.0,
        golds: collections.abc.Sequence[Gold] | None = None,
        follow_gold: bool = False,
        compact_history: bool = True,
        normalize: str = "none",
    ) -> None: ...
    def advance(self, scores: numpy.typing.NDArray[numpy.float32]) -> None:
        """
        One step with a C-contiguous float32 (n_unfinished, n_actions) score matrix.
        """
    def beam_arrays(
        self, doc: typing.SupportsInt | typing.SupportsIndex
    ) -> tuple[
        numpy.typing.NDArray[numpy.float32],
        numpy.typing.NDArray[numpy.float64],
        numpy.typing.NDArray[numpy.int32],
    ]:
        """
        (scores (k,) float32, probabilities (k,) float64, histories (k, n_tokens) int32).
        """
    def constrain(
        self,
        doc: typing.SupportsInt | typing.SupportsIndex,
        forced: collections.abc.Sequence[
            tuple[
                typing.SupportsInt | typing.SupportsIndex, typing.SupportsInt | typing.SupportsIndex
            ]
        ] = [],
        forbidden: collections.abc.Sequence[
            tuple[
                typing.SupportsInt | typing.SupportsIndex, typing.SupportsInt | typing.SupportsIndex
            ]
        ] = [],
    ) -> None:
        """
        Before the first step: every parse of document `doc` labels each forced (start, end)
        as an entity and no forbidden one (a validity mask applied after normalization, so
        parses keep their unconstrained scores). A document whose constraints no parse can
        meet finishes with no parses (is_infeasible).
        """
    def context_tokens(self) -> numpy.typing.NDArray[numpy.int32]:
        """
        (n_unfinished, 3) int32 context token ids with batch offsets, -1 for padding.
        """
    def costs(self) -> numpy.typing.NDArray[numpy.float32]:
        """
        (n_unfinished, n_actions) float32 oracle costs (9000 for invalid actions).
        """
    def coverage(self, doc: typing.SupportsInt | typing.SupportsIndex) -> float:
        """
        normalize='local' only (else ValueError): the model probability the document's
        final beam holds, sum of exp(score) over its parses.
        """
    def entity_bounds(
        self, doc: typing.SupportsInt | typing.SupportsIndex
    ) -> dict[tuple[int, int, int], tuple[float, float]]:
        """
        normalize='local' only (else ValueError): {(start, end, label): (lower, upper)},
        the interval the entity's marginal under the model lies in: the mass of the beam's
        parses holding it, and that plus 1 - coverage.
        """
    def entity_probabilities(
        self, doc: typing.SupportsInt | typing.SupportsIndex
    ) -> dict[tuple[int, int, int], float]:
        """
        {(start, end, label): probability summed over the beam's parses}.
        """
    def history_nodes(self, doc: typing.SupportsInt | typing.SupportsIndex) -> int:
        """
        History nodes the document's beam holds now (memory diagnostics).
        """
    def is_infeasible(self, doc: typing.SupportsInt | typing.SupportsIndex) -> bool:
        """
        Whether the document's span constraints ruled out every parse.
        """
    def parses(self, doc: typing.SupportsInt | typing.SupportsIndex) -> list[Parse]:
        """
        The document's final beam, best first.
        """
    def run_precomputed(
        self,
        features: numpy.typing.NDArray[numpy.float32],
        lower_bias: numpy.typing.NDArray[numpy.float32],
        upper_W: numpy.typing.NDArray[numpy.float32] | None = None,
        upper_b: numpy.typing.NDArray[numpy.float32] | None = None,
        class_mask: numpy.typing.NDArray[numpy.float32] | None = None,
        use_blis: bool = True,
    ) -> None:
        """
        Run to the end natively, scoring with the precomputed lower layer and the upper
        layer (through thinc's blis sgemm when use_blis, else the linked CBLAS).
        """
    def valid_actions(self) -> numpy.typing.NDArray[numpy.bool]:
        """
        (n_unfinished, n_actions) bool: which actions each unfinished state may take.
        """
    @property
    def density(self) -> float: ...
    @property
    def is_done(self) -> bool: ...
    @property
    def n_actions(self) -> int: ...
    @property
    def n_docs(self) -> int: ...
    @property
    def n_steps(self) -> int: ...
    @property
    def n_unfinished(self) -> int: ...
    @property
    def normalize(self) -> str:
        """
        'none' (raw scores, spaCy's beam) or 'local' (log-softmax over valid actions).
        """
    @property
    def width(self) -> int: ...

class BeamUpdate:
    """
    A global (beam) training update: spaCy's update_beam, natively.
    """
    def __init__(
        self,
        system: TransitionSystem,
        docs: DocBatch,
        golds: collections.abc.Sequence[Gold],
        width: typing.SupportsInt | typing.SupportsIndex,
        density: typing.SupportsFloat | typing.SupportsIndex = 0.0,
    ) -> None: ...
    def advance(self, scores: numpy.typing.NDArray[numpy.float32]) -> None:
        """
        Advance both beams with the prepared rows' scores.
        """
    def gradient(
        self, step: typing.SupportsInt | typing.SupportsIndex
    ) -> numpy.typing.NDArray[numpy.float32]:
        """
        d_loss/d_scores of a step, (n_rows, n_actions) float32.
        """
    def prepare_step(self) -> numpy.typing.NDArray[numpy.int32]:
        """
        Collect the step's unique states; returns their (n_rows, 3) context token ids.
        """
    @property
    def is_done(self) -> bool: ...
    @property
    def n_gradient_steps(self) -> int: ...

def upper_gemm_kernel(upper_W: numpy.typing.NDArray[numpy.float32], use_blis: bool = True) -> str:
    """
    The GEMM BeamBatch.run_precomputed uses for this (n_classes, nO) upper_W: 'blis',
    'cblas', or 'sequential-<isa>' (beamner's kernel, chosen where it gives blis' result
    bit for bit on this CPU).
    """

__version__: str = "0.1.0"
