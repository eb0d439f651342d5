"""``threshold``: certify, from yes/no answers alone, the lowest probability
threshold whose entities have precision >= a target with a stated
confidence (:mod:`beamner.probabilities.guarantee`), and save the pipeline
serving it (``decode="precision"``: ``doc.ents`` holds the entities with
calibrated p >= the threshold)."""

from __future__ import annotations

import os
from typing import Any

from spacy.language import Language

from beamner.engine.pipes import upstream_disabled
from beamner.engine.settings import DEFAULT_SPANS_KEY, BeamSettings, Normalize
from beamner.evaluation.answers import score_answers
from beamner.evaluation.calibrate import save_pipeline
from beamner.evaluation.evaluate import load_for_fit
from beamner.io.atomic import check_output
from beamner.io.records import read_records
from beamner.pipeline import accelerate
from beamner.probabilities.beams import beam_docs
from beamner.probabilities.calibrators import calibrator_of
from beamner.probabilities.guarantee import THRESHOLD_GRID, certify_threshold

__all__ = ["NoThresholdError", "threshold"]


class NoThresholdError(ValueError):
    """No threshold can be certified with the answers given (nothing is written)."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def threshold(
    model: str | os.PathLike[str] | Language,
    answers: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    *,
    precision: float = 0.9,
    confidence: float = 0.9,
    beam_width: int | None = None,
    beam_density: float | None = None,
    normalize: Normalize | str | None = None,
    batch: str | os.PathLike[str] | None = None,
    batch_format: str = "auto",
    batch_size: int = 128,
    gpu_id: int = -1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """The lowest threshold ``t`` (0.99, 0.98, ... tested high to low) such
    that the entities with p >= t, p as the pipeline serves it (its
    temperature and calibration applied: fit them first with ``calibrate
    --format answers``), have precision >= ``precision`` with confidence
    ``confidence``, from the weighted answers in ``answers`` alone. Saves the
    pipeline with ``decode="precision"`` and ``precision_threshold=t`` to
    ``output``. Raises :class:`NoThresholdError` (with the result: what was
    tested) and writes nothing when no threshold can be certified.

    ``batch``: texts about to be labelled (a records file, as ``annotate``
    reads). The guarantee is then about the precision realized on that batch
    (:mod:`beamner.probabilities.guarantee`): for each threshold the pipeline
    counts the entities it would put in ``doc.ents`` there, which needs no
    label. Without it, about the precision of the stream the answers came
    from, around which a batch's precision scatters."""
    check_output(output, [model, answers, batch], folder=True, overwrite=overwrite)
    if not 0.0 < precision < 1.0 or not 0.0 < confidence < 1.0:
        raise ValueError(
            f"precision and confidence must be in (0, 1), got {precision} and {confidence}"
        )
    nlp, pipe, settings = load_for_fit(
        model,
        beam_width=beam_width,
        beam_density=beam_density,
        normalize=normalize,
        gpu_id=gpu_id,
        command="threshold",
    )
    cands, counts = score_answers(nlp, answers, settings, batch_size=batch_size)
    cal = calibrator_of(settings)
    p = cands.probabilities(settings.temperature)
    if cal is not None:
        p = cal(p, cands.labels)
    y, w = cands.arrays()
    in_batch = None
    if batch is not None:
        in_batch = _batch_counts(nlp, pipe, settings, batch, batch_format, batch_size)
    found = certify_threshold(
        p,
        y,
        w,
        precision=precision,
        confidence=confidence,
        batch_counts=None if in_batch is None else in_batch.__getitem__,
    )
    notes = list(counts.notes)
    if cal is None:
        notes.append(
            "the pipeline has no calibration map under this normalization: the threshold is "
            "on the beam's own probability (fit one first: calibrate --format answers)"
        )
    result: dict[str, Any] = {
        "answers": {"data": str(answers), **counts.as_dict()},
        "weighted": counts.n_unweighted < len(cands),
        "calibrated": cal is not None,
        "batch": None
        if in_batch is None
        else {"data": str(batch), "n_entities": in_batch.get(found.threshold or -1.0)},
        "normalize": settings.normalize,
        "beam_width": settings.width,
        "beam_density": settings.density,
        **found.as_dict(),
        "notes": notes,
    }
    if found.threshold is None:
        raise NoThresholdError(
            f"{found.reason} ({len(cands)} answered spans): nothing written", result
        )
    accelerate(
        nlp,
        beam_width=settings.width,
        beam_density=settings.density,
        normalize=settings.normalize,
        decode="precision",
        precision_threshold=found.threshold,
        spans_key=settings.spans_key or DEFAULT_SPANS_KEY,
    )
    if output is not None:
        save_pipeline(
            nlp,
            output,
            info={"command": "threshold", "precision": precision, "confidence": confidence},
        )
        result["output"] = str(output)
    return result


def _batch_counts(
    nlp: Language,
    pipe: Any,
    settings: BeamSettings,
    path: str | os.PathLike[str],
    fmt: str,
    batch_size: int,
) -> dict[float, int]:
    """For each threshold of the grid, how many entities the pipeline would put
    in ``doc.ents`` over the texts of ``path`` in precision mode at it."""
    from beamner.probabilities.decoding import most_probable_entities  # precision mode's rule

    counts = dict.fromkeys(THRESHOLD_GRID, 0)
    records = list(read_records(path, fmt))
    disabled = upstream_disabled(nlp)
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        docs = [d for d in nlp.pipe((r.make_doc(nlp) for r in chunk), disable=disabled) if len(d)]
        for beam in beam_docs(pipe, docs, settings) if docs else []:
            for t in THRESHOLD_GRID:
                counts[t] += len(most_probable_entities(beam.entities, t))
    return counts
