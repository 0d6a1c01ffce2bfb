"""Export: the artifact's layout and manifest, its formats' parity, and refusals that leave nothing behind."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from seqfraud import schema as S
from seqfraud.calibration import Calibration
from seqfraud.export.artifact import (
    CALIBRATION_FILE,
    FORMATS,
    MANIFEST_FILE,
    RELIABILITY_FILE,
    SIGNATURE_FILE,
    SPEC_FILE,
    canonical_json,
    input_schema,
    open_artifact,
    sha256,
)
from seqfraud.export.exporter import DEFAULT_THRESHOLDS, ExportError, export_run
from seqfraud.export.signing import generate_keypair, load_public_keys
from seqfraud.features.spec import Spec
from seqfraud.scoring import Scorer
from seqfraud.training.data import collate, read_sessions

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_artifact_layout_and_manifest(exported_artifact, trained_run):
    files = {p.name for p in exported_artifact.iterdir()}
    assert files == {
        MANIFEST_FILE,
        SPEC_FILE,
        CALIBRATION_FILE,
        RELIABILITY_FILE,
        "model.ts",
        "model.pt2",
        "embed.ts",
        "embed.pt2",
    }
    m = json.loads((exported_artifact / MANIFEST_FILE).read_text())
    assert (exported_artifact / MANIFEST_FILE).read_bytes() == canonical_json(
        m
    )  # the bytes a signature covers
    assert (m["format"], m["version"]) == ("seqfraud.artifact", 1)
    assert (
        set(m["versions"]) >= {"seqfraud", "torch", "polars"} and m["versions"]["torch"] == torch.__version__
    )
    assert m["run_id"].startswith(trained_run.name + "-") and len(m["run_id"]) == len(trained_run.name) + 13
    assert m["source"]["checkpoint_sha256"] == sha256(trained_run / "checkpoints" / "best.ckpt")
    provenance = json.loads((trained_run / "metrics.json").read_text())["provenance"]
    assert m["source"]["training"] == provenance and provenance["inputs"]["events"]["sha256"]
    assert m["formats"] == {fmt: FORMATS[fmt].file for fmt in ("torchscript", "pt2")}
    for name, entry in m["files"].items():
        assert entry == {
            "bytes": (exported_artifact / name).stat().st_size,
            "sha256": sha256(exported_artifact / name),
        }
    assert set(m["files"]) == files - {MANIFEST_FILE}

    spec = Spec.load(trained_run / "spec.json")
    assert Spec.load(exported_artifact / SPEC_FILE).to_dict() == spec.to_dict()
    schema = m["input_schema"]
    assert schema["columns"] == {
        spec.schema.session_id: "session_id",
        spec.schema.timestamp: "timestamp",
        spec.schema.event_type: "event_type",
        **{c: "categorical" for c in spec.schema.categorical},
        **{c: "numerical" for c in spec.schema.numerical},
    }
    assert schema["token_fields"] == list(spec.fields) and schema["max_len"] == spec.max_len
    # The window's hop where it moves in hops; a window moving one event at a time says nothing, as every
    # artifact exported before spec version 5 did: their input_schema, checked at load, must still match.
    assert schema["hop"] == spec.hop > 1 and "hop" not in input_schema(replace(spec, hop=1))
    # The event id's column, which POST /events requires, with its role (dogfood 214).
    with_id = replace(spec, schema=replace(spec.schema, event_id="evt_uid"))
    assert input_schema(with_id)["columns"]["evt_uid"] == "event_id"
    assert m["model"]["vocab_sizes"] == [spec.vocab_size(f) for f in spec.fields]

    metrics = json.loads((trained_run / "metrics.json").read_text())
    for split in ("val", "test"):
        for key, value in metrics[split].items():
            if isinstance(value, float):
                assert m["metrics"][split][key] == (None if math.isnan(value) else value)

    parity = m["parity"]
    assert max(parity["validation"]["max_abs_diff"].values()) <= 1e-5
    assert m["embed"] == {
        "formats": {"torchscript": "embed.ts", "pt2": "embed.pt2"},
        "width": m["model"]["d_model"],
    }
    assert max(parity["embed"]["max_abs_diff"].values()) <= 1e-5
    assert parity["end_to_end"]["max_abs_diff"] <= 1e-5 and parity["end_to_end"]["sessions"] > 0
    paths = parity["end_to_end"]["token_paths"]
    assert set(paths) == {"polars", "numpy"} and max(paths.values()) <= 1e-5


def test_thresholds_hold_their_false_positive_targets(exported_artifact, trained_run):
    t = json.loads((exported_artifact / MANIFEST_FILE).read_text())["thresholds"]
    val = pl.read_parquet(trained_run / "predictions" / "val.parquet")
    # Thresholds live on the calibrated scale the scorer returns.
    calib = Calibration.from_dict(json.loads((exported_artifact / CALIBRATION_FILE).read_text()))
    val = val.with_columns(
        pl.Series(S.SCORE, calib.apply(val[S.SCORE].cast(pl.Float32).to_numpy()).astype(np.float32))
    )
    neg = val.filter(pl.col(S.LABEL) == 0)[S.SCORE]
    assert 0 < t["review"] <= t["decline"] <= 1
    for band, target in (("review", 0.01), ("decline", 0.001)):
        fpr = float((neg >= t[band]).mean())
        assert fpr <= target and fpr == t["validation"][band]["fpr"]
        # The lowest such threshold: the next negative score below it would break the target.
        below = neg.filter(neg < t[band]).max()
        assert float((neg >= below).mean()) > target
    assert t["method"] and t["bands"] and t["policies"] == DEFAULT_THRESHOLDS


def test_torchscript_runs_in_a_process_that_never_imports_seqfraud(exported_artifact, trained_run, tmp_path):
    spec = Spec.load(trained_run / "spec.json")
    ds = read_sessions(trained_run / "data" / "val", spec.fields, 50)
    batch = collate([ds[i] for i in range(len(ds))])
    np.save(tmp_path / "tokens.npy", batch["tokens"].numpy())
    np.save(tmp_path / "lengths.npy", batch["lengths"].numpy())
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, torch
        extra = {{"spec.json": ""}}
        model = torch.jit.load({str(exported_artifact / "model.ts")!r}, _extra_files=extra)
        probs = model(torch.from_numpy(np.load("tokens.npy")), torch.from_numpy(np.load("lengths.npy")))
        assert not [m for m in sys.modules if m.startswith("seqfraud")]
        spec = extra["spec.json"]
        print(json.dumps({{"probs": probs.tolist(), "spec": spec.decode() if isinstance(spec, bytes) else spec}}))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["spec"] == (exported_artifact / SPEC_FILE).read_text()
    expected = pl.read_parquet(trained_run / "predictions" / "val.parquet")[S.SCORE].to_numpy()
    np.testing.assert_allclose(out["probs"], expected[batch["index"].numpy()], atol=1e-5)


def test_torchscript_scores_do_not_depend_on_padding(exported_artifact, trained_run):
    """Unpadded batches take the unmasked attention path in TorchScript; padded ones the masked path."""
    spec = Spec.load(trained_run / "spec.json")
    ds = read_sessions(trained_run / "data" / "val", spec.fields)
    by_length = sorted(range(len(ds)), key=lambda i: ds.lengths[i])
    long, short = by_length[-1], by_length[0]
    model = torch.jit.load(str(exported_artifact / "model.ts"))
    with torch.inference_mode():
        alone = [model(collate([ds[i]])["tokens"], collate([ds[i]])["lengths"]) for i in (long, short)]
        batch = collate([ds[long], ds[short]])
        together = model(batch["tokens"], batch["lengths"])
    assert ds.lengths[long] > ds.lengths[short]
    torch.testing.assert_close(torch.cat(alone), together, atol=1e-6, rtol=0)


def test_scorer_reproduces_the_run_on_raw_test_events(exported_artifact, trained_run, test_period_events):
    expected = pl.read_parquet(trained_run / "predictions" / "test.parquet")
    for fmt in ("torchscript", "pt2"):
        got = Scorer.load(exported_artifact, fmt=fmt).score(test_period_events)
        assert got.columns == [S.SESSION_ID, S.SCORE, S.BAND, S.RAW_SCORE] and got.height == expected.height
        joined = expected.join(got, on=S.SESSION_ID, how="inner", suffix="_got")
        assert joined.height == expected.height
        # The run's predictions are raw model probabilities; the scorer's score is calibrated.
        assert float((joined[S.SCORE] - joined[S.RAW_SCORE]).abs().max()) <= 1e-5, fmt


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_export_refuses_a_parity_failure_and_leaves_nothing(trained_run, tmp_path):
    with pytest.raises(ExportError, match="differ from the eager model"):
        export_run(trained_run, tmp_path / "a", formats=["torchscript"], tolerance=-1.0)
    assert _leftovers(tmp_path) == []


def test_export_refuses_train_serve_skew_end_to_end(trained_run, test_period_events, tmp_path):
    """Events that are not what the run was trained on (here: shifted an hour apart) must fail the export."""
    spec = Spec.load(trained_run / "spec.json")
    ts = spec.schema.timestamp
    skewed = test_period_events.with_columns(
        pl.col(ts) + pl.duration(hours=pl.int_range(pl.len()).over(spec.schema.session_id))
    )
    skewed.write_parquet(tmp_path / "skewed.parquet")
    with pytest.raises(ExportError, match="end-to-end"):
        export_run(
            trained_run,
            tmp_path / "out" / "a",
            formats=["torchscript"],
            events=str(tmp_path / "skewed.parquet"),
        )
    assert _leftovers(tmp_path / "out") == []


def test_export_checks_the_numpy_token_path_too(trained_run, tmp_path, monkeypatch):
    """The real-time (numpy) token path is scored at export as well: a skew there alone fails the export."""
    from seqfraud.export import exporter

    real = exporter.numpy_sequences

    def shifted(*args):
        seqs = real(*args)
        seqs.tokens[:, 0] = seqs.tokens[::-1, 0]  # event types in the wrong order
        return seqs

    monkeypatch.setattr(exporter, "numpy_sequences", shifted)
    with pytest.raises(ExportError, match="numpy token path"):
        export_run(trained_run, tmp_path / "out" / "a", formats=["torchscript"])
    assert _leftovers(tmp_path / "out") == []


def test_export_refuses_missing_events_existing_out_and_unknown_format(trained_run, tmp_path):
    with pytest.raises(ExportError, match="pass events=PATH"):
        export_run(
            trained_run,
            tmp_path / "out" / "a",
            formats=["torchscript"],
            events=str(tmp_path / "none.parquet"),
        )
    assert _leftovers(tmp_path / "out") == []
    (tmp_path / "taken").mkdir()
    with pytest.raises(ExportError, match="exists"):
        export_run(trained_run, tmp_path / "taken")
    with pytest.raises(ExportError, match="unknown"):
        export_run(trained_run, tmp_path / "b", formats=["onnx"])
    with pytest.raises(ExportError, match="checkpoints/best.ckpt"):
        export_run(tmp_path, tmp_path / "c")
    with pytest.raises(
        ExportError, match="nowhere: no such run directory"
    ):  # not "no checkpoint" (review 113)
        export_run(tmp_path / "nowhere", tmp_path / "d")


def test_export_overwrite_replaces_the_old_artifact_and_signs(trained_run, tmp_path, caplog):
    """And only an artifact, or an empty folder: a scores file given as out was replaced, a hidden copy of it left
    (dogfood 55); an empty folder (one a user made) is no loss (review 58). An unsigned export is said of the
    artifact, once: it was said of the temporary folder the export renames (dogfood 125). Its long steps are said as
    they start."""
    (tmp_path / "scores.parquet").write_text("scores")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "x").write_text("x")
    for other in ("scores.parquet", "folder"):
        with pytest.raises(
            ExportError, match=f"{other} is not an artifact .* replaces an earlier artifact only"
        ):
            export_run(trained_run, tmp_path / other, formats=["torchscript"], overwrite=True)
    assert (tmp_path / "scores.parquet").read_text() == "scores"
    (tmp_path / "empty").mkdir()
    with caplog.at_level(logging.WARNING, logger="seqfraud.export.artifact"):
        assert (
            export_run(trained_run, tmp_path / "empty", formats=["torchscript"], overwrite=True)
            / MANIFEST_FILE
        ).is_file()
    assert [r.getMessage().partition(": ")[0] for r in caplog.records if "UNSIGNED" in r.getMessage()] == [
        str(tmp_path / "empty")
    ]
    caplog.clear()
    out = tmp_path / "a"
    out.mkdir()
    (out / "stale").write_text("x")
    (out / MANIFEST_FILE).write_text("{}")  # an earlier artifact
    private, public = generate_keypair(tmp_path / "keys")
    with caplog.at_level(logging.INFO, logger="seqfraud.export.exporter"):
        export_run(trained_run, out, formats=["torchscript"], overwrite=True, sign_key=private)
    assert "UNSIGNED" not in caplog.text
    # Each long step is said as it starts: an export ran minutes with nothing said (dogfood 273).
    said = [r.getMessage().split(" ")[0] for r in caplog.records if r.name == "seqfraud.export.exporter"]
    assert [w for w in said if w in ("saving", "scoring", "exported")] == ["saving", "scoring", "exported"]
    assert _leftovers(out) == sorted(
        [CALIBRATION_FILE, MANIFEST_FILE, SIGNATURE_FILE, "model.ts", "embed.ts", RELIABILITY_FILE, SPEC_FILE]
    )
    assert _leftovers(tmp_path) == ["a", "empty", "folder", "keys", "scores.parquet"]
    assert json.loads((out / MANIFEST_FILE).read_text())["formats"] == {"torchscript": "model.ts"}
    assert open_artifact(out, verify_key=public, require_signed=True).signer == next(
        iter(load_public_keys(public))
    )


def test_export_refuses_a_bad_sign_key_before_any_work(trained_run, tmp_path):
    _, public = generate_keypair(tmp_path / "keys")
    for key, message in (
        (public, "that is the public key"),
        (tmp_path / "none.key", "cannot read the private key"),
    ):
        with pytest.raises(ExportError, match=f"sign_key: .*{message}"):
            export_run(trained_run, tmp_path / "out" / "a", sign_key=key)
    assert not (tmp_path / "out").exists()


def test_export_config_maps_onto_export_run():
    import inspect

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "seqfraud" / "conf"), version_base="1.3"):
        cfg = compose("export", overrides=["run_dir=r", "out=o"])
    params = inspect.signature(export_run).parameters
    assert set(cfg) == set(params)
    assert OmegaConf.to_container(cfg.thresholds) == DEFAULT_THRESHOLDS and cfg.calibration == "platt"
    assert (
        cfg.formats is None and params["formats"].default is None and cfg.tolerance == 1e-5
    )  # every format it can


def test_export_refuses_settings_that_cannot_work_before_any_work(tmp_path):
    """parity_sessions=0 was blamed on the validation split, a negative tolerance on the model after the whole
    export; a band policy given as an override got Hydra's hint to use '+', which failed again (dogfood 55)."""
    from seqfraud.errors import EXIT_USER_ERROR

    for override, says in (
        ("parity_sessions=0", "parity_sessions must be at least 1, got 0"),
        ("tolerance=-1", "tolerance must be at least 0"),
        ("compiled_step=maybe", "compiled_step must be auto, true or false, got 'maybe'"),
        (
            "thresholds.review={policy:capacity,per_1000:20}",
            "A band's policy is replaced whole: '~thresholds.review' '+thresholds.review={policy:",
        ),
    ):
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "seqfraud",
                "export",
                f"run_dir={tmp_path}",
                f"out={tmp_path / 'a'}",
                override,
                f"hydra.run.dir={tmp_path / 'h'}",
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        assert result.returncode == EXIT_USER_ERROR and says in result.stderr, result.stderr


