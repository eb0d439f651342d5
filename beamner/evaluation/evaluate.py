"""``evaluate``: beam quality and entity-probability calibration on gold data
(read by :mod:`beamner.io.gold`).

A prediction is correct when start, end and label all match a gold entity.
``label_map`` (``{"PERSON": "PER", ...}``) renames predicted labels; when
given, predicted entities whose label is not in it are ignored (neither right
nor wrong), to compare a model with a corpus that has other labels.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacy.language import Language
from spacy.tokens import Doc

from beamner.engine.pipes import find_ner, load_model, upstream_disabled
from beamner.engine.settings import NORMALIZE_CHOICES, BeamSettings
from beamner.evaluation.metrics import Counts
from beamner.evaluation.plots import write_plots
from beamner.evaluation.spans import SpanStats
from beamner.io.atomic import atomic_write_text
from beamner.io.gold import Entity, GoldDoc, check_label_overlap, parse_label_map, read_gold
from beamner.io.records import progress_bar
from beamner.probabilities.beams import BeamDoc, beam_docs
from beamner.probabilities.calibration import CandidateSet
from beamner.probabilities.calibrators import calibrator_for
from beamner.probabilities.decoding import marginal_entities

__all__ = [
    "WidthStats",
    "collect",
    "evaluate",
    "load_for_fit",
    "parse_normalizations",
    "parse_widths",
]


def _mapped(ents: Sequence[Entity], label_map: dict[str, str] | None) -> set[Entity]:
    if label_map is None:
        return set(ents)
    return {(s, e, label_map[lab]) for s, e, lab in ents if lab in label_map}


@dataclass
class WidthStats:
    """What one (normalization, width) run of :func:`collect` measured."""

    top: Counts = field(default_factory=Counts)
    oracle: Counts = field(default_factory=Counts)
    marginal: Counts = field(default_factory=Counts)
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


def collect(
    nlp: Language,
    gold_docs: Sequence[GoldDoc],
    widths: Sequence[int],
    density: float,
    temperature: float,
    label_map: dict[str, str] | None,
    batch_size: int,
    progress: bool | None = None,
    normalizations: Sequence[str] = ("none",),
) -> dict[tuple[str, int], WidthStats]:
    pipe = find_ner(nlp)
    disabled = upstream_disabled(nlp)
    base = BeamSettings.from_pipe(pipe, beam=True, density=density, temperature=temperature)
    stats = {(n, w): WidthStats() for n in normalizations for w in widths}
    bar = progress_bar(len(gold_docs), progress, "beam")
    try:
        for i in range(0, len(gold_docs), batch_size):
            chunk = gold_docs[i : i + batch_size]
            docs = list(nlp.pipe([g.doc for g in chunk], disable=disabled))
            for n, w in stats:
                t0 = time.perf_counter()
                settings = base.replace(width=w, normalize=n)
                beams = _beams(pipe, docs, settings)
                stats[n, w].seconds += time.perf_counter() - t0
                for g, beam in zip(chunk, beams):
                    stats[n, w].add(beam, g.gold, label_map)
            bar.update(len(chunk))
    finally:
        bar.close()
    return stats


def _beams(pipe: Any, docs: list[Doc], settings: BeamSettings) -> list[BeamDoc]:
    # Uncalibrated beams: evaluate and calibrate apply the isotonic map to the candidates.
    return beam_docs(pipe, docs, settings, calibrate=False)


def parse_normalizations(spec: str | Sequence[str] | None, pipe: Any = None) -> list[str]:
    """``"none,local"`` -> ``["none", "local"]``; None: the component's own
    ``normalize`` (``"none"`` when it has none)."""
    if spec is None:
        spec = [BeamSettings.from_pipe(pipe).normalize]
    items = [n.strip() for n in spec.split(",")] if isinstance(spec, str) else list(spec)
    items = [n for n in items if n]
    bad = [n for n in items if n not in NORMALIZE_CHOICES]
    if not items or bad:
        raise ValueError(f"--normalize must be among {NORMALIZE_CHOICES}, got {spec!r}")
    return list(dict.fromkeys(items))


def load_for_fit(
    model: str | os.PathLike[str] | Language,
    *,
    beam_width: int | None,
    beam_density: float | None,
    normalize: str | None,
    gpu_id: int = -1,
    command: str = "calibrate",
) -> tuple[Language, Any, BeamSettings]:
    """The pipeline a fit (``calibrate``, ``threshold``) reads, its NER and the
    beam it fits under: one normalization, width and density defaulting to
    the component's (:meth:`BeamSettings.from_pipe` with ``beam=True``)."""
    nlp = load_model(model, gpu_id)
    pipe = find_ner(nlp)
    norms = parse_normalizations(normalize, pipe)
    if len(norms) != 1:
        raise ValueError(f"{command} fits under one normalization at a time, got {normalize!r}")
    settings = BeamSettings.from_pipe(
        pipe, beam=True, width=beam_width, density=beam_density, normalize=norms[0]
    )
    return nlp, pipe, settings


def parse_widths(spec: str | Sequence[int]) -> list[int]:
    """``"1,4,16"`` -> ``[1, 4, 16]`` (sorted, unique); errors name ``--beam-widths``."""
    try:
        items = spec.split(",") if isinstance(spec, str) else list(spec)
        widths = [int(w) for w in items if str(w).strip()]
        for w in widths:
            BeamSettings(width=w)
    except (TypeError, ValueError) as err:
        raise ValueError(f"--beam-widths: {spec!r} is not a list of beam widths ({err})") from None
    if not widths:
        raise ValueError(f"--beam-widths: {spec!r} names no width")
    return sorted(set(widths))


def evaluate(
    model: str | os.PathLike[str] | Language,
    data: str | os.PathLike[str],
    *,
    beam_widths: str | Sequence[int] = (1, 2, 4, 8, 16, 32),
    beam_density: float = BeamSettings.density,
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
    temperature = BeamSettings.from_pipe(pipe).temperature
    lmap = parse_label_map(label_map)
    gold_docs = read_gold(data, nlp, fmt, sentences_per_doc=sentences_per_doc)
    check_label_overlap(pipe.labels, gold_docs, lmap)
    stats = collect(
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
        atomic_write_text(out / "evaluation.json", json.dumps(report, indent=2) + "\n")
    return report


def _calibration_name(pipe: Any) -> str | None:
    obj = pipe.cfg.get("calibration")
    if not obj:
        return None
    return f"{obj.get('method')} (fit under normalize={obj.get('normalize', 'none')!r})"


def _row(normalize: str, width: int, s: WidthStats, cal: dict[str, Any]) -> dict[str, Any]:
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
