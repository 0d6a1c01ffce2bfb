"""Preprocessing pipeline: validate, split out of time, fit the spec on train, tokenize, write datasets.

``seqfraud preprocess`` runs it under Hydra (``seqfraud/conf/preprocess.yaml``) and writes the spec and
the train/val/test datasets (directories of Parquet shards) into the run directory. ``preprocess.engine``
picks who loads and counts: Polars on one machine (out of core), or Spark on a cluster; everything else
(validation, split, spec rules, report) is this module's, shared by both.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl

from seqfraud import schema as S
from seqfraud.config import plain
from seqfraud.data.events import (
    FIXED_WIDTH_IDS,
    INTEGER_IDS,
    LABELS_WITHOUT_COLUMN,
    ONE_CASE_IDS,
    PADDED_WIDTH_IDS,
    ZERO_PADDED_IDS,
    ZONED_TIMESTAMPS,
    DataValidationError,
    LoadedEvents,
    label_delay_us,
    load_events,
    read_typologies,
    resolve_paths,
    usable_delay_us,
)
from seqfraud.data.shards import ROW_GROUP_SESSIONS, shard_files, shard_name
from seqfraud.data.split import (
    CROSSING_SHARE,
    assign_split,
    before_test_end,
    check_splits,
    crossing,
    fractions_read,
    from_epoch_us,
    labels_known_by,
    split_boundaries,
    to_epoch_us,
)
from seqfraud.durations import duration_us
from seqfraud.errors import ConfigError
from seqfraud.features.drift import (
    CATEGORY_SHARES,
    MASS_EDGES,
    NULL_SHARES,
    NUMERIC_SHARES,
    TRANSITION_SHARES,
    VANISHED_FROM,
    holds_mass,
    lowest_prob,
    token_label,
    transition_counts,
    transition_shares,
)
from seqfraud.features.entities import (
    BUSIEST_ENTITY_VALUES,
    EntitySpec,
    attach,
    busiest_value,
    busy_warnings,
    column_features,
    entity_spec,
    kernel_rows,
)
from seqfraud.features.fastpath import holds_booleans, spelling
from seqfraud.features.spec import (
    FIRST_ID,
    GAP_QUANTILES,
    LABEL_DELAY,
    LONGEST_GAPS,
    LONGEST_TRAINED,
    MISSING,
    ON_MIXED_LABELS,
    ON_UNLABELED,
    OPENER_SHARE,
    OPENING_SHARES,
    SHORTEST_TRAINED,
    TIED_SHARE,
    UNKNOWN,
    VALUE_STEPS,
    WHOLE_SECONDS,
    Spec,
    value_pieces,
)
from seqfraud.features.tokens import FitStats, build_spec, fit_stats, quantile_probs, sequences
from seqfraud.provenance import files_digest
from seqfraud.rundir import DATA_DIR, ENTITY_DIR, REPORT_FILE, SPEC_FILE, dataset
from seqfraud.schema import Schema, value_field

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    spec: Spec
    datasets: dict[str, Path]
    report: dict[str, Any]
    # Normalized events, for models that read raw values (the aggregates baseline); None when the data was
    # prepared by another engine or loaded from disk.
    events: pl.LazyFrame | None
    sessions: pl.DataFrame | None  # one row per session: start time, label, split

    def input(self, key: str) -> str | None:
        """The ``data.events``, ``data.labels`` or ``data.typologies`` this output was prepared from (absolute),
        as its report records them (:func:`input_record`): a run on a ``prepared_dir`` reads them there, not
        from its own data config, which may name other files (a docs audit's per-typology metrics came from
        another log). None where there was none, or the output predates the record."""
        return ((self.report.get("inputs") or {}).get(key) or {}).get("path")

    def digest(self, key: str) -> str | None:
        """The SHA-256 of that input's files as read (:func:`input_record`), where the report records it."""
        return ((self.report.get("inputs") or {}).get(key) or {}).get("sha256")

    @property
    def inputs_recorded(self) -> bool:
        """Whether the report records its inputs (outputs of seqfraud from before that record do not)."""
        return "inputs" in self.report


def resolve_data_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """Plain dict of the data config; synthetic companion files only follow the synthetic events.

    ``python train.py data.events=mine.parquet`` must not silently pick up the synthetic labels or
    typologies that the default config points at, so those defaults drop out when the events do.
    """
    d = dict(data)
    synth = d.get("synthetic")
    if synth:
        synth_dir = Path(synth["dir"])
        if Path(d["events"]) == synth_dir / "events.parquet":
            # Not an interpolation in the config: with data.synthetic=null that would fail to resolve.
            d["typologies"] = d.get("typologies") or str(synth_dir / "typologies.parquet")
        else:
            for key in ("labels", "typologies"):
                if d.get(key) and Path(d[key]).parent == synth_dir:
                    log.info(
                        "data.%s=%s belongs to the synthetic data, whose events are not read: left out (to read it "
                        "with other events, set data.synthetic=null)",
                        key,
                        d[key],
                    )
                    d[key] = None
            d["synthetic"] = None
    return d


def ensure_synthetic(data: Mapping[str, Any]) -> None:
    """Generate the built-in synthetic data on first use, and again when the directory holds data the config
    generated for another size, seed or generator version (its stamp says which), so a config change never
    trains on stale data. Files the config did not generate are never replaced: ``seqfraud synthetic``'s output
    for other arguments, or files without a stamp (a dogfood's own seed-7 data was overwritten with seed 0)."""
    synth = data.get("synthetic")
    if not synth:
        return
    from seqfraud.data import synthetic

    out = Path(synth["dir"])
    wanted = synthetic.stamp(int(synth["sessions"]), int(synth["seed"]))
    try:
        read = json.loads((out / synthetic.STAMP_FILE).read_text())
    except (OSError, ValueError):
        read = None
    current: dict[str, Any] | None = read if isinstance(read, dict) else None
    held = Path(data["events"]).exists()
    if held and current is None:
        raise ConfigError(
            f"data.synthetic.dir={out} holds {data['events']} without the generator's stamp "
            f"({synthetic.STAMP_FILE}), so not generated there by this seqfraud (a file of your own, or one an "
            "earlier release wrote before it stamped its output): it is not replaced. Point "
            "data.synthetic.dir at another directory, delete the files, or train on them as your own data "
            "(data.synthetic=null, data.events=..., data.labels=...)"
        )
    by = current.pop("by", "config") if current else None
    if held and current is not None and _as_made(current) == _as_made(wanted):
        return
    if held and by != "config":
        assert current is not None
        # The config has no start, days or generator version: setting sessions and seed could not match those.
        made, asked = _as_made(current), _as_made(wanted)
        fixed = [k for k in asked if made.get(k) != asked[k] and k not in ("sessions", "seed")]
        advice = (
            f"No data.synthetic setting holds its {', '.join(fixed)}: train on it as your own data "
            f"(data.synthetic=null data.events={out / 'events.parquet'} data.labels={out / 'labels.parquet'} "
            f"data.typologies={out / 'typologies.parquet'})"
            if fixed
            else "Set data.synthetic.sessions and data.synthetic.seed to match it"
        )
        raise ConfigError(
            f"data.synthetic.dir={out} holds `seqfraud synthetic` output ({current}), not the data "
            f"data.synthetic asks for ({wanted}): it is not replaced. {advice}, or point data.synthetic.dir at "
            "another directory"
        )
    log.info(
        "generating synthetic data: %s sessions, seed %s, into %s%s",
        wanted["sessions"],
        wanted["seed"],
        out,
        f" (replacing the config's earlier {current})" if held else "",
    )
    synthetic.write(synthetic.generate(wanted["sessions"], seed=wanted["seed"]), out, wanted, by="config")


