"""Score calibration: a map from the model's raw probability to a calibrated one, stored as plain JSON.

Fitting (at export, on validation predictions) uses scikit-learn; applying is numpy only, so the serving
path stays light. ``isotonic`` keeps the breakpoints ``x``/``y`` of a monotone step-linear map for
``np.interp`` (scores outside ``x`` clip to the end values); ``platt`` keeps ``a``, ``b`` of
``sigmoid(a * logit(raw) + b)``; ``none`` is the identity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from seqfraud.errors import UserError, is_number

METHODS = ("isotonic", "platt", "none")
EPS = 1e-7  # raw probabilities are clipped to [EPS, 1 - EPS] before the logit


class CalibrationError(UserError, ValueError):
    """An unknown method, or parameters that do not describe a calibration map."""


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"calibration must be one of {METHODS}, got {self.method!r}")
        if not isinstance(self.params, dict):
            raise CalibrationError(f"calibration params must be an object, got {type(self.params).__name__}")
        p = self.params
        if self.method == "isotonic":
            # Lists of numbers: text or objects raised numpy's own errors, as tracebacks (dogfood 43), and numpy
            # reads "0.1" and True as numbers.
            numbers = all(
                isinstance(v, list) and all(map(is_number, v)) for v in (p.get("x", []), p.get("y", []))
            )
            x, y = (np.asarray(p.get(k, []) if numbers else [], dtype=np.float64) for k in ("x", "y"))
            if (
                x.ndim != 1
                or len(x) < 1
                or x.shape != y.shape
                or np.any(np.diff(x) < 0)
                or np.any(np.diff(y) < 0)
                or not (np.isfinite(x).all() and np.isfinite(y).all())
                or y.min() < 0
                or y.max() > 1
            ):
                raise CalibrationError(
                    "isotonic calibration needs breakpoints x, y of one length, both "
                    "non-decreasing, y in [0, 1]"
                )
        elif self.method == "platt":
            if not all(is_number(p.get(k)) and np.isfinite(p[k]) for k in ("a", "b")):
                raise CalibrationError("platt calibration needs finite numbers a and b")
            # A calibration map keeps the model's ranking: a slope of 0 gave every session one score, and a
            # negative one (an edited calibration.json, unsigned) declined the safest sessions and approved frauds.
            if p["a"] <= 0:
                raise CalibrationError(
                    f"platt calibration needs a slope a above 0 (got {p['a']}): at or below 0 it flattens or "
                    "reverses the model's ranking. An exporter before this check (December 2026) could write one "
                    "where the model ranked validation frauds lowest, or the file was edited: export the run again "
                    "(calibration=none, or a model that ranks)"
                )

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (float64) of raw model probabilities."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "isotonic":
            return np.interp(raw, *self._breakpoints)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.params["a"] * _logit(raw) + self.params["b"])))
        return raw

    @functools.cached_property
    def _breakpoints(self) -> tuple[np.ndarray, np.ndarray]:
        """Isotonic x and y as arrays once: converting the lists again cost more than one score's interpolation."""
        return np.asarray(self.params["x"], np.float64), np.asarray(self.params["y"], np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": self.params}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        if not isinstance(d, dict) or "method" not in d:
            raise CalibrationError("a calibration needs a method and its params")
        return cls(d["method"], d.get("params") or {})


def fit_calibration(method: str, y: np.ndarray, raw: np.ndarray) -> Calibration:
    """Fit ``method`` on labels ``y`` and raw probabilities ``raw`` (the validation predictions)."""
    if method not in METHODS:
        raise CalibrationError(f"calibration must be one of {METHODS}, got {method!r}")
    y = np.asarray(y, dtype=np.float64)
    raw = np.asarray(raw, dtype=np.float64)
    # Labels of 0/2 fitted a meaningless slope, NaN scores or unequal lengths failed in sklearn (dogfood 60).
    if y.shape != raw.shape or y.ndim != 1:
        raise CalibrationError(
            f"labels and scores must be two 1-d arrays of one length, got {y.shape} and {raw.shape}"
        )
    if n := int((~np.isin(y, (0.0, 1.0))).sum()):
        raise CalibrationError(f"{n} label(s) are not 0 or 1 (null or NaN included)")
    if n := int((~((raw >= 0) & (raw <= 1))).sum()):
        raise CalibrationError(f"{n} score(s) are not probabilities in [0, 1] (NaN included)")
    if method != "none" and not 0 < y.sum() < len(y):
        raise CalibrationError(f"{method} calibration needs both classes in the validation predictions")
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        return Calibration(
            "isotonic",
            {"x": [float(v) for v in iso.X_thresholds_], "y": [float(v) for v in iso.y_thresholds_]},
        )
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        # Platt's own targets, (N+ + 1) / (N+ + 2) and 1 / (N- + 2), not 1 and 0 (each row twice, weighted): where
        # validation separates perfectly (a dogfood GRU's), the 0/1 fit's slope ran off (a = 23.6), 96.5% of the
        # float32 scores came out exactly 0, their ranking lost, and the review threshold fell to 1.4e-45.
        pos, neg = y.sum(), len(y) - y.sum()
        target = np.where(y == 1, (pos + 1) / (pos + 2), 1 / (neg + 2))
        x = _logit(raw)[:, None]
        lr = LogisticRegression(C=1e6, tol=1e-10, max_iter=1000).fit(
            np.vstack([x, x]),
            np.r_[np.ones(len(y)), np.zeros(len(y))],
            sample_weight=np.r_[target, 1 - target],
        )
        slope = float(lr.coef_[0, 0])
        if slope <= 0:
            raise CalibrationError(
                f"platt calibration fitted a slope of {slope:.3g}: the model ranks validation frauds no higher "
                "than the other sessions, and no increasing map can calibrate that; check the run's validation "
                "PR-AUC, or export with calibration=none"
            )
        return Calibration("platt", {"a": slope, "b": float(lr.intercept_[0])})
    return Calibration("none", {})


def reliability_curve(
    y: np.ndarray, p: np.ndarray, bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean score, observed rate and count of each non-empty equal-width bin (the ECE's bins)."""
    y, p = np.asarray(y, dtype=np.float64), np.asarray(p, dtype=np.float64)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    count = np.bincount(idx, minlength=bins)
    keep = count > 0
    mean_p = np.bincount(idx, weights=p, minlength=bins)[keep] / count[keep]
    rate = np.bincount(idx, weights=y, minlength=bins)[keep] / count[keep]
    return mean_p, rate, count[keep]
