"""Streaming sharded datasets: an exact partition across ranks and workers, equal batch counts, bounded memory."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import DataLoader

from seqfraud import schema as S
from seqfraud.data.shards import shard_files, shard_name
from seqfraud.training.data import LoaderConfig, SessionStream, make_loader, read_sessions, row_groups
from seqfraud.training.train import predict_proba

FIELDS = ["event_type", S.TIME_DELTA]
# Odd counts, an empty shard, and a row-group size that divides none of them.
SHARD_SIZES = [37, 0, 52, 21]
ROW_GROUP = 10
N = sum(SHARD_SIZES)


def session_tokens(i: int) -> np.ndarray:
    """Session ``i`` (global, file order): 1 to 9 events; field 0 holds i + 1, field 1 the event's position + 1."""
    n = 1 + (i * 7) % 9
    return np.stack([np.full(n, i + 1), np.arange(1, n + 1)], axis=1)


def write_shards(root, sizes=SHARD_SIZES, row_group=ROW_GROUP):
    root.mkdir(parents=True, exist_ok=True)
    start = 0
    for k, size in enumerate(sizes):
        ids = range(start, start + size)
        toks = [session_tokens(i) for i in ids]
        table = pa.table(
            {
                S.SESSION_ID: pa.array([f"s{i:04d}" for i in ids], pa.string()),
                **{
                    S.token_column(f): pa.array([t[:, j].tolist() for t in toks], pa.list_(pa.int32()))
                    for j, f in enumerate(FIELDS)
                },
                S.LENGTH: pa.array([len(t) for t in toks], pa.int32()),
                S.START_TIME: pa.array(list(ids), pa.int64()),
                S.LABEL: pa.array([int(i % 3 == 0) for i in ids], pa.int8()),
            }
        )
        pq.write_table(table, root / shard_name(k), row_group_size=row_group)
        start += size
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards") / "train")


def check_batch(batch):
    """Rows carry their own session's tokens, right-padded with 0, and its label."""
    idx = batch["index"].numpy()
    for row, i in enumerate(idx):
        n = int(batch["lengths"][row])
        np.testing.assert_array_equal(np.sort(batch["tokens"][row, :n].numpy(), axis=0), session_tokens(i))
        assert not batch["tokens"][row, n:].any()
        assert batch["labels"][row] == float(i % 3 == 0)
    assert batch["tokens"].dtype == torch.long and batch["labels"].dtype == torch.float32


def rank_batches(path, *, world, rank, workers, shuffle, batch_size=4, epochs=1, **kw):
    stream = SessionStream(
        path,
        FIELDS,
        batch_size,
        shuffle=shuffle,
        seed=7,
        shuffle_buffer=5,
        pool_batches=2,
        num_workers=workers,
        rank=rank,
        world_size=world,
        **kw,
    )
    loader = DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=workers > 0)
    return stream, [list(loader) for _ in range(epochs)]


def test_row_groups_come_from_metadata_in_file_order(shards):
    groups = row_groups(shards)
    assert [g.rows for g in groups] == [10, 10, 10, 7, 10, 10, 10, 10, 10, 2, 10, 10, 1]
    assert [g.start for g in groups] == list(np.cumsum([0] + [g.rows for g in groups])[:-1])
    assert {g.file.name for g in groups} == {shard_name(0), shard_name(2), shard_name(3)}


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_slots_partition_the_sessions_exactly_with_equal_batch_counts(shards, world, workers, shuffle):
    seen, counts = [], []
    for rank in range(world):
        stream, (batches,) = rank_batches(shards, world=world, rank=rank, workers=workers, shuffle=shuffle)
        counts.append(len(batches))
        assert len(batches) == len(stream)
        assert all(0 < len(b["index"]) <= 4 for b in batches)
        for b in batches:
            check_batch(b)
            seen += b["index"].tolist()
    assert sorted(seen) == list(range(N))  # every session once: none dropped, none duplicated
    slots = world * max(workers, 1)
    # Every rank yields the same number of batches, enough for the largest slot.
    assert counts == [max(workers, 1) * math.ceil(math.ceil(N / slots) / 4)] * world


def test_slot_sizes_differ_by_at_most_one(shards):
    sizes = []
    for rank in range(3):
        _, (batches,) = rank_batches(shards, world=3, rank=rank, workers=0, shuffle=True)
        sizes.append(sum(len(b["index"]) for b in batches))
    assert sum(sizes) == N and max(sizes) - min(sizes) <= 1


def test_epochs_reshuffle_and_a_seed_repeats(shards):
    def order(epoch_batches):
        return [i for b in epoch_batches for i in b["index"].tolist()]

    _, epochs = rank_batches(shards, world=2, rank=1, workers=0, shuffle=True, epochs=3)
    _, again = rank_batches(shards, world=2, rank=1, workers=0, shuffle=True, epochs=2)
    assert order(epochs[0]) != order(epochs[1]) != order(epochs[2])
    assert order(again[0]) == order(epochs[0]) and order(again[1]) == order(epochs[1])
    # Each epoch's share differs too (the row groups are permuted on every rank alike), but stays exact:
    _, other = rank_batches(shards, world=2, rank=0, workers=0, shuffle=True, epochs=2)
    for e in range(2):
        assert sorted(order(epochs[e]) + order(other[e])) == list(range(N))


def test_persistent_workers_advance_the_epoch(shards):
    loader = make_loader(
        shards,
        FIELDS,
        LoaderConfig(batch_size=4, num_workers=2, shuffle_buffer=5, pool_batches=2),
        train=True,
        seed=3,
    )
    assert loader.persistent_workers
    first, second = ([i for b in loader for i in b["index"].tolist()] for _ in range(2))
    assert first != second and sorted(first) == sorted(second) == list(range(N))


