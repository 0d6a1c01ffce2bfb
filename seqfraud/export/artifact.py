"""The serving artifact: its files, the model formats it can hold, and the checks that refuse a bad one.

This module is the one place that knows model formats (:data:`FORMATS`): export saves through it and
the scorer loads through it, so switching a service to another format is a name, not new code. It
imports torch and the spec only, because the serving path imports it and must stay free of Lightning
and Hydra.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from seqfraud.calibration import Calibration, CalibrationError
from seqfraud.features.spec import MISSING, Spec, SpecError

ARTIFACT_FORMAT = "seqfraud.artifact"
ARTIFACT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPEC_FILE = "spec.json"
CALIBRATION_FILE = "calibration.json"  # the calibration map (plain JSON) and its before/after report
RELIABILITY_FILE = "reliability.png"
EMBEDDED_SPEC = "spec.json"  # name of the spec inside each model file, so a model file alone still describes itself

Model = Callable[[Tensor, Tensor], Tensor]


class ArtifactError(ValueError):
    """An artifact that must not be served: missing or altered files, unknown version, inconsistent spec."""


@dataclass(frozen=True)
class ModelFormat:
    """How one format writes the probability module (with the spec embedded) and reads it back."""

    file: str
    save: Callable[[nn.Module, Spec, Path], None]
    load: Callable[[Path], tuple[Model, str]]  # the callable model and the spec text embedded in the file


def example_inputs(spec: Spec, batch: int = 2, length: int = 8) -> tuple[Tensor, Tensor]:
    """Valid inputs of the forward contract: every token MISSING (an id each field has), ragged lengths."""
    length = min(length, spec.max_len)
    tokens = torch.full((batch, length, len(spec.fields)), MISSING, dtype=torch.long)
    lengths = torch.tensor([length] + [1] * (batch - 1), dtype=torch.long)
    return tokens, lengths


def _save_torchscript(module: nn.Module, spec: Spec, path: Path) -> None:
    torch.jit.save(torch.jit.script(module), str(path), _extra_files={EMBEDDED_SPEC: spec.to_json()})


def _load_torchscript(path: Path) -> tuple[Model, str]:
    extra = {EMBEDDED_SPEC: ""}
    model = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    model.eval()
    return model, _text(extra[EMBEDDED_SPEC])


def _save_pt2(module: nn.Module, spec: Spec, path: Path) -> None:
    """Dynamic batch and length; the length is capped at ``max_len``, the size of the position table."""
    dims = torch.export.Dim
    dynamic = {"tokens": {0: dims.DYNAMIC, 1: dims.DYNAMIC(min=1, max=spec.max_len)}, "lengths": {0: dims.DYNAMIC}}
    program = torch.export.export(module, example_inputs(spec), dynamic_shapes=dynamic)
    torch.export.save(program, str(path), extra_files={EMBEDDED_SPEC: spec.to_json()})


def _load_pt2(path: Path) -> tuple[Model, str]:
    extra = {EMBEDDED_SPEC: ""}
    program = torch.export.load(str(path), extra_files=extra)
    return program.module(), _text(extra[EMBEDDED_SPEC])


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


FORMATS: dict[str, ModelFormat] = {
    "torchscript": ModelFormat("model.ts", _save_torchscript, _load_torchscript),
    "pt2": ModelFormat("model.pt2", _save_pt2, _load_pt2),
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(root: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """The manifest's record of each file: size (a truncation reads as such) and SHA-256."""
    return {name: {"bytes": (root / name).stat().st_size, "sha256": sha256(root / name)} for name in names}


def input_schema(spec: Spec) -> dict[str, Any]:
    """What a caller must send: raw event columns by role, and how the model sees them."""
    s = spec.schema
    columns = {s.session_id: "session_id", s.timestamp: "timestamp", s.event_type: "event_type",
               **{c: "categorical" for c in s.categorical}, **{c: "numerical" for c in s.numerical}}
    return {"columns": columns, "timestamp_unit": spec.timestamp_unit, "max_len": spec.max_len,
            "token_fields": list(spec.fields)}


