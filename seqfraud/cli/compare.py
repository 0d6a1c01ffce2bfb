"""``seqfraud compare RUN_DIR ... [--out DIR]``: rank run directories by validation PR-AUC."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from seqfraud.cli import out_folder
from seqfraud.compare import leaderboard_table
from seqfraud.errors import UserError, command
from seqfraud.reports import write_leaderboard


@command
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="seqfraud compare",
        description="Rank run directories by validation PR-AUC: Markdown, HTML, PR curves.",
    )
    parser.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="run directories, or directories holding runs"
    )
    parser.add_argument(
        "--out", type=out_folder, default=None, help="output directory (default: the runs' common parent)"
    )
    parser.add_argument("--fpr", type=float, default=0.01, help="operating point the runs report recall at")
    parser.add_argument(
        "--recall", type=float, default=0.5, help="operating point the runs report precision at"
    )
    args = parser.parse_args(argv)
    for flag, value in (("--fpr", args.fpr), ("--recall", args.recall)):
        if not 0 < value < 1:
            parser.error(f"{flag} is a share between 0 and 1 (0.01 is 1%), got {value}")
    try:
        rows = write_leaderboard(args.runs, args.out, fpr=args.fpr, recall=args.recall)
    except ValueError as e:  # a run directory without the metrics compared
        raise UserError(str(e)) from e
    head, body = leaderboard_table(rows, args.fpr, args.recall)
    print("\n".join("\t".join(cells) for cells in [head, *body]))
