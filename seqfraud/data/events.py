"""Reading, validating and normalizing raw event logs against the data contract.

Everything here is lazy but :func:`scan_table`, which checks the files themselves first (Parquet footers; a
CSV file is parsed once). :func:`load_events` returns normalized events plus a per-session table that one
aggregation pass computes; that pass is also where the row-level validation counts come from, so validation
costs no further read of the data.
"""

from __future__ import annotations

import csv
import difflib
import glob
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Literal, cast

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from typing_extensions import TypeVar

from seqfraud import schema as S
from seqfraud.data.split import to_epoch_us
from seqfraud.errors import UserError
from seqfraud.schema import Schema


class DataValidationError(UserError, ValueError):
    """Input that breaks the data contract; the message names the file, the column and the row count."""


# Integer epoch timestamps: ``auto`` reads the unit off the magnitude (seconds reach 1e11 only in year 5138);
# values of another unit then fall outside the plausible range and are refused.
_UNIT_LIMITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", float("inf")))
_US_PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}  # ns: floor-divided by 1,000
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# RFC 3339 date-time: T, t or space; optional fraction; Z, z or +hh:mm/-hh:mm, and no offset means UTC. The
# offset may also be +hhmm (what strftime's %z and Polars' CSV writer print). Anything else (a date alone,
# 01/03/2026, 2026-3-1, no seconds) is refused rather than guessed at.
RFC3339 = (
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?:\.(?P<frac>\d+))?"
    r"(?:[Zz]|(?P<sign>[+-])(?P<oh>[01]\d|2[0-3]):?(?P<om>[0-5]\d))?$"
)
UNPARSED = (
    "have a timestamp that does not parse: expected RFC 3339, e.g. 2026-03-01T12:00:00Z or "
    "2026-03-01 12:00:00.25+02:00 (no offset means UTC)"
)
_CATEGORICAL_OK = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)


# The engine's frame of the normalized events: a Polars LazyFrame, or the Spark engine's DataFrame.
EventsT = TypeVar("EventsT", default=pl.LazyFrame)


@dataclass
class LoadedEvents(Generic[EventsT]):
    """Normalized events and the per-session table, both lazy, plus what the loader counted."""

    events: EventsT
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


_PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_INFER_ROWS = 10_000  # rows a CSV timestamp or label column's type is inferred from
_EpochUnit = Literal["ns", "us", "ms", "s", "d"]
_CSV_KINDS: dict[pl.DataType | type[pl.DataType], str] = {
    pl.Float64: "a number",
    pl.Int64: "an integer",
    pl.Boolean: "true or false",
}


def scan_table(path: str | os.PathLike, schema: Schema) -> tuple[pl.LazyFrame, str]:
    """Scan Parquet or CSV lazily, after checking every file; returns the frame and a printable source name.

    Every fault of the files themselves fails here, by file name, before any query runs: one that is not
    Parquet (or is truncated), a folder whose files disagree on a column, a duplicated column, and in CSV a
    value that does not fit its column or a row with more fields than the header. Parquet keeps its types
    and costs a footer read per file. CSV is parsed once in full for it, with ``schema``'s types: ids and
    categorical columns as strings (``007`` is not ``7``), numeric columns as floats, the timestamp and
    label columns inferred from the first rows (integer epochs stay integers, and strings are left to
    the timestamp rules: no date guessing) and every other column as strings.
    """
    files = resolve_paths(path)
    suffixes = {Path(f).suffix.lower() for f in files}
    source = files[0] if len(files) == 1 else f"{path} ({len(files)} files)"
    # glob=False: the list is already resolved, so a "[" or "*" in a file name is taken literally.
    if suffixes <= set(_PARQUET_SUFFIXES):
        _check_same_columns({f: _parquet_schema(f) for f in files}, source)
        return pl.scan_parquet(files, glob=False), source
    if suffixes <= {".csv"}:
        scans = {f: _scan_csv(f, schema) for f in files}
        _check_same_columns({f: lf.collect_schema() for f, lf in scans.items()}, source)
        return pl.concat(list(scans.values())), source
    raise DataValidationError(f"{source}: unsupported file type(s) {sorted(suffixes)}; use Parquet or CSV")


