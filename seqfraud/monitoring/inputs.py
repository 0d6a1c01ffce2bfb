"""The monitor's inputs: windows of traffic in model tokens, the reference the artifact records, labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from seqfraud import rundir
from seqfraud import schema as S
from seqfraud.data.events import (
    ZONED_TIMESTAMPS,
    DataValidationError,
    absent_as_negative,
    check_some_match,
    label_delay_us,
    read_labels,
    reading,
    refuse_early_label_times,
    renumbered,
    renumbered_said,
    resolve_paths,
    scan_table,
)
from seqfraud.data.shards import shard_files
from seqfraud.data.split import from_epoch_us, to_epoch_us
from seqfraud.errors import UserError
from seqfraud.features.spec import LABEL_DELAY, Spec
from seqfraud.features.tokens import Sequences, as_sequences, inter_event_seconds, polars_sequences
from seqfraud.scoring.prepare import (
    as_frame,
    epoch_unit,
    event_us,
    normalized_events,
    polars_frame,
    row_counts,
    row_hashes,
    say_rows,
)
from seqfraud.scoring.scorer import Scorer

log = logging.getLogger(__name__)


class MonitorError(UserError, ValueError):
    """Inputs the monitor cannot compare: no reference, an empty window, unknown thresholds."""


@dataclass
class Window:
    """One period of traffic in model tokens, with its raw events where raw events were given."""

    source: str
    seqs: Sequences
    events: pl.DataFrame | None  # normalized raw events; None from a tokenized dataset
    starts: np.ndarray | None = None  # each session's first event (epoch us), from a tokenized dataset

    @property
    def deltas_s(self) -> np.ndarray | None:
        """Seconds between consecutive events of a session (None from a tokenized dataset)."""
        return None if self.events is None else inter_event_seconds(self.events)


def raw_window(scorer: Scorer, events: Any, source: str = "events") -> tuple[Window, pl.LazyFrame]:
    """Raw events (a path, or a frame in the training column names) through the spec, with their entity features
    from the scorer's history where it has any: as the scorer reads them."""
    spec = scorer.spec
    if isinstance(events, (str, Path)):
        lf, source = scan_table(events, spec.schema, float32_decimal=spec.float32_decimal)
    else:
        lf = as_frame(events, spec, source).lazy()
    if lf.head(1).collect().height == 0:
        raise DataValidationError(f"{source}: no events")
    # Its columns checked first, the repeated rows counted after (review 208).
    normalized = scorer.in_context(normalized_events(lf, spec, source))
    if isinstance(events, (str, Path)):
        # As scoring says them: a day's 357 rows written twice moved scores by up to 0.96, unsaid here (dogfood 206).
        have = lf.collect_schema()
        at = event_us(lf, spec, epoch_unit(have, spec, source))
        with reading(source):
            counts = (
                lf.with_columns(row_hashes(spec, have, at))
                .select(pl.len(), *row_counts(spec, have, True, at))
                .collect()
            )
        say_rows(source, spec, counts.row(0, named=True), resolve_paths(events, warn=False))
    return Window(source, polars_sequences(normalized, spec), normalized), lf


def run_sessions(cur: Window, spec: Spec, **splits: Window) -> dict[str, int]:
    """Per split of the run, the current window's sessions it holds: a window the run learnt or chose on reads in
    sample (dogfood 201: a training month's PR-AUC 0.944 against the test's 0.841, read as no drop). A session
    counts where its id is the split's and it starts before the split ends: a later month whose ids a counter
    reset had numbered again was read as the run's own sessions (dogfood 237)."""
    assert cur.events is not None  # raw events
    starts = cur.events.group_by(S.SESSION_ID).agg(pl.col(S.TS_US).min())
    ends = {"train": spec.fit_info.get("val_start"), "val": spec.fit_info.get("test_start")}
    counts = {}
    for name, window in splits.items():
        end = ends.get(name)
        early = starts if end is None else starts.filter(pl.col(S.TS_US) < to_epoch_us(end))
        if n := len(set(early[S.SESSION_ID]).intersection(window.seqs.session_ids)):
            counts[name] = n
    return counts


