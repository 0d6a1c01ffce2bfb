"""``seqfraud embed``: one embedding per session to Parquet, from a run (``--run``) or an artifact (``--artifact``)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from seqfraud.cli import (
    CHUNK_HELP,
    add_history_arguments,
    add_verification_arguments,
    check_out,
    count,
    device,
    history_of,
    out_file,
)
from seqfraud.errors import command
from seqfraud.export.artifact import open_artifact, verification_settings
from seqfraud.scoring.batch import CHUNK_EVENTS, embed_file
from seqfraud.scoring.scorer import Scorer


@command
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="seqfraud embed",
        description="Write each session's embedding (the encoder's pooled state, what the classifier head reads). "
        "--run: every session of a pretraining or sequence-model run's datasets (session_id, label, split, "
        "emb_0 ... emb_{d-1}); --artifact: every session of --events, tokenized as seqfraud score tokenizes "
        "(the log's session id column, emb_0 ... emb_{d-1}).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", type=Path, help="run directory (python train.py ...)")
    source.add_argument("--artifact", type=Path, help="artifact directory written by export.py")
    parser.add_argument(
        "--events", help="with --artifact: Parquet/CSV file, directory of Parquet or CSV files, or glob"
    )
    parser.add_argument("--out", type=out_file, required=True, help="Parquet file to write")
    batch = parser.add_argument_group("with --artifact")
    batch.add_argument("--format", default="torchscript", choices=("torchscript", "pt2"))
    batch.add_argument(
        "--chunk-events",
        type=count,
        default=CHUNK_EVENTS,
        help=CHUNK_HELP,
    )
    batch.add_argument("--batch-size", type=count, default=64, help="sessions per model call")
    batch.add_argument(
        "--workers",
        type=count,
        default=os.cpu_count() or 1,
        help="model calls run at once, one torch thread each (default: all cores)",
    )
    batch.add_argument("--device", type=device, default="cpu", help="where the model runs, e.g. cuda")
    batch.add_argument("--no-progress", action="store_true")
    add_verification_arguments(batch)
    add_history_arguments(batch)
    args = parser.parse_args(argv)
    check_out(parser, args.out)
    if args.run is not None:
        if args.events or args.history_events or args.history_labels:
            parser.error("--events and --history-* go with --artifact; --run embeds the run's own datasets")
        # Imported here: it needs the [train] extra, which --artifact does not.
        from seqfraud.training.embeddings import write_session_embeddings

        frame = write_session_embeddings(args.run, args.out)
        print(f"{frame.height:,} sessions, {frame.width - 3} dimensions -> {args.out}")
        return
    if not args.events:
        parser.error("--artifact needs --events: the event log whose sessions to embed")
    check_out(parser, args.out, args.events)
    artifact = open_artifact(args.artifact, **verification_settings(args.verify_key, args.require_signed))
    embedding = artifact.load_embedding(args.format)
    torch.set_num_threads(1)  # parallel across batches, not inside ops, as seqfraud score
    scorer = Scorer.of_artifact(
        artifact,
        args.format,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        history=history_of(args, artifact.spec, args.events),
    )
    stats = embed_file(
        scorer,
        embedding,
        args.events,
        args.out,
        chunk_events=args.chunk_events,
        progress=not args.no_progress,
    )
    print(f"{stats['sessions']:,} sessions, {embedding[1]} dimensions -> {args.out}")
