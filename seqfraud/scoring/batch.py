"""Batch scoring of event logs larger than memory, in chunks of whole sessions.

Sessions are split into ``K`` chunks by a hash of their id, and each chunk is one lazy filtered scan,
so memory holds one chunk (about ``chunk_events`` events) at a time whatever the row order of the
input. The next chunk is read and tokenized while the model scores the current one. An artifact with
entity features reads every scored session as context for the others, so its events are normalized and
featured at once: its memory follows the whole input (docs/entities.md). Session embeddings
(``seqfraud embed --artifact``) read the same chunks.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import math
import os
from collections import Counter
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from seqfraud import schema as S
from seqfraud.data.events import (
    SCORING_NAMES,
    US_PER_UNIT,
    DataValidationError,
    as_float64,
    check_columns,
    reading,
    resolve_paths,
    say_respelt_ids,
    scan_table,
    unopened_types,
)
from seqfraud.data.split import from_epoch_us
from seqfraud.errors import UserError
from seqfraud.export.artifact import Model
from seqfraud.features.drift import CATEGORY_SHARES, event_transitions, holds_mass
from seqfraud.features.entities import busiest_value, busy_warnings, is_placeholder
from seqfraud.features.spec import Spec
from seqfraud.features.tokens import Sequences, polars_sequences
from seqfraud.provenance import embedding_record, files_digest
from seqfraud.scoring.prepare import (
    NULL_CHECKS,
    MassTails,
    cut_sessions_said,
    epoch_unit,
    event_us,
    learnt_kinds,
    lowest_edge,
    mass_tail_said,
    merged_sessions_said,
    mix_said,
    normalized_events,
    null_pools,
    off_scale_said,
    past_mass_said,
    recoded_said,
    reference_mass_edges,
    reference_null_shares,
    reference_shares,
    reference_transitions,
    resolution_said,
    row_counts,
    row_hashes,
    say_rows,
    spread_said,
    tied_rows,
    tied_said,
    transitions_said,
    unlearnt_types,
    unopened_said,
    whole_seconds,
)
from seqfraud.scoring.scorer import Scorer

log = logging.getLogger(__name__)

CHUNK_EVENTS = 1_000_000


def iter_scores(
    scorer: Scorer,
    events: pl.LazyFrame,
    source: str,
    *,
    chunk_events: int = CHUNK_EVENTS,
    progress: bool = True,
    files: list[str] | None = None,
    by_file: pl.LazyFrame | None = None,
) -> Iterator[pl.DataFrame]:
    """Score frames (``session_id, score, band``), one per chunk; together they equal ``scorer.score``."""
    chunks = iter_sequences(
        scorer, events, source, chunk_events=chunk_events, progress=progress, files=files, by_file=by_file
    )
    for seqs, frame in chunks:
        yield scorer.score_sequences(seqs, frame)


def text_columns(spec: Spec, have: pl.Schema) -> list[str]:
    """The categorical columns of a file's schema ``have`` whose values can be looked up as their text (a Boolean
    column is spelt otherwise); an integer column's too, which loses a learnt code's leading zeros (dogfood 190:
    agent 07499 sent as 7499 read as unknown, unsaid; said as a respelt value)."""
    return [
        c
        for c in spec.schema.categorical_fields
        if spec.vocab.get(c)
        and (have[c] == pl.String or isinstance(have[c], (pl.Categorical, pl.Enum)) or have[c].is_integer())
    ]


def value_counts(events: pl.LazyFrame, spec: Spec, column: str) -> pl.LazyFrame:
    """Each value of a categorical ``column`` as text, with its events and, of a value the model did not learn, its
    sessions: what :func:`mix_said` reads (:func:`counted_values`). Every value's sessions cost 25 times the counts
    at 4M events (review 281)."""
    text = pl.col(column).cast(pl.String)
    unlearnt = pl.col(spec.schema.session_id).filter(~text.is_in(spec.vocab[column]))
    return events.group_by(text.alias("value")).agg(
        pl.len().alias("events"), unlearnt.n_unique().alias("sessions")
    )


def counted_values(counted: pl.DataFrame) -> tuple[dict[Any, int], dict[Any, int]]:
    """:func:`value_counts`' events per value and sessions per value."""
    return dict(zip(counted["value"], counted["events"])), dict(zip(counted["value"], counted["sessions"]))