def _as_made(stamp: Mapping[str, Any]) -> dict[str, Any]:
    """A generator stamp with its start as the instant it names: ``--start 2026-01-01T00:00`` makes the default's
    data, which was refused as another start (review 186)."""
    try:
        return dict(stamp) | {"start": to_epoch_us(stamp["start"])}
    except (KeyError, TypeError, ValueError):  # a stamp of its own kind: compared as it is
        return dict(stamp)


def truncation(n_events: pl.Series, spec: Spec) -> dict[str, int]:
    """How many sessions are cut to their window (longer than ``max_len``), the longest, and the events the sequence
    model does not read, of ``events_in_splits``: a bot's 20,000 events kept 256, and only a count of sessions said
    so (dogfood 29)."""
    return {
        "truncated_sessions": int((n_events > spec.max_len).sum()),
        "longest_session": int(cast(int, n_events.max() or 0)),
        "events_not_read": int(spec.window_start(n_events.to_numpy()).sum()),
        "events_in_splits": int(n_events.sum()),
    }


# The report's key for :func:`unknown_shares`; a categorical column whose share in validation or test is
# UNKNOWN_SHARE_RISE or more above training's is said.
UNKNOWN_SHARES = "unknown_shares"
UNKNOWN_SHARE_RISE = 0.05


# Per column and split, the events read holding each token id (an empty split holds none).
TokenCounts = dict[str, dict[str, dict[int, int]]]


def token_id_counts(datasets: Mapping[str, Path], fields: Sequence[str]) -> TokenCounts:
    """:data:`TokenCounts` of ``fields``, one pass over each column of each split."""
    out: TokenCounts = {field: {} for field in fields}
    for split, path in datasets.items():
        frame = pl.scan_parquet(shard_files(path))
        for field in out:
            counts = (
                frame.select(pl.col(S.token_column(field)).explode().drop_nulls().alias("id"))
                .group_by("id")
                .len()
                .collect(engine="streaming")
            )
            out[field][split] = {int(i): int(c) for i, c in zip(counts["id"], counts["len"])}
    return out


def id_shares(by_split: Mapping[str, Mapping[int, int]], token: int) -> dict[str, float | None]:
    """Per split, the share of the events read whose token is ``token`` (None: a split without events)."""
    return {
        split: ids.get(token, 0) / n if (n := sum(ids.values())) else None for split, ids in by_split.items()
    }


def unknown_shares(counts: TokenCounts) -> dict[str, dict[str, float | None]]:
    """Per categorical column and split, the share of the events read whose value is outside the vocabulary
    (never in training, or too rare there), each read as one unknown token. An out-of-time test whose traffic
    moved to values the training period never had (a new app version) scored lower, and only the monitor told."""
    return {field: id_shares(by_split, UNKNOWN) for field, by_split in counts.items()}


# The report's key for :func:`entity_null_shares`.
ENTITY_NULL_SHARES = "entity_null_shares"


def entity_null_shares(datasets: Mapping[str, Path], spec: Spec) -> dict[str, dict[str, float | None]]:
    """Per entity column and split, the share of the events read without a value in it
    (:meth:`~seqfraud.features.entities.EntitySpec.presence_feature`). A column empty in the test period (dogfood
    118: a payment token dropped from the extract), or in every row, was unsaid."""
    entity = spec.entity
    if entity is None:
        return {}
    presence = {c: entity.presence_feature(c) for c in entity.columns}
    counts = token_id_counts(datasets, list(presence.values()))
    return {c: id_shares(counts[field], MISSING) for c, field in presence.items()}