def test_nan_metrics_in_lists_are_null_in_the_manifest():
    """A test split without a fraud has NaN metrics per prefix length too, inside a list: they failed the export
    with a traceback (dogfood 55)."""
    from seqfraud.export.artifact import canonical_json
    from seqfraud.export.exporter import _finite

    manifest = {
        "metrics": {"test": {"pr_auc": float("nan")}, "by_length": [{"pr_auc": float("nan"), "n": 2}]}
    }
    assert json.loads(canonical_json(_finite(manifest))) == {
        "metrics": {"test": {"pr_auc": None}, "by_length": [{"pr_auc": None, "n": 2}]}
    }


def test_manifest_says_how_test_sessions_score_after_their_first_events(
    exported_artifact, trained_run, test_period_events
):
    """Per-event scoring acts on prefixes, which models trained on whole sessions may misread: the manifest
    holds the test sessions scored after their first k events, each row as Scorer.score gives those events."""
    m = json.loads((exported_artifact / MANIFEST_FILE).read_text())
    rows = m["metrics"]["test_by_events_seen"]
    spec, scorer = Spec.load(trained_run / "spec.json"), Scorer.load(exported_artifact)
    labels = pl.read_parquet(trained_run / "predictions" / "test.parquet").select(S.SESSION_ID, S.LABEL)
    s = spec.schema
    longest = test_period_events.group_by(s.session_id).len()["len"].max()
    assert [r["events"] for r in rows] == [*(k for k in (1, 2, 4, 8, 16) if k < longest), "all"]
    ordered = test_period_events.with_row_index("_row").sort(s.timestamp, "_row")
    for row in (rows[0], rows[-1]):
        k = longest if row["events"] == "all" else row["events"]
        first = ordered.filter(pl.int_range(pl.len()).over(s.session_id) < k).drop("_row")
        scored = scorer.score(first).join(labels, on=S.SESSION_ID)
        legit = scored.filter(pl.col(S.LABEL) == 0)[S.SCORE]
        assert row["decline_fpr"] == pytest.approx(float((legit >= scorer.thresholds["decline"]).mean()))
        assert row["review_fpr"] == pytest.approx(float((legit >= scorer.thresholds["review"]).mean()))
    assert rows[-1]["pr_auc"] == pytest.approx(m["metrics"]["test"]["pr_auc"], abs=1e-6)


