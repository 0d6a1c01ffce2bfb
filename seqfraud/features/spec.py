"""The fitted preprocessing spec: plain, versioned JSON that training, batch scoring and serving share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqfraud import __version__
from seqfraud.data.events import (
    FIXED_WIDTH_IDS,
    INTEGER_IDS,
    LABELS_WITHOUT_COLUMN,
    ONE_CASE_IDS,
    PADDED_WIDTH_IDS,
    ZERO_PADDED_IDS,
    ZONED_BY_EPOCHS,
    ZONED_TIMESTAMPS,
    IdForms,
    id_columns,
)
from seqfraud.errors import UserError, json_value
from seqfraud.features.entities import EntitySpec
from seqfraud.schema import EPOCH_UNITS, TIME_DELTA, Schema, value_field

SPEC_FORMAT = "seqfraud.preprocessing-spec"
# 2: the schema holds ``timestamp_range``, and integer epochs are read in the spec's unit or refused (never
# guessed). 3: the ``entity`` section (entity features, seqfraud.features.entities). Versions 1 and 2 still
# load: a version 1 range is the default one, its unit means the same, and neither has entity features.
# 4: ``values``, the numeric columns that also carry their value as a number (a value field); earlier ones
# have none. 5: ``hop``, the steps in which a long session's window moves (earlier ones move it by one event).
# 6: ``float32_decimal``, float32 numbers read as their shortest decimals (earlier ones widen them).
SPEC_VERSION = 6
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)

# Reserved token ids, the same in every field. Fitted vocabulary entries and buckets start at FIRST_ID.
PAD = 0
UNKNOWN = 1  # a category not seen (or too rare) at fit time
MISSING = 2  # a null value; for the time delta, the first event of a session
NAN = 3  # a NaN numeric value
FIRST_ID = 4
RESERVED = {"pad": PAD, "unknown": UNKNOWN, "missing": MISSING, "nan": NAN}
SHORTEST_TRAINED = "session_events_p1"  # fit_info: 1% of the training sessions have fewer events than this
LONGEST_TRAINED = "session_events_p99"  # fit_info: 99% of the training sessions have at most this many events
# fit_info: quantiles (GAP_QUANTILES) of the longest gap, in seconds, between consecutive events of a training session
LONGEST_GAPS = "session_longest_gap_s"
GAP_QUANTILES = (0.1, 0.25, 0.5, 0.9, 0.99, 0.999, 1.0)
# fit_info: the share of training events that have the time of an earlier event of their session and differ from it
# (exact repeats are counted apart): their order is the input's
TIED_SHARE = "tied_events_share"
# fit_info: the share of training events whose time is a whole second: a file whose times were cut to the second moves
# the time between events the model reads
WHOLE_SECONDS = "whole_second_share"
# fit_info: per event type that opens OPENER_SHARE of the training sessions or more, the share it opens: a file of
# sessions that start otherwise holds the ends of sessions begun elsewhere
OPENING_SHARES = "session_opening_shares"
OPENER_SHARE = 0.01
NAN_VALUES = "nan_values"  # fit_info: per numeric column, the training events whose value was NaN
# fit_info: data.policy.on_mixed_labels of the training log, which a history's labels off its events follow
ON_MIXED_LABELS = "on_mixed_labels"
# fit_info: data.policy.on_unlabeled, recorded where it is "negative": a session a later label table leaves out is then
# legitimate, in a history and a monitored window as in training.
ON_UNLABELED = "on_unlabeled"
# fit_info: data.policy.label_delay, recorded with on_unlabeled=negative: how long after its end a session absent
# from a label table counts as legitimate (the monitor's window; entity features read their own)
LABEL_DELAY = "label_delay"
# A value field's id is FIRST_ID + round(position * VALUE_STEPS): 2**20 steps of the position in [0, 1] tell
# apart amounts 0.01 apart in a bucket 10,000 wide.
VALUE_STEPS = 1 << 20


def window_start(n_events: Any, max_len: int, hop: int) -> Any:
    """The index of the first event that a session of ``n_events`` keeps (the rule in :class:`Spec`): 0 up to
    ``max_len`` events, then the smallest multiple of ``hop`` that leaves at most ``max_len``. Integer arithmetic
    only: an int for an int, an array of starts for an array of lengths
    (:func:`~seqfraud.features.tokens.window_start_of` reads it in Polars)."""
    if isinstance(n_events, int):  # an event's path: no numpy scalar
        return max(-((max_len - n_events) // hop), 0) * hop
    return np.maximum(-((max_len - np.asarray(n_events, dtype=np.int64)) // hop), 0) * hop


def value_pieces(edges: list[float]) -> tuple[list[float], list[float], float]:
    """Per bucket b, the lower edge and width of the value-field rule's inner buckets (0 and 1 at the two ends,
    unused), and the end buckets' scale s: the numbers every engine's rule reads, so that all compute the same
    floating-point operations."""
    m = len(edges)
    lo = [0.0] + [edges[b - 1] for b in range(1, m)] + [0.0]
    width = [1.0] + [edges[b] - edges[b - 1] for b in range(1, m)] + [1.0]
    spread = (edges[-1] - edges[0]) / (m - 1) if m > 1 else 0.0
    return lo[: m + 1], width[: m + 1], spread if spread > 0 else 1.0


class SpecError(UserError, ValueError):
    """A spec that cannot be used: unknown version, malformed, or fitted for another schema."""


@dataclass
class Spec:
    """Everything needed to turn raw events into model tokens, exactly as at fit time.

    Token rules (all engines and the scorer implement exactly these):
    - categorical field: ``FIRST_ID + vocab.index(value)``, ``UNKNOWN`` if not in vocab, ``MISSING`` if null;
    - numeric field: ``FIRST_ID + #{edge < x}``, ``MISSING`` if null, ``NAN`` if NaN (inf falls in the end buckets);
    - time delta: the same bucket rule on seconds since the previous event of the session (``MISSING`` for the
      first one), after sorting the session by time with input order as the tie-break;
    - a session keeps its events from :func:`window_start` on: all of them up to ``max_len``; past it, those after
      the latest multiple of ``hop`` that leaves at most ``max_len`` (so between ``max_len - hop + 1`` and
      ``max_len``), which a GRU can carry as one state per multiple of ``hop``, where a window that moves by
      one event at a time must read its kept events again at every event;
    - entity features (:attr:`entity`) are numeric fields like the others, computed from the events and a
      history by :mod:`seqfraud.features.entities` before tokenizing;
    - value field of a numeric column in :attr:`values` (:func:`~seqfraud.schema.value_field`): the value's
      position in [0, 1], ``FIRST_ID + floor(position * VALUE_STEPS + 0.5)``, reserved ids as for the bucket.
      With edges e_0 < ... < e_{m-1} and bucket b = #{edge < x}, position = (b + f) / (m + 1), f in [0, 1]
      linear inside the bucket, ``(x - e_{b-1}) / (e_b - e_{b-1})``; below e_0, ``1 / (1 + (e_0 - x) / s)``;
      above e_{m-1}, ``1 - 1 / (1 + (x - e_{m-1}) / s)``, s the mean bucket width (1 when there is none);
      0.5 when there are no edges. Monotone in x, so a threshold anywhere, "amount above 220", is a threshold
      on the position, which buckets alone cannot draw.

    Timestamps (every engine and the scorer read them so): integer epochs in :attr:`epoch_unit`, never a unit
    guessed from the data at hand; datetimes as they are, naive ones in UTC; strings only as RFC 3339
    (``seqfraud.data.events.RFC3339``), naive ones in UTC; every time must fall in ``schema.timestamp_range``.
    """

    schema: Schema
    timestamp_unit: str
    max_len: int
    vocab: dict[str, list[str]]
    edges: dict[str, list[float]]
    fit_info: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str | None] = field(default_factory=dict)
    entity: EntitySpec | None = None
    values: tuple[str, ...] = ()
    hop: int = 1
    # How float32 numbers were read at fit, so that scoring reads them alike (seqfraud.data.events.as_float64).
    float32_decimal: bool = True

    def window_start(self, n_events: Any) -> Any:
        """:func:`window_start` of sessions of ``n_events`` (an int or an integer array)."""
        return window_start(n_events, self.max_len, self.hop)

    def window_length(self, n_events: Any) -> Any:
        """The events the window of sessions of ``n_events`` holds (an int or an integer array)."""
        return n_events - self.window_start(n_events)

    @property
    def shortest_window(self) -> int:
        """The fewest events the window of a session longer than ``max_len`` holds."""
        return self.max_len - self.hop + 1

    @property
    def window_said(self) -> str:
        """How many of a long session's latest events the sequence model reads, in words."""
        fewest = self.shortest_window
        return (
            f"the last {self.max_len:,}"
            if fewest == self.max_len
            else f"the last {fewest:,} to {self.max_len:,}"
        )

    @property
    def numeric_fields(self) -> tuple[str, ...]:
        """Fields bucketed by numeric edges: the schema's numeric columns, then the entity features."""
        return (*self.schema.numerical, *(self.entity.feature_names() if self.entity else ()))

    @property
    def zero_padded_ids(self) -> tuple[str, ...]:
        """The id columns (:func:`seqfraud.data.events.id_columns`) the training log wrote as text no integer
        spells (zero-padded, signed, not digits), whose integers scoring refuses
        (:func:`seqfraud.data.events.zero_padded_ids`)."""
        return self._recorded_ids(ZERO_PADDED_IDS)

    @property
    def integer_ids(self) -> dict[str, int | None]:
        """The id columns (:func:`seqfraud.data.events.id_columns`) the training log typed as integers, which
        scoring refuses written otherwise than as their digits (:func:`seqfraud.data.events.integer_ids`), each
        to the one number of digits the log wrote all of it with, if it did."""
        widths = self.fit_info.get(FIXED_WIDTH_IDS) or {}
        return {c: widths.get(c) for c in self._recorded_ids(INTEGER_IDS)}

    @property
    def id_forms(self) -> IdForms:
        """The :attr:`zero_padded_ids` the training log wrote as digits of one width, and the text id columns it
        wrote every letter of in one case: scoring says other forms there (:class:`seqfraud.data.events.IdForms`);
        none in specs fitted before sessions 39 (widths) and 40 (cases)."""
        widths = self.fit_info.get(PADDED_WIDTH_IDS) or {}
        cases = self.fit_info.get(ONE_CASE_IDS) or {}
        return IdForms(
            {c: int(widths[c]) for c in self.zero_padded_ids if c in widths},
            {c: cases[c] for c in self._recorded_ids(ONE_CASE_IDS) if cases[c] in ("upper", "lower")},
        )

    def _recorded_ids(self, key: str) -> tuple[str, ...]:
        """The id columns the fit recorded under ``key`` that this spec's schema still names: the spec that reads
        ``POST /labels``' label times has no event id, which it then looked for in them (dogfood 109: a 500)."""
        named = set(id_columns(self.schema))
        return tuple(c for c in self.fit_info.get(key) or () if c in named)

    @property
    def zoned_timestamps(self) -> bool:
        """Whether the training log's timestamps carried UTC offsets (or were epochs), so that naive ones sent to it are said
        (:func:`seqfraud.data.events.zoned_report`); False for specs fitted before it was recorded."""
        return bool(self.fit_info.get(ZONED_TIMESTAMPS))

    @property
    def zoned_by_epochs(self) -> bool:
        """Whether the training log's timestamps were integer epochs: a naive datetime sent is their instant then,
        as converted from them, and not said (review 217), where a naive string is."""
        return self.fit_info.get(ZONED_TIMESTAMPS) == ZONED_BY_EPOCHS

    @property
    def absent_is_negative(self) -> bool:
        """Whether training read a session absent from the label table as legitimate (on_unlabeled=negative)."""
        return self.fit_info.get(ON_UNLABELED) == "negative"

    @property
    def labels_without_column(self) -> bool:
        """Whether training's label table listed frauds without a label column: a label posted without its key is
        then a fraud, as that table's rows were (a review table's feed that forgot it is not: review 205)."""
        return self.absent_is_negative and bool(self.fit_info.get(LABELS_WITHOUT_COLUMN))

    @property
    def shortest_trained(self) -> int:
        """Events of the shortest training sessions (their 1st percentile); 0 for specs fitted before it was
        recorded."""
        return int(self.fit_info.get(SHORTEST_TRAINED, 0))

    @property
    def opening_shares(self) -> dict[str, float] | None:
        """:data:`OPENING_SHARES`; None for specs fitted before they were recorded."""
        shares = self.fit_info.get(OPENING_SHARES)
        return None if shares is None else {str(k): float(v) for k, v in shares.items()}

    def longest_gap_s(self, q: float) -> float:
        """The ``q`` quantile (one of :data:`GAP_QUANTILES`) of the training sessions' longest gaps between two
        events, in seconds; 0 for specs fitted before they were recorded."""
        return float(dict(zip(GAP_QUANTILES, self.fit_info.get(LONGEST_GAPS) or ())).get(q, 0.0))

    @property
    def tied_share(self) -> float | None:
        """:data:`TIED_SHARE`; None for specs fitted before it was recorded."""
        share = self.fit_info.get(TIED_SHARE)
        return None if share is None else float(share)

    @property
    def whole_second_share(self) -> float | None:
        """:data:`WHOLE_SECONDS`; None for specs fitted before it was recorded."""
        share = self.fit_info.get(WHOLE_SECONDS)
        return None if share is None else float(share)

    @property
    def longest_trained(self) -> int:
        """Events of the longest training sessions but 1% (their 99th percentile); 0 for specs fitted before it
        was recorded."""
        return int(self.fit_info.get(LONGEST_TRAINED, 0))

    @property
    def one_event_sessions(self) -> bool:
        """Whether 99% of the training sessions had one event (a table of transactions, each its own session): a
        session of several at scoring is then most likely rows whose ids repeat."""
        return self.longest_trained == 1

    @property
    def value_fields(self) -> tuple[str, ...]:
        """The value fields of :attr:`values`, in their order."""
        return tuple(value_field(c) for c in self.values)

    @property
    def fields(self) -> tuple[str, ...]:
        """Token fields in model input order: categorical, numeric, value fields, time delta last."""
        return (*self.schema.categorical_fields, *self.numeric_fields, *self.value_fields, TIME_DELTA)

    @property
    def epoch_unit(self) -> str | None:
        """The unit of integer epochs at scoring: the one training read them in (``timestamp_unit``) or, for a
        spec fitted on datetimes, the configured ``data.schema.timestamp_unit``; None when training saw
        datetimes with ``auto``, so no unit is known and integer epochs are refused."""
        if self.timestamp_unit in EPOCH_UNITS:
            return self.timestamp_unit
        return self.schema.timestamp_unit if self.schema.timestamp_unit in EPOCH_UNITS else None

    def boolean_text(self, field_name: str) -> tuple[str, str]:
        """How ``false`` and ``true`` read in a categorical field at scoring: as its vocabulary spells them (a CSV
        export's ``False``/``True`` text), else as a Boolean column reads in training. A JSON ``true`` read as
        ``"true"`` against a vocabulary of ``"True"`` scored as an unknown value, moving scores by up to 0.47
        (dogfood 22)."""
        vocab = self.vocab.get(field_name, [])
        spelled = [
            word if word in vocab else next((v for v in vocab if v.lower() == word), word)
            for word in ("false", "true")
        ]
        return spelled[0], spelled[1]

    def vocab_size(self, field_name: str) -> int:
        if field_name in self.vocab:
            return FIRST_ID + len(self.vocab[field_name])
        if field_name in self.value_fields:
            return FIRST_ID + VALUE_STEPS + 1
        return FIRST_ID + len(self.edges[field_name]) + 1

    def vocab_sizes(self) -> dict[str, int]:
        return {f: self.vocab_size(f) for f in self.fields}

    def to_dict(self) -> dict[str, Any]:
        # A spec that reads floats as sent is a version 5 one, which releases before version 6 read too: an old
        # run exported again stayed readable by them (review 260).
        return {
            "format": SPEC_FORMAT,
            "version": SPEC_VERSION if self.float32_decimal else 5,
            "schema": self.schema.roles(),
            "timestamp_unit": self.timestamp_unit,
            "max_len": self.max_len,
            "hop": self.hop,
            "reserved": RESERVED,
            "vocab": self.vocab,
            "edges": self.edges,
            "fit_info": self.fit_info,
            "versions": self.versions,
            "entity": self.entity.to_dict() if self.entity else None,
            "values": list(self.values),
        } | ({"float32_decimal": True} if self.float32_decimal else {})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "spec") -> Spec:
        if d.get("format") != SPEC_FORMAT:
            raise SpecError(f"{source}: not a seqfraud preprocessing spec (format={d.get('format')!r})")
        if d.get("version") not in READABLE_VERSIONS:
            raise SpecError(
                f"{source}: spec version {d.get('version')!r} is not supported by seqfraud {__version__} "
                f"(it reads versions {list(READABLE_VERSIONS)}); refit the preprocessing or use a matching seqfraud"
            )
        if d.get("reserved") != RESERVED:
            raise SpecError(f"{source}: reserved ids {d.get('reserved')} differ from {RESERVED}")
        try:
            schema = Schema.from_config(d["schema"])
            spec = cls(
                schema=schema,
                timestamp_unit=d["timestamp_unit"],
                max_len=int(d["max_len"]),
                vocab={k: list(v) for k, v in d["vocab"].items()},
                edges={k: [float(x) for x in v] for k, v in d["edges"].items()},
                fit_info=d.get("fit_info", {}),
                versions=d.get("versions", {}),
                entity=EntitySpec.from_dict(d["entity"]) if d.get("entity") else None,
                values=tuple(str(c) for c in d.get("values") or ()),
                hop=d["hop"] if d["version"] >= 5 else 1,
                float32_decimal=d["float32_decimal"] if d["version"] >= 6 else False,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise SpecError(f"{source}: malformed spec: {e}") from e
        if isinstance(spec.hop, bool) or not isinstance(spec.hop, int) or not 1 <= spec.hop <= spec.max_len:
            raise SpecError(
                f"{source}: hop={spec.hop!r} is not an integer between 1 and max_len={spec.max_len}"
            )
        if not isinstance(spec.float32_decimal, bool):
            raise SpecError(f"{source}: float32_decimal={spec.float32_decimal!r} is not true or false")
        if (spec.entity.columns if spec.entity else ()) != schema.entities:
            raise SpecError(f"{source}: entity features of {spec.entity} do not match the schema's entities")
        if not set(spec.values) <= set(schema.numerical):
            raise SpecError(
                f"{source}: value fields {list(spec.values)} are not all numeric columns of the schema"
            )
        expected = set(spec.fields) - set(spec.value_fields)
        if set(spec.vocab) | set(spec.edges) != expected:
            raise SpecError(
                f"{source}: fitted fields {sorted(set(spec.vocab) | set(spec.edges))} do not match the "
                f"schema's {sorted(expected)}"
            )
        return spec

    @classmethod
    def load(cls, path: str | Path) -> Spec:
        path = Path(path)
        try:
            data = json_value(path.read_text())
        except (OSError, ValueError) as e:
            raise SpecError(f"{path}: cannot read spec: {e}") from e
        return cls.from_dict(data, source=str(path))

    def check_schema(self, schema: Schema) -> None:
        """Refuse data configured with other column roles than the spec was fitted on."""
        ignored = {"timestamp_unit": None, "timestamp_range": None}
        if schema.roles() | ignored != self.schema.roles() | ignored:
            raise SpecError(
                f"the data schema {schema.roles()} does not match the spec's {self.schema.roles()}; "
                "refit the preprocessing for this schema"
            )
