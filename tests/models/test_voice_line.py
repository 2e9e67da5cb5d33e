"""model.voice_line: the voice token's gender head's verdict as a line of the speech prompt (the
clip's label in training), so the frozen LLM reads the gender as text."""

from __future__ import annotations

import pytest
import torch

from speech_adapter.config import from_dict
from speech_adapter.errors import ConfigError
from speech_adapter.inference.api import Conversation
from speech_adapter.models.config import ModelConfig
from speech_adapter.models.processor import VOICES, voice_word
from speech_adapter.models.speechlm import SpeechLM
from speech_adapter.prompts import student_user_message
from tests.models.test_voice_features import tiny_voice_model, voice

LINE = "The speaker's voice is {voice}."


def line_model(seed: int = 0) -> SpeechLM:
    m = tiny_voice_model("stack_mlp", seed=seed, timbre=True, gender_loss=1.0)
    m.config.voice_line = LINE
    m.processor.voice_probabilities = m.voice_probabilities  # what SpeechLM.__init__ wires with the option
    return m


def force_head(m: SpeechLM, verdict: str) -> None:
    """Make the gender head say `verdict` for every clip (zero weights, a bias for that class)."""
    with torch.no_grad():
        for member in m.adapter.voice.gender.members:
            member[-1].weight.zero_()
            member[-1].bias.fill_(-5.0)
            member[-1].bias[VOICES.index(verdict)] = 5.0


def prompt_text(m: SpeechLM, batch: dict) -> str:
    ids = batch["input_ids"][0]
    return m.tokenizer.decode(ids[ids != m.placeholder_id])


def test_the_line_follows_the_transcript_line_and_is_left_out_without_a_voice():
    text = student_user_message("Who speaks?", "<A>", "hello", 'I heard: "{transcript}"', "female", LINE)
    assert text == "[Audio]\n<A>\nI heard: \"hello\"\nThe speaker's voice is female.\n\nWho speaks?"
    assert student_user_message("Q", "<A>", None, "{transcript}", "male", LINE) == \
        "[Audio]\n<A>\nThe speaker's voice is male.\n\nQ"
    assert student_user_message("Q", "<A>", "hi", "{transcript}", None, LINE) == "[Audio]\n<A>\nhi\n\nQ"


MERGED = 'I heard {person} say: "{transcript}"'


def test_a_line_with_the_transcript_takes_the_transcript_lines_place():
    """{person}: the teacher's words for the speaker; {transcript}: the line replaces the
    transcript line where there is a voice, and the transcript line stays where there is none."""
    plain = 'I heard someone say: "{transcript}"'
    assert student_user_message("Q", "<A>", "hi there", plain, "male", MERGED) == \
        '[Audio]\n<A>\nI heard a male speaker, a man, say: "hi there"\n\nQ'
    assert student_user_message("Q", "<A>", "hi", plain, "female", MERGED) == \
        '[Audio]\n<A>\nI heard a female speaker, a woman, say: "hi"\n\nQ'
    assert student_user_message("Q", "<A>", "hi", plain, None, MERGED) == '[Audio]\n<A>\nI heard someone say: "hi"\n\nQ'
    assert student_user_message("Q", "<A>", "hi", plain, "male", 'I heard {person} say: "{transcript}" The speaker is {voice}.') == \
        '[Audio]\n<A>\nI heard a male speaker, a man, say: "hi" The speaker is male.\n\nQ'
    assert student_user_message("Q", "<A>", "hi", plain, "male", "A {person} talks.") == \
        '[Audio]\n<A>\nI heard someone say: "hi"\nA a male speaker, a man, talks.\n\nQ'
    m = line_model()
    m.config.voice_line, m.config.use_transcript = MERGED, True
    force_head(m, "female")
    m.eval()
    text = prompt_text(m, m.processor.collate([{"audio": voice(220), "instruction": "Gender?", "transcript": "hi"}],
                                              padding="left"))
    assert 'I heard a female speaker, a woman, say: "hi"' in text and "someone" not in text


def test_training_examples_carry_their_label_and_never_ask_the_head():
    m = line_model()

    def no_head(clips):
        raise AssertionError("the head was asked for a training example's voice")

    m.processor.voice_probabilities = no_head
    ex = {"audio": voice(120), "instruction": "Gender?", "response": "Male.", "transcript": "hi", "voice": "male"}
    text = prompt_text(m, m.processor.collate([ex]))
    assert "The speaker's voice is male." in text
    unlabelled = dict(ex, voice=None)  # mixed speakers, no speech: no line
    assert "voice is" not in prompt_text(m, m.processor.collate([unlabelled]))


@pytest.mark.parametrize("verdict", ["male", "female", "none"])
def test_at_inference_the_line_says_the_heads_verdict(verdict):
    m = line_model()
    force_head(m, verdict)
    m.eval()
    ex = {"audio": voice(220), "instruction": "Gender?", "transcript": "hi"}
    text = prompt_text(m, m.processor.collate([ex], padding="left"))
    if verdict == "none":  # the head hears no speech: no line at all
        assert "voice is" not in text
    else:
        assert f"The speaker's voice is {verdict}." in text
    # a conversation turn reads the same verdict
    conv = Conversation(m)
    conv.add_audio(voice(220))
    assert m.processor.turn_voice(conv.pending) == (None if verdict == "none" else verdict)


