"""Comparison: run directories become one leaderboard ranked by validation PR-AUC, with PR curves."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from seqfraud.cli.compare import main
from seqfraud.compare import curve_label, leaderboard_table
from seqfraud.errors import UserError
from seqfraud.reports import write_leaderboard
from seqfraud.training.train import train

CONF = Path(__file__).resolve().parents[1] / "seqfraud" / "conf"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two LightGBM runs on the smoke data that differ in one setting, as a two-job multirun would."""
    os.environ["WANDB_MODE"] = "disabled"
    out = tmp_path_factory.mktemp("compare")
    for job, rounds in (("0", 3), ("1", 40)):
        overrides = [
            "+experiment=smoke",
            "model=lightgbm",
            "logger=none",
            f"model.num_boost_round={rounds}",
            "+model.num_threads=1",
            f"paths.data_dir={out / 'data'}",
            f"paths.output_dir={out / 'multirun' / job}",
        ]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            train(compose("train", overrides=overrides))
    return out / "multirun"


def test_two_runs_make_a_leaderboard_ranked_by_val_pr_auc(runs, tmp_path):
    rows = write_leaderboard([runs / "0", runs / "1"], tmp_path)
    val = {job: json.loads((runs / job / "metrics.json").read_text())["val"]["pr_auc"] for job in ("0", "1")}
    assert [r["run"] for r in rows] == sorted(val, key=val.get, reverse=True)
    assert [r["val_pr_auc"] for r in rows] == sorted(val.values(), reverse=True)
    assert {r["config"] for r in rows} == {"model.num_boost_round=3", "model.num_boost_round=40"}
    assert all(r["model"] == "lightgbm" and r["experiment"] == "smoke" for r in rows)
    md = (tmp_path / "leaderboard.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(table) == 3 and "recall@1%FPR" in table[0] and "late_variant recall@1%FPR" in table[0]
    assert table[1].startswith(f"| 1 | {rows[0]['run']} |")
    # What the ranking rests on: the test sessions and frauds (a dogfood's rested on 13-19 frauds, unshown).
    test = json.loads((runs / rows[0]["run"] / "metrics.json").read_text())["test"]
    assert "test sessions (frauds)" in table[0]
    assert f"| {int(test['n']):,} ({int(test['positives']):,}) |" in table[1]
    page = (tmp_path / "leaderboard.html").read_text()
    assert "data:image/png;base64," in page and page.count("<tr>") == 3
    assert (tmp_path / "pr_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The curves' legend: a multirun job's directory ("0") says nothing alone.
    assert curve_label(rows[0]) == (
        f"{rows[0]['run']} lightgbm {rows[0]['config']} ({rows[0]['test_pr_auc']:.3f})"
    )
    assert curve_label({**rows[0], "test_set": "B", "config": "x" * 80}).startswith(f"[B] {rows[0]['run']} ")
    assert len(curve_label({**rows[0], "config": "x" * 80}).split(" (")[0]) == 60


def test_config_differences_leave_out_what_a_lightgbm_run_does_not_read(runs):
    """A dogfood leaderboard listed trainer.max_epochs=3 beside its LightGBM run, which never reads it; and
    small_split.max_epochs=20, which no LightGBM fit reads either (dogfood 177)."""
    from dataclasses import replace

    from seqfraud.compare import config_differences, load_run

    lightgbm, other = load_run(runs / "0", "0"), load_run(runs / "1", "1")
    sequence = {**other.config, "model": {"kind": "sequence"}, "trainer": {"max_epochs": 8}}
    small = {**sequence, "small_split": {**sequence.get("small_split", {}), "max_epochs": 4}}
    differs = config_differences([lightgbm, replace(other, config=small)])
    assert "trainer.max_epochs" not in differs[0] and "trainer.max_epochs=8" in differs[1]
    assert "small_split" not in differs[0] and "small_split.max_epochs=4" in differs[1]
    # Nor loss.pos_weight beside a LightGBM run, nor a transformer's setting beside a GRU's (dogfood 196).
    weighted = replace(lightgbm, config={**lightgbm.config, "loss": {"pos_weight": 5.0}})
    assert "loss" not in config_differences([weighted, replace(other, config=sequence)])[0]
    gru = [{**sequence, "model": {"kind": "sequence", "encoder": "gru", "local_kernel": k}} for k in (1, 3)]
    assert config_differences([replace(other, config=c) for c in gru]) == ["", ""]
    # Nor entity windows beside a run that reads no entity (dogfood 227).
    data = sequence.get("data", {})
    entity = {
        **sequence,
        "data": {**data, "schema": {**data.get("schema", {}), "entities": ["device"]}},
        "features": {**sequence.get("features", {}), "entity": {"windows": ["1h", "1d"]}},
    }
    plain = {**sequence, "data": {**data, "schema": {**data.get("schema", {}), "entities": []}}}
    differs = config_differences([replace(other, config=plain), replace(other, config=entity)])
    assert "features.entity" not in differs[0] and "features.entity.windows=['1h', '1d']" in differs[1], (
        differs
    )
    # A trainer.max_epochs set on the command line, which the small split's copies: said once (dogfood 187).
    copied = {**small, "trainer": {"max_epochs": 4}}
    differs = config_differences([replace(other, config=sequence), replace(other, config=copied)])
    assert differs[1] == "trainer.max_epochs=4", differs
    # A sequence model's settings that its runs share are not differences because a LightGBM run lacks them; what
    # its runs vary is (dogfood 64 read every model.* key of two runs that differed in trainer.max_epochs alone).
    runs_of = [
        lightgbm,
        *(
            replace(
                other, config={**sequence, "model": {"kind": k, "d_model": 64}, "trainer": {"max_epochs": e}}
            )
            for k, e in (("sequence", 40), ("stacked", 20))
        ),
    ]
    assert config_differences(runs_of)[1:] == [
        "model.kind=sequence trainer.max_epochs=40",
        "model.kind=stacked trainer.max_epochs=20",
    ]
    wider = replace(runs_of[2], config={**runs_of[2].config, "model": {"kind": "sequence", "d_model": 32}})
    assert "model.d_model=32" in config_differences([*runs_of[:2], wider])[2]
    # Paths under each run's own data directory are the runs' paths (dogfood 72: data.synthetic.dir on own data),
    own_data = [
        replace(
            r,
            config={
                **r.config,
                "paths": {"data_dir": d},
                "data": {"synthetic": {"dir": f"{d}/synthetic"}},
                "logger": {"mode": mode},  # and how a run logs (dogfood 73)
            },
        )
        for r, d, mode in zip(runs_of[1:], ("/d/a", "/d/b"), ("offline", "disabled"))
    ]
    assert config_differences(own_data) == [
        "model.kind=sequence trainer.max_epochs=40",
        "model.kind=stacked trainer.max_epochs=20",
    ]
    # A file the runs read from one data directory still differs (review 74).
    logs = [
        replace(
            r,
            config={**r.config, "paths": {"data_dir": "/p/data"}, "data": {"events": f"/p/data/{m}.parquet"}},
        )
        for r, m in zip(runs_of[1:], ("jan", "feb"))
    ]
    said = config_differences(logs)
    assert "data.events=${paths.data_dir}/jan.parquet" in said[0] and "feb.parquet" in said[1]
    # The schedule a small split's fit used, which metrics.json records, not the config's it replaced (review 113).
    small = [
        replace(r, config={**r.config, "loader": {"batch_size": 128}}, metrics={**r.metrics, **extra})
        for r, extra in zip(runs_of[1:], ({"small_split": {"loader.batch_size": 16}}, {}))
    ]
    said = config_differences(small)
    assert "loader.batch_size=16" in said[0] and "loader.batch_size=128" in said[1]
    # A run from scratch beside a fine-tuned one says its null (it said nothing of init_from).
    tuned = [
        replace(r, config={**r.config, "init_from": i}) for r, i in zip(runs_of[1:], (None, "/p/pretrain"))
    ]
    said = config_differences(tuned)
    assert "init_from=null" in said[0] and "init_from=/p/pretrain" in said[1]


def test_a_multirun_directory_is_searched_for_runs(runs):
    rows = write_leaderboard([runs])  # writes next to the runs by default
    assert sorted(r["run"] for r in rows) == ["0", "1"]
    assert all((runs / f).is_file() for f in ("leaderboard.md", "leaderboard.html", "pr_curves.png"))


def test_runs_tested_on_other_sessions_are_named_in_a_warning(runs, tmp_path, caplog):
    """Runs of one split compare; a run tested on other sessions (another log or window) is ranked apart, in a
    set of its own (a dogfood run from another log was ranked first of all), and the warning names the sets."""
    import polars as pl

    write_leaderboard([runs / "0", runs / "1"], tmp_path / "same")
    assert "different sets of sessions" not in caplog.text and "validated on different" not in caplog.text
    # The same test set, another validation (a sweep over data.split.val_start): ranked together, and said, since
    # the ranking reads validation PR-AUC (dogfood 106).
    shorter = tmp_path / "shorter"
    shutil.copytree(runs / "1", shorter / "1")
    val = shorter / "1" / "predictions" / "val.parquet"
    pl.read_parquet(val).head(-1).write_parquet(val)
    write_leaderboard([runs / "0", shorter / "1"], tmp_path / "val_board")
    n, frauds = (json.loads((runs / "0" / "metrics.json").read_text())["val"][k] for k in ("n", "positives"))
    said = "runs ranked together were validated on different sessions, so the validation PR-AUC they are ranked by"
    assert said in caplog.text and f"multirun/0 ({n:,} sessions, {frauds:,} fraud); " in caplog.text
    caplog.clear()
    other = tmp_path / "other"
    shutil.copytree(runs / "1", other / "1")
    test = other / "1" / "predictions" / "test.parquet"
    pl.read_parquet(test).head(-1).write_parquet(test)
    rows = write_leaderboard([runs / "0", runs / "1", other / "1"], tmp_path / "board")
    assert "the runs were tested on 2 different sets of sessions" in caplog.text
    assert sorted(r["test_set"] for r in rows) == ["A", "A", "B"]
    head, body = leaderboard_table(rows, 0.01, 0.5)
    assert head[:2] == ["test set", "rank"]
    assert [cells[:2] for cells in body] == [["A", "1"], ["A", "2"], ["B", "1"]]
    assert (tmp_path / "board" / "leaderboard.md").read_text().count("| B | 1 |") == 1
    # Another log whose ids and split match: the same test session ids, other event bytes (dogfood 49).
    relog = tmp_path / "relog"
    shutil.copytree(runs / "1", relog / "1")
    metrics = json.loads((relog / "1" / "metrics.json").read_text())
    assert metrics["provenance"]["inputs"]["events"]["sha256"]
    metrics["provenance"]["inputs"]["events"]["sha256"] = "0" * 64
    (relog / "1" / "metrics.json").write_text(json.dumps(metrics))
    caplog.clear()
    rows = write_leaderboard([runs / "0", runs / "1", relog / "1"], tmp_path / "relog_board")
    # Said, not set apart: one log as CSV and as Parquet differs in bytes too (dogfood 50).
    assert (
        "read event or label files of other contents" in caplog.text and "different sets" not in caplog.text
    )
    assert [r["test_set"] for r in rows] == ["", "", ""]
    # The same sessions with other labels are another test set (a noise label table ranked beside: dogfood 53).
    test = relog / "1" / "predictions" / "test.parquet"
    pl.read_parquet(test).with_columns((1 - pl.col("label")).alias("label")).write_parquet(test)
    rows = write_leaderboard([runs / "0", runs / "1", relog / "1"], tmp_path / "relabel_board")
    assert sorted(r["test_set"] for r in rows) == ["A", "A", "B"]


def test_a_failed_run_beside_finished_ones_is_left_out_with_a_warning(runs, tmp_path, caplog):
    """``compare outputs/train/*/*`` also matches a run that failed, and pretraining runs (metrics, no
    predictions): the others are still compared."""
    failed = tmp_path / "failed_run"
    failed.mkdir()
    pretrained = tmp_path / "pretrain_run"
    pretrained.mkdir()
    (pretrained / "metrics.json").write_text("{}")
    hydra_file = tmp_path / "multirun.yaml"  # what outputs/multirun/DATE/* matches beside the runs
    hydra_file.write_text("hydra: {}\n")
    rows = write_leaderboard([runs, failed, pretrained, hydra_file], tmp_path / "board")
    assert sorted(r["run"] for r in rows) == ["0", "1"]
    assert (
        "failed_run: no metrics.json in it or below it (a failed or unfinished run?): left out" in caplog.text
    )
    assert (
        "pretrain_run: no test predictions (a pretraining run, or an unfinished one): left out" in caplog.text
    )
    assert "multirun.yaml: a file, not a run directory: left out" in caplog.text
    with pytest.raises(FileNotFoundError, match="pretrain_run: no predictions/test.parquet"):
        write_leaderboard([pretrained])
    # A sweep's job that failed, inside the sweep's directory: its log and no metrics (dogfood 28: silent).
    sweep = tmp_path / "sweep"
    shutil.copytree(runs / "0", sweep / "0")
    (sweep / "1").mkdir()
    (sweep / "1" / "train.log").write_text("error: label_fraction must be in (0, 1], got 2.0\n")
    assert [r["run"] for r in write_leaderboard([sweep], tmp_path / "board2")] == ["0"]
    assert (
        "sweep: 1 run directory(ies) with a train.log and no metrics.json (failed or unfinished runs): left out: ['1']"
        in caplog.text
    )


def test_runs_of_an_earlier_sweep_into_the_same_directory_are_named(runs, tmp_path, caplog, monkeypatch):
    """A sweep rerun into a fixed hydra.sweep.dir with fewer jobs left the earlier sweep's other jobs, which
    compare ranked as this sweep's without a word (dogfood 106)."""
    sweep = tmp_path / "sweep"
    shutil.copytree(runs / "0", sweep / "0")
    shutil.copytree(runs / "1", sweep / "1")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    old, new = 1_700_000_000, 1_700_000_100
    os.utime(sweep / "multirun.yaml", (new, new))
    os.utime(sweep / "0" / "metrics.json", (new + 50, new + 50))  # this sweep's job
    os.utime(sweep / "1" / "metrics.json", (old, old))  # the earlier sweep's
    # Given as the sweep, as its runs (one twice, one as "."): the earlier one said once.
    monkeypatch.chdir(sweep / "1")
    for given in ([sweep], [sweep / "0", sweep / "1", "."]):
        caplog.clear()
        assert sorted(r["run"] for r in write_leaderboard(given, tmp_path / "board")) == ["0", "1"]
        assert "1 run(s) finished before the sweep that wrote its multirun.yaml began" in caplog.text
        assert "['1']" in caplog.text and "['0'" not in caplog.text
    # A copy without its times (cp -r) writes every file within seconds, in any order: none is an earlier one's.
    caplog.clear()
    os.utime(sweep / "1" / "metrics.json", (new - 5, new - 5))
    write_leaderboard([sweep], tmp_path / "board2")
    assert "finished before the sweep" not in caplog.text


def test_a_directory_without_runs_is_named_in_the_error(tmp_path, capsys):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="not_a_run: no metrics.json"):
        write_leaderboard([empty])
    with pytest.raises(FileNotFoundError, match="typo: no such run directory"):
        write_leaderboard([tmp_path / "typo"])
    with pytest.raises(SystemExit):
        main([str(empty)])
    assert str(empty) in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a percentage where a share is meant
        main([str(empty), "--fpr", "2"])
    assert "--fpr is a share between 0 and 1 (0.01 is 1%), got 2.0" in capsys.readouterr().err


def test_a_run_without_predictions_is_named_in_the_error(runs, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copy(runs / "0" / "metrics.json", broken / "metrics.json")
    with pytest.raises(FileNotFoundError, match="broken: no predictions/test.parquet"):
        write_leaderboard([broken])
    shutil.copytree(runs / "0" / "predictions", broken / "predictions")
    (broken / "metrics.json").write_text('{"val": ')  # a run cut short while writing it
    with pytest.raises(UserError, match="broken/metrics.json: not JSON"):
        write_leaderboard([broken])


def test_a_stacked_run_that_kept_one_part_alone_says_which(runs, tmp_path):
    """Its scores are LightGBM's: listed as plain 'stacked', it read as a sequence model that tied LightGBM (and one that
    kept its sequence model alone reads as that model)."""
    from seqfraud.rundir import METRICS_FILE, STACKING_REPORT

    for chosen in ("aggregates", "stacked", "sequence"):
        run = tmp_path / chosen
        shutil.copytree(runs / "0", run)
        metrics = json.loads((run / METRICS_FILE).read_text()) | {"model": "stacked"}
        if chosen == "sequence":  # a float sum's last bit: 0.9999999999999999 against 1.0 (dogfood 102)
            metrics["val"]["pr_auc"] = math.nextafter(metrics["val"]["pr_auc"], 0)
        (run / METRICS_FILE).write_text(json.dumps(metrics))
        (run / STACKING_REPORT).write_text(json.dumps({"chosen": chosen}))
    rows = write_leaderboard([tmp_path / k for k in ("aggregates", "stacked", "sequence")], tmp_path / "out")
    assert {r["run"]: r["model"] for r in rows} == {
        "aggregates": "stacked (LightGBM alone)",
        "stacked": "stacked",
        "sequence": "stacked (sequence model alone)",
    }
    # Three copies of one run tie, to the last bit or not: they share the rank (a dogfood's tie read as 1 and 2).
    table = [
        line
        for line in (tmp_path / "out" / "leaderboard.md").read_text().splitlines()
        if line.startswith("| ")
    ]
    assert [line.split(" | ")[0] for line in table[1:]] == ["| 1"] * 3


def test_the_leaderboard_says_what_share_of_the_events_a_sequence_model_reads(runs, trained_run):
    """max_len cuts a long session's earliest events: a dogfood's leaderboard put a transformer that read 17% of
    the events beside LightGBM, which reads all, with nothing to tell them apart."""
    from seqfraud.compare import leaderboard, load_run

    metrics = json.loads((trained_run / "metrics.json").read_text())
    report = json.loads((trained_run / "preprocess_report.json").read_text())
    reads = metrics["sequence_reads"]
    assert reads["events"] == pytest.approx(1 - report["events_not_read"] / report["events_in_splits"])
    assert reads["max_len"] == 64 and reads["truncated_sessions"] == report["truncated_sessions"]
    assert "sequence_reads" not in json.loads((runs / "0" / "metrics.json").read_text())  # LightGBM reads all
    rows = leaderboard([load_run(runs / "0", "lightgbm"), load_run(trained_run, "sequence")])
    head, body = leaderboard_table(
        [{**r, "sequence_reads": 0.17} if r["run"] == "sequence" else r for r in rows], 0.01, 0.5
    )
    column = head.index("events the sequence model reads")
    assert {r[head.index("run")]: r[column] for r in body} == {"lightgbm": "", "sequence": "17%"}


def test_no_run_directory_from_python_is_a_user_error():
    """write_leaderboard([]) failed with an IndexError (dogfood 60); the command takes one path at least."""
    from seqfraud.errors import UserError
    from seqfraud.reports import write_leaderboard

    with pytest.raises(UserError, match="no run directory given"):
        write_leaderboard([], Path("unused"))


def test_two_hybrids_on_one_embeddings_path_of_other_contents_are_told_apart(tmp_path):
    """A path rewritten between two hybrid runs (another encoder's vectors) read as one config (dogfood 105): the
    leaderboard's config column names the file's digest too."""
    from seqfraud.compare import Run, config_differences

    def run(name: str, digest: str) -> Run:
        config = {
            "model": {"kind": "lightgbm", "embeddings": "/data/e.parquet"},
            "paths": {"output_dir": f"/runs/{name}"},
        }
        inputs = {"embeddings": {"path": "/data/e.parquet", "sha256": digest * 64}}
        return Run(name, tmp_path / name, {"provenance": {"inputs": inputs}}, config)

    assert config_differences([run("a", "a"), run("b", "b")]) == [
        "model.embeddings=/data/e.parquet@aaaaaaaa",
        "model.embeddings=/data/e.parquet@bbbbbbbb",
    ]
    assert config_differences([run("a", "a"), run("c", "a")]) == ["", ""]


def test_runs_of_other_operating_points_rank_with_na_where_they_lack_one(runs, tmp_path, caplog):
    """A sweep over metrics.fpr: each --fpr refused the whole leaderboard on the other run (dogfood 106). The
    ranking reads validation PR-AUC, which both have: the missing cells read n/a, and a warning names the run."""
    other = tmp_path / "other"
    shutil.copytree(runs / "1", other / "1")
    metrics = json.loads((other / "1" / "metrics.json").read_text())
    metrics["test"]["recall_at_0.05_fpr"] = metrics["test"].pop("recall_at_0.01_fpr")
    (other / "1" / "metrics.json").write_text(json.dumps(metrics))
    rows = write_leaderboard([runs / "0", other / "1"], tmp_path / "board")
    assert "no ['recall_at_0.01_fpr'] (the run used other metrics.fpr/recall): n/a" in caplog.text
    head, body = leaderboard_table(rows, 0.01, 0.5)
    cells = {r[head.index("run")]: r[head.index("recall@1%FPR")] for r in body}
    assert cells[next(k for k in cells if k.endswith("1"))] == "n/a" and len(cells) == 2


def test_a_run_whose_latest_launch_failed_is_left_out(runs, tmp_path, caplog):
    """A sweep rerun into its hydra.sweep.dir whose every job failed on its input left the earlier sweep's results
    in place, and compare ranked them as the rerun's (dogfood 175), with the same overrides or others (review
    176): each launch writes its id before reading any input, and a run whose results are of another launch is
    left out, said."""
    from seqfraud.compare import find_runs

    for job in ("0", "1"):  # a run records the launch that wrote it
        recorded = json.loads((runs / job / "metrics.json").read_text())["launch"]
        assert recorded == json.loads((runs / job / "launch.json").read_text())["id"]
    assert [p.name for p in find_runs([runs])] == ["0", "1"]
    sweep = tmp_path / "sweep"
    for job in ("0", "1"):
        shutil.copytree(runs / job, sweep / job)
    (sweep / "1" / "launch.json").write_text(json.dumps({"id": "a later launch, which failed"}))
    assert [p.name for p in find_runs([sweep])] == ["0"]
    assert (
        f"{(sweep / '1').resolve()}: its latest training launch left no results (it failed or is still running: "
        "see its train.log); those there are of an earlier run: left out"
    ) in caplog.text
    (sweep / "1" / "launch.json").unlink()  # an older run's directory: taken as it is
    assert [p.name for p in find_runs([sweep])] == ["0", "1"]
