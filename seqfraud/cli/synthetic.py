"""``seqfraud synthetic --sessions N --seed S --out DIR``: write a synthetic clickstream (events, labels, typologies)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from seqfraud.cli import count, iso_time, out_folder
from seqfraud.data.synthetic import DEFAULT_DAYS, DEFAULT_START, generate, stamp, summary, write
from seqfraud.errors import command


@command
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="seqfraud synthetic", description="Write a synthetic clickstream with labelled fraud typologies."
    )
    parser.add_argument("--sessions", type=count, required=True, help="sessions to write")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--out",
        type=out_folder,
        required=True,
        help="folder for events.parquet, labels.parquet and typologies.parquet (the truth)",
    )
    parser.add_argument(
        "--start",
        type=iso_time,
        default=DEFAULT_START,
        help="ISO date or datetime (UTC if naive) of the first day (default: %(default)s)",
    )
    parser.add_argument(
        "--days", type=count, default=DEFAULT_DAYS, help="days the sessions span (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    data = generate(args.sessions, seed=args.seed, start=args.start, days=args.days)
    write(data, args.out, stamp(args.sessions, args.seed, args.start, args.days), by="command")
    print(f"{summary(data)} -> {args.out}")
