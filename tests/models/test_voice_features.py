"""model.voice_features: a pyin pitch track beside Whisper's states and one voice token per clip."""

import json

import numpy as np
import pytest
import torch
import yaml

from speech_adapter.models.adapters import VoiceToken
from speech_adapter.models.config import ModelConfig
from speech_adapter.models.encoder import AudioEncoder, pitch_track
from speech_adapter.models.speechlm import SpeechLM
from speech_adapter.models.tiny import tiny_config, tiny_llm, tiny_whisper

SR = 16000
KINDS = ["qformer", "window_qformer", "stack_mlp"]


def voice(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone at `f0` with a little noise: a stand-in for a sustained vowel."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * 0.2
    return (x + np.random.default_rng(seed).standard_normal(t.size) * 0.005).astype(np.float32)


def tiny_voice_model(kind: str, seed: int = 0, words: list[str] | None = None, timbre: bool = False,
                     timbre_dropout: float = 0.0, channel_dropout: float = 0.0, timbre_gate: float = 0.0,
                     gender_loss: float = 0.0) -> SpeechLM:
    config = tiny_config(kind)
    config.adapter.voice_gender_loss = gender_loss
    config.voice_features, config.voice_words = True, list(words or [])
    config.adapter.voice_timbre, config.adapter.voice_timbre_dropout = timbre, timbre_dropout
    config.adapter.voice_timbre_channel_dropout, config.adapter.voice_timbre_gate = channel_dropout, timbre_gate
    whisper, fe, wtok = tiny_whisper()
    llm, tok = tiny_llm()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return SpeechLM(config, whisper, fe, llm, tok, whisper_tokenizer=wtok)


def low_and_high_voices() -> list[dict]:
    """A man's and a woman's pitch, of different lengths, as two training examples."""
    return [{"audio": voice(120, 1.0), "instruction": "Gender?", "response": "Male."},
            {"audio": voice(220, 0.6, seed=1), "instruction": "Gender?", "response": "Female."}]


def assert_batch_independent(m: SpeechLM, exs: list[dict]) -> None:
    """Each example's logits in a batch are those it gets alone."""
    with torch.no_grad():
        together = m.all_logits(m.processor.collate(exs)).logits
        for i, ex in enumerate(exs):
            alone = m.all_logits(m.processor.collate([ex])).logits
            torch.testing.assert_close(together[i, : alone.shape[1]], alone[0], atol=1e-4, rtol=1e-4)


def test_pitch_track_reads_f0_in_octaves_and_voicing():
    low, high = pitch_track(voice(120), 160, 100), pitch_track(voice(220), 160, 100)
    assert low.shape == high.shape == (2, 100)
    assert np.median(low[0]) == pytest.approx(np.log2(120 / 150), abs=0.03)
    assert np.median(high[0]) == pytest.approx(np.log2(220 / 150), abs=0.03)
    assert np.median(low[1]) > 0.5 and np.median(high[1]) > 0.5
    quiet = pitch_track(np.random.default_rng(1).standard_normal(SR).astype(np.float32) * 0.01, 160, 100)
    assert np.median(quiet[1]) < 0.1  # noise is not voiced
    assert pitch_track(voice(120, 0.05), 160, 5).shape == (2, 5)  # shorter than pyin's frame


def test_encoder_appends_the_track_at_its_frame_rate_and_clips_stay_batch_independent():
    model, fe, _ = tiny_whisper()
    plain = AudioEncoder(model.model.encoder, fe, [1, 2])
    enc = AudioEncoder(model.model.encoder, fe, [1, 2], voice=True)
    assert enc.dim == plain.dim + 2
    clips = [voice(120, 0.73), voice(220, 1.31, seed=1)]
    with torch.no_grad():
        states, lengths = enc.encode(clips)
        base, _ = plain.encode(clips)
        torch.testing.assert_close(states[..., :-2], base)  # Whisper's channels are untouched
        for i, c in enumerate(clips):
            alone, n = enc.encode([c])
            torch.testing.assert_close(states[i, :, : int(n[0])], alone[0], atol=1e-5, rtol=1e-5)
            assert torch.all(states[i, :, int(n[0]):] == 0)
    for i, f0 in enumerate((120, 220)):
        f = states[i, 0, : int(lengths[i]), -2]
        assert float(f.median()) == pytest.approx(np.log2(f0 / 150), abs=0.05)
        assert torch.equal(states[i, 0, :, -2:], states[i, 1, :, -2:])  # the same track on every tap


def test_a_long_clip_keeps_its_track_across_30s_windows():
    model, fe, _ = tiny_whisper()
    enc = AudioEncoder(model.model.encoder, fe, [1], voice=True)
    long = np.concatenate([voice(120, 29.0), voice(220, 2.5, seed=2)])
    with torch.no_grad():
        states, lengths = enc.encode([long])
    f = states[0, 0, : int(lengths[0]), -2]
    assert int(lengths[0]) > 1500
    assert float(f[100:1400].median()) == pytest.approx(np.log2(120 / 150), abs=0.05)
    assert float(f[-100:].median()) == pytest.approx(np.log2(220 / 150), abs=0.05)


def test_voice_statistics_weigh_voiced_frames_and_ignore_padding():
    states = torch.zeros(2, 1, 6, 4)
    states[0, 0, :, -2] = torch.tensor([1.0, 1.0, -1.0, 5.0, 5.0, 5.0])
    states[0, 0, :, -1] = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])  # frame 2 unvoiced
    stats = VoiceToken.statistics(states, torch.tensor([3, 6]))  # frames 3.. of clip 0 are padding
    assert stats[0].tolist() == pytest.approx([1.0, 0.0, 2 / 3], abs=1e-3)
    assert stats[1, 2] == 0  # nothing voiced: no voicing, finite statistics
    assert torch.isfinite(stats).all()


