"""``evaluate`` and ``calibrate``: beam quality and entity-probability
calibration on gold data.

Gold formats (``fmt="auto"`` picks by extension): ``.spacy`` DocBin (its
``doc.ents``), ``.jsonl``/``.json`` (``{"text", "spans": [{"start", "end",
"label"}]}``, character offsets, or ``token_start``/``token_end`` inclusive,
Prodigy's convention; tokenized by the model unless Prodigy-style ``"tokens"``
``[{"text", "ws"}]`` are given), anything else CoNLL/IOB (``token TAB tag``, blank line
between sentences; :func:`beamner.io.conll.read_conll`).

An entity is ``(token_start, token_end, label)``; a prediction is correct when
all three match a gold entity. ``label_map`` (``{"PERSON": "PER", ...}``)
renames predicted labels; when given, predicted entities whose label is not in
it are ignored (neither right nor wrong), to compare a model with a corpus that
has other labels.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc, DocBin

from beamner.engine.pipes import find_ner, load_model, ner_name, upstream_disabled
from beamner.engine.search import NORMALIZE_CHOICES
from beamner.evaluation.spans import SpanStats
from beamner.io.conll import documents_to_docs, group_into_documents, read_conll
from beamner.pipeline import accelerate
from beamner.probabilities.beams import BeamDoc, beam_docs
from beamner.probabilities.calibration import CandidateSet, fit_temperature
from beamner.probabilities.calibrators import (
    CALIBRATION_METHODS,
    IsotonicCalibrator,
    calibrator_for,
    fit_isotonic,
)
from beamner.probabilities.decoding import marginal_entities

__all__ = [
    "GoldDoc",
    "calibrate",
    "evaluate",
    "parse_label_map",
    "read_gold",
]

Entity = tuple[int, int, str]

#: ``none``: spaCy's raw beam scores; ``local``: each step's scores
#: log-softmaxed over the state's valid actions (a parse's score is its log-probability).
NORMALIZATIONS = NORMALIZE_CHOICES


@dataclass
class GoldDoc:
    """An unannotated doc (the model's vocab) and its gold entities."""

    doc: Doc
    gold: set[Entity]


def _fresh(nlp: Language, doc: Doc) -> Doc:
    return Doc(nlp.vocab, words=[t.text for t in doc], spaces=[bool(t.whitespace_) for t in doc])


def read_gold(
    path: str | os.PathLike[str],
    nlp: Language,
    fmt: str = "auto",
    *,
    sentences_per_doc: int = 1,
) -> list[GoldDoc]:
    """Gold docs from a CoNLL/IOB file, a ``.spacy`` DocBin or JSONL with spans."""
    suffix = Path(path).suffix.lower()
    if fmt == "auto":
        fmt = {".spacy": "spacy", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix, "conll")
    if fmt == "conll":
        groups = group_into_documents(read_conll(path), sentences_per_doc)
        docs = documents_to_docs(nlp, groups, with_ents=True)
    elif fmt == "spacy":
        docs = list(DocBin().from_disk(Path(path)).get_docs(nlp.vocab))
    elif fmt == "jsonl":
        return list(_read_gold_jsonl(path, nlp))
    else:
        raise ValueError(f"gold format must be auto, conll, spacy or jsonl, got {fmt!r}")
    return [GoldDoc(_fresh(nlp, d), {(e.start, e.end, e.label_) for e in d.ents}) for d in docs]


def _read_gold_jsonl(path: str | os.PathLike[str], nlp: Language) -> Iterator[GoldDoc]:
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                text = obj["text"]
                if "tokens" in obj:  # Prodigy's tokens: keep the tokenization
                    words = [str(t["text"]) for t in obj["tokens"]]
                    spaces = [bool(t.get("ws", True)) for t in obj["tokens"]]
                    doc = Doc(nlp.vocab, words=words, spaces=spaces)
                    if doc.text != text:
                        raise ValueError("the tokens do not spell the text")
                else:
                    doc = nlp.make_doc(text)
                gold: set[Entity] = set()
                for span in obj.get("spans", []):
                    if "token_start" in span and "token_end" in span:
                        start, end = int(span["token_start"]), int(span["token_end"]) + 1
                    else:
                        char_span = doc.char_span(
                            span["start"], span["end"], alignment_mode="expand"
                        )
                        if char_span is None:
                            raise ValueError(f"span {span} is not inside the text")
                        start, end = char_span.start, char_span.end
                    if not 0 <= start < end <= len(doc):
                        raise ValueError(f"span {span} is out of range")
                    gold.add((start, end, str(span["label"])))
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{lineno}: bad gold record: {err}") from None
            yield GoldDoc(doc, gold)


def parse_label_map(spec: str | dict[str, str] | None) -> dict[str, str] | None:
    """``"PERSON=PER,GPE=LOC"`` -> ``{"PERSON": "PER", "GPE": "LOC"}``."""
    if spec is None or isinstance(spec, dict):
        return spec
    out: dict[str, str] = {}
    for item in spec.split(","):
        if not item.strip():
            continue
        src, sep, dst = item.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"label map entries are PRED=GOLD, got {item!r}")
        out[src.strip()] = dst.strip()
    return out


