"""Preprocessing pipeline: validate, split out of time, fit the spec on train, tokenize, write datasets.

``python -m seqfraud.preprocess`` runs it under Hydra (``conf/preprocess.yaml``) and writes the spec and
the train/val/test Parquet datasets into the run directory.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from seqfraud import schema as S
from seqfraud.data.events import load_events
from seqfraud.data.split import assign_split, before_test_end, from_epoch_us, split_boundaries, to_epoch_us
from seqfraud.features.spec import Spec
from seqfraud.features.tokens import fit_spec, sequences
from seqfraud.schema import Schema

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"
DATA_DIR = "data"
REPORT_FILE = "preprocess_report.json"


@dataclass
class Prepared:
    spec: Spec
    datasets: dict[str, Path]
    report: dict[str, Any]
    events: pl.LazyFrame  # normalized events, for models that read raw values (the aggregates baseline)
    sessions: pl.DataFrame  # one row per session: start time, label, split


def resolve_data_config(data: Mapping[str, Any]) -> dict[str, Any]:
    """Plain dict of the data config; synthetic companion files only follow the synthetic events.

    ``python train.py data.events=mine.parquet`` must not silently pick up the synthetic labels or
    typologies that the default config points at, so those defaults drop out when the events do.
    """
    d = dict(data)
    synth = d.get("synthetic")
    if synth:
        synth_dir = Path(synth["dir"])
        if Path(d["events"]) != synth_dir / "events.parquet":
            for key in ("labels", "typologies"):
                if d.get(key) and Path(d[key]).parent == synth_dir:
                    d[key] = None
            d["synthetic"] = None
    return d


def ensure_synthetic(data: Mapping[str, Any]) -> None:
    """Generate the built-in synthetic data on first use."""
    synth = data.get("synthetic")
    if not synth or Path(data["events"]).exists():
        return
    from seqfraud.data import synthetic

    log.info("generating synthetic data: %s sessions, seed %s, into %s", synth["sessions"], synth["seed"], synth["dir"])
    synthetic.write(synthetic.generate(int(synth["sessions"]), seed=int(synth["seed"])), synth["dir"])


def preprocess(data_cfg: Mapping[str, Any], features_cfg: Mapping[str, Any], out_dir: str | Path) -> Prepared:
    """Run the whole preprocessing and write ``spec.json``, ``data/{split}.parquet`` and a report."""
    t0 = time.perf_counter()
    data = resolve_data_config(data_cfg)
    ensure_synthetic(data)
    schema = Schema.from_config(data["schema"])
    policy = data.get("policy") or {}
    loaded = load_events(data["events"], schema, data.get("labels"),
                         on_unlabeled=policy.get("on_unlabeled", "error"),
                         on_orphan_labels=policy.get("on_orphan_labels", "error"))
    split = data.get("split") or {}
    test_end = split.get("test_end")
    in_range = before_test_end(loaded.sessions, test_end)
    val_us, test_us = split_boundaries(in_range, split.get("val_start"), split.get("test_start"),
                                       split.get("val_fraction", 0.15), split.get("test_fraction", 0.15), test_end)
    sessions = assign_split(in_range, val_us, test_us)
    train_ids = sessions.lazy().filter(pl.col(S.SPLIT) == "train").select(S.SESSION_ID)
    train_events = loaded.events.join(train_ids, on=S.SESSION_ID, how="semi")
    spec = fit_spec(
        train_events, schema, timestamp_unit=loaded.timestamp_unit,
        max_len=int(features_cfg.get("max_len", 256)), min_count=int(features_cfg.get("min_count", 5)),
        max_vocab=int(features_cfg.get("max_vocab", 1000)), n_buckets=int(features_cfg.get("n_buckets", 16)),
        tail_quantiles=tuple(features_cfg.get("tail_quantiles") or ()),
        time_delta=dict(features_cfg.get("time_delta") or {}),
    )
    spec.fit_info |= {"val_start": from_epoch_us(val_us), "test_start": from_epoch_us(test_us)}
    seqs = (
        sequences(loaded.events, spec, extra=(S.LABEL,))
        .join(sessions.lazy().select(S.SESSION_ID, S.SPLIT), on=S.SESSION_ID, how="left", maintain_order="left")
        .collect(engine="streaming")
    )
    out = Path(out_dir)
    (out / DATA_DIR).mkdir(parents=True, exist_ok=True)
    spec.save(out / SPEC_FILE)
    datasets, counts = {}, {}
    for name in S.SPLITS:
        part = seqs.filter(pl.col(S.SPLIT) == name).drop(S.SPLIT)
        datasets[name] = out / DATA_DIR / f"{name}.parquet"
        part.write_parquet(datasets[name])
        counts[name] = {"sessions": part.height, "positives": int(part[S.LABEL].sum() or 0)}
    report = loaded.report | {
        "splits": counts,
        "val_start": spec.fit_info["val_start"],
        "test_start": spec.fit_info["test_start"],
        "test_end": from_epoch_us(to_epoch_us(test_end)) if test_end else None,
        "sessions_after_test_end": loaded.sessions.height - in_range.height,
        "truncated_sessions": int((sessions["n_events"] > spec.max_len).sum()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    (out / REPORT_FILE).write_text(json.dumps(report, indent=2))
    for name, c in counts.items():
        log.info("%s: %s sessions, %s positive", name, c["sessions"], c["positives"])
    if test_end:
        log.info("test_end %s: %s later sessions left out", report["test_end"], report["sessions_after_test_end"])
    for key in ("orphan_labels_dropped", "unlabeled_sessions_dropped", "unlabeled_events_dropped"):
        if key in report:
            log.warning("policy: %s = %s", key, report[key])
    return Prepared(spec=spec, datasets=datasets, report=report, events=loaded.events, sessions=sessions)


def main() -> None:
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base="1.3", config_path="../conf", config_name="preprocess")
    def _run(cfg: DictConfig) -> None:
        out = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
        prepared = preprocess(OmegaConf.to_container(cfg.data, resolve=True),
                              OmegaConf.to_container(cfg.features, resolve=True), out)
        print(json.dumps(prepared.report, indent=2))

    _run()


if __name__ == "__main__":
    main()
