"""Artifact signing: ``seqfraud sign keygen --out DIR``, ``seqfraud sign artifact A --key K``."""

from __future__ import annotations

import argparse
from pathlib import Path

from seqfraud.cli import out_folder
from seqfraud.errors import command
from seqfraud.export.artifact import SIGNATURE_FILE, sign_artifact
from seqfraud.export.signing import generate_keypair, key_id, load_private_key


@command
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="seqfraud sign", description="Make an artifact signing key pair, or sign an existing artifact."
    )
    sub = p.add_subparsers(dest="command", required=True)
    keygen = sub.add_parser("keygen", help="write a new Ed25519 key pair: signing.key (private), signing.pub")
    keygen.add_argument(
        "--out", type=out_folder, required=True, help="directory for the key pair (must not hold one already)"
    )
    artifact = sub.add_parser("artifact", help="check an artifact's files, then (re-)sign its manifest")
    artifact.add_argument("path", help="artifact directory written by export.py")
    artifact.add_argument("--key", required=True, help="the private key file (signing.key)")
    artifact.add_argument(
        "--verify-key",
        action="append",
        default=[],
        help="public key that checks the signature being replaced, when --key did not make it (a rotation's "
        "old key); repeatable",
    )
    artifact.add_argument(
        "--force",
        action="store_true",
        help="replace a signature that does not verify (a manifest you changed yourself, and checked)",
    )
    args = p.parse_args(argv)
    if args.command == "keygen":
        private, public = generate_keypair(args.out)
        print(
            f"key {key_id(load_private_key(private).public_key())}: {private} is the private key (keep it "
            f"secret, export reads it), {public} the public key (for every scorer)"
        )
    else:
        unsigned = not (Path(args.path) / SIGNATURE_FILE).exists()
        kid = sign_artifact(args.path, args.key, verify_key=args.verify_key, force=args.force)
        print(f"signed {args.path} with key {kid}")
        if unsigned:  # no signature to check it against: whatever it says now is vouched for (dogfood 31)
            print(
                "note: it had no signature, so nothing showed its manifest unchanged since export; sign only "
                "artifacts you exported yourself (or export with sign_key=), and re-export when in doubt"
            )
