"""Self-supervised objectives on the classifier's own encoder, for the sessions that never get a label.

:class:`PretrainNet` holds an :class:`~seqfraud.models.sequence.EventEmbedding` and a session encoder under the
same names as :class:`~seqfraud.models.sequence.SessionClassifier` (``embed``, ``encoder``), so a pretrained
checkpoint initializes a classifier key for key (``init_from``). Two objectives, alone or summed:

- **masked event modelling**: a share of each session's events is replaced by a learned mask embedding, and every
  token field of those events is predicted from the encoder's state at their position (a transformer reads the
  whole session around them; a GRU only the events before, which makes it next-event prediction);
- **contrastive** (CoLES, Babaev et al. 2022): two random contiguous sub-sequences of one session are positives,
  the other sessions of the batch negatives, through InfoNCE on the pooled session embedding. Given each
  session's group (``pretrain.positives=entity``: sessions of one account, device, ...), the crops of every
  session of the anchor's group are positives too (:func:`info_nce`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqfraud.errors import ConfigError, did_you_mean, is_finite, is_int, is_number
from seqfraud.models.sequence import (
    EventEmbedding,
    GRUSessionEncoder,
    ModelConfig,
    TransformerSessionEncoder,
    padding_mask,
)

OBJECTIVES = ("masked", "contrastive")
# Every pretrain setting: the network's, and the batches' (positives, entity).
PRETRAIN_KEYS = {"objectives", "mask_prob", "crop", "temperature", "projection_dim", "positives", "entity"}


def check_pretrain(settings: Mapping[str, Any]) -> None:
    """The ``pretrain`` settings that can work, the first that cannot named with its value: a 25-line traceback
    after the whole preprocessing listed four conditions, not which one failed (dogfood 157)."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"pretrain must be a mapping of settings, got {settings!r}")
    # A typo was a TypeError after preprocessing, a projection_dim of 0 trained a constant loss (review 158).
    if unknown := sorted(set(settings) - PRETRAIN_KEYS):
        raise ConfigError(
            f"pretrain.{unknown[0]}: no such setting{did_you_mean(unknown[0], sorted(PRETRAIN_KEYS))}; pretrain "
            f"takes {sorted(PRETRAIN_KEYS)}"
        )
    objectives = settings.get("objectives")
    if not (
        isinstance(objectives, list)
        and objectives
        and all(isinstance(o, str) and o in OBJECTIVES for o in objectives)
    ):
        raise ConfigError(
            f"pretrain.objectives must be a list of some of {list(OBJECTIVES)}, got {objectives!r}"
        )
    mask_prob, crop = settings.get("mask_prob", 0.15), settings.get("crop", [0.5, 1.0])
    temperature, width = settings.get("temperature", 0.1), settings.get("projection_dim", 64)
    if not (is_number(mask_prob) and 0 < mask_prob < 1):
        raise ConfigError(f"pretrain.mask_prob must be in (0, 1), got {mask_prob!r}")
    if not (
        isinstance(crop, list)
        and len(crop) == 2
        and all(map(is_number, crop))
        and 0 < crop[0] <= crop[1] <= 1
    ):
        raise ConfigError(f"pretrain.crop must be [low, high] with 0 < low <= high <= 1, got {crop!r}")
    if not (is_number(temperature) and temperature > 0 and is_finite(temperature)):
        raise ConfigError(f"pretrain.temperature must be positive and finite, got {temperature!r}")
    if not (is_int(width) and width >= 1):
        raise ConfigError(f"pretrain.projection_dim must be an integer of at least 1, got {width!r}")


