"""Finding and loading the pipeline pieces the jobs run."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from spacy.language import Language

__all__ = [
    "damaged_file",
    "find_ner",
    "load_model",
    "mark_derived",
    "ner_name",
    "upstream_disabled",
]


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
    path = Path(model)
    if not path.exists():
        return spacy.load(str(model))  # a package name (spaCy's own E050 when it is none)
    try:
        return spacy.load(path)
    except Exception as err:
        # spaCy's deserializers do not say which file failed: name it.
        broken = damaged_file(path)
        where = f"{broken[0]}: {broken[1]}" if broken else f"{type(err).__name__}: {err}"
        raise ValueError(f"{path}: cannot load the spaCy pipeline ({where})") from err


#: The files of a saved pipeline and how each is encoded.
_MSGPACK_FILES = ("model", "moves", "tokenizer")
_JSON_FILES = ("cfg", "meta.json", "strings.json", "vectors.cfg")


def damaged_file(folder: Path) -> tuple[Path, str] | None:
    """The first file of a saved pipeline that does not decode (truncated,
    emptied, or another format), with the reason; None when all do."""
    import srsly
    from thinc.api import Config

    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        try:
            if path.name in _MSGPACK_FILES:
                srsly.msgpack_loads(path.read_bytes())
            elif path.name in _JSON_FILES:
                srsly.json_loads(path.read_text(encoding="utf-8"))
            elif path.name == "config.cfg":
                Config().from_str(path.read_text(encoding="utf-8"), interpolate=False)
        except Exception as err:
            return path, f"{type(err).__name__}: {err}"[:300]
    return None


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


#: The meta name suffix of a pipeline a command changed, by command.
DERIVED_TAGS = {
    "calibrate": "calibrated",
    "threshold": "certified",
    "teach": "taught",
    "teach-update": "taught",
}


def mark_derived(nlp: Language, command: str) -> None:
    """A pipeline beamner fitted or trained is another pipeline than the one it
    came from: its meta name gets ``_<tag>`` (once; :data:`DERIVED_TAGS`), so
    ``spacy package`` does not build a package that shadows the original."""
    suffix = "_" + DERIVED_TAGS[command]
    name = str(nlp.meta.get("name") or "pipeline")
    if not name.endswith(suffix):
        nlp.meta["name"] = name + suffix
