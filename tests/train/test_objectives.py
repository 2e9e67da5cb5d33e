"""tests for speech_adapter/train/objectives.py: CE masking, KL alignment, hard-token filter."""

import pytest
import torch

from speech_adapter.train import objectives as O
from speech_adapter.train.config import TrainConfig

V = 11  # vocab of the raw-tensor tests


def _labels(prompt_len: int, response: list[int], pad: int = 0) -> torch.Tensor:
    return torch.tensor([-100] * prompt_len + response + [-100] * pad)


def test_ce_ignores_prompt_positions():
    torch.manual_seed(0)
    labels = torch.stack([_labels(5, [1, 2, 3]), _labels(3, [4, 5, 6], pad=2)])  # (2, 8)
    logits = torch.randn(2, 8, V)
    base = O.response_ce(logits, labels)
    # the same CE by hand: logits[t] predicts labels[t+1]
    lp = torch.log_softmax(logits, -1)
    terms = [-lp[b, t - 1, labels[b, t]] for b in range(2) for t in range(1, 8) if labels[b, t] != -100]
    assert torch.allclose(base, torch.stack(terms).mean())
    # changing what a prompt position predicts changes nothing...
    other = logits.clone()
    other[0, :4] = torch.randn(4, V) * 10  # positions 0..3 predict prompt tokens 1..4
    other[1, 5:] = 99.0  # padding
    assert torch.equal(O.response_ce(other, labels), base)
    # ...changing a prompt token's label (still ignored) changes nothing, a response logit does
    assert torch.equal(O.response_ce(logits, labels.clone().index_put_((torch.tensor([0]), torch.tensor([2])),
                                                                          torch.tensor(-100))), base)
    other[0, 5, 2] += 5.0
    assert not torch.allclose(O.response_ce(other, labels), base)


def test_kl_zero_for_identical_distributions_despite_different_prompts():
    torch.manual_seed(1)
    resp = [3, 7, 2]
    s_labels = _labels(6, resp)[None]  # student: long audio prompt
    t_labels = _labels(2, resp, pad=4)[None]  # teacher: short text prompt, padded
    s_logits = torch.randn(1, 9, V)
    t_logits = torch.randn(1, 9, V)
    t_logits[0, 1:4] = s_logits[0, 5:8]  # the response-predicting positions agree
    assert O.kl_loss(s_logits, s_labels, t_logits, t_labels).abs() < 1e-6
    s_logits[0, 6] += torch.randn(V)
    kl = O.kl_loss(s_logits, s_labels, t_logits, t_labels, temperature=2.0)
    s, t = s_logits[0, 5:8] / 2, t_logits[0, 1:4] / 2
    ref = (t.softmax(-1) * (t.log_softmax(-1) - s.log_softmax(-1))).sum(-1).mean() * 4
    assert kl > 0 and torch.allclose(kl, ref, atol=1e-6)


def test_kl_refuses_misaligned_responses():
    logits = torch.randn(1, 5, V)
    with pytest.raises(ValueError, match="different response tokens"):
        O.kl_loss(logits, _labels(2, [1, 2, 3])[None], logits, _labels(2, [1, 2, 4])[None])


@pytest.mark.parametrize("n,p,dropped", [(10, 0.2, 2), (10, 0.0, 0), (7, 0.5, 3), (3, 0.2, 0)])
def test_hard_token_filter_drops_lowest(n, p, dropped):
    torch.manual_seed(n)
    lp = -torch.rand(2, n)  # (B, T-1)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, n // 2:] = False  # padding never counts nor gets picked
    keep = O.hard_token_keep(lp, mask, p)
    total = int(mask.sum())
    import math
    assert int((mask & ~keep).sum()) == math.floor(p * total)
    assert not (keep & ~mask).any()
    if dropped:
        worst = lp[mask].sort().values[: math.floor(p * total)]
        assert torch.equal(lp[mask & ~keep].sort().values, worst)


def test_compute_loss_hard_filter_counts_tokens():
    from speech_adapter.models.tiny import tiny_speechlm
    from tests.train.train_fixtures import RESPONSES
    import numpy as np

    model = tiny_speechlm()
    ex = [{"audio": np.zeros(8000, np.float32) + 0.1, "instruction": "Hi?", "response": r,
           "description": "A tone."} for r in RESPONSES[:2]]
    full, s_full = O.compute_loss(model, ex, TrainConfig())
    half, s_half = O.compute_loss(model, ex, TrainConfig(hard_token_filter=0.5))
    assert s_half["tokens"] == s_full["tokens"] - s_full["tokens"] // 2
    assert not torch.allclose(full, half)
    kl, s_kl = O.compute_loss(model, ex, TrainConfig(objective="kl_distill", ce_weight=0.5))
    assert kl > 0 and {"kl", "ce"} <= set(s_kl)
    kl.backward()
    assert all(p.grad is not None for p in model.adapter.parameters() if p.requires_grad)


def test_collate_masks_prompt_and_audio_positions():
    from speech_adapter.models.tiny import tiny_speechlm
    import numpy as np

    model = tiny_speechlm()
    ex = {"audio": np.full(8000, 0.1, np.float32), "instruction": "Hi?", "response": "ok"}
    b = model.collate([ex])
    targets = b["labels"][0][b["labels"][0] != -100].tolist()
    assert targets == model.tokenizer("ok", add_special_tokens=False).input_ids + [model.eot_id]
    assert (b["labels"][b["input_ids"] == model.placeholder_id] == -100).all()


def test_teacher_mode_disables_lora():
    from speech_adapter.models.tiny import tiny_speechlm

    model = tiny_speechlm(lora=True)
    ex = [{"audio": None, "instruction": "Hi?", "response": "ok", "description": "A tone."}]
    batch = model.collate(ex, mode="text")
    with torch.no_grad():
        base = model(batch).logits  # LoRA B starts at zero: equals the frozen backbone
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
        moved = model(batch).logits
    with O.teacher_mode(model):
        teacher = model(batch).logits
    assert not torch.allclose(moved, base)
    assert torch.allclose(teacher, base, atol=1e-6)
    assert model.training  # restored
