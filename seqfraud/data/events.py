"""Reading, validating and normalizing raw event logs against the data contract.

Everything here is lazy but :func:`scan_table`, which checks the files themselves first (Parquet footers; a
CSV file is parsed once). :func:`load_events` returns normalized events plus a per-session table that one
aggregation pass computes; that pass is also where the row-level validation counts come from, so validation
costs no further read of the data.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import functools
import glob
import gzip
import logging
import math
import os
import re
import stat
import statistics
import unicodedata
import zlib
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Generic, Literal, NamedTuple, NoReturn, cast

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.dataset as pa_ds
import pyarrow.parquet as pq
from typing_extensions import Self, TypeVar

from seqfraud import schema as S
from seqfraud.data.split import from_epoch_us, to_epoch_us
from seqfraud.durations import DURATION_US, duration_us
from seqfraud.errors import UserError, did_you_mean, first_line
from seqfraud.provenance import files_digest
from seqfraud.schema import Schema


class DataValidationError(UserError, ValueError):
    """Input that breaks the data contract; the message names the file, the column and the row count."""


# Integer epoch timestamps: ``auto`` reads the unit off the magnitude (seconds reach 1e11 only in year 5138);
# values of another unit then fall outside the plausible range and are refused.
_UNIT_LIMITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", float("inf")))
US_PER_UNIT = {"ms": 1_000, "us": 1} | DURATION_US  # s, m, h, d (and w); ns: floor-divided by 1,000
_UNIT_NAMES = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "m": "minutes",
    "h": "hours",
    "d": "days",
}
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
# RFC 3339 date-time: T, t or space; optional fraction; Z, z or +hh:mm/-hh:mm, and no offset means UTC. The
# offset may also be +hhmm (what strftime's %z and Polars' CSV writer print). Anything else (a date alone,
# 01/03/2026, 2026-3-1, no seconds) is refused rather than guessed at.
# ASCII digits only: Python's \d also takes full-width and Arabic-Indic ones, which int() reads, so a request's
# timestamps in them scored where the Polars path refused them.
RFC3339 = (
    r"^(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.(?P<frac>[0-9]+))?"
    r"(?:[Zz]|(?P<sign>[+-])(?P<oh>[01][0-9]|2[0-3]):?(?P<om>[0-5][0-9]))?$"
)
_RFC3339_HINT = (
    "expected RFC 3339, e.g. 2026-03-01T12:00:00Z or 2026-03-01 12:00:00.25+02:00 (no offset means UTC)"
)
UNPARSED = f"have a timestamp that does not parse: {_RFC3339_HINT}"
# Refused as a null session id or timestamp is: it read as the missing token, uncounted (dogfood 118).
NULL_EVENT_TYPE = "have a null event type: every event is of some type; fill them, or drop those rows"
LABEL_TIME_UNPARSED = (
    f"have a label time that does not parse: {_RFC3339_HINT}, or a date alone (2026-03-01, read as the end of that "
    "day)"
)
# A session id that is empty or only spaces names nothing a service route or a report can show; one with spaces
# at an end is an export's padding ("7 " and "7" read as two sessions, silently: dogfood 22); one with a control
# character (a newline, a tab) breaks the lines of a log or CSV it is written to and no URL path can name it; an
# invisible one (a zero-width space, a byte-order mark) makes another session of an id that looks the same (dogfood
# 191: S-1, S-1 with U+200B and with U+FEFF scored as three). Refused alike in training, label tables, batch scoring
# and requests.
BLANK_ID = (
    "have a blank session id (empty, or spaces only), one with spaces at its start or end, which would read "
    "as another session than the same id without them, or one with a control or invisible character (newline, "
    "tab, zero-width space): strip them"
)
# An entity value empty or padded links or splits entities as the session ids' did: refused by training, batch
# scoring and the service alike (dogfood 195: wallets padded by one export and not another read as two). So is one
# that spells no value as text, in any case: an export that wrote its nulls so linked every session without a value
# into one entity (dogfood 277: a refund card written "null" on each cash refund declined 3,498 of 3,500 tickets).
# As pandas (None, NaN, <NA>), R (NA), SQL dumps (\N, (null)) and JavaScript (undefined) write a missing value.
# A categorical column's are values, only said at preprocessing (features.tokens.NULL_SPELLINGS, without 'NA' or
# 'none', which can be plain values there): linking nothing, they do no such harm.
NULL_TEXTS = (
    "null",
    "none",
    "nan",
    "na",
    "<na>",
    "n/a",
    "nil",
    "undefined",
    "(null)",
    "<null>",
    "\\n",
)
BLANK_ENTITY = (
    "have an entity value that is empty, spells no value as text ('null', 'None', 'NaN', 'NA', '<NA>', 'n/a', "
    "'\\N', 'undefined' and the like, any case), has spaces or an invisible character (zero-width space, "
    "byte-order mark) at its start or end, or holds a control character: it would link every session that has it, "
    "or read as another entity than the value without them (the service refuses it); strip them, or write null "
    'where the event has none (in a CSV an unquoted empty field is null, a quoted "" an empty value)'
)
# C0 and C1 control characters (U+009B is a terminal's escape) and the Unicode line and paragraph separators; a
# class Python's, Polars' and Java's (Spark's) regex read alike.
CONTROL = r"[\x00-\x1f\x7f-\x9f\u2028\u2029]"
# Unicode's format characters (category Cf, as of Unicode 15): zero-width spaces and joiners, direction marks,
# embeddings, overrides and isolates (which can show an id reversed), the byte-order mark, tags. Refused anywhere in
# session ids; at the ends alone of an entity value or event id, which may be text, where Persian writes U+200C and
# an emoji sequence U+200D within a word (a wallet with a trailing U+200B read as another: dogfood 195).
# With them the other characters that show as nothing (review 211: "abc" and "abc" + U+034F were two sessions shown
# alike): the combining grapheme joiner, Hangul fillers, Khmer's inherent vowels, the braille
# blank.
FORMAT = (
    r"[\xad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160\u17b4\u17b5\u180e"
    r"\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\u2800\u3164\ufeff\uffa0\ufff9-\ufffb\U000110bd"
    r"\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
# Variation selectors end an emoji (a heart's U+FE0F) or a Mongolian word in an entity value's text; refused in a
# session id.
_SESSION_CHAR = re.compile(rf"{CONTROL}|{FORMAT}|[\u180b-\u180d\u180f\ufe00-\ufe0f\U000e0100-\U000e01ef]")
_VALUE_CHAR = re.compile(f"{CONTROL}|^{FORMAT}|{FORMAT}$")


def blank(column: str, *, session: bool = True) -> pl.Expr:
    """Session ids refused by :data:`BLANK_ID`; ``session=False`` for an entity value (:data:`BLANK_ENTITY`)."""
    c = pl.col(column)
    if session:
        return (c.str.strip_chars() != c) | (c == "") | c.str.contains(_SESSION_CHAR.pattern)
    return (
        (c.str.strip_chars() != c)
        | (c == "")
        | c.str.contains(_VALUE_CHAR.pattern)
        | c.str.to_lowercase().is_in(NULL_TEXTS)
    )


def blank_id(value: str, *, session: bool = True) -> bool:
    """:func:`blank`'s rule for one id (a request's, the record fast path's); ``session=False`` for an entity value
    or event id, where a format character may be text within it (:data:`FORMAT`)."""
    chars = _SESSION_CHAR if session else _VALUE_CHAR
    return not value or value.strip() != value or chars.search(value) is not None


def null_text(value: str) -> bool:
    """Whether an entity value spells no value (:data:`NULL_TEXTS`), which :func:`blank` refuses too."""
    return value.lower() in NULL_TEXTS


log = logging.getLogger(__name__)
_CATEGORICAL_OK = (pl.String, pl.Categorical, pl.Enum, pl.Boolean)
# Entity ids: strings or integers (as their decimal text); an all-null column is an entity no event has.
_ENTITY_OK = (pl.String, pl.Categorical, pl.Enum, pl.Null)
# data.policy.on_unlabeled: refuse, leave out, keep for pretraining (train split only), or read as legitimate (a
# label table of the frauds alone, as chargeback files are) sessions with no label.
UNLABELED_POLICIES = ("error", "drop", "keep", "negative")
# data.policy.on_mixed_labels, where labels come on the events: refuse a session whose events disagree, or label it
# fraud when any of its events is (logs that flag the fraudulent transactions, not the session).
MIXED_LABEL_POLICIES = ("error", "any")


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


def resolve_paths(path: str | os.PathLike, *, warn: bool = True) -> list[str]:
    """A file, a directory of Parquet files (its subdirectories too, as a partitioned dataset has them) or of CSV
    files (refused where it holds both), or a glob of either, to a sorted file list (sorted: row order is the
    tie-break). A glob's folders are read as folders: ``events/day=2026-04-2*`` picks a partitioned dataset's days
    (a dogfood's later window to monitor was refused as "not a regular file").

    Linked directories are followed once each: a link back up the tree (``loop -> .``) read every file 41 times
    through glob's recursion. A file reached twice under two names would count its rows twice, so it is refused.
    A path that exists is read as it is, brackets and all (a folder named ``Project [2024]`` read as a glob and
    matched nothing); ``~`` is the home directory, as in a shell (dogfood 39).
    """
    p = os.path.expanduser(str(path))
    if os.path.isdir(p):
        files = _folder_files(p, warn)
    elif os.path.exists(p):
        files = [p]
    else:
        matched = sorted(glob.glob(p, recursive=True)) if glob.has_magic(p) else []
        # a set: `**` matches a folder and its files alike
        files = sorted({f for m in matched for f in (_folder_files(m, warn) if os.path.isdir(m) else [m])})
    if not files:
        # A glob under a folder whose own name holds brackets reads them as a character class (dogfood 41).
        literal = next((d for d in Path(p).parents if "[" in d.name and d.is_dir()), None)
        hint = (
            f"; the folder {literal.name!r} exists, and a glob reads its brackets as a set of characters: write "
            "[[] for [ and []] for ] in a pattern"
            if literal is not None and glob.has_magic(p)
            else ""
        )
        raise DataValidationError(f"{p}: no such file, or no Parquet/CSV files match{hint}")
    first: dict[str, str] = {}
    for f in files:
        if not stat.S_ISREG(os.stat(f).st_mode):  # a pipe blocks its reader forever (dogfood 26)
            raise DataValidationError(f"{f}: not a regular file (a pipe, a device or a directory): not read")
        if (real := os.path.realpath(f)) in first:
            raise DataValidationError(
                f"{p}: {first[real]} and {f} are the same file (through a link), so its rows would be read "
                "twice; remove the link, or name the files to read"
            )
        first[real] = f
    return files


def _folder_files(p: str, warn: bool) -> list[str]:
    """A folder's Parquet files, its subfolders' too, or its CSV files; refused where it holds both, as a glob of
    both is."""
    found: dict[str, list[str]] = {"parquet": [], "csv": []}
    other: list[str] = []  # neither, said
    seen = set()
    for root, dirs, names in os.walk(p, followlinks=True):
        if os.path.realpath(root) in seen:
            dirs.clear()  # a directory already read, reached again through a link
            continue
        seen.add(os.path.realpath(root))
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".")
        )  # hidden ones stay out, as glob leaves them
        for n in names:
            if not n.startswith(".") and not writers_marker(n):
                f = os.path.join(root, n)
                kind = file_kind(f)
                (other if kind is None else found[kind]).append(f)
    # Which are data is the team's to say: the CSV may be copies of the Parquet (a half-converted export: dogfood
    # 29) or another system's events (dogfood 212: the dispatch export's courier events, 26% of the log, left out
    # with a warning, where a glob of both files was refused).
    if found["parquet"] and found["csv"]:
        raise DataValidationError(
            f"{p}: holds {len(found['parquet']):,} Parquet and {len(found['csv']):,} CSV file(s) (the first CSV: "
            f"{min(found['csv'])}); name the ones to read (a glob such as {os.path.join(p, '**', '*.parquet')} or "
            "**/*.csv, which read subfolders too), move the others out, or convert the CSV"
        )
    if warn and other:
        log.warning(
            "%s: %d file(s) left out, neither Parquet nor named .csv or .csv.gz (the first: %s)",
            p,
            len(other),
            min(other),
        )
    return sorted(found["parquet"] or found["csv"])


def say_repeated_rows(
    source: str, n: int, copies: list[tuple[str, str]], left_out_id: str | None = None
) -> None:
    """Warn of ``n`` rows equal in every column to another of their session, in training and in scoring alike:
    a doubled export moves scores as it moves training (20 doubled rows moved scores by up to 0.084).
    ``left_out_id``: the event id column the model reads and the file left out (review 223: the advice to give
    the log an event id went to a model that has one)."""
    ids = (
        f"send the event ids the model reads (column {left_out_id!r}, left out of this file), whose repeats are refused"
        if left_out_id
        else "give the log an event id (data.schema.event_id), whose repeats are refused"
    )
    log.warning(
        "%s: %s event row(s) repeat another row of their session in every column; each counts as an event. "
        "If the export doubled them (a file copied twice, a retried batch), drop the copies, or %s; if they are "
        "real repeats that the timestamps' resolution cannot tell apart (a bot's clicks within one second), keep "
        "them: they may be the signal%s",
        source,
        f"{n:,}",
        ids,
        "".join(f"; {a} and {b} hold the same bytes" for a, b in copies[:3])
        + (f"; and {len(copies) - 3:,} more pairs of files" if len(copies) > 3 else ""),
    )


def same_contents(files: list[str]) -> list[tuple[str, str]]:
    """Pairs of ``files`` whose bytes are the same (a daily export copied twice under two names): files of one
    size are hashed, on the repeated rows' warning path alone."""
    by_size: dict[int, list[str]] = {}
    for f in files:
        by_size.setdefault(os.path.getsize(f), []).append(f)
    pairs = []
    for group in (g for g in by_size.values() if len(g) > 1):
        first: dict[str, str] = {}
        for f in group:
            digest = files_digest([f])
            if digest in first:
                pairs.append((first[digest], f))
            first.setdefault(digest, f)
    return pairs


def reads(path: str | os.PathLike, file: str | os.PathLike) -> bool:
    """Whether :func:`resolve_paths` of ``path`` would read ``file`` (which need not exist yet): an output
    written there would be read as input by the next run over the same path."""
    p, f = (os.path.abspath(os.path.expanduser(x)) for x in (path, file))
    if os.path.isdir(p):
        return f.startswith(os.path.join(p, "")) and f.endswith(".parquet")
    if glob.has_magic(str(path)) and not os.path.exists(p):
        return fnmatch.fnmatch(f, p)
    return f == p


_PARQUET_SUFFIXES = (".parquet", ".pq")
PARQUET_MAGIC = b"PAR1"  # a Parquet file's first (and last) bytes
# CSV as exported, or gzipped as exports often are.
_CSV_SUFFIXES = (".csv", ".csv.gz")


def file_kind(name: str | os.PathLike) -> Literal["parquet", "csv"] | None:
    """``parquet`` or ``csv`` by the file's name (``.csv.gz`` is CSV), or None for a file that is neither. A
    regular file by another name is Parquet where its first bytes say so: Hive names its files ``000000_0``, and
    some writers ``.parq`` (dogfood 191: a folder's such files were left out unsaid)."""
    lower = os.fspath(name).lower()
    if lower.endswith(_PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(_CSV_SUFFIXES):
        return "csv"
    # _metadata is Parquet, of no rows; a pipe would block the read.
    if writers_marker(name) or not os.path.isfile(name):
        return None
    try:
        with open(name, "rb") as f:
            return "parquet" if f.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC else None
    except OSError:  # unreadable: not known to be data, so said as left out, where a folder holds it
        return None


def writers_marker(name: str | os.PathLike) -> bool:
    """A file a writer leaves beside the data (Hadoop's and Spark's ``_SUCCESS``, Parquet's ``_metadata``, a
    commit protocol's ``_committed_*``), which a folder's read passes over unsaid."""
    base = os.path.basename(name)
    return base in ("_SUCCESS", "_metadata", "_common_metadata") or base.startswith(
        ("_committed_", "_started_")
    )


def _open_csv(file: str, binary: bool = False) -> IO[Any]:
    """A CSV file for Python's readers, through gzip where its name ends in ``.gz``."""
    opener: Callable[..., IO[Any]] = gzip.open if file.lower().endswith(".gz") else open
    if binary:
        return opener(file, "rb")
    return opener(file, "rt", newline="", encoding="utf-8-sig", errors="replace")


CSV_INFER_ROWS = 10_000  # rows a CSV timestamp or label column's type is inferred from
_EpochUnit = Literal["ns", "us", "ms", "s", "d"]
_CSV_KINDS: dict[pl.DataType | type[pl.DataType], str] = {
    pl.Float64: "a number",
    pl.Int64: "an integer",
    pl.Boolean: "true or false",
}


def scan_table(
    path: str | os.PathLike, schema: Schema, file_column: str | None = None, *, float32_decimal: bool = True
) -> tuple[pl.LazyFrame, str]:
    """Scan Parquet or CSV lazily, after checking every file; returns the frame and a printable source name.

    Every fault of the files themselves fails here, by file name, before any query runs: one that is not
    Parquet (or is truncated), a folder whose files disagree on a column, a duplicated column, and in CSV a
    value that does not fit its column or a row with more fields than the header. Parquet keeps its types
    and costs a footer read per file. CSV is parsed once in full for it, with ``schema``'s types: ids and
    categorical columns as strings (``007`` is not ``7``), numeric columns as floats, the timestamp and
    label columns inferred from the first rows (integer epochs stay integers, and strings are left to
    the timestamp rules: no date guessing) and every other column as strings. With ``file_column``, each row's
    file, by its path, in that column. A folder's float32 numbers among wider ones are read as
    :func:`as_float64` reads them.
    """
    files = resolve_paths(path)
    kinds = {file_kind(f) for f in files}
    source = files[0] if len(files) == 1 else f"{path} ({len(files)} files)"
    # glob=False: the list is already resolved, so a "[" or "*" in a file name is taken literally.
    if kinds == {"parquet"}:
        read = {f: _parquet_schema(f) for f in files}
        # A part of no rows adds nothing, and a writer types its columns as it likes (Null, from pandas): it is
        # left out, unless every part is empty.
        files = [f for f in files if read[f].rows] or files
        schemas = {f: read[f].columns for f in files}
        common = _common_types(schemas, schema.numerical, {f: read[f].empty for f in files})
        _say_naive_files(
            schemas, {f: read[f].rows for f in files}, {f: read[f].empty for f in files}, schema, source
        )
        _say_valueless(
            schemas, {f: read[f].empty for f in files}, {f: read[f].rows for f in files}, schema, source
        )
        aside, partial = _checked_alike(
            {f: pl.Schema({**s, **{c: common[c] for c in s if c in common}}) for f, s in schemas.items()},
            schema,
            source,
        )
        _say_rescaled_files({f: _scan_parquet(f, read[f]) for f in files}, schemas, schema.numerical, source)
        # A column of the files that bears the file column's name is not the schema's (its working names are
        # refused): the parts' path writes over it, where Polars' own file paths refuse it.
        clash = file_column is not None and any(file_column in s for s in schemas.values())
        if not (clash or common or aside or partial or any(read[f].rezoned or read[f].date64 for f in files)):
            return pl.scan_parquet(files, glob=False, include_file_paths=file_column), source
        parts = [
            _as_common(_scan_parquet(f, read[f]), common, float32_decimal).drop(aside, strict=False)
            for f in files
        ]
        # By name: the files may order their columns apart.
        return pl.concat(_with_file(parts, files, file_column), how="diagonal"), source
    if kinds == {"csv"}:
        read_csv = {f: _scan_csv_named(f, schema) for f in files}
        # A file of no rows adds nothing, and its columns' types are guesses (an epoch column read as text): it is
        # left out, unless every file is empty, as a Parquet part is (dogfood 245: one day's header-only file made
        # a folder unreadable, said as a type mismatch).
        files = [f for f in files if read_csv[f][1]] or files
        scans = {f: read_csv[f][0] for f in files}
        aside, _ = _checked_alike({f: lf.collect_schema() for f, lf in scans.items()}, schema, source)
        _say_rescaled_files(
            scans, {f: lf.collect_schema().names() for f, lf in scans.items()}, schema.numerical, source
        )
        parts = [lf.drop(aside, strict=False) for lf in scans.values()]
        # By name, as Parquet parts.
        return pl.concat(_with_file(parts, files, file_column), how="diagonal"), source
    if kinds == {"csv", "parquet"}:  # each type is read; the two together are not (dogfood 61)
        raise DataValidationError(
            f"{source}: mixes Parquet and CSV files; name one kind (a glob such as *.parquet), or convert the CSV"
        )
    odd = sorted({Path(f).suffix.lower() or Path(f).name for f in files if file_kind(f) is None})
    raise DataValidationError(
        f"{source}: unsupported file type(s) {odd}; use Parquet (.parquet, .pq) or CSV (.csv, .csv.gz)"
    )


def _with_file(parts: list[pl.LazyFrame], files: list[str], column: str | None) -> list[pl.LazyFrame]:
    """:func:`scan_table`'s parts, each with its file's path in ``column`` where one is asked for."""
    return (
        parts if column is None else [p.with_columns(pl.lit(f).alias(column)) for p, f in zip(parts, files)]
    )


@contextmanager
def reading(source: str) -> Iterator[None]:
    """Where a scan's data is collected: an error of the Polars or Arrow readers becomes a DataValidationError
    that names ``source``. :func:`scan_table` checks the files first, so this is what is left: a file that
    changed since, or a Parquet file whose footer is intact but whose data is not."""
    try:
        yield
    except (pl.exceptions.PolarsError, pa.ArrowException, OSError) as e:
        raise DataValidationError(f"{source}: the data cannot be read: {first_line(e)}") from e


def _duplicates(names: list[str]) -> str | None:
    """The names given more than once, for an error (:func:`names_shown`), or None: counted in one pass (a search
    per name took 13.7 s for a header of 40,000 columns: review 156)."""
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    return names_shown(repeated) if repeated else None


class _Footer(NamedTuple):
    """What a Parquet file's footer says: its columns (as Polars reads them, but for the two below), its rows, the
    Arrow schema to read it by where a zone must be read as UTC (:func:`_utc_zoned`), its ``date64`` columns,
    and those it holds no value of (:func:`valueless_columns`)."""

    columns: pl.Schema
    rows: int
    rezoned: pa.Schema | None
    date64: list[str]
    empty: set[str]


def _parquet_schema(file: str) -> _Footer:
    """A file's :class:`_Footer`; a file that is not Parquet, truncated or empty fails by name."""
    try:
        meta = pq.read_metadata(file)
        arrow = meta.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as e:
        raise DataValidationError(
            f"{file}: not a readable Parquet file ({first_line(e)}); is it truncated, empty, or of another "
            "format? Rewrite it, or remove it from the input"
        ) from None
    if dupes := _duplicates(arrow.names):
        raise DataValidationError(
            f"{file}: column(s) {dupes} appear more than once; rename or drop the copies"
        )
    rezoned = _utc_zoned(arrow)
    polars = cast(pl.DataFrame, pl.from_arrow((rezoned or arrow).empty_table())).collect_schema()
    return _Footer(polars, meta.num_rows, rezoned, _date64(meta), valueless_columns(meta))


def valueless_columns(meta: pq.FileMetaData) -> set[str]:
    """The flat columns of a file that hold no value, by its statistics (none where they are not written)."""
    if not meta.num_rows:
        return set()
    nulls: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for i in range(group.num_columns):
            chunk = group.column(i)
            stats = chunk.statistics
            if stats is None or not stats.has_null_count or "." in chunk.path_in_schema:
                nulls[chunk.path_in_schema] = -(1 << 62)  # unknown, or nested: never empty
            else:
                nulls[chunk.path_in_schema] = nulls.get(chunk.path_in_schema, 0) + stats.null_count
    return {c for c, n in nulls.items() if n == meta.num_rows}


def _date64(meta: pq.FileMetaData) -> list[str]:
    """The columns an Arrow writer wrote as ``date64`` (its stored schema says so; the Parquet type is a date): Polars
    reads them as datetimes at midnight, so event times of dates alone got past their refusal and every event of a
    day scored at 00:00 (review 170: 4 of 40 sessions moved band)."""
    stored = (meta.metadata or {}).get(b"ARROW:schema")
    if not stored:
        return []
    # A writer's own schema note that does not read: Polars reads past it too.
    try:
        written = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
    except (pa.ArrowException, ValueError):
        return []
    return [f.name for f in written if pa.types.is_date64(f.type)]


def _scan_parquet(file: str, footer: _Footer) -> pl.LazyFrame:
    """One file, read by its :func:`_utc_zoned` schema where it has one, and its ``date64`` columns as dates."""
    lf = (
        pl.scan_pyarrow_dataset(pa_ds.dataset(file, schema=footer.rezoned, format="parquet"))
        if footer.rezoned is not None
        else pl.scan_parquet(file, glob=False)
    )
    return lf.with_columns(pl.col(footer.date64).cast(pl.Date)) if footer.date64 else lf


@functools.cache
def _known_zones() -> set[str]:
    """The zone names Python knows (13 ms to list: only where a file names a zone other than UTC)."""
    return zoneinfo.available_timezones()


def _utc_type(t: pa.DataType) -> pa.DataType:
    """``t`` with every timestamp zone but UTC and the named ones as UTC, in structs, lists and maps too (review
    172: a struct's panicked as a column's had)."""
    if pa.types.is_timestamp(t):
        return pa.timestamp(t.unit, "UTC") if t.tz and t.tz != "UTC" and t.tz not in _known_zones() else t
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_utc_type(t.field(i).type)) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return pa.map_(
            t.key_field.with_type(_utc_type(t.key_type)), t.item_field.with_type(_utc_type(t.item_type))
        )
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        value = t.value_field.with_type(_utc_type(t.value_type))
        if pa.types.is_fixed_size_list(t):
            return pa.list_(value, t.list_size)
        return pa.large_list(value) if pa.types.is_large_list(t) else pa.list_(value)
    return t


def _utc_zoned(arrow: pa.Schema) -> pa.Schema | None:
    """``arrow`` with every timestamp zone but UTC and the named ones as UTC (:func:`_utc_type`), or None where it
    holds no other: Arrow keeps instants in UTC whatever the zone, which only says how to show them, and Polars
    panicked at the read of a fixed offset of half an hour (``+05:30``, as pandas writes a ``datetime.timezone``)
    or a name it does not know (review 170)."""
    fields = [f.with_type(_utc_type(f.type)) for f in arrow]
    if all(f.type == g.type for f, g in zip(fields, arrow)):
        return None
    return pa.schema(fields, metadata=arrow.metadata)


def _common_types(
    schemas: dict[str, pl.Schema], numerical: Sequence[str], empty: Mapping[str, set[str]]
) -> dict[str, pl.DataType]:
    """Columns that files type differently but that read alike as one type, and that type: datetimes (two
    writers' zones or units) in microseconds, in UTC where any file has a zone (a naive time means UTC), as
    strings with mixed offsets read; integers of any width but UInt64 as Int64, and, for the ``numerical``
    columns (read as floats anyway), numbers of any type as Float64; text as categories or strings as strings
    (dogfood 173); and a column that some files type Null or hold no value of (``empty``, per file: every value
    missing, a day before a new sensor's first value, which pandas writes as floats) as the others type it, or
    as Null where none holds a value. A partitioned log's days written by different jobs were refused for an
    Int32 beside an Int64 (dogfood 71)."""
    common: dict[str, pl.DataType] = {}
    for c in {c for s in schemas.values() for c in s}:
        if len({s[c] for s in schemas.values() if c in s}) == 1:
            continue
        typed = {pl.Null() if c in empty[f] else s[c] for f, s in schemas.items() if c in s}
        types = typed - {pl.Null()}
        if not types:  # no value in any file, stored apart (review 174: the one scan then met both types)
            common[c] = pl.Null()
        elif len(types) == 1:
            common[c] = types.pop()
        elif all(isinstance(t, pl.Datetime) for t in types):
            zoned = any(cast(pl.Datetime, t).time_zone is not None for t in types)
            common[c] = pl.Datetime("us", "UTC" if zoned else None)
        elif all(t.is_integer() for t in types) and pl.UInt64() not in types:
            common[c] = pl.Int64()
        elif c in numerical and all(t.is_numeric() for t in types):
            common[c] = pl.Float64()
        elif all(t in (pl.String, pl.Categorical) or isinstance(t, pl.Enum) for t in types):
            common[c] = pl.String()  # pandas writes a category column as text where a day's categories differ
    return common


# Below this, a float32 that is an integer prints as that integer; above it, as fewer digits (123456792 as 1.2345679e8,
# which a CSV holds: review 262).
FLOAT32_EXACT = float(2**24)


def as_float64(column: str, dtype: pl.DataType, float32_decimal: bool) -> pl.Expr:
    """A number as Float64; with ``float32_decimal``, a float32 as the shortest decimal it prints (0.3, not
    0.30000001192092896; 123456790 for 123456792), and a double that a float32 holds exactly and that is no integer
    (widened upstream: pandas' ``astype(float)``, a client's ``float(np.float32(x))``) so too: what a CSV, JSON or
    request of the same value holds, so that every spelling of it reads alike. Edges fitted on widened float32
    values split a file's decimals from training's: a fee at an inner edge read into the next bucket from a CSV
    export, and scores moved up to 0.154 (dogfood 255); fitted on the decimals, a client that sent the widened
    values moved them up to 0.26 (review 260). A double that is an integer reads as it is, a count as much as a
    widened float32 (whose integers past :data:`FLOAT32_EXACT` then read apart from their CSV's). Specs fitted
    before read numbers as sent (:attr:`~seqfraud.features.spec.Spec.float32_decimal`);
    :func:`~seqfraud.scoring.prepare.float32_decimal` is the rule for one double, in Python."""
    x = pl.col(column).cast(pl.Float64)
    if not (float32_decimal and dtype.is_float()):
        return x
    narrow = x.cast(pl.Float32)
    held = (
        (x != x.round()) | (x.abs() >= FLOAT32_EXACT)  # a float32's integers below it print as themselves
        if dtype == pl.Float32
        else (narrow.cast(pl.Float64) == x) & (x != x.round())
    )
    return pl.when(held).then(narrow.cast(pl.String).cast(pl.Float64)).otherwise(x)


def _as_common(lf: pl.LazyFrame, common: dict[str, pl.DataType], float32_decimal: bool) -> pl.LazyFrame:
    """One file's columns as :func:`_common_types` types them (a numeric column's floats as :func:`as_float64`)."""
    have = lf.collect_schema()
    columns = []
    for c, t in common.items():
        if c not in have or have[c] == t:
            continue
        if isinstance(t, pl.Datetime) and isinstance(own := have[c], pl.Datetime):
            value = (
                pl.col(c).dt.replace_time_zone("UTC") if t.time_zone and own.time_zone is None else pl.col(c)
            )
            value = value.dt.convert_time_zone("UTC") if t.time_zone else value
            columns.append(value.dt.cast_time_unit("us"))
        elif t == pl.Float64:
            columns.append(as_float64(c, have[c], float32_decimal))
        else:
            columns.append(pl.col(c).cast(t))
    return lf.with_columns(columns)


def _say_naive_files(
    schemas: dict[str, pl.Schema],
    rows: dict[str, int],
    empty: Mapping[str, set[str]],
    schema: Schema,
    source: str,
) -> None:
    """Warn of files whose timestamps (or label times) are datetimes without a zone beside files whose carry
    one: read as UTC, as naive strings among zoned ones are, and said as those are (a pandas day written after
    ``tz_localize(None)`` read 5h30 off, unsaid: dogfood 173)."""
    times = [(schema.timestamp, EVENT_MOVES)] + (
        [(schema.label_time, LABEL_MOVES)] if schema.label_time else []
    )
    for column, moves in times:
        zones = {
            f: t.time_zone
            for f, s in schemas.items()
            if isinstance(t := s.get(column), pl.Datetime) and column not in empty[f]  # review 176
        }
        naive = [f for f, zone in zones.items() if zone is None]
        if naive and len(naive) < len(zones):
            n, given = sum(rows[f] for f in naive), sum(rows[f] for f in zones)
            log.warning("%s", naive_said(source, column, n, given, f" (first: in {naive[0]})", moves))


def _say_valueless(
    schemas: dict[str, pl.Schema],
    empty: Mapping[str, set[str]],
    rows: Mapping[str, int],
    schema: Schema,
    source: str,
) -> None:
    """Warn of an event field that some files of :data:`VALUELESS_ROWS` rows or more hold no value of, as
    :func:`_checked_alike` does of one absent from some (dogfood 201: a month whose prescriber was null in every
    row lost it from 36% of the training events, unsaid, where the same month without the column was said). A
    smaller file may hold none of a sparse field by chance (review 205: 1% of the events, a day of 40 rows)."""
    for c in (*schema.categorical, *schema.numerical, *schema.entities):
        held = [f for f, s in schemas.items() if c in s]
        none = [f for f in held if c in empty[f] and rows[f] >= VALUELESS_ROWS]
        if none and len(none) < len(held):
            log.warning(
                "%s: column %r holds no value in %s of %s files (the first: %s): its events there read as missing "
                "a value",
                source,
                c,
                f"{len(none):,}",
                f"{len(held):,}",
                none[0],
            )


VALUELESS_ROWS = 1_000  # a file's rows, at least, for _say_valueless

# A file of a folder whose median size of a number (over RESCALED_VALUES values at least) is RESCALED_RATIO times the
# files' usual one (the median of their medians, of 3 files or more), or that fraction of it: one job's day in cents
# among dollars, read as dollars, where the folder's share of such values stayed under the whole-input checks
# (dogfood 231: a day of 5 charges in cents, 100 times the usual median where the others were 6 times it at most, a
# legitimate upgrade from 0.03 approve to 0.79 review, unsaid). Not 50: a day of annual plans at 50 times the monthly
# add-ons' price was said (review 233).
RESCALED_RATIO, RESCALED_VALUES = 80.0, 5


def _say_rescaled_files(
    scans: Mapping[str, pl.LazyFrame],
    columns: Mapping[str, Iterable[str]],
    numerical: Sequence[str],
    source: str,
) -> None:
    """Warn of files whose values of a numeric column are of another magnitude than the other files' (a unit
    changed by one writer), naming the first of them; one query over the numeric columns of every file
    (``columns``: each file's)."""
    held = [c for c in numerical if any(c in named for named in columns.values())]
    if len(scans) < 3 or not held:
        return
    size = {c: pl.col(c).abs() for c in held}
    parts = [
        lf.select(
            pl.col(c).cast(pl.Float64, strict=False) if c in named else pl.lit(None, pl.Float64).alias(c)
            for c in held
        )
        for lf, named in zip(scans.values(), (set(n) for n in columns.values()))
    ]
    with reading(source):
        read = (
            pl.concat(_with_file(parts, list(scans), S.FILE))
            .group_by(S.FILE)
            .agg(
                *(
                    pl.struct(
                        x.filter(x.is_finite() & (x > 0)).median().alias("m"),
                        x.filter(x.is_finite() & (x > 0)).len().alias("n"),
                    ).alias(c)
                    for c, x in size.items()
                )
            )
            .sort(S.FILE)
            .collect()
        )
    for c in held:
        of = {
            file: (got["m"], got["n"])
            for file, got in zip(read[S.FILE], read[c])
            if got["n"] >= RESCALED_VALUES
        }
        if len(of) < 3:
            continue
        usual = statistics.median(m for m, _ in of.values())
        odd = [f for f, (m, _) in of.items() if max(m / usual, usual / m) >= RESCALED_RATIO]
        if odd and 2 * len(odd) < len(of):
            log.warning(
                "%s: column %r: the values of %s of the %s files holding %s of them or more are of another size "
                "than the others' (the first: %s, median %g against %g): another unit written by one job (cents for "
                "dollars, Wh for kWh)? They read as the others' unit",
                source,
                c,
                f"{len(odd):,}",
                f"{len(of):,}",
                RESCALED_VALUES,
                odd[0],
                of[odd[0]][0],
                usual,
            )


def _checked_alike(schemas: dict[str, pl.Schema], schema: Schema, source: str) -> tuple[list[str], bool]:
    """Files read as one table must have the columns that ``schema`` names, of the same types (their order may
    differ); the columns it does not name that they do not all hold alike, to set aside, as one file's are
    (one day's file that gained an app version made the whole folder unreadable: dogfood 171), and whether an
    event field (a categorical, numerical or entity column) is absent from some: read as missing there, and
    said (a field the log gained later could not be read: dogfood 173). The first column that differs is named
    with each of its types' files, how many and the first: of a folder of 60 days, naming two files did not say
    whether one day or half of them was written otherwise (dogfood 71)."""
    aside, fields, partial = [], {*schema.categorical, *schema.numerical, *schema.entities}, False
    for c in dict.fromkeys(c for s in schemas.values() for c in s):
        files: dict[str, list[str]] = {}
        for file, s in schemas.items():
            files.setdefault(str(s.get(c) or "absent"), []).append(file)
        if len(files) > 1 and c not in schema.named:
            aside.append(c)
        elif len(files) == 2 and c in fields and "absent" in files:
            partial, absent = True, files["absent"]
            # A column renamed in one file reads as absent there: its name, where close (dogfood 203: 4,105
            # events of a week trained without a price named 'price').
            others = [o for o in schemas[absent[0]] if o not in schema.named]
            log.warning(
                "%s: column %r is absent from %s of %s files (the first: %s%s): its events there read as missing a "
                "value",
                source,
                c,
                f"{len(absent):,}",
                f"{len(schemas):,}",
                absent[0],
                did_you_mean(c, others),
            )
        elif len(files) > 1:
            said = ", ".join(f"{t} in {len(fs):,} file(s) (the first: {fs[0]})" for t, fs in files.items())
            # Epochs of one file as floats: a spreadsheet's 1.77837E+12, whose file alone is refused for it (dogfood
            # 245: the folder named the types alone).
            floats = c in (schema.timestamp, schema.label_time) and "Float64" in files
            raise DataValidationError(
                f"{source}: the files disagree on column {c!r}: {said}; every file must have the columns "
                "the schema names, of the same types (an event field may be absent from some)"
                + (
                    "; a time column of floats holds epochs written as decimals (a spreadsheet's 1.77837E+12), "
                    "which lose precision and hide their unit: write them as integers"
                    if floats
                    else ""
                )
            )
    return aside, partial


# Compressed bytes under a plain .csv name: Polars decompressed them whole, unsaid (a 204 KB gzip file took 5.7 GB
# of memory: dogfood 137).
_COMPRESSED_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd"}


def _csv_header(file: str) -> list[str]:
    if not file.lower().endswith(".gz"):
        with open(file, "rb") as raw:
            start = raw.read(4)
        if kind := next((k for magic, k in _COMPRESSED_MAGIC.items() if start.startswith(magic)), None):
            raise DataValidationError(
                f"{file}: {kind}-compressed, but named as plain CSV: name a gzip file .csv.gz (zstd is not read)"
            )
    # A header field past the csv module's limit (128 KiB) was a traceback (dogfood 137).
    try:
        with _open_csv(file) as f:
            header = next(csv.reader(f), None)
    except csv.Error as e:
        # A quote in it never closed reads the whole file as its field (review 267).
        raise DataValidationError(
            _stray_quotes(file, []) or f"{file}: the header row does not read as CSV: {e}"
        ) from None
    if not header:
        raise DataValidationError(f"{file}: the file is empty; a CSV event log starts with a header row")
    if dupes := _duplicates(header):
        raise DataValidationError(
            f"{file}: column(s) {dupes} appear more than once in the header, so which one is meant is unknown; "
            "rename or drop the copies"
        )
    return header


def _check_short_rows(file: str, header: Sequence[str]) -> None:
    """Rows of fewer fields than the header would read with nulls in the fields they lack: a file cut off
    mid-line (a copy that stopped, a full disk), a stray line break inside an unquoted value. Arrow's reader counts
    every row's fields (converting one column), which Polars does not; rows of more fields, and files Arrow cannot
    read, are left to the Polars read that follows, which names them."""
    short: list[str] = []
    width = len(header)

    def seen(row: Any) -> str:
        if row.actual_columns < row.expected_columns:
            short.append(row.text)
        return "skip"

    # Through our opener: Arrow's own gzip detection takes a lowercase .gz alone (review 66).
    with _open_csv(file, binary=True) as f:
        try:
            for _ in pa_csv.open_csv(
                f,
                read_options=pa_csv.ReadOptions(skip_rows=1, column_names=[f"f{i}" for i in range(width)]),
                parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=seen),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=["f0"], column_types={"f0": pa.string()}
                ),
            ):
                pass
        except (pa.ArrowException, OSError):
            return
    if short:
        # A quote never closed holds the rest of the file as one field (review 265: said as a field too large).
        if said := _stray_quotes(file, header):
            raise DataValidationError(said)
        _, row = _csv_rows_where(file, lambda fields, width: 0 < len(fields) < width)
        raise DataValidationError(
            f"{file}: {len(short):,} row(s) have fewer fields than the header's {width} (first: data row {row:,}, "
            f"{short[0][:80]!r}), so the fields they lack would read as empty; was the file cut off, or does a value "
            "hold an unquoted line break? Write it again with every row's fields (empty ones as separators: a,,c)"
        )


