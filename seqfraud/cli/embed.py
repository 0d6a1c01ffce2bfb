"""``seqfraud embed --run RUN --out FILE``: one embedding per session of a run's datasets, to Parquet."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from seqfraud.errors import command
from seqfraud.training.embeddings import session_embeddings


@command
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="seqfraud embed",
        description="Write each session's embedding (the encoder's pooled state) of a pretraining or "
        "sequence-model run: session_id, split, label, emb_0 ... emb_{d-1}.",
    )
    parser.add_argument("--run", type=Path, required=True, help="run directory (python train.py ...)")
    parser.add_argument("--out", type=Path, required=True, help="Parquet file to write")
    args = parser.parse_args(argv)
    frame = session_embeddings(args.run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(args.out)
    print(f"{frame.height:,} sessions, {frame.width - 3} dimensions -> {args.out}")
