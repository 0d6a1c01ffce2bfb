"""Commands as a user runs them: a user error is one ``error:`` line on stderr and exit status 2, no traceback,
under Hydra too; ``SEQFRAUD_DEBUG=1`` brings the traceback back.

Each command costs seconds of imports, so the commands run once, two at a time, and the tests read their results;
each runs as ``python ARGS`` would, in a fork of one process that made the imports (:func:`fork_each`).
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

from seqfraud.errors import DEBUG_ENV, EXIT_USER_ERROR, UserError

ROOT = Path(__file__).resolve().parents[1]
# Imported once, by fork_each's process: 5 to 8 s of CPU a command otherwise, 22 commands (93 s of the suite's setup).
PRELOADED = [
    "torch",
    "pytorch_lightning",
    "polars",
    "hydra",
    "seqfraud.training.train",
    "seqfraud.scoring.scorer",
]


def fork_each(jobs: list[dict], at_once: int = 2) -> dict[str, int]:
    """In a process of its own, single-threaded (not multiprocessing's fork server, which the service's workers
    share: review 188): import :data:`PRELOADED` once, then run each job ``{name, args, out, err, env}`` in a fork
    (:func:`as_python`), ``at_once`` at a time; each one's exit status by name."""
    for module in PRELOADED:
        importlib.import_module(module)
    status: dict[str, int] = {}
    running: dict[int, str] = {}
    queue = list(jobs)
    while queue or running:
        while queue and len(running) < at_once:
            job = queue.pop(0)
            pid = os.fork()
            if pid == 0:  # the child never returns here: a second loop of forks would run every job again
                try:
                    as_python(job["args"], Path(job["out"]), Path(job["err"]), job["env"])
                finally:
                    os._exit(70)
            running[pid] = job["name"]
        pid, code = os.wait()
        status[running.pop(pid)] = os.waitstatus_to_exitcode(code)
    return status


def as_python(args: list[str], out: Path, err: Path, env: dict[str, str]) -> None:
    """In a fork: ``python *args`` from the repository, stdout and stderr written to files, exiting with the status
    the interpreter would; killed after 120 s."""
    signal.alarm(120)
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.stdout, sys.stderr = (os.fdopen(fd, "w", closefd=False) for fd in (1, 2))  # for the process' life
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)
    status = 0
    try:
        if args[0] == "-m":  # sys.path[0] as the interpreter sets it: the working directory, or the script's
            sys.path[0], sys.argv = str(ROOT), args[1:]
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.path[0], sys.argv = str((ROOT / args[0]).parent), args
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit as e:
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        status = e.code if isinstance(e.code, int) else int(e.code is not None)
    except Exception:  # noqa: BLE001 -- any error: the interpreter's traceback and status
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


BAD_CSV = (
    "session_id,timestamp,event_type,amount\n"
    + "s1,2026-03-01T00:00:00Z,view,1.5\n" * 3
    + "s1,2026-03-01T00:00:01Z,view,n/a\n"
)