def test_the_shuffle_buffer_is_bounded(tmp_path):
    path = write_shards(tmp_path / "big", sizes=[401, 298], row_group=50)
    pool = 2 * 4
    stream = SessionStream(
        path, FIELDS, 4, shuffle=True, shuffle_buffer=30, pool_batches=2, rank=0, world_size=1
    )
    got = [i for b in stream for i in b["index"].tolist()]
    assert sorted(got) == list(range(699))
    assert 30 <= stream.peak_buffered <= 30 + pool
    plain = SessionStream(
        path, FIELDS, 4, shuffle=True, shuffle_buffer=0, pool_batches=2, rank=0, world_size=1
    )
    list(plain)
    assert plain.peak_buffered <= pool


def test_eval_streams_keep_file_order_through_index(shards):
    ids = pl.read_parquet(shard_files(shards), columns=[S.SESSION_ID])[S.SESSION_ID].to_list()
    assert ids == [f"s{i:04d}" for i in range(N)]
    stream = SessionStream(shards, FIELDS, 8, shuffle=False, pool_batches=3, rank=0, world_size=1)
    first, second = list(stream), list(stream)
    assert all(torch.equal(a["index"], b["index"]) for a, b in zip(first, second, strict=True))
    index = torch.cat([b["index"] for b in first]).numpy()
    assert sorted(index) == list(range(N))
    # Within a pool the batches are cut by length; pools follow file order.
    assert index[:24].max() < index[24:].min()
    for b in first:
        check_batch(b)


class FirstToken(torch.nn.Module):
    """A stand-in model whose logit is the first event's first token / 100: i.e. (file position + 1) / 100."""

    def forward(self, tokens, lengths):
        return tokens[:, 0, 0].float() / 100


def test_predict_proba_returns_file_order(shards):
    probs = predict_proba(FirstToken(), shards, FIELDS, batch_size=8)
    np.testing.assert_allclose(probs, torch.sigmoid(torch.arange(1, N + 1) / 100).numpy(), rtol=1e-6)


def test_shuffle_order_permutes_each_session_the_same_way_every_epoch(shards):
    stream = SessionStream(shards, FIELDS, 8, shuffle=True, seed=1, shuffle_order=True, rank=0, world_size=1)
    epochs = []
    for _ in range(2):
        rows = {}
        for b in stream:
            check_batch(b)  # same events, compared sorted
            for row, i in enumerate(b["index"].tolist()):
                rows[i] = b["tokens"][row, : b["lengths"][row], 1].tolist()
        epochs.append(rows)
    assert epochs[0] == epochs[1]
    assert sum(rows != sorted(rows) for rows in epochs[0].values()) > N // 2


def test_read_sessions_takes_the_first_sessions_across_row_groups(shards):
    head = read_sessions(shards, FIELDS, 25)
    assert len(head) == 25 and head.index.tolist() == list(range(25))
    for i in range(25):
        tokens, label, index = head[i]
        np.testing.assert_array_equal(tokens, session_tokens(i))
        assert index == i and label == float(i % 3 == 0)
    assert len(read_sessions(shards, FIELDS)) == N


def test_too_little_data_for_the_slots_is_an_error(tmp_path):
    path = write_shards(tmp_path / "tiny", sizes=[3], row_group=2)
    with pytest.raises(ValueError, match=r"3 sessions cannot give each of 4 slots \(2 rank\(s\) x 2 worker"):
        SessionStream(path, FIELDS, 4, shuffle=True, num_workers=2, rank=0, world_size=2)
    # 7 sessions over 3 ranks: 2, 2 and 3, so 3 batches of 1 each cannot be filled
    path = write_shards(tmp_path / "seven", sizes=[7], row_group=2)
    with pytest.raises(ValueError, match="non-empty batch"):
        SessionStream(path, FIELDS, 1, shuffle=False, rank=0, world_size=3)
    SessionStream(path, FIELDS, 2, shuffle=False, rank=0, world_size=3)  # batches of 2: fine
    empty = write_shards(tmp_path / "empty", sizes=[0])
    with pytest.raises(ValueError, match="0 sessions"):
        SessionStream(empty, FIELDS, 4, shuffle=False, rank=0, world_size=1)


def test_prefix_share_cuts_that_share_of_training_sessions_to_a_first_part(shards, tmp_path):
    """Each cut session is its own first k events (label kept), k from 1 to its length, about the share asked
    for; eval loaders never cut."""
    stream = SessionStream(shards, FIELDS, 8, shuffle=True, seed=3, prefix_share=0.5, rank=0, world_size=1)
    cut = 0
    for batch in stream:
        for row, i in enumerate(batch["index"].tolist()):
            n, whole = int(batch["lengths"][row]), session_tokens(i)
            assert 1 <= n <= len(whole) and batch["labels"][row] == float(i % 3 == 0)
            np.testing.assert_array_equal(batch["tokens"][row, :n].numpy(), whole[:n])
            cut += n < len(whole)
    assert 0.3 * N < cut < 0.6 * N  # sessions cut to their full length count as whole
    loader = make_loader(shards, FIELDS, LoaderConfig(prefix_share=1.0), train=False, seed=3)
    for batch in loader:
        check_batch(batch)
    with pytest.raises(ValueError, match="prefix_share must be a share"):
        SessionStream(shards, FIELDS, 8, shuffle=True, prefix_share=1.5, rank=0, world_size=1)
