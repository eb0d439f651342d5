"""Every code example in README.md and docs/**/*.md runs as written.

Each ```python and ```bash block runs in a fresh process, in a scratch directory of
its own that stands in for the repository root: ``../shared/data`` is linked to the
corpora (``BEAMNER_DATA`` overrides, as in conftest.py) and ``examples/`` to the
repository's, so a block needs exactly the set-up it shows. A block that must not run
here (it installs system packages, starts a server, trains for minutes) carries an HTML
comment right before it, ``<!-- not-run: why -->``; a marker without a reason, a marker
before no code block, an unlabelled fence or a language that is neither run nor output
fails the collection test, so no example escapes silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BEAMNER_DATA", ROOT.parent / "shared" / "data"))
RUN = {"python": (sys.executable, "example.py"), "bash": ("bash", "example.sh")}
# Fences that are not commands: program output, and CMake fragments of a consumer's project.
NOT_CODE = {"text", "json", "cmake"}
FENCE = re.compile(r"^(`{3,})(.*)$")
NOT_RUN = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
# The repository's directories an example may read (never write) from the scratch root.
LINKED = ("examples",)
TIMEOUT_S = 300


@dataclass(frozen=True)
class Block:
    page: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason, when marked

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def parse(text: str, rel: str) -> tuple[list[Block], list[str]]:
    """The fenced blocks of one Markdown page, and what is wrong with its markers."""
    lines = text.splitlines()
    blocks: list[Block] = []
    errors: list[str] = []
    used_markers: set[int] = set()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        ticks, lang = opening.group(1), opening.group(2).strip()
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == ticks), len(lines))
        if end == len(lines):
            errors.append(f"{rel}:{i + 1}: fence never closed")
        reason = None
        before = i - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = NOT_RUN.match(lines[before].strip()) if before >= 0 else None
        if marker:
            used_markers.add(before)
            reason = marker.group(1).strip()
            if not reason:
                errors.append(f"{rel}:{before + 1}: not-run marker without a reason")
        if not lang:
            errors.append(f"{rel}:{i + 1}: code block without a language")
        elif lang not in RUN and lang not in NOT_CODE:
            errors.append(f"{rel}:{i + 1}: {lang!r} block: neither run ({sorted(RUN)}) nor output")
        elif lang in NOT_CODE and marker:
            errors.append(f"{rel}:{before + 1}: not-run marker before a {lang!r} block")
        blocks.append(Block(rel, i + 1, lang, "\n".join(lines[i + 1 : end]) + "\n", reason))
        i = end + 1
    for n, line in enumerate(lines):
        if NOT_RUN.match(line.strip()) and n not in used_markers:
            errors.append(f"{rel}:{n + 1}: not-run marker before no code block")
    return blocks, errors


def all_blocks() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    errors: list[str] = []
    for path in markdown_files():
        found, wrong = parse(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
        blocks += found
        errors += wrong
    return blocks, errors


BLOCKS, ERRORS = all_blocks()
# A block repeated verbatim (the main job on README and the site's front page) runs once.
_FIRST: dict[tuple[str, str], Block] = {}
for _block in BLOCKS:
    if _block.lang in RUN and _block.not_run is None:
        _FIRST.setdefault((_block.lang, _block.code), _block)
RUNNABLE = list(_FIRST.values())
SKIPPED = [b for b in BLOCKS if b.lang in RUN and b.not_run is not None]


def test_every_example_is_run_or_says_why_not() -> None:
    assert not ERRORS, "\n".join(ERRORS)
    # The pages this test exists for: a parser that finds nothing would pass vacuously.
    files = {b.page for b in RUNNABLE}
    for page in ("README.md", "docs/guide/probabilities.md", "docs/guide/cluster.md"):
        assert page in files, f"no runnable example found in {page}"
    assert all(b.not_run for b in SKIPPED)
    print(f"{len(RUNNABLE)} examples run, {len(SKIPPED)} marked not-run:")
    for b in SKIPPED:
        print(f"  {b.name}: {b.not_run}")


def test_parser_finds_markers_and_their_mistakes() -> None:
    text = (
        "<!-- not-run: slow -->\n```bash\nsleep 1000\n```\n\n"
        "<!-- not-run: -->\n```python\npass\n```\n\n"
        "<!-- not-run: dangling -->\n\ntext\n\n"
        "```\nno language\n```\n\n```sh\necho\n```\n\n```python\nprint(1)\n```\n"
    )
    blocks, errors = parse(text, "probe.md")
    assert [(b.lang, b.not_run) for b in blocks] == [
        ("bash", "slow"),
        ("python", ""),
        ("", None),
        ("sh", None),
        ("python", None),
    ]
    assert [e.split(": ", 1)[1] for e in errors] == [
        "not-run marker without a reason",
        "code block without a language",
        "'sh' block: neither run (['bash', 'python']) nor output",
        "not-run marker before no code block",
    ]


def test_command_guide_lists_every_command() -> None:
    """The guide's table of commands is the command's own list (the reference is generated)."""
    import typer

    from beamner.cli.app import app

    registered = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    guide = (ROOT / "docs" / "guide" / "cli.md").read_text(encoding="utf-8")
    listed = {
        name.strip()
        for row in re.findall(r"^\| (`[^|]+`) \|", guide, re.M)
        for name in row.replace("`", "").split(",")
    }
    assert listed == registered, (
        f"docs/guide/cli.md lists {sorted(listed - registered)} that do not exist and misses "
        f"{sorted(registered - listed)}"
    )


@pytest.fixture
def scratch_root(tmp_path: Path) -> Path:
    """A stand-in for the repository root: ../shared/data and examples/ linked."""
    if not DATA.is_dir():
        raise FileNotFoundError(f"{DATA} is missing: the examples need the corpora")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(DATA, target_is_directory=True)
    root = tmp_path / "repo"
    root.mkdir()
    for name in LINKED:
        (root / name).symlink_to(ROOT / name, target_is_directory=True)
    return root


@pytest.mark.parametrize("block", RUNNABLE, ids=[b.name for b in RUNNABLE])
def test_example_runs(block: Block, scratch_root: Path) -> None:
    program, script = RUN[block.lang]
    (scratch_root / script).write_text(block.code, encoding="utf-8")
    env = dict(os.environ)
    # `python` and `beamner` in a bash example are this interpreter's.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["MPLBACKEND"] = "Agg"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    args = [program, script] if block.lang == "python" else [program, "-euo", "pipefail", script]
    result = subprocess.run(
        args,
        cwd=scratch_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, (
        f"{block.name} exited with {result.returncode}\n--- code\n{block.code}"
        f"--- stdout (tail)\n{result.stdout[-3000:]}\n--- stderr (tail)\n{result.stderr[-6000:]}"
    )
