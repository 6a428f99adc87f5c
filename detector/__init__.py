"""Scoring, thresholds, explanations, the anomaly lifecycle and alert sinks."""
