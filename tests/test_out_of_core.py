"""Out-of-core preprocessing: partitioned runs write exactly what a one-pass run writes."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from seqfraud import schema as S
from seqfraud.data import synthetic
from seqfraud.data.shards import shard_files
from seqfraud.features.tokens import numeric_quantiles, quantile_probs, quantile_rank
from seqfraud.preprocess import PolarsEngine, load_prepared, preprocess
from seqfraud.rundir import REPORT_FILE

FEATURES = {"max_len": 32, "min_count": 2, "n_buckets": 8, "tail_quantiles": [0.99]}


@pytest.fixture(scope="module")
def events_dir(tmp_path_factory):
    """A few hundred synthetic sessions spread over three Parquet shards, as a partitioned log would be."""
    out = tmp_path_factory.mktemp("events")
    data = synthetic.generate(400, seed=3)
    events, n = data.events, data.events.height
    for i in range(3):
        events.slice(i * n // 3, (i + 1) * n // 3 - i * n // 3).write_parquet(out / f"events-{i}.parquet")
    data.labels.write_parquet(out.parent / f"{out.name}-labels.parquet")
    return out


def _data_cfg(events_dir):
    return {
        "events": str(events_dir),
        "labels": str(events_dir.parent / f"{events_dir.name}-labels.parquet"),
        "schema": S.SYNTHETIC.roles(),
    }


def _all_rows(prepared) -> dict[str, pl.DataFrame]:
    return {
        name: pl.read_parquet(shard_files(path)).sort(S.SESSION_ID)
        for name, path in prepared.datasets.items()
    }


def test_partitioned_run_writes_what_one_pass_writes(events_dir, tmp_path):
    one = preprocess(_data_cfg(events_dir), FEATURES, tmp_path / "one", {"partitions": 1})
    many = preprocess(_data_cfg(events_dir), FEATURES, tmp_path / "many", {"partitions": 4})
    assert (one.report["partitions"], many.report["partitions"]) == (1, 4)
    assert one.spec.to_dict() | {"versions": None} == many.spec.to_dict() | {"versions": None}
    for name in S.SPLITS:
        assert len(shard_files(many.datasets[name])) == 4
    a, b = _all_rows(one), _all_rows(many)
    for name in S.SPLITS:
        assert a[name].height > 0
        assert a[name].equals(b[name]), name
    assert sum(f.height for f in a.values()) == one.report["n_sessions"]


def test_memory_budget_sets_the_partition_count(events_dir, tmp_path):
    engine = PolarsEngine(memory_gb=4)
    assert engine.n_parts(1_000, n_fields=5) == 1
    assert engine.n_parts(10**9, n_fields=5) > 10  # a billion events cannot be sequenced in one pass in 4 GB
    tiny = preprocess(_data_cfg(events_dir), FEATURES, tmp_path / "tiny", {"memory_gb": 1e-4})
    assert tiny.report["partitions"] > 1
    assert "peak_rss_gb" in tiny.report and tiny.report["peak_rss_gb"] > 0
    with pytest.raises(ValueError, match="memory_gb"):
        PolarsEngine(memory_gb=0)


def test_rerun_replaces_earlier_shards_and_load_prepared_reads_them(events_dir, tmp_path):
    preprocess(_data_cfg(events_dir), FEATURES, tmp_path / "o", {"partitions": 5})
    second = preprocess(_data_cfg(events_dir), FEATURES, tmp_path / "o", {"partitions": 2})
    assert [len(shard_files(p)) for p in second.datasets.values()] == [2, 2, 2]
    loaded = load_prepared(tmp_path / "o")
    assert loaded.spec == second.spec and loaded.report["partitions"] == 2
    assert (tmp_path / "o" / REPORT_FILE).exists()
    assert not list((tmp_path / "o" / "data").glob("_partitions*"))  # the spill directory is cleaned up


def test_load_prepared_names_a_missing_split(events_dir, tmp_path):
    prepared = preprocess(_data_cfg(events_dir), FEATURES, tmp_path / "o", {"partitions": 1})
    for f in shard_files(prepared.datasets["val"]):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="val"):
        load_prepared(tmp_path / "o")


def test_unknown_engine():
    with pytest.raises(ValueError, match="preprocess.engine"):
        preprocess({"events": "x"}, FEATURES, "unused", {"engine": "dask"})


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 10, 16, 101, 1000, 4097])
def test_quantile_rank_is_polars_nearest(n):
    """The documented edge rule, which other engines implement explicitly, is what Polars computes."""
    values = np.random.default_rng(n).normal(size=n)
    ordered = np.sort(values)
    for q in quantile_probs(16, (0.98, 0.99, 0.995, 0.999)) + [0.25, 0.5, 0.75, 0.1, 0.3, 0.7]:
        assert pl.Series(values).quantile(q, "nearest") == ordered[quantile_rank(q, n)], (n, q)
    assert quantile_rank(0.5, 4) == 2 and quantile_rank(0.25, 3) == 1  # halves round up
    assert all(0 <= quantile_rank(q, n) < n for q in (1e-9, 1 - 1e-9)) and not math.isnan(ordered[0])


@pytest.mark.parametrize("memory_bytes", [None, 1.0, 8 * 300 * 4.0])
def test_numeric_quantiles_are_exact_in_any_batch(memory_bytes):
    """One partition per field, in batches of fields sized to memory, gives what one Polars quantile per
    probability gives: nulls, NaN and infinities skipped, integers and all-missing fields included."""
    rng = np.random.default_rng(0)
    n = 300
    amount = rng.lognormal(size=n)
    amount[rng.random(n) < 0.1] = np.nan
    amount[:3] = [np.inf, -np.inf, np.nan]
    frame = pl.DataFrame(
        {
            "amount": amount,
            "count": pl.Series(rng.integers(0, 5, n)).scatter([1, 2], None),
            "ties": np.repeat([1.0, 2.0, 3.0], n // 3),
            "never": pl.Series([None] * n, dtype=pl.Float64),
        }
    )
    probs = quantile_probs(8, (0.99,))
    got = numeric_quantiles(frame.lazy(), frame.columns, probs, n, memory_bytes)
    for c in frame.columns:
        finite = frame[c].filter(frame[c].cast(pl.Float64).is_finite())
        expected = [finite.quantile(q, "nearest") for q in probs]
        assert got[c] == expected, c
