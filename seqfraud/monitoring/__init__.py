"""Drift monitoring: is today's traffic still like the data the exported model was trained on?

:func:`monitor` compares a current window of raw events with a reference window, through the artifact's
own spec and model, and writes ``monitor.json``, ``monitor.html`` (self-contained) and ``monitor.png``:

- PSI per token field (vocabulary ids, numeric buckets, time-delta buckets; reserved ids are bins too);
- the unknown-token rate per categorical field, reference vs current;
- categories outside the vocabulary, from the raw values, with counts and example sessions;
- session length and inter-event time (quantiles, and PSI of the length distribution);
- PSI of the model's scores on fixed score bins;
- PR-AUC, ROC-AUC and recall at the run's ``metrics.fpr`` on the current window when its labels are known
  (they arrive late), and the drop from the artifact's test PR-AUC.

The reference is raw events or, by default, the tokenized train dataset of the run the artifact was exported
from (the manifest records its directory). Each alert names the check, the field, the value and the threshold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from seqfraud import reports
from seqfraud import schema as S
from seqfraud.data.events import unopened_types
from seqfraud.data.split import to_epoch_us
from seqfraud.features.drift import event_transitions, transition_shares
from seqfraud.features.spec import Spec
from seqfraud.monitoring.alerts import DEFAULT_THRESHOLDS, alerts, check_thresholds, notes
from seqfraud.monitoring.inputs import (
    MonitorError,
    current_labels,
    default_reference,
    joined,
    matched_labels,
    overlap,
    raw_window,
    reference_scores,
    run_sessions,
)
from seqfraud.monitoring.statistics import (
    DEFAULT_FPR,
    SCORE_BINS,
    entity_field_stats,
    field_stats,
    length_edges,
    length_summary,
    new_categories,
    performance,
    psi,
    quantiles,
    token_counts,
)
from seqfraud.scoring.batch import counted_values, scale_counts, scale_said, text_columns, value_counts
from seqfraud.scoring.history import History, require_history
from seqfraud.scoring.prepare import (
    CATEGORY_SHARES,
    cut_sessions_said,
    merged_sessions_said,
    mix_said,
    recoded_said,
    reference_mass_edges,
    reference_shares,
    reference_transitions,
    transitions_said,
    unlearnt_types,
    unopened_said,
)
from seqfraud.scoring.scorer import Scorer

__all__ = [
    "DEFAULT_THRESHOLDS",
    "EXIT_ALERT",
    "OUTPUT_FILES",
    "MonitorError",
    "check_thresholds",
    "monitor",
    "psi",
]

log = logging.getLogger(__name__)
OUTPUT_FILES = ("monitor.json", "monitor.html", "monitor.png")
# monitor.json's shape: raised when a key is renamed or changes type, so that a pipeline reading the file can
# refuse one it does not know (new_categories' values and truncated_share's rename changed it unsaid: dogfood 132).
# 3: an alert of check "scale" has a null value and threshold (its message says what it read); 4: so has one of
# check "transitions"; 5: and one of check "mix", an entity column emptied is a finding of check "entity_empty" (a
# note before; an alert, its features' PSIs none, where the window can tell), a PSI finding holds "moved", its top
# move, and a number's field stats "present_moves".
REPORT_VERSION = 5
EXIT_ALERT = 1  # like diff: 1 means "differences found", 2 (a user error, see seqfraud.errors) means trouble


def scale_alerts(spec: Spec, manifest: Mapping[str, Any], events: pl.DataFrame, sessions: int) -> list[dict]:
    """Each number's scale, as batch scoring judges a file's (``events``: the window's normalized events, of
    ``sessions``), as alerts: a part of the traffic in another unit, or written negative, was at most a PSI here
    (dogfood 255), and data in another unit is broken, which --fail-on-alert must stop on (dogfood 263: a channel's
    amounts in thousands, 31% of the values, exited 0 beside a PSI of 0.13 that the point mass diluted)."""
    trained, mass = reference_shares(spec, manifest), reference_mass_edges(spec, manifest)
    if not (scale := scale_counts(spec, trained, mass, S.SESSION_ID)):
        return []
    counted = events.select(scale).row(0, named=True)
    return [
        {"check": "scale", "field": c, "value": None, "threshold": None, "message": said}
        for c, said in scale_said("the current window", spec, trained, mass, counted, sessions).items()
    ]


def mix_alerts(spec: Spec, manifest: Mapping[str, Any], raw: pl.LazyFrame, sessions: int) -> list[dict]:
    """Each categorical's learnt values against training's mix, as batch scoring judges a file's (``raw``: the
    window's events, of ``sessions``), as alerts: an event type on 3% of training's events, gone from a window, read
    as a PSI warning of 0.19 that named no value (dogfood 278). A field whose values the model did not learn is the
    unknown-rate check's."""
    texts = text_columns(spec, raw.collect_schema())
    mixes = {
        c: shares for c, shares in reference_shares(spec, manifest, CATEGORY_SHARES).items() if c in texts
    }
    counted = pl.collect_all([value_counts(raw, spec, c) for c in mixes])
    found = []
    for (c, shares), frame in zip(mixes.items(), counted):
        counts, carriers = counted_values(frame)
        learnt = set(spec.vocab[c])
        new = [
            v for v, _ in sorted(counts.items(), key=lambda vn: -vn[1]) if v is not None and v not in learnt
        ]
        values = sum(n for v, n in counts.items() if v is not None)
        known = sum(n for v, n in counts.items() if v in learnt)
        if recoded_said("", spec, c, values, known, new[:2]) is None and (
            said := mix_said("the current window", spec, c, shares, sessions, counts, carriers)
        ):
            found.append({"check": "mix", "field": c, "value": None, "threshold": None, "message": said})
    return found


