"""The results page's measured tables are the bench scripts' output, not typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_throughput_table_is_generated_from_its_json() -> None:
    table = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "pipeline_throughput.py"),
            "--markdown",
            str(ROOT / "bench" / "results" / "pipeline_throughput.json"),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert table.count("\n") == 10  # header, rule, nine cases
    assert table in (ROOT / "docs" / "results.md").read_text()
