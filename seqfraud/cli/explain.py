"""``seqfraud explain --artifact A --events E --session SID --out view.html [--png chart.png]``."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from seqfraud import reports
from seqfraud import schema as S
from seqfraud.cli import (
    add_history_arguments,
    add_verification_arguments,
    apply_verification_arguments,
    history_of,
    out_file,
)
from seqfraud.errors import command
from seqfraud.features.spec import Spec
from seqfraud.scoring.explain import (
    NO_SINGLE_EVENT,
    context_moves,
    context_note,
    flat_note,
    session_events,
    unlisted,
    unread_note,
)
from seqfraud.scoring.history import History
from seqfraud.scoring.scorer import Scorer


def explain_session(
    artifact: str | Path,
    events: str | Path,
    session: str,
    out: str | Path,
    png: str | Path | None = None,
    history: Callable[[Spec], History | None] = lambda spec: None,
) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Write the HTML view (and the PNG) of one session; returns the per-event contributions.

    ``history`` gives what an artifact with entity features reads besides the session (docs/entities.md).
    Also returns the session's score row (``score``, ``band``, and ``raw_score``: the contributions' units),
    with ``stacked`` (whether a stacker made the score), ``blend`` (whether that was a blend), ``context_shift``
    (with a history: the raw score less the session's without any other session) and ``notes`` (:func:`context_note`, :func:`flat_note`,
    :func:`unread_note`: the page says them too, where the command alone did: dogfood 120).
    """
    scorer = Scorer.load(artifact)
    found, others = session_events(events, scorer.spec, session)
    where = str(events)  # the file, in what its validation says (it said 'events': dogfood 97)
    if (read := history(scorer.spec)) is not None:  # the file's other sessions, as seqfraud score reads them
        read = read.beside(others, where, scorer.spec)
    scorer.history = read
    stacked = scorer.stacker is not None
    scored = scorer.score(found, source=where).row(0, named=True) | {
        "stacked": stacked,
        "blend": scorer.stacker is not None and scorer.stacker.blend,
        "unlisted": unlisted(found.height, scorer.spec, stacked),
    }
    context = None
    if read is not None:  # the session with no other session beside it: what its context gives

        def without(history: History) -> dict[str, Any]:
            scorer.history = history
            return scorer.score(found, source=where).row(0, named=True)

        alone = without(replace(read, events=read.events.head(0), said_short=True))
        scored["context_shift"] = scored[S.RAW_SCORE] - alone[S.RAW_SCORE]
        # The columns it holds a value in: a null links it to no other session (review 223: named all the same).
        held = [c for c in scorer.spec.schema.entities if found[c].is_not_null().any()]
        by_column = None
        if len(held) > 1 and context_moves(scored, alone):  # which of them: each column's links cut alone
            by_column = {column: without(read.apart(column)) for column in held}
        scorer.history = read
        context = context_note(scored, alone, held, by_column)
    explained = scorer.explain(found, source=where)
    said = (
        context,
        flat_note(explained[S.CONTRIBUTION].to_numpy(), scored, scorer.calibrate),
        unread_note(found.height, scorer.spec, scorer.stacker),
    )
    scored["notes"] = [note for note in said if note]
    # Into a folder not made yet, as score writes (dogfood 206: a bare "No such file or directory").
    for path in (out, *([png] if png else [])):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(reports.session_html(explained, scored, scorer.model_version), encoding="utf-8")
    if png:
        reports.session_png(explained, scored, png)
    return explained, scored


def moved_most(explained: pl.DataFrame, k: int = 3, flagged: bool = False) -> str:
    """The ``k`` events that moved the score most, either way: of an approved fraud, the one that lowered it most
    said more than three that raised it a little (dogfood 97). Of a ``flagged`` session (review, decline), whose
    reason is asked, those that raised it first, then those that lowered it (dogfood 221: three that lowered a
    review's score were named, not the one that raised it most). Those that print as 0.000 are left out: "scroll
    (-0.000)" read as a reason (dogfood 99). Each by its row of the page and its type: an integer event code alone
    read as a row number, another row's (dogfood 251)."""
    moved = explained.filter(pl.col(S.CONTRIBUTION).abs() >= NO_SINGLE_EVENT)
    order = (
        [pl.col(S.CONTRIBUTION) > 0, pl.col(S.CONTRIBUTION).abs()]
        if flagged
        else [pl.col(S.CONTRIBUTION).abs()]
    )
    top = moved.sort(order, descending=True).head(k)
    said = ", ".join(
        f"#{p} {e} ({c:+.3f})" for p, e, c in zip(top[S.POSITION], top[S.EVENT], top[S.CONTRIBUTION])
    )
    return said or "none (every event's contribution is 0.000)"


@command
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="seqfraud explain", description="Show which events of one session drove its score."
    )
    parser.add_argument("--artifact", required=True, help="exported artifact directory")
    parser.add_argument("--events", required=True, help="raw events: Parquet file, directory or glob, or CSV")
    parser.add_argument("--session", required=True, help="the session id to explain")
    parser.add_argument("--out", type=out_file, required=True, help="HTML file to write")
    parser.add_argument("--png", default=None, help="also write a bar chart here")
    add_verification_arguments(parser)
    add_history_arguments(parser)
    args = parser.parse_args(argv)
    apply_verification_arguments(args)
    explained, scored = explain_session(
        args.artifact,
        args.events,
        args.session,
        args.out,
        args.png,
        lambda spec: history_of(args, spec, args.events),
    )
    print(
        f"wrote {args.out}"
        + (f" and {args.png}" if args.png else "")
        + f"; events that moved the score most: {moved_most(explained, flagged=scored[S.BAND] != 'approve')}"
    )
    for note in scored["notes"]:
        print(f"note: {note}")
