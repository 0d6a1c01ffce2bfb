"""Backtesting: test_end bounds the test split, windows step forward without overlap, one run per window and model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest
from conftest import single_torch_thread
from omegaconf import OmegaConf

from seqfraud import reports
from seqfraud import schema as S
from seqfraud.backtest import DAY_US, Window, plan_windows
from seqfraud.data.split import assign_split, before_test_end, split_boundaries, to_epoch_us
from seqfraud.rundir import CONFIG_FILE, REPORT_FILE

T0_US = 1_704_067_200_000_000
CONF = Path(__file__).resolve().parents[1] / "seqfraud" / "conf"
# Hydra would point logging at pytest's captured streams, closed after the test: later logs would fail to write.
QUIET_HYDRA = ("hydra/job_logging=none", "hydra/hydra_logging=none")  # 2024-01-01T00:00:00Z


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


def test_a_window_run_is_named_in_wandb_by_its_backtest_too(tmp_path):
    """train names a W&B run by its directory's last two parts: every backtest's runs were window01/gru, ...,
    told apart by no name (dogfood 106)."""
    from hydra import compose, initialize_config_dir

    from seqfraud.backtest import window_config

    def composed(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("backtest", overrides=["+experiment=smoke", *overrides])

    window = Window(1, T0_US, T0_US + DAY_US, T0_US + 2 * DAY_US)
    run_dir = tmp_path / "2026-12-05_10-00-00" / "window01" / "gru"
    for logger, name in (("wandb", "2026-12-05_10-00-00/window01/gru"), ("csv", "csv")):
        cfg = composed(f"logger={logger}")
        assert window_config(cfg, window, cfg.model, run_dir).logger.name == name
    cfg = composed("logger=wandb", "logger.name=mine")
    assert window_config(cfg, window, cfg.model, run_dir).logger.name == "mine"
    cfg = composed("logger=none")
    assert not window_config(cfg, window, cfg.model, run_dir).get("logger")


def test_times_read_and_written_exactly():
    """Read through a float of seconds, 1% of microsecond times came one microsecond low (review 188): a boundary
    set at a session's first event moved it to the other split."""
    import random

    from seqfraud.data.split import from_epoch_us

    assert to_epoch_us("2004-01-11T22:49:33.499837+00:00") == 1_073_861_373_499_837
    rng = random.Random(0)
    for us in (rng.randrange(-(10**15), 4 * 10**15) for _ in range(2_000)):
        assert to_epoch_us(from_epoch_us(us)) == us


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
    with pytest.raises(ValueError, match="backtest.first_test_start: 'notadate' is not an ISO 8601 date"):
        plan_windows(T0_US, last, windows=2, window_days=10, val_days=5, first_test_start="notadate")


@pytest.fixture(scope="module")
def backtest(tmp_path_factory):
    """Through the command, as a user runs it: ``backtest.models`` composes its presets with Hydra. One preset
    is the user's own, in a folder on the search path, and the experiment's ``model.*`` keys reach every preset."""
    from seqfraud.cli.backtest import main

    os.environ["WANDB_MODE"] = "disabled"
    out = tmp_path_factory.mktemp("backtest")
    for group in ("model", "experiment"):
        (out / "conf" / group).mkdir(parents=True)
    (out / "conf" / "model" / "mini.yaml").write_text("defaults:\n  - tiny\n  - _self_\nd_model: 8\n")
    (out / "conf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - smoke\n  - _self_\nmodel:\n  dropout: 0.2\n"
    )
    overrides = [
        f"hydra.searchpath=[file://{out / 'conf'}]",
        "+experiment=mine",
        "logger=none",
        "trainer.max_epochs=1",
        "trainer.enable_progress_bar=false",
        "backtest.windows=2",
        "backtest.window_days=20",
        "backtest.val_days=14",
        "backtest.models=[mini,lightgbm]",
        f"paths.data_dir={out / 'data'}",
        f"hydra.run.dir={out / 'run'}",
        *QUIET_HYDRA,
    ]
    with single_torch_thread():
        main(overrides)
    return out / "run", json.loads((out / "run" / "backtest.json").read_text())