def iter_sequences(
    scorer: Scorer,
    events: pl.LazyFrame,
    source: str,
    *,
    chunk_events: int = CHUNK_EVENTS,
    progress: bool = True,
    files: list[str] | None = None,
    by_file: pl.LazyFrame | None = None,
) -> Iterator[tuple[Sequences, pl.DataFrame | None]]:
    """The scorer's token sequences, one non-empty chunk at a time, with the normalized events a stacked
    artifact's aggregates read (None for other artifacts): what batch scoring and embedding run the model on.

    Rows that repeat another in every column the model reads are said as training says them, naming the
    ``files`` of the same bytes; without ``files`` (the export's check of events training read) they are not
    counted, nor where the file holds the event ids the model reads, whose repeats are refused. ``by_file``: the
    events with each row's file (:func:`scanned`), whose numbers are judged part by part too (:func:`parts_apart`)."""
    spec = scorer.spec
    # Refused before the first pass over the data; every chunk reads timestamps in the spec's unit.
    unit = epoch_unit(
        check_columns(events, spec.schema, source, with_label=False, missing_hint=SCORING_NAMES), spec, source
    )
    # Entity columns too: a device column empty in every row scored without a word, every session without its
    # shared-device context (dogfood 112: that typology's recall 0.83 to 0).
    optional = [*spec.schema.categorical, *spec.schema.numerical, *spec.schema.entities]
    have = events.collect_schema()
    texts = text_columns(spec, have)
    finite = scorer.unsaid_infinite()  # the whole file's +inf and -inf, said by the scorer's note
    # The training events' bucket shares and nulls, where the artifact records them.
    trained, mass = reference_shares(spec, scorer.manifest), reference_mass_edges(spec, scorer.manifest)
    lengths = pl.col(spec.schema.session_id).unique_counts()
    # The times parsed once for every check that reads them: the queries below are collected together, so that the
    # scan and the parse are shared (review 239: three parses of RFC 3339 text cost 2.5 times the rest).
    base = by_file if by_file is not None else events
    at = event_us(events, spec, unit)
    # Floats as the chunks read them (a clean month of float32 values read as 19% in another bucket: session 45).
    numbers = [
        as_float64(c, have[c], spec.float32_decimal).alias(c)
        for c in spec.schema.numerical
        if c in have and have[c].is_float()
    ]
    timed = base.with_columns(
        at.alias(S.TS_US), *numbers, *(row_hashes(spec, have, at) if files is not None else [])
    )
    queries = {
        "counts": timed.select(
            pl.len(),
            # Rows the chunks refuse: a null, unreadable or out-of-range time, a null event type.
            (pl.col(S.TS_US).is_null() | pl.col(spec.schema.event_type).is_null()).sum().alias("refused"),
            pl.col(spec.schema.session_id).n_unique().alias("sessions"),
            (lengths > spec.max_len).sum().alias("truncated"),
            (lengths < spec.shortest_trained).sum().alias("short"),
            (lengths > spec.longest_trained).sum().alias("long"),
            lengths.max().alias("longest"),
            *(pl.col(c).null_count().alias(f"__nulls_{i}") for i, c in enumerate(optional)),
            *(
                pl.col(c).cast(pl.Float64, strict=False).is_infinite().sum().alias(f"__inf_{i}")
                for i, c in enumerate(finite)
            ),
            *(
                pl.col(c).cast(pl.String).is_in(spec.vocab[c]).sum().alias(f"__known_{i}")
                for i, c in enumerate(texts)
            ),
            *(scorer.respelt_example(c).alias(f"__respelt_{i}") for i, c in enumerate(texts)),
            unlearnt_types(spec).alias("__unlearnt_types"),
            *(pl.col(c).count().alias(f"__values_{i}") for i, c in enumerate(texts)),
            *scale_counts(spec, trained, mass, spec.schema.session_id),
            *(row_counts(spec, have, True, pl.col(S.TS_US)) if files is not None else []),
            *(  # the first two values the model did not learn, distinct
                pl.col(c)
                .filter(~pl.col(c).cast(pl.String).is_in(spec.vocab[c]))
                .drop_nulls()
                .unique(maintain_order=True)
                .head(2)
                .implode()
                .alias(f"__new_{i}")
                for i, c in enumerate(texts)
            ),
        )
    }
    nulls = reference_null_shares(spec, scorer.manifest)
    kinds = [c for c in optional if c in nulls]  # by event type: a field null on some kinds by nature
    if kinds:
        kind = pl.col(spec.schema.event_type).cast(pl.String)
        queries["by_kind"] = timed.group_by(kind).agg(
            pl.len().alias("__n"),
            pl.col(spec.schema.session_id).n_unique().alias("__sessions"),
            *(pl.col(c).null_count() for c in kinds),
        )
        learnt = sorted(learnt_kinds(nulls))
        queries["of_learnt"] = timed.select(
            pl.col(spec.schema.session_id).filter(kind.is_in(learnt)).n_unique()
        )
    if by_file is not None:
        queries |= part_counts(timed, spec, trained, mass, queries["counts"].collect_schema().names())
    mixes = {
        c: shares
        for c, shares in reference_shares(spec, scorer.manifest, CATEGORY_SHARES).items()
        if c in texts
    }
    for c in mixes:  # the values of each categorical field, against training's mix
        queries[f"mix {c}"] = value_counts(timed, spec, c)
    for c in spec.schema.entities:  # a placeholder that came after training links the sessions that carry it
        ids = pl.col(spec.schema.session_id).cast(pl.String).alias(S.SESSION_ID)
        queries[f"busiest {c}"] = busiest_value(timed.select(ids, pl.col(c).cast(pl.String)), c)
    if spec.opening_shares is not None:
        queries["firsts"] = unopened_types(
            timed, spec.schema.session_id, spec.schema.event_type, S.TS_US, spec.opening_shares
        )
    with reading(source):
        got = dict(zip(queries, pl.collect_all(list(queries.values()))))
    counts = got["counts"]
    # Refused as the chunks refuse it, before a word of the rest (dogfood 237: a warning of repeats came first, and
    # read as the problem).
    if refused := counts["refused"].item():
        normalized_events(events, spec, source)
        raise DataValidationError(
            f"{source}: {refused:,} row(s) have a null or unreadable timestamp or a null event type"
        )
    if files is not None:  # a file scored (not the export's check of training's events), as training reads it
        say_respelt_ids(events, have, spec.schema, source)
    n_rows = counts["len"].item()
    if kinds:
        by_kind = got["by_kind"]
        events_of = dict(zip(by_kind[spec.schema.event_type], by_kind["__n"]))
        # Each pool's sessions: those with an event of a learnt type (review 235), and of each type.
        sessions_of = {
            None: got["of_learnt"].item(),
            **dict(zip(by_kind[spec.schema.event_type], by_kind["__sessions"])),
        }
        nulls_of = {c: dict(zip(by_kind[spec.schema.event_type], by_kind[c])) for c in kinds}
    for i, c in enumerate(optional):  # legal (a null is a missing value), but more often a broken export
        if n_rows and counts[f"__nulls_{i}"].item() == n_rows:
            log.warning(
                "%s: column %r is null in every row: every event scores as if it had no value", source, c
            )
        elif c in nulls:
            findings = (
                said_of(source, spec, c, rows, held, n, expected, kind)
                for kind, rows, held, expected, n in null_pools(nulls[c], events_of, nulls_of[c], sessions_of)
                for said_of, _ in NULL_CHECKS.values()
            )
            if said := next(filter(None, findings), None):
                log.warning("%s", said)
    # A placeholder that is the file's busiest entity value (dogfood 250: '+10000000000' on 155 of 517 applications,
    # 136 of them to decline, unsaid).
    for c in spec.schema.entities:
        if (busiest := got[f"busiest {c}"]).height and is_placeholder(busiest["value"][0]):
            for said in busy_warnings({c: busiest.row(0)}, counts["sessions"].item()):
                log.warning("%s: %s", source, said)
    scorer.note_unseen_inf({c: counts[f"__inf_{i}"].item() for i, c in enumerate(finite)}, source)
    apart, rows_apart = (
        parts_apart(got["weeks"], got["files"], spec, trained, mass) if by_file is not None else ({}, {})
    )
    if files is not None:  # the files that stand apart, in place of the whole input (ties: review 239)
        say_rows(source, spec, counts.row(0, named=True), files, apart=set(rows_apart))
        for said in itertools.chain(*rows_apart.values()):
            log.warning("%s", said)
    scorer.note_respelt(
        {c: [v] for i, c in enumerate(texts) if (v := counts[f"__respelt_{i}"].item()) is not None}
    )
    recoded = set()
    for i, c in enumerate(texts):  # a recoding upstream, else a mix unlike training's (codes renumbered)
        values, known = counts[f"__values_{i}"].item(), counts[f"__known_{i}"].item()
        if said := recoded_said(source, spec, c, values, known, counts[f"__new_{i}"].item().to_list()):
            recoded.add(c)
        if said or (
            c in mixes
            and (
                said := mix_said(
                    source, spec, c, mixes[c], counts["sessions"].item(), *counted_values(got[f"mix {c}"])
                )
            )
        ):
            log.warning("%s", said)
    # A unit changed upstream: said of the parts of the input that stand apart, else of the whole input.
    whole = scale_said(source, spec, trained, mass, counts.row(0, named=True), counts["sessions"].item())
    for said in (apart | {c: said for c, said in whole.items() if c not in apart}).values():
        log.warning("%s", said)
    # Sessions cut at the file's edges: by their first event, and by their length (review 242: one said for both hid
    # 505 short sessions behind 56 that started elsewhere).
    sessions = counts["sessions"].item()
    firsts = dict(got["firsts"].iter_rows()) if "firsts" in got else {}
    cut = cut_sessions_said(source, spec, counts["short"].item(), sessions)
    for said in (
        unopened_said(source, spec, firsts, sessions, spec.schema.event_type in recoded),
        cut,
        merged_sessions_said(source, spec, counts["long"].item(), sessions),
    ):
        if said:
            log.warning("%s", said)
    if (truncated := counts["truncated"].item()) and scorer.reads_sequence:
        log.warning(
            "%s: %s session(s) are longer than the model's max_len=%s (the longest %s events): the sequence "
            "model reads %s events of each, as in training%s",
            source,
            f"{truncated:,}",
            spec.max_len,
            f"{counts['longest'].item():,}",
            spec.window_said,
            "" if scorer.stacker is None else "; the stacker's aggregates read them all",
        )
    k = max(1, math.ceil(counts["len"].item() / chunk_events))
    # What follows each event type, counted over the chunks' tokens and judged once they are read, as training's were
    # (a recoded event type is said already).
    follows = {} if spec.schema.event_type in recoded else reference_transitions(spec, scorer.manifest)
    followed: Counter[int] = Counter()
    if spec.entity is not None:
        # Every scored session is context for the others (as in training), so their entity features are
        # computed over all of them at once, in memory; the chunks then only bound the model's batches.
        featured = scorer.in_context(normalized_events(events, spec, source)).lazy()
        part = pl.col(S.SESSION_ID).hash(seed=0) % k
    else:
        part = pl.col(spec.schema.session_id).hash(seed=0) % k

    def prepare(i: int) -> tuple[Sequences, pl.DataFrame | None]:
        if spec.entity is not None:
            frame = (featured.filter(part == i) if k > 1 else featured).collect()
        else:
            # Each chunk is validated as it is read: its counts are its own, and the message says so.
            where = source if k == 1 else f"{source} (chunk {i + 1} of {k}: counts of this chunk's sessions)"
            frame = normalized_events(events.filter(part == i) if k > 1 else events, spec, where, once=source)
        # A stacked artifact's aggregates read the events too; other artifacts need only the tokens.
        return polars_sequences(frame, spec), frame if scorer.stacker is not None else None

    # Log lines above the bar, not after a fragment of it on its line (dogfood 203: a filter of progress lines
    # dropped two warnings with them), where no handler of the caller's prints them (the command's last-resort
    # one): a caller's own handlers are its to place (review 207: redirected, lines came twice or to the console).
    # A bar only where stderr is a terminal (disable=None): written to a file, each line tqdm moved above the bar
    # still followed a fragment of it (dogfood 228: `grep -v session/s` dropped the only warning).
    redirect = progress and not logging.getLogger().handlers and not logging.getLogger("seqfraud").handlers
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        logging_redirect_tqdm() if redirect else contextlib.nullcontext(),
        tqdm(
            total=counts["sessions"].item(),
            unit="session",
            unit_scale=True,
            disable=None if progress else True,
        ) as bar,
    ):
        pending = pool.submit(prepare, 0)
        for i in range(k):
            seqs, frame = pending.result()
            if i + 1 < k:
                pending = pool.submit(prepare, i + 1)
            if len(seqs):
                if follows:
                    followed.update(event_transitions(seqs, spec))
                yield seqs, frame
            bar.update(len(seqs))
            bar.set_postfix(chunk=f"{i + 1}/{k}")
    unknown = counts["__unlearnt_types"].item().to_list()
    if follows and (
        said := transitions_said(source, spec, follows, followed, sessions, ends=cut is None, unknown=unknown)
    ):
        log.warning("%s", said)


