"""data_prep.synth with engine kokoro/mixed: exact labels, held-out voices, mixes, pitch labels
measured from the audio, the content-hash cache, resume, flags; and one slow test on the real model.

A fake engine stands in for Kokoro in the fast tests: each voice's style table is filled with
its own F0, and `speak` returns a harmonic tone at the style's F0 whose length follows the text
and speed, so a mixed speaker's measured pitch shows the mix was really made from the two styles.
"""

import dataclasses
import json

import numpy as np
import pytest

from data_prep import synth
from data_prep.cli import configure
from data_prep.config import SynthConfig, config_from_args
from data_prep.synth import cache_key, corpus_path, kokoro_voices, plan_clip, synth_corpus
from speech_adapter.errors import ConfigError, ModelNotFoundError
from speech_adapter.offline_models import kokoro as K

F0 = {"female": 220.0, "male": 110.0}  # the fake voices' pitch, shifted a little per voice


def voice_f0(vid: str) -> float:
    return F0[K.VOICES[vid].gender] * (1 + 0.02 * (sorted(K.VOICES).index(vid) % 5))


class FakeEngine:
    def __init__(self):
        self.voices = {v: np.full(K.VOICE_SHAPE, voice_f0(v), np.float32) for v in K.VOICES}
        self.calls = 0

    def speak(self, text, voice, speed=1.0, lang=None, sampling_rate=24000):
        assert lang in ("en-us", "en-gb")
        self.calls += 1
        f0 = float(np.asarray(voice)[0, 0, 0])
        t = np.arange(int(sampling_rate * 0.04 * len(text) / speed)) / sampling_rate
        x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        return (1.3 * x / np.max(np.abs(x))).astype(np.float32)  # peaks above 1, as one real voice does


@pytest.fixture
def fake_kokoro(monkeypatch):
    engine = FakeEngine()
    monkeypatch.setattr(synth, "_kokoro_engine", lambda threads: engine)
    monkeypatch.setattr(synth, "load_voices", lambda directory=None: engine.voices)  # where synth_corpus calls it
    return engine


def cfg_of(tmp_path, **kw):
    base = dict(out_dir=str(tmp_path / "out"), cache_dir=str(tmp_path / "cache"), engine="kokoro", num_clips=4,
                seed=5, p_noise=0.0, p_pitch_shift=0.0, nonspeech_fraction=0.0)
    base.update(kw)
    return SynthConfig(**base)


def test_plans_carry_exact_labels_and_keep_held_out_voices_apart(tmp_path):
    cfg = cfg_of(tmp_path, p_voice_mix=0.5, p_heldout_voice=0.3, kokoro_min_grade="C")
    plans = [plan_clip(cfg, i) for i in range(300)]
    pools = kokoro_voices(cfg)
    assert "af_sky" not in pools["train"] and "am_fenrir" in pools["train"]  # C- below C; C+ kept
    assert not set(pools["train"]) & set(cfg.kokoro_heldout_voices)
    mixes = 0
    for p in plans:
        m = p["meta"]
        infos = [K.VOICES[v] for v in m["kokoro_voices"]]
        assert {i.gender for i in infos} == {m["gender"]} and {i.accent for i in infos} == {m["accent"]}
        assert set(m["kokoro_voices"]) <= set(pools[m["voice_split"]])
        assert 0.8 <= m["speed"] <= 1.25 and m["source"] == "kokoro" and p["language"] == "en"
        if len(infos) == 2:
            mixes += 1
            assert abs(sum(m["voice_weights"]) - 1) < 1e-6 and 0.3 <= m["voice_weights"][0] <= 0.7
    held = sum(p["meta"]["voice_split"] == "heldout" for p in plans)
    assert 60 <= held <= 120 and 80 <= mixes <= 170
    assert {p["meta"]["gender"] for p in plans} == {"female", "male"}
    assert {p["meta"]["accent"] for p in plans} == {"American English", "British English"}


