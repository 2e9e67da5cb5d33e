"""Dynamic-SUPERB and Speech-IFEval loaders on fixtures made here (JSONL and save_to_disk)."""

import json

import numpy as np
import pytest
import soundfile as sf

from speech_adapter.errors import DataError
from speech_adapter.eval.external import load_dynamic_superb, load_speech_ifeval, options_from_instruction


def wav(path):
    sf.write(path, (0.1 * np.sin(np.arange(4000) / 3)).astype(np.float32), 16000)
    return path


@pytest.mark.parametrize("text, expected", [
    ("Is the speaker happy or sad? The answer could be happy, sad, or neutral.", ["happy", "sad", "neutral"]),
    ("Identify the gender. Answer with one of: male, female.", ["male", "female"]),
    ("Options: A / B", ["A", "B"]),
    ("Transcribe the audio.", None),
])
def test_options_from_instruction(text, expected):
    assert options_from_instruction(text) == expected


def test_dynamic_superb_jsonl(tmp_path):
    wav(tmp_path / "x.wav")
    p = tmp_path / "EmotionRecognition.jsonl"
    p.write_text(json.dumps({"file": "x.wav", "instruction": "Emotion? The answer could be happy or sad.",
                             "label": "happy"}) + "\n")
    (row,) = load_dynamic_superb(p)
    assert row["task"] == "EmotionRecognition" and row["audio"] == str((tmp_path / "x.wav").resolve())
    assert row["options"] == ["happy", "sad"] and row["metric"] == "option" and row["label"] == "happy"
    p.write_text(json.dumps({"file": "x.wav", "instruction": "Emotion?"}) + "\n")
    with pytest.raises(DataError, match="row 1 lacks label"):
        load_dynamic_superb(p)


def test_dynamic_superb_saved_dataset_writes_audio(tmp_path):
    import datasets

    src = wav(tmp_path / "src.wav")
    ds = datasets.Dataset.from_dict({"audio": [str(src)], "file": ["utt1"],
                                     "instruction": ["Speaker gender? Choose from: male, female."],
                                     "label": ["female"]}).cast_column("audio", datasets.Audio(decode=False))
    ds.save_to_disk(str(tmp_path / "ds"))
    (row,) = load_dynamic_superb(tmp_path / "ds", task="gender_ds", audio_dir=tmp_path / "audio")
    assert row["id"] == "gender_ds::utt1" and row["options"] == ["male", "female"]
    audio, sr = sf.read(row["audio"])
    assert sr == 16000 and len(audio) == 4000
    with pytest.raises(DataError, match="pass audio_dir"):
        load_dynamic_superb(tmp_path / "ds")


def test_speech_ifeval_jsonl_maps_ifeval_ids(tmp_path):
    wav(tmp_path / "a.wav")
    p = tmp_path / "sifeval.jsonl"
    rows = [{"id": 1, "audio_filepath": "a.wav", "instruction": "Describe the emotion in under 20 words, lowercase.",
             "instruction_id_list": ["length_constraints:number_words", "change_case:english_lowercase"],
             "kwargs": [{"num_words": 20, "relation": "less than"}, {}], "textual_audio": "A happy voice."},
            {"id": 2, "audio_filepath": "a.wav", "instruction": "Gender in JSON.", "label": "male",
             "constraints": [{"id": "json", "kwargs": {"keys": ["answer"]}}], "options": ["male", "female"]}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = load_speech_ifeval(p)
    assert a["constraints"] == [{"id": "num_words", "kwargs": {"n": 19, "relation": "<="}},
                                {"id": "lowercase", "kwargs": {}}]
    assert a["metric"] == "open" and a["description"] == "A happy voice."
    assert b["metric"] == "option" and b["constraints"][0]["id"] == "json"
    p.write_text(json.dumps({"instruction": "x", "instruction_id_list": ["language:response_language"],
                             "kwargs": [{}]}) + "\n")
    with pytest.raises(DataError, match="row 1: IFEval constraint 'language:response_language'"):
        load_speech_ifeval(p)