def scale_counts(
    spec: Spec, trained: Mapping[str, np.ndarray], mass: Mapping[str, float], session: str
) -> list[pl.Expr]:
    """Per numeric column with edges, its finite values, those above the highest edge and below the lowest
    (:func:`off_scale_said`), where training's shares are ``trained`` the finite values past each edge
    (:func:`spread_said`; infinities the scorer says of its own: review 225), and where ``mass`` gives its edge
    (:func:`reference_mass_edges`) those above the lowest edge and below that one, and where training held a point
    mass the sessions (column ``session``: a file's own name in batch scoring, the monitor's normalized events'
    ``session_id``: dogfood 266, a traceback on every window of a log of another name) of those and of the values
    above the highest edge (:func:`mass_tail_said`)."""
    out = []
    for c in (c for c in spec.schema.numerical if spec.edges.get(c)):
        x, edges = pl.col(c).cast(pl.Float64, strict=False), spec.edges[c]
        finite = x.is_finite()
        out += [
            finite.sum().alias(f"__scale_{c}_0"),
            (finite & (x > edges[-1])).sum().alias(f"__scale_{c}_1"),
            (finite & (x < lowest_edge(edges))).sum().alias(f"__scale_{c}_2"),
        ]
        if c in trained:
            out += [(finite & (x > edge)).sum().alias(f"__spread_{c}_{k}") for k, edge in enumerate(edges)]
            if holds_mass(spec, c, trained[c]):
                carried = pl.col(session)
                tail = (x > edges[0]) & (x < mass.get(c, -math.inf))
                out += [
                    tail.sum().alias(f"__mass_{c}"),
                    carried.filter(tail).n_unique().alias(f"__mass_carriers_{c}"),
                    carried.filter(finite & (x > edges[-1])).n_unique().alias(f"__top_carriers_{c}"),
                ]
    return out


