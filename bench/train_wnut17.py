"""Train greedy ``ner``, spaCy's ``beam_ner`` and ``beamner_ner`` from scratch on
WNUT-17 with the same config, seed and steps; report training speed, F1 on
dev and test, and the calibration of beam entity probabilities on test.

    python bench/train_wnut17.py [--max-steps 2000] [--seeds 0 1 2] [--output training/compare]

Writes ``<output>/compare.json`` (per seed, and mean/std over seeds). Uses
configs/wnut17_beamner.cfg, changing only the factory and the seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy
import spacy
from spacy.cli.train import train
from spacy.training import Example

import beamner
from beamner.io.conll import conll_to_docs, read_conll

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wnut17"
FACTORIES = {"greedy ner": "ner", "spaCy beam_ner": "beam_ner", "beamner_ner": "beamner_ner"}


def calibration(probs: list[float], correct: list[bool], n_bins: int = 10) -> dict[str, object]:
    p = numpy.asarray(probs)
    y = numpy.asarray(correct, dtype=float)
    bins = numpy.minimum((p * n_bins).astype(int), n_bins - 1)
    table = []
    ece = 0.0
    for b in range(n_bins):
        sel = bins == b
        if sel.any():
            conf, acc = float(p[sel].mean()), float(y[sel].mean())
            ece += sel.sum() / len(p) * abs(conf - acc)
            table.append(
                {
                    "bin": f"{b / n_bins:.1f}-{(b + 1) / n_bins:.1f}",
                    "n": int(sel.sum()),
                    "mean_prob": round(conf, 3),
                    "precision": round(acc, 3),
                }
            )
    return {"ece": ece, "brier": float(((p - y) ** 2).mean()), "n": len(p), "table": table}


def evaluate(nlp: spacy.Language, path: Path, width: int = 16) -> dict[str, object]:
    gold = conll_to_docs(nlp, read_conll(path), with_ents=True)
    examples = [Example(nlp.make_doc(doc.text), doc) for doc in gold]
    scores = nlp.evaluate(examples)
    docs = [nlp.make_doc(doc.text) for doc in gold]
    probs, correct = [], []
    for ents, ref in zip(beamner.entity_scores(nlp, docs, width, 0.0), gold):
        truth = {(e.start, e.end, e.label_) for e in ref.ents}
        for key, prob in ents.items():
            if key[2]:
                probs.append(prob)
                correct.append(key in truth)
    return {
        "f1": scores["ents_f"],
        "p": scores["ents_p"],
        "r": scores["ents_r"],
        "calibration": calibration(probs, correct),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=ROOT / "training" / "compare")
    args = parser.parse_args()
    runs: dict[str, dict[str, object]] = {}
    for seed in args.seeds:
        for name, factory in FACTORIES.items():
            key = f"{name} seed {seed}"
            runs[key] = train_one(factory, seed, args.max_steps, args.output / f"{factory}-{seed}")
            r = runs[key]
            print(
                key,
                f"train {r['train_seconds']:.0f}s dev F1 {r['dev']['f1']:.3f} "  # type: ignore[index]
                f"test F1 {r['test']['f1']:.3f} "  # type: ignore[index]
                f"test ECE {r['test']['calibration']['ece']:.4f}",  # type: ignore[index]
                flush=True,
            )
            summary = summarize(runs, args.seeds)
            args.output.mkdir(parents=True, exist_ok=True)
            (args.output / "compare.json").write_text(
                json.dumps(
                    {"max_steps": args.max_steps, "summary": summary, "runs": runs}, indent=2
                )
            )
    for name, row in summarize(runs, args.seeds).items():
        print(
            f"{name:16s} "
            + "  ".join(f"{k} {v['mean']:.3f}±{v['std']:.3f}" for k, v in row.items())
        )


def summarize(
    runs: dict[str, dict[str, object]], seeds: list[int]
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and standard deviation over the seeds that have finished."""
    fields = {
        "train_seconds": lambda r: r["train_seconds"],
        "dev_f1": lambda r: r["dev"]["f1"],
        "test_f1": lambda r: r["test"]["f1"],
        "test_ece": lambda r: r["test"]["calibration"]["ece"],
        "test_brier": lambda r: r["test"]["calibration"]["brier"],
    }
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in FACTORIES:
        done = [runs[f"{name} seed {s}"] for s in seeds if f"{name} seed {s}" in runs]
        if done:
            out[name] = {}
            for field, get in fields.items():
                values = numpy.asarray([get(r) for r in done], dtype=float)
                out[name][field] = {
                    "mean": float(values.mean()),
                    "std": float(values.std()),
                    "n": len(values),
                }
    return out


def train_one(factory: str, seed: int, max_steps: int, out: Path) -> dict[str, object]:
    overrides = {
        "components.ner.factory": factory,
        "system.seed": seed,
        "training.max_steps": max_steps,
        "training.eval_frequency": max_steps,
        "paths.train": str(DATA / "wnut17train.conll"),
        "paths.dev": str(DATA / "emerging.dev.conll"),
    }
    if factory == "ner":
        overrides.update({"components.ner.beam_width": None})
    config = ROOT / "configs" / "wnut17_beamner.cfg"
    cfg = spacy.util.load_config(
        config, overrides={k: v for k, v in overrides.items() if v is not None}
    )
    if factory != "beamner_ner":
        for key in ("spans_key", "span_threshold", "fused"):
            cfg["components"]["ner"].pop(key, None)
    if factory == "ner":
        for key in ("beam_width", "beam_density", "beam_update_prob"):
            cfg["components"]["ner"].pop(key, None)
    out.mkdir(parents=True, exist_ok=True)
    cfg.to_disk(out / "config.cfg")
    start = time.perf_counter()
    train(out / "config.cfg", out, use_gpu=-1)
    seconds = time.perf_counter() - start
    nlp = beamner.accelerate(spacy.load(out / "model-last"))
    return {
        "seed": seed,
        "train_seconds": seconds,
        "dev": evaluate(nlp, DATA / "emerging.dev.conll"),
        "test": evaluate(nlp, DATA / "emerging.test.annotated"),
    }


if __name__ == "__main__":
    main()
