"""tests for speech_adapter/train/config.py and the recipe loading in train/cli.py."""

import pytest
import yaml

from speech_adapter.config import from_dict
from speech_adapter.errors import ConfigError
from speech_adapter.train.cli import load_train_recipe
from speech_adapter.train.config import TrainConfig

BAD = [
    ({"warmup_step": 3}, "unknown key 'train.warmup_step'; did you mean 'warmup_steps'"),
    ({"objective": "self_distil"}, "did you mean 'self_distill'"),
    ({"batch_size": "four"}, "train.batch_size: expected an integer"),
    ({"lr": -1}, "train.lr: must be > 0"),
    ({"hard_token_filter": 1.5}, "train.hard_token_filter: must be a fraction"),
    ({"betas": [0.9]}, "train.betas: must be two numbers"),
    ({"text_mix": 0.2}, "text_mix: > 0 needs text_file"),
    ({"precision": "fp16"}, "is not one of ['fp32', 'bf16']"),
    ({"eval_every": 5}, "eval_every: > 0 needs dev_file"),
]


@pytest.mark.parametrize("data,msg", BAD)
def test_invalid_train_config(data, msg):
    with pytest.raises(ConfigError) as e:
        from_dict(TrainConfig, data, prefix="train")
    assert msg in str(e.value)


def test_defaults_validate_and_yaml_numbers():
    cfg = from_dict(TrainConfig, {"lr": "3e-4", "objective": "kl_distill"}, prefix="train")
    assert cfg.lr == 3e-4 and cfg.precision == "fp32"


def _recipe(tmp_path, **sections):
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "output_dir": str(tmp_path / "out"), **sections}))
    return p


def test_recipe_paths_and_sections(tmp_path):
    train = tmp_path / "train.jsonl"
    with pytest.raises(ConfigError, match="train.train_file: file not found"):
        load_train_recipe(_recipe(tmp_path, train={"train_file": str(train)}))
    train.write_text("{}\n")
    with pytest.raises(ConfigError, match="unknown key 'trian'; did you mean 'train'"):
        load_train_recipe(_recipe(tmp_path, trian={}))
    with pytest.raises(ConfigError, match="model.adapter.kind"):
        load_train_recipe(_recipe(tmp_path, train={"train_file": str(train)}, model={"adapter": {"kind": "mlp"}}))
    m, t, run_dir, _ = load_train_recipe(_recipe(tmp_path, seed=7, train={"train_file": str(train)}),
                                         ["train.lr=0.001"])
    assert t.lr == 0.001 and t.seed == 7 and run_dir == tmp_path / "out" / "train"
