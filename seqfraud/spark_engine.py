"""The Spark engine: the Polars engine's load, fit and transform as Spark SQL, for logs beyond one machine.

``preprocess.engine=spark`` picks it (``pip install seqfraud[spark]``). It writes the same spec and the
same datasets as :class:`seqfraud.preprocess.PolarsEngine` (``tests/test_spark.py`` compares them exactly):
the rules come from the fitted :class:`~seqfraud.features.spec.Spec` and its reserved ids, the fitting
numbers go through the shared :func:`~seqfraud.features.tokens.build_spec`, and validation is the shared
:func:`~seqfraud.data.events.validate_sessions` on a per-session table that Spark computes. Built-in Spark
SQL functions do the work, so the executors need no Python packages, except for entity features
(``data.schema.entities``): their one kernel, :func:`~seqfraud.features.entities.column_features`, runs in
Python tasks there, which then need seqfraud installed.

Input must be Parquet, with datetime or integer epoch timestamps: input order, the tie-break of equal
timestamps, is the Parquet row position (``_metadata.row_index``), which CSV lacks, and ISO strings
would be parsed by Spark's rules instead of Polars'. Paths, the output's too, are local or shared-storage
paths that the driver and the executors see alike, because the driver inspects the same files with Polars.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import sys
import uuid
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from functools import partial, reduce
from itertools import accumulate
from operator import add
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlparse

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pyspark import StorageLevel
from pyspark.errors import AnalysisException
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from seqfraud import schema as S
from seqfraud.data.events import (
    CONTROL,
    FORMAT,
    NULL_TEXTS,
    US_PER_UNIT,
    ZONED_TIMESTAMPS,
    DataValidationError,
    LoadedEvents,
    as_float64,
    epoch_bounds,
    file_kind,
    inspect_events,
    label_delay_us,
    label_time_unit,
    normalize,
    resolve_paths,
    say_respelt_ids,
    timestamp_range_us,
    training_labels,
    validate_sessions,
    valueless_columns,
    zoned_report,
)
from seqfraud.data.shards import ROW_GROUP_SESSIONS, SHARD_GLOB, shard_name
from seqfraud.errors import ConfigError, first_line
from seqfraud.features.entities import BUSIEST_ENTITY_VALUES, EntitySpec, column_features
from seqfraud.features.spec import FIRST_ID, MISSING, NAN, UNKNOWN, VALUE_STEPS, Spec, value_pieces
from seqfraud.features.tokens import FitStats, quantile_rank
from seqfraud.schema import Schema

# Working columns of this module (double underscore, like the schema's internal names).
_PATH, _OFFSET, _FILE_ROW = "__path", "__offset", "__file_row"
_FIELD, _VALUE, _ID, _PART, _N = "__field", "__value", "__id", "__part", "__n"
_PREV_US, _NEWEST = "__prev_us", "__newest"
_EVENTS, _TIMES = "__events", "__times"
_N_EVENTS = "__n_events"
_MONO_BITS = 33  # monotonically_increasing_id(): partition index << 33 | row position within the partition
# events.FORMAT in Java's regex, which writes a code point past U+FFFF as \x{...}, not \U...
_JAVA_FORMAT = re.sub(r"\\U000([0-9a-fA-F]{5})", r"\\x{\1}", FORMAT)


# The masters SparkContext takes (its own check fails inside the JVM, unsaid).
SPARK_MASTER = re.compile(
    r"^(?:local(?:\[(?:\*|\d+)(?:\s*,\s*\d+)?\])?|local-cluster\[.+\]|yarn|(?:spark|k8s|mesos)://.+)$"
)


class SparkEngine:
    """PySpark on any master: ``local[2]`` in tests, a cluster under ``spark-submit`` (``master=None``)."""

    # Most events in one part of the entity kernel: its Python task holds about (features + 24) * 8 bytes
    # per row (PolarsEngine's measure, BENCHMARKS.md, "Entity features"), some 1 GB at 40 features.
    ENTITY_PART_EVENTS = 2_000_000

    def __init__(
        self,
        master: str | None = "local[2]",
        app_name: str = "seqfraud-preprocess",
        conf: Mapping[str, Any] | None = None,
    ):
        if master and not SPARK_MASTER.match(str(master)):
            # Spark's own refusal came as a Java stack trace ending "Java gateway process exited" (dogfood 125).
            raise ConfigError(
                f"preprocess.spark.master={master!r} is no Spark master: local, local[N] or local[*], yarn, "
                "spark://HOST:PORT, k8s://URL, local-cluster[...]; or null under spark-submit"
            )
        self.master, self.app_name, self.conf = master, app_name, dict(conf or {})

    @functools.cached_property
    def spark(self) -> SparkSession:
        """Started on first use, so that an input Spark cannot read is refused before its seconds of start-up."""
        # Spark's progress bar shares stderr's line with what follows it: an error line after it was no line of
        # its own, and grep '^error:' missed it (dogfood 125); conf may turn it on again.
        builder = SparkSession.builder.appName(self.app_name).config("spark.ui.showConsoleProgress", "false")
        if self.master:
            builder = builder.master(self.master)
        for key, value in self.conf.items():
            builder = builder.config(key, str(value))
        # getOrCreate reuses the active session (spark-submit, a notebook, a test fixture); it is not ours
        # to stop, and one we create ends with the process.
        spark = builder.getOrCreate()
        # Naive datetimes are UTC, as in Polars; nanosecond Parquet timestamps (pandas' default) arrive
        # as epoch integers, which Spark's microsecond timestamps cannot hold.
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        spark.conf.set("spark.sql.legacy.parquet.nanosAsLong", "true")
        context = spark.sparkContext
        if str(context.master).startswith("local") and "PYSPARK_PYTHON" not in os.environ:
            # A local master's Python tasks (the entity kernel) run on this machine: in this interpreter,
            # which has seqfraud, not in whatever ``python3`` the PATH finds.
            context.pythonExec = sys.executable
        return spark

    # ------------------------------------------------------------------------------------------- load

    def load(self, data: Mapping[str, Any], schema: Schema) -> LoadedEvents[DataFrame]:
        """Type checks and the timestamp unit from Polars on the same files (footers and the first rows),
        the per-session table from Spark, validation shared with the Polars engine."""
        policy = data.get("policy") or {}
        label_delay_us(policy.get("label_delay"))  # a bad duration fails before the data is read
        if any(file_kind(f) != "parquet" for f in resolve_paths(data["events"], warn=False)):
            raise DataValidationError(
                f"{data['events']}: the spark engine reads Parquet only: the tie-break of equal timestamps is "
                "the row's position in its file, which Spark gives for Parquet alone; convert the CSV or use "
                "preprocess.engine=polars"
            )
        raw = inspect_events(data["events"], schema, data.get("labels"))
        say_respelt_ids(raw.frame, raw.columns, schema, raw.source)
        source, unit, label_on_events = raw.source, raw.timestamp_unit, raw.label_on_events
        # A label time on the events is read by the timestamp's rules, so it takes the same limits.
        time_columns = [schema.timestamp]
        if label_on_events and schema.label_time:
            time_columns.append(schema.label_time)
        label_time_on_events = len(time_columns) > 1
        for c in time_columns:
            if raw.columns[c] == pl.String:
                raise DataValidationError(
                    f"{source}: column {c!r} holds strings; the spark engine needs datetime or integer epoch "
                    "timestamps (Spark parses ISO strings by other rules than Polars), so convert the column "
                    "or use preprocess.engine=polars"
                )
        events = self._normalize(raw.files, schema, raw.columns, unit, with_label=label_on_events)
        # An Arrow table converts to a DataFrame (an array would give a Series).
        table = cast(
            pl.DataFrame,
            pl.from_arrow(
                _session_table(
                    events,
                    schema.event_type,
                    with_label=label_on_events,
                    with_label_time=label_time_on_events,
                    with_event_id=schema.event_id in raw.columns,
                    entities=schema.entities,
                ).toArrow()
            ),
        )
        counted: dict = {}  # what read_labels counts for the report
        zoned = zoned_report(table, raw.columns[schema.timestamp])
        labels = (
            None
            if label_on_events
            else training_labels(
                data["labels"],
                schema,
                unit,
                policy.get("on_unlabeled", "error"),
                counted,
                zoned.get(ZONED_TIMESTAMPS, False),
            )
        )
        sessions, report = validate_sessions(
            table,
            schema,
            source,
            labels,
            on_unlabeled=policy.get("on_unlabeled", "error"),
            on_orphan_labels=policy.get("on_orphan_labels", "error"),
            on_mixed_labels=policy.get("on_mixed_labels", "error"),
            epoch_unit=raw.epoch_unit,
            label_delay=policy.get("label_delay"),
            # The example of a bad value comes from the same files through Polars, read on an error's path
            # alone, so that both engines' messages agree word for word.
            rows=(
                normalize(raw.frame, schema, raw.columns, unit, with_label=label_on_events),
                raw.frame,
                raw.files,
            ),
        )
        columns = [
            S.SESSION_ID,
            S.TS_US,
            S.ROW_INDEX,
            *schema.categorical_fields,
            *schema.numerical,
            *schema.entities,
        ]
        return LoadedEvents(
            events=events.select([_col(c) for c in columns]),
            sessions=sessions,
            timestamp_unit=unit,
            source=source,
            report={"source": source, "timestamp_unit": unit} | raw.id_forms() | zoned | counted | report,
        )

    def _read_parts(
        self, paths: list[str], footers: list[pq.FileMetaData], have: pl.Schema, numerical: Sequence[str]
    ) -> DataFrame:
        """The files' rows, in the columns ``have`` (:func:`~seqfraud.data.events.scan_table`'s: a column that
        one file holds and no role reads stands aside), with their file (``_PATH``) and row in it
        (``_FILE_ROW``). Spark reads a set of files
        by one file's types: files typed apart (an Int32 day beside Int64 ones, a column of no value typed Null)
        are read by their own, a set each, and the union widens them as the Polars engine's scan does, where Spark
        can (nanosecond datetimes beside microsecond ones, it reads as integers: refused, naming the files); files
        of no rows add none, and are left out as there. The ``numerical`` columns' float32 values are read as
        :func:`~seqfraud.data.events.as_float64` reads them, before a union widens them."""
        arrow = [m.schema.to_arrow_schema() for m in footers]
        # A column of no value (typed Null, or holding none), which Spark reads by its file's type (integers for
        # Null): it takes the type the other files give it, as in the Polars engine's scan.
        empty = [
            {f.name for f in a if f.type == pa.null()} | valueless_columns(m) for a, m in zip(arrow, footers)
        ]
        typed: dict[str, list[int]] = defaultdict(list)
        for i in [i for i, m in enumerate(footers) if m.num_rows] or range(len(paths)):
            typed[f"{arrow[i]}{sorted(empty[i])}"].append(i)
        reads = [
            (empty[same[0]], self.spark.read.parquet(*[_local_uri(_escape_glob(paths[i])) for i in same]))
            for same in typed.values()
        ]
        given = {f.name: f.dataType for none, df in reads for f in df.schema if f.name not in none}

        def column(none: set[str], name: str) -> Column:
            if name in none and name in given:
                return F.lit(None).cast(given[name]).alias(name)
            return _col(name)

        try:
            return reduce(
                lambda x, y: x.unionByName(y, allowMissingColumns=True),  # an event field some files lack
                [
                    _float32_decimals(
                        df.select(
                            # A file's own columns of these names, which the schema does not read, stand aside (a raw
                            # AMBIGUOUS_REFERENCE traceback: review 167); the Polars engine reads past them too.
                            *[
                                column(none, c)
                                for c in df.columns
                                if c in have and c not in (_PATH, _FILE_ROW, _OFFSET)
                            ],
                            F.col("_metadata.file_path").alias(_PATH),
                            F.col("_metadata.row_index").alias(_FILE_ROW),
                        ),
                        numerical,
                    )
                    for none, df in reads
                ],
            )
        except AnalysisException as e:  # a type the union cannot widen: nanosecond datetimes read as integers
            first = [paths[same[0]] for same in typed.values()]
            raise DataValidationError(
                f"{len(paths)} files typed apart (the first of each kind: {first}) hold columns that Spark cannot "
                f"read as one ({first_line(e)}); the polars engine reads them (preprocess.engine=polars), "
                "or write the parts with one type"
            ) from None

    def _normalize(
        self, files: list[str], schema: Schema, have: pl.Schema, unit: str, *, with_label: bool
    ) -> DataFrame:
        """``seqfraud.data.events.normalize`` in Spark: the same columns, types and row index (entity ids as
        strings, integers as their decimal text, and the label time's columns where it lives on the events).

        The row index is Polars' (the row's position in the concatenation of the sorted files): the file's
        offset, from the Parquet footers, plus ``_metadata.row_index``.
        """
        paths = [os.path.abspath(f) for f in files]
        footers = [pq.read_metadata(f) for f in files]
        offset = dict(zip(paths, accumulate([0] + [m.num_rows for m in footers[:-1]])))
        raw = self._read_parts(paths, footers, have, schema.numerical)
        # Spark names each file by its URL-encoded URI: one cheap pass over the first rows learns those
        # names, so that the events join a small table on the name as it comes, with no per-row decoding.
        names = [row[0] for row in raw.where(F.col(_FILE_ROW) == 0).select(_PATH).collect()]
        local = {name: unquote(urlparse(name).path) for name in names}
        if unplaced := sorted(n for n, path in local.items() if path not in offset):
            raise RuntimeError(
                f"Spark read files that the file list does not hold, so their rows have no "
                f"place in input order: {unplaced[:3]}"
            )
        offsets = pa.table({_PATH: names, _OFFSET: pa.array([offset[local[n]] for n in names], pa.int64())})
        raw = raw.join(F.broadcast(self._frame(offsets)), on=_PATH)
        range_us = timestamp_range_us(schema)
        ts_us, out_of_range = _timestamp_us(
            schema.timestamp, have[schema.timestamp], raw.schema[schema.timestamp].dataType, unit, range_us
        )
        cols = [
            _col(schema.session_id).cast("string").alias(S.SESSION_ID),
            ts_us.alias(S.TS_US),
            _col(schema.timestamp).isNotNull().alias(S.TS_PRESENT),
            out_of_range.alias(S.TS_OUT_OF_RANGE),
            *[_col(c).cast("string").alias(c) for c in schema.categorical_fields],
            *[
                _col(c).cast("double").alias(c) for c in schema.numerical
            ],  # floats read by the rule in _read_parts
            *[_col(c).cast("string").alias(c) for c in schema.entities],
            *[
                _col(c).cast("string").alias(S.EVENT_ID)
                for c in [schema.event_id]
                if c is not None and c in have
            ],
            (F.col(_OFFSET) + F.col(_FILE_ROW)).alias(S.ROW_INDEX),
        ]
        if with_label:
            # NaN is pandas' missing value in a float column: a missing label, as the Polars engine reads it.
            label = _col(schema.label).cast("double")
            cols.append(F.nanvl(label, F.lit(None).cast("double")).alias(S.LABEL))
            if schema.label_time:
                lt = schema.label_time
                lt_us, lt_out = _timestamp_us(
                    lt, have[lt], raw.schema[lt].dataType, label_time_unit(unit), range_us
                )
                cols += [
                    lt_us.alias(S.LABEL_TIME_US),
                    _col(lt).isNotNull().alias(S.LABEL_TIME_PRESENT),
                    lt_out.alias(S.LABEL_TIME_OUT_OF_RANGE),
                ]
        return raw.select(cols)

    def _frame(self, table: pa.Table | pl.DataFrame) -> DataFrame:
        """A small driver-side table as a Spark frame, through Arrow."""
        return self.spark.createDataFrame(table.to_arrow() if isinstance(table, pl.DataFrame) else table)

    # -------------------------------------------------------------------------------------------- fit

    def fit_stats(
        self,
        loaded: LoadedEvents[DataFrame],
        schema: Schema,
        train_ids: pl.DataFrame,
        probs: list[float],
        min_count: int,
        numeric: tuple[str, ...],
    ) -> FitStats:
        """The numbers of ``seqfraud.features.tokens.fit_stats``, counted by Spark over the train sessions;
        ``numeric``: the fields to take quantiles of (the schema's numeric columns and entity features)."""
        # Cached for the three passes below (counts, summary, the quantiles' sort) and released after them.
        train = (
            loaded.events.drop(S.ROW_INDEX)
            .join(self._frame(train_ids.select(S.SESSION_ID)), on=S.SESSION_ID, how="left_semi")
            .persist(StorageLevel.MEMORY_AND_DISK)
        )
        try:
            return _fit_stats(train, schema, probs, min_count, numeric)
        finally:
            train.unpersist()

    def longest_gaps(self, loaded: LoadedEvents[DataFrame], ids: pl.DataFrame) -> pl.Series:
        """``PolarsEngine.longest_gaps`` in Spark."""
        times = F.sort_array(F.collect_list(S.TS_US))
        gaps = F.expr(f"transform(slice({_TIMES}, 2, size({_TIMES})), (t, i) -> t - {_TIMES}[i])")
        table = (
            loaded.events.join(self._frame(ids.select(S.SESSION_ID)), on=S.SESSION_ID, how="left_semi")
            .groupBy(S.SESSION_ID)
            .agg(times.alias(_TIMES))
            .select(F.array_max(gaps).alias(S.TS_US))
            .toArrow()
        )
        return cast(pl.DataFrame, pl.from_arrow(table))[S.TS_US]

    # ------------------------------------------------------------------------------- entity features

    def entity_features(
        self, loaded: LoadedEvents[DataFrame], entity: EntitySpec, out: Path
    ) -> LoadedEvents[DataFrame]:
        """The events with their entity features, computed per entity column into ``out`` and joined back.

        Spark writes a column's kernel rows into ``out`` split by a hash of the value, a folder per part (so
        a value's rows all lie in one), a Python task per part runs the kernel on it with Polars and writes
        the part's features, and the events left-join them by row. Files in between, not an Arrow UDF:
        pyspark's Arrow UDFs need pandas on the driver and the executors.
        """
        labels = F.broadcast(
            self._frame(loaded.sessions.select(S.SESSION_ID, S.LABEL, S.LABEL_KNOWN, S.LEGIT_FROM))
        )
        # An inner join: events of sessions a policy dropped take no part, as they are gone from the
        # Polars engine's events.
        rows = loaded.events.select(
            S.ROW_INDEX, S.SESSION_ID, S.TS_US, *[_col(c) for c in entity.columns]
        ).join(labels, on=S.SESSION_ID)
        n_events = int(loaded.sessions["n_events"].sum())
        # As many parts as tasks run at once (or more, when the events need them), not spark.sql.shuffle.partitions:
        # its default of 200 made 200 Python tasks a column on local[2], 5 min 40 s against 1.9 s with Polars on
        # a 38k-event log (dogfood 33).
        n_parts = max(
            self.spark.sparkContext.defaultParallelism, math.ceil(n_events / self.ENTITY_PART_EVENTS)
        )
        events, busiest = loaded.events, {}
        for i, column in enumerate(entity.columns):
            names = entity.column_feature_names(column)
            # seqfraud.features.entities.busiest_value's rule: the most sessions, then the smallest value.
            top = (
                rows.where(_col(column).isNotNull())
                .groupBy(_col(column).alias("value"))
                .agg(F.countDistinct(S.SESSION_ID).alias("sessions"))
                .orderBy(F.desc("sessions"), F.asc("value"))
                .limit(1)
                .collect()
            )
            busiest[column] = [top[0]["value"], int(top[0]["sessions"])] if top else None
            # Folders by position: user column names may not make safe file names.
            target, staging = out / str(i), out / f"_rows{i}"
            part = F.pmod(F.xxhash64(_col(column)), F.lit(n_parts)).alias(_PART)
            (
                rows.where(_col(column).isNotNull())
                .select("*", part)
                .repartition(n_parts, _PART)  # one file per part
                .write.partitionBy(_PART)
                .parquet(_local_uri(str(staging.absolute())))
            )
            parts = sorted(staging.glob(f"{_PART}=*"))
            if parts:
                target.mkdir(parents=True)
                jobs = [
                    (str(p.absolute()), str((target / shard_name(j)).absolute())) for j, p in enumerate(parts)
                ]
                self.spark.sparkContext.parallelize(jobs, len(jobs)).foreach(
                    partial(_kernel_part, column=column, entity=entity)
                )
                features = self.spark.read.parquet(_local_uri(_escape_glob(str(target.absolute()))))
                events = events.join(
                    features.select(S.ROW_INDEX, *[_col(c).cast("double").alias(c) for c in names]),
                    on=S.ROW_INDEX,
                    how="left",
                )
            else:  # no event carries the column: every feature is null
                events = events.select("*", *[F.lit(None).cast("double").alias(c) for c in names])
            shutil.rmtree(staging)
        return replace(loaded, events=events, report=loaded.report | {BUSIEST_ENTITY_VALUES: busiest})

    # -------------------------------------------------------------------------------------- transform

    def write_datasets(
        self, loaded: LoadedEvents[DataFrame], spec: Spec, sessions: pl.DataFrame, out: Path
    ) -> dict[str, Any]:
        """``seqfraud.features.tokens.sequences`` in Spark, one partitioned write for the three splits."""
        schema, n = spec.schema, spec.max_len
        events = loaded.events
        tokens = []
        for c in schema.categorical_fields:
            events, token = self._categorical_ids(events, c, spec.vocab[c])
            tokens.append(token.alias(S.token_column(c)))
        tokens += [_bucket_ids(_col(c), spec.edges[c]).alias(S.token_column(c)) for c in spec.numeric_fields]
        tokens += [
            _value_ids(_col(c), spec.edges[c]).alias(S.token_column(S.value_field(c))) for c in spec.values
        ]
        newest_first = Window.partitionBy(S.SESSION_ID).orderBy(
            F.col(S.TS_US).desc(), F.col(S.ROW_INDEX).desc()
        )
        # The previous event in time order is the next one newest first; the delta spans the whole session
        # before it is cut to its window.
        seconds = (F.col(S.TS_US) - F.col(_PREV_US)).cast("double") / 1e6
        tokens.append(_bucket_ids(seconds, spec.edges[S.TIME_DELTA]).alias(S.token_column(S.TIME_DELTA)))
        token_columns = [S.token_column(f) for f in spec.fields]
        # Structs sort field by field, so (time, input row) first puts each session's events in time order.
        kept_event = F.struct(S.TS_US, S.ROW_INDEX, *[_col(t) for t in token_columns])
        per_session = (
            events.withColumn(_PREV_US, F.lead(S.TS_US).over(newest_first))
            .withColumn(_NEWEST, F.row_number().over(newest_first))
            .select(S.SESSION_ID, S.TS_US, S.ROW_INDEX, _NEWEST, *tokens)
            .groupBy(S.SESSION_ID)
            .agg(
                F.sort_array(F.collect_list(F.when(F.col(_NEWEST) <= n, kept_event))).alias(_EVENTS),
                F.count(F.lit(1)).alias(_N_EVENTS),
                F.min(S.TS_US).alias(S.START_TIME),
            )
        )
        # The latest max_len, cut to the window (Spec.window_start, in integers): the last n - start of them.
        past = F.col(_N_EVENTS) - n
        start = F.when(past > 0, F.expr(f"({_N_EVENTS} - {n} + {spec.hop - 1}) div {spec.hop}") * spec.hop)
        start = start.otherwise(F.lit(0))
        kept = (F.col(_N_EVENTS) - start).cast("int")
        per_session = per_session.withColumn(_EVENTS, F.slice(_EVENTS, F.size(_EVENTS) - kept + 1, kept))
        keys = self._frame(sessions.select(S.SESSION_ID, S.LABEL, S.SPLIT))
        datasets = per_session.join(keys, on=S.SESSION_ID, how="inner").select(
            S.SESSION_ID,
            *[F.col(_EVENTS).getField(t).alias(t) for t in token_columns],
            F.size(_EVENTS).cast("int").alias(S.LENGTH),
            S.START_TIME,
            S.LABEL,
            S.SPLIT,
        )
        staging = out / "_spark"
        (
            datasets.sortWithinPartitions(S.SPLIT, S.SESSION_ID)
            .write.partitionBy(S.SPLIT)
            .option(
                "parquet.block.row.count.limit", ROW_GROUP_SESSIONS
            )  # training reads a row group at a time
            .parquet(_local_uri(str(staging.absolute())))
        )
        parts = {}
        for name in S.SPLITS:
            (out / name).mkdir(parents=True, exist_ok=True)
            written = sorted((staging / f"{S.SPLIT}={name}").glob(SHARD_GLOB))
            parts[name] = [f.rename(out / name / f.name) for f in written]
        shutil.rmtree(staging)
        columns = pl.read_parquet_schema(next(f for fs in parts.values() for f in fs))
        for name in S.SPLITS:
            if not parts[name]:  # a split without sessions still gets a shard, as with the Polars engine
                pl.DataFrame(schema=columns).write_parquet(out / name / shard_name(0))
        return {
            "engine": "spark",
            "partitions": max(len(p) for p in parts.values()),
            "spark_master": self.spark.sparkContext.master,
        }

    def _categorical_ids(self, events: DataFrame, column: str, vocab: list[str]) -> tuple[DataFrame, Column]:
        """``FIRST_ID + vocab index``, ``UNKNOWN`` outside the vocabulary, ``MISSING`` for null: a broadcast
        hash join, since a map literal's lookup scans its keys."""
        value, token = f"__vocab_{column}", f"__id_{column}"
        table = pa.table(
            {
                value: pa.array(vocab, pa.string()),
                token: pa.array(range(FIRST_ID, FIRST_ID + len(vocab)), pa.int32()),
            }
        )
        events = events.join(F.broadcast(self._frame(table)), _col(column) == _col(value), how="left")
        return events, F.when(_col(column).isNull(), F.lit(MISSING)).otherwise(
            F.coalesce(_col(token), F.lit(UNKNOWN))
        )


def _kernel_part(job: tuple[str, str], column: str, entity: EntitySpec) -> None:
    """A Python task on an executor: one part's kernel rows (a folder of Spark's files) to its features."""
    source, target = job
    files = sorted(Path(source).glob(SHARD_GLOB))
    rows = pl.read_parquet(files, glob=False, hive_partitioning=False)
    # Written aside (a hidden name, which Spark skips) and renamed: a retried or speculative attempt never
    # leaves half a file where Spark reads the features.
    aside = Path(target).with_name(f".{Path(target).name}.{uuid.uuid4().hex}")
    column_features(rows, column, entity).write_parquet(aside)
    aside.replace(target)


def _col(name: str) -> Column:
    """A column by its exact name: user names may hold dots, which ``F.col`` reads as struct access."""
    return F.col(f"`{name.replace('`', '``')}`")


def _float32_decimals(df: DataFrame, numerical: Sequence[str]) -> DataFrame:
    """``df`` with its float and double ``numerical`` columns as doubles read by
    :func:`~seqfraud.data.events.as_float64`, in the workers' Python: Spark prints a float by Java's rules, which
    gave 53,978 of 2.2M random float32 values another decimal than Polars' shortest one (3.27320276E13 for
    3.2732028e13)."""
    floats = [
        f.name
        for f in df.schema
        if f.name in numerical and isinstance(f.dataType, (T.FloatType, T.DoubleType))
    ]
    if not floats:
        return df
    schema = T.StructType(
        [T.StructField(f.name, T.DoubleType(), f.nullable) if f.name in floats else f for f in df.schema]
    )
    return df.mapInArrow(partial(_decimal_batches, floats), schema)


def _decimal_batches(floats: list[str], batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        read = cast(pl.DataFrame, pl.from_arrow(batch.select(floats)))
        read = read.select(as_float64(c, read.schema[c], True) for c in floats)
        names = batch.schema.names
        yield pa.RecordBatch.from_arrays(
            [read[n].to_arrow() if n in floats else batch.column(n) for n in names], names
        )


def _local_uri(path: str) -> str:
    """A path on the local (or shared, mounted) file system, not on the cluster's default one (HDFS)."""
    return "file:" + path


def _escape_glob(path: str) -> str:
    """Spark globs every path it reads; Hadoop's glob characters in a file name must be taken literally."""
    return re.sub(r"([\\\[\]{}*?])", r"\\\1", path)


def _timestamp_us(
    column: str, dtype: pl.DataType, spark_type: T.DataType, unit: str, range_us: tuple[int, int]
) -> tuple[Column, Column]:
    """``seqfraud.data.events.timestamp_us`` for datetimes and integer epochs: microseconds, null out of
    range, and the out-of-range flag, with the range checked in the value's own unit (no overflow)."""
    raw = _col(column)
    if dtype.is_temporal():
        if isinstance(
            spark_type, T.LongType
        ):  # nanosecond datetimes, as integers (nanosAsLong): Polars floors
            unit = "ns"
        else:  # naive (timestamp_ntz) and dates are read in UTC; a date (a label time's) counts from its end
            day_end = F.date_add(raw, 1) if isinstance(spark_type, T.DateType) else raw
            raw, unit = F.unix_micros(day_end.cast("timestamp")), "us"
    first, last = epoch_bounds(unit, range_us)
    in_range = raw.between(first, last)
    value = F.least(F.greatest(raw.try_cast("long"), F.lit(first)), F.lit(last))  # clipped: no overflow below
    us = _floor_div(value, 1_000) if unit == "ns" else value * US_PER_UNIT[unit]
    return F.when(in_range, us), F.coalesce(~in_range, F.lit(False))


def _floor_div(x: Column, divisor: int) -> Column:
    """Integer floor division, Polars' ``//``. ``/`` goes through doubles, which lose digits of nanosecond
    epochs; ``x - pmod(x, d)`` is a multiple of d, so its decimal quotient is exact."""
    return ((x - F.pmod(x, F.lit(divisor))).cast("decimal(20,0)") / divisor).cast("long")


def _count() -> Column:
    return F.count(F.lit(1)).alias(_N)


def _session_table(
    events: DataFrame,
    event_type: str,
    *,
    with_label: bool,
    with_label_time: bool = False,
    with_event_id: bool = False,
    entities: Sequence[str] = (),
) -> DataFrame:
    """``seqfraud.data.events.session_table`` in Spark."""

    def count(condition: Column) -> Column:
        return F.sum(condition.cast("long"))

    ts, label = F.col(S.TS_US), F.col(S.LABEL)
    aggs = [
        F.min(ts).alias(S.START_TIME),
        F.max(ts).alias(S.END_TIME),
        _count().alias("n_events"),
        count(F.col(event_type).isNull()).alias("n_event_type_null"),
        count(ts.isNull() & F.col(S.TS_PRESENT) & ~F.col(S.TS_OUT_OF_RANGE)).alias("n_ts_unparsed"),
        count(~F.col(S.TS_PRESENT)).alias("n_ts_null"),
        count(F.col(S.TS_OUT_OF_RANGE)).alias("n_ts_out_of_range"),
        (_count() - F.countDistinct(F.xxhash64(*[c for c in events.columns if c != S.ROW_INDEX]))).alias(
            "n_duplicate_rows"
        ),
        F.countDistinct(ts).alias("n_times"),
        F.coalesce(count(ts % 1_000_000 == 0), F.lit(0)).alias("n_whole_seconds"),  # Polars' 0 for null times
        F.min_by(F.col(event_type).cast("string"), F.struct(ts, F.col(S.ROW_INDEX))).alias(S.FIRST_TYPE),
    ]
    if with_label:
        aggs += [
            F.min(label).alias("label_min"),
            F.max(label).alias("label_max"),
            count(label.isNull()).alias("n_label_null"),
            count(label.isNotNull() & ~label.isin(0.0, 1.0)).alias("n_label_bad"),
        ]
    if with_label_time:
        lt, present, outside = (
            F.col(S.LABEL_TIME_US),
            F.col(S.LABEL_TIME_PRESENT),
            F.col(S.LABEL_TIME_OUT_OF_RANGE),
        )
        aggs += [
            F.min(lt).alias("label_time_min"),
            F.max(lt).alias("label_time_max"),
            count(~present).alias("n_label_time_null"),
            count(lt.isNull() & present & ~outside).alias("n_label_time_unparsed"),
            count(outside).alias("n_label_time_out_of_range"),
            F.min(F.when(label == 1, lt)).alias("label_time_min_positive"),
            count(present & ~(label == 1)).alias("n_label_time_not_fraud"),
        ]
    if with_event_id:  # count and countDistinct skip nulls, as Polars' count and drop_nulls
        ids = F.col(S.EVENT_ID)
        aggs.append((F.count(ids) - F.countDistinct(ids)).alias("n_event_id_repeats"))
    for c in entities:  # blank(c, session=False): Polars strips Unicode's White_Space, (?U)\s in Java's regex
        value = F.col(c)
        padded = value.rlike(rf"(?U)^\s|\s$|{CONTROL}|^{_JAVA_FORMAT}|{_JAVA_FORMAT}$")
        spelt = F.lower(value).isin(*NULL_TEXTS)
        aggs.append(
            F.coalesce(count((value == "") | padded | spelt), F.lit(0)).alias(f"n_blank_{c}")
        )  # Polars' 0
    return events.groupBy(S.SESSION_ID).agg(*aggs)


def _bucket_ids(value: Column, edges: list[float]) -> Column:
    """``FIRST_ID + #{edge < x}``, ``MISSING`` for null, ``NAN`` for NaN (Spark orders NaN above +inf)."""
    below = reduce(add, [(F.lit(e) < value).cast("int") for e in edges], F.lit(0))
    return (
        F.when(value.isNull(), F.lit(MISSING))
        .when(F.isnan(value), F.lit(NAN))
        .otherwise(below + FIRST_ID)
        .cast("int")
    )


def _value_ids(value: Column, edges: list[float]) -> Column:
    """The value-field rule of :class:`~seqfraud.features.spec.Spec`, in the same floating-point operations."""
    m = len(edges)
    if m == 0:
        position = F.lit(0.5)
    else:
        lo, width, scale = value_pieces(edges)
        bucket = reduce(add, [(F.lit(e) < value).cast("int") for e in edges], F.lit(0))
        at = bucket + 1  # element_at counts from 1
        inner = (value - F.element_at(F.array(*map(F.lit, lo)), at)) / F.element_at(
            F.array(*map(F.lit, width)), at
        )
        below = F.lit(1.0) / (F.lit(1.0) + (F.lit(edges[0]) - value) / F.lit(scale))
        above = F.lit(1.0) - F.lit(1.0) / (F.lit(1.0) + (value - F.lit(edges[-1])) / F.lit(scale))
        share = F.when(bucket == 0, below).when(bucket == m, above).otherwise(inner)
        position = (bucket.cast("double") + share) / F.lit(float(m + 1))
    return (
        F.when(value.isNull(), F.lit(MISSING))
        .when(F.isnan(value), F.lit(NAN))
        .otherwise(F.floor(position * F.lit(float(VALUE_STEPS)) + F.lit(0.5)) + FIRST_ID)
        .cast("int")
    )


def _fit_stats(
    train: DataFrame, schema: Schema, probs: list[float], min_count: int, numeric: tuple[str, ...]
) -> FitStats:
    """Vocabulary counts, quantiles and totals of the (cached) training events."""
    cats = schema.categorical_fields
    pairs = train.select(
        F.inline(
            F.array(*[F.struct(F.lit(i).alias(_FIELD), _col(c).alias(_VALUE)) for i, c in enumerate(cats)])
        )
    )
    count_rows = (
        pairs.where(F.col(_VALUE).isNotNull())
        .groupBy(_FIELD, _VALUE)
        .agg(_count())
        .where(F.col(_N) >= min_count)
        .collect()
    )
    counts: dict[str, dict[str, int]] = {c: {} for c in cats}
    for row in count_rows:
        counts[cats[row[_FIELD]]][row[_VALUE]] = row[_N]
    summary = train.agg(
        _count(),
        F.countDistinct(S.SESSION_ID),
        F.min(S.TS_US),
        F.max(S.TS_US),
        *(F.count(_col(c)) for c in cats),
        *(F.sum(_col(c).isin(math.inf, -math.inf).cast("long")) for c in schema.numerical),
        *(F.sum(F.isnan(_col(c)).cast("long")) for c in schema.numerical),
    ).first()
    assert summary is not None  # a global aggregate always has its one row
    return FitStats(
        counts=counts,
        quantiles=_exact_quantiles(train, numeric, probs),
        n_events=int(summary[0]),
        present={c: int(summary[4 + i]) for i, c in enumerate(cats)},
        n_sessions=int(summary[1]),
        first_event_us=summary[2],
        last_event_us=summary[3],
        infinite={c: int(summary[4 + len(cats) + i] or 0) for i, c in enumerate(schema.numerical)},
        nan={
            c: int(summary[4 + len(cats) + len(schema.numerical) + i] or 0)
            for i, c in enumerate(schema.numerical)
        },
    )


def _exact_quantiles(
    train: DataFrame, numerical: tuple[str, ...], probs: list[float]
) -> dict[str, list[float | None]]:
    """Per field, the finite value at ``quantile_rank(q, n)`` among its n sorted finite values, exactly.

    One distributed sort of (field, value) pairs numbers every value by (range partition, position in it);
    per-partition counts, a few rows to the driver, turn the wanted ranks into those numbers, and one
    filter fetches just the wanted values. The sorted frame is checkpointed so that both passes see the
    same numbering.
    """
    if not numerical:
        return {}
    pairs = train.select(
        F.inline(
            F.array(
                *[F.struct(F.lit(i).alias(_FIELD), _col(c).alias(_VALUE)) for i, c in enumerate(numerical)]
            )
        )
    )
    # Spark orders NaN above +inf, so these bounds keep exactly the finite values.
    finite = pairs.where((F.col(_VALUE) > float("-inf")) & (F.col(_VALUE) < float("inf")))
    numbered = (
        finite.orderBy(_FIELD, _VALUE)
        .select(_FIELD, _VALUE, F.monotonically_increasing_id().alias(_ID))
        .localCheckpoint(eager=True)
    )
    part = F.shiftright(F.col(_ID), _MONO_BITS).alias(_PART)
    sizes = numbered.groupBy(part, _FIELD).agg(_count()).collect()
    n_field: Counter[int] = Counter()
    part_size: Counter[int] = Counter()
    for row in sizes:
        n_field[row[_FIELD]] += row[_N]
        part_size[row[_PART]] += row[_N]
    # Positions in the whole sort: the fields follow each other, and so do the partitions, in range order.
    field_start = list(accumulate([0] + [n_field[i] for i in range(len(numerical))]))
    parts = sorted(part_size)
    part_start = list(accumulate([0] + [part_size[p] for p in parts]))
    wanted: dict[int, list[tuple[int, int]]] = defaultdict(list)  # two probabilities may share a rank
    for i in range(len(numerical)):
        for j, q in enumerate(probs if n_field[i] else []):
            position = field_start[i] + quantile_rank(q, n_field[i])
            k = bisect_right(part_start, position) - 1
            wanted[(parts[k] << _MONO_BITS) + position - part_start[k]].append((i, j))
    values = {
        ij: row[_VALUE]
        for row in numbered.where(F.col(_ID).isin(list(wanted))).collect()
        for ij in wanted[row[_ID]]
    }
    return {c: [values.get((i, j)) for j in range(len(probs))] for i, c in enumerate(numerical)}
