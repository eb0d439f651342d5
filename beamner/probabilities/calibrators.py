"""Calibrators of entity probabilities, fitted on gold data by ``beamner calibrate``.

Two methods:

- ``temperature``: parse probabilities ``softmax(score / T)`` over the final beam
  (:func:`beamner.probabilities.calibration.fit_temperature`); one number, the
  ranking of the parses is unchanged. Stored as ``temperature`` in the
  component's cfg.
- ``isotonic``: a monotone map from an entity's beam probability (at the
  component's temperature) to the fraction of such entities that are right,
  fitted by isotonic regression (scikit-learn's ``IsotonicRegression``),
  optionally one map per label. It can bend where one temperature cannot
  (e.g. a beam that is overconfident near 1 and underconfident near 0.3).
  Stored as the thresholds of the piecewise-linear map in the component's cfg
  under ``calibration`` (so ``nlp.to_disk``/``spacy.load`` and
  ``to_bytes``/``from_bytes`` restore it, and applying it needs numpy only).

Calibrated probabilities are per entity: they no longer sum over parses, so
marginal decoding (``decode = "marginal"``) uses the beam's own marginals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy
import srsly
from numpy.typing import NDArray

from beamner.engine.settings import BeamSettings

__all__ = [
    "CALIBRATION_METHODS",
    "IsotonicCalibrator",
    "PiecewiseLinear",
    "apply_calibration",
    "apply_calibration_with_bounds",
    "calibrate_bound_rows",
    "calibrator_for",
    "calibrator_from_cfg",
    "calibrator_of",
    "fit_isotonic",
]

CALIBRATION_METHODS = ("temperature", "isotonic")


@dataclass(frozen=True)
class PiecewiseLinear:
    """``y = interp(p, x, y)``: linear between thresholds, constant beyond the
    ends (scikit-learn's ``IsotonicRegression.predict`` with
    ``out_of_bounds="clip"``)."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or not self.x:
            raise ValueError(
                f"a calibration map needs as many x as y thresholds (>= 1), "
                f"got {len(self.x)} and {len(self.y)}"
            )
        x = numpy.asarray(self.x, dtype=numpy.float64)
        y = numpy.asarray(self.y, dtype=numpy.float64)
        if not (numpy.all(numpy.isfinite(x)) and numpy.all(numpy.isfinite(y))):
            raise ValueError("calibration thresholds must be finite")
        if numpy.any(numpy.diff(x) <= 0):
            raise ValueError("calibration x thresholds must be strictly increasing")
        if numpy.any(numpy.diff(y) < 0) or y[0] < 0.0 or y[-1] > 1.0:
            raise ValueError("calibration y thresholds must be non-decreasing, in [0, 1]")

    def __call__(self, probs: NDArray[Any]) -> NDArray[numpy.float64]:
        return numpy.interp(numpy.asarray(probs, dtype=numpy.float64), self.x, self.y)

    def to_dict(self) -> dict[str, list[float]]:
        return {"x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> PiecewiseLinear:
        try:
            return cls(tuple(float(v) for v in obj["x"]), tuple(float(v) for v in obj["y"]))
        except (KeyError, TypeError) as err:
            raise ValueError(f"bad calibration map {obj!r}: {err}") from None


@dataclass(frozen=True)
class IsotonicCalibrator:
    """One isotonic map for every label, and optionally one per label (labels
    without their own map use the shared one)."""

    shared: PiecewiseLinear
    per_label: dict[str, PiecewiseLinear] = field(default_factory=dict)
    #: the beam normalization the map was fitted on
    normalize: str = "none"

    method = "isotonic"

    def __call__(
        self, probs: NDArray[Any] | Sequence[float], labels: Sequence[str] | None = None
    ) -> NDArray[numpy.float64]:
        p = numpy.asarray(probs, dtype=numpy.float64)
        out = self.shared(p)
        if self.per_label and labels is not None:
            if len(labels) != p.shape[0]:
                raise ValueError(f"{p.shape[0]} probabilities but {len(labels)} labels")
            label_array = numpy.asarray(labels, dtype=object)
            for label, fn in self.per_label.items():
                mask = label_array == label
                if mask.any():
                    out[mask] = fn(p[mask])
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "normalize": self.normalize,
            **self.shared.to_dict(),
            "per_label": {k: v.to_dict() for k, v in sorted(self.per_label.items())},
        }

    @classmethod
    def from_dict(cls, obj: Mapping[str, Any]) -> IsotonicCalibrator:
        if obj.get("method") != cls.method:
            raise ValueError(f"not an isotonic calibration: method {obj.get('method')!r}")
        per_label = obj.get("per_label") or {}
        if not isinstance(per_label, Mapping):
            raise ValueError(f"calibration per_label must be a mapping, got {per_label!r}")
        return cls(
            PiecewiseLinear.from_dict(obj),
            {str(k): PiecewiseLinear.from_dict(v) for k, v in per_label.items()},
            str(obj.get("normalize", "none")),
        )