@contextmanager
def reading(source: str) -> Iterator[None]:
    """Where a scan's data is collected: an error of the Polars or Arrow readers becomes a DataValidationError
    that names ``source``. :func:`scan_table` checks the files first, so this is what is left: a file that
    changed since, or a Parquet file whose footer is intact but whose data is not."""
    try:
        yield
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as e:
        raise DataValidationError(f"{source}: the data cannot be read: {_first_line(e)}") from e


def _first_line(error: BaseException) -> str:
    return next((line for line in str(error).splitlines() if line.strip()), type(error).__name__)


def _duplicates(names: list[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


def _parquet_schema(file: str) -> pl.Schema:
    """A file's columns from its footer; a file that is not Parquet, truncated or empty fails by name."""
    try:
        arrow = pq.read_schema(file)
    except (pa.ArrowException, OSError) as e:
        raise DataValidationError(
            f"{file}: not a readable Parquet file ({_first_line(e)}); is it truncated, empty, or of another "
            "format? Rewrite it, or remove it from the input"
        ) from None
    if dupes := _duplicates(arrow.names):
        raise DataValidationError(
            f"{file}: column(s) {dupes} appear more than once; rename or drop the copies"
        )
    return cast(
        pl.DataFrame, pl.from_arrow(arrow.empty_table())
    ).collect_schema()  # a Table gives a DataFrame


def _check_same_columns(schemas: dict[str, pl.Schema], source: str) -> None:
    """Files read as one table must have the same columns of the same types (their order may differ)."""
    first, *rest = schemas
    for file in rest:
        a, b = schemas[first], schemas[file]
        for c in [*a, *(c for c in b if c not in a)]:
            if a.get(c) != b.get(c):
                raise DataValidationError(
                    f"{source}: the files disagree on column {c!r}: {a.get(c) or 'absent'} in {first}, "
                    f"{b.get(c) or 'absent'} in {file}; every file must have the same columns and types"
                )


def _csv_header(file: str) -> list[str]:
    with open(file, newline="", encoding="utf-8-sig", errors="replace") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise DataValidationError(f"{file}: the file is empty; a CSV event log starts with a header row")
    if dupes := _duplicates(header):
        raise DataValidationError(
            f"{file}: column(s) {dupes} appear more than once in the header, so which one is meant is unknown; "
            "rename or drop the copies"
        )
    return header


def _scan_csv(file: str, schema: Schema) -> pl.LazyFrame:
    """One CSV file with ``schema``'s types (see :func:`scan_table`), parsed once in full to check it."""
    types = {c: pl.String for c in _csv_header(file)} | {c: pl.Float64 for c in schema.numerical}
    for c in (schema.timestamp, schema.label):
        types.pop(c, None)  # inferred
    lf = pl.scan_csv(file, schema_overrides=types, infer_schema_length=CSV_INFER_ROWS, glob=False)
    try:
        # All columns: Polars notices a row with more fields than the header only when it reads them all.
        lf.select(pl.all().null_count()).collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataValidationError(
            _csv_fault(file, lf.collect_schema()) or f"{file}: {_first_line(e)}"
        ) from None
    return lf


def _csv_fault(file: str, have: pl.Schema) -> str | None:
    """What made a CSV file fail to parse, counted: values that do not fit a typed column, or ragged rows."""
    raw = pl.scan_csv(file, infer_schema=False, truncate_ragged_lines=True, glob=False).with_row_index(
        S.ROW_INDEX
    )
    for c, dtype in have.items():
        if dtype == pl.String:
            continue
        value = pl.col(c)
        fits = (
            value.str.to_lowercase().is_in(["true", "false"])
            if dtype == pl.Boolean
            else value.cast(dtype, strict=False).is_not_null()
        )
        bad = raw.filter(value.is_not_null() & ~fits).select(
            pl.len(), value.first(), pl.col(S.ROW_INDEX).first()
        )
        n, example, row = bad.collect().row(0)
        if n:
            fix = (
                "fix them, or leave them empty where the value is missing"
                if dtype == pl.Float64
                else f"its type, {dtype}, is what its first {CSV_INFER_ROWS:,} rows hold: make the column consistent"
            )
            return (
                f"{file}: column {c!r}: {n:,} row(s) hold a value that is not {_CSV_KINDS.get(dtype, dtype)} "
                f"(first: {example!r}, data row {row + 1:,}); {fix}"
            )
    with open(file, newline="", encoding="utf-8-sig", errors="replace") as f:
        rows = csv.reader(f)
        width = len(next(rows))
        ragged = [i for i, r in enumerate(rows, 1) if len(r) > width]
    if ragged:
        return (
            f"{file}: {len(ragged):,} row(s) have more fields than the header's {width} (first: data row "
            f"{ragged[0]:,}); quote values that hold the separator"
        )
    return None


def fail_rows(source: str, column: str, n_rows: int, what: str) -> None:
    """The one wording of a bad-rows error, shared by training and scoring validation."""
    raise DataValidationError(f"{source}: column {column!r}: {n_rows:,} row(s) {what}")


def out_of_range_text(schema: Schema, epoch_unit: str | None, unit_origin: str) -> str:
    """What rows outside ``data.schema.timestamp_range`` have, for :func:`fail_rows`. ``epoch_unit`` is the unit
    integer epochs were read in (None for datetimes and strings) and ``unit_origin`` where it came from: epochs
    in another unit are the usual cause."""
    start, end = schema.timestamp_range
    what = f"have a timestamp outside the plausible range {start} to {end} (data.schema.timestamp_range)"
    if epoch_unit in _UNIT_NAMES:
        what += (
            f"; integer epochs are read as {_UNIT_NAMES[epoch_unit]} ({unit_origin}), so epochs in another "
            "unit, a column that mixes units, or epochs beyond int64 fall outside it"
        )
    return what


def did_you_mean(name: object, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing: the one wording of a name hint."""
    close = difflib.get_close_matches(str(name), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_columns(lf: pl.LazyFrame, schema: Schema, source: str, *, with_label: bool) -> pl.Schema:
    """Fail on missing or wrongly typed columns before any data is read."""
    have = lf.collect_schema()
    wanted = list(schema.event_columns) + ([schema.label] if with_label else [])
    missing = [c for c in wanted if c not in have]
    if missing:
        hint = "; ".join(repr(c) + did_you_mean(c, list(have)) for c in missing)
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
            raise DataValidationError(
                f"{source}: column {c!r} has type {have[c]}; expected string or integer"
            )
    for c in schema.numerical:
        if not have[c].is_numeric():
            raise DataValidationError(f"{source}: column {c!r} has type {have[c]}; expected a numeric type")
    if with_label and not (have[schema.label].is_numeric() or have[schema.label] == pl.Boolean):
        raise DataValidationError(
            f"{source}: column {schema.label!r} has type {have[schema.label]}; expected 0/1 integers or booleans"
        )
    return have


def detect_timestamp_unit(lf: pl.LazyFrame, schema: Schema, dtype: pl.DataType) -> str:
    """The unit of integer epochs, fixed at training and kept in the spec: the configured one; for ``auto``, the
    magnitude of the first values, or ``datetime`` (no unit) when the training data hold datetimes or strings.

    Scoring never calls this: it reads integer epochs in the spec's unit (:attr:`Spec.epoch_unit`).
    """
    if schema.timestamp_unit != "auto":
        return schema.timestamp_unit
    if not dtype.is_integer():
        return "datetime"
    head = lf.select(pl.col(schema.timestamp)).head(10_000).collect()[schema.timestamp].drop_nulls()
    if head.is_empty():
        return "ms"
    magnitude = float(cast(float, head.abs().median()))  # not null: head is non-empty
    return next(unit for unit, limit in _UNIT_LIMITS if magnitude < limit)


def timestamp_range_us(schema: Schema) -> tuple[int, int]:
    """``data.schema.timestamp_range`` as epoch microseconds, [start, end)."""
    start, end = schema.timestamp_range
    return to_epoch_us(start), to_epoch_us(end)


def epoch_bounds(unit: str, range_us: tuple[int, int]) -> tuple[int, int]:
    """The first and last integer epoch in ``unit`` that lands in ``range_us``, clipped to int64.

    Comparing raw values with these needs no conversion, so an epoch that would overflow int64 microseconds
    is caught as out of range instead of wrapping. Every engine checks the range with these bounds.
    """
    start, end = range_us
    if unit == "ns":
        first, last = start * 1_000, end * 1_000 - 1
    else:
        k = _US_PER_UNIT[unit]
        first, last = -(-start // k), (end - 1) // k
    return max(first, _INT64_MIN), min(last, _INT64_MAX)


def rfc3339_us(col: pl.Expr) -> pl.Expr:
    """Epoch microseconds of RFC 3339 strings (:data:`RFC3339`), null for any other string; fractions beyond
    the microsecond are truncated. Each part is taken apart on its own, so one column may mix offsets, ``Z``
    and naive (UTC) strings, which a single Polars format cannot."""
    g = col.str.extract_groups(RFC3339)
    local = (
        pl.concat_str(g.struct["date"], pl.lit(" "), g.struct["time"])
        .str.to_datetime("%Y-%m-%d %H:%M:%S", time_unit="us", strict=False)
        .dt.epoch("us")
    )
    fraction = g.struct["frac"].str.slice(0, 6).str.pad_end(6, "0").cast(pl.Int64).fill_null(0)
    offset = ((g.struct["oh"].cast(pl.Int64) * 60 + g.struct["om"].cast(pl.Int64)) * 60_000_000).fill_null(0)
    return local + fraction - pl.when(g.struct["sign"] == "-").then(-offset).otherwise(offset)


def epoch_value(column: str, dtype: pl.DataType, unit: str) -> tuple[pl.Expr, str]:
    """The timestamp as an integer epoch in its own unit, and that unit: integer epochs in ``unit``, datetimes in
    theirs (milliseconds of year 300,000 overflow microseconds), RFC 3339 strings in microseconds (null when a
    string is not RFC 3339)."""
    col = pl.col(column)
    if dtype == pl.String:
        return rfc3339_us(col), "us"
    if dtype.is_temporal():
        own: _EpochUnit = getattr(dtype, "time_unit", None) or "ms"
        return (col.cast(pl.Datetime("ms")) if dtype == pl.Date else col).dt.epoch(own), own
    return col, unit


def timestamp_us(raw: pl.Expr, unit: str, range_us: tuple[int, int]) -> tuple[pl.Expr, pl.Expr]:
    """Epoch microseconds (UTC) of an :func:`epoch_value`, and whether it falls outside ``range_us``; the
    microseconds are null where the value did not parse or is out of range.

    The range is checked on the value in its own unit, before any conversion that could overflow.
    """
    first, last = epoch_bounds(unit, range_us)
    in_range = raw.is_between(first, last)
    value = raw.cast(pl.Int64, strict=False).clip(first, last)  # clipped: no product below can overflow
    us = value // 1_000 if unit == "ns" else value * _US_PER_UNIT[unit]
    return pl.when(in_range).then(us), in_range.not_().fill_null(False)


def normalize(
    lf: pl.LazyFrame, schema: Schema, have: pl.Schema, unit: str, *, with_label: bool
) -> pl.LazyFrame:
    """Cast to the canonical working types; flags present and out-of-range timestamps for the row counts.

    The epoch value is a column of its own first: both flags read it, and parsing strings twice would double
    the cost of a scoring request.
    """
    raw, raw_unit = epoch_value(schema.timestamp, have[schema.timestamp], unit)
    ts_us, outside = timestamp_us(pl.col(S.TS_US), raw_unit, timestamp_range_us(schema))
    cols = [
        pl.col(schema.session_id).cast(pl.String).alias(S.SESSION_ID),
        ts_us.alias(S.TS_US),
        pl.col(schema.timestamp).is_not_null().alias(S.TS_PRESENT),
        outside.alias(S.TS_OUT_OF_RANGE),
        *[pl.col(c).cast(pl.String) for c in schema.categorical_fields],
        *[pl.col(c).cast(pl.Float64) for c in schema.numerical],
    ]
    if with_label:
        cols.append(pl.col(schema.label).cast(pl.Float64).alias(S.LABEL))
    return lf.with_row_index(S.ROW_INDEX).with_columns(raw.alias(S.TS_US)).select(pl.col(S.ROW_INDEX), *cols)


def session_table(events: pl.LazyFrame, *, with_label: bool) -> pl.LazyFrame:
    """One row per session with its start time and the counts that validation needs."""
    aggs = [
        pl.col(S.TS_US).min().alias(S.START_TIME),
        pl.len().alias("n_events"),
        (pl.col(S.TS_US).is_null() & pl.col(S.TS_PRESENT) & ~pl.col(S.TS_OUT_OF_RANGE))
        .sum()
        .alias("n_ts_unparsed"),
        pl.col(S.TS_PRESENT).not_().sum().alias("n_ts_null"),
        pl.col(S.TS_OUT_OF_RANGE).sum().alias("n_ts_out_of_range"),
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
    lf, source = scan_table(path, schema)
    have = lf.collect_schema()
    missing = [c for c in (schema.session_id, schema.label) if c not in have]
    if missing:
        raise DataValidationError(f"{source}: missing column(s) {missing}. Columns present: {list(have)}")
    if not (have[schema.label].is_numeric() or have[schema.label] == pl.Boolean):
        raise DataValidationError(
            f"{source}: column {schema.label!r} has type {have[schema.label]}; expected 0/1 integers or booleans"
        )
    with reading(source):
        labels = lf.select(
            pl.col(schema.session_id).cast(pl.String).alias(S.SESSION_ID),
            pl.col(schema.label).cast(pl.Float64).alias(S.LABEL),
        ).collect()
    if labels.is_empty():
        raise DataValidationError(f"{source}: the label table is empty")
    for col, n, what in (
        (schema.session_id, labels[S.SESSION_ID].null_count(), "have a null session id"),
        (schema.label, labels[S.LABEL].null_count(), "have a null label"),
        (
            schema.label,
            int((~labels[S.LABEL].is_in([0.0, 1.0]) & labels[S.LABEL].is_not_null()).sum()),
            "have a label that is not 0/1",
        ),
    ):
        if n:
            fail_rows(source, col, n, what)
    dupes = labels.group_by(S.SESSION_ID).agg(pl.col(S.LABEL).n_unique().alias("k")).filter(pl.col("k") > 1)
    if dupes.height:
        fail_rows(source, schema.label, dupes.height, "are sessions listed with conflicting labels")
    return labels.unique(S.SESSION_ID, keep="first", maintain_order=True).with_columns(
        pl.col(S.LABEL).cast(pl.Int8)
    ), source


def validate_sessions(
    sessions: pl.DataFrame,
    schema: Schema,
    source: str,
    labels: tuple[pl.DataFrame, str] | None = None,
    *,
    on_unlabeled: str = "error",
    on_orphan_labels: str = "error",
    epoch_unit: str | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Row-level checks and drop policies on the per-session table of :func:`session_table`.

    Every engine builds that small table its own way and hands it here, so the contract and the wording
    of its errors exist once. ``labels`` is a separate label table from :func:`read_labels`; without it
    the labels come from the events. ``epoch_unit`` (:attr:`RawEvents.epoch_unit`) goes into the message
    on timestamps out of range. Returns one row per kept session (``session_id``, ``start_time``,
    ``n_events``, ``label``) and what the policies dropped.
    """
    for name, value in (("on_unlabeled", on_unlabeled), ("on_orphan_labels", on_orphan_labels)):
        if value not in ("error", "drop"):
            raise ValueError(f"data.policy.{name} must be 'error' or 'drop', got {value!r}")
    report: dict = {}
    origin = (
        f"data.schema.timestamp_unit={epoch_unit}"
        if schema.timestamp_unit != "auto"
        else f"data.schema.timestamp_unit=auto chose {epoch_unit!r} from the first values"
    )
    if int(sessions["n_events"].sum()) == 0:
        raise DataValidationError(f"{source}: the event log is empty")
    null_sid = sessions.filter(pl.col(S.SESSION_ID).is_null())
    if null_sid.height:
        fail_rows(source, schema.session_id, int(null_sid["n_events"][0]), "have a null session id")
    for col, what in (
        ("n_ts_null", "have a null timestamp"),
        ("n_ts_unparsed", UNPARSED),
        ("n_ts_out_of_range", out_of_range_text(schema, epoch_unit, origin)),
    ):
        if n := int(sessions[col].sum()):
            fail_rows(source, schema.timestamp, n, what)

    if labels is None:
        if n := int(sessions["n_label_bad"].sum()):
            fail_rows(source, schema.label, n, "have a label that is not 0/1")
        mixed = sessions.filter(pl.col("label_min") != pl.col("label_max"))
        if mixed.height:
            fail_rows(
                source,
                schema.label,
                int(mixed["n_events"].sum()),
                f"belong to {mixed.height:,} session(s) whose label is not constant",
            )
        partial = sessions.filter((pl.col("n_label_null") > 0) & pl.col("label_min").is_not_null())
        if partial.height:
            fail_rows(
                source,
                schema.label,
                int(partial["n_label_null"].sum()),
                f"have a null label inside {partial.height:,} otherwise labelled session(s)",
            )
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
    report |= {
        "n_events": int(sessions["n_events"].sum()),
        "n_sessions": sessions.height,
        "n_positive_sessions": int(sessions[S.LABEL].sum()),
    }
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
    epoch_unit: (
        str | None
    )  # the unit integer epochs are read in; None when the column holds datetimes or strings


def inspect_events(events_path: str, schema: Schema, labels_path: str | None) -> RawEvents:
    """Footers and the first rows only: emptiness, columns, types and the timestamp unit, for every engine."""
    raw, source = scan_table(events_path, schema)
    label_on_events = labels_path is None
    with reading(source):
        if raw.head(1).collect().height == 0:
            raise DataValidationError(f"{source}: the event log is empty")
        have = check_columns(raw, schema, source, with_label=label_on_events)
        unit = detect_timestamp_unit(raw, schema, have[schema.timestamp])
    epoch_unit = unit if have[schema.timestamp].is_integer() else None
    return RawEvents(raw, source, resolve_paths(events_path), have, unit, label_on_events, epoch_unit)


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
    with reading(source):
        table = session_table(events, with_label=raw.label_on_events).collect(engine="streaming")
    labels = None if labels_path is None else read_labels(labels_path, schema)  # None iff raw.label_on_events
    sessions, report = validate_sessions(
        table,
        schema,
        source,
        labels,
        on_unlabeled=on_unlabeled,
        on_orphan_labels=on_orphan_labels,
        epoch_unit=raw.epoch_unit,
    )
    if labels is not None:
        # A lookup, not a join: projection pushdown drops it from every query that never reads the label
        # (fitting the spec, the aggregates), which a join cannot, and it keeps the scan's row order.
        events = events.with_columns(
            pl.col(S.SESSION_ID)
            .replace_strict(
                sessions[S.SESSION_ID], sessions[S.LABEL], default=pl.lit(None, pl.Int8), return_dtype=pl.Int8
            )
            .alias(S.LABEL)
        )
    if "unlabeled_sessions_dropped" in report:
        events = events.join(sessions.lazy().select(S.SESSION_ID), on=S.SESSION_ID, how="semi")
    events = events.drop(S.TS_PRESENT, S.TS_OUT_OF_RANGE).with_columns(pl.col(S.LABEL).cast(pl.Int8))
    report = {"source": source, "timestamp_unit": unit} | report
    return LoadedEvents(events=events, sessions=sessions, timestamp_unit=unit, source=source, report=report)
