"""Session embeddings: what a pretrained (or trained) encoder makes of each session, for other models to read.

``seqfraud embed --run RUN --out FILE`` writes one row per session of the run's datasets (``session_id``,
``split``, ``label``, and ``emb_0`` .. ``emb_{d-1}``); ``model=lightgbm model.embeddings=FILE`` then trains the
baseline on its aggregates plus these columns, the hybrid many fraud teams run. ``seqfraud embed --artifact``
gives the same vectors from an exported artifact (its ``embed`` file, :mod:`seqfraud.scoring.batch`), for the
sessions of any event log.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from seqfraud import rundir
from seqfraud import schema as S
from seqfraud.data.shards import shard_files
from seqfraud.data.split import BOUNDARY_PERIOD, later_boundary
from seqfraud.errors import ConfigError, is_int, json_value
from seqfraud.preprocess import Prepared, load_prepared
from seqfraud.provenance import EMBEDDING_METADATA, embedding_record
from seqfraud.training.data import SessionStream
from seqfraud.training.module import PretrainModule, SessionRiskModule
from seqfraud.training.stacking import session_order

log = logging.getLogger(__name__)


def write_session_embeddings(run_dir: str | Path, out: str | Path) -> pl.DataFrame:
    """:func:`session_embeddings` of ``run_dir`` into the Parquet file ``out``, with the record of what made them
    (:func:`~seqfraud.provenance.embedding_record`), which :func:`with_embeddings` checks."""
    run = Path(run_dir).expanduser()
    frame = session_embeddings(run)
    prepared = load_prepared(rundir.prepared_dir(run))
    # metrics.json is there: session_embeddings refuses a run without it.
    metrics = json.loads((run / rundir.METRICS_FILE).read_text())
    supervised, fit = metrics.get("model") != "pretrain", metrics.get("train") or {}
    record = embedding_record(
        prepared.spec.fit_info,
        labels_read=supervised,
        events_sha256=prepared.digest("events"),
        train_labels={k: fit[k] for k in ("n", "positives") if is_int(fit.get(k))} if supervised else None,
    )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(out, metadata=record)
    return frame


@torch.no_grad()
def session_embeddings(run_dir: str | Path, batch_size: int = 64) -> pl.DataFrame:
    """Every session of the run's train, val and test datasets with its embedding: the encoder's pooled state,
    what the classifier head reads. Works on a pretraining run and on a sequence-model run alike."""
    run = Path(run_dir).expanduser()
    ckpt = run / rundir.CHECKPOINT
    if missing := rundir.unfinished(run):
        raise ConfigError(
            f"{run}: no {' or '.join(missing)}; embeddings come from a finished pretraining or sequence-model run"
        )
    with rundir.checkpoint_read(ckpt, ConfigError):
        hparams = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
        module_class = PretrainModule if "pretrain" in hparams else SessionRiskModule
        net = module_class.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).net.eval()
    prepared = load_prepared(rundir.prepared_dir(run))
    frames = []
    for split in S.SPLITS:
        path = prepared.datasets[split]
        stream = SessionStream(
            path, prepared.spec.fields, batch_size, shuffle=False, seed=0, rank=0, world_size=1
        )
        out = np.zeros((stream.n, net.config.d_model), dtype=np.float32)
        for batch in stream:
            out[batch["index"].numpy()] = (
                net.encoder(net.embed(batch["tokens"]), batch["lengths"]).float().numpy()
            )
        columns = [pl.Series(S.embedding_column(j), out[:, j]) for j in range(out.shape[1])]
        frames.append(session_order(path).with_columns(pl.lit(split).alias(S.SPLIT), *columns))
    return pl.concat(frames)


def with_embeddings(
    frames: dict[str, pl.DataFrame],
    path: str | Path,
    id_column: str,
    prepared: Prepared,
    label_fraction: float = 1.0,
) -> dict[str, pl.DataFrame]:
    """The baseline's per-split frames with each session's embedding columns from ``path`` (``seqfraud embed``);
    every session must have one, or the error says how many do not; the file's record must show an encoder that
    read no label of this run's validation or test sessions (:func:`check_embedding_record`).

    ``--run`` writes ``session_id``; ``--artifact`` the log's own id column (``id_column``) in its own type, as
    ``seqfraud score`` does: both are read, ids as text, so that the README's embed-then-train works as written
    (a helper's ``sess`` Int64 column was refused as not a file of seqfraud embed)."""
    check_embedding_record(path, prepared, label_fraction)
    table = pl.read_parquet(path)
    # emb_0, emb_1, ...: a log's id column named emb_key was fed to LightGBM as one more dimension (dogfood 105).
    columns = [c for c in table.columns if re.fullmatch(f"{S.EMBEDDING_PREFIX}[0-9]+", c)]
    ids = next((c for c in (S.SESSION_ID, id_column) if c in table.columns), None)
    if ids is None or not columns:
        raise ConfigError(
            f"model.embeddings={path}: not a file of seqfraud embed ({S.SESSION_ID} or {id_column}, "
            f"{S.embedding_column(0)}, ...); its columns: {table.columns[:8]}"
        )
    # --run files carry each session's label: one that disagrees with this run's says the file embedded another
    # log whose ids happen to match (a helper's embeddings of another log joined silently, and trained).
    theirs = [pl.col(S.LABEL).cast(pl.Int8).alias(_THEIR_LABEL)] if S.LABEL in table.columns else []
    # And each session's split there: the record's periods are lost with the file's metadata (a rewrite in a
    # notebook), and a log shifted in time passes them (dogfood 115: test PR-AUC 1.000 from a supervised encoder
    # that had trained on every test session).
    their_split = [pl.col(S.SPLIT).cast(pl.String).alias(_THEIR_SPLIT)] if S.SPLIT in table.columns else []
    table = table.select(pl.col(ids).cast(pl.String).alias(S.SESSION_ID), *theirs, *their_split, *columns)
    # Two files concatenated (embed --artifact over overlapping windows): a session twice failed the join with a
    # ShapeError traceback in validation, and in train fitted it twice, unsaid (dogfood 105).
    if n := table.height - table[S.SESSION_ID].n_unique():
        first = table.filter(pl.col(S.SESSION_ID).is_duplicated())[S.SESSION_ID][0]
        raise ConfigError(
            f"model.embeddings={path}: column {ids!r}: {n:,} row(s) repeat a session id (first: {first!r}); one "
            "embedding a session: keep one row of each"
        )
    out = {}
    for name, frame in frames.items():
        joined = frame.join(table, on=S.SESSION_ID, how="left", maintain_order="left")
        if n := joined[columns[0]].null_count():
            raise ConfigError(
                f"model.embeddings={path}: {n:,} {name} session(s) have no embedding; embed the run whose data "
                "this one trains on"
            )
        if theirs and (n := int((joined[_THEIR_LABEL] != joined[S.LABEL].cast(pl.Int8)).sum())):
            raise ConfigError(
                f"model.embeddings={path}: {n:,} {name} session(s) carry another label there than here: the file "
                "embedded another log whose session ids match this one's (or labels changed since); embed the run "
                "whose data this one trains on"
            )
        if theirs and (n := int((joined[S.LABEL].is_null() & joined[_THEIR_LABEL].is_not_null()).sum())):
            # A supervised encoder of a fuller label table: the label-scarce hybrid read its labels unsaid (dogfood
            # 123: test PR-AUC 0.648 against LightGBM's 0.293 on the same labels).
            log.warning(
                "model.embeddings=%s: it labels %s of this run's %s sessions that this run reads without a label: "
                "its encoder learnt from labels this run does not have; for a label-scarce comparison embed a "
                "pretraining run (no labels) or a run on this label table",
                path,
                f"{n:,}",
                name,
            )
        if their_split and name in S.SPLITS:
            # A session the encoder fitted to (train), or chose its checkpoint on (val), before this run may.
            earlier = list(S.SPLITS[: S.SPLITS.index(name)])
            if n := int(joined[_THEIR_SPLIT].is_in(earlier).sum()):
                first = joined.filter(pl.col(_THEIR_SPLIT).is_in(earlier)).row(0, named=True)
                raise ConfigError(
                    f"model.embeddings={path}: {n:,} of this run's {name} session(s) were in the {' or '.join(earlier)} "
                    f"split of the model that embedded them (first: {first[S.SESSION_ID]!r}, "
                    f"{first[_THEIR_SPLIT]} there): its encoder learnt from them, and through the vectors the hybrid "
                    "would read them; embed a model trained on this run's split (pretrain on the same preprocessing "
                    "output: prepared_dir=...)"
                )
        out[name] = joined.drop(c for c in (_THEIR_LABEL, _THEIR_SPLIT) if c in joined.columns)
    return out


_THEIR_LABEL = "__embedded_label"
_THEIR_SPLIT = "__embedded_split"


def embedding_record_of(path: str | Path) -> Any:
    """What ``seqfraud embed`` recorded in the file of the encoder that wrote it; None where nothing (a file from
    before the record, one not Parquet or damaged: the read that follows names it)."""
    try:
        return json_value(pl.read_parquet_metadata(path).get(EMBEDDING_METADATA) or "null")
    except (OSError, ValueError, pl.exceptions.PolarsError):
        return None


def say_more_labels(whose: str, read: Mapping[str, Any], train: Path) -> None:
    """Warn where a supervised encoder read more training labels (``read``: its fit's ``n`` and ``positives``)
    than this fit does (``train``: its labelled sessions): the encoder learnt from labels this run does not have,
    which a label-scarce comparison then reads unsaid (dogfoods 123, 157). ``whose``: the encoder, named."""
    ours = int(
        pl.scan_parquet(shard_files(train)).select(pl.col(S.LABEL).is_not_null().sum()).collect().item()
    )
    if read["n"] > ours:
        log.warning(
            "%s is of a supervised run that read %s training labels (%s frauds), where this fit reads %s: it learnt "
            "from labels this run does not have; for a label-scarce comparison use a pretraining run (no labels)",
            whose,
            f"{read['n']:,}",
            f"{read['positives']:,}" if is_int(read.get("positives")) else "?",
            f"{ours:,}",
        )


def check_embedding_record(path: str | Path, prepared: Prepared, label_fraction: float = 1.0) -> None:
    """Refuse embeddings whose encoder learnt from labels past this run's validation or test start: its training
    (or validation) period then held this run's validation or test sessions, whose labels the hybrid would read
    through the vectors (review 50: a supervised run's embeddings of every test session were taken silently).
    Warn when the file embedded other events than this run reads, or carries no record (made before it), and when
    a supervised encoder's vectors come to a run that holds labels back (``label_fraction``) or that reads fewer
    training labels than the encoder did (its record's ``train_labels``)."""
    if not Path(path).expanduser().is_file():  # a FIFO hung the fit's first read of it (review 156)
        raise ConfigError(
            f"model.embeddings={path}: not a regular file (seqfraud embed writes one Parquet file)"
        )
    raw = embedding_record_of(path)
    try:
        record = (
            None
            if raw is None
            else {
                "labels_read": bool(raw["labels_read"]),
                "train_labels": raw.get("train_labels"),
                "events_sha256": raw.get("events_sha256"),
                **{
                    k: datetime.fromisoformat(raw[k]) if raw.get(k) else None
                    for k in ("val_start", "test_start")
                },
            }
        )
    except (ValueError, TypeError, KeyError, AttributeError):
        record = None  # a record not seqfraud's
    if record is None:
        split = S.SPLIT in pl.read_parquet_schema(path)
        log.warning(
            "model.embeddings=%s: the file records nothing of the model that embedded it (written before seqfraud "
            "kept that record, or rewritten by a tool that drops Parquet metadata), so %s",
            path,
            "only its split column checks that it read none of this run's validation or test sessions"
            if split
            else "nothing checks that its encoder read none of this run's validation or test sessions (it has no "
            "split column: seqfraud embed --run writes one, --artifact does not)",
        )
        return
    ours = prepared.spec.fit_info
    if key := later_boundary(record, ours):
        # A pretraining's too: its encoder read this run's validation or test sessions (events, not labels), so
        # they would judge the hybrid on sessions its vectors were fitted to (review 104).
        learnt = "labels" if record["labels_read"] else "the sessions (their events; no labels)"
        period = BOUNDARY_PERIOD[key]
        raise ConfigError(
            f"model.embeddings={path}: its encoder learnt from {learnt} up to {key}={record[key].isoformat()}, "
            f"after this run's {key}={ours[key]}: through the embeddings the hybrid would read its own {period} "
            f"sessions; embed a model whose split starts its {period} no later than this run's (pretrain on the "
            "same preprocessing output: prepared_dir=...)"
        )
    read = record["train_labels"] if isinstance(record["train_labels"], dict) else {}
    # A sparse label table holds labels back too, not label_fraction alone (dogfood 157).
    if record["labels_read"] and is_int(read.get("n")):
        say_more_labels(f"model.embeddings={path}: its encoder", read, prepared.datasets["train"])
    if record["labels_read"]:
        # Its training sessions' vectors are fitted to their own labels, which the hybrid then learns from in sample:
        # validation flattered it, and its test fell below LightGBM alone (dogfood 247: 0.697 against 0.769).
        log.warning(
            "model.embeddings=%s: its encoder learnt from labels (a supervised run): the vectors of the training "
            "sessions it read are fitted to their own labels, so the hybrid learns from them in sample and reads "
            "them as more telling than they are on new sessions; embed a pretraining run (no labels: "
            "+experiment=pretrain_contrastive) to compare what the sequences add",
            path,
        )
    if record["labels_read"] and label_fraction < 1:
        # The encoder may have read the labels this run holds back: a label-scarce comparison then reads them through
        # the vectors (dogfood 105).
        log.warning(
            "model.embeddings=%s: its encoder learnt from labels (a supervised run), and this run holds back %.0f%% "
            "of its training labels (label_fraction=%g): the vectors may carry labels this run does not read; for a "
            "label-scarce comparison embed a pretraining run (no labels)",
            path,
            100 * (1 - label_fraction),
            label_fraction,
        )
    events = prepared.digest("events")
    if record["events_sha256"] and events and record["events_sha256"] != events:
        log.warning(
            "model.embeddings=%s: it embedded other events (SHA-256 %s...) than this run reads (%s...): sessions "
            "whose ids match may be other sessions",
            path,
            str(record["events_sha256"])[:12],
            events[:12],
        )
