"""Polars engine against the Spark engine (``local[2]``): the same preprocessing of the same events.

    OMP_NUM_THREADS=1 python benchmarks/engines.py --events 1e6 1e7 --repeats 3 --out outputs/benchmarks/engines.md

For each size it generates the synthetic clickstream once (about 26.4 events a session) and caches it under
``--work`` as several Parquet shards plus a label table. Each measurement is a fresh Python process that
runs ``seqfraud.preprocess.preprocess`` with the real ``seqfraud/conf/data/synthetic.yaml`` schema and
``seqfraud/conf/features/default.yaml``; the engines alternate, so load from elsewhere hits both alike.

* wall s: the whole child process, interpreter start and imports included;
* preprocess s: ``preprocess()`` alone, which for Spark includes starting the JVM and the session;
* peak RSS: the largest sum of the resident memory of the child and all its descendants (the JVM),
  sampled every 0.2 s, so short peaks between samples can be missed.

The table gives medians over the repeats. The first repeat of each size also checks that both engines
wrote the same spec and the same datasets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from report import emit

ROOT = Path(__file__).resolve().parents[1]
EVENTS_PER_SESSION = 26.43  # synthetic.generate's average, measured at 1M and 10M events
SAMPLE_S = 0.2
# Local Spark for a 2-core machine: one executor inside the driver JVM, a heap that holds 10M events
# without spilling much, few shuffle partitions (AQE coalesces further), no UI.
SPARK_CONF = {
    "spark.driver.memory": "4g",
    "spark.sql.shuffle.partitions": 8,
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
}


def _child(engine: str, cfg_path: Path, out: Path) -> dict:
    from seqfraud.preprocess import preprocess

    cfg = json.loads(cfg_path.read_text())
    engine_cfg = {"engine": engine}
    if engine == "spark":
        engine_cfg["spark"] = {
            "master": "local[2]",
            "app_name": "seqfraud-benchmark",
            "conf": cfg["spark_conf"],
        }
    t0 = time.perf_counter()
    prepared = preprocess(cfg["data"], cfg["features"], out, engine_cfg)
    return {
        "seconds": time.perf_counter() - t0,
        "n_events": prepared.report["n_events"],
        "n_sessions": prepared.report["n_sessions"],
        "partitions": prepared.report["partitions"],
    }


def _measure(engine: str, cfg_path: Path, out: Path) -> dict:
    """One child; its own result plus wall time and the peak RSS of its process tree."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, __file__, "--child", engine, str(cfg_path), str(out)],
        stdout=subprocess.PIPE,
        text=True,
    )
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        peak = max(peak, _tree_rss(root))
        time.sleep(SAMPLE_S)
    out_text = proc.stdout.read()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{engine} child failed with exit code {proc.returncode}")
    return json.loads(out_text.strip().splitlines()[-1]) | {
        "wall_s": wall,
        "peak_rss_bytes": peak,
        "loadavg_1m_before": load,
    }


def _tree_rss(root: psutil.Process) -> int:
    total = 0
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
    return total


def _same_output(a: Path, b: Path) -> None:
    """Both engines wrote the same spec and the same datasets (the parity test's check, at this size)."""
    import polars as pl

    from seqfraud import schema as S
    from seqfraud.data.shards import shard_files
    from seqfraud.features.spec import Spec

    if Spec.load(a / "spec.json").to_dict() | {"versions": None} != Spec.load(b / "spec.json").to_dict() | {
        "versions": None
    }:
        raise RuntimeError("the engines fitted different specs")
    for name in S.SPLITS:
        x = pl.read_parquet(shard_files(a / "data" / name)).sort(S.SESSION_ID)
        y = pl.read_parquet(shard_files(b / "data" / name)).sort(S.SESSION_ID)
        if x.schema != y.schema or not x.equals(y):
            raise RuntimeError(f"the engines wrote different {name} datasets")


