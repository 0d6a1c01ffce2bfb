"""Shared fixtures: one smoke training run and its exported artifact, built once per test session.

Heavy imports stay inside the fixtures, so test files that do not use them do not pay for them.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# One OpenMP thread, for torch here and in the processes a test starts: the tests' models are tiny and gain
# nothing from more, while on a busy machine (the other xdist worker, or anything else on the box) the threads of
# one op wait on each other at every barrier, many times slower. It also makes the thread count, and so the
# floating-point sums, the same for every run a test compares (training's threads=auto reads it).
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Fixtures that train or export (a test using one of them, or a fixture built on them, trains or exports too):
# this file's, then test_training's smoke_run, test_backtest's backtest, test_compare's and test_cli_errors' runs,
# test_entity_pipeline's entity_run and entity_artifact, test_online's gru_run and gru_artifact, test_pretrain's pretrained.
HEAVY_FIXTURES = {
    "trained_run",
    "exported_artifact",
    "test_period_events",
    "smoke_run",
    "backtest",
    "runs",
    "entity_run",
    "entity_artifact",
    "gru_run",
    "gru_artifact",
    "pretrained",
}
# Files whose fixtures start servers, processes or multi-process training for every test.
INTEGRATION_FILES = {
    "test_api_fuzz.py",
    "test_cli_errors.py",
    "test_ddp.py",
    "test_serve_limits.py",
    "test_serve_load.py",
    "test_spark.py",
    "test_state_store.py",
}


def pytest_collection_modifyitems(config, items):
    """Mark every test ``integration`` (it trains, exports, or runs a process or server) or else ``unit``.

    A test may also mark itself ``integration`` when none of the signs below shows it.
    """
    for item in items:
        function = getattr(item, "function", None)
        integration = (
            item.get_closest_marker("integration") is not None
            or item.get_closest_marker("slow") is not None
            or not HEAVY_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
            or item.path.name in INTEGRATION_FILES
            or "subprocess" in getattr(getattr(function, "__code__", None), "co_names", ())
        )
        item.add_marker("integration" if integration else "unit")


# Files that start Spark: one xdist worker runs them all, so that they share one JVM (and its warmed-up code) and
# one session (spark_session below) instead of each worker starting its own.
SPARK_FILES = {"test_spark.py", "test_label_time.py"}


@pytest.hookimpl(optionalhook=True)  # an xdist hook: pytest without xdist (-p no:xdist) must not reject it
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the files of SPARK_FILES as one unit of work, sent first: the longest unit starts
    while the other worker builds the shared runs (built_once), which that one then finds ready."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SparkTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "spark" if Path(scope).name in SPARK_FILES else scope

        def _assign_work_unit(self, node) -> None:
            if "spark" in self.workqueue:
                self.workqueue.move_to_end("spark", last=False)
            super()._assign_work_unit(node)

    return SparkTogether(config, log)


@contextmanager
def single_torch_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine their barriers stall."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def service_client(artifact, limits=None, **kwargs):
    """A TestClient of the scoring service; the app sets torch's threads for this whole process, so give them back.

    Without ``limits``, the default ones but for one batch and one explain worker process, not two of each: every
    worker loads the model when the app starts, and these tests send one request at a time.
    """
    import torch
    from fastapi.testclient import TestClient

    from seqfraud.scoring.service import Limits, create_app

    if limits is None:
        limits = Limits(max_batch_in_flight=1, max_explain_in_flight=1)
    threads = torch.get_num_threads()
    try:
        with TestClient(
            create_app(artifact, limits=limits, **kwargs), raise_server_exceptions=False
        ) as client:
            yield client
    finally:
        torch.set_num_threads(threads)


@contextmanager
def local_spark():
    """A local Spark session; the engine's getOrCreate reuses it."""
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("seqfraud-tests")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.ui.enabled", "false")
        # Keep every shuffle at 4 partitions, so that tiny inputs still take the distributed paths
        # (a sort over several range partitions, several files per split).
        .config("spark.sql.adaptive.coalescePartitions.enabled", "false")
        .config("spark.driver.memory", "1g")
        # A short-lived JVM: the quick JIT tier and the serial collector halve the module's time.
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        # Expressions interpreted, not compiled to Java first: on a few thousand rows the compiling was most of
        # the time (five parity tests 60-74 s to 40-47 s). Their results are Spark's alike; parity holds them.
        .config("spark.sql.codegen.wholeStage", "false")
        .config("spark.sql.codegen.factoryMode", "NO_CODEGEN")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def spark_session():
    """One local Spark session for every test of this process that uses Spark (see SPARK_FILES)."""
    with local_spark() as session:
        yield session


@pytest.fixture(autouse=True)
def root_logging_restored():
    """The root logger's handlers and level as they were before each test: ``seqfraud serve``'s main calls
    ``logging.basicConfig``, whose handler writes to the stream a test captured; once that stream is closed,
    every later log line of the worker (an httpx request, a served model) printed a logging error into the
    stderr that later tests assert on."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture
def one_torch_thread():
    with single_torch_thread():
        yield


def compose_train(overrides: list[str]):
    """The packaged ``train`` config with ``overrides``, as the command line composes it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides)


def train_into(base: Path, *overrides: str, callbacks: list | None = None) -> Path:
    """``train()`` of the packaged config with ``overrides`` (and extra Lightning ``callbacks``), writing its run
    and data under ``base``; the run dir."""
    os.environ.setdefault("WANDB_MODE", "disabled")
    from hydra import compose, initialize_config_dir

    from seqfraud.training.train import train

    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                f"paths.output_dir={base / 'run'}",
                f"paths.data_dir={base / 'data'}",
                "logger=none",
            ],
        )
    with single_torch_thread():
        train(cfg, callbacks)
    return base / "run"


def built_once(tmp_path_factory, name: str, build: Callable[[Path], Path]) -> Path:
    """``build(folder)``'s result, built once per test run: under pytest-xdist the first worker to ask builds it
    (the others wait on a file lock) into a folder every worker of the run reads. Treat it as read-only."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, the workers' base folders inside
    folder, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            done.write_text(str(build(folder)))
    return Path(done.read_text())


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """The smoke experiment trained into a temporary run directory; treat it as read-only."""
    return built_once(tmp_path_factory, "trained", lambda base: train_into(base, "+experiment=smoke"))


@pytest.fixture(scope="session")
def exported_artifact(trained_run, tmp_path_factory) -> Path:
    """``trained_run`` exported in every format; treat it as read-only (copy it to tamper with it)."""

    def export(folder: Path) -> Path:
        from seqfraud.export.exporter import export_run

        with single_torch_thread():
            return export_run(trained_run, folder / "artifact")

    return built_once(tmp_path_factory, "export", export)


@pytest.fixture(scope="session")
def test_period_events(trained_run):
    """The raw events of the run's test sessions, as a Polars frame in the training column names."""
    import polars as pl
    from omegaconf import OmegaConf

    from seqfraud import schema as S
    from seqfraud.features.spec import Spec

    spec = Spec.load(trained_run / "spec.json")
    ids = pl.read_parquet(trained_run / "predictions" / "test.parquet")[S.SESSION_ID]
    events = pl.read_parquet(OmegaConf.load(trained_run / "config.yaml").data.events)
    test = events.filter(pl.col(spec.schema.session_id).cast(pl.String).is_in(ids.implode()))
    return test.select(spec.schema.event_columns)  # what a client sends: the model's columns only
