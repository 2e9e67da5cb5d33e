"""model.adapter.voice_gender_loss: a head of its own on the voice token's inputs names the clip's
gender in training, its cross-entropy added to the distillation loss, and is refitted alone after
the last step (voice_gender_fit_epochs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
import torch

from speech_adapter.config import from_dict
from speech_adapter.errors import ConfigError
from speech_adapter.models.adapters import VoiceGenderHead
from speech_adapter.models.config import ModelConfig
from speech_adapter.models.speechlm import SpeechLM
from speech_adapter.train.config import TrainConfig
from speech_adapter.train.data import Rejects, TrainData, load_train_data, read_rows
from speech_adapter.train.loop import Trainer
from speech_adapter.train.objectives import compute_loss, voice_gender_loss
from tests.models.test_voice_features import low_and_high_voices, tiny_voice_model, voice


def gender_model(weight: float, seed: int = 0) -> SpeechLM:
    return tiny_voice_model("stack_mlp", seed=seed, timbre=True, gender_loss=weight)


def labelled(genders) -> list[dict]:
    exs = low_and_high_voices()
    return [dict(ex, gender=g) for ex, g in zip(exs, genders)]


def test_the_head_exists_only_when_weighted_and_keeps_logits_in_training_only():
    assert tiny_voice_model("stack_mlp", timbre=True).adapter.voice.gender is None
    m = gender_model(0.5)
    head = m.adapter.voice.gender
    assert isinstance(head, VoiceGenderHead) and len(head.members) == 5  # the default
    assert head.members[0][-1].out_features == 3  # male, female, none
    # a head of its own on the token's inputs: it shares no parameter with the token's MLP
    token_params = {id(p) for p in m.adapter.voice.mlp.parameters()}
    assert head.members[0][0].in_features == m.adapter.voice.mlp[0].in_features
    assert not token_params & {id(p) for p in head.parameters()}
    batch = m.processor.collate(labelled(["male", "female"]))
    m.train()
    m(batch)
    assert m.adapter.voice.last_gender_logits.shape == (2, 3)
    m.eval()
    with torch.no_grad():
        m(batch)
    assert m.adapter.voice.last_gender_logits is None  # inference keeps nothing


def test_the_loss_adds_the_weighted_cross_entropy_of_labelled_clips_only():
    m = gender_model(2.0)
    m.train()  # no dropout in the voice token here: a second pass gives the same head logits
    cfg = TrainConfig()
    exs = labelled(["male", None])  # the second clip has no gender (no speech, mixed speakers)
    loss, stats = compute_loss(m, exs, cfg)
    assert m.adapter.voice.last_gender_logits is None  # read and cleared
    with torch.no_grad():
        m(m.processor.collate(exs))
    logits = m.adapter.voice.last_gender_logits
    expected = 2.0 * torch.nn.functional.cross_entropy(logits[:1], torch.tensor([0]))  # "male" is class 0
    assert stats["voice_gender"] == pytest.approx(float(expected), rel=1e-4)
    assert float(loss.detach()) == pytest.approx(stats["ce"] + stats["voice_gender"], rel=1e-5)
    none, stats = compute_loss(m, labelled([None, None]), cfg)
    assert stats["voice_gender"] == 0.0 and float(none.detach()) == pytest.approx(stats["ce"], rel=1e-5)
    assert "voice_gender" not in compute_loss(gender_model(0.0), exs, cfg)[1]


def test_the_head_learns_gender_and_its_gradient_leaves_the_voice_token_alone():
    """Trained on the whole loss, only the voice token's parameters free: the auxiliary loss falls
    and the head tells the low voices from the high ones; the auxiliary loss alone sends no
    gradient into the token the LLM reads."""
    torch.manual_seed(0)
    m = gender_model(1.0)
    exs0 = [{"audio": voice(hz, 0.8, seed=i), "instruction": "Gender?", "response": "x",
             "gender": g} for i, (hz, g) in enumerate([(110, "male"), (230, "female")])]
    m.train()
    m(m.processor.collate(exs0))
    voice_gender_loss(m, exs0).backward()
    assert all(p.grad is None or not p.grad.any() for p in m.adapter.voice.mlp.parameters())
    assert any(p.grad is not None and p.grad.any() for p in m.adapter.voice.gender.parameters())
    m.zero_grad()
    before = [p.detach().clone() for p in m.adapter.voice.mlp.parameters()]
    opt = torch.optim.Adam(m.adapter.voice.parameters(), lr=3e-2)
    pitches = [100, 115, 125, 210, 230, 250]
    exs = [{"audio": voice(hz, 0.8, seed=i), "instruction": "Gender?", "response": "x",
            "gender": "male" if hz < 150 else "female"} for i, hz in enumerate(pitches)]
    m.train()
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss, stats = compute_loss(m, exs, TrainConfig())
        first = stats["voice_gender"] if first is None else first
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, m.adapter.voice.mlp.parameters()))
    with torch.no_grad():
        m(m.processor.collate(exs))
    assert m.adapter.voice.last_gender_logits.argmax(-1).tolist() == [0, 0, 0, 1, 1, 1]
    assert compute_loss(m, exs, TrainConfig())[1]["voice_gender"] < first / 4


def test_rows_carry_the_clip_gender_into_training_examples(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, voice(120, 0.5), 16000)
    rows = [{"id": "a/g", "audio": str(wav), "instruction": "q", "response": "r",
             "description_fields": {"gender": "Male"}},
            {"id": "b/g", "audio": str(wav), "instruction": "q", "response": "r", "meta": {"gender": "female"}},
            {"id": "c/g", "audio": str(wav), "instruction": "q", "response": "r",
             "description_fields": {"gender": "Mixed"}},
            {"id": "d/s", "audio": str(wav), "instruction": "q", "response": "r"},
            {"id": "e/s", "audio": str(wav), "instruction": "q", "response": "r", "meta": {"speech": False}},
            {"id": "f/s", "audio": str(wav), "instruction": "q", "response": "r",
             "description_fields": {"speech": "No"}}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read = read_rows(path, "self_distill", Rejects(None))
    assert [r["gender"] for r in read] == ["male", "female", None, None, "none", "none"]
    _, examples, _ = TrainData(read, TrainConfig()).load(list(range(6)))
    assert [ex["gender"] for ex in examples] == ["male", "female", None, None, "none", "none"]
    # model.voice_line's word in training is the label itself; no line without a gender
    assert [ex["voice"] for ex in examples] == ["male", "female", None, None, None, None]


def test_the_option_is_saved_loaded_and_checked(tmp_path):
    m = gender_model(0.7, seed=3)
    m.save_adapter(tmp_path / "ad")
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert again.config.adapter.voice_gender_loss == 0.7 and again.adapter.voice.gender is not None
    torch.testing.assert_close(again.adapter.voice.gender.members[4][0].weight,
                               m.adapter.voice.gender.members[4][0].weight)
    with pytest.raises(ConfigError, match="voice_gender_loss: needs voice_features"):
        from_dict(ModelConfig, {"adapter": {"voice_gender_loss": 1.0}}).validate()
    with pytest.raises(ConfigError, match="voice_gender_loss: must be >= 0"):
        from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_gender_loss": -1.0}}).validate()
    with pytest.raises(ConfigError, match="voice_gender_heads: must be >= 1"):
        from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_gender_heads": 0}}).validate()
    with pytest.raises(ConfigError, match="voice_gender_fit_epochs: must be >= 0"):
        from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_gender_fit_epochs": -1}}).validate()


def test_the_head_is_the_log_of_its_members_mean_probabilities():
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    three = VoiceGenderHead(6, 8, 3, members=3)
    mean = torch.stack([m(x).softmax(-1) for m in three.members]).mean(0)
    torch.testing.assert_close(three(x), mean.log())
    one = VoiceGenderHead(6, 8, 3, members=1)
    torch.testing.assert_close(one(x), one.members[0](x).log_softmax(-1))
    assert three(x).exp().sum(-1).allclose(torch.ones(4))  # softmax of the output is the mean


def test_the_pitch_view_averages_the_verdict_with_the_timbre_zeroed(tmp_path):
    m = gender_model(1.0, seed=2)
    voice = m.adapter.voice
    x = m.voice_inputs([ex["audio"] for ex in low_and_high_voices()])  # (2, 3 + D')
    assert x.shape[1] > 3
    with torch.no_grad():
        full, pitch_only = voice.gender(x).exp(), voice.gender(torch.cat([x[:, :3], 0 * x[:, 3:]], -1)).exp()
        assert not torch.allclose(full, pitch_only)  # the timbre changes the head's answer here
        torch.testing.assert_close(voice.gender_probabilities(x), full)  # off by default
        torch.testing.assert_close(m.voice_probabilities([ex["audio"] for ex in low_and_high_voices()]), full)
        voice.gender_pitch_view = 0.25
        torch.testing.assert_close(voice.gender_probabilities(x), 0.75 * full + 0.25 * pitch_only)
        voice.gender_pitch_view = 1.0
        torch.testing.assert_close(voice.gender_probabilities(x), pitch_only)
    # from the config, saved and loaded with the adapter
    m.config.adapter.voice_gender_pitch_view = 0.5
    m.save_adapter(tmp_path / "ad")
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert again.adapter.voice.gender_pitch_view == 0.5
    with torch.no_grad():
        torch.testing.assert_close(again.adapter.voice.gender_probabilities(x), 0.5 * full + 0.5 * pitch_only)
    with pytest.raises(ConfigError, match="voice_gender_pitch_view: must be in"):
        from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_gender_pitch_view": 1.5}}).validate()
    with pytest.raises(ConfigError, match="voice_gender_pitch_view: needs the voice gender head on a timbre"):
        from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_gender_loss": 1.0,
                                                                     "voice_gender_pitch_view": 0.5}}).validate()
    from_dict(ModelConfig, {"voice_features": True, "adapter": {"voice_gender_loss": 1.0, "voice_timbre": True,
                                                                 "voice_gender_pitch_view": 0.5}}).validate()


def clusters(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (3n, 3 + 5) in three clusters and their classes 0, 1, 2."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-1.0] * 8, [1.0] * 8, [0.0, 0.0, -2.0] + [0.0] * 5])
    x = torch.cat([c + 0.3 * torch.randn(n, 8, generator=g) for c in centres])
    return x, torch.arange(3).repeat_interleave(n)


def test_the_fit_learns_is_seeded_and_leaves_the_global_random_state_alone():
    x, y = clusters()
    a, b, c = (VoiceGenderHead(8, 16, 3, members=2) for _ in range(3))
    state = torch.get_rng_state()
    a.fit(x, y, epochs=20, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    b.fit(x, y, epochs=20, seed=0)
    c.fit(x, y, epochs=20, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.members[0][0].weight, c.members[0][0].weight)
    assert not torch.equal(a.members[0][0].weight, a.members[1][0].weight)  # members draw their own seeds
    held, labels = clusters(seed=1)
    assert not a.training and torch.equal(a(held).argmax(-1), labels)
    with pytest.raises(ValueError, match="want inputs"):
        a.fit(x, y[:-1], epochs=1, seed=0)


def write_voice_rows(root: Path, pitches: list[int]) -> Path:
    """Two rows per clip (the fit must read each clip once): a man's or a woman's pitch, with
    meta.gender; a last clip of noise with meta.speech false."""
    (root / "wav").mkdir(parents=True)
    rows = []
    for i, hz in enumerate(pitches):
        sf.write(root / "wav" / f"v{i}.wav", voice(hz, 0.6, seed=i), 16000)
        meta = {"gender": "male" if hz < 160 else "female"}
        rows += [{"id": f"v{i}/{k}", "audio": f"wav/v{i}.wav", "instruction": "Who speaks?", "response": "Someone.",
                  "meta": meta} for k in range(2)]
    sf.write(root / "wav" / "n.wav", 0.05 * torch.randn(9600, generator=torch.Generator().manual_seed(0)).numpy(),
             16000)
    rows.append({"id": "n/0", "audio": "wav/n.wav", "instruction": "Who speaks?", "response": "No one.",
                 "meta": {"speech": False}})
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def train_tiny(tmp_path, name: str, fit_epochs: int):
    path = write_voice_rows(tmp_path / name, [100, 115, 130, 210, 230, 250])
    model = gender_model(1.0)
    model.config.adapter.voice_gender_fit_epochs = fit_epochs
    cfg = TrainConfig(train_file=path, batch_size=4, max_steps=2, save_every=0, log_every=1, lr=1e-3)
    trainer = Trainer(model, cfg, tmp_path / name / "run", load_train_data(cfg, Rejects(None)))
    trainer.setup()
    try:
        assert trainer.train() == "done"
    finally:
        trainer.cleanup()
    metrics = [json.loads(line) for line in (tmp_path / name / "run" / "metrics.jsonl").read_text().splitlines()]
    return model, metrics


def test_training_refits_the_head_alone_after_the_last_step(tmp_path):
    model, metrics = train_tiny(tmp_path, "fit", fit_epochs=60)
    fitted = [m for m in metrics if "voice_head_clips" in m]
    assert len(fitted) == 1 and fitted[0]["voice_head_clips"] == 7  # 6 voices + the noise, each once
    assert fitted[0]["voice_head_train_accuracy"] > 0.8
    saved = SpeechLM.from_pretrained(tmp_path / "fit" / "run" / "adapter")
    torch.testing.assert_close(saved.adapter.voice.gender.members[0][0].weight,
                               model.adapter.voice.gender.members[0][0].weight)
    probs = saved.voice_probabilities([voice(105, 0.6, seed=9), voice(240, 0.6, seed=9)])
    assert probs.argmax(-1).tolist() == [0, 1]  # male, female
    joint, metrics = train_tiny(tmp_path, "joint", fit_epochs=0)
    assert not any("voice_head_clips" in m for m in metrics)
    # the adapter's other weights do not depend on the fit: it runs after the last step
    torch.testing.assert_close(joint.adapter.voice.mlp[0].weight, model.adapter.voice.mlp[0].weight)
    assert not torch.equal(joint.adapter.voice.gender.members[0][0].weight,
                           model.adapter.voice.gender.members[0][0].weight)
