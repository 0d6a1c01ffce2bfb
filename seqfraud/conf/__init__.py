"""The Hydra config, shipped as package data and loaded as ``pkg://seqfraud.conf`` (see seqfraud.cli)."""
