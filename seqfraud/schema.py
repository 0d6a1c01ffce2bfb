"""The one place that spells column names.

User-facing column names come from config (``data.schema``) into :class:`Schema`; the names of the
columns seqfraud itself writes (datasets, predictions, scores) are the constants below. Nothing else in
the package spells a column name.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from seqfraud.errors import ConfigError

# Columns of the tokenized datasets, predictions and score files that seqfraud writes.
SESSION_ID = "session_id"
LABEL = "label"
LENGTH = "length"
START_TIME = "start_time"
SPLIT = "split"
SCORE = "score"
RAW_SCORE = "raw_score"  # the model's own probability, next to the calibrated ``score``
BAND = "band"
TYPOLOGY = "typology"
UNKNOWN_TYPOLOGY = (
    "unknown"  # the group of the labelled frauds a typology table leaves out (per_group_metrics)
)
# Per-session label availability (epoch us): when the session's label became known, from
# ``data.schema.label_time`` or ``data.policy.label_delay``; null when it never is. ``END_TIME`` is the
# session's last event, where a label delay counts from.
LABEL_KNOWN = "label_known"
END_TIME = "end_time"
# Under ``data.policy.on_unlabeled=negative``, where a session's label is known only after its end plus the label
# delay: the time from which it reads as a known legitimate one until then (a chargeback file does not list it
# yet); null otherwise.
LEGIT_FROM = "legit_from"
LABEL_NOISE = "label_noise"
# Columns of per-event explanations (``Scorer.explain``): the event's place in the session's kept
# sequence (0 = oldest kept), its raw event type and time for display, its share of the score, and its other
# fields' values (a struct keyed by the log's column names: an amount that is the whole signal is shown).
POSITION = "position"
EVENT = "event"
EVENT_TIME = "event_time"
CONTRIBUTION = "contribution"
FIELDS = "fields"
# Columns of session embeddings (``seqfraud embed``): ``emb_0`` .. ``emb_{d-1}``, the encoder's pooled state.
EMBEDDING_PREFIX = "emb_"
# Token field derived from timestamps: the log-bucketed time since the previous event.
TIME_DELTA = "time_delta"
# Internal working columns, of the double underscore that no event field may bear (Schema).
ROW_INDEX = "__row"
FIRST_TYPE = "__first_type"  # a session table's: the event type of the session's first event
# Working columns of ``data.schema.label_time``: epoch microseconds (null where absent, unparsed or out of
# range), and the flags validation counts.
LABEL_TIME_US = "__label_time_us"
LABEL_TIME_PRESENT = "__label_time_present"
LABEL_TIME_OUT_OF_RANGE = "__label_time_out_of_range"
LABEL_TIME_NAIVE = "__label_time_naive"  # a label time string with a time of day but no UTC offset
TS_US = "__ts_us"
TS_PRESENT = "__ts_present"
TS_OUT_OF_RANGE = "__ts_out_of_range"
TS_NAIVE = "__ts_naive"  # a timestamp string without a UTC offset, while training's events are validated
EVENT_ID = "__event_id"  # data.schema.event_id, as a string, while events are validated
FILE = "__file"  # the file of a folder an event row was read from, where its files are judged apart
# A scored row's hash over the columns a model reads, and over its session and instant: repeats and ties are counted
# by their distinct values.
ROW_HASH = "__row_hash"
TIME_HASH = "__time_hash"
# The normalized event frame's working columns: no column of the log may take their names (Schema).
WORKING_NAMES = (
    ROW_INDEX,
    LABEL_TIME_US,
    LABEL_TIME_PRESENT,
    LABEL_TIME_OUT_OF_RANGE,
    LABEL_TIME_NAIVE,
    TS_US,
    TS_PRESENT,
    TS_OUT_OF_RANGE,
    TS_NAIVE,
    EVENT_ID,
    FILE,
    ROW_HASH,
    TIME_HASH,
)
# Names the frame gives its roles and the time gaps: no event field (type, categorical, numeric, entity) may take
# them, while the roles are renamed to them (a session id column named label works).
RESERVED_NAMES = (SESSION_ID, LABEL, TIME_DELTA)

SPLITS = ("train", "val", "test")
# Integer epochs: the usual units, and minutes, hours or days for logs counted in steps (a simulator's hour).
EPOCH_UNITS = ("s", "ms", "us", "ns", "m", "h", "d")
TIMESTAMP_UNITS = ("auto", *EPOCH_UNITS)
# Plausible event times, [start, end): anything outside is an error, which is also what catches epochs read in
# the wrong unit (a column that mixes seconds and milliseconds) and epochs that would overflow.
TIMESTAMP_RANGE = ("1990-01-01", "2100-01-01")


def entity_feature(column: str, feature: str, window: str | None = None) -> str:
    """Name of one entity feature of an entity column: ``ent__{column}__{feature}[_{window}]``."""
    return f"ent__{column}__{feature}" + (f"_{window}" if window else "")


def value_field(column: str) -> str:
    """Name of the field that carries a numeric column's value as a number: ``val__{column}``."""
    return f"val__{column}"


