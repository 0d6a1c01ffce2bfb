"""The numpy fast path against the Polars token rules, on random events (hypothesis)."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from seqfraud import schema as S
from seqfraud.features.fastpath import numpy_sequences, vocab_index
from seqfraud.features.spec import Spec
from seqfraud.features.tokens import polars_sequences
from seqfraud.schema import Schema
from seqfraud.scoring.prepare import normalized_events

T0 = datetime(2024, 1, 1)
SCHEMA = Schema(categorical=("device",), numerical=("amount",))
EDGES = [-1.0, 0.0, 2.5, 10.0]
SPEC = Spec(
    schema=SCHEMA,
    timestamp_unit="us",
    max_len=3,
    vocab={"event_type": ["login", "pay"], "device": ["ios", "web"]},
    edges={"amount": EDGES, S.TIME_DELTA: [0.0, 1.0, 10.0, 100.0]},
)

categories = st.sampled_from(["login", "pay", "ios", "web", "never-seen", "", None])
numbers = st.one_of(
    st.none(),
    st.sampled_from([*EDGES, float("nan"), float("inf"), -float("inf")]),
    st.floats(allow_nan=True, allow_infinity=True),
)
event = st.fixed_dictionaries(
    {
        "session_id": st.sampled_from(["a", "b", "c", "d"]),
        "timestamp": st.sampled_from([0, 0, 1, 2, 30, 500, 10_000]).map(lambda s: T0 + timedelta(seconds=s)),
        "event_type": categories,
        "device": categories,
        "amount": numbers,
    }
)


@settings(max_examples=200, deadline=None)
@given(st.lists(event, min_size=1, max_size=14))
def test_numpy_path_equals_polars_path(rows):
    frame = pl.DataFrame(
        rows,
        schema={
            "session_id": pl.String,
            "timestamp": pl.Datetime("us"),
            "event_type": pl.String,
            "device": pl.String,
            "amount": pl.Float64,
        },
    )
    events = normalized_events(frame.lazy(), SPEC, "random")
    fast, slow = numpy_sequences(events, SPEC, vocab_index(SPEC)), polars_sequences(events, SPEC)
    assert fast.session_ids == slow.session_ids
    np.testing.assert_array_equal(fast.lengths, slow.lengths)
    np.testing.assert_array_equal(fast.tokens, slow.tokens)
