"""``compare``: two NER pipelines on the same gold data, with paired-bootstrap
confidence intervals of the differences.

Both models predict on the same documents, each read as ``beamner evaluate``
reads them for that model (CoNLL and ``.spacy`` keep the file's tokens; JSONL
text goes through the model's tokenizer). For each
document and label the true positives, false positives and false negatives of
both models are counted; precision, recall and F1 (micro, overall and per
label) follow from their sums. The intervals come from a *paired* bootstrap over
documents (:func:`scipy.stats.bootstrap` with ``paired=True``, percentile
method): every resample draws the same documents for both models, so the
interval of ``B - A`` reflects how much the difference depends on which
documents happened to be in the test set, and the correlation between the two
models' errors on the same documents is kept. ``b_not_better`` is the share of
resamples in which B's metric is not above A's, a one-sided bootstrap p-value
for "B is better".
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from typing import Any

import numpy
from spacy.language import Language
from spacy.tokens import Doc

from beamner.engine.pipes import load_model
from beamner.evaluation.metrics import prf_arrays
from beamner.io.gold import Entity, GoldDoc, check_label_overlap, parse_label_map, read_gold

__all__ = ["METRICS", "compare", "count_matrix", "scipy_stats"]

METRICS = ("precision", "recall", "f1")


def scipy_stats() -> Any:
    """``scipy.stats``, or an ImportError saying how to get it."""
    try:
        import scipy.stats
    except ImportError as err:
        raise ImportError(
            f"this needs scipy ({err}): pip install scipy (or beamner[compare])"
        ) from None
    return scipy.stats


def _entity_labels(nlp: Language) -> set[str]:
    """Every label a component of ``nlp`` that sets entities can predict."""
    labels: set[str] = set()
    for name, pipe in nlp.pipeline:
        if "doc.ents" in nlp.get_pipe_meta(name).assigns:
            labels.update(str(label) for label in getattr(pipe, "labels", ()))
    return labels


def predict(
    nlp: Language,
    docs: Sequence[Doc],
    label_map: dict[str, str] | None,
    batch_size: int,
) -> list[set[Entity]]:
    """Each doc's predicted entities (the whole pipeline's ``doc.ents``),
    labels renamed by ``label_map`` (entities of unmapped labels dropped)."""
    out: list[set[Entity]] = []
    for doc in nlp.pipe(docs, batch_size=batch_size):
        ents = {(e.start, e.end, e.label_) for e in doc.ents}
        if label_map is not None:
            ents = {(s, e, label_map[lab]) for s, e, lab in ents if lab in label_map}
        out.append(ents)
    return out


def count_matrix(
    preds: Sequence[set[Entity]], golds: Sequence[set[Entity]], labels: Sequence[str]
) -> numpy.ndarray[Any, numpy.dtype[numpy.int64]]:
    """``counts[label, k, doc]`` with k = 0: true positives, 1: false
    positives, 2: false negatives."""
    index = {label: i for i, label in enumerate(labels)}
    counts = numpy.zeros((len(labels), 3, len(golds)), dtype=numpy.int64)
    for d, (pred, gold) in enumerate(zip(preds, golds)):
        for ent in pred:
            counts[index[ent[2]], 0 if ent in gold else 1, d] += 1
        for ent in gold - pred:
            counts[index[ent[2]], 2, d] += 1
    return counts


def _with_overall(counts: numpy.ndarray[Any, Any]) -> numpy.ndarray[Any, Any]:
    """Prepend the sum over labels as row 0 (micro-averaged "overall")."""
    return numpy.concatenate([counts.sum(axis=0, keepdims=True), counts], axis=0)


def _statistic(
    counts_a: numpy.ndarray[Any, Any], counts_b: numpy.ndarray[Any, Any], axis: int = -1
) -> numpy.ndarray[Any, Any]:
    """P/R/F1 of A, of B and of B - A: shape ``(3, 3, rows, *batch)``."""
    a = prf_arrays(counts_a.sum(axis=axis))
    b = prf_arrays(counts_b.sum(axis=axis))
    return numpy.stack([a, b, b - a])


def _bootstrap(
    counts_a: numpy.ndarray[Any, Any],
    counts_b: numpy.ndarray[Any, Any],
    n_resamples: int,
    confidence_level: float,
    seed: int,
) -> tuple[numpy.ndarray[Any, Any], numpy.ndarray[Any, Any], numpy.ndarray[Any, Any]]:
    """Low and high ends of the percentile intervals and the bootstrap
    distribution (last axis: resamples) of :func:`_statistic`."""
    bootstrap = scipy_stats().bootstrap
    n_docs = counts_a.shape[-1]
    # Resampled copies of both count arrays for a batch of resamples: keep them ~100 MB.
    per_resample = 2 * counts_a[..., 0].size * n_docs * 8
    batch = max(1, min(n_resamples, 100_000_000 // max(1, per_resample)))
    generator = numpy.random.default_rng(seed)
    seeding = (
        {"rng": generator}
        if "rng" in inspect.signature(bootstrap).parameters
        else {"random_state": generator}
    )
    res = bootstrap(
        (counts_a, counts_b),
        _statistic,
        paired=True,
        vectorized=True,
        axis=-1,
        n_resamples=n_resamples,
        batch=batch,
        confidence_level=confidence_level,
        method="percentile",
        **seeding,
    )
    ci = res.confidence_interval
    return numpy.asarray(ci.low), numpy.asarray(ci.high), numpy.asarray(res.bootstrap_distribution)


def compare(
    model_a: str | os.PathLike[str] | Language,
    model_b: str | os.PathLike[str] | Language,
    data: str | os.PathLike[str],
    *,
    label_map_a: str | dict[str, str] | None = None,
    label_map_b: str | dict[str, str] | None = None,
    fmt: str = "auto",
    sentences_per_doc: int = 1,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    batch_size: int = 128,
    gpu_id: int = -1,
) -> dict[str, Any]:
    """Precision, recall and F1 of both models (overall and per label) on the
    gold ``data`` and paired-bootstrap intervals of ``B - A``.

    Returns ``{"overall": row, "labels": {label: row}, ...}`` where a row is
    ``{"n_gold", "a": {metric: value, "tp", "fp", "fn"}, "b": {...},
    "diff": {metric: {"value", "low", "high", "b_not_better"}}}`` and ``a``/``b``
    also carry ``{metric}_low``/``{metric}_high`` intervals of their own."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence_level < 1.0:
        raise ValueError(f"confidence_level must be in (0, 1), got {confidence_level}")
    nlp_a = load_model(model_a, gpu_id)
    nlp_b = load_model(model_b, gpu_id)
    # Each model reads the gold with its own vocab and tokenizer, exactly as
    # `beamner evaluate` would (a Doc built from another model's words would
    # lose tokenizer-exception norms): documents are paired by position.
    gold_a: list[GoldDoc] = read_gold(data, nlp_a, fmt, sentences_per_doc=sentences_per_doc)
    gold_b: list[GoldDoc] = read_gold(data, nlp_b, fmt, sentences_per_doc=sentences_per_doc)
    if len(gold_a) < 2:
        raise ValueError(f"{data}: compare needs at least 2 gold documents, got {len(gold_a)}")
    golds, golds_b = [g.gold for g in gold_a], [g.gold for g in gold_b]
    for nlp, gold, lmap in ((nlp_a, gold_a, label_map_a), (nlp_b, gold_b, label_map_b)):
        check_label_overlap(_entity_labels(nlp), gold, parse_label_map(lmap))
    preds_a = predict(nlp_a, [g.doc for g in gold_a], parse_label_map(label_map_a), batch_size)
    preds_b = predict(nlp_b, [g.doc for g in gold_b], parse_label_map(label_map_b), batch_size)
    labels = sorted({e[2] for ents in (*golds, *golds_b, *preds_a, *preds_b) for e in ents})
    if not labels:
        raise ValueError(f"{data}: neither the gold data nor the models have any entity")
    counts_a = _with_overall(count_matrix(preds_a, golds, labels))
    counts_b = _with_overall(count_matrix(preds_b, golds_b, labels))
    point = _statistic(counts_a, counts_b)
    low, high, dist = _bootstrap(counts_a, counts_b, n_resamples, confidence_level, seed)
    diff_dist = dist[2]  # (metric, row, resample)
    not_better = (diff_dist <= 0).mean(axis=-1)
    sums_a, sums_b = counts_a.sum(axis=-1), counts_b.sum(axis=-1)

    def side(k: int, sums: numpy.ndarray[Any, Any], row: int) -> dict[str, Any]:
        out: dict[str, Any] = {"tp": int(sums[row, 0]), "fp": int(sums[row, 1])}
        out["fn"] = int(sums[row, 2])
        for m, metric in enumerate(METRICS):
            out[metric] = float(point[k, m, row])
            out[f"{metric}_low"] = float(low[k, m, row])
            out[f"{metric}_high"] = float(high[k, m, row])
        return out

    def make_row(row: int) -> dict[str, Any]:
        return {
            "n_gold": int(sums_a[row, 0] + sums_a[row, 2]),
            "a": side(0, sums_a, row),
            "b": side(1, sums_b, row),
            "diff": {
                metric: {
                    "value": float(point[2, m, row]),
                    "low": float(low[2, m, row]),
                    "high": float(high[2, m, row]),
                    "b_not_better": float(not_better[m, row]),
                }
                for m, metric in enumerate(METRICS)
            },
        }

    def name(model: str | os.PathLike[str] | Language, nlp: Language) -> str:
        return str(model) if not isinstance(model, Language) else str(nlp.meta.get("name"))

    return {
        "model_a": name(model_a, nlp_a),
        "model_b": name(model_b, nlp_b),
        "data": str(data),
        "n_docs": len(gold_a),
        "n_gold_entities": sum(len(g) for g in golds),
        "label_map_a": parse_label_map(label_map_a),
        "label_map_b": parse_label_map(label_map_b),
        "bootstrap": {
            "method": "paired bootstrap over documents, percentile intervals (scipy.stats)",
            "n_resamples": n_resamples,
            "confidence_level": confidence_level,
            "seed": seed,
        },
        "overall": make_row(0),
        "labels": {label: make_row(i + 1) for i, label in enumerate(labels)},
    }
