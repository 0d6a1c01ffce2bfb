"""Scoring raw events with an exported artifact: in process, in batch, or behind HTTP.

Imports neither Lightning nor Hydra nor wandb: a scoring process needs the artifact, torch, Polars
and this package only.
"""

from seqfraud.data.events import DataValidationError
from seqfraud.export.artifact import ArtifactError
from seqfraud.scoring.scorer import BANDS, Scorer

__all__ = ["BANDS", "ArtifactError", "DataValidationError", "Scorer"]
