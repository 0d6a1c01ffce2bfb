"""Ed25519 keys that sign artifacts: how a key pair is made and read back (the command is ``seqfraud sign``).

What a signature covers and how it is checked lives with the artifact's layout, in
:mod:`seqfraud.export.artifact`. This module is on the serving path: it imports ``cryptography`` and
the standard library only.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from seqfraud.errors import UserError

PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"
MAX_KEY_BYTES = 64 * 1024  # a PEM Ed25519 key is about 120 bytes; a bigger "key" is not one

KeySource = str | Path | Ed25519PublicKey


class SigningKeyError(UserError, ValueError):
    """A key file that is missing, unreadable, or not an Ed25519 key of the expected kind."""


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(out: str | Path) -> tuple[Path, Path]:
    """A new key pair in ``out``: the private key readable by its owner only, the public key for every scorer.

    Never overwrites a key: a lost private key cannot be recovered, and a replaced one silently
    invalidates every artifact it signed.
    """
    out = Path(out).expanduser()
    private_path, public_path = out / PRIVATE_KEY_FILE, out / PUBLIC_KEY_FILE
    for path in (private_path, public_path):
        if path.exists():
            raise SigningKeyError(f"{path} exists; keys are never overwritten: choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Created 0600, so the key is never readable by others, not even for a moment.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


def load_private_key(path: str | Path) -> Ed25519PrivateKey:
    key = _load(path, lambda pem: serialization.load_pem_private_key(pem, password=None), "private")
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(
            f"{path}: a {type(key).__name__}, not an Ed25519 private key; make one with "
            "`seqfraud sign keygen`"
        )
    return key


def load_public_keys(sources: KeySource | Iterable[KeySource]) -> dict[str, Ed25519PublicKey]:
    """Public keys by :func:`key_id`, from files or key objects; several keys let a rotation overlap."""
    if isinstance(sources, (str, Path, Ed25519PublicKey)):
        sources = [sources]
    keys = {}
    for source in sources:
        key = (
            source
            if isinstance(source, Ed25519PublicKey)
            else _load(source, serialization.load_pem_public_key, "public")
        )
        if not isinstance(key, Ed25519PublicKey):
            raise SigningKeyError(f"{source}: a {type(key).__name__}, not an Ed25519 public key")
        keys[key_id(key)] = key
    return keys


def _load(path: str | Path, parse, kind: str):
    path = Path(path).expanduser()
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a pipe blocks its reader forever (dogfood 31)
            raise SigningKeyError(f"{path}: not a regular file, so not a {kind} key file")
        if st.st_size > MAX_KEY_BYTES:
            raise SigningKeyError(f"{path}: {st.st_size:,} bytes is not a {kind} key file")
        pem = path.read_bytes()
    except OSError as e:
        raise SigningKeyError(f"{path}: cannot read the {kind} key: {e.strerror}") from e
    try:
        return parse(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        hint = (
            " (that is the public key; export needs the private one)"
            if b"PUBLIC KEY" in pem and kind == "private"
            else " (that is the private key; scorers get the public one)"
            if b"PRIVATE KEY" in pem
            else ""
        )
        raise SigningKeyError(f"{path}: not a PEM {kind} key{hint}") from e
