"""Config nodes as the plain data the library takes: one conversion, one place."""

from __future__ import annotations

from typing import Any


def plain(node: Any) -> dict[str, Any]:
    """A config mapping (OmegaConf node or dict) resolved to plain Python data; ``None`` is an empty mapping."""
    if node is None:
        return {}
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(node, DictConfig):
        return dict(node)
    data = OmegaConf.to_container(node, resolve=True)
    if not isinstance(data, dict):
        raise TypeError(f"expected a config mapping, got {type(data).__name__}")
    return {str(k): v for k, v in data.items()}
