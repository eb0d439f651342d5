"""Peak memory of a 10k-document stream, spaCy's beam vs beamner at width 16.

One subprocess per engine (``stream_memory.py``), both started together: the
high-water mark (VmHWM) is per process, so running them side by side does not
mix their memory, and the pair takes the time of the slower one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import EXTRA

SCRIPT = Path(__file__).resolve().parent / "stream_memory.py"
N_DOCS = 10_000
WIDTH = 16
DENSITY = 0.0001
BATCH_SIZE = 256


def test_streaming_memory() -> None:
    command = [
        sys.executable,
        str(SCRIPT),
        "--n-docs",
        str(N_DOCS),
        "--width",
        str(WIDTH),
        "--density",
        str(DENSITY),
        "--batch-size",
        str(BATCH_SIZE),
    ]
    procs = {
        engine: subprocess.Popen([*command[:2], engine, *command[2:]], stdout=subprocess.PIPE)
        for engine in ("spacy", "beamner")
    }
    results = {}
    for engine, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{engine} stream failed"
        results[engine] = json.loads(out)
    assert results["spacy"]["n_ents"] == results["beamner"]["n_ents"]
    EXTRA["memory"] = {
        **results,
        "n_docs": N_DOCS,
        "width": WIDTH,
        "density": DENSITY,
        "batch_size": BATCH_SIZE,
        "flat_tolerance_mib": 20.0,
        "description": "tweets: WNUT-17 train then BTC a, b, e, f, g, h, one sentence a "
        "document, cycled",
    }