def overlap(ref: pl.DataFrame, cur: pl.DataFrame) -> dict[str, Any] | None:
    """Where a raw reference's sessions (normalized events) start within the span of the current window's session
    starts, or the other way round: that span and the sessions in both; None where they do not (a session belongs
    to the window of its first event, as in the split). A reference that overlapped or equalled the current
    window hid its drift (doubled amounts read as a warning, not an alert), unsaid (dogfood 120)."""
    starts = [w.group_by(S.SESSION_ID).agg(pl.col(S.TS_US).min())[S.TS_US] for w in (ref, cur)]
    first = max(cast(int, s.min()) for s in starts)
    last = min(cast(int, s.max()) for s in starts)
    # Windows cut by event time share the sessions that run across the cut, whatever their starts (review 122).
    both = int(ref[S.SESSION_ID].unique().is_in(cur[S.SESSION_ID].unique().implode()).sum())
    if first > last and not both:
        return None
    span = (
        {"from": from_epoch_us(first), "to": from_epoch_us(last)}
        if first <= last
        else {"from": None, "to": None}
    )
    return span | {"sessions_in_both": both}


def dataset_window(path: Path, spec: Spec) -> Window:
    """A tokenized dataset written by preprocessing (one row per session, a token list per field)."""
    try:
        files = shard_files(path)
    except FileNotFoundError:
        raise MonitorError(
            f"{path}: the run's tokenized dataset is missing; pass --reference with raw "
            "events of the training period"
        ) from None
    columns = [S.SESSION_ID, S.LENGTH, S.START_TIME, *(S.token_column(f) for f in spec.fields)]
    data = pl.read_parquet(files, columns=columns)
    if data.height == 0:
        raise MonitorError(f"{path}: no sessions")
    return Window(str(path), as_sequences(data, spec), None, data[S.START_TIME].to_numpy())


def default_reference(scorer: Scorer, artifact: str | Path, split: str = "train") -> Window:
    """A period the artifact records: its run's tokenized dataset of ``split`` (in ``prepared_dir`` if the run
    was trained on one); by default the training period."""
    run_dir = (scorer.manifest.get("source") or {}).get("run_dir")
    if not run_dir:
        raise MonitorError(
            f"{artifact}: the manifest records no training run (source.run_dir) and the artifact "
            "holds no reference statistics; pass --reference with raw events of the training period"
        )
    return dataset_window(rundir.dataset(rundir.prepared_dir(run_dir), split), scorer.spec)


def joined(a: Window, b: Window) -> Window:
    """Two tokenized datasets as one window (the training and validation periods, read once each)."""
    assert a.starts is not None and b.starts is not None
    seqs = Sequences(
        [*a.seqs.session_ids, *b.seqs.session_ids],
        np.concatenate([a.seqs.tokens, b.seqs.tokens]),
        np.concatenate([a.seqs.lengths, b.seqs.lengths]),
    )
    return Window(f"{a.source} + {b.source}", seqs, None, np.concatenate([a.starts, b.starts]))


def reference_scores(scorer: Scorer, ref: Window, artifact: str | Path) -> tuple[np.ndarray, str]:
    """The served scores of the reference window, and where they come from. With raw reference events, the
    artifact scores them. For the default reference (the run's tokenized training sessions) they are the run's
    validation predictions, calibrated, the nearest period the run scored out of sample: the training sessions
    were scored in sample, more extreme than any later window (a drift built in), and a stacked artifact
    cannot score tokens alone (its LightGBM reads aggregates of raw events)."""
    if ref.events is not None:
        return scorer.score_sequences(ref.seqs, ref.events)[S.SCORE].to_numpy(), ref.source
    run_dir = (scorer.manifest.get("source") or {}).get("run_dir")
    path = rundir.predictions(run_dir, "val") if run_dir else None
    if path is None or not path.is_file():
        raise MonitorError(
            f"{artifact}: the reference scores come from its run's validation predictions "
            f"({path or 'no run recorded'}), which are missing; pass --reference with raw events of the training "
            "period"
        )
    raw = pl.read_parquet(path, columns=[S.SCORE])[S.SCORE].to_numpy().astype(np.float32)
    if left := rundir.unlabelled_val_dropped(str(run_dir)):
        # Labels that sample traffic unevenly (a review queue's) made the score read as drifting (dogfood 120).
        log.warning(
            "the reference scores are the run's %d labelled validation sessions; %d unlabelled ones were left out "
            "of them. Where labels are a biased sample of traffic (frauds labelled more often), the score's drift "
            "compares that sample with all traffic: pass --reference with raw events of a period before the "
            "current one (a model without entity features; one with them reads its train dataset, so read the "
            "score's drift with this in mind)",
            len(raw),
            left,
        )
        return scorer.calibrate(raw), f"{path} (the labelled sessions alone: {left:,} unlabelled left out)"
    return scorer.calibrate(raw), str(path)


