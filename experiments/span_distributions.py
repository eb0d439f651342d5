"""Exclusive span-label distributions on WNUT-17: spaCy's ``spancat_singlelabel``
against ``beamner_ner`` (greedy-trained and read through the beam with
``normalize="local"``, and beam-trained, read with its raw global scores,
``normalize="none"``), same train data, same tok2vec, same steps, several seeds.

    nice -n 10 python experiments/span_distributions.py train      # trains every model
    nice -n 10 python experiments/span_distributions.py evaluate   # measures them on WNUT-17 test

``train`` builds ``training/span_compare/{train,dev}.spacy`` (every sentence
with both ``doc.ents`` and ``doc.spans["sc"]``, so all models read the same
examples) and trains the committed configs (configs/wnut17_spancat_singlelabel.cfg,
configs/wnut17_ner_greedy.cfg, configs/wnut17_beamner_spans.cfg) with each
seed. ``evaluate`` measures, on WNUT-17 test: span P/R/F1 of the non-overlapping
spans each model writes to ``doc.spans["sc"]`` (spaCy's spancat scorer), ECE of
the predicted label's probability over those spans, the negative column's
calibration over each model's own candidates, and speed (training and
``nlp.pipe`` CPU seconds of the process: the shared machine's load changes
wall time). Both stages write JSON after every model
(``experiments/results/span_distributions.json``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy
import spacy
from spacy.tokens import Doc, DocBin
from spacy.training import Example

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wnut17"
WORK = ROOT / "training" / "span_compare"
RESULTS = ROOT / "experiments" / "results" / "span_distributions.json"
KEY = "sc"
MODELS = {
    "spancat_singlelabel": "configs/wnut17_spancat_singlelabel.cfg",
    "beamner_ner greedy-trained (local)": "configs/wnut17_ner_greedy.cfg",
    "beamner_ner beam-trained": "configs/wnut17_beamner_spans.cfg",
}
#: How each beamner model's beam is read: a greedy-trained model's scores are
#: locally normalised by training, a beam-trained model's are global (raw).
NORMALIZE = {
    "beamner_ner greedy-trained (local)": "local",
    "beamner_ner beam-trained": "none",
}
WIDTH = 16
DENSITY = 0.0001


def gold_docs(nlp: spacy.Language, path: Path) -> list[Doc]:
    from beamner.io.conll import conll_to_docs, read_conll

    docs = conll_to_docs(nlp, read_conll(path), with_ents=True)
    for doc in docs:
        doc.spans[KEY] = list(doc.ents)
    return docs


def prepare() -> None:
    nlp = spacy.blank("en")
    WORK.mkdir(parents=True, exist_ok=True)
    for name, path in (("train", "wnut17train.conll"), ("dev", "emerging.dev.conll")):
        DocBin(docs=gold_docs(nlp, DATA / path), store_user_data=True).to_disk(
            WORK / f"{name}.spacy"
        )


def load_results(path: Path = RESULTS) -> dict[str, Any]:
    if path.exists():
        return dict(json.loads(path.read_text()))
    return {"train": {}, "test": {}}


def save_results(results: dict[str, Any], path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    results["summary"] = summarize(results)
    path.write_text(json.dumps(results, indent=2) + "\n")


def train_all(seeds: list[int], max_steps: int, path: Path) -> None:
    """Train every model for each seed; several processes may train disjoint
    seeds at once, each writing its own ``path`` (``evaluate`` merges them)."""
    from spacy.cli.train import train

    if not (WORK / "train.spacy").exists():
        prepare()
    results = load_results(path)
    results["max_steps"] = max_steps
    results["seeds"] = seeds
    for seed in seeds:
        for name, config in MODELS.items():
            out = WORK / f"{Path(config).stem}-{seed}"
            overrides = {"system.seed": seed, "training.max_steps": max_steps}
            start, cpu_start = time.perf_counter(), time.process_time()
            train(ROOT / config, out, use_gpu=-1, overrides=overrides)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            results["train"][f"{name} seed {seed}"] = {
                "model": str(out.relative_to(ROOT)),
                "config": config,
                "seed": seed,
                "train_seconds": seconds,
                "train_cpu_seconds": cpu,
            }
            print(f"trained {name} seed {seed} in {seconds:.0f}s", flush=True)
            save_results(results, path)


def merged() -> dict[str, Any]:
    """The results with the records of processes that ran in parallel
    (``span_distributions.{train,test}-*.json``) merged in."""
    results = load_results()
    for stage in ("train", "test"):
        for extra in sorted(RESULTS.parent.glob(f"span_distributions.{stage}-*.json")):
            results[stage].update(load_results(extra)[stage])
    return results


def evaluate_all(width: int, density: float, seeds: list[int], record: Path) -> None:
    import beamner
    from beamner.evaluation.spans import span_report

    results = merged()
    own = results if record == RESULTS else load_results(record)
    nlp_blank = spacy.blank("en")
    gold = gold_docs(nlp_blank, DATA / "emerging.test.annotated")
    n_words = sum(len(doc) for doc in gold)
    for key, run in sorted(results["train"].items()):
        name = key.rsplit(" seed ", 1)[0]
        if run["seed"] not in seeds or "pipe_cpu_seconds" in results["test"].get(key, {}):
            continue  # measured by an earlier run of this stage
        nlp = spacy.load(ROOT / run["model"] / "model-last")  # same steps for every model
        normalize = NORMALIZE.get(name)
        if normalize is not None:
            beamner.accelerate(
                nlp,
                beam_width=width,
                beam_density=density,
                normalize=normalize,
                spans_key=KEY,
                spans_layout="singlelabel",
                spans_allow_overlap=False,
            )
        texts = [doc.text for doc in gold]
        nlp.pipe(texts[:50], batch_size=256)  # warm-up (lazy allocations)
        # CPU time of this process: the shared machine's load changes wall time.
        start, cpu_start = time.perf_counter(), time.process_time()
        predicted = list(nlp.pipe(texts, batch_size=256))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        examples = [Example(p, g) for p, g in zip(predicted, gold)]
        scorer_scores = spacy.scorer.Scorer.score_spans(
            examples,
            f"spans_{KEY}",
            getter=lambda doc, key: doc.spans.get(KEY, []),
            has_annotation=lambda doc: KEY in doc.spans,
            allow_overlap=True,
        )
        report = span_report(
            predicted, gold, KEY, candidates=candidates(nlp, name, width, density, normalize)
        )
        own["test"][key] = {
            "spacy_scorer": {k: v for k, v in scorer_scores.items() if not k.endswith("per_type")},
            "pipe_seconds": seconds,
            "pipe_cpu_seconds": cpu,
            "words_per_cpu_second": n_words / cpu,
            **report,
        }
        print(
            f"{key}: F1 {scorer_scores[f'spans_{KEY}_f']:.3f} "
            f"ECE {report['predicted']['ece']:.3f} {n_words / cpu:.0f} words/CPU-s",
            flush=True,
        )
        save_results(own, record)


def candidates(
    nlp: spacy.Language, name: str, width: int, density: float, normalize: str | None
) -> Any:
    """A function from docs to each doc's candidate distributions (for the
    negative column's calibration): spancat's suggested spans with its softmax,
    or the beam's span distributions."""
    gold_path = DATA / "emerging.test.annotated"

    def spancat_candidates() -> list[tuple[list[tuple[int, int]], list[str], Any]]:
        pipe = nlp.get_pipe("spancat")
        docs = [nlp.make_doc(doc.text) for doc in gold_docs(spacy.blank("en"), gold_path)]
        out = []
        for i in range(0, len(docs), 256):
            batch = docs[i : i + 256]
            for name_, proc in nlp.pipeline:
                if name_ != "spancat":
                    batch = list(proc.pipe(batch))
            indices, scores = pipe.predict(batch)
            scores = pipe.model.ops.to_numpy(scores)
            offset = 0
            for n in indices.lengths:
                n = int(n)
                rows = pipe.model.ops.to_numpy(indices.dataXd[offset : offset + n])
                spans = [(int(s), int(e)) for s, e in rows]
                out.append((spans, list(pipe.labels), scores[offset : offset + n]))
                offset += n
        return out

    def beam_candidates() -> list[tuple[list[tuple[int, int]], list[str], Any]]:
        import beamner

        docs = [nlp.make_doc(doc.text) for doc in gold_docs(spacy.blank("en"), gold_path)]
        return [
            (d.spans, list(d.labels), d.probabilities)
            for d in beamner.span_distributions(
                nlp, docs, beam_width=width, beam_density=density, normalize=normalize
            )
        ]

    return spancat_candidates if name == "spancat_singlelabel" else beam_candidates


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Mean and standard deviation over the seeds finished so far."""
    fields = {
        "train_seconds": lambda tr, te: tr["train_seconds"],
        "span_f1": lambda tr, te: te["spacy_scorer"][f"spans_{KEY}_f"],
        "span_p": lambda tr, te: te["spacy_scorer"][f"spans_{KEY}_p"],
        "span_r": lambda tr, te: te["spacy_scorer"][f"spans_{KEY}_r"],
        "ece_predicted": lambda tr, te: te["predicted"]["ece"],
        "ece_negative": lambda tr, te: te["negative"]["ece"],
        "words_per_cpu_second": lambda tr, te: te["words_per_cpu_second"],
        "train_cpu_seconds": lambda tr, te: tr["train_cpu_seconds"],
    }
    out: dict[str, Any] = {}
    for name in MODELS:
        keys = [k for k in results.get("train", {}) if k.rsplit(" seed ", 1)[0] == name]
        row: dict[str, Any] = {}
        for field, get in fields.items():
            values = []
            for k in keys:
                try:
                    values.append(float(get(results["train"][k], results.get("test", {}).get(k))))
                except (KeyError, TypeError):
                    continue
            if values:
                v = numpy.asarray(values)
                row[field] = {"mean": float(v.mean()), "std": float(v.std()), "n": len(v)}
        if row:
            out[name] = row
    return out


def markdown_table(results: dict[str, Any]) -> str:
    """The README table: mean ± std over the seeds of each model."""
    summary = results["summary"]
    cols = [
        ("span P", "span_p", 3),
        ("span R", "span_r", 3),
        ("span F1", "span_f1", 3),
        ("ECE (predicted label)", "ece_predicted", 3),
        ("ECE (no entity)", "ece_negative", 3),
        ("train CPU s", "train_cpu_seconds", 0),
        ("nlp.pipe words / CPU s", "words_per_cpu_second", 0),
    ]
    lines = [
        "| model | " + " | ".join(c for c, _, _ in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for name, row in summary.items():
        cells = []
        for _, field, digits in cols:
            v = row.get(field)
            cells.append("-" if v is None else f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["train", "evaluate", "report", "table"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--beam-width", type=int, default=WIDTH)
    parser.add_argument("--beam-density", type=float, default=DENSITY)
    parser.add_argument(
        "--record",
        type=Path,
        default=RESULTS,
        help="where train/evaluate record their runs: the results file, or "
        "span_distributions.{train,test}-*.json beside it for processes working on other "
        "seeds in parallel (evaluate and report merge them)",
    )
    args = parser.parse_args()
    if args.stage == "train":
        train_all(args.seeds, args.max_steps, args.record)
    elif args.stage == "evaluate":
        evaluate_all(args.beam_width, args.beam_density, args.seeds, args.record)
    elif args.stage == "report":
        save_results(merged())
    else:
        print(markdown_table(load_results()))


if __name__ == "__main__":
    main()
