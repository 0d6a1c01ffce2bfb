"""Reading, validating and normalizing raw event logs against the data contract.

Everything here is lazy. :func:`load_events` returns normalized events plus a per-session table that
one aggregation pass computes; that pass is also where the row-level validation counts come from, so
validation costs no extra read of the data.
"""

from __future__ import annotations

import difflib
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from seqfraud import schema as S
from seqfraud.schema import Schema


class DataValidationError(ValueError):
    """Input that breaks the data contract; the message names the file, the column and the row count."""


# Integer epoch timestamps: the unit is read off the magnitude (seconds reach 1e11 only in year 5138).
_UNIT_LIMITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", float("inf")))
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}
_CATEGORICAL_OK = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)


@dataclass
class LoadedEvents:
    """Normalized events and the per-session table, both lazy, plus what the loader counted."""

    events: pl.LazyFrame
    sessions: pl.DataFrame
    timestamp_unit: str
    source: str
    report: dict = field(default_factory=dict)


def resolve_paths(path: str | os.PathLike) -> list[str]:
    """A file, a directory of Parquet files, or a glob, to a sorted file list (sorted: row order is the tie-break)."""
    p = str(path)
    if os.path.isdir(p):
        files = sorted(glob.glob(os.path.join(glob.escape(p), "**", "*.parquet"), recursive=True))
    elif glob.has_magic(p):
        files = sorted(glob.glob(p, recursive=True))
    else:
        files = [p] if os.path.exists(p) else []
    if not files:
        raise DataValidationError(f"{p}: no such file, or no Parquet/CSV files match")
    return files


def scan_table(path: str | os.PathLike) -> tuple[pl.LazyFrame, str]:
    """Scan Parquet or CSV lazily; returns the frame and a printable source name for error messages."""
    files = resolve_paths(path)
    suffixes = {Path(f).suffix.lower() for f in files}
    source = files[0] if len(files) == 1 else f"{path} ({len(files)} files)"
    # glob=False: the list is already resolved, so a "[" or "*" in a file name is taken literally.
    if suffixes <= {".parquet", ".pq"}:
        return pl.scan_parquet(files, glob=False), source
    if suffixes <= {".csv"}:
        return pl.concat([pl.scan_csv(f, try_parse_dates=True, infer_schema_length=10_000, glob=False)
                          for f in files]), source
    raise DataValidationError(f"{source}: unsupported file type(s) {sorted(suffixes)}; use Parquet or CSV")


def fail_rows(source: str, column: str, n_rows: int, what: str) -> None:
    """The one wording of a bad-rows error, shared by training and scoring validation."""
    raise DataValidationError(f"{source}: column {column!r}: {n_rows:,} row(s) {what}")


def check_columns(lf: pl.LazyFrame, schema: Schema, source: str, *, with_label: bool) -> pl.Schema:
    """Fail on missing or wrongly typed columns before any data is read."""
    have = lf.collect_schema()
    wanted = list(schema.event_columns) + ([schema.label] if with_label else [])
    missing = [c for c in wanted if c not in have]
    if missing:
        hints = {c: difflib.get_close_matches(c, list(have), n=1) for c in missing}
        hint = "; ".join(f"{c!r} (did you mean {h[0]!r}?)" if h else repr(c) for c, h in hints.items())
        raise DataValidationError(
            f"{source}: missing column(s) {hint}. Columns present: {list(have)}. "
            "Set the names under data.schema."
        )
    ts = have[schema.timestamp]
    if not ((ts.is_temporal() and ts not in (pl.Time, pl.Duration)) or ts.is_integer() or ts == pl.String):
        raise DataValidationError(
            f"{source}: column {schema.timestamp!r} has type {ts}; expected a datetime, integer epoch or ISO string"
        )
    for c in (schema.session_id, *schema.categorical_fields):
        if not (have[c] in _CATEGORICAL_OK or have[c].is_integer()):
            raise DataValidationError(f"{source}: column {c!r} has type {have[c]}; expected string or integer")
    for c in schema.numerical:
        if not have[c].is_numeric():
            raise DataValidationError(f"{source}: column {c!r} has type {have[c]}; expected a numeric type")
    if with_label and not (have[schema.label].is_numeric() or have[schema.label] == pl.Boolean):
        raise DataValidationError(
            f"{source}: column {schema.label!r} has type {have[schema.label]}; expected 0/1 integers or booleans"
        )
    return have


