"""Per-event online scoring (POST /events' engine, in process): latency by history length, model and store.

    python benchmarks/online.py --artifact gru=ARTIFACT_A transformer=ARTIFACT_B --lengths 16 128 512

For each artifact, store (memory; redis when ``redis-server`` is installed: a fresh local server) and history
length L: ``--sessions`` synthetic sessions (real event rows of the generator, increasing timestamps) are fed
their first L events in one untimed call, then ``--events`` more one at a time, each timed (``OnlineScorer.events``
of one event: validation, tokens, entity features, model, calibration, state read and write; the history stays
within ``max_len``, so a GRU steps from its carried state). Beside it, what
``/score`` would cost instead: ``Scorer.score`` of the whole session so far, for the same events. Every
combination runs quiet, then with a CPU hog (one busy process) beside it. Torch runs one thread, as the service.
Reports p50, p99 and p99.9 in ms, the model's own time for one event at that history (a GRU step from the carried
state, or one pass of the transformer over its kept events), and the bytes one open session's state holds.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from serving import session_of

from seqfraud.features.tokens import Sequences
from seqfraud.scoring.online import OnlineScorer, SessionState
from seqfraud.scoring.redis_store import RedisStore
from seqfraud.scoring.scorer import Scorer
from seqfraud.scoring.state import MemoryStore, StateStore


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50": float(np.median(a)),
        "p99": float(np.quantile(a, 0.99)),
        "p99.9": float(np.quantile(a, 0.999)),
    }


@contextmanager
def hog(on: bool):
    """One process spinning on a core, or nothing."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        yield
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def redis(work: Path):
    if shutil.which("redis-server") is None:
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait()


def model_alone(online: OnlineScorer, state: SessionState) -> float:
    """The model's own share of one event: a GRU step from the carried state, or a pass over the kept tokens."""
    tokens = state.tokens
    with torch.inference_mode():
        if state.hidden is not None and online.step is not None:
            new, hidden = torch.from_numpy(tokens[-1:])[None], torch.from_numpy(state.hidden)[:, None]
            call = lambda: online.step(new, hidden)
        else:
            seqs = Sequences(["s"], tokens, np.array([len(tokens)]))
            call = lambda: online.scorer.predict(seqs)
        times = []
        for _ in range(50):
            t0 = time.perf_counter()
            call()
            times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def measure(scorer: Scorer, store: StateStore, length: int, sessions: int, events: int) -> dict:
    online = OnlineScorer(scorer, store)
    step_ms, whole_ms, state_bytes, model_ms = [], [], [], []
    for k in range(sessions):
        records = session_of(length + events, seed=k)
        sid = f"bench-{length}-{k}-{time.time_ns()}"
        for r in records:
            r["session_id"] = sid
        online.events(records[:length])
        state = online.session(records[0]["session_id"])
        state_bytes.append(len(state.encode()))
        model_ms.append(model_alone(online, state))
        for i in range(length, length + events):
            t0 = time.perf_counter()
            online.events([records[i]])
            step_ms.append((time.perf_counter() - t0) * 1e3)
        for i in range(length, length + events):  # apart, so that neither warms the caches for the other
            t0 = time.perf_counter()
            scorer.score(records[: i + 1], source="bench")
            whole_ms.append((time.perf_counter() - t0) * 1e3)
    return {
        "online": percentiles(step_ms),
        "whole": percentiles(whole_ms),
        "state_bytes": int(np.median(state_bytes)),
        "model_ms": float(np.median(model_ms)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", nargs="+", required=True, help="NAME=PATH ...")
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 128, 512])
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--events", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}; "
        f"{args.sessions} sessions x {args.events} timed events per cell; torch 1 thread.\n"
    )
    print(
        "| model | store | load | history L | max_len | online p50 ms | p99 | p99.9 | model alone p50 ms | "
        "whole-session p50 ms | p99 | p99.9 | state bytes |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as work, redis(Path(work)) as url:
        for spec in args.artifact:
            name, path = spec.split("=", 1)
            scorer = Scorer.load(path)
            scorer.warmup()
            gc.collect()
            gc.freeze()  # as the service does after start-up
            backends = {"memory": MemoryStore}
            if url:
                backends["redis"] = lambda: RedisStore(url, timeout_s=1.0)
            for store_name, make in backends.items():
                for loaded in (False, True):
                    with hog(loaded):
                        for length in args.lengths:
                            r = measure(scorer, make(), length, args.sessions, args.events)
                            o, w = r["online"], r["whole"]
                            print(
                                f"| {name} | {store_name} | {'hog' if loaded else 'quiet'} | {length} | "
                                f"{scorer.spec.max_len} | {o['p50']:.2f} | {o['p99']:.2f} | {o['p99.9']:.2f} | {r['model_ms']:.2f} | "
                                f"{w['p50']:.2f} | {w['p99']:.2f} | {w['p99.9']:.2f} | {r['state_bytes']:,} |",
                                flush=True,
                            )


if __name__ == "__main__":
    main()
