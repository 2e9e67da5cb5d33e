"""`data transcribe`: Whisper's transcript lands in every row once, and a rerun reuses it."""

import json

import numpy as np
import pytest
import soundfile as sf

from data_prep.asr import FIELD, TranscribeConfig, transcribe_corpus
from speech_adapter.errors import ConfigError, DataError
from speech_adapter.models.tiny import tiny_whisper


@pytest.fixture(scope="module")
def whisper():
    return tiny_whisper()


def _corpus(tmp_path, n=3, bad=False):
    rows = []
    for i in range(n):
        wav = tmp_path / f"c{i}.wav"
        sf.write(wav, (0.1 * np.sin(np.arange(8000) * (0.05 + 0.01 * i))).astype(np.float32), 16000)
        rows.append({"id": f"c{i}", "audio": wav.name, "transcript": "ground truth words"})
    rows.append({"id": "text", "audio": None, "instruction": "hi"})
    if bad:
        (tmp_path / "bad.wav").write_bytes(b"not audio at all")
        rows.append({"id": "bad", "audio": "bad.wav"})
    src = tmp_path / "described.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return src


def test_transcribes_each_clip_then_reuses(tmp_path, whisper):
    src = _corpus(tmp_path)
    out = tmp_path / "out" / "transcribed.jsonl"
    cfg = TranscribeConfig(input=str(src), output=str(out))
    stats = transcribe_corpus(cfg, whisper=whisper, progress=False)
    assert stats == {"rows": 4, "transcribed": 3, "reused": 1}
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [isinstance(r.get(FIELD), str) for r in rows] == [True, True, True, False]
    assert all(r["transcript"] == "ground truth words" for r in rows[:3])  # the truth is kept apart
    assert all((tmp_path / f"c{i}.wav").resolve() == __import__("pathlib").Path(rows[i]["audio"])
               for i in range(3))  # absolute: the output lives in another folder
    first = [r[FIELD] for r in rows[:3]]

    class Boom:  # a rerun must not decode again
        def __iter__(self):
            raise AssertionError("whisper used on a rerun")
    stats = transcribe_corpus(cfg, whisper=Boom(), progress=False)
    assert stats["transcribed"] == 0
    assert [json.loads(x).get(FIELD) for x in out.read_text().splitlines()][:3] == first


def test_unreadable_clip_named(tmp_path, whisper):
    src = _corpus(tmp_path, n=1, bad=True)
    cfg = TranscribeConfig(input=str(src), output=str(tmp_path / "o.jsonl"))
    with pytest.raises(DataError, match="bad"):
        transcribe_corpus(cfg, whisper=whisper, progress=False)
    assert not (tmp_path / "o.jsonl").exists()


def test_config_errors():
    with pytest.raises(ConfigError, match="input and output"):
        TranscribeConfig().validate()
    with pytest.raises(ConfigError, match="batch_size"):
        TranscribeConfig(input="a", output="b", batch_size=0).validate()


def test_killed_run_resumes_from_partial(tmp_path, whisper, monkeypatch):
    src = _corpus(tmp_path, n=3)
    out = tmp_path / "t.jsonl"
    cfg = TranscribeConfig(input=str(src), output=str(out), batch_size=1)
    import speech_adapter.models.encoder as enc

    calls = []
    orig = enc.transcribe

    def dying(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the third batch
        calls.append(1)
        return orig(*a, **k)
    monkeypatch.setattr(enc, "transcribe", dying)
    with pytest.raises(KeyboardInterrupt):
        transcribe_corpus(cfg, whisper=whisper, progress=False)
    assert not out.exists()
    assert len((tmp_path / "t.jsonl.partial.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(enc, "transcribe", orig)
    stats = transcribe_corpus(cfg, whisper=whisper, progress=False)
    assert stats["transcribed"] == 1 and stats["reused"] == 3  # two clips from the partial file, plus the text row
    assert not (tmp_path / "t.jsonl.partial.jsonl").exists()


def test_audio_decoded_batch_by_batch(tmp_path, whisper, monkeypatch):
    """Each batch's clips are decoded when the batch runs, not the whole corpus up front."""
    import data_prep.asr as asr
    import speech_adapter.models.encoder as enc

    src = _corpus(tmp_path, n=4)
    events = []
    load, tx = asr.load_audio, enc.transcribe
    monkeypatch.setattr(asr, "load_audio", lambda *a, **k: events.append("load") or load(*a, **k))
    monkeypatch.setattr(enc, "transcribe", lambda *a, **k: events.append("decode") or tx(*a, **k))
    cfg = TranscribeConfig(input=str(src), output=str(tmp_path / "t.jsonl"), batch_size=2)
    assert transcribe_corpus(cfg, whisper=whisper, progress=False)["transcribed"] == 4
    assert events == ["load", "load", "decode", "load", "load", "decode"]