def detect_timestamp_unit(lf: pl.LazyFrame, schema: Schema, dtype: pl.DataType) -> str:
    """Resolve ``auto`` for integer epochs from the magnitude of the first values; datetimes need no unit."""
    if not dtype.is_integer():
        return "datetime"
    if schema.timestamp_unit != "auto":
        return schema.timestamp_unit
    head = lf.select(pl.col(schema.timestamp)).head(10_000).collect()[schema.timestamp].drop_nulls()
    if head.is_empty():
        return "ms"
    magnitude = float(head.abs().median())
    return next(unit for unit, limit in _UNIT_LIMITS if magnitude < limit)


def timestamp_us(column: str, dtype: pl.DataType, unit: str) -> pl.Expr:
    """Expression for epoch microseconds (UTC); naive datetimes are taken as UTC."""
    col = pl.col(column)
    if dtype == pl.String:
        # time_zone="UTC" converts offset-carrying strings and takes naive ones as UTC.
        return col.str.to_datetime(strict=False, time_unit="us", time_zone="UTC").dt.epoch("us")
    if dtype.is_temporal():
        return col.dt.epoch("us")
    if unit == "ns":
        return col.cast(pl.Int64) // 1_000
    return col.cast(pl.Int64) * _US_PER_UNIT[unit]


def normalize(lf: pl.LazyFrame, schema: Schema, have: pl.Schema, unit: str, *, with_label: bool) -> pl.LazyFrame:
    """Cast to the canonical working types; keeps the raw timestamp for unparseable-row counting."""
    cols = [
        pl.col(schema.session_id).cast(pl.String).alias(S.SESSION_ID),
        timestamp_us(schema.timestamp, have[schema.timestamp], unit).alias(S.TS_US),
        pl.col(schema.timestamp).is_not_null().alias(S.TS_PRESENT),
        *[pl.col(c).cast(pl.String) for c in schema.categorical_fields],
        *[pl.col(c).cast(pl.Float64) for c in schema.numerical],
    ]
    if with_label:
        cols.append(pl.col(schema.label).cast(pl.Float64).alias(S.LABEL))
    return lf.with_row_index(S.ROW_INDEX).select(pl.col(S.ROW_INDEX), *cols)


def session_table(events: pl.LazyFrame, *, with_label: bool) -> pl.LazyFrame:
    """One row per session with its start time and the counts that validation needs."""
    aggs = [
        pl.col(S.TS_US).min().alias(S.START_TIME),
        pl.len().alias("n_events"),
        (pl.col(S.TS_US).is_null() & pl.col(S.TS_PRESENT)).sum().alias("n_ts_unparsed"),
        pl.col(S.TS_PRESENT).not_().sum().alias("n_ts_null"),
    ]
    if with_label:
        aggs += [
            pl.col(S.LABEL).min().alias("label_min"),
            pl.col(S.LABEL).max().alias("label_max"),
            pl.col(S.LABEL).is_null().sum().alias("n_label_null"),
            (pl.col(S.LABEL).is_not_null() & ~pl.col(S.LABEL).is_in([0.0, 1.0])).sum().alias("n_label_bad"),
        ]
    return events.group_by(S.SESSION_ID).agg(aggs)