def test_the_head_probabilities_decide_the_word_and_ignore_the_train_mode_dropout():
    m = line_model(seed=1)
    m.config.adapter.voice_timbre_dropout = 1.0
    clips = [voice(110), voice(240, 0.7, seed=2)]
    m.eval()
    probs = m.voice_probabilities(clips)
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(-1), torch.ones(2))
    m.train()  # asked in train mode (a trainer's eval pass): the same eval-mode verdict, the mode kept
    torch.testing.assert_close(m.voice_probabilities(clips), probs)
    assert m.training and m.adapter.training
    assert voice_word(torch.tensor([0.2, 0.7, 0.1])) == "female"
    assert voice_word(torch.tensor([0.3, 0.3, 0.4])) is None
    # a turn of several pieces: the mean of their probabilities
    expected = voice_word(probs.mean(0))
    assert m.processor.turn_voice([[clips[0]], [clips[1]]]) == expected


def test_the_option_is_checked_saved_and_loaded(tmp_path):
    base = {"voice_features": True, "adapter": {"voice_gender_loss": 1.0}}
    from_dict(ModelConfig, {**base, "voice_line": LINE}).validate()
    from_dict(ModelConfig, {**base, "use_transcript": True, "voice_line": MERGED}).validate()
    # both words, each once: the teacher's words and the bare gender after the transcript
    from_dict(ModelConfig, {**base, "use_transcript": True,
                            "voice_line": 'I heard {person} say: "{transcript}" The speaker is {voice}.'}).validate()
    for bad in ("no slot", "{voice} and {voice}", "two\nlines {voice}", "{person} {person} {voice}",
                "{person} {transcript} {transcript}"):
        with pytest.raises(ConfigError, match="voice_line: must be one line"):
            from_dict(ModelConfig, {**base, "voice_line": bad}).validate()
    with pytest.raises(ConfigError, match="voice_line: needs adapter.voice_gender_loss"):
        from_dict(ModelConfig, {"voice_features": True, "voice_line": LINE}).validate()
    with pytest.raises(ConfigError, match="needs use_transcript"):
        from_dict(ModelConfig, {**base, "use_transcript": False, "voice_line": MERGED}).validate()
    m = line_model(seed=2)
    m.save_adapter(tmp_path / "ad")
    again = SpeechLM.from_pretrained(tmp_path / "ad")
    assert again.config.voice_line == LINE
    assert again.processor.voice_probabilities is not None  # wired at build from the saved config
    clip = voice(200)
    torch.testing.assert_close(again.voice_probabilities([clip]), m.eval().voice_probabilities([clip]))


def test_without_the_option_the_prompt_is_unchanged():
    m = tiny_voice_model("stack_mlp", timbre=True, gender_loss=1.0)
    ex = {"audio": voice(120), "instruction": "Gender?", "response": "Male.", "transcript": "hi", "voice": "male"}
    assert "voice is" not in prompt_text(m, m.processor.collate([ex]))
    assert m.processor.turn_voice([[voice(120)]]) is None


def test_generation_hears_the_voice_even_when_an_example_carries_a_label(monkeypatch):
    m = line_model()
    force_head(m, "female")
    seen = []
    collate = m.processor.collate
    monkeypatch.setattr(m.processor, "collate", lambda exs, *a, **k: seen.append(
        prompt_text(m, batch := collate(exs, *a, **k))) or batch)
    m.generate([{"audio": voice(120), "instruction": "Gender?", "transcript": "hi", "voice": "male"}],
               max_new_tokens=1)
    assert "The speaker's voice is female." in seen[0] and "voice is male" not in seen[0]


def test_voice_line_dropout_leaves_a_fixed_share_of_training_rows_without_their_line():
    from speech_adapter.train.config import TrainConfig
    from speech_adapter.train.data import TrainData

    rows = [{"id": f"c{i}/gender", "audio": None, "task": "gender", "instruction": "q", "response": "a",
             "gender": ("male", "female", None)[i % 3]} for i in range(600)]
    full = TrainData(rows, TrainConfig(), check_audio=False)
    assert [full.voice(r) for r in full.rows] == [r["gender"] for r in rows]  # off: every label, no line without one
    cfg = TrainConfig(voice_line_dropout=0.3, seed=0)
    data = TrainData(rows, cfg, check_audio=False)
    voices = [data.voice(r) for r in data.rows]
    gendered = [v for v, r in zip(voices, rows) if r["gender"]]
    assert 0.22 < gendered.count(None) / len(gendered) < 0.38
    assert all(v in (None, r["gender"]) for v, r in zip(voices, rows))  # dropped, never another gender
    assert voices == [TrainData(rows, cfg, check_audio=False).voice(r) for r in rows]  # fixed on resume
    other = TrainData(rows, TrainConfig(voice_line_dropout=0.3, seed=1), check_audio=False)
    assert voices != [other.voice(r) for r in rows]
    with pytest.raises(ConfigError, match="voice_line_dropout"):
        TrainConfig(voice_line_dropout=-0.1).validate()
