"""models/config.py: validation names the key; defaults follow DeSTA2."""

import pytest

from speech_adapter.config import from_dict, to_dict
from speech_adapter.errors import ConfigError
from speech_adapter.models.config import ModelConfig


def test_defaults_and_round_trip():
    cfg = from_dict(ModelConfig, {})
    assert cfg.adapter.kind == "qformer" and cfg.adapter.num_queries == 64 and cfg.lora is None
    assert cfg.tapped_layers(4) == [1, 2, 3, 4]
    assert cfg.tapped_layers(32) == [8, 16, 24, 32]
    again = from_dict(ModelConfig, to_dict(from_dict(ModelConfig, {"lora": {"rank": 4}})))
    assert again.lora.rank == 4 and again.lora.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("data, match", [
    ({"adapter": {"kind": "qformr"}}, "did you mean 'qformer'"),
    ({"adapter": {"stack_factr": 4}}, "adapter.stack_factr.*stack_factor"),
    ({"adapter": {"qformer_hidden": 30, "qformer_heads": 8}}, "adapter.qformer_hidden"),
    ({"lora": {"rank": 0}}, "lora.rank"),
    ({"encoder_layers": [0, 2]}, "encoder_layers"),
    ({"encoder_layers": [3, 2]}, "encoder_layers"),
    ({"placeholder": "a b"}, "placeholder"),
    ({"dtype": "fp32"}, "dtype"),
])
def test_invalid_values_name_the_key(data, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(ModelConfig, data)


def test_taps_beyond_the_encoder_are_refused():
    with pytest.raises(ConfigError, match="exceeds"):
        from_dict(ModelConfig, {"encoder_layers": [2, 6]}).tapped_layers(4)
