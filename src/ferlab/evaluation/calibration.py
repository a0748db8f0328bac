"""Moved to ``ferlab.calibration`` (the ground floor, shared by training, evaluation and inference); this
name stays importable for old importers only."""

from ..calibration import expected_calibration_error, fit_temperature, nll, reliability, softmax  # noqa: F401