def _csv_rows_where(file: str, bad: Callable[[list[str], int], bool]) -> tuple[int, int]:
    """The CSV data rows where ``bad(fields, header width)`` holds, read by Python's reader (on an error's path
    only): how many, and the first one's number (1-based, 0 for none)."""
    with _open_csv(file) as f:
        rows = csv.reader(f)
        try:
            width = len(next(rows))
            found = [i for i, fields in enumerate(rows, 1) if bad(fields, width)]
        except csv.Error as e:  # a field past the csv module's limit (128 KiB) was a traceback (review 156)
            raise DataValidationError(f"{file}: line {rows.line_num:,} does not read as CSV: {e}") from None
    return len(found), found[0] if found else 0


def _scan_csv_named(file: str, schema: Schema) -> tuple[pl.LazyFrame, int]:
    """:func:`_scan_csv`, where a ``.gz`` file that is not gzip, or cut off, or damaged fails by name, not with
    zlib's or gzip's traceback (review 66)."""
    try:
        return _scan_csv(file, schema)
    except (OSError, EOFError, zlib.error) as e:
        if not file.lower().endswith(".gz"):
            raise
        raise DataValidationError(
            f"{file}: not a readable gzip file ({first_line(e)}): is it cut off (a copy that stopped), or not "
            "gzip at all? Compress it again, or give the CSV as it is"
        ) from None


