"""Decision thresholds and bands: where a score becomes ``approve``, ``review`` or ``decline``.

Pure functions over numpy arrays of validation labels and scores (plus, for the cost policy, optional
per-session amounts). A threshold ``t`` flags a session when ``score >= t``. Thresholds are returned in
the scores' own float type, so comparing a float32 score with one gives the same answer everywhere.
Imports numpy only: the serving path uses :func:`check_thresholds` and :func:`assign_bands`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from seqfraud.errors import UserError, is_number

log = logging.getLogger(__name__)

BANDS = ("approve", "review", "decline")
_BANDS = np.asarray(BANDS, dtype=object)
POLICIES = ("fpr", "capacity", "cost")
# An fpr policy that allows fewer false positives than this on validation rests on its few highest negatives.
FEW_FALSE_POSITIVES = 5
# Keys each policy takes (besides ``policy``), and the ones it requires.
POLICY_KEYS = {
    "fpr": ({"fpr"}, {"fpr"}),
    "capacity": ({"per_1000"}, {"per_1000"}),
    "cost": (
        {"fraud_loss", "false_decline_cost", "amount", "amount_of"},
        {"fraud_loss", "false_decline_cost"},
    ),
}
# How a cost policy reads a session's amount from its events' values: their sum (purchases that add up), or their
# largest (a price repeated on each step of a booking funnel, which a sum counted three or four times: dogfood 244).
AMOUNT_OF = ("sum", "max")
BAND_RULE = "approve: score < review; review: review <= score < decline; decline: score >= decline"
# A policy that flags none of the validation sessions sets its threshold just above the top score, in the scores'
# own float type; above a top score of 1.0 that is float64's next value or float32's, this one, the highest
# threshold there is: isotonic calibration and saturated sigmoids give 1.0 routinely (review 110). A threshold
# above 1 flags no score, whatever the scores' precision (assign_bands).
FLAG_NONE = float(np.nextafter(np.float32(1), np.float32(2)))


class DecisionError(UserError, ValueError):
    """Thresholds or a threshold policy that cannot be used."""


def _scores(scores: Any) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 1 or s.size == 0:
        raise DecisionError(f"scores must be a non-empty 1-d array, got shape {s.shape}")
    s = s if np.issubdtype(s.dtype, np.floating) else s.astype(np.float64)
    if not np.isfinite(s).all():
        raise DecisionError("scores hold NaN or infinite values")
    return s


def _labels(labels: Any, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise DecisionError(f"labels must have the scores' shape ({n},), got {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise DecisionError("labels must be 0 or 1")
    return y.astype(bool)


def _above(value: np.floating) -> float:
    """The next representable score above ``value``, in its own float type."""
    return float(np.nextafter(value, np.array(np.inf, dtype=value.dtype)))


def lowest_threshold_at_share(values: np.ndarray, share: float) -> float:
    """Lowest ``t`` with ``mean(values >= t) <= share``: just above the ``floor(share * n) + 1``-th highest value."""
    if not 0 <= share < 1:
        raise DecisionError(f"a target share must be in [0, 1), got {share}")
    desc = np.sort(values)[::-1]
    k = int(np.floor(share * len(desc) + 1e-9))  # 0.29 * 100 is 28.999...: one false positive short
    return _above(desc[k]) if k < len(desc) else 0.0


def threshold_by_fpr(labels: Any, scores: Any, fpr: float) -> float:
    """Lowest threshold whose false-positive rate on the negatives is at most ``fpr``."""
    s = _scores(scores)
    y = _labels(labels, len(s))
    if not (~y).any():
        raise DecisionError("no negatives to set a false-positive-rate threshold on")
    if not 0 < fpr < 1:
        raise DecisionError(f"fpr must be in (0, 1), got {fpr}")
    return lowest_threshold_at_share(s[~y], fpr)


def threshold_by_capacity(scores: Any, per_1000: float) -> float:
    """Lowest threshold that flags at most ``per_1000`` of every 1,000 sessions (a review team's capacity)."""
    s = _scores(scores)
    if not 0 < per_1000 < 1000:
        raise DecisionError(f"per_1000 (alerts per 1,000 sessions) must be in (0, 1000), got {per_1000}")
    return lowest_threshold_at_share(s, per_1000 / 1000)


def cost_curve(
    labels: Any, scores: Any, *, fraud_loss: float, false_decline_cost: float, amounts: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate thresholds (ascending) and the expected cost per session at each.

    Cost at ``t``: every fraud scoring below ``t`` loses ``fraud_loss`` (times its session's amount when
    ``amounts`` is given); every legitimate session at or above ``t`` costs ``false_decline_cost``.
    Candidates are every distinct score (flag it and above) and one just above the highest (flag none).
    """
    s = _scores(scores)
    y = _labels(labels, len(s))
    if not (fraud_loss >= 0 and false_decline_cost >= 0):
        raise DecisionError(
            f"costs must be >= 0, got fraud_loss={fraud_loss}, false_decline_cost={false_decline_cost}"
        )
    loss = np.full(len(s), float(fraud_loss))
    if amounts is not None:
        a = np.asarray(amounts, dtype=np.float64)
        if a.shape != s.shape or not np.isfinite(a).all() or (a < 0).any():
            raise DecisionError(f"amounts must be finite, >= 0 and of the scores' shape {s.shape}")
        loss = loss * a
    candidates = np.unique(s)
    # Missed loss at t = sum of losses of fraud scoring < t; false declines = negatives scoring >= t.
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    missed = np.r_[0.0, np.cumsum(np.where(y[order], loss[order], 0.0))]
    negs = np.r_[0, np.cumsum(~y[order])]
    below = np.searchsorted(s_sorted, candidates, side="left")  # sessions scoring < t
    cost = missed[below] + false_decline_cost * (negs[-1] - negs[below])
    top = missed[-1]  # flag none
    return (np.r_[candidates, _above(s_sorted[-1])].astype(s.dtype), np.r_[cost, top] / len(s))


def threshold_by_cost(
    labels: Any, scores: Any, *, fraud_loss: float, false_decline_cost: float, amounts: Any = None
) -> float:
    """The candidate threshold of least expected cost (:func:`cost_curve`); ties go to the highest."""
    thresholds, cost = cost_curve(
        labels, scores, fraud_loss=fraud_loss, false_decline_cost=false_decline_cost, amounts=amounts
    )
    best = np.flatnonzero(cost == cost.min())[-1]
    return float(thresholds[best])


def check_thresholds(thresholds: Mapping[str, float]) -> dict[str, float]:
    """``{"review": r, "decline": d}`` with ``0 <= r <= d <= 1``, or just above 1 (at most :data:`FLAG_NONE`: a
    threshold that flags no score), or a clear error."""
    if not isinstance(thresholds, Mapping) or set(thresholds) != {"review", "decline"}:
        keys = sorted(thresholds) if isinstance(thresholds, Mapping) else type(thresholds).__name__
        raise DecisionError(f"thresholds need exactly the keys 'review' and 'decline', got {keys}")
    try:
        review, decline = float(thresholds["review"]), float(thresholds["decline"])
    except (TypeError, ValueError) as e:
        raise DecisionError(f"thresholds must be numbers, got {dict(thresholds)}") from e
    if not 0.0 <= review <= decline <= FLAG_NONE:
        raise DecisionError(
            f"thresholds need 0 <= review <= decline <= 1, or just above 1 (at most {FLAG_NONE!r}: no score), "
            f"got review={review}, decline={decline}"
        )
    return {"review": review, "decline": decline}


def assign_bands(scores: Any, thresholds: Mapping[str, float]) -> np.ndarray:
    """``approve`` below ``review``, ``review`` from ``review``, ``decline`` from ``decline`` (object array)."""
    t = check_thresholds(thresholds)
    s = np.asarray(scores)
    if s.ndim != 1:
        raise DecisionError(f"scores must be a 1-d array, got shape {s.shape}")
    if np.isnan(s).any():
        raise DecisionError("scores hold NaN; a NaN score has no band")
    # Thresholds in the scores' own precision, as `s >= threshold` compares them; then #thresholds passed. One above
    # 1 flags none: float64's 1.0000000000000002 is float32's 1.0, which would flag a float32 score of 1.
    given = np.array((t["review"], t["decline"]))
    cuts = np.where(given > 1, np.inf, given).astype(s.dtype if s.dtype.kind == "f" else np.float64)
    return _BANDS[np.searchsorted(cuts, s, side="right")]


def check_policy(policy: Mapping[str, Any], band: str = "threshold") -> dict[str, Any]:
    """A policy such as ``{"policy": "fpr", "fpr": 0.01}``, its keys checked against :data:`POLICY_KEYS`."""
    policy = dict(policy)
    name = policy.pop("policy", None)
    if name not in POLICIES:
        raise DecisionError(f"{band}: policy must be one of {POLICIES}, got {name!r}")
    allowed, required = POLICY_KEYS[name]
    given = {k for k, v in policy.items() if v is not None}
    if missing := sorted(required - given):
        raise DecisionError(f"{band}: policy {name!r} needs {missing}")
    if unknown := sorted(set(policy) - allowed):
        raise DecisionError(f"{band}: policy {name!r} takes {sorted(allowed)}, not {unknown}")
    # A quoted value (fpr: '0.01' in YAML or on the command line) ended in Python's TypeError (review 110).
    if wrong := [k for k in sorted(given - {"amount", "amount_of"}) if not is_number(policy[k])]:
        raise DecisionError(f"{band}: policy {name!r}: {wrong[0]} must be a number, got {policy[wrong[0]]!r}")
    if policy.get("amount") is not None and not isinstance(policy["amount"], str):
        raise DecisionError(f"{band}: policy 'cost': amount must name a column, got {policy['amount']!r}")
    if policy.get("amount_of") == "max" and policy.get("amount") is None:
        raise DecisionError(
            f"{band}: policy 'cost': amount_of reads an amount column: name it (amount: COLUMN)"
        )
    if policy.get("amount_of") is not None and policy["amount_of"] not in AMOUNT_OF:
        raise DecisionError(
            f"{band}: policy 'cost': amount_of must be one of {AMOUNT_OF} (how a session's events' amounts make "
            f"its own), got {policy['amount_of']!r}"
        )
    return {"policy": name, **policy}


def threshold_by_policy(
    labels: Any, scores: Any, policy: Mapping[str, Any], *, amounts: Any = None, band: str = "threshold"
) -> float:
    """One threshold by ``policy`` (see :func:`check_policy`); ``amounts`` feed a cost policy with ``amount``."""
    p = check_policy(policy, band)
    if p["policy"] == "fpr":
        return threshold_by_fpr(labels, scores, p["fpr"])
    if p["policy"] == "capacity":
        return threshold_by_capacity(scores, p["per_1000"])
    if p.get("amount") and amounts is None:
        raise DecisionError(f"{band}: the cost policy names amount {p['amount']!r} but no amounts were given")
    return threshold_by_cost(
        labels,
        scores,
        fraud_loss=p["fraud_loss"],
        false_decline_cost=p["false_decline_cost"],
        amounts=amounts if p.get("amount") else None,
    )


def operating_point(labels: Any, scores: Any, threshold: float) -> dict[str, Any]:
    """What ``threshold`` gives on these labels and scores: FPR, recall and the share of sessions flagged."""
    s = _scores(scores)
    y = _labels(labels, len(s))
    flagged = s >= threshold
    return {
        "threshold": float(threshold),
        "fpr": float(flagged[~y].mean()) if (~y).any() else None,
        "recall": float(flagged[y].mean()) if y.any() else None,
        "flagged_share": float(flagged.mean()),
        "flagged_per_1000": float(1000 * flagged.mean()),
    }


def choose_thresholds(
    labels: Any, scores: Any, policies: Mapping[str, Mapping[str, Any]], *, amounts: Any = None
) -> dict[str, Any]:
    """Both band thresholds, each by its own policy, with how they were chosen and what they give.

    ``policies``: ``{"review": {"policy": ..., ...}, "decline": {"policy": ..., ...}}``. Raises
    :class:`DecisionError` if the chosen review threshold lies above the decline one.
    """
    if not isinstance(policies, Mapping) or set(policies) != {"review", "decline"}:
        raise DecisionError(f"threshold policies need exactly 'review' and 'decline', got {policies!r}")
    s = _scores(scores)
    y = _labels(labels, len(s))
    chosen = {
        band: threshold_by_policy(y, s, policies[band], amounts=amounts, band=band)
        for band in ("review", "decline")
    }
    if chosen["review"] > chosen["decline"]:
        # The thresholds may print alike to many digits: the sessions each flags say why they cross (dogfood 97).
        flags = {band: int((s >= chosen[band]).sum()) for band in ("review", "decline")}
        raise DecisionError(
            f"the policies {dict(policies)} cross: review={chosen['review']!r} is above decline="
            f"{chosen['decline']!r} (on validation, review flags {flags['review']:,} session(s) and decline "
            f"{flags['decline']:,}; review must flag at least as many); loosen the review policy or tighten the "
            "decline one"
        )
    check_thresholds(chosen)  # scores outside [0, 1] (raw ones) can put a threshold there
    out: dict[str, Any] = {
        **chosen,
        "bands": BAND_RULE,
        "method": "each threshold by its policy on the validation predictions (calibrated scale)",
        "policies": {band: check_policy(policies[band], band) for band in ("review", "decline")},
        "validation": {"negatives": int((~y).sum()), "positives": int(y.sum())},
    }
    for band in ("review", "decline"):
        point = operating_point(y, s, chosen[band])
        if policies[band].get("policy") == "cost":
            p = out["policies"][band]
            _, cost = cost_curve(
                y,
                s,
                fraud_loss=p["fraud_loss"],
                false_decline_cost=p["false_decline_cost"],
                amounts=amounts if p.get("amount") else None,
            )
            point["expected_cost_per_session"] = float(cost.min())
        out["validation"][band] = point
    negatives = out["validation"]["negatives"]
    for band in ("review", "decline"):
        p = out["policies"][band]
        few = p["policy"] == "fpr" and p["fpr"] * negatives < FEW_FALSE_POSITIVES  # said below
        if p["policy"] != "cost" and out["validation"][band]["flagged_share"] == 0 and not few:
            # An empty band showed in the manifest alone (review 110): a policy allowing fewer sessions than the top
            # score holds (a tie is flagged whole or not at all).
            top = int((s == s.max()).sum())
            log.warning(
                "%s: policy %s flags no validation session: it allows fewer than the %d session(s) at the top "
                "score, %.6g, so its threshold lies above every score; loosen the policy%s",
                band,
                {k: v for k, v in p.items() if k != "policy"},
                top,
                s.max(),
                ", or give scores fewer ties (platt, not isotonic, calibration)" if top > 1 else "",
            )
        if few:
            # 0.1% of 175 negatives is a fifth of one: the threshold sits above every negative, and test FPR
            # came out 6 to 12 times the target (dogfood 24).
            log.warning(
                "%s: fpr %g of %d validation negatives allows %.2f false positive(s): the threshold is set by the "
                "highest negatives, and the FPR on new traffic can be several times the target; set a coarser "
                "fpr, or validate on more sessions (data.split.val_start)",
                band,
                p["fpr"],
                negatives,
                p["fpr"] * negatives,
            )
    review, decline = out["validation"]["review"], out["validation"]["decline"]
    out["validation"]["review_band_per_1000"] = review["flagged_per_1000"] - decline["flagged_per_1000"]
    if review["flagged_share"] > 0 and out["validation"]["review_band_per_1000"] == 0:
        # Scores in steps put two policies on one step: isotonic calibration's, or the model's own (a stacker
        # that kept LightGBM at its first iteration gave 4 distinct scores under platt: dogfood 42).
        log.warning(
            "the review and decline thresholds (%.4g, %.4g) flag the same validation sessions (%.1f per 1,000): "
            "the review band holds none, as the %d validation scores take %d distinct values; loosen the review "
            "policy, or give scores fewer ties (platt, not isotonic, calibration; a model that ranks more finely)",
            chosen["review"],
            chosen["decline"],
            review["flagged_per_1000"],
            len(s),
            len(np.unique(s)),
        )
    return out
