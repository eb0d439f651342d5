"""What an fsync per answer costs ``beamner teach`` (issue #20).

    python bench/teach_fsync.py [--answers 2000] [--dir DIR] [--repeats 2]

Two measurements, each with and without ``os.fsync`` after every answer line:

* ``server``: the load test of tests/test_teach_page.py (two clients post
  ``--answers`` answers in all, as fast as they can, to a real uvicorn on
  127.0.0.1; random order, a model update every 50 answers; each answer's
  response carries the next task, scored by the beam), answers per second.
* ``append``: :meth:`DatasetFile.append` alone, ``--answers`` lines: the
  write path without the server, microseconds per answer.

The dataset files are written under ``--dir`` (default: the system's temp
folder; its filesystem type is printed: fsync on tmpfs costs nothing). The
model is the tests' small greedy WNUT-17 model (tests/trained_models.py),
trained here in a few seconds. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

LABELS = ["person", "location", "corporation", "group", "product", "creative-work"]


def build_model(folder: Path) -> Path:
    from trained_models import train_pipeline

    nlp = train_pipeline("greedy", n_sentences=400, n_iter=3)
    nlp.remove_pipe("entity_ruler")
    path = folder / "greedy"
    nlp.to_disk(path)
    return path


def build_source(folder: Path) -> Path:
    from conftest import DATA

    from beamner.io.conll import read_conll

    sentences = [
        *read_conll(DATA / "wnut17" / "wnut17train.conll")[400:],
        *read_conll(DATA / "wnut17" / "emerging.dev.conll"),
        *read_conll(DATA / "wnut17" / "emerging.test.annotated"),
    ]
    path = folder / "source.jsonl"
    path.write_text(
        "".join(json.dumps({"text": " ".join(t for t, _ in s)}) + "\n" for s in sentences)
    )
    return path


def server_run(model: Path, source: Path, folder: Path, n_answers: int, fsync: bool) -> float:
    """Answers per second of two clients against a real server."""
    import httpx
    import spacy

    from beamner.teach.server import TeachServer, bind_socket, uvicorn_server
    from beamner.teach.session import TeachSession

    session = TeachSession(
        spacy.load(model),
        source,
        LABELS,
        order="random",
        beam_width=8,
        buffer=32,
        batch_size=2,
        threshold=0.02,
    )
    dataset = folder / f"answers-{'fsync' if fsync else 'flush'}-{time.monotonic_ns()}.jsonl"
    server = TeachServer(
        session, dataset, update_every=50, save_every=10**9, output=folder / "model", fsync=fsync
    )
    sock = bind_socket("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    uv = uvicorn_server(server, sock)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.02)
    failures: list[str] = []

    def client(name: str, n: int) -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            task = http.post("/api/next", json={"client": name}).json()["task"]
            for i in range(n):
                body = {"client": name, "task_hash": task["_task_hash"], "answer": "ignore"}
                r = http.post("/api/answer", json=body)
                if r.status_code != 200 or r.json()["task"] is None:
                    failures.append(f"{name} {i}: {r.status_code} {r.text[:200]}")
                    return
                task = r.json()["task"]

    threads = [threading.Thread(target=client, args=(n, n_answers // 2)) for n in ("a", "b")]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    uv.should_exit = True
    thread.join(300)
    sock.close()
    if failures:
        raise RuntimeError(failures[:3])
    n_lines = len(dataset.read_text().splitlines())
    if n_lines != n_answers:
        raise RuntimeError(f"{n_lines} lines written, {n_answers} expected")
    return n_answers / seconds


def append_run(folder: Path, n_answers: int, fsync: bool) -> float:
    """Microseconds per DatasetFile.append (a task-sized answer line)."""
    from beamner.teach.server import DatasetFile

    answer: dict[str, Any] = {
        "text": "Visiting New York with Taylor Swift on Tuesday " * 3,
        "spans": [{"start": 9, "end": 17, "token_start": 1, "token_end": 2, "label": "location"}],
        "tokens": [{"text": "w", "start": i, "end": i + 1, "id": i, "ws": True} for i in range(24)],
        "meta": {"score": 0.5, "uncertainty": 1.0, "line": 1, "model_version": 0},
        "_input_hash": 1,
        "_task_hash": 2,
        "answer": "accept",
    }
    path = folder / f"append-{'fsync' if fsync else 'flush'}-{time.monotonic_ns()}.jsonl"
    dataset = DatasetFile(path, fsync=fsync)
    start = time.perf_counter()
    for _ in range(n_answers):
        dataset.append(answer)
    seconds = time.perf_counter() - start
    dataset.close()
    return 1e6 * seconds / n_answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    fs = subprocess.run(
        ["stat", "-f", "-c", "%T", str(args.dir)], capture_output=True, text=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        model, source = build_model(folder), build_source(folder)
        results: dict[str, Any] = {
            "answers": args.answers,
            "dir": str(args.dir),
            "filesystem": fs,
            "server_answers_per_s": {"fsync": [], "flush": []},
            "append_us_per_answer": {"fsync": [], "flush": []},
        }
        for _ in range(args.repeats):  # alternated, so drifts in load hit both alike
            for fsync in (True, False):
                key = "fsync" if fsync else "flush"
                rate = server_run(model, source, folder, args.answers, fsync)
                results["server_answers_per_s"][key].append(round(rate, 1))
                us = append_run(folder, args.answers, fsync)
                results["append_us_per_answer"][key].append(round(us, 1))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
