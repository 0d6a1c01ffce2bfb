"""The history an entity-aware artifact scores against: other sessions' events, and labels with their known-times.

Entity features (:mod:`seqfraud.features.entities`) of a scored event read every earlier event on the same
device, IP or card, and every label known by then. At scoring, those come from a :class:`History` plus the
scored events themselves (a session scored in the same batch is context for the others, as in training). An
artifact with entity features refuses to score without one.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple, cast

import polars as pl

from seqfraud import schema as S
from seqfraud.data.events import (
    ZONED_TIMESTAMPS,
    DataValidationError,
    absent_as_negative,
    check_some_match,
    label_delay_us,
    label_known,
    read_labels,
    reading,
    refuse_misread_orphans,
    scan_table,
)
from seqfraud.data.split import from_epoch_us
from seqfraud.errors import UserError
from seqfraud.features.entities import EntitySpec, attach, column_features, kernel_rows
from seqfraud.features.spec import ON_MIXED_LABELS, Spec
from seqfraud.scoring.prepare import normalized_events, row_counts, row_hashes, say_rows

log = logging.getLogger(__name__)


class HistoryRequired(UserError, ValueError):
    """An artifact with entity features was asked to score without a history."""


@dataclass
class History:
    """Normalized events of other sessions, and a label table (``session_id``, ``label``, label time).

    An empty history is refused where it is read (:meth:`from_frame`, which every command and the Python API go
    through): taken, it read as one that holds nothing, and scores moved unsaid.

    The label table may hold sessions outside the history (those being scored, older ones): a label counts only
    where its session's events are in the history or scored. But a table none of whose ids match the history's
    is refused: its ids were read otherwise than the events' (``007`` against ``7``), and every risk feature
    would stay zero unseen.
    """

    events: pl.DataFrame
    labels: pl.DataFrame
    label_source: str
    labels_on_events: bool  # the label table was read off the events: a session's rows there are its events
    source: str = "history"
    # Whether warn_if_short has spoken: once a history, where an export's check (one pass a format) and explain
    # (the score, then each event left out) said it two times and more (dogfood 42).
    said_short: bool = field(default=False, repr=False)
    # Whether warn_if_apart has looked (once a history: it reads the whole of it).
    looked_apart: bool = field(default=False, repr=False)
    read_apart: tuple[str, ...] = ()  # :meth:`apart`

    @classmethod
    def read(
        cls,
        events: str | os.PathLike | pl.DataFrame,
        labels: str | os.PathLike | pl.DataFrame | None,
        spec: Spec,
        *,
        scored: pl.Series | None = None,
    ) -> History:
        """Events as the scorer reads them; labels from ``labels`` (a table with the training label columns,
        sessions without a label yet simply absent), or off the events when None. Files or Polars frames: a frame
        was read as a path, and its whole printout told as a file not found (dogfood 60). ``scored``: the ids of
        the sessions to be scored, where known, whose labels the table may hold too (:meth:`from_frame`)."""
        if isinstance(events, pl.DataFrame):
            return cls.from_frame(events.lazy(), "history", labels, spec, scored=scored)
        lf, source = scan_table(events, spec.schema, float32_decimal=spec.float32_decimal)
        return cls.from_frame(lf, source, labels, spec, scored=scored)

    @classmethod
    def from_frame(
        cls,
        events: pl.LazyFrame,
        source: str,
        labels: str | os.PathLike | pl.DataFrame | None,
        spec: Spec,
        *,
        labelled: pl.LazyFrame | None = None,
        scored: pl.Series | None = None,
    ) -> History:
        """:meth:`read` of a frame. With labels on the events (``labels`` None), ``labelled`` gives the events they
        are read from where more sessions than the history's are labelled: the export's check leaves the test
        sessions' events out of its history, not their labels, which training's features read as they became
        known (dogfood 72: a log labelled on its events failed every export as train/serve skew). A label table's
        rows of the ``scored`` sessions are no orphans whose ids were misread: a table of every label beside a
        history of one session was refused as "written in a form no event id has" (dogfood 195)."""
        entity = _entity(spec)
        frame = normalized_events(events, spec, source, keep_ids=True)
        # Read as one, every entity feature would be new and every risk feature zero, unsaid.
        if not frame.height:
            raise DataValidationError(
                f"{source}: the history's event log is empty: give the earlier events of other sessions that the "
                "entity features read, as training read them (docs/entities.md, 'How much history')"
            )
        have = events.collect_schema()  # where no id tells repeats apart (dogfood 221)
        if counted := row_counts(spec, have, False):
            with reading(source):
                counts = events.with_columns(row_hashes(spec, have)).select(pl.len(), *counted).collect()
            say_rows(source, spec, counts.row(0, named=True), [])
        on_events = events if labelled is None else labelled
        if entity.risk and labels is None and spec.schema.label not in on_events.collect_schema():
            raise DataValidationError(
                f"{source}: this model's risk features read the history's labels, and its events carry no "
                f"{spec.schema.label!r} column: give the label table (--history-labels PATH; in Python, "
                "History.read(events, labels, spec))"
            )
        if entity.risk:
            table, label_source = read_labels(
                on_events if labels is None else labels if isinstance(labels, pl.DataFrame) else str(labels),
                spec.schema,
                timestamp_unit=spec.timestamp_unit,
                # Labels off the events, of a log whose training took a session's label from any of its events.
                any_event=labels is None and spec.fit_info.get(ON_MIXED_LABELS) == "any",
                rows_are_events=labels is None,
                empty_ok=spec.absent_is_negative,
                name=source,
                frauds_only=labels is not None and spec.absent_is_negative,
                pending_ok=not spec.absent_is_negative,  # a review queue's pending rows (review 205)
                zero_padded=spec.zero_padded_ids,
                integer_typed=spec.integer_ids,
                forms=spec.id_forms,
                events_zoned=spec.fit_info.get(ZONED_TIMESTAMPS, False),
            )
        else:
            table, label_source = (
                pl.DataFrame(
                    {S.SESSION_ID: [], S.LABEL: []}, schema={S.SESSION_ID: pl.String, S.LABEL: pl.Int8}
                ),
                source,
            )
        history_ids = frame[S.SESSION_ID].unique()
        where = f"{label_source}: column {spec.schema.session_id!r}"
        check_some_match(table, history_ids, where, source, spec.absent_is_negative)
        # A table of its own, whose ids are checked as training checks a label table's: its rows of no history
        # session are those scored or older ones (kept, as under on_orphan_labels=drop), not ids written another way.
        known = history_ids if scored is None else pl.concat([history_ids, scored.cast(pl.String)]).unique()
        orphans = table.filter(~pl.col(S.SESSION_ID).is_in(known.implode()))
        # Where none met, check_some_match judged the table.
        misread = labels is not None and 0 < orphans.height < table.height
        if misread and (odd := refuse_misread_orphans(orphans, known, where, source, "drop")):
            log.warning(
                "%s: %s labelled session(s) have no events in %s and count only where scored%s",
                label_source,
                f"{orphans.height:,}",
                source,
                odd,
            )
        # One word of a stalled file: its settled sessions' frauds, else its label times.
        if entity.risk and not warn_if_few_frauds(frame, table, entity, label_source):
            warn_if_labels_stop(frame, table, label_source)
        if entity.risk and spec.absent_is_negative:  # the table lists the frauds alone, as training's did
            table = absent_as_negative(table, history_ids)
        return cls(frame, table, label_source, labels is None, source)

    def context(self, events: pl.DataFrame, spec: Spec) -> pl.DataFrame:
        """``events`` (normalized, the sessions being scored) with their entity features, read from the history
        and from ``events`` themselves."""
        self._refuse_overlap(events, spec)
        if not self.said_short:
            self.said_short = warn_if_short(self.events, events, spec, self.source, self.latest_label_lag_us)
        if not self.looked_apart:
            warn_if_apart(self.events, events, spec, self.source)
            self.looked_apart = True
        # Values no other session holds (control characters are refused in entity values), then their own again.
        mark = "\x00apart:"
        events = events.with_columns((mark + pl.col(c)).alias(c) for c in self.read_apart)
        return entity_context(
            events, self.events, self.labels, self.label_source, self.labels_on_events, spec
        ).with_columns(pl.col(c).str.strip_prefix(mark) for c in self.read_apart)

    def recurrences(self, spec: Spec) -> dict[str, Recurrence]:
        """Per entity column, the history's :class:`Recurrence`, where it holds values enough: what a service
        seeded with it judges its online events' values by (:class:`~seqfraud.scoring.online.Unmet`)."""
        out = {}
        for c in spec.schema.entities:
            if (
                recurring := recurrence(self.events.select(S.SESSION_ID, S.TS_US, c).drop_nulls(c), c)
            ) is not None:
                out[c] = recurring
        return out

    @functools.cached_property
    def latest_label_lag_us(self) -> int | None:
        """How long after its session's last event the history's latest-dated label became known (None without
        label times): a risk feature reads a label that much after its session, whatever the label delay."""
        if S.LABEL_TIME_US not in self.labels.columns:
            return None
        ends = self.events.group_by(S.SESSION_ID).agg(pl.col(S.TS_US).max().alias("end"))
        known = self.labels.join(ends, on=S.SESSION_ID)
        return known.select((pl.col(S.LABEL_TIME_US) - pl.col("end")).max()).item()

    def beside(self, events: pl.LazyFrame, source: str, spec: Spec) -> History:
        """This history with ``events`` (raw: sessions scored beside the ones read against it) as context too:
        explain reads one session of a file, whose other sessions are context for it as ``seqfraud score`` of
        the file reads them (dogfood 102: explain showed 0.938 for a session scored 0.964)."""
        more = normalized_events(events, spec, source, keep_ids=True)
        self._refuse_overlap(more, spec)
        return replace(self, events=pl.concat([self.events, more], how="diagonal_relaxed"))

    def apart(self, column: str) -> History:
        """This history, read as if no other session held the scored sessions' values of entity ``column``: what a
        score owes to that column's context alone, every other link kept (blanking the history's shared values
        moved the other columns' features more: review 222). The other columns' counts of distinct values still
        see the renamed value as another one beside the history's (review 223)."""
        return replace(self, read_apart=(*self.read_apart, column), said_short=True, looked_apart=True)

    def _refuse_overlap(self, events: pl.DataFrame, spec: Spec) -> None:
        scored = events[S.SESSION_ID].unique()
        shared = self.events[S.SESSION_ID].filter(self.events[S.SESSION_ID].is_in(scored.implode()))
        if not shared.len():
            return
        # Named, each with its likely cause (dogfood 173: daily folders cut into history and scored days cut the
        # sessions that cross midnight, and the count alone said neither which nor why): by how far apart the history's
        # and the scored events of one id lie (review 242: by the sign of one gap, a later history and ids per day read
        # as cuts, and a mix of causes as one).
        sid, at = pl.col(S.SESSION_ID), pl.col(S.TS_US)
        spans = [
            frame.filter(sid.is_in(scored.implode()))
            .group_by(S.SESSION_ID)
            .agg(at.min().alias(f"{k}0"), at.max().alias(f"{k}1"))
            for frame, k in ((self.events, "h"), (events, "s"))
        ]
        apart_us = pl.max_horizontal(pl.col("s0") - pl.col("h1"), pl.col("h0") - pl.col("s1"))
        # Two parts of one session cut in time lie within its longest gap: an hour, or ten times training's 99.9%.
        near_us = 1e6 * max(3_600.0, 10 * spec.longest_gap_s(0.999))
        kind = (
            pl.when(apart_us < 0)
            .then(pl.lit("own"))
            .when(apart_us <= near_us)
            .then(pl.lit("cut"))
            .otherwise(pl.lit("reused"))
        )
        read = (
            spans[0]
            .join(spans[1], on=S.SESSION_ID)
            .with_columns(kind.alias("kind"), (apart_us / 86_400e6).alias("days"))
        )
        causes = {
            "own": "overlap the history's events of their id in time: the history holds the scored sessions' own "
            "events; leave the scored events out of the history",
            "cut": "adjoin the history's events of their id: where a cut in time split sessions (daily files cut at "
            "midnight), give each such session's events to one side",
            "reused": "lie a median {days:,.1f} day(s) from the history's events of their id, further than training's "
            "sessions' events: were the ids used again (a counter reset, ids per day)? Give each session an id of its "
            "own (prefix the period)",
        }
        said = [
            f"{len(group):,} {causes[k].format(days=statistics.median(group['days'].to_list()))} (first: {group[S.SESSION_ID].min()!r})"
            for k in causes
            if len(group := read.filter(pl.col("kind") == k))
        ]
        raise DataValidationError(
            f"{self.source}: column {spec.schema.session_id!r}: {shared.len():,} history event row(s) of "
            f"{shared.n_unique():,} session(s) being scored (first: {shared.min()!r}); a history holds other "
            f"sessions only (the scored events are context for each other already): of those sessions, {'; '.join(said)}"
        )


