"""Session-risk models: per-event embedding, then a sequence encoder, then a classification head.

Plain PyTorch, no framework imports, scriptable with TorchScript. Input is one LongTensor of token ids,
``tokens[batch, position, field]`` in the spec's field order, right-padded with 0, plus ``lengths``.

Entity features (``entity_fields``) enter either as tokens like every other field (``entity_input="tokens"``:
one embedding table each) or as numbers (``"linear"``): each one's bucket position scaled to [0, 1] plus a
missing flag, all of them through one linear layer into the event embedding. Value fields (``value_fields``,
a numeric column's exact position, :class:`~seqfraud.features.spec.Spec`) always enter as numbers.

``aggregates=True`` adds a session-level branch beside the encoder (:class:`SessionAggregates`): what the
LightGBM baseline computes per session, counts and numeric statistics, read from the same tokens, so that a
signal carried by session statistics rather than order needs no second model and no second input path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import cast

import torch
from torch import Tensor, nn

from seqfraud.features.spec import FIRST_ID, VALUE_STEPS

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
    value_fields: list[bool] = field(default_factory=list)  # True: a value field, from the spec
    aggregates: bool = False  # the session-level branch (SessionAggregates) beside the encoder
    value_bins: int = 32  # bins of the value fields' piecewise-linear encoding (Numbers)
    # Events each event's vector reads before a transformer's attention (itself and the ones just before it,
    # LocalMix); 1 reads none: the default, and what checkpoints saved before this option existed hold.
    local_kernel: int = 1

    def __post_init__(self) -> None:
        n = len(self.vocab_sizes)
        if not self.use_fields:
            self.use_fields = [True] * n
        if not self.entity_fields:
            self.entity_fields = [False] * n
        if not self.value_fields:
            self.value_fields = [False] * n
        if len(self.use_fields) != n or not any(self.use_fields):
            raise ValueError("use_fields must give one flag per field and keep at least one field")
        if len(self.entity_fields) != n or len(self.value_fields) != n:
            raise ValueError("entity_fields and value_fields must give one flag per field")
        if self.entity_input not in ENTITY_INPUTS:
            raise ValueError(f"model.entity_input must be 'tokens' or 'linear', got {self.entity_input!r}")
        if not self.token_fields():
            raise ValueError("the model needs at least one token field: one that is not read as a number")
        if self.encoder not in ("transformer", "gru"):
            raise ValueError(f"model.encoder must be 'transformer' or 'gru', got {self.encoder!r}")
        if self.fusion not in ("concat", "sum"):
            raise ValueError(f"model.fusion must be 'concat' or 'sum', got {self.fusion!r}")
        if self.local_kernel < 1:
            raise ValueError(f"model.local_kernel must be at least 1 (1: off), got {self.local_kernel}")
        # Each failed in torch, unnamed, or as a ZeroDivisionError below (dogfood 55).
        for name in ("d_model", "n_layers", "n_heads", "ff_mult", "field_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"model.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        if self.encoder == "transformer" and self.d_model % self.n_heads:
            raise ValueError(
                f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})"
            )

    def read_as_number(self, i: int) -> bool:
        return self.value_fields[i] or (self.entity_input == "linear" and self.entity_fields[i])

    def token_fields(self) -> list[int]:
        """Indices of the kept fields that get an embedding table."""
        return [i for i, keep in enumerate(self.use_fields) if keep and not self.read_as_number(i)]

    def numeric_fields(self) -> list[int]:
        """Indices of the kept fields read as numbers: value fields, and entity features when ``linear``."""
        return [i for i, keep in enumerate(self.use_fields) if keep and self.read_as_number(i)]

    def number_scales(self) -> list[float]:
        """Per field of :meth:`numeric_fields`, what maps ``id - FIRST_ID`` to [0, 1]: a value field's steps,
        or an entity feature's buckets (the last one maps to 1; a field of one bucket maps to 0)."""
        return [
            1.0 / VALUE_STEPS if self.value_fields[i] else 1.0 / max(self.vocab_sizes[i] - FIRST_ID - 1, 1)
            for i in self.numeric_fields()
        ]

    def to_dict(self) -> dict:
        return asdict(self)


