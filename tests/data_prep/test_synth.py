"""data_prep.synth: determinism, sharding, resume, metadata."""

import json

import pytest
import soundfile as sf

from data_prep.config import SynthConfig
from data_prep.synth import corpus_path, plan_clip, synth_corpus
from data_prep.text_pool import text_pool
from speech_adapter.config import from_dict
from speech_adapter.errors import ConfigError


def small(out_dir, **kw) -> SynthConfig:
    base = dict(out_dir=str(out_dir), num_clips=6, seed=3, p_noise=0.5, p_multi_speaker=0.3,
                p_other_language=0.2, rate_min=220, rate_max=300)
    base.update(kw)
    return SynthConfig(**base)


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_rows_and_audio(tmp_path):
    a, b = small(tmp_path / "a"), small(tmp_path / "b")
    synth_corpus(a, progress=False)
    synth_corpus(b, progress=False)
    ra, rb = rows_of(corpus_path(a)), rows_of(corpus_path(b))
    assert ra == rb and len(ra) == 6
    for row in ra:
        assert (tmp_path / "a" / row["audio"]).read_bytes() == (tmp_path / "b" / row["audio"]).read_bytes()
    other = [plan_clip(small(tmp_path, seed=4), i)["transcript"] for i in range(6)]
    assert other != [r["transcript"] for r in ra]


def test_shards_partition_the_corpus(tmp_path):
    whole = small(tmp_path / "w")
    synth_corpus(whole, progress=False)
    parts = []
    for k in range(2):
        cfg = small(tmp_path / "s", num_shards=2, shard_index=k)
        synth_corpus(cfg, progress=False)
        parts += rows_of(corpus_path(cfg))
    assert sorted(parts, key=lambda r: r["id"]) == rows_of(corpus_path(whole))


def test_resume_after_kill_gives_identical_rows(tmp_path):
    ref = small(tmp_path / "ref")
    synth_corpus(ref, progress=False)
    cfg = small(tmp_path / "run")
    synth_corpus(cfg, progress=False)
    path = corpus_path(cfg)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][:25])  # killed mid-row
    (tmp_path / "run" / json.loads(lines[3])["audio"]).unlink()  # and before a later wav
    res = synth_corpus(cfg, progress=False)
    assert res["skipped"] == 2 and res["written"] == 4
    assert rows_of(path) == rows_of(corpus_path(ref))
    again = synth_corpus(cfg, progress=False)
    assert again["written"] == 0 and len(rows_of(path)) == 6


def test_resume_with_other_settings_is_refused(tmp_path):
    synth_corpus(small(tmp_path, num_clips=2), progress=False)
    with pytest.raises(ConfigError, match="different settings.*seed"):
        synth_corpus(small(tmp_path, num_clips=2, seed=9), progress=False)


def test_a_larger_num_clips_extends_the_corpus_as_a_fresh_run_would(tmp_path):
    ref = small(tmp_path / "ref", num_clips=5)
    synth_corpus(ref, progress=False)
    synth_corpus(small(tmp_path / "run", num_clips=3), progress=False)
    res = synth_corpus(small(tmp_path / "run", num_clips=5), progress=False)
    assert res["skipped"] == 3 and res["written"] == 2
    assert rows_of(corpus_path(small(tmp_path / "run"))) == rows_of(corpus_path(ref))
    with pytest.raises(ConfigError, match="num_clips may only grow"):
        synth_corpus(small(tmp_path / "run", num_clips=4), progress=False)


def test_metadata_matches_audio_and_voice(tmp_path):
    cfg = small(tmp_path, num_clips=4, variants=["f3"], p_multi_speaker=0.0, p_other_language=0.0,
                english_accents=["en-gb-scotland"], p_noise=0.0)
    synth_corpus(cfg, progress=False)
    for row in rows_of(corpus_path(cfg)):
        info = sf.info(str(tmp_path / row["audio"]))
        assert info.samplerate == 16000 and info.channels == 1
        assert row["duration"] == pytest.approx(info.frames / 16000, abs=1e-4)
        m = row["meta"]
        assert m["gender"] == "female" and m["voice"] == "en-gb-scotland+f3"
        assert m["accent"] == "Scottish English" and row["language"] == "en"
        assert m["snr_db"] is None and m["speakers"] == 1
        assert 220 <= m["rate"] <= 300
        texts = {s.id: s.text for s in text_pool("en")}
        assert texts[m["text_id"]] == row["transcript"]


def test_multi_speaker_and_noise_metadata():
    cfg = SynthConfig(out_dir="x", num_clips=50, p_multi_speaker=1.0, max_speakers=3, p_noise=1.0,
                      snr_min=5, snr_max=10, variants=["m1", "f1"])
    plans = [plan_clip(cfg, i) for i in range(10)]
    for p in plans:
        m = p["meta"]
        assert 2 <= m["speakers"] <= 3 and len(m["voices"]) == m["speakers"]
        assert m["gender"] in ("male", "female", "mixed")
        assert (m["gender"] == "mixed") == (len(set(m["genders"])) > 1)
        assert 5 <= m["snr_db"] <= 10


@pytest.mark.parametrize("data, msg", [
    ({"num_shards": 2, "shard_index": 2}, "shard_index"),
    ({"rate_min": 300, "rate_max": 200}, "rate_min"),
    ({"pitch_max": 120}, "pitch_min/pitch_max"),
    ({"p_noise": 1.5}, "p_noise"),
    ({"num_clip": 3}, "did you mean 'num_clips'"),
])
def test_config_validation_names_the_key(data, msg):
    with pytest.raises(ConfigError, match=msg):
        from_dict(SynthConfig, data)


def test_text_pool_is_varied_and_stable():
    en = text_pool("en")
    assert len(en) >= 300 and len({s.id for s in en}) == len(en)
    assert any(s.text.endswith("?") for s in en) and any(any(c.isdigit() for c in s.text) for s in en)
    assert text_pool("en") == en
    for lang in ("fr", "de", "es", "it"):
        assert len(text_pool(lang)) >= 15
