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

    def ce(lg, lb):
        return O.response_ce(*O.targets_from_all(lg, lb))

    base = ce(logits, labels)
    # the same CE by hand: logits[t] predicts labels[t+1]
    lp = torch.log_softmax(logits, -1)
    terms = [-lp[b, t - 1, labels[b, t]] for b in range(2) for t in range(1, 8) if labels[b, t] != -100]
    assert torch.allclose(base, torch.stack(terms).mean())
    # changing what a prompt (or padding) position predicts changes nothing...
    other = logits.clone()
    other[0, :4] = torch.randn(4, V) * 10  # positions 0..3 predict prompt tokens 1..4
    other[1, 5:] = 99.0  # padding
    assert torch.equal(ce(other, labels), base)
    # ...nor does the prompt token's own id; a response logit does
    relabel = labels.clone()
    relabel[0, 2] = -100
    assert torch.equal(ce(logits, relabel), base)
    other[0, 5, 2] += 5.0
    assert not torch.allclose(ce(other, labels), base)


def test_kl_zero_for_identical_distributions_despite_different_prompts():
    torch.manual_seed(1)
    resp = [3, 7, 2]
    s_all, s_lab = torch.randn(1, 9, V), _labels(6, resp)[None]  # student: long audio prompt
    t_all, t_lab = torch.randn(1, 9, V), _labels(2, resp, pad=4)[None]  # teacher: short text prompt
    t_all[0, 1:4] = s_all[0, 5:8]  # the response-predicting positions agree
    (s, s_t), (t, t_t) = O.targets_from_all(s_all, s_lab), O.targets_from_all(t_all, t_lab)
    assert torch.equal(s_t, t_t)
    assert O.kl_loss(s, t).abs() < 1e-6
    s_all[0, 6] += torch.randn(V)
    s, _ = O.targets_from_all(s_all, s_lab)
    kl = O.kl_loss(s, t, temperature=2.0)
    s2, t2 = s_all[0, 5:8] / 2, t_all[0, 1:4] / 2
    ref = (t2.softmax(-1) * (t2.log_softmax(-1) - s2.log_softmax(-1))).sum(-1).mean() * 4
    assert kl > 0 and torch.allclose(kl, ref, atol=1e-6)
    keep = torch.tensor([True, False, True])  # the perturbed token (k=1) filtered out: zero again
    assert O.kl_loss(s, t, 2.0, keep).abs() < 1e-6


@pytest.mark.parametrize("n,p", [(10, 0.2), (10, 0.0), (7, 0.5), (3, 0.2)])
def test_hard_token_filter_drops_lowest(n, p):
    import math

    torch.manual_seed(n)
    lp = -torch.rand(n)
    keep = O.hard_token_keep(lp, p)
    dropped = math.floor(p * n)
    assert int((~keep).sum()) == dropped
    assert torch.equal(lp[~keep].sort().values, lp.sort().values[:dropped])


def test_compute_loss_hard_filter_counts_tokens():
    from speech_adapter.models.tiny import tiny_speechlm
    from tests.train.train_fixtures import RESPONSES
    import numpy as np

    model = tiny_speechlm()
    ex = [{"audio": np.zeros(8000, np.float32) + 0.1, "instruction": "Hi?", "response": r,
           "description": "A tone."} for r in RESPONSES[:2]]
    full, s_full = O.compute_loss(model, ex, TrainConfig())
    with torch.no_grad():
        batch = model.processor.collate(ex)
        out = model.all_logits(batch)  # the model's own masked CE over all logits
    lg, lb = O.targets_from_all(out.logits, batch["labels"])
    assert torch.allclose(full, out.loss, atol=1e-5) and torch.allclose(full, O.response_ce(lg, lb), atol=1e-5)
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
    b = model.processor.collate([ex])
    targets = b["labels"][0][b["labels"][0] != -100].tolist()
    assert targets == model.tokenizer("ok", add_special_tokens=False).input_ids + [model.eot_id]
    assert (b["labels"][b["input_ids"] == model.placeholder_id] == -100).all()


def test_teacher_mode_disables_lora():
    from speech_adapter.models.tiny import tiny_speechlm

    model = tiny_speechlm(lora=True)
    ex = [{"audio": None, "instruction": "Hi?", "response": "ok", "description": "A tone."}]
    batch = model.processor.collate(ex, mode="text")
    with torch.no_grad():
        base = model.all_logits(batch).logits  # LoRA B starts at zero: equals the frozen backbone
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.add_(0.5)
        moved = model.all_logits(batch).logits
    with O.teacher_mode(model):
        teacher = model.all_logits(batch).logits
    assert not torch.allclose(moved, base)
    assert torch.allclose(teacher, base, atol=1e-6)
    assert model.training  # restored