# The latest settled sessions judged on their own (warn_if_few_frauds): a feed that stalled months before the
# history's end still named enough frauds over the whole of it.
LATEST_SETTLED_US = 30 * 86_400_000_000


def warn_if_few_frauds(history: pl.DataFrame, labels: pl.DataFrame, entity: EntitySpec, source: str) -> bool:
    """Log where the history's labels name under a tenth of the frauds that training's rate gives its settled
    sessions (those that ended training's label lag before its last event, whose labels have come), or those of
    them that ended in the last :data:`LATEST_SETTLED_US` of that, and that rate gives 10 or more: an empty or
    stalled chargeback file read every history session as legitimate, and a mule's shared payout account lost its
    risk, unsaid (dogfood 243: scores moved by up to 0.14); a file pulled three months before the history's end
    named 70 of 310 frauds, enough over the whole, and moved scores by up to 0.69 (dogfood 244)."""
    ends = history.group_by(S.SESSION_ID).agg(pl.col(S.TS_US).max())
    settled = ends.filter(pl.col(S.TS_US) <= pl.col(S.TS_US).max() - (entity.label_lag_us or 0))
    frauds = labels.filter(pl.col(S.LABEL) == 1)[S.SESSION_ID].unique().implode()
    latest = settled.filter(pl.col(S.TS_US) > pl.col(S.TS_US).max() - LATEST_SETTLED_US)
    for sessions, which in (
        (settled, "settled session(s)"),
        (latest, "settled session(s) that ended in the latest 30 days of them"),
    ):
        expected = entity.prior * sessions.height
        named = sessions[S.SESSION_ID].is_in(frauds).sum()
        if expected >= 10 and named < expected / 10:
            log.warning(
                "%s: the history's labels name %s fraud(s) among its %s %s (to %s), where training's rate (%.2f%%) "
                "gives about %s: is the chargeback file empty, stalled or another period's? The risk features read "
                "every session it leaves out as not known to be fraud",
                source,
                f"{named:,}",
                f"{sessions.height:,}",
                which,
                from_epoch_us(cast(int, sessions[S.TS_US].max()))[:10],
                100 * entity.prior,
                f"{expected:,.0f}",
            )
            return True
    return False