def test_backtest_writes_one_row_per_window_and_model(backtest):
    run_dir, result = backtest
    assert json.loads((run_dir / "backtest.json").read_text())["rows"] == json.loads(
        json.dumps(result["rows"])
    )
    assert [(r["window"], r["model"]) for r in result["rows"]] == [
        (1, "mini"),
        (1, "lightgbm"),
        (2, "mini"),
        (2, "lightgbm"),
    ]
    table = [line for line in (run_dir / "backtest.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 4 and "late_variant recall@1%FPR" in table[0]
    assert (run_dir / "backtest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A stacked run's choice is kept per window (its scores may be one part's alone), and the table says it.
    assert all(r["kept"] is None for r in result["rows"])  # no stacked run here
    stacked = {**result, "rows": [{**result["rows"][0], "model": "stacked", "kept": "sequence"}]}
    assert "| 1 | stacked (sequence model alone) |" in reports.backtest_markdown(stacked)
    # Labels known only after a window's test start are said in the report, not in a log line alone (review 104).
    assert "labels known only after" not in reports.backtest_markdown(stacked)
    late = {"train": {"sessions": 290, "positives": 2}, "val": {"sessions": 224, "positives": 5}}
    said = reports.backtest_markdown(
        {**stacked, "rows": [{**stacked["rows"][0], "labels_known_after_test_start": late, "splits": {}}]}
    )
    assert "labels known only after the window's test start" in said
    assert "- window 1: 290 train sessions (2 positive), 224 val sessions (5 positive)" in said
    # Of the split's sessions where the run records them (dogfood 228: read as training sizes that shrank).
    whole = {"train": {"sessions": 3838, "positives": 109}, "val": {"sessions": 300, "positives": 9}}
    said = reports.backtest_markdown(
        {**stacked, "rows": [{**stacked["rows"][0], "labels_known_after_test_start": late, "splits": whole}]}
    )
    assert (
        "- window 1: 290 of 3,838 train sessions (2 of 109 positive), 224 of 300 val sessions (5 of 9" in said
    )
    assert reports.backtest_legend("stacked", stacked["rows"] * 2) == "stacked (sequence model alone)"
    mixed = [stacked["rows"][0], {**stacked["rows"][0], "kept": "aggregates"}]
    assert reports.backtest_legend("stacked", mixed) == "stacked (kept varies by window)"
    assert reports.backtest_legend("lightgbm", result["rows"][1::2]) == "lightgbm"
    for r in result["rows"]:
        metrics = json.loads((run_dir / r["run_dir"] / "metrics.json").read_text())
        assert metrics["test"]["n"] == r["test"]["n"] > 0
        assert metrics["model"] == ("lightgbm" if r["model"] == "lightgbm" else "transformer")
        model = OmegaConf.load(run_dir / r["run_dir"] / CONFIG_FILE).model
        if r["model"] == "mini":  # the user's preset on the packaged one it names, with the experiment's key
            assert (model.kind, model.d_model, model.n_layers, model.dropout) == ("sequence", 8, 1, 0.2)
        else:  # dropped (with a warning) by the model that does not read it
            assert model.kind == "lightgbm" and "dropout" not in model


def test_a_window_whose_validation_has_no_fraud_is_skipped_and_the_others_reported(backtest, tmp_path):
    """A window without frauds to validate on (or, in a log with a gap, without test sessions) stopped the whole
    backtest, with data.split's advice (which a backtest ignores) and none of the finished windows written
    (dogfood 97): the window is skipped, said, and listed."""
    from seqfraud.cli.backtest import main

    run_dir, result = backtest
    config = OmegaConf.load(run_dir / result["rows"][0]["run_dir"] / CONFIG_FILE)
    first = result["rows"][0]
    start = pl.read_parquet(config.data.events).group_by("session_id").agg(pl.col("timestamp").min())
    bounds = [to_epoch_us(first[k]) for k in ("val_start", "test_start")]
    quiet = start.filter(pl.col("timestamp").dt.epoch("us").is_between(*bounds, closed="left"))["session_id"]
    labels = pl.read_parquet(config.data.labels)
    in_window = pl.col("session_id").is_in(quiet.implode())
    assert labels.filter(in_window)["label"].sum() > 0
    labels.with_columns(pl.when(in_window).then(0).otherwise(pl.col("label")).alias("label")).write_parquet(
        tmp_path / "labels.parquet"
    )
    overrides = [
        "+experiment=smoke",
        "logger=none",
        f"data.events={config.data.events}",
        f"data.labels={tmp_path / 'labels.parquet'}",
        "backtest.windows=2",
        "backtest.window_days=20",
        "backtest.val_days=14",
        f"backtest.first_test_start={first['test_start']}",
        "backtest.models=[lightgbm]",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *QUIET_HYDRA,
    ]
    # An earlier backtest's runs in the same directory, of windows and models this one does not write: removed,
    # where compare ranked them beside this backtest's under the same window names (dogfood 106).
    for stale in ("window01/mini", "window03/lightgbm"):
        (tmp_path / "run" / stale).mkdir(parents=True)
        (tmp_path / "run" / stale / "metrics.json").write_text("{}")
    main(overrides)
    assert not (tmp_path / "run" / "window01" / "mini").exists()
    assert not (tmp_path / "run" / "window03").exists()
    written = json.loads((tmp_path / "run" / "backtest.json").read_text())
    assert [r["window"] for r in written["rows"]] == [2]
    (skip,) = written["skipped"]
    assert skip["window"] == 1 and skip["why"].startswith("validation keeps 0 positive and ")
    report = (tmp_path / "run" / "backtest.md").read_text()
    assert "Skipped:" in report and "- window 1, lightgbm (test " in report


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


def test_an_unknown_preset_is_one_line_naming_it(tmp_path, capsys):
    from seqfraud.cli.backtest import main

    with pytest.raises(SystemExit) as refused:
        main(
            ["+experiment=smoke", "backtest.models=[tiny,nosuch]", f"hydra.run.dir={tmp_path}", *QUIET_HYDRA]
        )
    err = capsys.readouterr().err
    assert refused.value.code == 2 and "backtest.models: model=nosuch does not compose" in err
    assert len(err.strip().splitlines()) == 1, err
    # A model.* override one preset lacks says how to give it (a dogfood's model.encoder=gru beside lightgbm).
    with pytest.raises(SystemExit):
        main(
            [
                "+experiment=smoke",
                "backtest.models=[tiny,lightgbm]",
                "model.encoder=gru",
                f"hydra.run.dir={tmp_path}",
                *QUIET_HYDRA,
            ]
        )
    err = capsys.readouterr().err
    assert "model=lightgbm does not compose" in err and "write the override as ++KEY=VALUE" in err


def test_a_cutoff_whose_delay_outlasts_validation_says_val_days_is_the_setting(backtest, tmp_path, capsys):
    """With data.split.label_cutoff and a label delay as long as validation, every window is skipped; the refusal
    named four settings where only backtest.val_days cures it (dogfood 106). Without label times every label waits
    for the delay, so it is refused before the first window, not after all of them (dogfood 118)."""
    from seqfraud.cli.backtest import main

    run_dir, result = backtest
    config = OmegaConf.load(run_dir / result["rows"][0]["run_dir"] / CONFIG_FILE)
    overrides = [
        "+experiment=smoke",
        "logger=none",
        f"data.events={config.data.events}",
        f"data.labels={config.data.labels}",
        "data.policy.label_delay=20d",
        "data.split.label_cutoff=test_start",
        "backtest.windows=1",
        "backtest.window_days=20",
        "backtest.val_days=14",
        "backtest.models=[lightgbm]",
        f"paths.data_dir={tmp_path / 'data'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *QUIET_HYDRA,
    ]
    with pytest.raises(SystemExit) as ended:
        main(overrides)
    assert ended.value.code == 2
    said = capsys.readouterr().err
    assert "every window would be skipped" in said and not (tmp_path / "run" / "window01").exists()
    assert (
        "data.policy.label_delay=20d leaves a validation of backtest.val_days=14 days no label final" in said
    )
    # A log too short for validation past the delay has the other cure (dogfood 181: 60 days on a 56-day log).
    assert "or leave data.split.label_cutoff out (labels as known today)" in said
    # With label times some may come sooner: each window is tried, and the refusal gives every window's reason,
    # once (the first window's alone read as the only one: dogfood 181).
    overrides = [o for o in overrides if not o.startswith(("backtest.windows", "hydra.run.dir"))]

    def refused(given: list[str]) -> str:
        """The command's one-line error, where it refuses ``given``."""
        with pytest.raises(SystemExit) as ended:
            main(given)
        assert ended.value.code == 2
        return capsys.readouterr().err.strip().splitlines()[-1]

    said = refused(
        [
            *overrides,
            "data.schema.label_time=label_time",
            "backtest.windows=2",
            f"hydra.run.dir={tmp_path / 'b'}",
        ]
    )
    assert said.startswith(
        "error: backtest: every window was skipped (the val split holds no session with a label known by "
        "data.split.label_cutoff=test_start in windows 1, 2): choose others"
    ), said
    # Label times alone (every label dated: the negatives' reviews too), later than validation is long: val_days
    # is the cure, said so (dogfood 198).
    dated = tmp_path / "dated.parquet"
    labels = pl.read_parquet(config.data.labels)
    labels.with_columns(pl.col("label_time").fill_null(pl.col("label_time").max())).write_parquet(dated)
    kept = [
        o
        for o in overrides
        if not o.startswith(("data.policy.label_delay", "backtest.val_days", "data.labels"))
    ]
    said = refused(
        [
            *kept,
            f"data.labels={dated}",
            "data.schema.label_time=label_time",
            "backtest.windows=2",
            "backtest.val_days=1",
            f"hydra.run.dir={tmp_path / 'c'}",
        ]
    )
    assert said.endswith(
        "val_days or first_test_start; a validation of backtest.val_days=1 days ends at its test start, and no "
        "label of its sessions was known by then: lengthen val_days past how late most labels come after their "
        "sessions"
    ), said