def read_labels(path: str, schema: Schema) -> tuple[pl.DataFrame, str]:
    """A separate label table: one row per session, 0/1 label."""
    lf, source = scan_table(path)
    have = lf.collect_schema()
    missing = [c for c in (schema.session_id, schema.label) if c not in have]
    if missing:
        raise DataValidationError(f"{source}: missing column(s) {missing}. Columns present: {list(have)}")
    if not (have[schema.label].is_numeric() or have[schema.label] == pl.Boolean):
        raise DataValidationError(
            f"{source}: column {schema.label!r} has type {have[schema.label]}; expected 0/1 integers or booleans"
        )
    labels = lf.select(
        pl.col(schema.session_id).cast(pl.String).alias(S.SESSION_ID),
        pl.col(schema.label).cast(pl.Float64).alias(S.LABEL),
    ).collect()
    if labels.is_empty():
        raise DataValidationError(f"{source}: the label table is empty")
    for col, n, what in (
        (schema.session_id, labels[S.SESSION_ID].null_count(), "have a null session id"),
        (schema.label, labels[S.LABEL].null_count(), "have a null label"),
        (schema.label, int((~labels[S.LABEL].is_in([0.0, 1.0]) & labels[S.LABEL].is_not_null()).sum()),
         "have a label that is not 0/1"),
    ):
        if n:
            fail_rows(source, col, n, what)
    dupes = labels.group_by(S.SESSION_ID).agg(pl.col(S.LABEL).n_unique().alias("k")).filter(pl.col("k") > 1)
    if dupes.height:
        fail_rows(source, schema.label, dupes.height, "are sessions listed with conflicting labels")
    return labels.unique(S.SESSION_ID, keep="first", maintain_order=True).with_columns(pl.col(S.LABEL).cast(pl.Int8)), source


def validate_sessions(
    sessions: pl.DataFrame,
    schema: Schema,
    source: str,
    labels: tuple[pl.DataFrame, str] | None = None,
    *,
    on_unlabeled: str = "error",
    on_orphan_labels: str = "error",
) -> tuple[pl.DataFrame, dict]:
    """Row-level checks and drop policies on the per-session table of :func:`session_table`.

    Every engine builds that small table its own way and hands it here, so the contract and the wording
    of its errors exist once. ``labels`` is a separate label table from :func:`read_labels`; without it
    the labels come from the events. Returns one row per kept session (``session_id``, ``start_time``,
    ``n_events``, ``label``) and what the policies dropped.
    """
    for name, value in (("on_unlabeled", on_unlabeled), ("on_orphan_labels", on_orphan_labels)):
        if value not in ("error", "drop"):
            raise ValueError(f"data.policy.{name} must be 'error' or 'drop', got {value!r}")
    report: dict = {}
    if int(sessions["n_events"].sum()) == 0:
        raise DataValidationError(f"{source}: the event log is empty")
    null_sid = sessions.filter(pl.col(S.SESSION_ID).is_null())
    if null_sid.height:
        fail_rows(source, schema.session_id, int(null_sid["n_events"][0]), "have a null session id")
    for col, what in (("n_ts_null", "have a null timestamp"), ("n_ts_unparsed", "have a timestamp that does not parse")):
        if n := int(sessions[col].sum()):
            fail_rows(source, schema.timestamp, n, what)

    if labels is None:
        if n := int(sessions["n_label_bad"].sum()):
            fail_rows(source, schema.label, n, "have a label that is not 0/1")
        mixed = sessions.filter(pl.col("label_min") != pl.col("label_max"))
        if mixed.height:
            fail_rows(source, schema.label, int(mixed["n_events"].sum()),
                      f"belong to {mixed.height:,} session(s) whose label is not constant")
        partial = sessions.filter((pl.col("n_label_null") > 0) & pl.col("label_min").is_not_null())
        if partial.height:
            fail_rows(source, schema.label, int(partial["n_label_null"].sum()),
                      f"have a null label inside {partial.height:,} otherwise labelled session(s)")
        sessions = sessions.with_columns(pl.col("label_min").cast(pl.Int8).alias(S.LABEL))
        label_source = source
    else:
        table, label_source = labels
        orphans = table.join(sessions, on=S.SESSION_ID, how="anti")
        if orphans.height:
            if on_orphan_labels == "error":
                raise DataValidationError(
                    f"{label_source}: column {schema.session_id!r}: {orphans.height:,} labelled session(s) have no "
                    f"events in {source} (set data.policy.on_orphan_labels=drop to skip them)"
                )
            report["orphan_labels_dropped"] = orphans.height
        sessions = sessions.join(table, on=S.SESSION_ID, how="left")

    unlabeled = sessions.filter(pl.col(S.LABEL).is_null())
    if unlabeled.height:
        n_rows = int(unlabeled["n_events"].sum())
        if on_unlabeled == "error":
            raise DataValidationError(
                f"{source}: column {schema.label!r}: {n_rows:,} event row(s) in {unlabeled.height:,} session(s) have "
                f"no label in {label_source} (set data.policy.on_unlabeled=drop to leave them out)"
            )
        report["unlabeled_sessions_dropped"] = unlabeled.height
        report["unlabeled_events_dropped"] = n_rows
        sessions = sessions.filter(pl.col(S.LABEL).is_not_null())

    sessions = sessions.select(S.SESSION_ID, S.START_TIME, "n_events", pl.col(S.LABEL).cast(pl.Int8))
    report |= {"n_events": int(sessions["n_events"].sum()), "n_sessions": sessions.height,
               "n_positive_sessions": int(sessions[S.LABEL].sum())}
    return sessions, report


