"""The README, followed by a new user on a fresh machine: its set-up command's
pieces are there, and every README example runs in a fresh virtual environment
that holds the built wheel, its dependencies and the model, nothing from the
repository (.ci/run makes it in .ci/wheel-check and exports BEAMNER_FRESH_VENV,
that venv's python). Outside CI, without such a venv, the test is skipped and
says so; in CI a missing venv is a failure."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from pathlib import Path

import pytest
from test_docs_examples import DATA, ROOT, parse

FRESH = os.environ.get("BEAMNER_FRESH_VENV")
README = ROOT / "README.md"


def _fresh_python() -> Path:
    if not FRESH:
        if os.environ.get("CI"):
            pytest.fail("CI must export BEAMNER_FRESH_VENV (.ci/run does, from .ci/wheel-check)")
        pytest.skip("no fresh venv (BEAMNER_FRESH_VENV): .ci/run makes one from the wheel")
    python = Path(FRESH)
    assert python.is_file(), f"BEAMNER_FRESH_VENV={FRESH} is not a file"
    return python


def _readme_blocks() -> list[tuple[str, str, str | None]]:
    blocks, errors = parse(README.read_text(encoding="utf-8"), "README.md")
    assert not errors, errors
    return [(b.lang, b.code, b.not_run) for b in blocks]


def test_setup_command_pieces() -> None:
    """The README's one set-up command: every Debian package it names is
    installed here (CI ran it), and every extra it installs exists."""
    setup = [code for lang, code, _ in _readme_blocks() if lang == "bash" and "pip install" in code]
    assert len(setup) == 1, "the README has one set-up command"
    words = shlex.split(setup[0].replace("&&", " && "))
    packages = []
    if "apt-get" in words:
        start = words.index("install", words.index("apt-get"))
        for word in words[start + 1 :]:
            if word == "&&":
                break
            if not word.startswith("-"):
                packages.append(word)
    assert packages, "the set-up command installs the system packages it needs"
    missing = [
        p
        for p in packages
        if subprocess.run(["dpkg", "-s", p], capture_output=True, check=False).returncode != 0
    ]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"not a CI machine: {missing} not installed here")
    assert not missing, f"the README's set-up names packages CI did not install: {missing}"
    extras = set(re.findall(r"\.\[([a-z,]+)\]", setup[0])[0].split(","))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert extras <= set(declared["optional-dependencies"]), extras


def test_readme_examples_run_in_a_fresh_venv(tmp_path: Path) -> None:
    python = _fresh_python()
    examples = [
        code for lang, code, not_run in _readme_blocks() if lang == "python" and not not_run
    ]
    assert examples, "the README has Python examples"
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(DATA, target_is_directory=True)
    root = tmp_path / "repo"
    root.mkdir()
    (root / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["MPLBACKEND"] = "Agg"
    for i, code in enumerate(examples):
        script = root / f"example_{i}.py"
        script.write_text(code, encoding="utf-8")
        result = subprocess.run(
            [str(python), script.name],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, f"README example {i}:\n{code}\n{result.stderr[-3000:]}"
    # The venv is the wheel's, not this checkout.
    where = subprocess.run(
        [str(python), "-c", "import beamner; print(beamner.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert not where.startswith(str(ROOT / "beamner")), where
