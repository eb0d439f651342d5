"""Exclusive span-label distributions, trained to convergence (issue 24): spaCy's
``spancat_singlelabel`` against ``beamner_ner`` (spaCy's greedy ``ner`` read
through beamner's beam with ``normalize="local"``, and beam-trained
``beamner_ner`` read with ``none`` and with ``local``), on two corpora, with the
same data, tok2vec, batcher and optimizer for every model, three seeds.

    nice python experiments/span_distributions.py train --corpus wnut17    # hours of CPU
    nice python experiments/span_distributions.py train --corpus btc
    python experiments/span_distributions.py evaluate --corpus wnut17
    python experiments/span_distributions.py table

Corpora (``../shared/data``): WNUT-17 (train / dev / test as released) and the
Broad Twitter Corpus (sections a, b, e, f, g for training, every tenth of their
sentences held out as dev, section h the test). ``train`` builds
``training/span_compare/<corpus>/{train,dev}.spacy`` (every sentence with both
``doc.ents`` and ``doc.spans["sc"]``, so all models read the same examples) and
trains the committed configs (``configs/spans_*.cfg``) until the dev score has
not improved for ``training.patience`` steps (evaluated every
``training.eval_frequency``), with ``training.max_steps`` as the cap; the
spancat suggester proposes every n-gram up to the corpus's longest train
entity. Each run's eval log (step, score, words) is kept beside its model.
Runs resume after an interruption: a finished run is recorded and skipped,
an interrupted one is trained again from its start (spaCy keeps no optimizer
state to resume from), and a run stopped by a lower step cap than the
config's is trained again (its old model kept as ``<out>.capped-<steps>``);
several processes may train other seeds of one corpus at once. A converged
run stops the same way under any higher cap, so raising the cap only adds
the runs that had not converged.

``evaluate`` measures the best dev checkpoint (``model-best``) of each run on
the corpus's test set; each beamner model gives two reads from one
``nlp.pipe``: ``best parse`` (``doc.ents`` with each entity's beam marginal)
and ``marginal`` (``doc.spans["sc"]`` in ``spancat_singlelabel``'s layout: the
non-overlapping candidates whose most probable column is a label). Reported:
span P/R/F1 (spaCy's span scorer), ECE of the predicted label over predicted
spans and over every (candidate, label) with p >= 0.1, precision at p >= 0.9,
the share of gold spans among the candidates, training and inference CPU
seconds of the process (the shared machine's load changes wall time). Results
go to ``experiments/results/span_converged_<corpus>.json`` after every run,
written atomically. The earlier 1,000-step comparison (WNUT-17 only) is kept in
``experiments/results/span_distributions.json`` as the low-budget row.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy
import spacy
from spacy.tokens import Doc, DocBin

from beamner.io.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
WORK = ROOT / "training" / "span_compare"
RESULTS = ROOT / "experiments" / "results"
KEY = "sc"
CORPORA = ("wnut17", "btc")
BTC_TRAIN_SECTIONS = ("a", "b", "e", "f", "g")
BTC_DEV_EVERY = 10  # every tenth train sentence (index % 10 == 9) is BTC's dev
#: The trained models: name -> committed config.
TRAINED = {
    "spancat_singlelabel": "configs/spans_spancat_singlelabel.cfg",
    "ner (greedy-trained)": "configs/spans_ner_greedy.cfg",
    "beamner_ner (beam-trained)": "configs/spans_beamner_beam.cfg",
}
#: How each trained beamner model is read through the beam: a greedy-trained
#: model's scores are locally normalised by training, a beam-trained model's
#: are global; both reads of the beam-trained one are measured.
BEAM_READS = {
    "ner (greedy-trained)": ("local",),
    "beamner_ner (beam-trained)": ("none", "local"),
}
WIDTH = 16
DENSITY = 0.0001


def results_path(corpus: str) -> Path:
    """The train stage's records (only that stage writes this file)."""
    return RESULTS / f"span_converged_{corpus}.json"


def eval_path(corpus: str) -> Path:
    """The evaluate and widths stages' records: a file of their own, so that
    they can run while the train stage goes on with later seeds."""
    return RESULTS / f"span_converged_{corpus}.eval.json"


def save_evaluations(corpus: str, results: dict[str, Any]) -> None:
    """Write ``results`` (from :func:`combined`) but the train records to
    :func:`eval_path`."""
    save_results({k: v for k, v in results.items() if k != "train"}, eval_path(corpus))


