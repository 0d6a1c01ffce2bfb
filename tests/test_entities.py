"""Entity features against the point-in-time rule: a brute-force oracle, leakage properties, partitions."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seqfraud import schema as S
from seqfraud.durations import duration_us
from seqfraud.features import entities
from seqfraud.features.entities import EntitySpec, column_features

ENTITY = EntitySpec(
    columns=("device", "account"),
    windows=("10s", "1m"),
    risk=True,
    smoothing=2.0,
    prior=0.1,
    label_delay=None,
)


def random_rows(rng: np.random.Generator, n: int, n_sessions: int = 6, n_values: int = 3) -> pl.DataFrame:
    """Events with many ties, shared values, nulls, and labels known before, during and after sessions, some read
    as legitimate from an earlier time until then (a chargeback dated after its delay)."""
    session = rng.integers(0, n_sessions, n)
    t = rng.integers(0, 90, n) * 1_000_000  # seconds on a coarse grid: ties within and across sessions
    known = rng.integers(0, 150, n_sessions) * 1_000_000
    label = rng.integers(0, 2, n_sessions)
    never = rng.random(n_sessions) < 0.2

    def values(k: int) -> list[str | None]:
        return [None if rng.random() < 0.15 else f"v{x}" for x in rng.integers(0, k, n)]

    device, account = values(n_values), values(n_values + 1)
    legit = np.where(rng.random(n_sessions) < 0.4, known - rng.integers(1, 60, n_sessions) * 1_000_000, -1)
    return pl.DataFrame(
        {
            S.ROW_INDEX: np.arange(n, dtype=np.uint32),
            S.SESSION_ID: [f"s{x}" for x in session],
            S.TS_US: t,
            "device": device,
            "account": account,
            S.LABEL: pl.Series(label[session], dtype=pl.Int8),
            S.LABEL_KNOWN: pl.Series([None if never[x] else int(known[x]) for x in session], dtype=pl.Int64),
            S.LEGIT_FROM: pl.Series(
                [None if legit[x] < 0 else int(legit[x]) for x in session], dtype=pl.Int64
            ),
        }
    )


def oracle(rows: pl.DataFrame, column: str, entity: EntitySpec) -> pl.DataFrame:
    """The rule of seqfraud.features.entities, read literally, one row at a time."""
    r = rows.to_dicts()
    others = [c for c in entity.columns if c != column]
    out = []
    for q in r:
        e, s, t = q[column], q[S.SESSION_ID], q[S.TS_US]
        if e is None:
            continue
        feats: dict[str, float | None] = {S.ROW_INDEX: q[S.ROW_INDEX]}
        on_e = [x for x in r if x[column] == e]
        other = [x for x in on_e if x[S.SESSION_ID] != s and x[S.TS_US] < t]
        order = sorted(on_e, key=lambda x: (x[S.TS_US], x[S.SESSION_ID], x[S.ROW_INDEX]))
        first_touch: dict[str, dict] = {}
        for x in order:
            first_touch.setdefault(x[S.SESSION_ID], x)
        for w, w_us in zip(entity.windows, entity.window_us, strict=True):

            def inside(time: int, t: int = t, w_us: int = w_us) -> bool:
                return t - w_us <= time < t

            feats[S.entity_feature(column, "events", w)] = sum(inside(x[S.TS_US]) for x in other)
            feats[S.entity_feature(column, "sessions", w)] = sum(
                inside(x[S.TS_US]) for sid, x in first_touch.items() if sid != s
            )
            for c in others:
                first_with: dict[str, dict] = {}
                for x in order:
                    if x[c] is not None:
                        first_with.setdefault(x[c], x)
                feats[S.entity_feature(column, f"distinct_{c}", w)] = sum(
                    inside(x[S.TS_US]) and x[S.SESSION_ID] != s for x in first_with.values()
                )
            known = fraud = 0
            for sid, x in first_touch.items():
                if sid == s:
                    continue
                usable = None if x[S.LABEL_KNOWN] is None else max(x[S.LABEL_KNOWN], x[S.TS_US])
                if usable is not None and inside(usable):
                    known += 1
                    fraud += x[S.LABEL]
                # Read as legitimate from its own time until its label is usable.
                elif x[S.LEGIT_FROM] is not None and (usable is None or usable >= t):
                    known += inside(max(x[S.LEGIT_FROM], x[S.TS_US]))
            feats[S.entity_feature(column, "known", w)] = known
            feats[S.entity_feature(column, "fraud", w)] = fraud
            feats[S.entity_feature(column, "rate", w)] = (fraud + entity.smoothing * entity.prior) / (
                known + entity.smoothing
            )
        feats[S.entity_feature(column, "first_seen_s")] = (
            (t - min(x[S.TS_US] for x in other)) / 1e6 if other else None
        )
        feats[S.entity_feature(column, "last_seen_s")] = (
            (t - max(x[S.TS_US] for x in other)) / 1e6 if other else None
        )
        out.append(feats)
    frame = pl.DataFrame(out, schema_overrides={S.ROW_INDEX: pl.UInt32}, infer_schema_length=None)
    return frame.select(S.ROW_INDEX, *entity.column_feature_names(column))


def assert_same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert got.columns == want.columns
    for c in got.columns:
        a, b = got[c].to_list(), want[c].to_list()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert (x is None and y is None) or (
                x is not None and y is not None and math.isclose(x, y, rel_tol=1e-6)  # float32 outputs
            ), f"{c} row {i}: {x} != {y}"


@pytest.mark.parametrize("seed", range(12))
def test_column_features_match_the_rule_read_literally(seed: int) -> None:
    rows = random_rows(np.random.default_rng(seed), 80)
    for column in ENTITY.columns:
        assert_same(column_features(rows, column, ENTITY).sort(S.ROW_INDEX), oracle(rows, column, ENTITY))


@pytest.mark.parametrize("seed", range(12))
def test_point_features_of_online_events_match_the_rule_read_literally(seed: int) -> None:
    """The online path: each session's events given at once, every other row as context, as a store holds it."""
    rows = random_rows(np.random.default_rng(seed), 80)
    r = rows.to_dicts()
    known = {x[S.SESSION_ID]: (x[S.LABEL], x[S.LABEL_KNOWN]) for x in r if x[S.LABEL_KNOWN] is not None}
    legit = {x[S.SESSION_ID]: x[S.LEGIT_FROM] for x in r if x[S.LEGIT_FROM] is not None}
    want = {c: {x[S.ROW_INDEX]: x for x in oracle(rows, c, ENTITY).to_dicts()} for c in ENTITY.columns}
    for session in sorted(set(rows[S.SESSION_ID])):
        mine = [x for x in r if x[S.SESSION_ID] == session]
        context = [
            (x[S.SESSION_ID], x[S.TS_US], tuple(x[c] for c in ENTITY.columns))
            for x in r
            if x[S.SESSION_ID] != session
        ]
        got = entities.point_features(
            ENTITY,
            session,
            np.array([x[S.TS_US] for x in mine], dtype=np.int64),
            [[x[c] for x in mine] for c in ENTITY.columns],
            context,
            known,
            legit,
        )
        assert list(got) == ENTITY.feature_names()
        for c in ENTITY.columns:
            for k, x in enumerate(mine):
                for name in ENTITY.column_feature_names(c):
                    expected = want[c][x[S.ROW_INDEX]][name] if x[c] is not None else None
                    value = float(got[name][k])
                    assert (math.isnan(value) and expected is None) or (
                        expected is not None and math.isclose(value, expected, rel_tol=1e-6)
                    ), f"{session} row {x[S.ROW_INDEX]} {name}: {value} != {expected}"


