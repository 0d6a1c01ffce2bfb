"""Tokenized Parquet shards streamed as ready, length-bucketed batches, split exactly across ranks and workers.

Nothing holds a whole split: a stream reads one row group at a time, shuffles through a bounded buffer and
sorts pools of a few batches by length to keep padding low. Given each session's group
(:func:`entity_groups`), a pool keeps each group's sessions together, so they share batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from seqfraud import schema as S
from seqfraud.data.events import inspect_events, normalize, reading
from seqfraud.data.shards import shard_files
from seqfraud.features.tokens import time_order_key
from seqfraud.schema import Schema

Session = tuple[np.ndarray, float, int]  # tokens [events, fields], label, global index in file order


@dataclass(frozen=True)
class RowGroup:
    """``rows`` sessions in row group ``group`` of ``file``; the first is session ``start`` in file order."""

    file: Path
    group: int
    start: int
    rows: int


def row_groups(path: str | Path) -> list[RowGroup]:
    """A dataset's row groups in file order, from Parquet metadata alone."""
    out, start = [], 0
    for file in shard_files(path):
        meta = pq.read_metadata(file)
        for g in range(meta.num_row_groups):
            rows = meta.row_group(g).num_rows
            if rows:
                out.append(RowGroup(file, g, start, rows))
                start += rows
    return out


@dataclass
class Sessions:
    """Sessions as one flat ``[events, fields]`` array plus offsets: compact and fast to slice."""

    tokens: np.ndarray  # int64 [events, fields]
    offsets: np.ndarray  # int64 [sessions + 1]
    labels: np.ndarray  # float32 [sessions]
    index: np.ndarray  # int64 [sessions]: global position in file order

    @classmethod
    def read(cls, group: RowGroup, fields: Sequence[str]) -> Sessions:
        cols = [S.token_column(f) for f in fields]
        with pq.ParquetFile(group.file) as f:
            table = f.read_row_group(group.group, columns=[S.LABEL, *cols])
        lists = [table.column(c).combine_chunks() for c in cols]
        tokens = np.stack([lst.flatten().to_numpy(zero_copy_only=False) for lst in lists], axis=1)
        lengths = pc.list_value_length(lists[0]).to_numpy(zero_copy_only=False)
        return cls(
            tokens=tokens.astype(np.int64),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            labels=table.column(S.LABEL).to_numpy().astype(np.float32),
            index=np.arange(group.start, group.start + group.rows, dtype=np.int64),
        )

    @classmethod
    def concat(cls, parts: Sequence[Sessions]) -> Sessions:
        lengths = np.concatenate([p.lengths for p in parts])
        return cls(
            tokens=np.concatenate([p.tokens for p in parts]),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            labels=np.concatenate([p.labels for p in parts]),
            index=np.concatenate([p.index for p in parts]),
        )

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Session:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]], float(self.labels[i]), int(self.index[i])


def read_sessions(path: str | Path, fields: Sequence[str], limit: int | None = None) -> Sessions:
    """The first ``limit`` sessions (all by default) in file order, for checks that need random access."""
    parts, n = [], 0
    for group in row_groups(path):
        if limit is not None and n >= limit:
            break
        parts.append(Sessions.read(group, fields))
        n += group.rows
    if not parts:
        return Sessions(
            np.zeros((0, len(fields)), np.int64),
            np.zeros(1, np.int64),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
        )
    whole = Sessions.concat(parts)
    keep = len(whole) if limit is None else min(limit, len(whole))
    return Sessions(
        whole.tokens[: whole.offsets[keep]],
        whole.offsets[: keep + 1],
        whole.labels[:keep],
        whole.index[:keep],
    )


def token_counts(path: str | Path, fields: Sequence[str], sizes: Sequence[int]) -> list[np.ndarray]:
    """Per field, how often each token id (below its ``size``) occurs in a dataset's kept events, read one row
    group at a time."""
    counts = [np.zeros(n, np.int64) for n in sizes]
    for group in row_groups(path):
        tokens = Sessions.read(group, fields).tokens
        for j, n in enumerate(sizes):
            counts[j] += np.bincount(tokens[:, j], minlength=n)  # an id past the size is a bug: shapes differ
    return counts


