"""Engine-level memory over long inputs, in a fresh process (run by
tests/test_hardening.py; RSS only means something before other work has
grown the heap).

    python bench/engine_memory.py stream [--n-docs 100000] [--width 4]
    python bench/engine_memory.py long-doc [--n-tokens 100000] [--width 16]

``stream``: short synthetic docs (1..29 tokens) through BeamBatch/advance in
batches of 100 with random scores, parses and entity probabilities read back.
``long-doc``: one document of ``--n-tokens`` tokens, advanced step by step with
random scores; the beam's history is compacted as it goes, so it holds the
surviving paths (about length + width nodes), not every expansion (length *
width). Prints one JSON object: VmRSS (MiB) at checkpoints, VmHWM, the most
history nodes held at once, time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import beamner

SYSTEM = beamner.TransitionSystem.from_labels(np.array([11, 22, 33, 44], dtype=np.uint64))


def status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no {field} in /proc/self/status")


def docs(lengths: np.ndarray) -> beamner.DocBatch:
    n = int(lengths.sum())
    z = np.zeros(n, dtype=np.int8)
    return beamner.DocBatch(
        z, np.zeros(n, dtype=np.uint64), z, z.view(np.uint8), lengths.astype(np.int32)
    )


def stream(n_docs: int, width: int, batch_docs: int = 100) -> dict[str, object]:
    rng = np.random.default_rng(3)
    checkpoints: dict[int, float] = {0: status_mib("VmRSS")}
    t0 = time.perf_counter()
    for b in range(n_docs // batch_docs):
        batch = beamner.BeamBatch(SYSTEM, docs(rng.integers(1, 30, size=batch_docs)), width, 0.001)
        while batch.n_unfinished:
            scores = rng.standard_normal((batch.n_unfinished, batch.n_actions))
            batch.advance(scores.astype(np.float32))
        for d in range(0, batch_docs, 37):
            batch.parses(d)
            batch.entity_probabilities(d)
        done = (b + 1) * batch_docs
        if done % (n_docs // 10) == 0:
            checkpoints[done] = status_mib("VmRSS")
    return {
        "mode": "stream",
        "n_docs": n_docs,
        "width": width,
        "seconds": time.perf_counter() - t0,
        "rss_mib": checkpoints,
        "hwm_mib": status_mib("VmHWM"),
    }


def long_doc(n_tokens: int, width: int) -> dict[str, object]:
    rng = np.random.default_rng(5)
    checkpoints: dict[int, float] = {0: status_mib("VmRSS")}
    batch = beamner.BeamBatch(SYSTEM, docs(np.array([n_tokens])), width, 0.0)
    block = rng.standard_normal((64, width, batch.n_actions)).astype(np.float32)
    t0 = time.perf_counter()
    max_nodes = 0
    for step in range(n_tokens):
        batch.advance(block[step % 64, : batch.n_unfinished])
        max_nodes = max(max_nodes, batch.history_nodes(0))
        if (step + 1) % (n_tokens // 10) == 0:
            checkpoints[step + 1] = status_mib("VmRSS")
    seconds = time.perf_counter() - t0
    parses = batch.parses(0)
    checkpoints[-1] = status_mib("VmRSS")  # after reading the k histories back
    assert batch.is_done and all(len(p.history) == n_tokens for p in parses)
    return {
        "mode": "long-doc",
        "n_tokens": n_tokens,
        "width": width,
        "seconds": seconds,
        "rss_mib": checkpoints,
        "hwm_mib": status_mib("VmHWM"),
        "max_history_nodes": max_nodes,
        "n_parses": len(parses),
        "prob_sum": sum(p.probability for p in parses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["stream", "long-doc"])
    parser.add_argument("--n-docs", type=int, default=100_000)
    parser.add_argument("--n-tokens", type=int, default=100_000)
    parser.add_argument("--width", type=int, default=None)
    args = parser.parse_args()
    if args.mode == "stream":
        result = stream(args.n_docs, args.width or 4)
    else:
        result = long_doc(args.n_tokens, args.width or 16)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
