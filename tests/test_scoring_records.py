"""Events as a list of dicts: unknown keys are refused (a misspelled optional column must not read as missing)."""

from __future__ import annotations

from datetime import datetime

import polars as pl
import pytest
import torch

from seqfraud import schema as S
from seqfraud.data.events import DataValidationError
from seqfraud.features.spec import Spec
from seqfraud.schema import Schema
from seqfraud.scoring import Scorer
from seqfraud.scoring.prepare import as_frame

SPEC = Spec(
    schema=Schema(categorical=("device",), numerical=("amount",)),
    timestamp_unit="us",
    max_len=4,
    vocab={"event_type": ["login", "pay"], "device": ["ios", "web"]},
    edges={"amount": [0.0, 10.0], S.TIME_DELTA: [0.0, 1.0]},
)


def _events(n: int = 3) -> list[dict]:
    return [
        {
            "session_id": "s1",
            "timestamp": datetime(2026, 3, 1, 10, 0, i),
            "event_type": "pay",
            "device": "ios",
            "amount": 5.0,
        }
        for i in range(n)
    ]


def _scorer() -> Scorer:
    def model(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.full(lengths.shape, 0.5)

    return Scorer(model, SPEC, {"review": 0.6, "decline": 0.9}, model_version="test")


def test_a_misspelled_key_is_refused_with_its_count_and_a_suggestion():
    events = _events()
    for e in events[:2]:
        e["amout"] = e.pop("amount")
    events[2]["colour"] = "red"
    with pytest.raises(
        DataValidationError,
        match=r"^events: unknown key\(s\) 'amout' in 2 event\(s\) \(did you mean "
        r"'amount'\?\); 'colour' in 1 event\(s\)\. Keys are the model's "
        r"columns: \['session_id', 'timestamp', 'event_type', 'device', "
        r"'amount'\]",
    ):
        _scorer().score(events)


def test_known_keys_may_be_left_out_and_frames_keep_extra_columns_ignored():
    scorer = _scorer()
    without = [{k: v for k, v in e.items() if k != "amount"} for e in _events()]
    assert scorer.score(without)[S.SCORE].len() == 1
    frame = pl.DataFrame(_events()).with_columns(pl.lit(1).alias("label"))
    assert (
        "label" in as_frame(frame, SPEC, "events").columns
    )  # training, too, reads only the schema's columns
    assert scorer.score(frame).equals(scorer.score(_events()))
