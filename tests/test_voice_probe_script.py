"""scripts/voice_probe.py: per-gender and speech/non-speech accuracy from the public eval commands."""

import json
from pathlib import Path

import pytest

from tests.inference.export_fixtures import perturbed_tiny
from tests.scripts_import import load_script


def _module():
    return load_script("voice_probe")


def test_summarize_splits_gender_and_speech_by_label():
    mod = _module()
    rows = [{"task": "gender", "label": "female", "score": 1.0, "output": "Female."},
            {"task": "gender", "label": "male", "score": 0.0, "output": "Female."},
            {"task": "gender", "label": "male", "score": 1.0, "output": "Male."},
            {"task": "speech", "label": "yes", "score": 0.0, "output": "No."},
            {"task": "speech", "label": "no", "score": 1.0, "output": "No."},
            {"task": "transcription", "label": "hi there", "score": 0.75, "output": "hi"}]
    c = mod.summarize(rows)
    assert c["female"] == [1.0] and c["male"] == [0.0, 1.0] and c["gender"] == [1.0, 0.0, 1.0]
    assert c["speech clips"] == [0.0] and c["non-speech clips"] == [1.0]
    assert c["wer"] == [0.25] and c["answers"]["female."] == 2
    table = mod.table({"m": c})
    assert "| m | 66.7 (3) | 100.0 (1) | 50.0 (2) | 50.0 (2) | 0.0 (1) | 100.0 (1) | 25.0 % |" in table


def test_phrasing_table_counts_women_and_men_per_phrasing():
    mod = _module()
    rows = {"a": [{"template_id": "gender.06:bare", "label": "female", "score": 0.0},
                  {"template_id": "gender.06:bare", "label": "female", "score": 0.0},
                  {"template_id": "gender.06:bare", "label": "male", "score": 1.0},
                  {"template_id": "gender.01", "label": "female", "score": 1.0}],
            "b": [{"template_id": "gender.06:bare", "label": "female", "score": 1.0}]}
    table = mod.phrasing_table(rows)
    assert "| gender.06:bare | 0/2 · 1/1 | 1/1 · – |" in table
    assert "| gender.01 | 1/1 · – | – · – |" in table and "a: women · men" in table


def test_runs_the_eval_commands_on_real_clips(tmp_path):
    mod = _module()
    model = perturbed_tiny()
    model.save_adapter(tmp_path / "adapter")
    out = tmp_path / "probe.md"
    assert mod.main([f"tiny={tmp_path / 'adapter'}", "--work", str(tmp_path / "work"), "--out", str(out),
                     "--tasks", "gender,speech", "--limit", "6", "--batch-size", "6"]) == 0
    suite = [json.loads(x) for x in (tmp_path / "work" / "suite.jsonl").read_text().splitlines()]
    assert {r["task"] for r in suite} == {"gender", "speech"}
    gender = [r for r in suite if r["task"] == "gender"]
    assert len(gender) == len({r["clip_id"] for r in gender}) >= 48  # every gendered clip, once
    assert {r["split"] for r in gender} == {"seen", "unseen"}
    assert all(r["kind"] == "plain" for r in suite)
    bare = [r for r in suite if r["template_id"].endswith(":bare")]
    assert 0 < len(bare) < len(suite)  # both ways of asking: with and without the option list
    assert (tmp_path / "work" / "tiny" / "scores.jsonl").exists()
    assert out.read_text().count("| tiny |") == 1


def test_rejects_a_model_spec_without_a_name(tmp_path):
    with pytest.raises(SystemExit):
        _module().main([str(tmp_path)])


