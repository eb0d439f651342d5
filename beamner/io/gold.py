"""Gold data for evaluation, calibration and comparison.

Formats (``fmt="auto"`` picks by extension): ``.spacy`` DocBin (its
``doc.ents``), ``.jsonl``/``.json`` (``{"text", "spans": [{"start", "end",
"label"}]}``, character offsets, or ``token_start``/``token_end`` inclusive,
Prodigy's convention; tokenized by the model unless Prodigy-style ``"tokens"``
``[{"text", "ws"}]`` are given), anything else CoNLL/IOB (``token TAB tag``,
blank line between sentences; :func:`beamner.io.conll.read_conll`).

An entity is ``(token_start, token_end, label)``. A label map
(``{"PERSON": "PER", ...}``) renames predicted labels to the gold ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from spacy.language import Language
from spacy.tokens import Doc, DocBin

from beamner.io.conll import documents_to_docs, group_into_documents, read_conll
from beamner.io.records import text_lines

__all__ = [
    "LABEL_MAPS",
    "Entity",
    "GoldDoc",
    "check_label_overlap",
    "parse_label_map",
    "read_gold",
]

Entity = tuple[int, int, str]

#: Built-in label maps from spaCy's OntoNotes labels (every en_core_web_*
#: model) to common corpora's: ``--label-map conll`` (CoNLL-2003, and the
#: Broad Twitter Corpus, which uses its PER/LOC/ORG), ``--label-map wnut17``.
LABEL_MAPS: dict[str, dict[str, str]] = {
    "conll": {
        "PERSON": "PER",
        "GPE": "LOC",
        "LOC": "LOC",
        "FAC": "LOC",
        "ORG": "ORG",
        "NORP": "MISC",
        "EVENT": "MISC",
        "WORK_OF_ART": "MISC",
        "PRODUCT": "MISC",
        "LANGUAGE": "MISC",
        "LAW": "MISC",
    },
    "btc": {"PERSON": "PER", "GPE": "LOC", "LOC": "LOC", "FAC": "LOC", "ORG": "ORG"},
    "wnut17": {
        "PERSON": "person",
        "GPE": "location",
        "LOC": "location",
        "FAC": "location",
        "ORG": "corporation",
        "PRODUCT": "product",
        "WORK_OF_ART": "creative-work",
        "NORP": "group",
    },
}


@dataclass
class GoldDoc:
    """An unannotated doc (the model's vocab) and its gold entities."""

    doc: Doc
    gold: set[Entity]


def _fresh(nlp: Language, doc: Doc) -> Doc:
    return Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])


def read_gold(
    path: str | os.PathLike[str],
    nlp: Language,
    fmt: str = "auto",
    *,
    sentences_per_doc: int = 1,
) -> list[GoldDoc]:
    """Gold docs from a CoNLL/IOB file, a ``.spacy`` DocBin or JSONL with spans."""
    suffix = Path(path).suffix.lower()
    if fmt == "auto":
        fmt = {".spacy": "spacy", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix, "conll")
    if fmt == "conll":
        groups = group_into_documents(read_conll(path), sentences_per_doc)
        docs = documents_to_docs(nlp, groups, with_ents=True)
    elif fmt == "spacy":
        docs = list(DocBin().from_disk(Path(path)).get_docs(nlp.vocab))
    elif fmt == "jsonl":
        return list(_read_gold_jsonl(path, nlp))
    else:
        raise ValueError(f"gold format must be auto, conll, spacy or jsonl, got {fmt!r}")
    return [GoldDoc(_fresh(nlp, d), {(e.start, e.end, e.label_) for e in d.ents}) for d in docs]


def _read_gold_jsonl(path: str | os.PathLike[str], nlp: Language) -> Iterator[GoldDoc]:
    for lineno, line in text_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            text = obj["text"]
            if "tokens" in obj:  # Prodigy's tokens: keep the tokenization
                words = [str(t["text"]) for t in obj["tokens"]]
                spaces = [bool(t.get("ws", True)) for t in obj["tokens"]]
                doc = Doc(nlp.vocab, words=words, spaces=spaces)
                if doc.text != text:
                    raise ValueError("the tokens do not spell the text")
            else:
                doc = nlp.make_doc(text)
            gold: set[Entity] = set()
            for span in obj.get("spans", []):
                if "token_start" in span and "token_end" in span:
                    start, end = int(span["token_start"]), int(span["token_end"]) + 1
                else:
                    char_span = doc.char_span(span["start"], span["end"], alignment_mode="expand")
                    if char_span is None:
                        raise ValueError(f"span {span} is not inside the text")
                    start, end = char_span.start, char_span.end
                if not 0 <= start < end <= len(doc):
                    raise ValueError(f"span {span} is out of range")
                gold.add((start, end, str(span["label"])))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}:{lineno}: bad gold record: {err}") from None
        yield GoldDoc(doc, gold)


def parse_label_map(spec: str | dict[str, str] | None) -> dict[str, str] | None:
    """``"PERSON=PER,GPE=LOC"`` -> ``{"PERSON": "PER", "GPE": "LOC"}``; a name
    of :data:`LABEL_MAPS` (``"conll"``, ``"btc"``, ``"wnut17"``) -> that map."""
    if spec is None or isinstance(spec, dict):
        return spec
    if spec.strip() in LABEL_MAPS:
        return dict(LABEL_MAPS[spec.strip()])
    if "=" not in spec:
        raise ValueError(
            f"label map {spec!r} is neither PRED=GOLD,... nor a built-in map "
            f"({', '.join(sorted(LABEL_MAPS))})"
        )
    out: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"label map entries are PRED=GOLD, got {item!r}")
        out[src.strip()] = dst.strip()
    return out


def check_label_overlap(
    model_labels: Iterable[str], gold_docs: Iterable[GoldDoc], label_map: dict[str, str] | None
) -> None:
    """ValueError when no predicted label (after ``label_map``) is a gold
    label: every score would be 0 for a reason no number shows. The message
    names both label sets and suggests ``--label-map``."""
    gold_labels = {label for g in gold_docs for _, _, label in g.gold}
    if not gold_labels:
        return
    predicted = set(model_labels)
    if label_map is not None:
        predicted = {label_map[label] for label in predicted if label in label_map}
    if predicted & gold_labels:
        return
    hint = ", ".join(sorted(LABEL_MAPS))
    raise ValueError(
        f"no label of the model ({', '.join(sorted(predicted)) or 'none after the label map'}) "
        f"is a gold label ({', '.join(sorted(gold_labels))}): every score would be 0. "
        f"Map them with --label-map PRED=GOLD,... or a built-in map ({hint})"
    )
