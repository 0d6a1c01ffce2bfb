"""What the monitor measures: PSI per token field, unknown and missing rates, session lengths, scores,
categories the model never learned, and performance where labels are known."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.features.drift import psi, psi_bins, token_label
from seqfraud.features.spec import FIRST_ID, MISSING, UNKNOWN, Spec
from seqfraud.features.tokens import Sequences
from seqfraud.metrics import classification_metrics, recall_key

SCORE_BINS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
QUANTILES = (0.1, 0.5, 0.9, 0.99)
DEFAULT_FPR = 0.01  # the operating point of artifacts exported before the manifest recorded metrics.fpr
EXAMPLE_SESSIONS = 5  # sessions named per new category


def length_edges(spec: Spec) -> np.ndarray:
    """Bins of the events a session's window holds: 1, 2, 3-4, 5-8, ... up to ``max_len``, with an edge at
    :attr:`~seqfraud.features.spec.Spec.shortest_window`, from which every cut session falls (with ``hop`` 1, a
    bin of ``max_len`` alone); a hop wider than half of ``max_len`` spreads the cut sessions over several bins."""
    edges = [1]
    while edges[-1] * 2 < spec.max_len:
        edges.append(edges[-1] * 2)
    # right-open bins [e_i, e_{i+1}); a hop as wide as max_len leaves the doubling bins alone
    return np.unique(np.array([*edges, spec.shortest_window, spec.max_len + 1], dtype=np.float64))


def quantiles(x: np.ndarray | None) -> dict[str, float] | None:
    if x is None or len(x) == 0:
        return None
    qs = np.quantile(np.asarray(x, np.float64), QUANTILES)
    return {"mean": float(np.mean(x)), **{f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)}}


def length_summary(lengths: np.ndarray, spec: Spec) -> dict[str, float]:
    """Quantiles of the events each session's window holds, and the share of windows at their longest (cut
    sessions, and those as long: with ``hop`` 1, the sessions cut to ``max_len``)."""
    return {
        **(quantiles(lengths) or {}),
        "longest_window_share": float(np.mean(lengths >= spec.shortest_window)),
    }


def token_counts(spec: Spec, seqs: Sequences, field_name: str, present: bool = False) -> np.ndarray:
    """Sessions per token id of one field (reserved ids included), each session's events weighing 1 in all; with
    ``present``, its events that have a value (a session without one weighs nothing).

    The model scores sessions, so drift is read over sessions: counted over events, one session of 300 events on
    one cell tower moved that value's share by half a point, and a mobile-money log whose cells were drawn at
    random, never drifting, warned at PSI 0.17 (dogfood 177)."""
    size = spec.vocab_size(field_name)
    tokens = seqs.tokens[:, spec.fields.index(field_name)]
    counted = tokens != MISSING if present else np.ones(len(tokens), dtype=bool)
    session = np.repeat(np.arange(len(seqs.lengths)), seqs.lengths)
    per_session = np.bincount(session, counted, minlength=len(seqs.lengths))
    weights = counted / np.maximum(per_session, 1)[session]
    return np.bincount(tokens, weights, minlength=size)[:size]


MIN_PRESENT = 100  # fewer sessions with a value in a window, and their PSI is too noisy to read


def present_psi(reference: np.ndarray, current: np.ndarray) -> float | None:
    """A number's PSI over the events that have a value (:func:`token_counts` with ``present``): where most are
    missing, the missing bin's share hides a shift of the values themselves (a claims log's amounts, 90% blank,
    moved by a third at a PSI of 0.02 over all events, 0.19 over the present ones). None below
    :data:`MIN_PRESENT` sessions with a value in either window."""
    if min(reference.sum(), current.sum()) < MIN_PRESENT:
        return None
    return psi(*psi_bins(reference, current))


def field_stats(
    spec: Spec, ref: Sequences, cur: Sequences, only: Sequence[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Per token field (or the ``only`` ones); a value field's drift is its numeric column's, read on the
    column's buckets."""
    out = {}
    for f in spec.fields if only is None else only:
        if f in spec.value_fields:
            continue
        rc, cc = token_counts(spec, ref, f), token_counts(spec, cur, f)
        rs, cs = rc / max(rc.sum(), 1), cc / max(cc.sum(), 1)
        out[f] = {
            "psi": psi(*psi_bins(rc, cc)),
            "psi_present": None,
            "unknown_rate": {"reference": float(rs[UNKNOWN]), "current": float(cs[UNKNOWN])}
            if f in spec.vocab
            else None,
            "missing_rate": {"reference": float(rs[MISSING]), "current": float(cs[MISSING])},
            "top_moves": top_moves(spec, f, rc, cc),
        }
        if f in spec.edges:  # and over the events with a value, what moved there (review 282)
            rp, cp = token_counts(spec, ref, f, True), token_counts(spec, cur, f, True)
            out[f] |= {"psi_present": present_psi(rp, cp), "present_moves": top_moves(spec, f, rp, cp)}
    return out


