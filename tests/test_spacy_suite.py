"""spaCy 3.8's own tests, from the installed wheel and unchanged, with the
``beam_ner`` factory building beamner's component.

Each path runs in a child ``pytest`` over ``--pyargs spacy.tests.parser.test_ner
spacy.tests.parser.test_add_label`` with the plugin tests/spacy_suite_plugin.py
(factory override, per-test counters of beamner's engine calls). The fused path
runs both files whole; the step-scored path (``fused=False``) runs the tests that
use ``beam_ner`` (the others never reach beamner). A test here fails when a spaCy
test fails or is skipped, when a spaCy test that builds ``beam_ner`` is missing
from the run, or when the counters do not show beamner's native engine serving
every beam search."""

from __future__ import annotations

import ast
import copy
import functools
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import spacy
from spacy_suite_plugin import FUSED_ENV, ONLY_BEAM_NER_ENV, REPORT_ENV

SPACY_TEST_MODULES = ["spacy.tests.parser.test_ner", "spacy.tests.parser.test_add_label"]
SPACY_DIR = Path(spacy.__file__).resolve().parent
SITE_PACKAGES = SPACY_DIR.parent
TESTS_DIR = Path(__file__).resolve().parent
BUILDS_BEAM_NER = re.compile(r"""["']beam_ner["']""")


def _module_path(module: str) -> Path:
    return SITE_PACKAGES.joinpath(*module.split(".")).with_suffix(".py")


@functools.cache
def beam_ner_tests() -> frozenset[str]:
    """The tests of SPACY_TEST_MODULES whose source uses ``beam_ner``, found
    here from the files' syntax trees (independently of the plugin), as
    ``path::name`` node ids."""
    found = set()
    for module_name in SPACY_TEST_MODULES:
        path = _module_path(module_name)
        source = path.read_text(encoding="utf-8")
        rel = path.relative_to(SITE_PACKAGES).as_posix()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                if "beam_ner" in (ast.get_source_segment(source, node) or ""):
                    found.add(f"{rel}::{node.name}")
    return frozenset(found)


def test_every_spacy_test_file_that_builds_beam_ner_is_run() -> None:
    """Every file of spaCy's installed tests that names the ``beam_ner``
    factory is one this suite runs."""
    users = {
        path.relative_to(SITE_PACKAGES).as_posix()
        for path in (SPACY_DIR / "tests").rglob("*.py")
        if BUILDS_BEAM_NER.search(path.read_text(encoding="utf-8"))
    }
    expected = {_module_path(m).relative_to(SITE_PACKAGES).as_posix() for m in SPACY_TEST_MODULES}
    assert users == expected
    assert len(beam_ner_tests()) >= 8


class SuiteRun:
    """One child ``pytest`` over spaCy's test files, started at once and read
    when done (:meth:`report`), so that the two runs share the machine's cores."""

    def __init__(self, tmp_path: Path, *, fused: bool, only_beam_ner: bool) -> None:
        self.report_path = tmp_path / "report.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
        env[FUSED_ENV] = "1" if fused else "0"
        env[ONLY_BEAM_NER_ENV] = "1" if only_beam_ner else "0"
        env[REPORT_ENV] = str(self.report_path)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "spacy_suite_plugin",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "-q",
            "-rfEs",
            "--rootdir",
            str(SITE_PACKAGES),
            "--pyargs",
            *SPACY_TEST_MODULES,
        ]
        # Output to files: a pipe left unread while the other run is awaited could fill up.
        self.stdout_path, self.stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # cwd: an empty folder, so that no pytest configuration of this repository applies.
            self.process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=err)
        self._report: dict[str, Any] | None = None

    def report(self) -> dict[str, Any]:
        if self._report is None:
            try:
                self.process.wait(timeout=900)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            stdout = self.stdout_path.read_text(encoding="utf-8", errors="replace")
            stderr = self.stderr_path.read_text(encoding="utf-8", errors="replace")
            output = stdout[-6000:] + stderr[-3000:]
            report: dict[str, Any] = {
                "returncode": self.process.returncode,
                "output": output,
                "tests": {},
            }
            if self.report_path.exists():
                report.update(json.loads(self.report_path.read_text(encoding="utf-8")))
            self._report = report
        return self._report


