"""Preprocessing throughput and memory, end to end, against a bare Polars group-by floor.

    python benchmarks/preprocess.py --events 1e6 1e7 5e7 --repeats 3 3 1 --out outputs/benchmarks/preprocess.md

For each size it generates the synthetic clickstream once (not timed; about 26.4 events a session) as a
directory of Parquet shards of at most 5M events (sessions never span chunks; each chunk is its own
generator seed with its own prefix on session, account, device and IP ids) plus one label table, then
alternates two measurements, each in a fresh Python subprocess so that peak RSS belongs to that measurement
alone:

* pipeline: ``seqfraud.preprocess.preprocess`` with the real ``seqfraud/conf/data/synthetic.yaml`` schema,
  ``seqfraud/conf/features/default.yaml`` and the Polars engine under ``--memory-gb`` (validate, split, fit the
  spec, partition by session when over budget, tokenize and sequence, write spec.json and the sharded
  datasets);
* floor: ``pl.scan_parquet(events).group_by(session_id).agg(pl.all().sort_by(timestamp)).collect()``
  over the same files, the least any in-memory per-session sequencing has to do. It holds everything in
  memory, so it is skipped above ``--floor-max-events``.

Seconds are wall-clock time around the work inside the child (interpreter start and imports excluded).
Peak RSS is the child's ``ru_maxrss`` from ``os.wait4``; CPU is the child's user + system time. The
table gives medians over the repeats; ratio = median pipeline s / median floor s of the same run.
Pipeline runs also time their stages (load_events: scan + validation pass; with entity features,
entity_kernel: ``column_features``, and entity_rest: the rest of the entity stage; fit_stats; the Parquet
writes; the rest is partitioning, sequences and split). A stage's time leaves out the stages it calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from report import emit

ROOT = Path(__file__).resolve().parents[1]
EVENTS_PER_SESSION = 26.43  # synthetic.generate's average, measured at 1M and 10M events
CHUNK_SESSIONS = 190_000  # about 5M events per generated shard, so generation itself stays small
TARGET_EVENTS_PER_S = 2e6
TARGET_RATIO = 3.0
TARGET_RSS_BYTES = 4e9


# ---------------------------------------------------------------- children (one measurement each)


def _child_pipeline(cfg_path: Path, out_dir: Path) -> dict:
    import polars as pl

    import seqfraud
    import seqfraud.preprocess as prep

    cfg = json.loads(cfg_path.read_text())
    stages = {"load_events": 0.0, "entity_kernel": 0.0, "entity_rest": 0.0, "fit_stats": 0.0, "write": 0.0}
    peaks: dict[str, float] = {}  # the process's peak RSS (bytes) when a stage last returned
    running: list[list] = []  # [stage, start, time spent in stages inside it]

    def timed(name, fn):
        """Exclusive stage times: a stage called inside another (a write inside the entity stage) counts once."""

        def wrapper(*args, **kwargs):
            running.append([name, time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                _, start, inner = running.pop()
                spent = time.perf_counter() - start
                peaks[name] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                stages[name] += spent - inner
                if running:
                    running[-1][2] += spent

        return wrapper

    prep.load_events = timed("load_events", prep.load_events)
    prep.column_features = timed("entity_kernel", prep.column_features)
    prep.PolarsEngine.entity_features = timed("entity_rest", prep.PolarsEngine.entity_features)
    prep.fit_stats = timed("fit_stats", prep.fit_stats)
    pl.DataFrame.write_parquet = timed("write", pl.DataFrame.write_parquet)
    t0 = time.perf_counter()
    prepared = prep.preprocess(cfg["data"], cfg["features"], out_dir, cfg["preprocess"])
    seconds = time.perf_counter() - t0
    stages["sequences_and_rest"] = seconds - sum(stages.values())
    return {
        "seconds": seconds,
        "n_events": prepared.report["n_events"],
        "partitions": prepared.report["partitions"],
        "n_sessions": prepared.report["n_sessions"],
        "entity_features": prepared.report.get("entity_features", 0),
        "entity_seconds": prepared.report.get("entity_seconds", 0.0),
        "stages": stages,
        "peak_rss_after": peaks,
        "code": str(Path(seqfraud.__file__).parent),
    }


def _child_floor(events: Path, session_id: str, timestamp: str) -> dict:
    import polars as pl

    t0 = time.perf_counter()
    out = pl.scan_parquet(events).group_by(session_id).agg(pl.all().sort_by(timestamp)).collect()
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "n_sessions": out.height}


# ---------------------------------------------------------------- parent


def _measure(argv: list[str]) -> dict:
    """Run one child; its JSON result plus wall, peak RSS and CPU from the kernel's accounting of it."""
    load = os.getloadavg()[0]
    proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result |= {
        "peak_rss_bytes": usage.ru_maxrss * 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "loadavg_1m_before": load,
    }
    return result


