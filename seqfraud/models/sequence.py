"""Session-risk models: per-event embedding, then a sequence encoder, then a classification head.

Plain PyTorch, no framework imports, scriptable with TorchScript. Input is one LongTensor of token ids,
``tokens[batch, position, field]`` in the spec's field order, right-padded with 0, plus ``lengths``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn


@dataclass
class ModelConfig:
    vocab_sizes: list[int]  # one per input field, from the fitted spec; never from YAML
    max_len: int
    encoder: str = "transformer"  # transformer | gru
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    ff_mult: int = 2
    dropout: float = 0.1
    fusion: str = "concat"  # concat (then projection) | sum
    field_dim: int = 16  # per-field embedding width when fusion=concat
    use_fields: list[bool] = field(default_factory=list)  # False drops a field (ablations); empty means all

    def __post_init__(self) -> None:
        if not self.use_fields:
            self.use_fields = [True] * len(self.vocab_sizes)
        if len(self.use_fields) != len(self.vocab_sizes) or not any(self.use_fields):
            raise ValueError("use_fields must give one flag per field and keep at least one field")
        if self.encoder not in ("transformer", "gru"):
            raise ValueError(f"model.encoder must be 'transformer' or 'gru', got {self.encoder!r}")
        if self.fusion not in ("concat", "sum"):
            raise ValueError(f"model.fusion must be 'concat' or 'sum', got {self.fusion!r}")
        if self.encoder == "transformer" and self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )

    def to_dict(self) -> dict:
        return asdict(self)


class EventEmbedding(nn.Module):
    """One embedding per field, fused by concatenation and projection (or a sum)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        kept = [i for i, keep in enumerate(cfg.use_fields) if keep]
        self.field_index: Tensor
        self.register_buffer("field_index", torch.tensor(kept, dtype=torch.long), persistent=False)
        width = cfg.field_dim if cfg.fusion == "concat" else cfg.d_model
        self.tables = nn.ModuleList(nn.Embedding(cfg.vocab_sizes[i], width, padding_idx=0) for i in kept)
        self.concat = cfg.fusion == "concat"
        self.project = nn.Linear(width * len(self.field_index), cfg.d_model) if self.concat else nn.Identity()
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        kept = tokens.index_select(2, self.field_index)
        parts = [table(kept[:, :, j]) for j, table in enumerate(self.tables)]
        if self.concat:
            x = self.project(torch.cat(parts, dim=-1))
        else:
            x = torch.stack(parts, dim=0).sum(dim=0)
        return self.norm(x)


def recency_positions(lengths: Tensor, seq_len: int) -> Tensor:
    """Position counted back from the most recent event (0 = latest; padding gets 0).

    Sessions are cut from the front at ``max_len``, so counting from the end keeps the same position for
    the same recent event whatever the session's full length.
    """
    idx = torch.arange(seq_len, device=lengths.device).unsqueeze(0)
    pos = lengths.unsqueeze(1) - 1 - idx
    return pos.clamp(min=0)


def padding_mask(lengths: Tensor, seq_len: int) -> Tensor:
    """True where a position is padding."""
    return torch.arange(seq_len, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)


class TransformerSessionEncoder(nn.Module):
    """A learned [CLS] token reads the events through a pre-norm TransformerEncoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        nn.init.normal_(self.cls, std=0.02)
        self.position = nn.Embedding(cfg.max_len, cfg.d_model)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.n_heads,
            cfg.d_model * cfg.ff_mult,
            cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        seq_len = x.shape[1]
        x = x + self.position(recency_positions(lengths, seq_len))
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        pad = torch.cat(
            [torch.zeros_like(lengths, dtype=torch.bool).unsqueeze(1), padding_mask(lengths, seq_len)], 1
        )
        if torch.jit.is_scripting() and not bool(pad.any()):
            # Served TorchScript, nothing padded (one session, or a batch of equal lengths): without a mask the
            # CPU fast path skips its masked softmax, several times slower than the rest of attention on long
            # sessions. Eager and torch.export never branch on data here.
            h = self.encoder(x)
        else:
            h = self.encoder(x, src_key_padding_mask=pad)
        return self.norm(h[:, 0])


class GRUSessionEncoder(nn.Module):
    """The hidden state after the last real event; later padding cannot reach it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gru = nn.GRU(
            cfg.d_model,
            cfg.d_model,
            num_layers=cfg.n_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.n_layers > 1 else 0.0,
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.gru(x)
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return self.norm(out.gather(1, last).squeeze(1))


class SessionClassifier(nn.Module):
    """Token ids and lengths in, one fraud logit per session out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = EventEmbedding(cfg)
        self.encoder = (
            TransformerSessionEncoder(cfg) if cfg.encoder == "transformer" else GRUSessionEncoder(cfg)
        )
        self.head = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_model), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.d_model, 1)
        )

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.encoder(self.embed(tokens), lengths)).squeeze(-1)
