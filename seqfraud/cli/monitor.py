"""``seqfraud monitor --artifact A --current EVENTS [--out DIR]``: drift and performance of a current window."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from seqfraud.cli import (
    add_history_arguments,
    add_verification_arguments,
    apply_verification_arguments,
    history_of,
    out_folder,
)
from seqfraud.errors import command
from seqfraud.monitoring import DEFAULT_THRESHOLDS, EXIT_ALERT, monitor


def _threshold(text: str) -> tuple[str, float]:
    key, sep, value = text.partition("=")
    try:
        if not sep:
            raise ValueError
        return key.strip(), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {text!r}") from None


@command
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="seqfraud monitor",
        description="Compare a current window of raw events with the training period of an artifact.",
    )
    p.add_argument("--artifact", required=True, help="artifact directory written by seqfraud export")
    p.add_argument("--current", required=True, help="current raw events: Parquet/CSV file, directory or glob")
    p.add_argument("--reference", help="reference raw events (default: the artifact's run train dataset)")
    p.add_argument(
        "--labels", help="label table for the current window (default: the events' label column, if any)"
    )
    p.add_argument(
        "--labels-as-of",
        metavar="DATETIME",
        help="when the label table was pulled (ISO; naive means UTC): labels it dates after then are read as not "
        "known yet, and a session whose label delay has run by then counts as settled (default: every label in the "
        "table counts, and the delay runs to the window's last event)",
    )
    p.add_argument("--out", type=out_folder, default="monitor", help="output directory (default: ./monitor)")
    p.add_argument(
        "--threshold",
        action="append",
        type=_threshold,
        default=[],
        metavar="NAME=VALUE",
        help=f"override an alert threshold; defaults {DEFAULT_THRESHOLDS}",
    )
    p.add_argument("--format", default="torchscript", choices=("torchscript", "pt2"))
    p.add_argument("--fail-on-alert", action="store_true", help=f"exit with status {EXIT_ALERT} on any alert")
    add_history_arguments(
        p, "artifacts with entity features: earlier events of other sessions (same columns as --current)"
    )
    add_verification_arguments(p)
    args = p.parse_args(argv)
    apply_verification_arguments(args)
    report = monitor(
        args.artifact,
        args.current,
        args.reference,
        args.labels,
        dict(args.threshold),
        out=args.out,
        fmt=args.format,
        history=lambda spec: history_of(args, spec, args.current),
        labels_as_of=args.labels_as_of,
    )
    for a in report["alerts"]:
        print(f"ALERT {a['message']}")
    for a in report["warnings"]:
        print(f"warning {a['message']}")
    for note in report["notes"]:
        print(f"note: {note}")
    print(
        f"{len(report['alerts'])} alert(s), {len(report['warnings'])} warning(s) -> {Path(args.out) / 'monitor.html'}"
    )
    return EXIT_ALERT if args.fail_on_alert and report["alerts"] else 0