@dataclass
class RawEvents:
    """An event log scanned and type-checked, before any engine reads its rows."""

    frame: pl.LazyFrame
    source: str
    files: list[str]
    columns: pl.Schema
    timestamp_unit: str
    label_on_events: bool


def inspect_events(events_path: str, schema: Schema, labels_path: str | None) -> RawEvents:
    """Footers and the first rows only: emptiness, columns, types and the timestamp unit, for every engine."""
    raw, source = scan_table(events_path)
    if raw.head(1).collect().height == 0:
        raise DataValidationError(f"{source}: the event log is empty")
    label_on_events = labels_path is None
    have = check_columns(raw, schema, source, with_label=label_on_events)
    unit = detect_timestamp_unit(raw, schema, have[schema.timestamp])
    return RawEvents(raw, source, resolve_paths(events_path), have, unit, label_on_events)


def load_events(
    events_path: str,
    schema: Schema,
    labels_path: str | None = None,
    *,
    on_unlabeled: str = "error",
    on_orphan_labels: str = "error",
) -> LoadedEvents:
    """Scan, type-check, normalize and validate an event log; the returned events carry ``label``.

    Policies (see :func:`validate_sessions`): ``on_unlabeled`` for sessions whose events have no label and
    ``on_orphan_labels`` for labelled sessions that have no events; whatever a policy drops is counted in
    ``report``.
    """
    raw = inspect_events(events_path, schema, labels_path)
    source, unit = raw.source, raw.timestamp_unit
    events = normalize(raw.frame, schema, raw.columns, unit, with_label=raw.label_on_events)
    table = session_table(events, with_label=raw.label_on_events).collect(engine="streaming")
    labels = None if raw.label_on_events else read_labels(labels_path, schema)
    sessions, report = validate_sessions(table, schema, source, labels,
                                         on_unlabeled=on_unlabeled, on_orphan_labels=on_orphan_labels)
    if labels is not None:
        # A lookup, not a join: projection pushdown drops it from every query that never reads the label
        # (fitting the spec, the aggregates), which a join cannot, and it keeps the scan's row order.
        events = events.with_columns(
            pl.col(S.SESSION_ID).replace_strict(sessions[S.SESSION_ID], sessions[S.LABEL],
                                                default=pl.lit(None, pl.Int8), return_dtype=pl.Int8).alias(S.LABEL)
        )
    if "unlabeled_sessions_dropped" in report:
        events = events.join(sessions.lazy().select(S.SESSION_ID), on=S.SESSION_ID, how="semi")
    events = events.drop(S.TS_PRESENT).with_columns(pl.col(S.LABEL).cast(pl.Int8))
    report = {"source": source, "timestamp_unit": unit} | report
    return LoadedEvents(events=events, sessions=sessions, timestamp_unit=unit, source=source, report=report)
