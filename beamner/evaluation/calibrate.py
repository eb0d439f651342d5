"""``calibrate``: fit a calibration of the beam's entity probabilities on gold
data and save a pipeline that serves it (width, density, normalization, the
fitted map and a span group with the probabilities) on ``spacy.load``."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from spacy.language import Language

from beamner.engine.pipes import DERIVED_TAGS, mark_derived
from beamner.engine.settings import DEFAULT_SPANS_KEY, Normalize
from beamner.evaluation.evaluate import collect, load_for_fit
from beamner.io.atomic import check_output, swap_directory
from beamner.io.gold import GoldDoc, check_label_overlap, parse_label_map, read_gold
from beamner.pipeline import accelerate
from beamner.probabilities.calibration import CandidateSet, fit_temperature
from beamner.probabilities.calibrators import (
    CALIBRATION_METHODS,
    IsotonicCalibrator,
    calibrator_of,
    fit_isotonic,
)

__all__ = ["calibrate", "calibrate_answers", "save_pipeline"]


def save_pipeline(
    nlp: Language,
    output: str | os.PathLike[str],
    *,
    info: dict[str, Any] | None = None,
) -> Path:
    """Save ``nlp`` to the folder ``output`` through :func:`~beamner.io.atomic.swap_directory`
    (built beside, swapped in, marked as beamner's). Call
    :func:`~beamner.io.atomic.check_output` before the work that leads here.
    ``info["command"]`` names the pipeline as derived (:func:`mark_derived`)."""
    if info and info.get("command") in DERIVED_TAGS:
        mark_derived(nlp, str(info["command"]))
    return swap_directory(output, lambda tmp: nlp.to_disk(tmp), info=info)


def calibrate(
    model: str | os.PathLike[str] | Language,
    data: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    method: str = "isotonic",
    per_label: bool = False,
    eval_data: str | os.PathLike[str] | None = None,
    holdout: float = 0.5,
    beam_width: int | None = None,
    beam_density: float | None = None,
    normalize: Normalize | str | None = None,
    objective: str = "nll",
    fmt: str = "auto",
    sentences_per_doc: int = 1,
    label_map: str | dict[str, str] | None = None,
    n_bins: int = 10,
    batch_size: int = 128,
    gpu_id: int = -1,
    progress: bool | None = None,
    overwrite: bool = False,
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
    to the folder ``output`` (refused before any work if it is an input or a
    folder beamner did not write, unless ``overwrite``), set to serve what was
    fitted: ``spacy.load(output)`` runs the beam at the fitted width, density
    and normalization and puts the calibrated probabilities in
    ``doc.spans[spans_key]`` (the component's key, or ``"ner_probs"``).
    Reports before/after on data it did not fit on:
    ``eval_data``, or else the last ``holdout`` fraction of ``data``.
    ``heldout.methods`` gives both methods' held-out numbers, whichever is
    stored. Beam width and density default to the component's."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    check_output(output, [model, data, eval_data], folder=True, overwrite=overwrite)
    nlp, pipe, before = load_for_fit(
        model,
        beam_width=beam_width,
        beam_density=beam_density,
        normalize=normalize,
        gpu_id=gpu_id,
    )
    norm, width, density = before.normalize, before.width, before.density
    before_t = before.temperature
    before_cal = calibrator_of(before)
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
    check_label_overlap(pipe.labels, [*fit_docs, *held], lmap)

    coverage: dict[str, float | None] = {}

    def beams(docs: list[GoldDoc], part: str) -> CandidateSet:
        got = collect(nlp, docs, [width], density, 1.0, lmap, batch_size, progress, [norm])
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
    # Saved through the component's own settings (cfg and config), so that
    # spacy.load serves what was fitted.
    accelerate(
        nlp,
        beam_width=width,
        beam_density=density,
        normalize=norm,
        temperature=after_t,
        calibration=after_cal.to_dict() if after_cal is not None else None,
        spans_key=before.spans_key or DEFAULT_SPANS_KEY,
    )
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
        save_pipeline(nlp, output, info={"command": "calibrate", "method": method})
        result["output"] = str(output)
    return result


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "reliability"}


def calibrate_answers(
    model: str | os.PathLike[str] | Language,
    answers: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    method: str = "auto",
    per_label: bool = False,
    beam_width: int | None = None,
    beam_density: float | None = None,
    normalize: Normalize | str | None = None,
    batch_size: int = 128,
    gpu_id: int = -1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Fit the calibration on yes/no answers (``calibrate --format answers``):
    each accepted or rejected span is a labelled candidate scored by the
    model's beam, weighted by 1 / its recorded inclusion probability
    (:mod:`beamner.evaluation.answers`, :mod:`beamner.teach.sampling`).
    ``method``: ``"auto"`` (isotonic from
    :data:`~beamner.probabilities.answered.MIN_ISOTONIC_ANSWERS` answers,
    temperature below), ``"isotonic"`` or ``"temperature"``. Saves the
    pipeline to ``output`` as :func:`calibrate` does (nothing is written when
    the answers are bad). Reports the weighted ECE and precision at p >= 0.9
    of the answers before and after (in-sample), and ``cross_fitted``: the
    same after, each text's answers mapped by a fit on the other texts' (5
    folds), the honest estimate on the stream."""
    from beamner.evaluation.answers import score_answers
    from beamner.probabilities.answered import (
        cross_fitted_report,
        fit_from_answers,
        weighted_report,
    )

    if method not in ("auto", *CALIBRATION_METHODS):
        raise ValueError(f"method must be auto, isotonic or temperature, got {method!r}")
    check_output(output, [model, answers], folder=True, overwrite=overwrite)
    nlp, _, before = load_for_fit(
        model,
        beam_width=beam_width,
        beam_density=beam_density,
        normalize=normalize,
        gpu_id=gpu_id,
    )
    cands, counts = score_answers(nlp, answers, before, batch_size=batch_size)
    fit = fit_from_answers(
        cands,
        temperature=before.temperature,
        normalize=before.normalize,
        method=method,
        per_label=per_label,
    )
    y, w = cands.arrays()
    before_cal = calibrator_of(before)
    p_before = cands.probabilities(before.temperature)
    if before_cal is not None:
        p_before = before_cal(p_before, cands.labels)
    accelerate(
        nlp,
        beam_width=before.width,
        beam_density=before.density,
        normalize=before.normalize,
        temperature=fit.temperature,
        calibration=fit.calibrator.to_dict() if fit.calibrator is not None else None,
        spans_key=before.spans_key or DEFAULT_SPANS_KEY,
    )
    result: dict[str, Any] = {
        "method": fit.method,
        "why": fit.reason,
        "temperature": fit.temperature,
        "per_label": sorted(fit.calibrator.per_label) if fit.calibrator is not None else None,
        "normalize": before.normalize,
        "beam_width": before.width,
        "beam_density": before.density,
        "answers": {"data": str(answers), **counts.as_dict()},
        "weighted": counts.n_unweighted < len(cands),
        "before": weighted_report(p_before, y, w),
        "after": weighted_report(fit.probabilities(cands), y, w),
        # each text's answers mapped by a fit without them: the held-out estimate
        "cross_fitted": cross_fitted_report(
            cands,
            temperature=before.temperature,
            normalize=before.normalize,
            method=method,
            per_label=per_label,
        ),
    }
    if output is not None:
        save_pipeline(
            nlp, output, info={"command": "calibrate", "format": "answers", "method": fit.method}
        )
        result["output"] = str(output)
    return result
