"""The serving artifact: its files, the model formats it can hold, its signature, and the checks that refuse a bad one.

This module is the one place that knows model formats (:data:`FORMATS`): export saves through it and
the scorer loads through it, so switching a service to another format is a name, not new code. It
imports torch, ``cryptography`` and the spec only, because the serving path imports it and must stay
free of Lightning and Hydra.

Trust: ``manifest.json`` records the size and SHA-256 of every file, and ``manifest.sig`` (not listed)
holds an Ed25519 signature of the manifest's exact bytes, so one signature covers every file, the
thresholds and the run id. :func:`open_artifact` checks the signature on the raw bytes, then the
manifest's structure, then every file's hash, before anything is deserialized; a model is
deserialized from the very bytes whose hash was checked. See SECURITY.md.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import stat
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from torch import Tensor, nn

from seqfraud.baselines import STACKER_BLEND, STACKER_FILE, STACKER_FORMAT, Stacker
from seqfraud.calibration import Calibration, CalibrationError
from seqfraud.decisions import DecisionError, check_thresholds
from seqfraud.errors import UserError, first_line, is_finite, is_int, is_number, json_value
from seqfraud.export.signing import KeySource, SigningKeyError, key_id, load_private_key, load_public_keys
from seqfraud.features.spec import MISSING, Spec, SpecError

log = logging.getLogger(__name__)

ARTIFACT_FORMAT = "seqfraud.artifact"
ARTIFACT_VERSION = 1
MANIFEST_FILE = "manifest.json"
SPEC_FILE = "spec.json"
CALIBRATION_FILE = "calibration.json"  # the calibration map (plain JSON) and its before/after report
RELIABILITY_FILE = "reliability.png"
EMBEDDED_SPEC = (
    "spec.json"  # name of the spec inside each model file, so a model file alone still describes itself
)
SIGNATURE_FILE = "manifest.sig"
# The step function of a GRU model (models.sequence.GRUStep, with a sigmoid): per-event online scoring.
STEP_FILES = {"torchscript": "step.ts", "pt2": "step.pt2"}
# The step compiled ahead of time to native code (AOTInductor) for what online scoring runs at nearly every event: one
# event of at most `max_batch` carried states (0.63-0.66 against 0.96 ms an event at 128 events of history, BENCHMARKS.md).
# Built for portable x86-64 (x86-64-v3: AVX2, Haswell on), not for the exporting machine's own instructions
# (inductor's default, -march=native), and used only where this machine has them (MARCH_FLAGS).
COMPILED_STEP_FILE = "step.aoti.pt2"
COMPILED_MACHINE, COMPILED_MARCH = "x86_64", "x86-64-v3"
# Export checks the compiled step to the parity tolerance on validation prefixes; loading only asks that it is
# this artifact's.
COMPILED_PROBE_TOLERANCE = 1e-4
# The /proc/cpuinfo flags of each target that compiled code may use.
MARCH_FLAGS = {COMPILED_MARCH: ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")}
# The files that run code of their own when loaded: what an unsigned one's warning says.
UNSIGNED_RISK = {
    "pt2": ("a pt2 model", "torch.export.load unpickles it"),
    "compiled": ("a compiled step", "it is native code"),
}
# A sequence model's session embedding (the encoder's pooled state, what its head reads): seqfraud embed --artifact.
EMBED_FILES = {"torchscript": "embed.ts", "pt2": "embed.pt2"}
SIGNATURE_ALGORITHM = "ed25519"
VERIFY_KEY_ENV = "SEQFRAUD_VERIFY_KEY"  # public key file(s), separated by os.pathsep
REQUIRE_SIGNED_ENV = "SEQFRAUD_REQUIRE_SIGNED"  # 1: refuse any artifact not verified by signature
MAX_MANIFEST_BYTES = 1 << 20
MAX_SIGNATURE_BYTES = 4096
# A listed file is a plain name inside the artifact: no separators, no "..", no hidden files.
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")

Model = Callable[[Tensor, Tensor], Tensor]
# (new events' tokens [B, k, F], hidden state [layers, B, width]) -> (probabilities [B], hidden state)
Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class ArtifactError(UserError, ValueError):
    """An artifact that must not be served: missing or altered files, unknown version, inconsistent spec."""


@dataclass(frozen=True)
class ModelFormat:
    """How one format writes the probability module (with the spec embedded) and reads it back."""

    file: str
    save: Callable[[nn.Module, Spec, Path], None]
    # A path or the verified bytes of the file -> the callable model and the spec text embedded in it.
    load: Callable[[Path | IO[bytes]], tuple[Model, str]]


def example_inputs(spec: Spec, batch: int = 2, length: int = 8) -> tuple[Tensor, Tensor]:
    """Valid inputs of the forward contract: every token MISSING (an id each field has), ragged lengths."""
    length = min(length, spec.max_len)
    tokens = torch.full((batch, length, len(spec.fields)), MISSING, dtype=torch.long)
    lengths = torch.tensor([length] + [1] * (batch - 1), dtype=torch.long)
    return tokens, lengths


def _save_torchscript(module: nn.Module, spec: Spec, path: Path) -> None:
    torch.jit.save(torch.jit.script(module), str(path), _extra_files={EMBEDDED_SPEC: spec.to_json()})


def _load_torchscript(f: Path | IO[bytes]) -> tuple[Model, str]:
    extra = {EMBEDDED_SPEC: ""}
    model = torch.jit.load(f, map_location="cpu", _extra_files=extra)
    model.eval()
    return model, _text(extra[EMBEDDED_SPEC])


def _save_pt2(module: nn.Module, spec: Spec, path: Path) -> None:
    """Dynamic batch and length; the length is capped at ``max_len``, the size of the position table."""
    dims = torch.export.Dim
    dynamic = {
        "tokens": {0: dims.DYNAMIC, 1: dims.DYNAMIC(min=1, max=spec.max_len)},
        "lengths": {0: dims.DYNAMIC},
    }
    _export_pt2(module, spec, path, example_inputs(spec), dynamic)


def _export_pt2(module: nn.Module, spec: Spec, path: Path, inputs: tuple[Tensor, ...], dynamic: dict) -> None:
    with _dynamic_length_gru(), _known_export_warnings():
        program = torch.export.export(module, inputs, dynamic_shapes=dynamic)
    torch.export.save(program, str(path), extra_files={EMBEDDED_SPEC: spec.to_json()})


def save_step(module: nn.Module, spec: Spec, root: Path, fmt: str, layers: int, width: int) -> None:
    """The step contract in one format: ``(tokens [B, k, F], hidden [layers, B, width]) -> (probabilities,
    hidden)``, dynamic in the batch (shared by both inputs) and in ``k``."""
    if fmt == "torchscript":
        _save_torchscript(module, spec, root / STEP_FILES[fmt])
        return
    dims = torch.export.Dim
    batch = dims("batch")
    tokens = torch.full((2, 2, len(spec.fields)), MISSING, dtype=torch.long)  # 2, not 1: 0/1 specialize
    dynamic = {"tokens": {0: batch, 1: dims.DYNAMIC(min=1, max=spec.max_len)}, "hidden": {1: batch}}
    _export_pt2(module, spec, root / STEP_FILES[fmt], (tokens, torch.zeros(layers, 2, width)), dynamic)


def save_compiled_step(
    module: nn.Module, spec: Spec, root: Path, layers: int, width: int, max_batch: int
) -> dict[str, Any]:
    """The step compiled for one event of 1 to ``max_batch`` sessions (:data:`COMPILED_STEP_FILE`), and its
    manifest entry; raises whatever inductor raises where it cannot build it (no C++ compiler, another machine).

    Built in a private cache folder, removed after: inductor's shared one (``/tmp/torchinductor_$USER``) reuses
    the files it finds there, which another local user could have put there, and grew by 3.7 MB an export
    (review 154)."""
    if platform.machine() != COMPILED_MACHINE:
        raise RuntimeError(
            f"a compiled step is built for {COMPILED_MACHINE}; this machine is {platform.machine()}"
        )
    import torch._inductor  # export only
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir

    batch = torch.export.Dim("batch", min=1, max=max_batch)
    tokens = torch.full((2, 1, len(spec.fields)), MISSING, dtype=torch.long)  # 2, not 1: 0/1 specialize
    cache = tempfile.mkdtemp(prefix="seqfraud-inductor-")
    try:
        with _known_export_warnings(), temporary_cache_dir(cache):
            program = torch.export.export(
                module,
                (tokens, torch.zeros(layers, 2, width)),
                dynamic_shapes={"tokens": {0: batch}, "hidden": {1: batch}},
            )
            torch._inductor.aoti_compile_and_package(
                program,
                package_path=str(root / COMPILED_STEP_FILE),
                # Precompiled headers go to inductor's shared folder in /tmp whatever its cache dir (review 156).
                # The vector ISA from what the CPU reports (torch's own reading), as loading trusts /proc/cpuinfo
                # (_compiled_foreign): inductor's check builds and loads a test library per ISA, about 7 s an export
                # in the private cache. Inductor keeps its ISA list for the process: the export's own.
                inductor_configs={
                    "cpp.march": COMPILED_MARCH,
                    "cpp.simdlen": 256,
                    "cpp.vec_isa_ok": True,
                    "aot_inductor.precompile_headers": False,
                },
            )
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {
        "file": COMPILED_STEP_FILE,
        "machine": COMPILED_MACHINE,
        "march": COMPILED_MARCH,
        "torch": _release(torch.__version__),
        "max_batch": max_batch,
    }


def load_compiled_step(data: bytes) -> Callable[[Tensor, Tensor], list[Tensor]]:
    """An AOTInductor package's model, ``(tokens, hidden) -> [probabilities, hidden]``. Its shared library is
    native code run in this process: only verified bytes come here.

    Through torch's package loader itself, not ``aoti_load_package``, which first compiles and runs test programs
    of this CPU's instructions, through inductor's shared cache folder in /tmp (13 compiler runs, 10-16 s on a
    fresh host; files another local user could have put there: review 154): :func:`_compiled_foreign` reads them
    from /proc/cpuinfo instead. The loader unpacks the package into a private folder, removed once it is loaded
    (the library stays mapped): the one it made itself outlived every service that stopped on a signal. It reads
    the folder from ``TMPDIR``, set for the call: artifacts load at a scorer's start, before it serves."""
    private = tempfile.mkdtemp(prefix="seqfraud-step-")
    before = os.environ.get("TMPDIR")
    try:
        path = os.path.join(private, COMPILED_STEP_FILE)
        with open(path, "wb") as f:
            f.write(data)
        os.environ["TMPDIR"] = private
        loader = torch._C._aoti.AOTIModelPackageLoader(path, "model", False, 1, -1)
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        shutil.rmtree(private, ignore_errors=True)
    # Its own call: the package's Python __call__ parses its input and output specs from JSON at every call
    # (12 of 56 us a step).
    run = loader.boxed_run
    return lambda tokens, hidden: run([tokens, hidden])


