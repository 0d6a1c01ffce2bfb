"""Drift monitoring: the late window with the gift-card fraud variant alerts, an early window does not."""

from __future__ import annotations

import json
import math
import shutil
from datetime import timedelta
from pathlib import Path
from typing import cast

import numpy as np
import polars as pl
import pytest
from omegaconf import OmegaConf

from seqfraud import schema as S
from seqfraud.cli.monitor import main
from seqfraud.data import synthetic
from seqfraud.data.events import DataValidationError
from seqfraud.monitoring import REPORT_VERSION, MonitorError, check_thresholds, monitor, psi

EVENT_TYPE = S.SYNTHETIC.event_type


@pytest.fixture(scope="module")
def windows() -> dict[str, pl.DataFrame]:
    """Raw event windows of a fresh synthetic log (same calendar as the smoke run), split by session start."""
    data = synthetic.generate(4000, seed=11)
    return synthetic.drift_windows(data, synthetic.late_period_start()) | {"labels": data.labels}


@pytest.fixture(scope="module")
def reports(exported_artifact, windows, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("monitor")
    return {
        name: monitor(
            exported_artifact,
            windows[name],
            reference=windows["reference"],
            labels=windows["labels"],
            out=out / name,
        )
        | {"_out": out / name}
        for name in ("early", "late")
    }


def _unknown_alerts(report: dict) -> list[dict]:
    return [a for a in report["alerts"] if a["check"] == "unknown_rate_increase" and a["field"] == EVENT_TYPE]


def test_psi_literal():
    assert psi([1, 1], [1, 1]) == 0.0
    assert psi([50, 50], [90, 10]) == pytest.approx(0.4 * math.log(1.8) + 0.4 * math.log(5), rel=1e-9)
    assert math.isfinite(psi([10, 0], [0, 10]))  # empty bins get an epsilon share


def test_late_window_alerts_on_unknown_event_types_early_does_not(reports):
    early, late = reports["early"], reports["late"]
    assert not _unknown_alerts(early)
    [alert] = _unknown_alerts(late)
    unknown = late["fields"][EVENT_TYPE]["unknown_rate"]
    assert unknown["current"] > unknown["reference"] + alert["threshold"]
    assert alert["value"] == pytest.approx(unknown["current"] - unknown["reference"])
    # The unknown token is among the largest moves: nothing it outmoves is left out of top_moves.
    moves = late["fields"][EVENT_TYPE]["top_moves"]
    unknown_move = unknown["current"] - unknown["reference"]
    assert any(m["token"] == "<unknown>" for m in moves) or all(
        abs(m["current"] - m["reference"]) >= unknown_move for m in moves
    )
    assert late["fields"][EVENT_TYPE]["psi"] > early["fields"][EVENT_TYPE]["psi"]


def test_a_window_of_the_runs_own_sessions_is_said_to_read_in_sample(exported_artifact, trained_run):
    """A training month monitored after the retrain that read it reported PR-AUC 0.944 against the test's 0.841, as
    no drop, unsaid (dogfood 201): its sessions of the run's train and val splits are counted and a note says so."""
    from omegaconf import OmegaConf

    events = pl.read_parquet(OmegaConf.load(trained_run / "config.yaml").data.events)
    seen = {
        split: pl.read_parquet(trained_run / "predictions" / f"{split}.parquet")[S.SESSION_ID].head(30)
        for split in ("val", "test")
    }
    window = events.filter(pl.col("session_id").is_in(pl.concat(seen.values()).implode()))
    report = monitor(exported_artifact, window)
    assert report["current"]["run_sessions"] == {"val": 30}
    assert "30 validation session(s) of the run are in the current window (60 sessions)" in report["notes"][0]
    # The same ids on sessions of a later month (a counter reset, ids per day) are not the run's (dogfood 237).
    later = window.with_columns(pl.col(S.SYNTHETIC.timestamp) + timedelta(days=365))
    report = monitor(exported_artifact, later)
    assert report["current"]["run_sessions"] == {} and not any("in sample" in n for n in report["notes"])


def test_a_review_queues_pending_rows_are_unlabelled_sessions(exported_artifact, tmp_path):
    """A label table whose pending rows have a null label: read by training under on_unlabeled=drop, and refused
    by the monitor and a history (review 205): they are sessions not labelled yet there too."""
    from seqfraud.features.spec import Spec
    from seqfraud.monitoring.inputs import current_labels

    spec = Spec.load(exported_artifact / "spec.json")
    table = pl.DataFrame({"session_id": ["a", "b", "c"], "label": [1, None, 0]})
    table.write_parquet(tmp_path / "queue.parquet")
    read = current_labels(str(tmp_path / "queue.parquet"), pl.LazyFrame(), spec)
    assert read is not None and sorted(read[S.SESSION_ID].to_list()) == ["a", "c"]


def test_a_windows_doubled_rows_are_said_as_scoring_says_them(exported_artifact, windows, tmp_path, caplog):
    """A day's 357 rows written twice moved scores by up to 0.96: batch scoring said so, the monitor did not
    (dogfood 206)."""
    late = windows["late"]
    real = (
        late.height - late.select(pl.struct(S.SYNTHETIC.event_columns).hash(0).n_unique()).item()
    )  # a bot's
    pl.concat([late, late.head(7)]).write_parquet(tmp_path / "doubled.parquet")
    with caplog.at_level("WARNING", logger="seqfraud.data.events"):
        monitor(exported_artifact, str(tmp_path / "doubled.parquet"), reference=windows["reference"])
    assert f"{real + 7} event row(s) repeat another row of their session in every column" in caplog.text
    assert "have the time of an earlier event of" not in caplog.text
    # Times written to the hour tie far more often than training's did, and their order is the rows' (dogfood 230).
    hours = late.with_columns(pl.col(S.SYNTHETIC.timestamp).dt.truncate("1h"))
    tied = hours.select(
        pl.struct(S.SYNTHETIC.event_columns).n_unique()
        - pl.struct(S.SYNTHETIC.session_id, S.SYNTHETIC.timestamp).n_unique()
    )
    hours.write_parquet(tmp_path / "hours.parquet")
    with caplog.at_level("WARNING", logger="seqfraud.monitoring.inputs"):
        monitor(exported_artifact, str(tmp_path / "hours.parquet"), reference=windows["reference"])
    assert f"hours.parquet: {tied.item():,} of its {late.height:,} events" in caplog.text
    # Its columns are checked first: a window without one was "the data cannot be read" (review 208).
    late.drop("country").write_parquet(tmp_path / "short.parquet")
    with pytest.raises(DataValidationError, match="missing column"):
        monitor(exported_artifact, str(tmp_path / "short.parquet"), reference=windows["reference"])


def test_two_event_types_swapped_are_alerted_by_what_follows_them(exported_artifact, windows):
    """Two event types swapped upstream kept every share the monitor read: 0 alerts, PR-AUC 0.79 to 0.59 (dogfood
    241). What follows each event type is compared with the reference's, as batch scoring compares it, and alerted
    (dogfood 270: a note, and --fail-on-alert exited 0)."""

    early = windows["early"]
    swapped = pl.col(EVENT_TYPE).replace(
        {"checkout_start": "payment_attempt", "payment_attempt": "checkout_start"}
    )
    for name, window in (("clean", early), ("swapped", early.with_columns(swapped))):
        alerts = monitor(exported_artifact, window, reference=windows["reference"])["alerts"]
        said = [a["message"] for a in alerts if a["check"] == "transitions"]
        assert len(said) == (name == "swapped"), name
    assert said[0].startswith("the current window: what comes after its ")
    assert "falls far otherwise than after the reference's" in said[0]
    # A reference of 40 sessions holds too few of each type's events: training's record stands in (review 246).
    sid = pl.col(S.SYNTHETIC.session_id)
    small = windows["reference"].filter(
        sid.is_in(windows["reference"][S.SYNTHETIC.session_id].unique().sort()[:40].implode())
    )
    alerts = monitor(exported_artifact, early.with_columns(swapped), reference=small)["alerts"]
    assert [a for a in alerts if a["check"] == "transitions"]


def test_an_event_type_gone_is_alerted_by_name_as_scoring_says_it(exported_artifact, windows):
    """An event type on 3% of training's events, gone from a window, read as a PSI warning that named no value,
    where batch scoring named it (dogfood 278): the window's categoricals are judged as scoring judges a file's."""
    early = windows["early"]
    gone = early.filter(pl.col(EVENT_TYPE) != "add_to_wishlist")
    for name, window in (("clean", early), ("gone", gone)):
        report = monitor(exported_artifact, window, reference=windows["reference"])
        said = [a for a in report["alerts"] if a["check"] == "mix"]
        assert len(said) == (name == "gone"), (name, report["alerts"])
    assert said[0]["field"] == EVENT_TYPE and (said[0]["value"], said[0]["threshold"]) == (None, None)
    assert said[0]["message"].startswith(
        f"the current window: column {EVENT_TYPE!r}: 'add_to_wishlist' is 0.0% of its learnt values against "
    )


def test_a_number_in_another_unit_on_part_of_the_traffic_is_alerted_as_scoring_says_it(
    exported_artifact, windows
):
    """Part of the amounts in another unit alerted at most as a PSI, never as a unit change (dogfood 255): the
    window's numbers are judged as batch scoring judges a file's, and alerted, so that --fail-on-alert stops on it
    (dogfood 263: said as a note, the run exited 0)."""
    import json

    early = windows["early"]
    top = json.loads((exported_artifact / "spec.json").read_text())["edges"]["amount"][-1]
    cents = (
        pl.when(pl.int_range(pl.len()) % 5 == 0)
        .then(pl.col("amount") * 100 + top)
        .otherwise(pl.col("amount"))
    )
    for name, window in (("clean", early), ("cents", early.with_columns(cents.alias("amount")))):
        report = monitor(exported_artifact, window, reference=windows["reference"])
        said = [a for a in report["alerts"] if a["check"] == "scale"]
        assert len(said) == (name == "cents"), (name, report["alerts"])
        assert not [n for n in report["notes"] if "lie above the highest value its buckets tell apart" in n]
    assert said[0]["field"] == "amount" and (said[0]["value"], said[0]["threshold"]) == (None, None)
    assert said[0]["message"].startswith("the current window: column 'amount': ")
    assert "lie above the highest value its buckets tell apart" in said[0]["message"]


def test_what_reading_a_window_warns_is_in_the_report(exported_artifact, windows, tmp_path, caplog):
    """Ids that lost their zeros, a column null in every row, a case changed: said on stderr alone, not in
    monitor.json, and --fail-on-alert exited 0 (dogfood 266). Every warning the run logs is a note too."""
    import re

    early = windows["early"]
    repeats = {}
    for name, window in (("early", early), ("doubled", pl.concat([early, early.head(40)]))):  # 40 rows twice
        path = tmp_path / f"{name}.parquet"
        window.write_parquet(path)
        caplog.clear()
        with caplog.at_level("WARNING"):
            notes = monitor(exported_artifact, str(path), reference=windows["reference"])["notes"]
        (said,) = [
            n for n in notes if "event row(s) repeat another row of their session in every column" in n
        ]
        assert said in caplog.text and said.startswith(str(path)), notes
        repeats[name] = int(re.search(r"([\d,]+) event row\(s\) repeat", said)[1].replace(",", ""))
    assert repeats["doubled"] == repeats["early"] + 40


def test_report_sections_and_files(reports):
    late = reports["late"]
    for key in (
        "fields",
        "session_length",
        "inter_event_seconds",
        "score",
        "performance",
        "alerts",
        "warnings",
    ):
        assert key in late
    assert set(late["fields"]) == {*S.SYNTHETIC.categorical_fields, *S.SYNTHETIC.numerical, S.TIME_DELTA}
    assert late["inter_event_seconds"]["reference"]["p50"] > 0
    assert late["performance"]["n"] == late["current"]["sessions"]
    assert 0.0 <= late["performance"]["roc_auc"] <= 1.0
    out = late["_out"]
    written = json.loads((out / "monitor.json").read_text())
    assert written["alerts"] == late["alerts"]
    # Its shape, which REPORT_VERSION names for a pipeline reading the file (dogfood 132): a key renamed, added or
    # retyped fails here until the version is raised with it (review 134).
    assert (written["version"], REPORT_VERSION) == (5, 5)
    assert sorted(written) == [
        "alerts", "artifact", "current", "entity_null_rate", "entity_reference", "fields", "inter_event_seconds",
        "model_version", "new_categories", "notes", "performance", "reference", "score", "session_length",
        "thresholds", "unknown_rate_reference", "version", "warnings",
    ]  # fmt: skip
    assert "longest_window_share" in written["session_length"]["current"]
    assert sorted(written["new_categories"][S.SYNTHETIC.event_type]) == [
        "capped", "count", "left_out_max_share", "present_events", "values",
    ]  # fmt: skip
    page = (out / "monitor.html").read_text()
    assert "data:image/png;base64," in page and "unknown_rate_increase" in page


def test_a_reference_that_overlaps_the_current_window_is_said(exported_artifact, windows, reports, caplog):
    """A reference equal to the current window, or holding it, hid its drift unsaid (dogfood 120); windows split
    by session start, as the split is, do not overlap even where a session runs on past the boundary."""
    assert reports["early"]["reference"]["overlaps_current"] is None
    both = pl.concat([windows["reference"], windows["early"]])
    with caplog.at_level("WARNING", logger="seqfraud.monitoring"):
        report = monitor(exported_artifact, windows["early"], reference=both)
    shared = report["reference"]["overlaps_current"]
    assert shared["sessions_in_both"] == windows["early"]["session_id"].n_unique()
    assert (
        "the reference and the current window overlap" in caplog.text
        and f"; {shared['sessions_in_both']} session(s) in both)" in caplog.text
    )
    # Cut by event time, not session start: the sessions that run across the cut are in both (review 122).
    ts = S.SYNTHETIC.timestamp
    events = windows["early"].sort(ts)
    cut = events[ts][events.height // 2]
    report = monitor(
        exported_artifact, events.filter(pl.col(ts) >= cut), reference=events.filter(pl.col(ts) < cut)
    )
    assert report["reference"]["overlaps_current"]["sessions_in_both"] > 0


def test_a_score_reference_of_labelled_sessions_alone_is_said(
    exported_artifact, windows, monkeypatch, caplog, tmp_path
):
    """Validation predictions without the unlabelled sessions (labels that sample traffic unevenly) made the
    score read as drifting, unsaid (dogfood 120)."""
    from seqfraud import rundir

    (tmp_path / rundir.REPORT_FILE).write_text(json.dumps({"unlabeled_val_sessions_dropped": 7}))
    assert (
        rundir.unlabelled_val_dropped(tmp_path) == 7 and rundir.unlabelled_val_dropped(tmp_path / "none") == 0
    )
    monkeypatch.setattr(rundir, "unlabelled_val_dropped", lambda run_dir: 7)
    with caplog.at_level("WARNING", logger="seqfraud.monitoring.inputs"):
        report = monitor(exported_artifact, windows["late"])
    assert report["score"]["reference_source"].endswith(
        "(the labelled sessions alone: 7 unlabelled left out)"
    )
    assert "validation sessions; 7 unlabelled ones were left out of them" in caplog.text


def test_default_reference_is_the_runs_train_dataset(exported_artifact, windows):
    report = monitor(exported_artifact, windows["late"])
    assert report["reference"]["source"].endswith("data/train")
    assert report["current"]["run_sessions"] == {} and not any("in sample" in n for n in report["notes"])
    assert report["inter_event_seconds"]["reference"] is None  # tokens only: PSI of the buckets, no seconds
    # Its scores are the run's validation predictions, calibrated: the training sessions were scored in sample.
    from seqfraud.monitoring.statistics import quantiles
    from seqfraud.scoring.scorer import Scorer

    scores = report["score"]
    assert scores["reference_source"].endswith("predictions/val.parquet")
    val = pl.read_parquet(scores["reference_source"])[S.SCORE].to_numpy().astype(np.float32)
    assert scores["reference"] == pytest.approx(quantiles(Scorer.load(exported_artifact).calibrate(val)))
    assert report["performance"] is None  # no labels given, none on the events
    # Unknown rates against the validation period: the vocabulary's own training period holds each of its values
    # by construction. The late variant's new event types were there already; its new countries were not.
    assert report["unknown_rate_reference"].endswith("data/val")
    unknown = {a["field"] for a in report["alerts"] if a["check"] == "unknown_rate_increase"}
    assert "country" in unknown and EVENT_TYPE not in unknown
    # A categorical's PSI too, whose unknown bin the training period keeps small by construction (dogfood 196: a
    # zip code's PSI of 1.06 on the log's own test period); a number's stays against training.
    from seqfraud.monitoring.inputs import default_reference, raw_window
    from seqfraud.monitoring.statistics import field_stats

    scorer = Scorer.load(exported_artifact)
    current = raw_window(scorer, windows["late"], "current")[0].seqs
    by_val = field_stats(scorer.spec, default_reference(scorer, exported_artifact, "val").seqs, current)
    by_train = field_stats(scorer.spec, default_reference(scorer, exported_artifact).seqs, current)
    for f, stats in report["fields"].items():
        if f in by_val:
            expected = by_val if f in scorer.spec.vocab else by_train
            assert stats["psi"] == pytest.approx(expected[f]["psi"]), f
    assert any(by_val[f]["psi"] != by_train[f]["psi"] for f in scorer.spec.vocab)


def test_cli_exit_codes(exported_artifact, windows, tmp_path, capsys):
    late = tmp_path / "late.parquet"
    windows["late"].write_parquet(late)
    ref = tmp_path / "ref.csv"
    windows["reference"].write_csv(ref)
    args = ["--artifact", str(exported_artifact), "--current", str(late), "--reference", str(ref)]
    assert main([*args, "--out", str(tmp_path / "a"), "--fail-on-alert"]) == 1
    out = capsys.readouterr().out
    assert "ALERT unknown_rate_increase event_type" in out
    # A new category's line names it and its unit, as the report does.
    report = json.loads((tmp_path / "a" / "monitor.json").read_text())
    new = next(a for a in report["alerts"] if a["check"] == "new_category")
    assert f"ALERT new_category {new['field']}: {new['category']!r} in {new['value']:,} sessions" in out
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    # Thresholds no window can reach: nothing to alert on.
    high = [
        f"--threshold={k}=1e9"
        for k in (
            "psi_warn",
            "psi_alert",
            "unknown_rate_alert",
            "score_psi_alert",
            "new_category_sessions",
            "performance_drop",
        )
    ]
    assert main([*args, "--out", str(tmp_path / "c"), "--fail-on-alert", *high]) == 0


def test_cli_bad_inputs(exported_artifact, windows, tmp_path, capsys):
    def stderr_of_failing(*argv: str) -> str:
        with pytest.raises(SystemExit) as exit_:  # bad input and usage errors exit 2 (1 means "alert")
            main(list(argv))
        assert exit_.value.code == 2
        return capsys.readouterr().err

    base = ["--artifact", str(exported_artifact), "--out", str(tmp_path / "o")]
    assert "nope.parquet" in stderr_of_failing(*base, "--current", str(tmp_path / "nope.parquet"))
    bad = tmp_path / "bad.parquet"
    windows["late"].drop(EVENT_TYPE).write_parquet(bad)
    assert EVENT_TYPE in stderr_of_failing(*base, "--current", str(bad))
    assert "psi_max" in stderr_of_failing(*base, "--current", str(bad), "--threshold", "psi_max=1")
    assert "NAME=NUMBER" in stderr_of_failing(*base, "--current", str(bad), "--threshold", "psi_alert")
    assert "not an artifact" in stderr_of_failing("--artifact", str(tmp_path), "--current", str(bad))
    late = tmp_path / "late.parquet"
    windows["late"].write_parquet(late)
    said = stderr_of_failing(*base, "--current", str(late), "--labels-as-of", "June")
    assert "labels_as_of: 'June' is not an ISO 8601 date" in said
    assert "give the table (--labels)" in stderr_of_failing(
        *base, "--current", str(late), "--labels-as-of", "2030-01-01"
    )


def test_errors_without_any_reference(exported_artifact, windows, tmp_path):
    copy = Path(shutil.copytree(exported_artifact, tmp_path / "artifact"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["source"]  # the manifest does not hash itself: the files still verify
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MonitorError, match="--reference"):
        monitor(copy, windows["late"])
    with pytest.raises(MonitorError, match="psi_warn"):
        check_thresholds({"psi_warn": 0.5, "psi_alert": 0.2})
    # NaN compared false and switched its alert off (dogfood 210: --fail-on-alert exited 0 on a PR-AUC of 0.116).
    for given, says in (
        ({"performance_drop": float("nan")}, "finite and at least 0"),
        ({"psi_alert": float("inf")}, "finite and at least 0"),
        ({"new_category_sessions": -1}, "finite and at least 0"),
        ({"capped_p": 7}, "capped_p is a probability"),
    ):
        with pytest.raises(MonitorError, match=says):
            check_thresholds(given)
    with pytest.raises(DataValidationError, match="no events"):
        monitor(exported_artifact, windows["late"].head(0), reference=windows["reference"])


def test_new_categories_are_listed_from_raw_values_and_alert_by_sessions(reports, windows, exported_artifact):
    """Brand-new event types are news even when their unknown-token share stays under its threshold."""
    late, early = reports["late"], reports["early"]
    s = S.SYNTHETIC
    new = late["new_categories"][EVENT_TYPE]["values"]
    assert new and EVENT_TYPE not in early["new_categories"]
    assert (
        late["new_categories"][EVENT_TYPE]["count"] == len(new)
        and late["new_categories"][EVENT_TYPE]["capped"] == 0
    )
    events = windows["late"]
    for v in new:
        rows = events.filter(pl.col(EVENT_TYPE) == v["value"])
        assert v["events"] == rows.height and v["sessions"] == rows[s.session_id].n_unique()
        assert set(v["example_sessions"]) <= set(rows[s.session_id].to_list()) and v["example_sessions"]
    # Countries may be new too (they cluster by account); this test is about the new event types.
    alerted = {
        a["category"]: a for a in late["alerts"] if a["check"] == "new_category" and a["field"] == EVENT_TYPE
    }
    assert set(alerted) == {v["value"] for v in new if v["sessions"] >= 5}
    assert alerted and all(a["field"] == EVENT_TYPE and a["threshold"] == 5 for a in alerted.values())
    quiet = monitor(
        exported_artifact,
        events,
        reference=windows["reference"],
        thresholds={
            "unknown_rate_alert": 1.0,
            "new_category_sessions": max(alerted.values(), key=lambda a: a["value"])["value"],
        },
    )
    assert not _unknown_alerts(quiet)
    assert [
        a["category"] for a in quiet["alerts"] if a["check"] == "new_category" and a["field"] == EVENT_TYPE
    ] == [max(alerted.values(), key=lambda a: a["value"])["category"]]
    assert "Categories the model never learned" in (reports["late"]["_out"] / "monitor.html").read_text()


def test_outside_a_capped_vocabulary_only_values_more_frequent_than_those_left_out_alert() -> None:
    """A dogfood log's 20,000 item ids, capped at 1,000 tokens, raised 18,645 new_category alerts on its own
    training window: outside a capped vocabulary a value may be one the cap left out. There a value alerts only
    when too frequent for the most frequent left-out value (a brand-new one in volume still does); values
    are listed (the first 100, all counted) and a note says the rule; an uncapped field alerts as before."""
    from seqfraud.features.spec import Spec
    from seqfraud.monitoring.alerts import alerts, beyond, notes
    from seqfraud.monitoring.statistics import NEW_CATEGORIES_LISTED, new_categories
    from seqfraud.schema import Schema

    values = [f"v{i:03d}" for i in range(150)]
    events = pl.DataFrame(
        {
            S.SESSION_ID: [f"s{j}" for _ in values for j in range(6)] + [f"n{j % 8}" for j in range(40)],
            "event_type": [v for v in values for _ in range(6)] + ["brand_new"] * 40,
        }
    )
    t = check_thresholds(None)
    for capped in (0, 19_000):
        spec = Spec(
            schema=Schema(),
            timestamp_unit="us",
            max_len=4,
            vocab={"event_type": ["pay"]},
            edges={},
            fit_info={
                "values_over_max_vocab": {"event_type": capped},
                "left_out_max_share": {"event_type": 0.01},
            },
        )
        report = {
            "current": {"sessions": 1_000},
            "fields": {},
            "new_categories": new_categories(events, spec),
            "session_length": {"psi": 0.0},
            "score": {"psi": 0.0},
            "performance": None,
        }
        new = report["new_categories"]["event_type"]
        assert (new["count"], len(new["values"]), new["capped"], new["present_events"]) == (
            151,
            NEW_CATEGORIES_LISTED,
            capped,
            940,
        )
        found, _ = alerts(report, t)
        # Capped: 6 events of 940 are fewer than the 9.4 a left-out value of 1% would have; the new value's 40
        # are too many for one (a Poisson tail under 1e-6).
        alerted = [a["category"] for a in found]
        assert alerted == (["brand_new"] if capped else [v["value"] for v in new["values"]])
        note = (
            "event_type: 151 value(s) outside the vocabulary, which max_vocab capped in training (19,000 frequent "
            "value(s) left out, the most frequent 1% of the field's values): a value is alerted on only where it "
            "is too frequent for one of those (Poisson tail under capped_p=1e-06)"
        )
        assert notes(report, t) == ([note] if capped else [])
    assert (
        beyond(40, 9.4, 1e-6)
        and not beyond(20, 9.4, 1e-6)
        and not beyond(9, 9.4, 1e-6)
        and beyond(1, 0.0, 1e-6)
    )


def test_operating_point_follows_the_runs_metrics_fpr(exported_artifact, trained_run, windows, tmp_path):
    manifest = json.loads((exported_artifact / "manifest.json").read_text())
    run_fpr = OmegaConf.load(trained_run / "config.yaml").metrics.fpr
    assert manifest["metrics_config"]["fpr"] == run_fpr
    copy = Path(shutil.copytree(exported_artifact, tmp_path / "artifact"))
    for fpr, expected in ((0.05, 0.05), (None, 0.01)):  # None: an artifact exported before metrics_config
        if fpr is None:
            del manifest["metrics_config"]
        else:
            manifest["metrics_config"] = {"fpr": fpr}
        (copy / "manifest.json").write_text(json.dumps(manifest))
        perf = monitor(copy, windows["early"], reference=windows["reference"], labels=windows["labels"])[
            "performance"
        ]
        assert perf["fpr"] == expected and f"recall_at_{expected:g}_fpr" in perf


def test_performance_drop_alerts_when_labels_show_it(exported_artifact, windows):
    s = S.SYNTHETIC
    flipped = windows["labels"].with_columns(1 - pl.col(s.label))  # a model that now ranks fraud last
    report = monitor(exported_artifact, windows["early"], reference=windows["reference"], labels=flipped)
    perf = report["performance"]
    [alert] = [a for a in report["alerts"] if a["check"] == "performance_drop"]
    assert (
        perf["reference_pr_auc"]
        == json.loads((exported_artifact / "manifest.json").read_text())["metrics"]["test"]["pr_auc"]
    )
    assert alert["value"] == pytest.approx(
        (perf["reference_pr_auc"] - perf["pr_auc"]) / perf["reference_pr_auc"]
    )
    assert alert["value"] >= 0.25
    never = monitor(
        exported_artifact,
        windows["early"],
        reference=windows["reference"],
        labels=flipped,
        thresholds={"performance_drop": 1.0},
    )
    assert not [a for a in never["alerts"] if a["check"] == "performance_drop"]


def test_default_reference_follows_the_runs_prepared_dir(exported_artifact, trained_run, windows, tmp_path):
    """A run trained with prepared_dir= has no data/ of its own: its config.yaml says where the data is."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"prepared_dir: {trained_run}\n")
    shutil.copytree(trained_run / "predictions", run / "predictions")  # what such a run writes of its own
    copy = Path(shutil.copytree(exported_artifact, tmp_path / "artifact"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["source"]["run_dir"] = str(run)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    report = monitor(copy, windows["late"].head(200))
    assert report["reference"]["source"] == str(trained_run / "data" / "train")


def test_performance_ranks_the_raw_scores_as_the_runs_test_metrics_did():
    """An isotonic calibration ties ranges of scores: the run's own test sessions read as a PR-AUC drop of 0.033
    (dogfood 136). The window's figures rank what the run's test PR-AUC ranked, the raw scores."""
    from seqfraud.monitoring.statistics import performance

    raw = np.linspace(0.01, 0.99, 40)
    labels = (raw > 0.8).astype(int)
    scores = pl.DataFrame(
        {S.SESSION_ID: [f"s{i}" for i in range(40)], S.RAW_SCORE: raw, S.SCORE: np.where(raw > 0.5, 0.3, 0.1)}
    )
    table = pl.DataFrame({S.SESSION_ID: scores[S.SESSION_ID], S.LABEL: labels})
    perf = performance(scores, table, 0.01, reference_pr_auc=1.0)
    assert perf is not None and perf["pr_auc"] == 1.0 and perf["pr_auc_drop"] == 0.0


def test_labelled_sessions_unlike_the_traffic_are_said():
    """Frauds' labels came in weeks and legitimate sessions' in months: the labelled fifth of a window was 15.4%
    fraud against the test's 3.6%, its PR-AUC 0.820 against 0.773 read as a gain, and a model's real 8% drop as
    a 5% gain, unsaid (dogfood 221). A fraud share among the labelled sessions off the test's by 2x or more is
    said where part of the window is unlabelled; one class alone known says why there is no PR-AUC."""
    from seqfraud.monitoring.alerts import DEFAULT_THRESHOLDS, notes
    from seqfraud.monitoring.statistics import performance

    raw = np.linspace(0.01, 0.99, 400)
    scores = pl.DataFrame({S.SESSION_ID: [f"s{i}" for i in range(400)], S.RAW_SCORE: raw, S.SCORE: raw})

    def said(labelled: int, frauds: int) -> list[str]:
        ids = scores[S.SESSION_ID][:labelled]
        table = pl.DataFrame({S.SESSION_ID: ids, S.LABEL: [int(i < frauds) for i in range(labelled)]})
        perf = performance(scores, table, 0.01, reference_pr_auc=0.5, reference_fraud_share=0.036)
        report = {"current": {"sessions": 1000}, "performance": perf, "new_categories": {}}
        return notes(report, DEFAULT_THRESHOLDS)

    skewed = (
        "the 200 labelled session(s) (50% of the window) are 15.0% fraud against 3.6% of the artifact's test"
    )
    assert any(n.startswith(skewed) for n in said(200, 30))
    assert not any("labelled session(s)" in n for n in said(400, 60))  # every session labelled: the truth
    assert not any("labelled session(s)" in n for n in said(200, 8))  # 4% against 3.6%
    # Nor what chance alone gives a few labels (review 225: a quarter of 50 labels missing at random said it).
    assert not any("labelled session(s)" in n for n in said(20, 3))
    assert (
        "the labels known hold fraud sessions alone (5): no PR-AUC until the other class's labels come"
        in said(5, 5)
    )


def test_psi_of_a_long_tail_groups_its_rare_values():
    """Per value, two samples of one 300-value long tail differ by chance alone past the alert threshold (a
    dogfood log's carrier field alerted at 0.93 on unchanged traffic); grouped into the most frequent values and
    the rest, they do not, and a rare value that becomes common still moves the PSI."""
    from seqfraud.features.drift import PSI_BINS, psi_bins
    from seqfraud.features.spec import FIRST_ID

    rng = np.random.default_rng(0)
    p = 1 / np.arange(1, 301)
    p /= p.sum()
    reserved = np.zeros(FIRST_ID, dtype=np.int64)
    ref = np.r_[reserved, rng.multinomial(3000, p)]
    cur = np.r_[reserved, rng.multinomial(600, p)]
    assert psi(ref[1:], cur[1:]) > 0.25
    bins = psi_bins(ref, cur)
    assert len(bins[0]) == FIRST_ID - 1 + PSI_BINS + 1 and psi(*bins) < 0.1
    grown = cur.copy()
    grown[FIRST_ID + 250] += 600  # a rare value becomes as common as all the others together
    assert psi(*psi_bins(ref, grown)) > 0.25


def test_labels_of_other_sessions_are_counted_and_a_table_matching_none_is_refused(
    exported_artifact, windows
):
    """A label table whose ids were read otherwise than the events' ('007' against '7') matched nothing and
    the window read as unlabelled, silently; it is refused as training refuses it, naming ids of both sides."""
    s = S.SYNTHETIC
    labels = windows["labels"].with_columns(pl.col(s.session_id).cast(pl.String))
    padded = labels.with_columns(pl.format("0{}", pl.col(s.session_id)).alias(s.session_id))
    with pytest.raises(DataValidationError, match=r"none with events in the current window: label ids \['0"):
        monitor(exported_artifact, windows["early"], reference=windows["reference"], labels=padded)
    early = windows["early"][s.session_id].cast(pl.String).unique()
    report = monitor(exported_artifact, windows["early"], reference=windows["reference"], labels=labels)
    perf = report["performance"]
    assert perf["labels_without_events"] == labels.height - early.len() > 0
    assert perf["n"] == early.len()


def test_labels_outside_the_window_whose_ids_lost_their_zeros_are_warned_of(exported_artifact, caplog):
    """A table of every label is normal, its other windows' labels left out; ids that meet a window session's
    written another way are misread ones: 346 of a window's labels were left out unsaid (dogfood 159); warned of,
    as they may be other windows' sessions (a real '1005' beside '001005': review 174), but refused where a fraud's
    meets a window session with no label of its own (dogfood 173: every fraud of a window lost, 0 positives, no
    alert; dogfood 200: 13 of 32 lost, a false performance drop)."""
    from seqfraud.features.spec import Spec
    from seqfraud.monitoring.inputs import matched_labels

    spec = Spec.load(exported_artifact / "spec.json")
    events = pl.DataFrame({S.SESSION_ID: ["001005", "001006", "002000"], S.TS_US: [1, 2, 3]})
    for ids, warned in ((["002000", "001005", "1005"], True), (["002000", "003000", "004000"], False)):
        caplog.clear()
        table = pl.DataFrame({S.SESSION_ID: ids, S.LABEL: pl.Series([0, 1, 1], dtype=pl.Int8)})
        got, outside, _ = matched_labels(table, events, "labels.csv", spec)
        assert got[S.SESSION_ID].sort().to_list() == sorted(set(ids) & {"001005", "002000"})
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        said = "1 of them match an event id written another way (first: '1005' for the event id '001005')"
        assert any(said in w and f"{outside} of 3 labelled session(s)" in w for w in warnings) == warned, (
            warnings
        )
    # A quiet window (no fraud of its own) whose '001005' has a label of its own: another window's '1005' is warned
    # of, not refused (review 176).
    quiet = pl.DataFrame(
        {S.SESSION_ID: ["002000", "001005", "1005"], S.LABEL: pl.Series([0, 0, 1], dtype=pl.Int8)}
    )
    caplog.clear()
    matched_labels(quiet, events, "labels.csv", spec)
    assert "1 of them match an event id written another way" in caplog.text
    table = pl.DataFrame(
        {S.SESSION_ID: ["002000", "003000", "1005"], S.LABEL: pl.Series([0, 1, 1], dtype=pl.Int8)}
    )
    with pytest.raises(DataValidationError) as e:
        matched_labels(table, events, "labels.csv", spec)
    assert (
        "labels.csv: column 'session_id': 1 fraud label(s) meet the current window's sessions that have no label of "
        "their own, by ids written another way; 1 of them match an event id written another way (first: '1005'"
    ) in str(e.value)
    # And where the window keeps frauds of its own: 13 of a window's 32 frauds lost their zeros in a spreadsheet,
    # and the monitor read PR-AUC 0.614 for 0.983 and a performance drop (dogfood 200).
    table = pl.DataFrame(
        {S.SESSION_ID: ["002000", "01006", "1005"], S.LABEL: pl.Series([1, 0, 1], dtype=pl.Int8)}
    )
    with pytest.raises(DataValidationError, match="give a label table of this window's sessions") as e:
        matched_labels(table, events, "labels.csv", spec)
    # The fraud named, not a legitimate label met alike ('01006' for '001006': review 205).
    assert "1 of them match an event id written another way (first: '1005' for the event id '001005')" in str(
        e.value
    )


def test_a_window_absent_from_a_frauds_only_table_is_legitimate_under_the_runs_policy(
    exported_artifact, windows
):
    """A model trained with data.policy.on_unlabeled=negative (a chargeback file of the frauds alone) reads the
    window's sessions the table leaves out as legitimate, as its training did, once their label delay has run by
    the window's last event (review 58: every one was, the latest frauds counted as misses); other models leave
    them out."""
    from seqfraud.features.spec import LABEL_DELAY, ON_UNLABELED, Spec
    from seqfraud.monitoring.inputs import matched_labels

    s = S.SYNTHETIC
    table = windows["labels"].select(
        pl.col(s.session_id).cast(pl.String).alias(S.SESSION_ID), pl.col(s.label).cast(pl.Int8).alias(S.LABEL)
    )
    events = windows["early"].select(
        pl.col(s.session_id).cast(pl.String).alias(S.SESSION_ID),
        pl.col(s.timestamp).dt.epoch("us").alias(S.TS_US),
    )
    window = events[S.SESSION_ID]
    frauds = table.filter(pl.col(S.LABEL) == 1)
    spec = Spec.load(exported_artifact / "spec.json")
    assert (
        matched_labels(frauds, events, "labels", spec)[0][S.LABEL].to_list()
        == [1] * frauds.filter(pl.col(S.SESSION_ID).is_in(window.implode())).height
    )
    spec.fit_info[ON_UNLABELED] = "negative"
    got = matched_labels(frauds, events, "labels", spec)[0].sort(S.SESSION_ID)
    want = table.filter(pl.col(S.SESSION_ID).is_in(window.implode())).sort(S.SESSION_ID)
    assert got.select(want.columns).equals(want) and 0 < got[S.LABEL].sum() < got.height
    # Today's window has no chargeback yet: a file of older frauds alone matches none of it, and the window
    # reads as legitimate (it stopped the monitor: dogfood 56).
    # Older sessions' ids, written as the window's are (ids of another form are refused: dogfood 65).
    older = frauds.with_columns(pl.format("s9{}", pl.col(S.SESSION_ID).str.slice(1)).alias(S.SESSION_ID))
    got = matched_labels(older, events, "labels", spec)[0]
    assert got.height == window.n_unique() and got[S.LABEL].sum() == 0
    # With a label delay, a session that ended within it of the window's last event may still get its chargeback.
    spec.fit_info[LABEL_DELAY] = "7d"
    ends = events.group_by(S.SESSION_ID).agg(pl.col(S.TS_US).max())
    settled = ends.filter(pl.col(S.TS_US) <= events[S.TS_US].max() - 7 * 86_400_000_000)[S.SESSION_ID]
    got, _, pending = matched_labels(frauds, events, "labels", spec)
    listed = frauds.filter(pl.col(S.SESSION_ID).is_in(window.implode()))[S.SESSION_ID]
    waiting = listed.filter(~listed.is_in(settled.implode())).len()
    assert 0 < settled.len() < window.n_unique()
    assert pending == {
        "sessions_within_label_delay": window.n_unique() - got.height,
        "frauds_within_label_delay": waiting,
        "label_delay": "7d",
        "labels_as_of": None,
    }
    # The report says so, where only a log line did (dogfood 61: a window all within the delay had no PR-AUC).
    from seqfraud.monitoring.alerts import notes

    report = {"current": {"sessions": 800}, "performance": {"n": 230, "positives": 30} | pending}
    (said,) = notes(report | {"new_categories": {}}, {"capped_p": 1e-6})
    assert said.startswith(
        f"{window.n_unique() - got.height:,} session(s) of the window ended within the label delay (7d) of the "
        f"window's last event, {waiting} of them listed as fraud already: their chargebacks may still come"
    )
    assert said.endswith("say when (--labels-as-of)")
    # A window none of whose sessions is settled has no PR-AUC to call rough, and --labels-as-of given is not
    # asked for (dogfood 102).
    late = pending | {"labels_as_of": "2026-03-25"}
    (said,) = notes(
        {"current": {"sessions": 800}, "performance": {"n": 0, "positives": 0} | late, "new_categories": {}},
        {"capped_p": 1e-6},
    )
    assert said == (
        f"no session of the window is settled: all {pending['sessions_within_label_delay']:,} ended within the "
        f"label delay (7d) of 2026-03-25, {waiting} of them listed as fraud already; their chargebacks may still "
        "come, so they are left out of the performance figures (data.policy.on_unlabeled=negative)"
    )
    # A fraud listed within the delay is left out too, as the legitimate ones beside it are: kept, it raised the
    # window's fraud rate and PR-AUC (dogfood 65).
    assert set(got[S.SESSION_ID]) == set(settled)
    assert got[S.LABEL].sum() == listed.filter(listed.is_in(settled.implode())).len() > 0
    assert listed.filter(~listed.is_in(settled.implode())).len() > 0  # some listed fraud was within the delay
    # A table pulled after the delay has run for the whole window settles every session (dogfood 73: last month,
    # monitored with the chargebacks of the two months since, had every session left out).
    later = cast(int, events[S.TS_US].max()) + 7 * 86_400_000_000
    got, _, pending = matched_labels(frauds, events, "labels", spec, later)
    assert pending == {} and got.height == window.n_unique() and got[S.LABEL].sum() == listed.len()


def test_a_label_frame_is_checked_as_a_label_file_is(exported_artifact, windows):
    """A frame was cast unchecked: 0.9 read as 0, a session listed twice with two labels counted twice, and a list
    of dicts failed with an AttributeError (dogfood 60)."""
    s = S.SYNTHETIC
    labels = windows["labels"]
    early = windows["early"]
    frame = monitor(exported_artifact, early, reference=windows["reference"], labels=labels)["performance"]
    rows = monitor(exported_artifact, early, reference=windows["reference"], labels=labels.to_dicts())
    assert rows["performance"] == frame
    for bad, says in (
        (labels.with_columns(pl.col(s.label).cast(pl.Float64) * 0.9), "have a label that is not 0/1"),
        (
            pl.concat([labels, labels.head(3).with_columns((1 - pl.col(s.label)).alias(s.label))]),
            "conflicting",
        ),
    ):
        with pytest.raises(DataValidationError, match=says):
            monitor(exported_artifact, early, reference=windows["reference"], labels=bad)
    with pytest.raises(
        TypeError, match="labels must be a Polars DataFrame, an Arrow table or a list of dicts"
    ):
        monitor(exported_artifact, early, reference=windows["reference"], labels=42)


def test_a_shift_of_present_values_is_not_hidden_by_a_large_missing_share(trained_run):
    """A number blank on 9 events of 10: its values moving by a bucket barely moves the PSI over all events; the
    PSI over the present values shows it, and the alert reads the larger, once. Sessions with a value count, not
    their share of events: read as sessions' worth of values, 500 sessions of one amount each were too few
    (review 186)."""
    from seqfraud.features.spec import FIRST_ID, MISSING, Spec
    from seqfraud.features.tokens import Sequences
    from seqfraud.monitoring.alerts import alerts
    from seqfraud.monitoring.statistics import MIN_PRESENT, field_stats

    spec = Spec.load(trained_run / "spec.json")
    f = next(f for f in spec.edges if f in spec.schema.numerical)
    j = spec.fields.index(f)

    def window(buckets: list[int]) -> Sequences:
        """A session per bucket given: nine events without a value, then one with it."""
        tokens = np.full((10 * len(buckets), len(spec.fields)), FIRST_ID, dtype=np.int64)
        tokens[:, j] = MISSING
        tokens[9::10, j] = FIRST_ID + np.asarray(buckets)
        return Sequences([f"s{i}" for i in range(len(buckets))], tokens, np.full(len(buckets), 10))

    rising = [0] * 200 + [1] * 150 + [2] * 100 + [3] * 50
    stats = field_stats(spec, window(rising), window([3 - b for b in rising]), [f])[f]
    whole, present = stats["psi"], stats["psi_present"]
    assert whole < 0.1 and present >= 0.25
    assert field_stats(spec, window(rising[: MIN_PRESENT - 1]), window(rising), [f])[f]["psi_present"] is None
    report = {
        "current": {"sessions": 1_000},
        "fields": {f: stats},
        "new_categories": {},
        "session_length": {"psi": 0.0},
        "score": {"psi": 0.0},
        "performance": None,
    }
    found, _ = alerts(report, check_thresholds(None))
    assert [(a["check"], a["field"], a["value"], a["over"]) for a in found] == [
        ("psi", f, present, "present values")
    ]
    # What moved most is named: a warning of a channel's PSI said nothing of its nulls gone (dogfood 280); over
    # present values, among those (reviews 281, 282).
    top = stats["present_moves"][0]
    assert found[0]["moved"] == top and found[0]["message"].endswith(
        f"; most moved: {top['token']} {top['reference']:.1%} of the reference, {top['current']:.1%} now"
    )


def test_an_entity_column_emptied_is_an_alert_where_its_values_were_enough_to_tell():
    """A column with a value on 2% of the events, none in a window of 12 sessions, alerted (review 281): below
    MIN_ALERT_SESSIONS, or where training's share would have given under 100 sessions a value, a warning."""
    from seqfraud.monitoring.alerts import alerts

    def report(sessions: int, had: float) -> dict:
        return {
            "current": {"sessions": sessions},
            "fields": {"ent__card__events_1h": {"psi": 3.0, "unknown_rate": None}},
            "new_categories": {},
            "session_length": {"psi": 0.0},
            "score": {"psi": 0.0},
            "performance": None,
            "entity_null_rate": {"card": {"reference": 1 - had, "current": 1.0}},
        }

    for sessions, had, alerted in (
        (12, 0.02, False),
        (1_000, 0.02, False),
        (10_000, 0.02, True),
        (1_000, 1.0, True),
    ):
        found, warned = alerts(report(sessions, had), check_thresholds(None))
        checks = [a["check"] for a in (found if alerted else warned)]
        assert "entity_empty" in checks, (sessions, had)
        # Its features' PSIs are its symptoms where it alerts, and stand where it does not.
        assert ("psi" in [a["check"] for a in found + warned]) is not alerted, (sessions, had)


def test_a_small_window_warns_where_a_large_one_alerts():
    """Unchanged traffic alerted on 4 of 6 windows of 50 sessions (a PSI of about (bins - 1) / sessions arises by
    chance), and a PR-AUC on 11 frauds alerted as a performance drop (dogfood 30): below MIN_ALERT_SESSIONS and
    MIN_ALERT_POSITIVES those are warnings, and a note says why. The drop's line gives the PR-AUC before and
    after, which 0.9049 alone read as."""
    from seqfraud.monitoring.alerts import MIN_ALERT_POSITIVES, MIN_ALERT_SESSIONS, alerts, notes

    t = check_thresholds(None)

    def report(sessions: int, positives: int) -> dict:
        return {
            "current": {"sessions": sessions},
            "fields": {"amount": {"psi": 0.4, "unknown_rate": None}},
            "new_categories": {},
            "session_length": {"psi": 0.0},
            "score": {"psi": 0.3},
            "performance": {
                "positives": positives,
                "pr_auc": 0.079,
                "reference_pr_auc": 0.831,
                "pr_auc_drop": 0.905,
            },
        }

    big = report(MIN_ALERT_SESSIONS, MIN_ALERT_POSITIVES)
    found, warned = alerts(big, t)
    assert [a["check"] for a in found] == ["psi", "score_psi", "performance_drop"] and not warned
    assert found[-1]["message"] == (
        "performance_drop pr_auc: 0.831 at export, 0.079 now, a relative drop of 0.905 (threshold 0.25)"
    )
    assert notes(big, t) == []
    small = report(MIN_ALERT_SESSIONS - 1, MIN_ALERT_POSITIVES - 1)
    found, warned = alerts(small, t)
    assert not found and [a["check"] for a in warned] == ["psi", "score_psi", "performance_drop"]
    said = notes(small, t)
    assert len(said) == 2 and f"fewer than {MIN_ALERT_SESSIONS}" in said[0] and "fraud(s)" in said[1]


def test_session_length_bins_end_with_the_window_at_its_longest():
    """A cut session's window holds max_len - hop + 1 to max_len events: the last bin, where every cut session
    falls; a hop as wide as max_len keeps the doubling bins, so the PSI still reads the lengths."""
    from seqfraud.features.spec import Spec
    from seqfraud.monitoring.statistics import length_edges, length_summary
    from seqfraud.schema import Schema

    def spec(max_len: int, hop: int) -> Spec:
        return Spec(Schema(), "us", max_len, {"event_type": []}, {S.TIME_DELTA: []}, hop=hop)

    assert length_edges(spec(256, 32)).tolist() == [1, 2, 4, 8, 16, 32, 64, 128, 225, 257]
    assert length_edges(spec(256, 1)).tolist() == [1, 2, 4, 8, 16, 32, 64, 128, 256, 257]
    assert length_edges(spec(8, 8)).tolist() == [1, 2, 4, 9]
    lengths = np.array([3, 100, 225, 240, 256])
    assert length_summary(lengths, spec(256, 32))["longest_window_share"] == pytest.approx(0.6)
    assert length_summary(lengths, spec(256, 1))["longest_window_share"] == pytest.approx(0.2)


def test_labels_as_of_reads_the_labels_the_table_dates_later_as_not_known_then(exported_artifact, caplog):
    """``--labels-as-of`` read every label of a table holding the months after it, though the table dates each
    one (dogfood 120): a label dated later was not known then, and is read so, both ways (leaving its session out
    dropped frauds alone: review 124); the report counts them. A table without label times reads as before."""
    from dataclasses import replace

    from seqfraud.data.split import to_epoch_us
    from seqfraud.features.spec import ON_UNLABELED, Spec
    from seqfraud.monitoring.inputs import current_labels, matched_labels

    spec = Spec.load(exported_artifact / "spec.json")
    dated = replace(spec, schema=replace(spec.schema, label_time="known_at"))
    table = pl.DataFrame(
        {
            "session_id": ["a", "b", "c"],
            "label": [1, 1, 0],
            "known_at": ["2026-03-01T00:00:00Z", "2026-05-01T00:00:00Z", None],
        }
    )
    events = pl.DataFrame({S.SESSION_ID: ["a", "b", "c", "d"], S.TS_US: [to_epoch_us("2026-02-01")] * 4})
    as_of = to_epoch_us("2026-04-01")
    read = current_labels(table, pl.LazyFrame(), dated, as_of)
    assert read is not None and S.LABEL_TIME_US in read.columns
    with caplog.at_level("INFO", logger="seqfraud.monitoring.inputs"):
        got, _, pending = matched_labels(read, events, "labels", dated, as_of)
    assert got.sort(S.SESSION_ID).rows() == [("a", 1), ("c", 0)] and pending == {"labels_after_as_of": 1}
    assert "1 label(s) dated after --labels-as-of (column 'known_at') were not known then" in caplog.text
    # A label dated before its session's first event is refused, as training refuses it, with --labels-as-of or
    # without (dogfood 192: a month's chargebacks read against the next month's window, 14 frauds counted).
    early = table.with_columns(pl.lit("2026-01-15T00:00:00Z").alias("known_at"))
    with pytest.raises(
        DataValidationError,
        match=r"^labels: column 'known_at': 3 row\(s\) have a label time before the first event of their "
        r"session \(3 session\(s\); first: session 'a', label time 2026-01-15",
    ):
        matched_labels(current_labels(early, pl.LazyFrame(), dated, as_of), events, "labels", dated, as_of)
    # Without --labels-as-of every label counts: a table of other months, some not yet dated (review 197). But one
    # dated before its session is refused all the same (dogfood 278: a window's times moved a year on).
    caplog.clear()
    with caplog.at_level("WARNING", logger="seqfraud.monitoring.inputs"):
        got, _, pending = matched_labels(
            current_labels(table, pl.LazyFrame(), dated), events, "labels", dated
        )
        assert got.sort(S.SESSION_ID).rows() == [("a", 1), ("b", 1), ("c", 0)] and not pending
        assert not caplog.text
        with pytest.raises(DataValidationError, match=r"3 row\(s\) have a label time before the first event"):
            matched_labels(current_labels(early, pl.LazyFrame(), dated), events, "labels", dated)
        # But said where they would be refused: dates written 2026/05/24 passed until a run with --labels-as-of
        # refused the same export (dogfood 272).
        slashed = table.with_columns(pl.lit("2026/05/24").alias("known_at"))
        assert current_labels(slashed, pl.LazyFrame(), dated).height == 3
    assert "column 'known_at': 3 row(s) have a label time that does not parse" in caplog.text
    assert "its label times are read with --labels-as-of alone, which refuses them" in caplog.text
    # A table refused for another reason is refused once, its label times not blamed (review 276).
    caplog.clear()
    with caplog.at_level("WARNING", logger="seqfraud.monitoring.inputs"), pytest.raises(DataValidationError):
        current_labels(slashed.with_columns(pl.Series("label", ["1", "yes", "0"])), pl.LazyFrame(), dated)
    assert "label time" not in caplog.text
    # A chargeback file of frauds alone, no delay: on April 1st b had no chargeback, so it read as legitimate.
    dated.fit_info[ON_UNLABELED] = "negative"
    frauds = current_labels(table.filter(pl.col("label") == 1).drop("label"), pl.LazyFrame(), dated, as_of)
    got, _, pending = matched_labels(frauds, events, "labels", dated, as_of)
    assert got.sort(S.SESSION_ID).rows() == [("a", 1), ("b", 0), ("c", 0), ("d", 0)]
    assert pending == {"labels_after_as_of": 1}
    # A table without the label-time column reads as it did (it was refused for the missing column).
    undated = current_labels(table.drop("known_at"), pl.LazyFrame(), dated, as_of)
    assert undated is not None and undated.height == 3 and S.LABEL_TIME_US not in undated.columns


def test_drift_is_read_over_sessions_not_events(trained_run):
    """One long session piling its events on one value is one session's worth of drift: counted over events, the
    cell ids of a mobile-money log, drawn at random and never drifting, warned at PSI 0.17 (dogfood 177). A value
    that moves across many sessions still reads as drift."""
    from seqfraud.features.spec import FIRST_ID, Spec
    from seqfraud.features.tokens import Sequences
    from seqfraud.monitoring.statistics import field_stats

    spec = Spec.load(trained_run / "spec.json")
    f = next(f for f in spec.vocab if spec.vocab_size(f) >= FIRST_ID + 4)
    j = spec.fields.index(f)

    def window(values: np.ndarray, lengths: np.ndarray) -> Sequences:
        tokens = np.full((int(lengths.sum()), len(spec.fields)), FIRST_ID, dtype=np.int64)
        tokens[:, j] = FIRST_ID + np.repeat(values, lengths)
        return Sequences([f"s{i}" for i in range(len(lengths))], tokens, lengths)

    rng = np.random.default_rng(0)
    five = np.full(400, 5)
    ref = window(rng.integers(0, 4, 400), five)
    same = rng.integers(0, 4, 400)
    piled = window(np.r_[same, 0], np.r_[five, 1_500])
    by_events = [np.bincount(s.tokens[:, j], minlength=FIRST_ID + 4)[1:] for s in (ref, piled)]
    assert psi(*by_events) > 0.25  # the test's premise: over events, the one session alone is an alert
    assert field_stats(spec, ref, piled, [f])[f]["psi"] < 0.01
    moved = window(np.where(rng.random(400) < 0.5, 0, same), five)
    assert field_stats(spec, ref, moved, [f])[f]["psi"] > 0.25


def test_a_label_file_naming_almost_no_fraud_is_noted(exported_artifact, windows):
    """A chargeback pull cut to 14 of its 136 frauds read as a PR-AUC drop of 93%, and an empty one as labels still
    to come, where every settled session is labelled (dogfood 245): a note says the file names under a tenth of the
    frauds the test's share gives."""
    s = S.SYNTHETIC
    clean = monitor(
        exported_artifact, windows["early"], reference=windows["reference"], labels=windows["labels"]
    )
    assert not [n for n in clean["notes"] if "is the chargeback file empty" in n]
    perf = clean["performance"]
    assert perf["labelled_share"] == 1 and perf["n"] * perf["reference_fraud_share"] >= 10
    legit = windows["labels"].with_columns(pl.lit(0).alias(s.label))
    empty = monitor(exported_artifact, windows["early"], reference=windows["reference"], labels=legit)
    [note] = [n for n in empty["notes"] if "is the chargeback file empty" in n]
    assert note.startswith(f"the window's labels name 0 fraud(s) among its {perf['n']:,} settled session(s)")
    # Sessions within the label delay are left out of the settled ones, which the note judges alone (review 249: it
    # never spoke while any session waited, and "labels to come" or "one class sooner" said otherwise).
    from seqfraud.monitoring.alerts import DEFAULT_THRESHOLDS, notes
    from seqfraud.monitoring.statistics import performance

    raw = np.linspace(0.01, 0.99, 400)
    scores = pl.DataFrame({S.SESSION_ID: [f"s{i}" for i in range(400)], S.RAW_SCORE: raw, S.SCORE: raw})
    for frauds in (0, 1):
        table = pl.DataFrame(
            {S.SESSION_ID: scores[S.SESSION_ID][:300], S.LABEL: [int(i < frauds) for i in range(300)]}
        )
        settled = performance(scores, table, 0.01, reference_pr_auc=0.5, reference_fraud_share=0.1)
        assert settled is not None
        report = {
            "current": {"sessions": 400},
            "performance": settled
            | {
                "sessions_within_label_delay": 100,
                "frauds_within_label_delay": 0,
                "label_delay": "60d",
                "labels_as_of": None,
            },
            "new_categories": {},
        }
        said = notes(report, DEFAULT_THRESHOLDS)
        assert any(
            n.startswith(f"the window's labels name {frauds} fraud(s) among its 300 settled") for n in said
        )
        assert not any("no PR-AUC until" in n or "labels come sooner" in n for n in said), said
