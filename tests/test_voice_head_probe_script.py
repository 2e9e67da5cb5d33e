"""scripts/voice_head_probe.py: the voice token's gender head per voice, and its agreement with
the LLM's gender answers."""

import json
from collections import Counter

import pytest
import soundfile as sf

from tests.models.test_voice_features import tiny_voice_model, voice
from tests.scripts_import import load_script


def _clips(tmp_path) -> list[dict]:
    clips = []
    for i, (hz, gender, meta) in enumerate([(110, "male", {"source": "kokoro", "voice": "bm_x"}),
                                            (120, "male", {"source": "kokoro", "voice": "bm_x"}),
                                            (230, "female", {"source": "espeak-ng"}),
                                            (200, None, {"source": "nonspeech"})]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, voice(hz, 0.6, seed=i), 16000)
        clips.append({"id": f"c{i}", "audio": str(path), "meta": dict(meta, gender=gender)})
    return clips


def test_counts_the_head_per_voice_and_against_the_llm(tmp_path):
    mod = load_script("voice_head_probe")
    model = tiny_voice_model("stack_mlp", timbre=True, gender_loss=1.0)
    model.save_adapter(tmp_path / "ad")
    clips = _clips(tmp_path)
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps(c) + "\n" for c in clips))
    verdicts = mod.head_verdicts(model.eval(), clips)
    assert set(verdicts) == {"c0", "c1", "c2"}  # the clip without a gender is left out
    assert [v[1:] for v in verdicts.values()] == [("male", "bm_x"), ("male", "bm_x"), ("female", "espeak-ng")]
    scores = [{"id": f"{c}::gender.01", "task": "gender", "mode": "speech", "score": s}
              for c, s in (("c0", 1.0), ("c1", 0.0), ("c2", 1.0), ("c3", 1.0))]
    scores.append({"id": "c0::speech.01", "task": "speech", "mode": "speech", "score": 0.0})
    (tmp_path / "scores.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scores))
    counts = mod.agreement(verdicts, tmp_path / "scores.jsonl")
    head_right = {c: v[0] == v[1] for c, v in verdicts.items()}
    # gender rows on gendered clips only: c3 (no gender) and c0's speech row are left out
    assert counts == Counter([(head_right["c0"], True), (head_right["c1"], False), (head_right["c2"], True)])
    out = tmp_path / "head.md"
    assert mod.main([str(tmp_path / "ad"), "--clips", str(tmp_path / "clips.jsonl"),
                     "--scores", str(tmp_path / "scores.jsonl"), "--out", str(out)]) == 0
    text = out.read_text()
    right = sum(head_right.values())
    assert f"Gender head right on {right} of 3 clips" in text and "| `bm_x` |" in text
    assert "| head right |" in text


def test_an_adapter_without_the_head_is_a_clear_error(tmp_path):
    mod = load_script("voice_head_probe")
    model = tiny_voice_model("stack_mlp", timbre=True)
    with pytest.raises(SystemExit, match="no gender head"):
        mod.head_verdicts(model.eval(), _clips(tmp_path))