@pytest.fixture(scope="module")
def runs(
    exported_artifact, trained_run, tmp_path_factory
) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "bad.csv").write_text(BAD_CSV)
    (tmp / "dup.csv").write_text(
        "session_id,timestamp,event_type,event_type\ns1,2026-03-01T00:00:00Z,view,view\n"
    )
    score = [sys.executable, "-m", "seqfraud", "score", "--no-progress", "--out", str(tmp / "scores.parquet")]
    commands = {
        "score: no artifact": score + ["--artifact", str(tmp / "none"), "--events", str(tmp / "bad.csv")],
        "score: bad csv": score + ["--artifact", str(exported_artifact), "--events", str(tmp / "bad.csv")],
        "train: no events": [
            sys.executable,
            "train.py",
            f"data.events={tmp / 'none' / 'events.parquet'}",
            f"hydra.run.dir={tmp / 'train'}",
            "logger=none",
        ],
        "train: output dir apart": [
            sys.executable,
            "train.py",
            f"data.events={tmp / 'none' / 'events.parquet'}",
            f"hydra.run.dir={tmp / 'train2'}",
            f"paths.output_dir={tmp / 'out2'}",
            "logger=none",
        ],
        "export: no run": [
            sys.executable,
            "export.py",
            f"run_dir={tmp / 'none'}",
            f"out={tmp / 'artifact'}",
            f"hydra.run.dir={tmp / 'export'}",
        ],
        "export: a misspelt setting": [
            sys.executable,
            "export.py",
            f"run_dir={tmp / 'none'}",
            f"out={tmp / 'artifact'}",
            "+calibrations=isotonic",
            f"hydra.run.dir={tmp / 'export'}",
        ],
        "preprocess: a misspelt setting": [
            sys.executable,
            "-m",
            "seqfraud",
            "preprocess",
            "+features.maxlen=64",
            f"hydra.run.dir={tmp / 'preprocess-misspelt'}",
        ],
        "preprocess: a split fraction of 0": [
            sys.executable,
            "-m",
            "seqfraud",
            "preprocess",
            "data.split.test_fraction=0",
            f"hydra.run.dir={tmp / 'preprocess-fraction'}",
        ],
        "preprocess: duplicated column": [
            sys.executable,
            "-m",
            "seqfraud",
            "preprocess",
            f"data.events={tmp / 'dup.csv'}",
            f"hydra.run.dir={tmp / 'pre'}",
        ],
        # What spark-submit runs on a cluster (docs/scale.md): the file, as a script.
        "preprocess: as a script": [
            sys.executable,
            "seqfraud/cli/preprocess.py",
            f"data.events={tmp / 'dup.csv'}",
            f"hydra.run.dir={tmp / 'pre5'}",
        ],
        "preprocess: unknown override key": [
            sys.executable,
            "-m",
            "seqfraud",
            "preprocess",
            "data.evnts=x",
            f"hydra.run.dir={tmp / 'pre2'}",
        ],
        "preprocess: a key without its section": [
            sys.executable,
            "-m",
            "seqfraud",
            "preprocess",
            "split.label_cutoff=test_start",
            f"hydra.run.dir={tmp / 'pre6'}",
        ],
        "train: a setting the model has not": [
            sys.executable,
            "train.py",
            "model=lightgbm",
            "model.d_model=32",
            f"hydra.run.dir={tmp / 'lgbm'}",
        ],
        "train: misspelt settings": [
            sys.executable,
            "train.py",
            "model.d_modle=32",
            f"hydra.run.dir={tmp / 'typo'}",
        ],
        "train: a misspelt trainer setting": [
            sys.executable,
            "train.py",
            "trainer.max_epoch=2",
            f"hydra.run.dir={tmp / 'typo2'}",
        ],
        "train: two experiments": [
            sys.executable,
            "train.py",
            "+experiment=smoke",
            "+experiment=synthetic_gru",
            f"hydra.run.dir={tmp / 'two'}",
        ],
        "preprocess: bad split date": [
            sys.executable,
            "-m",
            "seqfraud",
            "preprocess",
            "+experiment=smoke",
            f"paths.data_dir={trained_run.parent / 'data'}",  # the session run's generated log
            "data.split.test_start=2026-13-01",
            f"hydra.run.dir={tmp / 'pre4'}",
        ],
        # Splits train.py refuses: refused by preprocess too, before a prepared_dir is built on them (dogfood 42).
        "preprocess: no test split": [
            sys.executable,
            "-m",
            "seqfraud",
            "preprocess",
            "+experiment=smoke",
            f"paths.data_dir={trained_run.parent / 'data'}",
            "data.split.test_start='2099-01-01'",
            f"hydra.run.dir={tmp / 'pre6'}",
        ],
        "debug: preprocess, duplicated column": [
            sys.executable,
            "-m",
            "seqfraud",
            "preprocess",
            f"data.events={tmp / 'dup.csv'}",
            f"hydra.run.dir={tmp / 'pre3'}",
        ],
        # The [train] extra missing: Lightning cannot be imported (a None in sys.modules stops an import).
        # train.py and export.py as `seqfraud train` and `seqfraud export`: they printed a traceback (review 178).
        # A misspelt setting is said before Lightning is imported: in a second, not after its 5 to 8.
        **{
            f"{script}: no [train] extra{misspelt}": [
                sys.executable,
                "-c",
                (
                    "import runpy, sys; sys.modules['pytorch_lightning'] = None; "
                    f"sys.argv = {[script, *args, f'hydra.run.dir={tmp / script}']!r}; "
                    f"runpy.run_path('{script}', run_name='__main__')"
                ),
            ]
            for script, misspelt, args in (
                ("train.py", "", ["logger=none"]),
                ("train.py", ", misspelt", ["model.d_modle=32"]),
                ("export.py", "", [f"run_dir={tmp / 'none'}", f"out={tmp / 'artifact'}"]),
            )
        },
        "unknown subcommand": [sys.executable, "-m", "seqfraud", "trian"],
        # Job 0's settings cannot work; job 1 (LightGBM on the session run's log) still runs.
        "sweep: one job's bad settings": [
            sys.executable,
            "train.py",
            "-m",
            "+experiment=smoke",
            "model=lightgbm",
            "model.num_boost_round=5",
            "trainer.max_epochs=2",  # read by no LightGBM fit: said
            "label_fraction=2.0,1.0",
            f"paths.data_dir={trained_run.parent / 'data'}",
            f"hydra.sweep.dir={tmp / 'sweep'}",
            "logger=none",
        ],
    }
    env = {k: v for k, v in os.environ.items() if k not in (DEBUG_ENV, "HYDRA_FULL_ERROR")} | {
        "WANDB_MODE": "disabled"
    }

    # Those that stop an import, which a fork has made already, run in fresh processes.
    fresh = {name for name in commands if "[train] extra" in name}
    done = {
        name: subprocess.run(
            commands[name], check=False, cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
        )
        for name in fresh
    }
    # The others two at a time: all 22 started at once shared two cores for minutes, and ran past their timeout.
    jobs = [
        {
            "name": name,
            "args": args[1:],
            "out": str(tmp / f"{name}.out"),
            "err": str(tmp / f"{name}.err"),
            "env": env | ({DEBUG_ENV: "1"} if name.startswith("debug") else {}),
        }
        for name, args in commands.items()
        if name not in fresh
    ]
    forked = subprocess.run(
        [
            sys.executable,
            "-c",
            (
                f"import json, sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); from test_cli_errors import "
                "fork_each; print(json.dumps(fork_each(json.load(sys.stdin))))"
            ),
        ],
        input=json.dumps(jobs),
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    status = json.loads(forked.stdout.splitlines()[-1])
    for job in jobs:
        name = job["name"]
        out, err = Path(job["out"]).read_text(), Path(job["err"]).read_text()
        done[name] = subprocess.CompletedProcess(commands[name], status[name], out, err)
    return {name: (done[name], tmp) for name in commands}


def error_line(runs, name: str) -> str:
    """The run's one ``error:`` line: the last on stderr, after at most a library's own log lines."""
    result, _ = runs[name]
    lines = result.stderr.strip().splitlines()
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    return lines[-1]


def test_score_without_an_artifact(runs):
    assert runs["score: no artifact"][0].stderr.strip().splitlines() == [
        error_line(runs, "score: no artifact")
    ]
    assert "none: not an artifact" in error_line(runs, "score: no artifact")


def test_score_with_a_bad_csv_names_file_column_and_count(runs):
    line = error_line(runs, "score: bad csv")
    assert (
        "bad.csv: column 'amount': 1 row(s) hold a value that is not a number (first: 'n/a', data row 4)"
        in line
    )
    assert not (runs["score: bad csv"][1] / "scores.parquet").exists()


def test_train_fails_in_validation_before_training(runs):
    line = error_line(runs, "train: no events")
    assert f"{runs['train: no events'][1] / 'none' / 'events.parquet'}: no such file" in line
    # One line on stderr, as the README says: Lightning's "Seed set to 42" came first (review 113).
    assert runs["train: no events"][0].stderr.strip().splitlines() == [line]
    assert not (runs["train: no events"][1] / "train" / "checkpoints").exists()


def test_a_run_directory_apart_from_hydras_is_warned_of(runs):
    """Two dogfoods set paths.output_dir beside hydra.run.dir and found the run in one place, its log in another."""
    error_line(runs, "train: output dir apart")
    tmp = runs["train: output dir apart"][1]
    assert (
        f"paths.output_dir={tmp / 'out2'} is not this run's Hydra directory {tmp / 'train2'}"
        in runs["train: output dir apart"][0].stdout
    )
    assert "paths.output_dir" not in runs["train: no events"][0].stdout


def test_export_without_a_run(runs):
    assert runs["export: no run"][0].stderr.strip().splitlines() == [error_line(runs, "export: no run")]
    assert error_line(runs, "export: no run").endswith("none: no such run directory")  # not "no checkpoint"


def test_preprocess_with_a_duplicated_column(runs):
    for name in ("preprocess: duplicated column", "preprocess: as a script"):
        assert "dup.csv: column(s) ['event_type'] appear more than once" in error_line(runs, name)


def test_preprocess_refuses_the_splits_training_would(runs):
    """Before anything is written: a refused run left a whole prepared directory, spec and datasets (dogfood 56)."""
    assert "the test split holds no session" in error_line(runs, "preprocess: no test split")
    out = runs["preprocess: no test split"][1] / "pre6"
    assert not {p.name for p in out.iterdir()} & {"spec.json", "data", "preprocess_report.json"}


def test_a_split_date_that_does_not_parse_is_one_line(runs):
    line = error_line(runs, "preprocess: bad split date")
    assert "data.split.test_start: '2026-13-01' is not an ISO 8601 date or datetime" in line


def test_a_value_hydras_grammar_cannot_read_says_how_to_quote_it():
    """An unquoted '=' or '~' in a path got Hydra's grammar error alone; only a comma was told to quote (dogfood
    39)."""
    from hydra.errors import OverrideParseException

    from seqfraud.errors import one_line

    said = one_line(OverrideParseException(override="data.events=/a=b", message="mismatched input '='"))
    assert said.startswith("mismatched input '='") and "is quoted: \"key='value'\"" in said


def test_hydra_config_errors_are_one_line_and_status_2(runs):
    assert "Could not override 'data.evnts'" in error_line(runs, "preprocess: unknown override key")
    # A key whose section is left out is told its path (a dogfood got "Key 'split' is not in struct" alone).
    assert error_line(runs, "preprocess: a key without its section").endswith(
        "(Key 'split' is not in struct) (did you mean 'data.split.label_cutoff'?)"
    )
    # Hydra's advice, +model.d_model=32, gave LightGBM a setting it ignores; what did not fit was the setting, as
    # a sequence model's search (hparams_search=optuna) gave model=lightgbm (dogfood 106).
    presets = (
        " (model=lightgbm and the sequence models take different ones: conf/model/*.yaml; a search's "
        "hydra.sweeper.params, such as hparams_search=optuna's of a sequence model, must name the chosen model's own)"
    )
    assert error_line(runs, "train: a setting the model has not") == (
        "error: Could not override 'model.d_model': the model preset chosen has no such setting" + presets
    )
    # A misspelt setting is told the one it is close to (review 113: Hydra's advice to add it with + alone).
    assert error_line(runs, "train: misspelt settings") == (
        "error: Could not override 'model.d_modle': the model preset chosen has no such setting (did you mean "
        "'model.d_model'?)" + presets
    )
    # Without Hydra's advice to add it with +, which the next run refused again (review 117).
    assert error_line(runs, "train: a misspelt trainer setting") == (
        "error: Could not override 'trainer.max_epoch'. (Key 'max_epoch' is not in struct) (did you mean "
        "'trainer.max_epochs'?)"
    )
    # Hydra's own advice for two +experiment= ("use 'override experiment: ...'") fits no command line.
    assert error_line(runs, "train: two experiments") == (
        "error: Multiple values for experiment: give them as one list, '+experiment=[A,B,C]' (quoted for the "
        "shell), each applied over the ones before"
    )


def test_export_and_preprocess_refuse_a_setting_their_config_has_not(runs):
    """+calibrations=isotonic exported Platt's calibration, and preprocess took settings train refuses, without a
    word (dogfood 159)."""
    assert error_line(runs, "export: a misspelt setting").startswith(
        "error: calibrations: no such setting (did you mean 'calibration'?); the top level takes ['calibration'"
    )
    assert error_line(runs, "preprocess: a misspelt setting").startswith(
        "error: features.maxlen: no such setting (did you mean 'max_len'?)"
    )
    # And the values train refuses before any data is read (review 165: a test_fraction of 0 was written).
    assert error_line(runs, "preprocess: a split fraction of 0") == (
        "error: data.split.test_fraction must be in (0, 1), got 0"
    )


def test_one_sweep_jobs_bad_settings_fail_that_job_alone(runs):
    """A user error became SystemExit, which Hydra's launcher does not catch: the first bad job ended the whole
    sweep (dogfood 28). Now it fails alone, the other jobs run, and the sweep still ends in the one-line error."""
    assert (
        error_line(runs, "sweep: one job's bad settings")
        == "error: label_fraction must be in (0, 1], got 2.0"
    )
    result, tmp = runs["sweep: one job's bad settings"]
    assert "job 0 failed: label_fraction must be in (0, 1], got 2.0" in result.stdout  # Hydra logs to stdout
    # An override LightGBM never reads ran without a word (dogfood 64).
    assert "model=lightgbm fits no sequence model, so trainer.max_epochs=2 change(s) nothing" in result.stdout
    assert (tmp / "sweep" / "1" / "metrics.json").is_file() and not (
        tmp / "sweep" / "0" / "metrics.json"
    ).exists()


def test_debug_switch_shows_the_traceback(runs):
    result, _ = runs["debug: preprocess, duplicated column"]
    assert result.returncode != 0 and "Traceback" in result.stderr and "DataValidationError" in result.stderr


@pytest.mark.parametrize("script", ["train.py", "export.py"])
def test_a_missing_extra_names_the_install_command(runs, script):
    line = error_line(runs, f"{script}: no [train] extra")
    assert line.startswith(f"error: seqfraud {script[:-3]} needs the [train] extra")
    assert 'pip install "seqfraud[train]"' in line and "pytorch_lightning" in line
    assert runs[f"{script}: no [train] extra"][0].stderr.strip().splitlines() == [line]  # no line of Hydra's


def test_a_misspelt_setting_is_said_before_lightning_is_imported(runs):
    assert "did you mean 'model.d_model'" in error_line(runs, "train.py: no [train] extra, misspelt")


def test_a_missing_submodule_of_an_installed_package_is_no_missing_extra(monkeypatch):
    """``sklearn.metrics`` missing from an installed sklearn was told to install the [train] extra, which was
    there (review 180): a broken install keeps its traceback."""
    import importlib.util
    from types import SimpleNamespace

    from seqfraud import cli

    def broken(name: str):
        raise ModuleNotFoundError("No module named 'sklearn.metrics'", name="sklearn.metrics")

    # The dispatcher's importlib alone: every other caller keeps the real one.
    monkeypatch.setattr(cli, "importlib", SimpleNamespace(import_module=broken, util=importlib.util))
    with pytest.raises(ModuleNotFoundError, match="sklearn.metrics"):
        cli.main(["train"])
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)  # as the test commands above stop its import
    assert not cli.installed("pytorch_lightning") and not cli.installed("no_such_module_0")


