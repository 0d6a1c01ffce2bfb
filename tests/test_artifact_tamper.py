"""The artifact-tampering matrix: every forgery and breakage of issue 10 is refused, and refused before any model
file is deserialized; what an unsigned artifact does and does not protect, stated as tests."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import itertools
import json
import logging
import os
import pickle
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from seqfraud.cli import sign as sign_cli
from seqfraud.export.artifact import (
    CALIBRATION_FILE,
    FORMATS,
    MANIFEST_FILE,
    REQUIRE_SIGNED_ENV,
    SIGNATURE_FILE,
    SPEC_FILE,
    VERIFY_KEY_ENV,
    Artifact,
    ArtifactError,
    canonical_json,
    open_artifact,
    sign_artifact,
)
from seqfraud.export.signing import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, generate_keypair, load_public_keys
from seqfraud.scoring import Scorer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class OpensMarker:
    """A pickle that, when loaded, creates a file: what an attacker's code would do, made visible."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


class ApproveAll(torch.nn.Module):
    """An attacker's model: every session scores 0."""

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tokens.shape[0])


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """(private, public) key files: ``ours`` signs the artifact (made by the command), ``theirs`` is someone else's."""
    root = tmp_path_factory.mktemp("keys")
    sign_cli.main(["keygen", "--out", str(root / "ours")])
    generate_keypair(root / "theirs")
    return {who: (root / who / PRIVATE_KEY_FILE, root / who / PUBLIC_KEY_FILE) for who in ("ours", "theirs")}


@pytest.fixture(scope="module")
def signed_artifact(exported_artifact, keys, tmp_path_factory) -> Path:
    """``exported_artifact`` signed with ``ours``; read-only."""
    path = shutil.copytree(exported_artifact, tmp_path_factory.mktemp("signed") / "artifact")
    sign_artifact(path, keys["ours"][0])
    return path


@pytest.fixture(scope="module")
def evil_pt2(exported_artifact, tmp_path_factory) -> tuple[bytes, Path]:
    """The artifact's model.pt2 with one weight swapped for a pickle that creates ``marker`` when unpickled."""
    marker = tmp_path_factory.mktemp("evil") / "code-ran"
    out = io.BytesIO()
    with zipfile.ZipFile(exported_artifact / "model.pt2") as zin, zipfile.ZipFile(out, "w") as zout:
        config_name = next(n for n in zin.namelist() if n.endswith("data/weights/model_weights_config.json"))
        config = json.loads(zin.read(config_name))
        first = next(iter(config["config"].values()))
        first["use_pickle"] = True
        changed = {
            config_name: json.dumps(config).encode(),
            f"{config_name.rsplit('/', 1)[0]}/{first['path_name']}": pickle.dumps(OpensMarker(marker)),
        }
        for info in zin.infolist():
            zout.writestr(info, changed.get(info.filename) or zin.read(info))
    return out.getvalue(), marker


@pytest.fixture(scope="module")
def approve_all_ts(exported_artifact) -> bytes:
    """A TorchScript model that approves everything, carrying the artifact's spec as export embeds it."""
    buf = io.BytesIO()
    spec = (exported_artifact / SPEC_FILE).read_text()
    torch.jit.save(torch.jit.script(ApproveAll()), buf, _extra_files={"spec.json": spec})
    return buf.getvalue()


@pytest.fixture
def model_loads(monkeypatch) -> list[str]:
    """Every model deserialization, recorded (then done for real): a refusal must leave this empty."""
    calls: list[str] = []
    for fmt, f in list(FORMATS.items()):

        def record(data, fmt=fmt, real=f.load):
            calls.append(fmt)
            return real(data)

        monkeypatch.setitem(FORMATS, fmt, dataclasses.replace(f, load=record))
    return calls


# ---------------------------------------------------------------- tamperings


def _manifest(root: Path) -> dict:
    return json.loads((root / MANIFEST_FILE).read_text())