def monitor(
    artifact: str | Path,
    current: Any,
    reference: Any = None,
    labels: Any = None,
    thresholds: Mapping[str, float] | None = None,
    *,
    out: str | Path | None = None,
    fmt: str = "torchscript",
    history: Callable[[Spec], History | None] = lambda spec: None,
    labels_as_of: str | None = None,
) -> dict[str, Any]:
    """Compare ``current`` raw events with ``reference`` (raw events; default: the run's train dataset).

    ``current``/``reference``: a Parquet/CSV path (file, directory or glob) or a frame in the training column
    names. ``labels``: a label table (path or frame) for the current window; by default the events' label
    column if they have one; ``labels_as_of`` (an ISO datetime, naive meaning UTC): when that table was pulled,
    which settles a model's label delay (:func:`~seqfraud.monitoring.inputs.matched_labels`) instead of the
    window's last event. Returns the report dict; with ``out`` also writes :data:`OUTPUT_FILES` there.

    An artifact with entity features reads the current events against ``history(spec)`` (other sessions'
    events and labels, as in scoring), and takes its reference from the run's train dataset only, whose entity
    features training computed: raw reference events would need a history of their own.
    """
    with kept_warnings() as said:
        report, hist = _report(artifact, current, reference, labels, thresholds, fmt, history, labels_as_of)
    # What reading the windows logged, in the report too: ids that lost their zeros, a column null in every row or
    # a case changed were on stderr alone (dogfood 266).
    report["notes"] += [line for line in dict.fromkeys(said) if line not in report["notes"]]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "monitor.json").write_text(json.dumps(report, indent=2, default=float))
        reports.monitor_png(report, hist, out / "monitor.png")
        (out / "monitor.html").write_text(reports.monitor_html(report, out / "monitor.png"))
    return report


