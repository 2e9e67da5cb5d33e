"""scripts/adapter_tokens.py: each audio token's nearest vocabulary tokens, voice token first."""

import numpy as np
import soundfile as sf
import torch

from speech_adapter.audio import load_audio
from tests.models.test_voice_features import tiny_voice_model
from tests.scripts_import import load_script


class _Constant(torch.nn.Module):
    timbre_dim = 0  # a VoiceToken without adapter.voice_timbre

    def __init__(self, v):
        super().__init__()
        self.v = torch.nn.Parameter(v.clone())

    def forward(self, states, lengths, normed=None):
        return self.v.expand(len(lengths), -1)


def _wav(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(str(path), (0.2 * np.sin(2 * np.pi * 200 * np.arange(16000) / 16000)).astype(np.float32), 16000)
    return path


def test_nearest_finds_the_row_a_vector_points_along():
    mod = load_script("adapter_tokens")
    sims, idx = mod.nearest(torch.tensor([[0.0, 0.0, 3.0, 0.0]]), torch.eye(4) + 0.1, 2)
    assert idx[0, 0] == 2 and sims[0, 0] > sims[0, 1]


def test_a_voice_token_on_a_words_embedding_reports_that_word(tmp_path):
    mod = load_script("adapter_tokens")
    model = tiny_voice_model("stack_mlp", seed=1)
    table = model.causal_lm.get_input_embeddings().weight.detach()
    word = 123
    model.adapter.voice = _Constant(table[word])  # the voice token: that word's direction, any clip
    model.adapter.output_norm = torch.nn.Identity()
    vectors = mod.audio_tokens(model, load_audio(str(_wav(tmp_path))))
    sims, idx = mod.nearest(vectors, table, 1)
    assert int(idx[0, 0]) == word and float(sims[0, 0]) > 0.999
    assert len(vectors) > 1  # the clip's own tokens follow the voice token


def test_writes_a_row_per_shown_position(tmp_path):
    mod = load_script("adapter_tokens")
    tiny_voice_model("stack_mlp", seed=2).save_adapter(tmp_path / "adapter")
    out = tmp_path / "tokens.md"
    assert mod.main([str(tmp_path / "adapter"), "--clips", str(_wav(tmp_path)), "--positions", "2",
                     "--out", str(out)]) == 0
    rows = [ln for ln in out.read_text().splitlines() if ln.startswith(f"| {_wav(tmp_path)}")]
    assert len(rows) == 2 and "(voice)" in rows[0] and "(voice)" not in rows[1]