def _edit(root: Path, change: Callable[[dict], object]) -> None:
    """Edit the manifest as an attacker would: valid JSON, not re-signed (the attacker has no key)."""
    m = _manifest(root)
    change(m)
    (root / MANIFEST_FILE).write_bytes(canonical_json(m))


def _entry(data: bytes) -> dict:
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _replace(root: Path, name: str, data: bytes, rehash: bool = True) -> None:
    (root / name).unlink()
    (root / name).write_bytes(data)
    if rehash:
        _edit(root, lambda m: m["files"].__setitem__(name, _entry(data)))


def _outside(root: Path, name: str) -> Path:
    """A copy of the artifact's spec.json outside the artifact: same bytes, so the hash alone would pass."""
    path = root.parent / name
    path.write_bytes((root / SPEC_FILE).read_bytes())
    return path


def _subdirectory(root: Path) -> None:
    (root / "sub").mkdir()
    shutil.copy(root / SPEC_FILE, root / "sub" / SPEC_FILE)
    _list_outside(root, f"sub/{SPEC_FILE}")


def _list_outside(root: Path, name: str) -> None:
    _edit(root, lambda m: m["files"].__setitem__(name, _entry((root / SPEC_FILE).read_bytes())))


def _symlink(root: Path, name: str) -> None:
    target = root.parent / f"real-{name}"
    target.write_bytes((root / name).read_bytes())
    (root / name).unlink()
    (root / name).symlink_to(target)


def _calibration_to(root: Path, a: float) -> None:
    d = json.loads((root / CALIBRATION_FILE).read_text())
    d["params"] = {"a": a, "b": -50.0}  # a slope of about 0: every calibrated score ~0, approve everything
    _replace(root, CALIBRATION_FILE, json.dumps(d).encode())


def _swap_vocab(root: Path) -> None:
    """Another vocabulary order: the same input_schema, other tokens, so other scores."""
    d = json.loads((root / SPEC_FILE).read_text())
    vocab = next(v for v in d["vocab"].values() if len(v) >= 2)
    vocab[0], vocab[1] = vocab[1], vocab[0]
    _replace(root, SPEC_FILE, json.dumps(d, indent=2).encode())


def _nan_threshold(root: Path) -> None:
    text = (root / MANIFEST_FILE).read_text()
    review = json.dumps(_manifest(root)["thresholds"]["review"])
    (root / MANIFEST_FILE).write_text(text.replace(f'"review": {review}', '"review": NaN', 1))


def _directory(root: Path, name: str) -> None:
    (root / name).unlink()
    (root / name).mkdir()


def _fifo(root: Path, name: str) -> None:
    (root / name).unlink()
    os.mkfifo(root / name)


