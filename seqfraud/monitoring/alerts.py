"""The monitor's thresholds and the alerts and warnings a report raises against them."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from seqfraud import schema as S
from seqfraud.monitoring.inputs import MonitorError
from seqfraud.monitoring.statistics import MIN_ALERT_SESSIONS
from seqfraud.scoring.prepare import THINNED_VALUES

DEFAULT_THRESHOLDS: dict[str, float] = {
    "psi_warn": 0.1,  # token field or session length PSI: warning from here
    "psi_alert": 0.25,  # ... alert from here
    "unknown_rate_alert": 0.001,  # alert when a field's unknown-token share (token_counts) rises this much
    "unknown_rate_ratio": 2.0,  # ... and to this many times the reference's (a long tail's 1.1% against 1.3% is noise)
    "score_psi_alert": 0.25,  # alert on PSI of the score distribution
    "new_category_sessions": 5,  # alert on a category outside the vocabulary seen in this many sessions
    # ... and, where max_vocab capped the vocabulary, too many events for a value as frequent as the most frequent
    # one the cap left out (those may be any of them): a Poisson tail under this probability
    "capped_p": 1e-6,
    "performance_drop": 0.25,  # alert when PR-AUC falls this far below the artifact's test PR-AUC (relative)
}


# Below these, a finding is a warning, not an alert (MIN_ALERT_SESSIONS: statistics.py); a PR-AUC on a dozen frauds
# moves by a quarter by chance (one alerted on 11).
MIN_ALERT_POSITIVES = 30
# A labelled fraud share this many standard errors off the test's (binomial), and 2x or more, is said: chance
# leaves it about one window in a thousand.
SHARE_Z = 3.3


def check_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    t = dict(DEFAULT_THRESHOLDS)
    unknown = sorted(set(thresholds or {}) - set(t))
    if unknown:
        raise MonitorError(f"unknown threshold(s) {unknown}; known thresholds are {sorted(t)}")
    t.update({k: float(v) for k, v in (thresholds or {}).items()})
    # NaN compares false, so it switched its alert off, silently: a PR-AUC drop of 0.957 to 0.116 exited 0 under
    # --fail-on-alert (dogfood 210).
    if bad := {k: v for k, v in t.items() if not (math.isfinite(v) and v >= 0)}:
        raise MonitorError(f"thresholds must be finite and at least 0, got {bad}")
    if not 0 < t["capped_p"] < 1:
        raise MonitorError(f"capped_p is a probability, between 0 and 1 (exclusive), got {t['capped_p']}")
    if not t["psi_warn"] <= t["psi_alert"]:
        raise MonitorError(f"psi_warn ({t['psi_warn']}) must not exceed psi_alert ({t['psi_alert']})")
    return t


def alerts(report: dict[str, Any], t: dict[str, float]) -> tuple[list[dict], list[dict]]:
    """Each finding as ``{check, field, value, threshold}``: alerts at or above the alert levels, warnings below
    (and, on a current window too small to tell drift from chance, warnings at any level: :func:`notes`)."""
    found: list[dict[str, Any]] = []
    warned: list[dict[str, Any]] = []
    few = report["current"]["sessions"] < MIN_ALERT_SESSIONS
    # An entity column emptied in the extract: one alert names it, where its features' PSIs, each a symptom, were
    # twenty alerts beside a note that said why (dogfoods 118, 278).
    # A warning where the window is too small, or the values expected too few, to tell it from chance (review 281: a
    # column with a value on 2% of the events, none in a window of 12 sessions, alerted), its features' PSIs kept.
    empty = emptied(report)
    sure = {
        c
        for c, (had, _) in empty.items()
        if not few and had * report["current"]["sessions"] >= THINNED_VALUES
    }
    for column, (had, has) in empty.items():
        (found if column in sure else warned).append(
            {"check": "entity_empty", "field": column, "value": has, "threshold": None, "reference": had}
        )
    symptoms = tuple(S.entity_feature(column, "") for column in sure)

    def psi_check(check: str, name: str, value: float, **extra: Any) -> None:
        if value >= t["psi_alert"]:
            finding = {"check": check, "field": name, "value": value, "threshold": t["psi_alert"]} | extra
            (warned if few else found).append(finding)
        elif value >= t["psi_warn"]:
            warned.append({"check": check, "field": name, "value": value, "threshold": t["psi_warn"]} | extra)

    for name, stats in report["fields"].items():
        if stats.get("alerted", True) and not name.startswith(symptoms):
            # What moved most, named: a warning of a channel's PSI said nothing of its nulls gone (dogfood 280); over
            # present values, among those (reviews 281, 282: it named the missing share, or all events' shares).
            present = stats.get("psi_present")
            over = present is not None and present > stats["psi"]
            moves = stats.get("present_moves" if over else "top_moves") or []
            moved = {"moved": moves[0]} if moves else {}
            # A number's present values may have moved where its missing share hides it: one finding, the larger.
            if over:
                psi_check("psi", name, present, over="present values", **moved)
            else:
                psi_check("psi", name, stats["psi"], **moved)
        u = stats["unknown_rate"]
        if (
            u is not None
            and u["current"] - u["reference"] >= t["unknown_rate_alert"]
            and u["current"] >= t["unknown_rate_ratio"] * u["reference"]
        ):
            found.append(
                {
                    "check": "unknown_rate_increase",
                    "field": name,
                    "value": u["current"] - u["reference"],
                    "threshold": t["unknown_rate_alert"],
                    "reference": u["reference"],
                    "current": u["current"],
                }
            )
    for name, new in report["new_categories"].items():
        # Outside a capped vocabulary, a value is news only when it is more frequent than any the cap left out.
        expected = new["left_out_max_share"] * new["present_events"]
        for v in new["values"]:
            if v["sessions"] >= t["new_category_sessions"] and (
                not new["capped"] or beyond(v["events"], expected, t["capped_p"])
            ):
                found.append(
                    {
                        "check": "new_category",
                        "field": name,
                        "value": v["sessions"],
                        "threshold": t["new_category_sessions"],
                        "category": v["value"],
                        "events": v["events"],
                        "example_sessions": v["example_sessions"],
                    }
                )
    psi_check("psi", "session_length", report["session_length"]["psi"])
    if report["score"]["psi"] >= t["score_psi_alert"]:
        (warned if few else found).append(
            {
                "check": "score_psi",
                "field": S.SCORE,
                "value": report["score"]["psi"],
                "threshold": t["score_psi_alert"],
            }
        )
    perf = report["performance"] or {}
    if perf.get("pr_auc_drop") is not None and perf["pr_auc_drop"] >= t["performance_drop"]:
        (warned if perf["positives"] < MIN_ALERT_POSITIVES else found).append(
            {
                "check": "performance_drop",
                "field": "pr_auc",
                "value": perf["pr_auc_drop"],
                "threshold": t["performance_drop"],
                "reference": perf["reference_pr_auc"],
                "current": perf["pr_auc"],
            }
        )
    for a in found + warned:  # one wording for the command, the page and monitor.json
        a["message"] = describe(a)
    return found, warned


def emptied(report: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Each entity column whose share of events with a value fell to a tenth of the reference's or less: its share
    then and now, each session weighing one. Not batch scoring's rule for part of the traffic, which reads each event
    type's events: over the window's, fewer refund tickets read as a refund card no longer sent (review 282)."""
    shares = {
        c: (1 - r["reference"], 1 - r["current"]) for c, r in (report.get("entity_null_rate") or {}).items()
    }
    return {c: (had, has) for c, (had, has) in shares.items() if had > 0 and has <= had / 10}


