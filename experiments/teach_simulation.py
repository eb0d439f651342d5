"""Simulated annotator for the yes/no loop (beamner.teach) on WNUT-17.

Per seed: shuffle WNUT-17 train with the seed; train a greedy ``ner`` (the
model of configs/wnut17_beamner.cfg, factory ``ner``) on the first 300
sentences; then serve 1,000 candidate-entity tasks from the rest of train with
:class:`beamner.teach.TeachSession` and answer each from the gold annotation
(accept iff the suggested span and label is a gold entity of the sentence),
updating the model with native beam updates after every 10 answers. Three
conditions from the same starting model: uncertainty order, random order, no
updates. Every 100 answers: F1 of the width-16 beam's best parse on dev and
test, and ECE of the entity probabilities of every candidate with p >= 0.1
(10 equal-width bins).

    nice -n 10 python experiments/teach_simulation.py [--seeds 0 1 2] [--answers 1000]
        [--eval-sentences 500] [--plot docs/teach_simulation.png]

Writes experiments/results/teach_simulation.json (curves per seed and
condition, mean/std at each checkpoint) and the plot. ``--eval-sentences``:
dev and test are subsampled (the same fixed random sentences for every
run) to keep the run within the CPU budget of a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy
import spacy
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from spacy.util import fix_random_seed, load_model_from_config, minibatch

from beamner.engine.pipes import find_ner
from beamner.io.conll import conll_to_docs, read_conll
from beamner.io.records import Record
from beamner.probabilities.beams import beam_docs
from beamner.probabilities.calibration import expected_calibration_error
from beamner.teach import TeachSession
from beamner.teach.session import prepare_pipeline

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wnut17"
LABELS = ["corporation", "creative-work", "group", "location", "person", "product"]
CONDITIONS = ("uncertainty", "random", "none")

MODEL = {
    "@architectures": "spacy.TransitionBasedParser.v2",
    "state_type": "ner",
    "extra_state_tokens": False,
    "hidden_width": 64,
    "maxout_pieces": 2,
    "use_upper": True,
    "tok2vec": {
        "@architectures": "spacy.HashEmbedCNN.v2",
        "pretrained_vectors": None,
        "width": 96,
        "depth": 4,
        "embed_size": 2000,
        "window_size": 1,
        "maxout_pieces": 3,
        "subword_features": True,
    },
}


def train_greedy(gold: list[Doc], seed: int, epochs: int) -> Language:
    """Greedy ``ner`` trained on ``gold`` (Adam, dropout 0.1, batches of 16)."""
    fix_random_seed(seed)
    nlp = spacy.blank("en")
    nlp.add_pipe("ner", config={"model": MODEL})
    examples = [Example(Doc(nlp.vocab, words=[t.text for t in d]), d) for d in gold]
    optimizer = nlp.initialize(lambda: examples)
    rng = random.Random(seed)
    for _ in range(epochs):
        rng.shuffle(examples)
        for batch in minibatch(examples, size=16):
            nlp.update(batch, sgd=optimizer, drop=0.1)
    return nlp


def gold_docs(nlp: Language, sentences: list[Any]) -> list[Doc]:
    return conll_to_docs(nlp, sentences, with_ents=True)


def plain(doc: Doc) -> Doc:
    return Doc(doc.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])


def evaluate(nlp: Language, gold: list[Doc], width: int = 16) -> dict[str, float]:
    """F1 of the beam's best parse and ECE over candidates with p >= 0.1."""
    pipe = find_ner(nlp)
    tp = fp = fn = 0
    probs: list[float] = []
    correct: list[bool] = []
    for i in range(0, len(gold), 256):
        chunk = gold[i : i + 256]
        beams = beam_docs(pipe, [plain(d) for d in chunk], width, 0.0001)
        for ref, beam in zip(chunk, beams):
            truth = {(e.start, e.end, e.label_) for e in ref.ents}
            pred = set(beam.parses[0]) if beam.parses else set()
            tp += len(pred & truth)
            fp += len(pred - truth)
            fn += len(truth - pred)
            for key, p in beam.entities.items():
                if p >= 0.1:
                    probs.append(p)
                    correct.append(key in truth)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return {
        "f1": f1,
        "precision": prec,
        "recall": rec,
        "ece": expected_calibration_error(probs, correct, 10),
        "n_candidates": len(probs),
    }