def test_gender_balance_draws_women_and_men_alike_from_an_uneven_voice_pool(tmp_path):
    pool = kokoro_voices(cfg_of(tmp_path))["train"]
    women = sum(K.VOICES[v].gender == "female" for v in pool)
    assert women >= 2 * (len(pool) - women)  # the graded pool itself is mostly women
    for balance, low, high in ((True, 0.4, 0.6), (False, 0.1, 0.35)):
        cfg = cfg_of(tmp_path, kokoro_gender_balance=balance, p_heldout_voice=0.0)
        men = sum(plan_clip(cfg, i)["meta"]["gender"] == "male" for i in range(300)) / 300
        assert low <= men <= high, (balance, men)


def test_mixed_engine_leaves_espeak_clips_as_an_espeak_corpus_has_them(tmp_path):
    mixed, espeak = cfg_of(tmp_path, engine="mixed", kokoro_share=0.5), cfg_of(tmp_path, engine="espeak")
    plans = [plan_clip(mixed, i) for i in range(40)]
    kinds = [p["meta"]["source"] for p in plans]
    assert 8 <= kinds.count("kokoro") <= 32
    for i, p in enumerate(plans):
        if p["meta"]["source"] == "espeak-ng":
            assert p == plan_clip(espeak, i)


def test_synth_measures_pitch_normalizes_peaks_and_caches(tmp_path, fake_kokoro):
    # grade D: every voice has a same-gender, same-accent partner to mix with (bm_george has none in C-)
    cfg = cfg_of(tmp_path, p_voice_mix=1.0, p_heldout_voice=0.0, kokoro_min_grade="D")
    res = synth_corpus(cfg, progress=False)
    assert res["written"] == 4 and fake_kokoro.calls == 4
    import soundfile as sf

    for row in map(json.loads, corpus_path(cfg).read_text().splitlines()):
        m = row["meta"]
        expected = sum(w * voice_f0(v) for v, w in zip(m["kokoro_voices"], m["voice_weights"]))
        assert len(m["kokoro_voices"]) == 2 and abs(m["pitch_hz"] - expected) / expected < 0.03, m
        x, sr = sf.read(tmp_path / "out" / row["audio"])
        assert sr == 16000 and 0.85 < np.max(np.abs(x)) < 0.95  # normalized from 1.3 to 0.9
        assert not m["clipped"]
    again = cfg_of(tmp_path, out_dir=str(tmp_path / "again"), p_voice_mix=1.0, p_heldout_voice=0.0,
                   kokoro_min_grade="D")
    synth_corpus(again, progress=False)
    assert fake_kokoro.calls == 4  # every clip came from the cache
    assert corpus_path(again).read_text() == corpus_path(cfg).read_text()


def test_pitch_shift_moves_the_measured_pitch(tmp_path, fake_kokoro):
    cfg = cfg_of(tmp_path, p_pitch_shift=1.0, pitch_shift_max=3.0, p_voice_mix=0.0, num_clips=3)
    synth_corpus(cfg, progress=False)
    for row in map(json.loads, corpus_path(cfg).read_text().splitlines()):
        m = row["meta"]
        expected = voice_f0(m["voice"]) * 2 ** (m["pitch_shift"] / 12)
        assert m["pitch_shift"] != 0 and abs(m["pitch_hz"] - expected) / expected < 0.03, m


def test_cache_key_changes_with_what_changes_the_audio(tmp_path):
    cfg = cfg_of(tmp_path)
    plan = plan_clip(cfg, 0)
    base = cache_key(cfg, plan, "v1")
    assert cache_key(cfg, plan, "v1") == base and cache_key(cfg, plan, "v2") != base
    for key, value in (("speed", 1.5), ("pitch_shift", 1.0), ("voice_weights", [0.4, 0.6]), ("lang", "en-gb")):
        changed = {**plan, "meta": {**plan["meta"], key: value}}
        assert cache_key(cfg, changed, "v1") != base, key
    assert cache_key(cfg, {**plan, "transcript": "Other words."}, "v1") != base


def test_resume_after_kill_gives_identical_rows(tmp_path, fake_kokoro):
    cfg = cfg_of(tmp_path, num_clips=5, engine="mixed")
    synth_corpus(cfg, progress=False)
    path = corpus_path(cfg)
    full = path.read_text()
    lines = full.splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:30])
    res = synth_corpus(cfg, progress=False)
    assert res == {**res, "skipped": 2, "written": 3} and path.read_text() == full


