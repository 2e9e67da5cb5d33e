"""train.voice_only_tasks: rows of these tasks may train with the clip's Whisper channels masked,
leaving the pitch track and the voice token (modality dropout toward the voice)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speech_adapter.errors import ConfigError
from speech_adapter.models.encoder import PITCH_CHANNELS
from speech_adapter.models.tiny import tiny_speechlm
from speech_adapter.train.config import TrainConfig
from speech_adapter.train.data import TrainData
from speech_adapter.train.objectives import compute_loss, voice_only_states
from tests.models.test_voice_features import low_and_high_voices, tiny_voice_model, voice


def _data(cfg, n=400, task="gender"):
    rows = [{"id": f"c{i}/{task}", "audio": None, "task": task, "instruction": "q", "response": "a"}
            for i in range(n)]
    return TrainData(rows, cfg, check_audio=False)


def test_the_draw_is_the_fraction_of_the_listed_tasks_and_fixed_by_seed_and_row():
    cfg = TrainConfig(voice_only_tasks=["gender"], voice_only_fraction=0.3, seed=0)
    data = _data(cfg)
    drawn = [data.voice_only(r) for r in data.rows]
    assert 0.22 < sum(drawn) / len(drawn) < 0.38
    assert drawn == [_data(cfg).voice_only(r) for r in data.rows]  # the same rows on every epoch/resume
    other_seed = _data(TrainConfig(voice_only_tasks=["gender"], voice_only_fraction=0.3, seed=1))
    assert drawn != [other_seed.voice_only(r) for r in other_seed.rows]
    describe = _data(cfg, task="describe")
    assert not any(describe.voice_only(r) for r in describe.rows)  # not a listed task
    full = _data(TrainConfig(voice_only_tasks=["gender"], voice_only_fraction=1.0))
    assert all(full.voice_only(r) for r in full.rows)
    off = TrainData(data.rows, TrainConfig(voice_only_fraction=1.0), check_audio=False)
    assert not any(off.voice_only(r) for r in off.rows)  # no tasks listed


def test_fraction_outside_zero_one_is_a_config_error():
    with pytest.raises(ConfigError, match="voice_only_fraction"):
        TrainConfig(voice_only_fraction=1.5).validate()


def test_masked_clips_keep_only_their_pitch_and_reach_the_llm_alike():
    m = tiny_voice_model("stack_mlp")
    ex = {"audio": voice(120, 1.0), "instruction": "Gender?", "response": "Male."}
    noisy = dict(ex, audio=ex["audio"] + np.random.default_rng(3).standard_normal(16000).astype(np.float32) * 0.05)
    batch = m.processor.collate([ex, noisy])
    states, lengths = m.encode_audio(batch)
    with torch.no_grad():
        m.adapter.feature_norm.mean.normal_()  # a fitted mean, not zeros
    masked, _ = voice_only_states(m, (states, lengths), torch.tensor([True, False]))
    d = states.shape[-1] - PITCH_CHANNELS
    assert torch.equal(masked[1], states[1])  # the unmasked clip is untouched
    assert torch.equal(masked[0, ..., d:], states[0, ..., d:])  # its pitch channels stay
    assert torch.equal(masked[0, ..., :d], m.adapter.feature_norm.mean[:, None, :d].expand_as(states[0, ..., :d]))
    assert not torch.equal(states[0, ..., :d], masked[0, ..., :d])

    # two clips with the same pitch track and different Whisper states reach the LLM alike, masked
    twin = states[:1].repeat(2, 1, 1, 1)
    twin[1, ..., :d] = torch.randn_like(twin[1, ..., :d])
    twin_lengths = lengths[:1].repeat(2)
    both, _ = voice_only_states(m, (twin, twin_lengths), torch.tensor([True, True]))
    with torch.no_grad():
        out, _ = m.adapter(both, twin_lengths)
        plain, _ = m.adapter(twin, twin_lengths)
    torch.testing.assert_close(out[0], out[1])
    assert not torch.allclose(plain[0], plain[1], atol=1e-4)


def test_clip_average_keeps_each_clips_timbre_and_drops_the_order_of_its_frames():
    m = tiny_voice_model("stack_mlp", timbre=True)
    batch = m.processor.collate(low_and_high_voices())
    states, lengths = m.encode_audio(batch)
    d = states.shape[-1] - PITCH_CHANNELS
    kept, _ = voice_only_states(m, (states, lengths), torch.tensor([True, True]), keep="clip_average")
    for i in range(2):
        n = int(lengths[i])
        average = states[i, :, :n, :d].mean(1, keepdim=True)  # (L, 1, d): the valid frames only
        torch.testing.assert_close(kept[i, ..., :d], average.expand_as(kept[i, ..., :d]))
        assert torch.equal(kept[i, ..., d:], states[i, ..., d:])  # the pitch track stays
    assert not torch.allclose(kept[0, :, 0, :d], kept[1, :, 0, :d])  # each clip its own average
    with torch.no_grad():  # the voice token's timbre is the clip's, not the training mean's
        norm = m.adapter.feature_norm
        torch.testing.assert_close(m.adapter.voice.inputs(kept, lengths, norm(kept)),
                                   m.adapter.voice.inputs(states, lengths, norm(states)))

    # the same Whisper frames in another order (the pitch track as it was) reach the LLM alike
    # once averaged, not before
    n = int(lengths[0])
    shuffled = states[:1].clone()
    shuffled[0, :, :n, :d] = shuffled[0, :, torch.randperm(n, generator=torch.Generator().manual_seed(0)), :d]
    pair, pair_lengths = torch.cat([states[:1], shuffled]), lengths[:1].repeat(2)
    both, _ = voice_only_states(m, (pair, pair_lengths), torch.tensor([True, True]), keep="clip_average")
    with torch.no_grad():
        out, _ = m.adapter(both, pair_lengths)
        plain, _ = m.adapter(pair, pair_lengths)
    torch.testing.assert_close(out[0], out[1])
    assert not torch.allclose(plain[0], plain[1], atol=1e-4)
    with pytest.raises(ValueError, match="keep"):
        voice_only_states(m, (states, lengths), torch.tensor([True, False]), keep="zeros")


def test_compute_loss_passes_voice_only_keep():
    m = tiny_voice_model("stack_mlp")
    exs = [{"audio": voice(120, 1.0), "instruction": "Gender?", "response": "Male.", "voice_only": True},
           {"audio": voice(220, 0.8, seed=1), "instruction": "Gender?", "response": "Female."}]
    with torch.no_grad():
        m.adapter.feature_norm.mean.normal_()
        mean, _ = compute_loss(m, exs, TrainConfig(voice_only_keep="mean"))
        average, _ = compute_loss(m, exs, TrainConfig(voice_only_keep="clip_average"))
    assert not torch.equal(mean, average)


def test_compute_loss_masks_only_the_rows_drawn_voice_only():
    m = tiny_voice_model("stack_mlp")
    exs = [{"audio": voice(120, 1.0), "instruction": "Gender?", "response": "Male."},
           {"audio": voice(220, 0.8, seed=1), "instruction": "Gender?", "response": "Female."}]
    cfg = TrainConfig()
    with torch.no_grad():
        plain, _ = compute_loss(m, exs, cfg)
        flagged, _ = compute_loss(m, [dict(exs[0], voice_only=True), exs[1]], cfg)
        again, _ = compute_loss(m, [dict(e, voice_only=False) for e in exs], cfg)
    assert torch.equal(plain, again) and not torch.equal(plain, flagged)


def test_voice_only_without_voice_features_is_a_config_error():
    m = tiny_speechlm("stack_mlp")
    ex = {"audio": voice(120, 1.0), "instruction": "Gender?", "response": "Male.", "voice_only": True}
    with pytest.raises(ConfigError, match="voice_features"):
        compute_loss(m, [ex], TrainConfig())
