"""Per-event explanations by occlusion: how much each event moved a session's score.

An event's ``contribution`` is the model's raw probability for the session minus its probability for the same
session without that event, as if it had never happened: the event after it then follows the one before it
(its time delta is that gap), and in a session longer than ``max_len`` its window is the one of a session an event
shorter (:meth:`~seqfraud.features.spec.Spec.window_start`: the events before it may come in), as the scorer would
read that session. Every variant is a session the model could have seen in
training. Masking the event instead (every token ``MISSING``, others in place) was not: a GRU read the masked
event, whose time delta only ever marks a session's first event, as a new session starting, and credited a
dozen harmless events after a fraud with the whole score (dogfood 30). A session of one event has no variant
without it: its event is masked. A stacked artifact's LightGBM also reads the session's aggregates, from all
but that event too, so an event counts through both (and a stacker that kept the aggregates alone still
explains).
The tokens come from the scorer's own token rules (:mod:`seqfraud.features.fastpath`), so vocabularies, buckets
and truncation are exactly those of :meth:`~seqfraud.scoring.scorer.Scorer.score`. It needs only the exported
model (no gradients) and is exact by definition: the score change that leaving the event out causes. Cost: one
forward pass per kept event, so it grows with the square of the session length (times the model's own cost per
event). A session's variants run stacked, in a few batches bounded by ``VARIANT_BUDGET`` so that each batch's
attention stays in cache.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.baselines import Stacker
from seqfraud.data.events import DataValidationError, reading, scan_table
from seqfraud.features.fastpath import (
    TokenTables,
    category_ids,
    numpy_sequences,
    time_delta_ids,
    token_tables,
)
from seqfraud.features.spec import MISSING, Spec
from seqfraud.features.tokens import Sequences, kept_events, positioned_events

# Rows of the aggregates of a stacked artifact's variants without each unread event (one session less an event
# each). Measured on a helper's 6-column log through a 64-event window: 1,000 events (0.94M rows) took 0.5-1.0 s
# and 0.25 GB more, 2,000 events (3.9M rows) 2.0 s and 0.9 GB more, too much for a request (BENCHMARKS.md).
UNREAD_BUDGET = 2**20
# Rows x length^2 of one batch of masked variants: 8 variants of a 256-event session. Measured on CPU with the
# default model, 8-16 such rows per batch ran a 256-event session's variants in 0.65 s, 64 rows in 1.0 s.
VARIANT_BUDGET = 2**19


class TokenScorer(Protocol):
    """What occlusion needs of :class:`~seqfraud.scoring.scorer.Scorer`, which calls this module."""

    spec: Spec
    stacker: Stacker | None

    def sequences(self, events: pl.DataFrame) -> Sequences: ...

    def score_sequences(self, seqs: Sequences, events: pl.DataFrame | None = None) -> pl.DataFrame: ...

    def sequence_scores(self, seqs: Sequences) -> np.ndarray: ...


def deleted_contributions(
    scorer: TokenScorer,
    seqs: Sequences,
    wide: Sequences,
    ts_us: np.ndarray,
    full: np.ndarray,
    tables: TokenTables,
    aggregates: np.ndarray | None = None,
) -> np.ndarray:
    """``full`` (the raw probabilities) minus the probability without each kept event, aligned with ``seqs.tokens``.

    ``wide``: the same sessions' tokens in a window one hop longer (:func:`wider`), so a truncated session's
    variants admit the events that come into the window of a session one event shorter; ``ts_us``: their events'
    times, aligned with ``wide.tokens``.
    A stacked artifact's probability without the event is its stacker's, on the sequence model's and
    ``aggregates``: one row per kept event (aligned with ``seqs.tokens``), its session's aggregates without it.
    ``tables``: the spec's (:func:`token_tables`), for the time delta of the event after the one left out.
    """
    offsets, wide_offsets = np.r_[0, np.cumsum(seqs.lengths)], np.r_[0, np.cumsum(wide.lengths)]
    spec = scorer.spec
    delta = spec.fields.index(S.TIME_DELTA)
    out = np.empty(len(seqs.tokens), dtype=np.float32)
    for i, n in enumerate(seqs.lengths.tolist()):
        tokens, ts = (
            wide.tokens[wide_offsets[i] : wide_offsets[i + 1]],
            ts_us[wide_offsets[i] : wide_offsets[i + 1]],
        )
        lead = len(tokens) - n  # wide's events before the window
        # A window at its shortest moves back a hop when the session is an event shorter: those events come in.
        first = 0 if n == spec.shortest_window else lead  # the variants' first event, in wide's order
        width = len(tokens) - first - 1
        rows = max(1, VARIANT_BUDGET // max(width, 1) ** 2)
        for start in range(0, n, rows):  # variants start..stop-1, each without its own event
            k = min(rows, n - start)
            if width == 0:  # a lone event: masked, as no session is empty
                variants, length = np.full((1, 1, tokens.shape[1]), MISSING, dtype=np.int64), 1
            else:
                gone = np.arange(start, start + k) + lead
                keep = np.zeros((k, len(tokens)), dtype=bool)
                keep[:, first:] = True
                keep[np.arange(k), gone] = False
                variants = np.broadcast_to(tokens, (k, *tokens.shape))[keep].reshape(k, width, -1)  # a copy
                length = width
                after = gone < len(tokens) - 1  # the next event now follows the one before the gone one
                rows_after = np.flatnonzero(after)
                before = gone[after] - 1
                gap = np.where(before >= 0, (ts[gone[after] + 1] - ts[np.maximum(before, 0)]) / 1e6, np.nan)
                variants[rows_after, gone[after] - first, delta] = _following_ids(gap, tables)
            without = scorer.sequence_scores(
                Sequences(
                    [seqs.session_ids[i]] * len(variants),
                    variants.reshape(len(variants) * length, -1),
                    np.full(len(variants), length, dtype=np.int64),
                )
            )
            if scorer.stacker is not None and aggregates is not None:
                at = offsets[i] + start
                without = scorer.stacker.combine(aggregates[at : at + k], without)
            out[offsets[i] + start : offsets[i] + start + k] = full[i] - without
    return out


def occlusion(scorer: TokenScorer, events: pl.DataFrame) -> pl.DataFrame:
    """Normalized events to ``session_id, position, event, event_time, contribution, fields`` (one row per kept
    event; ``fields``: its other columns' values, for display)."""
    return scored_occlusion(scorer, events)[1]


def scored_occlusion(scorer: TokenScorer, events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Normalized events to their scores, exactly :meth:`~seqfraud.scoring.scorer.Scorer.score_normalized`'s,
    and :func:`occlusion`'s contributions, from one tokenization."""
    kept = kept_events(events, scorer.spec)
    seqs = scorer.sequences(events)
    _check_alignment(scorer, kept, seqs)
    scores = scorer.score_sequences(seqs, events)
    aggregates = None if scorer.stacker is None else aggregates_without_each(scorer.stacker, events, kept)
    tables = token_tables(scorer.spec)
    wide_spec = wider(scorer.spec)
    wide = numpy_sequences(events, wide_spec, tables)
    ts_us = kept_events(events, wide_spec)[S.TS_US].to_numpy()
    full = scores[S.RAW_SCORE].to_numpy()
    listed = kept.with_columns(
        pl.Series(S.CONTRIBUTION, deleted_contributions(scorer, seqs, wide, ts_us, full, tables, aggregates))
    )
    if (unread := unread_contributions(scorer, events, seqs, wide, full, tables)) is not None:
        listed = pl.concat([unread, listed], how="diagonal_relaxed").sort(S.SESSION_ID, S.POSITION)
    schema = scorer.spec.schema
    fields = [*schema.categorical, *schema.numerical, *schema.entities]
    return scores, listed.select(
        S.SESSION_ID,
        S.POSITION,
        pl.col(schema.event_type).cast(pl.String).alias(S.EVENT),
        pl.col(S.TS_US).cast(pl.Datetime("us", "UTC")).alias(S.EVENT_TIME),
        pl.col(S.CONTRIBUTION).cast(pl.Float32),
        *([pl.struct(*fields).alias(S.FIELDS)] if fields else [pl.lit(None).alias(S.FIELDS)]),
    )


def wider(spec: Spec) -> Spec:
    """The spec whose window is a hop longer: it starts a hop before ``spec``'s (at 0 at the earliest), where the
    window of a session an event shorter may start."""
    return replace(spec, max_len=spec.max_len + spec.hop)


def unread_contributions(
    scorer: TokenScorer,
    events: pl.DataFrame,
    seqs: Sequences,
    wide: Sequences,
    full: np.ndarray,
    tables: TokenTables,
) -> pl.DataFrame | None:
    """A stacked artifact's unread events (those before the sequence model's window), with their contributions:
    its aggregates read every event, and one early event that the window never holds decided a dogfood's score
    (0.957 with it, 0.002 without), while explain listed the window alone, every event at 0.000 (dogfood 45).
    Left out, an unread event makes the session an event shorter, whose window is the window less its first event,
    or, where the window is at its shortest, starts a hop earlier: with the events between, but for the one left
    out, after which the next one follows the one before it (its time delta). ``wide``: as for
    :func:`deleted_contributions`. None where there is none to list, or their variants' aggregates would pass
    :data:`UNREAD_BUDGET` rows (:func:`unread_note` then says so)."""
    if scorer.stacker is None:
        return None
    spec = scorer.spec
    positioned = positioned_events(events, spec)
    # Per session, as unread_note reckons it: its unread events times its length.
    cost = pl.len().over(S.SESSION_ID) * (pl.col(S.POSITION) < 0).sum().over(S.SESSION_ID)
    unread = positioned.filter((pl.col(S.POSITION) < 0) & (cost <= UNREAD_BUDGET))
    if not unread.height:
        return None
    order = {sid: i for i, sid in enumerate(seqs.session_ids)}
    offsets, wide_offsets = np.r_[0, np.cumsum(seqs.lengths)], np.r_[0, np.cumsum(wide.lengths)]
    session = np.array([order[sid] for sid in unread[S.SESSION_ID].to_list()])
    delta = spec.fields.index(S.TIME_DELTA)
    # The events a hop and one before the window, for the time delta after one left out.
    near = positioned.filter(pl.col(S.POSITION) >= -spec.hop - 1)
    times = {(sid, p): t for sid, p, t in near.select(S.SESSION_ID, S.POSITION, S.TS_US).iter_rows()}
    # Each row's variant; those of a session's events that leave the same window share one.
    variants: list[np.ndarray] = []
    owners: list[str] = []
    index: list[int] = []
    shared: dict[int, int] = {}
    for i, position in zip(session.tolist(), unread[S.POSITION].to_list()):
        n, sid = int(seqs.lengths[i]), seqs.session_ids[i]
        tokens = wide.tokens[wide_offsets[i] : wide_offsets[i + 1]]  # a hop before the window on (it has one)
        if n > spec.shortest_window or position < -spec.hop:
            if i not in shared:
                shared[i] = len(variants)
                # The same window less its first event, or the window a hop earlier less the hop's first event.
                variants.append(
                    seqs.tokens[offsets[i] + 1 : offsets[i + 1]] if n > spec.shortest_window else tokens[1:]
                )
                owners.append(sid)
            index.append(shared[i])
            continue
        gone = position + spec.hop  # the window a hop earlier, less the one left out
        variant = np.delete(tokens, gone, axis=0)
        earlier = times.get((sid, position - 1))
        gap = np.nan if earlier is None else (times[(sid, position + 1)] - earlier) / 1e6
        variant[gone, delta] = _following_ids(np.array([gap]), tables)[0]
        index.append(len(variants))
        variants.append(variant)
        owners.append(sid)
    lengths = np.array([len(v) for v in variants], dtype=np.int64)
    sequence = scorer.sequence_scores(Sequences(owners, np.concatenate(variants), lengths))[index]
    without = scorer.stacker.combine(aggregates_without_each(scorer.stacker, events, unread), sequence)
    return unread.with_columns(pl.Series(S.CONTRIBUTION, full[session] - without))


def _following_ids(gap: np.ndarray, tables: TokenTables) -> np.ndarray:
    """Time-delta ids of events whose predecessor was left out: ``gap``, seconds to the event before that one, NaN
    where there is none (the event is its session's first now: ``MISSING``)."""
    ids = time_delta_ids(np.nan_to_num(gap), tables)
    ids[np.isnan(gap)] = MISSING
    return ids


NO_SINGLE_EVENT = 5e-4  # below this, every contribution prints as 0.000
# A flagged session whose largest contribution is below this share of its raw score: no event explains it.
SMALL_SHARE = 0.05


def flat_note(
    contributions: np.ndarray,
    scored: Mapping[str, Any],
    calibrate: Callable[[np.ndarray], np.ndarray] | None = None,
) -> str | None:
    """Why no event stands out, where none does: every contribution about 0, or a flagged session's largest a
    sliver of its score (+0.008 of a 0.977 on a dogfood log), which reads as a broken explanation otherwise.
    ``scored``: the session's row of ``score`` (``raw_score``, ``score``, ``band``), ``stacked``, ``blend``,
    ``unlisted`` (:func:`unlisted`: events that count and are not listed, which may hold the reason) and, with
    entity features,
    ``context_shift`` (the raw score less its score without other sessions: :func:`context_note`). With the
    scorer's ``calibrate``, the same rule is read on the score the bands read too, where a steep calibration makes
    a sliver of the raw score much of it (dogfood 193: raw moves of 0.001 took a declined 0.972 to 0.767, said to
    come from the session as a whole)."""
    # A flagged session is the one whose reason is asked for: a sliver of its score is no reason, nor are events
    # that lower it (a declined 0.994 listed -0.102, -0.075 and -0.067 with no note: dogfood 136).
    raw, flagged = float(scored[S.RAW_SCORE]), scored[S.BAND] != "approve"

    def flat(moves: np.ndarray, score: float) -> tuple[bool, float]:
        largest = float(moves.max(initial=0.0) if flagged else np.abs(moves).max(initial=0.0))
        return largest < NO_SINGLE_EVENT or (flagged and largest < SMALL_SHARE * score), largest

    is_flat, largest = flat(contributions, raw)
    if not is_flat:
        return None
    if calibrate is not None and flagged and len(contributions):  # an approved one's 5e-4 is no steepness
        score = float(scored[S.SCORE])
        without = calibrate(raw - contributions.astype(np.float64))
        calibrated_flat, most = flat(score - without, score)
        if not calibrated_flat:
            return (
                f"the events move its raw score of {raw:.3f} by {largest:.3f} at most, but the calibration is "
                f"steep there: without one of them its score of {score:.3f} moves by {most:.3f}; the contributions "
                "are raw-score moves: read them as an order"
            )
    moved = (
        f"the largest rise of its raw score of {raw:.3f} is {largest:.3f}"
        if flagged
        else f"the largest moves its raw score of {raw:.3f} by {largest:.3f}"
    )
    # The entity context moved the raw score more than any event (context_note says by how much in scores); for a
    # flagged session, only a context that raises it (review 156: one that lowered a decline was its reason).
    shift = scored.get("context_shift", 0.0)
    shift = max(shift, 0.0) if flagged else abs(shift)
    by_context = shift >= max(largest, NO_SINGLE_EVENT)
    if hidden := scored.get("unlisted"):  # one of them moved a dogfood's 0.737 to 0.165, said to be none
        return (
            f"no listed event explains this score ({moved}): "
            f"the {hidden:,} earlier events count through the stacker's aggregates unlisted, and one of them may"
            + (f"; its entity context moves it by {shift:.3f}" if by_context else "")
        )
    if by_context:
        return f"no single event explains this score ({moved}): its entity context moves it more"
    # A blend's other half is the sequence model's logit, smooth in each event (review 256).
    steps = (
        " (half of a blend's logit is LightGBM's, whose trees move in steps, and leaving out one event may cross "
        "none of their splits)"
        if scored.get("blend")
        else " (a stacked model's trees move in steps, and leaving out one event may cross none of their splits)"
        if scored["stacked"]
        else ""
    )
    return (
        f"no single event explains this score ({moved}): it comes from the session as a whole{steps}"
        "; read the contributions as an order, not as the reason for the score"
    )


def context_moves(scored: Mapping[str, Any], alone: Mapping[str, Any]) -> bool:
    """Whether the score printed moves without the context, or the band (review 134: a calibration's steps)."""
    return abs(scored[S.SCORE] - alone[S.SCORE]) >= NO_SINGLE_EVENT or scored[S.BAND] != alone[S.BAND]


def context_note(
    scored: Mapping[str, Any],
    alone: Mapping[str, Any],
    columns: Sequence[str],
    by_column: Mapping[str, Mapping[str, Any]] | None = None,
) -> str | None:
    """What the entity context gives a session's score, which leaving out one of its own events cannot show (a
    ring's session scored 0.988 beside its shared wallet's and IP's other sessions and 0.001 without them, while
    its explanation named no reason: dogfood 131). ``alone``: its score row with a history of no other session;
    said where it :func:`context_moves`. ``by_column``: its score row without the sessions sharing each column's
    values alone, which says which entity it is (one note lumped a device with an IP)."""
    if not context_moves(scored, alone):
        return None
    each = [
        f"without those sharing its {column} {row[S.SCORE]:.3f} ({row[S.BAND]})"
        for column, row in (by_column or {}).items()
    ]
    return (
        f"its entity context, the other sessions on its {', '.join(columns)}, moves its score from "
        f"{alone[S.SCORE]:.3f} ({alone[S.BAND]}) without them to {scored[S.SCORE]:.3f} ({scored[S.BAND]})"
        + (f"; {', '.join(each)}" if each else "")
        + "; the events listed are the session's own"
    )


def unread_note(n_events: int, spec: Spec, stacker: Stacker | None) -> str | None:
    """What a long session's earliest events count through, and whether they are listed (a dogfood fraud burst
    sat at event 754 of 2,143, unlisted and unsaid); None when the model reads every event."""
    unread = spec.window_start(n_events)
    if not unread:
        return None
    one, stacked = unread == 1, stacker is not None
    listed = not unlisted(n_events, spec, stacked)
    # A stacker that kept LightGBM alone reads no window: a note of one misled (dogfood 177).
    if stacker is not None and not stacker.reads_sequence:
        where = (
            "listed at positions below 0" if listed else "too many to leave out one by one, and not listed"
        )
        earliest = "the earliest is" if one else f"the earliest {unread:,} are"
        return f"the stacker kept LightGBM alone, whose aggregates read all {n_events:,} events; {earliest} {where}"
    said = (
        f"the sequence model reads the last {n_events - unread:,} of the session's {n_events:,} events "
        "(features.max_len, features.hop): "
        + ("the earlier one counts" if one else f"the {unread:,} earlier ones count")
    )
    is_, it = ("is", "it is") if one else ("are", "they are")
    if not stacked:
        return f"{said} only through the time gap before the first one listed, and {is_} not listed"
    if listed:
        return f"{said} through the stacker's aggregates, and {is_} listed at positions below 0"
    return f"{said} through the stacker's aggregates; too many to leave out one by one, {it} not listed"


def unlisted(n_events: int, spec: Spec, stacked: bool) -> int:
    """The events before a stacked session's window that count through its aggregates and are not listed: their
    variants' aggregates would pass :data:`UNREAD_BUDGET` rows."""
    unread = spec.window_start(n_events)
    return unread if stacked and unread * n_events > UNREAD_BUDGET else 0


def aggregates_without_each(stacker: Stacker, events: pl.DataFrame, kept: pl.DataFrame) -> np.ndarray:
    """Per kept event (in ``kept``'s order), its session's aggregates from all its events but that one: each
    is a variant session of its own, so one query computes them all (a session of one event leaves an empty
    variant, whose aggregates are missing values, as LightGBM reads an absent input)."""
    variant = pl.int_range(pl.len(), dtype=pl.Int64).alias("__variant")
    drops = kept.select(S.SESSION_ID, pl.col(S.ROW_INDEX).alias("__drop"), variant)
    variants = (
        events.join(drops, on=S.SESSION_ID)
        .filter(pl.col(S.ROW_INDEX) != pl.col("__drop"))
        .with_columns(pl.col("__variant").cast(pl.String).alias(S.SESSION_ID))
        .drop("__drop", "__variant")
    )
    return stacker.aggregates(variants, [str(v) for v in range(kept.height)])


def _check_alignment(scorer: TokenScorer, kept: pl.DataFrame, full: Sequences) -> None:
    """The displayed events must be the model's events: same sessions, lengths and event-type tokens."""
    spec = scorer.spec
    event_type = spec.schema.event_type
    lengths = kept.group_by(S.SESSION_ID, maintain_order=True).len()
    ids = category_ids(kept[event_type].to_list(), token_tables(spec).vocab[event_type])
    column = full.tokens[:, spec.fields.index(event_type)]
    if (
        lengths[S.SESSION_ID].to_list() != list(full.session_ids)
        or lengths["len"].to_list() != full.lengths.tolist()
        or not np.array_equal(ids, column)
    ):
        raise RuntimeError("explain: the kept events do not line up with the scored tokens")


def session_events(path: str | Path, spec: Spec, session: str) -> tuple[pl.DataFrame, pl.LazyFrame]:
    """One session's raw events from a Parquet file, directory or glob, or a CSV file, and the others' (lazy)."""
    events, source = scan_table(path, spec.schema, float32_decimal=spec.float32_decimal)
    column = spec.schema.session_id
    mine = pl.col(column).cast(pl.String) == session
    with reading(source):
        found = events.filter(mine).collect()
    if found.height == 0:
        # Ids compare as text: name the ids that differ from it only by leading zeros, spaces, case or a trailing .0
        # ('0663553'; '106130.0', as a spreadsheet writes it: dogfood 196; 'S0100594': dogfood 230).
        bare = (
            pl.col(column)
            .cast(pl.String)
            .str.strip_chars()
            .str.replace(r"\.0+$", "")
            .str.strip_chars_start("0")
            .str.to_lowercase()
        )
        given = re.sub(r"\.0+$", "", session.strip()).lstrip("0").lower()
        with reading(source):
            alike = events.filter(bare == given).select(pl.col(column).cast(pl.String))
            near = alike.unique(maintain_order=True).head(3).collect()[column].to_list()
        hint = f" (ids compare as text; this file has {near})" if near else ""
        raise DataValidationError(f"{source}: column {column!r}: no events of session {session!r}{hint}")
    return found, events.filter(~mine)


def top_events(explained: pl.DataFrame, k: int = 3) -> pl.DataFrame:
    """The ``k`` events of each session that raised its score most."""
    return (
        explained.sort(S.CONTRIBUTION, descending=True)
        .group_by(S.SESSION_ID, maintain_order=True)
        .head(k)
        .sort(S.SESSION_ID, maintain_order=True)
    )