class Numbers(nn.Module):
    """The fields read as numbers (:meth:`ModelConfig.numeric_fields`): positions in [0, 1] (0 for a reserved
    id), where they are known, and the value fields' piecewise-linear encoding.

    The encoding splits [0, 1] into ``value_bins`` equal bins and gives bin t ``clamp(position * bins - t, 0,
    1)`` (Gorishniy et al., "On Embeddings for Numerical Features in Tabular Deep Learning", 2022): a threshold
    anywhere is then one weight on one input, where the bare position of "amount above 220" differs by 0.003
    from that of 219, too little for a network to pick up in a few epochs.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        numeric = cfg.numeric_fields()
        self.index: Tensor
        self.scale: Tensor
        self.value_at: Tensor
        self.steps: Tensor
        self.register_buffer("index", torch.tensor(numeric, dtype=torch.long), persistent=False)
        self.register_buffer(
            "scale", torch.tensor(cfg.number_scales(), dtype=torch.float32), persistent=False
        )
        value_at = [j for j, i in enumerate(numeric) if cfg.value_fields[i]]
        self.register_buffer("value_at", torch.tensor(value_at, dtype=torch.long), persistent=False)
        self.register_buffer("steps", torch.arange(cfg.value_bins, dtype=torch.float32), persistent=False)
        self.bins = float(cfg.value_bins)
        self.width = len(numeric)  # of value() and known()
        self.encoded_width = len(value_at) * cfg.value_bins  # of encode()
        self.first_id = FIRST_ID  # an attribute, since TorchScript reads no module globals

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Float32 whatever the model's dtype: bf16 would round a value field's position to 1/256."""
        ids = tokens.index_select(2, self.index)
        known = ids >= self.first_id
        position = ((ids - self.first_id).to(torch.float32) * self.scale).clamp(0.0, 1.0)
        return torch.where(known, position, torch.zeros_like(position)), known

    def encode(self, value: Tensor) -> Tensor:
        """``[..., fields]`` positions to ``[..., value fields * bins]``."""
        chosen = value.index_select(-1, self.value_at).unsqueeze(-1)
        return (chosen * self.bins - self.steps).clamp(0.0, 1.0).flatten(-2)