def test_row_average_weighs_a_one_word_answer_like_a_long_one():
    from speech_adapter.models.tiny import tiny_speechlm
    import numpy as np

    model = tiny_speechlm()
    ex = [{"audio": np.zeros(8000, np.float32) + 0.1, "instruction": "Hi?", "response": r}
          for r in ("Female.", "A calm voice reads a long sentence about the weather in the city today.")]
    row, _ = O.compute_loss(model, ex, TrainConfig(loss_average="row"))
    token, _ = O.compute_loss(model, ex, TrainConfig())
    with torch.no_grad():
        per_row = [O.compute_loss(model, [e], TrainConfig())[0] for e in ex]  # each row's own mean
    assert torch.allclose(row, (per_row[0] + per_row[1]) / 2, atol=1e-5)
    assert not torch.allclose(row, token, atol=1e-4)  # token averaging is dominated by the long row
    labels = model.processor.collate(ex)["labels"]
    w = O.row_weights(labels)
    counts = (labels[:, 1:] != O.IGNORE).sum(1)
    assert torch.allclose(w.sum(), torch.tensor(2.0)) and w.numel() == int(counts.sum())
    kl, _ = O.compute_loss(model, ex, TrainConfig(objective="kl_distill", loss_average="row"))
    assert torch.isfinite(kl)


def test_loss_average_is_validated():
    from speech_adapter.config import from_dict
    from speech_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="loss_average"):
        from_dict(TrainConfig, {"loss_average": "sample"}, prefix="train")


def test_key_words_mark_only_their_own_tokens():
    from speech_adapter.models.tiny import tiny_speechlm
    import numpy as np

    model = tiny_speechlm()
    resp = "A man? No: the Woman speaks, her voice is calm."
    ex = {"audio": np.full(8000, 0.1, np.float32), "instruction": "Hi?", "response": resp,
          "key_words": ["female", "woman", "her"]}
    b = model.processor.collate([ex])
    targets = b["labels"][0] != -100
    marked = b["key_mask"][0][targets].tolist()[:-1]  # the end-of-turn token is never a key
    ids = model.tokenizer(resp, add_special_tokens=False, return_offsets_mapping=True)
    text = "".join(resp[a:e] for (a, e), k in zip(ids["offset_mapping"], marked) if k)
    assert text == "Womanher"  # whole words, any case; "man" and "voice"'s letters untouched
    assert not b["key_mask"][~(b["labels"] != -100)].any()  # never a prompt position
    assert "key_mask" not in model.processor.collate([dict(ex, key_words=None)])


def test_key_word_weight_shifts_a_rows_weight_onto_its_key_tokens():
    from speech_adapter.models.tiny import tiny_speechlm
    import numpy as np

    model = tiny_speechlm()
    ex = [{"audio": np.full(8000, 0.1, np.float32), "instruction": "Hi?", "response": r, "key_words": k}
          for r, k in (("The speaker is a woman.", ["woman"]), ("Yes.", None))]
    batch = model.processor.collate(ex)
    with torch.no_grad():
        _, logits, labels = O._out(model(batch))
        ce = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        key = batch["key_mask"][:, 1:][batch["labels"][:, 1:] != -100]
        row = torch.tensor([0] * int((batch["labels"][0] != -100).sum()) + [1] * int((batch["labels"][1] != -100).sum()))
        by_hand = []
        for r in (0, 1):
            w = torch.where(key[row == r], 5.0, 1.0)
            by_hand.append((ce[row == r] * w).sum() / w.sum())
        loss, _ = O.compute_loss(model, ex, TrainConfig(loss_average="row", key_word_weight=5.0))
        plain, _ = O.compute_loss(model, ex, TrainConfig(loss_average="row"))
        token, _ = O.compute_loss(model, ex, TrainConfig(key_word_weight=5.0))
    assert key.sum() == len("woman")
    assert torch.allclose(loss, (by_hand[0] + by_hand[1]) / 2, atol=1e-5)  # each row still weighs the same
    assert not torch.allclose(loss, plain, atol=1e-4)
    w = torch.where(key, 5.0, 1.0)
    assert torch.allclose(token, (ce * w).sum() / w.sum(), atol=1e-5)


def test_key_word_weight_is_validated():
    from speech_adapter.config import from_dict
    from speech_adapter.errors import ConfigError

    with pytest.raises(ConfigError, match="key_word_weight"):
        from_dict(TrainConfig, {"key_word_weight": 0}, prefix="train").validate()
