"""Measuring a pipeline's beam against gold data: ``evaluate``, ``calibrate``,
``compare``, blind A/B and the precision ``threshold``."""

from beamner.evaluation.calibrate import calibrate
from beamner.evaluation.compare import compare
from beamner.evaluation.evaluate import evaluate

__all__ = ["calibrate", "compare", "evaluate"]
