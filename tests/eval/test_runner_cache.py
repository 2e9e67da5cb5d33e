"""Runner: batched cached generation that resumes, scoring, aggregation, the SpeechLM adapter."""

import pytest

from speech_adapter.errors import DataError
from speech_adapter.eval.runner import aggregate, drop_stale_cache, evaluate, generate_cached, model_digest, score_row
from speech_adapter.eval.systems import speechlm_generate_fn
from speech_adapter.utils.io import read_jsonl

ROWS = [
    {"id": "r1", "task": "gender", "split": "seen", "kind": "plain", "audio": "/a.wav", "description": "d",
     "instruction": "Gender? Answer with one of: female, male.", "options": ["female", "male"], "label": "female",
     "metric": "option", "constraints": []},
    {"id": "r2", "task": "gender", "split": "unseen", "kind": "constrained", "audio": "/a.wav", "description": "d",
     "instruction": "Gender? JSON.", "options": ["female", "male"], "label": "male", "metric": "option",
     "constraints": [{"id": "json", "kwargs": {"keys": ["answer"]}}]},
    {"id": "r3", "task": "describe", "split": "unseen", "kind": "constrained", "audio": "/a.wav",
     "description": None, "instruction": "Describe. lowercase.", "options": None, "label": None,
     "metric": "open", "constraints": [{"id": "lowercase", "kwargs": {}}]},
]


class CountingGen:
    def __init__(self, answers, fail_after=None):
        self.answers, self.calls, self.rows, self.fail_after = answers, 0, [], fail_after

    def __call__(self, batch, mode):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.rows += [r["id"] for r in batch]
        return [self.answers[mode][r["id"]] for r in batch]


ANSWERS = {"speech": {"r1": "The speaker is female.", "r2": '{"answer": "female"}', "r3": "A Voice."},
           "text_ceiling": {"r1": "female", "r2": '{"answer": "male"}', "r3": "a voice."},
           "text_retention": {"r1": "male", "r2": "male", "r3": "a voice."}}


def test_generation_resumes_from_cache(tmp_path):
    cache = tmp_path / "gen.jsonl"
    gen = CountingGen(ANSWERS, fail_after=1)
    with pytest.raises(KeyboardInterrupt):
        generate_cached(ROWS, gen, system="s", mode="speech", cache_path=cache, batch_size=2, progress=False)
    assert gen.rows == ["r1", "r2"] and len(read_jsonl(cache)) == 2
    with open(cache, "a") as f:
        f.write('{"system": "s", "mode": "speech", "id": "r3", "out')  # torn tail from a killed writer
    gen2 = CountingGen(ANSWERS)
    out = generate_cached(ROWS, gen2, system="s", mode="speech", cache_path=cache, batch_size=2, progress=False)
    assert gen2.rows == ["r3"] and out["r1"] == "The speaker is female."
    gen3 = CountingGen(ANSWERS)
    generate_cached(ROWS, gen3, system="s", mode="speech", cache_path=cache, progress=False)
    assert gen3.calls == 0
    generate_cached(ROWS, gen3, system="other", mode="speech", cache_path=cache, progress=False)
    assert gen3.calls == 1  # the key includes the system


def test_generate_must_return_one_output_per_row(tmp_path):
    with pytest.raises(DataError, match="returned 1 outputs for 2 rows"):
        generate_cached(ROWS[:2], lambda b, m: ["x"], system="s", mode="speech",
                        cache_path=tmp_path / "g.jsonl", progress=False)


def test_score_and_aggregate_with_delta(tmp_path):
    gens = {m: CountingGen(ANSWERS) for m in ANSWERS}
    report = evaluate(ROWS, gens, system="s", out_dir=tmp_path, progress=False)
    sp, ce = report["modes"]["speech"], report["modes"]["text_ceiling"]
    assert sp["tasks"]["gender"]["seen"] == 1.0 and sp["tasks"]["gender"]["unseen"] == 0.0
    assert sp["tasks"]["gender"]["constrained"] == 0.0
    assert sp["constraints"] == {"json": {"rate": 1.0, "n": 1}, "lowercase": {"rate": 0.0, "n": 1}}
    assert ce["n"] == 2 and report["skipped_rows"]["text_ceiling"] == 1  # r3 has no description
    assert ce["if_rate"] == 1.0 and sp["if_rate"] == 0.5
    assert report["delta"]["speech"]["if_rate"] == pytest.approx(-0.5)
    assert report["delta"]["text_retention"]["constraints"]["json"] == pytest.approx(-1.0)
    assert len(read_jsonl(tmp_path / "scores.jsonl")) == 7


def test_score_row_fields():
    s = score_row(ROWS[1], '```json\n{"answer": "male"}\n```', "speech")
    assert s["score"] == 1.0 and s["format"] == {"json": False} and s["format_ok"] is False
    assert aggregate([s])["modes"]["speech"]["row_if_rate"] == 0.0


