"""Why did this session score high? ``python -m seqfraud.explain --artifact A --events E --session SID --out view.html``.

Writes a self-contained HTML view of one session's events in time order, each shaded by its contribution to
the score (:meth:`~seqfraud.scoring.scorer.Scorer.explain`, by occlusion), and with ``--png`` a bar chart.
"""

from __future__ import annotations

import argparse
import html
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from seqfraud import schema as S
from seqfraud.data.events import DataValidationError, reading, scan_table
from seqfraud.errors import command
from seqfraud.scoring.scorer import Scorer


def session_events(path: str | Path, scorer: Scorer, session: str) -> pl.DataFrame:
    """One session's raw events from a Parquet file, directory or glob, or a CSV file."""
    events, source = scan_table(path, scorer.spec.schema)
    column = scorer.spec.schema.session_id
    with reading(source):
        found = events.filter(pl.col(column).cast(pl.String) == session).collect()
    if found.height == 0:
        raise DataValidationError(f"{source}: column {column!r}: no events of session {session!r}")
    return found


def _shade(c: float, scale: float) -> str:
    """Red for events that raised the score, blue for those that lowered it; stronger for larger shares."""
    a = min(abs(c) / scale, 1.0) * 0.85 if scale > 0 else 0.0
    return f"rgba(214,39,40,{a:.3f})" if c > 0 else f"rgba(31,119,180,{a:.3f})"


def render_html(explained: pl.DataFrame, scored: dict, model_version: str) -> str:
    scale = float(explained[S.CONTRIBUTION].abs().max() or 0.0)
    rows = "\n".join(
        f"<tr style=\"background:{_shade(r[S.CONTRIBUTION], scale)}\"><td>{r[S.POSITION]}</td>"
        f"<td>{html.escape(str(r[S.EVENT_TIME]))}</td><td>{html.escape(str(r[S.EVENT]))}</td>"
        f"<td class=n>{r[S.CONTRIBUTION]:+.4f}</td></tr>"
        for r in explained.iter_rows(named=True))
    sid = html.escape(str(scored[S.SESSION_ID]))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>seqfraud: session {sid}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}td.n{{text-align:right;font-family:monospace}}
.legend span{{padding:2px 8px;margin-right:8px}}</style></head><body>
<h2>Session {sid}</h2>
<p>score <b>{scored[S.SCORE]:.4f}</b> (model {scored[S.RAW_SCORE]:.4f}), band <b>{html.escape(scored[S.BAND])}</b>,
model {html.escape(model_version)}</p>
<p class="legend"><span style="background:{_shade(1, 1)}">raised the score</span>
<span style="background:{_shade(-1, 1)}">lowered it</span>
contribution = model probability minus the probability with that event masked</p>
<table><tr><th>#</th><th>time (UTC)</th><th>event</th><th>contribution</th></tr>
{rows}
</table></body></html>
"""


def render_png(explained: pl.DataFrame, scored: dict, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = explained[S.CONTRIBUTION].to_list()
    labels = [f"{p}  {e}" for p, e in zip(explained[S.POSITION].to_list(), explained[S.EVENT].to_list())]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(c) + 1.2), dpi=90)
    ax.barh(range(len(c)), c, color=["#d62728" if x > 0 else "#1f77b4" for x in c])
    ax.set_yticks(range(len(c)), labels, fontsize=8)
    ax.invert_yaxis()  # first event on top: read it as a timeline
    ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("contribution (model probability minus probability with the event masked)")
    ax.set_title(f"session {scored[S.SESSION_ID]}: score {scored[S.SCORE]:.3f}, band {scored[S.BAND]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def explain_session(artifact: str | Path, events: str | Path, session: str, out: str | Path,
                    png: str | Path | None = None) -> pl.DataFrame:
    """Write the HTML view (and the PNG) of one session; returns the per-event contributions."""
    scorer = Scorer.load(artifact)
    found = session_events(events, scorer, session)
    scored = scorer.score(found).row(0, named=True)
    explained = scorer.explain(found)
    Path(out).write_text(render_html(explained, scored, scorer.model_version), encoding="utf-8")
    if png:
        render_png(explained, scored, png)
    return explained


@command
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Show which events of one session drove its score.")
    parser.add_argument("--artifact", required=True, help="exported artifact directory")
    parser.add_argument("--events", required=True, help="raw events: Parquet file, directory or glob, or CSV")
    parser.add_argument("--session", required=True, help="the session id to explain")
    parser.add_argument("--out", required=True, help="HTML file to write")
    parser.add_argument("--png", default=None, help="also write a bar chart here")
    args = parser.parse_args(argv)
    explained = explain_session(args.artifact, args.events, args.session, args.out, args.png)
    top = explained.sort(S.CONTRIBUTION, descending=True).head(3)
    print(f"wrote {args.out}" + (f" and {args.png}" if args.png else "") + "; top events: "
          + ", ".join(f"{e} ({c:+.3f})" for e, c in zip(top[S.EVENT], top[S.CONTRIBUTION])))


if __name__ == "__main__":
    main()
