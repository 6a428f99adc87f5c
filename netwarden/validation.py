"""Range checks shared by the settings dataclasses (windows, training): one error style."""

from __future__ import annotations

import math

__all__ = ["check_ranges"]


def check_ranges(config: object, constraints: dict[str, tuple[float, float]]) -> None:
    """Validate a settings object once: each named field is a number within its range; the
    error names the parameter and the range."""
    for name, (low, high) in constraints.items():
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