def calibrator_from_cfg(cfg: Mapping[str, Any]) -> IsotonicCalibrator | None:
    """The calibrator stored in a component's cfg (``calibration``), or None."""
    obj = cfg.get("calibration")
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise ValueError(f"the component's 'calibration' must be a mapping, got {obj!r}")
    return IsotonicCalibrator.from_dict(obj)


def calibrator_of(settings: BeamSettings) -> IsotonicCalibrator | None:
    """The calibrator stored in ``settings`` if it was fitted on beams of their
    normalization (:meth:`BeamSettings.fitted_calibration`), else None."""
    obj = settings.fitted_calibration()
    return None if obj is None else IsotonicCalibrator.from_dict(obj)


def calibrator_for(cfg: Mapping[str, Any], normalize: str) -> IsotonicCalibrator | None:
    """:func:`calibrator_of` the settings in a component's cfg, read under ``normalize``."""
    return calibrator_of(BeamSettings.from_cfg(cfg, normalize=normalize))


def apply_calibration(
    probs: Mapping[tuple[int, int, str], float], calibrator: IsotonicCalibrator | None
) -> dict[tuple[int, int, str], float]:
    """``{(start, end, label): p}`` with each ``p`` mapped by ``calibrator``
    (unchanged when None)."""
    if calibrator is None or not probs:
        return dict(probs)
    keys = list(probs)
    mapped = calibrator(
        numpy.fromiter(probs.values(), numpy.float64, len(keys)), [k[2] for k in keys]
    )
    return {k: float(v) for k, v in zip(keys, mapped)}


def apply_calibration_with_bounds(
    probs: Mapping[tuple[int, int, str], float],
    bounds: Mapping[tuple[int, int, str], tuple[float, float]],
    calibrator: IsotonicCalibrator | None,
) -> tuple[dict[tuple[int, int, str], float], dict[tuple[int, int, str], tuple[float, float]]]:
    """Calibrated probabilities and their calibrated bounds: the same monotone
    map (the entity's label's) applied to the score and to both ends of its
    ``(lower, upper)`` interval, so a calibrated score lies inside its
    calibrated bounds whenever the raw score lies inside the raw bounds (the
    beam posterior always does: ``lower <= lower / coverage <= upper``).

    The bounds are the model's own (temperature 1); a stored temperature
    other than 1 can move a score past them, and then the interval is
    widened to hold the calibrated score rather than print a score outside
    its bounds. Entities without bounds keep none; bounds without a
    probability are mapped too."""
    if calibrator is None:
        out_b = {k: (float(lo), float(hi)) for k, (lo, hi) in bounds.items()}
    else:
        keys = list(bounds)
        labels = [k[2] for k in keys]
        lows = numpy.fromiter((bounds[k][0] for k in keys), numpy.float64, len(keys))
        highs = numpy.fromiter((bounds[k][1] for k in keys), numpy.float64, len(keys))
        mapped_lo = calibrator(lows, labels) if keys else lows
        mapped_hi = calibrator(highs, labels) if keys else highs
        out_b = {k: (float(lo), float(hi)) for k, lo, hi in zip(keys, mapped_lo, mapped_hi)}
    out_p = apply_calibration(probs, calibrator)
    for key, p in out_p.items():
        if key in out_b:
            lo, hi = out_b[key]
            # A posterior summed in floats can exceed 1 by an ulp: bounds stay in [0, 1].
            held = min(max(p, 0.0), 1.0)
            out_b[key] = (min(lo, held), max(hi, held))
    return out_p, out_b