class PretrainNet(nn.Module):
    def __init__(
        self,
        cfg: ModelConfig,
        objectives: list[str],
        *,
        mask_prob: float = 0.15,
        crop: tuple[float, float] = (0.5, 1.0),
        temperature: float = 0.1,
        projection_dim: int = 64,
    ):
        super().__init__()
        check_pretrain(
            {"objectives": objectives, "mask_prob": mask_prob, "crop": list(crop), "temperature": temperature}
        )
        self.config, self.objectives = cfg, list(objectives)
        self.mask_prob, self.crop, self.temperature = mask_prob, crop, temperature
        self.embed = EventEmbedding(cfg)
        self.encoder = (
            TransformerSessionEncoder(cfg) if cfg.encoder == "transformer" else GRUSessionEncoder(cfg)
        )
        d = cfg.d_model
        self.fields = cfg.token_fields()
        if "masked" in self.objectives:
            self.mask_embedding = nn.Parameter(torch.randn(d) * 0.02)
            self.predict = nn.ModuleList(nn.Linear(d, cfg.vocab_sizes[i]) for i in self.fields)
        if "contrastive" in self.objectives:
            self.project = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, projection_dim))

    @torch.no_grad()
    def start_at_frequencies(self, counts: list[np.ndarray]) -> None:
        """Each masked-event head's bias to its field's token log-frequency (``counts``, per field of ``fields``).

        From a uniform start the encoder learnt the skewed frequencies itself (a field 98% one value is about
        6 nats off uniform, and Adam moves a bias about one learning rate a step), as one large direction shared
        by every state; the final norm then squeezed what tells sessions apart, and a classifier fine-tuned from
        it started from a near-constant pooled state (per-dimension std 0.09, against 0.6 at random init).
        """
        for head, count in zip(self.predict, counts, strict=True):
            assert isinstance(head, nn.Linear)
            smoothed = torch.as_tensor(count, dtype=torch.float64) + 1.0  # a token never seen stays finite
            head.bias.copy_((smoothed / smoothed.sum()).log())

    def embed_sessions(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """The session embedding a classifier's head would read: ``[B, d_model]``."""
        return self.encoder(self.embed(tokens), lengths)

    def forward(self, tokens: Tensor, lengths: Tensor, group: Tensor | None = None) -> dict[str, Tensor]:
        """Each objective's loss (and ``loss``, their sum) on a batch of real sessions; ``group`` (one id per
        session) makes sessions of one group positives of each other in the contrastive objective."""
        losses = {}
        if "masked" in self.objectives:
            losses["masked"] = self.masked_loss(tokens, lengths)
        if "contrastive" in self.objectives:
            losses["contrastive"] = self.contrastive_loss(tokens, lengths, group)
        losses["loss"] = torch.stack(list(losses.values())).sum()
        return losses

    def masked_loss(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        real = ~padding_mask(lengths, tokens.shape[1])
        masked = (torch.rand(real.shape, device=tokens.device) < self.mask_prob) & real
        # At least one masked event per session, so no batch is without a target.
        first = torch.zeros_like(masked)
        pick = (
            (torch.rand(len(lengths), device=tokens.device) * lengths).long().clamp(max=tokens.shape[1] - 1)
        )
        first[torch.arange(len(lengths), device=tokens.device), pick] = True
        masked |= first & real
        x = self.embed(tokens)
        x = torch.where(masked.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        h = self.encoder.states(x, lengths)
        if isinstance(self.encoder, TransformerSessionEncoder):
            h = h[:, 1:]  # past the [CLS] state
        h = self.encoder.norm(h[masked])
        targets = tokens[masked]
        return torch.stack(
            [F.cross_entropy(head(h).float(), targets[:, i]) for head, i in zip(self.predict, self.fields)]
        ).mean()

    def contrastive_loss(self, tokens: Tensor, lengths: Tensor, group: Tensor | None = None) -> Tensor:
        a, b = self._crop(tokens, lengths), self._crop(tokens, lengths)
        za = F.normalize(self.project(self.embed_sessions(*a)).float(), dim=-1)
        zb = F.normalize(self.project(self.embed_sessions(*b)).float(), dim=-1)
        return info_nce(za, zb, self.temperature, group)

    def _crop(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """A random contiguous sub-sequence of each session, ``crop`` of its length (at least one event)."""
        low, high = self.crop
        share = low + (high - low) * torch.rand(len(lengths), device=tokens.device)
        keep = (lengths.float() * share).round().long().clamp(min=1).minimum(lengths)
        start = (torch.rand(len(lengths), device=tokens.device) * (lengths - keep + 1).float()).long()
        width = int(keep.max())
        idx = (start.unsqueeze(1) + torch.arange(width, device=tokens.device)).clamp(max=tokens.shape[1] - 1)
        out = tokens.gather(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[2]))
        out = out.masked_fill(padding_mask(keep, width).unsqueeze(-1), 0)
        return out, keep


def info_nce(za: Tensor, zb: Tensor, temperature: float, group: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between two views ``[B, d]`` of a batch: row ``i`` of one view against every row of the
    other. Without ``group`` the positive of ``za[i]`` is ``zb[i]`` alone (CoLES); with it, the multi-positive
    (supervised-contrastive) form: every ``zb[j]`` of ``i``'s group is a positive, its log-probability averaged
    over them, so all-distinct groups give the plain loss back."""
    logits = za @ zb.T / temperature
    if group is None:
        target = torch.arange(len(za), device=za.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    positive = group[:, None] == group[None, :]  # symmetric, so it serves both directions
    return (_multi_positive(logits, positive) + _multi_positive(logits.T, positive)) / 2


def _multi_positive(logits: Tensor, positive: Tensor) -> Tensor:
    """Minus each anchor's mean log-probability over its positives, averaged over anchors (masked, so a -inf
    logit of a non-positive cannot turn the sum into NaN)."""
    log_prob = logits.log_softmax(-1).masked_fill(~positive, 0)
    return -(log_prob.sum(-1) / positive.sum(-1)).mean()
