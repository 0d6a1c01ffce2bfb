"""Stacking: LightGBM on session aggregates plus the sequence model's score, in one artifact.

LightGBM reads :class:`~seqfraud.models.sequence.AggregateFeatures` of the session's tokens and the sequence
model's logit. The aggregates come from the tokens, so training, export and every scoring path (batch, HTTP,
explain) compute them with this one module from what they already hold, and train and serve cannot disagree.
They are computed in float64, so that sums taken over differently padded batches round alike and no tree
split flips on the last bit. The trees travel in LightGBM's own text format: no pickle, and reading them
runs no code.

Training (:mod:`seqfraud.training.stacking`) gives LightGBM out-of-fold sequence scores on the training
sessions, so that the score it learns to trust is one from a model that never saw the session's label.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from seqfraud.features.spec import Spec
from seqfraud.models.sequence import AggregateFeatures, ModelConfig

STACKER_FILE = "stacker.txt"
STACKER_FORMAT = "lightgbm-text"


def aggregates_config(spec: Spec) -> ModelConfig:
    """What the aggregates read, from the spec alone: every field, entity features and value fields as numbers."""
    entity = set(spec.entity.feature_names()) if spec.entity else set()
    return ModelConfig(
        vocab_sizes=[spec.vocab_size(f) for f in spec.fields],
        max_len=spec.max_len,
        entity_input="linear",
        entity_fields=[f in entity for f in spec.fields],
        value_fields=[f in spec.value_fields for f in spec.fields],
    )


class StackInputs:
    """The stacker's input rows: aggregates of a padded batch of sessions and the sequence model's score."""

    def __init__(self, spec: Spec):
        self.aggregates = AggregateFeatures(aggregates_config(spec)).eval()
        self.width = self.aggregates.width + 1

    @torch.no_grad()
    def __call__(self, tokens: Tensor, lengths: Tensor, probability: np.ndarray) -> np.ndarray:
        parts = self.aggregates(tokens.cpu(), lengths.cpu(), torch.float64)
        p = np.clip(np.asarray(probability, dtype=np.float64), 1e-7, 1 - 1e-7)
        logit = np.log(p / (1 - p))[:, None]
        return np.concatenate([*(t.numpy() for t in parts), logit], axis=1)


class Stacker:
    """A LightGBM booster over :class:`StackInputs`; thread-safe for concurrent predictions."""

    def __init__(self, booster: Any, spec: Spec):
        self.booster = booster
        self.inputs = StackInputs(spec)
        if booster.num_feature() != self.inputs.width:
            raise ValueError(
                f"the stacker reads {booster.num_feature()} inputs, the spec's aggregates give {self.inputs.width}"
            )

    @classmethod
    def from_text(cls, text: str, spec: Spec) -> Stacker:
        try:
            import lightgbm
        except ImportError as e:
            raise ImportError(
                "this artifact stacks LightGBM on the sequence model: install lightgbm "
                "(pip install 'seqfraud[serve]' or 'seqfraud[train]')"
            ) from e
        return cls(lightgbm.Booster(model_str=text), spec)

    def predict(self, tokens: Tensor, lengths: Tensor, probability: np.ndarray) -> np.ndarray:
        """Probabilities of the stacked model for the sessions of one padded batch."""
        rows = self.inputs(tokens, lengths, probability)
        return np.asarray(self.booster.predict(rows, num_threads=1), dtype=np.float32)