def check_report(report: dict[str, Any], *, fused: bool, only_beam_ner: bool) -> None:
    """Raise AssertionError unless the run shows spaCy's tests passing with
    beamner's native engine serving every ``beam_ner``."""
    output = report["output"]
    assert report["returncode"] == 0, f"spaCy's tests failed under beamner:\n{output}"
    assert report.get("fused") is fused, output
    tests: dict[str, Any] = report["tests"]
    outcomes = Counter(t["outcome"] for t in tests.values())
    assert set(outcomes) <= {"passed", "skipped"}, outcomes

    # Every spaCy test that uses beam_ner ran, passed and built beamner's component.
    expected = beam_ner_tests()
    ran_beam_ner = {nodeid.split("[")[0] for nodeid, t in tests.items() if t["mentions_beam_ner"]}
    assert ran_beam_ner == expected
    for nodeid, t in tests.items():
        if t["mentions_beam_ner"]:
            assert t["outcome"] == "passed", nodeid
            assert t["counts"].get("beamner components built", 0) >= 1, nodeid
        else:
            assert not only_beam_ner, nodeid
            assert "beamner components built" not in t["counts"], nodeid
    if not only_beam_ner:
        assert outcomes["passed"] > len(expected)  # the whole files, not only beam_ner's

    # Every beam search of the component went through beamner's native engine,
    # on the requested path only.
    path = "fused" if fused else "step-scored"
    other = "step-scored" if fused else "fused"
    total: Counter[str] = Counter()
    for nodeid, t in tests.items():
        counts = Counter(t["counts"])
        total.update(counts)
        searches = counts[f"native searches ({path})"]
        assert counts[f"native searches ({other})"] == 0, nodeid
        assert searches == counts["predict calls (beam)"] + counts["beam_parse calls"], nodeid
        assert counts["native BeamBatch built"] == searches, nodeid
    assert total[f"native searches ({path})"] >= 5, total
    if fused:
        assert total["fused lower layer precomputed"] == total["native searches (fused)"]
        assert total["step scorers built"] == 0
    else:
        assert total["step scorers built"] == total["native searches (step-scored)"]
        assert total["fused lower layer precomputed"] == 0
    # spaCy's tests read the predictions as Beams (scored_ents) and as parses
    # (nlp(text), set_annotations): both were built from native results.
    assert total["thinc Beams built from native results"] >= 3, total
    assert total["states built from native results"] >= 2, total
    # Global training updates (beam_update_prob=0.5 over dozens of updates) ran natively.
    assert total["native BeamUpdate built"] >= 1, total
    assert total["native BeamUpdate built"] <= total["update_beam calls"], total


@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SuiteRun]]:
    """Both child runs, started together: spaCy's two test files whole with
    beam_ner served by beamner's fused search, and spaCy's beam_ner tests
    served by beamner's step-scored search (fused=False)."""
    runs = {
        "fused": SuiteRun(tmp_path_factory.mktemp("fused"), fused=True, only_beam_ner=False),
        "step": SuiteRun(tmp_path_factory.mktemp("step"), fused=False, only_beam_ner=True),
    }
    yield runs
    for run in runs.values():
        if run.process.poll() is None:  # a test failed before reading it
            run.process.kill()
            run.process.wait()


@pytest.fixture(scope="module")
def fused_run(suite_runs: dict[str, SuiteRun]) -> dict[str, Any]:
    """spaCy's two test files whole, beam_ner served by beamner's fused search."""
    return suite_runs["fused"].report()


@pytest.fixture(scope="module")
def step_run(suite_runs: dict[str, SuiteRun]) -> dict[str, Any]:
    """spaCy's beam_ner tests, served by beamner's step-scored search (fused=False)."""
    return suite_runs["step"].report()


def test_spacy_tests_pass_with_beamner_fused(fused_run: dict[str, Any]) -> None:
    check_report(fused_run, fused=True, only_beam_ner=False)


def test_spacy_beam_ner_tests_pass_with_beamner_step_scored(step_run: dict[str, Any]) -> None:
    check_report(step_run, fused=False, only_beam_ner=True)


def _first_search_test(report: dict[str, Any]) -> str:
    tests: dict[str, Any] = report["tests"]
    return next(n for n, t in tests.items() if t["counts"].get("predict calls (beam)"))


def _without_engine(report: dict[str, Any]) -> dict[str, Any]:
    """The report spaCy's own beam_ner would give: no beamner counts at all."""
    for t in report["tests"].values():
        t["counts"] = {}
    return report


def _other_path(report: dict[str, Any]) -> dict[str, Any]:
    counts = report["tests"][_first_search_test(report)]["counts"]
    counts["native searches (step-scored)"] = counts.pop("native searches (fused)")
    return report


def _skipped_beam_test(report: dict[str, Any]) -> dict[str, Any]:
    report["tests"][_first_search_test(report)]["outcome"] = "skipped"
    return report


def _missing_beam_test(report: dict[str, Any]) -> dict[str, Any]:
    del report["tests"][_first_search_test(report)]
    return report


def _search_not_native(report: dict[str, Any]) -> dict[str, Any]:
    counts = report["tests"][_first_search_test(report)]["counts"]
    counts["predict calls (beam)"] += 1
    return report


def _failed_run(report: dict[str, Any]) -> dict[str, Any]:
    report["returncode"] = 1
    return report


@pytest.mark.parametrize(
    "tamper",
    [
        _without_engine,
        _other_path,
        _skipped_beam_test,
        _missing_beam_test,
        _search_not_native,
        _failed_run,
    ],
)
def test_check_rejects_runs_that_do_not_show_beamner(
    fused_run: dict[str, Any], tamper: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    check_report(fused_run, fused=True, only_beam_ner=False)
    with pytest.raises(AssertionError):
        check_report(tamper(copy.deepcopy(fused_run)), fused=True, only_beam_ner=False)
