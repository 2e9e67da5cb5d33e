"""scripts/encoder_probe.py: a per-layer linear gender probe of the frozen encoder."""

import json

import numpy as np
import pytest
import soundfile as sf

from tests.scripts_import import load_script


def test_logistic_probe_learns_a_separable_direction():
    mod = load_script("encoder_probe")
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    x = rng.normal(size=(60, 5))
    x[:, 2] += 3.0 * (2 * y - 1)  # one informative feature
    predict = mod.fit_logistic(x[:40], y[:40])
    assert (predict(x[40:]) == y[40:]).mean() >= 0.9
    shuffled = mod.fit_logistic(rng.normal(size=(40, 5)), y[:40])  # nothing to learn
    assert (shuffled(x[40:]) == y[40:]).mean() < 0.9


def _corpus(path, tmp_path, n, split):
    clips = []
    for i in range(n):
        male = i % 2 == 1
        t = np.arange(16000) / 16000
        wav = 0.3 * np.sin(2 * np.pi * (110 if male else 220) * t).astype(np.float32)
        audio = tmp_path / f"{path.stem}{i}.wav"
        sf.write(audio, wav, 16000)
        meta = {"gender": "male" if male else "female", **({"voice_split": split} if split else {})}
        pitch = None if i == 0 and split == "heldout" else (110.0 if male else 220.0)  # pyin found none
        clips.append({"id": f"{path.stem}{i}", "audio": str(audio), "meta": meta,
                      "attributes": {"pitch_hz": pitch}})
    clips.append({"id": "noise", "audio": str(audio), "meta": {"speech": False}})  # no gender: skipped
    path.write_text("".join(json.dumps(c) + "\n" for c in clips))


def test_runs_on_a_tiny_encoder_and_reports_per_group(tmp_path):
    mod = load_script("encoder_probe")
    _corpus(tmp_path / "train.jsonl", tmp_path, 8, "train")
    _corpus(tmp_path / "test.jsonl", tmp_path, 6, "heldout")
    out = tmp_path / "probe.md"
    assert mod.main(["--train", str(tmp_path / "train.jsonl"), "--test", str(tmp_path / "test.jsonl"),
                     "--encoders", "tiny:whisper", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| pitch (log F0), clips with a measured pitch, layer 1 | 100.0 (5) |" in text  # one unmeasured
    assert "| tiny:whisper layer 1 |" in text
    assert "trained on 8 clips (4 men), scored on 6" in text


def test_refuses_a_one_gender_corpus(tmp_path):
    mod = load_script("encoder_probe")
    (tmp_path / "one.jsonl").write_text(json.dumps({"id": "a", "audio": "a.wav", "meta": {"gender": "male"}}) + "\n")
    with pytest.raises(SystemExit):
        mod.main(["--train", str(tmp_path / "one.jsonl"), "--test", str(tmp_path / "one.jsonl")])