def current_labels(
    labels: Any, events_lf: pl.LazyFrame, spec: Spec, as_of_us: int | None = None
) -> pl.DataFrame | None:
    """``session_id, label`` from a label table (path or frame), else the events' label column, else None. Where
    the model has a label-time column and the table holds it, also the label times (:data:`S.LABEL_TIME_US`), for
    :func:`matched_labels` to refuse one before its session and, with ``as_of_us`` (when the table was pulled),
    leave out one not known then. Without ``as_of_us`` a table whose times do not read is warned of and read
    without them (a table of other months' rows, some not yet dated, reads as before: review 197), and one whose
    times read is refused where they come before their sessions, as with it (dogfood 278)."""
    s = spec.schema
    if labels is None:
        if s.label not in events_lf.collect_schema():
            return None
        table = (
            events_lf.select(
                pl.col(s.session_id).cast(pl.String).alias(S.SESSION_ID),
                pl.col(s.label).cast(pl.Float64).alias(S.LABEL),
            )
            .drop_nulls()
            .collect()
        )
        return table.group_by(S.SESSION_ID).agg(pl.col(S.LABEL).max().cast(pl.Int8))
    given = str(labels) if isinstance(labels, (str, Path)) else polars_frame(labels, "labels")
    negative = spec.absent_is_negative
    columns = (
        given.columns if isinstance(given, pl.DataFrame) else scan_table(given, s)[0].collect_schema().names()
    )
    holds_times = s.label_time is not None and s.label_time in columns

    def read(dated: bool) -> pl.DataFrame:
        return read_labels(
            given,
            s,
            timestamp_unit=spec.timestamp_unit if dated else None,
            empty_ok=negative,
            frauds_only=negative,
            pending_ok=not negative,  # a review queue's pending rows, as training read them (review 205)
            zero_padded=spec.zero_padded_ids,
            integer_typed=spec.integer_ids,
            forms=spec.id_forms,
            events_zoned=spec.fit_info.get(ZONED_TIMESTAMPS, False),
        )[0]

    table = read(dated=holds_times and as_of_us is not None)  # refused here for what is not a label time
    if holds_times and as_of_us is None:
        # Said where its times would be refused: a table of dates written 2026/05/24 passed until a run with
        # --labels-as-of refused the same export (dogfood 272); where they read, kept for matched_labels to refuse a
        # label before its session (dogfood 278: a window's times a year late, its labels counted, unsaid).
        try:
            table = read(dated=True)
        except DataValidationError as e:
            log.warning("%s (its label times are read with --labels-as-of alone, which refuses them)", e)
    return table


