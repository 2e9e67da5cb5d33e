"""The shipped `real` suite: manifest, audio files, labels, suite building and the training guard."""

import json
from collections import Counter

import pytest
import soundfile as sf

from speech_adapter.errors import DataError
from speech_adapter.eval.real import (MANIFEST, REAL_DIR, build_real_suite, is_real_path, load_real_corpus,
                                      real_tasks, refuse_real_training)
from speech_adapter.eval.suite import SuiteConfig
from speech_adapter.templates import TASKS

MIN_CLIPS = 40
MIN_PER_GENDER = 12
MIN_NONSPEECH = 8
MAX_BYTES = 20 * 2**20
MAX_SECONDS = 20.0


@pytest.fixture(scope="module")
def rows():
    return load_real_corpus()


def test_manifest_rows_are_corpus_rows(rows):
    raw = [json.loads(line) for line in MANIFEST.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(raw) == len(rows) >= MIN_CLIPS
    assert len({r["id"] for r in raw}) == len(raw)
    for r in raw:
        assert not r["audio"].startswith("/") and r["audio"].endswith(".flac"), r["id"]
        assert r["sampling_rate"] == 16000
        assert r["transcript"] is None or (isinstance(r["transcript"], str) and r["transcript"].strip())
        meta = r["meta"]
        assert isinstance(meta["speech"], bool), r["id"]
        assert meta.get("gender") in (None, "female", "male"), r["id"]
        if meta.get("gender"):
            assert meta["speech"] and meta["gender_evidence"], r["id"]
        if not meta["speech"]:
            assert meta["sound"] in ("music", "noise", "animal", "silence") and r["transcript"] is None, r["id"]
        src = meta["source"]
        assert src["repo"].count("/") == 1 and src["path"] and len(src["commit"]) == 40, r["id"]
        assert meta["license"], r["id"]


def test_audio_files_are_16k_mono_and_match_durations(rows):
    for r in rows:
        info = sf.info(r["audio"])
        assert info.samplerate == 16000 and info.channels == 1 and info.format == "FLAC", r["id"]
        assert 0.5 < info.duration <= MAX_SECONDS + 1e-3, r["id"]
        assert abs(info.duration - r["duration"]) < 0.01, r["id"]
    size = sum(f.stat().st_size for f in REAL_DIR.rglob("*") if f.is_file())
    assert size <= MAX_BYTES


def test_label_balance(rows):
    speech = [r for r in rows if r["meta"]["speech"]]
    genders = Counter(r["meta"].get("gender") for r in speech)
    assert genders["female"] >= MIN_PER_GENDER and genders["male"] >= MIN_PER_GENDER
    assert len(rows) - len(speech) >= MIN_NONSPEECH
    assert sum(1 for r in rows if r["transcript"]) >= 20


def test_suite_asks_only_labelled_tasks(rows):
    suite, stats = build_real_suite(SuiteConfig(n_per_task=100, seed=0))
    tasks = Counter(r["task"] for r in suite)
    assert set(tasks) == set(real_tasks())
    optional = tuple(t for t in ("speech", "sound") if t in TASKS)  # tasks that arrived with meta.speech
    for task in ("gender", "transcription", "word_count", "describe") + optional:
        assert tasks[task] > 0, task
    if "sound" in TASKS:
        assert {r["label"] for r in suite if r["task"] == "sound"} == {"speech", "music", "animal", "noise"}
    if "speech" in TASKS:
        assert tasks["speech"] == 2 * len(rows)
    n_gender = sum(1 for r in rows if r["meta"].get("gender"))
    n_text = sum(1 for r in rows if r["transcript"])
    assert tasks["gender"] == 2 * n_gender and tasks["transcription"] == 2 * n_text  # every clip, both splits
    assert not {"pitch", "speed", "volume", "accent", "duration", "noise", "language"} & set(tasks)
    for r in suite:
        assert r["label"] is not None or r["metric"] == "open", r["id"]
        if r["task"] == "gender":
            assert r["label"] == r["meta"]["gender"]
    assert stats["suite"] == "real" and stats["dropped_training_clips"] == 0
    again, _ = build_real_suite(SuiteConfig(n_per_task=100, seed=0))
    assert again == suite


def test_requested_tasks_are_narrowed_to_real_ones():
    suite, _ = build_real_suite(SuiteConfig(n_per_task=2, tasks=["gender", "pitch"]))
    assert {r["task"] for r in suite} == {"gender"}


def test_real_clip_in_training_is_refused(rows):
    with pytest.raises(DataError, match="appear in training"):
        build_real_suite(SuiteConfig(n_per_task=2), train_ids=[rows[0]["id"]])
    with pytest.raises(DataError, match="appear in training"):
        build_real_suite(SuiteConfig(n_per_task=2, on_training_clip="drop"), train_audio=[rows[1]["audio"]])


def test_training_on_the_real_manifest_is_refused(tmp_path):
    assert is_real_path(MANIFEST) and is_real_path(REAL_DIR / "audio") and is_real_path(REAL_DIR.parent)
    assert not is_real_path(tmp_path / "corpus.jsonl") and not is_real_path(None)
    with pytest.raises(DataError, match="data.corpus"):
        refuse_real_training(MANIFEST, "data.corpus")
    refuse_real_training(tmp_path / "corpus.jsonl", "data.corpus")


def test_recipe_pointing_at_the_real_clips_is_refused():
    from speech_adapter.recipe import load_recipe

    with pytest.raises(DataError, match="evaluation-only"):
        load_recipe("recipes/tiny.yaml", ["data.source=corpus", f"data.corpus={MANIFEST}"])
    recipe = load_recipe("recipes/tiny.yaml", ["eval.suites=[heldout,real]"])
    assert recipe.eval.suites == ["heldout", "real"]
    assert load_recipe("recipes/tiny.yaml", []).eval.suites == ["heldout"]


def test_pipeline_real_suite_layout(tmp_path):
    from speech_adapter.pipeline import _suite, _suite_paths
    from speech_adapter.recipe import load_recipe

    recipe = load_recipe("recipes/tiny.yaml", [f"output_dir={tmp_path}", "eval.suites=[heldout,real]"])
    p = recipe.paths()
    real = _suite_paths(p, "real")
    assert _suite_paths(p, "heldout") is p
    assert real["suite"] == p["suite"].parent / "real" / "suite.jsonl"
    assert real["eval"] == p["eval"] / "real" and real["compare"] == p["suite"].parent / "real" / "compare"
    p["distilled"].parent.mkdir(parents=True)
    p["distilled"].write_text(json.dumps({"id": "d0", "clip_id": "other", "instruction": "hi"}) + "\n")
    summary = _suite(recipe, p, suite="real")
    assert summary["suite_rows"] > 0 and real["suite"].exists() and not p["suite"].exists()
    p["distilled"].write_text(json.dumps({"id": "d0", "clip_id": load_real_corpus()[0]["id"]}) + "\n")
    with pytest.raises(DataError, match="appear in training"):
        _suite(recipe, p, suite="real")


def test_pipeline_format_suite_puts_every_row_under_a_format_rule(tmp_path):
    """`eval.suites: [.., format]`: the held-out clips again, every task they support, each row
    asked with a format rule, in its own folder; the held-out suite is left as it was."""
    from speech_adapter.pipeline import _suite, _suite_paths
    from speech_adapter.recipe import load_recipe
    from speech_adapter.templates import TASKS

    recipe = load_recipe("recipes/tiny.yaml", [f"output_dir={tmp_path}", "eval.suites=[heldout,format]",
                                               "eval.suite.tasks=[gender]", "eval.suite.n_per_task=2"])
    p = recipe.paths()
    clips = [{"id": f"h{i}", "audio": f"/data/h{i}.wav", "transcript": f"hello world number {i} again",
              "language": "en", "duration": 2.0 + i, "description": f"[00:00-00:02] hello ({i})",
              "meta": {"gender": "female" if i % 2 else "male", "accent": "American English", "rate": 175,
                       "pitch": 50, "volume": 100, "snr_db": None, "speakers": 1}} for i in range(8)]
    p["heldout_clips"].parent.mkdir(parents=True, exist_ok=True)
    p["heldout_clips"].write_text("".join(json.dumps(c) + "\n" for c in clips))
    p["distilled"].parent.mkdir(parents=True, exist_ok=True)
    p["distilled"].write_text(json.dumps({"id": "d0", "clip_id": "other", "instruction": "hi"}) + "\n")
    _suite(recipe, p, suite="heldout")
    held = [json.loads(x) for x in p["suite"].read_text().splitlines()]
    _suite(recipe, p, suite="format")
    fmt = _suite_paths(p, "format")
    assert fmt["suite"] == p["suite"].parent / "format" / "suite.jsonl" and fmt["eval"] == p["eval"] / "format"
    rows = [json.loads(x) for x in fmt["suite"].read_text().splitlines()]
    assert {r["task"] for r in held} == {"gender"} and any(not r["constraints"] for r in held)
    assert all(r["constraints"] for r in rows)
    assert {r["task"] for r in rows} == set(TASKS)  # not only the held-out suite's tasks
    assert [json.loads(x) for x in p["suite"].read_text().splitlines()] == held
