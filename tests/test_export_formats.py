"""Which formats export writes: every one a model supports by default, a named one or an error; GRU runs export
to pt2 with a dynamic length; an order-shuffled ablation is refused as not servable."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import polars as pl
import pytest
import torch
from conftest import single_torch_thread

from seqfraud import schema as S
from seqfraud.export.artifact import FORMATS, MANIFEST_FILE
from seqfraud.export.exporter import ExportError, export_run
from seqfraud.features.spec import Spec
from seqfraud.scoring import Scorer
from seqfraud.training.data import collate, read_sessions

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gru_run(trained_run, tmp_path_factory) -> Path:
    """A one-epoch GRU trained on ``trained_run``'s prepared data (no preprocessing of its own)."""
    from hydra import compose, initialize_config_dir

    from seqfraud.training.train import train

    base = tmp_path_factory.mktemp("gru")
    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "+experiment=smoke",
                "model=gru",
                "model.d_model=16",
                "trainer.max_epochs=1",
                f"paths.output_dir={base / 'run'}",
                f"paths.data_dir={trained_run.parent / 'data'}",
                f"prepared_dir={trained_run}",
                "logger=none",
            ],
        )
    with single_torch_thread():
        train(cfg)
    return base / "run"


@pytest.mark.slow  # test_online's GRU artifact is exported and replayed in both formats in the default run
def test_a_gru_run_exports_to_every_format_and_scores_like_the_run(
    gru_run, trained_run, test_period_events, tmp_path
):
    out = export_run(gru_run, tmp_path / "a", parity_sessions=256)
    m = json.loads((out / MANIFEST_FILE).read_text())
    assert m["model"]["encoder"] == "gru"
    assert m["formats"] == {fmt: FORMATS[fmt].file for fmt in FORMATS} and m["skipped_formats"] == {}
    assert max(m["parity"]["validation"]["max_abs_diff"].values()) <= 1e-5
    assert (
        m["embed"]["formats"] == {"torchscript": "embed.ts", "pt2": "embed.pt2"} and m["embed"]["width"] == 16
    )
    assert max(m["parity"]["embed"]["max_abs_diff"].values()) <= 1e-5

    # The pt2 program keeps the length dynamic: every length up to max_len, padded or not, matches TorchScript.
    spec = Spec.load(out / "spec.json")
    ds = read_sessions(trained_run / "data" / "val", spec.fields)
    by_length = sorted(range(len(ds)), key=lambda i: ds.lengths[i])
    pt2, ts = (Scorer.load(out, fmt=fmt).model for fmt in ("pt2", "torchscript"))
    with torch.inference_mode():
        for group in ([by_length[0]], [by_length[-1]], by_length[::40]):
            batch = collate([ds[i] for i in group])
            torch.testing.assert_close(
                pt2(batch["tokens"], batch["lengths"]),
                ts(batch["tokens"], batch["lengths"]),
                atol=1e-6,
                rtol=0,
            )
    assert ds.lengths[by_length[0]] < ds.lengths[by_length[-1]]

    expected = pl.read_parquet(gru_run / "predictions" / "test.parquet")
    got = Scorer.load(out, fmt="pt2").score(test_period_events)
    joined = expected.join(got, on=S.SESSION_ID, how="inner", suffix="_got")
    assert joined.height == expected.height
    assert float((joined[S.SCORE] - joined[S.RAW_SCORE]).abs().max()) <= 1e-5


def _refuse_pt2(monkeypatch):
    def refuse(module, spec, path):
        path.write_bytes(b"half")  # a failed save may leave a partial file behind
        raise RuntimeError("Constraints violated (L['tokens'].size()[1])!\nmore detail")

    monkeypatch.setitem(FORMATS, "pt2", dataclasses.replace(FORMATS["pt2"], save=refuse))


def test_by_default_export_skips_a_format_the_model_cannot_use_and_says_why(
    trained_run, tmp_path, monkeypatch, caplog
):
    _refuse_pt2(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="seqfraud.export.exporter"):
        out = export_run(trained_run, tmp_path / "a")
    m = json.loads((out / MANIFEST_FILE).read_text())
    assert m["formats"] == {"torchscript": "model.ts"}
    assert m["skipped_formats"] == {"pt2": "Constraints violated (L['tokens'].size()[1])!"}
    assert not (out / "model.pt2").exists() and "model.pt2" not in m["files"]
    assert m["embed"]["formats"] == {"torchscript": "embed.ts"} and not (out / "embed.pt2").exists()
    assert "skipping format pt2: cannot export the model to it: Constraints violated" in caplog.text


def test_a_named_format_that_cannot_hold_the_model_is_an_error_naming_the_others(
    trained_run, tmp_path, monkeypatch
):
    _refuse_pt2(monkeypatch)
    with pytest.raises(
        ExportError,
        match=r"cannot export the model to pt2: Constraints violated .*"
        r"export formats=\[torchscript\] instead",
    ):
        export_run(trained_run, tmp_path / "a", formats=["torchscript", "pt2"])
    assert list(tmp_path.iterdir()) == []


def test_an_order_shuffled_ablation_is_refused_as_not_servable(trained_run, tmp_path):
    """Its predictions were made on shuffled sessions; a scorer reads events in time order."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("data"))
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("shuffle_order: false", "shuffle_order: true"))
    with pytest.raises(
        ExportError,
        match=r"order-shuffled ablation \(features.shuffle_order=true\) is not a "
        r"servable model",
    ):
        export_run(run, tmp_path / "out" / "a")
    assert not (tmp_path / "out").exists()