def _mapped(ents: Sequence[Entity], label_map: dict[str, str] | None) -> set[Entity]:
    if label_map is None:
        return set(ents)
    return {(s, e, label_map[lab]) for s, e, lab in ents if lab in label_map}


@dataclass
class _Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, pred: set[Entity], gold: set[Entity]) -> None:
        tp = len(pred & gold)
        self.tp += tp
        self.fp += len(pred) - tp
        self.fn += len(gold) - tp

    def prf(self) -> dict[str, float]:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return {"precision": p, "recall": r, "f1": f}


@dataclass
class _WidthStats:
    top: _Counts = field(default_factory=_Counts)
    oracle: _Counts = field(default_factory=_Counts)
    marginal: _Counts = field(default_factory=_Counts)
    coverage: list[float] = field(default_factory=list)
    top_is_best: int = 0
    exact_in_beam: int = 0
    n_docs: int = 0
    candidates: CandidateSet = field(default_factory=CandidateSet.empty)
    seconds: float = 0.0
    spans: SpanStats = field(default_factory=SpanStats)  # span level (evaluation/spans.py)

    def add(self, beam: BeamDoc, gold: set[Entity], label_map: dict[str, str] | None) -> None:
        parses = [_mapped(p, label_map) for p in beam.parses]
        self.n_docs += 1
        self.top.add(parses[0], gold)
        errors = [len(p ^ gold) for p in parses]
        best = min(range(len(parses)), key=lambda i: (errors[i], i))
        self.oracle.add(parses[best], gold)
        self.top_is_best += errors[0] == errors[best]
        self.exact_in_beam += errors[best] == 0
        # Marginal decoding in the model's labels (what decode="marginal" sets), then mapped.
        self.marginal.add(_mapped(marginal_entities(_marginals(beam)), label_map), gold)
        self.candidates.add(beam.scores, beam.parses, gold, label_map)
        self.spans.add(beam, gold, label_map)
        coverage = getattr(beam, "coverage", None)
        if coverage is not None:
            self.coverage.append(float(coverage))


def _marginals(beam: BeamDoc) -> dict[Entity, float]:
    """The beam's own entity marginals (parse probabilities summed), before
    any isotonic calibration."""
    out: dict[Entity, float] = {}
    for prob, ents in zip(beam.probabilities, beam.parses):
        for ent in ents:
            out[ent] = out.get(ent, 0.0) + prob
    return out


def _collect(
    nlp: Language,
    gold_docs: Sequence[GoldDoc],
    widths: Sequence[int],
    density: float,
    temperature: float,
    label_map: dict[str, str] | None,
    batch_size: int,
    progress: bool | None = None,
    normalizations: Sequence[str] = ("none",),
) -> dict[tuple[str, int], _WidthStats]:
    from beamner.io.records import progress_bar

    pipe = find_ner(nlp)
    disabled = upstream_disabled(nlp)
    stats = {(n, w): _WidthStats() for n in normalizations for w in widths}
    bar = progress_bar(len(gold_docs), progress, "beam")
    try:
        for i in range(0, len(gold_docs), batch_size):
            chunk = gold_docs[i : i + batch_size]
            docs = list(nlp.pipe([g.doc for g in chunk], disable=disabled))
            for n, w in stats:
                t0 = time.perf_counter()
                beams = _beams(pipe, docs, w, density, temperature, n)
                stats[n, w].seconds += time.perf_counter() - t0
                for g, beam in zip(chunk, beams):
                    stats[n, w].add(beam, g.gold, label_map)
            bar.update(len(chunk))
    finally:
        bar.close()
    return stats


