"""Tokenized Parquet datasets to padded batches, with length-aware batching to keep padding low."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from seqfraud import schema as S


class TokenDataset(Dataset):
    """All sessions of a split as one flat ``[events, fields]`` array plus offsets: compact and fast to slice."""

    def __init__(self, path: str | Path, fields: Sequence[str], *, shuffle_order: bool = False, seed: int = 0):
        cols = [S.token_column(f) for f in fields]
        frame = pl.read_parquet(path, columns=[S.SESSION_ID, S.LABEL, S.LENGTH, *cols])
        self.session_ids = frame[S.SESSION_ID].to_list()
        self.labels = frame[S.LABEL].to_numpy().astype(np.float32)
        self.lengths = frame[S.LENGTH].to_numpy().astype(np.int64)
        flat = frame.select([pl.col(c).explode() for c in cols]).to_numpy() if frame.height else np.zeros((0, len(cols)))
        self.tokens = np.ascontiguousarray(flat, dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.shuffle_order = shuffle_order
        self.seed = seed

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, float, int]:
        tokens = self.tokens[self.offsets[i]:self.offsets[i + 1]]
        if self.shuffle_order:
            # A fixed permutation per session: the ablation sees the same shuffled session every epoch.
            tokens = tokens[np.random.default_rng((self.seed, i)).permutation(len(tokens))]
        return tokens, self.labels[i], i


def collate(batch: list[tuple[np.ndarray, float, int]]) -> dict[str, torch.Tensor]:
    """Right-pad with 0; ``index`` maps rows back to sessions, since batches are bucketed by length."""
    lengths = torch.tensor([len(t) for t, _, _ in batch], dtype=torch.long)
    n_fields = batch[0][0].shape[1]
    tokens = torch.zeros(len(batch), max(int(lengths.max()), 1), n_fields, dtype=torch.long)
    for row, (t, _, _) in enumerate(batch):
        tokens[row, : len(t)] = torch.from_numpy(t)
    return {
        "tokens": tokens,
        "lengths": lengths,
        "labels": torch.tensor([y for _, y, _ in batch], dtype=torch.float32),
        "index": torch.tensor([i for _, _, i in batch], dtype=torch.long),
    }


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of similar lengths, drawn from shuffled pools, in random order.

    With ``weights`` it first draws the epoch's sessions with replacement (a class-balanced sampler),
    then buckets those.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, *, shuffle: bool, seed: int = 0,
                 pool_batches: int = 50, weights: np.ndarray | None = None):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.pool = batch_size * pool_batches
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        self.epoch += 1
        n = len(self.lengths)
        if self.weights is not None:
            order = rng.choice(n, size=n, replace=True, p=self.weights)
        else:
            order = rng.permutation(n) if self.shuffle else np.arange(n)
        batches = []
        for start in range(0, n, self.pool):
            chunk = order[start:start + self.pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return iter(batches)


@dataclass
class LoaderConfig:
    batch_size: int = 256
    eval_batch_size: int = 1024
    num_workers: int = 0
    balanced_sampler: bool = False
    pool_batches: int = 50


def make_loader(ds: TokenDataset, cfg: LoaderConfig, *, train: bool, seed: int) -> DataLoader:
    weights = None
    if train and cfg.balanced_sampler:
        pos = ds.labels.mean()
        weights = np.where(ds.labels > 0, 0.5 / max(pos, 1e-12), 0.5 / max(1 - pos, 1e-12))
    sampler = LengthBucketSampler(ds.lengths, cfg.batch_size if train else cfg.eval_batch_size,
                                  shuffle=train, seed=seed, pool_batches=cfg.pool_batches, weights=weights)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers,
                      persistent_workers=cfg.num_workers > 0)