def _prepare(n_events: float, work: Path, seed: int, shards: int) -> Path:
    """Generate a data set once (cached): events as Parquet shards, labels apart; returns its config file."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from seqfraud.data import synthetic

    sessions = max(1, round(n_events / EVENTS_PER_SESSION))
    size_dir = work / f"sessions_{sessions}_seed_{seed}_shards_{shards}"
    events_dir, labels = size_dir / "events", size_dir / "labels.parquet"
    if not labels.exists():
        t = time.perf_counter()
        data = synthetic.generate(sessions, seed=seed)
        events_dir.mkdir(parents=True, exist_ok=True)
        size = -(-data.events.height // shards)
        for i in range(shards):
            data.events.slice(i * size, size).write_parquet(events_dir / f"part-{i:03d}.parquet")
        data.labels.write_parquet(labels)
        print(
            f"generated {sessions:,} sessions ({data.events.height:,} events) into {size_dir} "
            f"in {time.perf_counter() - t:.1f}s (not timed)",
            flush=True,
        )
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("preprocess")
    data = OmegaConf.to_container(cfg.data, resolve=True) | {
        "events": str(events_dir),
        "labels": str(labels),
        "typologies": None,
        "synthetic": None,
    }
    cfg_path = size_dir / "engines_config.json"
    cfg_path.write_text(
        json.dumps(
            {
                "data": data,
                "features": OmegaConf.to_container(cfg.features, resolve=True),
                "spark_conf": SPARK_CONF,
            },
            indent=2,
        )
    )
    return cfg_path


def machine() -> dict:
    import polars as pl
    import pyspark

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    java = subprocess.run(
        ["java", "-version"], check=True, capture_output=True, text=True
    ).stderr.splitlines()[0]
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "ram_gib": round(mem / 2**30, 1),
        "polars": pl.__version__,
        "pyspark": pyspark.__version__,
        "java": java,
        "python": platform.python_version(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }


def table(rows: list[dict]) -> str:
    lines = [
        (
            "| events | engine | wall s | preprocess s | events/s | peak RSS GB (tree) | output files/split "
            "| repeats | load avg |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['n_events']:,} | {r['engine']} | {r['wall_s']:.1f} | {r['seconds']:.1f} "
            f"| {r['n_events'] / r['seconds']:,.0f} | {r['peak_rss_bytes'] / 1e9:.2f} "
            f"| {r['partitions']} | {r['repeats']} | {r['loadavg']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=float, nargs="+", default=[1e6], help="approximate event counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shards", type=int, default=8, help="Parquet files the events are written as")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--engines", nargs="+", default=["polars", "spark"])
    parser.add_argument(
        "--work", type=Path, default=ROOT / "outputs/benchmarks/engines", help="cached data sets"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    args = parser.parse_args(argv)

    info = machine()
    print(json.dumps(info), flush=True)
    rows, raw = [], []
    for n_events in args.events:
        cfg_path = _prepare(n_events, args.work.resolve(), args.seed, args.shards)
        runs: dict[str, list[dict]] = {e: [] for e in args.engines}
        for i in range(args.repeats):
            with tempfile.TemporaryDirectory(prefix="seqfraud_engines_") as tmp:
                for engine in args.engines:
                    runs[engine].append(_measure(engine, cfg_path, Path(tmp, engine)))
                    r = runs[engine][-1]
                    print(
                        f"  {n_events:.0e} #{i + 1} {engine}: preprocess {r['seconds']:.1f}s wall {r['wall_s']:.1f}s "
                        f"rss {r['peak_rss_bytes'] / 1e9:.2f}GB load {r['loadavg_1m_before']:.1f}",
                        flush=True,
                    )
                if i == 0 and len(args.engines) == 2:
                    _same_output(*(Path(tmp, e) for e in args.engines))
                    print("  same spec and datasets from both engines", flush=True)
        for engine, rs in runs.items():
            rows.append(
                {
                    "engine": engine,
                    "n_events": rs[0]["n_events"],
                    "repeats": len(rs),
                    "partitions": rs[0]["partitions"],
                    **{
                        k: statistics.median(r[k] for r in rs)
                        for k in ("seconds", "wall_s", "peak_rss_bytes")
                    },
                    "loadavg": statistics.median(r["loadavg_1m_before"] for r in rs),
                }
            )
        raw.append({"n_events": n_events, "runs": runs})

    spark_conf = ", ".join(f"{k}={v}" for k, v in SPARK_CONF.items())
    text = "\n\n".join(
        [
            (
                f"Machine: {info['nproc']} cores, {info['ram_gib']} GiB RAM; polars {info['polars']}, pyspark "
                f"{info['pyspark']} ({info['java']}), Python {info['python']}, OMP_NUM_THREADS={info['OMP_NUM_THREADS']}. "
                f"Spark: master local[2], {spark_conf}. Polars: default engine settings (memory_gb 4)."
            ),
            table(rows),
        ]
    )
    emit(text, args.out, args.json, {"machine": info, "rows": rows, "raw": raw})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(_child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
    else:
        main()