def beyond(count: int, expected: float, p: float) -> bool:
    """Whether ``count`` is too many for a Poisson count of mean ``expected``: its tail's Chernoff bound,
    ``exp(-expected) (e expected / count) ** count``, is under ``p`` (safe: the exact tail is smaller)."""
    if count <= expected:
        return False
    if expected <= 0:
        return True
    return count * (1 + math.log(expected / count)) - expected < math.log(p)


def describe(a: dict[str, Any]) -> str:
    """One alert or warning as a line, for the command and the page alike: a new category names its value,
    counted in sessions; a performance drop gives the PR-AUC before and after (0.90 read as a PR-AUC)."""
    if a["check"] == "new_category":
        return (
            f"new_category {a['field']}: {a['category']!r} in {a['value']:,} sessions (threshold "
            f"{a['threshold']:g})"
        )
    if a["check"] == "entity_empty":
        return (
            f"entity_empty {a['field']}: holds a value in {a['value']:.1%} of the current events against "
            f"{a['reference']:.1%} of the reference's (each session weighing one): its features' drift is that it "
            "lost its values; was it dropped from the extract, or did a client stop sending it?"
        )
    if a["check"] == "performance_drop":
        return (
            f"performance_drop pr_auc: {a['reference']:.4g} at export, {a['current']:.4g} now, a relative drop "
            f"of {a['value']:.3g} (threshold {a['threshold']:g})"
        )
    over = f" over {a['over']}" if "over" in a else ""
    moved = ""
    if m := a.get("moved"):
        moved = f"; most moved: {m['token']} {m['reference']:.1%} of the reference, {m['current']:.1%} now"
    return f"{a['check']} {a['field']}: {a['value']:.4g}{over} (threshold {a['threshold']:g}){moved}"