@dataclass
class Artifact:
    """A verified artifact directory: every listed file is present and matches its hash."""

    path: Path
    manifest: dict[str, Any]
    spec: Spec

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def calibration(self) -> Calibration:
        """The calibration map the scores go through (verified by hash like every file)."""
        try:
            return Calibration.from_dict(json.loads((self.path / CALIBRATION_FILE).read_text()))
        except (json.JSONDecodeError, CalibrationError) as e:
            raise ArtifactError(f"{self.path / CALIBRATION_FILE}: not a calibration: {e}") from e

    @property
    def thresholds(self) -> dict[str, float]:
        t = self.manifest["thresholds"]
        return {"review": t["review"], "decline": t["decline"]}

    def load_model(self, fmt: str = "torchscript") -> Model:
        """The model of one format; refused if the spec inside it is not the artifact's spec.json."""
        if fmt not in FORMATS:
            raise ArtifactError(f"unknown model format {fmt!r}; formats are {sorted(FORMATS)}")
        held = self.manifest.get("formats", {})
        if fmt not in held:
            raise ArtifactError(f"{self.path}: no {fmt} model in this artifact; it holds {sorted(held)}")
        name = FORMATS[fmt].file
        try:
            model, embedded = FORMATS[fmt].load(self.path / name)
        except Exception as e:  # a corrupt file raises whatever its deserializer raises
            raise ArtifactError(f"{self.path / name}: cannot load the {fmt} model: {e}") from e
        if embedded != (self.path / SPEC_FILE).read_text():
            raise ArtifactError(f"{self.path / name}: the spec inside the model differs from {SPEC_FILE}; "
                                "the files come from different exports")
        return model


def open_artifact(path: str | Path) -> Artifact:
    """Read the manifest and verify every file before anything is deserialized."""
    root = Path(path)
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise ArtifactError(f"{root}: not an artifact (no {MANIFEST_FILE})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{manifest_path}: unreadable manifest: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{manifest_path}: not a seqfraud artifact manifest")
    if manifest.get("version") != ARTIFACT_VERSION:
        raise ArtifactError(f"{manifest_path}: artifact version {manifest.get('version')!r} is not supported "
                            f"(this seqfraud reads version {ARTIFACT_VERSION}); re-export the run")
    files = manifest.get("files")
    if not isinstance(files, dict) or SPEC_FILE not in files or CALIBRATION_FILE not in files:
        raise ArtifactError(f"{manifest_path}: the manifest lists no files, or not {SPEC_FILE} and {CALIBRATION_FILE}")
    for name, entry in files.items():
        f = root / name
        if not f.is_file():
            raise ArtifactError(f"{root}: missing file {name} listed in the manifest")
        size = f.stat().st_size
        if size != entry.get("bytes"):
            raise ArtifactError(f"{f}: {size} bytes, the manifest says {entry.get('bytes')} (truncated or replaced)")
        if sha256(f) != entry.get("sha256"):
            raise ArtifactError(f"{f}: SHA-256 differs from the manifest (corrupted or modified)")
    formats = manifest.get("formats")
    if not isinstance(formats, dict) or not formats or any(
        f not in FORMATS or FORMATS[f].file != name or name not in files for f, name in formats.items()
    ):
        raise ArtifactError(f"{manifest_path}: formats {formats!r} are unknown or not among the verified files")
    try:
        spec = Spec.load(root / SPEC_FILE)
    except SpecError as e:
        raise ArtifactError(str(e)) from e
    if manifest.get("input_schema") != input_schema(spec):
        raise ArtifactError(f"{manifest_path}: input_schema does not match {SPEC_FILE}")
    return Artifact(path=root, manifest=manifest, spec=spec)