def test_split_by_value_gives_the_same_features() -> None:
    """What lets both engines run the kernel on hash partitions of the values, out of core."""
    rows = random_rows(np.random.default_rng(7), 300, n_sessions=20, n_values=9)
    whole = column_features(rows, "device", ENTITY)
    parts = [
        column_features(part, "device", ENTITY)
        for part in rows.with_columns((pl.col("device").hash(seed=1) % 3).alias("part")).partition_by(
            "part", include_key=False
        )
    ]
    assert_same(pl.concat(parts).sort(S.ROW_INDEX), whole.sort(S.ROW_INDEX))


def test_row_numbers_across_sessions_do_not_matter() -> None:
    """Scoring numbers a history's rows apart from new events; only the order within a session may count."""
    rows = random_rows(np.random.default_rng(3), 200, n_sessions=12)
    renumbered = rows.sort(S.SESSION_ID, S.ROW_INDEX, descending=[True, False]).with_columns(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("new_row")
    )
    got = column_features(renumbered.drop(S.ROW_INDEX).rename({"new_row": S.ROW_INDEX}), "device", ENTITY)
    back = renumbered.select(S.ROW_INDEX, "new_row").rename({S.ROW_INDEX: "old_row"})
    got = (
        got.join(back, left_on=S.ROW_INDEX, right_on="new_row")
        .drop(S.ROW_INDEX)
        .rename({"old_row": S.ROW_INDEX})
    )
    assert_same(
        got.select(S.ROW_INDEX, *ENTITY.column_feature_names("device")).sort(S.ROW_INDEX),
        oracle(rows, "device", ENTITY),
    )