@pytest.mark.parametrize("kind", KINDS)
def test_one_more_token_per_clip_that_tells_low_from_high_voices(kind):
    m = tiny_voice_model(kind)
    plain = SpeechLM(tiny_config(kind), *tiny_whisper()[:2], *tiny_llm(), whisper_tokenizer=tiny_whisper()[2])
    n = 16000
    assert m.processor.num_audio_tokens(n) == plain.processor.num_audio_tokens(n) + 1
    exs = low_and_high_voices()
    batch = m.processor.collate(exs)
    states, lengths = m.encode_audio(batch)
    with torch.no_grad():
        out, n_tok = m.adapter(states, lengths)
    assert torch.equal(n_tok, m.adapter.num_tokens(lengths))
    assert not torch.allclose(out[0, 0], out[1, 0], atol=1e-3)  # the voice tokens differ
    loss = m.all_logits(batch).loss
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.adapter.voice.parameters())
    assert_batch_independent(m, exs)


def test_save_and_load_keep_the_voice_token(tmp_path):
    m = tiny_voice_model("stack_mlp", seed=1)
    with torch.no_grad():
        for p in m.adapter.voice.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    batch = m.processor.collate([{"audio": voice(150, 0.8), "instruction": "Who?", "response": "x"}])
    with torch.no_grad():
        ref = m.all_logits(batch).logits
    m.save_adapter(tmp_path / "ad")
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["model"]["voice_features"] is True
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert again.config.voice_features and again.encoder.voice
    with torch.no_grad():
        torch.testing.assert_close(again.all_logits(again.processor.collate(
            [{"audio": voice(150, 0.8), "instruction": "Who?", "response": "x"}])).logits, ref)


def test_an_adapter_saved_without_the_option_loads_without_it(tmp_path):
    from speech_adapter.models.tiny import tiny_speechlm

    tiny_speechlm("stack_mlp").save_adapter(tmp_path / "ad")
    raw = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    raw["model"].pop("voice_features")  # written before the option existed
    (tmp_path / "ad" / "adapter_config.json").write_text(json.dumps(raw))
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert not again.config.voice_features and again.adapter.voice is None
    assert ModelConfig().voice_features is False


def test_training_caches_voice_states_apart_from_plain_ones(tmp_path):
    from speech_adapter.cli import main
    from tests.train.train_fixtures import write_rows

    data = write_rows(tmp_path / "data", 4)
    for voice_on in (False, True):
        p = tmp_path / f"recipe{voice_on}.yaml"
        p.write_text(yaml.safe_dump({
            "name": "tiny", "output_dir": str(tmp_path / f"out{voice_on}"), "seed": 1,
            "model": {"encoder": "tiny:whisper", "llm": "tiny:llm", "voice_features": voice_on,
                      "adapter": {"kind": "stack_mlp", "stack_factor": 4, "mlp_hidden": 32}},
            "train": {"batch_size": 2, "cache_encoder": True, "max_steps": 2, "log_every": 1,
                      "cache_dir": str(tmp_path / "cache")},
        }))
        assert main(["train", str(p), "--train-file", str(data)]) == 0
    metas = [json.loads(f.read_text()) for f in (tmp_path / "cache").glob("*/encoder.json")]
    assert len(metas) == 2 and sorted(m.get("voice", False) for m in metas) == [False, True]
    adapter = SpeechLM.from_pretrained(tmp_path / "outTrue" / "train" / "adapter")
    assert adapter.adapter.voice is not None