def run(
    model_bytes: bytes,
    config: Any,
    pool: list[Doc],
    dev: list[Doc],
    test: list[Doc],
    order: str,
    args: argparse.Namespace,
    seed: int,
) -> dict[str, Any]:
    nlp = load_model_from_config(config, auto_fill=True).from_bytes(model_bytes)
    fix_random_seed(seed)
    gold = [{(e.start_char, e.end_char, e.label_) for e in d.ents} for d in pool]
    records = [
        Record(i, d.text, words=[t.text for t in d], spaces=[bool(t.whitespace_) for t in d])
        for i, d in enumerate(pool)
    ]
    session = TeachSession(
        nlp,
        records,
        LABELS,
        order=order,
        buffer=args.buffer,
        batch_size=args.read_batch,
        beam_width=16,
        update_batch=args.update_every,
        threshold=args.threshold,
        learn_rate=args.learn_rate,
        seed=seed,
    )
    curve = [{"answers": 0, "dev": evaluate(nlp, dev), "test": evaluate(nlp, test)}]
    n = n_accept = 0
    t_serve = t_update = 0.0
    batch: list[dict[str, Any]] = []
    while n < args.answers:
        t0 = time.perf_counter()
        task = session.next_task()
        t_serve += time.perf_counter() - t0
        if task is None:
            break
        span = task["spans"][0]
        accept = (span["start"], span["end"], span["label"]) in gold[task["meta"]["line"]]
        batch.append(session.answer(task, "accept" if accept else "reject"))
        n += 1
        n_accept += accept
        if len(batch) == args.update_every:
            t0 = time.perf_counter()
            session.update()
            t_update += time.perf_counter() - t0
            batch = []
        if n % args.eval_every == 0:
            curve.append({"answers": n, "dev": evaluate(nlp, dev), "test": evaluate(nlp, test)})
            print(
                f"  seed {seed} {order:<11} {n:>5} answers: dev F1 {curve[-1]['dev']['f1']:.3f} "
                f"ECE {curve[-1]['dev']['ece']:.3f}, test F1 {curve[-1]['test']['f1']:.3f} "
                f"ECE {curve[-1]['test']['ece']:.3f}",
                file=sys.stderr,
            )
    stats = session.stats()
    return {
        "curve": curve,
        "n_answers": n,
        "accept_rate": n_accept / n if n else None,
        "sentences_read": stats["n_read"],
        "serve_seconds": t_serve,
        "update_seconds": t_update,
        "n_updates": stats["n_updates"],
    }


