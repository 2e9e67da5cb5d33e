"""Slow tests on the real packages: the converted models behave exactly like their sources.

(a) converted Whisper tiny.en vs the CTranslate2 runtime on the original model.bin: the same
    greedy tokens on espeak-ng speech; (b) its WER on that speech; (c) converted SmolLM2 vs the
    GGUF file loaded by transformers: the same greedy continuation of a chat prompt.
"""

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "It is a beautiful day to go for a walk in the park.",
    "Please remember to turn off the lights when you leave the room.",
    "We will meet at the train station at nine in the morning.",
]
SOT, NO_TIMESTAMPS = 50257, 50362
WER_BOUND = 0.35  # tiny.en measured 0.11-0.13 on these four default-voice sentences; a broken mapping gives ~1.0


@pytest.fixture(scope="module")
def speech():
    import librosa

    from data_prep.espeak import synthesize

    clips = []
    for text in SENTENCES:
        audio, sr = synthesize(text)  # default voice en-us, 22050 Hz
        clips.append(librosa.resample(audio, orig_sr=sr, target_sr=16000).astype(np.float32))
    return clips


@pytest.fixture(scope="module")
def hf_transcripts(offline_dirs, speech):
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    d = offline_dirs["whisper"]
    fe, tok = WhisperFeatureExtractor.from_pretrained(d), WhisperTokenizer.from_pretrained(d)
    model = WhisperForConditionalGeneration.from_pretrained(d).eval()
    feats = fe(speech, sampling_rate=16000, return_tensors="pt").input_features  # [B, 80, 3000]
    with torch.no_grad():
        out = model.generate(feats, max_new_tokens=64, do_sample=False, num_beams=1)
    ids = [[t for t in row.tolist() if t < tok.eos_token_id] for row in out]  # text tokens only
    return feats, ids, [tok.decode(i, skip_special_tokens=True).strip() for i in ids]


def test_converted_whisper_gives_the_same_tokens_as_ctranslate2(offline_dirs, hf_transcripts):
    import ctranslate2  # a dev dependency: the reference runtime for model.bin
    feats, hf_ids, _ = hf_transcripts
    ct = ctranslate2.models.Whisper(str(offline_dirs["whisper_src"]), device="cpu", intra_threads=1)
    res = ct.generate(ctranslate2.StorageView.from_array(feats.numpy()), [[SOT, NO_TIMESTAMPS]] * len(feats),
                      beam_size=1, max_length=66)
    ct_ids = [r.sequences_ids[0] for r in res]
    assert all(len(i) > 5 for i in hf_ids)
    assert hf_ids == ct_ids


def test_converted_whisper_transcribes_espeak_speech(hf_transcripts):
    import jiwer

    from speech_adapter.eval.scoring import normalize

    _, _, texts = hf_transcripts
    wer = jiwer.wer([normalize(s) for s in SENTENCES], [normalize(t) for t in texts])
    print(f"\ntiny.en WER on {len(SENTENCES)} espeak en-us sentences: {wer:.3f}; {texts}")
    assert wer < WER_BOUND


def test_converted_llm_continues_like_the_gguf(offline_dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(offline_dirs["llm"])
    assert "<|im_start|>" in tok.chat_template
    msgs = [{"role": "user", "content": "Name three colors of the rainbow."}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gguf = offline_dirs["gguf"]
    outs = []
    for model in (AutoModelForCausalLM.from_pretrained(offline_dirs["llm"]),
                  AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)):
        with torch.no_grad():
            outs.append(model.eval().generate(**inputs, max_new_tokens=24, do_sample=False)[0].tolist())
        del model
    n = inputs["input_ids"].shape[1]
    assert len(outs[0]) > n + 4
    assert outs[0] == outs[1]
    assert tok.decode(outs[0][n:], skip_special_tokens=True).strip()


def test_whisper_base_transcribes_espeak_speech(offline_dirs, speech):
    import jiwer
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperTokenizer

    from speech_adapter.eval.scoring import normalize
    from speech_adapter.models.encoder import transcribe

    d = offline_dirs["whisper_base"]
    model = WhisperForConditionalGeneration.from_pretrained(d).eval()
    assert model.config.d_model == 512 and model.config.vocab_size >= 51865  # multilingual base
    texts = transcribe(model, WhisperFeatureExtractor.from_pretrained(d), WhisperTokenizer.from_pretrained(d), speech)
    wer = jiwer.wer([normalize(s) for s in SENTENCES], [normalize(t) for t in texts])
    print(f"\nbase WER on {len(SENTENCES)} espeak en-us sentences: {wer:.3f}; {texts}")
    assert wer < WER_BOUND


def test_qwen_answers_a_json_request_with_valid_json(offline_dirs):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = offline_dirs["qwen"]
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    msgs = [{"role": "user", "content":
             "Here is a description of an audio clip: [00:00-00:03] \"Good morning everyone\" (Gender: Female, "
             "Pitch: High, Speaking speed: Fast). Answer in JSON with the keys \"gender\" and \"speed\" only, "
             "no other text."}]
    inputs = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    reply = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    reply = reply.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    parsed = json.loads(reply)
    assert {k.lower() for k in parsed} == {"gender", "speed"}, reply
    assert str(parsed.get("gender", parsed.get("Gender"))).lower() == "female", reply
