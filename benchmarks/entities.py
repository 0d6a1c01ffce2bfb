"""Entity features (issue 12): preprocessing with and without them, and how their cost grows.

    python benchmarks/entities.py --events 1e7 --repeats 3 --growth-events 1e6 --growth-repeats 3 \\
        --out outputs/benchmarks/entities.md --json outputs/benchmarks/entities.json

Data and measurement are those of ``benchmarks/preprocess.py`` (its helpers): the synthetic log generated once
per size (not timed) as Parquet shards plus a label table, every run in a fresh child process, so that its
peak RSS (``ru_maxrss`` from ``os.wait4``) belongs to it alone; seconds are wall-clock time of
``seqfraud.preprocess.preprocess`` inside the child, CPU the child's user + system time. The config is the
packaged ``preprocess`` config with ``+experiment=synthetic_entities`` (entities account_id, device_id and ip,
the label table's label_time, ``data.policy.label_delay=60d``) and ``features/default.yaml``'s entity block
(windows 1h, 1d, 7d, 30d; risk on), under ``--memory-gb``.

1. With and without, at each ``--events`` size: "without" is the same experiment with
   ``data.schema.entities=[]``. The two alternate (without, with, without, ...), so that load from elsewhere
   hits both alike; ratio = median with s / median without s.
2. Growth, at ``--growth-events``: every combination of the first k entity columns (``--columns``) and the
   first j windows (``--windows``), plus "without", measured round-robin, one of each per repeat.

Stages per run (medians; a stage leaves out the stages it calls): entity stage = ``entity_seconds`` of the
report (the engine's ``entity_features``), of which kernel = ``column_features``; fit_stats and
sequences_and_rest include reading the events with their entity features back.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from preprocess import ROOT, _gb, _measure, _median_of, _prepare, machine
from report import emit

ENTITY_COLUMNS = ("account_id", "device_id", "ip")
WINDOWS = ("1h", "1d", "7d", "30d")
EXPERIMENT = "+experiment=synthetic_entities"
TARGET_RATIO = 2.0
STAGES = ("load_events", "entity_kernel", "entity_rest", "fit_stats", "sequences_and_rest", "write")


def variant(columns: int, windows: int) -> tuple[str, list[str]]:
    """Name and Hydra overrides of a run with the first ``columns`` entity columns and ``windows`` windows."""
    if columns == 0:
        return "without", [EXPERIMENT, "data.schema.entities=[]"]
    return f"c{columns}_w{windows}", [
        EXPERIMENT,
        f"data.schema.entities=[{','.join(ENTITY_COLUMNS[:columns])}]",
        f"features.entity.windows=[{','.join(WINDOWS[:windows])}]",
    ]


def summary(results: list[dict]) -> dict:
    n = results[0]["n_events"]
    if any(r["n_sessions"] != results[0]["n_sessions"] for r in results):
        raise RuntimeError("runs of one size disagree on the number of sessions")
    med = _median_of(results, n)
    med |= {
        "n_events": n,
        "partitions": results[0]["partitions"],
        "entity_features": results[0]["entity_features"],
        "entity_seconds": statistics.median(r["entity_seconds"] for r in results),
        "loadavg": statistics.median(r["loadavg_1m_before"] for r in results),
        "loadavg_max": max(r["loadavg_1m_before"] for r in results),
    }
    return med


def run(cfg_path: Path, work: Path, label: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="seqfraud_entity_bench_", dir=work) as out:
        r = _measure(["--child-pipeline", str(cfg_path), out])
    print(
        f"  {label}: {r['seconds']:.2f}s {r['peak_rss_bytes'] / 1e9:.2f}GB cpu {r['cpu_s']:.1f}s "
        f"entity {r['entity_seconds']:.2f}s (kernel {r['stages']['entity_kernel']:.2f}s) "
        f"partitions {r['partitions']} | load {r['loadavg_1m_before']:.1f}",
        flush=True,
    )
    return r


def with_without_table(rows: list[dict]) -> str:
    lines = [
        (
            "| events | without s | with s | ratio | without peak RSS GB | with peak RSS GB | with CPU s "
            "| entity stage s | kernel s | features | partitions (without / with) | repeats | load avg (max) |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        wo, w = r["without"], r["with"]
        lines.append(
            f"| {r['n_events']:,} | {wo['seconds']:.2f} | {w['seconds']:.2f} | {r['ratio']:.2f}x "
            f"| {_gb(wo['peak_rss_bytes'])} | {_gb(w['peak_rss_bytes'])} | {w['cpu_s']:.1f} "
            f"| {w['entity_seconds']:.2f} | {w['stages']['entity_kernel']:.2f} | {w['entity_features']} "
            f"| {wo['partitions']} / {w['partitions']} | {r['repeats']} "
            f"| {statistics.median([wo['loadavg'], w['loadavg']]):.1f} ({max(wo['loadavg_max'], w['loadavg_max']):.1f}) |"
        )
    return "\n".join(lines)


def stage_table(rows: list[dict]) -> str:
    lines = [
        "| events | run | " + " | ".join(f"{s} s" for s in STAGES) + " |",
        "|---:|---|" + "---:|" * len(STAGES),
    ]
    for r in rows:
        for name in ("without", "with"):
            st = r[name]["stages"]
            lines.append(
                f"| {r['n_events']:,} | {name} | " + " | ".join(f"{st[s]:.2f}" for s in STAGES) + " |"
            )
    return "\n".join(lines)


def peak_table(rows: list[dict], raw: list[dict]) -> str:
    """The process's peak RSS when each stage last returned (median over the runs), to see which stage sets it."""
    stages = ["load_events", "entity_rest", "fit_stats", "write"]
    lines = [
        "| events | run | " + " | ".join(f"after {s}" for s in stages) + " | at exit |",
        "|---:|---|" + "---:|" * 5,
    ]
    for r, runs in zip(rows, raw, strict=True):
        for name in ("without", "with"):
            after = [
                _gb(statistics.median(x["peak_rss_after"].get(s, 0) for x in runs[name]))
                if name == "with" or s != "entity_rest"
                else "—"
                for s in stages
            ]
            lines.append(
                f"| {r['n_events']:,} | {name} | "
                + " | ".join(after)
                + f" | {_gb(r[name]['peak_rss_bytes'])} |"
            )
    return "\n".join(lines)