def _configs(data_dir: Path, memory_gb: float, overrides: Sequence[str] = ()) -> dict:
    """The packaged ``preprocess`` config on a generated data set, plus Hydra ``overrides``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    overrides = [
        f"data.events={data_dir / 'events'}",
        f"data.labels={data_dir / 'labels.parquet'}",
        "data.typologies=null",
        f"preprocess.memory_gb={memory_gb}",
        *overrides,
    ]
    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose("preprocess", overrides=overrides)
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("data", "features", "preprocess")}


def _generate(sessions: int, seed: int, out: Path) -> None:
    """Chunk by chunk, so that generating 50M events needs no more memory than 5M."""
    import polars as pl

    from seqfraud.data import synthetic
    from seqfraud.schema import SYNTHETIC, SYNTHETIC_ENTITIES

    (out / "events").mkdir(parents=True, exist_ok=True)
    labels = []
    for i, start in enumerate(range(0, sessions, CHUNK_SESSIONS)):
        data = synthetic.generate(min(CHUNK_SESSIONS, sessions - start), seed=seed * 1000 + i)
        # A chunk is a population of its own: its sessions, accounts, devices and IPs share no id with another's.
        prefix = [(f"c{i:03d}-" + pl.col(c)).alias(c) for c in (SYNTHETIC.session_id, *SYNTHETIC_ENTITIES)]
        data.events.with_columns(prefix).write_parquet(out / "events" / f"part-{i:05d}.parquet")
        labels.append(data.labels.with_columns(prefix[0]))
    pl.concat(labels).write_parquet(out / "labels.parquet")


def _prepare(
    n_events: float,
    work: Path,
    seed: int,
    memory_gb: float,
    overrides: Sequence[str] = (),
    name: str = "preprocess_config",
) -> tuple[Path, dict]:
    """Generate the data set for a size once (cached in work); returns the config file (``name``.json, for these
    ``overrides``) and the config."""
    sessions = max(1, round(n_events / EVENTS_PER_SESSION))
    size_dir = work / f"sessions_{sessions}_seed_{seed}_chunked_entities"
    cfg = _configs(size_dir, memory_gb, overrides)
    if not (size_dir / "labels.parquet").exists():
        t = time.perf_counter()
        _generate(sessions, seed, size_dir)
        print(
            f"generated {sessions:,} sessions into {size_dir} in {time.perf_counter() - t:.1f}s (not timed)",
            flush=True,
        )
    cfg_path = size_dir / f"{name}.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return cfg_path, cfg


def machine() -> dict:
    import polars as pl

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "ram_gib": round(mem / 2**30, 1),
        "polars": pl.__version__,
        "polars_threads": pl.thread_pool_size(),
        "python": platform.python_version(),
    }


def _gb(b: float) -> str:
    return f"{b / 1e9:.2f}"


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| events | partitions | pipeline s | events/s | peak RSS GB | pipeline CPU s | CPU µs/event | floor s "
            "| floor RSS GB | ratio | repeats | load avg |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        p, f = r["pipeline"], r["floor"]
        floor = f"{f['seconds']:.2f} | {_gb(f['peak_rss_bytes'])} | {r['ratio']:.2f}x" if f else "— | — | —"
        lines.append(
            f"| {r['n_events']:,} | {r['partitions']} | {p['seconds']:.2f} | {p['events_per_s'] / 1e6:.2f}M "
            f"| {_gb(p['peak_rss_bytes'])} | {p['cpu_s']:.1f} | {p['cpu_s'] / r['n_events'] * 1e6:.2f} | {floor} "
            f"| {r['repeats']} | {r['loadavg']:.1f} |"
        )
    return "\n".join(lines)


def stage_table(rows: list[dict]) -> str:
    names = ["load_events", "fit_stats", "sequences_and_rest", "write"]
    lines = ["| events | " + " | ".join(f"{n} s" for n in names) + " |", "|---:|" + "---:|" * len(names)]
    for r in rows:
        lines.append(
            f"| {r['n_events']:,} | " + " | ".join(f"{r['pipeline']['stages'][n]:.2f}" for n in names) + " |"
        )
    return "\n".join(lines)


def verdict(rows: list[dict], memory_gb: float) -> str:
    largest = max(rows, key=lambda r: r["n_events"])
    p = largest["pipeline"]
    with_floor = [r for r in rows if r["floor"]]
    checks = [
        (
            f"≥ {TARGET_EVENTS_PER_S / 1e6:.0f}M events/s at {largest['n_events']:,} events",
            p["events_per_s"] >= TARGET_EVENTS_PER_S,
            f"{p['events_per_s'] / 1e6:.2f}M",
        ),
        (
            f"within {TARGET_RATIO:.0f}x of the bare group_by (sizes with a floor)",
            all(r["ratio"] <= TARGET_RATIO for r in with_floor),
            ", ".join(f"{r['ratio']:.2f}x" for r in with_floor),
        ),
        (
            f"peak RSS < the {memory_gb:g} GB budget (every size)",
            all(r["pipeline"]["peak_rss_bytes"] < memory_gb * 1e9 for r in rows),
            ", ".join(f"{_gb(r['pipeline']['peak_rss_bytes'])} GB" for r in rows),
        ),
    ]
    return "\n".join(f"- {'met' if ok else 'MISSED'}: {name} ({got})" for name, ok, got in checks)


def _median_of(results: list[dict], n_events: int) -> dict:
    med = {k: statistics.median(r[k] for r in results) for k in ("seconds", "peak_rss_bytes", "cpu_s")}
    med["events_per_s"] = n_events / med["seconds"]
    med["all_seconds"] = [round(r["seconds"], 3) for r in results]
    if "stages" in results[0]:
        med["stages"] = {k: statistics.median(r["stages"][k] for r in results) for k in results[0]["stages"]}
    return med


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=float, nargs="+", default=[1e6, 1e7], help="approximate event counts"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        nargs="+",
        default=[3],
        help="repeats per size (one value for all sizes, or one per --events value)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-gb", type=float, default=4.0, help="preprocess.memory_gb of the pipeline")
    parser.add_argument(
        "--floor-max-events",
        type=float,
        default=1.5e7,
        help="skip the in-memory floor above this many events",
    )
    parser.add_argument(
        "--work", type=Path, default=ROOT / "outputs/benchmarks/preprocess", help="cached synthetic data sets"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = parser.parse_args(argv)
    repeats = args.repeats * len(args.events) if len(args.repeats) == 1 else args.repeats
    if len(repeats) != len(args.events):
        parser.error("--repeats takes one value, or one per --events value")

    info = machine()
    print(json.dumps(info), flush=True)
    rows, raw = [], []
    for n_events, reps in zip(args.events, repeats):
        cfg_path, cfg = _prepare(n_events, args.work.resolve(), args.seed, args.memory_gb)
        schema = cfg["data"]["schema"]
        with_floor = n_events <= args.floor_max_events
        pipe, floor = [], []
        for i in range(reps):  # alternate, so that load from elsewhere hits both alike
            with tempfile.TemporaryDirectory(prefix="seqfraud_prep_bench_", dir=args.work) as out:
                pipe.append(_measure(["--child-pipeline", str(cfg_path), out]))
            line = (
                f"  {n_events:.0e} #{i + 1}: pipeline {pipe[-1]['seconds']:.2f}s "
                f"{pipe[-1]['peak_rss_bytes'] / 1e9:.2f}GB cpu {pipe[-1]['cpu_s']:.1f}s "
                f"partitions {pipe[-1]['partitions']}"
            )
            if with_floor:
                floor.append(
                    _measure(
                        ["--child-floor", cfg["data"]["events"], schema["session_id"], schema["timestamp"]]
                    )
                )
                line += (
                    f" | floor {floor[-1]['seconds']:.2f}s {floor[-1]['peak_rss_bytes'] / 1e9:.2f}GB "
                    f"cpu {floor[-1]['cpu_s']:.1f}s"
                )
            print(f"{line} | load {pipe[-1]['loadavg_1m_before']:.1f}", flush=True)
        n = pipe[0]["n_events"]
        if any(r["n_sessions"] != pipe[0]["n_sessions"] for r in pipe + floor):
            raise RuntimeError("pipeline and floor disagree on the number of sessions")
        row = {
            "n_events": n,
            "n_sessions": pipe[0]["n_sessions"],
            "repeats": reps,
            "partitions": pipe[0]["partitions"],
            "pipeline": _median_of(pipe, n),
            "floor": _median_of(floor, n) if floor else None,
            "loadavg": statistics.median(r["loadavg_1m_before"] for r in pipe + floor),
            "code": pipe[0]["code"],
        }
        row["ratio"] = row["pipeline"]["seconds"] / row["floor"]["seconds"] if floor else None
        rows.append(row)
        raw.append({"n_events": n, "pipeline": pipe, "floor": floor})

    text = "\n\n".join(
        [
            (
                f"Machine: {info['nproc']} cores ({info['cpu']}), {info['ram_gib']} GiB RAM, polars {info['polars']} "
                f"({info['polars_threads']} threads), Python {info['python']}; seqfraud from {rows[0]['code']}; "
                f"preprocess.memory_gb={args.memory_gb:g}."
            ),
            table(rows),
            "Pipeline stages (median s):\n\n" + stage_table(rows),
            "Targets:\n\n" + verdict(rows, args.memory_gb),
        ]
    )
    emit(text, args.out, args.json, {"machine": info, "rows": rows, "raw": raw})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-pipeline":
        print(json.dumps(_child_pipeline(Path(sys.argv[2]), Path(sys.argv[3]))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-floor":
        print(json.dumps(_child_floor(Path(sys.argv[2]), sys.argv[3], sys.argv[4])))
    else:
        main()