# A label table whose latest label time lies this long before the history's last event, where its own rate of fraud
# labels over the LABEL_RATE_US before would have given LABELS_EXPECTED more since, stopped: a file pulled two months
# before the history's end named too few frauds of the latest settled sessions to be said by them, and moved scores
# by up to 0.69 (review 249). Weekly chargeback batches leave gaps of days.
LABELS_STOP_US, LABEL_RATE_US, LABELS_EXPECTED = 14 * 86_400_000_000, 60 * 86_400_000_000, 10


def warn_if_labels_stop(history: pl.DataFrame, labels: pl.DataFrame, source: str) -> None:
    """Log where the history's fraud labels, by their label times (a table without them is not judged), stop
    :data:`LABELS_STOP_US` or more before its last event, where their own rate before would have given
    :data:`LABELS_EXPECTED` since."""
    if S.LABEL_TIME_US not in labels.columns or not history.height:
        return
    known = labels.filter(pl.col(S.LABEL) == 1)[S.LABEL_TIME_US].drop_nulls()
    if known.is_empty():
        return
    latest, end = cast(int, known.max()), cast(int, history[S.TS_US].max())
    recent = known.filter(known > latest - LABEL_RATE_US)
    before = recent.len()  # the rate over the period before it, the latest included
    expected = before * (end - latest) / LABEL_RATE_US
    # Twice the table's own longest wait between label times there: a monthly report waits a month (review 252).
    batched = 2 * int(recent.unique().sort().diff().max() or 0)
    if end - latest >= max(LABELS_STOP_US, batched) and expected >= LABELS_EXPECTED:
        log.warning(
            "%s: its latest fraud label was known on %s, %.0f day(s) before the history's last event, where the %s "
            "known in the %d days before it give about %s since: is the chargeback file stalled, or pulled long "
            "before the events? The risk features read every fraud it leaves out as not known to be fraud",
            source,
            from_epoch_us(latest)[:10],
            (end - latest) / 86_400e6,
            f"{before:,}",
            LABEL_RATE_US // 86_400_000_000,
            f"{expected:,.0f}",
        )