class EventEmbedding(nn.Module):
    """One embedding per token field, fused by concatenation and projection (or a sum), plus the numeric
    side input when there is one; then a LayerNorm.

    The side input is each numeric field's position in [0, 1] (:meth:`ModelConfig.number_scales`; 0 for a
    reserved id), a flag that is 1 for the reserved ids (padding, missing, NaN), and the value fields'
    encoding (:class:`Numbers`), through one ``nn.Linear`` whose output is added to the fused embedding. With
    ``fusion="concat"`` that equals concatenating the numbers before the projection (a linear map of a
    concatenation is the sum of linear maps), and it works the same way for ``fusion="sum"``.
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
        self.numbers = Numbers(cfg)
        width = 2 * self.numbers.width + self.numbers.encoded_width
        self.side = nn.Linear(width, cfg.d_model) if self.numbers.width else None
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        kept = tokens.index_select(2, self.field_index)
        parts = [table(kept[:, :, j]) for j, table in enumerate(self.tables)]
        if self.concat:
            x = self.project(torch.cat(parts, dim=-1))
        else:
            x = torch.stack(parts, dim=0).sum(dim=0)
        if self.side is not None:
            value, known = self.numbers(tokens)
            numbers = torch.cat([value, (~known).to(torch.float32), self.numbers.encode(value)], dim=-1)
            x = x + self.side(numbers.to(x.dtype))
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


class LocalMix(nn.Module):
    """Each event's vector plus a causal convolution over it and the ``kernel - 1`` events before it.

    Attention with learnt positions must learn "right after" separately at every position, which a few frauds
    cannot teach: on a log whose fraud was three events in a row a small transformer reached test PR-AUC 0.46,
    and 1.0 with this. It lost elsewhere (card testing by counts: 0.83 to 0.75), so it is off by default and in
    the Optuna search (BENCHMARKS.md, "local order"). Causal: an event reads nothing after it (padding sits after
    the events) and the first kept event of a cut session reads zeros. Starts at zero, as without it.
    """

    def __init__(self, d_model: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(d_model, d_model, kernel)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(cast(Tensor, self.conv.bias))

    def forward(self, x: Tensor) -> Tensor:
        before = nn.functional.pad(x.transpose(1, 2), (self.kernel - 1, 0))
        return x + self.conv(before).transpose(1, 2)


class TransformerSessionEncoder(nn.Module):
    """A learned [CLS] token reads the events through a pre-norm TransformerEncoder."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.local = LocalMix(cfg.d_model, cfg.local_kernel) if cfg.local_kernel > 1 else nn.Identity()
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
        return self.norm(self.states(x, lengths)[:, 0])

    def states(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``[B, 1 + L, d]``: the [CLS] state, then one per event (what masked event modelling reads)."""
        seq_len = x.shape[1]
        x = self.local(x) + self.position(recency_positions(lengths, seq_len))
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        pad = torch.cat(
            [torch.zeros_like(lengths, dtype=torch.bool).unsqueeze(1), padding_mask(lengths, seq_len)], 1
        )
        if torch.jit.is_scripting() and not bool(pad.any()):
            # Served TorchScript, nothing padded (one session, or a batch of equal lengths): without a mask the
            # CPU fast path skips its masked softmax, several times slower than the rest of attention on long
            # sessions. Eager and torch.export never branch on data here.
            return self.encoder(x)
        return self.encoder(x, src_key_padding_mask=pad)


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
        out = self.states(x, lengths)
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, out.shape[-1])
        return self.norm(out.gather(1, last).squeeze(1))

    def states(self, x: Tensor, lengths: Tensor) -> Tensor:
        """``[B, L, d]``: the state after each event (each reads only the events up to it)."""
        return self.gru(x)[0]


class SessionAggregates(nn.Module):
    """The LightGBM baseline's kind of per-session aggregates, from the session's tokens, through a small MLP.

    - Every token field (categories, numeric buckets, the time delta): events per token id, as ``log1p`` and as
      a share of the session, and distinct ids: the baseline's counts per category value, unknown and missing
      counts, distinct values, and (through the buckets) amount and timing histograms.
    - Every field read as a number (value fields, entity features when ``linear``): mean, standard deviation,
      max, min and the latest of the known positions, and the share known: the baseline's numeric statistics,
      taken on the position (monotone in the value, so max, min and thresholds match); the value fields' max
      and min also encoded (:class:`Numbers`), so that a session-level threshold is one weight.
    - The session length.

    It sees the events the encoder sees (the latest ``max_len``); the baseline sees them all.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        kept = cfg.token_fields()
        self.field_index: Tensor
        self.offsets: Tensor
        self.segments: Tensor
        self.register_buffer("field_index", torch.tensor(kept, dtype=torch.long), persistent=False)
        sizes = [cfg.vocab_sizes[i] for i in kept]
        starts = [sum(sizes[:j]) for j in range(len(sizes))]
        self.register_buffer("offsets", torch.tensor(starts, dtype=torch.long), persistent=False)
        segments = torch.zeros(sum(sizes), len(sizes))
        for j, (start, size) in enumerate(zip(starts, sizes)):
            segments[start : start + size, j] = 1.0
        self.register_buffer("segments", segments, persistent=False)
        self.n_ids = sum(sizes)
        self.numbers = Numbers(cfg)
        width = 2 * self.n_ids + len(sizes) + 1 + 6 * self.numbers.width + 2 * self.numbers.encoded_width
        self.norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, cfg.d_model),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_model, cfg.d_model),
        )

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        batch, seq_len = tokens.shape[0], tokens.shape[1]
        real = ~padding_mask(lengths, seq_len)  # [B, L]
        n = lengths.to(torch.float32).unsqueeze(1)
        ids = tokens.index_select(2, self.field_index) + self.offsets  # [B, L, k] into one id space
        counts = torch.zeros(batch, self.n_ids, dtype=torch.float32, device=tokens.device)
        weight = real.to(torch.float32).unsqueeze(2).expand_as(ids)
        counts.scatter_add_(1, ids.reshape(batch, -1), weight.reshape(batch, -1))
        distinct = (counts > 0).to(torch.float32) @ self.segments
        value, known = self.numbers(tokens)
        seen = known & real.unsqueeze(2)
        w = seen.to(torch.float32)
        count = w.sum(1)
        mean = (value * w).sum(1) / count.clamp(min=1.0)
        var = (((value - mean.unsqueeze(1)) ** 2) * w).sum(1) / count.clamp(min=1.0)
        some = count > 0
        high = torch.where(seen, value, torch.full_like(value, -1.0)).amax(1)
        low = torch.where(seen, value, torch.full_like(value, 2.0)).amin(1)
        high = torch.where(some, high, torch.zeros_like(high))
        low = torch.where(some, low, torch.zeros_like(low))
        last = value.gather(
            1, (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, value.shape[2])
        ).squeeze(1)
        parts = [
            torch.log1p(counts),
            counts / n.clamp(min=1.0),
            torch.log1p(distinct),
            torch.log1p(n),
            mean,
            var.sqrt(),
            high,
            low,
            last,
            count / n.clamp(min=1.0),
            self.numbers.encode(high),
            self.numbers.encode(low),
        ]
        return self.mlp(self.norm(torch.cat(parts, dim=1)))


