"""Batch scoring: ``seqfraud score --artifact A --events E --out scores.parquet``."""

from __future__ import annotations

import argparse
import os
import time

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
from seqfraud.scoring.batch import CHUNK_EVENTS, score_file
from seqfraud.scoring.scorer import Scorer


@command
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="seqfraud score",
        description="Score an event log with an exported artifact, in chunks of whole "
        "sessions; writes the log's session id column, score, band, raw_score.",
    )
    p.add_argument("--artifact", required=True, help="artifact directory written by export.py")
    p.add_argument(
        "--events", required=True, help="Parquet/CSV file, directory of Parquet or CSV files, or glob"
    )
    p.add_argument("--out", type=out_file, required=True, help="output Parquet file")
    p.add_argument("--format", default="torchscript", choices=("torchscript", "pt2"))
    p.add_argument(
        "--chunk-events",
        type=count,
        default=CHUNK_EVENTS,
        help=CHUNK_HELP,
    )
    p.add_argument(
        "--batch-size", type=count, default=64, help="sessions per model call (default: %(default)s)"
    )
    p.add_argument(
        "--workers",
        type=count,
        default=os.cpu_count() or 1,
        help="model calls run at once, one torch thread each (default: all cores)",
    )
    p.add_argument(
        "--device",
        type=device,
        default="cpu",
        help="where the model runs, e.g. cuda (tokenizing stays on the CPU)",
    )
    p.add_argument("--no-progress", action="store_true")
    add_verification_arguments(p)
    add_history_arguments(p)
    args = p.parse_args(argv)
    check_out(p, args.out, args.events)

    torch.set_num_threads(1)  # parallel across batches, not inside ops: no thread barriers per op
    scorer = Scorer.load(
        args.artifact,
        fmt=args.format,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        verify_key=args.verify_key,
        require_signed=args.require_signed,
    )
    scorer.history = history_of(args, scorer.spec, args.events)
    t0 = time.perf_counter()
    stats = score_file(
        scorer, args.events, args.out, chunk_events=args.chunk_events, progress=not args.no_progress
    )
    seconds = time.perf_counter() - t0
    print(
        f"scored {stats['sessions']:,} sessions in {seconds:.1f} s ({stats['sessions'] / seconds:,.0f} sessions/s) "
        f"-> {args.out}"
    )
