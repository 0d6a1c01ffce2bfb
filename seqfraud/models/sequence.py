"""Session-risk models: per-event embedding, then a sequence encoder, then a classification head.

Plain PyTorch, no framework imports, scriptable with TorchScript. Input is one LongTensor of token ids,
``tokens[batch, position, field]`` in the spec's field order, right-padded with 0, plus ``lengths``.

Entity features (``entity_fields``) enter either as tokens like every other field (``entity_input="tokens"``:
one embedding table each) or as numbers (``"linear"``): each one's bucket position scaled to [0, 1] plus a
missing flag, all of them through one linear layer into the event embedding.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from seqfraud.features.spec import FIRST_ID

ENTITY_INPUTS = ("tokens", "linear")


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
    # linear (entity features as numbers through one Linear; the shipped presets) | tokens (a table per feature).
    # The default here is what checkpoints saved before this option existed hold.
    entity_input: str = "tokens"
    entity_fields: list[bool] = field(default_factory=list)  # True: an entity feature, from the spec

    def __post_init__(self) -> None:
        if not self.use_fields:
            self.use_fields = [True] * len(self.vocab_sizes)
        if not self.entity_fields:
            self.entity_fields = [False] * len(self.vocab_sizes)
        if len(self.use_fields) != len(self.vocab_sizes) or not any(self.use_fields):
            raise ValueError("use_fields must give one flag per field and keep at least one field")
        if len(self.entity_fields) != len(self.vocab_sizes):
            raise ValueError("entity_fields must give one flag per field")
        if self.entity_input not in ENTITY_INPUTS:
            raise ValueError(f"model.entity_input must be 'tokens' or 'linear', got {self.entity_input!r}")
        if not self.token_fields():
            raise ValueError(
                "model.entity_input=linear needs at least one field that is not an entity feature"
            )
        if self.encoder not in ("transformer", "gru"):
            raise ValueError(f"model.encoder must be 'transformer' or 'gru', got {self.encoder!r}")
        if self.fusion not in ("concat", "sum"):
            raise ValueError(f"model.fusion must be 'concat' or 'sum', got {self.fusion!r}")
        if self.encoder == "transformer" and self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )

    def token_fields(self) -> list[int]:
        """Indices of the kept fields that get an embedding table."""
        linear = self.entity_input == "linear"
        return [
            i for i, keep in enumerate(self.use_fields) if keep and not (linear and self.entity_fields[i])
        ]

    def numeric_fields(self) -> list[int]:
        """Indices of the kept entity features read as numbers (none unless ``entity_input="linear"``)."""
        if self.entity_input != "linear":
            return []
        return [i for i, keep in enumerate(self.use_fields) if keep and self.entity_fields[i]]

    def to_dict(self) -> dict:
        return asdict(self)


class EventEmbedding(nn.Module):
    """One embedding per token field, fused by concatenation and projection (or a sum), plus the numeric
    side input when there is one; then a LayerNorm.

    The side input is each numeric field's bucket position ``(id - FIRST_ID) / (buckets - 1)`` in [0, 1] (0 for
    a reserved id) and a flag that is 1 for the reserved ids (padding, missing, NaN), through one ``nn.Linear``
    whose output is added to the fused embedding. With ``fusion="concat"`` that equals concatenating the
    numbers before the projection (a linear map of a concatenation is the sum of linear maps), and it works
    the same way for ``fusion="sum"``.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        kept = cfg.token_fields()
        self.field_index: Tensor
        self.register_buffer("field_index", torch.tensor(kept, dtype=torch.long), persistent=False)
        width = cfg.field_dim if cfg.fusion == "concat" else cfg.d_model
        self.tables = nn.ModuleList(nn.Embedding(cfg.vocab_sizes[i], width, padding_idx=0) for i in kept)
        self.concat = cfg.fusion == "concat"
        self.project = nn.Linear(width * len(self.field_index), cfg.d_model) if self.concat else nn.Identity()
        numeric = cfg.numeric_fields()
        self.numeric_index: Tensor
        self.numeric_scale: Tensor
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long), persistent=False)
        # 1 / (buckets - 1): the last bucket maps to 1; a field of one bucket maps to 0
        scale = [1.0 / max(cfg.vocab_sizes[i] - FIRST_ID - 1, 1) for i in numeric]
        self.register_buffer("numeric_scale", torch.tensor(scale, dtype=torch.float32), persistent=False)
        self.side = nn.Linear(2 * len(numeric), cfg.d_model) if numeric else None
        self.first_id = FIRST_ID  # an attribute, since TorchScript reads no module globals
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        kept = tokens.index_select(2, self.field_index)
        parts = [table(kept[:, :, j]) for j, table in enumerate(self.tables)]
        if self.concat:
            x = self.project(torch.cat(parts, dim=-1))
        else:
            x = torch.stack(parts, dim=0).sum(dim=0)
        if self.side is not None:
            ids = tokens.index_select(2, self.numeric_index)
            known = ids >= self.first_id
            position = ((ids - self.first_id).to(x.dtype) * self.numeric_scale.to(x.dtype)).clamp(0.0, 1.0)
            value = torch.where(known, position, torch.zeros_like(position))
            x = x + self.side(torch.cat([value, (~known).to(x.dtype)], dim=-1))
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