def test_an_unknown_subcommand_lists_the_subcommands(runs):
    assert "unknown subcommand 'trian'" in error_line(runs, "unknown subcommand")
    assert "train, export, score, serve" in error_line(runs, "unknown subcommand")


def test_help_lists_every_subcommand(capsys):
    from seqfraud.cli import COMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)
    assert {
        "preprocess",
        "train",
        "export",
        "score",
        "serve",
        "backtest",
        "compare",
        "monitor",
        "explain",
        "synthetic",
        "sign",
    } <= set(COMMANDS)


def test_user_config_folder_through_the_search_path(tmp_path, monkeypatch, capsys):
    """An experiment in the user's own folder composes with the packaged config, from outside the checkout.

    In process, through the ``main`` the ``seqfraud`` script calls: a new interpreter would spend its time
    importing what ``train`` imports, and the commands above already run as a user runs them.
    """
    from seqfraud.cli import main

    (tmp_path / "myconf" / "experiment").mkdir(parents=True)
    (tmp_path / "myconf" / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /model: tiny\nexperiment_name: mine\nseed: 7\n"
    )
    monkeypatch.chdir(tmp_path)
    argv = ["train", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "+experiment=mine", "--cfg", "job"]
    assert main(argv) is None  # a user error would exit with status 2
    out = capsys.readouterr().out
    assert "experiment_name: mine" in out and "seed: 7" in out
    assert "d_model: 16" in out  # model=tiny, a packaged config the user's experiment overrides to