@pytest.mark.parametrize("kind", KINDS)
def test_voice_words_make_the_token_a_mixture_of_the_words_own_embeddings(kind):
    m = tiny_voice_model(kind, words=[" male", " female"])
    table = m.causal_lm.get_input_embeddings().weight
    ids = [m.tokenizer(w, add_special_tokens=False)["input_ids"] for w in (" male", " female")]
    words = torch.stack([table[i].mean(0) for i in ids])
    torch.testing.assert_close(m.adapter.voice.words, words)
    exs = low_and_high_voices()
    batch = m.processor.collate(exs)
    states, lengths = m.encode_audio(batch)
    with torch.no_grad():
        token = m.adapter.voice(states, lengths)
        weights = m.adapter.voice.mixture(states, lengths)
    assert weights.shape == (2, 2) and torch.allclose(weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(token, weights @ words)  # inside the words' span, nowhere else
    assert not torch.allclose(weights[0], weights[1], atol=1e-4)  # a low and a high voice differ
    m.all_logits(batch).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.adapter.voice.parameters())
    assert not m.adapter.voice.words.requires_grad  # the words stay the LLM's


def test_voice_words_are_saved_loaded_and_validated(tmp_path):
    m = tiny_voice_model("stack_mlp", seed=3, words=[" man", " woman", " child"])
    m.save_adapter(tmp_path / "ad")
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert again.config.voice_words == [" man", " woman", " child"]
    torch.testing.assert_close(again.adapter.voice.words, m.adapter.voice.words)
    batch = m.processor.collate([{"audio": voice(150, 0.8), "instruction": "Who?", "response": "x"}])
    with torch.no_grad():
        torch.testing.assert_close(again.all_logits(batch).logits, m.all_logits(batch).logits)
    from speech_adapter.errors import ConfigError

    for bad in ({"voice_words": [" male", " female"]},  # without voice_features
                {"voice_features": True, "voice_words": [" male"]},
                {"voice_features": True, "voice_words": [" male", " male"]},
                {"voice_features": True, "voice_words": [" male", " "]}):
        with pytest.raises(ConfigError, match="voice_words"):
            ModelConfig(**bad).validate()


@pytest.mark.parametrize("kind", KINDS)
def test_voice_timbre_feeds_the_clip_averaged_standardized_whisper_channels(kind):
    """adapter.voice_timbre: the voice token reads the pitch statistics and the first tap's
    Whisper channels (standardized, pitch channels left out) averaged over the clip's frames;
    two clips of one pitch but different timbre get different tokens; padding changes nothing."""
    m = tiny_voice_model(kind, timbre=True)
    d = m.encoder.dim - 2
    assert m.adapter.voice.timbre_dim == d and m.adapter.voice.mlp[0].in_features == 3 + d
    with torch.no_grad():  # a fitted-looking norm, so standardizing is not the identity
        m.adapter.feature_norm.mean.normal_()
        m.adapter.feature_norm.std.uniform_(0.5, 2.0)
    states = torch.randn(2, m.adapter.feature_norm.mean.shape[0], 7, m.encoder.dim)
    lengths = torch.tensor([4, 7])
    normed = m.adapter.feature_norm(states)
    x = m.adapter.voice.inputs(states, lengths, normed)
    torch.testing.assert_close(x[:, :3], VoiceToken.statistics(states, lengths))
    torch.testing.assert_close(x[0, 3:], normed[0, 0, :4, :d].mean(0))  # frames 4.. are padding
    torch.testing.assert_close(x[1, 3:], normed[1, 0, :, :d].mean(0))
    with pytest.raises(ValueError, match="normed"):
        m.adapter.voice.inputs(states, lengths)
    same_pitch = states.clone()
    same_pitch[1, :, :, -2:] = states[0, :, :, -2:]
    same_pitch[1, :, 4:] = 0
    with torch.no_grad():
        out, _ = m.adapter(same_pitch, torch.tensor([4, 4]))
    assert not torch.allclose(out[0, 0], out[1, 0], atol=1e-4)  # the timbre alone tells them apart
    exs = low_and_high_voices()
    batch = m.processor.collate(exs)
    m.all_logits(batch).loss.backward()
    assert m.adapter.voice.mlp[0].weight.grad[:, 3:].abs().sum() > 0  # the timbre inputs learn
    assert_batch_independent(m, exs)