def _scan_csv(file: str, schema: Schema) -> tuple[pl.LazyFrame, int]:
    """One CSV file with ``schema``'s types (see :func:`scan_table`), parsed once in full to check it, and its
    rows (blank lines left out).

    A time column (the timestamp, a label time) that the inference read as text may hold integer epochs: a label
    time is often empty for its first rows (negatives seldom have one), and one date-time string among the epochs
    makes the whole column text. The same pass counts its integers: all of them, and it is read as integers;
    some, and the column mixes the two, which is refused with both counts and the first odd value (where each
    integer would otherwise count as a timestamp that does not parse).
    """
    header = _csv_header(file)
    _check_short_rows(file, header)
    types: dict[str, type[pl.DataType]] = {c: pl.String for c in header}
    types |= {c: pl.Float64 for c in schema.numerical}
    for c in (schema.timestamp, schema.label, schema.label_time):
        if c is not None:
            types.pop(c, None)  # inferred
    lf = pl.scan_csv(file, schema_overrides=types, infer_schema_length=CSV_INFER_ROWS, glob=False)
    have = lf.collect_schema()
    texts = [c for c in (schema.timestamp, schema.label_time) if c is not None and have.get(c) == pl.String]
    integers = [
        pl.col(c).cast(pl.Int64, strict=False).is_not_null().sum().alias(f"{S.ROW_INDEX}{c}") for c in texts
    ]
    # A value that holds a line break, in any column (review 268: one the schema does not read too): a quote opened
    # in one row and closed rows later read the rows between as one value, and their events were lost unsaid
    # (dogfood 266: 10 rows of a month).
    broken = [c for c, t in have.items() if t == pl.String]
    breaks = [
        pl.col(c).str.contains("\n", literal=True).sum().alias(f"{S.ROW_INDEX}breaks {c}") for c in broken
    ]
    # A blank line (an export's trailing newlines) reads as a row of nulls; it is no event, so it is left out.
    blank, n_blank = pl.all_horizontal(pl.all().is_null()), f"{S.ROW_INDEX} blank"
    try:
        # All columns: Polars notices a row with more fields than the header only when it reads them all. In a
        # struct, so that no column of the file shares a name with the counts (a __row column did: dogfood 166).
        counts = lf.select(
            pl.struct(pl.all().null_count()).alias(S.ROW_INDEX + " nulls"),
            *integers,
            *breaks,
            pl.len().alias(S.ROW_INDEX),
            blank.sum().alias(n_blank),
        ).collect(engine="streaming")
    except (pl.exceptions.PolarsError, OSError) as e:
        raise DataValidationError(_csv_fault(file, have) or f"{file}: {first_line(e)}") from None
    for c in broken:
        if n := int(counts[f"{S.ROW_INDEX}breaks {c}"][0]):
            _, example, row = _text_rows(file, c, pl.col(c).str.contains("\n", literal=True))
            log.warning(
                "%s: column %r: %d value(s) hold a line break (first: data row %s, %r): where a quote opened in "
                "one row closes rows later, the rows between read as one value and their events are lost; fix the "
                "quotes, or ignore this where the values hold line breaks",
                file,
                c,
                n,
                f"{row + 1:,}",
                example[:80],
            )
    if blanks := int(counts[n_blank][0]):
        log.warning("%s: %d blank line(s) (every field empty) left out", file, blanks)
        lf = lf.filter(~blank)
    epochs = []
    for c in texts:
        n_int = int(counts[f"{S.ROW_INDEX}{c}"][0])
        n_text = int(counts[S.ROW_INDEX][0]) - int(counts[S.ROW_INDEX + " nulls"].struct.field(c)[0]) - n_int
        if n_int and n_text:
            raise DataValidationError(_mixed_epochs(file, c, n_int, n_text))
        if n_int:
            epochs.append(c)
    rows = int(counts[S.ROW_INDEX][0]) - blanks
    # None read, without an error: a quote in the header, or line ends Polars does not split at (review 265).
    if not rows and (said := _csv_fault(file, have)):
        raise DataValidationError(said)
    if rows and (last := _unended(file)) is not None:
        log.warning(
            "%s: its last line ends without a line break (%r): a copy cut short ends so, mid-row (a value "
            "shortened, or the last fields empty), where most exports end their last row with one; check that the "
            "file is whole",
            file,
            last[-80:],
        )
    if not epochs:
        return lf, rows
    types |= {c: pl.Int64 for c in epochs}
    epoch_lf = pl.scan_csv(file, schema_overrides=types, infer_schema_length=CSV_INFER_ROWS, glob=False)
    return epoch_lf.filter(~blank) if blanks else epoch_lf, rows


def _mixed_epochs(file: str, column: str, n_int: int, n_text: int) -> str:
    """A time column of integer epochs and text, with the first value of the fewer kind and its data row."""
    value = pl.col(column)
    integer = value.cast(pl.Int64, strict=False).is_not_null()
    odd, kind = (value.is_not_null() & ~integer, "text") if n_text <= n_int else (integer, "integer")
    _, example, row = _text_rows(file, column, odd)
    return (
        f"{file}: column {column!r}: {n_int:,} row(s) hold integer epochs and {n_text:,} row(s) text (first "
        f"{kind}: {example!r}, data row {row + 1:,}); a time column holds one or the other: make it consistent"
    )


def numbered(lf: pl.LazyFrame) -> pl.LazyFrame:
    """The rows numbered in ``__row``: a file's own column of that name, which no role may name (Schema), is set
    aside, as any other column the schema does not read (it failed the read as a duplicate: dogfood 166)."""
    return lf.drop(S.ROW_INDEX, strict=False).with_row_index(S.ROW_INDEX)


def _text_rows(file: str, column: str, where: pl.Expr) -> tuple[int, Any, int]:
    """The data rows of a CSV file, read as text, where ``where`` holds: how many, and the first one's ``column``
    value and 0-based data row (a message's example)."""
    raw = numbered(pl.scan_csv(file, infer_schema=False, truncate_ragged_lines=True, glob=False))
    found = raw.filter(where).select(pl.len(), pl.col(column).first(), pl.col(S.ROW_INDEX).first())
    return found.collect().row(0)


def _stray_quotes(file: str, names: Sequence[str]) -> str | None:
    """The CSV records, the header too, with a double quote that neither opens nor closes its field (``we"b``,
    ``"desk"top``), counted, with the first's column, value and row; or an opening quote never closed. Polars
    refuses the whole file, or reads a quote in the header as the start of one field that holds the rest of it (an
    empty log), and its error named no row (dogfood 263: a traceback). A field that opens with a quote may hold
    quotes doubled and line breaks, as RFC 4180 has it."""
    bad, first, record, quoted, opened = 0, "", -1, False, ""

    def where(field: int, value: str) -> str:
        if not record:
            return f"the header's field {field + 1}, {value!r}"
        column = names[field] if field < len(names) else f"field {field + 1}"
        return f"column {column!r}, {value!r}, data row {record:,}"

    with _open_csv(file) as f:
        for line in f:
            if not quoted:  # a record begins: a quoted field's line break continues one (review 267)
                record, field, stray = record + 1, 0, ""
                if '"' not in line:
                    continue
            at, text = 0, line.rstrip("\r\n")
            while at <= len(text):
                start = at
                if quoted or text.startswith('"', at):  # a quoted field, or its rest on this line
                    if not quoted:
                        opened, at = where(field, text[at : at + 20]), at + 1
                    while (close := text.find('"', at)) >= 0 and text.startswith('""', close):
                        at = close + 2
                    quoted = close < 0
                    if quoted:
                        break  # its line break is in the field
                    at = close + 1
                end = text.find(",", at)
                end = len(text) if end < 0 else end
                # A quote in a field that none opens, or text after the quote that closes one.
                if (rest := text[at:end]) and (at > start or '"' in rest) and not stray:
                    stray = where(field, text[start:end])
                field, at = field + 1, end + 1
            if stray and not quoted:  # at the record's end
                bad += 1
                first = first or stray
    if quoted:
        return (
            f"{file}: the quote that opens a field ({opened}...) is never closed: the rest of the file reads as "
            "that one field; close it, or double a quote meant inside the field"
        )
    if not bad:
        return None
    return (
        f"{file}: {bad:,} row(s) hold a double quote that neither opens nor closes its field (first: {first}); "
        'quote such a field whole and double the quotes in it (we"b as "we""b"), or remove the stray quote'
    )


def _csv_fault(file: str, have: pl.Schema) -> str | None:
    """What made a CSV file fail to parse, or read no row, counted: bytes that are not UTF-8, line ends, stray
    quotes, values that do not fit a typed column, or ragged rows; None where none of them did (or where reading it
    again as text fails too)."""
    # Another separator first: its rows read as one field each, and their quotes as strays (review 265).
    if found := (
        _not_utf8(file)
        or _carriage_returns(file)
        or (None if separator_said(have) else _stray_quotes(file, list(have)))
    ):
        return found
    try:
        return _typed_fault(file, have) or _ragged_fault(file, have)
    except pl.exceptions.PolarsError:
        return None


def _typed_fault(file: str, have: pl.Schema) -> str | None:
    """A typed column's values that do not fit its type, counted, with the first."""
    for c, dtype in have.items():
        if dtype == pl.String:
            continue
        value = pl.col(c)
        fits = (
            value.str.to_lowercase().is_in(["true", "false"])
            if dtype == pl.Boolean
            else value.cast(dtype, strict=False).is_not_null()
        )
        n, example, row = _text_rows(file, c, value.is_not_null() & ~fits)
        if n:
            fix = (
                "fix them, or leave them empty where the value is missing"
                if dtype == pl.Float64
                else f"its type, {dtype}, is what its first {CSV_INFER_ROWS:,} rows hold: make the column consistent"
            )
            if example == c:  # the column's own name as a value: files concatenated with their headers
                fix = "that row repeats the header (files concatenated with their header rows?): remove it"
            return (
                f"{file}: column {c!r}: {n:,} row(s) hold a value that is not {_CSV_KINDS.get(dtype, dtype)} "
                f"(first: {example!r}, data row {row + 1:,}); {fix}"
            )
    return None


def _ragged_fault(file: str, have: pl.Schema) -> str | None:
    """Rows with more fields than the header, counted, with the first."""
    ragged, first = _csv_rows_where(file, lambda fields, width: len(fields) > width)
    if ragged:
        # A ';' export with decimal commas splits its rows at the commas: the header's separator is the cause
        # (dogfood 200: told to quote values).
        fix = separator_said(have) or " Quote values that hold the separator."
        return (
            f"{file}: {ragged:,} row(s) have more fields than the header's {len(have)} (first: data "
            f"row {first:,}).{fix}"
        )
    return None