def entity_null_warnings(shares: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """A line per entity column without a value in any training event, or holding one in validation or test on
    at most a tenth of training's share of events: a column dropped from the extract, not a change in the mix of
    traffic (a sparse column at half its share fired: review 122)."""
    said = []
    for column, by_split in shares.items():
        train = by_split.get("train")
        if train is None:
            continue
        if train == 1.0:
            said.append(
                f"entity column {column!r} holds no value in any training event: its entity features read nothing, "
                "so the model learns nothing from them. Is it the right column, or empty in this extract?"
            )
            continue
        fell = {
            k: 1 - v
            for k in ("val", "test")
            if (v := by_split.get(k)) is not None and 1 - v <= (1 - train) / 10
        }
        if fell:
            said.append(
                f"entity column {column!r} holds a value in {', '.join(f'{v:.1%} of the {k} events' for k, v in fell.items())} "
                f"against {1 - train:.1%} of training's: its entity features read next to no context there, where "
                "the model learnt from them. A column dropped from the extract, or renamed, after the training period?"
            )
    return said


def unknown_share_warnings(shares: Mapping[str, Mapping[str, float | None]], spec: Spec) -> list[str]:
    """A line per column whose unknown share in validation or test rose :data:`UNKNOWN_SHARE_RISE` or more
    over training's."""
    said = []
    for column, by_split in shares.items():
        train = by_split.get("train") or 0.0
        later = {
            k: v
            for k in ("val", "test")
            if (v := by_split.get(k)) is not None and v - train >= UNKNOWN_SHARE_RISE
        }
        if later:
            info = spec.fit_info
            capped = (info.get("values_over_max_vocab") or {}).get(column, 0)
            cap = (
                f"; features.max_vocab={info.get('max_vocab')} left out {capped:,} of its values that training held "
                f"often enough, ranked by events (the most frequent on "
                f"{info['left_out_max_share'][column]:.2%} of its training events): raise it to give them tokens"
                if capped
                else ""
            )
            said.append(
                f"column {column!r}: {', '.join(f'{v:.1%} of the {k} events' for k, v in later.items())} (against "
                f"{train:.1%} of training's) hold values outside the vocabulary fitted on training (never seen "
                f"there, seen fewer than features.min_count={info.get('min_count')} times, or past "
                f"features.max_vocab){cap}. The model reads each as one unknown token. Values new after the "
                "training period (an app version, a product) are drift; `seqfraud monitor` tracks this share "
                "in production (unknown_rate, each session weighing one)"
            )
    return said


def training_shares(datasets: Mapping[str, Path], spec: Spec) -> dict[str, dict]:
    """The training events' shares that scoring compares a file's or a window's with, from the artifact's manifest:
    each number's buckets (:data:`NUMERIC_SHARES`), each categorical field's values (:data:`CATEGORY_SHARES`), and
    per field and event type the share of events without a
    value (:data:`NULL_SHARES`: an entity column's through its presence feature; an event type training did not
    learn under ``<unknown>``), where a field is null on some kinds of event by nature (an amount on payments
    alone: a file of other kinds read as a client that stopped sending it, review 232), what follows each event
    type (:data:`TRANSITION_SHARES`), and :func:`mass_edges` (:data:`MASS_EDGES`)."""
    schema = spec.schema
    presence = {c: spec.entity.presence_feature(c) for c in schema.entities} if spec.entity else {}
    fields = {c: c for c in (*schema.categorical, *schema.numerical)} | presence
    kind = S.token_column(schema.event_type)
    tokens = [S.token_column(f) for f in fields.values()]
    train = pl.scan_parquet(shard_files(datasets["train"]))
    counted = (
        train.select(kind, *tokens)
        .explode(kind, *tokens)
        .group_by(kind)
        .agg(pl.len().alias("__n"), *((pl.col(t) == MISSING).sum().alias(c) for c, t in zip(fields, tokens)))
        .collect(engine="streaming")
    )
    kinds = [token_label(spec, schema.event_type, t) for t in counted[kind]]
    types, size = train.select(kind).collect()[kind], spec.vocab_size(schema.event_type)
    follows = transition_counts(
        types.explode().drop_nulls().to_numpy().astype(np.int64), types.list.len().to_numpy(), size
    )
    numeric = token_shares(token_id_counts(datasets, schema.numerical), spec)
    return {
        NUMERIC_SHARES: numeric,
        MASS_EDGES: mass_edges(train, spec, numeric),
        CATEGORY_SHARES: token_shares(token_id_counts(datasets, schema.categorical_fields), spec),
        NULL_SHARES: {
            c: {k: nulls / n for k, nulls, n in zip(kinds, counted[c], counted["__n"])} for c in fields
        },
        TRANSITION_SHARES: {  # JSON's keys, as the manifest holds them (its canonical order is the text's)
            str(prev): {str(i): share for i, share in shares.items()}
            for prev, shares in transition_shares(follows, size).items()
        },
    }


def mass_edges(train: pl.LazyFrame, spec: Spec, shares: Mapping[str, list[float]]) -> dict[str, float]:
    """Per number that holds a point mass at its lowest edge in training (:func:`holds_mass`: a fee of 0 on the
    events that carry none), the value at the lowest edge's quantile of its training values above that edge, read
    back from its value field's tokens (``train``: the training dataset; a spec without value fields gives none).
    The mass takes the lowest quantiles' edges: part of the other values /100 fell into the lowest bucket above it,
    unsaid (dogfood 258); scoring says a share below this value as it says one below the lowest edge."""
    out = {}
    q = lowest_prob(spec)
    for c in spec.values:
        if q is None or c not in shares or not holds_mass(spec, c, np.asarray(shares[c])):
            continue
        bucket, value = S.token_column(c), S.token_column(value_field(c))
        position = (
            train.select(bucket, value)
            .explode(bucket, value)
            .filter(pl.col(bucket) > FIRST_ID)  # above the lowest edge (reserved ids lie below FIRST_ID)
            .select(((pl.col(value) - FIRST_ID) / VALUE_STEPS).quantile(q, "nearest"))
            .collect(engine="streaming")
            .item()
        )
        if position is None:
            continue
        edges = spec.edges[c]
        b, f = divmod(position * (len(edges) + 1), 1.0)  # Spec's value rule, read backwards
        if 1 <= b < len(edges):  # an inner bucket: its edges place the value
            lo, width, _ = value_pieces(edges)
            # A step of the tokens below, so that the quantile's own value (a common $1 gift) never lies below it.
            out[c] = lo[int(b)] + (f - (len(edges) + 1) / VALUE_STEPS) * width[int(b)]
    return out


def token_shares(counts: TokenCounts, spec: Spec) -> dict[str, list[float]]:
    """Per field, the share of the training events in each of its token ids (reserved ids, then buckets or learnt
    values): what batch scoring compares a file's with (:func:`seqfraud.scoring.prepare.spread_said`,
    :func:`seqfraud.scoring.prepare.mix_said`), from the artifact's manifest."""
    out = {}
    for field, by_split in counts.items():
        if n := sum((train := by_split.get("train") or {}).values()):
            dense = [0.0] * spec.vocab_size(field)
            for i, c in train.items():
                dense[i] = c / n
            out[field] = dense
    return out


# The report's key for :func:`vanished_values`: a categorical value on at least VANISHED_FROM of the training events
# that falls to a tenth of that share or less in validation or test is said, where that split holds events enough
# to show it (VANISHED_EVENTS at training's share: one session of 3 events lost two values: review 223).
VANISHED_VALUES = "vanished_values"
VANISHED_EVENTS = 20


def vanished_values(counts: TokenCounts, spec: Spec) -> dict[str, dict[str, dict[str, float]]]:
    """Per categorical column, its values on at least :data:`VANISHED_FROM` of the training events whose share in
    validation or test fell to a tenth of that or less, with their share per split: an extract that lost them (a
    collector's outage), read as traffic that changed (dogfood 218: March without MeterValues, 65% of training's
    events; test PR-AUC 0.38 to 0.10, unsaid, where ``unknown_shares`` sees new values alone). Not where values
    training never had took half of its place or more: a new version or a rename, which the unknown share says
    (review 223: an app version's rollover was said twice, as drift and as a lost extract)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for field, by_split in counts.items():
        vocab = spec.vocab[field]
        shares = {
            k: {i: c / n for i, c in ids.items()} for k, ids in by_split.items() if (n := sum(ids.values()))
        }
        sizes = {k: sum(ids.values()) for k, ids in by_split.items()}
        train = shares.get("train", {})
        for i, share in train.items():
            if share < VANISHED_FROM or not FIRST_ID <= i < FIRST_ID + len(vocab):
                continue
            now: dict[str, float] = {k: shares[k].get(i, 0.0) for k in ("val", "test") if k in shares}
            lost = [
                k
                for k, v in now.items()
                if v <= share / 10
                and sizes[k] * share >= VANISHED_EVENTS
                # New values took its place: unknowns beyond what its loss alone leaves (their share of the rest;
                # none where it was every event: review 226, a division by zero).
                and shares[k].get(UNKNOWN, 0.0) - train.get(UNKNOWN, 0.0) / max(1 - share, 1e-12) < share / 2
            ]
            if lost:
                out.setdefault(field, {})[str(vocab[i - FIRST_ID])] = {"train": share, **now}
    return out


def vanished_warnings(vanished: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[str]:
    return [
        f"column {field!r}: value {value!r} is on {', '.join(f'{v:.1%} of the {k} events' for k, v in by_split.items())}: "
        "an extract that lost it (a collector's outage, a value renamed upstream) reads to the model as traffic that "
        "changed, and its scores there fall; check that period's files (`seqfraud monitor` tracks value shares in "
        "production)"
        for field, values in vanished.items()
        for value, by_split in values.items()
    ]


# At least this share of one-event sessions, and a log reads as one row per session (a transaction table).
ONE_EVENT_SHARE = 0.99


def one_event_sessions(sessions: pl.DataFrame) -> str | None:
    """What to say of a log whose sessions nearly all have one event: the sequence model reads no order or timing
    there (every time delta is the missing token), and the few longer sessions are most likely rows whose ids
    repeat. A transaction table keyed by transaction id had two transactions merged into one session in silence
    (dogfood 72)."""
    n = sessions["n_events"]
    single = float(cast(float, (n == 1).mean() or 0.0))
    if single < ONE_EVENT_SHARE:
        return None
    longer = sessions.filter(pl.col("n_events") > 1).sort(S.SESSION_ID)
    said = (
        f"{single:.2%} of the sessions have one event: the sequence model reads no order or timing in them (every "
        "time delta is the missing token), only each event's fields and entity features"
    )
    if longer.height:
        said += (
            f"; {longer.height:,} session(s) have more (up to {int(cast(int, n.max())):,}; first: "
            f"{longer[S.SESSION_ID][0]!r}): if each row is its own transaction, their ids repeat"
        )
    return said + (
        ". To read a customer's or a card's transactions in order, take that column and a period as the session id "
        "(a customer's day: such a session running on for months crosses the splits, docs/risk.md), with labels on "
        "the events: data.policy.on_mixed_labels=any"
    )


class PolarsEngine:
    """One machine, out of core: events beyond the memory budget are hash-partitioned by session on disk,
    then sequenced one part at a time, so peak memory follows the part size, not the data size."""

    # Peak working memory of sequencing one event, per token field: 31-35 bytes measured on the synthetic log
    # at 10M and 50M events (BENCHMARKS.md, "Scale"), plus a little headroom.
    BYTES_PER_EVENT_FIELD = 36
    # The entity stage, in fields of KERNEL_BYTES_PER_EVENT_FIELD bytes per event, measured on the synthetic log
    # (BENCHMARKS.md, "Entity features (issue 12)"): the whole stage holds the coded kernel rows
    # (KERNEL_ROW_FIELDS; 35 bytes an event measured) and, while a column is computed, its 30 Float32 features
    # beside the events; a part's kernel needs its features plus KERNEL_WORKING_FIELDS per row (codes, orders,
    # time ranks, prefix sums: 175 bytes a row in all on 1.2M rows, 220 on 5M, 290 on one part of 10M). At 10M
    # events this model gives 2.0 GB for the stage, measured 2.07 GB (2.62 GB peak RSS of the process).
    KERNEL_BYTES_PER_EVENT_FIELD = 4
    KERNEL_WORKING_FIELDS = 42
    KERNEL_ROW_FIELDS = 10
    # And at most this many events to a part: the kernel's sorts and searches cost 1.8 µs a row on parts of
    # 1.2M rows against 2.9 µs on one part of 10M (cache misses, fresh pages), and parts in memory are cheap.
    KERNEL_PART_EVENTS = 1_500_000
    # The share of the budget a part may use; the rest is the interpreter, the session table and what the
    # allocator keeps from the earlier passes.
    PART_SHARE = 0.6

    def __init__(self, memory_gb: float = 4.0, partitions: int | None = None):
        if memory_gb <= 0:
            raise ConfigError(f"preprocess.memory_gb must be positive, got {memory_gb}")
        self.memory_bytes = memory_gb * 1e9
        self.partitions = partitions

    def load(self, data: Mapping[str, Any], schema: Schema) -> LoadedEvents:
        policy = data.get("policy") or {}
        return load_events(
            data["events"],
            schema,
            data.get("labels"),
            on_unlabeled=policy.get("on_unlabeled", "error"),
            on_orphan_labels=policy.get("on_orphan_labels", "error"),
            on_mixed_labels=policy.get("on_mixed_labels", "error"),
            label_delay=policy.get("label_delay"),
        )

    def fit_stats(
        self,
        loaded: LoadedEvents,
        schema: Schema,
        train_ids: pl.DataFrame,
        probs: list[float],
        min_count: int,
        numeric: tuple[str, ...],
    ) -> FitStats:
        train_events = loaded.events.join(train_ids.lazy(), on=S.SESSION_ID, how="semi")
        return fit_stats(train_events, schema, probs, min_count, numeric, self.PART_SHARE * self.memory_bytes)

    def longest_gaps(self, loaded: LoadedEvents, ids: pl.DataFrame) -> pl.Series:
        """Per session of ``ids``, the longest gap between its consecutive events, in microseconds."""
        return (
            loaded.events.join(ids.lazy(), on=S.SESSION_ID, how="semi")
            .group_by(S.SESSION_ID)
            .agg(pl.col(S.TS_US).sort().diff().max())
            .collect(engine="streaming")[S.TS_US]
        )

    def entity_features(self, loaded: LoadedEvents, entity: EntitySpec, out: Path) -> LoadedEvents:
        """The events with their entity features, computed per entity column into ``out``.

        The kernel's rows are read once, with session ids and entity values as integer codes (sessions in their
        sort order), all the kernel compares. Each column's rows are split by a hash of the value and the kernel
        runs one part at a time (a value's features need only that value's rows), in memory, or beyond the
        memory budget through files. When the events are the log's rows in order (none dropped), a column's
        features are written as one Float32 row per event and put beside the events, which costs no join;
        otherwise they are joined on the row number.
        """
        n_events = int(loaded.sessions["n_events"].sum())
        width = len(entity.column_feature_names(entity.columns[0]))
        field, share = self.KERNEL_BYTES_PER_EVENT_FIELD, self.PART_SHARE * self.memory_bytes
        held = n_events * field * (self.KERNEL_ROW_FIELDS + width)
        in_memory = held <= 0.75 * share
        n_parts = int(self.partitions or 0) or max(
            math.ceil(n_events / self.KERNEL_PART_EVENTS),
            math.ceil(n_events * field * (width + self.KERNEL_WORKING_FIELDS) / (share - held * in_memory)),
        )
        coded, busiest = _coded_rows(loaded, entity)
        rows: pl.DataFrame | pl.LazyFrame
        out.mkdir(parents=True)
        with tempfile.TemporaryDirectory(dir=out, prefix="_kernel") as tmp:
            if in_memory:
                rows = coded.collect(engine="streaming")
                row = rows[S.ROW_INDEX].to_numpy()
            else:
                coded.sink_parquet(Path(tmp, "rows.parquet"))
                rows = pl.scan_parquet(Path(tmp, "rows.parquet"))
                row = rows.select(S.ROW_INDEX).collect()[S.ROW_INDEX].to_numpy()
            beside, n_rows = bool(np.array_equal(row, np.arange(len(row)))), len(row)
            del row
            files, events = [], loaded.events
            for i, column in enumerate(entity.columns):
                target = out / str(i)  # user column names may not make safe file names
                target.mkdir()
                names = entity.column_feature_names(column)
                parts = _kernel_parts(rows, column, entity, n_parts, Path(tmp, f"split{i}"))
                if beside and in_memory:
                    files.append(_beside_in_memory(parts, names, n_rows, target / shard_name(0)))
                    continue
                written = Path(tmp, f"kernel{i}") if beside else target
                written.mkdir(exist_ok=True)
                for j, features in enumerate(parts):
                    features.write_parquet(written / shard_name(j))
                if not any(written.iterdir()):  # no event carries the column: every feature is null
                    empty = rows.head(0) if isinstance(rows, pl.DataFrame) else rows.head(0).collect()
                    column_features(empty, column, entity).write_parquet(written / shard_name(0))
                if beside:
                    files += _write_beside(sorted(written.iterdir()), names, n_rows, target, share)
                    continue
                events = attach(events, pl.scan_parquet(target), names)
        if beside:
            events = pl.concat([events, *(pl.scan_parquet(f) for f in files)], how="horizontal")
        return replace(loaded, events=events, report=loaded.report | {BUSIEST_ENTITY_VALUES: busiest})

    def n_parts(
        self, n_events: int, n_fields: int, bytes_per_event_field: int = BYTES_PER_EVENT_FIELD
    ) -> int:
        """From the data size alone, so that the same data always gives the same shards (and training order)."""
        if self.partitions:
            return int(self.partitions)
        return max(
            1,
            math.ceil(n_events * n_fields * bytes_per_event_field / (self.PART_SHARE * self.memory_bytes)),
        )

    def write_datasets(
        self, loaded: LoadedEvents, spec: Spec, sessions: pl.DataFrame, out: Path
    ) -> dict[str, Any]:
        n_parts = self.n_parts(int(sessions["n_events"].sum()), len(spec.fields))
        columns = [S.SESSION_ID, S.TS_US, S.ROW_INDEX, *spec.schema.categorical_fields, *spec.numeric_fields]
        events = loaded.events.select(columns)
        keys = sessions.lazy().select(S.SESSION_ID, S.LABEL, S.SPLIT)
        with tempfile.TemporaryDirectory(dir=out, prefix="_partitions") as tmp:
            if n_parts == 1:
                parts = [events]
            else:
                part = (pl.col(S.SESSION_ID).hash(seed=0) % n_parts).alias("__part")
                # Scratch files, read once: LZ4 without statistics writes them faster than the default (zstd).
                events.with_columns(part).sink_parquet(
                    pl.PartitionBy(tmp, key="__part", include_key=False),
                    mkdir=True,
                    compression="lz4",
                    statistics=False,
                )
                parts = [
                    pl.scan_parquet(Path(tmp, f"__part={i}"))
                    if Path(tmp, f"__part={i}").exists()
                    else events.clear()
                    for i in range(n_parts)
                ]
            for i, lf in enumerate(parts):
                seqs = (
                    sequences(lf, spec)
                    .join(keys, on=S.SESSION_ID, how="inner", maintain_order="left")
                    .collect(engine="streaming")
                )
                for name in S.SPLITS:
                    (out / name).mkdir(parents=True, exist_ok=True)
                    seqs.filter(pl.col(S.SPLIT) == name).drop(S.SPLIT).write_parquet(
                        out / name / shard_name(i), row_group_size=ROW_GROUP_SESSIONS
                    )
        return {"engine": "polars", "partitions": n_parts}


def _coded_rows(loaded: LoadedEvents, entity: EntitySpec) -> tuple[pl.LazyFrame, dict[str, list | None]]:
    """:func:`kernel_rows` with session ids as their rank among the sessions' ids and entity values as numbers;
    and each column's :func:`busiest_value`, from the same pass over the events."""
    rows = kernel_rows(loaded.events, loaded.sessions, entity)
    values, *busiest = pl.collect_all(
        [
            rows.select(pl.col(c).drop_nulls().unique().implode() for c in entity.columns),
            *(busiest_value(rows, c) for c in entity.columns),
        ],
        engine="streaming",
    )
    coded = rows.with_columns(
        pl.col(S.SESSION_ID).cast(pl.Enum(loaded.sessions[S.SESSION_ID].sort())).to_physical(),
        *(pl.col(c).cast(pl.Enum(values[c][0])).to_physical() for c in entity.columns),
    )
    return coded, {c: list(b.row(0)) if b.height else None for c, b in zip(entity.columns, busiest)}


