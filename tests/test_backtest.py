"""Backtesting: test_end bounds the test split, windows step forward without overlap, one run per window and model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from conftest import single_torch_thread
from hydra import compose, initialize_config_dir

from seqfraud import schema as S
from seqfraud.backtest import DAY_US, Window, plan_windows, run_backtest
from seqfraud.data.split import assign_split, before_test_end, split_boundaries, to_epoch_us
from seqfraud.rundir import REPORT_FILE

CONF = Path(__file__).resolve().parents[1] / "seqfraud" / "conf"
T0_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z


def _sessions(starts_us) -> pl.DataFrame:
    return pl.DataFrame(
        {S.SESSION_ID: [f"s{i}" for i in range(len(starts_us))], S.START_TIME: starts_us},
        schema={S.SESSION_ID: pl.String, S.START_TIME: pl.Int64},
    )


def test_test_end_leaves_later_sessions_out_of_every_split():
    sessions = _sessions([T0_US + d * DAY_US for d in (0, 5, 10, 14, 15, 20)])
    kept = before_test_end(sessions, "2024-01-16")  # day 15 starts exactly at test_end: left out
    out = assign_split(kept, *split_boundaries(kept, "2024-01-06", "2024-01-11", test_end="2024-01-16"))
    assert dict(zip(*out.select(S.SESSION_ID, S.SPLIT))) == {
        "s0": "train",
        "s1": "val",
        "s2": "test",
        "s3": "test",
    }
    assert before_test_end(sessions, None).height == 6


def test_test_end_errors_name_the_boundary():
    sessions = _sessions([T0_US + DAY_US])
    with pytest.raises(ValueError, match="test_end .* not after test_start"):
        split_boundaries(sessions, "2024-01-01", "2024-01-05", test_end="2024-01-05")
    with pytest.raises(ValueError, match="before every session"):
        before_test_end(sessions, "2024-01-01")


def test_windows_end_at_the_day_after_the_last_session_and_step_forward():
    last = T0_US + 99 * DAY_US + 5 * 3_600_000_000  # a session on day 99 at 05:00
    windows = plan_windows(T0_US, last, windows=2, window_days=10, val_days=5)
    day = lambda d: T0_US + d * DAY_US
    assert windows == [Window(1, day(75), day(80), day(90)), Window(2, day(85), day(90), day(100))]
    assert windows[0].split() == {
        "val_start": "2024-03-16T00:00:00+00:00",
        "test_start": "2024-03-21T00:00:00+00:00",
        "test_end": "2024-03-31T00:00:00+00:00",
    }
    explicit = plan_windows(T0_US, last, windows=2, window_days=10, val_days=5, first_test_start="2024-02-01")
    assert [w.test_start for w in explicit] == [to_epoch_us("2024-02-01"), to_epoch_us("2024-02-11")]


def test_windows_that_do_not_fit_the_data_error():
    last = T0_US + 99 * DAY_US
    with pytest.raises(ValueError, match="nothing to train on"):
        plan_windows(T0_US, last, windows=10, window_days=10, val_days=5)
    with pytest.raises(ValueError, match="after the latest session"):
        plan_windows(T0_US, last, windows=2, window_days=10, val_days=5, first_test_start="2024-04-05")


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    os.environ["WANDB_MODE"] = "disabled"
    out = tmp_path_factory.mktemp("backtest")
    overrides = [
        "+experiment=smoke",
        "logger=none",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "backtest.windows=2",
        "backtest.window_days=20",
        "backtest.val_days=14",
        "backtest.models=[tiny,lightgbm]",
        f"paths.data_dir={out / 'data'}",
        f"paths.output_dir={out / 'run'}",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("backtest", overrides=overrides)
    with single_torch_thread():
        return out / "run", run_backtest(cfg)


def test_backtest_writes_one_row_per_window_and_model(backtest):
    run_dir, result = backtest
    assert json.loads((run_dir / "backtest.json").read_text())["rows"] == json.loads(
        json.dumps(result["rows"])
    )
    assert [(r["window"], r["model"]) for r in result["rows"]] == [
        (1, "tiny"),
        (1, "lightgbm"),
        (2, "tiny"),
        (2, "lightgbm"),
    ]
    table = [line for line in (run_dir / "backtest.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4 and "late_variant recall@1%FPR" in table[0]
    assert (run_dir / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for r in result["rows"]:
        metrics = json.loads((run_dir / r["run_dir"] / "metrics.json").read_text())
        assert metrics["test"]["n"] == r["test"]["n"] > 0
        assert metrics["model"] == ("lightgbm" if r["model"] == "lightgbm" else "transformer")


def test_test_windows_are_ordered_and_do_not_overlap(backtest):
    run_dir, result = backtest
    first, second = (
        next(r for r in result["rows"] if r["window"] == k and r["model"] == "lightgbm") for k in (1, 2)
    )
    assert (
        first["val_start"]
        < first["test_start"]
        < first["test_end"]
        == second["test_start"]
        < second["test_end"]
    )
    tests = []
    for r in (first, second):
        test = pl.read_parquet(run_dir / r["run_dir"] / "data/test", columns=[S.SESSION_ID, S.START_TIME])
        assert test[S.START_TIME].min() >= to_epoch_us(r["test_start"])
        assert test[S.START_TIME].max() < to_epoch_us(r["test_end"])
        train = pl.read_parquet(run_dir / r["run_dir"] / "data/train", columns=[S.START_TIME])
        assert train[S.START_TIME].max() < to_epoch_us(r["val_start"])
        tests.append(set(test[S.SESSION_ID]))
    assert tests[0] and tests[1] and not tests[0] & tests[1]
    report = json.loads((run_dir / first["run_dir"] / REPORT_FILE).read_text())
    assert report["test_end"] == first["test_end"] and report["sessions_after_test_end"] > 0
    last = json.loads((run_dir / second["run_dir"] / REPORT_FILE).read_text())
    assert last["sessions_after_test_end"] == 0  # the last window ends after the last session


def test_a_preset_with_a_defaults_list_loads_as_model_NAME_composes_it():
    from seqfraud.backtest import preset

    stacked, small = preset("stacked"), preset("small")
    assert stacked.stacking.folds == 3 and stacked.kind == "stacked" and small.kind == "sequence"
    assert {k: v for k, v in stacked.items() if k not in ("stacking", "kind")} == {
        k: v for k, v in small.items() if k != "kind"
    }
