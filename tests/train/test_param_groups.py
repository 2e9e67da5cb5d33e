"""train.lora_lr: the LLM's LoRA weights get their own AdamW group and learning rate."""

from __future__ import annotations

import pytest
import torch

from speech_adapter.errors import ConfigError
from speech_adapter.models.tiny import tiny_speechlm
from speech_adapter.train.config import TrainConfig
from speech_adapter.train.loop import param_groups


def _ids(group):
    return {id(p) for p in group["params"]}


def test_lora_lr_puts_exactly_the_lora_weights_in_their_own_group():
    m = tiny_speechlm("stack_mlp", lora=True)
    groups = param_groups(m, TrainConfig(lr=1e-3, lora_lr=1e-4))
    named = {id(p): n for n, p in m.named_parameters() if p.requires_grad}
    assert len(groups) == 2 and "lr" not in groups[0] and groups[1]["lr"] == 1e-4
    assert {named[i] for i in _ids(groups[1])} == {n for n in named.values() if "lora_" in n}
    assert all(named[i].startswith("adapter.") for i in _ids(groups[0]))
    assert _ids(groups[0]) | _ids(groups[1]) == set(named)

    opt = torch.optim.AdamW(groups, lr=1e-3)  # the scheduler scales each group from its own lr
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4]


def test_without_lora_lr_one_group_holds_every_trainable_weight():
    m = tiny_speechlm("stack_mlp", lora=True)
    (group,) = param_groups(m, TrainConfig(lr=1e-3))
    assert _ids(group) == {id(p) for p in m.parameters() if p.requires_grad}


def test_lora_lr_without_lora_is_a_config_error():
    with pytest.raises(ConfigError, match="lora_lr"):
        param_groups(tiny_speechlm("stack_mlp"), TrainConfig(lora_lr=1e-4))


def test_lora_lr_must_be_positive():
    with pytest.raises(ConfigError, match="lora_lr"):
        TrainConfig(lora_lr=0.0).validate()