def matched_labels(
    table: pl.DataFrame,
    events: pl.DataFrame,
    source: str,
    spec: Spec,
    as_of_us: int | None = None,
) -> tuple[pl.DataFrame, int, dict[str, Any]]:
    """The labels of the current window's sessions (its normalized ``events``), how many others the table holds
    (left out and counted: a table of every label is a normal input), and, where some of the window's sessions
    wait for their label delay (below), the report's record of them: how many, how many of them the table lists
    as fraud already, the delay, and ``as_of_us`` as a datetime where the delay runs from it rather than from the
    window's last event. A table none of whose ids match is refused: its ids were read otherwise than
    the events' (``007`` against ``7``), and the window's performance would read as unlabelled.

    Under a model trained with ``data.policy.on_unlabeled=negative`` a session the table leaves out is legitimate
    once its label delay has run by the window's last event, as in training; a later one may still get its
    chargeback, and is left out (all read as legitimate at once, the latest frauds counted as misses: review 58),
    and so is a later fraud already listed: kept beside the later legitimate ones left out, early chargebacks
    raised the fraud rate and the PR-AUC (dogfood 65). The figures are the settled sessions'. ``as_of_us`` (when
    the table was pulled) settles the delay instead of the window's last event: last month's window, monitored
    with the chargebacks of the two months since, left every session out (dogfood 73). A label the table dates after
    ``as_of_us`` (its label times, where :func:`current_labels` read them) was not known then, and is read so: the
    window's figures as they stood on that date (dogfood 120: every label was read), and their count is in
    ``pending`` (``labels_after_as_of``).
    """
    sessions = events[S.SESSION_ID].unique()
    where = f"{source}: column {spec.schema.session_id!r}"
    check_some_match(table, sessions, where, "the current window", spec.absent_is_negative)
    inside = table[S.SESSION_ID].is_in(sessions.implode())
    outside = table.height - int(inside.sum())
    if outside:
        others = table.filter(~inside)[S.SESSION_ID]
        # A table of every label is normal; ids that meet a window session's written another way are misread (346
        # of a window's labels were left out unsaid, the window read as half unlabelled: dogfood 159). Warned, not
        # refused as training's orphans are: these labels may be other windows' sessions, a real '1005' among them
        # beside this window's '001005'.
        met = renumbered(others, sessions)
        said = renumbered_said(met)
        # Refused where fraud labels meet, by ids written another way, window sessions with no label of their own:
        # their frauds' ids were misread, and would count as unlabelled or legitimate (dogfood 173: a window's every
        # fraud lost, 0 positives, no alert; dogfood 200: 13 of 32, PR-AUC 0.614 for 0.983, a false drop), as
        # training refuses them. A real '1005' of another window beside this one's '001005' (review 174) with a
        # label of its own (review 176) is warned of below; one without is refused, with the way round it.
        unlabelled = met.filter(~pl.col("event").is_in(table[S.SESSION_ID].implode()))["label"]
        misread = table.filter(pl.col(S.SESSION_ID).is_in(unlabelled.implode()) & (pl.col(S.LABEL) == 1))
        if misread.height:
            # Of those frauds alone: another pair first named a legitimate label (review 205).
            frauds = renumbered_said(met.filter(pl.col("label").is_in(misread[S.SESSION_ID].implode())))
            raise DataValidationError(
                f"{where}: {misread.height:,} fraud label(s) meet the current window's sessions that have no label "
                f"of their own, by ids written another way{frauds}. Read as they are, those frauds would count as "
                "missing from the window, and its performance as worse than it is. Where they are other sessions "
                "(ids that differ by leading zeros or case alone name different sessions in your log), give a "
                "label table of this window's sessions"
            )
        (log.warning if said else log.info)(
            "%s: %d of %d labelled session(s) have no events in the current window and are left out (e.g. %r)%s",
            source,
            outside,
            table.height,
            others[0],
            said,
        )
    table, pending = table.filter(inside), cast(dict[str, Any], {})
    if S.LABEL_TIME_US in table.columns:
        starts = events.group_by(S.SESSION_ID).agg(pl.col(S.TS_US).min().alias(S.START_TIME))
        early = table.join(starts, on=S.SESSION_ID).filter(pl.col(S.LABEL_TIME_US) < pl.col(S.START_TIME))
        if early.height:
            refuse_early_label_times(early, source, cast(str, spec.schema.label_time), early.height)
        later = (
            (pl.col(S.LABEL_TIME_US) > as_of_us).fill_null(False) if as_of_us is not None else pl.lit(False)
        )
        if n := int(table.select(later.sum()).item()):
            # The window as the table stood then, both ways: neither dropped with the session (frauds alone would
            # go: review 124) nor read as known.
            log.info(
                "%s: %d label(s) dated after --labels-as-of (column %r) were not known then, and are read so: an "
                "unlabelled session, or, under data.policy.on_unlabeled=negative, a legitimate one once its delay "
                "has run",
                source,
                n,
                spec.schema.label_time,
            )
            pending["labels_after_as_of"] = n
        table = table.filter(~later).drop(S.LABEL_TIME_US)
    if spec.absent_is_negative:
        settled = sessions
        if (delay := label_delay_us(spec.fit_info.get(LABEL_DELAY))) is not None:
            last = cast(int, events[S.TS_US].max()) if as_of_us is None else as_of_us
            ends = events.group_by(S.SESSION_ID).agg(pl.col(S.TS_US).max())
            settled = ends.filter(pl.col(S.TS_US) <= last - delay)[S.SESSION_ID]
        waiting = table.filter(~pl.col(S.SESSION_ID).is_in(settled.implode()))
        table = table.filter(pl.col(S.SESSION_ID).is_in(settled.implode()))
        if sessions.len() > settled.len():
            pending |= {
                "sessions_within_label_delay": sessions.len() - settled.len(),
                "frauds_within_label_delay": int((waiting[S.LABEL] == 1).sum()),
                "label_delay": spec.fit_info.get(LABEL_DELAY),
                # None: the delay runs from the window's last event
                "labels_as_of": None if as_of_us is None else from_epoch_us(as_of_us),
            }
        log.info(
            "%s: %d session(s) of the window have their label delay past, %d of them listed as fraud and the rest "
            "read as legitimate; %d more, ended within the delay of the window's last event (or of --labels-as-of), "
            "are left out, frauds listed among them too (the model was trained with data.policy.on_unlabeled=negative)",
            source,
            settled.len(),
            table.height,
            sessions.len() - settled.len(),
        )
        table = absent_as_negative(table, settled)
    return table, outside, pending