class SessionClassifier(nn.Module):
    """Token ids and lengths in, one fraud logit per session out."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.embed = EventEmbedding(cfg)
        self.encoder = (
            TransformerSessionEncoder(cfg) if cfg.encoder == "transformer" else GRUSessionEncoder(cfg)
        )
        self.aggregates = SessionAggregates(cfg) if cfg.aggregates else None
        width = cfg.d_model * (2 if cfg.aggregates else 1)
        self.head = nn.Sequential(
            nn.Linear(width, cfg.d_model), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(cfg.d_model, 1)
        )

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h = self.encoder(self.embed(tokens), lengths)
        if self.aggregates is not None:
            h = torch.cat([h, self.aggregates(tokens, lengths)], dim=1)
        return self.head(h).squeeze(-1)


class GRUStep(nn.Module):
    """A GRU classifier one event at a time: the hidden state carries the session, so an event costs O(1).

    ``forward(tokens [B, k, F], hidden [layers, B, d]) -> (logit [B], hidden)`` reads ``k`` new events after
    the state ``hidden`` (zeros before the first event); the logit equals :class:`SessionClassifier`'s on the
    events read since the state was zeros. Past ``max_len`` a session's window starts at a multiple of ``hop``:
    the online scorer carries a state per such start, one batch (:func:`seqfraud.scoring.online.carried_starts`).
    """

    def __init__(self, net: SessionClassifier):
        super().__init__()
        if not can_step(net):
            raise ValueError("only a GRU classifier without the aggregates branch steps one event at a time")
        encoder = net.encoder
        assert isinstance(encoder, GRUSessionEncoder)
        self.embed, self.gru, self.norm, self.head = net.embed, encoder.gru, encoder.norm, net.head
        self.layers, self.width = encoder.gru.num_layers, encoder.gru.hidden_size  # the state's shape

    def forward(self, tokens: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
        out, hidden = self.gru(self.embed(tokens), hidden)
        return self.head(self.norm(out[:, -1])).squeeze(-1), hidden


def can_step(net: SessionClassifier) -> bool:
    """Whether :class:`GRUStep` can carry ``net``'s state."""
    return isinstance(net.encoder, GRUSessionEncoder) and net.aggregates is None