def warn_if_short(
    history: pl.DataFrame,
    events: pl.DataFrame,
    spec: Spec,
    source: str,
    label_lag_us: int | None = None,
) -> bool:
    """Log when the history reaches back less far before the first scored event than the longest window plus
    the label delay: the windowed features then read less than a longer history gives, and the scores move (a
    dogfood's 35-day history against 30-day windows and a 40-day delay moved scores by up to 0.60, silently).
    A label dated later after its session than the delay counts that much later: with risk features, the need
    is at least the longest window plus ``label_lag_us`` (:attr:`History.latest_label_lag_us`; dogfood 131: 39
    days against a 21-day delay, unsaid). Not where the history starts where training's log did: that is all
    there is."""
    # Nothing to fall short of (History.read refuses an empty history; one built by hand may be), or nothing
    # scored: an empty log, which its caller refuses by name (its first time read None, a TypeError: dogfood 91).
    if not history.height or not events.height:
        return False
    entity = _entity(spec)
    need = max((us for us in entity.warm_up_us().values() if us is not None), default=0)
    if entity.risk and label_lag_us is not None:
        need = max(need, max(entity.window_us) + label_lag_us)
    have = cast(int, events[S.TS_US].min()) - cast(int, history[S.TS_US].min())
    # A history from where training's log began reads all that training's features read: said on every run of a
    # whole log's history, it read as noise (dogfood 227).
    trained_from = spec.fit_info.get("first_event_us")
    if isinstance(trained_from, int) and cast(int, history[S.TS_US].min()) <= trained_from:
        return False
    if have < 0:  # read "starts -120.0 day(s) before" (dogfood 230)
        log.warning(
            "%s: the history starts %.1f day(s) after the first event scored: the scored events before it read none "
            "of it, their devices, cards and addresses as never seen; give the history the time before the scored "
            "events (docs/entities.md, 'How much history')",
            source,
            -have / 86_400e6,
        )
    elif have < need:
        # A unit in which the two differ at one decimal (89.985 and 90 days read "90.0 ... 90.0": dogfood 51).
        units = (("day(s)", 86_400e6), ("hour(s)", 3_600e6))
        unit, per = next((u for u in units if need - have >= u[1] / 10), ("second(s)", 1e6))
        log.warning(
            "%s: the history starts %.1f %s before the first event scored, and the entity features read %.1f %s "
            "back (the longest window plus the label delay, or the latest a label of the history was known after "
            "its session): the earliest events read less history than those "
            "windows hold, and score differently from a longer history; where the log itself starts there, as it "
            "did for training, nothing is missing (docs/entities.md, 'How much history')",
            source,
            have / per,
            unit,
            need / per,
            unit,
        )
    return have < need