def calibrate_bound_rows(
    rows: NDArray[Any],
    labels: Sequence[str],
    scores: NDArray[Any] | Sequence[float],
    calibrator: IsotonicCalibrator | None,
) -> NDArray[numpy.float64]:
    """:func:`apply_calibration_with_bounds` for a span group's arrays: ``rows``
    (n, 2) raw ``(lower, upper)``, each span's label and its served
    (calibrated) score; returns the (n, 2) calibrated bounds, each holding its
    score."""
    b = numpy.asarray(rows, dtype=numpy.float64).reshape(-1, 2)
    s = numpy.asarray(scores, dtype=numpy.float64)
    if b.shape[0] != s.shape[0] or len(labels) != s.shape[0]:
        raise ValueError(f"{b.shape[0]} bounds, {s.shape[0]} scores and {len(labels)} labels")
    if calibrator is not None and b.shape[0]:
        b = numpy.stack([calibrator(b[:, 0], labels), calibrator(b[:, 1], labels)], axis=1)
    held = numpy.clip(s, 0.0, 1.0)  # a float-summed posterior may pass 1 by an ulp
    return numpy.stack([numpy.minimum(b[:, 0], held), numpy.maximum(b[:, 1], held)], axis=1)


def _pava_min_block(
    probs: NDArray[Any], correct: NDArray[Any], weights: NDArray[Any] | None, min_block: int
) -> dict[str, list[float]]:
    """Weighted isotonic regression (pool adjacent violators), then the
    block with the fewest answers merged into its nearer-valued neighbour
    until every block holds at least ``min_block`` answers: merging two
    adjacent blocks keeps the fit monotone (the merged mean lies between
    them). Returns each block's ends with its value, as scikit-learn's
    ``X_thresholds_``/``y_thresholds_``."""
    order = numpy.argsort(probs, kind="stable")
    x = numpy.asarray(probs, dtype=numpy.float64)[order]
    y = numpy.asarray(correct, dtype=numpy.float64)[order]
    w = numpy.ones_like(x) if weights is None else numpy.asarray(weights, numpy.float64)[order]
    blocks: list[list[float]] = []  # [sum w*y, sum w, count, x min, x max]
    for xi, yi, wi in zip(x.tolist(), y.tolist(), w.tolist()):
        blocks.append([wi * yi, wi, 1.0, xi, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            b = blocks.pop()
            a = blocks[-1]
            a[0], a[1], a[2], a[4] = a[0] + b[0], a[1] + b[1], a[2] + b[2], b[4]
    while len(blocks) > 1:
        i = min(range(len(blocks)), key=lambda k: blocks[k][2])
        if blocks[i][2] >= min_block:
            break
        if i == 0 or i == len(blocks) - 1:
            j = 1 if i == 0 else i - 1
        else:
            v = blocks[i][0] / blocks[i][1]
            left, right = (blocks[k][0] / blocks[k][1] for k in (i - 1, i + 1))
            j = i - 1 if abs(left - v) <= abs(right - v) else i + 1
        a, b = blocks[min(i, j)], blocks[max(i, j)]
        blocks[min(i, j)] = [a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3], b[4]]
        del blocks[max(i, j)]
    xs: list[float] = []
    ys: list[float] = []
    for b in blocks:
        for end in (b[3], b[4]):
            if not xs or end > xs[-1]:
                xs.append(end)
                ys.append(b[0] / b[1])
    return {"x": xs, "y": ys}


def _isotonic_map(
    probs: NDArray[Any],
    correct: NDArray[Any],
    weights: NDArray[Any] | None = None,
    min_block: int = 1,
) -> PiecewiseLinear:
    if min_block > 1:
        obj = _pava_min_block(probs, correct, weights, min_block)
    else:
        try:
            from sklearn.isotonic import IsotonicRegression
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"isotonic calibration needs scikit-learn ({err}); "
                'pip install "beamner[calibration]"'
            ) from None
        reg = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        reg.fit(probs, correct.astype(numpy.float64), sample_weight=weights)
        obj = {"x": reg.X_thresholds_.tolist(), "y": reg.y_thresholds_.tolist()}
    # What the pipeline's cfg keeps after a save (srsly's JSON rounds floats):
    # the calibrator in memory is exactly the one a reload gives.
    obj = srsly.json_loads(srsly.json_dumps(obj))
    x, y = numpy.asarray(obj["x"]), numpy.maximum.accumulate(numpy.clip(obj["y"], 0.0, 1.0))
    keep = numpy.concatenate([[True], numpy.diff(x) > 0])  # rounding may merge neighbours
    return PiecewiseLinear(tuple(x[keep].tolist()), tuple(y[keep].tolist()))


