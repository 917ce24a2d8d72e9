"""Answers and how far to trust them: prediction, calibration, novelty, metrics, evaluation."""
