"""Serving latency and throughput of an exported artifact: in process, over HTTP, and in batch.

    python train.py +experiment=smoke model=small features.max_len=512 logger=none hydra.run.dir=/tmp/small512
    python benchmarks/serving.py --run /tmp/small512 --work /tmp/serving_bench

Measures (torch intra-op threads 1 for latency, all cores for batch):
- import time of the serving path and ``Scorer.load`` time;
- ``Scorer.score`` on one session of 16, 128 and 512 events as a list of dicts (ISO timestamps, what the
  HTTP service passes), preprocessing included: p50, p99 and p99.9 over ``--calls`` calls;
- ``seqfraud serve`` on 127.0.0.1 under an open-loop load generator (asyncio + httpx) at a fixed
  rate with bounded concurrency and duration: client-side p50, p99 and p99.9, and the server's own latency_ms;
  then ``POST /explain`` on one session of ``min(256, max_len)`` events, called one at a time;
- ``seqfraud score`` on ``--sessions`` synthetic sessions: sessions/s and peak memory.

Latency runs with the service's settings, one torch and one Polars thread (POLARS_MAX_THREADS is set
before Polars is imported), quiet and beside a one-core CPU hog (``latency.py``); batch scoring gets the default,
all cores, quiet. Prints a Markdown report with the
machine's load average, since a shared machine moves every figure.
"""

from __future__ import annotations

import os

os.environ.setdefault("POLARS_MAX_THREADS", "1")

import argparse
import asyncio
import json
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import psutil
import torch
from latency import LOADS, load, percentiles

from seqfraud.data.synthetic import generate
from seqfraud.features.spec import Spec
from seqfraud.schema import SYNTHETIC

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"in_process_p99_ms_128": 2.0, "http_p99_ms": 15.0, "batch_sessions_per_s": 5000.0}


def session_of(n: int, seed: int) -> list[dict]:
    """One synthetic session stretched to ``n`` events: real event rows, fresh increasing ISO timestamps."""
    s = SYNTHETIC
    rng = np.random.default_rng(seed)
    rows = generate(200, seed=seed).events.drop(s.timestamp).sample(n, with_replacement=True, seed=seed)
    t0 = 1_772_000_000_000  # ms
    ts = t0 + np.cumsum(rng.integers(0, 20_000, n))
    frame = rows.with_columns(
        pl.lit("bench-session").alias(s.session_id),
        pl.Series(s.timestamp, ts).cast(pl.Datetime("ms", "UTC")).dt.to_string("iso"),
    )
    return frame.select(s.event_columns).to_dicts()


def bench_import_and_load(artifact: Path, repeats: int = 3) -> dict[str, float]:
    code = (
        "import time; t = time.perf_counter(); import seqfraud.scoring, seqfraud.scoring.service; "
        "i = time.perf_counter() - t; from seqfraud.scoring import Scorer; t = time.perf_counter(); "
        f"Scorer.load({str(artifact)!r}); print(i, time.perf_counter() - t)"
    )
    runs = [
        tuple(
            map(
                float,
                subprocess.run(
                    [sys.executable, "-c", code], capture_output=True, text=True, check=True
                ).stdout.split(),
            )
        )
        for _ in range(repeats)
    ]
    return {
        "import_s": float(np.median([r[0] for r in runs])),
        "load_s": float(np.median([r[1] for r in runs])),
    }


def bench_in_process(
    artifact: Path, fmt: str, lengths: list[int], calls: int
) -> dict[str, dict[int, dict[str, float]]]:
    """Per load, wall time per call, and the calling thread's CPU time (what neighbours on the machine cannot
    inflate)."""
    from seqfraud.scoring import Scorer

    torch.set_num_threads(1)
    scorer = Scorer.load(artifact, fmt=fmt)
    scorer.warmup()
    out: dict[str, dict[int, dict[str, float]]] = {under: {} for under in LOADS}
    for under in LOADS:
        with load(under):
            for n in lengths:
                events = session_of(n, seed=n)
                for _ in range(50):
                    scorer.score(events)
                wall, cpu = [], []
                for _ in range(calls):
                    t0, c0 = time.perf_counter(), time.thread_time()
                    scorer.score(events)
                    wall.append((time.perf_counter() - t0) * 1e3)
                    cpu.append(time.thread_time() - c0)
                out[under][n] = percentiles(wall) | {
                    "cpu_median_ms": float(np.median(cpu)) * 1e3,
                    "cpu_p99_ms": float(np.quantile(cpu, 0.99)) * 1e3,
                }
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def load_generator(
    url: str, bodies: list[bytes], rate: float, duration: float, concurrency: int
) -> dict:
    """Open loop: request i is due at ``i / rate`` s; at most ``concurrency`` in flight; bounded in count and time."""
    import httpx

    n = int(rate * duration)
    client_ms, server_ms, late_s, errors = [], [], [], 0
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10.0) as client:

        async def one(i: int, due: float) -> None:
            nonlocal errors
            async with gate:
                start = time.perf_counter()
                late_s.append(start - due)
                try:
                    r = await client.post(
                        "/score",
                        content=bodies[i % len(bodies)],
                        headers={"content-type": "application/json"},
                    )
                    client_ms.append((time.perf_counter() - start) * 1e3)
                    if r.status_code == 200:
                        server_ms.append(r.json()["latency_ms"])
                    else:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1

        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=duration + 60)
        elapsed = time.perf_counter() - t0
    server = np.asarray(server_ms)
    return percentiles(client_ms) | {
        "server_median_ms": float(np.median(server)),
        "server_p99_ms": float(np.quantile(server, 0.99)),
        "achieved_rps": len(client_ms) / elapsed,
        "errors": errors,
        "p99_start_lateness_ms": float(np.quantile(late_s, 0.99)) * 1e3,
    }


