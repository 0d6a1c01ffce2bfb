"""Start the other local DDP ranks of a run as ``python -m seqfraud.cli.rank RUN_DIR``.

Lightning's own launcher re-runs ``sys.argv`` for each rank. Under a Hydra multirun that re-runs the whole
sweep in every child, and a ``${now:}`` run directory drifts between processes. Here the current process is
rank 0: it has already preprocessed and written the run directory, so each child only rebuilds the config,
the spec and the dataset paths from it and runs the same fit, with no logger. Processes that torchrun or
SLURM start are left alone.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as L
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

from seqfraud.errors import ConfigError

log = logging.getLogger(__name__)

ENV_KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK", "OMP_NUM_THREADS")
READY_ENV = "SEQFRAUD_DDP_READY"  # a child touches this file once it is about to join the process group


def launcher_rank_and_world() -> tuple[int, int]:
    """This process's (global rank, world size) as an outside launcher set them: (0, 1) when there is none.

    torchrun (and our own children) set ``RANK``/``WORLD_SIZE``; ``srun`` sets its task ids, which is what
    Lightning's SLURM environment reads.
    """
    if SLURMEnvironment.detect():
        return int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


class ChildFailed(RuntimeError):
    """A rank started by :func:`local_processes` exited with an error."""


def _raise_if_failed(children: list[tuple[int, subprocess.Popen, Path]]) -> None:
    failed = [(rank, proc.returncode, path) for rank, proc, path in children if proc.poll() not in (None, 0)]
    if failed:
        raise ChildFailed(
            "DDP rank(s) failed: "
            + "; ".join(
                f"rank {rank} exited with {code}, last output ({path}):\n{_tail(path)}"
                for rank, code, path in failed
            )
        )


@contextmanager
def local_processes(trainer: L.Trainer, run_dir: Path) -> Iterator[None]:
    """Around ``trainer.fit`` on rank 0: start ranks 1.. of a single-node DDP job, then wait for them.

    Does nothing unless Lightning itself would launch (DDP with several local devices and no outside
    launcher). On exit it destroys the process group and restores the environment and thread count, so the
    next job of a Hydra multirun in this process starts clean.
    """
    strategy = trainer.strategy
    env = getattr(strategy, "cluster_environment", None)
    if os.environ.get(READY_ENV):  # a child we started: tell rank 0 this rank is about to join
        Path(os.environ[READY_ENV]).touch()
    # _SubprocessScriptLauncher is the launcher that would re-run sys.argv (script-based DDP, not spawn).
    if not (
        isinstance(strategy.launcher, _SubprocessScriptLauncher)
        and trainer.num_devices > 1
        and env is not None
        and not env.creates_processes_externally
    ):
        yield
        return
    if trainer.num_nodes > 1:
        raise ValueError(
            "trainer.num_nodes > 1 needs an outside launcher (torchrun or SLURM); see docs/scale.md"
        )
    world = trainer.num_devices
    saved = {k: os.environ.get(k) for k in ENV_KEYS}
    threads = torch.get_num_threads()
    children: list[tuple[int, subprocess.Popen, Path]] = []
    with tempfile.TemporaryDirectory(prefix="seqfraud-ddp-") as tmp:
        os.environ.update(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
            WORLD_SIZE=str(world),
            NODE_RANK="0",
            LOCAL_RANK="0",
            RANK="0",
        )
        try:
            for rank in range(1, world):
                out = run_dir / f"ddp_rank{rank}.log"
                child_env = os.environ | {
                    "LOCAL_RANK": str(rank),
                    "RANK": str(rank),
                    READY_ENV: str(Path(tmp, f"ready{rank}")),
                }
                with out.open("w") as f:
                    proc = subprocess.Popen(
                        [sys.executable, "-m", "seqfraud.cli.rank", str(run_dir)],
                        env=child_env,
                        stdout=f,
                        stderr=subprocess.STDOUT,
                    )
                children.append((rank, proc, out))
                log.info("started DDP rank %d of %d (pid %d), output in %s", rank, world, proc.pid, out)
            # A child that dies before joining would leave rank 0 waiting in the rendezvous for its full
            # timeout (30 minutes), and that wait cannot be interrupted: so wait for every child to be ready.
            while not all(Path(tmp, f"ready{rank}").exists() for rank, _, _ in children):
                _raise_if_failed(children)
                time.sleep(0.2)
            try:
                yield
            except BaseException:
                # A rank that failed makes rank 0 fail too; its own error is the one worth reading.
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline and any(p.poll() is None for _, p, _ in children):
                    time.sleep(0.2)
                _raise_if_failed(children)
                raise
            for _, proc, _ in children:
                proc.wait()
            _raise_if_failed(children)
        finally:
            for _, proc, _ in children:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            torch.set_num_threads(threads)


# What a fit sets for the whole process (Lightning's seed_everything and deterministic mode, and the threads).
_SEED_ENV = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "CUBLAS_WORKSPACE_CONFIG")


@contextmanager
def process_left_as_found() -> Iterator[None]:
    """Torch's threads, deterministic mode and cuDNN flags, the random generators (CUDA's too) and the seeding
    environment variables as they were before: a notebook's ``train(cfg)`` left deterministic mode on (``torch.empty`` then filled with
    NaN, and CUDA ops without a deterministic kernel refused) and the generators seeded (dogfood 40)."""
    import random

    import numpy as np

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    env = {k: os.environ.get(k) for k in _SEED_ENV}
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = cudnn
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def training_threads(setting: int | str) -> int:
    """Torch intra-op threads for one training process: an int as given, or ``auto``: ``OMP_NUM_THREADS`` when
    set, else the cores not busy when training starts (usable cores less the 1-minute load average, at least 1).

    While another process holds a core, threads of one op wait on each other at every barrier: on the busy
    2-core box one thread trained the small transformer 2.6x faster than two (BENCHMARKS.md, "CPU training").
    """
    if setting != "auto":
        if not isinstance(setting, int) or isinstance(setting, bool) or setting < 1:
            raise ConfigError(f"threads must be a positive integer or 'auto', got {setting!r}")
        return setting
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(cores, round(cores - busy)))
