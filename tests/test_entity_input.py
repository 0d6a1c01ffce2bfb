"""``model.entity_input``: entity features as embedded tokens or as one numeric side input (docs/entities.md)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from seqfraud.export.artifact import MANIFEST_FILE
from seqfraud.features.spec import FIRST_ID, MISSING, NAN, PAD
from seqfraud.models.sequence import ModelConfig, SessionClassifier
from seqfraud.training.train import model_config

# Two plain fields, then three entity features of 5, 5 and 1 buckets (vocabulary FIRST_ID + buckets), then time delta.
VOCAB = [12, 9, FIRST_ID + 5, FIRST_ID + 5, FIRST_ID + 1, 28]
ENTITY = [False, False, True, True, True, False]


def config(entity_input: str, **kwargs) -> ModelConfig:
    base = {"vocab_sizes": VOCAB, "max_len": 32, "d_model": 32, "n_heads": 4, "field_dim": 8}
    return ModelConfig(**(base | {"entity_input": entity_input, "entity_fields": ENTITY} | kwargs))


def random_tokens(batch: int, length: int, lengths: torch.Tensor) -> torch.Tensor:
    """Valid ids of every field, reserved ones included, right-padded with PAD."""
    columns = [torch.randint(MISSING, v, (batch, length)) for v in VOCAB]
    tokens = torch.stack(columns, dim=-1)
    for row, n in enumerate(lengths):
        tokens[row, n:] = PAD
    return tokens


def test_linear_input_replaces_the_entity_tables_with_one_linear_layer():
    tokens_net = SessionClassifier(config("tokens"))
    linear_net = SessionClassifier(config("linear"))
    assert len(tokens_net.embed.tables) == 6 and tokens_net.embed.side is None
    assert len(linear_net.embed.tables) == 3 and linear_net.embed.tables[2].num_embeddings == 28
    side = linear_net.embed.side
    assert side is not None and (side.in_features, side.out_features) == (2 * 3, 32)
    # tokens is what the model did before the option: entity flags change nothing there
    plain = SessionClassifier(ModelConfig(vocab_sizes=VOCAB, max_len=32, d_model=32, n_heads=4, field_dim=8))
    assert plain.state_dict().keys() == tokens_net.state_dict().keys()
    # a field excluded from the model is not read as a number either
    excluded = SessionClassifier(config("linear", use_fields=[True, True, False, True, True, True]))
    assert excluded.embed.side is not None and excluded.embed.side.in_features == 2 * 2


def test_side_input_is_the_scaled_bucket_position_and_a_missing_flag():
    net = SessionClassifier(config("linear")).eval()
    seen: list[torch.Tensor] = []
    assert net.embed.side is not None
    net.embed.side.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    tokens = torch.full((1, 5, len(VOCAB)), FIRST_ID, dtype=torch.long)
    tokens[0, :, 2] = torch.tensor([FIRST_ID, FIRST_ID + 1, FIRST_ID + 4, MISSING, NAN])
    tokens[0, :, 3] = torch.tensor([FIRST_ID + 2, PAD, FIRST_ID + 3, FIRST_ID, FIRST_ID])
    tokens[0, :, 4] = torch.tensor([FIRST_ID, FIRST_ID, MISSING, FIRST_ID, FIRST_ID])
    net(tokens, torch.tensor([5]))
    # columns: value of each entity field, then its missing flag
    expected = torch.tensor(
        [
            [0.0, 0.5, 0.0, 0.0, 0.0, 0.0],
            [0.25, 0.0, 0.0, 0.0, 1.0, 0.0],
            [1.0, 0.75, 0.0, 0.0, 0.0, 1.0],
            [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        ]
    )
    torch.testing.assert_close(seen[0][0], expected)


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
@pytest.mark.parametrize("fusion", ["concat", "sum"])
def test_linear_input_scores_do_not_depend_on_padding(encoder, fusion):
    torch.manual_seed(0)
    net = SessionClassifier(config("linear", encoder=encoder, fusion=fusion, n_layers=2)).eval()
    lengths = torch.tensor([7, 3, 1, 5])
    tokens = random_tokens(4, 7, lengths)
    base = net(tokens, lengths)
    for extra in (1, 9):
        padded = torch.cat([tokens, torch.zeros(4, extra, len(VOCAB), dtype=torch.long)], dim=1)
        torch.testing.assert_close(net(padded, lengths), base, atol=1e-5, rtol=0)
    for row, n in enumerate(lengths):
        torch.testing.assert_close(
            net(tokens[row : row + 1, :n], lengths[row : row + 1]), base[row : row + 1], atol=1e-5, rtol=0
        )


# Two GRU layers: a stacked hidden state through the while-loop export. Transformer layers only repeat: one
# is enough, and it halves the export's tracing.
# A transformer with LocalMix (model.local_kernel), its convolution's weights made non-zero.
@pytest.mark.parametrize(
    ("encoder", "n_layers", "local_kernel"), [("transformer", 1, 1), ("transformer", 1, 3), ("gru", 2, 1)]
)
def test_linear_input_scripts_and_exports_with_a_dynamic_length(encoder, n_layers, local_kernel):
    torch.manual_seed(0)
    net = SessionClassifier(
        config("linear", encoder=encoder, n_layers=n_layers, local_kernel=local_kernel)
    ).eval()
    if local_kernel > 1:
        torch.nn.init.normal_(net.encoder.local.conv.weight, std=0.3)
    lengths = torch.tensor([6, 2, 4])
    tokens = random_tokens(3, 6, lengths)
    with torch.no_grad():
        expected = net(tokens, lengths)
        scripted = torch.jit.script(net)
        torch.testing.assert_close(scripted(tokens, lengths), expected, atol=1e-6, rtol=0)
    # the same dynamic shapes as the pt2 format (seqfraud.export.artifact)
    from seqfraud.export.artifact import _dynamic_length_gru  # the GRU's length stays dynamic, as in export

    dims = torch.export.Dim
    dynamic = {"tokens": {0: dims.DYNAMIC, 1: dims.DYNAMIC(min=1, max=32)}, "lengths": {0: dims.DYNAMIC}}
    example = (torch.full((2, 8, len(VOCAB)), MISSING, dtype=torch.long), torch.tensor([8, 1]))
    with _dynamic_length_gru(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "_check_is_size will be removed", FutureWarning)
        warnings.filterwarnings("ignore", r"The tensor attributes .*_flat_weights", UserWarning)
        program = torch.export.export(net, example, dynamic_shapes=dynamic)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(tokens, lengths), expected, atol=1e-6, rtol=0)


def test_the_spec_says_which_fields_are_entity_features():
    fields = ("country", "amount", "ent__ip__events_1h", "ent__ip__first_seen_s", "time_delta")
    spec = SimpleNamespace(
        fields=fields,
        max_len=16,
        vocab_size=lambda f: 10,
        entity=SimpleNamespace(feature_names=lambda: ["ent__ip__events_1h", "ent__ip__first_seen_s"]),
        value_fields=(),
    )
    cfg = model_config({"entity_input": "linear", "d_model": 16, "n_heads": 2}, spec, ["ent__ip__events_1h"])
    assert cfg.entity_fields == [False, False, True, True, False]
    assert cfg.token_fields() == [0, 1, 4] and cfg.numeric_fields() == [3]
    no_entities = model_config({}, SimpleNamespace(**{**vars(spec), "entity": None}), [])
    assert no_entities.entity_fields == [False] * 5 and no_entities.numeric_fields() == []


def test_bad_entity_input_settings_are_refused():
    with pytest.raises(ValueError, match="entity_input must be 'tokens' or 'linear'"):
        config("numbers")
    with pytest.raises(ValueError, match="entity_fields and value_fields must give one flag per field"):
        config("linear", entity_fields=[True])
    with pytest.raises(ValueError, match="at least one token field"):
        ModelConfig(vocab_sizes=[9, 9], max_len=8, entity_input="linear", entity_fields=[True, True])


@pytest.mark.slow  # the module's export in every format is a unit test; this trains and exports a whole run
def test_a_linear_entity_run_exports_to_every_format_and_scores_like_the_run(tmp_path: Path) -> None:
    """Trained through train(cfg) on a tiny entity log; export checks every format and the raw-log scoring
    against the run's own test predictions."""
    from seqfraud.export.exporter import export_run
    from seqfraud.training.train import train
    from tests.conftest import single_torch_thread
    from tests.test_entity_pipeline import ENTITY_OVERRIDES, compose

    os.environ.setdefault("WANDB_MODE", "disabled")
    cfg = compose(
        [
            *ENTITY_OVERRIDES,
            "model.entity_input=linear",
            f"paths.output_dir={tmp_path / 'run'}",
            f"paths.data_dir={tmp_path / 'data'}",
        ]
    )
    with single_torch_thread():
        train(cfg)
        out = export_run(tmp_path / "run", tmp_path / "artifact", parity_sessions=128)
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    assert manifest["model"]["entity_input"] == "linear" and manifest["skipped_formats"] == {}