def _beams(
    pipe: Any, docs: list[Doc], width: int, density: float, temperature: float, normalize: str
) -> list[BeamDoc]:
    # Uncalibrated beams: evaluate and calibrate apply the isotonic map to the candidates.
    return beam_docs(pipe, docs, width, density, temperature, calibrate=False, normalize=normalize)


def parse_normalizations(spec: str | Sequence[str] | None, pipe: Any = None) -> list[str]:
    """``"none,local"`` -> ``["none", "local"]``; None: the component's own
    ``normalize`` (``"none"`` when it has none)."""
    if spec is None:
        spec = [str(getattr(pipe, "cfg", {}).get("normalize", "none"))]
    items = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [n for n in items if n]
    bad = [n for n in items if n not in NORMALIZATIONS]
    if not items or bad:
        raise ValueError(f"normalize must be among {NORMALIZATIONS}, got {spec!r}")
    return list(dict.fromkeys(items))


def parse_widths(spec: str | Sequence[int]) -> list[int]:
    widths = [int(w) for w in spec.split(",") if w.strip()] if isinstance(spec, str) else list(spec)
    if not widths or any(w < 1 for w in widths):
        raise ValueError(f"beam widths must be integers >= 1, got {spec!r}")
    return sorted(set(widths))


def evaluate(
    model: str | os.PathLike[str] | Language,
    data: str | os.PathLike[str],
    *,
    beam_widths: str | Sequence[int] = (1, 2, 4, 8, 16, 32),
    beam_density: float = 0.0001,
    normalize: str | Sequence[str] | None = None,
    fmt: str = "auto",
    sentences_per_doc: int = 1,
    label_map: str | dict[str, str] | None = None,
    n_bins: int = 10,
    batch_size: int = 128,
    output_dir: str | os.PathLike[str] | None = None,
    gpu_id: int = -1,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Per normalization (``normalize``: one or a list, e.g. ``"none,local"``;
    default the component's) and beam width, one row of ``widths``: top-1
    precision/recall/F1, the F1 of marginal decoding (``marginal_*``: every
    entity with marginal > 0.5), oracle P/R/F1 (per doc, the parse in the
    beam with the fewest errors), how often the top parse is such a best one
    (``top_is_best``), how often the beam holds an exact parse
    (``exact_in_beam``), the mean ``coverage`` (model probability the beam
    holds; None when the normalization has none), and the calibration of the
    entity probabilities as users get them (the component's temperature and
    isotonic calibration applied): ``ece`` over every candidate, ``ece_p10``
    over candidates with p >= 0.1, ``precision_p90`` of those with p >= 0.9,
    ``brier``, ``nll`` and a ``reliability`` table. With ``output_dir``:
    ``evaluation.json``, ``f1_vs_width.png`` and ``reliability.png`` (or
    ``plots_skipped`` saying why)."""
    widths = parse_widths(beam_widths)
    nlp = load_model(model, gpu_id)
    pipe = find_ner(nlp)
    normalizations = parse_normalizations(normalize, pipe)
    temperature = float(pipe.cfg.get("temperature", 1.0))
    lmap = parse_label_map(label_map)
    gold_docs = read_gold(data, nlp, fmt, sentences_per_doc=sentences_per_doc)
    stats = _collect(
        nlp,
        gold_docs,
        widths,
        beam_density,
        temperature,
        lmap,
        batch_size,
        progress,
        normalizations,
    )
    report: dict[str, Any] = {
        "model": str(model) if not isinstance(model, Language) else nlp.meta.get("name"),
        "data": str(data),
        "n_docs": len(gold_docs),
        "n_gold_entities": sum(len(g.gold) for g in gold_docs),
        "beam_density": beam_density,
        "normalizations": normalizations,
        "temperature": temperature,
        "calibration": _calibration_name(pipe),
        "label_map": lmap,
        "widths": [],
    }
    for (n, w), s in stats.items():
        calibrator = calibrator_for(pipe.cfg, n)
        cal = s.candidates.metrics(temperature, n_bins, calibrator)
        report["widths"].append({**_row(n, w, s, cal), "spans": s.spans.report(n_bins)})
    if output_dir is not None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        plots = write_plots(report, out)
        report.update(plots)
        (out / "evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _calibration_name(pipe: Any) -> str | None:
    obj = pipe.cfg.get("calibration")
    if not obj:
        return None
    return f"{obj.get('method')} (fit under normalize={obj.get('normalize', 'none')!r})"


def _row(normalize: str, width: int, s: _WidthStats, cal: dict[str, Any]) -> dict[str, Any]:
    oracle = {f"oracle_{k}": v for k, v in s.oracle.prf().items()}
    marginal = {f"marginal_{k}": v for k, v in s.marginal.prf().items()}
    return {
        "normalize": normalize,
        "width": width,
        **s.top.prf(),
        **marginal,
        **oracle,
        "top_is_best": s.top_is_best / s.n_docs if s.n_docs else 0.0,
        "exact_in_beam": s.exact_in_beam / s.n_docs if s.n_docs else 0.0,
        "coverage": sum(s.coverage) / len(s.coverage) if s.coverage else None,
        "calibration": cal["calibration"],
        "n_candidates": cal["n_candidates"],
        "ece": cal["ece"],
        "ece_p10": cal["ece_p10"],
        "n_p10": cal["n_p10"],
        "precision_p90": cal["precision_p90"],
        "n_p90": cal["n_p90"],
        "brier": cal["brier"],
        "nll": cal["nll"],
        "reliability": cal["reliability"],
        "seconds": s.seconds,
    }


def write_plots(report: dict[str, Any], out: Path) -> dict[str, Any]:
    """F1/oracle F1 vs width and a reliability diagram (one panel per
    normalization) as PNGs; without matplotlib, ``{"plots_skipped": reason}``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        return {"plots_skipped": f"matplotlib is not installed ({err}); pip install matplotlib"}
    rows = report["widths"]
    norms = list(dict.fromkeys(r.get("normalize", "none") for r in rows))
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    ax.set_xscale("log", base=2)  # before the ticks, which then keep their labels
    for n in norms:
        sub = [r for r in rows if r.get("normalize", "none") == n]
        widths = [r["width"] for r in sub]
        tag = f" ({n})" if len(norms) > 1 else ""
        ax.plot(widths, [r["f1"] for r in sub], "o-", label=f"top-1 F1{tag}")
        ax.plot(widths, [r["oracle_f1"] for r in sub], "s--", label=f"oracle F1{tag}")
        ax.set_xticks(widths, [str(w) for w in widths])
    ax.set_xlabel("beam width")
    ax.set_ylabel("F1")
    ax.set_title(Path(report["data"]).name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    f1_path = out / "f1_vs_width.png"
    fig.savefig(f1_path)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(norms), figsize=(4.5 * len(norms), 4.5), dpi=100, squeeze=False)
    for ax, n in zip(axes[0], norms):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, label="perfect calibration")
        for r in rows:
            if r.get("normalize", "none") != n or r["width"] == 1:
                continue  # a single parse: every probability is 1
            bins = [b for b in r["reliability"] if b["count"]]
            ax.plot(
                [b["confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                "o-",
                ms=3,
                label=f"width {r['width']} (ECE p>=0.1 {r['ece_p10']:.3f})",
            )
        ax.set_xlabel("entity probability")
        ax.set_ylabel("fraction correct")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        cal = report.get("calibration") or f"T = {report['temperature']:.3g}"
        ax.set_title(f"normalize={n}, {cal}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    rel_path = out / "reliability.png"
    fig.savefig(rel_path)
    plt.close(fig)
    return {"plots": [str(f1_path), str(rel_path)]}


def calibrate(
    model: str | os.PathLike[str] | Language,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    method: str = "temperature",
    per_label: bool = False,
    eval_data: str | os.PathLike[str] | None = None,
    holdout: float = 0.5,
    beam_width: int | None = None,
    beam_density: float | None = None,
    normalize: str | None = None,
    objective: str = "nll",
    fmt: str = "auto",
    sentences_per_doc: int = 1,
    label_map: str | dict[str, str] | None = None,
    n_bins: int = 10,
    batch_size: int = 128,
    gpu_id: int = -1,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Fit a calibration of the beam's entity probabilities on ``data`` and
    store it in the ``beamner_ner`` component, so that it is saved with the
    pipeline and applied wherever probabilities come out:

    - ``method="temperature"``: ``T`` of ``softmax(score / T)`` (``objective``
      ``nll`` or ``brier``), stored as ``temperature``; clears an isotonic map.
    - ``method="isotonic"``: a monotone map of entity probabilities fitted by
      isotonic regression (``per_label``: one per label with enough data),
      stored as ``calibration`` in the component's cfg, on top of its
      temperature.

    Fits and applies under one beam normalization (``normalize``, default the
    component's; stored as the component's ``normalize``). Saves the pipeline
    to ``output`` and reports before/after on data it did not fit on:
    ``eval_data``, or else the last ``holdout`` fraction of ``data``.
    ``heldout.methods`` gives both methods' held-out numbers, whichever is
    stored. Beam width and density default to the component's."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    nlp = load_model(model, gpu_id)
    accelerate(nlp)
    name = ner_name(nlp)
    pipe = find_ner(nlp)
    norms = parse_normalizations(normalize, pipe)
    if len(norms) != 1:
        raise ValueError(f"calibrate fits one normalization at a time, got {normalize!r}")
    norm = norms[0]
    width = int(beam_width if beam_width is not None else pipe.cfg["beam_width"])
    density = float(beam_density if beam_density is not None else pipe.cfg["beam_density"])
    before_t = float(pipe.cfg.get("temperature", 1.0))
    before_cal = calibrator_for(pipe.cfg, norm)
    lmap = parse_label_map(label_map)
    fit_docs = read_gold(data, nlp, fmt, sentences_per_doc=sentences_per_doc)
    if eval_data is not None:
        held = read_gold(eval_data, nlp, fmt, sentences_per_doc=sentences_per_doc)
    else:
        if not 0.0 < holdout < 1.0:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        cut = len(fit_docs) - max(1, math.floor(len(fit_docs) * holdout))
        fit_docs, held = fit_docs[:cut], fit_docs[cut:]
    if not fit_docs or not held:
        raise ValueError("calibrate needs documents both to fit on and to report on")

    coverage: dict[str, float | None] = {}

    def beams(docs: list[GoldDoc], part: str) -> CandidateSet:
        got = _collect(nlp, docs, [width], density, 1.0, lmap, batch_size, progress, [norm])
        stats = got[norm, width]
        coverage[part] = sum(stats.coverage) / len(stats.coverage) if stats.coverage else None
        return stats.candidates

    fit = beams(fit_docs, "fit")
    if len(fit) == 0:
        raise ValueError("the beam proposed no entities on the fit data: nothing to calibrate")
    rep = beams(held, "heldout")
    temperature = fit_temperature(fit, objective)
    p_fit, y_fit = fit.probabilities(before_t)
    isotonic = fit_isotonic(p_fit, y_fit, fit.flat_labels(), per_label=per_label, normalize=norm)
    settings: dict[str, tuple[float, IsotonicCalibrator | None]] = {
        "temperature": (temperature, None),
        "isotonic": (before_t, isotonic),
    }
    after_t, after_cal = settings[method]
    pipe.cfg["temperature"] = after_t
    pipe.cfg["calibration"] = after_cal.to_dict() if after_cal is not None else None
    pipe.cfg["normalize"] = norm
    config = nlp._pipe_configs[name]
    config["temperature"] = after_t
    if "normalize" in config:
        config["normalize"] = norm
    result: dict[str, Any] = {
        "method": method,
        "per_label": sorted(isotonic.per_label) if method == "isotonic" else None,
        "temperature": after_t,
        "fitted_temperature": temperature,
        "objective": objective,
        "normalize": norm,
        "beam_width": width,
        "beam_density": density,
        "fit": {
            "data": str(data),
            "n_docs": len(fit_docs),
            "coverage": coverage["fit"],
            "before": _summary(fit.metrics(before_t, n_bins, before_cal)),
            "after": _summary(fit.metrics(after_t, n_bins, after_cal)),
        },
        "heldout": {
            "data": str(eval_data) if eval_data is not None else f"last {holdout:g} of {data}",
            "n_docs": len(held),
            "coverage": coverage["heldout"],
            "before": rep.metrics(before_t, n_bins, before_cal),
            "after": rep.metrics(after_t, n_bins, after_cal),
            "methods": {m: _summary(rep.metrics(t, n_bins, c)) for m, (t, c) in settings.items()},
        },
    }
    if output is not None:
        nlp.to_disk(Path(output))
        result["output"] = str(output)
    return result


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "reliability"}