def test_an_experiment_file_without_a_name_is_said(tmp_path, monkeypatch):
    """A user's experiment file without experiment_name ran as 'default': its folder, W&B group and compare row
    said nothing of it (dogfood 219)."""
    import seqfraud.training.train as training
    from seqfraud.cli import main

    monkeypatch.setattr(training, "train", lambda cfg: None)  # the warning comes before any data is read
    (tmp_path / "myconf" / "experiment").mkdir(parents=True)
    (tmp_path / "myconf" / "experiment" / "mine.yaml").write_text("# @package _global_\nseed: 7\n")
    monkeypatch.chdir(tmp_path)
    main(["train", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "+experiment=mine", "logger=none"])
    logs = "".join(p.read_text() for p in tmp_path.glob("outputs/train/default/*/train.log"))
    assert "+experiment=mine sets no experiment_name, so its runs are named 'default'" in logs
    # A backtest too (review 226).
    from seqfraud import backtest

    def stop(cfg):
        raise UserError("stopped before any data is read")

    monkeypatch.setattr(backtest, "run_backtest", stop)
    with pytest.raises(SystemExit):
        main(["backtest", f"hydra.searchpath=[file://{tmp_path / 'myconf'}]", "+experiment=mine"])
    logs = "".join(p.read_text() for p in tmp_path.glob("outputs/backtest/default/*/*.log"))
    assert "+experiment=mine sets no experiment_name" in logs