def test_voice_timbre_is_saved_loaded_and_needs_voice_features(tmp_path):
    from speech_adapter.errors import ConfigError

    m = tiny_voice_model("stack_mlp", seed=2, timbre=True)
    m.save_adapter(tmp_path / "ad")
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert again.config.adapter.voice_timbre and again.adapter.voice.timbre_dim == m.adapter.voice.timbre_dim
    batch = m.processor.collate([{"audio": voice(150, 0.8), "instruction": "Who?", "response": "x"}])
    with torch.no_grad():
        torch.testing.assert_close(again.all_logits(batch).logits, m.all_logits(batch).logits)
    from speech_adapter.config import from_dict

    with pytest.raises(ConfigError, match="voice_timbre: needs voice_features"):
        from_dict(ModelConfig, {"adapter": {"voice_timbre": True}}).validate()


def voice_inputs_eval_and_train(m: SpeechLM, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The voice token's inputs for `n` random clips in eval mode (`full`) and in train mode drawn
    under `seed` (`dropped`), checking that training leaves the pitch statistics alone and that eval
    mode reads the same inputs again afterwards."""
    states = torch.randn(n, m.adapter.feature_norm.mean.shape[0], 6, m.encoder.dim)
    lengths = torch.full((n,), 6)
    normed = m.adapter.feature_norm(states)
    m.eval()
    full = m.adapter.voice.inputs(states, lengths, normed)
    m.train()
    torch.manual_seed(seed)
    dropped = m.adapter.voice.inputs(states, lengths, normed)
    torch.testing.assert_close(dropped[:, :3], full[:, :3])  # the pitch statistics stay
    m.eval()
    torch.testing.assert_close(m.adapter.voice.inputs(states, lengths, normed), full)
    return full, dropped


def test_voice_timbre_dropout_zeroes_the_timbre_of_some_training_clips_only():
    """adapter.voice_timbre_dropout: in train mode a share of the clips' voice tokens read a zero
    timbre (the standardized training mean) with their pitch statistics unchanged; eval mode (and
    so inference) always reads the timbre."""
    m = tiny_voice_model("stack_mlp", timbre=True, timbre_dropout=0.5)
    assert m.adapter.voice.timbre_dropout == 0.5
    full, dropped = voice_inputs_eval_and_train(m, 400, seed=0)
    zero = (dropped[:, 3:] == 0).all(-1)
    torch.testing.assert_close(dropped[~zero], full[~zero])
    assert 140 < int(zero.sum()) < 260  # about half of 400
    assert (full[:, 3:] != 0).any(-1).all()  # nothing was zero before


def test_voice_timbre_dropout_is_saved_and_checked(tmp_path):
    from speech_adapter.config import from_dict
    from speech_adapter.errors import ConfigError

    m = tiny_voice_model("stack_mlp", seed=3, timbre=True, timbre_dropout=0.3, channel_dropout=0.9)
    m.save_adapter(tmp_path / "ad")
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert again.config.adapter.voice_timbre_dropout == 0.3 and again.adapter.voice.timbre_dropout == 0.3
    assert again.adapter.voice.channel_dropout == 0.9
    assert not again.training  # loaded for inference: the timbre is always read
    with pytest.raises(ConfigError, match="voice_timbre_dropout: needs adapter.voice_timbre"):
        from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_timbre_dropout": 0.5}}).validate()
    with pytest.raises(ConfigError, match="voice_timbre_dropout: must be in"):
        from_dict(ModelConfig, {"voice_features": True,
                                "adapter": {"voice_timbre": True, "voice_timbre_dropout": 1.5}}).validate()
    with pytest.raises(ConfigError, match="voice_timbre_channel_dropout: needs adapter.voice_timbre"):
        from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_timbre_channel_dropout": 0.5}}).validate()
    with pytest.raises(ConfigError, match="voice_timbre_channel_dropout: must be in"):
        from_dict(ModelConfig, {"voice_features": True,
                                "adapter": {"voice_timbre": True, "voice_timbre_channel_dropout": 1.0}}).validate()


def test_voice_timbre_channel_dropout_drops_single_channels_in_training_only():
    """adapter.voice_timbre_channel_dropout: in train mode single timbre channels are zeroed (the
    rest scaled by 1/(1-q), inverted dropout), the pitch statistics untouched; eval reads it whole."""
    m = tiny_voice_model("stack_mlp", timbre=True, channel_dropout=0.75)
    full, dropped = voice_inputs_eval_and_train(m, 50, seed=1)
    zero = dropped[:, 3:] == 0
    assert 0.6 < zero.float().mean() < 0.9  # about 3 in 4 channels
    assert zero.any(-1).all() and (~zero).any(-1).any()  # channels of a clip, not whole clips
    torch.testing.assert_close(dropped[:, 3:][~zero], 4 * full[:, 3:][~zero])


def pitch_states(hz: list[float], timbre: torch.Tensor, frames: int = 20) -> tuple:
    """States (B, 1, T, D' + 2) whose pitch channels hold a steady voiced `hz` per clip, and the
    standardized states `normed` whose first D' channels are each clip's `timbre` (B, D')."""
    b, d = timbre.shape
    states = torch.zeros(b, 1, frames, d + 2)
    states[:, 0, :, -2] = torch.log2(torch.tensor(hz) / 150.0)[:, None]
    states[:, 0, :, -1] = 1.0
    normed = torch.zeros_like(states)
    normed[:, 0, :, :d] = timbre[:, None]
    return states, torch.full((b,), frames), normed


def test_voice_timbre_gate_lets_timbre_move_the_token_only_near_the_overlap():
    """adapter.voice_timbre_gate: the timbre's weight is 1 at 150 Hz, exp(-1) at the gate's width
    in octaves, and next to nothing at a clearly male or female pitch, where two very different
    timbres give almost the same token; at 150 Hz they give clearly different ones."""
    torch.manual_seed(0)
    tok = VoiceToken(16, hidden=32, timbre_dim=6, timbre_gate=0.15).eval()
    gate = tok.gate(torch.log2(torch.tensor([150.0, 150 * 2 ** -0.15, 100.0, 260.0]) / 150))
    torch.testing.assert_close(gate[:2], torch.tensor([1.0, float(np.exp(-1))]))
    assert (gate[2:] < 1e-4).all()
    a, b = torch.randn(1, 6) * 3, torch.randn(1, 6) * 3
    for hz, moved in ((100.0, False), (260.0, False), (150.0, True)):
        with torch.no_grad():
            out_a, out_b = (tok(*pitch_states([hz], t)) for t in (a, b))
        change = float((out_a - out_b).norm() / out_a.norm())
        assert (change > 0.05) if moved else (change < 1e-3), (hz, change)
    with torch.no_grad():  # the pitch still moves the token where the timbre is shut out
        low, high = (tok(*pitch_states([hz], a)) for hz in (100.0, 260.0))
    assert float((low - high).norm() / low.norm()) > 0.05


def test_voice_timbre_gate_is_saved_and_checked(tmp_path):
    from speech_adapter.config import from_dict
    from speech_adapter.errors import ConfigError

    m = tiny_voice_model("stack_mlp", seed=3, timbre=True, timbre_gate=0.2)
    assert m.adapter.voice.pitch_mlp is not None and m.adapter.voice.timbre_gate == 0.2
    exs = low_and_high_voices()
    m.save_adapter(tmp_path / "ad")
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert again.config.adapter.voice_timbre_gate == 0.2 and again.adapter.voice.timbre_gate == 0.2
    m.eval()
    with torch.no_grad():
        torch.testing.assert_close(again.all_logits(again.processor.collate(exs)).logits,
                                   m.all_logits(m.processor.collate(exs)).logits)
    assert_batch_independent(again, exs)
    assert tiny_voice_model("stack_mlp", timbre=True).adapter.voice.pitch_mlp is None  # off: as before
    with pytest.raises(ConfigError, match="voice_timbre_gate: needs adapter.voice_timbre"):
        from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_timbre_gate": 0.15}}).validate()
    with pytest.raises(ConfigError, match="voice_timbre_gate: must be in"):
        from_dict(ModelConfig, {"voice_features": True,
                                "adapter": {"voice_timbre": True, "voice_timbre_gate": -0.1}}).validate()