# A history that ends this long before the first scored event, and longer than its own longest gap between events,
# lacks the events between (dogfood 228: a history of the months before, read for a month's last days, moved scores
# by up to 0.76 unsaid). The scored events' values meeting the history a tenth as often as its latest tenth of events
# meet its earlier ones or less, where that would have met UNMET_EXPECTED of them, say a column written otherwise
# (dogfood 228: '221.221.157' for '221.221.157.0/24' met none of it, 29 of 1,626 bands moved; dogfood 245: cards
# re-hashed upstream, 4.1% recurrent, met none, 11 bands moved; review 252: devices 2.7% recurrent re-hashed, 2
# bands), over UNMET_VALUES scored values at least, where UNMET_SESSIONS sessions of its latest tenth met one (a
# share of fewer is a few entities', which later traffic meets or not: dogfood 272's clean IPs were said, a ring's
# four, 2.3% of the events, met by none); a ring that reused values and stopped reads so too (dogfood 250: phones 1.5%
# recurrent), and the message says it. So do
# BEGUN_SHARE of the scored values or more beginning (BEGUN_CHARS) or punctuated as none of the history's are,
# BEGUN_RATIO times the share of its latest tenth that are so against its earlier values (dogfood 244: one channel's
# card tokens from a new vault, 'pt_' for 'ctk_', met half as often: 6 bands moved unsaid).
STALE_US, UNMET_EXPECTED, UNMET_VALUES, UNMET_SESSIONS = 86_400_000_000, 20, 50, 20
BEGUN_CHARS, BEGUN_SHARE, BEGUN_RATIO = 3, 0.2, 5