def _kernel_parts(
    rows: pl.DataFrame | pl.LazyFrame, column: str, entity: EntitySpec, n_parts: int, spill: Path
) -> Iterator[pl.DataFrame]:
    """:func:`column_features` of each part of ``column``'s values split by a hash: from rows in memory, or
    from rows on disk through one partitioned file per part in ``spill``."""
    part = pl.col(column).hash(seed=0) % n_parts
    if isinstance(rows, pl.DataFrame):
        if n_parts == 1:
            yield column_features(rows, column, entity)
            return
        key = rows.select(pl.when(pl.col(column).is_not_null()).then(part)).to_series()
        for j in range(n_parts):
            yield column_features(rows.filter(key == j), column, entity)
        return
    rows.filter(pl.col(column).is_not_null()).with_columns(part.alias("__part")).sink_parquet(
        pl.PartitionBy(spill, key="__part", include_key=False), mkdir=True
    )
    for j in range(n_parts):
        if Path(spill, f"__part={j}").exists():
            yield column_features(pl.scan_parquet(Path(spill, f"__part={j}")).collect(), column, entity)
    shutil.rmtree(spill, ignore_errors=True)


def _beside_in_memory(parts: Iterable[pl.DataFrame], names: list[str], n_events: int, path: Path) -> Path:
    """Kernel outputs (``__row`` numbering the events in order) as one Float32 row per event, null where the
    event has no value, written to ``path``."""
    beside = {name: np.full(n_events, np.nan, dtype=np.float32) for name in names}
    for features in parts:
        at = features[S.ROW_INDEX].to_numpy()
        for name in names:
            beside[name][at] = features[name].to_numpy()  # nulls come as NaN, which no feature is
    pl.DataFrame([pl.Series(name, beside.pop(name), nan_to_null=True) for name in names]).write_parquet(path)
    return path


