"""Durations in settings (label delays, feature windows): one spelling, so feature names can carry it."""

from __future__ import annotations

import re
from typing import Any

from seqfraud.errors import ConfigError

DURATION_US = {
    "s": 1_000_000,
    "m": 60_000_000,
    "h": 3_600_000_000,
    "d": 86_400_000_000,
    "w": 604_800_000_000,
}


def duration_us(text: Any, key: str) -> int:
    """A duration such as ``90s``, ``15m``, ``1h``, ``30d`` or ``2w`` in microseconds; ``key`` names the setting.

    One spelling everywhere (feature names carry it), so no floats, no mixed units and nothing negative.
    """
    match = re.fullmatch(r"([1-9][0-9]*)([smhdw])", str(text).strip())
    if match is None:
        raise ConfigError(f"{key} must be a duration such as 90s, 15m, 1h, 30d or 2w, got {text!r}")
    return int(match[1]) * DURATION_US[match[2]]
