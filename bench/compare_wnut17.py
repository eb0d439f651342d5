"""``beamner compare`` on two real models: greedy ``ner`` (A) vs globally trained
``beamner_ner`` (B), both trained from scratch on WNUT-17 train with
configs/wnut17_beamner.cfg (same seed and steps; only the factory differs, as in
bench/train_wnut17.py), compared on WNUT-17 test (and dev) with paired-bootstrap
intervals of B - A.

    nice -n 10 python bench/compare_wnut17.py [--max-steps 2000] [--seed 0]

Models go to training/compare-ab/ (reused when already there); results to
bench/results/compare_wnut17.json; a Markdown table for the README is printed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import spacy
from spacy.cli.train import train

from beamner.evaluation.compare import compare

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wnut17"
FACTORIES = {"A": "ner", "B": "beamner_ner"}


def train_model(factory: str, seed: int, max_steps: int, out: Path) -> float:
    """Train with the repository config (only factory, seed and steps changed);
    seconds taken (0 when the model was already there)."""
    if (out / "model-last" / "meta.json").exists():
        return 0.0
    cfg = spacy.util.load_config(
        ROOT / "configs" / "wnut17_beamner.cfg",
        overrides={
            "components.ner.factory": factory,
            "system.seed": seed,
            "training.max_steps": max_steps,
            "training.eval_frequency": max_steps,
            "paths.train": str(DATA / "wnut17train.conll"),
            "paths.dev": str(DATA / "emerging.dev.conll"),
        },
    )
    if factory == "ner":  # keys the greedy factory does not take
        for key in ("beam_width", "beam_density", "beam_update_prob"):
            cfg["components"]["ner"].pop(key, None)
    if factory != "beamner_ner":
        for key in ("spans_key", "span_threshold", "fused"):
            cfg["components"]["ner"].pop(key, None)
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_disk(out / "config.cfg")
    start = time.perf_counter()
    train(out / "config.cfg", out, use_gpu=-1)
    return time.perf_counter() - start


def table(report: dict[str, Any]) -> str:
    rows = [
        "| | gold | F1 A (greedy) | F1 B (beam) | ΔF1 B-A [95% CI] | ΔP [95% CI] | ΔR [95% CI] "
        "| resamples B ≤ A |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    items = [("**overall**", report["overall"]), *sorted(report["labels"].items())]
    for label, row in items:
        d = row["diff"]

        def ci(metric: str, d: dict[str, Any] = d) -> str:
            m = d[metric]
            return f"{m['value']:+.3f} [{m['low']:+.3f}, {m['high']:+.3f}]"

        rows.append(
            f"| {label} | {row['n_gold']} | {row['a']['f1']:.3f} | {row['b']['f1']:.3f} "
            f"| {ci('f1')} | {ci('precision')} | {ci('recall')} | {d['f1']['b_not_better']:.3f} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--models", type=Path, default=ROOT / "training" / "compare-ab")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "bench" / "results" / "compare_wnut17.json"
    )
    args = parser.parse_args()
    paths: dict[str, Path] = {}
    train_seconds: dict[str, float] = {}
    for side, factory in FACTORIES.items():
        out = args.models / f"{factory}-{args.seed}-{args.max_steps}"
        train_seconds[side] = train_model(factory, args.seed, args.max_steps, out)
        paths[side] = out / "model-last"
    results: dict[str, Any] = {
        "max_steps": args.max_steps,
        "seed": args.seed,
        "models": {side: FACTORIES[side] for side in FACTORIES},
        "train_seconds": train_seconds,
    }
    for split, path in (("test", "emerging.test.annotated"), ("dev", "emerging.dev.conll")):
        start = time.perf_counter()
        report = compare(
            paths["A"], paths["B"], DATA / path, n_resamples=args.resamples, seed=args.seed
        )
        report["seconds"] = time.perf_counter() - start
        results[split] = report
        print(f"## {split} ({report['n_docs']} sentences, {report['seconds']:.1f} s)")
        print(table(report))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
