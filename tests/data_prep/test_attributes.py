"""data_prep.attributes: measurements on signals with known answers, bins, rejects, resume."""

import json
import math

import numpy as np
import pytest
import soundfile as sf

from data_prep import attributes as A
from data_prep.config import AttributesConfig
from speech_adapter.errors import AudioError, DataError

SR = 16000


def sine(freq=200.0, seconds=1.0, amp=0.5):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_pitch_of_a_200_hz_sine():
    assert A.measure(sine(200.0))["pitch_hz"] == pytest.approx(200.0, rel=0.02)
    assert A.measure(sine(120.0))["pitch_hz"] == pytest.approx(120.0, rel=0.02)


@pytest.mark.parametrize("amp", [0.5, 0.05])
def test_loudness_of_a_sine(amp):
    m = A.measure(sine(amp=amp))
    assert m["loudness_dbfs"] == pytest.approx(20 * math.log10(amp / math.sqrt(2)), abs=0.3)


def test_silence_ratio_and_duration():
    x = np.concatenate([sine(seconds=1.0), np.zeros(SR, np.float32)])
    m = A.measure(x)
    assert m["duration_s"] == pytest.approx(2.0)
    assert m["silence_ratio"] == pytest.approx(0.5, abs=0.03)


def test_rate_from_transcript_uses_active_span():
    x = np.concatenate([np.zeros(SR, np.float32), sine(seconds=2.0), np.zeros(SR, np.float32)])
    m = A.measure(x, transcript="one two three four five six")
    assert m["rate_source"] == "transcript" and m["rate_wps"] == pytest.approx(3.0, rel=0.03)


def _bursts(seconds=4.0):
    """Speech-like: 200 Hz tone bursts, 150 ms on / 100 ms off."""
    x = sine(200.0, seconds, amp=0.3)
    t = np.arange(len(x)) / SR
    return (x * ((t % 0.25) < 0.15)).astype(np.float32)


@pytest.mark.parametrize("snr", [0.0, 10.0, 20.0])
def test_snr_estimate_tracks_added_noise(snr):
    from data_prep.augment import active_power

    clean = _bursts()
    noise = np.random.default_rng(0).standard_normal(len(clean)) * math.sqrt(active_power(clean) / 10 ** (snr / 10))
    est = A.measure((clean + noise).astype(np.float32))["snr_db"]
    assert est == pytest.approx(snr, abs=3.5)
    assert A.measure(clean)["snr_db"] > 35


@pytest.mark.parametrize("name, value, label", [
    ("speed", 1.0, "Very slow"), ("speed", 3.0, "Normal"), ("speed", 9.0, "Very fast"),
    ("volume", -40.0, "Very low"), ("volume", -22.0, "Normal"), ("volume", -3.0, "Very high"),
    ("duration", 0.5, "Very short"), ("duration", 30.0, "Very long"),
    ("noise", -60.0, "Very low"), ("noise", -10.0, "Medium"), ("noise", 10.0, "Very high"),
    ("pitch", 0.0, "Normal"), ("pitch", -6.0, "Very low"),
])
def test_bin_table(name, value, label):
    assert A.bin_value(name, value) == label
    assert label in A.BINS[name][2]


def test_pitch_bins_are_gender_aware():
    attrs = {"pitch_hz": 180.0, "rate_source": "transcript", "rate_wps": 3.0, "loudness_dbfs": -20,
             "duration_s": 2.0, "snr_db": 40.0}
    assert A.bins_for(attrs, "male")["pitch"] == "Very high"
    assert A.bins_for(attrs, "female")["pitch"] == "Low"


def test_setting_bins_and_agreement():
    meta = {"pitch": 90, "rate": 100, "volume": 100, "snr_db": None, "speakers": 1, "gender": "female"}
    assert A.setting_bins(meta) == {"pitch": "Very high", "speed": "Slow", "volume": "High", "noise": "Very low"}
    rows = [{"meta": dict(meta, pitch=p), "attributes": {"pitch_hz": f, "rate_wps": 2.5, "loudness_dbfs": -19,
                                                           "snr_db": 40.0},
             "bins": {"pitch": A.bins_for({"pitch_hz": f}, "female")["pitch"], "speed": "Slow",
                      "volume": "High", "noise": "Very low"}}
            for p, f in ((10, 150.0), (60, 212.0), (90, 300.0), (70, 150.0))]
    table = A.agreement(rows)
    assert table["pitch"]["n"] == 4 and table["pitch"]["exact"] == pytest.approx(0.75)
    assert table["speed"]["exact"] == 1.0
    assert "pitch" in A.format_agreement(table)