def test_heldout_voices_get_their_own_gender_table(tmp_path):
    mod = _module()
    model = perturbed_tiny()
    model.save_adapter(tmp_path / "adapter")
    real = [json.loads(x) for x in (Path(mod.__file__).resolve().parents[1] / "speech_adapter" / "resources" /
                                    "real" / "manifest.jsonl").read_text().splitlines() if x.strip()]
    clips = []
    for i, r in enumerate([r for r in real if (r.get("meta") or {}).get("gender")][:4]):
        audio = Path(mod.__file__).resolve().parents[1] / "speech_adapter" / "resources" / "real" / r["audio"]
        clips.append({"id": f"k{i}", "audio": str(audio), "transcript": "hello", "duration": 2.0,
                      "description": "[00:00-00:02] hello (Gender: Female, Duration: 2s)",
                      "meta": {"gender": r["meta"]["gender"], "voice_split": "heldout" if i < 3 else "train"}})
    corpus = tmp_path / "heldout_clips.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in clips))
    out = tmp_path / "probe.md"
    assert mod.main([f"tiny={tmp_path / 'adapter'}", "--work", str(tmp_path / "work"), "--out", str(out),
                     "--tasks", "gender", "--limit", "4", "--batch-size", "4", "--heldout-voices", str(corpus)]) == 0
    kept = (tmp_path / "work" / "heldout_voices" / "clips.jsonl").read_text().splitlines()
    assert len(kept) == 3  # only the held-out voices' clips
    text = out.read_text()
    assert "Kokoro voices no model trained on" in text and text.count("| tiny |") == 2


def test_heldout_clips_are_scored_per_voice_group(tmp_path):
    mod = _module()
    from data_prep.synth import voice_group

    assert voice_group({"voice_split": "heldout"}) == "Kokoro, held-out voices"
    assert voice_group({"voice_split": "train"}) == "Kokoro, training voices"
    assert voice_group({}) == "espeak-ng"
    model = perturbed_tiny()
    model.save_adapter(tmp_path / "adapter")
    res = Path(mod.__file__).resolve().parents[1] / "speech_adapter" / "resources" / "real"
    real = [json.loads(x) for x in (res / "manifest.jsonl").read_text().splitlines() if x.strip()]
    clips = []
    for i, r in enumerate([r for r in real if (r.get("meta") or {}).get("gender")][:4]):
        meta = {"gender": r["meta"]["gender"], **({"voice_split": "heldout", "voice": f"v{i}"} if i < 2 else {})}
        clips.append({"id": f"k{i}", "audio": str(res / r["audio"]), "transcript": "hello", "duration": 2.0,
                      "description": "[00:00-00:02] hello (Gender: Female, Duration: 2s)", "meta": meta})
    clips.append({"id": "noise", "audio": str(res / real[0]["audio"]), "transcript": "", "duration": 2.0,
                  "description": "[00:00-00:02] (noise)", "meta": {"speech": False}})  # no gender: not asked
    corpus = tmp_path / "heldout_clips.jsonl"
    corpus.write_text("".join(json.dumps(c) + "\n" for c in clips))
    out = tmp_path / "probe.md"
    assert mod.main([f"tiny={tmp_path / 'adapter'}", "--work", str(tmp_path / "work"), "--out", str(out),
                     "--tasks", "gender", "--limit", "4", "--batch-size", "4", "--heldout-clips", str(corpus)]) == 0
    assert len((tmp_path / "work" / "heldout_clips" / "clips.jsonl").read_text().splitlines()) == 4
    text = out.read_text()
    assert "every gendered clip of the held-out split" in text
    assert "| tiny · Kokoro, held-out voices | " in text and "| tiny · espeak-ng | " in text
    assert "(4) |" in text.split("held-out split")[1]  # all four clips in the overall row
    per_voice = text.split("per held-out Kokoro voice")[1].split("per phrasing")[0]
    assert "| model | `v0` | `v1` |" in per_voice and per_voice.count("/1 |") == 2  # one clip each


def test_per_voice_table_counts_right_over_asked_per_held_out_voice():
    rows = {"a": [{"clip_id": "c1", "score": 1.0}, {"clip_id": "c2", "score": 0.0},
                  {"clip_id": "c3", "score": 1.0}, {"clip_id": "other", "score": 1.0}],
            "b": [{"clip_id": "c3", "score": 0.0}]}
    table = _module().per_voice_table(rows, {"c1": "bm_fable", "c2": "bm_fable", "c3": "af_nova"})
    assert "| model | `af_nova` | `bm_fable` |" in table
    assert "| a | 1/1 | 1/2 |" in table and "| b | 0/1 | – |" in table
