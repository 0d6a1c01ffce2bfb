"""Per-event online scoring (POST /events' engine, in process): latency by history length, model and store.

    python benchmarks/online.py --artifact gru=ARTIFACT_A transformer=ARTIFACT_B --lengths 16 128 512

For each artifact, store (memory; redis when ``redis-server`` is installed: a fresh local server) and history
length L: ``--sessions`` synthetic sessions (real event rows of the generator, increasing timestamps) are fed
their first L events in one untimed call, then ``--events`` more one at a time, each timed (``OnlineScorer.events``
of one event: validation, tokens, entity features, model, calibration, state read and write; a GRU steps from its
carried states, past ``max_len`` too where its window moves in hops). Beside it, what
``/score`` would cost instead: ``Scorer.score`` of the whole session so far, for the same events. Every
combination runs quiet, then with a CPU hog (one busy process) beside it. Torch runs one thread, as the service.
Reports p50, p99 and p99.9 in ms, the model's own time for one event at that history (a GRU step of the carried
states, or one pass of the model over its window), and the bytes one open session's state holds.
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
from latency import LOADS, load, percentiles
from serving import session_of

from seqfraud.features.tokens import Sequences
from seqfraud.scoring.online import OnlineScorer, SessionState
from seqfraud.scoring.redis_store import RedisStore
from seqfraud.scoring.scorer import Scorer
from seqfraud.scoring.state import MemoryStore, StateStore


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
    """The model's own share of one event: a GRU step of the carried states (one batch), or a pass over the
    window; 0 behind a stacker that reads no sequence score (the model does not run)."""
    if not online.scorer.reads_sequence:
        return 0.0
    tokens = state.tokens
    with torch.inference_mode():
        if state.hidden is not None and online.step is not None:
            hidden = torch.from_numpy(state.hidden)
            new = torch.from_numpy(tokens[-1:])[None].expand(hidden.shape[1], -1, -1)
            call = lambda: online.step(new, hidden)
        else:
            window = tokens[-online.spec.window_length(state.n_events) :]
            seqs = Sequences(["s"], window, np.array([len(window)]))
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


@contextmanager
def service(artifact: str, redis_url: str | None):
    """``seqfraud serve`` on a free loopback port (memory state, or Redis), up and answering."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = ["--state", "redis", "--redis-url", redis_url, "--redis-timeout", "1"] if redis_url else []
    cmd = [sys.executable, "-m", "seqfraud", "serve", "--artifact", artifact, "--port", str(port), *state]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the service did not come up")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def http_latency(url: str, length: int, sessions: int, events: int) -> dict:
    """One client, one kept-alive connection: per-event POST /events round trips after ``length`` events."""
    import httpx

    ms = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for k in range(sessions):
            records = session_of(length + events, seed=100 + k)
            sid = f"http-{length}-{k}-{time.time_ns()}"
            for r in records:
                r["session_id"] = sid
            client.post("/events", json={"events": records[:length]}).raise_for_status()
            for r in records[length:]:
                t0 = time.perf_counter()
                client.post("/events", json={"events": [r]}).raise_for_status()
                ms.append((time.perf_counter() - t0) * 1e3)
    return percentiles(ms)


async def sustained(url: str, open_sessions: int, per_session: int, concurrency: int) -> dict:
    """Events of ``open_sessions`` sessions, one per request, ``concurrency`` requests in flight; each session's
    events in order. Events per second over the whole run."""
    import asyncio

    import httpx

    sessions = []
    for k in range(open_sessions):
        records = session_of(per_session, seed=1000 + k)
        sid = f"load-{k}-{time.time_ns()}"
        for r in records:
            r["session_id"] = sid
        sessions.append(records)
    queue = list(range(open_sessions))
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                records = sessions[queue.pop()]
                for r in records:
                    response = await client.post("/events", json={"events": [r]})
                    errors += response.status_code != 200

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return {"events_per_s": open_sessions * per_session / elapsed, "errors": errors, "seconds": elapsed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", nargs="+", required=True, help="NAME=PATH ...")
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 128, 512])
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--events", type=int, default=100)
    p.add_argument("--http", action="store_true", help="also over HTTP: per-event round trips and throughput")
    p.add_argument("--open-sessions", type=int, default=400, help="sessions of the throughput run")
    p.add_argument("--per-session", type=int, default=32, help="events of each, one per request")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--http-only", action="store_true", help="skip the in-process part")
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
        for spec in [] if args.http_only else args.artifact:
            name, path = spec.split("=", 1)
            scorer = Scorer.load(path)
            scorer.warmup()
            gc.collect()
            gc.freeze()  # as the service does after start-up
            backends = {"memory": MemoryStore}
            if url:
                backends["redis"] = lambda: RedisStore(url, timeout_s=1.0)
            for store_name, make in backends.items():
                for under in LOADS:
                    with load(under):
                        for length in args.lengths:
                            r = measure(scorer, make(), length, args.sessions, args.events)
                            o, w = r["online"], r["whole"]
                            print(
                                f"| {name} | {store_name} | {under} | {length} | "
                                f"{scorer.spec.max_len} | {o['p50']:.2f} | {o['p99']:.2f} | {o['p99.9']:.2f} | {r['model_ms']:.2f} | "
                                f"{w['p50']:.2f} | {w['p99']:.2f} | {w['p99.9']:.2f} | {r['state_bytes']:,} |",
                                flush=True,
                            )
        if args.http or args.http_only:
            http(args, url)


def http(args: argparse.Namespace, redis_url: str | None) -> None:
    """The service over loopback: per-event round trips by history length, then sustained throughput and the
    memory each open session holds (the server's RSS growth over the throughput run, per session)."""
    import asyncio

    import psutil

    print(
        "\nOver HTTP (`seqfraud serve`, loopback, one kept-alive client for latency; throughput: "
        f"{args.open_sessions} sessions x {args.per_session} events, one event a request, "
        f"{args.concurrency} in flight):\n"
    )
    print(
        "| model | store | load | history L | p50 ms | p99 | p99.9 | events/s (quiet) | server CPU ms per event | "
        "errors | RSS per open session kB |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for spec in args.artifact:
        name, path = spec.split("=", 1)
        for store_name, url_of in (
            [("memory", None), ("redis", redis_url)] if redis_url else [("memory", None)]
        ):
            with service(path, url_of) as (url, pid):
                latency = {}
                for under in LOADS:
                    with load(under):
                        for length in args.lengths:
                            latency[under, length] = http_latency(url, length, args.sessions, args.events)
                server = psutil.Process(pid)
                before, cpu = server.memory_info().rss, sum(server.cpu_times()[:2])
                run = asyncio.run(sustained(url, args.open_sessions, args.per_session, args.concurrency))
                per_session = (server.memory_info().rss - before) / args.open_sessions / 1e3
                cpu_ms = (sum(server.cpu_times()[:2]) - cpu) * 1e3 / (args.open_sessions * args.per_session)
            for (under, length), r in latency.items():
                print(
                    f"| {name} | {store_name} | {under} | {length} | {r['p50']:.2f} | {r['p99']:.2f} | "
                    f"{r['p99.9']:.2f} | {run['events_per_s']:.0f} | {cpu_ms:.2f} | {run['errors']} | "
                    f"{per_session:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