class FakeSpeechLM:
    def __init__(self):
        self.examples, self.disabled = [], 0
        self.llm = self

    def disable_adapter(self):
        import contextlib

        fake = self

        @contextlib.contextmanager
        def ctx():
            fake.disabled += 1
            yield

        return ctx()

    def generate(self, examples, max_new_tokens=128, return_stop=False, repetition_penalty=1.0):
        self.examples += examples
        self.penalties = getattr(self, "penalties", []) + [repetition_penalty] * len(examples)
        texts = [f"out{len(self.examples) - len(examples) + i}" for i in range(len(examples))]
        return (texts, ["eos"] * len(texts)) if return_stop else texts


def test_speechlm_adapter_builds_contract_examples(tmp_path):
    import numpy as np
    import soundfile as sf

    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(8000) / 5)).astype(np.float32), 16000)
    rows = [dict(ROWS[0], audio=str(wav), description="Gender: Female") for _ in range(3)]
    lm = FakeSpeechLM()
    gen = speechlm_generate_fn(lm, max_new_tokens=8, batch_size=2, text_backend="transformers",
                               repetition_penalty=1.3)
    assert [r["output"] for r in gen(rows, "speech")] == ["out0", "out1", "out2"]
    assert gen(rows[:1], "speech")[0]["stop"] == "eos"
    ex = lm.examples[0]
    assert ex["audio"].dtype == np.float32 and ex["audio"].shape == (8000,) and ex["instruction"] == rows[0]["instruction"]
    gen(rows[:1], "text_retention")
    assert lm.examples[-1]["audio"] is None and "Gender: Female" in lm.examples[-1]["instruction"]
    assert rows[0]["instruction"] in lm.examples[-1]["instruction"] and lm.disabled == 0
    gen(rows[:1], "text_ceiling")
    assert lm.disabled == 1
    assert lm.penalties == [1.3] * len(lm.examples)  # every mode decodes alike
    with pytest.raises(DataError, match="needs a description"):
        gen([dict(rows[0], description=None)], "text_ceiling")


def _two_clips_and_a_counting_whisper(tmp_path, monkeypatch, say: str):
    """Two short wav files, and `systems.transcribe_clips` replaced by a fake that records each
    clip it decodes (the returned list) and answers `say.format(n)` for the n-th one."""
    import numpy as np
    import soundfile as sf

    from speech_adapter.eval import systems

    clips = []
    for k in range(2):
        clips.append(tmp_path / f"c{k}.wav")
        sf.write(clips[-1], (0.1 * np.sin(np.arange(8000) / (5 + k))).astype(np.float32), 16000)
    heard = []

    def fake_transcribe(speechlm, waveforms, batch_size=8):
        heard.extend(len(w) for w in waveforms)
        return [say.format(len(heard) - len(waveforms) + i) for i in range(len(waveforms))]

    monkeypatch.setattr(systems, "transcribe_clips", fake_transcribe)
    return clips, heard


def test_cascade_reads_whisper_transcript_not_description(tmp_path, monkeypatch):
    import numpy as np
    import soundfile as sf

    clips, heard = _two_clips_and_a_counting_whisper(tmp_path, monkeypatch, " whisper heard clip {} ")
    # three questions on clip 0, one on clip 1: each clip is transcribed once
    rows = [dict(ROWS[0], id=f"q{i}", audio=str(clips[int(i == 3)]), description="SECRET DESCRIPTION")
            for i in range(4)]
    lm = FakeSpeechLM()
    gen = speechlm_generate_fn(lm, max_new_tokens=8, batch_size=2, text_backend="transformers")
    out = gen(rows[:2], "cascade") + gen(rows[2:], "cascade")
    assert len(heard) == 2 and lm.disabled == 2  # LoRA off: the bare backbone answers
    assert [o["asr"] for o in out] == ["whisper heard clip 0"] * 3 + ["whisper heard clip 1"]
    for ex, o in zip(lm.examples, out):
        assert ex["audio"] is None and "SECRET" not in ex["instruction"]
        assert f"Transcript of the audio: {o['asr']}" in ex["instruction"]
        assert ex["instruction"].endswith(rows[0]["instruction"])
    report = evaluate([dict(r, transcript="whisper heard clip 0") for r in rows], {"cascade": gen},
                      system="s", out_dir=tmp_path / "run", progress=False)
    assert report["modes"]["cascade"]["n"] == 4
    scored = read_jsonl(tmp_path / "run" / "scores.jsonl")
    assert [s["asr_wer"] for s in scored] == [0.0, 0.0, 0.0, 0.25] and scored[0]["stop"] == "eos"
    assert len(heard) == 2  # the generate fn's per-clip cache holds across batches and calls
    clip2 = tmp_path / "c2.wav"
    sf.write(clip2, np.zeros(4000, dtype=np.float32), 16000)
    out = gen([dict(rows[0], id="q9", audio=str(clip2), asr_transcript="words from data transcribe")], "cascade")
    assert out[0]["asr"] == "words from data transcribe" and len(heard) == 2  # the suite's own transcript