def _unended(file: str) -> str | None:
    """The last line of a plain CSV file that does not end in a line break, or None: a copy cut short ends so,
    and its rows read whole where the cut fell at a separator or inside the last field (dogfood 270: 599 of a
    month's 1,500 sessions scored away unsaid, or a last truck id 1356 read as 13). A gzipped file cut short does
    not unpack (:func:`_scan_csv_named`)."""
    if file.lower().endswith(".gz"):
        return None
    with open(file, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
        tail = f.read()
    if not tail or tail.endswith(b"\n"):
        return None
    return tail.rsplit(b"\n", 1)[-1].decode("utf-8", "replace")


def _carriage_returns(file: str) -> str | None:
    """A file whose lines end in a carriage return alone (an old Mac export): Polars reads it as its header alone, an
    empty log (review 265)."""
    with _open_csv(file, binary=True) as f:
        head = f.read(1 << 16)
    if b"\r" not in head or b"\n" in head:
        return None
    return (
        f"{file}: its lines end in a carriage return alone (an old Mac export), so it reads as one line: write it "
        "with \\n or \\r\\n line ends"
    )


def _not_utf8(file: str) -> str | None:
    """The lines of a file that are not UTF-8 (a spreadsheet's Windows-1252 export), counted, with the first."""
    bad, first = 0, ""
    with _open_csv(file, binary=True) as f:
        for i, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as e:
                bad += 1
                first = first or f"line {i:,}, byte {line[e.start : e.start + 1]!r}"
    if not bad:
        return None
    return (
        f"{file}: {bad:,} line(s) are not UTF-8 text (first: {first}); CSV files are read as UTF-8: re-encode "
        "it, e.g. iconv -f cp1252 -t utf-8"
    )


class BadRows:
    """A file's bad rows of several kinds, refused in one error once every check has counted: a run said the
    null session ids, and the blank ones only on the next (dogfood 159)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.found: list[str] = []

    def add(self, column: str, n_rows: int, what: str, first: str = "") -> None:
        """``first`` is :func:`first_bad`'s example, where the caller has the rows."""
        self.found.append(f"column {column!r}: {n_rows:,} row(s) {what}{first}")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None and self.found:
            raise DataValidationError(f"{self.source}: " + "; ".join(self.found))


def fail_rows(source: str, column: str, n_rows: int, what: str, first: str = "") -> None:
    """The one wording of a bad-rows error, shared by training and scoring validation (:class:`BadRows`)."""
    with BadRows(source) as bad:
        bad.add(column, n_rows, what, first)


def refuse_early_label_times(early: pl.DataFrame, source: str, column: str, n_rows: int) -> None:
    """Sessions (``S.SESSION_ID``, ``S.LABEL_TIME_US``, ``S.START_TIME``) labelled before their first event, in
    ``n_rows`` rows of ``source``: a chargeback before its session, refused in training and in a monitored window
    alike (dogfood 192: the monitor counted 14 such frauds)."""
    sid, label_us, start_us = (
        early.sort(S.SESSION_ID).select(S.SESSION_ID, S.LABEL_TIME_US, S.START_TIME).row(0)
    )
    fail_rows(
        source,
        column,
        n_rows,
        f"have a label time before the first event of their session ({early.height:,} session(s); first: "
        f"session {sid!r}, label time {from_epoch_us(label_us)}, first event {from_epoch_us(start_us)})",
    )


# Rows of normalized events (or labels) that validation counts and refuses, by the flags :func:`normalize` sets.
TS_UNPARSED_ROWS = pl.col(S.TS_US).is_null() & pl.col(S.TS_PRESENT) & ~pl.col(S.TS_OUT_OF_RANGE)
LABEL_TIME_UNPARSED_ROWS = (
    pl.col(S.LABEL_TIME_US).is_null() & pl.col(S.LABEL_TIME_PRESENT) & ~pl.col(S.LABEL_TIME_OUT_OF_RANGE)
)
LABEL_NOT_01_ROWS = pl.col(S.LABEL).is_not_null() & ~pl.col(S.LABEL).is_in([0.0, 1.0])


def first_bad(
    rows: pl.LazyFrame | pl.DataFrame,
    where: pl.Expr,
    raw: pl.LazyFrame,
    column: str,
    files: tuple[list[str], Schema] | None = None,
) -> str:
    """The example of a bad-rows message: the value of ``column`` as the file holds it, its session, and with
    ``files`` (those ``raw`` scanned, and the schema it read them with) the one of several it is in, at the first
    row of ``rows`` (normalized from ``raw``, numbered by ``__row``) where ``where`` holds. The counts come from
    per-session tables, which keep no values; this reads the rows again, on the error's path alone."""
    hit = rows.lazy().filter(where).select(S.ROW_INDEX, S.SESSION_ID).head(1).collect()
    if hit.is_empty():
        return ""
    row, session = hit.row(0)
    text = _beyond_python(raw, row, column)
    if text is None and (value := raw.slice(row, 1).select(column).collect().item()) is not None:
        text = repr(value) if isinstance(value, str) else str(value)
    said = [f"first: {text if len(text) <= 80 else text[:80] + '...'}"] if text is not None else []
    said += [f"session {session!r}"] if session is not None else []
    if files is not None and (file := file_of_row(*files, row)):
        said.append(f"in {file}")  # a folder's message named the folder alone (dogfoods 27, 29)
    return f" ({', '.join(said)})" if said else ""


_PYTHON_YEARS_US = (-62_135_596_800_000_000, 253_402_300_799_999_999)  # 0001-01-01 to 9999-12-31, UTC
_PER_US = {"ns": 1e-3, "us": 1, "ms": 1e3}


def _beyond_python(raw: pl.LazyFrame, row: int, column: str) -> str | None:
    """A datetime of ``column`` at ``row`` past Python's years (1 to 9999), as stored, or None: Polars panicked
    when converting one, where the out-of-range error was to name it (review 170: a Parquet time of 2**62 ms)."""
    dtype = raw.collect_schema()[column]
    if not isinstance(dtype, pl.Datetime):
        return None
    stored = raw.slice(row, 1).select(pl.col(column).cast(pl.Int64)).collect().item()
    if stored is None or _PYTHON_YEARS_US[0] <= stored * _PER_US[dtype.time_unit] <= _PYTHON_YEARS_US[1]:
        return None
    return f"{stored} {dtype.time_unit} from 1970-01-01"


def file_of_row(files: list[str], schema: Schema, row: int) -> str | None:
    """Which of several scanned files (in scan order) holds the scan's ``row``-th row; its rows are counted here,
    on an error's path: a Parquet footer, or the CSV read as :func:`scan_table` reads it."""
    if len(files) < 2:
        return None
    for f in files:
        if file_kind(f) == "parquet":
            n = pq.read_metadata(f).num_rows
        else:
            n = _scan_csv(f, schema)[1]
        if row < n:
            return f
        row -= n
    return None


def out_of_range_text(
    schema: Schema, epoch_unit: str | None, unit_origin: str, value: str = "timestamp"
) -> str:
    """What rows outside ``data.schema.timestamp_range`` have, for :func:`fail_rows`. ``epoch_unit`` is the unit
    integer epochs were read in (None for datetimes and strings) and ``unit_origin`` where it came from: epochs
    in another unit are the usual cause. ``value`` names what is out of range (a timestamp, a label time)."""
    start, end = schema.timestamp_range
    what = f"have a {value} outside the plausible range {start} to {end} (data.schema.timestamp_range)"
    if value == "label time":  # 2099-12-31 read as outside a range to 2100-01-01, unexplained (dogfood 126)
        what += "; a date alone counts from the end of its day, the next midnight UTC"
    if epoch_unit in _UNIT_NAMES:
        what += (
            f"; integer epochs are read as {_UNIT_NAMES[epoch_unit]} ({unit_origin}), so epochs in another "
            "unit, a column that mixes units, or epochs beyond int64 fall outside it. Times counted from a "
            "reference of your own, not epochs, read as 1970: README.md ('Your own data') says how to set "
            "their unit and range"
        )
    return what


MAX_NAMES_SHOWN = 100  # column names an error lists


def names_shown(names: list[str]) -> str:
    """Column names for an error: at most :data:`MAX_NAMES_SHOWN`, each cut at 80 characters (a header of one
    200 MiB field was quoted whole: dogfood 137)."""
    shown = [c if len(c) <= 80 else f"{c[:80]}..." for c in names[:MAX_NAMES_SHOWN]]
    more = f" and {len(names) - MAX_NAMES_SHOWN:,} more" if len(names) > MAX_NAMES_SHOWN else ""
    return f"{shown}{more}"


def missing_columns(source: str, missing: list[str], have: pl.Schema) -> str:
    """The error of columns a table lacks: each with the closest present name, and the present ones; where a CSV
    header read as one column holds another separator (a European export's ``;``), which."""
    hint = "; ".join(repr(c) + did_you_mean(c, list(have)) for c in missing)
    return f"{source}: missing column(s) {hint}. Columns present: {names_shown(list(have))}.{separator_said(have)}"


def separator_said(names: Iterable[str]) -> str:
    """Where a CSV header's names hold another separator (a European export's ``;``), which: said in place of the
    advice its rows would get otherwise."""
    names = list(names)  # one column: a header of another separator reads so (review 205: 'note;eur' of many)
    seps = [sep for sep in (";", "\t", "|") if len(names) == 1 and sep in names[0]]
    return (
        f" The header holds {seps[0]!r}: CSV files are read as comma-separated; convert it." if seps else ""
    )


def unit_origin(schema: Schema, epoch_unit: str | None) -> str:
    """Where the unit of integer epochs came from, for :func:`out_of_range_text`."""
    if schema.timestamp_unit != "auto":
        return f"data.schema.timestamp_unit={epoch_unit}"
    return f"data.schema.timestamp_unit=auto chose {epoch_unit!r} from the first values"


def _check_time_type(source: str, column: str, dtype: pl.DataType, *, may_be_empty: bool = False) -> None:
    """A timestamp or label time column must hold datetimes, integer epochs or strings; a label time column
    (``may_be_empty``) may also hold nothing at all (type Null), or dates (a chargeback's day). Event times as
    dates are refused, as date strings are: they hold none of the timing within a session (a notebook's Date
    column scored without a word, and moved scores by up to 0.16: dogfood 40)."""
    if may_be_empty and dtype == pl.Null:
        return
    if dtype == pl.Date and not may_be_empty:
        raise DataValidationError(
            f"{source}: column {column!r} has type Date: dates alone hold none of the timing within a session; "
            "expected datetimes, integer epochs or ISO strings with a time"
        )
    if not (
        (dtype.is_temporal() and dtype not in (pl.Time, pl.Duration))
        or dtype.is_integer()
        or dtype == pl.String
    ):
        fractional = (
            " (fractional epochs lose precision and hide their unit: write integers in the log's unit, such as "
            "whole seconds, with data.schema.timestamp_unit set to it, or milliseconds or microseconds, or "
            "datetimes)"
            if dtype.is_float()
            else ""
        )
        raise DataValidationError(
            f"{source}: column {column!r} has type {dtype}; expected a datetime, integer epoch or ISO "
            f"string{fractional}"
        )


def check_label_time_unit(source: str, schema: Schema, dtype: pl.DataType, unit: str) -> None:
    """Integer label times are read in the events' epoch unit, which events of datetimes or strings lack."""
    if dtype.is_integer() and unit not in _UNIT_NAMES:
        raise DataValidationError(
            f"{source}: column {schema.label_time!r} holds integer epochs, but the events' timestamps are "
            "datetimes or strings, so the unit of those epochs is unknown; set data.schema.timestamp_unit, or "
            "give label times as datetimes or RFC 3339 strings"
        )


def label_time_unit(unit: str) -> str:
    """The unit label times are read in: the events' epoch unit. Without one (events of datetimes or strings)
    :func:`check_label_time_unit` has refused integer label times, so any unit serves what is left: datetimes,
    strings, or a column of nothing but nulls."""
    return unit if unit in _UNIT_NAMES else "us"


TRAINING_NAMES = "Set the names under data.schema."
SCORING_NAMES = (
    "The model reads its training log's columns, named in the artifact's spec: rename this file's columns to "
    "match, or, for a column this log does not have, add it with nulls (a missing value, as in training; a "
    "request to the service may leave such a field out)."
)


def check_columns(
    lf: pl.LazyFrame, schema: Schema, source: str, *, with_label: bool, missing_hint: str = TRAINING_NAMES
) -> pl.Schema:
    """Fail on missing or wrongly typed columns before any data is read.

    With ``with_label`` (labels live on the events) the label column, and ``data.schema.label_time`` when
    set, are required too. ``missing_hint`` says how to fix a missing column: the config when training, the
    file when scoring (:data:`SCORING_NAMES`).
    """
    have = lf.collect_schema()
    label_time = [schema.label_time] if with_label and schema.label_time else []
    wanted = list(schema.event_columns) + ([schema.label] if with_label else []) + label_time
    missing = [c for c in wanted if c not in have]
    if missing:
        raise DataValidationError(f"{missing_columns(source, missing, have)} {missing_hint}")
    _check_time_type(source, schema.timestamp, have[schema.timestamp])
    for c in label_time:
        _check_time_type(source, c, have[c], may_be_empty=True)
    for c in (schema.session_id, *schema.categorical_fields):
        if not (have[c] in _CATEGORICAL_OK or have[c].is_integer() or have[c] == pl.Null):
            raise DataValidationError(wrong_id_type(source, c, have[c]))
    ids = schema.event_id
    if ids is not None and ids in have and not (have[ids] in _ENTITY_OK or have[ids].is_integer()):
        raise DataValidationError(wrong_id_type(source, ids, have[ids], " event ids (data.schema.event_id)"))
    for c in schema.entities:
        if not (have[c] in _ENTITY_OK or have[c].is_integer()):
            raise DataValidationError(wrong_id_type(source, c, have[c], " entity ids (data.schema.entities)"))
    for c in schema.numerical:
        if not (have[c].is_numeric() or have[c] == pl.Null):  # Null: a writer's type for a column of nulls
            raise DataValidationError(f"{source}: column {c!r} has type {have[c]}; expected a numeric type")
    if with_label and not (have[schema.label].is_numeric() or have[schema.label] == pl.Boolean):
        not_labels(lf, schema.label, source)
    return have


def wrong_id_type(source: str, column: str, dtype: pl.DataType, what: str = "") -> str:
    """The error of an id or category column of another type; a float one is most often a writer's (pandas,
    a spreadsheet) reading of integer ids, which compare as ``'123.0'`` and lose digits past 2**53."""
    floats = (
        ": float ids read as '123.0' and lose digits past 2**53; write them as integers or text (pandas writes "
        "integer ids and codes with missing values as floats: its nullable 'Int64' keeps them integers)"
        if dtype.is_float()
        else ""
    )
    return f"{source}: column {column!r} has type {dtype}; expected string or integer{what}{floats}"


_LABEL_WORDS = ("0", "1", "0.0", "1.0", "true", "false")


def _say_labels_named_otherwise(lf: pl.LazyFrame, given: pl.Schema, schema: Schema, source: str) -> None:
    """A table without the label column reads as frauds alone (``on_unlabeled=negative``), every row a fraud; a
    column of it holding 0 and 1 alone may be the labels under another name, whose zeros were read as frauds
    (dogfood 169: 1,115 frauds of 1,427 training sessions, where 101 were). Refused where its name is close to
    the label's as well (a misspelt ``data.schema.label``); said otherwise, as a chargeback file may hold a flag
    of its own (a partial refund: review 172)."""
    candidates = [
        c
        for c, t in given.items()
        if c not in (schema.session_id, schema.label_time)
        and (t.is_numeric() or t in (pl.Boolean, pl.String, pl.Categorical) or isinstance(t, pl.Enum))
    ]
    if not candidates:
        return
    word = {c: pl.col(c).cast(pl.String).str.strip_chars().str.to_lowercase() for c in candidates}
    with reading(source):
        held = lf.select(
            (
                word[c].is_in(_LABEL_WORDS).all()
                & word[c].is_in(["0", "0.0", "false"]).any()
                & word[c].is_in(["1", "1.0", "true"]).any()
            ).alias(c)
            for c in candidates
        ).collect()
    if not (labels := [c for c in candidates if held[c].item()]):
        return
    said = (
        f"{source}: no column {schema.label!r} (data.schema.label), so under data.policy.on_unlabeled=negative "
        f"every row reads as a fraud; but column(s) {labels} hold 0 and 1 alone"
    )
    fix = f"rename it to {schema.label!r} (or, to train, set data.schema.label to its name)"
    if close := did_you_mean(schema.label, labels):
        raise DataValidationError(f"{said}{close}: if it holds the labels, {fix}; if not, rename it")
    log.warning("%s: if one holds the labels, %s; otherwise every row is read as a fraud", said, fix)


MIN_DATED_LABELS = 20  # fewer label times than this at midnight may be midnight's
# A datetime as text at midnight, whatever its offset: 2026-05-08 00:00:00, 2026-05-08T00:00:00.000+02:00.
MIDNIGHT_TEXT = r"^\d{4}-\d{2}-\d{2}[Tt ]00:00:00(?:\.0*)?(?:[Zz]|[+-]\d{2}:?\d{2})?$"


def say_dates_as_datetimes(
    lf: pl.LazyFrame, have: pl.Schema, column: str, source: str, session_id: str | None = None
) -> None:
    """Label times that are datetimes, every one at midnight, are most likely days written as datetimes (pandas
    writes dates so): read as the start of their day, where a date alone counts from its end, they were known a
    day early, unsaid (dogfood 173: 105 labels read as known before the test start), in a label table or on the
    events (review 174), whose every row repeats its session's: counted once a ``session_id`` (review 176). Text
    too, a CSV's ``2026-05-08 00:00:00`` (dogfood 190), where a date alone is no datetime and not counted."""
    col = pl.col(column)
    if isinstance(have[column], pl.Datetime):
        midnight = col.dt.time() == time(0)
    elif have[column] == pl.String:
        midnight = pl.when(~col.str.contains(DATE_ALONE)).then(col.str.contains(MIDNIGHT_TEXT))
    else:
        return
    times = lf.select(session_id, column).unique() if session_id is not None else lf
    with reading(source):
        n, every = times.select(midnight.count().alias("n"), midnight.all().alias("every")).collect().row(0)
    if n >= MIN_DATED_LABELS and every:
        log.warning(
            "%s: column %r: all %s label times with a time of day are at midnight: days written as datetimes? They "
            "are read as the start of their day, where a date alone counts from the day's end (its label is known "
            "once the day is over); write them as dates, or with their time",
            source,
            column,
            f"{n:,}",
        )


def not_labels(lf: pl.LazyFrame, column: str, source: str) -> NoReturn:
    """A label column that is neither numbers nor booleans (``yes``/``no``, say): how many rows and the first
    value, which reading the one column costs."""
    with reading(source):
        values = lf.select(pl.col(column)).collect().to_series()
    bad = values.filter(values.is_not_null() & ~values.cast(pl.String).is_in(["0", "1"]))
    if bad.len():
        raise DataValidationError(
            f"{source}: column {column!r}: {bad.len():,} row(s) hold a label that is not 0/1 (first: {bad[0]!r}); "
            "labels are 0/1 integers or booleans"
        )
    raise DataValidationError(
        f"{source}: column {column!r} has type {values.dtype}; expected 0/1 integers or booleans"
    )


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


@functools.lru_cache(maxsize=32)
def timestamp_range_us(schema: Schema) -> tuple[int, int]:
    """``data.schema.timestamp_range`` as epoch microseconds, [start, end); parsed once per schema, as the
    per-event scorer reads it at every event."""
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
        k = US_PER_UNIT[unit]
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


DATE_ALONE = r"^\d{4}-\d{2}-\d{2}$"


def label_day_end(col: pl.Expr) -> pl.Expr:
    """Label time text that is a date alone (``2026-04-06``, a chargeback's day) as RFC 3339 text of the end of
    that day, the next midnight UTC: the day does not say when in it the label arrived, so no event of that day
    may read it. Other text, an impossible date too, is left to the RFC 3339 rules, which name it."""
    day_end = col.str.to_date("%Y-%m-%d", strict=False).dt.offset_by("1d").dt.strftime("%Y-%m-%dT00:00:00Z")
    return pl.when(col.str.contains(DATE_ALONE)).then(pl.coalesce(day_end, col)).otherwise(col)


def epoch_value(
    column: str, dtype: pl.DataType, unit: str, *, label_time: bool = False
) -> tuple[pl.Expr, str]:
    """The timestamp as an integer epoch in its own unit, and that unit: integer epochs in ``unit``, datetimes in
    theirs (milliseconds of year 300,000 overflow microseconds), RFC 3339 strings in microseconds (null when a
    string is not RFC 3339). A ``label_time`` may also be a date alone, as text or a Date (which
    :func:`_check_time_type` allows label times only): it counts from the end of its day (:func:`label_day_end`)."""
    col = pl.col(column)
    if dtype == pl.String:
        return rfc3339_us(label_day_end(col) if label_time else col), "us"
    if dtype.is_temporal():
        own: _EpochUnit = getattr(dtype, "time_unit", None) or "ms"
        if dtype == pl.Date:
            col = col.dt.offset_by("1d").cast(pl.Datetime("ms"))
        return col.dt.epoch(own), own
    return col, unit


def timestamp_us(raw: pl.Expr, unit: str, range_us: tuple[int, int]) -> tuple[pl.Expr, pl.Expr]:
    """Epoch microseconds (UTC) of an :func:`epoch_value`, and whether it falls outside ``range_us``; the
    microseconds are null where the value did not parse or is out of range.

    The range is checked on the value in its own unit, before any conversion that could overflow.
    """
    first, last = epoch_bounds(unit, range_us)
    in_range = raw.is_between(first, last)
    value = raw.cast(pl.Int64, strict=False).clip(first, last)  # clipped: no product below can overflow
    us = value // 1_000 if unit == "ns" else value * US_PER_UNIT[unit]
    return pl.when(in_range).then(us), in_range.not_().fill_null(False)


# The end of an RFC 3339 string that carries its UTC offset (or Z).
ZONED = r"(?:[Zz]|[+-][0-9]{2}:?[0-9]{2})$"  # a timestamp string's UTC offset


NAIVE_LABEL_TIMES = "naive_label_times"  # the report's key for label times without an offset among others


def naive_times(column: str, *, dated: bool = False) -> pl.Expr:
    """Timestamp strings of ``column`` without a UTC offset, read as UTC; null where there is no string. With
    ``dated`` (a label time) a date alone is null too, neither naive nor zoned: it counts from its day's end in
    UTC, as documented (counted among the zoned, dates beside naive times said "the others carry one": review
    96)."""
    naive = pl.col(column).str.contains(ZONED).not_()
    return pl.when(pl.col(column).str.contains(r"[0-9][T ][0-9]")).then(naive) if dated else naive


def naive_label_times(column: str, dtype: pl.DataType, events_zoned: bool | str) -> pl.Expr | None:
    """A label table's times without a UTC offset (:func:`naive_times`), where its column can hold any: strings, or
    datetimes of no zone beside events whose times carry offsets (``events_zoned`` True), every one naive then
    (review 226: a verdict table that pandas wrote without its zone was read as UTC beside zoned events, unsaid,
    where the same times as text were said). Beside epochs (:data:`ZONED_BY_EPOCHS`) such datetimes are not said:
    instants as epochs are, in most logs (dogfood 228's chargeback table)."""
    if dtype == pl.String:
        return naive_times(column, dated=True)
    if events_zoned is True and isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        return pl.when(pl.col(column).is_not_null()).then(True)
    return None


# What a time that lost its offset moves: an event's, and a label's.
EVENT_MOVES = "which reorders its session's events (and in training can move the session across the split)"
LABEL_MOVES = (
    "which changes when its label counts as known (to the entity risk features and the label cutoffs)"
)


def say_naive(
    report: dict,
    key: str,
    source: str,
    column: str,
    counts: tuple[int, int],
    first: Callable[[], str],
    moves: str = EVENT_MOVES,
    elsewhere: str | None = None,
) -> None:
    """Counts the naive timestamps of ``column`` (``counts``: naive, and all given) in ``report[key]`` and warns
    with ``first()`` (the example), where they mix with ones that carry an offset: a column of naive times alone
    is one in UTC, unless ``elsewhere`` says whose times carry offsets (a label table's, beside zoned events: a
    verdict file that lost its offsets moved labels by hours, unsaid: dogfood 219)."""
    naive, stamped = counts
    if 0 < naive < stamped or (elsewhere and 0 < naive == stamped):
        report[key] = naive
        zoned = {"zoned": elsewhere} if elsewhere and naive == stamped else {}
        log.warning("%s", naive_said(source, column, naive, stamped, first(), moves, **zoned))


# Whose offsets a naive time lacks: its column's other times', or the model's training times' (all naive then).
OTHERS_ZONED = "the others carry one"
TRAINED_ZONED = "the model's training times carried one (or were epochs)"
EVENTS_ZONED = "the events' times carry one (or are epochs)"


def naive_said(
    source: str,
    column: str,
    naive: int,
    stamped: int,
    first: str,
    moves: str = EVENT_MOVES,
    zoned: str = OTHERS_ZONED,
) -> str:
    """The warning for ``naive`` timestamp strings without an offset among ``stamped`` ones where ``zoned``
    (:data:`OTHERS_ZONED`, :data:`TRAINED_ZONED`) carry one (:data:`S.TS_NAIVE`): an export that cut a day's
    offsets moved its times by hours without a word (dogfood 71). ``moves``: what such a time moves
    (:data:`EVENT_MOVES`, :data:`LABEL_MOVES`)."""
    return (
        f"{source}: column {column!r}: {naive:,} of its {stamped:,} timestamps carry no UTC offset and are read as "
        f"UTC, where {zoned}{first}: a local time written without its offset moves by it (hours), {moves}. Write "
        "each with its offset (or Z)"
    )


def normalize(
    lf: pl.LazyFrame,
    schema: Schema,
    have: pl.Schema,
    unit: str,
    *,
    with_label: bool,
    naive_flag: bool = False,
    float32_decimal: bool = True,
) -> pl.LazyFrame:
    """Cast to the canonical working types; flags present and out-of-range timestamps for the row counts, and
    with ``naive_flag`` timestamp (and label time) strings without an offset (:data:`S.TS_NAIVE`,
    :data:`S.LABEL_TIME_NAIVE`).

    The epoch value is a column of its own first: both flags read it, and parsing strings twice would double
    the cost of a scoring request. Entity ids become strings (integers their decimal text). With
    ``with_label`` and ``data.schema.label_time`` the label time gets the timestamp's rules and flags
    (:data:`S.LABEL_TIME_US` and the rest), integer epochs in the timestamp's ``unit``. Numbers are read by
    :func:`as_float64`.
    """
    range_us = timestamp_range_us(schema)
    raw, raw_unit = epoch_value(schema.timestamp, have[schema.timestamp], unit)
    ts_us, outside = timestamp_us(pl.col(S.TS_US), raw_unit, range_us)
    epochs = [raw.alias(S.TS_US)]
    cols = [
        pl.col(schema.session_id).cast(pl.String).alias(S.SESSION_ID),
        ts_us.alias(S.TS_US),
        pl.col(schema.timestamp).is_not_null().alias(S.TS_PRESENT),
        outside.alias(S.TS_OUT_OF_RANGE),
        *(
            [naive_times(schema.timestamp).alias(S.TS_NAIVE)]
            if naive_flag and have[schema.timestamp] == pl.String
            # A datetime column without a zone is naive throughout: said at scoring where training's carried
            # offsets, as such strings are (dogfood 173: a pandas day written after tz_localize(None)).
            else [pl.col(schema.timestamp).is_not_null().alias(S.TS_NAIVE)]
            if naive_flag and isinstance(dt := have[schema.timestamp], pl.Datetime) and dt.time_zone is None
            else []
        ),
        *[pl.col(c).cast(pl.String) for c in schema.categorical_fields],
        *[as_float64(c, have[c], float32_decimal) for c in schema.numerical],
        *[pl.col(c).cast(pl.String) for c in schema.entities],
        *[
            pl.col(c).cast(pl.String).alias(S.EVENT_ID)
            for c in [schema.event_id]
            if c is not None and c in have
        ],
    ]
    if with_label:
        # NaN is pandas' missing value in a float column: a missing label, for the unlabelled policy.
        cols.append(pl.col(schema.label).cast(pl.Float64).fill_nan(None).alias(S.LABEL))
        if schema.label_time:
            lt_raw, lt_unit = epoch_value(
                schema.label_time, have[schema.label_time], label_time_unit(unit), label_time=True
            )
            lt_us, lt_outside = timestamp_us(pl.col(S.LABEL_TIME_US), lt_unit, range_us)
            epochs.append(lt_raw.alias(S.LABEL_TIME_US))
            cols += [
                lt_us.alias(S.LABEL_TIME_US),
                pl.col(schema.label_time).is_not_null().alias(S.LABEL_TIME_PRESENT),
                lt_outside.alias(S.LABEL_TIME_OUT_OF_RANGE),
            ]
            if naive_flag and have[schema.label_time] == pl.String:
                cols.append(naive_times(schema.label_time, dated=True).alias(S.LABEL_TIME_NAIVE))
    return numbered(lf).with_columns(epochs).select(pl.col(S.ROW_INDEX), *cols)


# Why a repeated event id is an error: online scoring takes it as the same event (and ignores it), so training
# and batch scoring must not count it twice.
REPEATED_ID = (
    "repeat the id of an earlier event of their session (online scoring ignores a repeated id); "
    "remove the repeats"
)


def refuse_repeated_ids(per_session: pl.DataFrame, source: str, column: str) -> None:
    """Fails on the sessions (``session_id``, :func:`repeated_event_ids`) that repeat an id, naming the first."""
    repeats = per_session.filter(pl.col("n_event_id_repeats") > 0)
    if repeats.height:
        first = repeats[S.SESSION_ID].min()
        fail_rows(
            source,
            column,
            int(repeats["n_event_id_repeats"].sum()),
            f"{REPEATED_ID} (first in session {first!r})",
        )


def repeated_event_ids() -> pl.Expr:
    """Per session: rows whose event id an earlier row of the session holds (null ids never repeat)."""
    return (pl.col(S.EVENT_ID).count() - pl.col(S.EVENT_ID).drop_nulls().n_unique()).alias(
        "n_event_id_repeats"
    )


def first_type(event_type: str, *order: str | pl.Expr) -> pl.Expr:
    """The type of a session's first event by ``order`` (ties: the input's order), as text: what opens it
    (:data:`~seqfraud.features.spec.OPENING_SHARES`)."""
    return pl.col(event_type).cast(pl.String).sort_by(*order, maintain_order=True).first().alias(S.FIRST_TYPE)


def unopened_types(
    events: pl.LazyFrame, session_id: str, event_type: str, time: str, openers: Iterable[str]
) -> pl.LazyFrame:
    """Per type of their first event (:func:`first_type` by ``time``), the sessions none of whose events at their
    first instant is of a type in ``openers`` (training's :data:`~seqfraud.features.spec.OPENING_SHARES`): an
    opener tied with another event at a session's first instant opens it (review 240)."""
    at = pl.col(time)
    opened = pl.col(event_type).cast(pl.String).filter(at == at.min()).is_in(list(openers)).any()
    return (
        events.group_by(session_id)
        .agg(first_type(event_type, time), opened.alias("__opened"))
        .filter(~pl.col("__opened"))
        .group_by(S.FIRST_TYPE)
        .len()
    )


def session_table(
    events: pl.LazyFrame,
    event_type: str,
    *,
    with_label: bool,
    with_label_time: bool = False,
    with_event_id: bool = False,
    entities: Sequence[str] = (),
) -> pl.LazyFrame:
    """One row per session with its start and end time and the counts that validation needs (``event_type``:
    the schema's column); with ``with_label_time``, the label time's range and counts (:func:`normalize`'s label
    time columns); with ``with_event_id``, the repeated event ids; per entity column, its values that
    :data:`BLANK_ENTITY` refuses."""
    aggs = [
        pl.col(S.TS_US).min().alias(S.START_TIME),
        pl.col(S.TS_US).max().alias(S.END_TIME),
        pl.len().alias("n_events"),
        pl.col(event_type).is_null().sum().alias("n_event_type_null"),
        TS_UNPARSED_ROWS.sum().alias("n_ts_unparsed"),
        pl.col(S.TS_PRESENT).not_().sum().alias("n_ts_null"),
        pl.col(S.TS_OUT_OF_RANGE).sum().alias("n_ts_out_of_range"),
        # Rows equal in every column to another of their session: by a 64-bit hash per session (exact up to a
        # collision among one session's rows); an exact struct comparison cost four times as much.
        (pl.len() - pl.struct(pl.exclude(S.ROW_INDEX)).hash(0).n_unique()).alias("n_duplicate_rows"),
        pl.col(S.TS_US).n_unique().alias("n_times"),
        (pl.col(S.TS_US) % 1_000_000 == 0).sum().alias("n_whole_seconds"),
        first_type(event_type, S.TS_US, S.ROW_INDEX),
    ]
    have = events.collect_schema()
    for flag, name in ((S.TS_NAIVE, "ts"), (S.LABEL_TIME_NAIVE, "label_time")):
        if flag in have:  # the naive ones, and all that could be (strings with a time)
            aggs += [
                pl.col(flag).sum().alias(f"n_{name}_naive"),
                pl.col(flag).count().alias(f"n_{name}_stamped"),
            ]
    if with_label:
        aggs += [
            pl.col(S.LABEL).min().alias("label_min"),
            pl.col(S.LABEL).max().alias("label_max"),
            pl.col(S.LABEL).is_null().sum().alias("n_label_null"),
            LABEL_NOT_01_ROWS.sum().alias("n_label_bad"),
        ]
    if with_label_time:
        lt, present, outside = (
            pl.col(S.LABEL_TIME_US),
            pl.col(S.LABEL_TIME_PRESENT),
            pl.col(S.LABEL_TIME_OUT_OF_RANGE),
        )
        aggs += [
            lt.min().alias("label_time_min"),
            lt.max().alias("label_time_max"),
            present.not_().sum().alias("n_label_time_null"),
            LABEL_TIME_UNPARSED_ROWS.sum().alias("n_label_time_unparsed"),
            outside.sum().alias("n_label_time_out_of_range"),
            # Under data.policy.on_mixed_labels=any, when a fraud session's label is known (validate_sessions),
            # and the label times of its other events, which that leaves unread.
            lt.filter(pl.col(S.LABEL) == 1).min().alias("label_time_min_positive"),
            (present & (pl.col(S.LABEL) != 1)).sum().alias("n_label_time_not_fraud"),
        ]
    if with_event_id:
        aggs.append(repeated_event_ids())
    aggs += [blank(c, session=False).sum().alias(f"n_blank_{c}") for c in entities]
    return events.group_by(S.SESSION_ID).agg(aggs)


def training_labels(
    path: str,
    schema: Schema,
    timestamp_unit: str,
    on_unlabeled: str,
    report: dict,
    events_zoned: bool | str = False,
) -> tuple[pl.DataFrame, str]:
    """The training log's label table, read as ``data.policy.on_unlabeled`` says (:func:`read_labels`), by every
    engine; ``events_zoned``: the events' times carried offsets (True) or were epochs (:data:`ZONED_BY_EPOCHS`), as
    :func:`zoned_report` says."""
    return read_labels(
        path,
        schema,
        timestamp_unit=timestamp_unit,
        frauds_only=on_unlabeled == "negative",
        pending_ok=on_unlabeled in ("drop", "keep"),
        report=report,
        events_zoned=events_zoned,
    )


_TIMED = "__label_timed"  # read_labels: whether a row has a label time


def read_labels(
    path: str | pl.DataFrame | pl.LazyFrame,
    schema: Schema,
    *,
    timestamp_unit: str | None = None,
    any_event: bool = False,
    rows_are_events: bool = False,
    empty_ok: bool = False,
    name: str = "labels",
    frauds_only: bool = False,
    pending_ok: bool = False,
    zero_padded: Sequence[str] = (),
    integer_typed: Mapping[str, int | None] | None = None,
    forms: IdForms | None = None,
    report: dict | None = None,
    events_zoned: bool | str = False,
) -> tuple[pl.DataFrame, str]:
    """A separate label table (a file, or a frame named ``name`` in messages, checked alike: a frame was cast
    unchecked, so 0.9 read as 0 and a repeated session counted twice: dogfood 60): one row per session, 0/1
    label. With ``any_event`` (events read as labels, of a log trained under ``data.policy.on_mixed_labels=any``)
    a session is labelled by its events' highest label, as training read it, where their labels disagree. With
    ``pending_ok`` (``data.policy.on_unlabeled`` drop or keep) a row with a null label is a session not labelled
    yet, as a review queue's export lists it: left out, and counted in ``report`` (``label_rows_pending``), where
    it was refused (dogfood 201). With
    ``frauds_only`` (``data.policy.on_unlabeled=negative``) a table without the label column lists frauds: a
    chargeback file as it comes (session id and date). ``zero_padded``: a model's
    :attr:`~seqfraud.features.spec.Spec.zero_padded_ids`, whose session ids as integers are refused;
    ``integer_typed``: its :attr:`~seqfraud.features.spec.Spec.integer_ids`, whose session ids written otherwise
    than as their digits (3278.0, 03278) are.

    With ``timestamp_unit`` (the events' :attr:`LoadedEvents.timestamp_unit`) and ``data.schema.label_time``,
    the table must also hold the label time, read by the events' timestamp rules (integer epochs in that
    unit) into :data:`S.LABEL_TIME_US`: null where absent, an error where it does not parse or is out of
    range. Without ``timestamp_unit`` label times are not read. Label times without an offset among ones that
    carry one are counted in ``report`` (:data:`NAIVE_LABEL_TIMES`) and said, as the events' timestamps are.
    """
    lf, source = (
        (path.lazy(), name) if isinstance(path, (pl.DataFrame, pl.LazyFrame)) else scan_table(path, schema)
    )
    # A file's own columns, for the messages: a frauds-only table's label column is added below, not the file's.
    given = lf.collect_schema()
    if frauds_only and schema.label not in given:
        _say_labels_named_otherwise(lf, given, schema, source)
        lf = lf.with_columns(pl.lit(1, pl.Int8).alias(schema.label))
        # The spec records it: POST /labels then takes labels without the key (review 205).
        if report is not None:
            report[LABELS_WITHOUT_COLUMN] = True
    have = lf.collect_schema()
    refuse_integer_ids(integer_columns(have), [c for c in zero_padded if c == schema.session_id], source)
    lt = schema.label_time if timestamp_unit is not None else None

    def nothing() -> tuple[pl.DataFrame, str]:
        """No label: refused, unless ``empty_ok`` (a chargeback file of a model trained under
        ``on_unlabeled=negative``, with no fraud yet: dogfood 56)."""
        if not empty_ok:
            raise DataValidationError(f"{source}: the label table is empty")
        times = {S.LABEL_TIME_US: pl.Int64} if lt is not None else {}
        return pl.DataFrame(schema={S.SESSION_ID: pl.String, S.LABEL: pl.Int8, **times}), source

    missing = [c for c in (schema.session_id, schema.label, *([lt] if lt else [])) if c not in have]
    if missing:
        # A chargeback file lists frauds alone, with no label column to rename (dogfood 200).
        frauds = (
            " A table of the frauds alone (a chargeback file) needs no label column where the model is trained "
            "with data.policy.on_unlabeled=negative (and data.policy.label_delay, when the sessions it leaves out "
            "are final): it is read as listing frauds."
            if missing == [schema.label]
            else ""
        )
        raise DataValidationError(
            f"{missing_columns(source, missing, given)} The label table takes the events' names "
            "(data.schema.session_id, data.schema.label, data.schema.label_time): rename its columns to match."
            + frauds
        )
    if not (have[schema.session_id] in _ENTITY_OK or have[schema.session_id].is_integer()):
        raise DataValidationError(wrong_id_type(source, schema.session_id, have[schema.session_id]))
    if not (have[schema.label].is_numeric() or have[schema.label] == pl.Boolean):
        with reading(source):
            empty = lf.head(1).collect().is_empty()  # a header-only CSV reads every column as text
        if empty:
            return nothing()
        not_labels(lf, schema.label, source)
    columns = [
        pl.col(schema.session_id).cast(pl.String).alias(S.SESSION_ID),
        pl.col(schema.label).cast(pl.Float64).fill_nan(None).alias(S.LABEL),  # NaN: pandas' missing label
    ]
    # Whether a row has a label time, read for the pending rows' check even where the times are not (a monitor's
    # --labels without --labels-as-of: review 215).
    if pending_ok and schema.label_time and schema.label_time in have:
        columns.append(pl.col(schema.label_time).is_not_null().alias(_TIMED))
    epochs = []
    if lt is not None and timestamp_unit is not None:
        _check_time_type(source, lt, have[lt], may_be_empty=True)
        check_label_time_unit(source, schema, have[lt], timestamp_unit)
        raw, raw_unit = epoch_value(lt, have[lt], label_time_unit(timestamp_unit), label_time=True)
        us, outside = timestamp_us(pl.col(S.LABEL_TIME_US), raw_unit, timestamp_range_us(schema))
        epochs.append(raw.alias(S.LABEL_TIME_US))
        columns += [
            us.alias(S.LABEL_TIME_US),
            pl.col(lt).is_not_null().alias(S.LABEL_TIME_PRESENT),
            outside.alias(S.LABEL_TIME_OUT_OF_RANGE),
            *(
                [naive.alias(S.LABEL_TIME_NAIVE)]
                if (naive := naive_label_times(lt, have[lt], events_zoned)) is not None
                else []
            ),
        ]
        say_dates_as_datetimes(lf, have, lt, source)
    with reading(source):
        labels = numbered(lf).with_columns(epochs).select(S.ROW_INDEX, *columns).collect()
    if integer_typed and schema.session_id in integer_typed and not have[schema.session_id].is_integer():
        refuse_rewritten_ids(labels, {S.SESSION_ID: schema.session_id}, source, integer_typed)
    if forms:  # a history's or the monitor's table (review 217)
        for _, said in forms.said(labels, {S.SESSION_ID: schema.session_id}, source):
            log.warning("%s", said)
    if labels.is_empty():
        return nothing()
    unlabelled = pl.col(S.LABEL).is_null()
    if rows_are_events:
        # Events: a session none of whose rows has a label yet is unlabelled, as training reads it (a history's
        # latest sessions are); one labelled in part is refused, as training refuses it.
        inside = unlabelled.any().over(S.SESSION_ID) & unlabelled.not_().any().over(S.SESSION_ID)
        partial = labels.filter(inside)
        if partial.height:
            # Its session and file (dogfood 203: a folder's, with neither).
            files = (resolve_paths(path, warn=False), schema) if isinstance(path, str) else None
            fail_rows(
                source,
                schema.label,
                int(partial[S.LABEL].null_count()),
                f"have a null label inside {partial[S.SESSION_ID].n_unique():,} otherwise labelled session(s)",
                first_bad(labels, inside & unlabelled, lf, schema.label, files),
            )
        labels = labels.filter(unlabelled.not_() | pl.col(S.SESSION_ID).is_null())
    elif pending_ok and (
        pending := int(labels.select((unlabelled & pl.col(S.SESSION_ID).is_not_null()).sum()).item())
    ):
        # A row awaiting review has no verdict, and no verdict's time: one with a label time is a verdict that lost
        # its label (dogfood 214: a chargeback table without the label column stacked under a review table by
        # column name, 115 of 252 frauds read as pending, said at INFO).
        timed = unlabelled & pl.col(_TIMED) if _TIMED in labels.columns else None
        if timed is not None and (n := int(labels.select(timed.sum()).item())):
            files = (resolve_paths(path, warn=False), schema) if isinstance(path, str) else None
            fail_rows(
                source,
                schema.label,
                n,
                f"have no label (null) but a {schema.label_time!r}: a verdict's time without the verdict (a table "
                f"of frauds without the {schema.label!r} column joined under another by name?); a row awaiting "
                "review has neither",
                first_bad(labels, timed, lf, schema.label, files),
            )
        labels = labels.filter(unlabelled.not_() | pl.col(S.SESSION_ID).is_null())
        log.info(
            "%s: %s row(s) with no label (null) read as sessions not labelled yet (data.policy.on_unlabeled)",
            source,
            f"{pending:,}",
        )
        if report is not None:
            report["label_rows_pending"] = pending
    labels = labels.drop(_TIMED, strict=False)
    refuse_empty_rows(
        labels,
        source,
        schema.session_id,
        (
            schema.label,
            S.LABEL,
            "have no label (null or NaN): leave sessions without a label out of the label table",
        ),
    )
    if n := int(labels.select(LABEL_NOT_01_ROWS.sum()).item()):
        fail_rows(
            source,
            schema.label,
            n,
            "have a label that is not 0/1",
            first_bad(labels, LABEL_NOT_01_ROWS, lf, schema.label),
        )
    if any_event:
        labels = labels.filter(pl.col(S.LABEL) == pl.col(S.LABEL).max().over(S.SESSION_ID))
    refuse_conflicts(labels, pl.col(S.LABEL), source, schema.label, "labels")
    if lt is not None:
        labels = _check_label_times(
            labels, schema, source, lf, have[lt], timestamp_unit, any_event, report, events_zoned
        )
    if not rows_are_events and (repeats := labels.height - labels[S.SESSION_ID].n_unique()):
        log.warning(  # the same session, label and label time again: read once, said, not dropped unsaid
            "%s: %s row(s) repeat another row's session and label%s: each session's label is read once",
            source,
            f"{repeats:,}",
            # Where label times are not read (a monitor without --labels-as-of), they were not compared: rows
            # dated apart were said to repeat them (dogfood 200).
            " and label time" if lt is not None else "",
        )
    return labels.drop(S.ROW_INDEX).unique(S.SESSION_ID, keep="first", maintain_order=True).with_columns(
        pl.col(S.LABEL).cast(pl.Int8)
    ), source


def refuse_empty_rows(table: pl.DataFrame, source: str, id_column: str, value: tuple[str, str, str]) -> None:
    """A per-session table's rows without a session id (null or blank), or without its value: ``value`` is the
    value's column as the file names it, as ``table`` does, and what its null rows are said to do."""
    named, column, what = value
    blanks = table.filter(blank(S.SESSION_ID))[S.SESSION_ID]
    with BadRows(source) as bad:
        for col, n, said, first in (
            (id_column, table[S.SESSION_ID].null_count(), "have a null session id", ""),
            # Which of BLANK_ID's cases, shown (dogfood 118: the message listed them all, and no id).
            (id_column, blanks.len(), BLANK_ID, f" (first: {blanks[0]!r})" if blanks.len() else ""),
            (named, table[column].null_count(), what, ""),
        ):
            if n:
                bad.add(col, n, said, first)


def read_typologies(path: str, schema: Schema, session_ids: pl.Series | None = None) -> pl.DataFrame:
    """``data.typologies``, a table of the fraud sessions' typologies (``session_id, typology``) for per-typology
    metrics, checked where it is given (at preprocessing) rather than after training, which read it unchecked
    (a column named otherwise failed the run at its end: dogfood 64). ``session_ids``: the log's sessions, which
    its ids must meet, as a label table's must (:func:`check_some_match`); None, once preprocessing checked it."""
    lf, source = scan_table(path, schema)
    have = lf.collect_schema()
    missing = [c for c in (schema.session_id, S.TYPOLOGY) if c not in have]
    if missing:
        raise DataValidationError(
            f"{missing_columns(source, missing, have)} A typology table holds the events' session id column "
            f"(data.schema.session_id) and a column named {S.TYPOLOGY!r}: rename its columns to match."
        )
    if not (have[schema.session_id] in _ENTITY_OK or have[schema.session_id].is_integer()):
        raise DataValidationError(wrong_id_type(source, schema.session_id, have[schema.session_id]))
    with reading(source):
        table = lf.select(
            pl.col(schema.session_id).cast(pl.String).alias(S.SESSION_ID),
            pl.col(S.TYPOLOGY).cast(pl.String),
        ).collect()
    refuse_empty_rows(
        table,
        source,
        schema.session_id,
        (S.TYPOLOGY, S.TYPOLOGY, "have no typology: leave such sessions out of the table"),
    )
    refuse_conflicts(table, pl.col(S.TYPOLOGY), source, S.TYPOLOGY, "typologies")
    # The metrics' group of labelled frauds the table leaves out: a typology of that name was pooled with them
    # unsaid (dogfood 136: its 10 sessions, recall 1.0, with 11 label-noise frauds, recall 0.0).
    if n := int((table[S.TYPOLOGY] == S.UNKNOWN_TYPOLOGY).sum()):
        raise DataValidationError(
            f"{source}: column {S.TYPOLOGY!r}: {n:,} row(s) name the typology {S.UNKNOWN_TYPOLOGY!r}, which is what "
            "the metrics call the labelled frauds this table leaves out; rename it (e.g. 'unknown_kind')"
        )
    table = table.unique(S.SESSION_ID, keep="first", maintain_order=True)
    if session_ids is None or not table.height:
        return table
    absent = table.filter(~pl.col(S.SESSION_ID).is_in(session_ids.implode()))[S.SESSION_ID]
    if absent.len() == table.height:
        raise DataValidationError(
            f"{source}: column {schema.session_id!r}: {table.height:,} session(s), none with events in the log: "
            + unmatched_ids_text(table[S.SESSION_ID], session_ids, "typology")
        )
    if absent.len():  # taken without a word (dogfood 65); ids that lost their zeros named so (dogfood 159)
        log.warning(
            "%s: column %r: %s of its %s session(s) have no events in the log (first: %s), so their typologies "
            "are not read%s",
            source,
            schema.session_id,
            f"{absent.len():,}",
            f"{table.height:,}",
            absent.sort().head(3).to_list(),
            renumbered_ids(absent, session_ids, "typology"),
        )
    return table


def absent_as_negative(labels: pl.DataFrame, session_ids: pl.Series) -> pl.DataFrame:
    """``labels`` with a legitimate label (0, no label time: known at the session's end plus the label delay) for
    each of ``session_ids`` it leaves out: how a model trained under ``data.policy.on_unlabeled=negative`` read
    them."""
    absent = session_ids.unique().to_frame(S.SESSION_ID).join(labels, on=S.SESSION_ID, how="anti")
    return pl.concat([labels, absent.with_columns(pl.lit(0, pl.Int8).alias(S.LABEL))], how="diagonal_relaxed")


def refuse_conflicts(labels: pl.DataFrame, value: pl.Expr, source: str, column: str, what: str) -> None:
    """A label table's sessions listed with more than one ``value``: their rows counted (the sessions were
    counted as rows: dogfood 48), and what to do."""
    conflicting = labels.filter(value.n_unique().over(S.SESSION_ID) > 1)
    if conflicting.height:
        sessions = conflicting[S.SESSION_ID]
        fail_rows(
            source,
            column,
            conflicting.height,
            f"belong to {sessions.n_unique():,} session(s) listed with conflicting {what} (first: {sessions.min()!r}): "
            "a table holds one row a session; keep the one that stands (a review's latest verdict; of a session "
            "charged back twice, the first chargeback, when the fraud became known)",
        )


def _check_label_times(
    labels: pl.DataFrame,
    schema: Schema,
    source: str,
    raw: pl.LazyFrame,
    dtype: pl.DataType,
    unit: str | None,
    any_event: bool,
    report: dict | None,
    events_zoned: bool | str = False,
) -> pl.DataFrame:
    """The label table's label times (``raw``: the table as read): each parses, lies in the plausible range, and
    one per session; with ``any_event``, a fraud session's is the earliest of its rows' (as training reads
    events under ``data.policy.on_mixed_labels=any``). Naive ones among zoned ones, or beside ``events_zoned``
    events, go into ``report``
    (:func:`say_naive`)."""
    lt = cast(str, schema.label_time)
    us, outside = pl.col(S.LABEL_TIME_US), pl.col(S.LABEL_TIME_OUT_OF_RANGE)
    n_unparsed, n_outside = labels.select(LABEL_TIME_UNPARSED_ROWS.sum(), outside.sum()).row(0)
    with BadRows(source) as bad:
        if n_unparsed:
            bad.add(lt, n_unparsed, LABEL_TIME_UNPARSED, first_bad(labels, LABEL_TIME_UNPARSED_ROWS, raw, lt))
        if n_outside:
            epoch_unit = unit if dtype.is_integer() else None
            bad.add(
                lt,
                n_outside,
                out_of_range_text(schema, epoch_unit, unit_origin(schema, epoch_unit), "label time"),
                first_bad(labels, outside, raw, lt),
            )
    if any_event:
        labels = labels.with_columns(
            pl.when(pl.col(S.LABEL) == 1)
            .then(us.min().over(S.SESSION_ID))
            .otherwise(us)
            .alias(S.LABEL_TIME_US)
        )
    if S.LABEL_TIME_NAIVE in labels.columns:
        naive = pl.col(S.LABEL_TIME_NAIVE)
        counts = labels.select(naive.sum().alias("naive"), naive.count().alias("stamped")).row(0)
        first = functools.partial(first_bad, labels, naive, raw, lt)
        said = {} if report is None else report
        elsewhere = EVENTS_ZONED if events_zoned else None
        say_naive(said, NAIVE_LABEL_TIMES, source, lt, counts, first, LABEL_MOVES, elsewhere)
    refuse_conflicts(labels, us, source, lt, "label times")
    return labels.drop(S.LABEL_TIME_PRESENT, S.LABEL_TIME_OUT_OF_RANGE, S.LABEL_TIME_NAIVE, strict=False)


def _plain_id(ids: pl.Expr) -> pl.Expr:
    """An id with leading zeros and a trailing ``.0`` set aside: what a reader that made ids numbers leaves; of an
    id with other characters, the leading zeros of each number of 3 digits or more (``PR/2026/0004501`` as
    ``PR/2026/4501``, ``ORD-0042`` as ``ORD-42``: an export that padded the number and one that did not: dogfood
    204, 19 frauds dropped as orphans). A number of 2 digits is a name as written (``A01`` beside ``A1``,
    ``x-1.05``: review 207)."""
    digits = ids.str.replace(r"\.0$", "")
    return (
        pl.when(digits.str.contains(r"^[0-9]+$"))
        .then(digits.str.strip_chars_start("0"))
        .otherwise(ids.str.replace_all(r"(^|[^0-9])(?:0{2,}([0-9]+)|0([0-9]{2,}))", "${1}${2}${3}"))
    )


def renumbered(label_ids: pl.Series, event_ids: pl.Series) -> pl.DataFrame:
    """The pairs (``label``, ``event``) of ``label_ids`` (none of them an event's) that meet an event's id once
    leading zeros and a trailing ``.0`` are set aside: ids that a reader turned into numbers and back
    (``00002037`` to 2037, or to ``2037.0`` through a float), on either side; and, where the event ids keep to
    one case, in the other case (a uuid upper-cased by another system: dogfood 193). Where the event ids mix cases,
    case tells ids apart (``Ab3X`` and ``aB3x``: review 197)."""
    # Sorted: which of several event ids one key stands for changed from run to run (review 66).
    ids = event_ids.unique().sort()
    one_case = next(
        (case for case in ("to_lowercase", "to_uppercase") if (getattr(ids.str, case)() == ids).all()), None
    )
    key = _plain_id(pl.col("label"))
    frame = pl.DataFrame({"label": label_ids.unique().sort()}).with_columns(
        key=key if one_case is None else getattr(key.str, one_case)()
    )
    events = pl.DataFrame({"event": ids}).with_columns(key=_plain_id(pl.col("event")))
    return frame.join(events.unique("key", keep="first"), on="key").sort("label").drop("key")


def renumbered_ids(label_ids: pl.Series, event_ids: pl.Series, table: str = "label") -> str:
    """How many of ``label_ids`` (of a ``table`` table) are :func:`renumbered`, with the first pair; empty when
    none are."""
    return renumbered_said(renumbered(label_ids, event_ids), table)


def renumbered_said(met: pl.DataFrame, table: str = "label") -> str:
    """:func:`renumbered_ids` of pairs :func:`renumbered` found already."""
    if met.is_empty():
        return ""
    return (
        f"; {met.height:,} of them match an event id written another way (first: {met['label'][0]!r} for the "
        f"event id {met['event'][0]!r}): the {table} table's ids or the events' lost their leading zeros, "
        "became numbers or changed case on the way; read both as text (in CSV seqfraud does; in pandas, "
        "dtype=str), in one case, rather than dropping them"
    )


# Event ids of more forms than this (uuids, hashes: nearly one form an id) say nothing of how ids are written.
_FEW_FORMS = 20


def _form(ids: pl.Expr) -> pl.Expr:
    """An id's form: each run of digits as 9, each run of letters as A (``C1231006815-d12`` is ``A9-A9``)."""
    return ids.str.replace_all(r"[0-9]+", "9").str.replace_all(r"[A-Za-z]+", "A")


def foreign_form_ids(ids: pl.Series, event_ids: pl.Series) -> tuple[int, str]:
    """How many of ``ids`` (none of them an event's) are written in a form no event id has, where the event ids
    keep to a few forms, and what to say of them: ``C1231006815-12`` against ``C1231006815-d12`` (dogfood 65),
    which no rule of leading zeros finds. ``(0, "")`` when none is, or when the event ids' forms are too many
    to tell (uuids)."""
    forms = pl.DataFrame({"id": event_ids.unique()}).select(_form(pl.col("id"))).to_series().unique().sort()
    odd = pl.DataFrame({"id": ids.unique().sort()}).filter(~_form(pl.col("id")).is_in(forms.implode()))
    if forms.len() > _FEW_FORMS or odd.is_empty():
        return 0, ""
    return odd.height, (
        f"; {odd.height:,} of them are written in a form no event id has (first: {odd['id'][0]!r}; the event "
        f"ids' forms, digits as 9 and letters as A: {forms.head(3).to_list()}): the two files write the ids "
        "differently; make them agree"
    )


def unmatched_ids_text(label_ids: pl.Series, event_ids: pl.Series, table: str = "label") -> str:
    """What to show when no id of a ``table`` table matches an event's: a few of each, since ids compare as text
    and a reader that kept ``007`` on one side and made it ``7`` on the other matches nothing. Ids that meet an
    event's once renumbered are said so, and not also as of another form (dogfood 108 read both of one id)."""
    # The first few in order: a hash set's order changed the message from run to run (dogfood 56).
    first = [ids.unique().sort().head(3).to_list() for ids in (label_ids, event_ids)]
    keys = event_ids.to_frame("id").select(_plain_id(pl.col("id"))).to_series()
    others = label_ids.to_frame("id").filter(~_plain_id(pl.col("id")).is_in(keys.implode())).to_series()
    return (
        f"{table} ids {first[0]}, event ids {first[1]} (ids compare as text: '007' is not '7')"
        + renumbered_ids(label_ids, event_ids, table)
        + foreign_form_ids(others, event_ids)[1]
    )


def check_some_match(
    table: pl.DataFrame, event_ids: pl.Series, where: str, what: str, absent_is_negative: bool
) -> None:
    """Refuse a label table (``where``: its file and id column) none of whose ids match ``event_ids`` (the
    sessions of ``what``): its ids were read otherwise than the events' (``007`` against ``7``), and every label
    would go unread. Under
    ``data.policy.on_unlabeled=negative`` such a table is also a normal one (a chargeback file without a fraud
    among these sessions: dogfood 56): said, and taken."""
    if not table.height or table[S.SESSION_ID].is_in(event_ids.implode()).any():
        return
    text = (
        f"{where}: {table.height:,} labelled session(s), none with events in {what}: "
        + unmatched_ids_text(table[S.SESSION_ID], event_ids)
    )
    # Every id of another form is no chargeback file without a match but one written otherwise (dogfood 65: read as
    # legitimate, it moved a window's PR-AUC from 0.970 to 0.459); nor is one whose ids meet the events' once case
    # or zeros are set aside (dogfood 216: a history's 210 frauds lower-cased, read as legitimate with a warning).
    n_odd, _ = foreign_form_ids(table[S.SESSION_ID], event_ids)
    respelt = not renumbered(table[S.SESSION_ID], event_ids).is_empty()
    if not absent_is_negative or n_odd == table[S.SESSION_ID].n_unique() or respelt:
        raise DataValidationError(text)
    log.warning("%s; under data.policy.on_unlabeled=negative every one of them reads as legitimate", text)


def refuse_misread_orphans(
    orphans: pl.DataFrame,
    session_ids: pl.Series,
    where: str,
    source: str,
    on_orphan_labels: str,
    absent_is_negative: bool = False,
) -> str:
    """Refuse the rows of a label table (``where``: its file and id column) whose session is none of
    ``session_ids`` (``source``'s), where the table meets some: under ``on_orphan_labels=error``, and whatever
    the policy where their ids meet an event's once their form is set aside (dogfood 63: dropping them lost
    frauds), or where most are written in a form no event id has (dogfood 65): those are ids misread, not orphans.
    Returns what to say of the few of another form that may be dropped ('' where none is). Training's label
    table and a scoring history's go through it alike (dogfood 91: the history's dropped ``2037.0`` unsaid).
    Under ``absent_is_negative`` the advice to drop them says what else it does (dogfood 169: a shard whose ids
    lost their prefix, dropped as advised, read its frauds as legitimate)."""
    reformed = renumbered_ids(orphans[S.SESSION_ID], session_ids)
    n_odd, odd = foreign_form_ids(orphans[S.SESSION_ID], session_ids)
    misformed = odd if 2 * n_odd >= orphans[S.SESSION_ID].n_unique() else ""
    if on_orphan_labels == "error" or reformed or misformed:
        first = orphans[S.SESSION_ID].sort().head(3).to_list()
        raise DataValidationError(
            f"{where}: {orphans.height:,} labelled session(s) have no events in {source} (first: {first})"
            + (
                reformed
                or misformed
                or " (set data.policy.on_orphan_labels=drop to skip them"
                + (
                    "; under data.policy.on_unlabeled=negative, only once sure they are not the events' own "
                    "sessions under ids written another way (a file whose ids lost a prefix): those would read as "
                    "legitimate, their frauds too)"
                    if absent_is_negative
                    else ")"
                )
            )
        )
    return odd


def validate_sessions(
    sessions: pl.DataFrame,
    schema: Schema,
    source: str,
    labels: tuple[pl.DataFrame, str] | None = None,
    *,
    on_unlabeled: str = "error",
    on_orphan_labels: str = "error",
    on_mixed_labels: str = "error",
    epoch_unit: str | None = None,
    label_delay: str | None = None,
    rows: tuple[pl.LazyFrame, pl.LazyFrame, list[str]] | None = None,
) -> tuple[pl.DataFrame, dict]:
    """Row-level checks and drop policies on the per-session table of :func:`session_table`.

    Every engine builds that small table its own way and hands it here, so the contract and the wording
    of its errors exist once. ``labels`` is a separate label table from :func:`read_labels`; without it
    the labels come from the events. ``epoch_unit`` (:attr:`RawEvents.epoch_unit`) goes into the message
    on timestamps out of range. ``label_delay`` (``data.policy.label_delay``) and ``data.schema.label_time``
    say when each label became known (:func:`label_known`). Returns one row per kept session
    (``session_id``, ``start_time``, ``end_time``, ``n_events``, ``label``, ``label_known``) and what the
    policies dropped. ``on_unlabeled=keep`` keeps sessions without a label, with a null label: the split
    decides their fate (:func:`seqfraud.preprocess.drop_unlabeled`). ``rows`` (the normalized events, the scan
    they came from and its files), where the engine has them, give bad values an example and, of several
    files, the first bad row's (:func:`first_bad`).
    """

    def first(where: pl.Expr, column: str) -> str:
        return "" if rows is None else first_bad(rows[0], where, rows[1], column, (rows[2], schema))

    for name, value, allowed in (
        ("on_unlabeled", on_unlabeled, UNLABELED_POLICIES),
        ("on_orphan_labels", on_orphan_labels, ("error", "drop")),
        ("on_mixed_labels", on_mixed_labels, MIXED_LABEL_POLICIES),
    ):
        if value not in allowed:
            raise ValueError(f"data.policy.{name} must be one of {', '.join(allowed)}; got {value!r}")
    delay_us = label_delay_us(label_delay)
    report: dict = {}
    origin = unit_origin(schema, epoch_unit)
    if int(sessions["n_events"].sum()) == 0:
        raise DataValidationError(f"{source}: the event log is empty")
    with BadRows(source) as bad:
        null_sid = sessions.filter(pl.col(S.SESSION_ID).is_null())
        if null_sid.height:
            bad.add(
                schema.session_id,
                int(null_sid["n_events"][0]),
                "have a null session id",
                first(pl.col(S.SESSION_ID).is_null(), schema.session_id),
            )
        if n := int(sessions.filter(blank(S.SESSION_ID))["n_events"].sum()):
            bad.add(schema.session_id, n, BLANK_ID, first(blank(S.SESSION_ID), schema.session_id))
        for c in schema.entities:
            if f"n_blank_{c}" in sessions.columns and (n := int(sessions[f"n_blank_{c}"].sum())):
                bad.add(c, n, BLANK_ENTITY, first(blank(c, session=False), c))
        if n := int(sessions["n_event_type_null"].sum()):
            bad.add(
                schema.event_type,
                n,
                NULL_EVENT_TYPE,
                first(pl.col(schema.event_type).is_null(), schema.event_type),
            )
        for col, what, where in (
            ("n_ts_null", "have a null timestamp", pl.col(S.TS_PRESENT).not_()),
            ("n_ts_unparsed", UNPARSED, TS_UNPARSED_ROWS),
            ("n_ts_out_of_range", out_of_range_text(schema, epoch_unit, origin), pl.col(S.TS_OUT_OF_RANGE)),
        ):
            if n := int(sessions[col].sum()):
                example = first(where, schema.timestamp)
                if col == "n_ts_unparsed" and re.match(r" \(first: '[0-9]+'", example):
                    # A JavaScript client's epochs kept as strings, read as text (dogfood 245).
                    example += (
                        "; integer epochs written as text: send them as numbers (JSON, Parquet integers)"
                    )
                bad.add(schema.timestamp, n, what, example)
        if labels is None and (n := int(sessions["n_label_bad"].sum())):
            bad.add(schema.label, n, "have a label that is not 0/1", first(LABEL_NOT_01_ROWS, schema.label))
        if labels is None and (lt := schema.label_time):
            if n := int(sessions["n_label_time_unparsed"].sum()):
                bad.add(lt, n, LABEL_TIME_UNPARSED, first(LABEL_TIME_UNPARSED_ROWS, lt))
            if n := int(sessions["n_label_time_out_of_range"].sum()):
                bad.add(
                    lt,
                    n,
                    out_of_range_text(schema, epoch_unit, origin, "label time"),
                    first(pl.col(S.LABEL_TIME_OUT_OF_RANGE), lt),
                )
    # Label times on the events, all naive beside event times with offsets, are said as a label table's (review 226).
    zoned = "n_ts_naive" in sessions.columns and sessions["n_ts_naive"].sum() < sessions["n_ts_stamped"].sum()
    for key, name, column, flag, moves, elsewhere in (
        ("naive_timestamps", "ts", schema.timestamp, S.TS_NAIVE, EVENT_MOVES, None),
        (
            NAIVE_LABEL_TIMES,
            "label_time",
            schema.label_time,
            S.LABEL_TIME_NAIVE,
            LABEL_MOVES,
            EVENTS_ZONED if zoned else None,
        ),
    ):
        if f"n_{name}_naive" in sessions.columns and column:
            counts = int(sessions[f"n_{name}_naive"].sum()), int(sessions[f"n_{name}_stamped"].sum())
            first_naive = functools.partial(first, pl.col(flag), column)
            say_naive(report, key, source, column, counts, first_naive, moves, elsewhere)
    if "n_event_id_repeats" in sessions.columns:
        refuse_repeated_ids(sessions, source, str(schema.event_id))
    report["duplicate_rows"] = int(sessions["n_duplicate_rows"].sum())
    if report["duplicate_rows"]:  # counted and said, not dropped: a session may really repeat an event
        say_repeated_rows(
            source,
            report["duplicate_rows"],
            same_contents(rows[2]) if rows is not None else [],
            schema.event_id,  # set and counted here: the log left its column out
        )

    if labels is None:
        mixed = sessions.filter(pl.col("label_min") != pl.col("label_max"))
        if mixed.height and on_mixed_labels == "error":
            fail_rows(
                source,
                schema.label,
                int(mixed["n_events"].sum()),
                f"belong to {mixed.height:,} session(s) whose label is not constant (e.g. session "
                f"{mixed[S.SESSION_ID].min()!r}). Where the log labels events, not sessions (a fraud flag on the "
                "fraudulent transactions), set data.policy.on_mixed_labels=any: a session is then fraud when any "
                "of its events is",
            )
        if mixed.height:
            report["mixed_label_sessions"] = mixed.height
            log.info(
                "%s: %s session(s) hold events labelled 0 and 1: labelled 1 (data.policy.on_mixed_labels=any)",
                source,
                f"{mixed.height:,}",
            )
        partial = sessions.filter((pl.col("n_label_null") > 0) & pl.col("label_min").is_not_null())
        if partial.height:
            held = pl.col(S.LABEL).is_null() & pl.col(S.SESSION_ID).is_in(partial[S.SESSION_ID].implode())
            fail_rows(
                source,
                schema.label,
                int(partial["n_label_null"].sum()),
                f"have a null label inside {partial.height:,} otherwise labelled session(s)",
                first(held, schema.label),  # its session and file (dogfood 203: a folder's, with neither)
            )
        sessions = sessions.with_columns(pl.col("label_max").cast(pl.Int8).alias(S.LABEL))
        label_source = source
        if schema.label_time:
            # A fraud session under on_mixed_labels=any is known from its first fraud event's label time, the
            # others' label times aside (a log that dates the chargebacks of its fraudulent transactions alone).
            any_fraud = pl.lit(on_mixed_labels == "any") & (pl.col("label_max") == 1)
            _check_label_times_on_events(sessions, schema, source, any_fraud.not_(), on_mixed_labels == "any")
            known = (
                pl.when(any_fraud).then(pl.col("label_time_min_positive")).otherwise(pl.col("label_time_min"))
            )
            if n := int(sessions.filter(any_fraud)["n_label_time_not_fraud"].sum()):  # read by nothing: said
                log.warning(
                    "%s: column %r: %s event row(s) labelled 0 in fraud sessions carry a label time, which is not "
                    "read: under data.policy.on_mixed_labels=any a fraud session's label is known from its fraud "
                    "events' earliest label time",
                    source,
                    schema.label_time,
                    f"{n:,}",
                )
            sessions = sessions.with_columns(known.alias(S.LABEL_TIME_US))
    else:
        table, label_source = labels
        orphans = table.join(sessions, on=S.SESSION_ID, how="anti")
        if orphans.height:
            named = f"{label_source}: column {schema.session_id!r}"
            # A table that matches no session is the wrong table or ids written another way, whatever the policy
            # (dropping would leave nothing to train on).
            if orphans.height == table.height:
                raise DataValidationError(
                    f"{named}: none of its {table.height:,} labelled session(s) has events in {source}: "
                    + unmatched_ids_text(orphans[S.SESSION_ID], sessions[S.SESSION_ID])
                )
            if odd := refuse_misread_orphans(
                orphans, sessions[S.SESSION_ID], named, source, on_orphan_labels, on_unlabeled == "negative"
            ):
                log.warning("%s: the %s orphan label(s) dropped%s", label_source, f"{orphans.height:,}", odd)
            report["orphan_labels_dropped"] = orphans.height
        sessions = sessions.join(table, on=S.SESSION_ID, how="left")
        if schema.label_time and S.LABEL_TIME_US not in table.columns:
            raise ValueError(
                "the label table was read without label times: pass read_labels a timestamp_unit"
            )

    unlabeled = sessions.filter(pl.col(S.LABEL).is_null())
    if unlabeled.height and on_unlabeled != "keep":
        n_rows = int(unlabeled["n_events"].sum())
        if on_unlabeled == "error":
            raise DataValidationError(
                f"{source}: column {schema.label!r}: {n_rows:,} event row(s) in {unlabeled.height:,} session(s) have "
                f"no label in {label_source} (set data.policy.on_unlabeled=drop to leave them out, keep to "
                "pretrain on them, or negative where the label table lists the frauds alone)"
            )
        if on_unlabeled == "negative":
            # Each such label is known at its session's end plus data.policy.label_delay (never without one).
            report["unlabeled_sessions_negative"] = unlabeled.height
            legit = int((sessions[S.LABEL] == 0).sum())
            # More cleared sessions than frauds: a review table; a reversed chargeback or two written 0 are a list
            # of frauds still (review 205).
            reviewed = legit > int((sessions[S.LABEL] == 1).sum())
            # A review table (frauds and cleared sessions) is no list of frauds: its unlisted sessions are not
            # reviewed yet, and read as legitimate they took a log's test PR-AUC from 0.90 to 0.33 (dogfood 201).
            (log.warning if reviewed else log.info)(
                "%s: %s session(s) absent from %s read as legitimate (data.policy.on_unlabeled=negative)%s",
                source,
                f"{unlabeled.height:,}",
                label_source,
                f"; the table labels {legit:,} session(s) legitimate (0) itself: where it is a review table, the "
                "sessions it leaves out are not reviewed yet rather than legitimate, and "
                "data.policy.on_unlabeled=drop (or keep) reads them so"
                if reviewed
                else "",
            )
            sessions = sessions.with_columns(pl.col(S.LABEL).fill_null(0))
        else:
            report["unlabeled_sessions_dropped"] = unlabeled.height
            report["unlabeled_events_dropped"] = n_rows
            sessions = sessions.filter(pl.col(S.LABEL).is_not_null())

    sessions = label_known(
        sessions,
        schema,
        label_source,
        delay_us,
        rows_are_events=labels is None,
        absent_is_negative=on_unlabeled == "negative",
    )
    sessions = sessions.select(
        S.SESSION_ID,
        S.START_TIME,
        S.END_TIME,
        pl.col("n_events").cast(pl.Int64),
        # Events with the time of an earlier event of their session that differ from it (TIED_SHARE).
        (pl.col("n_events") - pl.col("n_duplicate_rows") - pl.col("n_times")).cast(pl.Int64).alias("n_tied"),
        pl.col("n_whole_seconds").cast(pl.Int64),  # WHOLE_SECONDS
        S.FIRST_TYPE,
        pl.col(S.LABEL).cast(pl.Int8),
        pl.col(S.LABEL_KNOWN).cast(pl.Int64),
        pl.col(S.LEGIT_FROM).cast(pl.Int64),
    )
    report |= {
        "n_events": int(sessions["n_events"].sum()),
        "n_sessions": sessions.height,
        "n_positive_sessions": int(sessions[S.LABEL].sum()),
    }
    if schema.label_time or delay_us is not None:
        never = sessions.filter(pl.col(S.LABEL).is_not_null() & pl.col(S.LABEL_KNOWN).is_null())
        report["labels_never_known"] = never.height
        if never.height:  # e.g. a chargeback date on frauds only: every negative would stay unknown, unsaid
            log.warning(
                "%s: column %r: %s of %s label(s) (%s negative) have no label time, and no data.policy.label_delay "
                "says when they become final: entity risk features and label cutoffs never read them (known_w "
                "then counts only the labels with a time); set data.policy.label_delay",
                label_source,
                schema.label_time,
                f"{never.height:,}",
                f"{sessions[S.LABEL].count():,}",
                f"{int((never[S.LABEL] == 0).sum()):,}",
            )
    if n := sessions[S.LEGIT_FROM].count():  # chargebacks dated after the delay: legitimate until then
        report["labels_known_after_delay"] = n
    return sessions, report


def usable_delay_us(delay_us: int, schema: Schema) -> int:
    """The label delay capped so that no end time in the plausible range overflows when it is added: a later
    label is never known anyway."""
    return min(delay_us, _INT64_MAX - timestamp_range_us(schema)[1])


def label_delay_us(label_delay: str | None) -> int | None:
    """``data.policy.label_delay`` in microseconds, None when unset; a bad duration is a ConfigError."""
    return None if label_delay is None else duration_us(label_delay, "data.policy.label_delay")


ANY_LABEL_TIME_HINT = (
    " (where the log dates the chargebacks of its fraudulent events alone, data.policy.on_mixed_labels=any reads a "
    "fraud session's label time as the earliest of its fraud events')"
)


def _check_label_times_on_events(
    sessions: pl.DataFrame, schema: Schema, source: str, one_per_session: pl.Expr, any_set: bool
) -> None:
    """Label times on the events, from :func:`session_table`'s counts (that they parse and lie in the plausible
    range is :func:`validate_sessions`' first check): one per session, like the label, in the sessions where
    ``one_per_session`` holds. Those refusals point at on_mixed_labels=any where it is not set and would take
    them: in fraud sessions."""

    def hint(refused: pl.DataFrame) -> str:
        return "" if any_set or not (refused["label_max"] == 1).any() else ANY_LABEL_TIME_HINT

    lt = cast(str, schema.label_time)
    sessions = sessions.filter(one_per_session)
    mixed = sessions.filter(pl.col("label_time_min") != pl.col("label_time_max"))
    if mixed.height:
        fail_rows(
            source,
            lt,
            int(mixed["n_events"].sum()),
            f"belong to {mixed.height:,} session(s) whose label time is not constant" + hint(mixed),
        )
    partial = sessions.filter((pl.col("n_label_time_null") > 0) & pl.col("label_time_min").is_not_null())
    if partial.height:
        fail_rows(
            source,
            lt,
            int(partial["n_label_time_null"].sum()),
            f"have a null label time inside {partial.height:,} session(s) that have one on other events"
            + hint(partial),
        )


def label_known(
    sessions: pl.DataFrame,
    schema: Schema,
    label_source: str,
    delay_us: int | None,
    *,
    rows_are_events: bool,
    absent_is_negative: bool,
) -> pl.DataFrame:
    """:data:`~seqfraud.schema.LABEL_KNOWN` of each labelled session: its label time (:data:`S.LABEL_TIME_US`)
    where ``data.schema.label_time`` gives one, else its end plus ``delay_us`` where that is set, else null
    (never known). A label time before the session's first event is an error, and so is a positive label
    that would never be known. A session without a label (``on_unlabeled=keep``) has none to know: null.
    ``rows_are_events``: the label times live on the events, so a session's rows in ``label_source`` are its
    events (else one row of the label table).

    ``absent_is_negative`` (``data.policy.on_unlabeled=negative``): a session the table does not list yet reads as
    legitimate once its end plus the delay has passed, so one whose label is known only later is a known
    legitimate session from then until its label time (:data:`~seqfraud.schema.LEGIT_FROM`): a chargeback dated
    after the delay was read in batch before it came (dogfood 160)."""
    known = pl.lit(None, pl.Int64)
    if schema.label_time:
        lt = pl.col(S.LABEL_TIME_US)

        def rows(frame: pl.DataFrame, dated: bool = False) -> int:
            """The rows of ``frame``'s sessions in the source; with ``dated`` those that carry a label time (under
            on_mixed_labels=any a fraud session's other events may carry none: they were counted: dogfood 51)."""
            if not rows_are_events:
                return frame.height
            undated = int(frame["n_label_time_null"].sum()) if dated else 0
            return int(frame["n_events"].sum()) - undated

        if (early := sessions.filter(lt < pl.col(S.START_TIME))).height:
            refuse_early_label_times(early, label_source, schema.label_time, rows(early, dated=True))
        if delay_us is None:
            blind = sessions.filter(lt.is_null() & (pl.col(S.LABEL) == 1))
            if blind.height:
                fail_rows(
                    label_source,
                    schema.label_time,
                    rows(blind),
                    f"have no label time in {blind.height:,} positive (label 1) session(s), and no "
                    "data.policy.label_delay to fall back on, so those labels would never be known; set "
                    "data.schema.label_time values or data.policy.label_delay",
                )
        known = lt
    legit_from = pl.lit(None, pl.Int64)
    if delay_us is not None:
        final = pl.col(S.END_TIME) + usable_delay_us(delay_us, schema)
        known = pl.coalesce(known, final)
        if absent_is_negative:
            legit_from = pl.when(known > final).then(final)
    labelled = pl.col(S.LABEL).is_not_null()
    return sessions.with_columns(
        pl.when(labelled).then(known).alias(S.LABEL_KNOWN),
        pl.when(labelled).then(legit_from).alias(S.LEGIT_FROM),
    )


ZERO_PADDED_IDS = "zero_padded_ids"  # the report's (and the spec's fit_info) key for zero_padded_ids
# And for whether the log's timestamps carried UTC offsets or were epochs (:func:`zoned_report`); absent where not.
ZONED_TIMESTAMPS = "zoned_timestamps"
ZONED_BY_EPOCHS = "epochs"  # its value where the log's timestamps were integer epochs
INTEGER_IDS = "integer_ids"  # and for integer_ids
LABELS_WITHOUT_COLUMN = "labels_without_column"  # a frauds-only label table that had no label column
FIXED_WIDTH_IDS = "fixed_width_ids"  # and for the digit count of the integer_ids the log wrote at one width
# And for the digit count of the zero-padded ids the log wrote at one width.
PADDED_WIDTH_IDS = "padded_width_ids"
ONE_CASE_IDS = "one_case_ids"  # and for the case of the text ids the log wrote every letter of in one


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
    zero_padded: list[str]  # :func:`zero_padded_ids`, and the entity columns no integer spells (integer_ids)
    integers: dict[str, int | None]  # :func:`integer_ids`
    forms: IdForms  # :func:`integer_ids`: the text id columns of one width or one case

    def id_forms(self) -> dict[str, Any]:
        """The report's record of :attr:`zero_padded` and :attr:`integers` (and their widths, and
        :attr:`forms`), where there are any."""
        widths = {c: w for c, w in self.integers.items() if w is not None}
        forms = (
            (ZERO_PADDED_IDS, self.zero_padded),
            (INTEGER_IDS, list(self.integers)),
            (FIXED_WIDTH_IDS, widths),
            (PADDED_WIDTH_IDS, dict(self.forms.widths)),
            (ONE_CASE_IDS, dict(self.forms.cases)),
        )
        return {k: v for k, v in forms if v}


def id_columns(schema: Schema) -> list[str]:
    """The columns whose values name things, so that one written two ways is two things: the session id, which
    keys the scores, the online state and the labels (a zero-padded log's ids scored as integers came out as 95460
    for 095460, joining no case file, and /events opened 4512 beside 004512: dogfood 200), the entities (one
    session's device written 0375 and 375 is two devices), and the event id, which online scoring takes a resent
    event by (0775 resent as 775 was scored as a new event: dogfood 102)."""
    return [schema.session_id, *schema.entities, *([schema.event_id] if schema.event_id else [])]


def zero_padded_ids(raw: pl.LazyFrame, have: pl.Schema, schema: Schema) -> list[str]:
    """The :func:`id_columns` that the log writes as text with leading zeros (``00002037``), judged from each one's
    first values: an integer sent for them later has lost its zeros, so it meets no history or label (dogfood 63),
    and scoring refuses it (:func:`refuse_integer_ids`). :func:`integer_ids` adds the entity columns no integer
    spells. The first values, not rows: a payee column null on the analytics events that a folder's first file
    held was judged on nulls alone, and its payees sent as integers scored unsaid (dogfood 227)."""
    # Text, or pandas' category dtype written to Parquet (review 66).
    ids = [c for c in id_columns(schema) if c in have and _textual(have[c])]
    if not ids:
        return []
    padded = raw.select(
        pl.col(c).drop_nulls().head(CSV_INFER_ROWS).cast(pl.String).str.contains(r"^0[0-9]+$").any()
        for c in ids
    ).collect(engine="streaming")
    return [c for c in ids if padded[c][0]]


def _nfkc(value: str) -> str:
    return unicodedata.normalize("NFKC", value)


# The distinct values of an id column that say_respelt_ids reads whole; past it, a sample of whole families.
RESPELT_VALUES = 250_000


def say_respelt_ids(raw: pl.LazyFrame, have: pl.Schema, schema: Schema, source: str) -> None:
    """Warn of session ids and entity values written two ways, among the log's distinct values (its first 100,000
    rows alone missed a month's export that upper-cased a training folder's photo hashes: dogfood 224): in
    another case, where each value keeps to one (a base62 id's ``0gYj`` and ``0gyJ`` are two: review 208), or
    grouped by spaces or dashes beside the same characters ungrouped (``DE89 3704`` and ``DE893704``; ``10-11`` and
    ``101-1`` are two), or in another Unicode form (an accent as a mark of its own: NFKC). Each is a session or an entity of its own, unsaid (dogfood 206: the after-sales events'
    order ids upper-cased, 6,000 orders read as 8,007 sessions, every return cut off, test PR-AUC 0.97 to 0.35;
    dogfood 203: device hashes upper-cased by one client; dogfood 204: one channel's IBANs in groups of four),
    where a categorical's respelt values are said. Not merged. Training and batch scoring both say it."""
    columns = [c for c in (schema.session_id, *schema.entities) if c in have and _textual(have[c])]
    if not columns:
        return
    with reading(source):
        sizes = raw.select(pl.col(c).approx_n_unique() for c in columns).collect().row(0)
        # Past RESPELT_VALUES distinct values, the families of one in ``every`` folded spellings, whole: every
        # distinct value held 0.33 GB a million, on every scoring run (review 226).
        every = {c: max(1, math.ceil(n / RESPELT_VALUES)) for c, n in zip(columns, sizes)}
        folded = {
            c: pl.col(c)
            .cast(pl.String)
            .str.normalize("NFKC")
            .str.to_lowercase()
            .str.replace_all(r"[\s\-]", "")
            .str.strip_chars_start("0")
            for c in columns
        }
        distinct = raw.select(
            pl.col(c)
            .cast(pl.String)
            .filter(folded[c].hash(0) % every[c] == 0 if every[c] > 1 else pl.lit(True))
            .drop_nulls()
            .unique()
            .implode()
            for c in columns
        ).collect()
    for c in columns:
        values = pl.DataFrame({c: distinct[c][0]})
        # Unicode's compatibility forms aside, as a categorical's respelt values are read (dogfood 230: an address
        # with its umlaut as a mark of its own met none of the history, unsaid).
        v = pl.col(c).str.normalize("NFKC")
        # Per value: one of both cases keeps it (a base62 id's '0gYj' beside '0gyJ': review 208), where a column-wide
        # rule let one 'NaN' among upper-cased hex ids hide them all (review 226).
        single = ~(v.str.contains("[a-z]") & v.str.contains("[A-Z]"))
        # Spaces and dashes between letters or digits (a leading '-1' is no grouping of '1': review 208), twice for
        # the groups that share a character ('a-b-c').
        inner = r"([0-9A-Za-z])[\s\-]+([0-9A-Za-z])"
        bare = v.str.replace_all(inner, "${1}${2}").str.replace_all(inner, "${1}${2}")
        form = v.str.replace_all(r"[\s\-]+", "-")  # where the groups fall, whatever marks them
        # Digits alone beside the same digits zero-padded: one written back by a spreadsheet (dogfood 216: a
        # training folder of routing numbers as 036106101 and 36106101 trained on two of each, unsaid).
        digits, unpadded = v.str.contains(_DIGITS), v.str.strip_chars_start("0")
        keyed = values.with_columns(
            key=pl.when(digits).then(unpadded).when(single).then(bare.str.to_lowercase()).otherwise(bare),
            form=pl.when(digits).then(unpadded).when(single).then(form.str.to_lowercase()).otherwise(form),
            grouped=v.str.contains(inner),
        )
        # One value written two ways: grouped beside ungrouped, or the same groups in another case or marked
        # otherwise; '10-11' and '101-1' group the same characters apart, two ids.
        n = pl.len().over("key")
        alike = keyed.filter(
            (n > 1)
            & ((pl.col("grouped").n_unique().over("key") > 1) | (pl.col("form").n_unique().over("key") < n))
        ).sort("key", c)
        if alike.height:
            first = alike.filter(pl.col("key") == alike["key"][0])[c].to_list()
            what = (
                ("session id column", "a session of its own: one session's events split in two")
                if c == schema.session_id
                else ("entity column", "an entity of its own, and the features read them apart")
            )
            log.warning(
                "%s: %s %r: %s value(s)%s are written two ways, in another case, grouped by spaces or dashes, "
                "with leading zeros or in another Unicode form (e.g. %s): each is %s; write each one way in the log "
                "(and as the service is sent it)",
                source,
                what[0],
                c,
                f"{alike['key'].n_unique():,}",
                f" (of a sample of 1 in {every[c]:,} of its values)" if every[c] > 1 else "",
                # Escaped where they read alike (dogfood 230: 'köln' beside 'köln').
                " and ".join(map(repr if len(set(map(_nfkc, first[:2]))) > 1 else ascii, first[:2])),
                what[1],
            )


def integer_ids(
    raw: pl.LazyFrame, have: pl.Schema, schema: Schema, source: str, padded: Sequence[str], files: list[str]
) -> tuple[dict[str, int | None], list[str], IdForms]:
    """The :func:`id_columns` that the log types as integers, or writes as integers in text (a CSV log's ids are
    read as text: dogfood 91), ``padded`` (:func:`zero_padded_ids`) aside: a later file that writes them as decimals
    (``3278.0``, a pandas export whose integer column with a gap became float, read back from CSV as text) meets no
    history, label or shared entity written ``3278`` (dogfood 72), and scoring refuses it
    (:func:`refuse_rewritten_ids`). Text columns are read whole: one of integers that writes some as decimals holds
    two ids of one entity, and is refused here. A text column with some ids zero-padded past the values
    :func:`zero_padded_ids` reads is text, not integers: its ids are keys as written.

    Each to the one number of digits its text wrote every id with, where it did (else None): a code of fixed
    width, an IMEI's 15 digits, whose next value may begin with 0 (an iPhone's '01...'): not an integer that
    lost its zeros but another code, which scoring refused, and a whole batch with it (dogfood 190).

    And the text entity columns of which no value is an integer's digits (``+447700900123``, ``10.0.0.7``, a
    UUID), whose integers scoring refuses as a zero-padded column's: a spreadsheet's ``447700900123`` met no phone
    of the history (dogfood 210). Read whole: a column whose integers come after the first rows holds them
    (review 213).

    And the :class:`IdForms` that scoring says other forms of (where an integer of them is refused): the zero-padded
    ones (``padded``) all of whose values are digits of one width, as routing numbers, to that width (a spreadsheet's
    ``36106101`` for ``036106101`` met no mule account of the history, scores moved up to 0.33: dogfood 216), and
    those of many values whose letters are all in one case, to that case."""
    ids = [c for c in id_columns(schema) if c in have]
    text = [c for c in ids if _textual(have[c])]
    # Per text column, by name: its rows, those written as integers, those as decimals, the first decimal and its
    # row, those positive, their fewest and most digits, and about how many values.
    written: dict[str, dict[str, Any]] = {}
    if text:
        values = [pl.col(c).cast(pl.String) for c in text]
        with reading(source):
            counts = (
                raw.select(
                    pl.struct(
                        v.count().alias("n"),
                        v.str.contains(INTEGER_TEXT).sum().alias("integers"),
                        v.str.contains(DECIMAL_INTEGER).sum().alias("decimals"),
                        v.filter(v.str.contains(DECIMAL_INTEGER)).first().alias("first"),
                        v.str.contains(DECIMAL_INTEGER).arg_true().first().alias("first_row"),
                        v.str.contains(_POSITIVE).sum().alias("positive"),
                        v.filter(v.str.contains(_POSITIVE)).str.len_bytes().min().alias("narrowest"),
                        v.filter(v.str.contains(_POSITIVE)).str.len_bytes().max().alias("widest"),
                        *(
                            [  # the zero-padded ones' digits, for padded_widths
                                v.str.contains(_DIGITS).sum().alias("digits"),
                                v.filter(v.str.contains(_DIGITS))
                                .str.len_bytes()
                                .min()
                                .alias("digits_narrowest"),
                                v.filter(v.str.contains(_DIGITS))
                                .str.len_bytes()
                                .max()
                                .alias("digits_widest"),
                            ]
                            if c in padded
                            else []
                        ),
                        v.approx_n_unique().alias("values"),
                        *(v.str.contains(o).sum().alias(f"has_{o}") for o in _OTHER_CASE.values()),
                    ).alias(c)
                    for c, v in zip(text, values)
                )
                .collect(engine="streaming")
                .row(0, named=True)
            )
        written = {c: counts[c] for c in text}
    padded_widths = {
        c: w["digits_widest"]
        for c, w in written.items()
        if c in padded
        and 0 < w["digits"] == w["n"]
        and w["digits_narrowest"] == w["digits_widest"] >= FIXED_WIDTH_DIGITS
        and w["values"] >= FIXED_WIDTH_VALUES
    }
    # Many values, most of them with letters and every letter in one case: hex device ids, e-mail addresses
    # lower-cased at the source (one 'unknown' among numbers is no evidence of a case: review 222).
    one_case = {
        c: case
        for c, w in written.items()
        for case, own in (("upper", "[A-Z]"), ("lower", "[a-z]"))
        if w["values"] >= FIXED_WIDTH_VALUES
        and 2 * w[f"has_{own}"] > w["n"]
        and not w[f"has_{_OTHER_CASE[case]}"]
    }
    written = {c: w for c, w in written.items() if c not in padded}
    for c, w in written.items():
        if w["integers"] and w["decimals"] and w["integers"] + w["decimals"] == w["n"]:
            held = f"its other {w['integers']:,} row(s) hold integers"
            # The file, of a folder's (dogfood 204: a month's CSV named as the folder of 7).
            f = file_of_row(files, schema, w["first_row"])
            where = f"{source} (first in {f})" if f else source
            raise DataValidationError(rewritten_ids_said(where, c, w["decimals"], str(w["first"]), held))
    out: dict[str, int | None] = {c: None for c in ids if have[c].is_integer()}
    for c, w in written.items():
        if 0 < w["integers"] == w["n"]:
            # Many codes of one width, as an IMEI's; ids 10 to 99 or two sessions' are no evidence (review 202).
            fixed = (
                w["positive"] == w["n"]
                and w["narrowest"] == w["widest"]
                and w["values"] >= FIXED_WIDTH_VALUES
            )
            out[c] = w["widest"] if fixed and w["widest"] >= FIXED_WIDTH_DIGITS else None
    no_integer = [
        c for c in schema.entities if c in written and written[c]["n"] and not written[c]["integers"]
    ]
    return {c: out[c] for c in ids if c in out}, no_integer, IdForms(padded_widths, one_case)


# An integer as text, written as Polars writes an integer column: 3278, -7, 0.
INTEGER_TEXT = r"^-?(?:0|[1-9][0-9]*)$"
_POSITIVE = r"^[1-9][0-9]*$"
_DIGITS = r"^[0-9]+$"
# A text id column of integers is a code of fixed width (integer_ids) where at least this many values all have
# one number of digits, at least this many.
FIXED_WIDTH_VALUES, FIXED_WIDTH_DIGITS = 20, 4
# An integer written as a decimal, as text: 3278.0, -7.00.
DECIMAL_INTEGER = r"^[+-]?[0-9]+\.0*$"
# Digits other than ASCII's that Python's int() reads, named one by one: full-width, Arabic-Indic, extended
# Arabic-Indic, Devanagari. A pattern's \d is Unicode's digits, and Python's re and Polars' regex know different
# Unicode versions (review 130).
OTHER_DIGITS = r"\uFF10-\uFF19\u0660-\u0669\u06F0-\u06F9\u0966-\u096F"
# An integer as text written otherwise than INTEGER_TEXT: a decimal, zero-padded (03278: terminal and acquirer
# exports pad), signed (+3278, -0), in OTHER_DIGITS or with underscores (3_278), the last two as int() reads
# them (dogfood 126).
REWRITTEN_INTEGER = (
    r"^(?:[+-]?[0-9]+\.0*|\+[0-9]+|-?0[0-9]+|-0"
    rf"|[+-]?[0-9{OTHER_DIGITS}]*[{OTHER_DIGITS}][0-9{OTHER_DIGITS}]*|[+-]?[0-9]+(?:_[0-9]+)+)$"
)
_REWRITTEN = re.compile(REWRITTEN_INTEGER)  # for one value: Python's re and Polars' agree on this pattern


def rewritten_id(value: str, width: int | None) -> bool:
    """Whether ``value`` writes an integer id otherwise than its digits (:data:`REWRITTEN_INTEGER`), of a column
    whose training ids all had ``width`` digits where given (:func:`integer_ids`): there a leading zero at that
    width is another code, not a rewriting."""
    return bool(_REWRITTEN.match(value)) and not (
        width is not None and len(value) == width and value.isascii() and value.isdigit()
    )


def rewritten_ids(value: pl.Expr, width: int | None) -> pl.Expr:
    """:func:`rewritten_id` of a column."""
    said = value.str.contains(REWRITTEN_INTEGER)
    return said if width is None else said & ~value.str.contains(f"^[0-9]{{{width}}}$")


def rewritten_ids_said(source: str, column: str, n: int, first: str, held: str) -> str:
    """The one wording of integer ids written otherwise than their digits (:data:`REWRITTEN_INTEGER`) where
    ``held`` (the training log, or the column's other rows) writes them plainly."""
    plain = str(int(Decimal(first)))
    return (
        f"{source}: column {column!r}: {n:,} row(s) hold an integer id written otherwise than as its digits "
        f"(first: {first!r}, the id {plain}), but {held}: it would be another id than {plain}, meeting none of its "
        f"events, labels or shared entities. Write the integers as their digits alone (pandas turns an integer column with a missing value "
        "into floats: read it with dtype='Int64'; strip an export's leading zeros)"
    )


# Per case a text id column's letters were all written in, those of the other (integer_ids: ASCII letters).
_OTHER_CASE = {"upper": "[a-z]", "lower": "[A-Z]"}
_OTHER_CASE_RE = {case: re.compile(letters) for case, letters in _OTHER_CASE.items()}


@dataclass(frozen=True)
class IdForms:
    """How the training log wrote every value of some text id columns (:func:`integer_ids`), where scoring says an
    id written otherwise (:meth:`said`): zero-padded digits of one width (``widths``), or every letter in one case
    (``cases``: "upper" or "lower"). Most often such an id was rewritten on its way (zeros lost by a spreadsheet:
    dogfood 216; hex ids upper-cased by one client: dogfoods 203, 206), and it meets none of the events, labels or
    shared entities of the log's form; but a code of another width or case may be new (review 217), so it is said,
    not refused."""

    widths: Mapping[str, int] = field(default_factory=dict)
    cases: Mapping[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.widths or self.cases)

    def columns(self) -> list[str]:
        return list(dict.fromkeys([*self.widths, *self.cases]))

    def keys(self, column: str) -> list[str]:
        """The keys :meth:`said` says ``column``'s other forms by."""
        return [
            f"{kind} {column}"
            for kind, of in (("unpadded", self.widths), ("recased", self.cases))
            if column in of
        ]

    def off(self, column: str, value: str) -> bool:
        """Whether one value of ``column`` is written otherwise (:meth:`said` of a column)."""
        width, case = self.widths.get(column), self.cases.get(column)
        return (width is not None and len(value) < width and value.isascii() and value.isdigit()) or (
            case is not None and _OTHER_CASE_RE[case].search(value) is not None
        )

    def said(
        self,
        events: pl.DataFrame,
        names: Mapping[str, str],
        source: str,
        effect: str = "meeting none of the events, labels or shared entities written in the log's form",
    ) -> list[tuple[str, str]]:
        """What to say of ``events``' ids written otherwise, in ``names`` (the events' column of each, to its name
        in the log): per column and form, a key to say it once by (one key for all hid a re-cased entity behind a
        session id's lost zeros for the life of a service: review 222) and the message, which says the ``effect``
        of another id (an event id's: a resend counts as a new event)."""
        said = []
        for column, name in names.items():
            v = pl.col(column)
            if (width := self.widths.get(name)) is not None:
                bad = events.filter(v.str.contains(_DIGITS) & (v.str.len_bytes() < width))[column]
                if len(bad):
                    said.append(
                        (
                            f"unpadded {name}",
                            (
                                f"{source}: column {name!r}: {len(bad):,} row(s) hold an id of fewer digits than the "
                                f"{width} the model's training log wrote each with (first: {bad[0]!r}, in that form "
                                f"{bad[0].zfill(width)!r}): if a spreadsheet or a reader that took the column as numbers "
                                f"lost its leading zeros, it is another id, {effect}; restore them, or read the column "
                                "as text at the source"
                            ),
                        )
                    )
            if (case := self.cases.get(name)) is not None:
                bad = events.filter(v.str.contains(_OTHER_CASE[case]))[column]
                if len(bad):
                    first = str(bad[0])
                    said.append(
                        (
                            f"recased {name}",
                            (
                                f"{source}: column {name!r}: {len(bad):,} row(s) hold an id with letters in another "
                                f"case than the {case} case the model's training log wrote every letter of it in (first: "
                                f"{first!r}, in that form {first.upper() if case == 'upper' else first.lower()!r}): it "
                                f"is another id, {effect}; write the ids as the log does"
                            ),
                        )
                    )
        return said


def refuse_rewritten_ids(
    events: pl.DataFrame, names: Mapping[str, str], source: str, integer_typed: Mapping[str, int | None]
) -> None:
    """Fails on text ids written otherwise than their digits (3278.0, 03278, +3278) in ``names`` (the events'
    column of each, to its name in the log): the columns the model's training log typed as integers
    (``integer_typed``: :func:`integer_ids`), where such an id is another entity's key (dogfoods 72 and 102)."""
    for column, name in names.items():
        bad = events.filter(rewritten_ids(pl.col(column), integer_typed.get(name)))[column]
        if len(bad):
            raise DataValidationError(
                rewritten_ids_said(
                    source, name, len(bad), bad[0], "the model's training log held integers there"
                )
            )


def integer_columns(have: pl.Schema) -> list[str]:
    return [c for c, dtype in have.items() if dtype.is_integer()]


def _textual(dtype: pl.DataType) -> bool:
    return dtype in (pl.String, pl.Categorical) or isinstance(dtype, pl.Enum)


def refuse_integer_ids(integers: Sequence[str], padded: Sequence[str], source: str) -> None:
    """``integers`` (columns holding integers) among the columns the model's training log wrote as text no integer
    spells (:func:`zero_padded_ids`)."""
    if bad := [c for c in padded if c in integers]:
        raise DataValidationError(
            f"{source}: column {bad[0]!r} holds integers, but the model's training log wrote its values as text "
            "that no integer spells (with leading zeros as 00002037, a sign as +447700900123, or other characters): "
            "an integer has lost them, another id than the text, meeting none of its events, labels or shared "
            "entities; read the column as text (in pandas, dtype=str), or send it as a JSON string"
        )


def zoned_report(table: pl.DataFrame, dtype: pl.DataType) -> dict[str, bool | str]:
    """The report's :data:`ZONED_TIMESTAMPS`, where a log's timestamps (``dtype``; ``table``: its
    :func:`session_table`) carried UTC offsets: strings not all naive, or datetimes with a zone; or were integer
    epochs, instants as those are (dogfood 216: a model trained on epoch milliseconds scored local wall-clock
    strings, read as UTC hours off and reordered across a DST change, without a word). Scoring warns of naive
    times sent to a model trained on them (dogfood 91: a client that drops every offset), as it does of naive times
    among zoned ones."""
    if dtype.is_integer():  # "epochs": a naive datetime converted from them is the same instant, and not said
        return {ZONED_TIMESTAMPS: ZONED_BY_EPOCHS}
    if "n_ts_naive" in table.columns:
        zoned = int(table["n_ts_naive"].sum()) < int(table["n_ts_stamped"].sum())
    else:
        zoned = isinstance(dtype, pl.Datetime) and dtype.time_zone is not None
    return {ZONED_TIMESTAMPS: True} if zoned else {}


def inspect_events(events_path: str, schema: Schema, labels_path: str | None) -> RawEvents:
    """Footers and the first rows only: emptiness, columns, types and the timestamp unit, for every engine; and,
    where the events carry label times as datetimes, those times and their sessions' ids, read whole."""
    raw, source = scan_table(events_path, schema)
    label_on_events = labels_path is None
    with reading(source):
        if raw.head(1).collect().height == 0:
            raise DataValidationError(f"{source}: the event log is empty")
        have = check_columns(raw, schema, source, with_label=label_on_events)
        unit = detect_timestamp_unit(raw, schema, have[schema.timestamp])
        padded = zero_padded_ids(raw, have, schema)
    if schema.event_id and schema.event_id not in have:
        # A log without ids may train a model that takes them online; a misspelt name trained and exported
        # unsaid, and the service refused every event (dogfood 221).
        log.warning(
            "%s: no column %r (data.schema.event_id)%s: training reads every row as an event, and the model "
            "requires the id of each event online (POST /events)",
            source,
            schema.event_id,
            did_you_mean(schema.event_id, [c for c in have if c not in schema.named]),
        )
    files = resolve_paths(events_path, warn=False)  # scan_table said what it left out
    integers, no_integer, forms = integer_ids(raw, have, schema, source, padded, files)
    padded = [c for c in id_columns(schema) if c in padded or c in no_integer]
    if label_on_events and schema.label_time:
        check_label_time_unit(source, schema, have[schema.label_time], unit)
        say_dates_as_datetimes(raw, have, schema.label_time, source, schema.session_id)
    epoch_unit = unit if have[schema.timestamp].is_integer() else None
    return RawEvents(raw, source, files, have, unit, label_on_events, epoch_unit, padded, integers, forms)


def load_events(
    events_path: str,
    schema: Schema,
    labels_path: str | None = None,
    *,
    on_unlabeled: str = "error",
    on_orphan_labels: str = "error",
    on_mixed_labels: str = "error",
    label_delay: str | None = None,
) -> LoadedEvents:
    """Scan, type-check, normalize and validate an event log; the returned events carry ``label`` and the
    entity columns (as strings).

    Policies (see :func:`validate_sessions`): ``on_unlabeled`` (``error``, ``drop``, ``keep`` or ``negative``) for sessions
    whose events have no label, ``on_orphan_labels`` for labelled sessions that have no events and
    ``on_mixed_labels`` (``error`` or ``any``) for sessions whose events' labels disagree; whatever a
    policy drops is counted in ``report``; kept sessions carry a null label. ``label_delay``
    (``data.policy.label_delay``, e.g. ``30d``) and ``data.schema.label_time`` give the sessions table's
    ``label_known`` (:func:`label_known`).
    """
    label_delay_us(label_delay)  # a bad duration fails before the data is read
    raw = inspect_events(events_path, schema, labels_path)
    say_respelt_ids(raw.frame, raw.columns, schema, raw.source)  # here, not in inspect_events: said once
    source, unit = raw.source, raw.timestamp_unit
    events = normalize(raw.frame, schema, raw.columns, unit, with_label=raw.label_on_events, naive_flag=True)
    label_time_on_events = raw.label_on_events and schema.label_time is not None
    with_ids = schema.event_id in raw.columns
    with reading(source):
        table = session_table(
            events,
            schema.event_type,
            with_label=raw.label_on_events,
            with_label_time=label_time_on_events,
            with_event_id=with_ids,
            entities=schema.entities,
        ).collect(engine="streaming")
    # None iff raw.label_on_events
    counted: dict = {}  # what read_labels counts for the report
    zoned = zoned_report(table, raw.columns[schema.timestamp])
    labels = (
        None
        if labels_path is None
        else training_labels(
            labels_path, schema, unit, on_unlabeled, counted, zoned.get(ZONED_TIMESTAMPS, False)
        )
    )
    sessions, report = validate_sessions(
        table,
        schema,
        source,
        labels,
        on_unlabeled=on_unlabeled,
        on_orphan_labels=on_orphan_labels,
        on_mixed_labels=on_mixed_labels,
        epoch_unit=raw.epoch_unit,
        label_delay=label_delay,
        rows=(events, raw.frame, raw.files),
    )
    if labels is not None or "mixed_label_sessions" in report:
        # The session's label on each event. A lookup, not a join: projection pushdown drops it from every query
        # that never reads the label (fitting the spec, the aggregates), which a join cannot, and it keeps the
        # scan's row order.
        events = events.with_columns(
            pl.col(S.SESSION_ID)
            .replace_strict(
                sessions[S.SESSION_ID], sessions[S.LABEL], default=pl.lit(None, pl.Int8), return_dtype=pl.Int8
            )
            .alias(S.LABEL)
        )
    if "unlabeled_sessions_dropped" in report:
        events = events.join(sessions.lazy().select(S.SESSION_ID), on=S.SESSION_ID, how="semi")
    working = [S.TS_PRESENT, S.TS_OUT_OF_RANGE, *([S.EVENT_ID] if with_ids else [])]
    working += [c for c in (S.TS_NAIVE, S.LABEL_TIME_NAIVE) if c in events.collect_schema()]
    if label_time_on_events:
        working += [S.LABEL_TIME_US, S.LABEL_TIME_PRESENT, S.LABEL_TIME_OUT_OF_RANGE]
    events = events.drop(working).with_columns(pl.col(S.LABEL).cast(pl.Int8))
    report = {"source": source, "timestamp_unit": unit} | raw.id_forms() | zoned | counted | report
    return LoadedEvents(events=events, sessions=sessions, timestamp_unit=unit, source=source, report=report)
