"""Text-only eval modes (text_ceiling, cascade) through CTranslate2 give the same greedy replies
and stop reasons as `SpeechLM.generate`; without a convertible backbone they fall back.

A tiny random Llama saved to tmp_path is the backbone (CTranslate2's converter reads it).
"""

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from speech_adapter.errors import ConfigError
from speech_adapter.eval.systems import BackboneText, speechlm_generate_fn

pytest.importorskip("ctranslate2")

MESSAGES = [[{"role": "system", "content": "You listen."}, {"role": "user", "content": "What can you hear?"}],
            [{"role": "user", "content": "[Audio]\nTranscript of the audio: hello\n\nDescribe the voice."}],
            [{"role": "user", "content": "Hi"}]]


@pytest.fixture
def tiny_lm(tmp_path, monkeypatch):
    from speech_adapter.models.speechlm import SpeechLM
    from speech_adapter.models.tiny import tiny_config, tiny_llm, tiny_whisper

    monkeypatch.setenv("SPEECH_ADAPTER_HOME", str(tmp_path / "home"))
    llm, tok = tiny_llm(hidden=64)
    # a random model never ends a reply: give end-of-turn a slightly stronger copy of the output
    # row of a token it does emit, so some replies end (on "eos") and others run to the limit
    enc = tok.apply_chat_template(MESSAGES[0], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    emitted = llm.generate(**enc, max_new_tokens=8, do_sample=False)[0, -4]
    with torch.no_grad():
        head = llm.get_output_embeddings().weight
        head[tok.convert_tokens_to_ids("<|im_end|>")] = 1.05 * head[emitted]
    d = tmp_path / "tiny-llm"
    llm.save_pretrained(d)
    tok.save_pretrained(d)
    whisper, fe, wtok = tiny_whisper()
    cfg = dataclasses.replace(tiny_config(adapter="stack_mlp"), llm=str(d))
    return SpeechLM(cfg, whisper, fe, llm, tok, wtok).eval()


def test_ct2_and_transformers_same_greedy_replies(tiny_lm):
    stops = set()
    for n in (2, 40):
        ct2 = BackboneText(tiny_lm, "ctranslate2", batch_size=2, repetition_penalty=1.0)(MESSAGES, n)
        hf = BackboneText(tiny_lm, "transformers", batch_size=2, repetition_penalty=1.0)(MESSAGES, n)
        assert ct2 == hf and any(text for text, _ in ct2)
        stops |= {stop for _, stop in ct2}
    assert stops == {"eos", "length"}


def test_generate_fn_routes_text_modes_through_ct2(tiny_lm, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    rows = [{"id": f"r{i}", "audio": str(wav), "description": "[00:00-00:01] Hi. (Gender: Female)",
             "instruction": q} for i, q in enumerate(["Gender?", "What was said?", "Describe it."])]
    fast = speechlm_generate_fn(tiny_lm, max_new_tokens=10, batch_size=2, text_backend="ctranslate2",
                                repetition_penalty=1.0)
    slow = speechlm_generate_fn(tiny_lm, max_new_tokens=10, batch_size=2, text_backend="transformers",
                                repetition_penalty=1.0)
    for mode in ("text_ceiling", "cascade"):
        assert fast(rows, mode) == slow(rows, mode)


def test_auto_falls_back_without_a_convertible_backbone(capsys):
    from speech_adapter.models.tiny import tiny_speechlm

    lm = tiny_speechlm()  # tiny:llm has no model dir to convert
    auto = BackboneText(lm, "auto", repetition_penalty=1.0)
    assert len(auto(MESSAGES[:1], 3)) == 1 and auto.backend == "transformers"
    assert "through transformers" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="CTranslate2 converts a model dir"):
        BackboneText(lm, "ctranslate2", repetition_penalty=1.0)(MESSAGES[:1], 3)


def test_a_repetition_penalty_keeps_text_modes_on_the_speech_models_decoder(tiny_lm):
    auto = BackboneText(tiny_lm, "auto", batch_size=2)  # the default penalty, 1.1
    hf = BackboneText(tiny_lm, "transformers", batch_size=2)
    assert auto(MESSAGES, 12) == hf(MESSAGES, 12) and auto.backend == "transformers"
    with pytest.raises(ConfigError, match="repetition penalty"):
        BackboneText(tiny_lm, "ctranslate2", batch_size=2)(MESSAGES, 4)