def fit_isotonic(
    probs: NDArray[Any] | Sequence[float],
    correct: NDArray[Any] | Sequence[bool],
    labels: Sequence[str] | None = None,
    *,
    per_label: bool = False,
    min_label_count: int = 200,
    normalize: str = "none",
    weights: NDArray[Any] | Sequence[float] | None = None,
    min_block: int = 1,
) -> IsotonicCalibrator:
    """Fit ``p -> P(correct | p)`` by isotonic regression over candidate
    entities. With ``per_label``, labels with at least ``min_label_count``
    candidates, both right and wrong ones among them, get their own map.
    ``weights`` (one per candidate, > 0): each candidate counts that many
    times, e.g. answers weighted by 1 / their inclusion probability
    (:mod:`beamner.teach.sampling`). ``min_block`` > 1: every level of the
    map holds at least that many candidates (few answers: a level fitted on
    a handful of answers is noise, see :mod:`beamner.probabilities.answered`)."""
    p = numpy.asarray(probs, dtype=numpy.float64)
    y = numpy.asarray(correct, dtype=numpy.bool_)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"probs {p.shape} and correct {y.shape} must be equal 1-d shapes")
    if p.size == 0:
        raise ValueError("isotonic calibration needs at least one candidate entity")
    if not numpy.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("probabilities to calibrate must be in [0, 1]")
    w = None
    if weights is not None:
        w = numpy.asarray(weights, dtype=numpy.float64)
        if w.shape != p.shape:
            raise ValueError(f"weights {w.shape} and probs {p.shape} differ in shape")
        if not numpy.all(numpy.isfinite(w) & (w > 0.0)):
            raise ValueError("calibration weights must be finite numbers > 0")
    shared = _isotonic_map(p, y, w, min_block)
    maps: dict[str, PiecewiseLinear] = {}
    if per_label:
        if labels is None or len(labels) != p.size:
            raise ValueError("per-label calibration needs one label per candidate")
        label_array = numpy.asarray(labels, dtype=object)
        for label in sorted(set(labels)):
            mask = label_array == label
            if mask.sum() >= min_label_count and 0 < y[mask].sum() < mask.sum():
                maps[str(label)] = _isotonic_map(
                    p[mask], y[mask], None if w is None else w[mask], min_block
                )
    return IsotonicCalibrator(shared, maps, normalize)