def _write(path, x, sr=SR):
    sf.write(str(path), x, sr)
    return path.name


@pytest.fixture
def bad_corpus(tmp_path):
    """One good clip and one of each bad case, as a corpus JSONL with one malformed line."""
    d = tmp_path / "in"
    d.mkdir()
    speech = _bursts(1.0)
    files = {
        "good": _write(d / "good.wav", speech),
        "stereo": _write(d / "stereo.wav", np.stack([speech, speech], 1)),
        "odd_rate": _write(d / "odd.wav", speech[::2], sr=8000),
        "clipped": _write(d / "clip.wav", np.clip(speech * 10, -1, 1)),
        "silent": _write(d / "silent.wav", np.zeros(SR, np.float32)),
        "overlong": _write(d / "long.wav", np.tile(speech, 5)),
        "missing": "nope.wav",
    }
    (d / "empty.wav").write_bytes(b"")
    files["empty"] = "empty.wav"
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage-not-audio" * 10)
    files["corrupt"] = "corrupt.wav"
    lines = [json.dumps({"id": k, "audio": v, "transcript": "a b c", "meta": {}}) for k, v in files.items()]
    lines.insert(3, '{"id": "torn", "audio": ')
    (d / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return d / "corpus.jsonl"


def test_bad_inputs_go_to_rejects_and_run_continues(bad_corpus, tmp_path):
    out = tmp_path / "out" / "attrs.jsonl"
    cfg = AttributesConfig(input=str(bad_corpus), output=str(out), max_seconds=4.0)
    res = A.run_attributes(cfg, progress=False)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"good", "stereo", "odd_rate", "clipped"}
    assert any("downmixed" in n for n in rows["stereo"]["audio_repairs"])
    assert any("resampled" in n for n in rows["odd_rate"]["audio_repairs"])
    assert "clipped" in rows["clipped"]["audio_repairs"]
    rejects = [json.loads(x) for x in (out.parent / "rejects.jsonl").read_text().splitlines()]
    by_id = {r.get("id"): r["reason"] for r in rejects}
    assert "silent" in by_id["silent"] and "too long" in by_id["overlong"]
    assert "not found" in by_id["missing"] and "empty" in by_id["empty"]
    assert "not a readable" in by_id["corrupt"]
    assert any(r.get("line") == 4 and "malformed" in r["reason"] for r in rejects)
    assert all(r["stage"] == "attributes" for r in rejects)
    assert "4 rows" in res["summary"] and "6 rejected" in res["summary"]
    # rerun: nothing new, no duplicate rows or rejects
    again = A.run_attributes(cfg, progress=False)
    assert again["written"] == 0 and len(out.read_text().splitlines()) == 4
    assert len((out.parent / "rejects.jsonl").read_text().splitlines()) == len(rejects)


def test_strict_stops_at_the_first_bad_item(bad_corpus, tmp_path):
    cfg = AttributesConfig(input=str(bad_corpus), output=str(tmp_path / "o.jsonl"), strict=True)
    with pytest.raises((AudioError, DataError), match="corpus.jsonl:4|nope.wav|silent|empty"):
        A.run_attributes(cfg, progress=False)


def test_resume_after_partial_output_is_identical(bad_corpus, tmp_path):
    full = tmp_path / "full" / "a.jsonl"
    A.run_attributes(AttributesConfig(input=str(bad_corpus), output=str(full), max_seconds=4.0), progress=False)
    part = tmp_path / "part" / "a.jsonl"
    part.parent.mkdir()
    lines = full.read_text().splitlines(keepends=True)
    part.write_text(lines[0] + lines[1][:30])  # killed mid-write
    A.run_attributes(AttributesConfig(input=str(bad_corpus), output=str(part), max_seconds=4.0), progress=False)
    assert part.read_text() == full.read_text()