def _flip(root: Path, name: str, same_size: bool) -> None:
    data = bytearray((root / name).read_bytes())
    if same_size:
        data[len(data) // 2] ^= 0xFF
    else:
        data += b"\0"
    (root / name).write_bytes(bytes(data))


@dataclasses.dataclass(frozen=True)
class Case:
    tamper: Callable[[Path, dict], object]
    # Unsigned, no key configured: a regex the refusal must match, or a check on the artifact that loads anyway
    # (no signature, so rewriting a hash makes an edit "valid"; the log says the artifact is unsigned).
    unsigned: str | Callable[[Artifact, dict], None]
    fmt: str = "torchscript"


def _thresholds_took(a: Artifact, x: dict) -> None:
    assert a.thresholds == {"review": 0.999, "decline": 1.0}


def _run_id_took(a: Artifact, x: dict) -> None:
    assert a.run_id == "attacker"


def _model_approves_all(a: Artifact, x: dict) -> None:
    assert float(a.load_model("torchscript")(*_inputs()).abs().max()) == 0.0


def _embedding_refused(a: Artifact, x: dict) -> None:
    """A model of another output shape is refused when it loads, not at its first session."""
    with pytest.raises(
        ArtifactError, match=r"embed.ts: the torchscript embedding model answers 2 sessions in shape \(2,\)"
    ):
        a.load_embedding("torchscript")


def _swapped_refused(a: Artifact, x: dict) -> None:
    with pytest.raises(
        ArtifactError,
        match=r"model.ts: the torchscript model answers 2 sessions in shape \(2, \d+\), not \(2,\)",
    ):
        a.load_model("torchscript")
    _embedding_refused(a, x)


def _swap(root: Path, a: str, b: str) -> None:
    data = (root / a).read_bytes()
    _replace(root, a, (root / b).read_bytes())
    _replace(root, b, data)


def _pt2_listed(a: Artifact, x: dict) -> None:
    assert a.manifest["files"]["model.pt2"]["bytes"] == len(x["evil_pt2"][0])  # not loaded here: it would run


def _calibration_took(a: Artifact, x: dict) -> None:
    assert float(a.calibration.apply(np.array([0.999]))[0]) < 1e-6


def _reversed_refused(a: Artifact, x: dict) -> None:
    with pytest.raises(ArtifactError, match="slope a above 0"):
        a.calibration  # noqa: B018  # read lazily


def _huge_slope_refused(a: Artifact, x: dict) -> None:
    with pytest.raises(
        ArtifactError, match="calibration.json: not JSON: an integer of 401 digits, past what"
    ):
        a.calibration  # noqa: B018  # read lazily


def _spec_disagrees_with_model(a: Artifact, x: dict) -> None:
    with pytest.raises(ArtifactError, match="spec inside the model differs"):
        a.load_model("torchscript")


# Edits that keep the manifest well-formed (hashes rewritten where a file is replaced): only a signature catches them.
FORGERIES = {
    "thresholds edited": Case(
        lambda r, x: _edit(r, lambda m: m["thresholds"].update(review=0.999, decline=1.0)), _thresholds_took
    ),
    "run_id edited": Case(lambda r, x: _edit(r, lambda m: m.update(run_id="attacker")), _run_id_took),
    "model.ts replaced, hash rewritten": Case(
        lambda r, x: _replace(r, "model.ts", x["approve_all_ts"]), _model_approves_all
    ),
    "embed.ts replaced, hash rewritten": Case(
        lambda r, x: _replace(r, "embed.ts", x["approve_all_ts"]), _embedding_refused
    ),
    "model.ts and embed.ts swapped, hashes rewritten": Case(
        lambda r, x: _swap(r, "model.ts", "embed.ts"), _swapped_refused
    ),
    "model.pt2 replaced by a pickle payload, hash rewritten": Case(
        lambda r, x: _replace(r, "model.pt2", x["evil_pt2"][0]), _pt2_listed, fmt="pt2"
    ),
    "calibration.json replaced, hash rewritten": Case(
        lambda r, x: _calibration_to(r, 1e-9), _calibration_took
    ),
    # A slope at or below 0 flattens or reverses the ranking, which no fit gives: refused when read.
    "calibration.json reversed, hash rewritten": Case(
        lambda r, x: _calibration_to(r, -4.0), _reversed_refused
    ),
    "spec.json replaced, hash rewritten": Case(lambda r, x: _swap_vocab(r), _spec_disagrees_with_model),
}
# Breakage and structural attacks: refused whether or not the artifact is signed.
BREAKAGES = {
    "file changed, hash kept": Case(lambda r, x: _flip(r, "calibration.json", True), "SHA-256 differs"),
    "file grown, size kept": Case(lambda r, x: _flip(r, "model.ts", False), "bytes, the manifest says"),
    "embed.ts changed, hash kept": Case(lambda r, x: _flip(r, "embed.ts", True), "embed.ts: SHA-256 differs"),
    "listed file removed": Case(lambda r, x: (r / "model.pt2").unlink(), "missing file model.pt2", fmt="pt2"),
    "name ../x": Case(
        lambda r, x: (_outside(r, "x"), _list_outside(r, "../x")), r"files\['\.\./x'\] is not a plain"
    ),
    "absolute name": Case(
        lambda r, x: _list_outside(r, str(_outside(r, "abs.json"))), r"files\['/.*abs.json'\] is not"
    ),
    "name in a subdirectory": Case(lambda r, x: _subdirectory(r), r"files\['sub/spec.json'\] is not a plain"),
    "name ..": Case(lambda r, x: _list_outside(r, ".."), r"files\['\.\.'\] is not a plain"),
    "manifest lists its signature": Case(
        lambda r, x: _list_outside(r, SIGNATURE_FILE), r"files\['manifest.sig'\]"
    ),
    "spec.json is a symlink": Case(lambda r, x: _symlink(r, SPEC_FILE), "spec.json: a symlink"),
    "model.ts is a symlink": Case(lambda r, x: _symlink(r, "model.ts"), "model.ts: a symlink"),
    "manifest.json is a symlink": Case(lambda r, x: _symlink(r, MANIFEST_FILE), "manifest.json: a symlink"),
    "listed file is a directory": Case(lambda r, x: _directory(r, "reliability.png"), "not a regular file"),
    "listed file is a FIFO": Case(lambda r, x: _fifo(r, "reliability.png"), "not a regular file"),
    "no thresholds": Case(lambda r, x: _edit(r, lambda m: m.pop("thresholds")), "'thresholds' is missing"),
    "no run_id": Case(lambda r, x: _edit(r, lambda m: m.pop("run_id")), "'run_id' is missing"),
    "no formats": Case(lambda r, x: _edit(r, lambda m: m.pop("formats")), "'formats' is missing"),
    "no files": Case(lambda r, x: _edit(r, lambda m: m.pop("files")), "'files' is missing"),
    "no input_schema": Case(
        lambda r, x: _edit(r, lambda m: m.pop("input_schema")), "'input_schema' is missing"
    ),
    # The event id's entry, which older manifests lack, is checked where given (review 215: any was taken).
    "an event_id role added": Case(
        lambda r, x: _edit(r, lambda m: m["input_schema"]["columns"].update({"no_such": "event_id"})),
        "input_schema does not match",
    ),
    "file entry not a dict": Case(
        lambda r, x: _edit(r, lambda m: m["files"].update({SPEC_FILE: "abc"})),
        r"files\['spec.json'\] must be",
    ),
    "file entry size a string": Case(
        lambda r, x: _edit(
            r, lambda m: m["files"]["model.ts"].update(bytes=str(m["files"]["model.ts"]["bytes"]))
        ),
        r"files\['model.ts'\] must be",
    ),
    "file entry hash not hex": Case(
        lambda r, x: _edit(r, lambda m: m["files"]["model.ts"].update(sha256="z" * 64)),
        r"files\['model.ts'\] must be",
    ),
    "no spec listed": Case(
        lambda r, x: _edit(r, lambda m: m["files"].pop(SPEC_FILE)), "does not list spec.json"
    ),
    "files a list": Case(
        lambda r, x: _edit(r, lambda m: m.update(files=list(m["files"]))), "'files' must be"
    ),
    "thresholds a list": Case(
        lambda r, x: _edit(r, lambda m: m.update(thresholds=[0.1, 0.5])), "'thresholds' must be"
    ),
    "threshold a string": Case(
        lambda r, x: _edit(r, lambda m: m["thresholds"].update(review="0.5")),
        r"thresholds\['review'\] must be a number",
    ),
    # Past what a float holds: an OverflowError's traceback (dogfood 137).
    "threshold an integer of 400 digits": Case(
        lambda r, x: _edit(r, lambda m: m["thresholds"].update(decline=10**400)),
        "manifest.json: unreadable manifest: an integer of 401 digits, past what a number holds",
    ),
    "calibration an integer of 400 digits, hash rewritten": Case(
        lambda r, x: _calibration_to(r, 10**400), _huge_slope_refused
    ),
    "threshold a bool": Case(
        lambda r, x: _edit(r, lambda m: m["thresholds"].update(decline=True)),
        r"thresholds\['decline'\] must be a number",
    ),
    "threshold above 1": Case(
        lambda r, x: _edit(r, lambda m: m["thresholds"].update(decline=1.5)), "'thresholds' are invalid"
    ),
    "review above decline": Case(
        lambda r, x: _edit(r, lambda m: m["thresholds"].update(review=0.9, decline=0.1)),
        "'thresholds' are invalid",
    ),
    "threshold NaN": Case(lambda r, x: _nan_threshold(r), "NaN is not JSON"),
    "run_id a number": Case(lambda r, x: _edit(r, lambda m: m.update(run_id=7)), "'run_id' must be"),
    "run_id empty": Case(lambda r, x: _edit(r, lambda m: m.update(run_id="")), "'run_id' must be"),
    "unknown format": Case(
        lambda r, x: _edit(r, lambda m: m["formats"].update(onnx="model.onnx")), r"formats\['onnx'\]"
    ),
    "format file not listed": Case(
        lambda r, x: _edit(r, lambda m: m["files"].pop("model.pt2")),
        r"formats\['pt2'\] = 'model.pt2' is unknown or not among the verified files",
    ),
    "embed names the model file": Case(
        lambda r, x: _edit(r, lambda m: m["embed"]["formats"].update(torchscript="model.ts")),
        "'embed' must be",
    ),
    "embed file not listed": Case(
        lambda r, x: _edit(r, lambda m: m["files"].pop("embed.pt2")), "'embed' must be"
    ),
    "manifest a list": Case(
        lambda r, x: (r / MANIFEST_FILE).write_text("[]"), "not a seqfraud artifact manifest"
    ),
    "manifest not JSON": Case(lambda r, x: (r / MANIFEST_FILE).write_text("{"), "unreadable manifest"),
    # One reader takes a repeated key's first value, Python's json its last: refused, whichever is meant.
    "a key twice": Case(
        lambda r, x: (r / MANIFEST_FILE).write_bytes(
            canonical_json(_manifest(r)).rstrip()[:-1] + b',"thresholds":{"review":0.99,"decline":1.0}}'
        ),
        "unreadable manifest: key 'thresholds' appears more than once",
    ),
    # Deep nesting raised RecursionError, no ValueError: a traceback instead of this refusal (dogfood 26).
    "manifest nested deeply": Case(
        lambda r, x: (r / MANIFEST_FILE).write_text("[" * 100_000), "unreadable manifest: nested too deeply"
    ),
    "version true": Case(lambda r, x: _edit(r, lambda m: m.update(version=True)), "artifact version True"),
}


def _resign_theirs(root: Path, x: dict) -> None:
    _edit(root, lambda m: m["thresholds"].update(review=0.999, decline=1.0))
    sign_artifact(root, x["keys"]["theirs"][0], force=True)  # an attacker forces


def _signature(root: Path, change: Callable[[dict], object]) -> None:
    sig = json.loads((root / SIGNATURE_FILE).read_text())
    change(sig)
    (root / SIGNATURE_FILE).write_text(json.dumps(sig))


def _forge_key_id(root: Path, x: dict) -> None:
    """Their signature of an edited manifest, labelled with our key's id."""
    (ours,) = load_public_keys(x["keys"]["ours"][1])  # by key id
    _resign_theirs(root, x)
    _signature(root, lambda s: s.update(key_id=ours))


def _flip_signature_bit(sig: dict) -> None:
    raw = bytearray(base64.b64decode(sig["signature"]))
    raw[0] ^= 1
    sig["signature"] = base64.b64encode(bytes(raw)).decode()


# Attacks on the signature itself (signed artifact, our public key configured unless a case says otherwise).
SIGNATURE_ATTACKS = {
    "verified with the wrong key": ("theirs", lambda r, x: None, "not a configured verify key"),
    "re-signed by another key": ("ours", _resign_theirs, "not a configured verify key"),
    "another key's signature under our key id": ("ours", _forge_key_id, "signature does not match"),
    "signature bit flipped": (
        "ours",
        lambda r, x: _signature(r, _flip_signature_bit),
        "signature does not match",
    ),
    "signature file truncated": (
        "ours",
        lambda r, x: (r / SIGNATURE_FILE).write_bytes((r / SIGNATURE_FILE).read_bytes()[:60]),
        "not a valid ed25519 signature file",
    ),
    "signature value truncated": (
        "ours",
        lambda r, x: _signature(r, lambda s: s.update(signature=s["signature"][:44])),
        "not a valid ed25519 signature file",
    ),
    "signature algorithm changed": (
        "ours",
        lambda r, x: _signature(r, lambda s: s.update(algorithm="none")),
        "not a valid ed25519 signature file",
    ),
    "signature removed": ("ours", lambda r, x: (r / SIGNATURE_FILE).unlink(), "unsigned artifact"),
    "signature is a symlink": ("ours", lambda r, x: _symlink(r, SIGNATURE_FILE), "manifest.sig: a symlink"),
}


def _inputs() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.ones((2, 3, 1), dtype=torch.long), torch.tensor([3, 1])


@pytest.fixture
def extras(keys, evil_pt2, approve_all_ts):
    yield {"keys": keys, "evil_pt2": evil_pt2, "approve_all_ts": approve_all_ts}
    evil_pt2[1].unlink(
        missing_ok=True
    )  # a test that let the payload run fails alone, not every test after it


def _copy(src: Path, tmp_path: Path) -> Path:
    return shutil.copytree(src, tmp_path / "artifact")


# ---------------------------------------------------------------- the matrix


@pytest.mark.parametrize("case", [*FORGERIES, *BREAKAGES, *SIGNATURE_ATTACKS])
def test_a_tampered_signed_artifact_is_refused_before_any_model_is_read(
    case, signed_artifact, extras, model_loads, tmp_path
):
    root = _copy(signed_artifact, tmp_path)
    if case in SIGNATURE_ATTACKS:
        who, tamper, message = SIGNATURE_ATTACKS[case]
        fmt = "torchscript"
    else:
        who, c = "ours", {**FORGERIES, **BREAKAGES}[case]
        tamper, fmt = c.tamper, c.fmt
        # A forgery leaves the files consistent: only the signature can catch it. A breakage is caught either way.
        message = "signature does not match" if case in FORGERIES else None
    tamper(root, extras)
    with pytest.raises(ArtifactError, match=message):
        Scorer.load(root, fmt=fmt, verify_key=extras["keys"][who][1])
    assert model_loads == []
    assert not extras["evil_pt2"][1].exists()


@pytest.mark.parametrize("case", [*FORGERIES, *BREAKAGES])
def test_a_tampered_unsigned_artifact(case, exported_artifact, extras, tmp_path, caplog):
    """Breakage is refused with an error that names the key or file. A forgery with rewritten hashes loads, loudly
    flagged as unsigned, and is refused as soon as signatures are required or a verify key is configured."""
    root = _copy(exported_artifact, tmp_path)
    c = {**FORGERIES, **BREAKAGES}[case]
    c.tamper(root, extras)
    if isinstance(c.unsigned, str):
        with pytest.raises(ArtifactError, match=c.unsigned):
            open_artifact(root)
        return
    with caplog.at_level(logging.WARNING, logger="seqfraud.export.artifact"):
        artifact = open_artifact(root)
    assert "UNSIGNED artifact" in caplog.text and artifact.signer is None
    c.unsigned(artifact, extras)
    with pytest.raises(ArtifactError, match="no verify key is configured"):
        open_artifact(root, require_signed=True)
    with pytest.raises(ArtifactError, match="unsigned artifact"):
        open_artifact(root, verify_key=extras["keys"]["ours"][1])
    assert not extras["evil_pt2"][1].exists()


def test_the_crafted_pt2_runs_code_when_torch_loads_it(evil_pt2, tmp_path):
    """The control for the matrix: this file does run code in torch.export.load (torch 2.13 unpickles weights
    with weights_only=False), so the matrix's "marker absent" means the refusal came first."""
    data, marker = evil_pt2
    with pytest.raises(RuntimeError):  # after the payload ran: the "weight" it returned is no tensor
        torch.export.load(io.BytesIO(data))
    assert marker.exists()
    marker.unlink()


# ---------------------------------------------------------------- signed artifacts that load


def test_a_signed_artifact_verifies_and_scores_like_the_unsigned_one(
    signed_artifact, exported_artifact, keys, test_period_events, caplog
):
    theirs, ours = keys["theirs"][1], keys["ours"][1]
    assert SIGNATURE_FILE not in _manifest(signed_artifact)["files"]
    assert (signed_artifact / MANIFEST_FILE).read_bytes() == canonical_json(_manifest(signed_artifact))
    with caplog.at_level(logging.WARNING):
        scorer = Scorer.load(
            signed_artifact, verify_key=[theirs, ours], require_signed=True
        )  # a rotation overlap
    assert "UNSIGNED" not in caplog.text and "NOT checked" not in caplog.text
    events = test_period_events.head(300)
    assert scorer.score(events).equals(Scorer.load(exported_artifact).score(events))
    with caplog.at_level(logging.WARNING):
        assert open_artifact(signed_artifact).signer is None
    assert "signature was NOT checked" in caplog.text


def test_settings_come_from_the_environment(signed_artifact, exported_artifact, keys, monkeypatch):
    ours, theirs = keys["ours"][1], keys["theirs"][1]
    monkeypatch.setenv(VERIFY_KEY_ENV, f"{theirs}{os.pathsep}{ours}")
    assert Scorer.load(signed_artifact).manifest == _manifest(signed_artifact)
    with pytest.raises(ArtifactError, match="unsigned artifact"):
        Scorer.load(exported_artifact)
    assert Scorer.load(
        exported_artifact, verify_key=[]
    ).model_version  # an explicit empty key list: none configured
    monkeypatch.setenv(VERIFY_KEY_ENV, str(theirs))
    with pytest.raises(ArtifactError, match="not a configured verify key"):
        Scorer.load(signed_artifact)
    monkeypatch.delenv(VERIFY_KEY_ENV)
    monkeypatch.setenv(REQUIRE_SIGNED_ENV, "1")
    with pytest.raises(ArtifactError, match="no verify key is configured"):
        Scorer.load(signed_artifact)
    monkeypatch.setenv(REQUIRE_SIGNED_ENV, "maybe")
    with pytest.raises(ArtifactError, match="SEQFRAUD_REQUIRE_SIGNED='maybe'"):
        Scorer.load(signed_artifact)


def test_bad_key_files_are_clear_errors(signed_artifact, keys, tmp_path):
    (tmp_path / "junk.pub").write_text("not a key")
    os.mkfifo(tmp_path / "fifo.pub")  # reading it blocked forever (dogfood 31)
    for key, message in (
        (tmp_path / "none.pub", "cannot read the public key"),
        (tmp_path / "junk.pub", "not a PEM"),
        (keys["ours"][0], "that is the private key"),
        (tmp_path / "fifo.pub", "not a regular file, so not a public key file"),
    ):
        with pytest.raises(ArtifactError, match=message):
            open_artifact(signed_artifact, verify_key=key)


def test_the_sign_command_signs_rotates_and_refuses(exported_artifact, keys, tmp_path, capsys):
    root = _copy(exported_artifact, tmp_path)
    sign_cli.main(["artifact", str(root), "--key", str(keys["theirs"][0])])
    out = capsys.readouterr().out
    assert open_artifact(root, verify_key=keys["theirs"][1]).signer in out
    assert "note: it had no signature, so nothing showed its manifest unchanged since export" in out
    # Rotation: the new signature replaces the old once the old key checks it.
    with pytest.raises(
        ArtifactError, match="signed with key .* not a configured verify key.*--verify-key OLD"
    ):
        sign_artifact(root, keys["ours"][0])
    sign_cli.main(
        ["artifact", str(root), "--key", str(keys["ours"][0]), "--verify-key", str(keys["theirs"][1])]
    )
    assert open_artifact(root, verify_key=keys["ours"][1]).signer
    with pytest.raises(ArtifactError, match="not a configured verify key"):
        open_artifact(root, verify_key=keys["theirs"][1])
    # A manifest changed after signing is not re-signed, which would make the change trusted (dogfood 26:
    # thresholds raised in the store, re-signed in a rotation, approved every session), unless forced.
    _edit(root, lambda m: m["thresholds"].update(review=0.999, decline=1.0))
    with pytest.raises(ArtifactError, match="does not match manifest.json.*Re-signing would make"):
        sign_artifact(root, keys["ours"][0])
    assert open_artifact(root).thresholds == {"review": 0.999, "decline": 1.0}
    with pytest.raises(ArtifactError, match="does not match"):
        open_artifact(root, verify_key=keys["ours"][1])
    sign_artifact(root, keys["ours"][0], force=True)
    assert open_artifact(root, verify_key=keys["ours"][1]).thresholds["review"] == 0.999
    _flip(root, "model.ts", True)  # signing vouches for the files: a tampered artifact is not signed
    for argv in (
        ["artifact", str(root), "--key", str(keys["ours"][0])],
        ["keygen", "--out", str(keys["ours"][0].parent)],
    ):
        with pytest.raises(SystemExit) as exit_:
            sign_cli.main(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "SHA-256 differs" in err and "keys are never overwritten" in err
    assert oct(keys["ours"][0].stat().st_mode & 0o777) == "0o600"
    # Forced or not, a signature vouches only for an artifact that loads (a rehashed, unreadable calibration).
    unreadable = _copy(exported_artifact, tmp_path / "calibration")
    _replace(unreadable, CALIBRATION_FILE, b"[" * 5000)
    with pytest.raises(ArtifactError, match="calibration.json: not JSON: nested too deeply"):
        sign_artifact(unreadable, keys["ours"][0], force=True)


def test_the_commands_take_the_verify_settings(
    signed_artifact, exported_artifact, keys, test_period_events, tmp_path, monkeypatch, capsys
):
    """Refused at startup: the batch CLI writes nothing, the service does not start."""
    from fastapi.testclient import TestClient

    from seqfraud.cli.embed import main as embed_cli
    from seqfraud.cli.score import main as score_cli
    from seqfraud.scoring.service import create_app

    test_period_events.head(100).write_parquet(tmp_path / "events.parquet")
    args = [
        "--events",
        str(tmp_path / "events.parquet"),
        "--out",
        str(tmp_path / "out.parquet"),
        "--no-progress",
    ]
    for cli, (argv, message) in itertools.product(
        (score_cli, embed_cli),
        (
            (
                ["--artifact", str(signed_artifact), "--verify-key", str(keys["theirs"][1])],
                "not a configured verify key",
            ),
            (["--artifact", str(exported_artifact), "--require-signed"], "no verify key is configured"),
        ),
    ):
        # ArtifactError, or SystemExit(2) and one line on stderr where the CLI turns user errors into a message
        with pytest.raises((ArtifactError, SystemExit)) as refused:
            cli(argv + args)
        assert message in str(refused.value) + capsys.readouterr().err
        assert not (tmp_path / "out.parquet").exists()
    monkeypatch.setenv(VERIFY_KEY_ENV, str(keys["theirs"][1]))
    with (
        pytest.raises(ArtifactError, match="not a configured verify key"),
        TestClient(create_app(signed_artifact)),
    ):
        pass


def test_serve_refuses_a_reversed_calibration_in_one_line_before_binding(exported_artifact, tmp_path, capsys):
    """An exporter before the slope check wrote a Platt slope below 0 where the model ranked validation frauds
    lowest; serve read the calibration only in the app's startup, and refused it there with a traceback (dogfood
    116). It is read with the other checks, before a port is bound, and the message says what to do."""
    from seqfraud.cli.serve import main as serve

    root = _copy(exported_artifact, tmp_path)
    _calibration_to(root, -1.966)
    with pytest.raises(SystemExit) as refused:
        serve(["--artifact", str(root), "--port=-1"])  # never binds
    err = capsys.readouterr().err.strip().splitlines()
    assert refused.value.code == 2 and len(err) == 1, err
    assert "slope a above 0 (got -1.966)" in err[0] and "export the run again" in err[0]