class _Kept(logging.Handler):
    """Warnings' lines, kept."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def kept_warnings() -> Iterator[list[str]]:
    """The warnings seqfraud logs meanwhile, as they read (they are logged as ever)."""
    kept, logger = _Kept(), logging.getLogger("seqfraud")
    logger.addHandler(kept)
    try:
        yield kept.lines
    finally:
        logger.removeHandler(kept)


def _report(
    artifact: str | Path,
    current: Any,
    reference: Any,
    labels: Any,
    thresholds: Mapping[str, float] | None,
    fmt: str,
    history: Callable[[Spec], History | None],
    labels_as_of: str | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`monitor`'s report, and the counts per bin its plot draws."""
    t = check_thresholds(thresholds)
    as_of_us = None
    if labels_as_of is not None:
        try:
            as_of_us = to_epoch_us(labels_as_of)
        except ValueError as e:
            raise MonitorError(f"labels_as_of: {e}") from None
        if labels is None:
            raise MonitorError("labels_as_of says when a label table was pulled: give the table (--labels)")
    scorer = Scorer.load(artifact, fmt=fmt)
    scorer.history = require_history(scorer.spec, history(scorer.spec))
    spec = scorer.spec
    if scorer.history is not None and reference is not None:
        raise MonitorError(
            "an artifact with entity features is monitored against its run's train dataset: leave the "
            "reference unset (raw reference events would need a history of their own)"
        )
    cur, cur_lf = raw_window(scorer, current, "current")
    ref = (
        default_reference(scorer, artifact)
        if reference is None
        else raw_window(scorer, reference, "reference")[0]
    )
    label_table = current_labels(labels, cur_lf, spec, as_of_us)
    assert cur.events is not None  # a raw window
    shared = None if ref.events is None else overlap(ref.events, cur.events)
    if shared is not None:
        span = (
            f"sessions starting in both from {shared['from']} to {shared['to']}; " if shared["from"] else ""
        )
        log.warning(
            "the reference and the current window overlap (%s%d session(s) in both): drift compares that traffic "
            "with itself, and reads less of it than there is; take a reference period before the current one",
            span,
            shared["sessions_in_both"],
        )
    # The run's operating point, recorded at export; artifacts from before that used 1% FPR.
    fpr = float((scorer.manifest.get("metrics_config") or {}).get("fpr", DEFAULT_FPR))
    test = (scorer.manifest.get("metrics") or {}).get("test") or {}
    test_pr_auc = test.get("pr_auc")
    test_share = (
        test["positives"] / test["n"] if test.get("n") and test.get("positives") is not None else None
    )

    fields = field_stats(spec, ref.seqs, cur.seqs)
    unknown_ref = entity_ref = None
    in_run: dict[str, int] = {}
    if reference is None:
        # The vocabulary was fitted on the training period, where each of its values occurs by construction: a
        # later period of the same traffic meets more unknown values. The validation period is the fair reference,
        # of a categorical's PSI too (dogfood 196: a zip code's PSI of 1.06 on the log's own test period, from the
        # unknown bin alone; against validation, no alert).
        unknown_ref = default_reference(scorer, artifact, "val")
        for f, stats in field_stats(spec, unknown_ref.seqs, cur.seqs, list(spec.vocab)).items():
            fields[f] |= {k: stats[k] for k in ("psi", "unknown_rate", "missing_rate", "top_moves")}
        in_run = run_sessions(cur, spec, train=ref, val=unknown_ref)
        if spec.entity is not None:  # against the training and validation periods, each after its warm-up
            entity_ref = joined(ref, unknown_ref)
            assert entity_ref.starts is not None  # tokenized datasets
            fields |= entity_field_stats(spec, entity_ref.seqs, entity_ref.starts, cur.seqs)
    ref_scores, ref_scores_from = reference_scores(scorer, ref, artifact)  # served scores, calibrated
    cur_scored = scorer.score_sequences(cur.seqs, cur.events)
    outside = 0
    pending: dict[str, Any] = {}
    if label_table is not None and labels is not None:
        source = str(labels) if isinstance(labels, (str, Path)) else "labels"
        label_table, outside, pending = matched_labels(label_table, cur.events, source, spec, as_of_us)
    cur_scores = cur_scored[S.SCORE].to_numpy()
    bins = np.asarray(SCORE_BINS)
    len_bins = length_edges(spec)
    hist = {  # reference and current counts per bin
        "score": (np.histogram(ref_scores, bins)[0], np.histogram(cur_scores, bins)[0]),
        "session_length": (
            np.histogram(ref.seqs.lengths, len_bins)[0],
            np.histogram(cur.seqs.lengths, len_bins)[0],
        ),
        S.TIME_DELTA: (
            token_counts(spec, ref.seqs, S.TIME_DELTA)[1:],
            token_counts(spec, cur.seqs, S.TIME_DELTA)[1:],
        ),
    }
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "artifact": str(artifact),
        "model_version": scorer.model_version,
        "reference": {
            "source": ref.source,
            "sessions": len(ref.seqs),
            "events": int(ref.seqs.lengths.sum()),
            "overlaps_current": shared,
        },
        "current": {
            "source": cur.source,
            "sessions": len(cur.seqs),
            "events": int(cur.seqs.lengths.sum()),
            "run_sessions": in_run,  # sessions of the run's own train and val splits, by split
        },
        "unknown_rate_reference": None if unknown_ref is None else unknown_ref.source,
        "entity_reference": None
        if entity_ref is None
        else {
            "source": entity_ref.source,
            "sessions": len(entity_ref.seqs),
            "events": int(entity_ref.seqs.lengths.sum()),
        },
        "thresholds": t,
        "fields": fields,
        "new_categories": new_categories(cur.events, spec),
        # Each entity column's share of events without a value, each session weighing one
        # (EntitySpec.presence_feature).
        "entity_null_rate": {}
        if spec.entity is None
        else {c: fields[spec.entity.presence_feature(c)]["missing_rate"] for c in spec.entity.columns},
        "session_length": {
            "psi": psi(hist["session_length"][0], hist["session_length"][1]),
            "bins": len_bins[:-1].astype(int).tolist(),
            "reference": length_summary(ref.seqs.lengths, spec),
            "current": length_summary(cur.seqs.lengths, spec),
        },
        "inter_event_seconds": {
            "psi": fields[S.TIME_DELTA]["psi"],
            "reference": quantiles(ref.deltas_s),
            "current": quantiles(cur.deltas_s),
        },
        "score": {
            "psi": psi(hist["score"][0], hist["score"][1]),
            "bins": list(SCORE_BINS),
            "reference": quantiles(ref_scores),
            "reference_source": ref_scores_from,
            "current": quantiles(cur_scores),
            "current_bands": dict(cur_scored[S.BAND].value_counts().iter_rows()),
        },
        "performance": performance(cur_scored, label_table, fpr, test_pr_auc, outside, test_share),
    }
    if report["performance"] is not None:
        report["performance"] |= pending
    report["alerts"], report["warnings"] = alerts(report, t)
    report["notes"] = notes(report, t)
    # Whole sessions' events, as batch scoring counts them: the kept window's would read a session longer than
    # max_len - hop as cut (review 207).
    lengths = cur.events.group_by(S.SESSION_ID).len()["len"]
    short = int((lengths < spec.shortest_trained).sum())
    if cut := cut_sessions_said("the current window", spec, short, len(cur.seqs)):
        report["notes"].append(cut)
    long = int((lengths > spec.longest_trained).sum())
    if merged := merged_sessions_said("the current window", spec, long, len(cur.seqs)):
        report["notes"].append(merged)
    kind = spec.schema.event_type
    known = int(cur.events[kind].cast(pl.String).is_in(spec.vocab[kind]).sum())
    recoded = recoded_said("", spec, kind, cur.events.height, known, []) is not None
    if (openers := spec.opening_shares) is not None:  # and by their first event
        firsts = unopened_types(cur.events.lazy(), S.SESSION_ID, kind, S.TS_US, openers).collect()
        if said := unopened_said(
            "the current window", spec, dict(firsts.iter_rows()), len(cur.seqs), recoded
        ):
            report["notes"].append(said)
    # And by what follows each event type (two types swapped: dogfood 241), against the reference's, or training's
    # where the reference holds too few of a type's events (review 246: a small reference said nothing); an alert,
    # as --fail-on-alert must stop on it (dogfood 270: two types swapped, 62 of 1,500 bands moved, exited 0).
    follows = reference_transitions(spec, scorer.manifest) | transition_shares(
        event_transitions(ref.seqs, spec), spec.vocab_size(kind)
    )
    if not recoded and (
        said := transitions_said(
            "the current window",
            spec,
            follows,
            event_transitions(cur.seqs, spec),
            len(cur.seqs),
            "the reference",
            ends=cut is None,
            unknown=cur.events.select(unlearnt_types(spec)).item().to_list(),
        )
    ):
        report["alerts"].append(
            {"check": "transitions", "field": kind, "value": None, "threshold": None, "message": said}
        )
    report["alerts"] += scale_alerts(spec, scorer.manifest, cur.events, len(cur.seqs))
    report["alerts"] += mix_alerts(spec, scorer.manifest, cur_lf, len(cur.seqs))
    return report, hist
