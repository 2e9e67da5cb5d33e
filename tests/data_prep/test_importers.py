"""data_prep.importers: label-file folders and saved `datasets` datasets into corpus JSONL."""

import io
import json

import numpy as np
import pytest
import soundfile as sf

from data_prep.config import ImportConfig
from data_prep.importers import PRESETS, run_import
from speech_adapter.errors import ConfigError, SpeechAdapterError

SR = 16000


def tone(seconds=0.5, sr=SR, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    return np.stack([x] * channels, 1) if channels > 1 else x


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "corpus"
    (d / "clips").mkdir(parents=True)
    sf.write(d / "clips/a.wav", tone(), SR)
    sf.write(d / "clips/b.flac", tone(0.7, 44100, channels=2), 44100)  # stereo, odd rate, flac
    sf.write(d / "clips/silent.wav", np.zeros(SR, np.float32), SR)
    sf.write(d / "clips/long.wav", tone(3.0), SR)
    (d / "clips/bad.wav").write_bytes(b"definitely not a wav file")
    rows = [("a", "clips/a.wav", "hello there", "F", "spk1"), ("b", "clips/b.flac", "good morning", "male", "spk2"),
            ("c", "clips/missing.wav", "gone", "f", "spk1"), ("d", "clips/silent.wav", "", "m", "spk3"),
            ("e", "clips/bad.wav", "broken", "m", "spk3"), ("f", "clips/long.wav", "long one", "f", "spk4")]
    return d, rows


def _write_labels(d, rows, kind):
    header = ["utt", "file", "words", "sex", "who"]
    if kind == "jsonl":
        lines = [json.dumps(dict(zip(header, r))) for r in rows]
        lines.insert(2, "{not json")
        (d / "labels.jsonl").write_text("\n".join(lines) + "\n")
        return d / "labels.jsonl"
    sep = "\t" if kind == "tsv" else ","
    text = "\n".join(sep.join(r) for r in [header] + rows) + "\n"
    (d / f"labels.{kind}").write_text(text)
    return d / f"labels.{kind}"


@pytest.mark.parametrize("kind", ["csv", "tsv", "jsonl"])
def test_folder_with_label_file(folder, tmp_path, kind):
    d, rows = folder
    labels = _write_labels(d, rows, kind)
    cfg = ImportConfig(source=str(labels), out_dir=str(tmp_path / "out"), audio_column="file",
                       text_column="words", gender_column="sex", speaker_column="who", id_column="utt",
                       max_seconds=2.0)
    res = run_import(cfg, progress=False)
    out = [json.loads(x) for x in (tmp_path / "out/corpus.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["a", "b"]
    a, b = out
    assert a["transcript"] == "hello there" and a["meta"]["gender"] == "female" and a["meta"]["speaker"] == "spk1"
    assert b["meta"]["gender"] == "male" and b["language"] == "en"
    info = sf.info(str(tmp_path / "out" / b["audio"]))
    assert info.samplerate == SR and info.channels == 1
    assert b["duration"] == pytest.approx(0.7, abs=0.01) == pytest.approx(info.frames / SR, abs=1e-4)
    assert any("downmixed" in n for n in b["meta"]["repairs"])
    rejects = [json.loads(x) for x in (tmp_path / "out/rejects.jsonl").read_text().splitlines()]
    reasons = {r.get("id"): r["reason"] for r in rejects}
    assert "not found" in reasons["c"] and "silent" in reasons["d"]
    assert "not a readable" in reasons["e"] and "too long" in reasons["f"]
    if kind == "jsonl":
        assert any(r.get("line") == 3 and "malformed" in r["reason"] for r in rejects)
    else:
        assert reasons["c"] and all(r["line"] for r in rejects)  # csv rows name their line
    assert res["written"] == 2
    again = run_import(cfg, progress=False)  # resumable: nothing twice
    assert again["written"] == 0 and again["skipped"] == 6  # written or rejected before
    assert len((tmp_path / "out/corpus.jsonl").read_text().splitlines()) == 2


def test_strict_import_stops_with_file_named(folder, tmp_path):
    d, rows = folder
    labels = _write_labels(d, rows, "csv")
    cfg = ImportConfig(source=str(labels), out_dir=str(tmp_path / "o"), audio_column="file", text_column="words",
                       strict=True)
    with pytest.raises(SpeechAdapterError, match=r"labels.csv:4: .*missing.wav: file not found"):
        run_import(cfg, progress=False)


def test_missing_column_and_unknown_preset(folder, tmp_path):
    d, rows = folder
    labels = _write_labels(d, rows, "csv")
    with pytest.raises(ConfigError, match="preset"):
        run_import(ImportConfig(source=str(labels), out_dir=str(tmp_path / "o"), preset="libri"), progress=False)
    res = run_import(ImportConfig(source=str(labels), out_dir=str(tmp_path / "o2"), audio_column="path"),
                     progress=False)
    assert res["written"] == 0 and res["rejected"] == {"missing column": 6}


def _wav_bytes(x, sr):
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV")
    return buf.getvalue()


def _saved_dataset(path, preset, rows):
    """A datasets.Dataset with an Audio column, built without torchcodec, saved to disk."""
    import datasets

    cols = PRESETS[preset]
    data = {c: [] for c in cols.values()}
    for r in rows:
        for field, col in cols.items():
            data[col].append(r.get(field))
    ds = datasets.Dataset.from_dict(data).cast_column(cols["audio"], datasets.Audio())
    ds.save_to_disk(str(path))
    return path


def test_saved_dataset_with_vctk_preset(tmp_path):
    rows = [
        {"audio": {"bytes": _wav_bytes(tone(0.6, 48000), 48000), "path": "p225_001.wav"}, "text": "Please call Stella.",
         "speaker": "p225", "gender": "F", "accent": "English", "age": "23"},
        {"audio": {"bytes": b"garbage", "path": "p226_001.wav"}, "text": "Ask her.", "speaker": "p226",
         "gender": "M", "accent": "Scottish", "age": "22"},
        {"audio": {"bytes": _wav_bytes(tone(0.4, 16000, channels=2), 16000), "path": "p227_001.wav"},
         "text": "Six spoons.", "speaker": "p227", "gender": "M", "accent": "Scottish", "age": "38"},
    ]
    src = _saved_dataset(tmp_path / "vctk", "vctk", rows)
    res = run_import(ImportConfig(source=str(src), out_dir=str(tmp_path / "out"), preset="vctk", id_prefix="vctk"),
                     progress=False)
    out = [json.loads(x) for x in (tmp_path / "out/corpus.jsonl").read_text().splitlines()]
    assert [r["id"] for r in out] == ["vctk-000000", "vctk-000002"]
    assert out[0]["meta"]["gender"] == "female" and out[0]["meta"]["accent"] == "English"
    assert out[1]["meta"]["accent"] == "Scottish" and out[1]["transcript"] == "Six spoons."
    assert out[0]["duration"] == pytest.approx(0.6, abs=0.01)
    assert sf.info(str(tmp_path / "out" / out[0]["audio"])).samplerate == SR
    rejects = [json.loads(x) for x in (tmp_path / "out/rejects.jsonl").read_text().splitlines()]
    assert rejects[0]["id"] == "vctk-000001" and "not a readable" in rejects[0]["reason"]
    assert res["written"] == 2


def test_common_voice_preset_normalises_labels(tmp_path):
    rows = [{"audio": {"bytes": _wav_bytes(tone(0.5), SR), "path": "cv1.mp3"}, "text": "Hola a todos.",
             "speaker": "abc", "gender": "female_feminine", "accent": "", "age": "twenties", "language": "es"}]
    src = _saved_dataset(tmp_path / "cv", "common_voice", rows)
    run_import(ImportConfig(source=str(src), out_dir=str(tmp_path / "out"), preset="common_voice"), progress=False)
    (row,) = [json.loads(x) for x in (tmp_path / "out/corpus.jsonl").read_text().splitlines()]
    assert row["language"] == "es" and row["meta"]["gender"] == "female" and "accent" not in row["meta"]