def top_moves(
    spec: Spec, field_name: str, reference: np.ndarray, current: np.ndarray
) -> list[dict[str, Any]]:
    """The five tokens whose shares moved most from ``reference`` to ``current`` (counts per token id)."""
    rs, cs = reference / max(reference.sum(), 1), current / max(current.sum(), 1)
    return [
        {"token": token_label(spec, field_name, int(t)), "reference": float(rs[t]), "current": float(cs[t])}
        for t in np.argsort(-np.abs(cs - rs))[:5]
        if rs[t] != cs[t]
    ]


# Fewer sessions than this in the current window, or in an entity feature's reference after its warm-up, and a
# PSI is too noisy to alert on: two samples of one distribution differ by about (bins - 1) / sessions, 0.3-0.4 on
# 50 sessions over 20 bins, where 4 of 6 windows of unchanged traffic alerted (dogfood 30); 170 reference sessions
# of a 90-day feature alerted at PSI 0.28 to 0.46 on a log without drift (dogfood 187, at a floor of 100).
MIN_ALERT_SESSIONS = 200


def entity_field_stats(
    spec: Spec, ref: Sequences, starts: np.ndarray, cur: Sequences
) -> dict[str, dict[str, Any]]:
    """The entity features' drift, each against the reference sessions that began after its warm-up
    (:meth:`~seqfraud.features.entities.EntitySpec.warm_up_us`) from the log's first event: the first weeks of a
    log see a short history, so a 30-day count there is lower than in any later window, by construction. A feature
    whose warm-up leaves too few reference sessions, or that never settles, is reported and marked, not
    alerted on (``alerted``, ``why``). A ``distinct_*`` count of pairs first seen together falls as the history
    grows wherever values meet again, so it is alerted on a rise only (dogfood 120: four alerts on traffic that did
    not drift; a rise is the drift that matters, card testing or account farms: review 122)."""
    entity = spec.entity
    assert entity is not None
    first = int(spec.fit_info.get("first_event_us") or starts.min())
    groups: dict[int | None, list[str]] = {}
    for name, warm_up in entity.warm_up_us().items():
        groups.setdefault(warm_up, []).append(name)
    out: dict[str, dict[str, Any]] = {}
    for warm_up, names in groups.items():
        keep = np.ones(len(starts), dtype=bool) if warm_up is None else starts >= first + warm_up
        why = None
        if warm_up is None:
            why = "its range grows with the history's age"
        elif keep.sum() < MIN_ALERT_SESSIONS:
            why = (
                f"{int(keep.sum())} reference sessions began after its warm-up ({warm_up / 86_400e6:g} days from "
                f"the log's first event); it needs {MIN_ALERT_SESSIONS}"
            )
            keep = np.ones(len(starts), dtype=bool)
        kept = ref.take(keep)
        for name, stats in field_stats(spec, kept, cur, names).items():
            said = why
            if said is None and "__distinct_" in name and not rose(spec, kept, cur, name):
                said = "it falls as the history grows, whatever the traffic does: alerted on a rise only"
            out[name] = stats | {"reference_sessions": int(keep.sum()), "alerted": said is None, "why": said}
    return out


