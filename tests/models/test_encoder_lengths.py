"""models/encoder.py: variable-length Whisper without 30 s padding, tapped layers, transcribe."""

import numpy as np
import pytest
import torch

from speech_adapter.errors import AudioError
from speech_adapter.models.encoder import AudioEncoder, transcribe
from speech_adapter.models.tiny import tiny_whisper

SR = 16000


@pytest.fixture(scope="module")
def whisper():
    return tiny_whisper()


def _enc(whisper, layers=(1, 2)):
    model, fe, _ = whisper
    return AudioEncoder(model.model.encoder, fe, list(layers))


def _clip(seconds, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(seconds * SR)) * 0.1).astype(np.float32)


def test_output_length_grows_with_input_and_is_not_padded(whisper):
    enc = _enc(whisper)
    lens = []
    for s in (0.5, 1.0, 2.0):
        states, n = enc.encode([_clip(s)])
        assert states.shape[:2] == (1, 2) and states.shape[-1] == 32
        assert states.shape[2] == int(n[0]) == s * 50  # 50 frames a second, never 1500
        lens.append(int(n[0]))
    assert lens == sorted(lens) and lens[0] < lens[-1] < 1500


def test_matches_hf_encoder_on_a_full_30s_window(whisper):
    model, fe, _ = whisper
    enc = _enc(whisper, layers=[1, 2])
    wav = _clip(30.0)
    feats = fe(wav, sampling_rate=SR, return_tensors="pt").input_features  # (1, 80, 3000)
    with torch.no_grad():
        ref = model.model.encoder(feats, output_hidden_states=True)
        states, n = enc(feats, torch.tensor([3000]))
    assert int(n[0]) == 1500
    torch.testing.assert_close(states[0, -1], ref.last_hidden_state[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(states[0, 0], ref.hidden_states[1][0], atol=1e-4, rtol=1e-4)


def test_batch_of_mixed_lengths_equals_each_clip_alone(whisper):
    enc = _enc(whisper)
    clips = [_clip(0.73, 1), _clip(2.0, 2), _clip(1.31, 3)]
    with torch.no_grad():
        states, lengths = enc.encode(clips)
        for i, c in enumerate(clips):
            alone, n = enc.encode([c])
            assert int(lengths[i]) == int(n[0])
            torch.testing.assert_close(states[i, :, : int(n[0])], alone[0], atol=1e-5, rtol=1e-5)
            assert torch.all(states[i, :, int(n[0]):] == 0)


def test_clips_over_30s_are_encoded_in_windows_and_joined(whisper):
    enc = _enc(whisper)
    long = _clip(31.3, 4)
    with torch.no_grad():
        states, lengths = enc.encode([long, _clip(0.5)])
        feats, mel = enc.features([long])
        head, _ = enc(feats[..., :3000], torch.tensor([3000]))
        tail, n_tail = enc(feats[..., 3000:], mel - 3000)
    assert int(lengths[0]) == 1500 + int(n_tail[0]) == enc.output_length(enc.mel_length(long.size))
    assert int(lengths[1]) == 25
    torch.testing.assert_close(states[0, :, :1500], head[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(states[0, :, 1500:int(lengths[0])], tail[0], atol=1e-5, rtol=1e-5)


def test_too_long_and_too_short_clips_are_refused(whisper):
    enc = _enc(whisper)
    enc.max_seconds = 20.0
    with pytest.raises(AudioError, match="max_audio_seconds=20"):
        enc.features([_clip(20.5)])
    with pytest.raises(AudioError, match="too short"):
        enc.features([np.zeros(100, np.float32)])


def test_transcribe_returns_one_string_per_clip(whisper):
    model, fe, tok = whisper
    out = transcribe(model, fe, tok, [_clip(0.5), _clip(1.0, 1), _clip(0.7, 2)], batch_size=2, max_new_tokens=4)
    assert len(out) == 3 and all(isinstance(t, str) for t in out)