def combined(corpus: str) -> dict[str, Any]:
    """Both stages' records of a corpus."""
    return {**load_results(eval_path(corpus)), "train": load_results(results_path(corpus))["train"]}


def sentences(corpus: str) -> dict[str, list[Any]]:
    """The corpus's train / dev / test sentences (``beamner.io.conll``)."""
    from beamner.io.conll import read_conll

    if corpus == "wnut17":
        folder = DATA / "wnut17"
        return {
            "train": read_conll(folder / "wnut17train.conll"),
            "dev": read_conll(folder / "emerging.dev.conll"),
            "test": read_conll(folder / "emerging.test.annotated"),
        }
    if corpus == "btc":
        folder = DATA / "btc"
        pooled = [s for part in BTC_TRAIN_SECTIONS for s in read_conll(folder / f"{part}.conll")]
        return {
            "train": [s for i, s in enumerate(pooled) if i % BTC_DEV_EVERY != BTC_DEV_EVERY - 1],
            "dev": [s for i, s in enumerate(pooled) if i % BTC_DEV_EVERY == BTC_DEV_EVERY - 1],
            "test": read_conll(folder / "h.conll"),
        }
    raise ValueError(f"unknown corpus {corpus!r}: one of {', '.join(CORPORA)}")


def gold_entities(docs: Sequence[Doc]) -> list[set[tuple[int, int, str]]]:
    return [{(e.start, e.end, e.label_) for e in doc.ents} for doc in docs]


def gold_docs(nlp: spacy.Language, corpus_sentences: Sequence[Any]) -> list[Doc]:
    from beamner.io.conll import conll_to_docs

    docs = conll_to_docs(nlp, corpus_sentences, with_ents=True)
    for doc in docs:
        doc.spans[KEY] = list(doc.ents)
    return docs


def prepare(corpus: str) -> int:
    """Write the corpus's train and dev DocBins (atomically) and return the
    length of its longest train entity (the spancat suggester's cap)."""
    nlp = spacy.blank("en")
    folder = WORK / corpus
    folder.mkdir(parents=True, exist_ok=True)
    split = sentences(corpus)
    longest = 0
    for name in ("train", "dev"):
        docs = gold_docs(nlp, split[name])
        if name == "train":
            longest = max(len(e) for doc in docs for e in doc.ents)
        target = folder / f"{name}.spacy"
        if not target.exists():
            partial = target.with_name(target.name + ".partial")
            DocBin(docs=docs, store_user_data=True).to_disk(partial)
            partial.replace(target)
    return longest


def load_results(path: Path) -> dict[str, Any]:
    if path.exists():
        return dict(json.loads(path.read_text()))
    return {"train": {}, "test": {}}


