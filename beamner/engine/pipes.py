"""Finding and loading the pipeline pieces the jobs run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spacy.language import Language

__all__ = ["find_ner", "load_model", "ner_name", "upstream_disabled"]


def find_ner(nlp_or_pipe: Any) -> Any:
    """The NER pipe itself, or the first entity recognizer of a pipeline."""
    if hasattr(nlp_or_pipe, "moves"):
        return nlp_or_pipe
    from spacy.pipeline import EntityRecognizer

    for _, pipe in getattr(nlp_or_pipe, "components", []):
        if isinstance(pipe, EntityRecognizer):
            return pipe
    raise ValueError(f"no entity recognizer in {type(nlp_or_pipe).__name__}")


def load_model(model: str | os.PathLike[str] | Language, gpu_id: int = -1) -> Language:
    """``spacy.load`` (package name or path), on GPU ``gpu_id`` when >= 0."""
    import spacy
    from thinc.api import require_gpu

    if isinstance(model, Language):
        return model
    if gpu_id >= 0:
        require_gpu(gpu_id)  # what spacy.require_gpu is
    return spacy.load(model if isinstance(model, str) else Path(model))


def ner_name(nlp: Language) -> str:
    """Name of the pipeline's (first) entity recognizer."""
    pipe = find_ner(nlp)
    for name, component in nlp.components:
        if component is pipe:
            return str(name)
    raise ValueError("entity recognizer not found among the components")  # pragma: no cover


def upstream_disabled(nlp: Language) -> list[str]:
    """Components to disable to run everything before the NER."""
    names = list(nlp.pipe_names)
    return names[names.index(ner_name(nlp)) :]
