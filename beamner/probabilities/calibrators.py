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


def _isotonic_map(probs: NDArray[Any], correct: NDArray[Any]) -> PiecewiseLinear:
    try:
        from sklearn.isotonic import IsotonicRegression
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f'isotonic calibration needs scikit-learn ({err}); pip install "beamner[calibration]"'
        ) from None
    reg = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    reg.fit(probs, correct.astype(numpy.float64))
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
) -> IsotonicCalibrator:
    """Fit ``p -> P(correct | p)`` by isotonic regression over candidate
    entities. With ``per_label``, labels with at least ``min_label_count``
    candidates, both right and wrong ones among them, get their own map."""
    p = numpy.asarray(probs, dtype=numpy.float64)
    y = numpy.asarray(correct, dtype=numpy.bool_)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"probs {p.shape} and correct {y.shape} must be equal 1-d shapes")
    if p.size == 0:
        raise ValueError("isotonic calibration needs at least one candidate entity")
    if not numpy.all((p >= 0.0) & (p <= 1.0)):
        raise ValueError("probabilities to calibrate must be in [0, 1]")
    shared = _isotonic_map(p, y)
    maps: dict[str, PiecewiseLinear] = {}
    if per_label:
        if labels is None or len(labels) != p.size:
            raise ValueError("per-label calibration needs one label per candidate")
        label_array = numpy.asarray(labels, dtype=object)
        for label in sorted(set(labels)):
            mask = label_array == label
            if mask.sum() >= min_label_count and 0 < y[mask].sum() < mask.sum():
                maps[str(label)] = _isotonic_map(p[mask], y[mask])
    return IsotonicCalibrator(shared, maps, normalize)