def _write_beside(
    parts: list[Path], names: list[str], n_events: int, target: Path, memory_bytes: float
) -> list[Path]:
    """Kernel output files (``__row`` numbering the events in order) as Float32 columns of one row per event,
    null where the event has no value: as many features to a file as fit in ``memory_bytes``."""
    per_file = max(
        1, int(memory_bytes // (8 * max(n_events, 1)))
    )  # the column, and the values it is built from
    files = []
    for k, start in enumerate(range(0, len(names), per_file)):
        group = names[start : start + per_file]
        got = pl.scan_parquet(parts).select(S.ROW_INDEX, *group).collect()
        at = got[S.ROW_INDEX].to_numpy()
        columns = []
        for name in group:
            x = np.full(n_events, np.nan, dtype=np.float32)
            x[at] = got[name].to_numpy()  # nulls come as NaN, which no feature is
            columns.append(pl.Series(name, x, nan_to_null=True))
        del got
        files.append(target / shard_name(k))
        pl.DataFrame(columns).write_parquet(files[-1])
    return files


def make_engine(engine_cfg: Mapping[str, Any] | None):
    """``preprocess.engine``: ``polars`` (default) or ``spark``; both write the same spec and datasets."""
    cfg = dict(engine_cfg or {})
    name = cfg.get("engine", "polars")
    if name == "polars":
        return PolarsEngine(float(cfg.get("memory_gb", 4.0)), cfg.get("partitions"))
    if name == "spark":
        from seqfraud.spark_engine import SparkEngine

        return SparkEngine(**(cfg.get("spark") or {}))
    raise ConfigError(f"preprocess.engine must be 'polars' or 'spark', got {name!r}")


def respelt_values(spec: Spec) -> dict[str, list[list[str]]]:
    """Per categorical field, the groups of learnt values that are one value spelt several ways (by
    :func:`spelling`, the rule scoring says a respelt value by): each got a token of its own, and the model learnt
    them apart (dogfood 118: a CSV's true, True and 1)."""
    out = {}
    for field, vocab in spec.vocab.items():
        groups: dict[str, list[str]] = {}
        booleans = holds_booleans(spec, field)
        for v in vocab:
            groups.setdefault(spelling(v, booleans), []).append(v)
        if several := [g for g in groups.values() if len(g) > 1]:
            out[field] = several
    return out


def risk_blind_columns(spec: Spec) -> list[str]:
    """The entity columns whose ``fraud_*`` features are 0 for nearly every training event, in every window: their
    quantile edges, fitted on training, hold nothing above 0 (the few events above 0, if any, still get a token)."""
    entity = spec.entity
    if entity is None or not entity.risk:
        return []
    return [
        c
        for c in entity.columns
        if all(max(spec.edges.get(S.entity_feature(c, "fraud", w)) or [0.0]) <= 0 for w in entity.windows)
    ]


GAP_SAMPLE = 20_000  # training sessions of two events or more whose longest gap is measured


def tied_share(train: pl.DataFrame) -> float:
    """:data:`~seqfraud.features.spec.TIED_SHARE` of the training sessions (their session table's counts)."""
    events = int(train["n_events"].sum())
    return int(train["n_tied"].sum()) / events if events else 0.0


def whole_second_share(train: pl.DataFrame) -> float:
    """:data:`~seqfraud.features.spec.WHOLE_SECONDS` of the training sessions (their session table's counts)."""
    events = int(train["n_events"].sum())
    return int(train["n_whole_seconds"].sum()) / events if events else 0.0


def opening_shares(train: pl.DataFrame) -> dict[str, float]:
    """:data:`~seqfraud.features.spec.OPENING_SHARES` of the training sessions (their session table's first types)."""
    counts = train[S.FIRST_TYPE].value_counts(sort=True)
    return {str(t): n / train.height for t, n in counts.iter_rows() if n >= OPENER_SHARE * train.height}


def longest_gap_quantiles(engine: Any, loaded: LoadedEvents, train: pl.DataFrame) -> list[float] | None:
    """:data:`~seqfraud.features.spec.GAP_QUANTILES` of the training sessions' longest gap between events, in
    seconds, over every k-th session of two events or more by id (at most :data:`GAP_SAMPLE`, the same sessions
    for either engine); None without such sessions. The service expires a session idle for ``--session-ttl``:
    applications that run for days were cut at every gap over an hour, and their later events scored alone
    (dogfood 210), so its start compares the two."""
    several = train.filter(pl.col("n_events") > 1).select(S.SESSION_ID).sort(S.SESSION_ID)
    if not several.height:
        return None
    sample = several.gather_every(-(-several.height // GAP_SAMPLE))
    gaps = engine.longest_gaps(loaded, sample).cast(pl.Float64) / 1e6
    return [float(gaps.quantile(q, "higher")) for q in GAP_QUANTILES]


def preprocess(
    data_cfg: Mapping[str, Any],
    features_cfg: Mapping[str, Any],
    out_dir: str | Path,
    engine_cfg: Mapping[str, Any] | None = None,
    *,
    supervised: bool | None = None,
) -> Prepared:
    """Run the whole preprocessing and write ``spec.json``, ``data/{split}/part-*.parquet`` and a report.

    The engine loads and counts; validation, the split, the spec rules and the report are shared here.
    ``supervised`` (a classifier's run: True; a pretraining's: False) refuses the splits that run cannot use
    (:func:`~seqfraud.data.split.check_splits`) before anything is written; None leaves them to the caller.
    """
    t0 = time.perf_counter()
    engine = make_engine(engine_cfg)
    data = resolve_data_config(data_cfg)
    ensure_synthetic(data)
    schema = Schema.from_config(data["schema"])
    policy = data.get("policy") or {}
    # An unlabelled session happened all the same: its events are context for the entity features of the sessions
    # that share its device or IP, as they will be when the model is served. Under on_unlabeled=drop it is loaded
    # as under keep, and left out of the splits below (and so of the spec's fit), not out of the log.
    dropping = policy.get("on_unlabeled") == "drop"
    loaded = engine.load({**data, "policy": {**policy, "on_unlabeled": "keep"}} if dropping else data, schema)
    if data.get("typologies"):  # read by training after its fit: checked here, before it
        read_typologies(data["typologies"], schema, loaded.sessions[S.SESSION_ID])
    split = data.get("split") or {}
    test_end = split.get("test_end")
    in_range = before_test_end(loaded.sessions, test_end)
    val_us, test_us = split_boundaries(
        in_range,
        split.get("val_start"),
        split.get("test_start"),
        split.get("val_fraction", 0.15),
        split.get("test_fraction", 0.15),
        test_end,
    )
    cutoff = split.get("label_cutoff")
    delay_us = label_delay_us(policy.get("label_delay"))
    final_us = None if delay_us is None else usable_delay_us(delay_us, schema)
    sessions, late = labels_known_by(assign_split(in_range, val_us, test_us), cutoff, test_us, final_us)
    sessions, unlabeled = drop_unlabeled(sessions, keep_in_train=not dropping)
    crossed = crossing(sessions, val_us, test_us)
    train = sessions.filter(pl.col(S.SPLIT) == "train")
    counts = {
        name: {
            "sessions": sessions.filter(pl.col(S.SPLIT) == name).height,
            "positives": int(sessions.filter(pl.col(S.SPLIT) == name)[S.LABEL].sum() or 0),
        }
        for name in S.SPLITS
    }
    if supervised is not None:  # a refused run wrote a whole prepared directory first (dogfood 56)
        bounds = {"val_start": from_epoch_us(val_us), "test_start": from_epoch_us(test_us)}
        # The log's own span beside them: dates of another calendar than the log's showed no mismatch (dogfood 72).
        starts = in_range[S.START_TIME]
        span = (
            {
                "sessions_start": [
                    from_epoch_us(cast(int, starts.min())),
                    from_epoch_us(cast(int, starts.max())),
                ]
            }
            if len(starts)
            else {}
        )
        check_splits({"splits": counts} | bounds | span, cutoff, supervised=supervised)
    out = Path(out_dir)
    for stale in (DATA_DIR, ENTITY_DIR):  # outputs of an earlier run must not mix with these
        if (out / stale).exists():
            shutil.rmtree(out / stale)
    entity = entity_spec(
        schema,
        features_cfg.get("entity"),
        (data.get("policy") or {}).get("label_delay"),
        train,
    )
    frauds_known = False  # whether the risk features of training read some fraud (known before validation)
    # Each phase said as it starts: a Spark run showed nothing for minutes (dogfood 33).
    if entity is not None:
        log.info("entity features: %d column(s) x %d window(s)", len(entity.columns), len(entity.windows))
        t_entity = time.perf_counter()
        loaded = engine.entity_features(loaded, entity, out / ENTITY_DIR)
        entity_seconds = round(time.perf_counter() - t_entity, 3)
        for said in busy_warnings(loaded.report[BUSIEST_ENTITY_VALUES], loaded.sessions.height):
            log.warning("%s", said)
        if entity.risk:
            # No fraud known in time left every risk feature of the training period at its prior, unsaid (dogfood 65:
            # hours read as seconds made the whole log 7 minutes long, within a 3-day label delay).
            known = loaded.sessions.filter(pl.col(S.LABEL_KNOWN) < val_us)
            frauds_known = bool((known[S.LABEL] == 1).any())
            if not frauds_known:
                log.warning(
                    "entity risk features: %s label(s), and no fraud among them, become known before validation "
                    "starts (%s): in training the known_*, fraud_* and rate_* features read no fraud, so the model "
                    "learns nothing from them. Is the label delay (%s) longer than the training period, or are the "
                    "times read in the wrong unit (data.schema.timestamp_unit)?",
                    f"{known.height:,}",
                    from_epoch_us(val_us),
                    entity.label_delay,
                )
    tail = tuple(features_cfg.get("tail_quantiles") or ())
    n_buckets = int(features_cfg.get("n_buckets", 16))
    min_count = int(features_cfg.get("min_count", 5))
    log.info("fitting the spec on the %s training sessions", f"{train.height:,}")
    stats = engine.fit_stats(
        loaded,
        schema,
        train.select(S.SESSION_ID),
        quantile_probs(n_buckets, tail),
        min_count,
        (*schema.numerical, *(entity.feature_names() if entity else ())),
    )
    spec = build_spec(
        stats,
        schema,
        timestamp_unit=loaded.timestamp_unit,
        max_len=int(features_cfg.get("max_len", 256)),
        hop=features_cfg.get("hop"),
        min_count=min_count,
        max_vocab=int(features_cfg.get("max_vocab", 1000)),
        n_buckets=n_buckets,
        tail_quantiles=tail,
        time_delta=dict(features_cfg.get("time_delta") or {}),
        entity=entity,
        numeric_values=bool(features_cfg.get("numeric_values", True)),
    )
    for field, groups in respelt_values(spec).items():
        log.warning(
            "column %r: its vocabulary holds %s: one value spelt several ways? Each has a token of its own, learnt "
            "apart from the others: write them one way in the log",
            field,
            "; ".join(" and ".join(map(repr, g)) for g in groups),
        )
    if entity is not None and frauds_known and (blind := risk_blind_columns(spec)):
        # Some frauds known in time, but hardly any on a shared value of these columns (dogfood 112: a 90-day
        # chargeback window over two months left every device's fraud_* at 0), unsaid.
        log.warning(
            "entity risk features of %s: their fraud_* features are 0 for nearly every training event (every "
            "quantile edge fitted on training is 0: few events had a fraud on their shared value known before "
            "them), so the model has few examples to learn them from; %s near the training period, or windows "
            "shorter than it, leave few (docs/entities.md)",
            blind,
            f"a label delay ({entity.label_delay})" if entity.label_delay else "label times",
        )
    spec.fit_info |= {
        "val_start": from_epoch_us(val_us),
        "test_start": from_epoch_us(test_us),
        # A per-event score of a session shorter than nearly every training session is the model's reading of a
        # kind of session it hardly saw: online results say so (seqfraud.scoring.online).
        SHORTEST_TRAINED: int(train["n_events"].quantile(0.01, "lower") or 0) if train.height else 0,
        LONGEST_TRAINED: int(train["n_events"].quantile(0.99, "higher") or 0) if train.height else 0,
        LONGEST_GAPS: longest_gap_quantiles(engine, loaded, train),
        TIED_SHARE: tied_share(train),
        WHOLE_SECONDS: whole_second_share(train),
        OPENING_SHARES: opening_shares(train),
        ON_MIXED_LABELS: policy.get("on_mixed_labels", "error"),
    }
    if policy.get("on_unlabeled") == "negative":
        spec.fit_info |= {ON_UNLABELED: "negative", LABEL_DELAY: policy.get("label_delay")}
    for key in (
        ZERO_PADDED_IDS,
        INTEGER_IDS,
        FIXED_WIDTH_IDS,
        PADDED_WIDTH_IDS,
        ONE_CASE_IDS,
        ZONED_TIMESTAMPS,
        LABELS_WITHOUT_COLUMN,
    ):
        if loaded.report.get(key):
            spec.fit_info[key] = loaded.report[key]
    (out / DATA_DIR).mkdir(parents=True)
    spec.save(out / SPEC_FILE)
    log.info("tokenizing and writing the datasets into %s", out / DATA_DIR)
    engine_report = engine.write_datasets(loaded, spec, sessions, out / DATA_DIR)
    datasets = {name: dataset(out, name) for name in S.SPLITS}
    by_token = token_id_counts(datasets, spec.schema.categorical_fields)
    unknown, vanished = unknown_shares(by_token), vanished_values(by_token, spec)
    entity_nulls = entity_null_shares(datasets, spec)
    report = (
        loaded.report
        | late
        | unlabeled
        | engine_report
        | {
            "inputs": {key: input_record(data.get(key)) for key in ("events", "labels", "typologies")},
            # What a run on this prepared_dir must not set otherwise (check_prepared_settings).
            PREPARED_WITH: {
                "split": dict(split),
                "policy": dict(policy),
                "features": spec_settings(features_cfg),
            },
            "splits": counts,
            "val_start": spec.fit_info["val_start"],
            "test_start": spec.fit_info["test_start"],
            "test_end": from_epoch_us(to_epoch_us(test_end)) if test_end else None,
            "sessions_after_test_end": loaded.sessions.height - in_range.height,
            "sessions_crossing_split": crossed,
            **truncation(sessions["n_events"], spec),
            UNKNOWN_SHARES: unknown,
            VANISHED_VALUES: vanished,
            **({ENTITY_NULL_SHARES: entity_nulls} if entity else {}),
            **(
                {"entity_features": len(entity.feature_names()), "entity_seconds": entity_seconds}
                if entity
                else {}
            ),
            "seconds": round(time.perf_counter() - t0, 3),
            "peak_rss_gb": round(peak_rss_bytes() / 1e9, 3),
        }
    )
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    if report["truncated_sessions"]:
        log.warning(
            "%s session(s) are longer than features.max_len=%s (the longest %s events): the sequence model reads "
            "%s of each (features.hop), so %s events (%.1f%% of all), each session's earliest, are not read by it (the LightGBM "
            "aggregates of model=stacked and model=lightgbm read them all). Where the signal may sit at a long "
            "session's start (a login, a password reset), raise features.max_len",
            f"{report['truncated_sessions']:,}",
            spec.max_len,
            f"{report['longest_session']:,}",
            spec.window_said,
            f"{report['events_not_read']:,}",
            100 * report["events_not_read"] / max(report["events_in_splits"], 1),
        )
    for said in [
        *unknown_share_warnings(unknown, spec),
        *vanished_warnings(vanished),
        *entity_null_warnings(entity_nulls),
    ]:
        log.warning("%s", said)
    if said_one := one_event_sessions(sessions):
        log.warning("%s", said_one)
    for split, c in crossed.items():
        in_split = int(sessions.filter(pl.col(S.SPLIT) == split)["n_events"].sum())
        log.log(
            logging.WARNING if c["events"] > CROSSING_SHARE * in_split else logging.INFO,
            "%s %s session(s) (%s of the split's %s events) run on past the %s start: a session belongs to the split "
            "of its first event, so its later events, and its label where its fraud came later, are read in a period "
            "that judges it. Where the session id is a customer, card or account, take a shorter-lived id "
            "(a visit, a day: docs/risk.md), or end the log's sessions at the split boundaries",
            f"{c['sessions']:,}",
            split,
            f"{c['events']:,}",
            f"{in_split:,}",
            "validation" if split == "train" else "test",
        )
    for name, c in counts.items():
        log.info("%s: %s sessions, %s positive", name, c["sessions"], c["positives"])
    if test_end:
        log.info(
            "test_end %s: %s later sessions left out", report["test_end"], report["sessions_after_test_end"]
        )
    if late.get("labels_known_after_cutoff"):
        log.info(
            "label_cutoff %s held back these train/val labels: %s", cutoff, late["labels_known_after_cutoff"]
        )
    if after := late.get("labels_known_after_test_start"):
        # Without a cutoff that is the usual single run (info), unless most of validation is so (dogfood 201: 388 of
        # 395 validation labels, which chose the checkpoint, calibration and thresholds); with one, a cutoff set
        # past the test start.
        val_late, val_all = (after.get("val") or {}).get("sessions", 0), counts["val"]["sessions"]
        most = cutoff is None and 2 * val_late > val_all
        log.log(
            logging.WARNING if cutoff is not None or most else logging.INFO,
            "train/val labels known only at or after the test start %s, which a retrain then could not have had: "
            "%s%s",
            report["test_start"],
            after,
            f" (data.split.label_cutoff {cutoff} is later)"
            if cutoff is not None
            else f"; {val_late:,} of validation's {val_all:,}: a retrain at the test start would have had few of "
            "the labels that chose its checkpoint, calibration and thresholds, so the test figures flatter it; "
            "data.split.label_cutoff=test_start trains as it would, on the "
            f"{val_all - val_late:,} validation label(s) known by then: start validation earlier by the labels' "
            "delay (data.split.val_start) where they are too few (dogfood 264: 7, all frauds, and the run refused)"
            if most
            else "",
        )
    for key in ("orphan_labels_dropped", "unlabeled_sessions_dropped", "unlabeled_events_dropped"):
        if report.get(key):  # keep drops none from train: no "= 0" warning (dogfood 77)
            log.warning("policy: %s = %s", key, report[key])
    if "unlabeled_sessions_kept" in report:
        log.info(
            "%s training sessions without a label (none given, or held back by data.split.label_cutoff) kept: "
            "pretraining reads them, supervised fits skip them",
            report["unlabeled_sessions_kept"],
        )
    events = loaded.events if isinstance(loaded.events, pl.LazyFrame) else None
    return Prepared(spec=spec, datasets=datasets, report=report, events=events, sessions=sessions)


def input_record(path: str | None) -> dict[str, Any] | None:
    """An input's absolute path, its files and a digest of their bytes: two runs on the same path with other
    contents, or on a copy elsewhere, are told apart or matched (:mod:`seqfraud.provenance`)."""
    if not path:
        return None
    files = resolve_paths(path, warn=False)
    return {
        "path": str(Path(path).expanduser().resolve()),
        "files": len(files),
        "sha256": files_digest(files),
    }


def drop_unlabeled(sessions: pl.DataFrame, *, keep_in_train: bool) -> tuple[pl.DataFrame, dict[str, int]]:
    """Sessions loaded without a label leave the splits that cannot use them. ``data.policy.on_unlabeled=keep``
    (``keep_in_train``): they stay in train with a null label, for pretraining (supervised fits skip them:
    :func:`seqfraud.training.train.labelled_train`), and leave val and test, which cannot evaluate them.
    ``drop``: they leave every split, and so the spec's fit. Counted for the report; a no-op where no session
    has a null label. Being real traffic, unlabelled sessions still count where no label is read: entity
    features see every session's events under either policy, and under ``keep`` the spec is fitted on them."""
    unlabeled = pl.col(S.LABEL).is_null()
    if not sessions.select(unlabeled.any()).item():
        return sessions, {}
    kept_where = (pl.col(S.SPLIT) == "train") if keep_in_train else pl.lit(False)
    kept, dropped = (sessions.filter(unlabeled & where) for where in (kept_where, ~kept_where))
    report = {
        "unlabeled_sessions_kept": kept.height,
        "unlabeled_events_kept": int(kept["n_events"].sum()),
        "unlabeled_sessions_dropped": dropped.height,
        "unlabeled_events_dropped": int(dropped["n_events"].sum()),
        # Validation traffic that calibration and the thresholds never see (export warns).
        "unlabeled_val_sessions_dropped": dropped.filter(pl.col(S.SPLIT) == "val").height,
    }
    if not keep_in_train:
        report = {k: v for k, v in report.items() if "_dropped" in k}
    return sessions.filter(~(unlabeled & ~kept_where)), report


PREPARED_WITH = "data_settings"  # the report's record of data.split, data.policy and the spec's features.*
# features.* that the model reads at training, not the spec at preprocessing: a prepared_dir serves any of them.
MODEL_FEATURES = ("exclude", "shuffle_order")


def spec_settings(features_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The features.* settings preprocessing fits the spec with (:data:`MODEL_FEATURES` aside), as plain data (a
    caller's OmegaConf node among them)."""
    return {k: v for k, v in plain(features_cfg).items() if k not in MODEL_FEATURES}


def check_prepared_settings(
    prepared: Prepared, data_cfg: Mapping[str, Any], where: str, features_cfg: Mapping[str, Any]
) -> None:
    """Refuse a run whose data.split, data.policy or spec-fitting features.* differ from those ``prepared`` was
    made with: its splits, labels, cutoff and tokens are fixed in its datasets, and such a run trained on them
    silently while its config.yaml (and compare's leaderboard) recorded the other settings (dogfood 61; a
    features.max_len=64 read 16 events a session, dogfood 105). A prepared_dir made before the record is taken as
    it is, and one made before the features' record for those."""
    made = prepared.report.get(PREPARED_WITH)
    if made is None:
        return
    given = {section: data_cfg.get(section) or {} for section in ("split", "policy")}
    differ = [
        f"data.{section}.{key} ({_said(made, section, key)} there, {_said(given, section, key)} here)"
        for section in ("split", "policy")
        for key in sorted(set(given[section]) | set(made[section]))
        if _as_read(made, section, key) != _as_read(given, section, key)
    ]
    if (fitted := made.get("features")) is not None:
        ours = spec_settings(features_cfg)
        entities = bool((data_cfg.get("schema") or {}).get("entities"))
        differ += [
            f"features.{key} ({fitted.get(key)!r} there, {ours.get(key)!r} here)"
            for key in sorted(set(fitted) | set(ours))
            if _feature_as_read(fitted, key, entities) != _feature_as_read(ours, key, entities)
        ]
    differ += _other_inputs(prepared.report.get("inputs") or {}, data_cfg)
    if differ:
        raise ConfigError(
            f"prepared_dir={where} was preprocessed with other settings: {'; '.join(differ)}. Its splits, "
            "labels and tokens are fixed in its datasets: preprocess again with these (leave prepared_dir out; "
            "init_from= then checks that the new spec matches the pretraining's), or leave them as they were"
        )


def _other_inputs(recorded: Mapping[str, Any], data_cfg: Mapping[str, Any]) -> list[str]:
    """The data.events and data.labels a run names other than those its prepared_dir read (a fine-tune on a
    pretraining's prepared_dir with a newer label table trained on the old labels without a word: dogfood 77).

    A label table is compared by its contents, wherever it lies (a copy, another mount); an event log by the
    files it resolves to and their count, not their bytes, which only preprocessing reads in full. A path that
    names no file is refused, but for the input the prepared_dir was made from (removed since: the prepared_dir
    holds it) and the built-in synthetic data's own files, which a run generates (the default under another
    ``paths.data_dir``, as a DDP launch gives)."""
    synthetic = data_cfg.get("synthetic")
    # As paths, so that ./data/x and data/x are one (a DDP test's relative default).
    generated = (
        {Path(synthetic["dir"]) / f"{k}.parquet" for k in ("events", "labels")} if synthetic else set()
    )
    differ: list[str] = []
    for key in ("events", "labels") if recorded else ():  # a prepared_dir made before the record: as it is
        there, here = recorded.get(key), data_cfg.get(key)
        if there is None and here is None:
            continue
        if there is None or here is None:
            differ.append(f"data.{key} ({there and there['path']!r} there, {here!r} here)")
            continue
        try:
            files = resolve_paths(here, warn=False)
        except DataValidationError:
            if Path(here) not in generated and str(Path(here).expanduser().resolve()) != there["path"]:
                differ.append(f"data.{key} ({here!r} names no file; {there['path']!r} there)")
            continue
        if key == "labels" and files_digest(files) != there["sha256"]:
            differ.append(f"data.labels ({there['path']!r} there, {here!r} here, with other contents)")
        elif key == "events" and not _same_files(files, there):
            differ.append(f"data.events ({there['path']!r} there, {here!r} here: other files)")
    return differ


def _same_files(files: list[str], record: Mapping[str, Any]) -> bool:
    """Whether ``files`` are the ones a recorded input resolved to: as many as it held, and those it resolves to
    today (by real path; a part added or removed since changes the count)."""
    try:
        then = resolve_paths(record["path"], warn=False)
    except DataValidationError:
        return False  # gone: nothing to compare with
    real = sorted(map(os.path.realpath, files))
    return len(files) == int(record["files"]) and real == sorted(map(os.path.realpath, then))


def _feature_as_read(features: Mapping[str, Any], key: str, entities: bool) -> Any:
    """A features.* value as the spec's fit reads it, so that one written otherwise compares equal (hop null and
    max_len // 8; entity windows 1h and 60m), and the entity settings of a log without entities, which nothing
    reads, are alike (review 107)."""
    value = features.get(key)
    if key == "hop" and value is None:
        return max(1, int(features["max_len"]) // 8)
    if key == "entity":
        if not entities:
            return None
        value = dict(value or {})
        value["windows"] = [
            duration_us(str(w), "features.entity.windows") for w in value.get("windows") or ()
        ]
    return value


def _as_read(settings: Mapping[str, Any], section: str, key: str) -> Any:
    """A data.split or data.policy value as preprocessing reads it, so that one written otherwise compares equal
    (2026-05-10 and 2026-05-10T00:00:00, 60d and 1440h), one it does not read is None (a fraction beside its
    boundary date), and an on_unlabeled that changes no label is alike (keep, drop and error: review 62)."""
    value = settings[section].get(key)
    if value is None:
        return None
    if key in ("val_fraction", "test_fraction"):
        return float(value) if key in fractions_read(settings["split"]) else None
    if key in ("val_start", "test_start", "test_end") or (key == "label_cutoff" and value != "test_start"):
        return to_epoch_us(str(value))
    if key == "label_delay":
        return label_delay_us(str(value))
    if key == "on_unlabeled":
        return value == "negative"
    return value


def _said(settings: Mapping[str, Any], section: str, key: str) -> str:
    """A setting for a message, marked where preprocessing does not read it: "val_fraction (0.15 there, 0.15
    here)" read as a contradiction, where only one side's was read (dogfood 115)."""
    value = settings[section].get(key)
    return f"{value!r}" + (
        "" if value is None or _as_read(settings, section, key) is not None else ", not read"
    )


def load_prepared(out_dir: str | Path) -> Prepared:
    """An earlier preprocessing output, for training on data that was prepared once (torchrun, SLURM, Spark)."""
    out = Path(out_dir).expanduser()
    if not (out / DATA_DIR).is_dir():  # an artifact was told it had "no dataset shards" (dogfood 55)
        raise ConfigError(
            f"{out}: no {DATA_DIR}/ of tokenized datasets in it: a prepared_dir is the output of seqfraud "
            "preprocess or a training run's directory (an exported artifact holds none)"
        )
    spec = Spec.load(out / SPEC_FILE)
    datasets = {name: dataset(out, name) for name in S.SPLITS}
    for path in datasets.values():
        shard_files(path)  # fails early, naming the directory, when a split is missing
    report = json.loads((out / REPORT_FILE).read_text()) if (out / REPORT_FILE).exists() else {}
    return Prepared(spec=spec, datasets=datasets, report=report, events=None, sessions=None)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (``ru_maxrss`` is in KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