def runs_list(rows: list[dict]) -> str:
    return "\n".join(
        f"- {r['n_events']:,} events: without {', '.join(f'{x:.2f}' for x in r['without']['all_seconds'])} s; "
        f"with {', '.join(f'{x:.2f}' for x in r['with']['all_seconds'])} s"
        for r in rows
    )


def growth_table(growth: dict[str, dict], columns: list[int], windows: list[int]) -> str:
    lines = [
        (
            "| entity columns | windows | features | seconds | CPU s | entity stage s | kernel s | fit_stats s "
            "| sequences_and_rest s | peak RSS GB | load avg |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = [("without", 0, 0)] + [(variant(c, w)[0], c, w) for c in columns for w in windows]
    for name, c, w in order:
        g = growth[name]
        lines.append(
            f"| {c} | {w} | {g['entity_features']} | {g['seconds']:.2f} | {g['cpu_s']:.1f} "
            f"| {g['entity_seconds']:.2f} | {g['stages']['entity_kernel']:.2f} | {g['stages']['fit_stats']:.2f} "
            f"| {g['stages']['sequences_and_rest']:.2f} | {_gb(g['peak_rss_bytes'])} | {g['loadavg']:.1f} |"
        )
    return "\n".join(lines)


def verdict(rows: list[dict], memory_gb: float) -> str:
    largest = max(rows, key=lambda r: r["n_events"])
    rss = largest["with"]["peak_rss_bytes"]
    checks = [
        (
            f"with entity features at most {TARGET_RATIO:g}x the time without, at {largest['n_events']:,} events",
            largest["ratio"] <= TARGET_RATIO,
            f"{largest['ratio']:.2f}x",
        ),
        (
            f"peak RSS with entity features under the {memory_gb:g} GB budget, at {largest['n_events']:,} events",
            rss < memory_gb * 1e9,
            f"{_gb(rss)} GB",
        ),
    ]
    return "\n".join(f"- {'met' if ok else 'MISSED'}: {name} ({got})" for name, ok, got in checks)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=float, nargs="*", default=[1e7], help="sizes of the with/without part"
    )
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the with/without part")
    parser.add_argument(
        "--growth-events", type=float, default=1e6, help="size of the growth part (0: skip it)"
    )
    parser.add_argument("--growth-repeats", type=int, default=3)
    parser.add_argument("--columns", type=int, nargs="+", default=[1, 2, 3], help="entity column counts")
    parser.add_argument("--windows", type=int, nargs="+", default=[1, 2, 4], help="window counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-gb", type=float, default=4.0, help="preprocess.memory_gb")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "outputs/benchmarks/preprocess", help="cached synthetic data sets"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown report here")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the measurements of an interrupted run of the same command (--json's .partial.json)",
    )
    args = parser.parse_args(argv)
    if not all(1 <= c <= len(ENTITY_COLUMNS) for c in args.columns) or not all(
        1 <= w <= len(WINDOWS) for w in args.windows
    ):
        parser.error(f"--columns take 1-{len(ENTITY_COLUMNS)}, --windows 1-{len(WINDOWS)}")
    work = args.work.resolve()
    info = machine()
    print(json.dumps(info), flush=True)

    def config(n_events: float, columns: int, windows: int) -> Path:
        name, overrides = variant(columns, windows)
        return _prepare(n_events, work, args.seed, args.memory_gb, overrides, name=f"entities_{name}")[0]

    rows, raw = [], {"with_without": [], "growth": None}
    done = {"with_without": [], "growth": None}
    if args.resume and args.json and args.json.with_suffix(".partial.json").exists():
        done = json.loads(args.json.with_suffix(".partial.json").read_text())["raw"]

    def checkpoint() -> None:
        """Every measurement so far, so that an interrupted run keeps what it measured."""
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.with_suffix(".partial.json").write_text(
                json.dumps({"machine": info, "raw": raw}, indent=2)
            )

    for n_events in args.events:
        paths = {
            "without": config(n_events, 0, 0),
            "with": config(n_events, len(ENTITY_COLUMNS), len(WINDOWS)),
        }
        previous = done["with_without"][len(rows)] if len(done["with_without"]) > len(rows) else {}
        runs: dict[str, list[dict]] = {name: previous.get(name, [])[: args.repeats] for name in paths}
        raw["with_without"].append(runs)
        for i in range(args.repeats):
            for name, path in paths.items():
                if len(runs[name]) <= i:
                    runs[name].append(run(path, work, f"{n_events:.0e} #{i + 1} {name}"))
                    checkpoint()
        row = {"n_events": runs["with"][0]["n_events"], "repeats": args.repeats}
        row |= {name: summary(results) for name, results in runs.items()}
        row["ratio"] = row["with"]["seconds"] / row["without"]["seconds"]
        rows.append(row)

    growth: dict[str, dict] = {}
    if args.growth_events:
        shapes = [(0, 0)] + [(c, w) for c in args.columns for w in args.windows]
        paths = {variant(c, w)[0]: config(args.growth_events, c, w) for c, w in shapes}
        runs = {name: (done["growth"] or {}).get(name, [])[: args.growth_repeats] for name in paths}
        raw["growth"] = runs
        for i in range(args.growth_repeats):
            for name, path in paths.items():
                if len(runs[name]) <= i:
                    runs[name].append(run(path, work, f"{args.growth_events:.0e} #{i + 1} {name}"))
                    checkpoint()
        growth = {name: summary(results) for name, results in runs.items()}

    parts = [
        (
            f"Machine: {info['nproc']} cores ({info['cpu']}), {info['ram_gib']} GiB RAM, polars {info['polars']} "
            f"({info['polars_threads']} threads), Python {info['python']}; preprocess.memory_gb={args.memory_gb:g}."
        )
    ]
    if rows:
        parts += [
            "With and without entity features (medians):\n\n" + with_without_table(rows),
            "Stages (median s):\n\n" + stage_table(rows),
            "Peak RSS (GB) of the process when a stage last returned (medians):\n\n"
            + peak_table(rows, raw["with_without"]),
            "Single runs:\n\n" + runs_list(rows),
            "Targets:\n\n" + verdict(rows, args.memory_gb),
        ]
    if growth:
        n = growth["without"]["n_events"]
        parts.append(
            f"Growth at {n:,} events (medians of {args.growth_repeats}):\n\n"
            + growth_table(growth, args.columns, args.windows)
        )
    emit(
        "\n\n".join(parts),
        args.out,
        args.json,
        {"machine": info, "with_without": rows, "growth": growth, "raw": raw},
    )


if __name__ == "__main__":
    main()