def rose(spec: Spec, ref: Sequences, cur: Sequences, field_name: str) -> bool:
    """Whether a numeric field's present values (its buckets, in order) are higher in ``cur`` on average."""
    means = []
    for seqs in (ref, cur):
        counts = token_counts(spec, seqs, field_name)[FIRST_ID:]
        means.append(counts @ np.arange(len(counts)) / max(counts.sum(), 1))
    return bool(means[1] > means[0])


NEW_CATEGORIES_LISTED = 100  # values listed per field, most sessions first; the report counts them all


def new_categories(events: pl.DataFrame, spec: Spec) -> dict[str, dict[str, Any]]:
    """Per categorical field, the values outside the model's vocabulary (never seen in training, or too rare
    to get a token), most sessions first, with their events, sessions and example sessions: ``values`` (the
    first :data:`NEW_CATEGORIES_LISTED`), ``count`` (all of them), ``present_events`` (the window's events with
    a value), and ``capped`` and ``left_out_max_share``: how many training values ``max_vocab`` left out and the
    most frequent one's share of the field's training values (``fit_info``; 0 in specs from before). Where the
    vocabulary was capped, a value outside it may well be one of those, and is news only when it is more
    frequent than they were (:func:`~seqfraud.monitoring.alerts.alerts`).

    Read from the raw values: the tokens map every such value to the one ``UNKNOWN`` id, so a rate of
    unknown tokens cannot tell two brand-new event types from noise.
    """
    capped = spec.fit_info.get("values_over_max_vocab") or {}
    max_share = spec.fit_info.get("left_out_max_share") or {}
    out = {}
    for f in spec.schema.categorical_fields:
        found = (
            events.lazy()
            .filter(
                pl.col(f).is_not_null()
                & ~pl.col(f).is_in(pl.Series(spec.vocab[f], dtype=pl.String).implode())
            )
            .group_by(f)
            .agg(
                pl.len().alias("events"),
                pl.col(S.SESSION_ID).n_unique().alias("sessions"),
                pl.col(S.SESSION_ID).unique().sort().head(EXAMPLE_SESSIONS).alias("example_sessions"),
            )
            .sort(["sessions", "events", f], descending=[True, True, False])
            .rename({f: "value"})
            .collect()
        )
        if found.height:
            out[f] = {
                "values": found.head(NEW_CATEGORIES_LISTED).to_dicts(),
                "count": found.height,
                "capped": int(capped.get(f, 0)),
                "left_out_max_share": float(max_share.get(f, 0.0)),
                "present_events": int(events[f].is_not_null().sum()),
            }
    return out


def performance(
    scores: pl.DataFrame,
    labels: pl.DataFrame | None,
    fpr: float = DEFAULT_FPR,
    reference_pr_auc: float | None = None,
    outside: int = 0,
    reference_fraud_share: float | None = None,
) -> dict[str, Any] | None:
    """Metrics of the current window at the run's operating point, and the relative PR-AUC drop from
    ``reference_pr_auc`` (the artifact's test PR-AUC, at ``reference_fraud_share``); ``outside``: labels of
    sessions not in the window.

    Ranked by the raw scores, as the run's test metrics were: an isotonic calibration ties ranges of scores, and
    the run's own test sessions read as a drop of 0.033 in PR-AUC (dogfood 136)."""
    if labels is None:
        return None
    joined = scores.join(labels, on=S.SESSION_ID, how="inner")
    m = classification_metrics(joined[S.LABEL].to_numpy(), joined[S.RAW_SCORE].to_numpy(), fpr=fpr)
    keep = ("n", "positives", "pr_auc", "roc_auc", recall_key(fpr))
    out = {k: (None if isinstance(m[k], float) and math.isnan(m[k]) else m[k]) for k in keep}
    drop = None
    if reference_pr_auc and out["pr_auc"] is not None:
        drop = (reference_pr_auc - out["pr_auc"]) / reference_pr_auc
    return out | {
        "labelled_share": joined.height / max(scores.height, 1),
        "fpr": fpr,
        "reference_pr_auc": reference_pr_auc,
        "reference_fraud_share": reference_fraud_share,
        "pr_auc_drop": drop,
        "labels_without_events": outside,
    }