def warn_if_apart(history: pl.DataFrame, events: pl.DataFrame, spec: Spec, source: str) -> None:
    """Log when the history and the scored events lie apart: the history stops well before them (their windows
    then count nothing of the time between), or an entity column's scored values meet the history's far less
    often than the history's own latest values meet its earlier ones (a column reformatted upstream, or a
    history of another system), or many begin as none of the history's do (a part of the traffic reformatted):
    entity features read such values as never seen, unsaid otherwise."""
    if not history.height or not events.height:
        return
    first, last = cast(int, events[S.TS_US].min()), cast(int, history[S.TS_US].max())
    # A history of one event has no gap of its own (review 232: None, a TypeError in every scoring path).
    if first - last > STALE_US and first - last > (history[S.TS_US].sort().diff().max() or 0):
        log.warning(
            "%s: the history ends at %s, %.1f day(s) before the first event scored (%s): the entity features of the "
            "scored events count nothing of the time between, as if no session had used their devices, cards or "
            "addresses then, and score otherwise than with those events; give the history up to the scored events "
            "(docs/entities.md, 'How much history')",
            source,
            from_epoch_us(last),
            (first - last) / 86_400e6,
            from_epoch_us(first),
        )
    for c in spec.schema.entities:
        held = history.select(S.SESSION_ID, S.TS_US, c).drop_nulls(c)
        scored = events[c].drop_nulls()
        if scored.len() < UNMET_VALUES or (recurring := recurrence(held, c)) is None:
            continue
        met = scored.is_in(held[c].unique().implode())
        forms = scored.to_frame(c).select(f.alias(str(i)) for i, f in enumerate(form_exprs(c)))
        new = [
            forms[str(i)].filter(~forms[str(i)].is_in(list(form.known)))
            for i, form in enumerate(recurring.forms)
        ]
        if said := unmet_said(
            c, cast(float, met.mean()), scored.len(), recurring, scored.filter(~met).first()
        ) or formed_said(
            c,
            scored.len(),
            recurring,
            [n.len() for n in new],
            [n.mode().sort()[0] if n.len() else None for n in new],
        ):
            # Named by the history, against which the scored events (not named here) were judged (dogfood 261).
            log.warning("%s (the history): %s", source, said)


class Form(NamedTuple):
    """A history's forms of an entity column's values by one rule of :data:`FORMS` (``known``), the share of its
    latest tenth whose form none of its earlier events has (``was``), and its commonest form."""

    known: frozenset[str]
    was: float
    common: str


class Recurrence(NamedTuple):
    """How often a history's latest tenth of events meets another session's earlier events by an entity column's
    value (``share``) and the sessions of those events that meet one, its latest value, the time of its latest
    event, and its :class:`Form` by each rule of :data:`FORMS`."""

    share: float
    sessions: int
    latest: str
    last_us: int
    forms: tuple[Form, ...]


# What a value's form by each rule says, the rules being how a part of the traffic written otherwise stands apart: its
# first BEGUN_CHARS characters, each digit read as 0 (a counter's digits advance as ids are issued, after a prefix
# too: review 249, review 262's pi0... to pi1...; a new vault's digits among letters still stand apart: review 252),
# and its punctuation, its runs of letters and digits aside (a port after IPs: dogfood 258).
FORMS = ("begin as none of the history's do", "are punctuated as none of the history's are")
_WORDS = re.compile("[0-9A-Za-z]+")
_ZEROS = str.maketrans("123456789", "000000000")


def form_exprs(column: str) -> list[pl.Expr]:
    """A column's values' forms by each rule of :data:`FORMS` (:func:`value_forms` in Polars)."""
    text = pl.col(column).cast(pl.String)
    return [
        text.str.slice(0, BEGUN_CHARS).str.replace_all("[0-9]", "0"),
        text.str.replace_all(_WORDS.pattern, "x"),
    ]