def test_command_reports_user_errors_and_lets_bugs_through(capsys, monkeypatch):
    from seqfraud.data.events import DataValidationError
    from seqfraud.errors import command

    @command
    def main(error: Exception) -> None:
        raise error

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(DataValidationError("e.csv: column 'amount': 3 row(s) hold a value that is not a number"))
    assert exit_.value.code == EXIT_USER_ERROR
    assert (
        capsys.readouterr().err
        == "error: e.csv: column 'amount': 3 row(s) hold a value that is not a number\n"
    )
    with pytest.raises(SystemExit):
        main(FileNotFoundError(2, "No such file or directory", "x.parquet"))
    assert "x.parquet" in capsys.readouterr().err
    with pytest.raises(KeyError):  # a bug keeps its traceback
        main(KeyError("bug"))
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(DataValidationError):
        main(DataValidationError("e.csv: shown with its traceback"))


@pytest.mark.parametrize("experiment", ["smoke", "synthetic_gru"])
def test_preprocess_composes_every_training_experiment(experiment, capsys):
    """``seqfraud preprocess`` reads the training config, so an experiment that overrides a training group
    (``override /model``) composes there too: a prepared_dir for it is one command."""
    from seqfraud.cli import main

    assert main(["preprocess", f"+experiment={experiment}", "--cfg", "job"]) is None
    assert f"experiment_name: {experiment}" in capsys.readouterr().out


