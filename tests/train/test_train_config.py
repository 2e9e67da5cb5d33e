"""tests for speech_adapter/train/config.py and the recipe loading in train/cli.py."""

import argparse

import pytest
import yaml

from speech_adapter.config import from_dict
from speech_adapter.errors import ConfigError
from speech_adapter.train.cli import train_section
from speech_adapter.train.config import TrainConfig

BAD = [
    ({"warmup_step": 3}, "unknown key 'train.warmup_step'; did you mean 'warmup_steps'"),
    ({"objective": "self_distil"}, "did you mean 'self_distill'"),
    ({"batch_size": "four"}, "train.batch_size: expected an integer"),
    ({"lr": -1}, "train.lr: must be > 0"),
    ({"hard_token_filter": 1.5}, "train.hard_token_filter: must be a fraction"),
    ({"betas": [0.9]}, "train.betas: must be two numbers"),
    ({"text_mix": 0.2}, "text_mix: > 0 needs text_file"),
    ({"precision": "fp16"}, "is not one of ['fp32', 'bf16', 'auto']"),
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


def _args(recipe, *overrides, train_file=None, variant=None):
    return argparse.Namespace(recipe=str(recipe), overrides=list(overrides), train_file=train_file,
                              text_file=None, dev_file=None, variant=variant, run_dir=None)


def test_train_section_comes_from_the_shared_recipe_reader(tmp_path):
    train = tmp_path / "train.jsonl"
    with pytest.raises(ConfigError, match="unknown key 'trian'; did you mean 'train'"):
        train_section(_args(_recipe(tmp_path, trian={})))
    with pytest.raises(ConfigError, match="model.adapter.kind"):
        train_section(_args(_recipe(tmp_path, model={"adapter": {"kind": "mlp"}})))
    with pytest.raises(ConfigError, match="train.train_file: set by the pipeline"):
        train_section(_args(_recipe(tmp_path, train={"train_file": str(train)})))
    recipe, t, run_dir = train_section(_args(_recipe(tmp_path, seed=7), "train.lr=0.001"))
    assert t.lr == 0.001 and t.seed == 7 and run_dir == tmp_path / "out" / "train"
    assert t.train_file == tmp_path / "out" / "distill" / "distilled.jsonl"
    _, t, _ = train_section(_args(_recipe(tmp_path), train_file=str(train)))
    assert t.train_file == train


def test_a_variants_recipe_names_the_command_that_runs_it(tmp_path):
    r = _recipe(tmp_path, variants=[{"name": "a", "train": {"lr": 0.01}}, {"name": "b"}])
    with pytest.raises(ConfigError, match=f"speech-adapter run {r}"):
        train_section(_args(r))
    _, t, run_dir = train_section(_args(r, variant="a"))
    assert t.lr == 0.01 and run_dir == tmp_path / "out" / "variants" / "a" / "train"
    with pytest.raises(ConfigError, match="did you mean 'a'"):
        train_section(_args(r, variant="aa"))