def test_an_unprepared_kokoro_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEECH_ADAPTER_HOME", str(tmp_path / "home"))
    with pytest.raises(ModelNotFoundError, match=r"npm pack kokoro-js@1\.2\.1.*models prepare-kokoro") as e:
        synth_corpus(cfg_of(tmp_path), progress=False)
    assert "\n" not in str(e.value)


def test_flags_reach_the_engine_and_augment_settings(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["synth", "--out-dir", str(tmp_path), "--engine", "mixed", "--kokoro-share", "0.7",
                              "--augment-p-noise", "0.5", "--augment-noise-colors", "pink,brown"])
    cfg = config_from_args(SynthConfig, args)
    assert cfg.engine == "mixed" and cfg.kokoro_share == 0.7
    assert cfg.augment.p_noise == 0.5 and cfg.augment.noise_colors == ["pink", "brown"]
    with pytest.raises(SystemExit):
        parser.parse_args(["synth", "--engine", "piper"])


@pytest.mark.parametrize("data, msg", [
    ({"kokoro_heldout_voices": ["af_nobody"]}, r"kokoro_heldout_voices: unknown \['af_nobody'\]"),
    ({"speed_min": 0.3}, "speed_min/speed_max"),
    ({"kokoro_min_grade": "E"}, "kokoro_min_grade"),
    ({"p_voice_mix": 2}, "p_voice_mix"),
    ({"kokoro_heldout_voices": [], "p_heldout_voice": 0.2}, "kokoro_heldout_voices: empty"),
    ({"augment": {"p_reverb": 1.5}}, r"augment\.p_reverb"),
])
def test_config_validation_names_the_key(data, msg):
    from speech_adapter.config import from_dict

    with pytest.raises(ConfigError, match=msg):
        from_dict(SynthConfig, data)


def test_a_run_made_before_the_new_settings_resumes(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path), num_clips=2, seed=1)
    synth._check_same_config(cfg)
    path = tmp_path / synth.CONFIG_NAME
    old = {k: v for k, v in json.loads(path.read_text()).items()
           if k not in ("engine", "augment", "speed_min", "kokoro_gender_balance")}
    path.write_text(json.dumps(old))
    synth._check_same_config(cfg)  # missing keys read as defaults; Kokoro's draw does not shape espeak clips
    with pytest.raises(ConfigError, match="engine"):
        synth._check_same_config(SynthConfig(out_dir=str(tmp_path), num_clips=2, seed=1, engine="kokoro"))


def test_a_kokoro_corpus_made_before_gender_balance_reads_as_drawn_by_voice(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path), num_clips=2, seed=1, engine="kokoro")
    synth._check_same_config(cfg)
    path = tmp_path / synth.CONFIG_NAME
    path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "kokoro_gender_balance"}))
    with pytest.raises(ConfigError, match="kokoro_gender_balance"):
        synth._check_same_config(cfg)
    synth._check_same_config(dataclasses.replace(cfg, kokoro_gender_balance=False))


@pytest.mark.slow
def test_real_kokoro_female_voice_is_higher_than_male():
    """Two short clips from the prepared model (scripts/setup.sh): F0 female > male, RTF reported."""
    import time

    from data_prep.kokoro_tts import KokoroEngine

    if not (K.model_dir() / K.VOICES_FILE).is_file():
        pytest.skip("Kokoro is not prepared: bash scripts/setup.sh (or speech-adapter models prepare-kokoro)")
    engine = KokoroEngine(threads=1)
    f0, seconds, audio_s = {}, 0.0, 0.0
    for vid in ("bf_emma", "bm_george"):
        t = time.perf_counter()
        x = engine.speak("Please call Stella and ask her to bring these things.", vid, speed=1.0,
                         sampling_rate=16000)
        seconds += time.perf_counter() - t
        audio_s += len(x) / 16000
        assert 1.5 < len(x) / 16000 < 8 and np.max(np.abs(x)) > 0.05
        f0[vid] = synth._measure_pitch(x, 16000)
    print(f"kokoro RTF {seconds / audio_s:.2f} (1 thread), F0 {f0}")
    assert f0["bf_emma"] > 1.15 * f0["bm_george"]  # measured 177 vs 141 Hz