def test_a_tilde_in_hydras_run_directory_is_refused(tmp_path):
    """Hydra does not expand ~: hydra.run.dir='~/runs/x' ran into a folder named '~' (dogfood 39)."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "hydra.run.dir='~/runs/x'", "logger=none"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != DEBUG_ENV} | {"WANDB_MODE": "disabled"},
    )
    assert result.returncode == EXIT_USER_ERROR, result.stderr
    # One line, as every user error (Hydra's "Error executing job with overrides" came first: review 161).
    [line] = result.stderr.strip().splitlines()
    assert "write hydra.run.dir='${oc.env:HOME}/runs/x'" in line
    assert "removed it again" in line
    assert not (tmp_path / "~").exists()  # a folder named ~ invites rm -r ~


def test_a_tilde_folder_holding_more_than_hydras_files_is_left(tmp_path):
    from seqfraud.cli.hydra_main import _remove_hydras_folder

    top = tmp_path / "~"
    (top / "runs" / "x" / ".hydra").mkdir(parents=True)
    (top / "runs" / "x" / "train.log").touch()
    (top / "runs" / "mine.txt").touch()
    assert not _remove_hydras_folder(top / "runs" / "x", top)
    assert (top / "runs" / "mine.txt").exists() and not (top / "runs" / "x").exists()
    (top / "runs" / "y").mkdir()
    (top / "runs" / "y" / "model.ckpt").touch()
    assert not _remove_hydras_folder(top / "runs" / "y", top)
    assert (top / "runs" / "y" / "model.ckpt").exists()
    assert not _remove_hydras_folder(tmp_path / "elsewhere", top)


@pytest.mark.parametrize(
    "command, args, says",
    [
        (
            "monitor",
            ["--artifact", "A", "--current", "E", "--out", "{file}"],
            "is a file; this writes a folder",
        ),
        ("compare", ["R", "--out", "{file}"], "is a file; this writes a folder"),
        ("synthetic", ["--sessions", "5", "--out", "{file}"], "is a file; this writes a folder"),
        ("sign", ["keygen", "--out", "{file}"], "is a file; this writes a folder"),
        (
            "explain",
            ["--artifact", "A", "--events", "E", "--session", "s", "--out", "{folder}"],
            "is a folder",
        ),
        ("score", ["--artifact", "A", "--events", "E", "--out", "{folder}"], "is a folder"),
    ],
)
def test_an_output_of_the_wrong_kind_is_refused_by_its_flag(command, args, says, tmp_path, capsys):
    """A file where a command writes a folder, or a folder where it writes a file, failed with a FileExistsError
    or IsADirectoryError traceback (dogfood 55)."""
    import importlib

    (tmp_path / "file").write_text("not a folder")
    argv = [a.format(file=tmp_path / "file", folder=tmp_path) for a in args]
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module(f"seqfraud.cli.{command}").main(argv)
    said = capsys.readouterr().err
    assert exit_.value.code == EXIT_USER_ERROR and f"argument --out: {tmp_path}" in said and says in said


@pytest.mark.parametrize("command", ["score", "embed"])
def test_a_device_this_machine_lacks_is_refused_by_its_flag(command, tmp_path, capsys):
    """--device nosuch failed with torch's RuntimeError, --device cuda on a CPU build of torch with an
    AssertionError, each as a traceback (dogfood 55)."""
    import importlib

    import torch

    main = importlib.import_module(f"seqfraud.cli.{command}").main
    cases = [("nosuch", "'nosuch' is not a torch device")]
    if not torch.cuda.is_available():
        cases.append(("cuda", "cuda: this torch sees no CUDA device"))
    for name, says in cases:
        with pytest.raises(SystemExit) as exit_:
            main(["--artifact", str(tmp_path), "--out", str(tmp_path / "o.parquet"), "--device", name])
        assert exit_.value.code == EXIT_USER_ERROR and says in capsys.readouterr().err


def test_a_key_hydra_refuses_is_told_where_it_lives():
    """Hydra's advice for a key not in the config, ``+backtest.windws=3``, added a setting nothing reads; a key of
    another command's, or one a null left out, was told to be itself (reviews 185 and 186)."""
    from seqfraud.config import where_key_lives

    assert where_key_lives("backtest.windws", "backtest") == " (did you mean 'backtest.windows'?)"
    assert where_key_lives("split.label_cutoff", "train") == " (did you mean 'data.split.label_cutoff'?)"
    assert where_key_lives("backtest.windows", "train") == (
        " (backtest.windows is a setting of seqfraud backtest, not of seqfraud train)"
    )
    assert where_key_lives("trainer.max_epochs", "export") == (
        " (trainer.max_epochs is a setting of training, not of seqfraud export)"
    )
    assert where_key_lives("data.synthetic.seed", "train") == (
        " (a null or a preset chosen above data.synthetic.seed leaves it out of this run's settings)"
    )
    assert (
        where_key_lives("optim.learning_rate", "train") == ""
    )  # a sibling's name is no hint (optim.min_lr_ratio)