def value_forms(value: str) -> tuple[str, ...]:
    """One value's forms by each rule of :data:`FORMS` (:func:`form_exprs` in Python, for online events)."""
    return (value[:BEGUN_CHARS].translate(_ZEROS), _WORDS.sub("x", value))


def recurrence(held: pl.DataFrame, column: str) -> Recurrence | None:
    """The :class:`Recurrence` of a history's events that hold a value of ``column`` (``held``: their session, time
    and value), or None where they are too few (:data:`UNMET_VALUES`)."""
    if held.height < 2 * UNMET_VALUES:
        return None
    # A latest event's value met in an earlier event of another session, as entity features read it (its own
    # session's repeats are none: dogfood 230's bank accounts, one a seller, read 31% recurrent).
    cut = cast(float, held[S.TS_US].quantile(0.9))
    earlier = (
        held.filter(pl.col(S.TS_US) <= cut)
        .group_by(column)
        .agg(pl.col(S.SESSION_ID).n_unique().alias("n"), pl.col(S.SESSION_ID).first().alias("one"))
    )
    latest = (
        held.filter(pl.col(S.TS_US) > cut)
        .join(earlier, on=column, how="left")
        .select(
            S.SESSION_ID,
            ((pl.col("n") > 1) | (pl.col("one") != pl.col(S.SESSION_ID))).fill_null(False).alias("met"),
        )
    )
    if not latest.height:
        return None
    share, sessions = latest["met"].mean(), latest.filter("met")[S.SESSION_ID].n_unique()
    forms = []
    for form in form_exprs(column):
        history = held.select(S.TS_US, form.alias(column))
        earlier_forms = history.filter(pl.col(S.TS_US) <= cut)[column].unique().implode()
        was = cast(float, (~history.filter(pl.col(S.TS_US) > cut)[column].is_in(earlier_forms)).mean() or 0.0)
        forms.append(
            Form(frozenset(history[column].unique().to_list()), was, history[column].mode().sort()[0])
        )
    # Its latest value, not the smallest: that read as a padding (review 232).
    last = held.sort(S.TS_US, maintain_order=True).row(-1, named=True)
    return Recurrence(
        float(cast(float, share)), sessions, str(last[column]), int(last[S.TS_US]), tuple(forms)
    )


def unmet_said(column: str, share: float, scored: int, recurring: Recurrence, unmet: object) -> str | None:
    """What to say where ``share`` of ``scored`` events' values of an entity ``column`` meet a value of a history
    far less often than its latest tenth meets its earlier events (a tenth of its :class:`Recurrence`, where that
    would have met :data:`UNMET_EXPECTED` of them, and :data:`UNMET_SESSIONS` of the history's latest tenth met
    one; ``unmet``: a value that met none), or None. A share from fewer sessions is a few entities' (a ring's four
    IPs, seven sessions of a month's clean IPs that recur on 2.3% of the events): clean traffic met none of them,
    and was said online (dogfood 272)."""
    if (
        recurring.sessions < UNMET_SESSIONS
        or recurring.share * scored < UNMET_EXPECTED
        or share > recurring.share / 10
    ):
        return None
    return (
        f"column {column!r}: {share:.1%} of the scored events' values meet a value of the history, where "
        f"{recurring.share:.1%} of the history's latest tenth meet another session's earlier events (scored "
        f"{unmet!r}, the history's latest {recurring.latest!r}): their entity features read them as never seen. Was "
        "the column written otherwise upstream (a prefix, case, a format), is the history another system's, or are "
        "these all new (a ring that reused values and stopped)?"
    )


def formed_said(
    column: str, scored: int, recurring: Recurrence, new: Sequence[int], examples: Sequence[object]
) -> str | None:
    """What to say where ``new`` of ``scored`` events' values of an entity ``column`` (per rule of :data:`FORMS`,
    with a form of them each in ``examples``) have a form none of the history's has, far more of them than of its
    latest tenth against its earlier values (:data:`BEGUN_SHARE`), or None: a port after half the IPs met the
    history half as often, and moved 14 bands unsaid (dogfood 258)."""
    for what, form, n_new, example in zip(FORMS, recurring.forms, new, examples):
        if n_new < UNMET_VALUES or (now := n_new / scored) < max(BEGUN_SHARE, BEGUN_RATIO * form.was):
            continue
        return (
            f"column {column!r}: {now:.1%} of the scored events' values {what} (scored {example!r}, the history's "
            f"most often {form.common!r}), against {form.was:.1%} of the history's latest tenth against its earlier "
            "events: their entity features read them as never seen. Was the column written otherwise upstream for a "
            "part of the traffic (a new vault's or system's ids, a prefix or suffix, case)?"
        )
    return None


