"""Out-of-time split: a session belongs to the period of its first event."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl

from seqfraud import schema as S
from seqfraud.errors import ConfigError

log = logging.getLogger(__name__)


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MICROSECOND = timedelta(microseconds=1)


def to_epoch_us(value: str | datetime) -> int:
    """ISO datetime (naive means UTC) to epoch microseconds, exactly (through a float of seconds, 1% of times
    came one microsecond low: review 188); a ValueError that says so where it is none."""
    try:
        dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    except ValueError as e:
        raise ValueError(f"{value!r} is not an ISO 8601 date or datetime ({e})") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return (dt - EPOCH) // MICROSECOND


def setting_time(key: str, value: str | datetime) -> int:
    """A time setting (``data.split.test_start``) in epoch microseconds, refused by its key when it does not
    parse."""
    try:
        return to_epoch_us(value)
    except ValueError as e:
        raise ConfigError(f"{key}: {e}") from None


def from_epoch_us(us: int) -> str:
    """RFC 3339 text of an instant, exactly, as :func:`to_epoch_us` reads it."""
    return (EPOCH + int(us) * MICROSECOND).isoformat()


def split_boundaries(
    sessions: pl.DataFrame,
    val_start: str | None = None,
    test_start: str | None = None,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    test_end: str | None = None,
) -> tuple[int, int]:
    """Boundaries in epoch microseconds; a missing one is the start time that leaves its fraction of sessions after it."""
    starts = sessions[S.START_TIME].sort()
    n = len(starts)

    def from_end(fraction: float) -> int:
        return int(starts[min(max(n - round(n * fraction), 0), n - 1)])

    test_us = setting_time("data.split.test_start", test_start) if test_start else from_end(test_fraction)
    val_us = (
        setting_time("data.split.val_start", val_start)
        if val_start
        else from_end(test_fraction + val_fraction)
    )
    if val_us > test_us:
        raise ConfigError(
            f"data.split: val_start ({from_epoch_us(val_us)}) is after test_start ({from_epoch_us(test_us)})"
        )
    if test_end and setting_time("data.split.test_end", test_end) <= test_us:
        raise ConfigError(
            f"data.split: test_end ({test_end}) is not after test_start ({from_epoch_us(test_us)})"
        )
    # A fraction's boundary inside sessions that start at one time takes them all to the later split: a log whose
    # sessions start at three times emptied train, and the error said to leave the boundaries unset (dogfood 166).
    distinct = starts.unique()
    by_val = {} if val_start else {"val_fraction": val_fraction, "test_fraction": test_fraction}
    by_test = {} if test_start else {"test_fraction": test_fraction}
    # Each split that may come out empty, the boundary that ends it, and the fractions that placed its bounds.
    for name, earlier, at, fractions in (
        ("train", starts < val_us, val_us, by_val),
        ("val", (starts >= val_us) & (starts < test_us), test_us, by_val | by_test),
    ):
        tied = int((starts == at).sum())
        if fractions and distinct.len() > 1 and tied > 1 and not earlier.any():
            placed = " and ".join(f"{k} ({v})" for k, v in fractions.items())
            raise ConfigError(
                f"data.split: {tied:,} of the {n:,} sessions start at {from_epoch_us(at)}, where {placed} put a "
                f"boundary, so the {name} split is empty: set data.split.val_start and test_start (the sessions "
                f"start at {distinct.len():,} distinct times, the first "
                f"{[from_epoch_us(int(x)) for x in distinct.head(5)]})"
            )
    return val_us, test_us


def fractions_read(split: Mapping[str, Any]) -> list[str]:
    """The fractions of a data.split section that :func:`split_boundaries` reads: both while val_start is unset
    (validation then starts that share of sessions before the test period's), else test's while test_start is."""
    if split.get("val_start") is None:
        return ["val_fraction", "test_fraction"]
    return ["test_fraction"] if split.get("test_start") is None else []


def before_test_end(sessions: pl.DataFrame, test_end: str | None) -> pl.DataFrame:
    """Sessions that start before ``test_end`` (all when None); the rest belong to no split, so a backtest
    window's test period can end before the data does."""
    if not test_end:
        return sessions
    kept = sessions.filter(pl.col(S.START_TIME) < setting_time("data.split.test_end", test_end))
    if kept.height == 0:
        raise ConfigError(f"data.split: test_end ({test_end}) is before every session")
    return kept


def assign_split(sessions: pl.DataFrame, val_us: int, test_us: int) -> pl.DataFrame:
    return sessions.with_columns(
        pl.when(pl.col(S.START_TIME) >= test_us)
        .then(pl.lit("test"))
        .when(pl.col(S.START_TIME) >= val_us)
        .then(pl.lit("val"))
        .otherwise(pl.lit("train"))
        .alias(S.SPLIT)
    )


# Train or val sessions running on past the next split's start in more than this share of their split's events are
# warned of: a session of minutes near the boundary is harmless, a customer's months of events are not.
CROSSING_SHARE = 0.01


def crossing(sessions: pl.DataFrame, val_us: int, test_us: int) -> dict[str, dict[str, int]]:
    """Train sessions that end at or after the validation start, and val sessions at or after the test start: a
    session belongs to the split of its first event, so its later events (and its label, where the fraud came
    later) are read in a period that judges it. A customer or card taken as the session id ran months on: half a
    training split's events fell in the test period, and 17 of its 30 frauds first happened there (review 104).
    Per split: how many, and their events (``sessions_crossing_split``)."""
    ends = {"train": val_us, "val": test_us}
    out = {}
    for split, end in ends.items():
        rows = sessions.filter((pl.col(S.SPLIT) == split) & (pl.col(S.END_TIME) >= end))
        if rows.height:
            out[split] = {"sessions": rows.height, "events": int(rows["n_events"].sum())}
    return out


# The period each boundary that later_boundary returns starts, for its callers' messages.
BOUNDARY_PERIOD = {"val_start": "validation", "test_start": "test"}


def later_boundary(theirs: Mapping[str, Any], ours: Mapping[str, Any]) -> str | None:
    """``val_start`` or ``test_start`` where the split ``theirs`` (a run's ``fit_info``, or an embedding's record:
    datetimes or ISO text) starts later than ``ours``: its training period then held sessions of our validation
    or test period, whose events (and labels, where it read them) shaped its encoder. None where neither does."""
    for key in BOUNDARY_PERIOD:
        there, here = theirs.get(key), ours.get(key)
        if there and here and _moment(there) > _moment(here):
            return key
    return None


def _moment(value: datetime | str) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def labels_known_by(
    sessions: pl.DataFrame, cutoff: str | None, test_us: int, delay_us: int | None = None
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Train and val labels as they stood at the cutoff (``data.split.label_cutoff``: ``test_start`` or an ISO
    datetime; None: the labels as given). A model retrained then had only the labels known before it; a label
    known at or after it (its label time, or its session's end plus ``data.policy.label_delay``) leaves its
    session unlabelled, for the unlabelled policy to place. Test labels stay: they are what is measured.

    With a label delay (``delay_us``), a session not final by the cutoff (its end plus the delay) is held back
    whatever its label: a chargeback can come before the delay ends, a legitimate session's label only at its
    end, so the early frauds alone were kept and the weeks before the cutoff read as all fraud (review 104:
    validation's fraud rate 2.8% to 5.7%, and the calibration fitted on it twice the test's).

    The report counts the labels the cutoff held back (``labels_known_after_cutoff``) and the train/val labels
    kept though known only at or after the test start (``labels_known_after_test_start``: all of those without
    a cutoff, where a single out-of-time run trains on them, and those before a cutoff later than the test
    start), which a retrain at the test start could not have had. A label with no known time (no label time
    and no delay) cannot be placed, so a cutoff refuses it."""
    labelled, known = (pl.col(S.SPLIT) != "test") & pl.col(S.LABEL).is_not_null(), pl.col(S.LABEL_KNOWN)
    if not sessions.select((labelled & known.is_not_null()).any()).item():  # no label time and no delay
        if cutoff is not None:
            raise ConfigError(
                "data.split.label_cutoff needs each label's known time: set data.schema.label_time and/or "
                "data.policy.label_delay (the time after which a label, positive or negative, is final)"
            )
        return sessions, {}
    if cutoff is not None and (n := sessions.select((labelled & known.is_null()).sum()).item()):
        raise ConfigError(
            f"data.split.label_cutoff: {n:,} train/val label(s) have no known time (no label time, and no "
            "data.policy.label_delay to count from): set data.policy.label_delay, the time after which a label "
            "is final"
        )

    def counts(where: pl.Expr) -> dict[str, dict[str, int]]:
        # Sorted: group_by's order moved train and val about from window to window (dogfood 195).
        rows = sessions.filter(where).group_by(S.SPLIT).agg(pl.len(), pl.col(S.LABEL).sum()).sort(S.SPLIT)
        return {split: {"sessions": n, "positives": int(p or 0)} for split, n, p in rows.iter_rows()}

    after_test = labelled & (known >= test_us)
    if cutoff is None:
        return sessions, {"labels_known_after_test_start": counts(after_test)}
    at = test_us if cutoff == "test_start" else setting_time("data.split.label_cutoff", cutoff)
    after = labelled & (known >= at)
    if delay_us is not None:
        after = after | (labelled & (pl.col(S.END_TIME) + delay_us >= at))
    # Under data.policy.on_unlabeled=negative a session whose chargeback came after its delay read as legitimate
    # at the cutoff, as a retrain then would have read it (label_known).
    legit = after & (pl.col(S.LEGIT_FROM) < at).fill_null(False)
    report = {"labels_known_after_cutoff": counts(after & ~legit)}
    if sessions.select(legit.any()).item():
        report["legitimate_at_cutoff"] = counts(legit)
    if at > test_us:  # a cutoff past the test start keeps labels a retrain then could not have had: counted
        late_legit = legit & (pl.col(S.LEGIT_FROM) >= test_us)  # read so only after it (dogfood 164)
        report["labels_known_after_test_start"] = counts((after_test & ~after) | late_legit)
    labels = (
        pl.when(legit)
        .then(pl.lit(0, sessions.schema[S.LABEL]))
        .when(after)
        .then(None)
        .otherwise(pl.col(S.LABEL))
    )
    return sessions.with_columns(labels.alias(S.LABEL)), report


# Below this many validation positives, checkpoint, stacker, calibration and thresholds rest on a handful: warned.
FEW_VAL_POSITIVES = 5


# A validation whose labels a cutoff held back, every one (a backtest's window names it so: EmptySplit.lacking).
LABEL_UNKNOWN_BY_CUTOFF = "the val split holds no session with a label"


class EmptySplit(ConfigError):
    """A split without the sessions or labels a run needs: a backtest skips that window, and says ``lacking``
    (the message's advice on data.split is not a backtest's, which sets the split window by window)."""

    def __init__(self, message: str, lacking: str):
        super().__init__(message)
        self.lacking = lacking


def check_splits(report: dict[str, Any], cutoff: str | None, *, supervised: bool) -> None:
    """Refuse, before a model is fitted, the splits of a preprocessing ``report`` that a run cannot use: an empty
    one (training failed only after its fit, on the empty test set), and for a ``supervised`` run a training
    split without a positive label or a validation split without both classes (early stopping, the checkpoint,
    the stacker's choice and calibration all read validation PR-AUC, which is then undefined). Pretraining reads
    train and validation, and no label."""
    counts = report["splits"]
    bounds = f"validation from {report['val_start']}, test from {report['test_start']}"
    if span := report.get("sessions_start"):
        bounds += f"; the log's sessions start from {span[0]} to {span[1]}"
    # Validation holds labelled sessions only: unlabelled ones stay in train (data.policy.on_unlabeled), and so do
    # those whose label a cutoff held back; a cutoff past every validation label empties it.
    known, earlier = (
        (
            f" known by data.split.label_cutoff={cutoff}",
            "start validation a labels' delay or more before the cutoff (data.split.val_start)",
        )
        if cutoff is not None
        else ("", "start validation earlier (data.split.val_start, or data.split.val_fraction)")
    )
    for name in S.SPLITS if supervised else ("train", "val"):
        if not counts[name]["sessions"]:
            if name == "val" and cutoff is not None:
                lacking = f"{LABEL_UNKNOWN_BY_CUTOFF}{known}"
                raise EmptySplit(
                    f"data.split: {lacking} ({bounds}): {earlier}",
                    lacking,
                )
            # Its period has sessions, none labelled: the latest weeks, whose chargebacks are still to come. Said
            # as such, where "move val_start" beside a span that holds it read as a contradiction (dogfood 105).
            if name == "val" and (unlabelled := report.get("unlabeled_val_sessions_dropped")):
                lacking = f"the val split's {unlabelled:,} session(s) are all unlabelled"
                raise EmptySplit(
                    f"data.split: {lacking} ({bounds}), and validation holds labelled sessions only (a "
                    "pretraining's validation too, so that a fine-tune on its prepared_dir validates on the same "
                    "sessions): start validation earlier, where labels are (data.split.val_start, or "
                    "data.split.val_fraction), or label some of its sessions",
                    lacking,
                )
            lacking = f"the {name} split holds no session"
            raise EmptySplit(
                f"data.split: {lacking} ({bounds}): move data.split.val_start / test_start, or leave them unset "
                "for val_fraction / test_fraction",
                lacking,
            )
    if not supervised:
        return
    if not counts["train"]["positives"]:
        lacking = "the train split holds no positive label"
        raise EmptySplit(
            f"data.split: {lacking} ({bounds}): a supervised model has nothing to learn from", lacking
        )
    positives = counts["val"]["positives"]
    negatives = counts["val"]["sessions"] - positives
    if not positives or not negatives:
        lacking = f"validation keeps {positives:,} positive and {negatives:,} negative label(s){known}, and needs both"
        raise EmptySplit(
            f"data.split: {lacking}: early stopping, the checkpoint, the stacker's choice and calibration read its "
            f"PR-AUC; {earlier}",
            lacking,
        )
    if positives < FEW_VAL_POSITIVES:
        log.warning(
            "validation holds %d positive session(s) (%s): the checkpoint, the stacker's choice, calibration and "
            "the thresholds rest on them; start validation earlier (data.split.val_start or val_fraction)",
            positives,
            bounds,
        )