def test_no_risk_features_without_risk() -> None:
    entity = EntitySpec(("device",), ("1h",), risk=False, smoothing=1.0, prior=0.0, label_delay=None)
    names = entity.feature_names()
    assert not any("known" in n or "rate" in n or "fraud" in n for n in names)
    assert column_features(random_rows(np.random.default_rng(0), 30), "device", entity).columns[1:] == names


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), cut=st.integers(1, 89))
def test_nothing_at_or_after_t_changes_a_feature_at_t(seed: int, cut: int) -> None:
    """Rewrite every event at or after a time and every label known at or after it: features before it hold."""
    rng = np.random.default_rng(seed)
    rows = random_rows(rng, 60)
    t_cut = cut * 1_000_000
    later = pl.col(S.TS_US) >= t_cut
    changed = rows.with_columns(
        pl.when(later).then(pl.lit("v0")).otherwise(pl.col("device")).alias("device"),
        pl.when(later).then(pl.lit("zz")).otherwise(pl.col("account")).alias("account"),
        # A label known at or after the cut may flip, or become known at any later time.
        pl.when(pl.col(S.LABEL_KNOWN) >= t_cut)
        .then(1 - pl.col(S.LABEL))
        .otherwise(pl.col(S.LABEL))
        .alias(S.LABEL),
        pl.when(pl.col(S.LABEL_KNOWN) >= t_cut)
        .then(pl.col(S.LABEL_KNOWN) + 7_000_000)
        .otherwise(pl.col(S.LABEL_KNOWN))
        .alias(S.LABEL_KNOWN),
    )
    for column in ENTITY.columns:
        before = pl.col(S.ROW_INDEX).is_in(rows.filter(~later)[S.ROW_INDEX].implode())
        assert_same(
            column_features(changed, column, ENTITY).filter(before).sort(S.ROW_INDEX),
            column_features(rows, column, ENTITY).filter(before).sort(S.ROW_INDEX),
        )


def test_own_label_never_counts() -> None:
    """One session alone on a device, its label known before its own later events: no risk from it."""
    rows = pl.DataFrame(
        {
            S.ROW_INDEX: pl.Series([0, 1], dtype=pl.UInt32),
            S.SESSION_ID: ["a", "a"],
            S.TS_US: [0, 50_000_000],
            "device": ["d", "d"],
            "account": ["x", "x"],
            S.LABEL: pl.Series([1, 1], dtype=pl.Int8),
            S.LABEL_KNOWN: [1_000_000, 1_000_000],
            S.LEGIT_FROM: pl.Series([None, None], dtype=pl.Int64),
        }
    )
    got = column_features(rows, "device", ENTITY)
    assert got[S.entity_feature("device", "known", "1m")].to_list() == [0, 0]
    assert got[S.entity_feature("device", "first_seen_s")].to_list() == [None, None]


def test_windows_are_durations() -> None:
    assert ENTITY.window_us == [duration_us("10s", "w"), 60_000_000]


def test_risk_warm_up_counts_how_late_the_training_labels_came() -> None:
    """Labels dated 30 to 120 days after their claims, with no label delay set, left a 30-day risk count's
    warm-up at its window alone, and the monitor alerted at PSI 1.17 on a log without drift (dogfood 198): the
    spec keeps the training labels' lag (95th percentile), and the risk features' warm-up adds it."""
    from seqfraud.schema import Schema

    day = 86_400_000_000
    lags = np.arange(30, 130) * day  # 100 frauds, 30 to 129 days after their sessions' end
    train = pl.DataFrame(
        {
            # 900 reviews within a day: the frauds' lag counts still (review 202: read 1 day)
            S.LABEL: [1] * 100 + [0] * 900 + [None, 0],
            S.END_TIME: [0] * 1002,
            # An unlabelled session's time is no label's lag, nor a chargeback after a cutoff that read it as
            # legitimate (review 202: 400 days), which counts from when it was read so.
            S.LABEL_KNOWN: [*lags.tolist(), *[day // 2] * 900, 999 * day, 400 * day],
            S.LEGIT_FROM: [None] * 1001 + [day],
        },
        schema={S.LABEL: pl.Int8, S.END_TIME: pl.Int64, S.LABEL_KNOWN: pl.Int64, S.LEGIT_FROM: pl.Int64},
    )
    entity = entities.entity_spec(
        Schema(entities=("garage",), label_time="referred"), {"windows": ["30d"]}, None, train
    )
    assert entity is not None and entity.label_lag_us == 125 * day
    assert entity.prior == pytest.approx(100 / 1001)
    warm_up = entity.warm_up_us()
    assert warm_up[S.entity_feature("garage", "known", "30d")] == 155 * day
    assert warm_up[S.entity_feature("garage", "events", "30d")] == 30 * day
    assert EntitySpec.from_dict(entity.to_dict()) == entity
    # A spec written before the lag was kept falls back on the label delay, as it did.
    older = {k: v for k, v in entity.to_dict().items() if k != "label_lag_us"} | {"label_delay": "45d"}
    assert EntitySpec.from_dict(older).warm_up_us()[S.entity_feature("garage", "rate", "30d")] == 75 * day