def collate(batch: Sequence[Session]) -> dict[str, torch.Tensor]:
    """Right-pad with 0; ``index`` maps rows back to sessions, since batches are bucketed by length."""
    lengths = np.array([len(t) for t, _, _ in batch], dtype=np.int64)
    tokens = np.zeros((len(batch), max(int(lengths.max()), 1), batch[0][0].shape[1]), dtype=np.int64)
    tokens[np.arange(tokens.shape[1]) < lengths[:, None]] = np.concatenate([t for t, _, _ in batch])
    return {
        "tokens": torch.from_numpy(tokens),
        "lengths": torch.from_numpy(lengths),
        "labels": torch.tensor([y for _, y, _ in batch], dtype=torch.float32),
        "index": torch.tensor([i for _, _, i in batch], dtype=torch.long),
    }


def grouped(
    pool: Sequence[Session], session_groups: np.ndarray, rng: np.random.Generator, *, shuffle: bool
) -> list[Session]:
    """``pool`` with each group's sessions next to each other, by length within the group; groups in order of
    their longest session, so batches still pad little, and with ``shuffle`` in a fresh random order among
    equals each pass."""
    lengths = np.array([len(tokens) for tokens, _, _ in pool])
    _, group = np.unique(session_groups[[index for _, _, index in pool]], return_inverse=True)
    longest = np.zeros(group.max() + 1, dtype=lengths.dtype)
    np.maximum.at(longest, group, lengths)
    tie = rng.permutation(len(longest))[group] if shuffle else group
    return [pool[i] for i in np.lexsort((lengths, tie, longest[group]))]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def split_sizes(n: int, parts: int) -> list[int]:
    """``n`` items in ``parts`` near-equal counts (they differ by at most 1)."""
    return [n // parts + (i < n % parts) for i in range(parts)]


class SessionStream(IterableDataset):
    """A split as collated batches, one exact share per slot: (rank, DataLoader worker).

    Each pass, the row groups are permuted by ``(seed, epoch)`` identically on every rank (when shuffling),
    conceptually concatenated, and slot ``s`` of ``S`` takes sessions ``[s*N//S, (s+1)*N//S)``: nothing is
    duplicated or dropped. Every slot yields the same number of batches, so DDP ranks never wait on a rank
    that ran out. Training shuffles through a buffer of ``shuffle_buffer`` sessions; then pools of
    ``pool_batches`` batches are sorted by length and cut, to keep padding low.

    The epoch is the count of passes this object (or a persistent worker's copy of it) has started: every
    rank and worker starts one pass per epoch, so they agree without talking to each other.

    ``session_groups`` (an id per session, in file order) orders each pool by group instead (:func:`grouped`),
    so that sessions of one group land in one batch as far as the pool and lengths allow, and every batch
    carries their ``group``. Which sessions a slot reads does not change.

    ``prefix_share``: the share of sessions cut, each pass, to their first k kept events (k uniform from 1 to
    the length), label unchanged. Per-event online scoring reads such prefixes, which a model that only saw
    whole sessions may misread (manifest ``metrics.test_by_events_seen``).
    """

    def __init__(
        self,
        path: str | Path,
        fields: Sequence[str],
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        shuffle_buffer: int = 0,
        pool_batches: int = 50,
        num_workers: int = 0,
        shuffle_order: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        session_groups: np.ndarray | None = None,
        prefix_share: float = 0.0,
    ):
        if not 0 <= prefix_share <= 1:
            raise ValueError(f"loader.prefix_share must be a share in [0, 1], got {prefix_share}")
        self.prefix_share = prefix_share
        self.path = Path(path)
        self.fields = list(fields)
        self.groups = row_groups(path)
        self.n = sum(g.rows for g in self.groups)
        if session_groups is not None and len(session_groups) != self.n:
            raise ValueError(f"{self.path}: {len(session_groups)} session groups for {self.n} sessions")
        self.session_groups = session_groups
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.shuffle_buffer, self.pool_batches, self.num_workers = shuffle_buffer, pool_batches, num_workers
        self.shuffle_order = shuffle_order
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank = torch.distributed.get_rank() if rank is None else rank
            world_size = torch.distributed.get_world_size() if world_size is None else world_size
        self.rank, self.world_size = rank or 0, world_size or 1
        self.slots = self.world_size * max(num_workers, 1)
        self.batches_per_slot = ceil_div(ceil_div(self.n, self.slots), batch_size)
        if self.n // self.slots < max(self.batches_per_slot, 1):
            raise ValueError(
                f"{self.path}: {self.n} sessions cannot give each of {self.slots} slots ({self.world_size} rank(s) x "
                f"{max(num_workers, 1)} worker(s)) {max(self.batches_per_slot, 1)} non-empty batch(es); use fewer "
                f"ranks or loader.num_workers, or more data"
            )
        self.epoch = 0
        self.peak_buffered = 0  # most sessions held at once by the shuffle buffer and a pool (this process)

    def __len__(self) -> int:
        """Batches per rank per pass."""
        return self.batches_per_slot * max(self.num_workers, 1)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info else (0, 0)
        if workers != self.num_workers:
            raise RuntimeError(
                f"stream built for num_workers={self.num_workers} is read by {workers} worker(s)"
            )
        epoch, self.epoch = self.epoch, self.epoch + 1
        return self._batches(self.rank * max(workers, 1) + worker, epoch)

    def _batches(self, slot: int, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        order = self.groups
        if self.shuffle:
            order = [order[i] for i in np.random.default_rng((self.seed, epoch)).permutation(len(order))]
        lo, hi = slot * self.n // self.slots, (slot + 1) * self.n // self.slots
        rng = np.random.default_rng((self.seed, epoch, slot))
        buffer: list[Session] = []
        stream = self._read(order, lo, hi)
        if self.shuffle and self.shuffle_buffer:
            stream = self._shuffled(stream, buffer, rng)
        if self.prefix_share:
            stream = self._prefixes(stream, rng)
        sizes = split_sizes(hi - lo, self.batches_per_slot)
        for start in range(0, len(sizes), self.pool_batches):
            pool_sizes = sizes[start : start + self.pool_batches]
            pool = []
            for item in stream:
                pool.append(item)
                if len(pool) == sum(pool_sizes):
                    break
            self.peak_buffered = max(self.peak_buffered, len(buffer) + len(pool))
            if self.session_groups is None:
                pool.sort(key=lambda item: len(item[0]))
            else:
                pool = grouped(pool, self.session_groups, rng, shuffle=self.shuffle)
            batches = [pool[a:b] for a, b in pairwise(np.cumsum([0, *pool_sizes]))]
            for i in rng.permutation(len(batches)) if self.shuffle else range(len(batches)):
                out = collate(batches[i])
                if self.session_groups is not None:
                    out["group"] = torch.from_numpy(self.session_groups[out["index"].numpy()])
                yield out

    def _read(self, order: Sequence[RowGroup], lo: int, hi: int) -> Iterator[Session]:
        """Sessions ``[lo, hi)`` of the row groups concatenated in ``order``, reading only those groups."""
        pos = 0
        for group in order:
            a, b = max(lo - pos, 0), min(hi - pos, group.rows)
            pos += group.rows
            if a >= b:
                continue
            chunk = Sessions.read(group, self.fields)
            for i in range(a, b):
                tokens, label, index = chunk[i]
                if self.shuffle_order:
                    # A fixed permutation per session: the ablation sees the same shuffled session every epoch.
                    tokens = tokens[np.random.default_rng((self.seed, index)).permutation(len(tokens))]
                # A copy, so held sessions do not pin their whole row group in memory.
                yield tokens.copy(), label, index
            if pos >= hi:
                break

    def _prefixes(self, items: Iterator[Session], rng: np.random.Generator) -> Iterator[Session]:
        for tokens, label, index in items:
            if rng.random() < self.prefix_share:
                tokens = tokens[: int(rng.integers(1, len(tokens) + 1))]
            yield tokens, label, index

    def _shuffled(
        self, items: Iterator[Session], buffer: list[Session], rng: np.random.Generator
    ) -> Iterator[Session]:
        """A bounded shuffle: each arriving session swaps out a random one of ``buffer``."""
        for item in items:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(item)
                continue
            j = int(rng.integers(len(buffer)))
            yield buffer[j]
            buffer[j] = item
        rng.shuffle(buffer)
        while buffer:
            yield buffer.pop()


@dataclass
class LoaderConfig:
    batch_size: int = 256
    eval_batch_size: int = 64
    num_workers: int = 0
    pool_batches: int = 50
    shuffle_buffer: int = 10_000
    prefix_share: float = 0.0


def make_loader(
    path: str | Path,
    fields: Sequence[str],
    cfg: LoaderConfig,
    *,
    train: bool,
    seed: int,
    shuffle_order: bool = False,
    session_groups: np.ndarray | None = None,
) -> DataLoader:
    """A loader of ready batches; workers persist because each keeps its stream's epoch count."""
    stream = SessionStream(
        path,
        fields,
        cfg.batch_size if train else cfg.eval_batch_size,
        shuffle=train,
        seed=seed,
        shuffle_buffer=cfg.shuffle_buffer,
        pool_batches=cfg.pool_batches,
        num_workers=cfg.num_workers,
        shuffle_order=shuffle_order,
        session_groups=session_groups,
        prefix_share=cfg.prefix_share if train else 0.0,
    )
    return DataLoader(
        stream, batch_size=None, num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0
    )


class StreamData(L.LightningDataModule):
    """Builds the loaders in Lightning's hooks, after torch.distributed is up, so each stream knows its rank.
    ``session_groups`` holds each split's session groups (:func:`entity_groups`), where batches need them."""

    def __init__(
        self,
        datasets: Mapping[str, Path],
        fields: Sequence[str],
        cfg: LoaderConfig,
        *,
        seed: int,
        shuffle_order: bool = False,
        session_groups: Mapping[str, np.ndarray] | None = None,
    ):
        super().__init__()
        self.datasets, self.fields, self.cfg = dict(datasets), list(fields), cfg
        self.seed, self.shuffle_order = seed, shuffle_order
        self.session_groups = dict(session_groups or {})

    def _loader(self, split: str, train: bool) -> DataLoader:
        return make_loader(
            self.datasets[split],
            self.fields,
            self.cfg,
            train=train,
            seed=self.seed,
            shuffle_order=self.shuffle_order,
            session_groups=self.session_groups.get(split),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)


def entity_groups(
    events: str, labels: str | None, schema: Schema, entity: str, datasets: Mapping[str, Path]
) -> dict[str, np.ndarray]:
    """Each session's group for entity positives (``pretrain.positives=entity``), per dataset in file order.

    A session's group is the value of the ``entity`` column on its first event that has one, in the order
    sequences use (time, then input row), read from the event log (``events``, with ``labels`` as
    preprocessing read them) by a streaming query over the datasets' sessions only. Values get dense ranks, the
    same in every dataset; a session with no value is a group of its own, numbered after them.
    """
    raw = inspect_events(events, schema, labels)
    ids = {name: pl.scan_parquet(shard_files(path)).select(S.SESSION_ID) for name, path in datasets.items()}
    first = (
        normalize(raw.frame, schema, raw.columns, raw.timestamp_unit, with_label=False)
        .filter(pl.col(entity).is_not_null())
        .join(pl.concat(list(ids.values())), on=S.SESSION_ID, how="semi")
        .group_by(S.SESSION_ID)
        .agg(pl.col(entity).min_by(time_order_key()))
    )
    with reading(raw.source):
        first_df = first.collect(engine="streaming")
    coded = first_df.select(S.SESSION_ID, (pl.col(entity).rank("dense").cast(pl.Int64) - 1).alias(entity))
    values = coded[entity].n_unique()
    return {
        name: lf.join(coded.lazy(), on=S.SESSION_ID, how="left", maintain_order="left")
        .select(pl.col(entity).fill_null(values + pl.int_range(pl.len(), dtype=pl.Int64)))
        .collect(engine="streaming")[entity]
        .to_numpy()
        for name, lf in ids.items()
    }
