"""tests for speech_adapter/train/data.py: rejects, objective targets, deterministic batching."""

import json

from speech_adapter.train.config import TrainConfig
from speech_adapter.train.data import Rejects, load_train_data, read_rows
from tests.train.train_fixtures import write_rows


def test_bad_rows_and_audio_go_to_rejects(tmp_path):
    (tmp_path / "wav").mkdir()
    (tmp_path / "wav" / "broken.wav").write_bytes(b"RIFF....not audio")
    extra = [{"id": "bad_audio", "audio": "wav/broken.wav", "instruction": "Hi?", "response": "x"},
             {"id": "gone", "audio": "wav/missing.wav", "instruction": "Hi?", "response": "x"},
             {"id": "no_resp", "audio": "wav/c0.wav", "instruction": "Hi?"}]
    path = write_rows(tmp_path, 4, extra=extra)
    with open(path, "a") as f:
        f.write('{"id": "torn", "audio"\n')
    cfg = TrainConfig(train_file=path, batch_size=2)
    data = load_train_data(cfg, Rejects(tmp_path / "rejects.jsonl"))
    assert len(data) == 4
    rejects = [json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    by_id = {r.get("id"): r["reason"] for r in rejects}
    assert set(by_id) == {"bad_audio", "gone", "no_resp", None}
    assert "file not found" in by_id["gone"] and "missing response" in by_id["no_resp"]
    assert any(r.get("line") == 8 for r in rejects)  # the torn line, by number
    # a clip that goes bad mid-run is dropped from its batch, not a crash
    (tmp_path / "wav" / "c1.wav").unlink()
    ids, examples, _ = data.load([0, 1])
    assert ids == ["c0"] and len(examples) == 1


def test_task_sft_trains_on_labels(tmp_path):
    path = write_rows(tmp_path, 3, extra=[{"id": "asr", "audio": "wav/c0.wav", "instruction": "Transcribe.",
                                           "transcript": "hello world"}])
    rows = read_rows(path, "task_sft", Rejects(None))
    assert [r["response"] for r in rows] == ["L0", "L1", "L2", "hello world"]
    assert [r["response"] for r in read_rows(path, "self_distill", Rejects(None))][:1] == ["a cat"]


def test_batches_are_deterministic_bucketed_and_mix_text(tmp_path):
    path = write_rows(tmp_path, 8)
    text = write_rows(tmp_path, 0, name="text.jsonl", text_rows=5)
    cfg = TrainConfig(train_file=path, text_file=text, text_mix=0.2, batch_size=2, seed=3)
    data = load_train_data(cfg, Rejects(None))
    e0, e0_again, e1 = data.epoch_batches(0), data.epoch_batches(0), data.epoch_batches(1)
    assert e0 == e0_again and e0 != e1
    flat = [i for b in e0 for i in b]
    assert sorted(i for i in flat if i < 8) == list(range(8))
    assert sum(i >= 8 for i in flat) == 2  # 8 * 0.2 / 0.8 text rows
    for b in e0:  # one kind per batch
        assert len({data.row(i)["audio"] is None for i in b}) == 1
    bucketed = TrainConfig(train_file=path, batch_size=2, bucket_size=4)
    bdata = load_train_data(bucketed, Rejects(None))
    order = sorted(range(8), key=bdata.length)  # one window of 2 x 4 rows: batches are length neighbours
    assert {frozenset(b) for b in bdata.epoch_batches(0)} == {frozenset(order[k:k + 2]) for k in range(0, 8, 2)}


def test_key_words_name_the_clips_gender_and_reach_the_batch_only_when_weighted(tmp_path):
    from speech_adapter.train.data import Rejects, TrainData, key_words, read_rows
    from speech_adapter.train.config import TrainConfig
    import json

    assert key_words({"description_fields": {"gender": "Female"}})[:2] == ["female", "woman"]
    assert "his" in key_words({"meta": {"gender": "male"}}) and "her" not in key_words({"meta": {"gender": "male"}})
    assert key_words({"meta": {"speech": False}}) is None
    wav = tmp_path / "a.wav"
    import numpy as np
    import soundfile as sf
    sf.write(wav, np.full(8000, 0.1, np.float32), 16000)
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"id": "a", "audio": str(wav), "instruction": "Who?", "response": "A woman.",
                             "description_fields": {"gender": "Female"}}) + "\n")
    rows = read_rows(f, "self_distill", Rejects(None))
    for weight, want in ((1.0, None), (4.0, key_words({"meta": {"gender": "female"}}))):
        data = TrainData(rows, TrainConfig(key_word_weight=weight))
        assert data.load([0])[1][0]["key_words"] == want