def bench_http(
    artifact: Path,
    sessions: dict[str, list[list[dict]]],
    rate: float,
    duration: float,
    concurrency: int,
    explain: list[dict],
    explain_calls: int = 10,
) -> tuple[dict[str, dict[str, dict]], dict]:
    """Per load, each group of sessions under the open-loop load generator; then ``/explain``, quiet."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seqfraud",
            "serve",
            "--artifact",
            str(artifact),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError("the service exited during start-up")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the service did not come up in 120 s")
            time.sleep(0.2)
        out: dict[str, dict[str, dict]] = {under: {} for under in LOADS}
        watched = psutil.Process(server.pid)
        for under in LOADS:
            with load(under):
                for name, group in sessions.items():
                    bodies = [json.dumps({"events": events}).encode() for events in group]
                    asyncio.run(
                        load_generator(url, bodies, rate, min(duration, 3.0), concurrency)
                    )  # warm connections
                    before = sum(watched.cpu_times()[:2])
                    run = asyncio.run(load_generator(url, bodies, rate, duration, concurrency))
                    run["server_cpu_ms_per_request"] = (
                        (sum(watched.cpu_times()[:2]) - before) * 1e3 / int(rate * duration)
                    )
                    out[under][name] = run
        ms = []
        for i in range(explain_calls + 2):  # the first two warm up
            t0 = time.perf_counter()
            httpx.post(f"{url}/explain", json={"events": explain}, timeout=60).raise_for_status()
            ms.append((time.perf_counter() - t0) * 1e3)
        return out, percentiles(ms[2:]) | {"events": len(explain)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def bench_batch(artifact: Path, work: Path, n_sessions: int) -> dict[str, float]:
    data = work / f"synthetic_{n_sessions}"
    if not (data / "events.parquet").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "seqfraud",
                "synthetic",
                "--sessions",
                str(n_sessions),
                "--seed",
                "1",
                "--out",
                str(data),
            ],
            check=True,
        )
    n_events = pl.scan_parquet(data / "events.parquet").select(pl.len()).collect().item()
    out = work / "scores.parquet"
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "POLARS_MAX_THREADS"}  # batch uses every core
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seqfraud",
            "score",
            "--artifact",
            str(artifact),
            "--events",
            str(data / "events.parquet"),
            "--out",
            str(out),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    peak, cpu_s = 0, 0.0
    watched = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, watched.memory_info().rss)
            cpu_s = sum(watched.cpu_times()[:2])
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError("batch scoring failed")
    scored = pl.scan_parquet(out).select(pl.len()).collect().item()
    printed = proc.stdout.read().strip()
    scoring_s = float(printed.split(" in ")[1].split(" s ")[0])
    return {
        "sessions": scored,
        "events": n_events,
        "wall_s": wall,
        "scoring_s": scoring_s,
        "process_cpu_s": cpu_s,
        "sessions_per_s": scored / scoring_s,
        "sessions_per_s_wall": scored / wall,
        "peak_rss_mb": peak / 2**20,
    }


def report(meta: dict, imports: dict, inproc: dict, http: dict, explain: dict, batch: dict) -> str:
    machine = (
        f"Machine: {meta['machine']}. Load average (1, 5, 15 min) at start {meta['load_start']}, "
        f"at end {meta['load_end']}."
    )
    startup = (
        f"- Import of the serving path: {imports['import_s']:.2f} s. `Scorer.load` (verify hashes, load "
        f"TorchScript): {imports['load_s'] * 1e3:.0f} ms."
    )
    inproc_head = (
        "| in process, one session (list of dicts, preprocessing included) | format | load | p50 ms | p99 ms "
        "| p99.9 ms | thread CPU median / p99 ms | calls |"
    )
    http_head = (
        "| HTTP `POST /score`, loopback | requests | load | achieved req/s | p50 ms | p99 ms | p99.9 ms "
        "| server latency_ms median / p99 | server CPU ms per request | errors |"
    )
    per_cpu_s = batch["sessions"] / batch["process_cpu_s"]
    batch_line = (
        f"- Batch `seqfraud score`: {batch['sessions']:,} sessions ({batch['events']:,} events) in "
        f"{batch['scoring_s']:.1f} s = **{batch['sessions_per_s']:,.0f} sessions/s** "
        f"({batch['sessions_per_s_wall']:,.0f}/s counting process start-up, {batch['wall_s']:.1f} s). "
        f"The process used {batch['process_cpu_s']:.1f} CPU-s ({per_cpu_s:,.0f} sessions per CPU-second). "
        f"Peak RSS {batch['peak_rss_mb']:.0f} MB."
    )
    lines = [
        machine,
        f"Model: {meta['model']}. Service and batch use the TorchScript format.",
        "",
        startup,
        "",
        inproc_head,
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {n} events | {fmt} | {under} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p99.9']:.2f} | "
            f"{r['cpu_median_ms']:.2f} / {r['cpu_p99_ms']:.2f} | {r['n']} |"
            for fmt, loads in inproc.items()
            for under, rows in loads.items()
            for n, r in rows.items()
        ],
        "",
        http_head,
        "|---|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {name} | {meta['rate']:.0f}/s for {meta['duration']:.0f} s, ≤{meta['concurrency']} in flight | "
            f"{under} | {r['achieved_rps']:.0f} | {r['p50']:.2f} | {r['p99']:.2f} | {r['p99.9']:.2f} | "
            f"{r['server_median_ms']:.2f} / {r['server_p99_ms']:.2f} | {r['server_cpu_ms_per_request']:.2f} | "
            f"{r['errors']} |"
            for under, runs in http.items()
            for name, r in runs.items()
        ],
        "",
        (
            f"- HTTP `POST /explain`, one {explain['events']}-event session at a time (quiet): p50 "
            f"{explain['p50']:.0f} ms, p99 {explain['p99']:.0f} ms over {explain['n']} calls."
        ),
        batch_line,
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="training run to export (or give --artifact)")
    p.add_argument("--artifact", type=Path, help="an exported artifact to benchmark as is")
    p.add_argument("--work", type=Path, default=Path("/tmp/seqfraud_serving_bench"))
    p.add_argument("--calls", type=int, default=600)
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 128, 512])
    p.add_argument("--formats", nargs="+", default=["torchscript", "pt2"], help="formats timed in process")
    p.add_argument("--rate", type=float, default=200.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--sessions", type=int, default=100_000)
    p.add_argument("--skip", nargs="*", default=[], choices=["in_process", "http", "batch"])
    p.add_argument("--json", type=Path, help="also write the raw figures here")
    args = p.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    artifact = args.artifact
    if artifact is None:
        from seqfraud.export.exporter import export_run

        artifact = export_run(args.run, args.work / "artifact", overwrite=True)
    spec = Spec.load(artifact / "spec.json")
    model = json.loads((artifact / "manifest.json").read_text())["model"]
    meta = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, torch {torch.__version__}, polars {pl.__version__}",
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
        "model": f"{model['encoder']} d_model={model['d_model']} layers={model['n_layers']} heads={model['n_heads']}, "
        f"max_len={spec.max_len}",
        "rate": args.rate,
        "duration": args.duration,
        "concurrency": args.concurrency,
    }
    imports = bench_import_and_load(artifact)
    inproc, http, explain, batch = {}, {}, {}, {}
    if "in_process" not in args.skip:
        inproc = {fmt: bench_in_process(artifact, fmt, args.lengths, args.calls) for fmt in args.formats}
    if "http" not in args.skip:
        real = (
            generate(2000, seed=3)
            .events.select(SYNTHETIC.event_columns)  # the model's columns: the API refuses others
            .with_columns(pl.col(SYNTHETIC.timestamp).dt.to_string("iso"))
        )
        real_sessions = [g.to_dicts() for _, g in real.group_by(SYNTHETIC.session_id, maintain_order=True)][
            :500
        ]
        median_len = int(np.median([len(s) for s in real_sessions]))
        http, explain = bench_http(
            artifact,
            {
                f"synthetic sessions (median {median_len} events)": real_sessions,
                "128-event sessions": [session_of(128, seed=i) for i in range(20)],
            },
            args.rate,
            args.duration,
            args.concurrency,
            session_of(min(256, spec.max_len), seed=7),
        )
    if "batch" not in args.skip:
        batch = bench_batch(artifact, args.work, args.sessions)
    meta["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "imports": imports,
                    "in_process": inproc,
                    "http": http,
                    "explain": explain,
                    "batch": batch,
                    "targets": TARGETS,
                },
                indent=2,
            )
        )
    print(
        report(meta, imports, inproc, http, explain, batch)
        if inproc and http and batch
        else json.dumps(
            {
                "meta": meta,
                "imports": imports,
                "in_process": inproc,
                "http": http,
                "explain": explain,
                "batch": batch,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
