"""SpeechLM on the real offline defaults (Whisper tiny.en + Qwen2.5-Coder-0.5B-Instruct). Slow."""

import numpy as np
import pytest
import torch

from speech_adapter.paths import OFFLINE_LLM, OFFLINE_WHISPER, offline_model_dir

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not all((offline_model_dir(r) / "config.json").exists() for r in (OFFLINE_WHISPER, OFFLINE_LLM)),
        reason="offline models not prepared (run: speech-adapter models prepare)"),
]


@pytest.fixture(scope="module")
def model():
    from speech_adapter.models.config import ModelConfig
    from speech_adapter.models.speechlm import SpeechLM

    torch.manual_seed(0)
    return SpeechLM.build(ModelConfig())


@pytest.fixture(scope="module")
def speech():
    import librosa

    from data_prep.espeak import synthesize

    wav, sr = synthesize("The quick brown fox jumps over the lazy dog.", voice="en-us")
    return librosa.resample(wav, orig_sr=sr, target_sr=16000).astype(np.float32)


def test_real_encoder_trims_and_transcribes(model, speech):
    from speech_adapter.models.encoder import transcribe

    states, lengths = model.encoder.encode([speech])
    assert states.shape == (1, 4, int(lengths[0]), 384)
    assert int(lengths[0]) == round(len(speech) / 16000 * 50) < 1500  # no 30 s padding
    text = transcribe(model.whisper, model.encoder.feature_extractor, model.processor.whisper_tokenizer, [speech])[0]
    assert "quick brown fox" in text.lower()


def test_real_generate_and_batch_independence(model, speech):
    exs = [{"audio": speech, "instruction": "What can you hear?", "response": "Someone speaking."},
           {"audio": None, "instruction": "What is 2+2?", "response": "4"}]
    with torch.no_grad():
        together = model(model.processor.collate(exs))
        alone = [model(model.processor.collate([e])) for e in exs]
    torch.testing.assert_close(together.logits, torch.cat([a.logits for a in alone]), atol=2e-3, rtol=2e-3)
    replies = model.generate(exs, max_new_tokens=12)
    assert len(replies) == 2 and all(r.strip() for r in replies)
    assert "4" in replies[1]  # the text-only row is the untouched backbone