def entity_context(
    events: pl.DataFrame,
    context: pl.DataFrame,
    labels: pl.DataFrame,
    label_source: str,
    labels_on_events: bool,
    spec: Spec,
) -> pl.DataFrame:
    """``events`` with their entity features, read from ``events`` and the ``context`` rows (``__row``, session,
    time, entity columns: other sessions' events, and the scored sessions' earlier events that are not in
    ``events``), with ``labels`` (``session_id``, ``label``, label time) of the labelled sessions among them."""
    entity = _entity(spec)
    # The kernel numbers the scored rows 0..n-1 and the context rows after them, whatever numbers ``events``
    # carries.
    given = events[S.ROW_INDEX]
    events = events.with_columns(pl.int_range(pl.len()).cast(given.dtype).alias(S.ROW_INDEX))
    columns = [S.SESSION_ID, S.TS_US, *entity.columns]
    offset = events.height
    both = pl.concat(
        [
            events.select(pl.col(S.ROW_INDEX).cast(pl.Int64), *columns),
            context.select((pl.col(S.ROW_INDEX).cast(pl.Int64) + offset), *columns),
        ]
    )
    sessions = both.group_by(S.SESSION_ID).agg(
        pl.col(S.TS_US).min().alias(S.START_TIME),
        pl.col(S.TS_US).max().alias(S.END_TIME),
        pl.len().alias("n_events"),
    )
    if spec.absent_is_negative:  # the scored sessions too, as training read its later sessions
        labels = absent_as_negative(labels, sessions[S.SESSION_ID])
    labelled = sessions.join(labels, on=S.SESSION_ID, how="inner")
    if S.LABEL_TIME_US not in labelled.columns:
        labelled = labelled.with_columns(pl.lit(None, pl.Int64).alias(S.LABEL_TIME_US))
    if entity.risk:
        labelled = label_known(
            labelled,
            spec.schema,
            label_source,
            label_delay_us(entity.label_delay),
            rows_are_events=labels_on_events,
            absent_is_negative=spec.absent_is_negative,
        )
    else:
        labelled = labelled.with_columns(
            pl.lit(None, pl.Int64).alias(c) for c in (S.LABEL_KNOWN, S.LEGIT_FROM)
        )
    rows = kernel_rows(both.lazy(), labelled, entity).collect()
    out = events.lazy()
    row_type = events.schema[S.ROW_INDEX]
    for column in entity.columns:
        features = (
            column_features(rows, column, entity)
            .lazy()
            .filter(pl.col(S.ROW_INDEX) < offset)
            .with_columns(pl.col(S.ROW_INDEX).cast(row_type))
        )
        out = attach(out, features, entity.column_feature_names(column))
    # One query: a few rows' filters and joins cost their planning, not their work.
    return out.collect().with_columns(given)


def _entity(spec: Spec) -> EntitySpec:
    if spec.entity is None:
        raise UserError("this artifact has no entity features, so it reads no history")
    return spec.entity


def require_history(spec: Spec, history: History | None) -> History | None:
    """The history an entity-aware spec needs, refused clearly when it is missing."""
    if spec.entity is not None and history is None:
        raise HistoryRequired(
            f"this model reads entity features of {list(spec.entity.columns)} from other sessions: score it with "
            "a history of their events and labels (Scorer.load(..., history=History.read(events, labels, spec)), "
            "or --history-events PATH [--history-labels PATH] on seqfraud score, embed, explain and monitor); see "
            "docs/entities.md"
        )
    if spec.entity is None and history is not None:
        raise UserError("this artifact has no entity features: it reads no history")
    return history


def refuse_to_serve(spec: Spec) -> None:
    """A request alone is no history: an entity-aware artifact would score every session as if alone."""
    if spec.entity is not None:
        raise HistoryRequired(
            f"this model reads entity features of {list(spec.entity.columns)} from other sessions, which a "
            "request alone does not hold: send the events to POST /events, where the service keeps that "
            "history (docs/serving.md), or score in batch with seqfraud score --history-events PATH"
        )