# A part of an input is judged apart from 20 sessions on: a file of 3 sessions' pings in a traffic jam read as a unit
# change (review 236).
FILE_SESSIONS = 20


def part_counts(
    timed: pl.LazyFrame,
    spec: Spec,
    trained: Mapping[str, np.ndarray],
    mass: Mapping[str, float],
    counted: Collection[str],
) -> dict[str, pl.LazyFrame]:
    """The counts :func:`parts_apart` reads of an input's parts (``timed``: its events with each row's file and
    parsed time): per file and week (from Monday, UTC) the numbers' :func:`scale_counts`, and per file its sessions
    and, where the whole input's (``counted``) hold them, its :func:`tied_rows` (one file of a folder written to the
    minute: review 239) and its whole-second times (one file of four cut to the second: review 281)."""
    scale = scale_counts(spec, trained, mass, spec.schema.session_id)
    at = pl.col(S.TS_US)
    week = (at // US_PER_UNIT["d"] + 3) // 7  # from Monday: 1970-01-01 was a Thursday
    return {
        "weeks": timed.group_by(S.FILE, week.alias("__week"))
        .agg(
            pl.col(spec.schema.session_id).n_unique().alias("sessions"),
            at.min().alias("__first"),
            at.max().alias("__last"),
            *scale,
        )
        .sort(S.FILE, "__week"),
        "files": timed.group_by(S.FILE)
        .agg(
            pl.len(),
            pl.col(spec.schema.session_id).n_unique().alias("sessions"),
            *([tied_rows().alias("tied")] if "tied" in counted else []),
            *(whole_seconds(at) if "whole_seconds" in counted else []),
            *scale,
        )
        .sort(S.FILE),
    }


def parts_apart(
    weeks: pl.DataFrame,
    files: pl.DataFrame,
    spec: Spec,
    trained: Mapping[str, np.ndarray],
    mass: Mapping[str, float],
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Per numeric column, what to say of the parts of an input (:func:`part_counts`) that :func:`scale_said` says
    of where it does not say it of every file: one file wholly in another unit (m/s for km/h) moved a folder's
    shares less than the checks read, unsaid, where the same file alone was said, and so did a month's file whose
    second half a release had changed (dogfood 234). The parts are the files, and the weeks of a file whose events
    span several, said where their file is not. And what :func:`tied_said` and :func:`resolution_said` say of the
    files of a folder where they do not say it of every file, per check."""
    files = files.filter(pl.col("sessions") >= FILE_SESSIONS)
    judged = weeks.filter(pl.col("sessions") >= FILE_SESSIONS, pl.col("__week").is_not_null())
    n_weeks = dict(weeks.group_by(S.FILE).len().iter_rows())
    parts_said: dict[str, list[tuple[str, str]]] = {}  # per column, the parts said and what
    files_said: dict[str, int] = {}  # per column, the files said whole
    for f in files.iter_rows(named=True):
        said = scale_said(f[S.FILE], spec, trained, mass, f, f["sessions"])
        for c, line in said.items():
            files_said[c] = files_said.get(c, 0) + 1
            parts_said.setdefault(c, []).append((f[S.FILE], line))
        if n_weeks[f[S.FILE]] < 2:
            continue
        for w in judged.filter(pl.col(S.FILE) == f[S.FILE]).iter_rows(named=True):
            first, last = (from_epoch_us(w[k])[:10] for k in ("__first", "__last"))
            name = f"{f[S.FILE]} (its events of {first if first == last else f'{first} to {last}'})"
            for c, line in scale_said(name, spec, trained, mass, w, w["sessions"]).items():
                if c not in said:
                    parts_said.setdefault(c, []).append((name, line))
    out = {
        c: said[0][1]
        + (
            f" So do {len(said) - 1:,} more part(s): {', '.join(name for name, _ in said[1:4])}"
            + ("..." if len(said) > 4 else "")
            if len(said) > 1
            else ""
        )
        for c, said in parts_said.items()
        if files_said.get(c, 0) < files.height
    }
    of_rows = {
        "tied": lambda f: tied_said(f[S.FILE], spec, f["tied"], f["len"]),
        "whole_seconds": lambda f: resolution_said(f[S.FILE], spec, f["whole_seconds"], f["timed"]),
    }
    apart: dict[str, list[str]] = {}
    for check, said_of in of_rows.items():
        notes = [note for f in files.iter_rows(named=True) if check in f and (note := said_of(f))]
        if files.height > 1 and 0 < len(notes) < files.height:
            apart[check] = notes
    return out, apart


def scale_said(
    source: str,
    spec: Spec,
    trained: Mapping[str, np.ndarray],
    mass: Mapping[str, float],
    counted: Mapping[str, Any],
    sessions: int,
) -> dict[str, str]:
    """Per numeric column, what :func:`off_scale_said` says of the counts of :func:`scale_counts`, or where it says
    nothing, what :func:`spread_said` says (within the buckets' range: dogfoods 218, 219)."""
    said = {}
    for c in (c for c in spec.schema.numerical if spec.edges.get(c)):
        ends = [counted[f"__scale_{c}_{k}"] for k in range(3)]
        if line := off_scale_said(source, spec, c, ends[0], ends[1], ends[2], sessions):
            said[c] = line
        elif c in trained:
            read = [ends[0], *(counted[f"__spread_{c}_{k}"] for k in range(len(spec.edges[c])))]
            if line := (
                spread_said(source, spec, c, trained[c], sessions, read)
                or past_mass_said(source, spec, c, trained[c], sessions, read)
                or mass_tail_said(
                    source,
                    spec,
                    c,
                    trained[c],
                    mass.get(c),
                    sessions,
                    MassTails(
                        read[1],
                        counted.get(f"__mass_{c}", 0),
                        counted.get(f"__mass_carriers_{c}", 0),
                        read[-1],
                        counted.get(f"__top_carriers_{c}", 0),
                    ),
                )
            ):
                said[c] = line
    return said


def score_file(
    scorer: Scorer,
    events: str | os.PathLike,
    out: str | os.PathLike,
    *,
    chunk_events: int = CHUNK_EVENTS,
    progress: bool = True,
) -> dict[str, int]:
    """Score an event log (Parquet/CSV file, directory or glob) into a Parquet file, chunk by chunk: the log's
    session id column (:func:`as_logged`), ``score, band, raw_score``.

    The output appears only when complete (written beside it, then renamed). Rows are grouped by
    chunk; sort by session id if order matters.
    """
    lf, source, files, by_file = scanned(events, scorer.spec)
    frames = iter_scores(
        scorer, lf, source, chunk_events=chunk_events, progress=progress, files=files, by_file=by_file
    )
    return {"sessions": write_frames(as_logged(frames, lf, scorer.spec.schema.session_id), out, source)}


def scanned(events: str | os.PathLike, spec: Spec) -> tuple[pl.LazyFrame, str, list[str], pl.LazyFrame]:
    """An event log scanned for batch scoring (:func:`scan_table`): its frame, name and files, and the frame with
    each row's file (:data:`S.FILE`)."""
    files = resolve_paths(events, warn=False)
    lf, source = scan_table(events, spec.schema, S.FILE, float32_decimal=spec.float32_decimal)
    return lf.drop(S.FILE), source, files, lf


def embed_file(
    scorer: Scorer,
    embedding: tuple[Model, int],
    events: str | os.PathLike,
    out: str | os.PathLike,
    *,
    chunk_events: int = CHUNK_EVENTS,
    progress: bool = True,
) -> dict[str, int]:
    """Each session's embedding (:meth:`Scorer.embed_sequences`) of an event log into a Parquet file, chunk by
    chunk, tokenized as :func:`score_file` tokenizes: the log's session id column, ``emb_0 .. emb_{width-1}``."""
    if not scorer.reads_sequence:  # unsaid, the embeddings read as the scores' own model's (dogfood 227)
        log.warning(
            "the stacker kept LightGBM alone: these embeddings are its sequence model's, which this artifact's "
            "scores never read (the validation showed no gain of it over LightGBM)"
        )
    lf, source, files, by_file = scanned(events, scorer.spec)
    frames = (
        scorer.embed_sequences(seqs, embedding)
        for seqs, _ in iter_sequences(
            scorer, lf, source, chunk_events=chunk_events, progress=progress, files=files, by_file=by_file
        )
    )
    # An artifact's encoder is a classifier's: it learnt from the labels of its training period.
    record = embedding_record(scorer.spec.fit_info, labels_read=True, events_sha256=files_digest(files))
    logged = as_logged(frames, lf, scorer.spec.schema.session_id)
    return {"sessions": write_frames(logged, out, source, record)}


def as_logged(frames: Iterator[pl.DataFrame], events: pl.LazyFrame, column: str) -> Iterator[pl.DataFrame]:
    """``frames`` with the session ids under the log's own column name and type, so that the output joins back
    to the events it came from: an integer id, which seqfraud reads as its digits, is an integer again."""
    dtype = None
    for frame in frames:  # the first one comes once the columns are checked, so the id column is there
        if column in frame.columns and column != S.SESSION_ID:  # the log calls its ids as we call an output
            yield frame
            continue
        if dtype is None:
            dtype = events.collect_schema()[column]
        ids = frame[S.SESSION_ID]
        yield frame.with_columns(ids.cast(dtype) if dtype.is_integer() else ids).rename(
            {S.SESSION_ID: column}
        )


def write_frames(
    frames: Iterator[pl.DataFrame],
    out: str | os.PathLike,
    source: str,
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write ``frames`` into one Parquet file that appears only when complete, with the file's key-value
    ``metadata``; the rows written."""
    import pyarrow.parquet as pq

    out = Path(out).expanduser()  # Polars expands ~ and the rename did not: the output was lost (dogfood 39)
    tmp = out.with_name(f".{out.name}.partial")
    # Before any frame is scored: a place it cannot write failed after the first, naming the hidden file (dogfood
    # 210), and a folder of that name after the last (review 215).
    try:
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, "a folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.touch()
    except (FileExistsError, NotADirectoryError):  # mkdir's, under a file (review 217: "File exists")
        raise UserError(f"{out}: cannot write the scores there (a file lies in its path)") from None
    except OSError as e:
        raise UserError(f"{out}: cannot write the scores there ({e.strerror or e})") from None
    writer, n_sessions = None, 0
    try:
        for frame in frames:
            table = frame.to_arrow().replace_schema_metadata(metadata)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
            n_sessions += frame.height
        if writer is None:
            raise DataValidationError(f"{source}: the event log is empty")
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return n_sessions
