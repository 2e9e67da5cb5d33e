"""data_prep.describe: the DeSTA2.5 seed description."""

import json

import numpy as np
import pytest
import soundfile as sf

from data_prep.config import DescribeConfig
from data_prep.describe import describe_row, field_values, run_describe
from speech_adapter.errors import ConfigError

SYNTH_ROW = {
    "id": "syn-000001", "audio": "wavs/syn-000001.wav", "sampling_rate": 16000, "duration": 3.2,
    "transcript": "Is this seat taken?", "language": "en",
    "meta": {"voice": "en-gb-scotland+f3", "gender": "female", "accent": "Scottish English", "rate": 190,
             "pitch": 80, "volume": 80, "snr_db": None, "speakers": 1, "source": "espeak-ng"},
}


def test_synthetic_row_is_described_from_its_exact_settings():
    assert describe_row(SYNTH_ROW, ["gender", "pitch", "speed", "volume", "accent", "duration"]) == (
        "[00:00-00:03] Is this seat taken? (Gender: Female, Pitch: High, Speaking speed: Fast, "
        "Volume: Normal, Accent: Scottish English, Duration: 3s)")


def test_fields_choose_and_order_and_unknown_values_are_left_out():
    row = {"id": "x", "duration": 65.4, "transcript": "hi", "meta": {"emotion": "ang"},
           "bins": {"pitch": "Low", "speed": None, "volume": "Very high", "noise": "Medium"}}
    assert describe_row(row, ["volume", "gender", "noise", "emotion", "pitch", "speed"]) == (
        "[00:00-01:05] hi (Volume: Very high, Background noise: Medium, Emotion: Ang, Pitch: Low)")
    assert field_values(row, ["gender", "accent"]) == {}


def _clip(path, seconds=1.0):
    t = np.arange(int(seconds * 16000)) / 16000
    x = 0.3 * np.sin(2 * np.pi * 180 * t) * ((t % 0.25) < 0.15)
    sf.write(str(path), x.astype(np.float32), 16000)


def test_missing_transcripts_and_bins_come_from_the_audio(tmp_path):
    for name in ("a", "b", "c"):
        _clip(tmp_path / f"{name}.wav")
    rows = [
        {"id": "a", "audio": "a.wav", "transcript": None, "meta": {"gender": "male"}},
        {"id": "b", "audio": "b.wav", "transcript": "known words", "meta": {}},
        {"id": "c", "audio": "missing.wav", "transcript": "", "meta": {}},
        dict(SYNTH_ROW, id="d", audio="c.wav", transcript=""),
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = []

    def fake_whisper(waves):
        calls.append(len(waves))
        return [f"heard {len(w)}" for w in waves]

    cfg = DescribeConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "out" / "d.jsonl"), batch_size=8)
    res = run_describe(cfg, progress=False, transcriber=fake_whisper)
    out = {r["id"]: r for r in map(json.loads, (tmp_path / "out/d.jsonl").read_text().splitlines())}
    assert calls == [2] and res["written"] == 3
    assert out["a"]["transcript"] == "heard 16000" and out["a"]["transcript_source"] == "whisper"
    assert out["a"]["description"].startswith("[00:00-00:01] heard 16000 (Gender: Male, Pitch: Very high,")
    assert out["b"]["bins"]["pitch"] and "Pitch:" in out["b"]["description"]  # measured: 180 Hz, unknown gender
    assert "transcript_source" not in out["b"]
    assert out["b"]["audio"] == "../b.wav"  # still resolves from the output's directory
    assert out["d"]["description"].startswith("[00:00-00:03] heard 16000 (Gender: Female, Pitch: High")
    rejects = [json.loads(x) for x in (tmp_path / "out/rejects.jsonl").read_text().splitlines()]
    assert rejects[0]["id"] == "c" and rejects[0]["stage"] == "describe"
    again = run_describe(cfg, progress=False, transcriber=fake_whisper)
    assert again["written"] == 0 and calls == [2]


def test_unknown_field_is_a_config_error(tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps(SYNTH_ROW) + "\n")
    cfg = DescribeConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "o.jsonl"), fields=["gender", "pich"])
    with pytest.raises(ConfigError, match="pich"):
        run_describe(cfg, progress=False)


@pytest.mark.slow
def test_whisper_fills_a_missing_transcript(tmp_path):
    """Real offline Whisper tiny.en on an espeak clip (needs `speech-adapter models prepare`)."""
    import librosa

    from data_prep import espeak
    from speech_adapter.paths import offline_model_dir

    if not (offline_model_dir("offline:whisper-tiny.en") / "config.json").exists():
        pytest.skip("offline Whisper not prepared on this machine: run `speech-adapter models prepare`")
    audio, sr = espeak.synthesize("Could you please pass me the salt?", voice="en-us+m3", rate=150)
    sf.write(str(tmp_path / "a.wav"), librosa.resample(audio, orig_sr=sr, target_sr=16000), 16000)
    (tmp_path / "in.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "meta": {}}) + "\n")
    cfg = DescribeConfig(input=str(tmp_path / "in.jsonl"), output=str(tmp_path / "o.jsonl"), fields=["duration"])
    run_describe(cfg, progress=False)
    row = json.loads((tmp_path / "o.jsonl").read_text())
    words = set(row["transcript"].lower().replace("?", "").split())
    assert {"please", "pass", "salt"} <= words, row["transcript"]
    assert row["description"] == f"[00:00-00:02] {row['transcript']} (Duration: 2s)"