def save_results(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")


def eval_log(path: Path) -> list[dict[str, Any]]:
    """spaCy's ConsoleLogger.v2 JSONL: one record per dev evaluation."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train_all(corpus: str, seeds: list[int]) -> None:
    """Train every model for each seed, recording each finished run; a run
    trains into ``<out>.partial`` and is renamed when done, so an interrupted
    run leaves no model that looks finished."""
    from spacy.cli.train import train

    longest = prepare(corpus)
    path = results_path(corpus)
    update_results(path, lambda r: r.update(longest_train_entity=longest))
    for seed in seeds:
        for name, config in TRAINED.items():
            key = f"{name} seed {seed}"
            out = WORK / corpus / f"{Path(config).stem}-{seed}"
            cfg = spacy.util.load_config(ROOT / config)["training"]
            done = load_results(path)["train"].get(key)
            if done is not None and out.exists():
                if converged(done) or done["steps"] >= cfg["max_steps"]:
                    continue
                # Stopped by a lower cap than today's: trained again, the old model kept.
                out.replace(out.with_name(f"{out.name}.capped-{done['steps']}"))
            partial = out.with_name(out.name + ".partial")
            if partial.exists():  # this script's own interrupted run
                shutil.rmtree(partial)
            overrides: dict[str, Any] = {
                "paths.train": str(WORK / corpus / "train.spacy"),
                "paths.dev": str(WORK / corpus / "dev.spacy"),
                "paths.log": str(partial / "train_log.jsonl"),
                "system.seed": seed,
            }
            if name == "spancat_singlelabel":
                overrides["components.spancat.suggester.sizes"] = list(range(1, longest + 1))
            start, cpu_start = time.perf_counter(), time.process_time()
            train(ROOT / config, partial, use_gpu=-1, overrides=overrides)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            partial.replace(out)
            evals = eval_log(out / "train_log.jsonl")
            best = max(evals, key=lambda e: e["score"])
            record = {
                "model": str(out.relative_to(ROOT)),
                "config": config,
                "seed": seed,
                "train_seconds": seconds,
                "train_cpu_seconds": cpu,
                "steps": evals[-1]["step"],
                "best_step": best["step"],
                "best_dev_score": best["score"],
                "max_steps": cfg["max_steps"],
                "patience": cfg["patience"],
                "eval_frequency": cfg["eval_frequency"],
            }
            update_results(path, lambda r, key=key, record=record: r["train"].update({key: record}))
            print(
                f"{corpus}: trained {key} in {cpu:.0f} CPU s, {evals[-1]['step']} steps "
                f"(best dev {best['score']:.3f} at {best['step']}, {stopped_by(record)})",
                flush=True,
            )


def converged(run: dict[str, Any]) -> bool:
    """Whether the run's dev score had not improved for ``patience`` steps
    when it stopped (at the step cap too, when the two coincide)."""
    return bool(run["steps"] - run["best_step"] >= run["patience"])


def stopped_by(run: dict[str, Any]) -> str:
    return "patience" if converged(run) else "step cap"


def update_results(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Read, change and write ``path`` under a lock: several train processes
    (other seeds) record into the same file."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load_results(path)
        change(results)
        save_results(results, path)


def test_docs(nlp: spacy.Language, gold: Sequence[Doc]) -> list[Doc]:
    """Unannotated copies of the gold docs with the same tokens, so that
    predicted and gold token offsets agree."""
    return [
        Doc(nlp.vocab, words=[t.text for t in g], spaces=[bool(t.whitespace_) for t in g])
        for g in gold
    ]


def timed_pipe(nlp: spacy.Language, docs: list[Doc]) -> tuple[list[Doc], float]:
    """``nlp.pipe`` over ``docs``, and the process's CPU seconds it took
    (the shared machine's load changes wall time)."""
    list(nlp.pipe(docs[:50], batch_size=256))  # warm-up (lazy allocations)
    fresh = [d.copy() for d in docs]
    cpu_start = time.process_time()
    predicted = list(nlp.pipe(fresh, batch_size=256))
    return predicted, time.process_time() - cpu_start


def spancat_candidates(nlp: spacy.Language, docs: list[Doc]) -> list[Any]:
    """Every suggested span with spancat's softmax over its labels and the
    negative column (``spancat_singlelabel``'s layout: labels then negative)."""
    pipe = nlp.get_pipe("spancat")
    out = []
    for i in range(0, len(docs), 256):
        batch = [d.copy() for d in docs[i : i + 256]]
        indices, scores = pipe.predict(batch)
        scores = pipe.model.ops.to_numpy(scores)
        rows = pipe.model.ops.to_numpy(indices.dataXd)
        offset = 0
        for n in indices.lengths:
            n = int(n)
            out.append((rows[offset : offset + n], list(pipe.labels), scores[offset : offset + n]))
            offset += n
    return out


def best_parse_spans(predicted: Sequence[Doc], candidates: Sequence[Any]) -> list[list[Any]]:
    """The best parse's entities, each with its beam marginal probability."""
    out = []
    for doc, (spans, labels, dist) in zip(predicted, candidates):
        row_of = {(int(s), int(e)): r for r, (s, e) in enumerate(spans)}
        column_of = {label: j for j, label in enumerate(labels)}
        out.append(
            [
                (
                    e.start,
                    e.end,
                    e.label_,
                    float(dist[row_of[(e.start, e.end)], column_of[e.label_]]),
                )
                for e in doc.ents
            ]
        )
    return out


def group_spans(predicted: Sequence[Doc]) -> list[list[Any]]:
    """``doc.spans[KEY]`` with the probabilities in ``attrs["scores"]``."""
    out = []
    for doc in predicted:
        group = doc.spans.get(KEY, [])
        scores = numpy.asarray(
            group.attrs.get("scores", []) if len(group) else [], dtype=numpy.float64
        )
        out.append(
            [(s.start, s.end, s.label_, float(p)) for s, p in zip(group, scores.reshape(-1))]
        )
    return out


def error_analysis(spans: Sequence[Sequence[Any]], truth: Sequence[set[Any]]) -> dict[str, Any]:
    """Where a read loses: recall and precision by entity length (1, 2, 3+
    tokens), and its false positives split into a right span with the wrong
    label, a span overlapping a gold one, and a span touching none."""
    buckets = ("1", "2", "3+")

    def bucket(start: int, end: int) -> str:
        return buckets[min(end - start, 3) - 1]

    gold_n = dict.fromkeys(buckets, 0)
    found = dict.fromkeys(buckets, 0)
    pred_n = dict.fromkeys(buckets, 0)
    right = dict.fromkeys(buckets, 0)
    wrong_label = overlapping = spurious = 0
    for doc_spans, gold in zip(spans, truth):
        predicted = {(s, e, label) for s, e, label, _ in doc_spans}
        gold_spans = {(s, e) for s, e, _ in gold}
        for s, e, label in gold:
            gold_n[bucket(s, e)] += 1
            found[bucket(s, e)] += (s, e, label) in predicted
        for s, e, label in predicted:
            pred_n[bucket(s, e)] += 1
            if (s, e, label) in gold:
                right[bucket(s, e)] += 1
            elif (s, e) in gold_spans:
                wrong_label += 1
            elif any(s < ge and gs < e for gs, ge in gold_spans):
                overlapping += 1
            else:
                spurious += 1
    return {
        "recall_by_length": {b: found[b] / gold_n[b] if gold_n[b] else None for b in buckets},
        "precision_by_length": {b: right[b] / pred_n[b] if pred_n[b] else None for b in buckets},
        "gold_by_length": gold_n,
        "predicted_by_length": pred_n,
        "false_positives": {
            "wrong_label": wrong_label,
            "overlapping_gold": overlapping,
            "spurious": spurious,
        },
    }


#: The dev-tuned read: a candidate is an entity when its entity mass
#: (1 - "no entity") is >= a threshold chosen for span F1 on the corpus's dev
#: set (the same rule for every model), labelled with its most probable label.
TUNED = "mass >= t tuned on dev"


def reads_of(name: str) -> tuple[str, ...]:
    """The reads of one model's distributions: spancat's own ``argmax`` (its
    ``doc.spans``), a beamner model's ``best parse`` (``doc.ents`` with their
    marginals) and ``marginal`` (its ``doc.spans`` in spancat's layout: the
    non-overlapping candidates whose most probable column is a label), and
    :data:`TUNED` for all."""
    return ("argmax", TUNED) if name not in BEAM_READS else ("best parse", "marginal", TUNED)


def setups_of(name: str) -> list[tuple[str | None, bool]]:
    """(beam normalization or None for spancat, calibrated on dev): every
    beamner setup is also measured with the isotonic calibration ``beamner
    calibrate`` fits on the corpus's dev set (spancat has none)."""
    if name not in BEAM_READS:
        return [(None, False)]
    return [(normalize, cal) for cal in (False, True) for normalize in BEAM_READS[name]]


def row_name(name: str, normalize: str | None, read: str, calibrated: bool) -> str:
    if normalize is None:
        return name if read == "argmax" else f"{name}, {read}"
    return f"{name}, {normalize}, {read}" + (", isotonic on dev" if calibrated else "")


def mass_spans(candidates: Sequence[Any], threshold: float) -> list[list[Any]]:
    """:data:`TUNED`'s spans: candidates with entity mass >= ``threshold``,
    non-overlapping (the most massive first), each with its most probable
    label and that label's probability."""
    out = []
    for spans, labels, dist in candidates:
        dist = numpy.asarray(dist, dtype=numpy.float64)
        chosen: list[Any] = []
        if len(dist):
            mass = 1.0 - dist[:, -1]
            best = dist[:, :-1].argmax(axis=1)
            taken: set[int] = set()
            for row in numpy.argsort(-mass, kind="stable"):
                if mass[row] < threshold:
                    break
                start, end = int(spans[row][0]), int(spans[row][1])
                if taken.intersection(range(start, end)):
                    continue
                taken.update(range(start, end))
                label = int(best[row])
                chosen.append((start, end, labels[label], float(dist[row, label])))
        out.append(chosen)
    return out


def tune_threshold(candidates: Sequence[Any], truth: Sequence[set[Any]]) -> tuple[float, float]:
    """The entity-mass threshold (0.05, 0.10, ..., 0.95) with the best span F1
    on ``candidates`` (ties: the higher threshold), and that F1."""
    from beamner.evaluation.spans import span_metrics

    best = (-1.0, 0.5)
    for threshold in numpy.round(numpy.arange(0.05, 0.96, 0.05), 2):
        f1 = span_metrics(mass_spans(candidates, float(threshold)), truth)["spans"]["f1"]
        if f1 >= best[0]:
            best = (f1, float(threshold))
    return best[1], best[0]


def candidates_of(
    nlp: spacy.Language,
    docs: list[Doc],
    normalize: str | None,
    width: int = WIDTH,
    density: float = DENSITY,
) -> list[Any]:
    """Every candidate's distribution: spancat's suggested spans, or the
    beam's (``width``, ``density``)."""
    import beamner

    if normalize is None:
        return spancat_candidates(nlp, docs)
    return [
        (d.spans, list(d.labels), d.probabilities)
        for d in beamner.span_distributions(
            nlp,
            [d.copy() for d in docs],
            beam_width=width,
            beam_density=density,
            normalize=normalize,
        )
    ]


def calibrated_model(corpus: str, run: dict[str, Any], normalize: str) -> Path:
    """The run's best checkpoint with an isotonic calibration fitted on the
    corpus's dev set under ``normalize`` (fitted once, then reused)."""
    from beamner.evaluation.calibrate import calibrate

    out = ROOT / run["model"] / f"isotonic-{normalize}"  # moves with a retrained run's model
    if not out.exists():
        dev = WORK / corpus / "dev.spacy"
        calibrate(
            ROOT / run["model"] / "model-best",
            dev,
            out,
            method="isotonic",
            eval_data=dev,
            beam_width=WIDTH,
            beam_density=DENSITY,
            normalize=normalize,
            progress=False,
        )
    return out


def evaluate_all(corpus: str, seeds: list[int]) -> None:
    import beamner
    from beamner.evaluation.spans import span_metrics

    results = combined(corpus)
    split = sentences(corpus)
    gold = gold_docs(spacy.blank("en"), split["test"])
    dev_gold = gold_docs(spacy.blank("en"), split["dev"])
    truth = gold_entities(gold)
    dev_truth = gold_entities(dev_gold)
    n_words = sum(len(doc) for doc in gold)
    for key, run in sorted(results["train"].items()):
        name = key.rsplit(" seed ", 1)[0]
        if run["seed"] not in seeds:
            continue
        for normalize, calibrated in setups_of(name):
            rows = {
                read: f"{row_name(name, normalize, read, calibrated)} seed {run['seed']}"
                for read in reads_of(name)
            }
            if all(
                results["test"].get(row, {}).get("trained_steps") == run["steps"]
                for row in rows.values()
            ):
                continue  # measured by an earlier run of this stage, on this model
            if calibrated and normalize is not None:
                nlp = spacy.load(calibrated_model(corpus, run, normalize))
            else:
                nlp = spacy.load(ROOT / run["model"] / "model-best")
            if normalize is not None:
                beamner.accelerate(
                    nlp,
                    beam_width=WIDTH,
                    beam_density=DENSITY,
                    normalize=normalize,
                    spans_key=KEY,
                    spans_layout="singlelabel",
                    spans_allow_overlap=False,
                )
            docs = test_docs(nlp, gold)
            predicted, cpu = timed_pipe(nlp, docs)
            candidates = candidates_of(nlp, docs, normalize)
            threshold, dev_f1 = tune_threshold(
                candidates_of(nlp, test_docs(nlp, dev_gold), normalize), dev_truth
            )
            for read, row_key in rows.items():
                if read == "best parse":
                    spans = best_parse_spans(predicted, candidates)
                elif read == TUNED:
                    spans = mass_spans(candidates, threshold)
                else:
                    spans = group_spans(predicted)
                report = span_metrics(spans, truth, candidates)
                results["test"][row_key] = {
                    "row": row_key.rsplit(" seed ", 1)[0],
                    "trained": key,
                    "seed": run["seed"],
                    "trained_steps": run["steps"],
                    "pipe_cpu_seconds": cpu,
                    "words_per_cpu_second": n_words / cpu,
                    **({"threshold": threshold, "dev_f1": dev_f1} if read == TUNED else {}),
                    "errors": error_analysis(spans, truth),
                    **report,
                }
                print(
                    f"{corpus} {row_key}: F1 {report['spans']['f1']:.3f} "
                    f"ECE {report['predicted']['ece']:.3f} {n_words / cpu:.0f} words/CPU-s",
                    flush=True,
                )
            save_evaluations(corpus, results)


PROBE_WIDTHS = (16, 64, 256)


def width_probe(corpus: str, seed: int) -> None:
    """Is the beam's candidate recall what costs recall? For each beamner
    setup (uncalibrated), the dev-tuned read at widths 16, 64 and 256 (density
    0, the threshold tuned at width 16 kept): the share of gold spans among the
    candidates against the span P/R/F1."""
    from beamner.evaluation.spans import span_metrics

    results = combined(corpus)
    gold = gold_docs(spacy.blank("en"), sentences(corpus)["test"])
    truth = gold_entities(gold)
    probe = results.setdefault("width_probe", {})
    for name, normalizes in BEAM_READS.items():
        run = results["train"][f"{name} seed {seed}"]
        for normalize in normalizes:
            tuned = results["test"][f"{row_name(name, normalize, TUNED, False)} seed {seed}"]
            nlp = spacy.load(ROOT / run["model"] / "model-best")
            docs = test_docs(nlp, gold)
            for width in PROBE_WIDTHS:
                candidates = candidates_of(nlp, docs, normalize, width, density=0.0)
                report = span_metrics(mass_spans(candidates, tuned["threshold"]), truth, candidates)
                probe[f"{name}, {normalize}, width {width} seed {seed}"] = {
                    "gold_span_share": report["negative"]["gold_span_share"],
                    "threshold": tuned["threshold"],
                    **report["spans"],
                }
                print(
                    f"{corpus} {name} {normalize} width {width}: gold share "
                    f"{report['negative']['gold_span_share']:.3f}, F1 {report['spans']['f1']:.3f}",
                    flush=True,
                )
    save_evaluations(corpus, results)


#: The table's columns: header, how to read a value from (train, test) records, digits.
COLUMNS: list[tuple[str, Callable[[dict[str, Any], dict[str, Any]], Any], int]] = [
    ("span P", lambda tr, te: te["spans"]["precision"], 3),
    ("span R", lambda tr, te: te["spans"]["recall"], 3),
    ("span F1", lambda tr, te: te["spans"]["f1"], 3),
    ("ECE predicted label", lambda tr, te: te["predicted"]["ece"], 3),
    ("ECE candidates p>=0.1", lambda tr, te: te["candidate_labels"]["ece"], 3),
    ("precision p>=0.9", lambda tr, te: te["predicted"]["precision_p90"], 3),
    ("gold spans among candidates", lambda tr, te: te["negative"]["gold_span_share"], 3),
    ("steps", lambda tr, te: tr["steps"], 0),
    ("best dev step", lambda tr, te: tr["best_step"], 0),
    ("train CPU s", lambda tr, te: tr["train_cpu_seconds"], 0),
    ("words / CPU s", lambda tr, te: te["words_per_cpu_second"], 0),
]


def summarize(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per read, mean and standard deviation over the seeds measured so far."""
    rows: dict[str, dict[str, list[float]]] = {}
    for record in results.get("test", {}).values():
        train = results["train"][record["trained"]]
        row = rows.setdefault(record["row"], {})
        for header, get, _ in COLUMNS:
            value = get(train, record)
            if value is not None:
                row.setdefault(header, []).append(float(value))
    return {
        name: {
            header: {
                "mean": float(numpy.mean(values)),
                "std": float(numpy.std(values)),
                "n": len(values),
            }
            for header, values in row.items()
        }
        for name, row in rows.items()
    }


#: The reads the README tables show (every read is in the JSON; ``table --all``).
SHOWN = [
    "spancat_singlelabel",
    f"spancat_singlelabel, {TUNED}",
    "ner (greedy-trained), local, best parse",
    "ner (greedy-trained), local, marginal",
    f"ner (greedy-trained), local, {TUNED}",
    f"ner (greedy-trained), local, {TUNED}, isotonic on dev",
    "beamner_ner (beam-trained), none, best parse",
    "beamner_ner (beam-trained), none, marginal",
    f"beamner_ner (beam-trained), none, {TUNED}",
    f"beamner_ner (beam-trained), none, {TUNED}, isotonic on dev",
    "beamner_ner (beam-trained), local, best parse",
    f"beamner_ner (beam-trained), local, {TUNED}",
]


def markdown_table(corpus: str, every_row: bool = False) -> str:
    """The README table of one corpus: mean ± std over its seeds."""
    results = combined(corpus)
    summary = summarize(results)
    lines = [
        f"{corpus}: " + ", ".join(f"{k} {v}" for k, v in sorted(seeds_of(results).items())),
        "",
        "| model, read | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
        "|---|" + "---:|" * len(COLUMNS),
    ]
    shown = [name for name in SHOWN if name in summary]
    for name, row in ((n, summary[n]) for n in (shown if not every_row else summary)):
        cells = []
        for header, _, digits in COLUMNS:
            v = row.get(header)
            cells.append("-" if v is None else f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def seeds_of(results: dict[str, Any]) -> dict[str, str]:
    """Per trained model, the seeds measured and how each run stopped."""
    out: dict[str, list[str]] = {}
    for key, run in sorted(results["train"].items()):
        name = key.rsplit(" seed ", 1)[0]
        out.setdefault(name, []).append(
            f"seed {run['seed']}: {run['steps']} steps, best {run['best_step']}, {stopped_by(run)}"
        )
    return {name: "(" + "; ".join(runs) + ")" for name, runs in out.items()}


#: The analysis table's reads and columns (means over seeds).
ANALYSIS_ROWS = [
    "spancat_singlelabel",
    f"spancat_singlelabel, {TUNED}",
    f"ner (greedy-trained), local, {TUNED}",
    f"beamner_ner (beam-trained), none, {TUNED}",
]


def analysis_table(corpus: str) -> str:
    """Where each read finds and loses entities: recall by gold entity length,
    predictions, and false positives by kind (means over seeds), and the width
    probe (seed means)."""
    results = combined(corpus)
    lines = [
        f"{corpus}: recall by entity length (tokens), predictions and false positives",
        "",
        "| read | R 1 | R 2 | R 3+ | predicted | FP wrong label | FP overlapping | FP spurious |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in ANALYSIS_ROWS:
        records = [r for r in results["test"].values() if r["row"] == row]
        if not records:
            continue

        def mean(
            get: Callable[[dict[str, Any]], Any], records: list[dict[str, Any]] = records
        ) -> float:
            return float(numpy.mean([get(r["errors"]) for r in records]))

        lines.append(
            f"| {row} | "
            + " | ".join(
                f"{mean(lambda e, b=b: e['recall_by_length'][b]):.3f}" for b in ("1", "2", "3+")
            )
            + f" | {mean(lambda e: sum(e['predicted_by_length'].values())):.0f} | "
            + " | ".join(
                f"{mean(lambda e, k=k: e['false_positives'][k]):.0f}"
                for k in ("wrong_label", "overlapping_gold", "spurious")
            )
            + " |"
        )
    probe = results.get("width_probe", {})
    if probe:
        lines += [
            "",
            "| beamner setup, width | gold spans among candidates | span R | span F1 |",
            "|---|---:|---:|---:|",
        ]
        for key in sorted(probe, key=lambda k: (k.split(" width ")[0], int(k.split()[-3]))):
            v = probe[key]
            lines.append(
                f"| {key} | {v['gold_span_share']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} |"
            )
    return "\n".join(lines)


def markdown_tables(every_row: bool = False) -> str:
    return "\n\n".join(
        f"{markdown_table(c, every_row)}\n\n{analysis_table(c)}"
        for c in CORPORA
        if eval_path(c).exists()
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stage", choices=["train", "evaluate", "widths", "table"])
    parser.add_argument("--corpus", choices=CORPORA, default="wnut17")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--all", action="store_true", help="table: every read, not SHOWN")
    args = parser.parse_args()
    if args.stage == "train":
        train_all(args.corpus, args.seeds)
    elif args.stage == "evaluate":
        evaluate_all(args.corpus, args.seeds)
    elif args.stage == "widths":
        for seed in args.seeds:
            width_probe(args.corpus, seed)
    else:
        print(markdown_tables(args.all))


if __name__ == "__main__":
    main()