def test_backbone_modes_share_one_cache_across_systems(tmp_path):
    shared = tmp_path / "suite.backbone.jsonl"
    calls = {m: CountingGen(ANSWERS) for m in ("speech", "text_ceiling")}
    for system in ("untrained", "trained"):
        evaluate(ROWS, calls, system=system, out_dir=tmp_path / system, progress=False, shared_cache=shared)
    assert calls["speech"].rows == ["r1", "r2", "r3"] * 2  # speech is per system
    assert calls["text_ceiling"].rows == ["r1", "r2"]  # the ceiling once for the suite
    assert {r["system"] for r in read_jsonl(shared)} == {"backbone"}
    assert "text_ceiling" in {r["mode"] for r in read_jsonl(tmp_path / "trained" / "scores.jsonl")}


def test_a_rerun_with_another_model_or_decoding_drops_the_cached_replies(tmp_path):

    gens = tmp_path / "trained" / "generations.jsonl"
    key = {"adapter": "a1", "decoding": "max_new_tokens=96,repetition_penalty=1.1"}
    drop_stale_cache(gens, key)  # nothing yet: the key is written
    gens.write_text('{"system": "trained", "mode": "speech", "id": "r1", "output": "old"}\n')
    drop_stale_cache(gens, key)  # same model and decoding: a killed eval resumes
    assert gens.exists()
    drop_stale_cache(gens, {**key, "adapter": "a2"})  # retrained
    assert not gens.exists()
    gens.write_text('{"system": "trained", "mode": "speech", "id": "r1", "output": "old"}\n')
    drop_stale_cache(gens, {**key, "adapter": "a2", "decoding": "max_new_tokens=128,repetition_penalty=1.1"})
    assert not gens.exists()
    gens.write_text("{}\n")
    (tmp_path / "trained" / "generations.key.json").unlink()  # a run made before the key existed
    drop_stale_cache(gens, key)
    assert not gens.exists()


def test_evaluate_with_a_cache_key_regenerates_for_another_model(tmp_path):
    """`eval run --out DIR` reused with another model: the old replies are not reread."""
    out = tmp_path / "run"
    old = CountingGen({"speech": {r: "old" for r in ANSWERS["speech"]}})
    new = CountingGen(ANSWERS)
    evaluate(ROWS, {"speech": old}, system="s", out_dir=out, progress=False, cache_key={"adapter": "a1"})
    evaluate(ROWS, {"speech": new}, system="s", out_dir=out, progress=False, cache_key={"adapter": "a1"})
    assert new.rows == []  # same model: every reply from the cache
    evaluate(ROWS, {"speech": new}, system="s", out_dir=out, progress=False, cache_key={"adapter": "a2"})
    assert new.rows == ["r1", "r2", "r3"]
    assert {r["output"] for r in read_jsonl(out / "generations.jsonl")} == set(ANSWERS["speech"].values())


def test_model_digest_follows_weights_and_config(tmp_path):
    (tmp_path / "adapter.safetensors").write_bytes(b"w1")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "notes.txt").write_text("not part of the model")
    first = model_digest(tmp_path)
    (tmp_path / "notes.txt").write_text("changed")
    assert model_digest(tmp_path) == first
    (tmp_path / "adapter.safetensors").write_bytes(b"w2")
    assert model_digest(tmp_path) != first


def test_speech_mode_shares_the_cascade_transcript_once_per_clip(tmp_path, monkeypatch):
    """A use_transcript model's speech rows without asr_transcript: Whisper runs once per clip,
    and the cascade reuses it (it used to run once per row, inside the processor)."""
    import types

    clips, heard = _two_clips_and_a_counting_whisper(tmp_path, monkeypatch, "clip {}")
    rows = [dict(ROWS[0], id=f"q{i}", audio=str(clips[i % 2])) for i in range(4)]
    lm = FakeSpeechLM()
    lm.config = types.SimpleNamespace(use_transcript=True)
    gen = speechlm_generate_fn(lm, max_new_tokens=8, batch_size=2, text_backend="transformers")
    gen(rows, "speech")
    gen(rows, "cascade")
    assert len(heard) == 2  # two clips, four rows, two modes
    assert [ex["transcript"] for ex in lm.examples[:4]] == ["clip 0", "clip 1", "clip 0", "clip 1"]
    gen = speechlm_generate_fn(lm, max_new_tokens=8, batch_size=2, text_backend="transformers")
    gen([dict(r, asr_transcript="from the suite") for r in rows], "speech")  # the suite's: no Whisper run
    assert len(heard) == 2 and lm.examples[-1]["transcript"] == "from the suite"
    lm.config.use_transcript = False  # a model that reads no transcript: Whisper never decodes
    speechlm_generate_fn(lm, max_new_tokens=8, batch_size=2, text_backend="transformers")(rows, "speech")
    assert len(heard) == 2 and lm.examples[-1]["transcript"] is None