class CompiledStep:
    """The compiled step for what it was built for, one event of at most ``max_batch`` sessions in the dtypes it
    reads (nearly every online event), and the format's own ``step`` for the rest (a rebuilt session's events)."""

    def __init__(self, compiled: Callable[[Tensor, Tensor], list[Tensor]], step: Step, max_batch: int):
        self.compiled, self.step, self.max_batch = compiled, step, max_batch

    def __call__(self, tokens: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        if (
            tokens.shape[1] == 1
            and hidden.shape[1] <= self.max_batch
            and tokens.dtype == torch.long
            and hidden.dtype == torch.float32
        ):
            # Its kernels index by the strides it was built for: an expanded batch (stride 0) is laid out first.
            prob, out = self.compiled(tokens.contiguous(), hidden.contiguous())
            return prob, out
        return self.step(tokens, hidden)


def _compiled_foreign(compiled: dict[str, Any]) -> str | None:
    """Why this machine cannot run a manifest's compiled step, or None where it can."""
    here = platform.machine()
    if compiled["machine"] != here:
        return f"it is built for {compiled['machine']}, this machine is {here}"
    if compiled["torch"] != _release(torch.__version__):
        return f"it is built for torch {compiled['torch']}, this is torch {_release(torch.__version__)}"
    needed = MARCH_FLAGS.get(compiled["march"])
    if needed is None:
        return f"it is built for {compiled['march']!r}, which this seqfraud does not know"
    try:
        with open("/proc/cpuinfo") as info:
            flags = set(next(line for line in info if line.startswith("flags")).split(":")[1].split())
    except (OSError, StopIteration, IndexError):
        return "this machine's CPU flags cannot be read from /proc/cpuinfo"
    if missing := [f for f in needed if f not in flags]:
        return f"this CPU lacks {', '.join(missing)}, which its {compiled['march']} code may use"
    return None


def _release(version: str) -> str:
    """torch's version without its build (``2.13.0+cpu``, ``2.13.0+cu126``): both run the same compiled CPU code."""
    return version.split("+")[0]


@contextlib.contextmanager
def _known_export_warnings() -> Iterator[None]:
    """Warnings known and harmless while exporting and compiling a GRU (torch 2.13), not said."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "_check_is_size will be removed", FutureWarning)
        warnings.filterwarnings("ignore", r"The tensor attributes .*_flat_weights", UserWarning)
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
        yield


def _dynamic_length_gru() -> contextlib.AbstractContextManager[None]:
    """While tracing, ``nn.GRU`` through torch's while_loop decomposition (the one ``torch.onnx`` uses).

    The default decomposition loops over time in Python, which fixes the length to the example's. The
    program still holds ``aten.gru``, so the served model runs the native kernel.
    """
    try:
        from torch.export._patches import register_gru_while_loop_decomposition
    except ImportError:  # an older torch: a GRU's pt2 export then fails, and export skips or names the format
        return contextlib.nullcontext()
    return register_gru_while_loop_decomposition()


def _load_pt2(f: Path | IO[bytes]) -> tuple[Model, str]:
    """torch.export.load unpickles weights and constants (``weights_only=False``): only verified bytes come here."""
    extra = {EMBEDDED_SPEC: ""}
    # Its serializer warns "Symbol u0 did not appear in the graph" for the GRU step's loop counters, at every load:
    # six lines of each export, and of every scorer start (review 113), about nothing the model does.
    serde = logging.getLogger("torch._export.serde.serialize")
    level = serde.level
    serde.setLevel(logging.ERROR)
    try:
        program = torch.export.load(f, extra_files=extra)
    finally:
        serde.setLevel(level)
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
    columns = {
        s.session_id: "session_id",
        s.timestamp: "timestamp",
        s.event_type: "event_type",
        **{c: "categorical" for c in s.categorical},
        **{c: "numerical" for c in s.numerical},
        **{c: "entity" for c in s.entities},
        # Sent to POST /events alone, where it is required: a client building events from these columns was
        # refused for want of it (dogfood 214).
        **({s.event_id: "event_id"} if s.event_id else {}),
    }
    entity = spec.entity
    return {
        "columns": columns,
        "timestamp_unit": spec.timestamp_unit,
        "max_len": spec.max_len,
        # Where the window moves in hops (spec version 5): an artifact of a window moving one event at a time
        # says nothing, as every artifact did before, so that those still load (its input_schema is checked).
        **({"hop": spec.hop} if spec.hop != 1 else {}),
        "token_fields": list(spec.fields),
        # What scoring must be given besides the sessions scored; the scorer refuses to score without it.
        "history": None
        if entity is None
        else {
            "required": True,
            "entities": list(entity.columns),
            "windows": list(entity.windows),
            "events": "earlier events of other sessions, with the columns above",
            "labels": None
            if not entity.risk
            else {"label_time": s.label_time, "label_delay": entity.label_delay, "label": s.label},
        },
    }


@dataclass
class Artifact:
    """A verified artifact directory: every listed file is present and matches its hash.

    ``signer`` is the id of the key whose signature was verified; None when none was (see :func:`open_artifact`).
    ``quiet``: loading its files says nothing of them (its exporter's checks, of a folder about to be renamed).
    ``manifest_sha256``: the digest of the manifest verified, which names every file's: another process loads
    this very artifact by it (:func:`open_artifact`'s ``manifest_sha256``).
    """

    path: Path
    manifest: dict[str, Any]
    spec: Spec
    signer: str | None = None
    quiet: bool = False
    manifest_sha256: str = ""

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def calibration(self) -> Calibration:
        """The calibration map the scores go through (verified by hash like every file)."""
        try:
            return Calibration.from_dict(
                _json_object(self.read(CALIBRATION_FILE), self.path / CALIBRATION_FILE)
            )
        except CalibrationError as e:
            raise ArtifactError(f"{self.path / CALIBRATION_FILE}: not a calibration: {e}") from e

    @property
    def thresholds(self) -> dict[str, float]:
        t = self.manifest["thresholds"]
        return {"review": t["review"], "decline": t["decline"]}

    def read(self, name: str) -> bytes:
        """A listed file's bytes, checked against the manifest again: what is deserialized is what was verified."""
        return _verified_bytes(self.path, name, self.manifest["files"][name])

    def load_stacker(self) -> Stacker | None:
        """The LightGBM stacker of a ``model=stacked`` run, parsed from its verified text; None for other runs."""
        if "stacker" not in self.manifest:
            return None
        text = self.read(STACKER_FILE)
        try:
            blend = self.manifest["stacker"].get("combine") == STACKER_BLEND
            return Stacker.from_text(text.decode("utf-8"), self.spec, blend)
        except (UnicodeDecodeError, ValueError) as e:
            raise ArtifactError(f"{self.path / STACKER_FILE}: cannot load the stacker: {e}") from e

    def load_model(self, fmt: str = "torchscript") -> Model:
        """The model of one format; refused if the spec inside it is not the artifact's spec.json."""
        if fmt not in FORMATS:
            raise ArtifactError(f"unknown model format {fmt!r}; formats are {sorted(FORMATS)}")
        held = self.manifest["formats"]
        if fmt not in held:
            raise ArtifactError(f"{self.path}: no {fmt} model in this artifact; it holds {sorted(held)}")
        self._warn_unsigned(fmt, FORMATS[fmt].file)
        return self._load(FORMATS[fmt].file, FORMATS[fmt].load, fmt, outputs=())

    def step_shape(self, fmt: str = "torchscript") -> tuple[int, int] | None:
        """The shape of a GRU model's per-session state (layers, width) when it has a step in ``fmt``: what an
        online state of this model holds, read without loading the step."""
        step = self.manifest.get("step")
        return None if step is None or fmt not in step["formats"] else (step["layers"], step["width"])

    def load_step(self, fmt: str = "torchscript") -> tuple[Step, tuple[int, int]] | None:
        """A GRU model's step function in ``fmt`` and :meth:`step_shape`; None when the model has none in that
        format (the kept events are then read again for each event)."""
        shape = self.step_shape(fmt)
        if shape is None:
            return None
        self._warn_unsigned(fmt, STEP_FILES[fmt])
        return self._with_compiled(self._load(STEP_FILES[fmt], FORMATS[fmt].load, f"{fmt} step"), fmt), shape

    def _with_compiled(self, step: Step, fmt: str) -> Step:
        """``step`` behind the artifact's compiled one where it holds one this machine runs; refused if that one
        answers otherwise than ``step`` (another export's file, its hash rewritten)."""
        compiled = self.manifest["step"].get("compiled")
        if compiled is None:
            return step
        path = self.path / COMPILED_STEP_FILE
        if not (why := _compiled_foreign(compiled)):
            data = self.read(COMPILED_STEP_FILE)
            self._warn_unsigned("compiled", COMPILED_STEP_FILE)
            try:
                both = CompiledStep(load_compiled_step(data), step, compiled["max_batch"])
                layers, width = self.manifest["step"]["layers"], self.manifest["step"]["width"]
                tokens = example_inputs(self.spec)[0][:, :1]
                with torch.inference_mode():
                    ours, theirs = (
                        both(tokens, torch.zeros(layers, len(tokens), width)),
                        step(tokens, torch.zeros(layers, len(tokens), width)),
                    )
                    worst = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
            except Exception as e:  # noqa: BLE001  # its loader raises its own types
                # Verified bytes that do not load here (no writable temporary folder, another C++ runtime): the
                # format's step scores the same (review 154: a read-only cache refused a signed artifact).
                why = f"cannot load it: {first_line(e)}"
            else:
                if not worst <= COMPILED_PROBE_TOLERANCE:
                    raise ArtifactError(
                        f"{path}: the compiled step answers otherwise than the {fmt} step (by {worst:.3g}): it is "
                        "not this artifact's"
                    )
                if not self.quiet:
                    log.info("%s: loaded for online events", path)
                return both
        log.warning(
            "%s: not used here (%s): each online event steps through the %s step, slower", path, why, fmt
        )
        return step

    def load_embedding(self, fmt: str = "torchscript") -> tuple[Model, int]:
        """The session embedding in ``fmt`` (``forward(tokens, lengths) -> float32 [B, width]``, the encoder's
        pooled state) and its width; refused with what to do when the artifact holds none."""
        embed = self.manifest.get("embed")
        if embed is None:
            raise ArtifactError(
                f"{self.path}: no session embedding in this artifact; it was exported before artifacts held one: "
                "re-export the run (python export.py run_dir=RUN out=ARTIFACT), or embed from the run "
                "(seqfraud embed --run RUN)"
            )
        if fmt not in embed["formats"]:
            raise ArtifactError(
                f"{self.path}: no {fmt} session embedding in this artifact; it holds {sorted(embed['formats'])}"
            )
        self._warn_unsigned(fmt, EMBED_FILES[fmt])
        width = embed["width"]
        return self._load(EMBED_FILES[fmt], FORMATS[fmt].load, f"{fmt} embedding", outputs=(width,)), width

    def _warn_unsigned(self, fmt: str, name: str) -> None:
        if fmt in UNSIGNED_RISK and self.signer is None and not self.quiet:
            log.warning(
                "%s: loading %s that no signature vouches for; %s, so whoever can write this file can run code in "
                "this process",
                self.path / name,
                *UNSIGNED_RISK[fmt],
            )

    def _load(
        self,
        name: str,
        load: Callable[[IO[bytes]], tuple[Any, str]],
        what: str,
        outputs: tuple[int, ...] | None = None,
    ) -> Any:
        """A module deserialized from the verified bytes of ``name``, refused unless it embeds spec.json and, with
        ``outputs`` (the shape of one session's output), answers :func:`example_inputs` in that shape: an
        unsigned artifact's files can be swapped and their hashes rewritten, and a model file holding the
        embedding then failed at its first request with a numpy broadcast error."""
        data = self.read(name)
        try:
            module, embedded = load(io.BytesIO(data))
        except Exception as e:  # a corrupt file raises whatever its deserializer raises
            raise ArtifactError(f"{self.path / name}: cannot load the {what} model: {e}") from e
        if embedded.encode() != self.read(SPEC_FILE):
            raise ArtifactError(
                f"{self.path / name}: the spec inside the model differs from {SPEC_FILE}; "
                "the files come from different exports"
            )
        if outputs is not None:
            tokens, lengths = example_inputs(self.spec)
            # Not under torch.jit.optimized_execution(False): the module then ran 5% slower for good (0.78 against
            # 0.74 ms at 128 events, alternating in one process); this probe leaves it as fast as an unprobed one.
            with torch.inference_mode():
                shape = tuple(module(tokens, lengths).shape)
            if shape != (len(lengths), *outputs):
                raise ArtifactError(
                    f"{self.path / name}: the {what} model answers {len(lengths)} sessions in shape {shape}, not "
                    f"{(len(lengths), *outputs)}: this file is not the artifact's {what} model"
                )
        return module


def canonical_json(manifest: dict[str, Any]) -> bytes:
    """The manifest's one byte form: sorted keys, two-space indent, ASCII, strict JSON, a final newline."""
    return json.dumps(manifest, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False).encode() + b"\n"


def verification_settings(
    verify_key: KeySource | Iterable[KeySource] | None = None, require_signed: bool | None = None
) -> dict[str, Any]:
    """:func:`open_artifact`'s ``verify_key`` and ``require_signed``; those not given come from the environment.

    ``SEQFRAUD_VERIFY_KEY``: public key files separated by ``os.pathsep``; ``SEQFRAUD_REQUIRE_SIGNED``: 1 or 0.
    """
    if verify_key is None and os.environ.get(VERIFY_KEY_ENV):
        verify_key = [p for p in os.environ[VERIFY_KEY_ENV].split(os.pathsep) if p]
    if require_signed is None:
        value = os.environ.get(REQUIRE_SIGNED_ENV, "").strip().lower()
        if value not in ("", "0", "1", "true", "false", "yes", "no"):
            raise ArtifactError(f"{REQUIRE_SIGNED_ENV}={os.environ[REQUIRE_SIGNED_ENV]!r}: set it to 1 or 0")
        require_signed = value in ("1", "true", "yes")
    return {"verify_key": verify_key, "require_signed": require_signed}


def open_artifact(
    path: str | Path,
    *,
    verify_key: KeySource | Iterable[KeySource] | None = None,
    require_signed: bool = False,
    say_unsigned: bool = True,
    manifest_sha256: str | None = None,
) -> Artifact:
    """Verify the signature, the manifest and every file, before anything is deserialized.

    ``verify_key``: public key file(s) or keys. With one, the artifact must carry a valid signature by
    one of them. Without one, an artifact loads with a logged warning (its hashes catch corruption, not
    tampering; ``say_unsigned=False``: its exporter, which says it once of the published folder, not of each file
    its checks load from the temporary one), unless
    ``require_signed`` refuses it. ``manifest_sha256``: the digest of a manifest another process verified
    (:attr:`Artifact.manifest_sha256`), which this one must be: a service's workers, which loaded the files
    again under whatever keys their environment held, served a manifest rewritten after the service verified
    it (review 170).
    """
    root = Path(path).expanduser()
    raw = _read_manifest(root)
    digest = hashlib.sha256(raw).hexdigest()
    if manifest_sha256 is not None and digest != manifest_sha256:
        raise ArtifactError(
            f"{root / MANIFEST_FILE}: changed since it was verified (sha256 {digest[:12]}, not "
            f"{manifest_sha256[:12]}): start again to load the artifact now there"
        )
    signer = _check_signature(root, raw, verify_key, require_signed, say_unsigned)
    manifest, spec = _checked(root, raw)
    return Artifact(
        path=root, manifest=manifest, spec=spec, signer=signer, quiet=not say_unsigned, manifest_sha256=digest
    )


def sign_artifact(
    path: str | Path,
    key: str | Path | Ed25519PrivateKey,
    *,
    verify_key: KeySource | Iterable[KeySource] | None = None,
    force: bool = False,
) -> str:
    """Check every file of the artifact at ``path``, then sign its manifest with a private key; the key's id.

    The manifest is rewritten in :func:`canonical_json` form first, so the signed bytes are the file's
    bytes. Signing again (with a new key, after a rotation) replaces the signature, once the signature it
    replaces is verified: by ``key``'s own public key or one of ``verify_key`` (the old key, in a rotation).
    Re-signing a manifest changed after its signing would make that change trusted (a dogfood's re-signed
    thresholds approved every session), so that is refused, as is a signature no given key can check, unless
    ``force``.
    """
    root = Path(path)
    private = key if isinstance(key, Ed25519PrivateKey) else load_private_key(key)
    raw = _read_manifest(root)
    sig_path = root / SIGNATURE_FILE
    if not force and (sig_path.exists() or sig_path.is_symlink()):
        keys = [private.public_key(), *(load_public_keys(verify_key) if verify_key else {}).values()]
        try:
            _check_signature(root, raw, keys, require_signed=True)
        except ArtifactError as e:
            raise ArtifactError(
                f"{e}. Re-signing would make the manifest as it is now trusted: re-export from the training "
                "run; with the old public key (--verify-key OLD.pub) if it was signed with another key; or, "
                "if you changed the manifest yourself and checked it, --force"
            ) from None
    manifest, spec = _checked(root, raw)
    Artifact(path=root, manifest=manifest, spec=spec).calibration  # noqa: B018 - vouch only for what loads
    raw = canonical_json(manifest)
    signature = {
        "algorithm": SIGNATURE_ALGORITHM,
        "key_id": key_id(private.public_key()),
        "signature": base64.b64encode(private.sign(raw)).decode(),
    }
    _replace(root / MANIFEST_FILE, raw)
    _replace(root / SIGNATURE_FILE, json.dumps(signature, indent=2).encode() + b"\n")
    return signature["key_id"]


def say_unsigned_artifact(root: Path) -> None:
    """The warning of an artifact loaded without a signature checked, one wording wherever it is said."""
    log.warning(
        "%s: UNSIGNED artifact: its hashes catch corruption, not tampering; anyone who can write it can change "
        "its thresholds or model. For production, export with sign_key= and serve with --verify-key and "
        "--require-signed (see SECURITY.md)",
        root,
    )


def _check_signature(
    root: Path, raw: bytes, verify_key: Any, require_signed: bool, say_unsigned: bool = True
) -> str | None:
    """The id of the key that signed ``raw``, None if no key is configured; refuses every other case."""
    sig_path = root / SIGNATURE_FILE
    signed = sig_path.exists() or sig_path.is_symlink()
    try:
        keys = load_public_keys(verify_key) if verify_key else {}
    except SigningKeyError as e:
        raise ArtifactError(f"verify key: {e}") from e
    if not keys:
        if require_signed:
            raise ArtifactError(
                f"{root}: signed artifacts are required (--require-signed, {REQUIRE_SIGNED_ENV}), but "
                f"no verify key is configured: pass --verify-key PUBLIC_KEY or set {VERIFY_KEY_ENV}"
            )
        if signed:
            log.warning(
                "%s: signed, but the signature was NOT checked: no verify key is configured "
                "(--verify-key or %s)",
                root,
                VERIFY_KEY_ENV,
            )
        elif say_unsigned:
            say_unsigned_artifact(root)
        return None
    if not signed:
        raise ArtifactError(
            f"{root}: unsigned artifact (no {SIGNATURE_FILE}), and a verify key is configured; "
            "export it with sign_key=KEY, or sign it: seqfraud sign artifact"
        )
    kid, signature = _read_signature(sig_path)
    if kid not in keys:
        raise ArtifactError(
            f"{sig_path}: signed with key {kid}, which is not a configured verify key "
            f"({', '.join(sorted(keys))}): the wrong public key, or signed before a key rotation"
        )
    try:
        keys[kid].verify(signature, raw)
    except InvalidSignature:
        raise ArtifactError(
            f"{sig_path}: the signature does not match {MANIFEST_FILE}: the manifest was changed "
            "after signing; do not serve this artifact"
        ) from None
    return kid


def _read_signature(path: Path) -> tuple[str, bytes]:
    """The key id and the 64 signature bytes of ``manifest.sig``: JSON with ``algorithm``, ``key_id``, ``signature``."""
    bad = ArtifactError(
        f"{path}: not a valid {SIGNATURE_ALGORITHM} signature file (truncated or damaged); "
        "re-sign the artifact"
    )
    raw = _read_regular(path, MAX_SIGNATURE_BYTES)
    try:
        sig = strict_json(raw)
    except ValueError:
        raise bad from None
    if not (
        isinstance(sig, dict)
        and sig.get("algorithm") == SIGNATURE_ALGORITHM
        and isinstance(sig.get("key_id"), str)
        and isinstance(sig.get("signature"), str)
    ):
        raise bad
    try:
        signature = base64.b64decode(sig["signature"], validate=True)
    except ValueError:
        raise bad from None
    if len(signature) != 64:
        raise bad
    return sig["key_id"], signature


def _read_manifest(root: Path) -> bytes:
    if not (root / MANIFEST_FILE).exists():
        raise ArtifactError(f"{root}: not an artifact (no {MANIFEST_FILE})")
    return _read_regular(root / MANIFEST_FILE, MAX_MANIFEST_BYTES)


def _checked(root: Path, raw: bytes) -> tuple[dict[str, Any], Spec]:
    """The manifest, checked for structure, every file checked against it, and the spec it lists."""
    manifest = _parse_manifest(raw, root / MANIFEST_FILE)
    for name, entry in manifest["files"].items():
        _verified_bytes(root, name, entry)
    try:
        spec = Spec.from_dict(
            _json_object(_verified_bytes(root, SPEC_FILE, manifest["files"][SPEC_FILE]), root / SPEC_FILE),
            source=str(root / SPEC_FILE),
        )
    except SpecError as e:
        raise ArtifactError(str(e)) from e
    expected = input_schema(spec)
    # Or as artifacts exported before session 39 wrote it, without the event id's column (an edited entry of it is
    # refused: review 215).
    before = expected | {"columns": {c: r for c, r in expected["columns"].items() if r != "event_id"}}
    if _defaults_aside(manifest["input_schema"]) not in (_defaults_aside(expected), _defaults_aside(before)):
        raise ArtifactError(
            f"{root / MANIFEST_FILE}: input_schema does not match {SPEC_FILE}: the manifest was edited, or written "
            "by a seqfraud whose input_schema differs; export the run again"
        )
    return manifest, spec


def _defaults_aside(schema: dict[str, Any]) -> dict[str, Any]:
    """An input_schema without the keys at the defaults that older versions wrote nothing for: ``hop`` 1 and
    ``history`` null (an artifact exported before it existed was refused as not matching: dogfood 132). By type:
    true and 1.0 equal 1 (review 134)."""
    default = {"hop": 1, "history": None}
    return {
        k: v
        for k, v in schema.items()
        if not (k in default and type(v) is type(default[k]) and v == default[k])
    }


def _parse_manifest(raw: bytes, where: Path) -> dict[str, Any]:
    """The manifest's JSON, with every key the scorer reads present and of the right type, or an error naming it."""
    try:
        manifest = strict_json(raw)
    except ValueError as e:
        raise ArtifactError(f"{where}: unreadable manifest: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{where}: not a seqfraud artifact manifest")
    if not is_int(manifest.get("version")) or manifest["version"] != ARTIFACT_VERSION:  # true == 1 in Python
        raise ArtifactError(
            f"{where}: artifact version {manifest.get('version')!r} is not supported "
            f"(this seqfraud reads version {ARTIFACT_VERSION}); re-export the run"
        )

    def bad(key: str, problem: str) -> ArtifactError:
        return ArtifactError(
            f"{where}: {key} {problem}; this manifest was not written by export.py, or was edited"
        )

    for key, kind in (
        ("run_id", str),
        ("files", dict),
        ("formats", dict),
        ("thresholds", dict),
        ("input_schema", dict),
    ):
        if key not in manifest:
            raise bad(repr(key), "is missing")
        if not isinstance(manifest[key], kind) or not manifest[key]:
            raise bad(
                repr(key),
                f"must be a non-empty {'string' if kind is str else 'object'}, "
                f"got {json.dumps(manifest[key])[:80]}",
            )
    files = manifest["files"]
    for name, entry in files.items():
        if not PLAIN_NAME.fullmatch(name) or name in (MANIFEST_FILE, SIGNATURE_FILE):
            raise bad(
                f"files[{name!r}]",
                "is not a plain file name inside the artifact (no path separators, "
                "no '..', not absolute, not the manifest or its signature)",
            )
        if not (
            isinstance(entry, dict)
            and is_int(entry.get("bytes"))
            and entry["bytes"] >= 0
            and isinstance(entry.get("sha256"), str)
            and SHA256_HEX.fullmatch(entry["sha256"])
        ):
            raise bad(
                f"files[{name!r}]",
                'must be {"bytes": SIZE, "sha256": 64 lowercase hex digits}, '
                f"got {json.dumps(entry)[:120]}",
            )
    for needed in (SPEC_FILE, CALIBRATION_FILE):
        if needed not in files:
            raise bad("'files'", f"must list {SPEC_FILE} and {CALIBRATION_FILE}; it does not list {needed}")
    for fmt, name in manifest["formats"].items():
        if fmt not in FORMATS or name != FORMATS[fmt].file or name not in files:
            raise bad(
                f"formats[{fmt!r}]",
                f"= {name!r} is unknown or not among the verified files "
                f"(known: {', '.join(f'{k} in {v.file}' for k, v in FORMATS.items())})",
            )
    plain_stacker = {"file": STACKER_FILE, "format": STACKER_FORMAT}
    stacker = manifest.get("stacker", plain_stacker)
    if stacker not in (plain_stacker, plain_stacker | {"combine": STACKER_BLEND}) or (
        "stacker" in manifest and STACKER_FILE not in files
    ):
        raise bad(
            "'stacker'",
            f'must be {{"file": "{STACKER_FILE}", "format": "{STACKER_FORMAT}"}} (with "combine": '
            f'"{STACKER_BLEND}" for a blend) with the file among the verified files, got {json.dumps(stacker)[:120]}',
        )
    step = manifest.get("step")
    if step is not None and not (
        isinstance(step, dict)
        and set(step) - {"compiled"} == {"formats", "layers", "width"}
        and _compiled_entry(step.get("compiled"), files)
        and isinstance(step["formats"], dict)
        and step["formats"]
        and all(STEP_FILES.get(fmt) == name and name in files for fmt, name in step["formats"].items())
        and all(is_int(step[k]) and 0 < step[k] <= 65536 for k in ("layers", "width"))
    ):
        raise bad(
            "'step'",
            f'must be {{"formats": {{FORMAT: FILE}}, "layers": N, "width": N}}, and "compiled": {{"file": '
            f'"{COMPILED_STEP_FILE}", "machine", "march", "torch": TEXT, "max_batch": N}} where it holds one, with '
            f"files {STEP_FILES} among the verified files, got {json.dumps(step)[:160]}",
        )
    embed = manifest.get("embed")
    if embed is not None and not (
        isinstance(embed, dict)
        and set(embed) == {"formats", "width"}
        and isinstance(embed["formats"], dict)
        and embed["formats"]
        and all(EMBED_FILES.get(fmt) == name and name in files for fmt, name in embed["formats"].items())
        and is_int(embed["width"])
        and 0 < embed["width"] <= 65536
    ):
        raise bad(
            "'embed'",
            f'must be {{"formats": {{FORMAT: FILE}}, "width": N}} with files {EMBED_FILES} among the verified '
            f"files, got {json.dumps(embed)[:120]}",
        )
    thresholds = manifest["thresholds"]
    for band in ("review", "decline"):
        if not is_number(thresholds.get(band)):
            raise bad(f"thresholds[{band!r}]", f"must be a number, got {json.dumps(thresholds.get(band))}")
    try:
        check_thresholds({band: thresholds[band] for band in ("review", "decline")})
    except DecisionError as e:
        raise bad("'thresholds'", f"are invalid: {e}") from e
    return manifest


def _compiled_entry(compiled: Any, files: dict[str, Any]) -> bool:
    """Whether a manifest's ``step.compiled`` is absent or as :func:`save_compiled_step` writes it."""
    return compiled is None or (
        isinstance(compiled, dict)
        and set(compiled) == {"file", "machine", "march", "torch", "max_batch"}
        and compiled["file"] == COMPILED_STEP_FILE
        and COMPILED_STEP_FILE in files
        and all(isinstance(compiled[k], str) for k in ("machine", "march", "torch"))
        and is_int(compiled["max_batch"])
        and 0 < compiled["max_batch"] <= 4096
    )


def _verified_bytes(root: Path, name: str, entry: dict[str, Any]) -> bytes:
    """A listed file's bytes, refused unless a regular file (not a symlink) of the listed size and SHA-256."""
    path = root / name
    if not (path.exists() or path.is_symlink()):
        raise ArtifactError(f"{root}: missing file {name} listed in the manifest")
    data = _read_regular(path, entry["bytes"], exact=True)
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ArtifactError(f"{path}: SHA-256 differs from the manifest (corrupted or modified)")
    return data


def _read_regular(path: Path, max_bytes: int, *, exact: bool = False) -> bytes:
    """A regular file's bytes, never through a symlink; at most ``max_bytes`` (exactly that many with ``exact``)."""
    if path.is_symlink():
        raise ArtifactError(f"{path}: a symlink; artifact files must be regular files inside the artifact")
    # O_NOFOLLOW and fstat close the gap between the check above and the open; O_NONBLOCK keeps a FIFO from hanging.
    flags = (
        os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    )
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise ArtifactError(f"{path}: cannot open: {e.strerror}") from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError(f"{path}: not a regular file")
        if exact and st.st_size != max_bytes:
            raise ArtifactError(
                f"{path}: {st.st_size} bytes, the manifest says {max_bytes} (truncated or replaced)"
            )
        if st.st_size > max_bytes:
            raise ArtifactError(f"{path}: {st.st_size:,} bytes, more than the {max_bytes:,} allowed")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read(max_bytes + 1)


def _json_object(data: bytes, path: Path) -> dict[str, Any]:
    try:
        value = strict_json(data)
    except ValueError as e:
        raise ArtifactError(f"{path}: not JSON: {e}") from e
    if not isinstance(value, dict):
        raise ArtifactError(f"{path}: not a JSON object")
    return value


def strict_json(data: bytes) -> Any:
    """An artifact file's JSON, or ValueError: for a UTF-8 or JSON error, NaN or infinity (not JSON), a key
    repeated in one object (a reader that takes the first would see another manifest than the scorer, which
    takes the last), or nesting past Python's recursion limit (a crafted file; RecursionError is no
    ValueError, so it escaped as a traceback)."""
    return json_value(
        data, parse_constant=_refuse_constant, parse_int=_float_sized_int, object_pairs_hook=unique_keys
    )


def _float_sized_int(text: str) -> int:
    """An integer no float comparison or conversion overflows on: 400 digits of a threshold ended in an
    OverflowError's traceback (dogfood 137), of a monitor's operating point too (review 156)."""
    value = int(text)
    if not is_finite(value):
        raise ValueError(f"an integer of {len(text):,} digits, past what a number holds")
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' ``object_pairs_hook`` that refuses (ValueError) a key repeated in one object."""
    value = dict(pairs)
    if len(value) != len(pairs):
        twice = [k for k, n in Counter(k for k, _ in pairs).items() if n > 1]
        raise ValueError(f"key {twice[0]!r} appears more than once in one object")
    return value


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` atomically; a symlink there is replaced, never followed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
