"""Drift monitoring: the late window with the gift-card fraud variant alerts, an early window does not."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import polars as pl
import pytest

from seqfraud import schema as S
from seqfraud.data import synthetic
from seqfraud.data.events import DataValidationError
from seqfraud.monitor import MonitorError, check_thresholds, main, monitor, psi

EVENT_TYPE = S.SYNTHETIC.event_type


@pytest.fixture(scope="module")
def windows() -> dict[str, pl.DataFrame]:
    """Raw event windows of a fresh synthetic log (same calendar as the smoke run), split by session start."""
    data = synthetic.generate(2000, seed=11)
    s = S.SYNTHETIC
    late = synthetic.late_period_start()
    starts = data.events.group_by(s.session_id).agg(pl.col(s.timestamp).min().alias("start"))
    early = starts.filter(pl.col("start") < late).sort("start")
    half = early.height // 2
    ids = {"reference": early.head(half)[s.session_id], "early": early.tail(early.height - half)[s.session_id],
           "late": starts.filter(pl.col("start") >= late)[s.session_id]}
    out = {name: data.events.filter(pl.col(s.session_id).is_in(v.implode())) for name, v in ids.items()}
    out["labels"] = data.labels
    return out


@pytest.fixture(scope="module")
def reports(exported_artifact, windows, tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("monitor")
    return {name: monitor(exported_artifact, windows[name], reference=windows["reference"], labels=windows["labels"],
                          out=out / name)
            | {"_out": out / name} for name in ("early", "late")}


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
    assert any(m["token"] == "<unknown>" for m in late["fields"][EVENT_TYPE]["top_moves"])
    assert late["fields"][EVENT_TYPE]["psi"] > early["fields"][EVENT_TYPE]["psi"]


def test_report_sections_and_files(reports):
    late = reports["late"]
    for key in ("fields", "session_length", "inter_event_seconds", "score", "performance", "alerts", "warnings"):
        assert key in late
    assert set(late["fields"]) == set(S.SYNTHETIC.token_fields)
    assert late["inter_event_seconds"]["reference"]["p50"] > 0
    assert late["performance"]["n"] == late["current"]["sessions"]
    assert 0.0 <= late["performance"]["roc_auc"] <= 1.0
    out = late["_out"]
    written = json.loads((out / "monitor.json").read_text())
    assert written["alerts"] == late["alerts"]
    page = (out / "monitor.html").read_text()
    assert "data:image/png;base64," in page and "unknown_rate_increase" in page


def test_default_reference_is_the_runs_train_dataset(exported_artifact, windows):
    report = monitor(exported_artifact, windows["late"])
    assert report["reference"]["source"].endswith("data/train")
    assert report["inter_event_seconds"]["reference"] is None  # tokens only: PSI of the buckets, no seconds
    assert report["performance"] is None  # no labels given, none on the events
    assert _unknown_alerts(report)


def test_cli_exit_codes(exported_artifact, windows, tmp_path, capsys):
    late = tmp_path / "late.parquet"
    windows["late"].write_parquet(late)
    ref = tmp_path / "ref.csv"
    windows["reference"].write_csv(ref)
    args = ["--artifact", str(exported_artifact), "--current", str(late), "--reference", str(ref)]
    assert main([*args, "--out", str(tmp_path / "a"), "--fail-on-alert"]) == 1
    assert "ALERT unknown_rate_increase event_type" in capsys.readouterr().out
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    # Thresholds no window can reach: nothing to alert on.
    high = [f"--threshold={k}=1e9" for k in ("psi_warn", "psi_alert", "unknown_rate_alert", "score_psi_alert")]
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


def test_errors_without_any_reference(exported_artifact, windows, tmp_path):
    copy = Path(shutil.copytree(exported_artifact, tmp_path / "artifact"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["source"]  # the manifest does not hash itself: the files still verify
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MonitorError, match="--reference"):
        monitor(copy, windows["late"])
    with pytest.raises(MonitorError, match="psi_warn"):
        check_thresholds({"psi_warn": 0.5, "psi_alert": 0.2})
    with pytest.raises(DataValidationError, match="no events"):
        monitor(exported_artifact, windows["late"].head(0), reference=windows["reference"])
