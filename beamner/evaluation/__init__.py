"""Measuring a pipeline's beam against gold data: ``evaluate`` and ``calibrate``."""