def notes(report: dict[str, Any], t: dict[str, float]) -> list[str]:
    """What the findings cannot say: a current window too small to alert on, and the fields whose vocabulary
    ``max_vocab`` capped, with how their values outside it are alerted on (a dogfood log's item ids, capped at
    1,000 of 20,000, raised 18,645 alerts on its own training window)."""
    n, perf = report["current"]["sessions"], report["performance"] or {}
    small = []
    if in_run := report["current"].get("run_sessions"):
        names = {"train": "training", "val": "validation"}
        said = " and ".join(f"{k:,} {names[split]}" for split, k in in_run.items())
        small.append(
            f"{said} session(s) of the run are in the current window ({n:,} sessions): the model learnt or chose "
            "on them, so its figures there read in sample, not as traffic it has not seen; monitor a period after "
            "the run's test start"
        )
    if n < MIN_ALERT_SESSIONS:
        small.append(
            f"the current window has {n:,} sessions, fewer than {MIN_ALERT_SESSIONS}: a PSI reaches about (bins - "
            "1) / sessions by chance alone (0.3-0.4 over 20 bins on 50 sessions), so its findings are warnings, not "
            "alerts; one far above that (a new value taking half the traffic) is drift all the same. A number read "
            "in another unit (check scale) and what follows an event type (check transitions) are judged by their "
            "own rules, from 100 sessions, and alert"
        )
    if perf.get("pr_auc") is not None and perf["positives"] < MIN_ALERT_POSITIVES:
        small.append(
            f"the current window's labels hold {perf['positives']} fraud(s), fewer than {MIN_ALERT_POSITIVES}: "
            "its PR-AUC is a rough estimate, so a drop is a warning, not an alert"
        )
    # Where every settled session is labelled (a table of frauds alone, the rest legitimate), a chargeback file that
    # names under a tenth of the frauds the test's share gives read as a model that got worse, or as labels to come
    # (dogfood 245: a pull cut to 14 of 136 chargebacks read PR-AUC 0.056 for 0.815).
    # Those within the label delay are left out of the labelled ones (review 249: the note never spoke while any
    # session waited, always the case without --labels-as-of).
    waiting = perf.get("sessions_within_label_delay") or 0
    n, test_share = perf.get("n") or 0, perf.get("reference_fraud_share") or 0.0
    stalled = bool(
        n
        and perf.get("labelled_share")
        and n + waiting >= round(n / perf["labelled_share"])
        and n * test_share >= 10
        and perf["positives"] < n * test_share / 10
    )
    if stalled:
        small.append(
            f"the window's labels name {perf['positives']:,} fraud(s) among its {n:,} settled session(s), where the "
            f"artifact's test sessions' share ({test_share:.1%}) gives about {n * test_share:,.0f}: is the chargeback file "
            "empty, stalled or another period's? Every session it leaves out reads as legitimate, and the "
            "performance figures with it"
        )
    # PR-AUC rises with the fraud share: labels that come sooner for one class (a chargeback before a settlement)
    # made a window's labelled sessions 15.4% fraud against the test's 3.6%, and a model's 8% drop read as a 5% gain
    # (dogfood 221).
    # Only where chance alone would hardly do it (review 225: a quarter of 50 labels missing at random did).
    share, was = (
        (perf["positives"] / perf["n"], perf.get("reference_fraud_share"))
        if perf.get("n") and perf.get("pr_auc") is not None
        else (None, None)
    )
    if (
        share is not None
        and was
        and perf["labelled_share"] < 1
        and not stalled
        and (share / was >= 2 or share / was <= 1 / 2)
        and abs(perf["positives"] - perf["n"] * was) >= SHARE_Z * math.sqrt(perf["n"] * was * (1 - was))
    ):
        small.append(
            f"the {perf['n']:,} labelled session(s) ({perf['labelled_share']:.0%} of the window) are {share:.1%} "
            f"fraud against {was:.1%} of the artifact's test sessions: where one class's labels come sooner (a "
            "chargeback before a settlement), the labelled sessions are unlike the traffic, and PR-AUC moves with "
            "the fraud share, so its drop against the test's does not compare; read it once the window's labels are "
            "settled (a later --labels-as-of), or read ROC-AUC, which the share leaves alone"
        )
    if (
        not stalled
        and perf.get("n")
        and "pr_auc" in perf
        and perf["pr_auc"] is None
        and perf["positives"] in (0, perf["n"])
    ):
        # One class known: no figure, and no word of why (dogfood 221).
        known = "fraud" if perf["positives"] else "legitimate"
        small.append(
            f"the labels known hold {known} sessions alone ({perf['n']:,}): no PR-AUC until the other class's labels "
            "come"
        )
    if waiting := perf.get("sessions_within_label_delay"):  # only a log line said so (dogfood 61)
        as_of = perf["labels_as_of"]
        since = as_of or "the window's last event"
        ended = f"ended within the label delay ({perf['label_delay']}) of {since}"
        if frauds := perf["frauds_within_label_delay"]:
            ended += f", {frauds:,} of them listed as fraud already"
        # A window all within the delay has no figures at all, and --labels-as-of given need not be asked for
        # (dogfood 102).
        if perf.get("n"):
            said = f"{waiting:,} session(s) of the window {ended}: their chargebacks may still come, "
        else:
            said = f"no session of the window is settled: all {waiting:,} {ended}; their chargebacks may still come, "
        said += "so they are left out of the performance figures (data.policy.on_unlabeled=negative)"
        if as_of is None:
            said += "; where the label table was pulled later, say when (--labels-as-of)"
        small.append(said)
    return small + [
        f"{f}: {new['count']:,} value(s) outside the vocabulary, which max_vocab capped in training "
        f"({new['capped']:,} frequent value(s) left out, the most frequent {100 * new['left_out_max_share']:.3g}% "
        f"of the field's values): a value is alerted on only where it is too frequent for one of those "
        f"(Poisson tail under capped_p={t['capped_p']:g})"
        for f, new in report["new_categories"].items()
        if new["capped"]
    ]