def embedding_column(j: int) -> str:
    """Name of a session embedding's ``j``-th dimension: ``emb_{j}``."""
    return f"{EMBEDDING_PREFIX}{j}"


def token_column(field_name: str) -> str:
    """Name of the list column that holds one field's token ids in a tokenized dataset."""
    return f"tok__{field_name}"


# The keys of data.schema that name columns: each column takes one of them.
_ROLE_KEYS = (
    "session_id",
    "timestamp",
    "event_type",
    "categorical",
    "numerical",
    "entities",
    "label",
    "label_time",
    "event_id",
)


@dataclass(frozen=True)
class Schema:
    """Roles of the columns in a user's event log."""

    session_id: str = "session_id"
    timestamp: str = "timestamp"
    event_type: str = "event_type"
    label: str = "label"
    categorical: tuple[str, ...] = ()
    numerical: tuple[str, ...] = ()
    # Columns that name things sessions share (device, IP, card, terminal, account); see docs/entities.md.
    entities: tuple[str, ...] = ()
    # Column of the label table (or of the events, when labels live there) saying when a label became known.
    label_time: str | None = None
    # Column of an event's own id: online scoring (POST /events) takes a repeated id as the same event.
    event_id: str | None = None
    timestamp_unit: str = "auto"
    timestamp_range: tuple[str, str] = TIMESTAMP_RANGE

    def __post_init__(self) -> None:
        object.__setattr__(self, "categorical", tuple(self.categorical))
        object.__setattr__(self, "numerical", tuple(self.numerical))
        object.__setattr__(self, "entities", tuple(self.entities))
        object.__setattr__(self, "timestamp_range", tuple(str(v) for v in self.timestamp_range))
        for role in ("session_id", "timestamp", "event_type", "label"):
            if not isinstance(getattr(self, role), str) or not getattr(self, role):
                hint = (
                    ": every event needs a type (what happened: a login, a payment); a log without one can use "
                    "its most telling categorical column (a product code, a transaction type)"
                    if role == "event_type"
                    else ""
                )
                raise ConfigError(f"data.schema.{role} must name a column, got {getattr(self, role)!r}{hint}")
        for role in ("categorical", "numerical", "entities"):
            bad = [c for c in getattr(self, role) if not isinstance(c, str) or not c]
            if bad:
                raise ConfigError(
                    f"data.schema.{role} must list column names, got {bad} (quote a name YAML reads as a "
                    "number or null: '2019', 'null')"
                )
        if self.timestamp_unit not in TIMESTAMP_UNITS:
            raise ConfigError(
                f"data.schema.timestamp_unit must be one of {TIMESTAMP_UNITS}, got {self.timestamp_unit!r}"
            )
        start: datetime | None
        end: datetime | None
        try:
            start, end = (_utc(datetime.fromisoformat(v)) for v in self.timestamp_range)
        except ValueError:
            start = end = None
        if start is None or end is None or start >= end:
            raise ConfigError(
                f"data.schema.timestamp_range must be two ISO datetimes, start before end (naive "
                f"means UTC), got {list(self.timestamp_range)}"
            )
        names = self.named
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            # Each with its roles: a column put in entities on purpose left its other role to be found (dogfood 200).
            given = {k: v for k, v in self.roles().items() if k in _ROLE_KEYS}
            said = "; ".join(
                f"{n!r} in "
                + " and ".join(k for k, v in given.items() if n == v or (isinstance(v, list) and n in v))
                for n in dupes
            )
            raise ConfigError(
                f"data.schema gives a column more than one role: {dupes} ({said}); a column takes one role"
            )
        # A role named as a working column took its place: a session id column named __ts_us made each event its
        # own session, unsaid (dogfood 166). The event fields keep their names beside every working column of
        # the pipeline (__field, __value, __part, ...): no name of the double underscore for them.
        fields = set(self.categorical_fields + self.numerical + self.entities)
        clash = sorted(
            n
            for n in set(names)
            if n in WORKING_NAMES or (n in fields and (n in RESERVED_NAMES or n.startswith("__")))
        )
        if clash:
            raise ConfigError(
                f"data.schema: column(s) {clash} use a name seqfraud reserves ({list(WORKING_NAMES)} in any role; "
                f"{list(RESERVED_NAMES)} and every name starting with '__' for the event type, a categorical, "
                "numerical or entity column); rename the column(s) in the data"
            )

    @functools.cached_property
    def categorical_fields(self) -> tuple[str, ...]:
        """Fields tokenized through a vocabulary; the event type is one of them."""
        return (self.event_type, *self.categorical)

    @functools.cached_property
    def event_columns(self) -> tuple[str, ...]:
        """Columns an event row must carry (the label may live in a separate table)."""
        return (
            self.session_id,
            self.timestamp,
            self.event_type,
            *self.categorical,
            *self.numerical,
            *self.entities,
        )

    @functools.cached_property
    def named(self) -> tuple[str, ...]:
        """Every column a role names: what a table is read for (a label table's too)."""
        return (
            *self.event_columns,
            self.label,
            *([self.label_time] if self.label_time else []),
            *([self.event_id] if self.event_id else []),
        )

    def roles(self) -> dict[str, Any]:
        return asdict(self) | {
            "categorical": list(self.categorical),
            "numerical": list(self.numerical),
            "entities": list(self.entities),
            "timestamp_range": list(self.timestamp_range),
        }

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> Schema:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ConfigError(f"data.schema has unknown keys {unknown}; known keys are {sorted(known)}")
        kwargs: dict[str, Any] = dict(cfg)
        # null reads as the default (data.schema.entities=null was a TypeError traceback: dogfood 88); a value
        # that is not a list is refused, where one name read as its letters.
        for k in ("categorical", "numerical", "entities", "timestamp_range"):
            v = kwargs.get(k)
            if v is None:
                kwargs.pop(k, None)  # the field's default
            elif isinstance(v, str) or not isinstance(v, Sequence):
                raise ConfigError(f"data.schema.{k}: a list, got {v!r}: write [{v}]")
            else:
                kwargs[k] = tuple(v)
        return cls(**kwargs)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


# Column names of the built-in synthetic clickstream (conf/data/synthetic.yaml spells the same).
SYNTHETIC = Schema(
    categorical=("device_type", "country", "payment_method"),
    numerical=("amount",),
)
# The synthetic log's entity columns and its label table's label-time column (conf/experiment/synthetic_entities.yaml).
SYNTHETIC_ENTITIES = ("account_id", "device_id", "ip")
SYNTHETIC_LABEL_TIME = "label_time"