def summarize(runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for cond in CONDITIONS:
        curves = [runs[s][cond]["curve"] for s in runs if cond in runs[s]]
        if not curves:
            continue
        n_points = min(len(c) for c in curves)
        points = []
        for k in range(n_points):
            point: dict[str, Any] = {"answers": curves[0][k]["answers"]}
            for split in ("dev", "test"):
                for metric in ("f1", "ece"):
                    vals = numpy.array([c[k][split][metric] for c in curves])
                    point[f"{split}_{metric}"] = [float(vals.mean()), float(vals.std())]
            points.append(point)
        accept = [runs[s][cond]["accept_rate"] for s in runs if cond in runs[s]]
        out[cond] = {
            "points": points,
            "accept_rate": float(numpy.mean([a for a in accept if a is not None]))
            if any(a is not None for a in accept)
            else None,
        }
    return out


def table(results: dict[str, Any]) -> str:
    """Markdown table: mean ± std over seeds at 0, 500 and all answers."""
    summary = results["summary"]
    n = results["meta"]["answers"]
    rows = [
        "| condition | answers | accepted | dev F1 | test F1 | dev ECE | test ECE |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(point: dict[str, Any], key: str) -> str:
        mean, std = point[key]
        return f"{mean:.3f} ± {std:.3f}"

    base = next(iter(summary.values()))["points"][0]
    rows.append(
        f"| start (greedy, 300 sentences) | 0 | - | {cell(base, 'dev_f1')} | "
        f"{cell(base, 'test_f1')} | {cell(base, 'dev_ece')} | {cell(base, 'test_ece')} |"
    )
    for cond, data in summary.items():
        if cond == "none":
            continue
        accepted = f"{100 * data['accept_rate']:.0f}%" if data["accept_rate"] is not None else "-"
        for point in data["points"]:
            if point["answers"] in (n // 2, n):
                rows.append(
                    f"| {cond} order | {point['answers']} | {accepted} | "
                    f"{cell(point, 'dev_f1')} | {cell(point, 'test_f1')} | "
                    f"{cell(point, 'dev_ece')} | {cell(point, 'test_ece')} |"
                )
    return "\n".join(rows)


def plot(summary: dict[str, Any], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    styles = {"uncertainty": "C0", "random": "C1", "none": "C7"}
    for (row, metric), (col, split) in [
        ((r, m), (c, s)) for r, m in enumerate(("f1", "ece")) for c, s in enumerate(("dev", "test"))
    ]:
        ax = axes[row][col]
        for cond, data in summary.items():
            xs = [p["answers"] for p in data["points"]]
            mean = numpy.array([p[f"{split}_{metric}"][0] for p in data["points"]])
            std = numpy.array([p[f"{split}_{metric}"][1] for p in data["points"]])
            if cond == "none":
                xs = [0, meta["answers"]]
                mean = numpy.repeat(mean[:1], 2)
                std = numpy.repeat(std[:1], 2)
            label = {"none": "no updates"}.get(cond, f"{cond} order")
            ax.plot(xs, mean, color=styles[cond], label=label, ls="--" if cond == "none" else "-")
            ax.fill_between(xs, mean - std, mean + std, color=styles[cond], alpha=0.15)
        ax.set_title(f"{split} {'F1' if metric == 'f1' else 'ECE (p >= 0.1)'}")
        ax.grid(alpha=0.3)
        if row == 1:
            ax.set_xlabel("binary answers")
    axes[0][0].legend()
    fig.suptitle(
        "WNUT-17: greedy NER on 300 sentences, then beam updates from simulated yes/no answers\n"
        f"(Adam learning rate {meta.get('learn_rate') or 0.001}; mean ± std over seeds "
        f"{meta['seeds']}; dev/test: {meta['eval_sentences']} sentences each)",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--answers", type=int, default=1000)
    parser.add_argument("--initial", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=10, help="greedy training epochs")
    parser.add_argument("--update-every", type=int, default=10)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--eval-sentences", type=int, default=500)
    parser.add_argument("--buffer", type=int, default=64)
    parser.add_argument("--read-batch", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.02)
    parser.add_argument("--learn-rate", type=float, default=None)
    parser.add_argument("--cache", type=Path, default=None, help="keep the greedy models here")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "experiments" / "results" / "teach_simulation.json"
    )
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "teach_simulation.png")
    parser.add_argument(
        "--conditions", nargs="+", default=list(CONDITIONS), choices=list(CONDITIONS)
    )
    parser.add_argument(
        "--table",
        action="store_true",
        help="print the README table of --output, redraw --plot from it, and exit",
    )
    args = parser.parse_args()
    if args.table:
        results = json.loads(args.output.read_text())
        print(table(results))
        plot(results["summary"], args.plot, results["meta"])
        return
    t_start = time.perf_counter()
    vocab_nlp = spacy.blank("en")
    train_sents = read_conll(DATA / "wnut17train.conll")
    dev_all = conll_to_docs(vocab_nlp, read_conll(DATA / "emerging.dev.conll"), with_ents=True)
    test_all = conll_to_docs(
        vocab_nlp, read_conll(DATA / "emerging.test.annotated"), with_ents=True
    )
    pick = random.Random(12345)
    dev = pick.sample(dev_all, min(args.eval_sentences, len(dev_all)))
    test = pick.sample(test_all, min(args.eval_sentences, len(test_all)))
    runs: dict[str, dict[str, dict[str, Any]]] = {}
    for seed in args.seeds:
        order = list(range(len(train_sents)))
        random.Random(seed).shuffle(order)
        initial = conll_to_docs(
            vocab_nlp, [train_sents[i] for i in order[: args.initial]], with_ents=True
        )
        pool = conll_to_docs(
            vocab_nlp, [train_sents[i] for i in order[args.initial :]], with_ents=True
        )
        t0 = time.perf_counter()
        cached = (
            args.cache / f"greedy-{args.initial}-{args.epochs}-seed{seed}" if args.cache else None
        )
        if cached is not None and cached.exists():
            nlp = spacy.load(cached)
        else:
            nlp = train_greedy(initial, seed, args.epochs)
            if cached is not None:  # atomically: another run may share the cache
                tmp = cached.with_name(f"{cached.name}.{os.getpid()}")
                nlp.to_disk(tmp)
                try:
                    tmp.rename(cached)
                except OSError:
                    shutil.rmtree(tmp)
        train_seconds = time.perf_counter() - t0
        config, model_bytes = nlp.config, nlp.to_bytes()
        runs[str(seed)] = {}
        for cond in args.conditions:
            t0 = time.perf_counter()
            if cond == "none":
                nlp0 = load_model_from_config(config, auto_fill=True).from_bytes(model_bytes)
                prepare_pipeline(nlp0)  # the same beamner_ner component, no updates
                result: dict[str, Any] = {
                    "curve": [
                        {"answers": 0, "dev": evaluate(nlp0, dev), "test": evaluate(nlp0, test)}
                    ],
                    "accept_rate": None,
                }
            else:
                result = run(model_bytes, config, pool, dev, test, cond, args, seed)
            result["seconds"] = time.perf_counter() - t0
            result["greedy_train_seconds"] = train_seconds
            runs[str(seed)][cond] = result
            print(f"seed {seed} {cond}: {result['seconds']:.0f} s", file=sys.stderr)
        summary = summarize(runs)
        meta = {
            "seeds": [int(s) for s in runs],
            "answers": args.answers,
            "initial_sentences": args.initial,
            "greedy_epochs": args.epochs,
            "update_every": args.update_every,
            "eval_every": args.eval_every,
            "eval_sentences": args.eval_sentences,
            "buffer": args.buffer,
            "read_batch": args.read_batch,
            "threshold": args.threshold,
            "learn_rate": args.learn_rate,
            "beam_width": 16,
            "labels": LABELS,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "total_seconds": time.perf_counter() - t_start,
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1) + "\n"
        )
        plot(summary, args.plot, meta)
    print(f"wrote {args.output} and {args.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