def test_bands_that_take_legitimate_sessions_early_are_warned_about(
    exported_artifact, trained_run, test_period_events, caplog
):
    """The decline band warns past 5% of legitimate sessions; the review band past half of them (a dogfood model
    reviewed every legitimate session after its first event, unsaid). Thresholds chosen to trip neither, then
    only the review band's."""
    from seqfraud.export.exporter import by_events_seen
    from seqfraud.scoring.prepare import normalized_events

    scorer = Scorer.load(exported_artifact)
    featured = normalized_events(test_period_events.lazy(), scorer.spec, "test")
    labels = pl.read_parquet(trained_run / "predictions" / "test.parquet").select(S.SESSION_ID, S.LABEL)
    scorer.thresholds = {"review": 1.0, "decline": 1.0}
    by_events_seen(scorer, featured, labels, {})
    assert "band takes" not in caplog.text
    scorer.thresholds = {"review": 0.0, "decline": 1.0}
    by_events_seen(scorer, featured, labels, {})
    assert (
        "the review band takes 100% after their first 1 event(s), 100% after their first 2 event(s), "
        in caplog.text
    )
    assert "the decline band" not in caplog.text
    # Whole sessions past the limit are the threshold's own doing, which prefixes do not mend (dogfood 244: a cost
    # policy's amount summed over a funnel's repeated price).
    assert "100% scored whole of the legitimate test sessions: do not act" in caplog.text
    assert "sessions scored whole are the threshold's own doing, which prefixes do not mend" in caplog.text
    # With what would learn the prefixes: not loader.prefix_share alone where a stacker's LightGBM scores
    # (dogfood 218: the stacker kept LightGBM, and the README's remedy changed nothing).
    stacked = "a stacked model's LightGBM learns from whole sessions, whatever loader.prefix_share"
    assert (stacked in caplog.text) == (scorer.stacker is not None)
    assert ("loader.prefix_share=0.5 trains the sequence model on prefixes too" in caplog.text) == (
        scorer.stacker is None
    )


def test_export_says_when_validation_left_out_unlabelled_sessions(tmp_path, caplog):
    """Calibration and thresholds read labelled validation sessions only; with labels a biased sample (frauds
    labelled five times as often), a capacity of 30 per 1,000 flagged 11 per 1,000 of all traffic, unsaid
    (dogfood 24)."""
    from seqfraud.export.exporter import warn_if_labelled_sample

    (tmp_path / "preprocess_report.json").write_text(json.dumps({"unlabeled_val_sessions_dropped": 1332}))
    warn_if_labelled_sample(tmp_path, 175)
    assert "fitted on the 175 labelled validation sessions; 1332 unlabelled ones were left out" in caplog.text
    caplog.clear()
    (tmp_path / "preprocess_report.json").write_text(json.dumps({"unlabeled_val_sessions_dropped": 0}))
    warn_if_labelled_sample(tmp_path, 175)
    assert "left out" not in caplog.text
