"""beamner: a native beam-search engine for spaCy's NER.

The engine (``beamner._core``) implements spaCy 3.8's BILUO transition system,
dynamic-oracle costs and thinc's beam search in C++; this package bridges it
to spaCy pipes and docs.
"""

from beamner._core import BeamBatch, DocBatch, Gold, Parse, TransitionSystem
from beamner._core import __version__ as __version__
from beamner.engine.search import beam_search
from beamner.engine.spacy_inputs import doc_batch, gold, transition_system
from beamner.pipeline import BeamnerEntityRecognizer, accelerate
from beamner.probabilities.beams import entity_scores
from beamner.probabilities.spans import span_distributions

__all__ = [
    "BeamBatch",
    "BeamnerEntityRecognizer",
    "DocBatch",
    "Gold",
    "Parse",
    "TransitionSystem",
    "accelerate",
    "beam_search",
    "doc_batch",
    "entity_scores",
    "gold",
    "span_distributions",
    "transition_system",
]
